"""The loop PPO and GRPO share: sample answers to prompts, score them, give them to the algorithm's update, log,
judge, save. A script brings its options, its presets and its algorithm; everything else is here, the same for both.

    add_policy_and_reward_arguments / add_rollout_arguments   the options every online-sampling script shares
    train_online            the loop, around an algorithm (below)
    Rollout / sample_rollout   one epoch's prompts and answers

An algorithm (ppo_sentiment_example.PPO, grpo_sentiment_example.GRPO) is built by the script's
`build(args, accelerator, policy, ref_model, tokenizer, resume_state)` and has:

    accelerator, policy, ref_model    the processes, and the models prepared on them (utils.run.prepare_trainable ...)
    group_size, with_logprobs         answers per prompt; whether its update takes the sampling log-probs
    update(rollout, rewards)          one update: the statistics to log (floats, every process's batch), or None
                                      when it skipped the batch
    loss(stats), hint                 the loss a NaN shows in, and the options to change then
    kl_coef                           the KL coefficient (PPO's adaptive one, GRPO's beta), kept in checkpoints
    summary(record), batch_line(args) what the epoch line shows beyond the common fields; the header's batch
"""
import contextlib
import os
import random
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from utils.checkpoints import checkpoint_folder, load_checkpoint_state
from utils.device import add_mixed_precision_argument, set_seed
from utils.errors import UserError
from utils.generation import check_room, generate_responses
from utils.logger import distinct_2, random_samples
from utils.outputs import EPOCH_LOG, check_outputs, log_outputs
from utils.options import (add_device_argument, add_report_to_argument, add_sampling_arguments, file_name,
                           finite_float_or_off, input_file, output_folder, positive_float, positive_int, seed)
from utils.policy import load_policy, lora_options
from utils.reward_model import reward_model_folder
from utils.reward_sources import RewardNormalizer, make_reward_and_judge, mean_std
from utils.run import Run, accelerator_for, add_fsdp_argument, checkpoint_name, for_generation, save_checkpoint
from utils.tokens import decode, encode_prompt, read_prompts

STOP_WINDOW = 10  # --stop_at_reward looks at the mean reward of this many last epochs


def add_policy_and_reward_arguments(parser):
    """The models every online-sampling script (PPO, GRPO) trains and scores with, and how many answers in all."""
    parser.add_argument("--tiny", action="store_true", help="offline tiny models and CPU-friendly settings")
    parser.add_argument("--model_name", help="policy: uer's GPT-2 or any causal LM (hub name or folder)")
    parser.add_argument("--ref_model_name", help="reference model for the KL penalty (default: the base model)")
    parser.add_argument("--sentiment_model", help="sentiment classifier for the reward")
    parser.add_argument("--reward_model", type=reward_model_folder,
                        help="reward-model folder from train_reward_model.py, used instead of the classifier")
    parser.add_argument("--total_samples", "--steps", type=positive_int,
                        help="answers to train on in all; epochs = ceil(total_samples / batch_size)")


def check_rollout_options(args):
    """The checks of two options every online-sampling script shares (each option alone is checked by its
    `type=`), and the logs may go where they are going (utils/outputs.py)."""
    if args.ref_samples < 2:
        raise UserError("--ref_samples must be at least 2 (a standard deviation needs two scores)")
    if args.mini_batch_size > args.batch_size:
        raise UserError(f"--mini_batch_size {args.mini_batch_size} is larger than --batch_size {args.batch_size}")
    check_outputs(log_outputs(args.log_dir, args.log_name, EPOCH_LOG), [("--prompts_file", args.prompts_file)])


def add_rollout_arguments(parser, save_dir, log_name):
    """The options every online-sampling script (PPO, GRPO) shares: answers, prompts, the judge, early stopping,
    gradient clipping, checkpoints, logs, device."""
    add_sampling_arguments(parser, print_samples=5, printed="each epoch")
    parser.add_argument("--stop_at_sep", action="store_true",
                        help="let the end token ([SEP] for uer's GPT-2; eos or the end of the assistant's turn for "
                             "others) end an answer early")
    parser.add_argument("--prompts_file", type=input_file,
                        help="one prompt per line (default: the original's four prompts)")
    parser.add_argument("--judge_model", type=reward_model_folder,
                        help="reward-model folder that judges the answers every save_freq epochs (default: with "
                             "--reward_model the sentiment classifier judges; with the classifier as reward, none)")
    parser.add_argument("--ref_samples", type=positive_int, default=256,
                        help="answers of the reference model scored before training: the judge's baseline (and "
                             "PPO's reward normalisation)")
    parser.add_argument("--stop_at_reward", type=finite_float_or_off, default=float("inf"),
                        help=f"stop and save once the mean reward of the last {STOP_WINDOW} epochs reaches this; "
                             "off: train all epochs")
    parser.add_argument("--max_grad_norm", type=positive_float, help="clip the gradient's norm to this (default: no "
                                                                     "clipping)")
    parser.add_argument("--save_freq", type=positive_int, help="save a checkpoint every N epochs")
    parser.add_argument("--save_dir", type=output_folder, default=save_dir)
    parser.add_argument("--resume", type=checkpoint_folder,
                        help="continue from this checkpoint folder (its epoch count and KL settings too)")
    parser.add_argument("--log_dir", type=output_folder, default="logs")
    parser.add_argument("--log_name", type=file_name, default=log_name,
                        help="logs: <log_dir>/<log_name>.jsonl and .png")
    add_report_to_argument(parser)
    parser.add_argument("--reward_batch_size", type=positive_int, default=64)
    parser.add_argument("--seed", type=seed, default=0)
    add_device_argument(parser)
    add_mixed_precision_argument(parser)
    add_fsdp_argument(parser)


# ---------------------------------------------------------------- sampling
@dataclass
class Rollout:
    """One batch of sampled answers: per answer its prompt (a group's prompt repeated), its text, the prompt's and
    the answer's token ids, and with `with_logprobs` the policy's log-probabilities of its tokens as sampling
    computed them (and PPO's values)."""
    prompts: list
    answers: list
    queries: list
    responses: list
    logprobs: list = None
    values: list = None

    @property
    def texts(self):
        return [prompt + answer for prompt, answer in zip(self.prompts, self.answers)]


def sample_rollout(accelerator, model, tokenizer, prompts, args, group_size=1, with_logprobs=False):
    """`args.batch_size / group_size` random prompts, each answered `group_size` times by `model` in one batch."""
    chosen = [prompt for prompt in random.choices(prompts, k=args.batch_size // group_size)
              for _ in range(group_size)]
    queries = [encode_prompt(tokenizer, prompt) for prompt in chosen]
    # sampled in the update's precision where the update takes the sampling log-probabilities
    precision = accelerator.autocast() if with_logprobs else contextlib.nullcontext()
    with for_generation(accelerator, model) as whole, precision:
        sampled = generate_responses(whole, tokenizer, queries, args.max_new_tokens, args.stop_at_sep, with_logprobs)
    responses, logprobs, values = sampled if with_logprobs else (sampled, None, None)
    return Rollout(chosen, [decode(tokenizer, response) for response in responses], queries, responses, logprobs,
                   values)


# ---------------------------------------------------------------- the reference's scores
def reference_baseline(accelerator, ref_model, tokenizer, prompts, reward_fn, judge, resume_state, args):
    """(normaliser, {judge name: the reference's mean judge score}): taken from the checkpoint when resuming, so a
    resumed run gives the same rewards for the same scores; else measured on `args.ref_samples` answers of the
    reference model, written from the same prompts with the same sampling as the policy's."""
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
    texts = []
    while len(texts) < args.ref_samples:
        texts += sample_rollout(accelerator, ref_model, tokenizer, prompts, args).texts
    texts = texts[:args.ref_samples]
    scores = reward_fn(texts)
    mean, std = mean_std(scores, accelerator)
    line = f"reference model, {args.ref_samples} answers per process: raw score {mean:.4f} ± {std:.4f}"
    if measure_norm:
        normalize.measure(scores, accelerator)
        line += " (the rewards' zero and unit)"
    if measure_judge:
        judge_ref[judge.name] = mean_std(judge(texts), accelerator)[0]
        line += f", judge {judge.name} {judge_ref[judge.name]:.4f}"
    accelerator.print(line)
    return normalize, judge_ref


# ---------------------------------------------------------------- one epoch
def run_epoch(algorithm, tokenizer, reward_fn, normalize, prompts, args):
    """One epoch: sample, score, normalise, update. Returns (rollout, raw scores, rewards, stats or None, timing)."""
    t0 = time.time()
    rollout = sample_rollout(algorithm.accelerator, algorithm.policy, tokenizer, prompts, args,
                             algorithm.group_size, algorithm.with_logprobs)
    t1 = time.time()
    scores = [float(score) for score in reward_fn(rollout.texts)]
    rewards = normalize(scores)
    t2 = time.time()
    stats = algorithm.update(rollout, rewards)
    t3 = time.time()
    timing = dict(time_generate=t1 - t0, time_reward=t2 - t1, time_optimize=t3 - t2, time_epoch=t3 - t0)
    return rollout, scores, rewards, stats, timing


def epoch_record(epoch, algorithm, rollout, scores, rewards, stats, timing):
    """What the JSONL log keeps for one epoch: the raw score and the reward the algorithm was given (means and
    standard deviations over all processes' answers), the KL coefficient, the answers' length and variety, the
    algorithm's statistics, timings."""
    accelerator = algorithm.accelerator
    raw_score_mean, raw_score_std = mean_std(scores, accelerator)
    reward_mean, reward_std = mean_std(rewards, accelerator)
    record = dict(epoch=epoch, raw_score_mean=raw_score_mean, raw_score_std=raw_score_std, reward_mean=reward_mean,
                  reward_std=reward_std, kl_coef=float(algorithm.kl_coef),
                  response_len=float(np.mean([len(a) for a in rollout.answers])),
                  distinct_2=distinct_2(rollout.answers), skipped=stats is None)
    record.update(stats or {})
    record.update({key: round(value, 4) for key, value in timing.items()})
    return record


def judge_record(judge, texts, judge_ref, accelerator):
    """The judge's mean score of this epoch's answers, its standard deviation, and the reference's mean."""
    mean, std = mean_std(judge(texts), accelerator)
    return {f"judge_{judge.name}": mean, f"judge_{judge.name}_std": std, f"judge_ref_{judge.name}": judge_ref}


def print_epoch(record, prompts, answers, num_samples, show_raw, summary=""):
    """The original's epoch line and samples, with the raw score when the reward is normalised (`show_raw`), the
    algorithm's `summary`, and the judge's score when it judged this epoch."""
    raw = f"  raw-score: {record['raw_score_mean']:.4f} ± {record['raw_score_std']:.4f}" if show_raw else ""
    judged = [key for key in record if key.startswith("judge_ref_")]
    judge = "".join(f"  judge {key[10:]}: {record['judge_' + key[10:]]:.4f} (reference {record[key]:.4f})"
                    for key in judged)
    tqdm.write(f"epoch {record['epoch']} mean-reward: {record['reward_mean']:.4f}{raw}  "
               f"kl: {record.get('kl', float('nan')):.3f}  distinct-2: {record['distinct_2']:.2f}{summary}{judge}  "
               f"({record['time_epoch']:.1f}s)" + random_samples(prompts, answers, num_samples))


# ---------------------------------------------------------------- the run
def train_online(args, algorithm_name, build, reward_fn=None):
    """Train with the algorithm that `build` makes; `reward_fn` (texts -> floats) replaces the reward source the
    arguments choose (and its judge)."""
    set_seed(args.seed)
    accelerator = accelerator_for(args)
    prompts = read_prompts(args.prompts_file)
    start_epoch, resume_state = 0, None
    if args.resume:
        resume_state = load_checkpoint_state(args.resume, algorithm_name)  # before anything is loaded or written
        start_epoch = int(resume_state.get("epoch", 0))
    judge = None
    if reward_fn is None:  # loaded and checked before anything is written
        reward_fn, judge = make_reward_and_judge(args, accelerator.device)
    policy, ref_model, tokenizer = load_policy(args.resume or args.model_name, accelerator.device,
                                               args.ref_model_name, stop_at_sep=args.stop_at_sep,
                                               chat_template=args.chat_template, lora=lora_options(args))
    check_room(policy, max(len(encode_prompt(tokenizer, p)) for p in prompts), args.max_new_tokens)
    base_model = resume_state["base_model"] if resume_state else (args.ref_model_name or args.model_name)
    if os.path.isdir(base_model):
        base_model = os.path.abspath(base_model)  # a checkpoint must find its reference from any directory
    algorithm = build(args, accelerator, policy, ref_model, tokenizer, resume_state)
    set_seed(args.seed + 1000 * start_epoch + accelerator.process_index)  # processes sample different prompts

    total_epochs = int(np.ceil(args.total_samples / args.batch_size))
    run = Run(accelerator, args, unit="epoch", start=start_epoch, total=total_epochs, save_every=args.save_freq,
              resume=bool(args.resume))
    sharding = ", the policy sharded (FSDP2)" if args.fsdp else ""
    run.header(f"{algorithm_name.upper()} on {accelerator.device} x {accelerator.num_processes} process(es){sharding}"
               f", {algorithm.batch_line(args)} per process and epoch")
    normalize, judge_ref = reference_baseline(accelerator, algorithm.ref_model, tokenizer, prompts, reward_fn, judge,
                                              resume_state, args)
    last = dict(reward_mean=float("nan"), raw_score_mean=float("nan"))

    def save(reason):
        state = dict(epoch=run.completed, kl_coef=float(algorithm.kl_coef), base_model=base_model,
                     reward_mean=last["reward_mean"], raw_score_mean=last["raw_score_mean"], algorithm=algorithm_name,
                     reason=reason, reward_norm=normalize.state(), judge_ref=judge_ref)
        save_checkpoint(accelerator, algorithm.policy, tokenizer,
                        checkpoint_name(args.save_dir, run.completed, last["raw_score_mean"]), state)

    recent_rewards = []
    with run:
        for epoch in run.loop(save, desc=f"{algorithm_name.upper()} epochs"):
            rollout, scores, rewards, stats, timing = run_epoch(algorithm, tokenizer, reward_fn, normalize, prompts,
                                                                args)
            record = epoch_record(epoch, algorithm, rollout, scores, rewards, stats, timing)
            last.update(reward_mean=record["reward_mean"], raw_score_mean=record["raw_score_mean"])
            if stats is None:
                run.skipped()
            else:
                run.check(algorithm.loss(stats), algorithm.hint)
                run.trained()
            if judge and ((epoch + 1) % args.save_freq == 0 or epoch + 1 == total_epochs):
                record.update(judge_record(judge, rollout.texts, judge_ref[judge.name], accelerator))
            run.log(record)
            if run.is_main_process:
                print_epoch(record, rollout.prompts, rollout.answers, args.print_samples, normalize.mode != "none",
                            algorithm.summary(record))
            recent_rewards = (recent_rewards + [record["reward_mean"]])[-STOP_WINDOW:]
            if len(recent_rewards) == STOP_WINDOW and np.mean(recent_rewards) >= args.stop_at_reward:
                run.end_early("reward_reached", f"the mean reward of the last {STOP_WINDOW} epochs reached "
                                                f"{args.stop_at_reward} at epoch {epoch + 1}: stopping "
                                                f"(--stop_at_reward off trains all {total_epochs})")
