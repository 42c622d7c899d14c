"""What a person waits for in terminal_main.py, measured side by side in one run on the tiny GPT-2 (CPU).

1. Writing one rating: `TrainLogger.log` (flush + fsync, what the script does before every PPO step) next to a
   plain append without fsync, interleaved; median and max in ms.
2. The answers of one --batch_size 4 round: one batched `generate_responses` call next to 4 calls of one answer.
3. One PPO step on 1 rating (the original's batch) next to one step on 4 ratings: seconds per step and per rating.

    python bench/bench_terminal.py [--ratings 200] [--rounds 3]
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.generation import PROMPTS, encode_prompt, generate_responses  # noqa: E402
from utils.logger import TrainLogger  # noqa: E402
from utils.ppo import load_policy, make_ppo_trainer, ppo_step  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

RECORD = {"rating": 1, "step": 1, "prompt": PROMPTS[0], "answer": "点小，不过质量很好，物流也很快，下次还会再来。",
          "reward": 1.5, "seconds": 3.2, "time": "2026-01-01T12:00:00"}


def bench_rating_writes(folder, ratings):
    logger = TrainLogger(folder, "synced", x_key="rating", resume=True)
    synced, plain = [], []
    with open(os.path.join(folder, "plain.jsonl"), "a", encoding="utf-8") as f:
        for _ in range(ratings):
            start = time.perf_counter()
            logger.log(RECORD)
            synced.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            f.write(json.dumps(RECORD, ensure_ascii=False) + "\n")
            plain.append((time.perf_counter() - start) * 1000)
    logger.close()
    for name, ms in (("TrainLogger.log (flush + fsync)", synced), ("plain append, no fsync", plain)):
        print(f"one rating written, {name:32s} median {statistics.median(ms):7.3f} ms   max {max(ms):7.3f} ms")


def bench_generation(policy, tokenizer, rounds):
    queries = [encode_prompt(tokenizer, p) for p in PROMPTS]
    batched, single = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        generate_responses(policy, tokenizer, queries, 20)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for query in queries:
            generate_responses(policy, tokenizer, [query], 20)
        single.append(time.perf_counter() - start)
    b, s = statistics.median(batched), statistics.median(single)
    print(f"4 answers of 20 tokens: one batched call {b:.3f} s, 4 single calls {s:.3f} s ({s / b:.1f}x)")


def bench_ppo_steps(policy, tokenizer, trainer, rounds):
    queries = [encode_prompt(tokenizer, p) for p in PROMPTS]
    times = {1: [], 4: []}
    for _ in range(rounds):
        for n in (1, 4):
            responses = generate_responses(policy, tokenizer, queries[:n], 20)
            rewards = [random.uniform(-2, 2) for _ in range(n)]
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # std() of a single rating
                ppo_step(trainer, queries[:n], responses, rewards)
            times[n].append(time.perf_counter() - start)
    one, four = statistics.median(times[1]), statistics.median(times[4])
    print(f"PPO step on 1 rating:  {one:.2f} s per step, {one:.2f} s per rating")
    print(f"PPO step on 4 ratings: {four:.2f} s per step, {four / 4:.2f} s per rating "
          f"({one / (four / 4):.1f}x less waiting per rating)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tiny GPT-2 from {ensure_tiny()['gpt2']}")
    with tempfile.TemporaryDirectory() as folder:
        bench_rating_writes(folder, args.ratings)
    start = time.perf_counter()
    policy, ref_model, tokenizer = load_policy(ensure_tiny()["gpt2"], torch.device("cpu"))
    trainer = make_ppo_trainer(policy, ref_model, tokenizer, batch_size=4, mini_batch_size=4, learning_rate=1.41e-5)
    print(f"models and PPO trainer ready in {time.perf_counter() - start:.1f} s")
    bench_generation(policy, tokenizer, args.rounds)
    bench_ppo_steps(policy, tokenizer, trainer, args.rounds)


if __name__ == "__main__":
    main()
