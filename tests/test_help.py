"""Every command answers --help: its options on stdout, exit 0, and nothing started or written."""
import importlib
import os
import subprocess
import sys

import pytest

from conftest import REPO, run_script

SCRIPTS = ["ppo_sentiment_example", "grpo_sentiment_example", "terminal_main", "train_reward_model", "train_dpo",
           "inference_ppo_gpt", "inference_reward_model", "utils.ai_feedback", "utils.data", "utils.policy",
           "utils.preferences", "utils.ranklists", "utils.ratings", "utils.tasks", "utils.tiny"]


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_script_prints_its_options(module, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a script that wrote something would leave it here
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and out.startswith("usage: ") and "-h, --help" in out
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", [[sys.executable, "ranklist_labeler.py", "--help"],
                                     ["sh", "start_ranklist_labler.sh", "--tiny", "--help"]])
def test_the_labelling_page_prints_its_options_without_starting_a_server(command):
    # a server would still be running at the timeout, which would end the test
    result = subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--dataset_file DATASET_FILE" in result.stdout and "--tasks TASKS" in result.stdout
    assert result.stderr == ""  # none of Streamlit's bare-mode warnings


def test_the_page_outside_streamlit_says_how_to_start_it():
    result = run_script(["ranklist_labeler.py", "--tiny"], timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ranklist_labeler.py is a Streamlit page: start it with")
