"""What consensus buys the reward model when some annotators are noisy (issue 20).

The AI-feedback rank lists (the classifier's order, `python -m utils.ai_feedback --tiny`) stand in for the truth.
A share of them is held out, clean, as the dev set. Every other list becomes a task that --annotators simulated
annotators rank: each keeps the true order, except that a share --noise of the rankings is shuffled at random.
The tiny reward model is then trained on the same noisy file with `--merge all` (every annotator's list) and
`--merge consensus` (one mean-rank list per task), and each is scored on the clean dev lists. With the same
number of epochs, consensus takes --annotators times fewer steps; a third run gives it as many steps as `all`
(--num_train_epochs = --annotators), so that the comparison is not only one of training length.

    RLHF_TINY_DIR=/work/tiny-cache python bench/bench_consensus.py [--lists_per_prompt 64] [--noise 0.3]

Prints the annotators' agreement and, for each merge, the dev metrics of the last evaluation; the last line is JSON.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.ai_feedback import ensure_ai_feedback  # noqa: E402
from utils.ranklists import read_prompted_rank_lists  # noqa: E402
from utils.ranklists import agreement, append_rank_list, write_rank_lists  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def noisy_annotations(rank_lists, annotators, noise, rng):
    """[(annotator, task id, prompt, texts best first)]: each annotator's ranking of every list, `noise` of them
    shuffled."""
    out = []
    for task, rank_list in enumerate(rank_lists):
        for a in range(annotators):
            texts = list(rank_list.texts)
            if rng.random() < noise:
                rng.shuffle(texts)
            out.append((f"annotator{a}", f"task{task}", rank_list.prompt, texts))
    return out


def train_and_score(train_path, dev_path, merge, epochs, out_dir, seed):
    """Dev metrics of the last evaluation of `train_reward_model.py --tiny --merge <merge>`, and its seconds."""
    start = time.time()
    result = subprocess.run(
        [sys.executable, "train_reward_model.py", "--tiny", "--train_path", train_path, "--dev_path", dev_path,
         "--merge", merge, "--num_train_epochs", str(epochs), "--seed", str(seed),
         "--save_dir", os.path.join(out_dir, f"rm_{merge}_{epochs}"),
         "--log_dir", os.path.join(out_dir, f"logs_{merge}_{epochs}"), "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if result.returncode != 0:
        sys.exit(f"train_reward_model.py --merge {merge} failed:\n{result.stderr[-3000:]}")
    last = [line for line in result.stdout.splitlines() if line.startswith("Evaluation acc:")][-1]
    metrics = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", last)}
    return metrics, time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists_per_prompt", type=int, default=64, help="AI-feedback lists per prompt")
    parser.add_argument("--annotators", type=int, default=3, help="simulated annotators per task")
    parser.add_argument("--noise", type=float, default=0.3, help="share of rankings shuffled at random")
    parser.add_argument("--dev_share", type=float, default=0.2, help="share of the lists held out, clean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", default=os.path.join("logs", "bench_consensus"))
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    tiny = ensure_tiny()
    truth_file = ensure_ai_feedback(os.path.join(args.out_dir, f"ai_feedback_{args.lists_per_prompt}.tsv"),
                                    model_name=tiny["gpt2"], sentiment_model=tiny["classifier"],
                                    lists_per_prompt=args.lists_per_prompt)
    truth = read_prompted_rank_lists(truth_file)
    rng = random.Random(args.seed)
    rng.shuffle(truth)
    n_dev = round(args.dev_share * len(truth))
    dev, train = truth[:n_dev], truth[n_dev:]
    dev_path = os.path.join(args.out_dir, "dev.tsv")
    write_rank_lists(dev_path, [r.texts for r in dev])
    noisy_path = os.path.join(args.out_dir, "noisy.tsv")
    for leftover in (noisy_path, os.path.splitext(noisy_path)[0] + ".meta.jsonl"):
        if os.path.exists(leftover):
            os.remove(leftover)
    for annotator, task_id, prompt, texts in noisy_annotations(train, args.annotators, args.noise, rng):
        append_rank_list(noisy_path, texts, {"prompt": prompt, "rank_list_len": len(texts), "annotator": annotator,
                                             "task_id": task_id})
    report = agreement(read_prompted_rank_lists(noisy_path))["overall"]
    print(f"{len(train)} tasks x {args.annotators} annotators ({args.noise:.0%} of rankings shuffled), "
          f"{len(dev)} clean dev lists; agreement: mean Kendall's tau {report['tau']:.3f}, "
          f"same best answer {report['best_same']:.0%}")
    results = {}
    for name, merge, epochs in (("all", "all", 1), ("consensus", "consensus", 1),
                                ("consensus_same_steps", "consensus", args.annotators)):
        metrics, seconds = train_and_score(noisy_path, dev_path, merge, epochs, args.out_dir, args.seed)
        results[name] = {**metrics, "epochs": epochs, "seconds": round(seconds, 1)}
        print(f"--merge {merge:<9} --num_train_epochs {epochs}: dev best_vs_worst_acc "
              f"{metrics['best_vs_worst_acc']:.4f}, pairwise_acc {metrics['pairwise_acc']:.4f}, kendall_tau "
              f"{metrics['kendall_tau']:.4f} ({seconds:.0f} s)")
    gain = results["consensus"]["best_vs_worst_acc"] - results["all"]["best_vs_worst_acc"]
    gain_same_steps = results["consensus_same_steps"]["best_vs_worst_acc"] - results["all"]["best_vs_worst_acc"]
    print(f"consensus - all: best_vs_worst_acc {gain:+.4f} (same epochs), {gain_same_steps:+.4f} (same steps) "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(json.dumps({"tasks": len(train), "dev_lists": len(dev), "annotators": args.annotators, "noise": args.noise,
                      "agreement_tau": report["tau"], "results": results, "best_vs_worst_gain": gain,
                      "best_vs_worst_gain_same_steps": gain_same_steps}))


if __name__ == "__main__":
    main()
