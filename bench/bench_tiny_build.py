"""Where the tiny build's time goes, and what its two choices save: training GPT-2 side by side with the encoder and
the classifier (two threads, half the CPU cores each; the classifier's last steps alone on all of them) instead of
one stage after the other (all cores), and bf16 autocast instead of float32. Each stage's training step is timed
both ways in one run, alternating, so that all see the same machine load; the median seconds per step, and the whole
build's training time those give.

    python bench/bench_tiny_build.py                  # the tiny recipe's sizes, 6 steps x 3 rounds
    python bench/bench_tiny_build.py --preset micro   # seconds (what the test runs)
"""
import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.device import pick_device, set_seed  # noqa: E402
from utils.errors import run_main  # noqa: E402
from utils.data import ensure_datasets, read_corpus_split  # noqa: E402
from utils.options import positive_int  # noqa: E402
from utils.tiny import (PRESETS, _lm_blocks, build_tokenizer, new_gpt2, rust_twin, train_classifier,  # noqa: E402
                        train_encoder, train_gpt2, uses_bf16)

STEPS = {"encoder": "mlm_steps", "classifier": "classifier_steps", "gpt2": "lm_steps"}


class StepClock:
    """A progress bar that keeps the time of each step instead of drawing."""

    def __init__(self):
        self.times = []

    def set_postfix(self, **_):
        pass

    def update(self, _):
        self.times.append(time.perf_counter())

    def seconds_per_step(self):
        """Mean seconds of the steps after the first (the warm-up)."""
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)


def run_stage(stage, cfg, data, steps, gpt2=None):
    """A short training run of `stage` (model made fresh, or `gpt2`, `steps` + 1 steps); its seconds per step."""
    cfg = dict(cfg, **{key: steps + 1 for key in STEPS.values()})
    clock = StepClock()
    if stage == "encoder":
        train_encoder(data["tokenizer"], data["train"], cfg, clock)
    elif stage == "classifier":
        train_classifier(data["tokenizer"], data["encoder_dir"], data["train"], cfg, clock)
    else:
        train_gpt2(gpt2 or new_gpt2(data["tokenizer"], cfg), data["blocks"], cfg, clock)
    return clock.seconds_per_step()


def side_by_side(stage, cfg, data, steps):
    """`stage` in this thread and GPT-2 in another, half the cores each, as the build runs them; (seconds per step
    of `stage`, of GPT-2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        # GPT-2 made here, as the build does: a model made in one thread while the other loads one with
        # from_pretrained can end up on the meta device ("Cannot copy out of meta tensor")
        gpt2 = new_gpt2(data["tokenizer"], cfg)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            lm = pool.submit(run_stage, "gpt2", cfg, data, steps, gpt2)
            return run_stage(stage, cfg, data, steps), lm.result()
    finally:
        torch.set_num_threads(threads)


def time_both_ways(cfg, data, steps, rounds):
    """{"one after the other"|"side by side": {stage: median seconds per step}}."""
    times = {"one after the other": {stage: [] for stage in STEPS}, "side by side": {stage: [] for stage in STEPS}}
    for _ in range(rounds):
        for stage in STEPS:
            times["one after the other"][stage].append(run_stage(stage, cfg, data, steps))
        for stage in ("encoder", "classifier"):
            mine, lm = side_by_side(stage, cfg, data, steps)
            times["side by side"][stage].append(mine)
            times["side by side"]["gpt2"].append(lm)
    return {way: {stage: statistics.median(t) for stage, t in per_stage.items()} for way, per_stage in times.items()}


def training_seconds(per_step, cfg):
    """The build's training time both ways, from seconds per step: one after the other, the sum of the stages; side
    by side, the longer of the two threads while the encoder and the classifier's first `classifier_steps_beside`
    steps train beside GPT-2, then the classifier's other steps alone on all the cores (at its one-after-the-other
    speed)."""
    alone, beside = per_step["one after the other"], per_step["side by side"]
    first = max(beside["encoder"] * cfg["mlm_steps"] + beside["classifier"] * cfg["classifier_steps_beside"],
                beside["gpt2"] * cfg["lm_steps"])
    return {"one after the other": sum(alone[stage] * cfg[key] for stage, key in STEPS.items()),
            "side by side": first + alone["classifier"] * (cfg["classifier_steps"] - cfg["classifier_steps_beside"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=positive_int, default=6, help="timed steps per stage and round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--device", help="default: CUDA when present")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()  # the classifier's fresh head, said once per run
    ensure_datasets()
    set_seed(0)
    cfg = dict(PRESETS[args.preset], device=pick_device(args.device))
    train = read_corpus_split("train")
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer([s for _, s in train], tmp, model_max_length=2 * cfg["seq_len"])
        tokenizer = rust_twin(tmp, 2 * cfg["seq_len"])
        data = dict(tokenizer=tokenizer, train=train, encoder_dir=os.path.join(tmp, "encoder"),
                    blocks=_lm_blocks(tokenizer, [s for _, s in train], cfg["seq_len"]))
        train_encoder(tokenizer, train, dict(cfg, mlm_steps=1, bf16=False), StepClock()).save_pretrained(
            data["encoder_dir"])
        precisions = {"float32": dict(cfg, bf16=False)}
        if uses_bf16(dict(cfg, bf16=True)):
            precisions["bf16"] = dict(cfg, bf16=True)
        else:
            print(f"no native bf16 on {cfg['device']}: only float32 is timed")
        print(f"{args.preset} recipe on {cfg['device']}, {torch.get_num_threads()} thread(s); median s/step of "
              f"{args.rounds} rounds x {args.steps} steps")
        totals = {}
        for precision, precision_cfg in precisions.items():
            per_step = time_both_ways(precision_cfg, data, args.steps, args.rounds)
            for way, seconds in training_seconds(per_step, cfg).items():
                totals[precision, way] = seconds
                steps = "  ".join(f"{stage} {t:.3f}" for stage, t in per_step[way].items())
                print(f"{precision:<8} {way:<20} s/step: {steps}  -> build's training {seconds:.0f} s")
    for precision in precisions:
        sequential, parallel = totals[precision, "one after the other"], totals[precision, "side by side"]
        print(f"ratio one after the other / side by side, {precision}: {sequential / parallel:.2f}x")
    if "bf16" in precisions:
        print(f"ratio float32 / bf16, side by side: "
              f"{totals['float32', 'side by side'] / totals['bf16', 'side by side']:.2f}x")


if __name__ == "__main__":
    run_main(main)
