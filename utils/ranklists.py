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
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter

from utils.options import ArgumentParser, correlation, input_file
from utils.errors import UserError
from utils.files import write_text_atomically
from utils.texts import NOT_UTF8, ends_mid_line, numbered_lines, read_bytes, read_numbered_lines

_CONTROL_WHITESPACE = re.compile(r"[\t\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


# ---------------------------------------------------------------- reading
def read_rank_lists(path, skip_bad_lines=False, expected_fields=None):
    """Rank lists from a TSV file: one list per line, fields separated by tabs, best first.

    A bad line (fewer than 2 fields, an empty field, not UTF-8, or not `expected_fields` long) stops with
    `file:line: reason`; with `skip_bad_lines` it is left out and counted on stderr. Blank lines are ignored, and
    repeated texts as `without_repeats` says.
    """
    lines = read_checked_lines(path, lambda line: parse_rank_list_line(line, expected_fields), skip_bad_lines)
    if not lines:
        raise UserError(f"{path}: no rank lists in this file (expected one tab-separated list per line)")
    rank_lists = [texts for texts in without_repeats(path, lines) if texts]
    if not rank_lists:
        raise UserError(f"{path}: no rank list of 2 or more different texts in this file")
    return rank_lists


def without_repeats(path, text_lists):
    """The one rule for identical texts in a rank list, the same for the reward model, DPO and the preference
    export: a text counts once, at its best place (a pair of identical texts says nothing, and a repeat lower in
    the list would contradict the first). One entry per list of `text_lists`: its distinct texts, or None for a
    list left with fewer than 2; one note on stderr counts what was left out of the file `path`."""
    distinct = [list(dict.fromkeys(texts)) for texts in text_lists]
    repeats = sum(len(texts) - len(kept) for texts, kept in zip(text_lists, distinct))
    dropped = sum(len(kept) < 2 for kept in distinct)
    if repeats:
        print(f"note: {path}: left out {repeats} repeated text(s) (each text counts once, at its best place in its "
              f"list) and with them {dropped} rank list(s) that had fewer than 2 different texts", file=sys.stderr)
    return [kept if len(kept) >= 2 else None for kept in distinct]


SKIP_HINT = "use --skip_bad_lines to skip such lines"


def read_checked_lines(path, parse_line, skip_bad_lines=False, last_line_may_be_cut=False,
                       bad_line_hint=SKIP_HINT):
    """The values `parse_line(text)` makes of a file's lines, read by the one text reader (utils/texts.py: LF, CR
    and CRLF alike, no byte-order mark; the text is None for a line that is not UTF-8). It returns (value, None)
    for a good line, (None or an empty value, None) for a line to ignore, (None, reason) for a bad one.

    A bad line stops with `file:line: reason (bad_line_hint)`; with `skip_bad_lines` it is left out, and one
    warning on stderr counts the skipped lines. With `last_line_may_be_cut` (a file appended to line by line), a
    bad last line without its line ending is a write cut short by a kill: it is left out with a warning. Rank
    lists, task files, preference pairs and the terminal's ratings are read this way.
    """
    data = read_bytes(path)
    lines = numbered_lines(data)
    cut = last_line_may_be_cut and ends_mid_line(data)
    values, bad = [], []
    for number, line in lines:
        value, reason = parse_line(line)
        if reason is None:
            if value:
                values.append(value)
        elif cut and number == len(lines):
            print(f"warning: {path}:{number}: the last line was cut short (a write killed halfway?) and is left "
                  "out", file=sys.stderr)
        elif skip_bad_lines:
            bad.append((number, reason))
        else:
            raise UserError(f"{path}:{number}: {reason} ({bad_line_hint})")
    if bad:
        print(f"warning: skipped {len(bad)} bad line(s) in {path} (first: line {bad[0][0]}: {bad[0][1]})",
              file=sys.stderr)
    return values


def parse_rank_list_line(line, expected_fields):
    """(fields, None) for a good line, ([], None) for a blank one, (None, reason) for a bad one (None: not UTF-8)."""
    if line is None:
        return None, NOT_UTF8
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


# ---------------------------------------------------------------- holding out lists for evaluation
def split_rank_lists(rank_lists, dev_ratio, seed, path):
    """(train, dev): a random `dev_ratio` share of the lists (at least one) held out, the same for the same seed."""
    n_dev = max(1, round(len(rank_lists) * dev_ratio))
    if not 0 < dev_ratio < 1 or n_dev >= len(rank_lists):
        raise UserError(f"{path}: cannot hold out --dev_ratio {dev_ratio} of {len(rank_lists)} rank list(s) for "
                        "evaluation and train on the rest; give more lists, another ratio, or a --dev_path")
    held_out = set(random.Random(seed).sample(range(len(rank_lists)), n_dev))
    return ([r for i, r in enumerate(rank_lists) if i not in held_out],
            [r for i, r in enumerate(rank_lists) if i in held_out])


# ---------------------------------------------------------------- writing
@dataclasses.dataclass
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
    """Append one rank list (texts best first) and its metadata record; returns a `SavedLine` for undo. The prompt
    in `meta` is cleaned as the texts are (`clean_field`) before either is written: the saved texts then begin with
    the saved prompt, whatever whitespace it had (a task prompt " 这部电影很" is saved as "这部电影很")."""
    line = format_rank_line(texts)
    record = {"save_id": uuid.uuid4().hex, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
    if isinstance(record.get("prompt"), str):
        record["prompt"] = clean_field(record["prompt"])
    with locked(dataset_file):
        add_metadata_for_earlier_lines(dataset_file)
        _append_durably(dataset_file, line.encode("utf-8"))
        _append_durably(metadata_path(dataset_file), (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    return SavedLine(dataset_file, line, record["save_id"])


EARLIER_LINE_RECORD = '{"prompt": null, "note": "saved before this file had metadata"}\n'


def add_metadata_for_earlier_lines(dataset_file):
    """A TSV saved before it had a .meta.jsonl (the original tool wrote none) gets one record without a prompt for
    each of its lines, so that the n-th line of the file keeps the n-th record once lines with records follow."""
    meta_file = metadata_path(dataset_file)
    if os.path.exists(meta_file) or not os.path.exists(dataset_file):
        return
    earlier = sum(1 for _, line in read_numbered_lines(dataset_file) if line is None or line.strip())
    if earlier:
        write_text_atomically(meta_file, EARLIER_LINE_RECORD * earlier)


def undo_rank_list(saved):
    """Remove the line `saved` describes and its metadata record; False if the line is gone.

    The line removed is the one paired with the record (the n-th non-blank line of the TSV belongs to the n-th
    record), so when two annotators saved the same line, each undo removes its own and the pairing of the
    others stays right; without the record, the line's last occurrence goes. Lines other sessions appended
    before or after it stay untouched. The files are rewritten through a temporary file and a rename, so a
    crash leaves either the old or the new file, never half of one.
    """
    with locked(saved.path):
        if not os.path.exists(saved.path):
            return False
        with open(saved.path, encoding="utf-8", newline="") as f:
            lines = f.readlines()
        meta_file = metadata_path(saved.path)
        records = []
        if os.path.exists(meta_file):
            with open(meta_file, encoding="utf-8", newline="") as f:
                records = f.readlines()
        mine = [i for i, r in enumerate(r for r in records if r.strip()) if _save_id(r) == saved.save_id]
        filled = [i for i, line in enumerate(lines) if line.strip()]
        if mine and mine[0] < len(filled) and lines[filled[mine[0]]] == saved.line:
            del lines[filled[mine[0]]]
        else:
            hits = [i for i, line in enumerate(lines) if line == saved.line]
            if not hits:
                return False
            del lines[hits[-1]]
        write_text_atomically(saved.path, "".join(lines))
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
    for record in read_meta_records(meta_file):
        if isinstance(record.get("time"), str):
            by_annotator[str(record.get("annotator") or "").strip() or "(未填写)"] += 1
            by_day[record["time"][:10]] += 1
    return by_annotator, by_day


def read_meta_records(meta_file):
    """The JSON-object records of a metadata file (lines that are not, hand-edited or cut short, are left out)."""
    records = []
    if not os.path.exists(meta_file):
        return records
    with open(meta_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


# ---------------------------------------------------------------- table view
def read_rank_list_table(dataset_file, expected_fields):
    """(rank_lists, bad_lines) of a dataset file for display: bad lines are `(line_number, reason)`, not errors.

    A missing file is an empty dataset.
    """
    rank_lists, bad = [], []
    if not os.path.exists(dataset_file):
        return rank_lists, bad
    for number, line in read_numbered_lines(dataset_file):
        fields, reason = parse_rank_list_line(line, expected_fields)
        if reason is not None:
            bad.append((number, reason))
        elif fields:
            rank_lists.append(fields)
    return rank_lists, bad


# ---------------------------------------------------------------- agreement and consensus
def group_key(rank_list):
    """Rank lists of the same task share a key: the task id, or (free mode, no task id) the prompt + answer set."""
    if getattr(rank_list, "task_id", None):
        return ("task", rank_list.task_id)
    return ("prompt and answers", rank_list.prompt or "", tuple(sorted(rank_list.texts)))


def group_by_task(rank_lists):
    """{key: [rank lists]} in first-seen order; lists of one task that do not rank the same texts are an error."""
    groups = {}
    for rank_list in rank_lists:
        groups.setdefault(group_key(rank_list), []).append(rank_list)
    for key, members in groups.items():
        if any(sorted(m.texts) != sorted(members[0].texts) for m in members[1:]):
            raise UserError(f"task {key[1]!r}: its rank lists do not rank the same answers (edited by hand?)")
    return groups


def _positions(texts):
    """{(text, occurrence): position}: identical texts are told apart by their order of appearance."""
    seen, positions = Counter(), {}
    for position, text in enumerate(texts):
        positions[(text, seen[text])] = position
        seen[text] += 1
    return positions


def kendall_tau(best_first_a, best_first_b):
    """Kendall's tau between two rankings (best first) of the same texts: 1 = same order, -1 = reversed."""
    a, b = _positions(best_first_a), _positions(best_first_b)
    items = list(a)
    pairs = concordant = 0
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            pairs += 1
            concordant += (a[items[i]] - a[items[j]]) * (b[items[i]] - b[items[j]]) > 0
    return (2 * concordant - pairs) / pairs


def task_agreement(members):
    """(mean Kendall's tau, share of identical best answers) over every pair of a task's rank lists."""
    pairs = list(itertools.combinations(members, 2))
    taus = [kendall_tau(a.texts, b.texts) for a, b in pairs]
    return sum(taus) / len(taus), sum(a.texts[0] == b.texts[0] for a, b in pairs) / len(pairs)


def agreement(rank_lists):
    """Agreement between annotators on every task ranked by two or more of them.

    Returns {"overall": {...}, "annotators": {name: {...}}, "tasks": {task: {...}}}: per task the mean Kendall's
    tau over its pairs of rankings and the share of pairs with the same best answer; per annotator the mean tau of
    their rankings against the others' rankings of the same tasks, over how many pairs and tasks; overall the
    mean over all pairs.
    """
    tasks, by_annotator, all_pairs = {}, {}, []
    for key, members in group_by_task(rank_lists).items():
        if len(members) < 2:
            continue
        tau, best_same = task_agreement(members)
        tasks[task_label(key)] = {
            "rankings": len(members), "tau": tau, "best_same": best_same}
        for a, b in itertools.combinations(members, 2):
            pair = (kendall_tau(a.texts, b.texts), a.texts[0] == b.texts[0])
            all_pairs.append(pair)
            for name in {annotator_name(a), annotator_name(b)}:
                stats = by_annotator.setdefault(name, {"taus": [], "tasks": set()})
                stats["taus"].append(pair[0])
                stats["tasks"].add(key)
    annotators = {name: {"tau": sum(s["taus"]) / len(s["taus"]), "pairs": len(s["taus"]), "tasks": len(s["tasks"])}
                  for name, s in sorted(by_annotator.items())}
    overall = {"tasks": len(tasks), "pairs": len(all_pairs),
               "tau": sum(t for t, _ in all_pairs) / len(all_pairs) if all_pairs else None,
               "best_same": sum(s for _, s in all_pairs) / len(all_pairs) if all_pairs else None}
    return {"overall": overall, "annotators": annotators, "tasks": tasks}


def task_label(key):
    """A task's name in reports: its id, or (free mode) its prompt and a short hash of its answer set."""
    if key[0] == "task":
        return key[1]
    return f"{key[1]} [{hashlib.sha1(json.dumps(key[2], ensure_ascii=False).encode('utf-8')).hexdigest()[:8]}]"


def annotator_name(rank_list):
    return str(getattr(rank_list, "annotator", None) or "").strip() or "(未填写)"


def consensus_order(members):
    """One ranking of a task from all of its rankings: the texts by mean rank, ties broken by the better median
    rank, then by the first saved ranking's order.

    With complete rankings the mean rank orders the texts exactly as a Borda count does (a text's Borda points are
    K minus its rank, summed), so the two choices differ only in how they break ties; the median breaks them
    towards the text most annotators put higher, which an outlier ranking cannot move.
    """
    rank_of = [_positions(m.texts) for m in members]
    items = sorted(rank_of[0], key=rank_of[0].get)

    def sort_key(item):
        ranks = [r[item] for r in rank_of]
        return sum(ranks) / len(ranks), statistics.median(ranks), rank_of[0][item]

    return [text for text, _ in sorted(items, key=sort_key)]


MERGES = ("all", "consensus")


def add_merge_arguments(parser):
    """--merge and --min_agreement, as utils.preferences, train_reward_model.py and train_dpo.py take them."""
    parser.add_argument("--merge", choices=MERGES, default="all",
                        help="all: every annotator's rank list; consensus: one list per task (mean rank), see "
                             "utils/ranklists.py merge_rank_lists")
    parser.add_argument("--min_agreement", type=correlation,
                        help="with --merge consensus: drop tasks whose annotators' mean Kendall's tau is below this")


def merge_rank_lists(rank_lists, merge="all", min_agreement=None):
    """(rank lists, summary line) as training should see them.

    merge="all" keeps every annotator's list (one task ranked by three annotators trains three times).
    merge="consensus" turns the lists of one task into one (`consensus_order`); a task is known by its task id
    (the labelling page's queue) or, for lists without one (free mode, other files), by identical prompt and set
    of answers. `min_agreement` (consensus only) drops the tasks whose mean Kendall's tau between annotators is
    below it; a task ranked once has no agreement and is kept.
    """
    if merge not in MERGES:
        raise UserError(f"--merge must be one of {', '.join(MERGES)}, got {merge!r}")
    if min_agreement is not None and merge != "consensus":
        raise UserError("--min_agreement needs --merge consensus")
    if min_agreement is not None and not -1 <= min_agreement <= 1:
        raise UserError(f"--min_agreement is a Kendall's tau between -1 and 1, got {min_agreement}")
    if merge == "all":
        return list(rank_lists), f"--merge all: {len(rank_lists)} rank lists, every annotator's list kept"
    merged, dropped, ranked_once = [], 0, 0
    for members in group_by_task(rank_lists).values():
        if len(members) == 1:
            ranked_once += 1
        elif min_agreement is not None and task_agreement(members)[0] < min_agreement:
            dropped += 1
            continue
        merged.append(dataclasses.replace(members[0], texts=consensus_order(members),
                                          annotator=f"consensus of {len(members)}"))
    summary = (f"--merge consensus: {len(rank_lists)} rank lists -> {len(merged)} (one per task; "
               f"{ranked_once} ranked once, {dropped} dropped below --min_agreement {min_agreement})")
    if not merged:
        raise UserError(f"{summary}: nothing left to train on")
    return merged, summary


def format_agreement(report):
    """The agreement report as a table (per annotator, then overall) and, on the last line, JSON."""
    def number(x):
        return "-" if x is None else f"{x:.3f}"

    lines = [f"{'annotator':<20} {'mean tau':>9} {'pairs':>6} {'tasks':>6}"]
    lines += [f"{name:<20} {number(s['tau']):>9} {s['pairs']:>6} {s['tasks']:>6}"
              for name, s in report["annotators"].items()]
    o = report["overall"]
    lines.append(f"{'overall':<20} {number(o['tau']):>9} {o['pairs']:>6} {o['tasks']:>6}   "
                 f"same best answer: {number(o['best_same'])}")
    lines.append(json.dumps(report, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines)


def main(argv=None):
    """`python -m utils.ranklists agreement FILE`: agreement between the annotators of a labelled TSV file."""

    parser = ArgumentParser(prog="python -m utils.ranklists", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    agree = commands.add_parser("agreement", help="Kendall's tau between annotators who ranked the same tasks")
    agree.add_argument("rank_list_file", type=input_file, metavar="TSV",
                       help="the labelling page's TSV, with its .meta.jsonl")
    agree.add_argument("--skip_bad_lines", action="store_true", help="skip and count bad lines")
    args = parser.parse_args(argv)
    report = agreement(read_prompted_rank_lists(args.rank_list_file, args.skip_bad_lines))
    if not report["tasks"]:
        print(f"{args.rank_list_file}: no task was ranked by two or more annotators (use the labelling page's "
              "--tasks queue with --overlap)", file=sys.stderr)
    print(format_agreement(report))


if __name__ == "__main__":
    from utils.errors import run_main

    run_main(main)


# ---------------------------------------------------------------- rank lists with their prompts (the .meta.jsonl)
@dataclasses.dataclass
class PromptedRankList:
    """One rank list, texts best first; `prompt` is None when no prompt is known; `task_id` and `annotator` come
    from the labelling page's meta record (the task queue's id, who ranked it), None when unknown."""
    texts: list
    prompt: str = None
    task_id: str = None
    annotator: str = None


def read_prompted_rank_lists(path, skip_bad_lines=False):
    """The rank lists of a TSV file with their prompts from its `.meta.jsonl` (if there is one).

    The n-th non-blank line of the TSV belongs to the n-th non-blank record of the meta file. A bad TSV line,
    a record that is not JSON, whose `rank_list_len` differs from the line's number of texts, whose prompt does
    not begin every text, or a line without a record (or a record without a line) stops with `file:line:
    reason`; with `skip_bad_lines` the line is left out and counted on stderr.
    """
    meta_file = metadata_path(path)
    records = _records(meta_file) if os.path.isfile(meta_file) else None
    seen = 0  # non-blank TSV lines so far: the index of the line's meta record

    def parse_line(line):
        nonlocal seen
        fields, reason = parse_rank_list_line(line, None)
        if fields == []:  # a blank line has no meta record
            return None, None
        seen += 1
        if reason is not None or records is None:
            return (None if reason else PromptedRankList(fields)), reason
        if seen > len(records):
            return None, f"no record for this rank list in {meta_file} (it has {len(records)})"
        return _from_record(*records[seen - 1], meta_file, fields)

    rank_lists = with_distinct_texts(path, read_checked_lines(path, parse_line, skip_bad_lines))
    extra = (records or [])[seen:]
    if extra:
        where, reason = f"{meta_file}:{extra[0][0]}", f"a record without a rank list ({path} has {seen} lists)"
        if not skip_bad_lines:
            raise UserError(f"{where}: {reason} (use --skip_bad_lines to skip such lines)")
        print(f"warning: skipped {len(extra)} record(s) in {meta_file} (first: {where}: {reason})", file=sys.stderr)
    return rank_lists


def with_distinct_texts(path, rank_lists):
    """The rank lists after the one rule for repeated texts (utils/ranklists.py `without_repeats`)."""
    distinct = without_repeats(path, [rank_list.texts for rank_list in rank_lists])
    return [dataclasses.replace(r, texts=texts) for r, texts in zip(rank_lists, distinct) if texts]


def _records(meta_file):
    """[(line_number, text, None where it is not UTF-8)] of the non-blank lines of a meta file."""
    return [(number, line) for number, line in read_numbered_lines(meta_file) if line is None or line.strip()]


def _from_record(meta_number, line, meta_file, texts):
    """(PromptedRankList, None) for a record that matches the rank list `texts`, (None, reason) otherwise."""
    where = f"{meta_file}:{meta_number}"
    try:
        record = json.loads(line)
    except (TypeError, ValueError):  # TypeError: a line that is not UTF-8 (None)
        return None, f"its record {where} is not a JSON object"
    if not isinstance(record, dict):
        return None, f"its record {where} is not a JSON object"
    if "rank_list_len" in record and record["rank_list_len"] != len(texts):
        return None, f"{len(texts)} texts, but its record {where} says rank_list_len {record['rank_list_len']}"
    prompt = record.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        return None, f"the prompt in its record {where} is not a string"
    for i, text in enumerate(texts, start=1):
        if prompt and not text.startswith(prompt):
            return None, f"text {i} does not begin with the prompt {prompt!r} of its record {where}"
    task_id = record.get("task_id")
    return PromptedRankList(texts, prompt or None, None if task_id is None else str(task_id),
                            record.get("annotator")), None
