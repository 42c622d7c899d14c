"""PPO on a model of one's own, with and without LoRA, side by side in one run: seconds per epoch and peak GPU
memory of ppo_sentiment_example.py on a random-weight Qwen2 (by default shaped like Qwen2.5-0.5B, 494M
parameters, so no download is needed), full fine-tuning next to LoRA (--lora_r). The reward is a plain function
of the text (share of distinct characters): the figures are about the policy's cost, not about learning.

    python bench/bench_any_lm.py                                   # GPU: Qwen2-0.5B shape, batch 64
    python bench/bench_any_lm.py --shape micro --batch_size 16 --epochs 2 --device cpu
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import ppo_sentiment_example  # noqa: E402
from utils.errors import run_main  # noqa: E402
from utils.data import read_corpus_split  # noqa: E402
from utils.logger import read_jsonl  # noqa: E402
from utils.random_lm import SHAPES, build_random_causal_lm  # noqa: E402


def distinct_characters(texts):
    return [len(set(text)) / max(1, len(text)) for text in texts]


def run_ppo(model_dir, folder, args, lora_r):
    """(median seconds per epoch after the first, peak GPU memory in GiB or None on the CPU)."""
    on_cuda = args.device.startswith("cuda")
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    argv = ["--model_name", model_dir, "--batch_size", str(args.batch_size), "--mini_batch_size",
            str(args.mini_batch_size), "--steps",
            str(args.batch_size * args.epochs), "--max_new_tokens", str(args.max_new_tokens), "--num_samples", "0",
            "--save_dir", os.path.join(folder, "ck"), "--log_dir", folder, "--log_name", f"lora{lora_r}",
            "--device", args.device, "--lora_r", str(lora_r)]
    ppo_sentiment_example.main(argv, reward_fn=distinct_characters)
    seconds = [r["time_epoch"] for r in read_jsonl(os.path.join(folder, f"lora{lora_r}.jsonl"))]
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None
    return statistics.median(seconds[1:] or seconds), peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2-0.5b")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--mini_batch_size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4, help="PPO epochs per run (the first is not counted)")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    sentences = [s for _, s in read_corpus_split("train")[:3000]]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        model_dir = build_random_causal_lm(os.path.join(folder, "model"), "qwen2", sentences, shape=args.shape)
        print(f"random-weight Qwen2 ({args.shape}) built in {time.perf_counter() - start:.1f}s; PPO at batch "
              f"{args.batch_size}, {args.max_new_tokens} new tokens, {args.epochs} epochs on {args.device}")
        results = {}
        for lora_r in (0, args.lora_r):
            results[lora_r] = run_ppo(model_dir, os.path.join(folder, f"run{lora_r}"), args, lora_r)
            seconds, peak = results[lora_r]
            name = f"LoRA r={lora_r}" if lora_r else "full fine-tuning"
            memory = f", peak GPU memory {peak:.2f} GiB" if peak is not None else ""
            print(f"{name}: {seconds:.2f} s/epoch{memory}")
    (full_s, full_mem), (lora_s, lora_mem) = results[0], results[args.lora_r]
    print(f"ratio LoRA / full: time {lora_s / full_s:.2f}"
          + (f", peak memory {lora_mem / full_mem:.2f}" if full_mem else ""))


if __name__ == "__main__":
    run_main(main)
