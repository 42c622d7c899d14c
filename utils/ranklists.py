"""The rank-list format: one TSV line per rank list, texts best first, separated by tabs.

This is the original tool's format, and every rank list in the project is read and written here: the datasets
built from the corpus, the labelling page's saves (safe when several annotators save at once), the terminal's
ratings turned into rank lists. `data/README.md` shows the format with an example.

Who saved a line and when goes to a JSONL file beside the TSV (`total_dataset.tsv` ->
`total_dataset.meta.jsonl`), one record per TSV line.

Every append and undo happens under an exclusive `fcntl` lock on a third file (`total_dataset.tsv.lock`), not on the
TSV itself: undo replaces the TSV by a new file, and a process waiting for a lock on the old file would then
append to a file nobody reads any more.
"""
import contextlib
import fcntl
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from utils.common import UserError, write_text_atomically

_CONTROL_WHITESPACE = re.compile(r"[\t\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


# ---------------------------------------------------------------- reading
def read_rank_lists(path, skip_bad_lines=False, expected_fields=None):
    """Rank lists from a TSV file: one list per line, fields separated by tabs, best first.

    A bad line (fewer than 2 fields, an empty field, not UTF-8, or not `expected_fields` long) stops with
    `file:line: reason`; with `skip_bad_lines` it is left out and counted on stderr. Blank lines are ignored.
    """
    rank_lists = read_checked_lines(path, lambda raw: parse_rank_list_line(raw, expected_fields), skip_bad_lines)
    if not rank_lists:
        raise UserError(f"{path}: no rank lists in this file (expected one tab-separated list per line)")
    return rank_lists


def read_checked_lines(path, parse_line, skip_bad_lines=False):
    """The values `parse_line(raw_bytes)` makes of a file's lines. It returns (value, None) for a good line,
    (None or an empty value, None) for a line to ignore, (None, reason) for a bad one.

    A bad line stops with `file:line: reason`; with `skip_bad_lines` it is left out, and one warning on stderr
    counts the skipped lines. Rank lists and the terminal's ratings are read this way.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    values, bad = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            value, reason = parse_line(raw)
            if reason is None:
                if value:
                    values.append(value)
            elif skip_bad_lines:
                bad.append((number, reason))
            else:
                raise UserError(f"{path}:{number}: {reason} (use --skip_bad_lines to skip such lines)")
    if bad:
        print(f"warning: skipped {len(bad)} bad line(s) in {path} (first: line {bad[0][0]}: {bad[0][1]})",
              file=sys.stderr)
    return values


def parse_rank_list_line(raw, expected_fields):
    """(fields, None) for a good line, ([], None) for a blank one, (None, reason) for a bad one."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8 text"
    line = line.rstrip("\r\n")
    if not line.strip():
        return [], None
    fields = [field.strip() for field in line.split("\t")]
    if len(fields) < 2:
        return None, "a rank list needs at least 2 tab-separated texts, found 1"
    if any(not field for field in fields):
        return None, f"empty text in field {fields.index('') + 1}"
    if expected_fields and len(fields) != expected_fields:
        return None, f"expected {expected_fields} tab-separated texts, found {len(fields)}"
    return fields, None


# ---------------------------------------------------------------- writing
@dataclass
class SavedLine:
    """What a session needs to undo its own save: the exact line and its metadata id."""
    path: str
    line: str
    save_id: str


def metadata_path(dataset_file):
    root, _ = os.path.splitext(dataset_file)
    return root + ".meta.jsonl"


def clean_field(text):
    """One TSV field: tabs and line breaks inside a text become spaces, so the line stays one valid rank list."""
    return _CONTROL_WHITESPACE.sub(" ", text).strip()


def format_rank_line(texts):
    """The TSV line (with its newline) for texts given best first."""
    fields = [clean_field(t) for t in texts]
    if len(fields) < 2:
        raise UserError(f"a rank list needs at least 2 texts, got {len(fields)}")
    empty = [i + 1 for i, f in enumerate(fields) if not f]
    if empty:
        raise UserError(f"text {empty[0]} of the rank list is empty")
    return "\t".join(fields) + "\n"


def write_rank_lists(path, rank_lists):
    """Write a whole rank-list file (each list best first) at once: the old file stays until the new one is complete."""
    write_text_atomically(path, "".join(format_rank_line(texts) for texts in rank_lists))


@contextlib.contextmanager
def locked(dataset_file):
    """Hold the exclusive lock that every append and undo on `dataset_file` takes."""
    os.makedirs(os.path.dirname(dataset_file) or ".", exist_ok=True)
    with open(dataset_file + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _append_durably(path, data):
    """Append bytes and fsync; a file whose last line lacks its newline gets one first (no glued lines)."""
    with open(path, "ab+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = b"\n" + data
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def append_rank_list(dataset_file, texts, meta=None):
    """Append one rank list (texts best first) and its metadata record; returns a `SavedLine` for undo."""
    line = format_rank_line(texts)
    record = {"save_id": uuid.uuid4().hex, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
    with locked(dataset_file):
        _append_durably(dataset_file, line.encode("utf-8"))
        _append_durably(metadata_path(dataset_file), (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    return SavedLine(dataset_file, line, record["save_id"])


def undo_rank_list(saved):
    """Remove the line `saved` describes (its last occurrence) and its metadata record; False if it is gone.

    Lines other sessions appended before or after it stay untouched. The files are rewritten through a
    temporary file and a rename, so a crash leaves either the old or the new file, never half of one.
    """
    with locked(saved.path):
        if not os.path.exists(saved.path):
            return False
        with open(saved.path, encoding="utf-8", newline="") as f:
            lines = f.readlines()
        hits = [i for i, line in enumerate(lines) if line == saved.line]
        if not hits:
            return False
        del lines[hits[-1]]
        write_text_atomically(saved.path, "".join(lines))
        meta_file = metadata_path(saved.path)
        if os.path.exists(meta_file):
            with open(meta_file, encoding="utf-8", newline="") as f:
                records = f.readlines()
            kept = [r for r in records if _save_id(r) != saved.save_id]
            if len(kept) != len(records):
                write_text_atomically(meta_file, "".join(kept))
    return True


def _save_id(record_line):
    try:
        return json.loads(record_line).get("save_id")
    except (ValueError, AttributeError):
        return None  # a hand-edited or foreign line: never ours


def count_saves(meta_file):
    """(saves per annotator, saves per day) from a metadata file, as two Counters; an unnamed annotator counts as
    "(未填写)", and lines that are not our records (hand-edited, cut short) are left out. A missing file: none."""
    by_annotator, by_day = Counter(), Counter()
    if not os.path.exists(meta_file):
        return by_annotator, by_day
    with open(meta_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("time"), str):
                by_annotator[str(record.get("annotator") or "").strip() or "(未填写)"] += 1
                by_day[record["time"][:10]] += 1
    return by_annotator, by_day


# ---------------------------------------------------------------- table view
def read_rank_list_table(dataset_file, expected_fields):
    """(rank_lists, bad_lines) of a dataset file for display: bad lines are `(line_number, reason)`, not errors.

    A missing file is an empty dataset.
    """
    rank_lists, bad = [], []
    if not os.path.exists(dataset_file):
        return rank_lists, bad
    with open(dataset_file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            fields, reason = parse_rank_list_line(raw, expected_fields)
            if reason is not None:
                bad.append((number, reason))
            elif fields:
                rank_lists.append(fields)
    return rank_lists, bad
