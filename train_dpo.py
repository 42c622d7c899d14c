"""DPO fine-tunes the Chinese GPT-2 straight from rank lists: no reward model, no PPO, no sampling while training.

Every ordered pair i<j of a rank list (best first) is one preference: answer i is chosen (y_w), answer j is
rejected (y_l), both to the same prompt x. DPO (Rafailov et al. 2023, eq. 7) trains the policy pi against a
frozen copy of the starting model, the reference, with

    loss = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])

log pi(y|x) is the sum of the log-probabilities of the answer's tokens: the prompt only conditions them.
beta * log(pi/ref) is the "implicit reward" of an answer; beta plays the part of PPO's KL coefficient (a larger
beta keeps the policy nearer the reference). The dev split is evaluated by its preference accuracy (share of
pairs whose chosen answer has the larger implicit reward) and mean reward margin.

`--loss plackett_luce` trains on whole rank lists instead of their pairs (the DPO paper's appendix A.3): under
the Plackett-Luce model a list y_1 > y_2 > ... > y_K is drawn best first, each answer with probability
softmax of the implicit rewards r of the answers still left, so

    loss = -sum_{k=1}^{K-1} [r_k - log sum_{j>=k} exp(r_j)],   r_k = beta * (log pi(y_k|x) - log ref(y_k|x))

For K = 2 this is exactly the pairs loss above. It needs whole lists (K >= 3 somewhere): on data with only
pairs (a preference JSONL, or rank lists of 2) it stops with a message, as --loss pairs is the same thing there.

Training data: rank lists (TSV, best first, with their .meta.jsonl), or the preference JSONL that
`python -m utils.preferences` and other tools write ({"prompt", "chosen", "rejected"} per line); the format is
told from the file's first line. Reading, the dev split, encoding and batching: utils/preference_data.py.

Prompts come from the `.meta.jsonl` file that the labelling page writes beside its TSV. With `--tiny` and no
`--train_path`, the rank lists are first made with AI feedback (`python -m utils.ai_feedback`: the tiny GPT-2
writes K answers per prompt, the sentiment classifier ranks them), once, and reused afterwards.

    python train_dpo.py --tiny                                                   # offline, a few minutes on a CPU
    python train_dpo.py --train_path data/human_labeled/total_dataset.tsv        # the labelling page's lists
    accelerate launch --multi_gpu --num_processes 2 train_dpo.py --tiny         # 2 processes (GPUs or CPUs)
    torchrun --standalone --nproc_per_node 2 train_dpo.py --tiny --fsdp  # the model sharded over 2 (FSDP2)
    python inference_ppo_gpt.py --save_dir checkpoints/dpo_sentiment_gpt --compare_ref

Checkpoints are the PPO scripts' folders (`save_pretrained` + `training_state.json`; no value head).
"""
import argparse
import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from utils.ai_feedback import DEFAULT_OUTPUT as AI_FEEDBACK_FILE
from utils.answer_logprobs import answer_logprobs
from utils.device import add_mixed_precision_argument, set_seed
from utils.errors import UserError, run_main
from utils.options import (ArgumentParser, add_device_argument, add_report_to_argument, add_sampling_arguments,
                           file_name, fraction, input_file, learning_rate, output_file, output_folder, positive_float,
                           positive_int, ratio, same_file, seed)
from utils.generation import check_room, generate_responses
from utils.tokens import decode, encode_prompt
from utils.outputs import AI_LABELS, STEP_LOG, check_outputs, inputs_with_metadata, labels_outputs, log_outputs
from utils.checkpoints import checkpoint_folder, load_checkpoint_state
from utils.policy import add_model_arguments, load_policy, lora_options
from utils.preference_data import DEFAULT_TRAIN, ShuffledBatches, collate, encode_lists, read_data
from utils.ranklists import add_merge_arguments
from utils.presets import Preset, parse_with_presets
from utils.run import (Run, accelerator_for, add_fsdp_argument, checkpoint_name, for_generation, optimizer_step,
                       prepare_frozen, prepare_trainable, save_checkpoint, stop_if_not_finite)
from utils.tiny import TINY_GPT2

# the DPO paper's beta, and a learning rate as small as its 1e-6 for the full-size GPT-2 ...
ORIGINAL = dict(model_name="uer/gpt2-chinese-cluecorpussmall", beta=0.1, learning_rate=1e-6, batch_size=16,
                num_train_epochs=3, valid_steps=100)
# ... and for the tiny GPT-2 on a CPU: one epoch over the AI-feedback pairs (87 steps of 32). beta 0.1 is the
# best DPO point of the reward-KL frontier (docs/benchmarks.md); on two seeds it judged +0.34 / +0.35 at KL 1.2 /
# 1.3, distinct-2 0.64 / 0.63 (recipe 7's models; on recipe 6's, beta 0.25 about as much and beta 0.5 +0.27 at
# KL 0.6; at lr 1e-4, not 5e-5, beta 0.1 grew repetitive within 40 steps)
TINY = dict(model_name=TINY_GPT2, beta=0.1, learning_rate=5e-5, batch_size=32, num_train_epochs=1, valid_steps=20)
# Plackett-Luce's batches count lists: 16 lists of 4 answers (as many sequences as 32 pairs) for 3 epochs take as
# many steps as the pairs' one epoch, as on the frontier: judged +0.36 / +0.34 at KL 1.3 / 1.4, distinct-2 0.63 /
# 0.63, on average at least the pairs' gain on the same lists; --tiny's 32 lists for 1 epoch were 15 steps and +0.10
TINY_PLACKETT_LUCE = dict(batch_size=16, num_train_epochs=3)
PRESETS = [Preset("--tiny", lambda args: args.tiny, TINY),
           Preset("--tiny --loss plackett_luce", lambda args: args.tiny and args.loss == "plackett_luce",
                  TINY_PLACKETT_LUCE)]


LOSSES = ("pairs", "plackett_luce")
# the PNG's panels in reading order: the dev preferences, then the training batches' loss, accuracy and margin
PANELS = ("preference_acc", "reward_margin", "train_loss", "train_acc", "train_margin", "learning_rate")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="offline tiny models, AI-feedback rank lists, CPU settings")
    p.add_argument("--model_name", help="policy to fine-tune: uer's GPT-2 or any causal LM (hub name or folder)")
    add_model_arguments(p)
    p.add_argument("--ref_model_name", help="frozen reference model (default: the model fine-tuned)")
    p.add_argument("--train_path", type=input_file,
                   help=f"rank lists, best first, with their .meta.jsonl (default {DEFAULT_TRAIN}; "
                                        "with --tiny: AI-feedback rank lists, built once)")
    p.add_argument("--ai_feedback_file", type=output_file, default=AI_FEEDBACK_FILE,
                   help="with --tiny and no --train_path: where the AI-feedback rank lists are built once and reused")
    p.add_argument("--ai_feedback_lists", type=positive_int, default=128, help="AI-feedback rank lists per prompt")
    p.add_argument("--dev_path", type=input_file,
                   help="evaluation rank lists (default: --dev_ratio of the training lists)")
    p.add_argument("--dev_ratio", type=ratio, default=0.1, help="share of the lists held out without --dev_path")
    p.add_argument("--prompt_mode", choices=("meta", "none"), default="meta",
                   help="meta: each list's prompt from its .meta.jsonl record (required); none: no prompts, "
                        "the whole texts are the answers (e.g. the corpus-made reward-model lists)")
    p.add_argument("--beta", type=positive_float,
                   help="strength of the KL to the reference (DPO's beta; at 0 the loss would be log 2 whatever the "
                        "policy does)")
    p.add_argument("--loss", choices=LOSSES, default="pairs",
                   help="pairs: every ordered pair of each rank list (DPO); plackett_luce: each whole list "
                        "(the DPO paper's appendix A.3; --batch_size then counts lists)")
    p.add_argument("--learning_rate", "--lr", type=learning_rate)
    p.add_argument("--batch_size", type=positive_int, help="preference pairs (or with --loss plackett_luce, rank "
                                                           "lists) per step (per process)")
    p.add_argument("--num_train_epochs", type=positive_int)
    p.add_argument("--warmup_ratio", type=fraction, default=0.1, help="share of the steps with a rising lr")
    p.add_argument("--max_seq_len", type=positive_int, default=128,
                   help="longest prompt + answer in tokens (answers are cut)")
    p.add_argument("--valid_steps", type=positive_int, help="evaluate and save a checkpoint every N steps")
    p.add_argument("--logging_steps", type=positive_int, default=10)
    p.add_argument("--save_dir", type=output_folder, default=os.path.join("checkpoints", "dpo_sentiment_gpt"))
    p.add_argument("--resume", type=checkpoint_folder,
                   help="continue from this checkpoint folder (its step and reference model)")
    p.add_argument("--log_dir", "--img_log_dir", type=output_folder, default="logs")
    p.add_argument("--log_name", "--img_log_name", type=file_name, default="DPO-Sentiment-Zh",
                   help="logs: <log_dir>/<log_name>.jsonl and .png")
    add_report_to_argument(p)
    add_sampling_arguments(p, print_samples=3, printed="at each evaluation")
    p.add_argument("--skip_bad_lines", action="store_true",
                   help="skip and count bad lines of the rank-list or preference files")
    add_merge_arguments(p)
    add_mixed_precision_argument(p)
    add_fsdp_argument(p)
    p.add_argument("--seed", type=seed, default=0)
    add_device_argument(p)
    p.set_defaults(**ORIGINAL)
    return parse_with_presets(p, argv, PRESETS, check=check_options)


def check_options(args):
    """The checks that involve two options (each option alone is checked by its `type=`)."""
    if args.train_path and args.dev_path and same_file(args.train_path, args.dev_path):
        raise UserError(f"--dev_path {args.dev_path} is the training file: evaluation needs lists not trained on")
    outputs = log_outputs(args.log_dir, args.log_name, STEP_LOG)
    if args.tiny and not args.train_path:  # the AI-feedback rank lists are built there
        outputs += labels_outputs("--ai_feedback_file", args.ai_feedback_file, AI_LABELS)
    train_path = args.train_path or (None if args.tiny else DEFAULT_TRAIN)
    check_outputs(outputs, inputs_with_metadata("--train_path", train_path)
                  + inputs_with_metadata("--dev_path", args.dev_path))


# ---------------------------------------------------------------- the DPO loss
def answer_logps(lm, batch, pad_token_id):
    """log pi(answer | prompt) of every sequence: the sum of its answer tokens' log-probabilities."""
    logprobs, _ = answer_logprobs(lm, batch["queries"], batch["responses"], pad_token_id)
    return logprobs.sum(-1)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Eq. 7 of the DPO paper, averaged over the pairs; also each pair's implicit rewards beta * log(pi / ref)."""
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def plackett_luce_loss(policy_logps, ref_logps, sizes, beta):
    """The DPO paper's appendix A.3, averaged over the lists: -log P(the list's order) under Plackett-Luce with
    the implicit rewards r = beta * log(pi / ref); each list's answers are consecutive, best first. Also the
    implicit rewards, detached."""
    rewards = beta * (policy_logps - ref_logps)
    losses = []
    for r in torch.split(rewards, sizes):
        # log sum_{j >= k} exp(r_j) for every k: a cumulative logsumexp from the worst answer up
        rest = torch.logcumsumexp(r.flip(0), dim=0).flip(0)
        losses.append(-(r - rest)[:-1].sum())  # the last answer is drawn with probability 1
    return torch.stack(losses).mean(), rewards.detach()


def list_margins(rewards, sizes):
    """r_i - r_j of every ordered pair i<j within each list (best first): > 0 where the order is right."""
    margins = []
    for r in torch.split(rewards, sizes):
        i, j = torch.triu_indices(len(r), len(r), offset=1)
        margins.append(r[i] - r[j])
    return torch.cat(margins)


def preference_loss(lm, ref_lm, batch, beta, loss_type, accelerator, pad_token_id):
    """The loss of a batch (one forward of all its answers through each model) and the implicit-reward margins
    of every ordered pair within its lists. With --loss pairs every list is a pair: chosen, then rejected."""
    policy_logps = answer_logps(lm, batch, pad_token_id)
    with torch.no_grad(), accelerator.autocast():
        ref_logps = answer_logps(ref_lm, batch, pad_token_id)
    if loss_type == "plackett_luce":
        loss, rewards = plackett_luce_loss(policy_logps, ref_logps, batch["sizes"], beta)
        return loss, list_margins(rewards, batch["sizes"])
    loss, chosen_rewards, rejected_rewards = dpo_loss(policy_logps[0::2], policy_logps[1::2], ref_logps[0::2],
                                                      ref_logps[1::2], beta)
    return loss, chosen_rewards - rejected_rewards


@torch.no_grad()
def evaluate(lm, ref_lm, dev_loader, beta, loss_type, accelerator, pad_token_id):
    """Preference accuracy and mean reward margin over every dev pair (within each dev list; gathered from every
    process)."""
    margins = []
    for batch in dev_loader:
        _, batch_margins = preference_loss(lm, ref_lm, batch, beta, loss_type, accelerator, pad_token_id)
        margins.append(accelerator.gather_for_metrics(batch_margins))
    margins = torch.cat(margins)
    return {"preference_acc": (margins > 0).float().mean().item(), "reward_margin": margins.mean().item()}


def train_step(lm, ref_lm, batch, optimizer, scheduler, args, accelerator, pad_token_id, step):
    """Step number `step` on a batch: its (loss, preference accuracy, mean margin) as a tensor. A NaN or infinite
    loss on any process stops the run (utils/run.py `stop_if_not_finite`) before the update."""
    loss, margins = preference_loss(lm, ref_lm, batch, args.beta, args.loss, accelerator, pad_token_id)
    stop_if_not_finite(loss.detach(), f"step {step}", "--learning_rate", accelerator)
    optimizer_step(accelerator, optimizer, loss)
    scheduler.step()
    return torch.stack([loss.detach(), (margins > 0).float().mean(), margins.mean()])


def print_samples(accelerator, policy, tokenizer, prompts, gen_len):
    """One fresh answer per prompt: how the policy writes now (printed by the main process)."""
    if not prompts:
        return
    with for_generation(accelerator, policy) as whole:  # gathered once on every process when sharded
        if accelerator.is_main_process:
            responses = generate_responses(whole, tokenizer, [encode_prompt(tokenizer, p) for p in prompts], gen_len)
            print(f"Random Sample {len(prompts)} text(s) of model output:")
            for i, (prompt, response) in enumerate(zip(prompts, responses), start=1):
                print(f"{i}. {prompt}{decode(tokenizer, response)}")


def training_batches(accelerator, train_loader, batches, global_step, epochs):
    """The batches from after step `global_step` on, in the shuffled order of an uninterrupted run."""
    steps_per_epoch = len(train_loader)
    for epoch in range(global_step // steps_per_epoch + 1, epochs + 1):
        batches.epoch = epoch - 1
        loader = train_loader
        if global_step > (epoch - 1) * steps_per_epoch:  # resumed within this epoch
            loader = accelerator.skip_first_batches(train_loader, global_step - (epoch - 1) * steps_per_epoch)
        yield from loader


def main(argv=None):
    args = parse_args(argv)
    accelerator = accelerator_for(args)
    set_seed(args.seed)
    resume_state = load_checkpoint_state(args.resume, "dpo") if args.resume else None  # before anything is written
    train_items, dev_items = read_data(args, accelerator)
    unit = "rank lists" if args.loss == "plackett_luce" else "preference pairs"

    # the policy and its frozen reference, as the PPO scripts load them (dropout off, unsampled tokens masked)
    policy, ref_model, tokenizer = load_policy(args.resume or args.model_name, accelerator.device,
                                               args.ref_model_name, chat_template=args.chat_template,
                                               lora=lora_options(args))
    base_model = resume_state["base_model"] if resume_state else (args.ref_model_name or args.model_name)
    if os.path.isdir(base_model):
        base_model = os.path.abspath(base_model)  # a checkpoint must find its reference from any directory
    sample_prompts = sorted({prompt for prompt, _ in train_items if prompt})[:args.print_samples]
    check_room(policy, max((len(encode_prompt(tokenizer, p)) for p in sample_prompts), default=0),
               args.max_new_tokens)
    # the positions: GPT-2 names them n_positions, the others max_position_embeddings
    positions = getattr(policy.config, "n_positions", None) or policy.config.max_position_embeddings
    max_seq_len = min(args.max_seq_len, positions)
    train_set, train_unscorable = encode_lists(tokenizer, train_items, max_seq_len)
    dev_set, _ = encode_lists(tokenizer, dev_items, max_seq_len)
    if train_unscorable:
        accelerator.print(f"left out {train_unscorable} training answer(s) the model cannot score (an empty answer, "
                          "no room after the prompt, or a token the model never writes such as [UNK]) and "
                          f"{len(train_items) - len(train_set)} {unit} left with fewer than 2 answers")
    if not train_set or not dev_set:
        raise UserError(f"no {'training' if not train_set else 'dev'} {unit} the model can score: nothing to train on")

    batches = ShuffledBatches(len(train_set), args.batch_size, args.seed)
    train_loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate)
    dev_loader = DataLoader(sorted(dev_set, key=lambda item: len(item[0]) + max(map(len, item[1]))),
                            batch_size=args.batch_size, collate_fn=collate)
    # AdamW at torch's weight decay, 0.01
    lm, optimizer = prepare_trainable(accelerator, policy, learning_rate=args.learning_rate, weight_decay=0.01)
    ref_lm = prepare_frozen(accelerator, ref_model, trained=lm)
    train_loader, dev_loader = accelerator.prepare(train_loader, dev_loader)
    total_steps = len(train_loader) * args.num_train_epochs  # per process, after sharding the batches
    global_step = int(resume_state["step"]) if resume_state else 0
    # the learning rate where the checkpoint left it (AdamW's moments start afresh); a schedule that starts after
    # step 0 reads the base rate from "initial_lr"
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps,
                                                last_epoch=global_step - 1)
    run = Run(accelerator, args, unit="step", start=global_step, total=total_steps, save_every=args.valid_steps,
              resume=bool(args.resume), redo_from=global_step + 1)
    run.header(f"{len(train_set)} train / {len(dev_set)} dev {unit}; beta {args.beta}; "
               f"{accelerator.device} x {accelerator.num_processes}{' sharded (FSDP2)' if args.fsdp else ''}; "
               f"{total_steps} steps" + (f", resuming after step {global_step}" if global_step else ""))
    stream = training_batches(accelerator, train_loader, batches, global_step, args.num_train_epochs)

    def epoch_of(step):
        return (step - 1) // len(train_loader) + 1

    def save(reason):
        metrics = {}
        if reason != "interrupted":
            metrics = evaluate(lm, ref_lm, dev_loader, args.beta, args.loss, accelerator, tokenizer.pad_token_id)
            accelerator.print("Evaluation acc: " + ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()))
            run.log({"step": run.completed, "epoch": epoch_of(run.completed), **metrics})
            run.plot(PANELS, order=PANELS)
            print_samples(accelerator, lm, tokenizer, sample_prompts, args.max_new_tokens)
        state = dict(algorithm="dpo", reason=reason, epoch=epoch_of(run.completed), step=run.completed,
                     kl_coef=args.beta, base_model=base_model, loss=args.loss, **metrics)
        save_checkpoint(accelerator, lm, tokenizer, checkpoint_name(args.save_dir, run.completed), state)

    recent = []
    with run:
        for step in run.loop(save):
            recent.append(train_step(lm, ref_lm, next(stream), optimizer, scheduler, args, accelerator,
                                     tokenizer.pad_token_id, step + 1))
            run.trained()
            if (step + 1) % args.logging_steps == 0:
                loss_, acc, margin = accelerator.gather(torch.stack(recent)).mean(0).tolist()
                accelerator.print(f"global step {step + 1}, epoch: {epoch_of(step + 1)}, loss: {loss_:.5f}, "
                                  f"speed: {run.steps_per_second(args.logging_steps):.2f} step/s")
                run.log({"step": step + 1, "epoch": epoch_of(step + 1), "train_loss": loss_, "train_acc": acc,
                         "train_margin": margin, "learning_rate": scheduler.get_last_lr()[0]})
                recent = []


if __name__ == "__main__":
    run_main(main)
