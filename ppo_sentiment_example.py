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
"""
import argparse
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from utils.answer_logprobs import pack, score_answers, select
from utils.device import accelerator_kwargs, any_process, pick_device, set_seed
from utils.errors import UserError, run_main
from utils.generation import check_room, generate_responses
from utils.logger import TrainLogger, distinct_2, random_samples
from utils.online import add_rollout_arguments
from utils.tokens import decode, encode_prompt, read_prompts
from utils.outputs import EPOCH_LOG, check_outputs, log_outputs
from utils.checkpoints import load_checkpoint_state, save_policy_checkpoint
from utils.policy import add_model_arguments, load_policy, lora_options, unwrap_policy
from utils.options import (ArgumentParser, finite_float_or_off, fraction, learning_rate, nonnegative_float,
                           positive_float, positive_int)
from utils.reward_sources import REWARD_NORMS, RewardNormalizer, make_reward_and_judge, mean_std
from utils.run import INTERRUPTED_EXIT, StopRequests, no_step_trained, stop_if_not_finite
from utils.presets import Preset, parse_with_presets, settings_line
from utils.reward_model import reward_model_folder
from utils.value_head import with_value_head
from utils.tiny import TINY_CLASSIFIER, TINY_GPT2

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
# distinct-2 0.49, at 0.08 at KL 3.5 and 0.54: docs/tuning.md). The reward passes 0.9 after 30-45 epochs and
# levels off, and longer runs only wear down the answers' variety (distinct-2): the run stops there, once it has
# shown its lesson (at most 100 epochs).
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
STOP_WINDOW = 10  # --stop_at_reward looks at the mean reward of this many last epochs


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="offline tiny models and CPU-friendly settings")
    p.add_argument("--model_name", help="policy: uer's GPT-2 or any causal LM (hub name or folder)")
    p.add_argument("--ref_model_name", help="reference model for the KL penalty (default: the base model)")
    p.add_argument("--sentiment_model", help="sentiment classifier for the reward")
    p.add_argument("--reward_model", type=reward_model_folder,
                   help="reward-model folder from train_reward_model.py, used instead of the classifier")
    p.add_argument("--reward_norm", choices=REWARD_NORMS,
                   help="how raw scores become PPO rewards: 'reference' = (score - mean) / std of the reference "
                        "model's own answers, measured once before training and kept in checkpoints; 'batch' = "
                        "whitened within each batch; 'none' = the raw scores (the classifier's probabilities "
                        "already have a fixed 0..1 scale)")
    p.add_argument("--normalize_reward", dest="reward_norm", action="store_const", const="reference",
                   help="the same as --reward_norm reference (the older name)")
    p.add_argument("--judge_model", type=reward_model_folder,
                   help="reward-model folder that judges the answers every save_freq epochs (default: with "
                        "--reward_model the sentiment classifier judges; with the classifier as reward, none)")
    p.add_argument("--ref_samples", type=positive_int, default=256,
                   help="answers of the reference model scored before training: the normalisation statistics "
                        "and the judge's baseline")
    p.add_argument("--total_samples", "--steps", type=positive_int,
                   help="answers to train on in all; epochs = ceil(total_samples / batch_size)")
    p.add_argument("--batch_size", type=positive_int, help="samples per PPO epoch (per process)")
    p.add_argument("--mini_batch_size", type=positive_int, help="forward and PPO mini-batch size")
    p.add_argument("--ppo_epochs", type=positive_int, help="optimisation passes over each batch")
    p.add_argument("--learning_rate", "--lr", type=learning_rate)
    p.add_argument("--init_kl_coef", type=nonnegative_float, help="initial KL coefficient (adaptive)")
    p.add_argument("--target", type=positive_float, help="KL target of the adaptive controller")
    p.add_argument("--horizon", type=positive_int, help="horizon of the adaptive KL controller")
    p.add_argument("--stop_at_reward", type=finite_float_or_off,
                   help=f"stop and save once the mean reward of the last {STOP_WINDOW} epochs reaches this; off: "
                        "train all epochs")
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
    return parse_with_presets(p, argv, PRESETS, check_options)


def check_options(args):
    """The checks that involve two options (each option alone is checked by its `type=`)."""
    if args.ref_samples < 2:
        raise UserError("--ref_samples must be at least 2 (a standard deviation needs two scores)")
    if args.mini_batch_size > args.batch_size:
        raise UserError(f"--mini_batch_size {args.mini_batch_size} is larger than --batch_size {args.batch_size}")
    check_outputs(log_outputs(args.log_dir, args.log_name, EPOCH_LOG), [("--prompts_file", args.prompts_file)])


def ppo_config(args):
    return PPOConfig(learning_rate=args.learning_rate, mini_batch_size=args.mini_batch_size,
                     ppo_epochs=args.ppo_epochs, init_kl_coef=args.init_kl_coef, target=args.target,
                     horizon=args.horizon, gamma=args.gamma, lam=args.lam, cliprange=args.cliprange,
                     cliprange_value=args.cliprange_value, vf_coef=args.vf_coef)


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
    """What a PPO update works on: the policy (with its value head) and its optimiser, prepared by `accelerator`
    (several processes, mixed precision), the frozen reference model, and the KL controller."""
    accelerator: Accelerator
    policy: torch.nn.Module
    ref_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    tokenizer: object
    config: PPOConfig
    kl_ctl: AdaptiveKLController


def make_ppo(policy, ref_model, tokenizer, config, accelerator_kwargs, value_head_from=None):
    """A `PPO` for `policy` and its reference (from utils.policy.load_policy), on the accelerator
    `Accelerator(**accelerator_kwargs)` makes. The policy gets PPO's value head, with the weights saved in the
    checkpoint folder `value_head_from` when it has them (resuming), else a fresh one."""
    accelerator = Accelerator(**accelerator_kwargs)
    policy = with_value_head(policy, value_head_from)
    # trl's Adam (same hyperparameters) as one fused kernel over all parameters
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=config.learning_rate,
                                 fused=True)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    ref_model.to(accelerator.device)
    return PPO(accelerator, policy, ref_model, optimizer, tokenizer, config,
               AdaptiveKLController(config.init_kl_coef, config.target, config.horizon))


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)  # a mini-batch without answer tokens contributes 0, not NaN


def masked_whiten(x, mask):
    """(x - mean) / std over the masked entries (the variance with Bessel's correction, as trl)."""
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1)
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
    value_loss = 0.5 * masked_mean(torch.max(value_losses, value_losses_clipped), mask)

    ratio = torch.exp(logprobs - old_logprobs)
    policy_losses = -advantages * ratio
    policy_losses_clipped = -advantages * torch.clamp(ratio, 1 - config.cliprange, 1 + config.cliprange)
    policy_loss = masked_mean(torch.max(policy_losses, policy_losses_clipped), mask)

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


def ppo_update(ppo, queries, responses, scores):
    """One PPO update from sampled answers (token-id tensors after their queries) and their scores (floats);
    returns its statistics (a dict of floats), or None when it was skipped.

    Any batch size; a NaN or infinite score, or fewer than 2 answer tokens in the batch (the advantages are
    whitened over them), skips the update with a warning, on every process so that they stay in step.

    The same update as trl 0.11.4's `PPOTrainer.step` at its default options (tests/test_ppo.py checks the
    statistics and the weights against it), and as there no gradient clipping (trl's `max_grad_norm` is None).
    Deliberate differences: the batch is packed as `generate` sampled it (prompts padded on the left, positions
    from each prompt's first token; trl pads on the right: the same numbers up to float rounding); any batch size
    (trl wants exactly `batch_size` samples); a mini-batch without answer tokens adds 0 to the means instead of
    NaN; a mini-batch skipped for its policy ratio is reported once, after the update, not when it happens (that
    would make the host wait for the device in every mini-batch). trl's options that are off by default (score
    scaling and clipping, reward whitening, early stopping, other KL estimators) are not here.
    """
    accelerator, config = ppo.accelerator, ppo.config
    scores = torch.tensor([float(s) for s in scores], dtype=torch.float32)
    if len(scores) != len(queries) or len(scores) != len(responses):
        raise ValueError(f"ppo_update: {len(queries)} queries, {len(responses)} responses, {len(scores)} scores")
    bad = int((~torch.isfinite(scores)).sum())
    if any_process(accelerator, bad > 0 or sum(len(r) for r in responses) < 2):
        reason = f"{bad} of {len(scores)} rewards are NaN or infinite" if bad else \
            "too few answer tokens to train on (here or on another process)"
        warnings.warn(f"PPO update skipped: {reason}; the model is not updated with this batch", stacklevel=2)
        return None

    # 1. the rollout as the policy and the reference see it now: log-probs, values, per-token rewards, advantages
    batch = pack(queries, responses, ppo.tokenizer.pad_token_id).to(accelerator.device)
    mask = batch.answer_mask.float()
    with torch.no_grad():
        with accelerator.autocast():
            old_logprobs, old_values, _ = score_answers(ppo.policy, batch)
            ref_logprobs, _, _ = score_answers(ppo.ref_model, batch)
        kl_coef = ppo.kl_ctl.value
        rewards, kl = per_token_rewards(scores.to(accelerator.device), old_logprobs, ref_logprobs, mask, kl_coef)
        advantages, returns = generalized_advantages(rewards, old_values, mask, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask)

    # 2. `ppo_epochs` passes over the batch in shuffled mini-batches
    stats, n = [], len(queries)
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n, device=accelerator.device)
        for start in range(0, n, config.mini_batch_size):
            rows = order[start:start + config.mini_batch_size]
            logprobs, values, entropy = score_answers(ppo.policy, select(batch, rows), with_entropy=True)
            loss, mini_batch_stats = ppo_loss(logprobs, values, entropy, old_logprobs[rows], old_values[rows],
                                              advantages[rows], returns[rows], mask[rows], config)
            ppo.optimizer.zero_grad()
            accelerator.backward(loss)
            ppo.optimizer.step()
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


# ---------------------------------------------------------------- the loop
def sample_texts(model, tokenizer, prompts, args):
    """`args.batch_size` random prompts and the model's answers: (prompts, answers, query ids, response ids)."""
    chosen = random.choices(prompts, k=args.batch_size)
    queries = [encode_prompt(tokenizer, prompt) for prompt in chosen]
    responses = generate_responses(model, tokenizer, queries, args.max_new_tokens, args.stop_at_sep)
    return chosen, [decode(tokenizer, response) for response in responses], queries, responses


def measure_reference(ppo, tokenizer, prompts, reward_fn, judge, args):
    """Raw reward and judge scores (None without a judge) of `args.ref_samples` answers of the reference model,
    written from the same prompts with the same sampling as the policy's."""
    texts = []
    while len(texts) < args.ref_samples:
        chosen, answers, _, _ = sample_texts(ppo.ref_model, tokenizer, prompts, args)
        texts += [prompt + answer for prompt, answer in zip(chosen, answers)]
    texts = texts[:args.ref_samples]
    return reward_fn(texts), judge(texts) if judge else None


@dataclass
class Epoch:
    prompts: list
    answers: list
    scores: list  # raw scores of the reward source
    rewards: list  # what PPO was given: the scores after normalisation
    stats: dict  # trl's statistics, None when the update was skipped
    timing: dict


def run_epoch(ppo, tokenizer, reward_fn, normalize, prompts, args):
    """One PPO epoch: sample, score, normalise, update. Returns an `Epoch`."""
    t0 = time.time()
    chosen, answers, queries, responses = sample_texts(unwrap_policy(ppo), tokenizer, prompts, args)
    t1 = time.time()
    scores = reward_fn([prompt + answer for prompt, answer in zip(chosen, answers)])
    rewards = normalize(scores)
    t2 = time.time()
    stats = ppo_update(ppo, queries, responses, rewards)
    t3 = time.time()
    timing = dict(time_generate=t1 - t0, time_reward=t2 - t1, time_optimize=t3 - t2, time_epoch=t3 - t0)
    return Epoch(chosen, answers, scores, rewards, stats, timing)


def epoch_record(epoch_number, ppo, epoch):
    """What the JSONL log keeps for one epoch: the raw score and the reward PPO was given (means and standard
    deviations over all processes' samples), KL, variety, losses, timings."""
    accelerator, stats = ppo.accelerator, epoch.stats
    raw_score_mean, raw_score_std = mean_std(epoch.scores, accelerator)
    reward_mean, reward_std = mean_std(epoch.rewards, accelerator)
    record = dict(epoch=epoch_number, raw_score_mean=raw_score_mean, raw_score_std=raw_score_std,
                  reward_mean=reward_mean, reward_std=reward_std, kl_coef=float(ppo.kl_ctl.value),
                  response_len=float(np.mean([len(a) for a in epoch.answers])), distinct_2=distinct_2(epoch.answers),
                  skipped=stats is None)
    if stats is not None:
        record.update({key: stats[key] for key in ("kl", "kl_coef", "policy_loss", "value_loss", "entropy")})
    record.update({key: round(value, 4) for key, value in epoch.timing.items()})
    return record


def judge_record(judge, texts, judge_ref, accelerator):
    """The judge's mean score of this epoch's answers, its standard deviation, and the reference's mean."""
    mean, std = mean_std(judge(texts), accelerator)
    return {f"judge_{judge.name}": mean, f"judge_{judge.name}_std": std, f"judge_ref_{judge.name}": judge_ref}


def print_epoch(record, chosen, answers, num_samples, show_raw):
    """The original's epoch line and samples, with the raw score when the reward is normalised (`show_raw`) and
    the judge's score when it judged this epoch."""
    raw = f"  raw-score: {record['raw_score_mean']:.4f} ± {record['raw_score_std']:.4f}" if show_raw else ""
    judged = [key for key in record if key.startswith("judge_ref_")]
    judge = "".join(f"  judge {key[10:]}: {record['judge_' + key[10:]]:.4f} (reference {record[key]:.4f})"
                    for key in judged)
    tqdm.write(f"epoch {record['epoch']} mean-reward: {record['reward_mean']:.4f}{raw}  "
               f"kl: {record.get('kl', float('nan')):.3f}  distinct-2: {record['distinct_2']:.2f}{judge}  "
               f"({record['time_epoch']:.1f}s)" + random_samples(chosen, answers, num_samples))


def reference_baseline(ppo, tokenizer, prompts, reward_fn, judge, resume_state, args):
    """(normaliser, {judge name: the reference's mean judge score}): taken from the checkpoint when resuming, so a
    resumed run gives the same rewards for the same scores; else measured on the reference model's answers."""
    saved = resume_state or {}
    normalize = RewardNormalizer(args.reward_norm)
    reuse_norm = (saved.get("reward_norm") or {}).get("mode") == args.reward_norm
    if reuse_norm:
        normalize = RewardNormalizer.from_state(saved["reward_norm"])
    judge_ref = dict(saved.get("judge_ref") or {})
    measure_norm = args.reward_norm == "reference" and not reuse_norm
    measure_judge = judge is not None and judge.name not in judge_ref
    if not (measure_norm or measure_judge):
        return normalize, judge_ref
    scores, judged = measure_reference(ppo, tokenizer, prompts, reward_fn, judge if measure_judge else None, args)
    accelerator = ppo.accelerator
    mean, std = mean_std(scores, accelerator)
    line = f"reference model, {args.ref_samples} answers per process: raw score {mean:.4f} ± {std:.4f}"
    if measure_norm:
        normalize.measure(scores, accelerator)
        line += " (the rewards' zero and unit)"
    if measure_judge:
        judge_ref[judge.name] = mean_std(judged, accelerator)[0]
        line += f", judge {judge.name} {judge_ref[judge.name]:.4f}"
    accelerator.print(line)
    return normalize, judge_ref


def checkpoint_name(save_dir, epoch, score):
    return os.path.join(save_dir, f"model_{epoch}_{score:.2f}")


def main(argv=None, reward_fn=None):
    """Train; `reward_fn` (texts -> floats) replaces the reward source the arguments choose (and its judge)."""
    args = parse_args(argv)
    set_seed(args.seed)
    device = pick_device(args.device)
    args.device = device.type
    prompts = read_prompts(args.prompts_file)
    start_epoch, resume_state = 0, None
    if args.resume:
        resume_state = load_checkpoint_state(args.resume, "ppo")  # before anything is loaded or written
        start_epoch = int(resume_state.get("epoch", 0))
    judge = None
    if reward_fn is None:  # loaded and checked before anything is written
        reward_fn, judge = make_reward_and_judge(args, device)
    policy, ref_model, tokenizer = load_policy(args.resume or args.model_name, device, args.ref_model_name,
                                                  stop_at_sep=args.stop_at_sep, chat_template=args.chat_template,
                                                  lora=lora_options(args))
    check_room(policy, max(len(encode_prompt(tokenizer, p)) for p in prompts), args.max_new_tokens)
    base_model = resume_state["base_model"] if resume_state else (args.ref_model_name or args.model_name)
    if os.path.isdir(base_model):
        base_model = os.path.abspath(base_model)  # a checkpoint must find its reference from any directory

    ppo = make_ppo(policy, ref_model, tokenizer, ppo_config(args), accelerator_kwargs(device, args.mixed_precision),
                   value_head_from=args.resume or args.model_name)
    if resume_state:
        ppo.kl_ctl.value = float(resume_state["kl_coef"])
    accelerator = ppo.accelerator
    set_seed(args.seed + 1000 * start_epoch + accelerator.process_index)  # processes sample different prompts
    main_process = accelerator.is_main_process
    accelerator.print(f"PPO on {accelerator.device} x {accelerator.num_processes} process(es), "
                      f"{args.batch_size} samples per process and epoch")
    accelerator.print(settings_line(args))
    normalize, judge_ref = reference_baseline(ppo, tokenizer, prompts, reward_fn, judge, resume_state, args)
    logger = (TrainLogger(args.log_dir, args.log_name, x_key="epoch", resume=bool(args.resume), redo_from=start_epoch,
                          report_to=args.report_to) if main_process else None)

    total_epochs = int(np.ceil(args.total_samples / args.batch_size))
    stop = StopRequests("saving after this epoch (Ctrl-C again to stop at once) ...", write=tqdm.write).install()
    completed, last_saved, reward_mean, raw_score_mean = start_epoch, start_epoch, float("nan"), float("nan")
    trained, recent_rewards, end = 0, [], "end"

    def save(reason):
        no_step_trained(trained, completed - start_epoch - trained, "epoch")  # nothing learnt: nothing to save
        path = checkpoint_name(args.save_dir, completed, raw_score_mean)
        state = dict(epoch=completed, kl_coef=float(ppo.kl_ctl.value), base_model=base_model,
                     reward_mean=reward_mean, raw_score_mean=raw_score_mean, algorithm="ppo", reason=reason,
                     reward_norm=normalize.state(), judge_ref=judge_ref)
        save_policy_checkpoint(ppo, tokenizer, path, state)
        if main_process:
            tqdm.write(f"saved {path}")

    try:
        for epoch in tqdm(range(start_epoch, total_epochs), initial=start_epoch, total=total_epochs,
                          disable=not main_process, desc="PPO epochs"):
            result = run_epoch(ppo, tokenizer, reward_fn, normalize, prompts, args)
            record = epoch_record(epoch, ppo, result)
            reward_mean, raw_score_mean, completed = record["reward_mean"], record["raw_score_mean"], epoch + 1
            if not record["skipped"]:
                trained += 1
                stop_if_not_finite(record["policy_loss"] + record["value_loss"], f"epoch {completed}",
                                   "--learning_rate", accelerator)
            if judge and (completed % args.save_freq == 0 or completed == total_epochs):
                texts = [prompt + answer for prompt, answer in zip(result.prompts, result.answers)]
                record.update(judge_record(judge, texts, judge_ref[judge.name], accelerator))
            if main_process:
                logger.log(record)
                print_epoch(record, result.prompts, result.answers, args.print_samples, normalize.mode != "none")
            if any_process(accelerator, bool(stop.requested)):  # all processes stop after the same epoch
                if completed > last_saved:
                    save("interrupted")
                if main_process:
                    logger.plot()
                sys.exit(INTERRUPTED_EXIT)
            recent_rewards = (recent_rewards + [reward_mean])[-STOP_WINDOW:]
            if len(recent_rewards) == STOP_WINDOW and np.mean(recent_rewards) >= args.stop_at_reward:
                accelerator.print(f"the mean reward of the last {STOP_WINDOW} epochs reached {args.stop_at_reward} at "
                                  f"epoch {completed}: stopping (--stop_at_reward off trains all {total_epochs})")
                end = "reward_reached"
                break
            if completed % args.save_freq == 0:
                save("periodic")
                last_saved = completed
                if main_process:
                    logger.plot()  # drawing takes longer than a tiny epoch: only when saving
        if last_saved != completed:
            save(end)
        if main_process:
            logger.plot()
    finally:
        stop.uninstall()
        if logger:
            logger.close()
    if main_process:
        print(f"done: {completed} epochs, logs in {logger.jsonl_path} and {logger.png_path}")


if __name__ == "__main__":
    run_main(main)
