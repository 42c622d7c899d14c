"""Where the tiny build's time goes, and what bf16 autocast saves: each stage's training step (masked-LM encoder,
classifier, GPT-2) timed in float32 and under bf16 autocast, alternating in one run so that both see the same
machine load; the median seconds per step, the ratio, and the whole build's training time those give.

    python bench/bench_tiny_build.py                  # the tiny recipe's sizes, 8 steps x 3 rounds per stage
    python bench/bench_tiny_build.py --preset micro   # seconds (what the test runs)
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.common import pick_device, run_main, set_seed  # noqa: E402
from utils.data import ensure_datasets, read_corpus_split  # noqa: E402
from utils.tiny import PRESETS, build_tokenizer, train_classifier, train_encoder, train_gpt2, uses_bf16  # noqa: E402

STAGES = (("encoder", "mlm_steps"), ("classifier", "classifier_steps"), ("gpt2", "lm_steps"))


class NoBar:
    def set_postfix(self, **_):
        pass

    def update(self, _):
        pass


def seconds_per_step(stage, cfg, tokenizer, train, encoder_dir, steps):
    """One short training run of `stage` (model made fresh, `steps` steps); the first step (warm-up) not counted."""
    cfg = dict(cfg, mlm_steps=steps + 1, classifier_steps=steps + 1, lm_steps=steps + 1)
    bar = NoBar()
    times = []
    original_update = bar.update

    def timed_update(n):
        times.append(time.perf_counter())
        original_update(n)

    bar.update = timed_update
    run = {"encoder": lambda: train_encoder(tokenizer, train, cfg, bar),
           "classifier": lambda: train_classifier(tokenizer, encoder_dir, train, cfg, bar),
           "gpt2": lambda: train_gpt2(tokenizer, train, cfg, bar)}[stage]
    run()
    return (times[-1] - times[0]) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per stage and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", help="default: CUDA when present")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()  # the classifier's fresh head, said once per round
    ensure_datasets()
    set_seed(0)
    cfg = dict(PRESETS[args.preset], device=pick_device(args.device))
    fp32, bf16 = dict(cfg, bf16=False), dict(cfg, bf16=True)
    if not uses_bf16(bf16):
        print(f"no native bf16 on {cfg['device']}: only float32 is timed")
    train = read_corpus_split("train")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer([s for _, s in train], tmp, model_max_length=2 * cfg["seq_len"])
        encoder_dir = os.path.join(tmp, "encoder")
        train_encoder(tokenizer, train, dict(fp32, mlm_steps=1), NoBar()).save_pretrained(encoder_dir)
        print(f"{args.preset} recipe on {cfg['device']}, {torch.get_num_threads()} thread(s); median s/step of "
              f"{args.rounds} rounds x {args.steps} steps, float32 and bf16 alternating")
        totals = {"float32": 0.0, "bf16": 0.0}
        for stage, steps_key in STAGES:
            times = {"float32": [], "bf16": []}
            for _ in range(args.rounds):
                for name, stage_cfg in (("float32", fp32), ("bf16", bf16)):
                    if name == "bf16" and not uses_bf16(bf16):
                        continue
                    times[name].append(seconds_per_step(stage, stage_cfg, tokenizer, train, encoder_dir, args.steps))
            median = {name: statistics.median(t) for name, t in times.items() if t}
            for name, value in median.items():
                totals[name] += value * cfg[steps_key]
            ratio = f"  ratio float32/bf16 {median['float32'] / median['bf16']:.2f}x" if "bf16" in median else ""
            print(f"{stage:<11} {cfg[steps_key]:>4} steps  float32 {median['float32']:.3f} s/step"
                  + (f"  bf16 {median['bf16']:.3f} s/step" if "bf16" in median else "") + ratio)
        line = f"training steps of the whole build: float32 {totals['float32']:.0f} s"
        if totals["bf16"]:
            line += f", bf16 {totals['bf16']:.0f} s (ratio {totals['float32'] / totals['bf16']:.2f}x)"
        print(line)


if __name__ == "__main__":
    run_main(main)
