"""The bench scripts the README lists run on the micro models (smallest settings) and print their ratios;
the figures themselves come from full runs on the tiny models."""
import os

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from conftest import run_script
from utils.reward_model import RewardModel, save_reward_model

BENCHES = {
    "bench_ppo.py": (["--batch_size", "32", "--repeats", "1", "--skip_full_size", "--device", "cpu"],
                     "ratio ours/original, same settings"),
    "bench_reward_model.py": (["--steps", "1", "--batch_size", "4", "--skip_ernie", "--device", "cpu"],
                              "ratio ours / original:"),
    "bench_labeler.py": (["--saves", "5", "--generations", "1", "--undo_lines", "50"], "ratio 2 threads / 1 thread"),
    "bench_terminal.py": (["--ratings", "5", "--rounds", "1"], "PPO step on 4 ratings"),
}


@pytest.mark.parametrize("script", sorted(BENCHES))
def test_bench_runs_and_prints_its_ratio(script, micro_env):
    args, expected = BENCHES[script]
    result = run_script([f"bench/{script}", *args], env=micro_env)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_bench_ppo_refuses_a_batch_the_mini_batches_do_not_divide(micro_env):
    result = run_script(["bench/bench_ppo.py", "--batch_size", "8", "--skip_full_size"], env=micro_env)
    assert result.returncode == 2 and "--batch_size must be a multiple of 32" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_ranking_ceiling_scores_every_scorer_on_dev_and_test_lists(micro_env, micro_paths, tmp_path):
    torch.manual_seed(0)
    save_reward_model(RewardModel(AutoModel.from_pretrained(micro_paths["encoder"])),
                      AutoTokenizer.from_pretrained(micro_paths["encoder"]), str(tmp_path / "rm"))
    result = run_script(["bench/bench_ranking_ceiling.py", "--reward_model", str(tmp_path / "rm")], env=micro_env)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(row[0], row[-5]) for row in rows] == [("naive", "dev"), ("naive", "test"), ("tiny", "dev"),
                                                   ("tiny", "test"), ("reward", "dev"), ("reward", "test")]
    # naive Bayes on character n-grams ranks the corpus lists far above chance (0.5)
    assert all(float(row[-3]) > 0.8 for row in rows[:2])


def test_bench_alignment_trains_and_judges_every_method(micro_env, micro_paths, tmp_path):
    """Smallest settings: every method's script trains a little, and each row is judged against the reference."""
    torch.manual_seed(0)
    save_reward_model(RewardModel(AutoModel.from_pretrained(micro_paths["encoder"])),
                      AutoTokenizer.from_pretrained(micro_paths["encoder"]), str(tmp_path / "rm"))
    result = run_script(["bench/bench_alignment.py", "--quick", "--num", "2", "--gen_len", "4", "--reward_model",
                         str(tmp_path / "rm"), "--out_dir", str(tmp_path / "out")], env=micro_env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line[:26].strip(): line[26:].split() for line in result.stdout.splitlines()
            if line.startswith(("reference GPT-2", "PPO", "GRPO", "DPO"))}
    expected = {"reference GPT-2", "PPO + classifier", "PPO + reward model", "GRPO + classifier"}
    if os.path.isfile("train_dpo.py"):
        expected.add("DPO + AI-feedback lists")
    assert set(rows) == expected, result.stdout
    assert rows["reference GPT-2"][-1] == "0.000"
    for title, row in rows.items():
        if title != "reference GPT-2":
            assert float(row[0]) > 0 and 0.0 <= float(row[2]) <= 1.0 and 0.0 < float(row[4]) <= 1.0, row
