"""How well can any model trained on the review corpus alone rank the corpus-made lists? Reference scorers
next to a trained reward model, on the dev lists and on lists built the same way from the held-out test split.

Scorers (higher = more positive), each ranking every list by its scores:
  - naive Bayes on character 1-3-grams, trained on the train split: a strong classic baseline for short texts;
  - the tiny sentiment classifier (positive minus negative logit); it was trained on train + dev, so only
    the test lists are held out for it;
  - a reward-model checkpoint (`--reward_model`, default the one `train_reward_model.py --tiny` saves).

    python bench/bench_ranking_ceiling.py [--reward_model checkpoints/reward_model/sentiment_analysis/model_best]
"""
import argparse
import collections
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from utils.data import POSITIVE, RANK_LIST_DIR, make_rank_lists, read_corpus_split  # noqa: E402
from utils.ranklists import read_rank_lists  # noqa: E402
from utils.reward_model import load_reward_model, score_and_rank_metrics, score_texts  # noqa: E402
from utils.tiny import LABELS, ensure_tiny  # noqa: E402


def char_ngrams(text):
    return set(text) | {text[i:i + 2] for i in range(len(text) - 1)} | {text[i:i + 3] for i in range(len(text) - 2)}


def naive_bayes_scorer(items):
    """Log-odds positive vs negative of a multinomial naive Bayes (add-one smoothing) over character n-grams."""
    counts = {0: collections.Counter(), 1: collections.Counter()}
    for label, text in items:
        counts[label].update(char_ngrams(text))
    vocab = len(set(counts[0]) | set(counts[1]))
    totals = {label: sum(c.values()) + vocab for label, c in counts.items()}

    def score(text):
        return sum(math.log((counts[1][g] + 1) / totals[1]) - math.log((counts[0][g] + 1) / totals[0])
                   for g in char_ngrams(text) if g in counts[0] or g in counts[1])
    return lambda texts: [score(t) for t in texts]


def classifier_scorer(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    positive = model.config.label2id[LABELS[POSITIVE]]

    @torch.no_grad()
    def score(texts):
        logits = model(**tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")).logits
        return (logits[:, positive] - logits[:, 1 - positive]).tolist()
    return score


def reward_model_scorer(path):
    model, tokenizer = load_reward_model(path, "cpu")
    return lambda texts: score_texts(model, tokenizer, texts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward_model", default=os.path.join("checkpoints", "reward_model", "sentiment_analysis",
                                                                "model_best"))
    args = parser.parse_args(argv)
    lists = {"dev": read_rank_lists(os.path.join(RANK_LIST_DIR, "dev.tsv")),
             "test": make_rank_lists(read_corpus_split("test"))}  # built as the dev lists are
    scorers = {"naive Bayes 1-3-gram (train)": naive_bayes_scorer(read_corpus_split("train")),
               "tiny classifier (train+dev)": classifier_scorer(ensure_tiny()["classifier"])}
    if os.path.isdir(args.reward_model):
        scorers[f"reward model {args.reward_model}"] = reward_model_scorer(args.reward_model)
    else:
        print(f"no reward model at {args.reward_model}: run python train_reward_model.py --tiny first")
    print(f"{'scorer':<40} {'lists':<5} {'n':>4} {'best_vs_worst':>13} {'pairwise':>9} {'tau':>6}")
    for name, scorer in scorers.items():
        for split, rank_lists in lists.items():
            m = score_and_rank_metrics(rank_lists, scorer)
            print(f"{name[:40]:<40} {split:<5} {len(rank_lists):>4} {m['best_vs_worst_acc']:>13.3f} "
                  f"{m['pairwise_acc']:>9.3f} {m['kendall_tau']:>6.3f}")


if __name__ == "__main__":
    main()
