"""Reward model: a pretrained encoder plus a linear head that gives each text one scalar score.

It learns from rank lists (best first) with the rank-list loss: the mean over every ordered pair i<j of
-log sigmoid(r_i - r_j). A checkpoint is a folder written by `save_reward_model`:

    config.json, model.safetensors, vocab.txt, ...   the encoder and tokenizer (`save_pretrained`)
    reward_head.safetensors                          the linear head's weight and bias
    reward_model.json                                encoder class and head size

Nothing is ever unpickled: the encoder is loaded with `use_safetensors=True`, the head with safetensors.
"""
import glob
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from utils.errors import UserError
from utils.files import check_safetensors, folder_written_atomically
from utils.models import quiet_transformers
from utils.options import checked_by
from utils.run import check_finite_weights

HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


class RewardModel(torch.nn.Module):
    """`encoder` (any `transformers` encoder) + `Linear(hidden_size, 1)` on its pooled output."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """Scores of shape (N,) for N texts."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:  # encoders without a pooler: the [CLS] (first) hidden state
            pooled = out.last_hidden_state[:, 0]
        return self.head(pooled).squeeze(-1)


# ---------------------------------------------------------------- loss and metrics
def rank_list_loss(scores, mask=None):
    """Mean over every ordered pair i<j (of every list in the batch) of -log sigmoid(r_i - r_j).

    `scores` is (batch, K), each row best first; `mask` (batch, K) marks the real texts of lists shorter
    than K (they must come first in their row). Pairs are pooled over the batch, as the original's loop did.
    """
    k = scores.shape[1]
    pairs = torch.ones(k, k, dtype=torch.bool, device=scores.device).triu(diagonal=1)  # i < j
    pairs = pairs.expand(scores.shape[0], k, k)
    if mask is not None:
        pairs = pairs & mask[:, :, None] & mask[:, None, :]
    diff = scores[:, :, None] - scores[:, None, :]  # diff[b, i, j] = r_i - r_j
    return -F.logsigmoid(diff[pairs]).mean()


def listwise_loss(scores, mask=None):
    """ListMLE: the mean over lists of -log P(the list's order) under Plackett-Luce on the scores,
    -sum_k [r_k - log sum_{j>=k} exp(r_j)] over each list's texts but its last (best first; `mask` as for
    rank_list_loss). For lists of 2 it is exactly rank_list_loss; for longer ones each list weighs alike
    (the pairwise loss weighs a list by its number of pairs) and the order at the top counts most.
    """
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    scores = torch.where(mask, scores, torch.full_like(scores, -1e9))  # padded texts: never drawn
    # log sum_{j>=k} exp(r_j) for every k: a cumulative logsumexp from the end of the row
    rest = torch.logcumsumexp(scores.flip(1), dim=1).flip(1)
    positions = torch.arange(scores.shape[1], device=scores.device)
    drawn = mask & (positions < mask.sum(dim=1, keepdim=True) - 1)  # the last text is drawn with probability 1
    return -((scores - rest) * drawn).sum(dim=1).mean()


def ranking_metrics(score_lists):
    """How well scores follow rank lists (each list of floats in the file's best-first order).

    pairwise_acc       share of ordered pairs i<j with r_i > r_j, over all pairs of all lists
    exact_order_acc    share of lists whose scores strictly decrease (the original's "acc")
    kendall_tau        Kendall's tau between scores and file order, averaged over lists (ties count 0)
    best_vs_worst_acc  share of lists whose first text scores above their last
    """
    right_pairs = total_pairs = exact = best_vs_worst = 0
    taus = []
    for scores in score_lists:
        concordant = discordant = 0
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                concordant += scores[i] > scores[j]
                discordant += scores[i] < scores[j]
        n_pairs = len(scores) * (len(scores) - 1) // 2
        right_pairs += concordant
        total_pairs += n_pairs
        exact += concordant == n_pairs
        taus.append((concordant - discordant) / n_pairs)
        best_vs_worst += scores[0] > scores[-1]
    n = len(score_lists)
    if n == 0:
        raise ValueError("ranking_metrics needs at least one rank list")
    return {"pairwise_acc": right_pairs / total_pairs, "exact_order_acc": exact / n,
            "kendall_tau": sum(taus) / n, "best_vs_worst_acc": best_vs_worst / n}


def score_and_rank_metrics(rank_lists, score):
    """`ranking_metrics` of rank lists scored by `score` (texts -> their scores), all texts in one call."""
    flat = score([t for r in rank_lists for t in r])
    score_lists, start = [], 0
    for r in rank_lists:
        score_lists.append(flat[start:start + len(r)])
        start += len(r)
    return ranking_metrics(score_lists)


# ---------------------------------------------------------------- batching texts
def usable_seq_len(model, max_seq_len):
    """`max_seq_len`, capped by the encoder's position embeddings (small encoders have fewer than 512)."""
    limit = getattr(model.encoder.config, "max_position_embeddings", None)
    return min(max_seq_len, limit) if limit else max_seq_len


def encode_texts(tokenizer, texts, max_seq_len):
    """One padded batch, padded to its longest text only (dynamic padding), truncated at `max_seq_len`."""
    return tokenizer(list(texts), padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt")


def encode_rank_lists(tokenizer, rank_lists, max_seq_len):
    """All texts of a batch of rank lists as one encoder batch, plus the (batch, K) mask of real texts."""
    k = max(len(r) for r in rank_lists)
    mask = torch.tensor([[i < len(r) for i in range(k)] for r in rank_lists])
    batch = encode_texts(tokenizer, [t for r in rank_lists for t in r], max_seq_len)
    return dict(batch), mask


def scores_to_lists(scores, mask):
    """Scatter the flat (N,) scores of `encode_rank_lists` texts into a (batch, K) tensor (0 where masked)."""
    grid = scores.new_zeros(mask.shape)
    grid[mask.to(scores.device)] = scores
    return grid


@torch.no_grad()
def score_texts(model, tokenizer, texts, batch_size=32, max_seq_len=128):
    """Scores of `texts` as floats, in batches of similar lengths (so each pads little). Texts are cut at
    `max_seq_len` tokens, or earlier where the checkpoint's tokenizer says training cut them."""
    model.eval()
    device = next(model.parameters()).device
    max_seq_len = min(usable_seq_len(model, max_seq_len), tokenizer.model_max_length)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    scores = [0.0] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = encode_texts(tokenizer, [texts[i] for i in idx], max_seq_len).to(device)
        for i, s in zip(idx, model(**batch).float().cpu().tolist()):
            scores[i] = s
    return scores


# ---------------------------------------------------------------- checkpoints
def save_reward_model(model, tokenizer, out_dir, reason=None, evaluation=None, weights=None):
    """Write the checkpoint into a temporary folder, then rename it into place (`folder_written_atomically`): a
    killed save never leaves a half-written `out_dir`, and the previous one stays loadable until the new one is
    complete. `evaluation` (the dev metrics and which dev lists gave them) goes into its META_FILE. `weights` is the
    model's state dict gathered from its shards (utils.sharding.full_state_dict); without it, the model's own."""
    weights = dict(model.state_dict() if weights is None else weights)
    head = {"weight": weights["head.weight"].detach().cpu().contiguous(), "bias": weights["head.bias"].detach().cpu()}
    encoder_weights = {name[len("encoder."):]: tensor for name, tensor in weights.items() if name.startswith("encoder.")}
    meta = {"encoder_class": type(model.encoder).__name__, "hidden_size": model.head.in_features,
            "head": "Linear(hidden_size, 1) on the pooled output ([CLS] state when there is no pooler)",
            "algorithm": "reward_model", "reason": reason, **(evaluation or {})}
    check_finite_weights(weights.items(), out_dir, hint="--learning_rate (or --weight_decay)")
    with folder_written_atomically(out_dir, META_FILE) as tmp:
        model.encoder.save_pretrained(tmp, state_dict=encoder_weights)
        tokenizer.save_pretrained(tmp)
        save_file(head, os.path.join(tmp, HEAD_FILE))
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)


def load_reward_model(path, device=None):
    """(model in eval mode, tokenizer) from a `save_reward_model` folder; UserError for anything else."""
    check_checkpoint(path)
    with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    quiet_transformers()
    try:
        encoder = AutoModel.from_pretrained(path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        head = load_file(os.path.join(path, HEAD_FILE))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: broken reward-model checkpoint: {str(e).splitlines()[0]}") from e
    if type(encoder).__name__ != meta.get("encoder_class"):
        raise UserError(f"{path}: {META_FILE} names encoder {meta.get('encoder_class')!r}, "
                        f"but the folder holds a {type(encoder).__name__}")
    model = RewardModel(encoder)
    if head.get("weight") is None or tuple(head["weight"].shape) != tuple(model.head.weight.shape):
        raise UserError(f"{path}: {HEAD_FILE} does not fit an encoder of hidden size {encoder.config.hidden_size}")
    model.head.load_state_dict(head)
    model.to(device or "cpu").eval()
    return model, tokenizer


def check_checkpoint(path):
    """UserError unless `path` is a reward-model folder; names old pickled checkpoints explicitly."""
    pickled = "it is a pickled PyTorch file: loading it would run any code it contains, so it is " \
              "not supported; retrain with train_reward_model.py, which saves safetensors folders"
    if os.path.isfile(path):
        raise UserError(f"{path}: not a reward-model checkpoint folder"
                        + (f"; {pickled}" if path.endswith(PICKLE_SUFFIXES) else ""))
    if not os.path.isdir(path):
        previous = glob.glob(f"{glob.escape(os.path.normpath(path))}.*.tmp.previous")
        hint = f" (a save was interrupted: the previous checkpoint is {previous[0]})" if previous else ""
        raise UserError(f"{path}: no such checkpoint folder{hint}")
    if not os.path.isfile(os.path.join(path, META_FILE)):
        old = [name for name in sorted(os.listdir(path)) if name.endswith(PICKLE_SUFFIXES)]
        if old:
            raise UserError(f"{path}: no {META_FILE}, only {old[0]}: {pickled}")
        raise UserError(f"{path}: not a reward-model checkpoint (no {META_FILE}; "
                        "expected a folder written by train_reward_model.py)")
    for name in (HEAD_FILE, "model.safetensors"):
        if not os.path.isfile(os.path.join(path, name)):
            raise UserError(f"{path}: incomplete reward-model checkpoint ({name} is missing)")
        check_safetensors(os.path.join(path, name))


reward_model_folder = checked_by(check_checkpoint, "reward_model_folder")  # the `type=` of reward-model options
