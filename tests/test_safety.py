"""Nothing lost, ever (issue 22): what was not ours is never replaced, a broken model is never saved, finished work
is saved on Ctrl-C and SIGTERM, and every unreadable input is one line. One test per instance found."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, run_in_process
from utils.checkpoints import load_checkpoint_state, save_policy_checkpoint
from utils.errors import UserError
from utils.files import folder_written_atomically, write_text_atomically
from utils.data import RANK_LIST_DIR
from utils.logger import read_jsonl
from utils.ranklists import read_rank_lists, write_rank_lists




def one_error_line(stderr, *fragments):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def last_error_line(stderr, *fragments):
    """A training run's stderr: progress bars and warnings, then exactly one `error:` line, the last."""
    errors = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def tree(folder):
    """{relative path: content hash} of everything under `folder`."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha1(f.read()).hexdigest()
    return found


@pytest.fixture
def someone_elses_folder(tmp_path):
    """What the terminal run deleted: a labelled dataset, a subfolder and an older checkpoint of another kind."""
    folder = tmp_path / "some" / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "total_dataset.tsv").write_text("很好\t很差\n", encoding="utf-8")
    (folder / "sub" / "notes.txt").write_text("mine\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------- never destroy what was not ours
def test_an_atomic_folder_write_never_replaces_a_folder_or_file_it_did_not_write(someone_elses_folder, tmp_path):
    before = tree(tmp_path)
    for target in (someone_elses_folder, someone_elses_folder / "total_dataset.tsv"):
        with pytest.raises(UserError, match="refusing to replace it"):
            with folder_written_atomically(str(target), "state.json") as tmp:
                open(os.path.join(tmp, "state.json"), "w").close()
    assert tree(tmp_path) == before

    ours = tmp_path / "ours"
    for content in ("first", "second"):  # its own folder is replaced, and nothing else is left beside it
        with folder_written_atomically(str(ours), "state.json") as tmp:
            with open(os.path.join(tmp, "state.json"), "w") as f:
                f.write(content)
    assert (ours / "state.json").read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["ours", "some"]


def test_a_failed_write_leaves_no_temporary_file_or_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_written_atomically(str(tmp_path / "out"), "state.json"):
            raise RuntimeError("the disk is full")
    with pytest.raises(IsADirectoryError):
        write_text_atomically(str(tmp_path), "text")  # a folder given as the output file
    assert os.listdir(tmp_path) == []


def test_terminal_save_dir_holding_other_things_is_refused_before_any_model_loads(someone_elses_folder, capsys,
                                                                                 monkeypatch):
    import terminal_main

    monkeypatch.setattr(terminal_main, "load_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    before = tree(someone_elses_folder.parent)
    for target in (someone_elses_folder, someone_elses_folder / "total_dataset.tsv"):
        code, stderr = run_in_process(terminal_main.main, ["--model_name", "m", "--save_dir", str(target)], capsys)
        assert code == 2
        one_error_line(stderr, str(target), "refusing to replace it")
    assert tree(someone_elses_folder.parent) == before


@pytest.mark.parametrize("command, make", [
    (["utils.preferences", "{lists}", "--output", "{lists}"], "lists"),  # the output is the input
    (["utils.preferences", "{lists}", "--output", "{folder}"], "folder"),  # a folder as the output file
    (["utils.ratings", "{ratings}", "{ratings}"], "ratings"),
])
def test_exports_refuse_an_output_that_is_an_input_or_a_folder(command, make, tmp_path, capsys):
    import importlib

    lists, ratings, folder = tmp_path / "lists.tsv", tmp_path / "ratings.jsonl", tmp_path / "folder"
    lists.write_text("很好\t很差\n", encoding="utf-8")
    ratings.write_text('{"prompt": "a", "answer": "b", "reward": 1}\n', encoding="utf-8")
    folder.mkdir()
    before = tree(tmp_path)
    argv = [part.format(lists=lists, ratings=ratings, folder=folder) for part in command[1:]]
    code, stderr = run_in_process(importlib.import_module(command[0]).main, argv, capsys)
    assert code == 2
    one_error_line(stderr)
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- options checked before anything loads
@pytest.mark.parametrize("script, argv, fragment", [
    ("ppo_sentiment_example", ["--save_freq", "0"], "--save_freq"),
    ("grpo_sentiment_example", ["--save_freq", "0"], "--save_freq"),
    ("train_dpo", ["--max_new_tokens", "0"], "--max_new_tokens"),
    ("train_dpo", ["--beta", "nan"], "--beta"),
    ("train_reward_model", ["--learning_rate", "1e30"], "--learning_rate"),
    ("train_reward_model", ["--weight_decay", "nan"], "--weight_decay"),
    ("ppo_sentiment_example", ["--batch_size", "8", "--mini_batch_size", "16"], "larger than --batch_size"),
    ("ppo_sentiment_example", ["--mini_batch_size", "0"], "--mini_batch_size"),
    ("grpo_sentiment_example", ["--learning_rate", "-1"], "--learning_rate"),
])
def test_bad_options_are_refused_before_the_tiny_models_are_built(script, argv, fragment, tmp_path, capsys,
                                                                  monkeypatch):
    import importlib

    import utils.tiny

    monkeypatch.setenv("RLHF_TINY_DIR", str(tmp_path / "never_built"))
    monkeypatch.setattr(utils.tiny, "build_tiny", lambda *a, **k: pytest.fail("the tiny models were built"))
    code, stderr = run_in_process(importlib.import_module(script).main, ["--tiny", *argv], capsys)
    assert code == 2
    one_error_line(stderr, fragment)
    assert not (tmp_path / "never_built").exists()


# ---------------------------------------------------------------- one line for every unreadable input
@pytest.fixture(scope="module")
def policy_checkpoints(micro_paths, tmp_path_factory):
    """A complete checkpoint of each algorithm, and a PPO one whose model.safetensors was cut short."""
    from utils.policy import load_policy

    root = tmp_path_factory.mktemp("policies")
    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    paths = {}
    for algorithm in ("ppo", "grpo", "dpo"):
        paths[algorithm] = save_policy_checkpoint(policy, tokenizer, str(root / algorithm), dict(
            epoch=1, step=1, kl_coef=0.1, base_model=micro_paths["gpt2"], algorithm=algorithm, reason="end"))
    truncated = str(root / "truncated")
    shutil.copytree(paths["ppo"], truncated)
    weights = os.path.join(truncated, "model.safetensors")
    os.truncate(weights, os.path.getsize(weights) // 2)
    paths["truncated"] = truncated
    return paths


@pytest.mark.parametrize("script, found, expected", [
    ("ppo_sentiment_example", "dpo", "ppo"), ("ppo_sentiment_example", "grpo", "ppo"),
    ("grpo_sentiment_example", "ppo", "grpo"), ("train_dpo", "grpo", "dpo"), ("terminal_main", "dpo", "ppo"),
])
def test_resume_from_another_algorithm_is_one_line_naming_both(script, found, expected, policy_checkpoints,
                                                               micro_dir, tmp_path, capsys, monkeypatch):
    import importlib

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    save_dir = tmp_path / "out"
    argv = ["--tiny", "--resume", policy_checkpoints[found], "--save_dir", str(save_dir / "ck"),
            "--log_dir", str(save_dir / "logs")]
    code, stderr = run_in_process(importlib.import_module(script).main, argv, capsys)
    assert code == 2
    one_error_line(stderr, f"{found.upper()} checkpoint", f"continues {expected.upper()}")
    assert not save_dir.exists()


@pytest.mark.parametrize("script, argv", [
    ("ppo_sentiment_example", ["--tiny", "--resume", "{ck}"]),
    ("grpo_sentiment_example", ["--tiny", "--resume", "{ck}"]),
    ("train_dpo", ["--tiny", "--resume", "{ck}"]),
    ("inference_ppo_gpt", ["--checkpoint", "{ck}"]),
])
def test_a_truncated_model_file_is_one_line(script, argv, policy_checkpoints, micro_dir, tmp_path, capsys,
                                            monkeypatch):
    import importlib

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    monkeypatch.chdir(tmp_path)  # the scripts' default outputs, if anything were written
    argv = [part.format(ck=policy_checkpoints["truncated"]) for part in argv]
    code, stderr = run_in_process(importlib.import_module(script).main, argv, capsys)
    assert code == 2
    one_error_line(stderr, "model.safetensors", "not a complete safetensors file")
    assert os.listdir(tmp_path) == []


def test_a_truncated_reward_model_is_one_line_in_inference_and_as_reward(micro_paths, tmp_path, capsys):
    import inference_reward_model
    import ppo_sentiment_example
    from transformers import AutoModel, AutoTokenizer

    from utils.reward_model import RewardModel, save_reward_model

    folder = str(tmp_path / "rm")
    save_reward_model(RewardModel(AutoModel.from_pretrained(micro_paths["encoder"])),
                      AutoTokenizer.from_pretrained(micro_paths["encoder"]), folder)
    weights = os.path.join(folder, "model.safetensors")
    os.truncate(weights, os.path.getsize(weights) - 100)
    for main, argv in ((inference_reward_model.main, ["--model", folder, "好"]),
                       (ppo_sentiment_example.main, ["--model_name", "m", "--reward_model", folder])):
        code, stderr = run_in_process(main, argv, capsys)
        assert code == 2
        one_error_line(stderr, "model.safetensors")


def test_an_empty_dpo_training_file_is_one_line(micro_dir, tmp_path, capsys, monkeypatch):
    import train_dpo

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    code, stderr = run_in_process(train_dpo.main, ["--tiny", "--train_path", str(empty), "--save_dir",
                                                   str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")],
                                  capsys)
    assert code == 2
    last_error_line(stderr, str(empty))
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------- never save a broken model
@pytest.fixture(scope="module")
def small_lists(tmp_path_factory):
    root = tmp_path_factory.mktemp("lists")
    train = read_rank_lists(os.path.join(RANK_LIST_DIR, "train.tsv"))[:160]
    dev = read_rank_lists(os.path.join(RANK_LIST_DIR, "dev.tsv"))[:32]
    write_rank_lists(str(root / "train.tsv"), train)
    write_rank_lists(str(root / "dev.tsv"), dev)
    return str(root / "train.tsv"), str(root / "dev.tsv")


def reward_model_argv(small_lists, out, *extra):
    return ["--tiny", "--train_path", small_lists[0], "--dev_path", small_lists[1], "--save_dir", str(out / "ck"),
            "--log_dir", str(out / "logs"), "--batch_size", "16", "--learning_rate", "2e-3", "--valid_steps", "4",
            "--logging_steps", "2", *extra]


def test_a_nan_loss_stops_the_reward_model_and_keeps_model_best(small_lists, micro_dir, tmp_path, capsys,
                                                                monkeypatch):
    import train_reward_model

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    code, _ = run_in_process(train_reward_model.main, reward_model_argv(small_lists, tmp_path), capsys)
    assert code == 0
    good = tree(tmp_path / "ck")
    assert "model_best/model.safetensors" in good

    real_loss, calls = train_reward_model.rank_list_loss, []

    def nan_from_step_3(*args, **kwargs):  # what --learning_rate 1e30 did
        calls.append(1)
        return real_loss(*args, **kwargs) * (float("nan") if len(calls) >= 3 else 1.0)

    monkeypatch.setattr(train_reward_model, "rank_list_loss", nan_from_step_3)
    code, stderr = run_in_process(train_reward_model.main, reward_model_argv(small_lists, tmp_path), capsys)
    assert code == 2
    last_error_line(stderr, "step 4", "NaN", "--learning_rate")
    assert tree(tmp_path / "ck") == good  # model_best and every checkpoint untouched


def test_grpo_never_saves_a_nan_checkpoint(micro_dir, tmp_path, capsys, monkeypatch):
    import grpo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    real_loss = grpo_sentiment_example.grpo_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real_loss(*args, **kwargs)
        return loss * float("nan"), dict(parts, policy_loss=float("nan"))

    monkeypatch.setattr(grpo_sentiment_example, "grpo_loss", nan_loss)
    argv = ["--tiny", "--batch_size", "8", "--group_size", "4", "--mini_batch_size", "4", "--max_new_tokens", "4",
            "--steps", "16", "--save_freq", "1", "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "l")]
    code, stderr = run_in_process(grpo_sentiment_example.main, argv, capsys)
    assert code == 2
    last_error_line(stderr, "epoch 1", "--learning_rate or --beta")
    assert not (tmp_path / "ck").exists() or os.listdir(tmp_path / "ck") == []


def test_dpo_never_saves_a_nan_checkpoint(micro_dir, small_lists, tmp_path, capsys, monkeypatch):
    import train_dpo

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    real_loss = train_dpo.dpo_loss
    monkeypatch.setattr(train_dpo, "dpo_loss", lambda *a, **k: tuple(x * float("nan") for x in real_loss(*a, **k)))
    argv = ["--tiny", "--train_path", small_lists[0], "--prompt_mode", "none", "--batch_size", "8",
            "--valid_steps", "3", "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")]
    code, stderr = run_in_process(train_dpo.main, argv, capsys)
    assert code == 2
    last_error_line(stderr, "step 1", "NaN", "--learning_rate")
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------- finished work saved on Ctrl-C and SIGTERM
def start(argv, env, log):
    process = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not read_jsonl(log):
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    return process


@pytest.mark.parametrize("script", ["train_reward_model.py", "train_dpo.py"])
def test_sigterm_saves_the_training_done_so_far(script, small_lists, micro_env, tmp_path):
    env = dict(micro_env, OMP_NUM_THREADS="1")
    if script == "train_reward_model.py":
        argv = [script, *reward_model_argv(small_lists, tmp_path, "--valid_steps", "1000", "--num_train_epochs",
                                           "50")]
        log = tmp_path / "logs" / "ERNIE Reward Model.jsonl"
    else:
        argv = [script, "--tiny", "--train_path", small_lists[0], "--prompt_mode", "none", "--batch_size", "8",
                "--num_train_epochs", "50", "--valid_steps", "1000", "--logging_steps", "1",
                "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")]
        log = tmp_path / "logs" / "DPO-Sentiment-Zh.jsonl"
    process = start(argv, env, str(log))
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    saved = os.listdir(tmp_path / "ck")
    assert len(saved) == 1 and saved[0].startswith("model_"), saved
    folder = str(tmp_path / "ck" / saved[0])
    if script == "train_dpo.py":
        state = load_checkpoint_state(folder, "dpo")
        assert state["reason"] == "interrupted" and f"saved {folder}" in out
    else:
        from utils.reward_model import load_reward_model

        load_reward_model(folder)
        assert f"saved {folder}" in out


@pytest.mark.slow
def test_two_quick_ctrl_c_keep_the_last_complete_checkpoint_loadable(small_lists, micro_env, tmp_path):
    """Ctrl-C twice at every moment of a reward-model run (a step, an evaluation, a save): it stops at once, and
    every checkpoint on disk loads."""
    from utils.reward_model import load_reward_model

    env = dict(micro_env, OMP_NUM_THREADS="1")
    argv = ["train_reward_model.py", *reward_model_argv(small_lists, tmp_path, "--valid_steps", "1",
                                                        "--num_train_epochs", "50")]
    process = start(argv, env, str(tmp_path / "logs" / "ERNIE Reward Model.jsonl"))
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "ck" / "model_best").exists():
        time.sleep(0.1)
    time.sleep(0.3)  # within the next steps, evaluations and saves
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    # killed by the SIGINT itself when the second Ctrl-C comes while the process exits after the first one's save
    # (micro steps and saves take milliseconds): a shell reports that as 130 too
    assert process.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err[-2000:]
    names = os.listdir(tmp_path / "ck")
    assert "model_best" in names and not [n for n in names if n.endswith((".tmp", ".previous"))], names
    for name in names:
        load_reward_model(str(tmp_path / "ck" / name))


def test_a_second_ctrl_c_that_lands_in_a_finalizer_still_stops_at_once(capfd):
    """Python only prints an exception raised in a `__del__` or a weakref callback ("Exception ignored in ..."), and
    a signal can land there (it did, in a weakref callback during a reward-model run): the second Ctrl-C must stop
    the run anyway, and print no traceback."""
    from utils.run import StopRequests

    class CtrlCWhileFinalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler runs at the next bytecode: still in here
            sum(range(10))

    with StopRequests(write=lambda text: None) as stop:
        stop.requested = "Ctrl-C"  # the first Ctrl-C came
        with pytest.raises(KeyboardInterrupt):
            CtrlCWhileFinalized()  # finalized at once
            time.sleep(5)
    assert "StopRequests" not in repr(sys.unraisablehook)  # given back
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.parametrize("moment", ["generation", "update", "save"])
def test_two_quick_ctrl_c_at_any_moment_stop_at_once_and_the_last_checkpoint_loads(moment, micro_paths,
                                                                                    tmp_path):
    """Real SIGINTs, twice in quick succession, while the policy generates, while it takes an optimiser step and
    while a checkpoint is being written over an older one: the first asks for a stop, the second stops at once,
    and the checkpoint already on disk still loads, unchanged."""
    from utils.generation import generate_responses
    from utils.tokens import encode_prompt
    from utils.policy import load_policy
    from utils.run import StopRequests
    from utils.value_head import with_value_head

    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    policy = with_value_head(policy)
    out = str(tmp_path / "model_1")
    state = dict(epoch=1, kl_coef=0.1, base_model=micro_paths["gpt2"], algorithm="ppo", reason="periodic")
    save_policy_checkpoint(policy, tokenizer, out, state)
    saved = tree(out)

    def ctrl_c_twice():
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs in between, as between two key presses

    with StopRequests(write=lambda text: None) as stop:
        with pytest.raises(KeyboardInterrupt):
            if moment == "generation":
                policy.pretrained_model.register_forward_hook(lambda *args: ctrl_c_twice())
                generate_responses(policy, tokenizer, [encode_prompt(tokenizer, "这部电影很")], 4)
            elif moment == "update":
                optimizer = torch.optim.SGD(policy.parameters(), lr=1e-3)
                loss = policy(torch.tensor([[1, 2, 3]])).logits.mean()
                loss.backward()
                ctrl_c_twice()
                optimizer.step()
            else:
                real_save = policy.pretrained_model.save_pretrained

                def interrupted_save(folder, **kwargs):
                    real_save(folder, **kwargs)
                    ctrl_c_twice()  # the weights written, the state file not yet

                policy.pretrained_model.save_pretrained = interrupted_save
                save_policy_checkpoint(policy, tokenizer, out, dict(state, epoch=2))
        assert stop.requested == "Ctrl-C"
    assert tree(out) == saved and os.listdir(tmp_path) == ["model_1"]
    assert load_checkpoint_state(out)["epoch"] == 1
    load_policy(out, "cpu")


@pytest.mark.parametrize("script", ["ppo_sentiment_example", "grpo_sentiment_example"])
def test_answers_longer_than_the_model_positions_are_refused_before_training(script, micro_dir, tmp_path, capsys,
                                                                             monkeypatch):
    import importlib

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    argv = ["--tiny", "--max_new_tokens", "100000", "--save_dir", str(tmp_path / "ck"), "--log_dir",
            str(tmp_path / "logs")]
    code, stderr = run_in_process(importlib.import_module(script).main, argv, capsys)
    assert code == 2
    last_error_line(stderr, "--max_new_tokens 100000", "positions")
    assert os.listdir(tmp_path) == []


def test_ppo_whose_every_reward_is_nan_fails_and_saves_nothing(micro_dir, tmp_path, capsys, monkeypatch):
    """What a NaN reward model did: every epoch skipped, exit 0 and NaN written into the state file."""
    import ppo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    argv = ["--tiny", "--batch_size", "8", "--mini_batch_size", "4", "--max_new_tokens", "4", "--steps", "16",
            "--save_freq", "1", "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")]
    code, stderr = run_in_process(
        lambda a: ppo_sentiment_example.main(a, reward_fn=lambda texts: [float("nan")] * len(texts)), argv, capsys)
    assert code == 2
    last_error_line(stderr, "all 1 epochs were skipped")
    assert not (tmp_path / "ck").exists()


def test_a_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    """A rank-list or meta file the process may not read (chmod 000 does not stop root, so the refusal is
    simulated at the open), and a folder where the file is expected."""
    import builtins

    from utils.ranklists import read_prompted_rank_lists
    from utils.ranklists import read_rank_list_table

    lists = tmp_path / "lists.tsv"
    lists.write_text("很好\t很差\n", encoding="utf-8")
    (tmp_path / "lists.meta.jsonl").write_text('{"prompt": "很"}\n', encoding="utf-8")
    real_open = builtins.open

    def forbidden(path, *args, **kwargs):
        if str(path).endswith((".tsv", ".jsonl")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", forbidden)
    for read in (lambda: read_rank_lists(str(lists)), lambda: read_prompted_rank_lists(str(lists)),
                 lambda: read_rank_list_table(str(lists), 2)):
        with pytest.raises(UserError, match="cannot read it \\(Permission denied\\)"):
            read()
    monkeypatch.undo()
    with pytest.raises(UserError, match="is a folder; expected a file"):
        read_rank_list_table(str(tmp_path), 2)
