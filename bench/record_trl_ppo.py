"""Record trl 0.11.4's `PPOTrainer.step` on the micro PPO problem (bench/micro_ppo.py) in
tests/fixtures/trl_0_11_4_ppo_step.json: the reference tests/test_ppo.py checks our `ppo_update` against, now that
trl 1.x has no PPO and trl 0.11.4 cannot be installed beside it.

For each of micro_ppo.RUNS, from the seeded starting weights: `STEPS` steps in a row, step s on
`micro_batch(seed=s)` with torch seeded with s just before it; trl draws its mini-batch shuffles with numpy, which
draws here from torch's generator, as our update does. Kept: trl's statistics (micro_ppo.TRL_STATS), the KL
coefficient after each step, the shuffles drawn, and how far every parameter moved in all (float32, every element:
the micro model has 5.5k parameters), with the versions that made it and the command that makes it again.

    python bench/record_trl_ppo.py     # builds trl 0.11.4's venv first if needed (bench/trl_venv.py), records there
"""
import copy
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from unittest import mock

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.micro_ppo import (BATCH_SIZE, FIXTURE, RUNS, STEPS, TRL_STATS, encode_floats, micro_batch,  # noqa: E402
                             micro_policy, micro_tokenizer, named_weights, weights_digest)
from bench.trl_venv import TRL_VERSION, build_trl_venv  # noqa: E402
from utils.errors import run_main  # noqa: E402
from utils.files import write_text_atomically  # noqa: E402

COMMAND = "python bench/record_trl_ppo.py"


def in_trl_venv():
    try:
        return importlib.metadata.version("trl") == TRL_VERSION
    except importlib.metadata.PackageNotFoundError:
        return False


def drawn_from_torch(shuffles):
    """A stand-in for `np.random.permutation(n)` that draws from torch's generator and keeps what it drew."""

    def permutation(n):
        order = torch.randperm(n)
        shuffles.append(order.tolist())
        return order.numpy()

    return permutation


def record_run(config):
    """trl's steps for one configuration: {config, steps, moved} (see the module's docstring)."""
    from bench.trl_reference import make_trl_trainer, trl_step  # trl 0.11.4: only inside its venv

    tokenizer, policy = micro_tokenizer(), micro_policy()
    start = named_weights(policy)
    ref_lm = copy.deepcopy(policy.pretrained_model)
    # trl's value-head class around our model and our head: our parameter names and tensors, trained by trl
    trainer = make_trl_trainer(policy.pretrained_model, ref_lm, tokenizer, value_head=policy.v_head.summary,
                               batch_size=BATCH_SIZE, accelerator_kwargs={"cpu": True}, **config)
    steps = []
    for step in range(STEPS):
        queries, responses, scores = micro_batch(tokenizer, seed=step)
        shuffles = []
        torch.manual_seed(step)
        with mock.patch.object(np.random, "permutation", drawn_from_torch(shuffles)):
            stats = trl_step(trainer, queries, responses, scores)
        steps.append(dict(batch_seed=step, torch_seed=step, shuffles=shuffles,
                          stats={name: float(stats[name]) for name in TRL_STATS.values()},
                          kl_coef_after=float(trainer.kl_ctl.value)))
    moved = {name: weight - start[name] for name, weight in named_weights(policy).items()}
    return dict(config=config, steps=steps,
                moved={name: dict(shape=list(delta.shape), norm=round(float(delta.norm()), 6),
                                  float32_base64=encode_floats(delta)) for name, delta in moved.items()})


def record():
    torch.set_num_threads(1)  # one summation order, wherever it is recorded
    fixture = dict(
        about="trl 0.11.4's PPOTrainer.step on bench/micro_ppo.py's micro GPT-2 and batches: tests/test_ppo.py "
              "checks our ppo_update against it",
        command=COMMAND,
        versions=dict(trl=TRL_VERSION, transformers=transformers.__version__, torch=torch.__version__,
                      python=platform.python_version(), device="cpu", threads=1),
        start_weights_sha256=weights_digest(micro_policy()), batch_size=BATCH_SIZE, steps=STEPS,
        runs={name: record_run(config) for name, config in RUNS.items()})
    write_text_atomically(FIXTURE, json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE) / 1024:.0f} KB)")


def main():
    if in_trl_venv():
        record()
    else:  # run this script again in trl 0.11.4's venv
        sys.exit(subprocess.run([build_trl_venv(), os.path.abspath(__file__)]).returncode)


if __name__ == "__main__":
    run_main(main)
