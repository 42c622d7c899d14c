"""One PPO epoch (generate, score, update) of each variant bench/bench_ppo.py compares, run in a process of its own,
so that ours (today's stack) and trl 0.11.4's (in its venv, bench/trl_venv.py) are timed alike.

    original   the original's loop on today's libraries: one `generate` call per sample (16 new tokens, the model
               left in train mode by trl), the sentiment pipeline called on the list without batching, then trl's
               own `PPOTrainer.step` (its own Adam)
    ours       ppo_sentiment_example.py's loop: one batched `generate` call (eval mode, fixed length) that keeps the
               log-probabilities and values it computes, one batched classifier call, its own PPO update
               (`ppo_update`: batched, each distinct prompt run once, the old log-probabilities and values from
               sampling, a fused Adam)
    trl step   ours, with the update done by trl 0.11.4's `PPOTrainer.step` instead (same settings, same fused
               Adam): what writing the update out gained

The bench starts `python bench/ppo_epochs.py` (trl's variants with the venv's python) and writes JSON lines to it:
first the setup ({"variant", "gpt2", "classifier", "batch_size", "device", "ppo": PPO settings}), then for each
epoch its prompts (a list), answered with the epoch's timings in seconds ({"generate", "reward", "optimize",
"epoch"}, model loading excluded), or "peak", answered with {"peak_gb"}: the peak memory so far.
"""
import functools
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from utils.device import accelerator_kwargs, pick_device, set_seed  # noqa: E402
from utils.generation import generate_responses  # noqa: E402
from utils.tokens import decode, encode_prompt  # noqa: E402
from utils.policy import load_policy  # noqa: E402
from utils.reward_sources import SentimentPipelineReward  # noqa: E402

GEN_LEN = 16


@dataclass
class Setup:
    policy: torch.nn.Module  # what generates: the language model (inside our or trl's value-head class)
    tokenizer: object
    update: Callable  # (queries, responses, scores[, sampled]) -> statistics
    with_logprobs: bool = False  # the update takes sampling's log-probabilities and values (`sampled`)


def our_setup(gpt2_dir, batch_size, device, mixed_precision=None, **ppo):
    from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update  # not in trl's venv (it has no matplotlib)

    policy, ref_model, tokenizer = load_policy(gpt2_dir, device)
    trainer = make_ppo(policy, ref_model, tokenizer, PPOConfig(**ppo),
                       Accelerator(**accelerator_kwargs(device, mixed_precision)))
    return Setup(trainer.unwrapped_policy(), tokenizer, functools.partial(ppo_update, trainer), with_logprobs=True)


def trl_setup(gpt2_dir, batch_size, device, fused_adam=True, **ppo):
    """trl's `PPOTrainer` on the same models: with our fused Adam (the same update as ours, as trl computes it),
    or as the original built it, with trl's own Adam (a loop over the parameters)."""
    from bench.trl_reference import make_trl_trainer, trl_step  # trl 0.11.4: only inside its venv

    policy, ref_model, tokenizer = load_policy(gpt2_dir, device)
    trainer = make_trl_trainer(policy, ref_model, tokenizer, fused_adam=fused_adam, batch_size=batch_size, seed=0,
                               accelerator_kwargs=accelerator_kwargs(device), **ppo)
    lm = trainer.accelerator.unwrap_model(trainer.model).pretrained_model  # generates (trl's wrapper returns tuples)
    return Setup(lm, tokenizer, functools.partial(trl_step, trainer))


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def original_epoch(setup, reward, prompts, device):
    """The original's loop body: per-sample `generate`, unbatched pipeline, trl's `step`."""
    t0 = time.perf_counter()
    queries, responses = [], []
    for prompt in prompts:  # the policy stays in train mode, as trl's step leaves it; the original generated so
        query = encode_prompt(setup.tokenizer, prompt).to(device)
        output = setup.policy.generate(query.unsqueeze(0), max_new_tokens=GEN_LEN, do_sample=True, top_k=0,
                                       top_p=1.0, pad_token_id=setup.tokenizer.pad_token_id, eos_token_id=None)
        queries.append(query)
        responses.append(output.squeeze(0)[-GEN_LEN:])
    texts = [p + decode(setup.tokenizer, r) for p, r in zip(prompts, responses)]
    t1 = time.perf_counter()
    outputs = reward.pipe(texts, truncation=True, top_k=None)  # no batch_size: one text per forward pass
    rewards = [next(o["score"] for o in scores if o["label"] == reward.positive) for scores in outputs]
    t2 = time.perf_counter()
    setup.update(queries, responses, rewards)
    synchronize(device)
    t3 = time.perf_counter()
    return dict(generate=t1 - t0, reward=t2 - t1, optimize=t3 - t2, epoch=t3 - t0)


def batched_epoch(setup, reward, prompts, device):
    """ppo_sentiment_example.py's loop body, with the variant's update."""
    t0 = time.perf_counter()
    queries = [encode_prompt(setup.tokenizer, prompt) for prompt in prompts]
    sampled = generate_responses(setup.policy, setup.tokenizer, queries, GEN_LEN, with_logprobs=setup.with_logprobs)
    responses = sampled.responses if setup.with_logprobs else sampled
    texts = [p + decode(setup.tokenizer, r) for p, r in zip(prompts, responses)]
    t1 = time.perf_counter()
    rewards = reward(texts)
    t2 = time.perf_counter()
    setup.update(queries, responses, rewards, *([sampled[1:]] if setup.with_logprobs else []))
    synchronize(device)
    t3 = time.perf_counter()
    return dict(generate=t1 - t0, reward=t2 - t1, optimize=t3 - t2, epoch=t3 - t0)


VARIANTS = {"original": (original_epoch, functools.partial(trl_setup, fused_adam=False)),
            "ours": (batched_epoch, our_setup),
            "trl step": (batched_epoch, trl_setup)}
NEEDS_TRL = ("original", "trl step")


def peak_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024 ** 3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kilobytes on Linux


def main():
    replies = os.fdopen(os.dup(1), "w")  # the answers alone; whatever the libraries print goes to stderr
    os.dup2(2, 1)
    request = json.loads(sys.stdin.readline())
    device = pick_device(request["device"])
    set_seed(0)
    run, make_setup = VARIANTS[request["variant"]]
    setup = make_setup(request["gpt2"], request["batch_size"], device, **request["ppo"])
    reward = SentimentPipelineReward(request["classifier"], device, batch_size=request["batch_size"])
    for line in sys.stdin:
        request = json.loads(line)
        answer = dict(peak_gb=peak_gb(device)) if request == "peak" else run(setup, reward, request, device)
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
