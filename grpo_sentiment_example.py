"""GRPO fine-tunes a Chinese GPT-2 so that its continuations of review prompts turn positive: the PPO example's
job with group-relative advantages (Shao et al. 2024, DeepSeekMath; the algorithm behind DeepSeek-R1).

Each epoch: pick `batch_size / group_size` random prompts -> the policy writes `group_size` answers to each in one
batched `generate` call -> a reward source scores prompt + answer -> each answer's advantage is its reward minus
its group's mean, divided by the group's std (the same for every token of the answer) -> a clipped policy-ratio
objective with a KL penalty to the frozen reference model (k3 estimator, coefficient `beta`). No value head,
no critic: the other answers to the same prompt are the baseline.

The field has since changed some of these choices; each is a flag here (named as in trl's GRPOTrainer):
  --scale_rewards group|batch|none   divide by the group's std (the paper), the whole batch's std, or nothing
                                     (Dr. GRPO, Liu et al. 2025: a group whose rewards differ by a thousandth
                                     then gets a thousandth-size advantage, not a unit-size one)
  --loss_type grpo|dr_grpo           average each answer's token losses over its own length (the paper), or sum
                                     them and divide by a constant, max_new_tokens (Dr. GRPO: no length bias)
  --epsilon_high                     clip the ratio to [1 - cliprange, 1 + epsilon_high] (DAPO's clip-higher)
  --advantage group_mean|rloo        baseline: the group's mean, or the mean of the *other* answers
                                     (RLOO, Ahmadian et al. 2024: leave-one-out)

The same loop as the PPO example (utils/online.py), with its reward sources: the sentiment-analysis pipeline
(probability of the positive label) or `--reward_model DIR` (raw scores: the group advantages normalise them), and
its judge, early stop and checkpoints.

    python grpo_sentiment_example.py --tiny          # offline tiny models
    python grpo_sentiment_example.py                 # the original's hub models
    accelerate launch --multi_gpu --num_processes 2 grpo_sentiment_example.py ...  # 2 processes (GPUs or CPUs)
    torchrun --standalone --nproc_per_node 2 grpo_sentiment_example.py --tiny --fsdp  # sharded over 2 (FSDP2)
"""
import argparse
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from torch.nn.utils.rnn import pad_sequence

from utils.answer_logprobs import answer_logprobs
from utils.device import any_process
from utils.errors import UserError, run_main
from utils.online import (add_policy_and_reward_arguments, add_rollout_arguments, check_rollout_options,
                          train_online)
from utils.options import ArgumentParser, learning_rate, nonnegative_float, positive_float, positive_int, ratio
from utils.policy import add_model_arguments
from utils.presets import Preset, parse_with_presets
from utils.reward_sources import mean_std
from utils.run import optimizer_step, prepare_frozen, prepare_trainable
from utils.sharding import global_mean_var
from utils.tiny import TINY_CLASSIFIER, TINY_GPT2

# The original PPO example's models and scale (a GPU in mind), with GRPO's usual settings ...
ORIGINAL = dict(model_name="uer/gpt2-chinese-cluecorpussmall",
                sentiment_model="uer/roberta-base-finetuned-jd-binary-chinese",
                total_samples=20000, batch_size=128, mini_batch_size=16, grpo_epochs=1, learning_rate=1.41e-5, beta=0.04,
                save_freq=5, scale_rewards="group", loss_type="grpo", advantage="group_mean", max_grad_norm=1.0,
                reward_norm="none")  # the group advantages are GRPO's reward normalisation
# ... and those that make the tiny models learn on a 2-core CPU in well under a minute (40 epochs: 22 s at load 1.7,
# reward 0.55 -> 0.87, KL 1.96, distinct-2 0.65; README): GRPO as the field runs it now.
# With the paper's group whitening every group gets unit-size advantages even when its rewards hardly differ, so
# once the classifier's reward saturates (about 0.96) the policy keeps being pushed by noise (beta 0.04: KL 16 and
# distinct-2 0.37 by epoch 12), and only a strong penalty (beta 0.5) held it, at a judge gain of +0.31.
# Unscaled leave-one-out advantages (Dr. GRPO + RLOO) shrink as a group's rewards converge, so a small beta
# suffices: on the frontier (bench/bench_frontier.py, docs/benchmarks.md) beta 0.05 gave +0.38 at KL 2.4 with
# distinct-2 0.59 (beta 0.03: +0.39 at KL 2.6, distinct-2 0.57); beta 0.01 collapsed (distinct-2 0.50 at KL 4.7).
TINY = dict(total_samples=128 * 40, batch_size=128, mini_batch_size=32, grpo_epochs=1, learning_rate=1e-4, beta=0.05,
            save_freq=20, scale_rewards="none", loss_type="dr_grpo", advantage="rloo", epsilon_high=0.28,
            model_name=TINY_GPT2, sentiment_model=TINY_CLASSIFIER)
PRESETS = [Preset("--tiny", lambda args: args.tiny, TINY)]
SCALE_REWARDS, LOSS_TYPES, BASELINES = ("group", "batch", "none"), ("grpo", "dr_grpo"), ("group_mean", "rloo")
EPS = 1e-4  # added to the group's std: a group whose answers all score the same gets zero advantage, not NaN


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_policy_and_reward_arguments(p)
    p.add_argument("--batch_size", type=positive_int, help="answers per epoch (per process): prompts x group_size")
    p.add_argument("--group_size", type=positive_int, default=8, help="answers per prompt (G)")
    p.add_argument("--mini_batch_size", type=positive_int, help="answers per gradient step")
    p.add_argument("--grpo_epochs", type=positive_int, help="optimisation passes over each batch")
    p.add_argument("--learning_rate", "--lr", type=learning_rate)
    p.add_argument("--beta", type=nonnegative_float, help="coefficient of the KL penalty to the reference model")
    p.add_argument("--cliprange", "--epsilon", type=ratio, default=0.2,
                   help="the policy ratio is clipped to [1 - this, 1 + epsilon_high]")
    p.add_argument("--epsilon_high", type=positive_float,
                   help="upper clip of the ratio (DAPO's clip-higher, e.g. 0.28; default: --cliprange)")
    p.add_argument("--scale_rewards", choices=SCALE_REWARDS,
                   help="divide the advantages by the group's reward std, the batch's, or not at all (Dr. GRPO)")
    p.add_argument("--loss_type", choices=LOSS_TYPES,
                   help="grpo: each answer's token mean; dr_grpo: token sum / max_new_tokens (Dr. GRPO)")
    p.add_argument("--advantage", choices=BASELINES,
                   help="baseline subtracted from each reward: the group's mean, or the other answers' mean (RLOO)")
    add_rollout_arguments(p, save_dir=os.path.join("checkpoints", "grpo_sentiment_gpt"), log_name="GRPO-Sentiment-Zh")
    add_model_arguments(p)
    p.set_defaults(**ORIGINAL)
    return parse_with_presets(p, argv, PRESETS, check=check_options)


def check_options(args):
    """Before anything is loaded or written: the batch must split into whole groups of at least 2 answers (and the
    checks every online-sampling script shares)."""
    if args.group_size < 2:
        raise UserError(f"--group_size {args.group_size}: a group needs at least 2 answers (the group is the baseline)")
    if args.batch_size % args.group_size:
        raise UserError(f"--batch_size {args.batch_size} is not a multiple of --group_size {args.group_size} "
                        "(each epoch writes group_size answers to each of batch_size / group_size prompts)")
    check_rollout_options(args)


# ---------------------------------------------------------------- the algorithm
def group_advantages(rewards, group_size, baseline="group_mean", scale_rewards="group"):
    """Each answer's advantage, for consecutive groups of `group_size` rewards; and each group's reward std.

    baseline "group_mean": reward - the group's mean (GRPO); "rloo": reward - the mean of the group's other
    G - 1 rewards (leave-one-out), which is G / (G - 1) times the former. Then divided by the group's std + EPS
    ("group", the paper), by the whole batch's std + EPS ("batch"), or left as it is ("none", Dr. GRPO).
    """
    groups = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)
    if baseline == "rloo":
        advantages = groups - (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    else:
        advantages = groups - groups.mean(dim=1, keepdim=True)
    group_std = groups.std(dim=1, keepdim=True)
    if scale_rewards == "group":
        advantages = advantages / (group_std + EPS)
    elif scale_rewards == "batch":  # the whole batch's, every process's share of it
        advantages = advantages / (global_mean_var(groups)[1].sqrt() + EPS)
    return advantages.flatten(), group_std.flatten()


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, cliprange, beta, epsilon_high=None,
              loss_type="grpo", max_new_tokens=None):
    """GRPO's objective (negated), per token, then averaged as `loss_type` says; and its parts.

    Per token: the clipped surrogate -min(ratio * A, clip(ratio, 1 - cliprange, 1 + epsilon_high) * A), as in
    PPO but with the answer's group-relative advantage A, plus beta times the k3 estimate of
    KL(policy || reference): exp(ref - logp) - (ref - logp) - 1, which is never negative.
    "grpo": the mean over each answer's tokens, then over answers (a long answer's tokens weigh less each);
    "dr_grpo": the sum over all tokens divided by answers x max_new_tokens, a constant (every token weighs alike).
    """
    epsilon_high = cliprange if epsilon_high is None else epsilon_high
    ratio = torch.exp(logprobs - old_logprobs)
    advantages = advantages.unsqueeze(1)
    surrogate = -torch.min(ratio * advantages, torch.clamp(ratio, 1 - cliprange, 1 + epsilon_high) * advantages)
    log_ratio_ref = ref_logprobs - logprobs
    kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1

    def average(x):
        if loss_type == "dr_grpo":
            return (x * mask).sum() / (mask.shape[0] * max_new_tokens)
        return ((x * mask).sum(dim=1) / mask.sum(dim=1)).mean()

    policy_loss, kl_penalty = average(surrogate), average(kl)
    clipped = ((ratio < 1 - cliprange) | (ratio > 1 + epsilon_high)).float()
    clip_frac = ((clipped * mask).sum(dim=1) / mask.sum(dim=1)).mean()
    return policy_loss + beta * kl_penalty, dict(policy_loss=policy_loss.item(), kl_penalty=kl_penalty.item(),
                                                 clip_frac=clip_frac.item())


@dataclass
class GRPOConfig:
    learning_rate: float
    mini_batch_size: int  # answers per gradient step
    grpo_epochs: int  # optimisation passes over each batch
    group_size: int  # answers per prompt
    beta: float  # coefficient of the KL penalty
    cliprange: float  # the ratio is clipped to [1 - cliprange, 1 + epsilon_high]
    epsilon_high: float
    scale_rewards: str
    loss_type: str
    advantage: str  # the baseline
    max_new_tokens: int  # dr_grpo's constant
    max_grad_norm: float = None


def grpo_config(args):
    return GRPOConfig(learning_rate=args.learning_rate, mini_batch_size=args.mini_batch_size,
                      grpo_epochs=args.grpo_epochs, group_size=args.group_size, beta=args.beta,
                      cliprange=args.cliprange, epsilon_high=args.cliprange if args.epsilon_high is None else
                      args.epsilon_high, scale_rewards=args.scale_rewards, loss_type=args.loss_type,
                      advantage=args.advantage, max_new_tokens=args.max_new_tokens, max_grad_norm=args.max_grad_norm)


@dataclass
class GRPO:
    """What a GRPO update works on: the policy and its optimiser, prepared on the accelerator's processes (data
    parallel, or sharded with --fsdp), and the frozen reference model. Also the algorithm utils/online.py's loop
    runs (its `update`, `loss`, `kl_coef` ...)."""
    accelerator: Accelerator
    policy: torch.nn.Module
    ref_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    tokenizer: object
    config: GRPOConfig
    with_logprobs = True  # the ratio's old log-probabilities are those the answers were sampled with
    hint = "--learning_rate or --beta"

    @property
    def group_size(self):
        return self.config.group_size

    @property
    def kl_coef(self):
        return self.config.beta

    def update(self, rollout, rewards):
        """Group advantages of the `rewards`, then `grpo_update`; None (skipped, with a warning) when a reward is
        NaN or infinite on any process."""
        bad = sum(not math.isfinite(r) for r in rewards)
        if any_process(self.accelerator, bad):
            warnings.warn(f"GRPO update skipped: {bad} of {len(rewards)} rewards on this process are NaN or infinite "
                          "(or some on another process); the model is not updated with this batch", stacklevel=2)
            return None
        config = self.config
        advantages, group_std = group_advantages(rewards, config.group_size, config.advantage, config.scale_rewards)
        stats, sampled_kl = grpo_update(self, rollout.queries, rollout.responses, rollout.logprobs, advantages)
        return dict(kl=mean_std(sampled_kl.tolist(), self.accelerator)[0],
                    group_reward_std=mean_std(group_std.tolist(), self.accelerator)[0], **stats)

    def loss(self, stats):
        return stats["policy_loss"] + self.config.beta * stats["kl_penalty"]

    def summary(self, record):
        return f"  group-std: {record.get('group_reward_std', float('nan')):.3f}"

    def batch_line(self, args):
        return f"{args.batch_size // args.group_size} prompts x {args.group_size} answers"


def make_grpo(policy, ref_model, tokenizer, config, accelerator):
    """A `GRPO` for `policy` and its reference (from utils.policy.load_policy) on `accelerator`'s processes
    (utils.run.make_accelerator): Adam over the trainable weights, fused."""
    policy, optimizer = prepare_trainable(accelerator, policy, learning_rate=config.learning_rate)
    return GRPO(accelerator, policy, prepare_frozen(accelerator, ref_model, trained=policy), optimizer, tokenizer,
                config)


def build(args, accelerator, policy, ref_model, tokenizer, resume_state):
    """The GRPO the arguments describe (utils.online.train_online calls it; beta is an option, not a state)."""
    return make_grpo(policy, ref_model, tokenizer, grpo_config(args), accelerator)


def grpo_update(grpo, queries, responses, sampled_logprobs, advantages):
    """`grpo_epochs` passes of mini-batch steps over one batch of sampled answers; returns mean stats and the
    per-answer KL to the reference (sum over the answer's tokens, as trl's PPO logs it) before the update.

    The ratio's old log-probabilities are `sampled_logprobs`, the policy's own as sampling computed them (before this
    update: a forward pass over the batch saved)."""
    accelerator, config, pad = grpo.accelerator, grpo.config, grpo.tokenizer.pad_token_id
    with torch.no_grad(), accelerator.autocast():
        ref_logprobs, mask = answer_logprobs(grpo.ref_model, queries, responses, pad)
    old_logprobs = pad_sequence(sampled_logprobs, batch_first=True).to(ref_logprobs.device)
    sampled_kl = ((old_logprobs - ref_logprobs) * mask).sum(dim=1)
    advantages = advantages.to(old_logprobs.device)
    stats = []
    for _ in range(config.grpo_epochs):
        order = torch.randperm(len(queries))
        for start in range(0, len(queries), config.mini_batch_size):
            idx = order[start:start + config.mini_batch_size]
            logprobs, _ = answer_logprobs(grpo.policy, [queries[i] for i in idx], [responses[i] for i in idx], pad,
                                          width=mask.shape[1])
            loss, parts = grpo_loss(logprobs, old_logprobs[idx], ref_logprobs[idx], advantages[idx], mask[idx],
                                    config.cliprange, config.beta, config.epsilon_high, config.loss_type,
                                    config.max_new_tokens)
            optimizer_step(accelerator, grpo.optimizer, loss, config.max_grad_norm)
            stats.append(parts)
    return {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}, sampled_kl


# ---------------------------------------------------------------- main
def main(argv=None, reward_fn=None):
    """Train; `reward_fn` (texts -> floats) replaces the reward source the arguments choose (and its judge)."""
    train_online(parse_args(argv), "grpo", build, reward_fn)


if __name__ == "__main__":
    run_main(main)
