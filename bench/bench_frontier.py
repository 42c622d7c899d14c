"""The reward-KL frontier of every method, in the form of the DPO paper's Figure 2: from the same tiny reference
GPT-2 and seed, each method trains at several strengths of its KL constraint, and every run is judged as
bench_alignment.py judges (bench_independent_scorer.judge: the naive Bayes none of them trained on, the KL to the
reference on the judged model's own answers, distinct-2). One method dominates another where its line lies
above the other's: more judged reward at the same KL.

Each run is its script with its --tiny defaults, the swept option and the method's fixed options (SWEEPS); its
last checkpoint is judged, and with --intermediate N also up to N earlier ones (evenly spaced). Every judged
point is one line of <out_dir>/frontier.jsonl, written as soon as it is judged: a rerun skips the runs whose
final point is already there (a failed one too: delete its line to retry). A run that exits with an error, or
whose figures are NaN, is recorded with status "failed" and its reason, and the sweep goes on. The PNG
(<out_dir>/frontier.png) has x = KL to the reference, y = the judge's mean positive probability, one line per
method through its final points (intermediate points faint), collapsed points (distinct-2 < 0.5) crossed out.

    python bench/bench_frontier.py                                   # every method, SWEEPS' values
    python bench/bench_frontier.py --methods grpo_dr dpo --values grpo_dr=0.05,0.1   # some, other values
    python bench/bench_frontier.py --quick                           # smallest settings (a smoke test)
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_alignment import QUICK  # noqa: E402
from bench_independent_scorer import judge  # noqa: E402
from bench_ranking_ceiling import naive_bayes_scorer  # noqa: E402

from utils.checkpoints import list_checkpoints  # noqa: E402
from utils.errors import UserError, run_main  # noqa: E402
from utils.data import read_corpus_split  # noqa: E402
from utils.tokens import read_prompts  # noqa: E402
from utils.logger import read_jsonl  # noqa: E402
from utils.policy import load_policy  # noqa: E402
from utils.tiny import ensure_tiny  # noqa: E402

COLLAPSED = 0.5  # distinct-2 below this: the answers have collapsed into a few phrases
PAPER_GRPO = ["--scale_rewards", "group", "--loss_type", "grpo", "--advantage", "group_mean"]
# Dr. GRPO (no std scaling, token-sum loss over a constant), RLOO's leave-one-out baseline, DAPO's clip-higher
FIELD_GRPO = ["--scale_rewards", "none", "--loss_type", "dr_grpo", "--advantage", "rloo", "--epsilon_high", "0.28"]
# name: (title, script, swept option, values, fixed options). PPO runs 40 epochs instead of its --tiny 100 to
# fit the sweep in an hour (its reward levels off after 25-30), all 40 (not stopping at --tiny's reward 0.9, so
# that every target gets the same budget); Plackett-Luce runs with its own --tiny preset (16 lists of 4 answers
# per step, as many sequences as 32 pairs, for 3 epochs: as many steps as the pairs' one epoch over 6x the items).
SWEEPS = {
    "ppo": ("PPO + classifier", "ppo_sentiment_example.py", "--target", [1.0, 3.0, 6.0],
            ["--total_samples", str(128 * 40), "--stop_at_reward", "off"]),
    "ppo_rm": ("PPO + reward model", "ppo_sentiment_example.py", "--target", [1.5, 3.0, 6.0],
               ["--total_samples", str(128 * 40)]),
    "grpo": ("GRPO (paper)", "grpo_sentiment_example.py", "--beta", [0.1, 0.25, 0.5], PAPER_GRPO),
    "grpo_dr": ("Dr. GRPO + RLOO + clip-higher", "grpo_sentiment_example.py", "--beta", [0.01, 0.03, 0.05, 0.1],
                FIELD_GRPO),
    "dpo": ("DPO, pairs", "train_dpo.py", "--beta", [0.1, 0.25, 0.5, 1.0], []),
    "dpo_pl": ("DPO, Plackett-Luce", "train_dpo.py", "--beta", [0.1, 0.25, 0.5, 1.0],
               ["--loss", "plackett_luce"]),
}
QUICK_VALUES = {"ppo": [3.0], "ppo_rm": [3.0], "grpo": [0.5], "grpo_dr": [0.1], "dpo": [0.5], "dpo_pl": [0.5]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    parser.add_argument("--values", action="append", default=[], metavar="METHOD=V1,V2",
                        help="the swept option's values for one method (repeatable)")
    parser.add_argument("--reward_model", default=os.path.join("checkpoints", "reward_model", "sentiment_analysis",
                                                                "model_best"), help="for ppo_rm")
    parser.add_argument("--out_dir", default=os.path.join("logs", "frontier"))
    parser.add_argument("--intermediate", type=int, default=1, help="earlier checkpoints judged per run")
    parser.add_argument("--quick", action="store_true", help="smallest settings (a smoke test, figures meaningless)")
    parser.add_argument("--num", type=int, default=64, help="judged answers per prompt")
    parser.add_argument("--max_new_tokens", "--gen_len", type=int, default=16, help="tokens per judged answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.values = dict(parse_values(item) for item in args.values)
    unknown = set(args.values) - set(args.methods)
    if unknown:
        raise UserError(f"--values {sorted(unknown)[0]}=...: that method is not among --methods {args.methods}")
    if args.intermediate < 0 or args.num < 1 or args.max_new_tokens < 1:
        raise UserError("--intermediate must be at least 0, --num and --max_new_tokens at least 1")
    args.reward_model, args.out_dir = os.path.abspath(args.reward_model), os.path.abspath(args.out_dir)
    return args


def parse_values(item):
    """'grpo=0.1,0.2' -> ('grpo', [0.1, 0.2]); a value may be any float (nan too: a run meant to fail)."""
    method, _, values = item.partition("=")
    if method not in SWEEPS:
        raise UserError(f"--values {item}: unknown method {method!r} (one of {', '.join(SWEEPS)})")
    try:
        return method, [float(v) for v in values.split(",")]
    except ValueError:
        raise UserError(f"--values {item}: expected METHOD=V1,V2,... with numbers") from None


def planned_runs(args):
    """[(method, value)] in the order they run."""
    return [(method, value) for method in args.methods
            for value in args.values.get(method, QUICK_VALUES[method] if args.quick else SWEEPS[method][3])]


# ---------------------------------------------------------------- one run: train, then judge its checkpoints
def run_name(method, value):
    """A run's name: its folder and its key in the JSONL (a NaN value equals no other, its name does)."""
    return f"{method}_{value:g}"


def run_folder(args, method, value):
    return os.path.join(args.out_dir, "runs", run_name(method, value))


def train(args, method, value):
    """Run the method's script at one strength into its own folders; (wall seconds, None or why it failed)."""
    _, script, option, _, fixed = SWEEPS[method]
    folder = run_folder(args, method, value)
    command = [sys.executable, os.path.join(REPO, script), "--tiny", "--seed", str(args.seed), *fixed,
               option, str(value), "--save_dir", os.path.join(folder, "checkpoints"),
               "--log_dir", os.path.join(folder, "logs")]
    if method == "ppo_rm":
        command += ["--reward_model", args.reward_model]
    if script == "train_dpo.py":  # every DPO run trains on the same AI-feedback lists, built once
        command += ["--ai_feedback_file", os.path.join(args.out_dir, "ai_feedback.tsv")]
    if args.quick:
        command += QUICK["dpo" if script == "train_dpo.py" else method.replace("_dr", "")]
    os.makedirs(folder, exist_ok=True)
    start = time.time()
    with open(os.path.join(folder, "output.txt"), "w", encoding="utf-8") as output:
        output.write(" ".join(command[1:]) + "\n")
        output.flush()
        result = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.time() - start
    if result.returncode != 0:
        return wall, f"exit {result.returncode}: {last_error_line(os.path.join(folder, 'output.txt'))}"
    if not list_checkpoints(os.path.join(folder, "checkpoints")):
        return wall, "no checkpoint saved"
    return wall, None


def last_error_line(path):
    """The run's own one-line error if it printed one, else its last line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "RuntimeError", "ValueError"))]
    return (errors or lines or ["no output"])[-1][:300]


def checkpoints_to_judge(folder, intermediate):
    """The run's last checkpoint and up to `intermediate` earlier ones, evenly spaced, oldest first."""
    saved = list_checkpoints(os.path.join(folder, "checkpoints"))
    earlier = saved[:-1]
    picked = {min(len(earlier) - 1, max(0, math.ceil((i + 1) * len(earlier) / (intermediate + 1)) - 1))
              for i in range(intermediate)} if earlier else set()
    return [earlier[i] for i in sorted(picked)] + saved[-1:]


class Judge:
    """bench_alignment.py's judging: the same scorer, prompts, sampling and seed for every checkpoint."""

    def __init__(self, args):
        torch.set_num_threads(1)
        self.scorer = naive_bayes_scorer(read_corpus_split("train"))
        self.prompts = read_prompts()
        self.base = ensure_tiny()["gpt2"]
        self.num, self.max_new_tokens = args.num, args.max_new_tokens

    def __call__(self, checkpoint=None):
        policy, ref_model, tokenizer = load_policy(checkpoint or self.base, "cpu", ref_model_name_or_path=self.base)
        model = policy if checkpoint else ref_model
        return judge(model, ref_model, tokenizer, self.scorer, self.prompts, self.num, self.max_new_tokens)


def judged_point(judge_fn, reference, checkpoint):
    """The record of one judged checkpoint; status "failed" when any figure is NaN."""
    start = time.time()
    figures = judge_fn(checkpoint)
    record = dict(checkpoint=os.path.basename(checkpoint), positive=figures["positive"], kl=figures["kl"],
                  distinct_2=figures["distinct_2"], length=figures["length"], answers=figures["answers"],
                  gain=figures["positive"] - reference["positive"], judge_s=round(time.time() - start, 1))
    bad = [key for key in ("positive", "kl", "distinct_2") if not math.isfinite(record[key])]
    if bad:
        return dict(record, status="failed", reason=f"NaN in the judged {', '.join(bad)}")
    return dict(record, status="ok", collapsed=record["distinct_2"] < COLLAPSED)


# ---------------------------------------------------------------- the sweep
def append_record(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def sweep(args, jsonl):
    """Train and judge every planned run not yet in `jsonl`; returns the runs done now."""
    records = read_jsonl(jsonl) if os.path.isfile(jsonl) else []
    done = {r["run"] for r in records if r.get("final")}
    runs = [(method, value) for method, value in planned_runs(args) if run_name(method, value) not in done]
    skipped = len(planned_runs(args)) - len(runs)
    if skipped:
        print(f"{skipped} run(s) already in {jsonl}: not rerun")
    if "ppo_rm" in args.methods and not os.path.isdir(args.reward_model) and any(m == "ppo_rm" for m, _ in runs):
        print(f"no reward model at {args.reward_model}: PPO + reward model left out "
              "(python train_reward_model.py --tiny makes one)")
        runs = [(m, v) for m, v in runs if m != "ppo_rm"]
    if not runs:
        return []
    judge_fn = Judge(args)
    reference = next((r for r in records if r["method"] == "reference"), None)
    if reference is None:
        reference = dict(method="reference", **judge_fn(None))
        append_record(jsonl, reference)
    for method, value in tqdm(runs, desc="frontier runs", unit="run"):
        title, _, option, _, _ = SWEEPS[method]
        wall, failure = train(args, method, value)
        base = dict(run=run_name(method, value), method=method, title=title, option=option, value=value,
                    train_s=round(wall, 1))
        if failure:
            append_record(jsonl, dict(base, final=True, status="failed", reason=failure))
            tqdm.write(f"{title} {option} {value:g}: failed ({failure})")
            continue
        checkpoints = checkpoints_to_judge(run_folder(args, method, value), args.intermediate)
        for i, checkpoint in enumerate(checkpoints):
            point = dict(base, final=i == len(checkpoints) - 1, **judged_point(judge_fn, reference, checkpoint))
            append_record(jsonl, point)
        tqdm.write(f"{title} {option} {value:g}: " + (
            f"gain {point['gain']:+.3f}, KL {point['kl']:.2f}, distinct-2 {point['distinct_2']:.3f}"
            if point["status"] == "ok" else f"failed ({point['reason']})") + f" ({wall:.0f} s)")
    return runs


# ---------------------------------------------------------------- the table and the picture
def best_points(records):
    """Each method's final point with the highest gain among those whose distinct-2 is at least 0.55."""
    best = {}
    for r in records:
        if r.get("final") and r["status"] == "ok" and r["distinct_2"] >= 0.55:
            if r["method"] not in best or r["gain"] > best[r["method"]]["gain"]:
                best[r["method"]] = r
    return best


def print_table(records):
    reference = next(r for r in records if r["method"] == "reference")
    print(f"\nreference GPT-2: judge {reference['positive']:.3f}, distinct-2 {reference['distinct_2']:.3f}")
    print(f"{'method':<32} {'option':<10} {'value':>6} {'judge':>6} {'gain':>7} {'KL':>6} {'distinct-2':>10} "
          f"{'train s':>7}  status")
    for r in records:
        if not r.get("final"):
            continue
        if r["status"] == "ok":
            figures = f"{r['positive']:>6.3f} {r['gain']:>+7.3f} {r['kl']:>6.2f} {r['distinct_2']:>10.3f}"
            status = "collapsed" if r["collapsed"] else "ok"
        else:
            figures, status = f"{'-':>6} {'-':>7} {'-':>6} {'-':>10}", f"failed: {r['reason']}"
        print(f"{r['title']:<32} {r['option']:<10} {r['value']:>6g} {figures} {r['train_s']:>7.0f}  {status}")
    print("\nbest point per method (highest gain with distinct-2 >= 0.55):")
    for method, r in best_points(records).items():
        print(f"  {r['title']:<32} {r['option']} {r['value']:g}: gain {r['gain']:+.3f} at KL {r['kl']:.2f}, "
              f"distinct-2 {r['distinct_2']:.3f}")


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = next(r for r in records if r["method"] == "reference")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([0.0], [reference["positive"]], marker="*", s=150, color="black", zorder=3, label="reference GPT-2")
    ok = [r for r in records if r["method"] != "reference" and r["status"] == "ok"]
    for color, method in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], SWEEPS):
        final = sorted((r for r in ok if r["method"] == method and r["final"]), key=lambda r: r["kl"])
        earlier = [r for r in ok if r["method"] == method and not r["final"]]
        if not final and not earlier:
            continue
        ax.plot([r["kl"] for r in final], [r["positive"] for r in final], "o-", color=color,
                label=SWEEPS[method][0])
        ax.scatter([r["kl"] for r in earlier], [r["positive"] for r in earlier], color=color, alpha=0.3, s=18)
        for r in final:
            ax.annotate(f"{r['value']:g}", (r["kl"], r["positive"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=color)
    collapsed = [r for r in ok if r["collapsed"]]
    ax.scatter([r["kl"] for r in collapsed], [r["positive"] for r in collapsed], marker="x", s=80, color="red",
               zorder=4, label=f"collapsed (distinct-2 < {COLLAPSED})")
    ax.set_xlabel("KL(policy || reference) on its own answers (nats per answer)")
    ax.set_ylabel("judge: mean positive probability")
    ax.set_title("Reward-KL frontier (tiny GPT-2, independent naive-Bayes judge)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    jsonl = os.path.join(args.out_dir, "frontier.jsonl")
    sweep(args, jsonl)
    records = read_jsonl(jsonl) if os.path.isfile(jsonl) else []
    if not any(r["method"] == "reference" for r in records):
        raise UserError("nothing judged: no run to sweep")
    print_table(records)
    plot(records, os.path.join(args.out_dir, "frontier.png"))
    print(f"\npoints in {jsonl}, picture in {os.path.join(args.out_dir, 'frontier.png')}")


if __name__ == "__main__":
    run_main(main)
