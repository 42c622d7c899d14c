"""Reward sources for the PPO loop: plain callables, list of texts in, list of floats out.

    SentimentPipelineReward   probability of the positive label from a `sentiment-analysis` pipeline
    RewardModelReward         the scalar score of a reward model saved by train_reward_model.py

(terminal_main.py plugs a person in the same way.)
"""
import math

from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from utils.common import UserError, load_pretrained
from utils.reward_model import load_reward_model, score_texts


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
    """Reward = the reward model's score of each text. Its scale is arbitrary (a rank-list loss only fixes
    differences), so `normalize` maps scores to zero mean and unit variance by running statistics over
    every text scored so far. (trl's own `use_score_scaling` crashes in trl 0.11.4.)"""

    def __init__(self, path, device, batch_size=64, max_seq_len=128, normalize=False):
        self.model, self.tokenizer = load_reward_model(path, device)
        self.batch_size, self.max_seq_len, self.normalize = batch_size, max_seq_len, normalize
        self.count, self.mean, self.sum_sq = 0, 0.0, 0.0  # Welford's running moments

    def __call__(self, texts):
        scores = score_texts(self.model, self.tokenizer, list(texts), self.batch_size, self.max_seq_len)
        if not self.normalize:
            return scores
        for score in filter(math.isfinite, scores):
            self.count += 1
            delta = score - self.mean
            self.mean += delta / self.count
            self.sum_sq += delta * (score - self.mean)
        std = math.sqrt(self.sum_sq / self.count) if self.count > 1 else 1.0
        return [(score - self.mean) / (std + 1e-8) for score in scores]
