"""PPO, PPO with the reward model, GRPO and DPO side by side on --tiny: each trains from the same reference GPT-2
with the same seed, as its own script's --tiny defaults say, and all are judged alike.

Columns: the training command's wall time (loading and, for DPO, building its AI-feedback rank lists included);
the mean positive probability that a scorer none of them trained on gives prompt + answer (the naive Bayes of
bench_ranking_ceiling.py, fitted on the corpus train split), for the reference and for the tuned model, on the
same prompts and sampling; distinct-2 of the answers; the KL to the reference on the tuned model's own answers
(sum over an answer's tokens of log p - log p_ref, mean over answers). See bench_independent_scorer.py.

    python bench/bench_alignment.py                      # the four methods, each as long as its --tiny default
    python bench/bench_alignment.py --methods grpo dpo   # some of them
    python bench/bench_alignment.py --quick              # smallest settings (a smoke test, figures meaningless)
"""
import argparse
import os
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_independent_scorer import judge  # noqa: E402
from bench_ranking_ceiling import naive_bayes_scorer  # noqa: E402

from utils.data import read_corpus_split  # noqa: E402
from utils.tokens import read_prompts  # noqa: E402
from utils.checkpoints import find_latest_checkpoint  # noqa: E402
from utils.policy import load_policy  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

# name: (title, script, its log-folder option, what it needs besides the prompts)
METHODS = {
    "ppo": ("PPO + classifier", "ppo_sentiment_example.py", "classifier, value head, online sampling"),
    "ppo_rm": ("PPO + reward model", "ppo_sentiment_example.py", "reward model, value head, online sampling"),
    "grpo": ("GRPO + classifier", "grpo_sentiment_example.py", "classifier, G answers per prompt"),
    "dpo": ("DPO + AI-feedback lists", "train_dpo.py", "rank lists (offline), no sampling"),
}
QUICK = {  # the smallest settings: enough for every script to train a little and save a checkpoint
    "ppo": ["--total_samples", "16", "--batch_size", "8", "--mini_batch_size", "4", "--max_new_tokens", "6",
            "--print_samples", "0"],
    "grpo": ["--total_samples", "16", "--batch_size", "8", "--group_size", "4", "--mini_batch_size", "4",
             "--max_new_tokens", "6", "--print_samples", "0"],
    "dpo": ["--num_train_epochs", "1", "--ai_feedback_lists", "2", "--batch_size", "4", "--max_new_tokens", "6",
            "--print_samples", "0"],
}
QUICK["ppo_rm"] = QUICK["ppo"]


def train(method, args):
    """Run the method's script (--tiny, --seed) into its own folders; (wall seconds, newest checkpoint)."""
    title, script, _ = METHODS[method]
    folder = os.path.join(args.out_dir, method)
    command = [sys.executable, os.path.join(REPO, script), "--tiny", "--seed", str(args.seed),
               "--save_dir", os.path.join(folder, "checkpoints"), "--log_dir", os.path.join(folder, "logs")]
    if method == "ppo_rm":
        command += ["--reward_model", args.reward_model]
    if method == "dpo":
        command += ["--ai_feedback_file", os.path.join(folder, "ai_feedback.tsv")]
    if args.quick:
        command += QUICK[method]
    os.makedirs(folder, exist_ok=True)
    print(f"training {title}: {' '.join(command[1:])}", flush=True)
    start = time.time()
    with open(os.path.join(folder, "output.txt"), "w", encoding="utf-8") as output:
        result = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if result.returncode != 0:
        sys.exit(f"{title} failed (exit {result.returncode}): see {os.path.join(folder, 'output.txt')}")
    return wall, find_latest_checkpoint(os.path.join(folder, "checkpoints"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--reward_model", default=os.path.join("checkpoints", "reward_model", "sentiment_analysis",
                                                                "model_best"))
    parser.add_argument("--out_dir", default=os.path.join("checkpoints", "bench_alignment"))
    parser.add_argument("--quick", action="store_true", help="smallest settings (a smoke test)")
    parser.add_argument("--num", type=int, default=64, help="judged answers per prompt")
    parser.add_argument("--max_new_tokens", "--gen_len", type=int, default=16, help="tokens per judged answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.reward_model, args.out_dir = os.path.abspath(args.reward_model), os.path.abspath(args.out_dir)
    methods = list(args.methods)
    if "ppo_rm" in methods and not os.path.isdir(args.reward_model):
        print(f"no reward model at {args.reward_model}: PPO + reward model left out "
              "(python train_reward_model.py --tiny makes one)")
        methods.remove("ppo_rm")
    if "dpo" in methods and not os.path.isfile(os.path.join(REPO, METHODS["dpo"][1])):
        print("train_dpo.py is not in this checkout: DPO left out")
        methods.remove("dpo")

    trained = {method: train(method, args) for method in methods}

    torch.set_num_threads(1)
    scorer = naive_bayes_scorer(read_corpus_split("train"))
    prompts = read_prompts()
    base = ensure_tiny()["gpt2"]
    judged = {}
    for method, (wall, checkpoint) in trained.items():
        policy, ref_model, tokenizer = load_policy(checkpoint, "cpu", ref_model_name_or_path=base)
        if not judged:
            judged["reference"] = (None, judge(ref_model, ref_model, tokenizer, scorer, prompts, args.num,
                                               args.max_new_tokens))
        judged[method] = (wall, judge(policy, ref_model, tokenizer, scorer, prompts, args.num, args.max_new_tokens))
    if not judged:
        sys.exit("nothing to compare")

    reference = judged["reference"][1]
    print(f"\n{judged['reference'][1]['answers']} answers per model ({args.num} per prompt, {args.max_new_tokens} tokens, "
          "pure sampling, the same seed); NB = naive Bayes positive probability")
    print(f"{'method':<26} {'train s':>8} {'NB ref':>7} {'NB tuned':>8} {'gain':>6} {'distinct-2':>10} "
          f"{'KL to ref':>9}  needs")
    print(f"{'reference GPT-2':<26} {'-':>8} {reference['positive']:>7.3f} {'-':>8} {'-':>6} "
          f"{reference['distinct_2']:>10.3f} {0.0:>9.3f}")
    for method in trained:
        wall, m = judged[method]
        title, _, needs = METHODS[method]
        print(f"{title:<26} {wall:>8.0f} {reference['positive']:>7.3f} {m['positive']:>8.3f} "
              f"{m['positive'] - reference['positive']:>+6.3f} {m['distinct_2']:>10.3f} {m['kl']:>9.3f}  {needs}")


if __name__ == "__main__":
    main()
