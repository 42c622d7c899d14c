"""The RLHF loop from human labels (the README's walk-through, run as written), the dev split of
train_reward_model.py, and the reading order of the logged curves."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from utils.tokens import PROMPTS
from utils.logger import TrainLogger, read_jsonl
from utils.ranklists import append_rank_list, metadata_path

README = os.path.join(REPO, "README.md")
WALKTHROUGH_MARK = "<!-- walkthrough: tests/test_rlhf_loop.py runs this block -->"
GOOD = ["很好，非常满意，推荐购买", "质量不错，物流也快", "好评，下次还来", "性价比很高，很喜欢"]
BAD = ["太差了，再也不买", "质量很差，失望", "服务态度恶劣，差评", "一般般，不推荐"]
PPO_SMALL = "--steps 24 --batch_size 8 --mini_batch_size 4 --gen_len 6 --num_samples 1 --save_freq 2 --ref_samples 16"


def readme_walkthrough():
    """The shell commands of the README's human-label walk-through (the code block after its mark)."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert WALKTHROUGH_MARK in text, "the README lost its walk-through"
    block = re.search(r"```sh\n(.*?)```", text[text.index(WALKTHROUGH_MARK):], re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def write_human_labels(root):
    """What a person leaves behind: the labelling page's TSV (+ .meta.jsonl) and the terminal's ratings log."""
    dataset = os.path.join(root, "data", "human_labeled", "total_dataset.tsv")
    for i in range(12):
        prompt = PROMPTS[i % len(PROMPTS)]
        texts = [prompt + GOOD[i % 4], prompt + GOOD[(i + 1) % 4], prompt + BAD[i % 4], prompt + BAD[(i + 2) % 4]]
        append_rank_list(dataset, texts, {"prompt": prompt, "rank_list_len": 4, "ranks": [1, 2, 3, 4],
                                          "annotator": "tester"})
    ratings = os.path.join(root, "logs", "Terminal-Human-Feedback.jsonl")
    os.makedirs(os.path.dirname(ratings))
    with open(ratings, "w", encoding="utf-8") as f:
        for i, (answer, reward) in enumerate([(GOOD[0], 2.0), (BAD[0], -2.0), (GOOD[1], 1.5), (BAD[1], -1.0)] * 4):
            rating = {"rating": i + 1, "step": i // 4 + 1, "prompt": PROMPTS[i // 4], "answer": answer,
                      "reward": reward, "seconds": 3.0, "time": "2026-11-25T12:00:00"}
            f.write(json.dumps(rating, ensure_ascii=False) + "\n")
    return dataset


@pytest.mark.slow
def test_readme_walkthrough_from_human_labels_to_ppo(micro_env, tmp_path):
    """Labelling-page TSV and terminal ratings -> rank lists -> reward model (dev split by --dev_ratio) -> PPO with it,
    each command exactly as the README writes it (the PPO run made short), in a fresh directory."""
    dataset = write_human_labels(str(tmp_path))
    assert len(open(metadata_path(dataset), encoding="utf-8").readlines()) == 12
    env = dict(micro_env, OMP_NUM_THREADS="1")
    outputs = []
    for command in readme_walkthrough():
        command = re.sub(r"^python (\w+\.py)", rf"{sys.executable} {REPO}/\1", command)
        command = re.sub(r"^python -m ", f"{sys.executable} -m ", command)
        if "ppo_sentiment_example.py" in command:
            command += " " + PPO_SMALL
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        outputs.append(result.stdout)
    out = "\n".join(outputs)
    assert "terminal_rank_lists.tsv: 4 rank list(s) from 16 ratings" in out
    with open(tmp_path / "data" / "human_labeled" / "all_rank_lists.tsv", encoding="utf-8") as f:
        assert len(f.readlines()) == 12 + 4
    assert "no --dev_path: 2 of the 16 rank lists" in out and "Evaluation acc: pairwise_acc" in out
    assert os.path.isfile(tmp_path / "checkpoints" / "reward_model" / "human" / "model_best" / "reward_model.json")
    records = read_jsonl(str(tmp_path / "logs" / "PPO-Sentiment-Zh.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert all("raw_score_mean" in r and "reward_mean" in r for r in records)
    assert [r["epoch"] for r in records if "judge_positive_prob" in r] == [1, 2]


def test_dev_split_is_random_fixed_by_seed_and_refused_when_impossible(micro_main, tmp_path):
    import train_reward_model

    train = tmp_path / "one.tsv"
    train.write_text(f"{GOOD[0]}\t{BAD[0]}\n", encoding="utf-8")
    result = micro_main(train_reward_model.main, ["--tiny", "--train_path", str(train), "--save_dir",
                                                  str(tmp_path / "ck"), "--img_log_dir", str(tmp_path / "logs")])
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(train) in errors[0] and "--dev_ratio 0.1 of 1 rank list(s)" in errors[0]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "ck") and not os.path.exists(tmp_path / "logs")


def test_split_rank_lists():
    from utils.ranklists import split_rank_lists

    lists = [[f"好{i}", f"差{i}"] for i in range(20)]
    train, dev = split_rank_lists(lists, 0.1, 42, "x.tsv")
    assert len(dev) == 2 and len(train) == 18 and sorted(train + dev) == sorted(lists)
    assert split_rank_lists(lists, 0.1, 42, "x.tsv") == (train, dev)  # the same seed, the same split
    assert split_rank_lists(lists, 0.1, 7, "x.tsv")[1] != dev
    from utils.errors import UserError
    for ratio in (0.0, 1.0, 0.99):
        with pytest.raises(UserError, match="cannot hold out"):
            split_rank_lists(lists, ratio, 42, "x.tsv")


def test_panels_in_reading_order(tmp_path):
    """Reward first (the raw score before the reward made from it, the judge beside its reference), then KL and
    variety, then losses, then timings; companions (std, reference) share their metric's panel."""
    ppo = TrainLogger(str(tmp_path), "ppo", x_key="epoch")
    ppo.log(dict(epoch=0, time_epoch=2.0, value_loss=0.1, policy_loss=0.2, entropy=3.0, distinct_2=0.8, kl=0.1,
                 kl_coef=0.05, response_len=16.0, reward_std=1.0, reward_mean=0.2, raw_score_std=0.3,
                 raw_score_mean=-0.5, judge_positive_prob=0.6, judge_positive_prob_std=0.2,
                 judge_ref_positive_prob=0.5, skipped=False))
    assert ppo.panels() == [("raw_score_mean", ["raw_score_std"]), ("reward_mean", ["reward_std"]),
                            ("judge_positive_prob", ["judge_positive_prob_std", "judge_ref_positive_prob"]),
                            ("kl", []), ("kl_coef", []), ("distinct_2", []), ("response_len", []),
                            ("policy_loss", []), ("value_loss", []), ("entropy", []), ("time_epoch", [])]
    ppo.plot()
    assert os.path.getsize(tmp_path / "ppo.png") > 1000
    reward_model = TrainLogger(str(tmp_path), "rm")
    reward_model.log(dict(step=10, epoch=1, train_loss=0.6, learning_rate=1e-4))
    reward_model.log(dict(step=50, pairwise_acc=0.7, exact_order_acc=0.1, kendall_tau=0.4, best_vs_worst_acc=0.8))
    assert [m for m, _ in reward_model.panels()] == ["train_loss", "best_vs_worst_acc", "exact_order_acc",
                                                     "pairwise_acc", "kendall_tau", "learning_rate", "epoch"]
    terminal = TrainLogger(str(tmp_path), "terminal", x_key="rating")
    terminal.log(dict(rating=1, step=1, reward=1.5, seconds=3.0))
    assert [m for m, _ in terminal.panels(metrics=["seconds", "reward"])] == ["reward", "seconds"]
