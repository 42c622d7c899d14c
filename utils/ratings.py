"""The ratings log of `terminal_main.py`: its name, how it is read, and how it becomes rank lists.

`terminal_main.py` appends each rating to `logs/<RATINGS_NAME>.jsonl`, one record per line: the prompt, the
model's answer, the reward the person typed (and the PPO step, the time, the seconds spent); this module reads
those records back. Answers to the same prompt, ordered by their
reward, are a rank list (best first, tab-separated), the format `train_reward_model.py` reads:

    python -m utils.ratings logs/Terminal-Human-Feedback.jsonl data/human_labeled/terminal_rank_lists.tsv

A rank list says "better than", never "as good as": of several answers with the same reward for one prompt
only the first one rated is kept, and a prompt needs answers with at least two different rewards.
"""
import argparse
import json
import os

from utils.errors import UserError
from utils.options import (ArgumentParser, checked_value, finite_float, input_file, nonnegative_float, output_file,
                           positive_int)
from utils.ranklists import SKIP_HINT, read_checked_lines, write_rank_lists
from utils.outputs import RANK_LISTS, Output, check_outputs
from utils.texts import NOT_UTF8

RATINGS_NAME = "Terminal-Human-Feedback"  # logs/<name>.jsonl and logs/<name>.png
DEFAULT_RATINGS = os.path.join("logs", f"{RATINGS_NAME}.jsonl")
DEFAULT_RANK_LISTS = os.path.join("data", "human_labeled", "terminal_rank_lists.tsv")


def read_ratings(path, skip_bad_lines=False, bad_line_hint=SKIP_HINT):
    """The ratings in a JSONL file, each checked against the one schema of the log (RATING_FIELDS), as
    `python -m utils.ratings` and `terminal_main.py` (before it loads a model) read it. A bad line stops with
    `file:line: reason (bad_line_hint)` unless `skip_bad_lines`; a last line cut short by a kill is left out with a
    warning."""
    return read_checked_lines(path, _parse_rating, skip_bad_lines, last_line_may_be_cut=True,
                              bad_line_hint=bad_line_hint)


# the schema of a rating record: field -> (the option type that checks its number, or str; required)
RATING_FIELDS = {"rating": (positive_int, True), "prompt": (str, True), "answer": (str, True),
                 "reward": (finite_float, True), "step": (positive_int, False), "seconds": (nonnegative_float, False),
                 "time": (str, False)}
REQUIRED_FIELDS = [key for key, (_, required) in RATING_FIELDS.items() if required]


def _parse_rating(line):
    """(rating, None) for a good line, (None, None) for a blank one, (None, reason) for a bad one."""
    if line is None:
        return None, NOT_UTF8
    if not line.strip():
        return None, None
    try:
        rating = json.loads(line)
    except ValueError:
        return None, "not a JSON record"
    if not isinstance(rating, dict):
        return None, "not a JSON object"
    for key, (type_, required) in RATING_FIELDS.items():
        if key not in rating:
            if required:
                return None, f"no '{key}' (a rating record has {', '.join(REQUIRED_FIELDS)})"
        elif type_ is str:
            if not isinstance(rating[key], str):
                return None, f"'{key}' should be a text"
        else:
            try:
                checked_value(type_, rating[key])
            except argparse.ArgumentTypeError as e:
                return None, f"'{key}': {e}"
    return rating, None


def ratings_to_rank_lists(ratings):
    """Rank lists of full texts (prompt + answer), one per prompt, best reward first."""
    by_prompt = {}
    for rating in ratings:
        by_prompt.setdefault(rating["prompt"], []).append(rating)
    rank_lists = []
    for prompt, group in by_prompt.items():
        best_first = sorted(group, key=lambda r: -r["reward"])  # stable: among equal rewards the first rated leads
        texts, rewards_seen = [], set()
        for rating in best_first:
            text = prompt + rating["answer"]
            if rating["reward"] not in rewards_seen and text not in texts:
                rewards_seen.add(rating["reward"])
                texts.append(text)
        if len(texts) >= 2:
            rank_lists.append(texts)
    return rank_lists


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ratings_file", type=input_file, nargs="?", default=DEFAULT_RATINGS)
    parser.add_argument("out_file", type=output_file, nargs="?", default=DEFAULT_RANK_LISTS,
                        help="rewritten as a whole")
    parser.add_argument("--skip_bad_lines", action="store_true")
    args = parser.parse_args(argv)
    check_outputs([Output("out_file", args.out_file, RANK_LISTS)], [("ratings_file", args.ratings_file)])
    ratings = read_ratings(args.ratings_file, skip_bad_lines=args.skip_bad_lines)
    rank_lists = ratings_to_rank_lists(ratings)
    if not rank_lists:
        raise UserError(f"{args.ratings_file}: no prompt has answers with two different rewards "
                        f"({len(ratings)} ratings), so there is no rank list to write")
    write_rank_lists(args.out_file, rank_lists)
    used = sum(len(texts) for texts in rank_lists)
    left_out = len(ratings) - used
    print(f"{args.out_file}: {len(rank_lists)} rank list(s) from {len(ratings)} ratings"
          + (f"; {left_out} left out (same reward or text as a better-placed answer, or a prompt's only answer)"
             if left_out else ""))


if __name__ == "__main__":
    from utils.errors import run_main

    run_main(main)
