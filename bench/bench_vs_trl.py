"""Ours against trl on the same work: GRPO (`grpo_sentiment_example.py`) against trl's `GRPOTrainer`, DPO
(`train_dpo.py`) against trl's `DPOTrainer`, on the tiny models, in one process (same threads, float32).

Each repeat trains both sides from freshly loaded models (loading is not timed), one after the other, the order
alternating from repeat to repeat. The ratio is trl's time over ours for the same work, from the medians of the
repeats (and from their minima). After it, what each side learnt, judged alike: GRPO the mean reward of the answers
of the last fifth of its generations, DPO the preference accuracy of the trained policy on the dev pairs (train_dpo's
`evaluate` for both).

    GRPO  16 prompts x 8 answers per generation, 32 answers per optimizer step (4 steps per generation), 16 new
          tokens, beta 0.05, lr 1e-4 (constant), Adam, gradients clipped at 1, the ratio clipped to [0.8, 1.28],
          Dr. GRPO's loss, no reward scaling, the leave-one-out baseline; 60 steps. The reward: the tiny sentiment
          classifier (one instance for both sides)
    DPO   the AI-feedback pairs of train_dpo.py --tiny (2766 with the default lists), batch 32, one epoch (87 steps),
          beta 0.5, the sigmoid loss, lr 5e-5 (8 warm-up steps, then linear decay), AdamW (weight decay 0.01), no
          gradient clipping, an explicit reference model

trl runs as users run it, its trainer and its config, set to this work: float32 and no activation checkpointing (its
defaults are bf16 and checkpointing), no saving, evaluation, logging or reporting; `use_bias_correction_kl=False`
(its default multiplies the KL term by the policy ratio, a loss that is not ours). What had to be made equal by hand:
  - token ids: trl tokenizes text with special tokens, so the BERT-vocabulary GPT-2 would get `[CLS] prompt [SEP]`
    (and, in DPO, an end token after every answer). GRPO's prompts go through a copy of the tokenizer that adds
    none; DPO gets the project's own token ids (`prompt_ids`, `chosen_ids`, `rejected_ids`, what its collator reads);
  - the tokens never sampled: `load_policy` masks them in the output layer's forward (`utils.policy.forbid_tokens`,
    a hook); trl computes log-probabilities from the layer's weight and bias directly, past any hook, so its models
    get a frozen bias of -1e4 on those tokens instead (`never_sampled_as_bias`: the same distribution in float32),
    and `suppress_tokens` with `min_new_tokens=1` in generation, as ours samples;
  - the baseline: our leave-one-out advantage r - mean(others) is G / (G - 1) (r - mean(group)): trl's advantage
    with `reward_weights=[G / (G - 1)]` (only without reward scaling).
What cannot be made equal is printed on each line: each side draws its own prompts, answers and batch order.

    python bench/bench_vs_trl.py                              # about 5 minutes on 2 idle CPU cores
    OMP_NUM_THREADS=1 python bench/bench_vs_trl.py --clock cpu    # on a busy machine: CPU time of one thread
"""
import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import processors  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import AutoModelForCausalLM, PrinterCallback, get_linear_schedule_with_warmup  # noqa: E402

import grpo_sentiment_example as grpo  # noqa: E402
import train_dpo as dpo  # noqa: E402
from utils.device import accelerator_kwargs, pick_device, set_seed  # noqa: E402
from utils.models import load_pretrained  # noqa: E402
from utils.texts import clean_text  # noqa: E402
from utils.tokens import PROMPTS, banned_token_ids  # noqa: E402
from utils.policy import load_policy, load_tokenizer  # noqa: E402
from utils.online import run_epoch  # noqa: E402
from utils.run import prepare_trainable  # noqa: E402
from utils.reward_sources import RewardNormalizer, SentimentPipelineReward  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

GRPO = dict(prompts=16, group_size=8, mini_batch_size=32, max_new_tokens=16, beta=0.05, learning_rate=1e-4,
            cliprange=0.2, epsilon_high=0.28, loss_type="dr_grpo", scale_rewards="none")
STEPS_PER_GENERATION = GRPO["prompts"] * GRPO["group_size"] // GRPO["mini_batch_size"]
NOT_EQUAL = {"grpo": "each side draws its own prompts (of the same 4), answers and mini-batches",
             "dpo": "each side shuffles the pairs its own way"}
TRL_CONFIG = dict(bf16=False, activation_checkpointing=False, save_strategy="no", eval_strategy="no",
                  logging_strategy="no", report_to="none", disable_tqdm=True)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Run(NamedTuple):
    seconds: float  # training, models loaded
    learnt: float  # GRPO: the mean reward of the last generations; DPO: the dev preference accuracy
    steps: int  # optimizer steps taken
    moved: float  # |w - w0| / |w0| over the trainable weights


def trl():
    import trl as module
    return module


# ---------------------------------------------------------------- what both sides share
def trl_model(path, tokenizer, device):
    """The GPT-2 as trl's users load it, the tokens never sampled given a frozen bias (`never_sampled_as_bias`)."""
    model = load_pretrained(AutoModelForCausalLM, path).to(device)
    never_sampled_as_bias(model, banned_token_ids(tokenizer))
    return model


def never_sampled_as_bias(model, token_ids):
    """The output layer (GPT-2's has no bias of its own) gets a bias of -1e4 on `token_ids`, a buffer that is not
    trained: e^-10000 is 0 beside any real logit in float32, as our hook's masked logits are."""
    head = model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0], dtype=head.weight.dtype, device=head.weight.device)
    bias[sorted(set(token_ids))] = -1e4
    del head.bias
    head.register_buffer("bias", bias, persistent=False)


def tokenizer_without_special_tokens(tokenizer):
    """A copy of a WordPiece tokenizer whose plain-text encoding adds no [CLS]/[SEP], as `encode_prompt` encodes."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    return tokenizer


def trainable_weights(model):
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def moved(model, start):
    now = trainable_weights(model)
    change = sum((now[name] - start[name]).square().sum() for name in now).sqrt()
    return (change / sum(w.square().sum() for w in start.values()).sqrt()).item()


def trl_train(trainer, clock):
    """`trainer.train()`'s time; quietly (no summary printed at its end, no warning that trl's own calls raise)."""
    trainer.remove_callback(PrinterCallback)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`is_gradient_checkpointing` is deprecated")
        tic = clock()
        trainer.train()
        return clock() - tic


# ---------------------------------------------------------------- GRPO
def grpo_args(steps, seed):
    """grpo_sentiment_example.py's --tiny arguments at the bench's settings."""
    s = GRPO
    return grpo.parse_args([
        "--tiny", "--batch_size", str(s["prompts"] * s["group_size"]), "--group_size", str(s["group_size"]),
        "--mini_batch_size", str(s["mini_batch_size"]), "--grpo_epochs", "1", "--max_new_tokens",
        str(s["max_new_tokens"]), "--beta", str(s["beta"]), "--learning_rate", str(s["learning_rate"]),
        "--cliprange", str(s["cliprange"]), "--epsilon_high", str(s["epsilon_high"]), "--loss_type", s["loss_type"],
        "--scale_rewards", s["scale_rewards"], "--advantage", "rloo", "--max_grad_norm", "1.0",
        "--total_samples", str(steps * s["mini_batch_size"]), "--seed", str(seed)])


def final_reward(rewards):
    """The mean reward over the last fifth of the generations (at least the last one)."""
    return statistics.mean(r for batch in rewards[-max(1, len(rewards) // 5):] for r in batch)


def ours_grpo(paths, reward, steps, seed, device, clock):
    """grpo_sentiment_example.py's epochs: sample, score, update."""
    args = grpo_args(steps, seed)
    set_seed(seed)
    policy, ref_model, tokenizer = load_policy(paths["gpt2"], device)
    start = trainable_weights(policy)
    tic = clock()
    algorithm = grpo.make_grpo(policy, ref_model, tokenizer, grpo.grpo_config(args),
                               Accelerator(**accelerator_kwargs(device)))
    rewards, trained = [], 0
    for _ in range(steps // STEPS_PER_GENERATION):
        _, _, batch_rewards, stats, _ = run_epoch(algorithm, tokenizer, reward, RewardNormalizer("none"), PROMPTS,
                                                  args)
        rewards.append(batch_rewards)
        trained += STEPS_PER_GENERATION if stats is not None else 0
    return Run(clock() - tic, final_reward(rewards), trained, moved(algorithm.policy, start))


def trl_grpo(paths, reward, steps, seed, device, clock):
    """trl's `GRPOTrainer` on the same work."""
    s = GRPO
    tokenizer = load_tokenizer(paths["gpt2"])
    policy = trl_model(paths["gpt2"], tokenizer, device)
    start = trainable_weights(policy)
    rng = random.Random(seed)  # the prompts of every generation, drawn as ours draws them
    prompts = Dataset.from_dict({"prompt": [rng.choice(PROMPTS) for _ in range(steps // STEPS_PER_GENERATION
                                                                                  * s["prompts"])]})
    rewards = []

    def sentiment(prompts, completions, **kwargs):
        scores = [float(r) for r in reward([p + clean_text(c) for p, c in zip(prompts, completions)])]
        rewards.append(scores)
        return scores

    banned = banned_token_ids(tokenizer)
    with tempfile.TemporaryDirectory() as out:
        config = trl().GRPOConfig(
            output_dir=out, per_device_train_batch_size=s["mini_batch_size"], num_generations=s["group_size"],
            steps_per_generation=STEPS_PER_GENERATION, max_steps=steps, max_completion_length=s["max_new_tokens"],
            temperature=1.0, top_k=0, top_p=1.0, generation_kwargs=dict(suppress_tokens=banned, min_new_tokens=1),
            beta=s["beta"], use_bias_correction_kl=False, learning_rate=s["learning_rate"],
            lr_scheduler_type="constant", epsilon=s["cliprange"], epsilon_high=s["epsilon_high"],
            loss_type=s["loss_type"], scale_rewards=s["scale_rewards"],
            reward_weights=[s["group_size"] / (s["group_size"] - 1)], max_grad_norm=1.0, disable_dropout=True,
            seed=seed, use_cpu=device.type == "cpu", **TRL_CONFIG)
        trainer = trl().GRPOTrainer(model=policy, reward_funcs=sentiment, args=config, train_dataset=prompts,
                                    processing_class=tokenizer_without_special_tokens(tokenizer))
        never_sampled_as_bias(trainer.ref_model, banned)  # trl loads its reference itself, from the policy's folder
        seconds = trl_train(trainer, clock)
    return Run(seconds, final_reward(rewards), trainer.state.global_step, moved(trainer.model, start))


# ---------------------------------------------------------------- DPO
def dpo_data(args, tokenizer):
    """(train pairs, dev pairs) as train_dpo.py encodes them: [(prompt ids, [chosen ids, rejected ids])]."""
    train_items, dev_items = dpo.read_data(args, Accelerator(cpu=True))
    return (dpo.encode_lists(tokenizer, train_items, args.max_seq_len)[0],
            dpo.encode_lists(tokenizer, dev_items, args.max_seq_len)[0])


def dev_accuracy(policy, ref_model, dev_set, args, pad_token_id, device):
    accelerator = Accelerator(**accelerator_kwargs(device))
    loader = accelerator.prepare(DataLoader(dev_set, batch_size=args.batch_size, collate_fn=dpo.collate))
    return dpo.evaluate(policy, ref_model, loader, args.beta, "pairs", accelerator, pad_token_id)["preference_acc"]


def ours_dpo(paths, args, data, seed, device, clock):
    """train_dpo.py's steps over one epoch of the pairs."""
    train_set, dev_set = data
    set_seed(seed)
    policy, ref_model, tokenizer = load_policy(paths["gpt2"], device)
    start = trainable_weights(policy)
    tic = clock()
    accelerator = Accelerator(**accelerator_kwargs(device))
    loader = DataLoader(train_set, batch_sampler=dpo.ShuffledBatches(len(train_set), args.batch_size, seed),
                        collate_fn=dpo.collate)
    policy, optimizer = prepare_trainable(accelerator, policy, learning_rate=args.learning_rate, weight_decay=0.01)
    loader = accelerator.prepare(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * len(loader)), len(loader))
    for step, batch in enumerate(loader, start=1):
        dpo.train_step(policy, ref_model, batch, optimizer, scheduler, args, accelerator, tokenizer.pad_token_id, step)
    seconds = clock() - tic
    return Run(seconds, dev_accuracy(policy, ref_model, dev_set, args, tokenizer.pad_token_id, device), len(loader),
               moved(policy, start))


def dpo_trainer_on_token_ids():
    """trl's `DPOTrainer` given token ids (`prompt_ids`, `chosen_ids`, `rejected_ids`, what its collator reads): its
    own tokenization of text, which would add [CLS], [SEP] and an end token to every answer, skipped."""
    class DPOTrainerOnTokenIds(trl().DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset
    return DPOTrainerOnTokenIds


def trl_dpo(paths, args, data, seed, device, clock):
    """trl's `DPOTrainer` on the same pairs."""
    train_set, dev_set = data
    tokenizer = load_tokenizer(paths["gpt2"])
    policy = trl_model(paths["gpt2"], tokenizer, device)
    ref_model = trl_model(paths["gpt2"], tokenizer, device).eval().requires_grad_(False)
    start = trainable_weights(policy)
    pairs = Dataset.from_dict({"prompt_ids": [prompt for prompt, _ in train_set],
                               "chosen_ids": [answers[0] for _, answers in train_set],
                               "rejected_ids": [answers[1] for _, answers in train_set]})
    steps = -(-len(train_set) // args.batch_size)
    with tempfile.TemporaryDirectory() as out:
        config = trl().DPOConfig(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1, beta=args.beta,
            loss_type=["sigmoid"], learning_rate=args.learning_rate, lr_scheduler_type="linear",
            warmup_steps=int(args.warmup_ratio * steps), weight_decay=0.01, max_grad_norm=0.0, max_length=None,
            disable_dropout=True, seed=seed, use_cpu=device.type == "cpu", **TRL_CONFIG)
        trainer = dpo_trainer_on_token_ids()(model=policy, ref_model=ref_model, args=config, train_dataset=pairs,
                                             processing_class=tokenizer)
        seconds = trl_train(trainer, clock)
    return Run(seconds, dev_accuracy(trainer.model, ref_model, dev_set, args, tokenizer.pad_token_id, device),
               trainer.state.global_step, moved(trainer.model, start))


# ---------------------------------------------------------------- the harness
def interleaved(sides, repeats, warm_up):
    """{side: [its Run of every repeat]}: each repeat runs every side once, the order alternating, after one
    untimed round of `warm_up` (the same sides on less work: first calls cost more)."""
    for side in warm_up.values():
        side(seed=0)
    runs = {name: [] for name in sides}
    for repeat in range(repeats):
        for name in (list(sides) if repeat % 2 == 0 else list(sides)[::-1]):
            runs[name].append(sides[name](seed=repeat))
    return runs


def report(algorithm, runs, work, unit, learnt_name):
    """Both sides' table, then the line: ours/trl (median), what each learnt; the ratio of the minima; not equal."""
    print(f"{'':6}{'median s':>9}{'min s':>8}{f'ms/{unit}':>16}{'steps':>7}{'|w-w0|/|w0|':>13}{learnt_name:>10}")
    summary = {}
    for name, side in runs.items():
        seconds = [run.seconds for run in side]
        summary[name] = (statistics.median(seconds), min(seconds), statistics.mean(run.learnt for run in side))
        print(f"{name:6}{summary[name][0]:9.2f}{summary[name][1]:8.2f}{1000 * summary[name][0] / work:16.3f}"
              f"{min(run.steps for run in side):7d}{min(run.moved for run in side):13.4f}{summary[name][2]:10.3f}")
    ours, theirs = summary["ours"], summary["trl"]
    print(f"{algorithm} ours/trl {theirs[0] / ours[0]:.2f}x per {unit} (median), {learnt_name} ours {ours[2]:.2f} "
          f"trl {theirs[2]:.2f}; min {theirs[1] / ours[1]:.2f}x; not equal: {NOT_EQUAL[algorithm]}")


def bench_grpo(paths, repeats, steps, device, clock):
    reward = SentimentPipelineReward(paths["classifier"], device)
    answers = steps // STEPS_PER_GENERATION * GRPO["prompts"] * GRPO["group_size"]
    print(f"\n== GRPO: {GRPO['prompts']} prompts x {GRPO['group_size']} answers per generation, "
          f"{GRPO['mini_batch_size']} per step, {steps} steps ({answers} answers), {repeats} repeat(s) ==")
    def sides(steps):
        return {"ours": lambda seed: ours_grpo(paths, reward, steps, seed, device, clock),
                "trl": lambda seed: trl_grpo(paths, reward, steps, seed, device, clock)}

    runs = interleaved(sides(steps), repeats, warm_up=sides(STEPS_PER_GENERATION))
    report("grpo", runs, answers, "completion", "reward")


def bench_dpo(paths, repeats, dpo_argv, device, clock):
    args = dpo.parse_args(["--tiny", "--beta", "0.5", *dpo_argv])  # the docstring's, as in docs/benchmarks.md
    data = dpo_data(args, load_tokenizer(paths["gpt2"]))
    print(f"\n== DPO: {len(data[0])} pairs, batch {args.batch_size}, one epoch "
          f"({-(-len(data[0]) // args.batch_size)} steps), {len(data[1])} dev pairs, {repeats} repeat(s) ==")
    def sides(data):
        return {"ours": lambda seed: ours_dpo(paths, args, data, seed, device, clock),
                "trl": lambda seed: trl_dpo(paths, args, data, seed, device, clock)}

    train_set, dev_set = data
    runs = interleaved(sides(data), repeats, warm_up=sides((train_set[:2 * args.batch_size], dev_set)))
    report("dpo", runs, len(data[0]), "pair", "accuracy")


def grpo_steps(text):
    steps = int(text)
    if steps < 1 or steps % STEPS_PER_GENERATION:
        raise argparse.ArgumentTypeError(f"a positive multiple of {STEPS_PER_GENERATION} (the steps of a generation)")
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side, per algorithm")
    parser.add_argument("--grpo_steps", type=grpo_steps, default=60, help="GRPO's optimizer steps")
    parser.add_argument("--ai_feedback_file", default=dpo.AI_FEEDBACK_FILE,
                        help="DPO's AI-feedback rank lists (built once, as train_dpo.py --tiny builds them)")
    parser.add_argument("--ai_feedback_lists", type=int, default=128, help="AI-feedback rank lists per prompt")
    parser.add_argument("--skip", choices=("grpo", "dpo"), help="leave one algorithm out")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (on a busy machine, with one thread)")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    paths = ensure_tiny()
    print(f"torch {torch.__version__}, trl {trl().__version__}, {device.type}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPU(s), {args.clock} clock, load average {os.getloadavg()[0]:.1f} at start")
    if args.skip != "grpo":
        bench_grpo(paths, args.repeats, args.grpo_steps, device, CLOCKS[args.clock])
    if args.skip != "dpo":
        bench_dpo(paths, args.repeats, ["--ai_feedback_file", args.ai_feedback_file, "--ai_feedback_lists",
                                        str(args.ai_feedback_lists)], device, CLOCKS[args.clock])
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
