"""Shared fixtures: micro models built in seconds from the installed corpus (never the Hugging Face hub)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, REPO)
os.chdir(REPO)  # the scripts' default paths (data/, logs/, checkpoints/) are relative to the repository


@pytest.fixture(scope="session", autouse=True)
def corpus_datasets():
    """The corpus-made datasets under data/ (built in a second if missing), whichever test runs first."""
    from utils.data import ensure_datasets

    ensure_datasets()


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory):
    """A micro `--tiny` cache: encoder, classifier, GPT-2 and tokenizer, a few seconds to build."""
    from utils.tiny import build_tiny

    root = str(tmp_path_factory.mktemp("micro") / "tiny")
    build_tiny(root, preset="micro", report_dir=None)
    return root


@pytest.fixture(scope="session")
def micro_paths(micro_dir):
    from utils.tiny import tiny_paths

    return tiny_paths(micro_dir)


@pytest.fixture
def micro_env(micro_dir):
    """Environment for running a script as a subprocess with `--tiny` pointing at the micro models."""
    return dict(os.environ, RLHF_TINY_DIR=micro_dir, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)


def run_script(args, env=None, cwd=REPO, input=None, timeout=600):
    """Run `python <args>` and return the CompletedProcess (text mode)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or dict(os.environ), input=input,
                          capture_output=True, text=True, timeout=timeout)
