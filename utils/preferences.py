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

from utils.errors import UserError
from utils.files import write_text_atomically
from utils.options import ArgumentParser, input_file, output_file
from utils.ranklists import (PromptedRankList, add_merge_arguments, merge_rank_lists, read_checked_lines,
                             read_prompted_rank_lists, with_distinct_texts)
from utils.outputs import PREFERENCES, Output, check_outputs, inputs_with_metadata
from utils.texts import NOT_UTF8

DEFAULT_OUTPUT = os.path.join("data", "human_labeled", "preferences.jsonl")


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
