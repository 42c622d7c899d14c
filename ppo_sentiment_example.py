"""PPO fine-tunes a Chinese GPT-2 so that its continuations of review prompts turn positive.

Each epoch: pick `batch_size` random prompts -> the policy writes `gen_len` new tokens for all of them
in one batched `generate` call -> a reward source scores prompt + answer -> one PPO update (`ppo_update`,
written out below: a KL penalty to the frozen reference model on every token, GAE over the value head's
estimates, clipped policy and value losses, an adaptive KL coefficient) -> log, print samples, save now and then.

Reward sources (one loop): the sentiment-analysis pipeline (probability of the positive label, by default)
or `--reward_model DIR`, a reward model saved by train_reward_model.py (the full RLHF loop). A reward model's
raw scores are normalised by the reference model's own answers, measured once before training
(`--reward_norm`); the sentiment classifier then judges the answers every `save_freq` epochs, a scorer the
policy is not trained on, so that reward hacking shows as a reward that rises while the judge stalls.

    python ppo_sentiment_example.py --tiny          # offline tiny models: under a minute on a CPU, once built
    python ppo_sentiment_example.py                 # the original's hub models and settings
    accelerate launch --multi_gpu --num_processes 2 ppo_sentiment_example.py ...  # 2 processes (GPUs or CPUs)
    torchrun --standalone --nproc_per_node 2 ppo_sentiment_example.py --tiny --fsdp  # the policy sharded over 2 (FSDP2)
"""
import argparse
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from torch.nn.utils.rnn import pad_sequence

from utils.answer_logprobs import score_answers
from utils.device import any_process
from utils.errors import run_main
from utils.online import (add_policy_and_reward_arguments, add_rollout_arguments, check_rollout_options,
                          train_online)
from utils.options import ArgumentParser, fraction, learning_rate, nonnegative_float, positive_float, positive_int
from utils.policy import add_model_arguments
from utils.presets import Preset, parse_with_presets
from utils.reward_sources import REWARD_NORMS
from utils.run import optimizer_step, prepare_frozen, prepare_trainable
from utils.sharding import global_mean_var, global_token_mean
from utils.tiny import TINY_CLASSIFIER, TINY_GPT2
from utils.value_head import with_value_head

# The original's settings (uer's hub models, a GPU in mind) ...
ORIGINAL = dict(model_name="uer/gpt2-chinese-cluecorpussmall",
                sentiment_model="uer/roberta-base-finetuned-jd-binary-chinese",
                total_samples=20000, batch_size=128, mini_batch_size=16, ppo_epochs=4, learning_rate=1.41e-5,
                init_kl_coef=0.2, target=6.0, horizon=10000, save_freq=5, stop_at_reward="off", reward_norm="none")
# ... and those that make the tiny models learn visibly on a 2-core CPU in under a minute: a larger
# learning rate; 1 PPO epoch per batch (the step is most of an epoch's time); the original's batch of 128
# in mini-batches of 32 (each update less noisy: PPO whitens advantages, so noise alone moves the policy
# and uses up the KL budget); a weaker KL penalty that adapts within a few epochs, aiming at KL 5 (at 6 the
# answers grew too alike), starting at 0.08 (at 0.05 the one-layer GPT-2 reached reward 0.9 at KL 4.5 and
# distinct-2 0.49, at 0.08 at KL 3.5 and 0.54: docs/tuning.md). The reward's 10-epoch mean reaches 0.9 at epoch 50
# (the README's quick start) and levels off, and longer runs only wear down the answers' variety
# (distinct-2): the run stops there, once it has shown its lesson (at most 100 epochs).
TINY = dict(total_samples=128 * 100, batch_size=128, mini_batch_size=32, ppo_epochs=1, learning_rate=3e-4,
            init_kl_coef=0.08, target=5.0, horizon=2000, save_freq=25, stop_at_reward=0.9, model_name=TINY_GPT2,
            sentiment_model=TINY_CLASSIFIER)
# With --reward_model the rewards are in units of the reference answers' standard deviation and unbounded: the
# classifier's probability stops at 1, a reward model's score does not, so the policy keeps pushing and the KL
# keeps growing (KL 11 and distinct-2 0.30 by epoch 12 with an initial coefficient of 0.05). A stronger penalty
# that adapts within tens of epochs (horizon 500: the coefficient moves up to 5% an epoch) holds the KL near a
# lower target. The rewards are normalised by the reference model's answers, and have no level that means
# "learnt": no early stop.
REWARD_MODEL = dict(init_kl_coef=0.3, target=3.0, horizon=500, reward_norm="reference", stop_at_reward="off")
# --preset gpu, speed over faithfulness: at mini-batch 16 a GPU mostly waits on per-mini-batch overhead, so the
# whole batch goes in one mini-batch, under bf16 autocast (its learning: README)
PRESETS = [Preset("--tiny", lambda args: args.tiny, TINY),
           Preset("--reward_model", lambda args: args.reward_model is not None, REWARD_MODEL),
           Preset("--preset gpu", lambda args: args.preset == "gpu",
                  lambda args: dict(mini_batch_size=args.batch_size, mixed_precision="bf16"),
                  note="--mini_batch_size = --batch_size, --mixed_precision bf16")]


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_policy_and_reward_arguments(p)
    p.add_argument("--reward_norm", choices=REWARD_NORMS,
                   help="how raw scores become PPO rewards: 'reference' = (score - mean) / std of the reference "
                        "model's own answers, measured once before training and kept in checkpoints; 'batch' = "
                        "whitened within each batch; 'none' = the raw scores (the classifier's probabilities "
                        "already have a fixed 0..1 scale)")
    p.add_argument("--normalize_reward", dest="reward_norm", action="store_const", const="reference",
                   help="the same as --reward_norm reference (the older name)")
    p.add_argument("--batch_size", type=positive_int, help="samples per PPO epoch (per process)")
    p.add_argument("--mini_batch_size", type=positive_int, help="forward and PPO mini-batch size")
    p.add_argument("--ppo_epochs", type=positive_int, help="optimisation passes over each batch")
    p.add_argument("--learning_rate", "--lr", type=learning_rate)
    p.add_argument("--init_kl_coef", type=nonnegative_float, help="initial KL coefficient (adaptive)")
    p.add_argument("--target", type=positive_float, help="KL target of the adaptive controller")
    p.add_argument("--horizon", type=positive_int, help="horizon of the adaptive KL controller")
    p.add_argument("--gamma", type=fraction, default=1.0)
    p.add_argument("--lam", type=fraction, default=0.95)
    p.add_argument("--cliprange", type=positive_float, default=0.2)
    p.add_argument("--cliprange_value", type=positive_float, default=0.2)
    p.add_argument("--vf_coef", type=nonnegative_float, default=0.1)
    add_rollout_arguments(p, save_dir=os.path.join("checkpoints", "ppo_sentiment_gpt"), log_name="PPO-Sentiment-Zh")
    add_model_arguments(p)
    p.add_argument("--preset", choices=["gpu"], help="gpu: the whole batch in one mini-batch and bf16 (speed over "
                                                     "faithfulness)")
    p.set_defaults(**ORIGINAL)
    return parse_with_presets(p, argv, PRESETS, check_rollout_options)


def ppo_config(args):
    return PPOConfig(learning_rate=args.learning_rate, mini_batch_size=args.mini_batch_size,
                     ppo_epochs=args.ppo_epochs, init_kl_coef=args.init_kl_coef, target=args.target,
                     horizon=args.horizon, gamma=args.gamma, lam=args.lam, cliprange=args.cliprange,
                     cliprange_value=args.cliprange_value, vf_coef=args.vf_coef, max_grad_norm=args.max_grad_norm)


# ---------------------------------------------------------------- the algorithm
@dataclass
class PPOConfig:
    """PPO's settings. The defaults are trl 0.11.4's `PPOConfig` defaults (what the terminal uses)."""
    learning_rate: float = 1.41e-5
    mini_batch_size: int = 128  # samples per gradient step (a smaller batch is one mini-batch)
    ppo_epochs: int = 4  # optimisation passes over each batch
    init_kl_coef: float = 0.2
    target: float = 6.0  # the KL the adaptive controller aims at
    horizon: float = 10000
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE's lambda
    cliprange: float = 0.2  # the policy ratio is clipped to 1 +- this
    cliprange_value: float = 0.2  # the new value is clipped to the old one +- this
    vf_coef: float = 0.1  # weight of the value loss
    ratio_threshold: float = 10.0  # a mini-batch whose mean ratio exceeds this is not learned from
    max_grad_norm: float = None  # clip the gradient's norm to this (trl's default: no clipping)


class AdaptiveKLController:
    """The KL coefficient moves so that the policy's KL to the reference approaches `target` (Ziegler et al.
    2019, "Fine-Tuning Language Models from Human Preferences"): up to 20% off target, proportionally; the
    step is `n_samples / horizon` of that error."""

    def __init__(self, init_kl_coef, target, horizon):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, kl, n_samples):
        error = float(np.clip(kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_samples / self.horizon


@dataclass
class PPO:
    """What a PPO update works on: the policy (with its value head) and its optimiser, prepared on the
    accelerator's processes (data parallel, or sharded with --fsdp), the frozen reference model, and the KL
    controller. Also the algorithm utils/online.py's loop runs (its `update`, `loss`, `kl_coef` ...)."""
    accelerator: Accelerator
    policy: torch.nn.Module
    ref_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    tokenizer: object
    config: PPOConfig
    kl_ctl: AdaptiveKLController
    group_size = 1  # one answer per prompt
    with_logprobs = True  # the old log-probabilities and values are those sampling computed
    hint = "--learning_rate"
    LOGGED = ("kl", "kl_coef", "policy_loss", "value_loss", "entropy")

    @property
    def kl_coef(self):
        return self.kl_ctl.value

    def unwrapped_policy(self):
        """The policy without its data-parallel wrapper (what `generate` and a checkpoint take)."""
        return self.accelerator.unwrap_model(self.policy)

    def update(self, rollout, rewards):
        stats = ppo_update(self, rollout.queries, rollout.responses, rewards, (rollout.logprobs, rollout.values))
        return None if stats is None else {key: stats[key] for key in self.LOGGED}

    def loss(self, stats):
        return stats["policy_loss"] + stats["value_loss"]

    def summary(self, record):
        return ""

    def batch_line(self, args):
        return f"{args.batch_size} samples"


def make_ppo(policy, ref_model, tokenizer, config, accelerator, value_head_from=None):
    """A `PPO` for `policy` and its reference (from utils.policy.load_policy) on `accelerator`'s processes
    (utils.run.make_accelerator). The policy gets PPO's value head, with the weights saved in the checkpoint folder
    `value_head_from` when it has them (resuming), else a fresh one; trl's Adam (same hyperparameters), fused."""
    policy, optimizer = prepare_trainable(accelerator, with_value_head(policy, value_head_from),
                                          learning_rate=config.learning_rate)
    ref_model = prepare_frozen(accelerator, ref_model, trained=policy)
    return PPO(accelerator, policy, ref_model, optimizer, tokenizer, config,
               AdaptiveKLController(config.init_kl_coef, config.target, config.horizon))


def build(args, accelerator, policy, ref_model, tokenizer, resume_state):
    """The PPO the arguments describe (utils.online.train_online calls it), where a checkpoint left it."""
    ppo = make_ppo(policy, ref_model, tokenizer, ppo_config(args), accelerator,
                   value_head_from=args.resume or args.model_name)
    if resume_state:
        ppo.kl_ctl.value = float(resume_state["kl_coef"])
    return ppo


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)  # a mini-batch without answer tokens contributes 0, not NaN


def masked_whiten(x, mask):
    """(x - mean) / std over the masked entries of the whole batch, every process's share of it (the variance with
    Bessel's correction, as trl; trl whitened each process's share on its own)."""
    mean, variance = global_mean_var(x, mask)
    return (x - mean) * torch.rsqrt(variance + 1e-8)


def per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    """The reward of every answer token: minus `kl_coef` times its KL estimate log pi - log pi_ref, and on the
    answer's last token the score as well. Returns (rewards, per-token KL), each [batch, answer length]."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    lengths = mask.sum(dim=1).long()
    last = (lengths - 1).clamp(min=0)
    rewards[torch.arange(len(scores), device=scores.device), last] += scores * (lengths > 0)
    return rewards, kl


def generalized_advantages(rewards, values, mask, gamma, lam):
    """GAE (Schulman et al. 2016), for all answers at once, from the last token back: the advantage of token t
    is delta_t + gamma * lam * advantage_{t+1}, with delta_t = r_t + gamma * V_{t+1} - V_t (0 after the end).
    Returns (advantages, returns = advantages + values), each [batch, answer length]."""
    values, rewards = values * mask, rewards * mask
    length = rewards.shape[1]
    advantage, advantages = torch.zeros_like(rewards[:, 0]), []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * advantage
        advantages.append(advantage)
    advantages = torch.stack(advantages[::-1], dim=1)
    return advantages, advantages + values


STAT_NAMES = ("policy_loss", "value_loss", "approx_kl", "policy_kl", "clip_frac", "value_clip_frac", "entropy",
              "advantages_mean", "ratio_skipped")


def ppo_loss(logprobs, values, entropy, old_logprobs, old_values, advantages, returns, mask, config):
    """The clipped policy loss plus `vf_coef` times the clipped value loss, token means over the mini-batch;
    and the mini-batch's statistics (a tensor in the order of STAT_NAMES, read only after the update)."""
    values_clipped = torch.clamp(values, old_values - config.cliprange_value, old_values + config.cliprange_value)
    value_losses, value_losses_clipped = (values - returns) ** 2, (values_clipped - returns) ** 2
    value_loss = 0.5 * global_token_mean(torch.max(value_losses, value_losses_clipped), mask)

    ratio = torch.exp(logprobs - old_logprobs)
    policy_losses = -advantages * ratio
    policy_losses_clipped = -advantages * torch.clamp(ratio, 1 - config.cliprange, 1 + config.cliprange)
    policy_loss = global_token_mean(torch.max(policy_losses, policy_losses_clipped), mask)

    # as trl: a mini-batch whose policy moved too far (mean ratio above the threshold) is not learned from;
    # a 0/1 factor rather than an `if`, so that nothing waits for the device here
    keep = (~(masked_mean(ratio.detach(), mask) > config.ratio_threshold)).float()
    policy_loss, value_loss = policy_loss * keep, value_loss * keep
    with torch.no_grad():
        stats = torch.stack([
            policy_loss, value_loss, 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask),
            masked_mean(old_logprobs - logprobs, mask),
            masked_mean((policy_losses_clipped > policy_losses).float(), mask),
            masked_mean((value_losses_clipped > value_losses).float(), mask),
            masked_mean(entropy, mask), masked_mean(advantages, mask), 1 - keep])
    return policy_loss + config.vf_coef * value_loss, stats


def padded(columns, width):
    """One float tensor per answer -> [answers, width], 0 after each answer."""
    rows = pad_sequence(list(columns), batch_first=True)
    return torch.nn.functional.pad(rows, (0, width - rows.shape[1]))


def ppo_update(ppo, queries, responses, scores, sampled=None):
    """One PPO update from sampled answers (token-id tensors after their queries) and their scores (floats);
    returns its statistics (a dict of floats), or None when it was skipped. `sampled`: the old log-probabilities and
    values, one tensor per answer each, as sampling by this policy computed them (`generate_responses(...,
    with_logprobs=True)`: a forward pass over the batch saved); without it they are computed here (the terminal's
    answers may be one update old).

    Any batch size; a NaN or infinite score, or fewer than 2 answer tokens in the batch (the advantages are
    whitened over them), skips the update with a warning, on every process so that they stay in step.

    The same update as trl 0.11.4's `PPOTrainer.step` at its default options (tests/test_ppo.py checks the
    statistics and the weights against it), and as there no gradient clipping unless `config.max_grad_norm` asks
    (trl's `max_grad_norm` is None). Deliberate differences: the answers are scored as `generate` sampled them
    (prompts padded on the left, positions from each prompt's first token, each distinct prompt run once for all its
    answers: utils.answer_logprobs; trl pads on the right: the same numbers up to float rounding); with several
    processes the advantages are whitened, and the token means of the losses taken, over the whole batch (trl: over
    each process's share), so that sharded and single-process runs agree; any batch size (trl wants exactly
    `batch_size` samples); a mini-batch without answer tokens adds 0 to the means instead of NaN; a mini-batch
    skipped for its policy ratio is reported once, after the update, not when it happens (that would make the host
    wait for the device in every mini-batch). trl's options that are off by default (score scaling and clipping,
    reward whitening, early stopping, other KL estimators) are not here.
    """
    accelerator, config, pad = ppo.accelerator, ppo.config, ppo.tokenizer.pad_token_id
    scores = torch.tensor([float(s) for s in scores], dtype=torch.float32)
    if len(scores) != len(queries) or len(scores) != len(responses):
        raise ValueError(f"ppo_update: {len(queries)} queries, {len(responses)} responses, {len(scores)} scores")
    bad = int((~torch.isfinite(scores)).sum())
    if any_process(accelerator, bad > 0 or sum(len(r) for r in responses) < 2):
        reason = f"{bad} of {len(scores)} rewards are NaN or infinite" if bad else \
            "too few answer tokens to train on (here or on another process)"
        warnings.warn(f"PPO update skipped: {reason}; the model is not updated with this batch", stacklevel=2)
        return None

    # 1. the rollout as the policy and the reference see it: log-probs, values, per-token rewards, advantages
    with torch.no_grad():
        with accelerator.autocast():
            ref = score_answers(ppo.ref_model, queries, responses, pad)
            if sampled is None:
                old = score_answers(ppo.policy, queries, responses, pad)
                old_logprobs, old_values = old.logprobs, old.values
        mask, width = ref.mask.float(), ref.mask.shape[1]
        if sampled is not None:
            old_logprobs, old_values = (padded(columns, width).to(mask.device) for columns in sampled)
        kl_coef = ppo.kl_ctl.value
        rewards, kl = per_token_rewards(scores.to(mask.device), old_logprobs, ref.logprobs, mask, kl_coef)
        advantages, returns = generalized_advantages(rewards, old_values, mask, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask)

    # 2. `ppo_epochs` passes over the batch in shuffled mini-batches
    stats, n = [], len(queries)
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n)
        for start in range(0, n, config.mini_batch_size):
            rows = order[start:start + config.mini_batch_size]
            new = score_answers(ppo.policy, [queries[i] for i in rows], [responses[i] for i in rows], pad, width,
                                with_entropy=True)
            rows = rows.to(mask.device)
            loss, mini_batch_stats = ppo_loss(new.logprobs, new.values, new.entropy, old_logprobs[rows],
                                              old_values[rows], advantages[rows], returns[rows], mask[rows], config)
            optimizer_step(accelerator, ppo.optimizer, loss, config.max_grad_norm)
            stats.append(mini_batch_stats)

    # 3. the statistics, read once (means over mini-batches and processes), and the KL controller's step
    summary = torch.cat([torch.stack(stats).mean(dim=0), kl.sum(dim=1).mean().view(1)])
    if accelerator.num_processes > 1:
        summary = accelerator.reduce(summary, reduction="mean")
    summary = dict(zip(STAT_NAMES + ("kl",), summary.tolist()))
    if summary["ratio_skipped"] > 0:
        warnings.warn(f"{summary['ratio_skipped']:.0%} of the PPO mini-batches were not learned from: their mean "
                      f"policy ratio exceeded {config.ratio_threshold}", stacklevel=2)
    ppo.kl_ctl.update(summary["kl"], n * accelerator.num_processes)
    return dict(summary, kl_coef=kl_coef)


# ---------------------------------------------------------------- main
def main(argv=None, reward_fn=None):
    """Train; `reward_fn` (texts -> floats) replaces the reward source the arguments choose (and its judge)."""
    train_online(parse_args(argv), "ppo", build, reward_fn)


if __name__ == "__main__":
    run_main(main)
