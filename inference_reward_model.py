"""Score texts with a reward model trained by train_reward_model.py.

    python inference_reward_model.py                       # the original's two example reviews
    python inference_reward_model.py "太好吃了" "难吃"       # texts as arguments
    cat reviews.txt | python inference_reward_model.py -   # one text per line on stdin
    python inference_reward_model.py --eval_tsv data/reward_datasets/sentiment_analysis/dev.tsv

Prints one `score<TAB>text` line per text, or with --eval_tsv the four ranking metrics as one JSON line.
"""
import argparse
import json
import os

from utils.device import pick_device
from utils.errors import UserError, run_main
from utils.options import ArgumentParser, add_device_argument, input_file, positive_int, utf8_text
from utils.ranklists import read_rank_lists
from utils.texts import read_stdin_lines
from utils.reward_model import load_reward_model, reward_model_folder, score_and_rank_metrics, score_texts

DEFAULT_MODEL = os.path.join("checkpoints", "reward_model", "sentiment_analysis", "model_best")
EXAMPLE_TEXTS = [
    "买过很多箱这个苹果了，一如既往的好，汁多味甜～",
    "一台充电很慢，信号不好！退了！又买一台竟然是次品。。服了。。",
]


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", type=utf8_text, help="texts to score; '-' reads one per line from stdin")
    parser.add_argument("--model_name", "--model", type=reward_model_folder, default=DEFAULT_MODEL,
                        help="a checkpoint folder written by train_reward_model.py")
    parser.add_argument("--eval_tsv", type=input_file, default=None,
                        help="rank-list TSV file (best first) to evaluate on")
    parser.add_argument("--skip_bad_lines", action="store_true", help="with --eval_tsv: skip and count bad lines")
    parser.add_argument("--batch_size", type=positive_int, default=32)
    parser.add_argument("--max_seq_len", type=positive_int, default=128)
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.eval_tsv and args.texts:
        raise UserError("give either texts or --eval_tsv, not both")
    return args


def read_texts(args):
    if args.texts == ["-"]:
        return [line.strip() for line in read_stdin_lines("expected one text per line") if line.strip()]
    return args.texts or EXAMPLE_TEXTS


def evaluate_file(model, tokenizer, args):
    """Score every text of the file in one batched pass, then compare with each list's order."""
    rank_lists = read_rank_lists(args.eval_tsv, skip_bad_lines=args.skip_bad_lines)
    return score_and_rank_metrics(
        rank_lists, lambda texts: score_texts(model, tokenizer, texts, args.batch_size, args.max_seq_len))


def main(argv=None):
    args = parse_args(argv)
    model, tokenizer = load_reward_model(args.model_name, pick_device(args.device))
    if args.eval_tsv:
        metrics = evaluate_file(model, tokenizer, args)
        print(json.dumps({"file": args.eval_tsv, **{k: round(v, 5) for k, v in metrics.items()}}, ensure_ascii=False))
        return
    texts = read_texts(args)
    if not texts:
        raise UserError("no texts to score (stdin was empty)")
    for score, text in zip(score_texts(model, tokenizer, texts, args.batch_size, args.max_seq_len), texts):
        print(f"{score:.4f}\t{text}")


if __name__ == "__main__":
    run_main(main)
