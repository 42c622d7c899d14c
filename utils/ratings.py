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
import math
import os

from utils.common import UserError
from utils.options import ArgumentParser, input_file, output_file, same_file
from utils.ranklists import read_checked_lines, write_rank_lists

RATINGS_NAME = "Terminal-Human-Feedback"  # logs/<name>.jsonl and logs/<name>.png
DEFAULT_RATINGS = os.path.join("logs", f"{RATINGS_NAME}.jsonl")
DEFAULT_RANK_LISTS = os.path.join("data", "human_labeled", "terminal_rank_lists.tsv")


def read_ratings(path, skip_bad_lines=False):
    """The ratings in a JSONL file; a bad line stops with `file:line: reason` unless `skip_bad_lines`."""
    return read_checked_lines(path, _parse_rating, skip_bad_lines)


def _parse_rating(raw):
    """(rating, None) for a good line, (None, None) for a blank one, (None, reason) for a bad one."""
    if not raw.strip():
        return None, None
    try:
        rating = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8 text"
    except ValueError:
        return None, "not a JSON record"
    if not isinstance(rating, dict):
        return None, "not a JSON object"
    for key in ("prompt", "answer"):
        if not isinstance(rating.get(key), str):
            return None, f"'{key}' should be a text"
    reward = rating.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        return None, "'reward' should be a finite number"
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
    if same_file(args.ratings_file, args.out_file):
        raise UserError(f"{args.out_file} is also the ratings file: writing it would destroy what is read")
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
    from utils.common import run_main

    run_main(main)
