"""Labelling page costs, measured side by side in one run (CPU).

1. One save: `append_rank_list` (lock, TSV line and JSONL record, both fsynced) next to the original's plain
   `open(file, 'a').write(line)` (no lock, no fsync, no metadata), interleaved; median, p90 and max in ms.
   An undo in a file of --undo_lines lines (it rewrites the file).
2. The K answers of one prompt on the tiny GPT-2 (one batched call) with 1 and with 2 torch threads,
   interleaved: why the page's --threads defaults to 1.

    python bench/bench_labeler.py [--saves 200] [--generations 5] [--undo_lines 10000]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.generation import generate_responses  # noqa: E402
from utils.tokens import decode, encode_prompt  # noqa: E402
from utils.policy import load_causal_lm  # noqa: E402
from utils.ranklists import append_rank_list, format_rank_line, undo_rank_list  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

TEXTS = ["这次购物总的来说体验很好，物流很快，包装也很仔细，下次还会再来。"] * 4


def summary(ms):
    ms = sorted(ms)
    return f"median {statistics.median(ms):7.2f} ms   p90 {ms[int(0.9 * (len(ms) - 1))]:7.2f} ms   max {ms[-1]:7.2f} ms"


def bench_saves(folder, saves):
    ours, plain = [], []
    for i in range(saves):
        start = time.perf_counter()
        append_rank_list(os.path.join(folder, "ours.tsv"), TEXTS, {"i": i})
        ours.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        with open(os.path.join(folder, "plain.tsv"), "a", encoding="utf-8") as f:
            f.write("\t".join(TEXTS) + "\n")
        plain.append((time.perf_counter() - start) * 1000)
    print(f"save, append_rank_list (lock + fsync x2): {summary(ours)}")
    print(f"save, plain append (original):            {summary(plain)}")
    print(f"ratio of medians: {statistics.median(ours) / statistics.median(plain):.0f}x")


def bench_undo(folder, lines):
    path = os.path.join(folder, "big.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.write(format_rank_line(TEXTS) * lines)
    saved = append_rank_list(path, ["最后一条", "是要撤销的"])
    start = time.perf_counter()
    assert undo_rank_list(saved)
    print(f"undo in a file of {lines} lines ({os.path.getsize(path) / 1e6:.1f} MB): "
          f"{(time.perf_counter() - start) * 1000:.1f} ms")


def bench_generation(generations, k=4, max_new_tokens=40):
    path = ensure_tiny()["gpt2"]
    model, tokenizer = load_causal_lm(path, "cpu")  # as the labelling page loads it
    query = encode_prompt(tokenizer, "这次购物总的来说体验很")
    generate_responses(model, tokenizer, [query] * k, max_new_tokens)  # warm-up
    seconds = {1: [], 2: []}
    for _ in range(generations):
        for threads in seconds:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            [decode(tokenizer, r) for r in generate_responses(model, tokenizer, [query] * k, max_new_tokens)]
            seconds[threads].append(time.perf_counter() - start)
    for threads, s in seconds.items():
        print(f"{k} answers x {max_new_tokens} tokens, tiny GPT-2, {threads} thread(s): "
              f"median {statistics.median(s):.2f} s (all: {', '.join(f'{x:.2f}' for x in s)})")
    print(f"ratio 2 threads / 1 thread: {statistics.median(seconds[2]) / statistics.median(seconds[1]):.1f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--undo_lines", type=int, default=10000)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(dir=".") as folder:  # the disk the dataset lives on, not a tmpfs
        bench_saves(folder, args.saves)
        bench_undo(folder, args.undo_lines)
    bench_generation(args.generations)


if __name__ == "__main__":
    main()
