"""How fast is one PPO epoch? The original's structure against ours, side by side, same models, same run.

    original  the original's loop on today's libraries: one `generate` call per sample (16 new tokens, the
              model left in train mode by trl), the sentiment pipeline called on the list without batching,
              then trl's own `PPOTrainer` (its Adam, transformers' own attention masks)
    ours      ppo_sentiment_example.py's loop: one batched `generate` call (eval mode, fixed length), one
              batched classifier call, its own PPO update (`ppo_update`: batched, a fused Adam, masks built
              without vmap)
    trl step  ours, with the update done by trl 0.11.4's `PPOTrainer.step` instead (same settings, same fused
              Adam): what writing the update out gained

1. Tiny models, batch 64, interleaved timings after a warm-up round. The ratios, kept apart:
   - engineering: ours against the original, both at the original's PPO settings (mini-batch 16, 4 PPO epochs),
     and ours against the same loop with trl's step (the update alone);
   - settings: ours at ppo_sentiment_example.py's --tiny settings (mini-batch 32, 1 PPO epoch) against ours at
     the original's: what the hyperparameter change buys, not an engineering speed-up.
2. The full-size architectures (GPT-2 with uer's config: 12 layers, 768 wide, 21128 tokens; a RoBERTa-base-sized
   classifier; random weights), each variant in a fresh child process with its peak memory. On CUDA at the
   original's batch of 128: the original, ours, trl's step in our loop, and ours with `--preset gpu` (the whole
   batch in one mini-batch, bf16). On the CPU only ours, at batch 8 (a CPU epoch at 128 takes minutes).

    python bench/bench_ppo.py                          # about 2-5 minutes on 2 CPU cores
    OMP_NUM_THREADS=1 python bench/bench_ppo.py        # on a busy machine (see the printed load average)
    python bench/bench_ppo.py --device cuda            # on a GPU
"""
import argparse
import contextlib
import functools
import multiprocessing
import os
import queue
import random
import resource
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config,  # noqa: E402
                          GPT2LMHeadModel, masking_utils)

from bench.trl_reference import make_trl_trainer, trl_step  # noqa: E402
from ppo_sentiment_example import TINY, PPOConfig, make_ppo, ppo_update  # noqa: E402
from utils.common import accelerator_kwargs, pick_device, set_seed, use_fast_attention_masks  # noqa: E402
from utils.generation import PROMPTS, decode, encode_prompt, generate_responses  # noqa: E402
from utils.policy import import_trl, load_policy, unwrap_policy  # noqa: E402
from utils.reward_sources import SentimentPipelineReward  # noqa: E402
from utils.tiny import LABELS, ensure_tiny  # noqa: E402

GEN_LEN = 16
ORIGINAL_PPO = dict(mini_batch_size=16, ppo_epochs=4, learning_rate=1.41e-5)
TINY_PPO = dict(mini_batch_size=TINY["mini_batch_size"], ppo_epochs=TINY["ppo_epochs"], learning_rate=TINY["learning_rate"])
UER_GPT2 = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=21128, n_positions=1024)
UER_ROBERTA = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                   vocab_size=21128, max_position_embeddings=512)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def stock_attention_masks():
    """transformers' own (vmap) mask builder, which the original's code gets from today's libraries."""
    masking_utils.AttentionMaskInterface.register("sdpa", masking_utils.sdpa_mask)
    try:
        yield
    finally:
        use_fast_attention_masks()


def original_epoch(trainer, tokenizer, reward, prompts, device):
    """The original's loop body: per-sample `generate`, unbatched pipeline, trl's `step`."""
    with stock_attention_masks():
        t0 = time.perf_counter()
        policy = trainer.accelerator.unwrap_model(trainer.model)  # in train mode; the original generated like that
        queries, responses = [], []
        for prompt in prompts:
            query = encode_prompt(tokenizer, prompt).to(device)
            output = policy.generate(query.unsqueeze(0), max_new_tokens=GEN_LEN, do_sample=True, top_k=0, top_p=1.0,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
            queries.append(query)
            responses.append(output.squeeze(0)[-GEN_LEN:])
        texts = [p + decode(tokenizer, r) for p, r in zip(prompts, responses)]
        t1 = time.perf_counter()
        outputs = reward.pipe(texts, truncation=True, top_k=None)  # no batch_size: one text per forward pass
        rewards = [next(o["score"] for o in scores if o["label"] == reward.positive) for scores in outputs]
        t2 = time.perf_counter()
        trainer.step(queries, responses, [torch.tensor(r) for r in rewards])
        synchronize(device)
        t3 = time.perf_counter()
    return dict(generate=t1 - t0, reward=t2 - t1, optimize=t3 - t2, epoch=t3 - t0)


def batched_epoch(update, trainer, tokenizer, reward, prompts, device):
    """ppo_sentiment_example.py's loop body, with `update` (ours, or trl's step) doing the PPO update."""
    t0 = time.perf_counter()
    queries = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    policy = unwrap_policy(trainer) if update is ppo_update else trainer.accelerator.unwrap_model(trainer.model)
    responses = generate_responses(policy, tokenizer, queries, GEN_LEN)
    texts = [p + decode(tokenizer, r) for p, r in zip(prompts, responses)]
    t1 = time.perf_counter()
    rewards = reward(texts)
    t2 = time.perf_counter()
    update(trainer, queries, responses, rewards)
    synchronize(device)
    t3 = time.perf_counter()
    return dict(generate=t1 - t0, reward=t2 - t1, optimize=t3 - t2, epoch=t3 - t0)


our_epoch = functools.partial(batched_epoch, ppo_update)
trl_step_epoch = functools.partial(batched_epoch, trl_step)


def our_trainer(gpt2_dir, batch_size, device, mixed_precision=None, **ppo):
    policy, ref_model, tokenizer = load_policy(gpt2_dir, device)
    return make_ppo(policy, ref_model, tokenizer, PPOConfig(**ppo),
                    accelerator_kwargs(device, mixed_precision)), tokenizer


def trl_step_trainer(gpt2_dir, batch_size, device, **ppo):
    """trl's `PPOTrainer` with our fused Adam: the same update as ours, as trl computes it."""
    policy, ref_model, tokenizer = load_policy(gpt2_dir, device)
    return make_trl_trainer(policy, ref_model, tokenizer, batch_size=batch_size, seed=0,
                            accelerator_kwargs=accelerator_kwargs(device), **ppo), tokenizer


def original_trainer(gpt2_dir, batch_size, device, **ppo):
    """trl's `PPOTrainer` as the original built it: trl's own optimizer (Adam, a loop over the parameters)."""
    policy, ref_model, tokenizer = load_policy(gpt2_dir, device)
    trl = import_trl()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=r"No dataset is provided")
        config = trl.PPOConfig(batch_size=batch_size, seed=0, accelerator_kwargs=accelerator_kwargs(device), **ppo)
        return trl.PPOTrainer(config=config, model=policy, ref_model=ref_model, tokenizer=tokenizer), tokenizer


def print_table(title, batch_size, medians):
    print(f"\n== {title} ==")
    print(f"{'':31}{'samples/s':>10}{'epoch s':>9}{'generate':>10}{'reward':>8}{'optimize':>10}")
    for name, m in medians.items():
        print(f"{name:31}{batch_size / m['epoch']:10.1f}{m['epoch']:9.2f}{m['generate']:10.2f}{m['reward']:8.2f}"
              f"{m['optimize']:10.2f}")


def bench_tiny(batch_size, repeats, device):
    paths = ensure_tiny()
    reward = SentimentPipelineReward(paths["classifier"], device, batch_size=batch_size)
    variants = {"original (mb 16, 4 epochs)": (original_epoch, original_trainer(paths["gpt2"], batch_size, device,
                                                                                 **ORIGINAL_PPO)),
                "ours (mb 16, 4 epochs)": (our_epoch, our_trainer(paths["gpt2"], batch_size, device, **ORIGINAL_PPO)),
                "trl step (mb 16, 4 epochs)": (trl_step_epoch, trl_step_trainer(paths["gpt2"], batch_size, device,
                                                                                 **ORIGINAL_PPO)),
                "ours, --tiny (mb 32, 1 epoch)": (our_epoch, our_trainer(paths["gpt2"], batch_size, device,
                                                                         **TINY_PPO))}
    times = {name: [] for name in variants}
    rng = random.Random(0)
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for name, (run, (trainer, tokenizer)) in variants.items():
            prompts = [rng.choice(PROMPTS) for _ in range(batch_size)]
            timing = run(trainer, tokenizer, reward, prompts, device)
            if repeat:
                times[name].append(timing)
    medians = {name: {k: statistics.median(t[k] for t in runs) for k in runs[0]} for name, runs in times.items()}
    print_table(f"one PPO epoch, tiny models, batch {batch_size}, {device.type} (median of {repeats})", batch_size,
                medians)
    o, u, r, t = medians.values()
    print(f"ratio ours/original, same settings (mini-batch 16, 4 PPO epochs): epoch {o['epoch'] / u['epoch']:.2f}x, "
          f"generate {o['generate'] / u['generate']:.1f}x, reward {o['reward'] / u['reward']:.1f}x, "
          f"optimize {o['optimize'] / u['optimize']:.2f}x")
    print(f"ratio ours/trl step, same settings (mini-batch 16, 4 PPO epochs): optimize "
          f"{r['optimize'] / u['optimize']:.2f}x, epoch {r['epoch'] / u['epoch']:.2f}x")
    print(f"ratio --tiny settings / original settings, both ours (a hyperparameter change, not engineering): "
          f"epoch {u['epoch'] / t['epoch']:.2f}x, optimize {u['optimize'] / t['optimize']:.2f}x")


# ---------------------------------------------------------------- full size, one child process per variant
FULL_SIZE_VARIANTS = {
    "original": (original_epoch, original_trainer, dict(ORIGINAL_PPO)),
    "ours": (our_epoch, our_trainer, dict(ORIGINAL_PPO)),
    "trl step": (trl_step_epoch, trl_step_trainer, dict(ORIGINAL_PPO)),
    "ours, --preset gpu": (our_epoch, our_trainer, dict(ORIGINAL_PPO, mini_batch_size=None, mixed_precision="bf16")),
}


def save_full_size_models(folder):
    """Random-weight GPT-2 and classifier of the hub models' sizes, with the tiny tokenizer (its ids fit)."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny()["gpt2"])
    config = GPT2Config(**UER_GPT2, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(os.path.join(folder, "gpt2"))
    classifier = BertConfig(**UER_ROBERTA, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    BertForSequenceClassification(classifier).save_pretrained(os.path.join(folder, "classifier"))
    for name in ("gpt2", "classifier"):
        tokenizer.save_pretrained(os.path.join(folder, name))


def full_size_epochs(variant, folder, batch_size, repeats, device_name, results):
    """Child process: a warm-up epoch, then `repeats` timed epochs of one variant."""
    device = pick_device(device_name)
    run, make_trainer, ppo = FULL_SIZE_VARIANTS[variant]
    ppo = dict(ppo, mini_batch_size=min(ppo["mini_batch_size"] or batch_size, batch_size))
    trainer, tokenizer = make_trainer(os.path.join(folder, "gpt2"), batch_size, device, **ppo)
    reward = SentimentPipelineReward(os.path.join(folder, "classifier"), device, batch_size=batch_size)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]
    timings = [run(trainer, tokenizer, reward, prompts, device) for _ in range(repeats + 1)][1:]
    timing = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    if device.type == "cuda":
        timing["peak_gb"] = torch.cuda.max_memory_allocated(device) / 1024 ** 3
    else:
        timing["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kilobytes on Linux
    timing["mini_batch_size"] = ppo["mini_batch_size"]
    results.put(timing)


def run_child(target, args):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=target, args=(*args, results))
    child.start()
    while True:  # wait for the result, but not forever if the child dies
        try:
            result = results.get(timeout=5)
            break
        except queue.Empty:
            if not child.is_alive():
                sys.exit(f"the full-size child process failed (exit code {child.exitcode})")
    child.join()
    return result


def bench_full_size(batch_size, repeats, device):
    variants = list(FULL_SIZE_VARIANTS) if device.type == "cuda" else ["ours"]
    memory = "peak GPU memory (allocated)" if device.type == "cuda" else "peak resident memory"
    print(f"\n== one PPO epoch, full-size architectures (GPT-2 102M + classifier 102M parameters, random weights), "
          f"batch {batch_size}, {GEN_LEN} new tokens, {device.type}, median of {repeats} after a warm-up ==")
    with tempfile.TemporaryDirectory() as folder:
        save_full_size_models(folder)
        for variant in variants:
            t = run_child(full_size_epochs, (variant, folder, batch_size, repeats, str(device)))
            print(f"{variant:20} mini-batch {t['mini_batch_size']:3}: epoch {t['epoch']:.2f}s "
                  f"({batch_size / t['epoch']:.2f} samples/s): generate {t['generate']:.2f}s, reward "
                  f"{t['reward']:.2f}s, optimize {t['optimize']:.2f}s; {memory} {t['peak_gb']:.2f} GB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--full_batch_size", type=int, help="default: the original's 128 on CUDA, 8 on the CPU")
    parser.add_argument("--full_repeats", type=int, default=1, help="timed full-size epochs per variant")
    parser.add_argument("--skip_full_size", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size % TINY["mini_batch_size"] or args.batch_size % ORIGINAL_PPO["mini_batch_size"]:
        parser.error(f"--batch_size must be a multiple of {TINY['mini_batch_size']} and "
                     f"{ORIGINAL_PPO['mini_batch_size']} (the two mini-batch sizes)")
    device = pick_device(args.device)
    set_seed(0)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {device.type}{gpu}, {torch.get_num_threads()} thread(s), {os.cpu_count()} "
          f"CPU(s), load average {os.getloadavg()[0]:.1f} at start")
    bench_tiny(args.batch_size, args.repeats, device)
    if not args.skip_full_size:
        bench_full_size(args.full_batch_size or (128 if device.type == "cuda" else 8), args.full_repeats, device)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
