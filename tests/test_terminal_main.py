"""terminal_main.py driven through a pseudo-terminal on the micro models, as a person would use it,
and the command that turns the ratings into rank lists."""
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pexpect
import pytest
from safetensors.torch import load_file

from conftest import REPO, run_script
from terminal_main import HOLD_STEPS_ENV, MAX_REPLY_BYTES, main, parse_args, parse_reply
from utils.tokens import PROMPTS, read_prompts
from utils.errors import UserError, run_main
from utils.logger import read_jsonl
from utils.checkpoints import load_checkpoint_state
from utils.policy import load_policy
from utils.ranklists import read_rank_lists
from utils.ratings import ratings_to_rank_lists, read_ratings

REWARD = r"Reward \(-2\.0 ~ 2\.0\): "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def spawn(env, *args, **extra_env):
    child = pexpect.spawn(sys.executable, ["terminal_main.py", "--tiny", *args], cwd=REPO, env=dict(env, **extra_env),
                          encoding="utf-8", codec_errors="replace", timeout=240, dimensions=(50, 250))
    child.logfile_read = io.StringIO()  # everything it printed (SHOW_TERMINAL=1 shows it as well)
    if os.environ.get("SHOW_TERMINAL"):
        child.logfile_read = Tee(child.logfile_read)
    return child


class Tee:
    def __init__(self, log):
        self.log = log

    def write(self, text):
        sys.stdout.write(text)
        return self.log.write(text)

    def flush(self):
        sys.stdout.flush()

    def getvalue(self):
        return self.log.getvalue()


def shown_answer(child):
    """The prompt + answer the program showed last (it waits at a reward prompt, so nothing follows)."""
    return re.findall(r"result>>> (.*?)\r\n", log_so_far(child))[-1]


def log_so_far(child):
    return ANSI.sub("", child.logfile_read.getvalue())


def wait_for_exit(child):
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def paths(tmp_path):
    return str(tmp_path / "logs"), str(tmp_path / "ckpt"), str(tmp_path / "logs" / "Terminal-Human-Feedback.jsonl")


@pytest.fixture
def hold_steps(tmp_path):
    """`hold_steps(1, 3)`: environment in which these PPO steps wait for `release`, for the test to type or stop in
    the middle of one. Whatever is still held is released after the test: a failed test leaves nothing waiting."""
    folder = tmp_path / "held_steps"
    folder.mkdir()

    def hold(*steps):
        for step in steps:
            (folder / str(step)).touch()
        return {HOLD_STEPS_ENV: str(folder)}

    yield hold
    for held in folder.iterdir():
        held.unlink()


def release(held, step):
    os.remove(os.path.join(held[HOLD_STEPS_ENV], str(step)))


# ---------------------------------------------------------------- a session: bad input, skip, regenerate, quit, resume
BAD_REPLIES = [("abc", r"'abc' is not a number"), ("nan", r"'nan' is not a finite number"),
               ("inf", r"'inf' is not a finite number"), ("-Infinity", r"is not a finite number"),
               ("", r"empty: type a number"), ("2.5", r"2\.5 is outside the reward range -2\.0 ~ 2\.0"),
               ("-7", r"-7 is outside the reward range"), ("9" * 3000, r"too long \(over 64 bytes\)")]


def test_a_rating_session_then_resume(micro_env, micro_paths, tmp_path):
    log_dir, save_dir, jsonl = paths(tmp_path)
    child = spawn(micro_env, "--batch_size", "2", "--no-async_update", "--log_dir", log_dir, "--save_dir", save_dir)
    child.expect(r"model.*gpt2")  # the start screen's configuration table
    child.expect(REWARD)
    first = shown_answer(child)
    for reply, message in BAD_REPLIES:
        child.sendline(reply)
        child.expect(r"refused:.*" + message)
        child.expect(REWARD)
    os.write(child.child_fd, b"\xff\xfe1\n")  # not UTF-8
    child.expect(r"refused:.*not UTF-8 text")
    child.expect(REWARD)
    assert read_jsonl(jsonl) == []  # nothing refused was written

    child.sendline("?")
    child.expect(r"s  skip this answer")
    child.expect(REWARD)
    child.sendline("r")
    child.expect(REWARD)
    regenerated = shown_answer(child)
    assert regenerated != first and regenerated.startswith(tuple(PROMPTS))
    child.sendline("s")
    child.expect(r"\[Step 1\] answer 1/2")
    child.expect(REWARD)
    rated = [shown_answer(child)]
    child.sendline("1.5")
    child.expect(r"\[Step 1\] answer 2/2")
    child.expect(REWARD)
    rated.append(shown_answer(child))
    child.sendline(" -1 ")
    child.expect(r"PPO step 1 done")
    child.expect(REWARD)
    child.sendline("Q")
    child.expect(r"checkpoint: " + re.escape(save_dir) + r" \(PPO step 1, 2 ratings behind it")
    assert wait_for_exit(child) == 0

    records = read_jsonl(jsonl)
    assert [r["reward"] for r in records] == [1.5, -1.0] and [r["step"] for r in records] == [1, 1]
    assert [r["prompt"] + r["answer"] for r in records] == rated  # neither the skipped nor the replaced answer
    assert all(r["prompt"] in PROMPTS and r["answer"] and r["time"] and r["seconds"] >= 0 for r in records)
    assert os.path.getsize(os.path.join(log_dir, "Terminal-Human-Feedback.png")) > 0
    with open(os.path.join(save_dir, "training_state.json")) as f:
        assert json.load(f)["step"] == 1
    before = load_file(os.path.join(micro_paths["gpt2"], "model.safetensors"))
    after = load_file(os.path.join(save_dir, "model.safetensors"))
    common = [k for k in before if k in after]
    assert len(common) == len(before), "the checkpoint should hold the whole GPT-2"
    assert any(not (before[k] == after[k]).all() for k in common), "the PPO step did not change the weights"

    # --resume: same step count, own prompts, one more rating, then SIGTERM with the batch half full
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n我觉得这家店\n\n", encoding="utf-8")
    child = spawn(micro_env, "--batch_size", "2", "--no-async_update", "--log_dir", log_dir, "--save_dir", save_dir,
                  "--resume", save_dir, "--prompts_file", str(prompts_file))
    child.expect(r"resumed from .*: PPO step 1, 2 ratings behind it")
    child.expect(r"\[Step 2\] answer 1/2")
    child.expect(REWARD)
    assert shown_answer(child).startswith("我觉得这家店")
    child.sendline("0.25")
    child.expect(REWARD)
    child.kill(signal.SIGTERM)
    child.expect(r"SIGTERM: saving")
    child.expect(r"PPO step 2 done")
    child.expect(r"PPO step 2, 3 ratings behind it")
    assert wait_for_exit(child) == 130  # stopped by a signal, everything saved
    records = read_jsonl(jsonl)
    assert len(records) == 3 and (records[2]["prompt"], records[2]["reward"], records[2]["step"]) == ("我觉得这家店", 0.25, 2)
    with open(os.path.join(save_dir, "training_state.json")) as f:
        state = json.load(f)
    assert state["step"] == 2 and state["ratings"] == 3 and state["base_model"] == micro_paths["gpt2"]


# ---------------------------------------------------------------- stopping: closing the terminal, end of input (SIGTERM above)
@pytest.mark.slow
def test_closing_the_terminal_saves_like_quitting(micro_env, tmp_path):
    log_dir, save_dir, jsonl = paths(tmp_path)
    child = spawn(micro_env, "--log_dir", log_dir, "--save_dir", save_dir)
    child.expect(REWARD)
    child.sendline("1")
    child.expect(r"\[Step 2\] answer 1/1")  # step 1 runs in the background, or has ended
    child.expect(REWARD)
    child.ptyproc.fileobj.close()  # the terminal goes away: the kernel sends SIGHUP, output has nowhere to go
    assert child.ptyproc.wait() == 130
    with open(os.path.join(save_dir, "training_state.json")) as f:
        assert json.load(f)["step"] == 1
    assert [r["reward"] for r in read_jsonl(jsonl)] == [1.0]


@pytest.mark.slow
def test_end_of_input_before_the_first_rating_exits_cleanly(micro_env, tmp_path):
    log_dir, save_dir, jsonl = paths(tmp_path)
    os.makedirs(log_dir)
    earlier = json.dumps({"rating": 1, "step": 1, "prompt": "这部电影很", "answer": "好看", "reward": 1.0}) + "\n"
    with open(jsonl, "w", encoding="utf-8") as f:
        f.write(earlier)  # a rating from an earlier run: appended to, never truncated
    child = spawn(micro_env, "--log_dir", log_dir, "--save_dir", save_dir)
    child.expect(REWARD)
    child.sendeof()
    child.expect(r"end of input \(Ctrl-D\): saving")
    child.expect(r"no PPO step in this run, so no new checkpoint")
    assert wait_for_exit(child) == 0
    assert not os.path.exists(save_dir)
    with open(jsonl, encoding="utf-8") as f:
        assert f.read() == earlier


# ---------------------------------------------------------------- type-ahead, Ctrl-C in a step and the background update
IGNORED = r"ignored (\d+) byte\(s\) typed before this answer was shown"


@pytest.mark.slow
def test_keys_typed_during_a_ppo_step_are_not_a_rating_and_ctrl_c_in_a_step_keeps_every_rating(micro_env, tmp_path,
                                                                                               hold_steps):
    log_dir, save_dir, jsonl = paths(tmp_path)
    held = hold_steps(1, 3)
    child = spawn(micro_env, "--no-async_update", "--log_dir", log_dir, "--save_dir", save_dir, **held)
    child.expect(REWARD)
    child.sendline("1")
    child.expect(r"updating the model: PPO step 1 on 1 rating")
    child.sendline("2")  # typed ahead during the step, before the next answer is on the screen
    release(held, 1)
    child.expect(r"PPO step 1 done")
    child.expect(IGNORED)
    assert child.match.group(1) == "2"  # "2\n"
    child.expect(REWARD)
    shown = shown_answer(child)
    time.sleep(0.5)  # the person reads the answer
    child.sendline("-1")
    child.expect(r"updating the model: PPO step 2")
    child.expect(REWARD)
    assert "ignored" not in child.before, "nothing was typed ahead this time"

    child.sendline("0.5")
    child.expect(r"updating the model: PPO step 3 on 1 rating")
    assert [r["reward"] for r in read_jsonl(jsonl)] == [1.0, -1.0, 0.5]  # on disk before the step runs
    child.sendintr()
    child.expect(r"Ctrl-C: finishing the current step first")
    release(held, 3)
    child.expect(r"PPO step 3 done")
    child.expect(r"checkpoint: .*PPO step 3, 3 ratings behind it")
    assert wait_for_exit(child) == 130  # stopped by a signal, everything saved
    records = read_jsonl(jsonl)
    assert [r["reward"] for r in records] == [1.0, -1.0, 0.5], "the typed-ahead 2 must not rate the answer after it"
    assert records[1]["prompt"] + records[1]["answer"] == shown and records[1]["seconds"] >= 0.5
    assert os.path.isfile(os.path.join(save_dir, "model.safetensors"))


@pytest.mark.slow
def test_ratings_go_on_during_a_background_step_and_stopping_waits_for_it(micro_env, micro_paths, tmp_path, hold_steps):
    log_dir, save_dir, jsonl = paths(tmp_path)
    held = hold_steps(1, 2, 3)
    child = spawn(micro_env, "--batch_size", "2", "--log_dir", log_dir, "--save_dir", save_dir, **held)
    child.expect(r"in the background \(--async_update\)")  # the default, on the start screen
    for reward in ("1", "-1"):
        child.expect(REWARD)
        child.sendline(reward)
    child.expect(r"updating the model in the background: PPO step 1 on 2 rating")
    child.expect(r"\[Step 2\] answer 1/2")
    child.expect(REWARD)
    child.sendline("0.5")  # rated while step 1 trains
    child.expect(r"\[Step 2\] answer 2/2")
    child.expect(REWARD)
    assert [r["step"] for r in read_jsonl(jsonl)] == [1, 1, 2]  # on disk at once, meant for step 2
    child.sendline("1.5")
    child.sendline("2")  # typed while waiting for step 1, before the next answer is on the screen
    child.expect(r"waiting for PPO step 1 to finish")
    release(held, 1)
    child.expect(r"PPO step 1 done in [\d.]+s in the background")
    child.expect(r"updating the model in the background: PPO step 2 on 2 rating")
    child.expect(r"\[Step 3\] answer 1/2")
    child.expect(IGNORED)
    child.expect(REWARD)
    assert "PPO step 1 done" in log_so_far(child) and "PPO step 2 done" not in log_so_far(child)
    child.kill(signal.SIGTERM)  # while step 2 trains in the background
    child.expect(r"SIGTERM: saving")
    child.expect(r"waiting for PPO step 2 to finish")
    release(held, 2)
    child.expect(r"PPO step 2 done")
    child.expect(r"checkpoint: .*PPO step 2, 4 ratings behind it")
    assert wait_for_exit(child) == 130  # stopped by a signal, everything saved
    records = read_jsonl(jsonl)
    assert [(r["reward"], r["step"]) for r in records] == [(1.0, 1), (-1.0, 1), (0.5, 2), (1.5, 2)]
    assert load_checkpoint_state(save_dir)["step"] == 2
    load_policy(save_dir, "cpu")  # loadable

    # --resume continues the step count; Ctrl-D during a background step also waits for it and saves
    child = spawn(micro_env, "--batch_size", "2", "--log_dir", log_dir, "--save_dir", save_dir, "--resume", save_dir,
                  **held)
    for reward in ("1", "2"):
        child.expect(r"\[Step 3\]")
        child.expect(REWARD)
        child.sendline(reward)
    child.expect(r"updating the model in the background: PPO step 3 on 2 rating")
    child.expect(r"\[Step 4\] answer 1/2")
    child.expect(REWARD)
    child.sendeof()
    child.expect(r"end of input \(Ctrl-D\): saving")
    release(held, 3)
    child.expect(r"PPO step 3 done")
    child.expect(r"checkpoint: .*PPO step 3, 6 ratings behind it")
    assert wait_for_exit(child) == 0
    assert [r["step"] for r in read_jsonl(jsonl)] == [1, 1, 2, 2, 3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["q", "Ctrl-C"])
def test_quitting_during_a_background_step_waits_for_it_and_saves(micro_env, tmp_path, stop, hold_steps):
    log_dir, save_dir, jsonl = paths(tmp_path)
    held = hold_steps(2)
    child = spawn(micro_env, "--log_dir", log_dir, "--save_dir", save_dir, **held)
    child.expect(REWARD)
    child.sendline("1")
    child.expect(r"updating the model in the background: PPO step 1 on 1 rating")
    child.expect(REWARD)
    child.sendline("-1")  # the second rating, its step waits for the first one
    child.expect(REWARD)
    assert "PPO step 1 done" in log_so_far(child) and "PPO step 2 done" not in log_so_far(child)
    child.sendline("q") if stop == "q" else child.sendintr()
    child.expect(rf"{stop}: saving")
    child.expect(r"waiting for PPO step 2 to finish")
    release(held, 2)
    child.expect(r"checkpoint: .*PPO step 2, 2 ratings behind it")
    assert wait_for_exit(child) == (0 if stop == "q" else 130)
    assert [(r["reward"], r["step"]) for r in read_jsonl(jsonl)] == [(1.0, 1), (-1.0, 2)]
    assert load_checkpoint_state(save_dir)["step"] == 2


# ---------------------------------------------------------------- refused at the start
@contextlib.contextmanager
def read_only_folder(path):
    """A folder nobody can write, root included (root ignores permission bits, not the immutable flag)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", path], check=True)
    try:
        with pytest.raises(OSError):
            open(os.path.join(path, "probe"), "w").close()
        yield path
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", path], check=True)
        os.chmod(path, 0o755)


def test_an_unwritable_log_folder_is_refused_before_any_rating(micro_main, tmp_path):
    log_dir = str(tmp_path / "logs")
    os.makedirs(log_dir)
    jsonl = os.path.join(log_dir, "Terminal-Human-Feedback.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        f.write('{"prompt": "这部电影很", "answer": "好看", "reward": 1.0}\n')
    with read_only_folder(log_dir):
        result = micro_main(main, ["--tiny", "--log_dir", log_dir, "--save_dir", str(tmp_path / "c")])
    assert result.returncode == 2
    assert re.fullmatch(r"error: --log_dir: .*logs: cannot write in .*logs \(.*\) \(see --help\)\n", result.stderr)
    assert "Reward" not in result.stdout and "loading" not in result.stdout
    with open(jsonl, encoding="utf-8") as f:
        assert f.read() == '{"prompt": "这部电影很", "answer": "好看", "reward": 1.0}\n'


@pytest.mark.parametrize("content, message", [
    (None, r"missing\.txt: no such file"),
    (b"\n  \n", r"missing\.txt: no prompts in this file"),
    ("好的\n".encode() + b"\xff\xfe\n", r"missing\.txt:2: not valid UTF-8 text \(expected one prompt per line\)$"),
])
def test_read_prompts(tmp_path, content, message):
    path = tmp_path / "missing.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_prompts(str(path))
    good = tmp_path / "good.txt"
    good.write_text("\ufeff这部电影很\r\n\n 说实话 \n", encoding="utf-8")
    assert read_prompts(str(good)) == ["这部电影很", "说实话"]


@pytest.mark.parametrize("argv, message", [
    (["--min_reward", "2", "--max_reward", "-2"], r"the reward range 2\.0 ~ -2\.0 is not two numbers, smallest first"),
    (["--max_reward", "nan"], r"--max_reward nan: expected a finite number"),
    (["--batch_size", "0"], r"--batch_size 0: expected a whole number from 1"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: parse_args(argv))
    assert exit_info.value.code == 2 and re.match(f"error: {message}", capsys.readouterr().err)


@pytest.mark.parametrize("typed, expected", [
    (b"1.5\n", ("reward", 1.5)), (b" -2 \r\n", ("reward", -2.0)), (b"2\n", ("reward", 2.0)),
    ("\uff12\n".encode(), ("reward", 2.0)),  # a full-width digit from a Chinese input method
    (b"s\n", ("skip", None)), (b"R\n", ("regenerate", None)), (b"q\n", ("quit", None)), (b"?\n", ("help", None)),
    (b"nan\n", "refused"), (b"-inf\n", "refused"), (b"\n", "refused"), (b"2.0001\n", "refused"),
    (b"1" * (MAX_REPLY_BYTES + 1), "refused"), (b"\xc3\n", "refused"), (b"1,5\n", "refused"),
])
def test_parse_reply(typed, expected):
    action, value = parse_reply(typed, -2.0, 2.0)
    if expected == "refused":
        assert action == "refused" and isinstance(value, str) and "\n" not in value
    else:
        assert (action, value) == expected


# ---------------------------------------------------------------- ratings -> rank lists
def test_ratings_become_rank_lists_best_first_without_ties():
    ratings = [{"prompt": "这部电影很", "answer": "差", "reward": -1.0},
               {"prompt": "这部电影很", "answer": "好看", "reward": 2},
               {"prompt": "这部电影很", "answer": "一般", "reward": 0.0},
               {"prompt": "这部电影很", "answer": "还行", "reward": 0.0},  # same reward as an earlier answer
               {"prompt": "说实话，真的很", "answer": "棒", "reward": 1.0},  # a prompt's only answer
               {"prompt": "刚收到货，感觉有", "answer": "点小", "reward": 0.5},
               {"prompt": "刚收到货，感觉有", "answer": "点小", "reward": 1.5}]  # the same text rated twice
    assert ratings_to_rank_lists(ratings) == [["这部电影很好看", "这部电影很一般", "这部电影很差"]]


def test_ratings_command_writes_rank_lists_the_reward_model_reads(tmp_path, capsys):
    ratings, out = tmp_path / "ratings.jsonl", tmp_path / "human" / "rank.tsv"
    lines = [{"rating": n, "prompt": "这次购物总的来说体验很", "answer": a, "reward": r, "step": 1}
             for n, (a, r) in enumerate([("差\t劲", -2.0), ("好", 2.0), ("一般", 0.5)], start=1)]
    ratings.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    result = run_script(["-m", "utils.ratings", str(ratings), str(out)])
    assert result.returncode == 0, result.stderr
    assert read_rank_lists(str(out)) == [["这次购物总的来说体验很好", "这次购物总的来说体验很一般", "这次购物总的来说体验很差 劲"]]

    out.write_text("kept\tas it was\n", encoding="utf-8")
    with open(ratings, "a", encoding="utf-8") as f:
        f.write('{"rating": 4, "prompt": "这部电影很", "answer": "好", "reward": NaN}\n')
    result = run_script(["-m", "utils.ratings", str(ratings), str(out)])
    assert result.returncode == 2
    assert result.stderr == f"error: {ratings}:4: 'reward': expected a finite number, got 'nan' (use " \
                            "--skip_bad_lines to skip such lines)\n"
    assert out.read_text(encoding="utf-8") == "kept\tas it was\n"
    assert len(read_ratings(str(ratings), skip_bad_lines=True)) == 3
    assert capsys.readouterr().err == (f"warning: skipped 1 bad line(s) in {ratings} "
                                       "(first: line 4: 'reward': expected a finite number, got 'nan')\n")
