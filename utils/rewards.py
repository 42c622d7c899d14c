"""Reward sources for the PPO loop: plain callables, list of texts in, list of floats out.

    SentimentPipelineReward   probability of the positive label from a `sentiment-analysis` pipeline
    RewardModelReward         the scalar score of a reward model saved by train_reward_model.py

(terminal_main.py plugs a person in the same way.)
"""
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
    """Reward = the reward model's score of each text (unbounded; PPO can normalise it, see --normalize_reward)."""

    def __init__(self, path, device, batch_size=64, max_seq_len=128):
        self.model, self.tokenizer = load_reward_model(path, device)
        self.batch_size, self.max_seq_len = batch_size, max_seq_len

    def __call__(self, texts):
        return score_texts(self.model, self.tokenizer, list(texts), self.batch_size, self.max_seq_len)
