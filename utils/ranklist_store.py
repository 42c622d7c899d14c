"""Storage of human rank lists: one TSV line per save, safe when several annotators save at once.

The TSV keeps the original tool's format (texts best first, separated by tabs), so `train_reward_model.py`
reads it as it is. Who saved what and when goes to a JSONL file beside it (`total_dataset.tsv` ->
`total_dataset.meta.jsonl`), one record per TSV line.

Every change happens under an exclusive `fcntl` lock on a third file (`total_dataset.tsv.lock`), not on the
TSV itself: undo replaces the TSV by a new file, and a process waiting for a lock on the old file would then
append to a file nobody reads any more.
"""
import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from dataclasses import dataclass

from utils.common import UserError, write_text_atomically
from utils.data import parse_rank_list_line

_CONTROL_WHITESPACE = re.compile(r"[\t\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


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
