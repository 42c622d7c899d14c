"""What a person waits for in terminal_main.py, measured side by side in one run on the tiny GPT-2 (CPU).

1. Writing one rating: `TrainLogger.log` (flush + fsync, what the script does before every PPO step) next to a
   plain append without fsync, interleaved; median and max in ms.
2. The answers of one --batch_size 4 round: one batched `generate_responses` call next to 4 calls of one answer.
3. One PPO step on 1 rating (the original's batch) next to one step on 4 ratings: seconds per step and per rating,
   and how far one step moves the policy (trl's policy/approxkl): how stale an answer one update behind is.
4. With --waiting: what a person waits for after each rating in terminal_main.py itself (driven through a
   pseudo-terminal, a simulated person reading each answer for --reading_seconds before rating it), per rating
   (a step's wait shared by the ratings of its batch) at each --waiting_batch_sizes, when every PPO
   step is waited for (--no-async_update) and when it runs in the background (--async_update), one after the
   other in one run. `--waiting full_size` uses uer/gpt2-chinese-cluecorpussmall's architecture (GPT-2 base,
   12 layers, 768 wide, 21128 tokens) with random weights, so no download is needed; `--waiting tiny` the tiny GPT-2.

    python bench/bench_terminal.py [--ratings 200] [--rounds 3]
    python bench/bench_terminal.py --waiting full_size --reading_seconds 3 --skip_tiny
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

import pexpect
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from utils.generation import generate_responses  # noqa: E402
from utils.tokens import PROMPTS, encode_prompt  # noqa: E402
from utils.logger import TrainLogger  # noqa: E402
from utils.policy import load_policy  # noqa: E402
from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update  # noqa: E402
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
    times, approxkl = {1: [], 4: []}, []
    for _ in range(rounds):
        for n in (1, 4):
            responses = generate_responses(policy, tokenizer, queries[:n], 20)
            rewards = [random.uniform(-2, 2) for _ in range(n)]
            start = time.perf_counter()
            stats = ppo_update(trainer, queries[:n], responses, rewards)
            times[n].append(time.perf_counter() - start)
            approxkl.append(stats["approx_kl"])
    one, four = statistics.median(times[1]), statistics.median(times[4])
    print(f"PPO step on 1 rating:  {one:.2f} s per step, {one:.2f} s per rating")
    print(f"PPO step on 4 ratings: {four:.2f} s per step, {four / 4:.2f} s per rating "
          f"({one / (four / 4):.1f}x less waiting per rating)")
    print(f"policy change per PPO step (approx. KL, lr 1.41e-5): median {statistics.median(approxkl):.2e}, "
          f"max {max(approxkl):.2e}")


# ---------------------------------------------------------------- 4. waiting per rating in terminal_main.py
def random_full_size_gpt2(folder, tokenizer_dir):
    """GPT-2 base as uer/gpt2-chinese-cluecorpussmall builds it, random weights; the tiny tokenizer writes the
    prompts (its ids are a subset of the 21128)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=21128, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def waits_per_rating(model_dir, async_update, batch_size, batches, reading_seconds, folder):
    """Seconds from typing each rating to the next reward prompt, over `batches` batches after a first one (whose
    step also builds the optimiser's state)."""
    flag = "--async_update" if async_update else "--no-async_update"
    child = pexpect.spawn(sys.executable, ["terminal_main.py", "--model_name", model_dir, flag, "--device", "cpu",
                                           "--batch_size", str(batch_size), "--log_dir", folder,
                                           "--save_dir", os.path.join(folder, "ckpt")],
                          cwd=REPO, encoding="utf-8", codec_errors="replace", timeout=900)
    waits = []
    child.expect(r"Reward \(")
    for i in range((batches + 1) * batch_size):
        time.sleep(reading_seconds)  # the person reads the answer
        start = time.perf_counter()
        child.sendline("1")
        child.expect(r"Reward \(")
        if i >= batch_size:
            waits.append(time.perf_counter() - start)
    child.terminate(force=True)  # no checkpoint needed
    return waits


def bench_waiting(model_dir, batch_sizes, batches, reading_seconds):
    for batch_size in batch_sizes:
        mean = {}
        for async_update in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                waits = waits_per_rating(model_dir, async_update, batch_size, batches, reading_seconds, folder)
            mean[async_update] = statistics.mean(waits)
            name = "--async_update   " if async_update else "--no-async_update"
            print(f"--batch_size {batch_size} {name}: waiting per rating mean {mean[async_update]:.2f} s, "
                  f"longest {max(waits):.2f} s over {len(waits)} ratings (load average {os.getloadavg()[0]:.1f})")
        print(f"--batch_size {batch_size}, {reading_seconds:g} s reading per answer: waiting per rating "
              f"{mean[False] / max(mean[True], 1e-9):.1f}x less with --async_update")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip_tiny", action="store_true", help="only part 4")
    parser.add_argument("--waiting", choices=["tiny", "full_size"], help="part 4 on this GPT-2 (default: skipped)")
    parser.add_argument("--waiting_batch_sizes", type=int, nargs="+", default=[1, 4], help="part 4's --batch_size")
    parser.add_argument("--waiting_batches", type=int, default=2, help="batches timed per mode in part 4")
    parser.add_argument("--reading_seconds", type=float, default=3.0, help="the simulated person's time per answer")
    args = parser.parse_args(argv)
    random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tiny GPT-2 from {ensure_tiny()['gpt2']}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if not args.skip_tiny:
        with tempfile.TemporaryDirectory() as folder:
            bench_rating_writes(folder, args.ratings)
        start = time.perf_counter()
        policy, ref_model, tokenizer = load_policy(ensure_tiny()["gpt2"], torch.device("cpu"))
        trainer = make_ppo(policy, ref_model, tokenizer, PPOConfig(mini_batch_size=4, learning_rate=1.41e-5),
                           Accelerator(cpu=True))
        print(f"models and PPO ready in {time.perf_counter() - start:.1f} s")
        bench_generation(policy, tokenizer, args.rounds)
        bench_ppo_steps(policy, tokenizer, trainer, args.rounds)
    if args.waiting == "tiny":
        bench_waiting(ensure_tiny()["gpt2"], args.waiting_batch_sizes, args.waiting_batches, args.reading_seconds)
    elif args.waiting == "full_size":
        with tempfile.TemporaryDirectory() as folder:
            model_dir = random_full_size_gpt2(folder, ensure_tiny()["gpt2"])
            bench_waiting(model_dir, args.waiting_batch_sizes, args.waiting_batches, args.reading_seconds)


if __name__ == "__main__":
    main()
