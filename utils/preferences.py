"""Rank lists as pairwise preferences: every ordered pair i<j of a list (best first) says "text i is better
than text j", the format DPO and other RLHF tools read: {"prompt": ..., "chosen": ..., "rejected": ...}.

The labelling page saves each text as prompt + answer and writes the prompt to the `.meta.jsonl` file beside
the TSV (one record per TSV line). With it, a pair's `chosen` and `rejected` are the answers alone; a rank
list without a known prompt (no meta file, or a record without a prompt) gets prompt "" and the whole texts.

    python -m utils.preferences data/human_labeled/total_dataset.tsv --output data/human_labeled/preferences.jsonl
    python -m utils.preferences data/human_labeled/total_dataset.tsv --merge consensus --min_agreement 0.3

`--merge consensus` first turns the rank lists of one task (several annotators) into one: see
utils/ranklists.py `merge_rank_lists`.
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass, replace

from utils.errors import UserError
from utils.files import write_text_atomically
from utils.options import ArgumentParser, input_file, output_file
from utils.ranklists import (add_merge_arguments, merge_rank_lists, metadata_path, parse_rank_list_line,
                             read_checked_lines, without_repeats)
from utils.outputs import PREFERENCES, Output, check_outputs, inputs_with_metadata
from utils.texts import NOT_UTF8, read_numbered_lines

DEFAULT_OUTPUT = os.path.join("data", "human_labeled", "preferences.jsonl")


@dataclass
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
    return [replace(r, texts=texts) for r, texts in zip(rank_lists, distinct) if texts]


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


def preference_pairs(rank_lists):
    """Every ordered pair i<j of every list as {prompt, chosen, rejected}, answers without their prompt (prompt ""
    and the whole texts when none is known). The readers have left no identical texts in a list."""
    pairs = []
    for rank_list in rank_lists:
        prompt = rank_list.prompt or ""
        answers = [text[len(prompt):] for text in rank_list.texts]
        pairs += [{"prompt": prompt, "chosen": answers[i], "rejected": answers[j]}
                  for i in range(len(answers)) for j in range(i + 1, len(answers))]
    return pairs


PAIR_FIELDS = ("prompt", "chosen", "rejected")


def read_preference_jsonl(path, skip_bad_lines=False):
    """The pairs of a preference JSONL (what `main` writes: {"prompt", "chosen", "rejected"} per line, answers
    without their prompt) as rank lists of 2, chosen first, with their prompt ("" for none).

    A line that is not a JSON object, lacks one of the three fields or has one that is not text, or has an empty
    `chosen` or `rejected` stops with `file:line: reason`; with `skip_bad_lines` it is left out and counted on
    stderr (the rank-list reader's checked lines). A pair whose `chosen` equals its `rejected` is left out and
    counted, as identical texts of a rank list are (`with_distinct_texts`).
    """
    def parse_line(line):
        if line is None:
            return None, NOT_UTF8
        if not line.strip():
            return None, None
        try:
            record = json.loads(line)
        except ValueError:
            return None, "not a JSON object"
        if not isinstance(record, dict):
            return None, "not a JSON object"
        for field in PAIR_FIELDS:
            if field not in record:
                return None, f"no \"{field}\" field (a preference line has {', '.join(PAIR_FIELDS)})"
            if not isinstance(record[field], str):
                return None, f"\"{field}\" is not a string"
        prompt, chosen, rejected = (record[field] for field in PAIR_FIELDS)
        for field, answer in (("chosen", chosen), ("rejected", rejected)):
            if not answer.strip():
                return None, f"empty \"{field}\" answer"
        return PromptedRankList([prompt + chosen, prompt + rejected], prompt), None

    pairs = with_distinct_texts(path, read_checked_lines(path, parse_line, skip_bad_lines))
    if not pairs:
        raise UserError(f"{path}: no preference pairs in this file (expected one JSON object per line with "
                        f"{', '.join(PAIR_FIELDS)})")
    return pairs


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rank_list_files", type=input_file, nargs="+", metavar="TSV",
                        help="rank-list files (texts best first, tab-separated), each with its .meta.jsonl if any")
    parser.add_argument("--output", type=output_file, default=DEFAULT_OUTPUT,
                        help="JSONL file to write (replaced atomically)")
    parser.add_argument("--skip_bad_lines", action="store_true", help="skip and count bad lines")
    add_merge_arguments(parser)
    args = parser.parse_args(argv)
    check_outputs([Output("--output", args.output, PREFERENCES)],
                  [read for path in args.rank_list_files for read in inputs_with_metadata("TSV", path)])
    rank_lists = [r for path in args.rank_list_files for r in read_prompted_rank_lists(path, args.skip_bad_lines)]
    rank_lists, summary = merge_rank_lists(rank_lists, args.merge, args.min_agreement)
    print(summary)
    pairs = preference_pairs(rank_lists)
    if not pairs:  # an empty export never replaces an earlier one
        raise UserError(f"no preference pairs in {', '.join(args.rank_list_files)} (no rank list of 2 or more "
                        f"different texts): {args.output} is left as it was")
    write_text_atomically(args.output, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    print(f"{args.output}: {len(pairs)} preference pairs from {len(rank_lists)} rank lists")
    unknown = [r for r in rank_lists if r.prompt is None]
    if unknown:
        print(f"{len(unknown)} rank list(s) ({sum(len(r.texts) * (len(r.texts) - 1) // 2 for r in unknown)} pairs) "
              "have no known prompt (no .meta.jsonl record with one): written with prompt \"\" and the whole texts")


if __name__ == "__main__":
    from utils.errors import run_main

    run_main(main)
