"""Judge a tuned checkpoint by a scorer it was not trained on, next to its reference model, on the same prompts
and sampling: the naive Bayes of bench_ranking_ceiling.py (fitted on the corpus train split) gives each
prompt + answer a positive probability (the sigmoid of its log-odds); distinct-2 measures the answers' variety;
the KL to the reference is the mean over answers of sum_t (log p_tuned - log p_ref), on the tuned model's answers.

    python bench/bench_independent_scorer.py --checkpoint checkpoints/grpo_sentiment_gpt/model_40_0.83
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ranking_ceiling import naive_bayes_scorer  # noqa: E402

from utils.answer_logprobs import answer_logprobs  # noqa: E402
from utils.device import set_seed  # noqa: E402
from utils.data import read_corpus_split  # noqa: E402
from utils.generation import generate_responses  # noqa: E402
from utils.tokens import decode, encode_prompt, read_prompts  # noqa: E402
from utils.logger import distinct_2  # noqa: E402
from utils.policy import load_policy  # noqa: E402


def sample(model, tokenizer, prompts, num, gen_len, seed):
    """`num` answers to each prompt: (queries, responses, prompt + answer texts, answers)."""
    set_seed(seed)
    queries, responses = [], []
    for prompt in prompts:
        query = encode_prompt(tokenizer, prompt)
        queries += [query] * num
        responses += generate_responses(model, tokenizer, [query] * num, gen_len)
    answers = [decode(tokenizer, response) for response in responses]
    texts = [prompts[i // num] + answer for i, answer in enumerate(answers)]
    return queries, responses, texts, answers


@torch.no_grad()
def kl_to_reference(policy, ref_model, tokenizer, queries, responses, batch_size=64):
    """Mean over answers of sum over the answer's tokens of log p_policy - log p_ref."""
    total = 0.0
    for start in range(0, len(queries), batch_size):
        batch = queries[start:start + batch_size], responses[start:start + batch_size]
        logp, mask = answer_logprobs(policy, *batch, tokenizer.pad_token_id)
        ref_logp, _ = answer_logprobs(ref_model, *batch, tokenizer.pad_token_id)
        total += ((logp - ref_logp) * mask).sum().item()
    return total / len(queries)


def judge(model, ref_model, tokenizer, scorer, prompts, num=64, gen_len=16, seed=123):
    """The figures of one model: naive-Bayes positive probability, distinct-2, mean length, KL to the reference."""
    queries, responses, texts, answers = sample(model, tokenizer, prompts, num, gen_len, seed)
    positive = [1 / (1 + math.exp(-max(min(s, 50.0), -50.0))) for s in scorer(texts)]
    return dict(answers=len(answers), positive=sum(positive) / len(positive), distinct_2=distinct_2(answers),
                length=sum(map(len, answers)) / len(answers),
                kl=kl_to_reference(model, ref_model, tokenizer, queries, responses))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder (PPO, GRPO or DPO)")
    parser.add_argument("--prompts_file", help="one prompt per line (default: the original's four prompts)")
    parser.add_argument("--num", type=int, default=64, help="answers per prompt")
    parser.add_argument("--max_new_tokens", "--gen_len", type=int, default=16, help="new tokens per judged answer")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scorer = naive_bayes_scorer(read_corpus_split("train"))
    policy, ref_model, tokenizer = load_policy(args.checkpoint, "cpu")
    prompts = read_prompts(args.prompts_file)
    print(f"{'model':<10} {'answers':>7} {'NB positive':>11} {'distinct-2':>10} {'length':>6} {'KL to ref':>9}")
    for name, model in (("reference", ref_model), ("tuned", policy)):
        m = judge(model, ref_model, tokenizer, scorer, prompts, args.num, args.max_new_tokens, args.seed)
        print(f"{name:<10} {m['answers']:>7} {m['positive']:>11.3f} {m['distinct_2']:>10.3f} {m['length']:>6.1f} "
              f"{m['kl']:>9.3f}")


if __name__ == "__main__":
    main()
