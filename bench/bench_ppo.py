"""How fast is one PPO epoch? The original's structure against ours, and our update against trl 0.11.4's
`PPOTrainer.step`, side by side, same models, same run. Each variant (bench/ppo_epochs.py: original, ours, trl
step) runs in a process of its own, trl's in trl 0.11.4's venv (bench/trl_venv.py; without it, only ours is timed),
and all are timed alike: the bench hands each process an epoch's prompts in turn and reads back its timings.

1. Tiny models, batch 64, interleaved timings after a warm-up round, medians (and minimums) of the repeats. The
   ratios, kept apart:
   - engineering: ours against the original, both at the original's PPO settings (mini-batch 16, 4 PPO epochs),
     and ours against the same loop with trl's step (the update alone);
   - settings: ours at ppo_sentiment_example.py's --tiny settings (mini-batch 32, 1 PPO epoch) against ours at
     the original's: what the hyperparameter change buys, not an engineering speed-up.
2. The full-size architectures (GPT-2 with uer's config: 12 layers, 768 wide, 21128 tokens; a RoBERTa-base-sized
   classifier; random weights), each variant in a fresh process with its peak memory. On CUDA at the original's
   batch of 128: the original, ours, trl's step in our loop, and ours with `--preset gpu` (the whole batch in one
   mini-batch, bf16). On the CPU only ours, at batch 8 (a CPU epoch at 128 takes minutes).

    python bench/bench_ppo.py                          # about 2-5 minutes on 2 CPU cores
    OMP_NUM_THREADS=1 python bench/bench_ppo.py        # on a busy machine (see the printed load average)
    python bench/bench_ppo.py --device cuda            # on a GPU
"""
import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel  # noqa: E402

from bench.ppo_epochs import GEN_LEN, NEEDS_TRL  # noqa: E402
from bench.trl_venv import BUILD_COMMAND, trl_venv_python  # noqa: E402
from ppo_sentiment_example import TINY  # noqa: E402
from utils.device import pick_device, set_seed  # noqa: E402
from utils.models import quiet_transformers  # noqa: E402
from utils.tokens import PROMPTS  # noqa: E402
from utils.tiny import LABELS, ensure_tiny  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ppo_epochs.py")
ORIGINAL_PPO = dict(mini_batch_size=16, ppo_epochs=4, learning_rate=1.41e-5)
TINY_PPO = dict(mini_batch_size=TINY["mini_batch_size"], ppo_epochs=TINY["ppo_epochs"], learning_rate=TINY["learning_rate"])
TINY_VARIANTS = {"original (mb 16, 4 epochs)": ("original", ORIGINAL_PPO),
                 "ours (mb 16, 4 epochs)": ("ours", ORIGINAL_PPO),
                 "trl step (mb 16, 4 epochs)": ("trl step", ORIGINAL_PPO),
                 "ours, --tiny (mb 32, 1 epoch)": ("ours", TINY_PPO)}
FULL_SIZE_VARIANTS = {"original": ("original", ORIGINAL_PPO),
                      "ours": ("ours", ORIGINAL_PPO),
                      "trl step": ("trl step", ORIGINAL_PPO),
                      "ours, --preset gpu": ("ours", dict(ORIGINAL_PPO, mini_batch_size=None, mixed_precision="bf16"))}
UER_GPT2 = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=21128, n_positions=1024)
UER_ROBERTA = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                   vocab_size=21128, max_position_embeddings=512)


class Worker:
    """One variant in a process of its own (bench/ppo_epochs.py), trl's in trl 0.11.4's venv."""

    def __init__(self, variant, gpt2_dir, classifier_dir, batch_size, device, ppo):
        self.variant = variant
        python = trl_venv_python() if variant in NEEDS_TRL else sys.executable
        self.stderr = tempfile.TemporaryFile(mode="w+")  # shown if the process fails
        self.process = subprocess.Popen([python, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True)
        self.send(dict(variant=variant, gpt2=gpt2_dir, classifier=classifier_dir, batch_size=batch_size,
                       device=str(device), ppo=ppo))

    def send(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def ask(self, request):
        self.send(request)
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            sys.exit(f"the {self.variant} process failed:\n{self.stderr.read()[-3000:]}")
        return json.loads(line)

    def epoch(self, prompts):
        return self.ask(prompts)

    def peak_gb(self):
        return self.ask("peak")["peak_gb"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.stderr.close()


@contextlib.contextmanager
def workers(variants, *args):
    """{label: Worker} for `variants` ({label: (variant, PPO settings)}), closed afterwards."""
    started = {}
    try:
        for label, (variant, ppo) in variants.items():
            started[label] = Worker(variant, *args, ppo)
        yield started
    except BaseException:
        for worker in started.values():  # not waiting for the others to finish loading
            worker.process.kill()
        raise
    finally:
        for worker in started.values():
            worker.close()


def available(variants):
    """`variants` without trl's when trl 0.11.4's venv is not built, saying so and how to build it."""
    if trl_venv_python() is not None:
        return variants
    print(f"trl 0.11.4's venv is not built: only our variants are timed (build it with `{BUILD_COMMAND}`, about 2 "
          "minutes, then run this again)")
    return {label: (variant, ppo) for label, (variant, ppo) in variants.items() if variant not in NEEDS_TRL}


def print_table(title, batch_size, medians):
    print(f"\n== {title} ==")
    print(f"{'':31}{'samples/s':>10}{'epoch s':>9}{'generate':>10}{'reward':>8}{'optimize':>10}")
    for name, m in medians.items():
        print(f"{name:31}{batch_size / m['epoch']:10.1f}{m['epoch']:9.2f}{m['generate']:10.2f}{m['reward']:8.2f}"
              f"{m['optimize']:10.2f}")


def ratio(times, slow, fast, phase):
    """'1.50x median, 1.45x min': `slow`'s time in `phase` over `fast`'s, of their medians and of their minimums."""
    def of(pick):
        return pick(t[phase] for t in times[slow]) / pick(t[phase] for t in times[fast])

    return f"{of(statistics.median):.2f}x median, {of(min):.2f}x min"


def bench_tiny(batch_size, repeats, device):
    paths = ensure_tiny()
    variants = available(TINY_VARIANTS)
    times = {label: [] for label in variants}
    rng = random.Random(0)
    with workers(variants, paths["gpt2"], paths["classifier"], batch_size, device) as running:
        for repeat in range(repeats + 1):  # the first round warms up and is not counted
            for label, worker in running.items():
                timing = worker.epoch([rng.choice(PROMPTS) for _ in range(batch_size)])
                if repeat:
                    times[label].append(timing)
    medians = {label: {k: statistics.median(t[k] for t in runs) for k in runs[0]} for label, runs in times.items()}
    print_table(f"one PPO epoch, tiny models, batch {batch_size}, {device.type} (median of {repeats})", batch_size,
                medians)
    original, ours, trl_step, tiny = TINY_VARIANTS
    if original in times:
        phases = ", ".join(f"{phase} {ratio(times, original, ours, phase)}"
                           for phase in ("epoch", "generate", "reward", "optimize"))
        print(f"ratio ours/original, same settings (mini-batch 16, 4 PPO epochs): {phases}")
        print(f"ratio ours/trl step, same settings (mini-batch 16, 4 PPO epochs): optimize "
              f"{ratio(times, trl_step, ours, 'optimize')}, epoch {ratio(times, trl_step, ours, 'epoch')} "
              f"(trl 0.11.4 in its venv)")
    print(f"ratio --tiny settings / original settings, both ours (a hyperparameter change, not engineering): "
          f"epoch {ratio(times, ours, tiny, 'epoch')}, optimize {ratio(times, ours, tiny, 'optimize')}")


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


def bench_full_size(batch_size, repeats, device):
    variants = FULL_SIZE_VARIANTS if device.type == "cuda" else {"ours": FULL_SIZE_VARIANTS["ours"]}
    memory = "peak GPU memory (allocated)" if device.type == "cuda" else "peak resident memory"
    print(f"\n== one PPO epoch, full-size architectures (GPT-2 102M + classifier 102M parameters, random weights), "
          f"batch {batch_size}, {GEN_LEN} new tokens, {device.type}, median of {repeats} after a warm-up ==")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]
    with tempfile.TemporaryDirectory() as folder:
        save_full_size_models(folder)
        for label, (variant, ppo) in available(variants).items():  # one after the other, each in a fresh process
            ppo = dict(ppo, mini_batch_size=min(ppo["mini_batch_size"] or batch_size, batch_size))
            one = {label: (variant, ppo)}
            with workers(one, os.path.join(folder, "gpt2"), os.path.join(folder, "classifier"), batch_size,
                         device) as running:
                timings = [running[label].epoch(prompts) for _ in range(repeats + 1)][1:]
                peak = running[label].peak_gb()
            t = {k: statistics.median(timing[k] for timing in timings) for k in timings[0]}
            print(f"{label:20} mini-batch {ppo['mini_batch_size']:3}: epoch {t['epoch']:.2f}s "
                  f"({batch_size / t['epoch']:.2f} samples/s): generate {t['generate']:.2f}s, reward "
                  f"{t['reward']:.2f}s, optimize {t['optimize']:.2f}s; {memory} {peak:.2f} GB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
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
    quiet_transformers()  # no progress bars while the full-size models are written
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {device.type}{gpu}, {torch.get_num_threads()} thread(s) per process, "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start")
    bench_tiny(args.batch_size, args.repeats, device)
    if not args.skip_full_size:
        bench_full_size(args.full_batch_size or (128 if device.type == "cuda" else 8), args.full_repeats, device)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
