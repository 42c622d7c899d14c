"""Reward sources for the PPO and GRPO loops: plain callables, list of texts in, list of floats out.

    SentimentPipelineReward   probability of the positive label from a `sentiment-analysis` pipeline
    RewardModelReward         the raw scalar score of a reward model saved by train_reward_model.py
    make_reward_source        the reward source that the arguments choose (PPO, GRPO)
    make_reward_and_judge     the same and the independent judge (PPO)
    RewardNormalizer          raw scores -> the rewards PPO is given (none | reference | batch)

(terminal_main.py plugs a person in the same way.)
"""
import math
import warnings

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from utils.errors import UserError
from utils.models import load_pretrained
from utils.reward_model import load_reward_model, score_texts

REWARD_NORMS = ("none", "reference", "batch")
TINY_STD = 1e-6  # a spread of scores below this is no spread at all


def positive_label(id2label, model_name):
    """The name of the positive label of a two-label sentiment classifier, chosen by name, never by
    position: label order has flipped between model versions before, silently inverting the reward."""
    labels = sorted(id2label.values())
    positives = [name for name in labels if name.lower().startswith("positive")]
    negatives = [name for name in labels if name.lower().startswith("negative")]
    if len(labels) != 2 or len(positives) != 1 or len(negatives) != 1:
        raise UserError(f"{model_name}: expected a sentiment classifier with a 'positive ...' and a "
                        f"'negative ...' label, but its labels are {labels}")
    return positives[0]


class SentimentPipelineReward:
    """Reward = probability of the positive label, from `pipeline('sentiment-analysis')`."""
    name = "positive_prob"  # what its scores are, in log fields such as judge_positive_prob

    def __init__(self, model_name_or_path, device, batch_size=64, max_length=128):
        model = load_pretrained(AutoModelForSequenceClassification, model_name_or_path)
        tokenizer = load_pretrained(AutoTokenizer, model_name_or_path)
        tokenizer.model_max_length = min(tokenizer.model_max_length, max_length,
                                         getattr(model.config, "max_position_embeddings", max_length))
        self.positive = positive_label(model.config.id2label, model_name_or_path)
        self.batch_size = batch_size
        self.pipe = pipeline("sentiment-analysis", model=model, tokenizer=tokenizer, device=device)

    def __call__(self, texts):
        outputs = self.pipe(list(texts), batch_size=self.batch_size, truncation=True, top_k=None)
        return [next(o["score"] for o in scores if o["label"] == self.positive) for scores in outputs]


class RewardModelReward:
    """Reward = the reward model's raw score of each text. Its scale is arbitrary (the rank-list loss only fixes
    differences between scores): `RewardNormalizer` gives it one."""
    name = "rm_score"

    def __init__(self, path, device, batch_size=64, max_seq_len=128):
        self.model, self.tokenizer = load_reward_model(path, device)
        self.batch_size, self.max_seq_len = batch_size, max_seq_len

    def __call__(self, texts):
        return score_texts(self.model, self.tokenizer, list(texts), self.batch_size, self.max_seq_len)


def make_reward_source(args, device):
    """The reward the arguments choose: `args.reward_model` (a reward-model folder) if given, else the sentiment
    classifier `args.sentiment_model`."""
    if args.reward_model:
        return RewardModelReward(args.reward_model, device, batch_size=args.reward_batch_size)
    return SentimentPipelineReward(args.sentiment_model, device, batch_size=args.reward_batch_size)


def make_reward_and_judge(args, device):
    """(reward source, judge or None), both loaded and checked here, before a script writes anything.

    The reward is `make_reward_source`'s. The judge is a scorer the policy is not trained on: `args.judge_model`
    (a reward-model folder) if given, else the sentiment classifier when a reward model is the reward, else none.
    """
    reward = make_reward_source(args, device)
    batch_size = args.reward_batch_size
    judge = None
    if getattr(args, "judge_model", None):
        judge = RewardModelReward(args.judge_model, device, batch_size=batch_size)
    elif args.reward_model:
        judge = SentimentPipelineReward(args.sentiment_model, device, batch_size=batch_size)
    return reward, judge


def mean_std(values, accelerator=None):
    """Mean and standard deviation of the finite `values`, over every process when `accelerator` runs several."""
    finite = torch.tensor([v for v in values if math.isfinite(v)], dtype=torch.float64)
    moments = torch.stack([finite.sum(), finite.square().sum(), torch.tensor(float(len(finite)), dtype=torch.float64)])
    if accelerator is not None and accelerator.num_processes > 1:
        moments = accelerator.reduce(moments.to(accelerator.device), reduction="sum").cpu()
    total, squares, count = moments.tolist()
    if not count:
        return float("nan"), float("nan")
    mean = total / count
    return mean, max(squares / count - mean ** 2, 0.0) ** 0.5


class RewardNormalizer:
    """Raw scores -> the rewards PPO is given.

    none       the raw scores (the classifier's probabilities already have a fixed 0..1 scale)
    reference  (score - mean) / std, where mean and std are those of the reference model's own answers, measured
               once before training (`measure`) and kept in the checkpoint (`state`): 0 is the reference's average
               answer, 1 is one reference standard deviation better, for the whole run and after --resume too.
    batch      (score - batch mean) / batch std, each batch on its own: only the order within a batch counts.

    Scores without any spread (a reward model that gives every text the same score) are shifted, never divided
    by zero: a warning says so once.
    """

    def __init__(self, mode, mean=0.0, std=1.0):
        if mode not in REWARD_NORMS:
            raise UserError(f"unknown reward normalisation {mode!r} (choose from {', '.join(REWARD_NORMS)})")
        self.mode, self.mean, self.std = mode, float(mean), float(std)
        self.warned = False

    def measure(self, reference_scores, accelerator=None):
        """Take the reference statistics from the reward of reference answers (mode 'reference' only)."""
        self.mean, std = mean_std(reference_scores, accelerator)
        self.std = self._usable(std, f"{len(reference_scores)} reference answers")
        return self

    def state(self):
        """What a checkpoint keeps so that a resumed run gives the same rewards for the same scores."""
        return dict(mode=self.mode, mean=self.mean, std=self.std)

    @classmethod
    def from_state(cls, state):
        return cls(state["mode"], state["mean"], state["std"])

    def __call__(self, scores):
        if self.mode == "none":
            return list(scores)
        if self.mode == "batch":
            mean, std = mean_std(scores)
            return [(s - mean) / self._usable(std, f"a batch of {len(scores)} answers") for s in scores]
        return [(s - self.mean) / self.std for s in scores]

    def _usable(self, std, what):
        if std > TINY_STD:
            return std
        if not self.warned:
            warnings.warn(f"the reward model gave {what} all the same score (standard deviation {std:.2g}): "
                          "rewards are only shifted by their mean, not scaled, and PPO learns nothing from them "
                          "until the scores differ", stacklevel=3)
            self.warned = True
        return 1.0
