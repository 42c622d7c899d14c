"""The bench scripts the README lists run on the micro models (smallest settings) and print their ratios;
the figures themselves come from full runs on the tiny models. They run in this process, through their
`main(argv)` (the training runs they start stay processes of their own); `python bench/...` is run where its
exit code is checked."""
import importlib
import json
import math
import os
import re
import sys

import pytest
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

from bench.trl_venv import BUILD_COMMAND, SHARED, pins, trl_venv_python
from conftest import REPO, run_script
from utils.reward_model import RewardModel, save_reward_model

sys.path.insert(0, os.path.join(REPO, "bench"))  # as `python bench/<name>.py` has it: the benches import each other

BENCHES = {
    "bench_any_lm": (["--shape", "micro", "--batch_size", "16", "--epochs", "2", "--device", "cpu"],
                     "ratio LoRA / full: time"),
    "bench_reward_model": (["--steps", "1", "--batch_size", "4", "--skip_ernie", "--device", "cpu"],
                           "ratio ours / original:"),
    "bench_labeler": (["--saves", "5", "--generations", "1", "--undo_lines", "50"], "ratio 2 threads / 1 thread"),
    "bench_sharding": (["--shape", "micro", "--rounds", "1", "--batch_size", "2", "--max_new_tokens", "2"],
                       "ratio sharded / gathered: "),  # one process here; the figures come from torchrun's two
    "bench_terminal": (["--ratings", "5", "--rounds", "1"], "PPO step on 4 ratings"),
    "bench_tiny_build": (["--preset", "micro", "--steps", "2", "--rounds", "1", "--device", "cpu"],
                         "ratio one after the other / side by side, float32: "),
    "bench_tiny_lm": (["--preset", "micro", "--steps", "4", "--device", "cpu"], "ratio 4 layers / 1: time per step"),
}


@pytest.fixture(autouse=True)
def process_settings_kept():
    """Some benches set torch's thread count or transformers' log level, settings of the whole process: the tests
    after them get them back."""
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


def bench_main(name):
    return importlib.import_module(name).main


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_runs_and_prints_its_ratio(name, micro_main):
    args, expected = BENCHES[name]
    result = micro_main(bench_main(name), args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


PPO_QUICK = ["--batch_size", "32", "--repeats", "1", "--skip_full_size", "--device", "cpu"]


@pytest.mark.slow
def test_bench_ppo_times_ours_against_the_original_and_trls_step(micro_main):
    """The original's structure and trl's step run in trl 0.11.4's venv, ours here, each variant in a process of its
    own, all on the same prompts in turn."""
    if trl_venv_python() is None:
        pytest.skip(f"trl 0.11.4's venv is not built: `{BUILD_COMMAND}` builds it (about 2 minutes; .ci/run does)")
    result = micro_main(bench_main("bench_ppo"), PPO_QUICK)
    assert result.returncode == 0, result.stderr
    rows = [line.split("  ")[0] for line in result.stdout.splitlines() if "(mb " in line]
    assert rows == ["original (mb 16, 4 epochs)", "ours (mb 16, 4 epochs)", "trl step (mb 16, 4 epochs)",
                    "ours, --tiny (mb 32, 1 epoch)"]
    assert "ratio ours/original, same settings (mini-batch 16, 4 PPO epochs): epoch " in result.stdout
    assert "ratio ours/trl step, same settings (mini-batch 16, 4 PPO epochs): optimize " in result.stdout
    assert "ratio --tiny settings / original settings, both ours" in result.stdout


@pytest.mark.slow
def test_bench_ppo_without_trls_venv_times_ours_and_says_how_to_build_it(micro_main, monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_TRL_VENV", str(tmp_path / "trl-venv"))
    result = micro_main(bench_main("bench_ppo"), PPO_QUICK)
    assert result.returncode == 0, result.stderr
    assert f"trl 0.11.4's venv is not built: only our variants are timed (build it with `{BUILD_COMMAND}`" \
        in result.stdout
    rows = [line.split("  ")[0] for line in result.stdout.splitlines() if "(mb " in line]
    assert rows == ["ours (mb 16, 4 epochs)", "ours, --tiny (mb 32, 1 epoch)"]
    assert "ratio --tiny settings / original settings, both ours" in result.stdout
    assert "ours/trl" not in result.stdout and "ours/original" not in result.stdout
    assert not os.path.exists(tmp_path / "trl-venv")  # nothing built unasked


def test_trl_venv_pins_trl_0_11_4_beside_requirements_own_torch_and_transformers():
    with open(os.path.join(REPO, "requirements.txt"), encoding="utf-8") as f:
        requirements = f.read().splitlines()
    assert pins()[0] == "trl==0.11.4"
    assert all(pin in requirements for pin in pins()[1:]) and len(pins()) == 1 + len(SHARED)
    assert {pin.split("==")[0] for pin in pins()} >= {"trl", "torch", "transformers", "accelerate", "rich"}


@pytest.mark.slow
def test_bench_ppo_refuses_a_batch_the_mini_batches_do_not_divide(micro_env):
    result = run_script(["bench/bench_ppo.py", "--batch_size", "8", "--skip_full_size"], env=micro_env)
    assert result.returncode == 2 and "--batch_size must be a multiple of 32" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_vs_trl_prints_both_lines_and_both_sides_train(micro_main, tmp_path):
    """GRPO (one generation) and DPO (two steps) against trl's trainers on the micro models: each line in its
    form, and every side took all its optimizer steps and moved its weights."""
    result = micro_main(bench_main("bench_vs_trl"), ["--repeats", "1", "--grpo_steps", "4", "--ai_feedback_file",
                                                     str(tmp_path / "lists.tsv"), "--ai_feedback_lists", "2",
                                                     "--device", "cpu"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for algorithm, unit, learnt in (("grpo", "completion", "reward"), ("dpo", "pair", "accuracy")):
        line = next(line for line in lines if line.startswith(f"{algorithm} ours/trl "))
        assert re.fullmatch(rf"{algorithm} ours/trl \d+\.\d\dx per {unit} \(median\), {learnt} ours \d\.\d\d trl "
                            r"\d\.\d\d; min \d+\.\d\dx; not equal: \S.*", line), line
    rows = [line.split() for line in lines if line.split()[:1] in (["ours"], ["trl"])]
    assert [(row[0], int(row[4])) for row in rows] == [("ours", 4), ("trl", 4), ("ours", 2), ("trl", 2)]
    assert all(float(row[5]) > 0 for row in rows)  # |w - w0| / |w0|


@pytest.fixture(scope="module")
def reward_model(micro_paths, tmp_path_factory):
    """An untrained reward model on the micro encoder (its scores are random, the benches only need one)."""
    folder = str(tmp_path_factory.mktemp("reward_model"))
    torch.manual_seed(0)
    save_reward_model(RewardModel(AutoModel.from_pretrained(micro_paths["encoder"])),
                      AutoTokenizer.from_pretrained(micro_paths["encoder"]), folder)
    return folder


def test_bench_ranking_ceiling_scores_every_scorer_on_dev_and_test_lists(micro_main, reward_model):
    result = micro_main(bench_main("bench_ranking_ceiling"), ["--reward_model", reward_model])
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(row[0], row[-5]) for row in rows] == [("naive", "dev"), ("naive", "test"), ("tiny", "dev"),
                                                   ("tiny", "test"), ("reward", "dev"), ("reward", "test")]
    # naive Bayes on character n-grams ranks the corpus lists far above chance (0.5)
    assert all(float(row[-3]) > 0.8 for row in rows[:2])


@pytest.mark.slow
def test_bench_alignment_trains_and_judges_every_method(micro_main, reward_model, tmp_path):
    """Smallest settings: every method's script trains a little, and each row is judged against the reference.
    PPO runs once, with the reward model: PPO + classifier is the same script without --reward_model."""
    result = micro_main(bench_main("bench_alignment"), [
        "--quick", "--methods", "ppo_rm", "grpo", "dpo", "--num", "2", "--gen_len", "4", "--reward_model", reward_model,
        "--out_dir", str(tmp_path / "out")])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line[:26].strip(): line[26:].split() for line in result.stdout.splitlines()
            if line.startswith(("reference GPT-2", "PPO", "GRPO", "DPO"))}
    assert set(rows) == {"reference GPT-2", "PPO + reward model", "GRPO + classifier", "DPO + AI-feedback lists"}, \
        result.stdout
    assert rows["reference GPT-2"][-1] == "0.000"
    for title, row in rows.items():
        if title != "reference GPT-2":
            assert float(row[0]) > 0 and 0.0 <= float(row[2]) <= 1.0 and 0.0 < float(row[4]) <= 1.0, row


@pytest.mark.slow
def test_bench_frontier_records_failed_runs_goes_on_and_resumes(micro_main, tmp_path):
    """A NaN strength fails its run (recorded with its reason), the next runs are judged, the PNG is drawn, and
    a second call reruns nothing that is already in the JSONL."""
    out = tmp_path / "out"
    argv = ["--quick", "--num", "2", "--gen_len", "4", "--out_dir", str(out), "--methods", "grpo_dr", "dpo_pl",
            "--values", "grpo_dr=nan,0.1"]
    first = micro_main(bench_main("bench_frontier"), argv)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    records = [json.loads(line) for line in (out / "frontier.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records[0]["method"] == "reference" and 0 <= records[0]["positive"] <= 1
    finals = {(r["method"], r["value"]): r for r in records if r.get("final")}
    assert set(k for k in finals if k[0] == "grpo_dr") == {("grpo_dr", 0.1)} | {k for k in finals if k[1] != k[1]}
    failed = [r for r in records if r["method"] == "grpo_dr" and r["value"] != r["value"]]  # the NaN beta
    assert len(failed) == 1 and failed[0]["status"] == "failed" and failed[0]["reason"], failed
    for key in (("grpo_dr", 0.1), ("dpo_pl", 0.5)):
        point = finals[key]
        assert point["status"] == "ok" and 0 <= point["positive"] <= 1 and 0 < point["distinct_2"] <= 1, point
        assert point["gain"] == pytest.approx(point["positive"] - records[0]["positive"])
        assert isinstance(point["collapsed"], bool) and math.isfinite(point["kl"])
    assert os.path.getsize(out / "frontier.png") > 1000
    assert "frontier runs" in first.stderr and "best point per method" in first.stdout
    second = micro_main(bench_main("bench_frontier"), argv)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "3 run(s) already in" in second.stdout and "frontier runs" not in second.stderr
    assert len((out / "frontier.jsonl").read_text(encoding="utf-8").splitlines()) == len(records)


@pytest.mark.slow
def test_bench_frontier_refuses_values_for_an_unknown_method(micro_env, tmp_path):
    result = run_script(["bench/bench_frontier.py", "--values", "sft=0.1", "--out_dir", str(tmp_path)], env=micro_env)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: --values sft=0.1: unknown method 'sft'") and "Traceback" not in result.stderr
