"""Shared fixtures: micro models built in seconds from the installed corpus (never the Hugging Face hub)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER" in os.environ:
    # pytest.ini starts one worker per core: one torch thread each (set before torch is imported, and inherited by
    # the scripts tests start), or two workers of two threads each would fight over two cores
    os.environ["OMP_NUM_THREADS"] = "1"
    # a worker's environment says COLUMNS=80, LINES=24: the programs tests start in a pseudo-terminal of their own
    # size (rich's tables in terminal_main.py) would wrap at 80 columns, as they do not outside a worker
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
sys.path.insert(0, REPO)
os.chdir(REPO)  # the scripts' default paths (data/, logs/, checkpoints/) are relative to the repository


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on a CUDA device, skipped without one (python -m pytest -m gpu)")
    config.addinivalue_line("markers", "slow: several processes, a browser or a bench run: left out of the quick "
                                       "suite, run by python -m pytest -m slow (and by CI)")


def pytest_collection_modifyitems(config, items):
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if gpu_tests:
        import torch

        if not torch.cuda.is_available():
            for item in gpu_tests:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)"))


def reset_accelerate_state():
    """Forget accelerate's process-wide state (device, mixed precision), as a fresh process would not have it."""
    if "accelerate" in sys.modules:  # nothing to reset before anything imported it
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one device and one mixed precision per process: after a loop ran here on CUDA (the default
    device on a GPU machine), the next test asking for a CPU trainer would fail with "AcceleratorState has already
    been initialized". Every test starts without that state."""
    reset_accelerate_state()
    yield


def cpu_only(env):
    """`env` with no GPU visible: `accelerate launch --multi_gpu --num_processes 2` then runs two CPU processes
    (gloo), also on a machine with one GPU, where two processes would share it and fail at start."""
    return dict(env, CUDA_VISIBLE_DEVICES="")


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


@pytest.fixture
def micro_main(micro_dir, monkeypatch, capsys):
    """`micro_main(script.main, argv)`: the script in this process with `--tiny` pointing at the micro models, its
    result read as `run_script`'s is (`run_script_in_process`)."""
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    return lambda main, argv: run_script_in_process(main, argv, capsys)


def run_script(args, env=None, cwd=REPO, input=None, timeout=600):
    """Run `python <args>` and return the CompletedProcess (text mode)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or dict(os.environ), input=input,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- micro Qwen2 / Llama (byte-level BPE, chat template)
@pytest.fixture(scope="session")
def micro_lms(tmp_path_factory):
    """{"qwen2": folder, "llama": folder}: micro causal LMs of today's architectures, built in a second or two."""
    from utils.data import read_corpus_split
    from utils.random_lm import build_random_causal_lm

    sentences = [s for _, s in read_corpus_split("train")[:3000]]
    root = tmp_path_factory.mktemp("micro_lms")
    return {arch: build_random_causal_lm(str(root / arch), arch, sentences) for arch in ("qwen2", "llama")}


def run_script_in_process(main, argv, capsys):
    """A script's `main(argv)` behind `run_main`, in this process (no interpreter start-up), read as `run_script`'s
    result is: a CompletedProcess with the exit code (0 when `main` returns), stdout and stderr."""
    from utils.errors import run_main

    capsys.readouterr()
    try:
        run_main(lambda: main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def run_in_process(main, argv, capsys):
    """(exit code, stderr) of `run_script_in_process`."""
    result = run_script_in_process(main, argv, capsys)
    return result.returncode, result.stderr
