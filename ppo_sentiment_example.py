"""PPO fine-tunes a Chinese GPT-2 so that its continuations of review prompts turn positive.

Each epoch: pick `batch_size` random prompts -> the policy writes `gen_len` new tokens for all of them
in one batched `generate` call -> a reward source scores prompt + answer -> one trl `PPOTrainer.step`
(with a KL penalty to the frozen reference model) -> log, print samples, save now and then.

Reward sources (one loop): the sentiment-analysis pipeline (probability of the positive label, by default)
or `--reward_model DIR`, a reward model saved by train_reward_model.py (the full RLHF loop).

    python ppo_sentiment_example.py --tiny          # offline tiny models, about 4 minutes on a CPU
    python ppo_sentiment_example.py                 # the original's hub models and settings
    accelerate launch --multi_gpu --num_processes 2 ppo_sentiment_example.py ...  # 2 processes (GPUs or CPUs)
"""
import argparse
import os
import random
import signal
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from utils.common import accelerator_kwargs, add_mixed_precision_argument, pick_device, run_main, set_seed
from utils.generation import decode, encode_prompt, generate_responses, read_prompts
from utils.logger import TrainLogger
from utils.ppo import (distinct_2, load_policy, load_ppo_checkpoint_state, make_ppo_trainer, ppo_step,
                       save_ppo_checkpoint, unwrap_policy)
from utils.rewards import RewardModelReward, SentimentPipelineReward
from utils.tiny import ensure_tiny

# The original's settings (uer's hub models, a GPU in mind) ...
ORIGINAL = dict(model_name="uer/gpt2-chinese-cluecorpussmall",
                sentiment_model="uer/roberta-base-finetuned-jd-binary-chinese",
                steps=20000, batch_size=128, mini_batch_size=16, ppo_epochs=4, lr=1.41e-5, init_kl_coef=0.2,
                target=6.0, horizon=10000, save_freq=5)
# ... and those that make the tiny models learn visibly on a 2-core CPU in about 4 minutes: a larger
# learning rate; 1 PPO epoch per batch (the step is most of an epoch's time); the original's batch of 128
# in mini-batches of 32 (each update less noisy: trl whitens advantages, so noise alone moves the policy
# and uses up the KL budget); a weaker KL penalty that adapts within a few epochs, aiming at KL 5 (at 6 the
# answers grew too alike). 100 epochs: the reward passes 0.9 after about 25 and levels off, and longer runs
# only wear down the answers' variety (distinct-2).
TINY = dict(steps=128 * 100, batch_size=128, mini_batch_size=32, ppo_epochs=1, lr=3e-4, init_kl_coef=0.05,
            target=5.0, horizon=2000, save_freq=25)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="offline tiny models and CPU-friendly settings")
    p.add_argument("--model_name", help=f"policy GPT-2 (default {ORIGINAL['model_name']})")
    p.add_argument("--ref_model_name", help="reference model for the KL penalty (default: the base model)")
    p.add_argument("--sentiment_model",
                   help=f"sentiment classifier for the reward (default {ORIGINAL['sentiment_model']})")
    p.add_argument("--reward_model",
                   help="reward-model folder from train_reward_model.py, used instead of the classifier")
    p.add_argument("--normalize_reward", action="store_true",
                   help="with --reward_model: scores to zero mean and unit variance (running statistics)")
    p.add_argument("--steps", type=int, help="total samples; epochs = ceil(steps / batch_size)")
    p.add_argument("--batch_size", type=int, help="samples per PPO epoch (per process)")
    p.add_argument("--mini_batch_size", type=int, help="forward and PPO mini-batch size")
    p.add_argument("--ppo_epochs", type=int, help="optimisation passes over each batch")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--init_kl_coef", type=float, help="initial KL coefficient (adaptive)")
    p.add_argument("--target", type=float, help="KL target of the adaptive controller")
    p.add_argument("--horizon", type=int, help="horizon of the adaptive KL controller")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--cliprange", type=float, default=0.2)
    p.add_argument("--cliprange_value", type=float, default=0.2)
    p.add_argument("--vf_coef", type=float, default=0.1)
    p.add_argument("--gen_len", type=int, default=16, help="new tokens per answer")
    p.add_argument("--stop_at_sep", action="store_true", help="let [SEP] end an answer early")
    p.add_argument("--prompts_file", help="one prompt per line (default: the original's four prompts)")
    p.add_argument("--save_freq", type=int, help="save a checkpoint every N epochs")
    p.add_argument("--save_dir", default=os.path.join("checkpoints", "ppo_sentiment_gpt"))
    p.add_argument("--resume", help="continue from this checkpoint folder (epoch count and KL coefficient too)")
    p.add_argument("--log_dir", default="logs")
    p.add_argument("--log_name", default="PPO-Sentiment-Zh")
    p.add_argument("--num_samples", type=int, default=5, help="random answers printed each epoch")
    p.add_argument("--reward_batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="default: cuda if available, else cpu")
    add_mixed_precision_argument(p)
    p.add_argument("--preset", choices=["gpu"], help="gpu: the whole batch in one mini-batch and bf16 (speed over "
                                                     "faithfulness; explicit arguments still win)")
    args = p.parse_args(argv)
    defaults = dict(TINY, **tiny_models()) if args.tiny else ORIGINAL
    if args.preset == "gpu":  # speed over faithfulness: at mini-batch 16 a GPU mostly waits on per-mini-batch
        # overhead, so the whole batch goes in one mini-batch, under bf16 autocast (its learning: README)
        defaults = dict(defaults, mini_batch_size=args.batch_size or defaults["batch_size"], mixed_precision="bf16")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def tiny_models():
    paths = ensure_tiny()
    return dict(model_name=paths["gpt2"], sentiment_model=paths["classifier"])


def make_reward_source(args, device):
    if args.reward_model:
        return RewardModelReward(args.reward_model, device, batch_size=args.reward_batch_size,
                                 normalize=args.normalize_reward)
    return SentimentPipelineReward(args.sentiment_model, device, batch_size=args.reward_batch_size)


def ppo_config(args):
    return dict(learning_rate=args.lr, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                ppo_epochs=args.ppo_epochs, init_kl_coef=args.init_kl_coef, adap_kl_ctrl=True,
                target=args.target, horizon=args.horizon, gamma=args.gamma, lam=args.lam,
                cliprange=args.cliprange, cliprange_value=args.cliprange_value, vf_coef=args.vf_coef,
                seed=args.seed, accelerator_kwargs=accelerator_kwargs(args.device, args.mixed_precision))


def run_epoch(trainer, tokenizer, reward_fn, prompts, args):
    """One PPO epoch; returns (prompts + answers, rewards, trl stats or None, timings)."""
    chosen = random.choices(prompts, k=args.batch_size)
    queries = [encode_prompt(tokenizer, prompt) for prompt in chosen]
    t0 = time.time()
    responses = generate_responses(unwrap_policy(trainer), tokenizer, queries, args.gen_len, args.stop_at_sep)
    answers = [decode(tokenizer, response) for response in responses]
    t1 = time.time()
    rewards = reward_fn([prompt + answer for prompt, answer in zip(chosen, answers)])
    t2 = time.time()
    stats = ppo_step(trainer, queries, responses, rewards)
    t3 = time.time()
    timing = dict(time_generate=t1 - t0, time_reward=t2 - t1, time_optimize=t3 - t2, time_epoch=t3 - t0)
    return chosen, answers, rewards, stats, timing


def epoch_record(epoch, trainer, answers, rewards, stats, timing):
    """What the JSONL log keeps for one epoch (reward mean and std over all processes' samples)."""
    finite = torch.tensor([r for r in rewards if np.isfinite(r)], dtype=torch.float64)
    moments = torch.stack([finite.sum(), finite.square().sum(), torch.tensor(float(len(finite)), dtype=torch.float64)])
    if trainer.accelerator.num_processes > 1:
        moments = trainer.accelerator.reduce(moments.to(trainer.accelerator.device), reduction="sum").cpu()
    total, squares, count = moments.tolist()
    mean = total / count if count else float("nan")
    std = max(squares / count - mean ** 2, 0.0) ** 0.5 if count else float("nan")
    record = dict(epoch=epoch, reward_mean=mean, reward_std=std, kl_coef=float(trainer.kl_ctl.value),
                  response_len=float(np.mean([len(a) for a in answers])), distinct_2=distinct_2(answers),
                  skipped=stats is None)
    if stats is not None:
        record.update(kl=float(stats["objective/kl"]), kl_coef=float(stats["objective/kl_coef"]),
                      policy_loss=float(stats["ppo/loss/policy"]), value_loss=float(stats["ppo/loss/value"]),
                      entropy=float(stats["ppo/policy/entropy"]))
    record.update({key: round(value, 4) for key, value in timing.items()})
    return record


def print_epoch(record, chosen, answers, num_samples):
    lines = [f"epoch {record['epoch']} mean-reward: {record['reward_mean']:.4f}  "
             f"kl: {record.get('kl', float('nan')):.3f}  distinct-2: {record['distinct_2']:.2f}  "
             f"({record['time_epoch']:.1f}s)",
             f"Random Sample {num_samples} text(s) of model output:"]
    for i, k in enumerate(random.sample(range(len(answers)), min(num_samples, len(answers))), start=1):
        lines.append(f"{i}. {chosen[k]}{answers[k]}")
    tqdm.write("\n".join(lines))


def checkpoint_name(save_dir, epoch, reward):
    return os.path.join(save_dir, f"model_{epoch}_{reward:.2f}")


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None, reward_fn=None):
    """Train; `reward_fn` (texts -> floats) replaces the reward source the arguments choose."""
    args = parse_args(argv)
    set_seed(args.seed)
    device = pick_device(args.device)
    args.device = device.type
    prompts = read_prompts(args.prompts_file)
    start_epoch, resume_state = 0, None
    if args.resume:
        resume_state = load_ppo_checkpoint_state(args.resume)  # before anything is loaded or written
        start_epoch = int(resume_state.get("epoch", 0))
    reward_fn = reward_fn or make_reward_source(args, device)
    policy, ref_model, tokenizer = load_policy(args.resume or args.model_name, device, args.ref_model_name,
                                                  stop_at_sep=args.stop_at_sep)
    base_model = resume_state["base_model"] if resume_state else (args.ref_model_name or args.model_name)
    if os.path.isdir(base_model):
        base_model = os.path.abspath(base_model)  # a checkpoint must find its reference from any directory

    trainer = make_ppo_trainer(policy, ref_model, tokenizer, **ppo_config(args))
    if resume_state:
        trainer.kl_ctl.value = float(resume_state["kl_coef"])
    accelerator = trainer.accelerator
    set_seed(args.seed + 1000 * start_epoch + accelerator.process_index)  # processes sample different prompts
    main_process = accelerator.is_main_process
    accelerator.print(f"PPO on {accelerator.device} x {accelerator.num_processes} process(es), "
                      f"{args.batch_size} samples per process and epoch")
    logger = (TrainLogger(args.log_dir, args.log_name, x_key="epoch", resume=bool(args.resume), redo_from=start_epoch)
              if main_process else None)

    total_epochs = int(np.ceil(args.steps / args.batch_size))
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # `kill` saves like Ctrl-C does
    completed, last_saved, reward_mean = start_epoch, start_epoch, float("nan")

    def save(reason):
        path = checkpoint_name(args.save_dir, completed, reward_mean)
        state = dict(epoch=completed, kl_coef=float(trainer.kl_ctl.value), base_model=base_model,
                     reward_mean=reward_mean, reason=reason)
        # after Ctrl-C the other processes may be gone: the main process saves alone, without a barrier
        save_ppo_checkpoint(unwrap_policy(trainer) if reason == "interrupted" else trainer, tokenizer, path, state)
        if main_process:
            tqdm.write(f"saved {path}")

    try:
        for epoch in tqdm(range(start_epoch, total_epochs), initial=start_epoch, total=total_epochs,
                          disable=not main_process, desc="PPO epochs"):
            chosen, answers, rewards, stats, timing = run_epoch(trainer, tokenizer, reward_fn, prompts, args)
            record = epoch_record(epoch, trainer, answers, rewards, stats, timing)
            reward_mean, completed = record["reward_mean"], epoch + 1
            if main_process:
                logger.log(record)
                print_epoch(record, chosen, answers, args.num_samples)
            if completed % args.save_freq == 0:
                save("periodic")
                last_saved = completed
                if main_process:
                    logger.plot()  # drawing takes longer than a tiny epoch: only when saving
        if last_saved != completed:
            save("end")
        if main_process:
            logger.plot()
    except KeyboardInterrupt:
        if main_process:
            tqdm.write("interrupted: saving a checkpoint before exiting ...")
            if completed > last_saved:
                save("interrupted")
            logger.plot()
        sys.exit(130)
    finally:
        if logger:
            logger.close()
    if main_process:
        print(f"done: {completed} epochs, logs in {logger.jsonl_path} and {logger.png_path}")


if __name__ == "__main__":
    run_main(main)
