"""How deep the tiny GPT-2 needs to be: each depth trains the preset's steps, all depths at once in threads of their
own (one CPU core each on 2 cores, as GPT-2 has in the build), then its perplexity on the held-out sentences. On
this corpus the perplexity depends on the steps, not the depth, so the build trains one layer.

    python bench/bench_tiny_lm.py                          # layers 1 and 4, the tiny recipe's 900 steps
    python bench/bench_tiny_lm.py --preset micro --steps 4 # seconds (what the test runs)
"""
import argparse
import concurrent.futures
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_tiny_build import StepClock  # noqa: E402
from utils.device import pick_device  # noqa: E402
from utils.errors import run_main  # noqa: E402
from utils.data import ensure_datasets, read_corpus_split  # noqa: E402
from utils.options import positive_int  # noqa: E402
from utils.tiny import (PRESETS, _lm_blocks, build_tokenizer, lm_perplexity, new_gpt2, rust_twin,  # noqa: E402
                        train_gpt2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--layers", type=positive_int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=positive_int, help="default: the preset's lm_steps")
    parser.add_argument("--device", help="default: CUDA when present")
    args = parser.parse_args(argv)
    ensure_datasets()
    cfg = dict(PRESETS[args.preset], device=pick_device(args.device))
    cfg["lm_steps"] = args.steps or cfg["lm_steps"]
    train, test = read_corpus_split("train"), read_corpus_split("test")[:cfg["max_test_sentences"]]
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer([s for _, s in train], tmp, model_max_length=2 * cfg["seq_len"])
        tokenizer = rust_twin(tmp, 2 * cfg["seq_len"])
    blocks = _lm_blocks(tokenizer, [s for _, s in train], cfg["seq_len"])
    models, clocks = {}, {}
    for layers in args.layers:  # made here, as the build does, before the threads start
        torch.manual_seed(0)
        models[layers] = new_gpt2(tokenizer, dict(cfg, gpt_layers=layers))
        clocks[layers] = StepClock()
    threads = torch.get_num_threads()
    if cfg["device"].type == "cpu":
        torch.set_num_threads(max(1, threads // len(args.layers)))
    try:
        with concurrent.futures.ThreadPoolExecutor(len(args.layers)) as pool:
            for run in [pool.submit(train_gpt2, models[layers], blocks, cfg, clocks[layers]) for layers in args.layers]:
                run.result()
    finally:
        torch.set_num_threads(threads)
    print(f"{args.preset} recipe, GPT-2 {cfg['lm_steps']} steps on {cfg['device']}, depths trained at once")
    for layers in args.layers:
        print(f"{layers} layer(s): {clocks[layers].seconds_per_step():.3f} s/step, held-out perplexity "
              f"{lm_perplexity(models[layers], tokenizer, test, cfg['seq_len']):.1f}")
    first, last = args.layers[0], args.layers[-1]
    print(f"ratio {last} layers / {first}: time per step "
          f"{clocks[last].seconds_per_step() / clocks[first].seconds_per_step():.2f}x")


if __name__ == "__main__":
    run_main(main)
