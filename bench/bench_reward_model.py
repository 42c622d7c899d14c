"""Reward-model training speed, measured side by side in one run (CPU or GPU).

1. Rank lists per second on the tiny encoder, two ways, same weights, same batches, steps interleaved:
   - original: one encoder forward per text, every text padded to --max_seq_len, loss as a Python loop
     over pairs (the structure of the original train_reward_model.py; its tokenization is done up front);
   - ours: one forward per step over all batch x K texts, padded to the longest text of the batch,
     the vectorised rank-list loss (tokenization included in the timing).
2. Training steps of the full-size ERNIE 3.0 base architecture (its published config, random weights), each
   variant in a fresh process with its peak memory. On the CPU: batch 4, the first and the second step. On CUDA:
   the original's batch of 32, steps per second over --ernie_steps steps after 2 warm-up steps, in float32
   without TF32, with TF32 (the default here on CUDA) and under bf16 autocast.

    python bench/bench_reward_model.py [--steps 4] [--batch_size 32] [--skip_ernie] [--device cuda]
"""
import argparse
import copy
import multiprocessing
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transformers import AutoModel, AutoTokenizer, ErnieConfig, ErnieModel  # noqa: E402

from utils.device import pick_device, set_seed  # noqa: E402
from utils.data import RANK_LIST_DIR, ensure_datasets  # noqa: E402
from utils.ranklists import read_rank_lists  # noqa: E402
from utils.reward_model import (RewardModel, encode_rank_lists, rank_list_loss, scores_to_lists,  # noqa: E402
                                usable_seq_len)
from utils.tiny import ensure_tiny  # noqa: E402

# nghuyong/ernie-3.0-base-zh's config.json
ERNIE_3_BASE = dict(vocab_size=40000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=2048, type_vocab_size=4,
                    layer_norm_eps=1e-5, use_task_id=True, task_type_vocab_size=3)


def original_loss(rank_rewards_list):
    """The original's compute_rank_list_loss: a Python loop over every pair of every list."""
    loss, count = 0.0, 0
    for rank_rewards in rank_rewards_list:
        for i in range(len(rank_rewards) - 1):
            for j in range(i + 1, len(rank_rewards)):
                loss = loss + F.logsigmoid(rank_rewards[i] - rank_rewards[j])
                count += 1
    return -loss / count


def original_step(model, optimizer, pre_tokenized_batch):
    """One forward per text (each already padded to max_seq_len), as the original's training loop."""
    device = model.head.weight.device
    rewards = [[model(**text.to(device))[0] for text in rank_list] for rank_list in pre_tokenized_batch]
    loss = original_loss(rewards)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def our_step(model, optimizer, tokenizer, rank_lists, max_seq_len):
    batch, mask = encode_rank_lists(tokenizer, rank_lists, max_seq_len)
    device = model.head.weight.device
    mask = mask.to(device)
    batch = {key: value.to(device) for key, value in batch.items()}
    loss = rank_list_loss(scores_to_lists(model(**batch), mask), mask)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def pre_tokenize(tokenizer, rank_lists, max_seq_len):
    return [[tokenizer(t, padding="max_length", truncation=True, max_length=max_seq_len, return_tensors="pt")
             for t in r] for r in rank_lists]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_tiny(args, device):
    set_seed(0)
    path = ensure_tiny()["encoder"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    ours = RewardModel(AutoModel.from_pretrained(path)).to(device)
    original = copy.deepcopy(ours)
    max_seq_len = usable_seq_len(ours, args.max_seq_len)
    ensure_datasets()
    rank_lists = read_rank_lists(os.path.join(RANK_LIST_DIR, "train.tsv"))
    batches = [rank_lists[i * args.batch_size:(i + 1) * args.batch_size] for i in range(args.steps + 1)]
    pre_tokenized = [pre_tokenize(tokenizer, b, max_seq_len) for b in batches]
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    opt_original = torch.optim.AdamW(original.parameters(), lr=1e-5)
    ours.train()
    original.train()

    # step 0 warms both up (allocations, AdamW state); then the two alternate so load changes hit both
    seconds = {"original": 0.0, "ours": 0.0}
    for step, (batch, pre_batch) in enumerate(zip(batches, pre_tokenized)):
        tic = time.perf_counter()
        original_step(original, opt_original, pre_batch)
        synchronize(device)
        mid = time.perf_counter()
        our_step(ours, opt_ours, tokenizer, batch, max_seq_len)
        synchronize(device)
        end = time.perf_counter()
        if step > 0:
            seconds["original"] += mid - tic
            seconds["ours"] += end - mid
    n_lists = args.steps * args.batch_size
    rate = {k: n_lists / v for k, v in seconds.items()}
    print(f"tiny encoder ({sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M parameters), batch "
          f"{args.batch_size} rank lists of 4, max_seq_len {max_seq_len}, {args.steps} timed steps each, "
          f"{device.type}, torch threads {torch.get_num_threads()}")
    print(f"  original structure (per-text forward, padded to {max_seq_len}): {rate['original']:8.1f} rank lists/s")
    print(f"  ours (one forward per step, dynamic padding):        {rate['ours']:8.1f} rank lists/s")
    print(f"  ratio ours / original: {rate['ours'] / rate['original']:.1f}x")


ERNIE_VARIANTS = {"fp32": dict(tf32=False), "TF32": dict(tf32=True), "bf16": dict(tf32=True, autocast=True)}


def ernie_steps(variant, batch_size, max_seq_len, steps, device_name, result):
    """In a fresh process, so its peak memory is this model's alone (plus Python and torch)."""
    device = pick_device(device_name)  # allows TF32 on CUDA
    settings = ERNIE_VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = settings["tf32"]
    set_seed(0)
    model = RewardModel(ErnieModel(ErnieConfig(**ERNIE_3_BASE))).to(device)
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny()["encoder"])  # its ids all lie inside ERNIE's vocab
    rank_lists = read_rank_lists(os.path.join(RANK_LIST_DIR, "dev.tsv"))[:batch_size]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.get("autocast", False))
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        with autocast:
            our_step(model, optimizer, tokenizer, rank_lists, max_seq_len)
        synchronize(device)
        times.append(time.perf_counter() - tic)
    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated(device) / 1024 ** 3
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kilobytes on Linux
    result.put({"params": sum(p.numel() for p in model.parameters()), "times": times, "peak_gb": peak_gb})


def run_child(*args):
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    process = ctx.Process(target=ernie_steps, args=(*args, result))
    process.start()
    r = result.get()
    process.join()
    return r


def bench_ernie(args, device):
    if device.type == "cpu":
        r = run_child("fp32", 4, args.max_seq_len, 2, str(device))
        print(f"ERNIE 3.0 base architecture ({r['params'] / 1e6:.0f}M parameters, random weights), batch 4 rank "
              f"lists of 4 (16 texts), max_seq_len {args.max_seq_len}, dynamic padding, cpu:")
        print(f"  training step: {r['times'][0]:.1f} s the first, {r['times'][1]:.1f} s the second; "
              f"peak resident memory of the process {r['peak_gb']:.2f} GB")
        return
    print(f"ERNIE 3.0 base architecture (random weights), batch {args.batch_size} rank lists of 4, max_seq_len "
          f"{args.max_seq_len}, dynamic padding, {torch.cuda.get_device_name(device)}, {args.ernie_steps} steps "
          "after 2 warm-up steps:")
    for variant in ERNIE_VARIANTS:
        r = run_child(variant, args.batch_size, args.max_seq_len, args.ernie_steps + 2, str(device))
        print(f"  {variant:5} {args.ernie_steps / sum(r['times'][2:]):6.2f} step/s; peak GPU memory (allocated) "
              f"{r['peak_gb']:.2f} GB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per method (after one warm-up step)")
    parser.add_argument("--batch_size", type=int, default=32, help="rank lists per step (the original's 32)")
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--ernie_steps", type=int, default=20, help="timed full-size steps per variant on CUDA")
    parser.add_argument("--skip_ernie", action="store_true", help="leave out the full-size ERNIE steps")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start")
    bench_tiny(args, device)
    if not args.skip_ernie:
        bench_ernie(args, device)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
