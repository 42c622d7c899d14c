"""Train a reward model from rank lists (section 3 of the original tutorial).

Each line of the TSV files is one rank list, texts separated by tabs, best first. An encoder (ERNIE 3.0 base
by default) plus a linear head scores every text; the loss is the mean over every ordered pair i<j of a list
of -log sigmoid(r_i - r_j), so better texts learn higher scores. `--loss listwise` uses each whole list instead
(ListMLE: -log of the list's probability under the Plackett-Luce model, drawing the best text first with
probability softmax of the scores, then the best of the rest, ...); for lists of 2 the two are the same.

    python train_reward_model.py --tiny                        # offline tiny encoder, a few minutes on a CPU
    accelerate launch --multi_gpu --num_processes 2 train_reward_model.py --tiny   # 2 processes (GPUs or CPUs)
    torchrun --standalone --nproc_per_node 2 train_reward_model.py --tiny --fsdp  # the model sharded over 2 (FSDP2)

Without GPUs, `accelerate launch --multi_gpu` runs the processes on the CPU (gloo); accelerate's own
`--cpu --num_processes N` starts only one process unless mpirun is set up.
"""
import argparse
import hashlib
import json
import math
import os
import random

import torch
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

from utils.device import add_mixed_precision_argument, set_seed
from utils.errors import UserError, run_main
from utils.models import load_pretrained
from utils.options import (ArgumentParser, add_device_argument, add_report_to_argument, file_name, fraction,
                           input_file, learning_rate, nonnegative_float, output_folder, positive_int, ratio,
                           same_file, seed)
from utils.data import RANK_LIST_DIR, ensure_datasets
from utils.outputs import STEP_LOG, check_outputs, inputs_with_metadata, log_outputs
from utils.ranklists import (add_merge_arguments, merge_rank_lists, read_prompted_rank_lists, read_rank_lists,
                             split_rank_lists)
from utils.reward_model import (META_FILE, RewardModel, encode_rank_lists, listwise_loss, rank_list_loss,
                                ranking_metrics, save_reward_model, scores_to_lists, usable_seq_len)
from utils.presets import Preset, parse_with_presets
from utils.run import Run, accelerator_for, add_fsdp_argument, prepare_trainable, written_by_main
from utils.tiny import TINY_ENCODER

DEFAULT_TRAIN = os.path.join(RANK_LIST_DIR, "train.tsv")
DEFAULT_DEV = os.path.join(RANK_LIST_DIR, "dev.tsv")
# --tiny: a 3-layer encoder needs a larger step than ERNIE's 1e-5, and was pretrained on texts of at most
# 64 tokens; on the corpus-made lists its dev ranking peaked within the first epoch (more epochs lowered it)
ORIGINAL = dict(model_name="nghuyong/ernie-3.0-base-zh", learning_rate=1e-5, num_train_epochs=10, batch_size=32,
                valid_steps=50, max_seq_len=128)
TINY = dict(model_name=TINY_ENCODER, learning_rate=5e-4, num_train_epochs=1, batch_size=16, valid_steps=50,
            max_seq_len=64)
PRESETS = [Preset("--tiny", lambda args: args.tiny, TINY)]
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")  # AdamW's weight decay leaves these alone


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", "--model", help="encoder: hub name or local folder")
    parser.add_argument("--train_path", type=input_file,
                        help=f"training rank lists (TSV, best first; default {DEFAULT_TRAIN}, built once)")
    parser.add_argument("--dev_path", type=input_file,
                        help="evaluation rank lists (TSV, best first); default: the corpus dev.tsv "
                                           "with the default --train_path, else a --dev_ratio share of --train_path")
    parser.add_argument("--dev_ratio", type=ratio, default=0.1,
                        help="without --dev_path: the share of --train_path's rank lists held out for evaluation "
                             "(a random split, the same for the same --seed)")
    parser.add_argument("--save_dir", type=output_folder,
                        default=os.path.join("checkpoints", "reward_model", "sentiment_analysis"))
    parser.add_argument("--log_dir", "--img_log_dir", type=output_folder,
                        default=os.path.join("logs", "reward_model", "sentiment_analysis"))
    parser.add_argument("--log_name", "--img_log_name", type=file_name, default="ERNIE Reward Model",
                        help="logs: <log_dir>/<log_name>.jsonl and .png")
    add_report_to_argument(parser)
    parser.add_argument("--batch_size", type=positive_int, help="rank lists per step")
    parser.add_argument("--loss", choices=("pairwise", "listwise"), default="pairwise",
                        help="pairwise: every ordered pair of each list; listwise: each whole list (ListMLE)")
    parser.add_argument("--max_seq_len", type=positive_int, help="longest text in tokens (longer ones are cut)")
    parser.add_argument("--learning_rate", "--lr", type=learning_rate)
    parser.add_argument("--weight_decay", type=nonnegative_float, default=0.0)
    parser.add_argument("--num_train_epochs", type=positive_int)
    parser.add_argument("--warmup_ratio", type=fraction, default=0.06, help="share of the steps with a rising lr")
    parser.add_argument("--valid_steps", type=positive_int, help="evaluate and save every N steps")
    parser.add_argument("--logging_steps", type=positive_int, default=10)
    add_device_argument(parser)
    add_mixed_precision_argument(parser)
    add_fsdp_argument(parser)
    parser.add_argument("--tiny", action="store_true",
                        help="offline: the project's tiny encoder, with settings tuned for it, unless given")
    parser.add_argument("--seed", type=seed, default=42)
    parser.add_argument("--skip_bad_lines", action="store_true", help="skip and count bad TSV lines")
    add_merge_arguments(parser)
    parser.set_defaults(**ORIGINAL)
    args = parse_with_presets(parser, argv, PRESETS, check=check_options)
    args.train_path = args.train_path or DEFAULT_TRAIN  # built from the corpus on first use
    return args


def check_options(args):
    """The checks that involve two options (each option alone is checked by its `type=`)."""
    if args.dev_path and same_file(args.train_path, args.dev_path):
        raise UserError(f"--dev_path {args.dev_path} is the training file: evaluation needs lists not trained on")
    check_outputs(log_outputs(args.log_dir, args.log_name, STEP_LOG),
                  inputs_with_metadata("--train_path", args.train_path or DEFAULT_TRAIN)
                  + inputs_with_metadata("--dev_path", args.dev_path))


def read_data(args, accelerator):
    """Train and dev rank lists, read (and checked) before any model is loaded."""
    dev_path = args.dev_path or (DEFAULT_DEV if args.train_path == DEFAULT_TRAIN else None)
    if DEFAULT_TRAIN in (args.train_path, dev_path):
        with accelerator.main_process_first():  # one process builds the corpus datasets if missing
            ensure_datasets()
    train = read_lists(args.train_path, args, accelerator)
    if dev_path is None:
        train, dev = split_rank_lists(train, args.dev_ratio, args.seed, args.train_path)
        accelerator.print(f"no --dev_path: {len(dev)} of the {len(train) + len(dev)} rank lists in {args.train_path} "
                          f"held out for evaluation (--dev_ratio {args.dev_ratio})")
        return train, dev
    return train, read_lists(dev_path, args, accelerator)


def read_lists(path, args, accelerator):
    """The rank lists of a file; with --merge consensus one per task (utils/ranklists.py merge_rank_lists)."""
    if args.merge == "all" and args.min_agreement is None:
        return read_rank_lists(path, skip_bad_lines=args.skip_bad_lines)
    merged, summary = merge_rank_lists(read_prompted_rank_lists(path, args.skip_bad_lines), args.merge,
                                       args.min_agreement)
    accelerator.print(f"{path}: {summary}")
    return [rank_list.texts for rank_list in merged]


def load_encoder(args):
    return load_pretrained(AutoModel, args.model_name), load_pretrained(AutoTokenizer, args.model_name)


class SimilarLengthBatches:
    """Shuffled batches of rank lists of similar length, so that padding each batch to its longest
    text wastes little: the lists are shuffled, sorted by length within windows of 50 batches, cut
    into batches, and the full batches shuffled (a short one stays last). Every process draws the
    same order (same seed)."""

    def __init__(self, rank_lists, batch_size, seed, window=50):
        self.lengths = [max(len(t) for t in r) for r in rank_lists]
        self.batch_size, self.seed, self.window, self.epoch = batch_size, seed, window, 0

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        span = self.window * self.batch_size
        order = [i for w in range(0, len(order), span)
                 for i in sorted(order[w:w + span], key=self.lengths.__getitem__)]
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # a short batch stays last: accelerate deals the batches out to its processes in rounds, and a round whose
        # last batch is short is dropped unless it is the epoch's last (steps lost, the final evaluation skipped)
        full = [batch for batch in batches if len(batch) == self.batch_size]
        rng.shuffle(full)
        return iter(full + [batch for batch in batches if len(batch) < self.batch_size])

    def __len__(self):
        return math.ceil(len(self.lengths) / self.batch_size)


def make_loader(rank_lists, tokenizer, max_seq_len, batch_size, seed=None):
    """Batches of rank lists; each batch is all its texts as one dynamically padded encoder input.
    With a seed: shuffled similar-length batches (training); without: the lists in the given order."""
    k = max(len(r) for r in rank_lists)  # one list width per file, so processes can gather eval scores

    def collate(batch):
        encoded, mask = encode_rank_lists(tokenizer, batch, max_seq_len)
        pad = torch.zeros(len(batch), k - mask.shape[1], dtype=torch.bool)
        return {**encoded, "list_mask": torch.cat([mask, pad], dim=1)}

    if seed is None:
        return DataLoader(rank_lists, batch_size=batch_size, collate_fn=collate)
    return DataLoader(rank_lists, batch_sampler=SimilarLengthBatches(rank_lists, batch_size, seed), collate_fn=collate)


def score_batch(model, batch):
    """(batch, K) scores: one encoder forward over all the batch's texts."""
    list_mask = batch.pop("list_mask")
    return scores_to_lists(model(**batch), list_mask), list_mask


@torch.no_grad()
def evaluate(model, dev_loader, accelerator):
    """The four ranking metrics over the whole dev set (gathered from every process)."""
    model.eval()
    score_lists = []
    for batch in dev_loader:
        scores, list_mask = accelerator.gather_for_metrics(score_batch(model, batch))
        score_lists += [row[keep].tolist() for row, keep in zip(scores.float().cpu(), list_mask.cpu())]
    model.train()
    return ranking_metrics(score_lists)


def save_checkpoint(model, tokenizer, out_dir, accelerator, reason, evaluation=None):
    """Written by the main process (gathered from the shards under FSDP2)."""
    written_by_main(accelerator, model, lambda unwrapped, weights: save_reward_model(
        unwrapped, tokenizer, out_dir, reason, evaluation, weights))


def dev_fingerprint(dev_lists):
    """Which dev lists a score was measured on (their order aside): scores on other lists are not comparable."""
    return hashlib.sha1(json.dumps(sorted(dev_lists), ensure_ascii=False).encode("utf-8")).hexdigest()


def earlier_best(save_dir, fingerprint):
    """(path, pairwise accuracy) of the `model_best` an earlier run left in `save_dir`; the accuracy is None when
    that model was not scored on the same dev lists; (path, None) too when there is none."""
    path = os.path.join(save_dir, "model_best")
    try:
        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        accuracy = meta["dev_metrics"]["pairwise_acc"]
    except (OSError, ValueError, KeyError, TypeError):
        return path, None
    same_lists = meta.get("dev_lists") == fingerprint and isinstance(accuracy, (int, float)) and math.isfinite(accuracy)
    return path, accuracy if same_lists else None


def announce_earlier_best(path, accuracy, accelerator):
    """Say what becomes of an earlier run's model_best: kept unless this run beats it, or (scored on other dev
    lists) replaced by this run's best."""
    if accuracy is not None:
        accelerator.print(f"{path} (an earlier run's) has pairwise_acc {accuracy:.5f} on these dev lists: it is "
                          "kept unless this run does better")
    elif os.path.isdir(path):
        accelerator.print(f"note: {path} (an earlier run's) was not scored on these dev lists, so it cannot be "
                          "compared: this run's best replaces it")


def main(argv=None):
    args = parse_args(argv)
    accelerator = accelerator_for(args)
    set_seed(args.seed)

    train_lists, dev_lists = read_data(args, accelerator)
    fingerprint = dev_fingerprint(dev_lists)
    best_path, earlier_acc = earlier_best(args.save_dir, fingerprint)
    announce_earlier_best(best_path, earlier_acc, accelerator)
    encoder, tokenizer = load_encoder(args)
    model = RewardModel(encoder)
    max_seq_len = usable_seq_len(model, args.max_seq_len)
    tokenizer.model_max_length = max_seq_len  # saved with the checkpoint, so scoring cuts texts where training did
    train_loader = make_loader(train_lists, tokenizer, max_seq_len, args.batch_size, seed=args.seed)
    # sorted by length, the dev batches pad little too (the metrics do not depend on the order of lists)
    dev_lists = sorted(dev_lists, key=lambda r: max(len(t) for t in r))
    dev_loader = make_loader(dev_lists, tokenizer, max_seq_len, args.batch_size)
    # AdamW without weight decay on biases and LayerNorm weights, as the original
    model, optimizer = prepare_trainable(accelerator, model, learning_rate=args.learning_rate,
                                         weight_decay=args.weight_decay, no_decay=NO_DECAY)
    train_loader, dev_loader = accelerator.prepare(train_loader, dev_loader)
    total_steps = len(train_loader) * args.num_train_epochs  # per process, after sharding the batches
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    run = Run(accelerator, args, unit="step", start=0, total=total_steps, save_every=args.valid_steps, redo_from=1)
    run.header(f"{len(train_lists)} train / {len(dev_lists)} dev rank lists; encoder {type(encoder).__name__} "
               f"({sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M parameters) on {accelerator.device} x "
               f"{accelerator.num_processes}{' sharded (FSDP2)' if args.fsdp else ''}; {total_steps} steps")
    best = {"acc": earlier_acc}

    def save(reason):
        step = run.completed
        if reason == "interrupted":
            save_checkpoint(model, tokenizer, os.path.join(args.save_dir, f"model_{step}"), accelerator, reason)
            accelerator.print(f"stopped after step {step}: saved {os.path.join(args.save_dir, f'model_{step}')}")
        else:
            best["acc"] = evaluate_and_save(model, tokenizer, dev_loader, accelerator, run, args, step, best["acc"],
                                            fingerprint)

    batches = ((epoch, batch) for epoch in range(1, args.num_train_epochs + 1) for batch in train_loader)
    recent_losses = []
    with run:
        for step in run.loop(save):
            epoch, batch = next(batches)
            scores, list_mask = score_batch(model, batch)
            loss = (listwise_loss if args.loss == "listwise" else rank_list_loss)(scores, list_mask)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            run.trained()
            recent_losses.append(loss.detach())
            if (step + 1) % args.logging_steps == 0:  # the loss read every few steps: the device need not wait
                mean_loss = accelerator.gather(torch.stack(recent_losses)).mean().item()
                run.check(mean_loss, "--learning_rate (or --weight_decay)")
                accelerator.print(f"global step {step + 1}, epoch: {epoch}, loss: {mean_loss:.5f}, "
                                  f"speed: {run.steps_per_second(args.logging_steps):.2f} step/s")
                run.log({"step": step + 1, "epoch": epoch, "train_loss": mean_loss,
                         "learning_rate": scheduler.get_last_lr()[0]})
                recent_losses = []
    if earlier_acc is not None and best["acc"] == earlier_acc:
        accelerator.print(f"this run did not beat {best_path} (pairwise_acc {earlier_acc:.5f}): it is kept")


def evaluate_and_save(model, tokenizer, dev_loader, accelerator, run, args, global_step, best_acc, fingerprint):
    """Dev metrics, `model_<step>` every time and `model_best` when pairwise accuracy improved on `best_acc` (this
    run's best so far, or the earlier run's model_best on the same dev lists)."""
    metrics = evaluate(model, dev_loader, accelerator)
    accelerator.print("Evaluation acc: " + ", ".join(f"{k} {v:.5f}" for k, v in metrics.items()))
    run.log({"step": global_step, **metrics})
    run.plot()
    evaluation = {"dev_metrics": metrics, "dev_lists": fingerprint}
    save_checkpoint(model, tokenizer, os.path.join(args.save_dir, f"model_{global_step}"), accelerator, "periodic",
                    evaluation)
    if best_acc is None or metrics["pairwise_acc"] > best_acc:
        accelerator.print(f"best pairwise_acc performance has been updated: {best_acc or 0:.5f} --> "
                          f"{metrics['pairwise_acc']:.5f}")
        save_checkpoint(model, tokenizer, os.path.join(args.save_dir, "model_best"), accelerator, "best", evaluation)
        best_acc = metrics["pairwise_acc"]
    return best_acc


if __name__ == "__main__":
    run_main(main)
