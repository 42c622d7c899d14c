"""The one output-target check: every command, before it loads a model or does any work, checks each file it will
write against every file it reads, against the other files it writes, and against the project's files of other
kinds. An output lands only where nothing is, or on a file of its own kind:

    check_outputs(outputs, inputs)   UserError (one line) for the first output that may not be written there
    Output(option, path, kind)       a file a command writes, of one of the kinds below, named by its option
    log_outputs(log_dir, log_name, kind) / labels_outputs(tsv, kind)   the files that go together
    kind_of(path)                    which kind a file on disk is (None: missing or empty)

A file's kind is read from its first line (and, for a rank-list TSV, from the `.meta.jsonl` beside it): rank lists
with or without their metadata, the terminal's ratings, task files, preference pairs, training logs of epoch or
of step records, PNG figures; anything else (a prompts file, a file that is not UTF-8) is nobody's output.
"""
import json
import os
from dataclasses import dataclass

from utils.errors import UserError
from utils.ranklists import metadata_path
from utils.texts import numbered_lines

RANK_LISTS = "a rank-list TSV without metadata"
LABELS = "labels (a rank-list TSV with its .meta.jsonl)"
LABELS_META = "the metadata of labels (a .meta.jsonl)"
AI_LABELS = "AI-feedback rank lists (a TSV with its .meta.jsonl)"
AI_META = "the metadata of AI-feedback rank lists"
RATINGS = "the terminal's ratings log"
TASKS = "a task file"
PREFERENCES = "preference pairs (JSONL)"
EPOCH_LOG = "a training log of epoch records"
STEP_LOG = "a training log of step records"
FIGURE = "a PNG figure"
LEASES = "the task queue's leases"
OTHER = "a file that is no command's output"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEAD_BYTES = 1 << 20  # a file's kind is read from its first line, which this surely holds
AI_ANNOTATOR = "AI feedback: "  # how utils.ai_feedback names the annotator in its metadata


@dataclass
class Output:
    option: str  # how the user names it, for the message (--output, --log_name ...)
    path: str
    kind: str
    also: tuple = ()  # other kinds it may be written onto


def log_outputs(log_dir, log_name, kind, option="--log_name"):
    """The two files of a log (utils/logger.py TrainLogger): <log_dir>/<log_name>.jsonl, records of `kind`, and
    its PNG."""
    base = os.path.join(log_dir, log_name)
    return [Output(option, f"{base}.jsonl", kind), Output(option, f"{base}.png", FIGURE)]


def labels_outputs(option, tsv, kind=LABELS):
    """A labelled TSV and the metadata beside it, written together (utils/ranklists.py append_rank_list). Labels
    are appended, also to rank lists saved before their file had metadata (the original tool's); AI feedback is
    written whole."""
    if kind == LABELS:
        return [Output(option, tsv, LABELS, also=(RANK_LISTS,)), Output(option, metadata_path(tsv), LABELS_META)]
    return [Output(option, tsv, AI_LABELS), Output(option, metadata_path(tsv), AI_META)]


def inputs_with_metadata(option, tsv):
    """A rank-list TSV as the readers that take prompts from its metadata read it: the TSV and its .meta.jsonl."""
    return [(option, tsv), (f"{option} (its .meta.jsonl)", metadata_path(tsv))] if tsv else []


def check_outputs(outputs, inputs=()):
    """UserError (one line) unless every output may be written where it is going: not onto a file read (`inputs`:
    [(option, path)], None paths left out), not onto another output, and onto nothing or a file of its own kind."""
    inputs = [(option, path) for option, path in inputs if path]
    for i, output in enumerate(outputs):
        for option, path in inputs:
            if same_place(output.path, path):
                raise UserError(f"{output.option} {output.path} is also what {option} reads ({path}): writing it "
                                "would destroy what is read; choose another path")
        for other in outputs[:i]:
            if same_place(output.path, other.path):
                raise UserError(f"{output.option} {output.path} is also where {other.option} writes "
                                f"{other.kind}: choose another path for one of them")
        found = kind_of(output.path)
        if found not in (None, output.kind, *output.also):
            raise UserError(f"{output.option}: {output.path} exists and is {found}, not {output.kind}: refusing to "
                            f"write over it; choose another {output.option} or move the file away")


def same_place(a, b):
    """True when paths `a` and `b` name one file (existing or not: the same place once resolved)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def kind_of(path):
    """The kind of the file at `path` (one of the constants above), None when there is none or it is empty."""
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        return "a folder" if os.path.isdir(path) else "not a regular file"
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head.strip():
        return None
    if head.startswith(PNG_SIGNATURE):
        return FIGURE
    first = next((line for _, line in numbered_lines(head) if line is None or line.strip()), None)
    if first is None:
        return OTHER  # not UTF-8 text
    if first.lstrip().startswith("{"):
        return _record_kind(first)
    if "\t" in first:
        return _rank_list_kind(path)
    return OTHER


def _record_kind(line):
    """The kind of a JSONL file, from its first record's fields."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return OTHER
    fields = set(record)
    if {"answer", "reward"} <= fields:  # also a rating record that lacks its number
        return RATINGS
    if {"id", "prompt", "answers"} <= fields:
        return TASKS
    if {"prompt", "chosen", "rejected"} <= fields:
        return PREFERENCES
    if fields & {"save_id", "prompt", "annotator"}:  # what the labelling page and AI feedback record of a line
        return AI_META if str(record.get("annotator", "")).startswith(AI_ANNOTATOR) else LABELS_META
    if "step" in fields:  # the reward model's and DPO's records name their epoch too
        return STEP_LOG
    if "epoch" in fields:
        return EPOCH_LOG
    if all(isinstance(holders, dict) for holders in record.values()):
        return LEASES
    return OTHER


def _rank_list_kind(tsv):
    """A rank-list TSV alone, or with the metadata of labels or of AI feedback beside it."""
    return {None: RANK_LISTS, LABELS_META: LABELS, AI_META: AI_LABELS}.get(kind_of(metadata_path(tsv)), OTHER)
