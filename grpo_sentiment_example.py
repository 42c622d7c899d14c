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

The same reward sources as the PPO example: the sentiment-analysis pipeline (probability of the positive
label) or `--reward_model DIR` (raw scores: the group whitening normalises them).

    python grpo_sentiment_example.py --tiny          # offline tiny models
    python grpo_sentiment_example.py                 # the original's hub models
    accelerate launch --multi_gpu --num_processes 2 grpo_sentiment_example.py ...  # 2 processes (GPUs or CPUs)
"""
import argparse
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import torch
from accelerate import Accelerator
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from utils.answer_logprobs import answer_logprobs
from utils.device import accelerator_kwargs, any_process, pick_device, set_seed
from utils.errors import UserError, run_main
from utils.generation import check_room, generate_responses
from utils.logger import TrainLogger, distinct_2, random_samples
from utils.online import add_rollout_arguments
from utils.tokens import decode, encode_prompt, read_prompts
from utils.outputs import EPOCH_LOG, check_outputs, log_outputs
from utils.options import ArgumentParser, learning_rate, nonnegative_float, positive_float, positive_int, ratio
from utils.checkpoints import load_checkpoint_state, save_policy_checkpoint
from utils.policy import add_model_arguments, load_policy, lora_options
from utils.reward_sources import make_reward_source
from utils.run import INTERRUPTED_EXIT, StopRequests, no_step_trained, stop_if_not_finite
from utils.presets import Preset, parse_with_presets, settings_line
from utils.reward_model import reward_model_folder
from utils.tiny import TINY_CLASSIFIER, TINY_GPT2

# The original PPO example's models and scale (a GPU in mind), with GRPO's usual settings ...
ORIGINAL = dict(model_name="uer/gpt2-chinese-cluecorpussmall",
                sentiment_model="uer/roberta-base-finetuned-jd-binary-chinese",
                total_samples=20000, batch_size=128, mini_batch_size=16, grpo_epochs=1, learning_rate=1.41e-5, beta=0.04,
                save_freq=5, scale_rewards="group", loss_type="grpo", advantage="group_mean")
# ... and those that make the tiny models learn on a 2-core CPU in a few minutes: GRPO as the field runs it now.
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
EPS = 1e-4  # added to the group's std: a group whose answers all score the same gets zero advantage, not NaN


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="offline tiny models and CPU-friendly settings")
    p.add_argument("--model_name", help="policy: uer's GPT-2 or any causal LM (hub name or folder)")
    p.add_argument("--ref_model_name", help="reference model for the KL penalty (default: the base model)")
    p.add_argument("--sentiment_model", help="sentiment classifier for the reward")
    p.add_argument("--reward_model", type=reward_model_folder,
                   help="reward-model folder from train_reward_model.py, used instead of the classifier")
    p.add_argument("--total_samples", "--steps", type=positive_int,
                   help="answers to train on in all; epochs = ceil(total_samples / batch_size)")
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
    p.add_argument("--max_grad_norm", type=positive_float, default=1.0)
    add_rollout_arguments(p, save_dir=os.path.join("checkpoints", "grpo_sentiment_gpt"), log_name="GRPO-Sentiment-Zh")
    add_model_arguments(p)
    p.set_defaults(**ORIGINAL)
    return parse_with_presets(p, argv, PRESETS, check=check_sizes)


def check_sizes(args):
    """Before anything is loaded or written: the batch must split into whole groups of at least 2 answers, and
    the logs may go where they are going (utils/outputs.py)."""
    if args.group_size < 2:
        raise UserError(f"--group_size {args.group_size}: a group needs at least 2 answers (the group is the baseline)")
    if args.batch_size % args.group_size:
        raise UserError(f"--batch_size {args.batch_size} is not a multiple of --group_size {args.group_size} "
                        "(each epoch writes group_size answers to each of batch_size / group_size prompts)")
    if args.mini_batch_size > args.batch_size:
        raise UserError(f"--mini_batch_size {args.mini_batch_size} is larger than --batch_size {args.batch_size}")
    if args.epsilon_high is None:
        args.epsilon_high = args.cliprange
    check_outputs(log_outputs(args.log_dir, args.log_name, EPOCH_LOG), [("--prompts_file", args.prompts_file)])


# ---------------------------------------------------------------- the algorithm
SCALE_REWARDS, LOSS_TYPES, BASELINES = ("group", "batch", "none"), ("grpo", "dr_grpo"), ("group_mean", "rloo")


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
    elif scale_rewards == "batch":
        advantages = advantages / (groups.std() + EPS)
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


def grpo_update(accelerator, policy, ref_model, optimizer, tokenizer, queries, responses, sampled_logprobs,
                advantages, args):
    """`grpo_epochs` passes of mini-batch steps over one batch of sampled answers; returns mean stats and the
    per-answer KL to the reference (sum over the answer's tokens, as trl's PPO logs it) before the update.

    The ratio's old log-probabilities are `sampled_logprobs`, those the answers were drawn with (the policy's own,
    before this update: a forward pass over the batch saved)."""
    pad = tokenizer.pad_token_id
    with torch.no_grad(), accelerator.autocast():
        ref_logprobs, mask = answer_logprobs(ref_model, queries, responses, pad)
    old_logprobs = pad_sequence(sampled_logprobs, batch_first=True).to(ref_logprobs.device)
    sampled_kl = ((old_logprobs - ref_logprobs) * mask).sum(dim=1)
    advantages = advantages.to(old_logprobs.device)
    stats = []
    for _ in range(args.grpo_epochs):
        order = torch.randperm(len(queries))
        for start in range(0, len(queries), args.mini_batch_size):
            idx = order[start:start + args.mini_batch_size]
            logprobs, _ = answer_logprobs(policy, [queries[i] for i in idx], [responses[i] for i in idx], pad)
            loss, parts = grpo_loss(logprobs, old_logprobs[idx], ref_logprobs[idx], advantages[idx], mask[idx],
                                    args.cliprange, args.beta, args.epsilon_high, args.loss_type,
                                    args.max_new_tokens)
            optimizer.zero_grad()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(optimizer_params(optimizer), args.max_grad_norm)
            optimizer.step()
            stats.append(parts)
    return {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}, sampled_kl


def make_optimizer(policy, learning_rate):
    """Adam over the trainable weights, as one fused kernel (not one per weight)."""
    return torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=learning_rate, fused=True)


def optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def run_epoch(accelerator, policy, ref_model, optimizer, tokenizer, reward_fn, prompts, args):
    """One GRPO epoch; returns (prompts, answers, rewards, stats or None when skipped, per-answer KL, timings)."""
    chosen = [prompt for prompt in random.choices(prompts, k=args.batch_size // args.group_size)
              for _ in range(args.group_size)]  # each group: one prompt, group_size answers
    queries = [encode_prompt(tokenizer, prompt) for prompt in chosen]
    t0 = time.time()
    with accelerator.autocast():  # the precision of the update, which takes the sampling log-probabilities
        responses, sampled_logprobs = generate_responses(accelerator.unwrap_model(policy), tokenizer, queries,
                                                         args.max_new_tokens, args.stop_at_sep, with_logprobs=True)
    answers = [decode(tokenizer, response) for response in responses]
    t1 = time.time()
    rewards = [float(r) for r in reward_fn([prompt + answer for prompt, answer in zip(chosen, answers)])]
    t2 = time.time()
    bad = sum(not math.isfinite(r) for r in rewards)
    stats, sampled_kl, group_std = None, None, None
    if any_process(accelerator, bad):
        warnings.warn(f"GRPO update skipped: {bad} of {len(rewards)} rewards on this process are NaN or infinite "
                      "(or some on another process); the model is not updated with this batch", stacklevel=2)
    else:
        advantages, group_std = group_advantages(rewards, args.group_size, args.advantage, args.scale_rewards)
        stats, sampled_kl = grpo_update(accelerator, policy, ref_model, optimizer, tokenizer, queries, responses,
                                        sampled_logprobs, advantages, args)
    t3 = time.time()
    timing = dict(time_generate=t1 - t0, time_reward=t2 - t1, time_optimize=t3 - t2, time_epoch=t3 - t0)
    return chosen, answers, rewards, stats, sampled_kl, group_std, timing


# ---------------------------------------------------------------- logging
def mean_over_processes(accelerator, values):
    """Mean and std of the finite `values` pooled over all processes (each process has as many)."""
    values = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        values = accelerator.gather(values)
    values = values[torch.isfinite(values)]
    return (values.mean().item(), values.std(unbiased=False).item()) if len(values) else (float("nan"), float("nan"))


def epoch_record(epoch, accelerator, answers, rewards, stats, sampled_kl, group_std, timing, beta):
    """What the JSONL log keeps for one epoch (the PPO example's fields, plus the groups' reward std)."""
    reward_mean, reward_std = mean_over_processes(accelerator, rewards)
    record = dict(epoch=epoch, reward_mean=reward_mean, reward_std=reward_std, kl_coef=beta,
                  response_len=float(np.mean([len(a) for a in answers])), distinct_2=distinct_2(answers),
                  skipped=stats is None)
    if stats is not None:
        record.update(kl=mean_over_processes(accelerator, sampled_kl.tolist())[0],
                      group_reward_std=mean_over_processes(accelerator, group_std.tolist())[0], **stats)
    record.update({key: round(value, 4) for key, value in timing.items()})
    return record


def print_epoch(record, chosen, answers, num_samples):
    tqdm.write(f"epoch {record['epoch']} mean-reward: {record['reward_mean']:.4f}  "
               f"kl: {record.get('kl', float('nan')):.3f}  distinct-2: {record['distinct_2']:.2f}  "
               f"group-std: {record.get('group_reward_std', float('nan')):.3f}  ({record['time_epoch']:.1f}s)"
               + random_samples(chosen, answers, num_samples))


# ---------------------------------------------------------------- main
def main(argv=None, reward_fn=None):
    """Train; `reward_fn` (texts -> floats) replaces the reward source the arguments choose."""
    args = parse_args(argv)
    set_seed(args.seed)
    device = pick_device(args.device)
    prompts = read_prompts(args.prompts_file)
    start_epoch, resume_state = 0, None
    if args.resume:
        resume_state = load_checkpoint_state(args.resume, "grpo")  # before anything is loaded or written
        start_epoch = int(resume_state.get("epoch", 0))
    reward_fn = reward_fn or make_reward_source(args, device)
    policy, ref_model, tokenizer = load_policy(args.resume or args.model_name, device, args.ref_model_name,
                                                  stop_at_sep=args.stop_at_sep, chat_template=args.chat_template,
                                                  lora=lora_options(args))
    check_room(policy, max(len(encode_prompt(tokenizer, p)) for p in prompts), args.max_new_tokens)
    base_model = resume_state["base_model"] if resume_state else (args.ref_model_name or args.model_name)
    if os.path.isdir(base_model):
        base_model = os.path.abspath(base_model)  # a checkpoint must find its reference from any directory

    accelerator = Accelerator(**accelerator_kwargs(device, args.mixed_precision))
    optimizer = make_optimizer(policy, args.learning_rate)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    ref_model.to(accelerator.device)
    set_seed(args.seed + 1000 * start_epoch + accelerator.process_index)  # processes sample different prompts
    main_process = accelerator.is_main_process
    accelerator.print(f"GRPO on {accelerator.device} x {accelerator.num_processes} process(es), "
                      f"{args.batch_size // args.group_size} prompts x {args.group_size} answers per process and epoch")
    accelerator.print(settings_line(args))
    logger = (TrainLogger(args.log_dir, args.log_name, x_key="epoch", resume=bool(args.resume), redo_from=start_epoch,
                          report_to=args.report_to) if main_process else None)

    total_epochs = int(np.ceil(args.total_samples / args.batch_size))
    stop = StopRequests("saving after this epoch (Ctrl-C again to stop at once) ...", write=tqdm.write).install()
    completed, last_saved, reward_mean, trained = start_epoch, start_epoch, float("nan"), 0

    def save(reason):
        no_step_trained(trained, completed - start_epoch - trained, "epoch")  # nothing learnt: nothing to save
        path = os.path.join(args.save_dir, f"model_{completed}_{reward_mean:.2f}")
        state = dict(epoch=completed, kl_coef=args.beta, base_model=base_model, reward_mean=reward_mean,
                     algorithm="grpo", reason=reason)
        accelerator.wait_for_everyone()
        if main_process:
            save_policy_checkpoint(accelerator.unwrap_model(policy), tokenizer, path, state)
            tqdm.write(f"saved {path}")

    try:
        for epoch in tqdm(range(start_epoch, total_epochs), initial=start_epoch, total=total_epochs,
                          disable=not main_process, desc="GRPO epochs"):
            chosen, answers, rewards, stats, sampled_kl, group_std, timing = run_epoch(
                accelerator, policy, ref_model, optimizer, tokenizer, reward_fn, prompts, args)
            record = epoch_record(epoch, accelerator, answers, rewards, stats, sampled_kl, group_std, timing,
                                  args.beta)
            reward_mean, completed = record["reward_mean"], epoch + 1
            if stats is not None:
                trained += 1
                stop_if_not_finite(stats["policy_loss"] + args.beta * stats["kl_penalty"], f"epoch {completed}",
                                   "--learning_rate or --beta", accelerator)
            if main_process:
                logger.log(record)
                print_epoch(record, chosen, answers, args.print_samples)
            if any_process(accelerator, bool(stop.requested)):  # all processes stop after the same epoch
                if completed > last_saved:
                    save("interrupted")
                if main_process:
                    logger.plot()
                sys.exit(INTERRUPTED_EXIT)
            if completed % args.save_freq == 0:
                save("periodic")
                last_saved = completed
                if main_process:
                    logger.plot()  # drawing takes longer than a tiny epoch: only when saving
        if last_saved != completed:
            save("end")
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
