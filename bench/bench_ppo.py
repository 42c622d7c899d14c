"""How fast is one PPO epoch? The original's structure against ours, side by side, same models, same run.

    original  one `generate` call per sample (16 new tokens, the model left in train mode by trl),
              the sentiment pipeline called on the list without batching, then `PPOTrainer.step` with the
              original's PPO settings (mini-batch 16, 4 PPO epochs)
    ours      one batched `generate` call (eval mode, fixed length), one batched classifier call, then
              `ppo_step` with ppo_sentiment_example.py's --tiny settings

Both run on the tiny models at batch 64 (warm-up first, then `--repeats` interleaved timings). Then one
PPO epoch at batch 8 on the full-size architecture (GPT-2 with uer's config: 12 layers, 768 wide,
21128 tokens, random weights) in a child process, with that process's peak memory.

    python bench/bench_ppo.py                 # about 2-5 minutes on 2 CPU cores
    OMP_NUM_THREADS=1 python bench/bench_ppo.py   # on a busy machine (see the printed load average)
"""
import argparse
import multiprocessing
import os
import queue
import random
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

from ppo_sentiment_example import TINY  # noqa: E402
from utils.common import set_seed  # noqa: E402
from utils.generation import PROMPTS, decode, encode_prompt, generate_responses  # noqa: E402
from utils.ppo import load_policy, make_ppo_trainer, ppo_step, unwrap_policy  # noqa: E402
from utils.rewards import SentimentPipelineReward  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

GEN_LEN = 16
ORIGINAL_PPO = dict(mini_batch_size=16, ppo_epochs=4, learning_rate=1.41e-5)
UER_GPT2 = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=21128, n_positions=1024)


def original_epoch(trainer, tokenizer, reward, prompts):
    """The original's loop body: per-sample `generate`, unbatched pipeline, `step`."""
    t0 = time.time()
    policy = unwrap_policy(trainer)  # trl leaves it in train mode; the original generated like that
    queries, responses = [], []
    for prompt in prompts:
        query = encode_prompt(tokenizer, prompt)
        output = policy.generate(query.unsqueeze(0), max_new_tokens=GEN_LEN, do_sample=True, top_k=0, top_p=1.0,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        queries.append(query)
        responses.append(output.squeeze(0)[-GEN_LEN:])
    texts = [p + decode(tokenizer, r) for p, r in zip(prompts, responses)]
    t1 = time.time()
    outputs = reward.pipe(texts, truncation=True, top_k=None)  # no batch_size: one text per forward pass
    rewards = [next(o["score"] for o in scores if o["label"] == reward.positive) for scores in outputs]
    t2 = time.time()
    trainer.step(queries, responses, [torch.tensor(r) for r in rewards])
    t3 = time.time()
    return dict(generate=t1 - t0, reward=t2 - t1, optimize=t3 - t2, epoch=t3 - t0)


def our_epoch(trainer, tokenizer, reward, prompts):
    """ppo_sentiment_example.py's loop body."""
    t0 = time.time()
    queries = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    responses = generate_responses(unwrap_policy(trainer), tokenizer, queries, GEN_LEN)
    texts = [p + decode(tokenizer, r) for p, r in zip(prompts, responses)]
    t1 = time.time()
    rewards = reward(texts)
    t2 = time.time()
    ppo_step(trainer, queries, responses, rewards)
    t3 = time.time()
    return dict(generate=t1 - t0, reward=t2 - t1, optimize=t3 - t2, epoch=t3 - t0)


def make_trainer(gpt2_dir, batch_size, **ppo):
    policy, ref_model, tokenizer = load_policy(gpt2_dir, "cpu")
    return make_ppo_trainer(policy, ref_model, tokenizer, batch_size=batch_size, seed=0,
                            accelerator_kwargs={"cpu": True}, **ppo), tokenizer


def bench_tiny(batch_size, repeats):
    paths = ensure_tiny()
    reward = SentimentPipelineReward(paths["classifier"], "cpu", batch_size=batch_size)
    ours_ppo = dict(mini_batch_size=TINY["mini_batch_size"], ppo_epochs=TINY["ppo_epochs"], learning_rate=TINY["lr"])
    structures = {"original": (original_epoch, make_trainer(paths["gpt2"], batch_size, **ORIGINAL_PPO)),
                  "ours": (our_epoch, make_trainer(paths["gpt2"], batch_size, **ours_ppo))}
    times = {name: [] for name in structures}
    rng = random.Random(0)
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for name, (run, (trainer, tokenizer)) in structures.items():
            prompts = [rng.choice(PROMPTS) for _ in range(batch_size)]
            timing = run(trainer, tokenizer, reward, prompts)
            if repeat:
                times[name].append(timing)
    print(f"\n== one PPO epoch, tiny models, batch {batch_size} (median of {repeats}) ==")
    print(f"ours: mini-batch {ours_ppo['mini_batch_size']}, {ours_ppo['ppo_epochs']} PPO epochs; original: "
          f"mini-batch {ORIGINAL_PPO['mini_batch_size']}, {ORIGINAL_PPO['ppo_epochs']} PPO epochs")
    print(f"{'':10}{'samples/s':>10}{'epoch s':>9}{'generate':>10}{'reward':>8}{'optimize':>10}")
    medians = {}
    for name, runs in times.items():
        medians[name] = {k: statistics.median(t[k] for t in runs) for k in runs[0]}
        m = medians[name]
        print(f"{name:10}{batch_size / m['epoch']:10.1f}{m['epoch']:9.2f}{m['generate']:10.2f}{m['reward']:8.2f}"
              f"{m['optimize']:10.2f}")
    o, u = medians["original"], medians["ours"]
    print(f"ratio ours/original: epoch {o['epoch'] / u['epoch']:.2f}x, generate {o['generate'] / u['generate']:.1f}x, "
          f"reward {o['reward'] / u['reward']:.1f}x, optimize {o['optimize'] / u['optimize']:.2f}x")


def full_size_epoch(batch_size, results):
    """Child process: one PPO epoch of our loop on a random-weight GPT-2 of uer's size."""
    paths = ensure_tiny()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(paths["gpt2"])
        config = GPT2Config(**UER_GPT2, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        GPT2LMHeadModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        trainer, tokenizer = make_trainer(tmp, batch_size, **dict(ORIGINAL_PPO, mini_batch_size=min(16, batch_size)))
    reward = SentimentPipelineReward(paths["classifier"], "cpu", batch_size=batch_size)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]
    timing = our_epoch(trainer, tokenizer, reward, prompts)
    timing["params_m"] = sum(p.numel() for p in unwrap_policy(trainer).parameters()) / 1e6
    results.put(timing)


def bench_full_size(batch_size):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=full_size_epoch, args=(batch_size, results))
    child.start()
    while True:  # wait for the result, but not forever if the child dies
        try:
            timing = results.get(timeout=5)
            break
        except queue.Empty:
            if not child.is_alive():
                sys.exit(f"the full-size child process failed (exit code {child.exitcode})")
    child.join()
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2  # kilobytes on Linux
    print(f"\n== one PPO epoch, full-size GPT-2 architecture ({timing['params_m']:.0f}M parameters, random "
          f"weights), batch {batch_size}, {GEN_LEN} new tokens, the original's PPO settings ==")
    print(f"epoch {timing['epoch']:.1f}s ({batch_size / timing['epoch']:.2f} samples/s): generate "
          f"{timing['generate']:.1f}s, reward {timing['reward']:.1f}s, optimize {timing['optimize']:.1f}s; "
          f"peak memory {peak_gb:.2f} GB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full_batch_size", type=int, default=8)
    parser.add_argument("--skip_full_size", action="store_true")
    args = parser.parse_args()
    if args.batch_size % TINY["mini_batch_size"] or args.batch_size % ORIGINAL_PPO["mini_batch_size"]:
        parser.error(f"--batch_size must be a multiple of {TINY['mini_batch_size']} and "
                     f"{ORIGINAL_PPO['mini_batch_size']} (the two mini-batch sizes)")
    set_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f} at start")
    bench_tiny(args.batch_size, args.repeats)
    if not args.skip_full_size:
        bench_full_size(args.full_batch_size)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
