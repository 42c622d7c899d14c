"""Reinforcement Learning from Human Feedback in the terminal: a person types each reward, PPO learns from it.

    python terminal_main.py                 # uer/gpt2-chinese-cluecorpussmall, as the original
    python terminal_main.py --tiny          # the offline tiny GPT-2 (built once by `python -m utils.tiny`)
    python terminal_main.py --tiny --batch_size 4 --resume checkpoints/terminal_human_feedback

The model continues a prompt, the person rates the answer, and after `--batch_size` ratings one PPO step
updates the model. At the reward prompt a number rates the answer, `s` skips it, `r` writes a new answer to
the same prompt, `q` quits and `?` shows this list. Keys typed before an answer is shown (say, during a PPO
step) are thrown away, so that a rating always belongs to an answer its rater has seen.

With --async_update (the default) each PPO step runs in the background while the person already reads and
rates the next answers; the model wrote those before the step, so an answer can be one update behind.
It is the default because it measured less waiting per rating (full-size GPT-2 on a quiet CPU, 3 s reading per
answer: 3.09 -> 0.85 s at --batch_size 1, 2.03 -> 0.48 s at --batch_size 4; `bench/bench_terminal.py --waiting full_size`).
--no-async_update waits for every step before the next answer, as the original did.

A person's ratings are the most expensive data here, so every rating is appended to
`<log_dir>/Terminal-Human-Feedback.jsonl` and synced to disk before the PPO step uses it. `q`, Ctrl-C, Ctrl-D,
SIGTERM and closing the terminal all train on the ratings typed since the last step (after waiting for a step
that runs in the background) and save a checkpoint to `--save_dir`; `q` and Ctrl-D then exit 0, Ctrl-C, SIGTERM
and a closed terminal 130 (stopped, as a shell reports it). `--resume` continues from the checkpoint and its step
count. `python -m utils.ratings` turns the ratings into rank lists for the reward model.
"""
import argparse
import fcntl
import math
import os
import random
import struct
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from utils.device import accelerator_kwargs, add_mixed_precision_argument, pick_device, set_seed
from utils.errors import UserError, run_main
from utils.options import (ArgumentParser, add_device_argument, add_report_to_argument, finite_float, input_file,
                           learning_rate, output_folder, positive_int, replaceable_folder, seed)
from utils.generation import check_room, generate_responses
from utils.tokens import decode, encode_prompt, read_prompts
from utils.logger import TrainLogger
from utils.outputs import RATINGS, check_outputs, log_outputs
from utils.checkpoints import STATE_FILES, checkpoint_folder, load_checkpoint_state, save_policy_checkpoint
from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update
from utils.policy import add_model_arguments, check_causal_lm, load_policy, lora_options
from utils.ratings import RATINGS_NAME, read_ratings
from utils.presets import Preset, parse_with_presets
from utils.run import INTERRUPTED_EXIT, StopRequested, StopRequests, stop_if_not_finite
from utils.tiny import TINY_GPT2

MAX_REPLY_BYTES = 64  # a reward is a short number: a longer line is refused without being parsed
COMMANDS = {"s": "skip", "r": "regenerate", "q": "quit", "?": "help", "？": "help"}
# The tests hold PPO step N while the file <this folder>/N exists, to type or stop in the middle of a step.
HOLD_STEPS_ENV = "RLHF_TEST_HOLD_STEPS"


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", help="the model that writes the answers: uer's GPT-2 or any causal LM")
    add_model_arguments(parser)
    parser.add_argument("--tiny", action="store_true", help="the offline tiny GPT-2 unless --model_name is given")
    parser.add_argument("--resume", type=checkpoint_folder, metavar="DIR",
                        help="continue from a checkpoint this script saved")
    add_device_argument(parser)
    add_mixed_precision_argument(parser)
    parser.add_argument("--prompts_file", type=input_file,
                        help="your own prompts, one per line (default: the original's four)")
    parser.add_argument("--batch_size", type=positive_int, default=1, help="ratings per PPO step")
    parser.add_argument("--async_update", action=argparse.BooleanOptionalAction, default=True,
                        help="train in the background while the next answers are rated (default: on; see above)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=20)
    parser.add_argument("--min_reward", type=finite_float, default=-2.0)
    parser.add_argument("--max_reward", type=finite_float, default=2.0)
    parser.add_argument("--learning_rate", type=learning_rate, default=1.41e-5)
    parser.add_argument("--log_dir", type=output_folder, default="./logs")
    add_report_to_argument(parser)
    parser.add_argument("--save_dir", type=replaceable_folder(STATE_FILES),
                        default=os.path.join("checkpoints", "terminal_human_feedback"),
                        help="the checkpoint folder (replaced at each save; any other existing folder is refused)")
    parser.add_argument("--seed", type=seed, help="fix the sampling (default: different answers every run)")
    parser.set_defaults(model_name="uer/gpt2-chinese-cluecorpussmall")
    return parse_with_presets(parser, argv, [Preset("--tiny", lambda args: args.tiny, dict(model_name=TINY_GPT2))],
                              check=check_options)


def check_options(args):
    """The checks that involve two options (each option alone is checked by its `type=`)."""
    if not args.min_reward < args.max_reward:
        raise UserError(f"the reward range {args.min_reward} ~ {args.max_reward} is not two numbers, smallest first")
    check_outputs(log_outputs(args.log_dir, RATINGS_NAME, RATINGS, "--log_dir"),
                  [("--prompts_file", args.prompts_file)])
    check_ratings_log(args.log_dir)


# ---------------------------------------------------------------- files, checked before anything slow
def ratings_log_path(log_dir):
    return os.path.join(log_dir, f"{RATINGS_NAME}.jsonl")


def check_ratings_log(log_dir):
    """The earlier ratings are read as utils.ratings reads them (one schema): a line that is not a rating stops us
    before any model is loaded, not after the first PPO step."""
    path = ratings_log_path(log_dir)
    if os.path.exists(path):
        read_ratings(path, bad_line_hint="fix or remove that line, or choose another --log_dir")


def open_ratings_log(log_dir, report_to="none"):
    """The ratings JSONL (appended to, never truncated) and its PNG: a folder we cannot write stops us now."""
    path = ratings_log_path(log_dir)
    try:
        check_writable(log_dir)
        return TrainLogger(log_dir, RATINGS_NAME, x_key="rating", resume=True, report_to=report_to)
    except OSError as e:
        raise UserError(f"cannot write the ratings log {path}: {e.strerror} (choose another --log_dir)") from e


def check_writable(folder):
    """Create a file in `folder` (the PNG and the checkpoint are written through temporary files beside them)."""
    os.makedirs(folder, exist_ok=True)
    tempfile.TemporaryFile(dir=folder).close()


# ---------------------------------------------------------------- stopping without losing anything
# ---------------------------------------------------------------- stopping without losing anything
def stop_requests():
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop the program at once only where nothing can be lost:
    while it waits for the person, generates answers or loads models (`interruptible()` blocks). During a PPO step
    or a write they wait for it to end, so neither a rating nor a checkpoint is ever cut in half; q, Ctrl-D and
    those signals then train on the ratings typed so far, save and exit."""
    return StopRequests("finishing the current step first, then saving ...", hangup=True,
                        write=lambda text: print(text, flush=True)).install()


# ---------------------------------------------------------------- the session's state, in one place
@dataclass
class Progress:
    step: int  # PPO steps done, earlier runs included
    ratings: int  # ratings trained on, earlier runs included
    steps_this_run: int = 0
    batch: list = field(default_factory=list)  # (answer, reward) typed since the last step started


@dataclass
class Terminal:
    """What every part of a rating session works with."""
    args: argparse.Namespace
    console: Console
    signals: StopRequests
    prompts: list
    ratings_log: TrainLogger
    progress: Progress
    base_model: str
    device: torch.device
    policy: object = None  # policy, tokenizer and PPO state once the models are loaded
    tokenizer: object = None
    ppo: object = None  # ppo_sentiment_example.PPO
    running: "BackgroundStep" = None  # the PPO step training in the background (--async_update), if any

    def step_being_collected(self):
        """The number of the PPO step that the ratings typed now will go into."""
        return self.progress.step + 1 + (self.running is not None)


# ---------------------------------------------------------------- answers and the person's replies
@dataclass
class Answer:
    prompt: str
    query: torch.Tensor  # prompt token ids
    response: torch.Tensor  # answer token ids
    text: str


def write_answers(t, prompts):
    """One batched sampling call for all prompts, from the policy as it is now.

    A background PPO step must be over first: the step updates the policy's weights in place, and sampling from it
    meanwhile would read half-updated weights. So --async_update
    writes the next batch's answers *before* it starts a step, with the pre-update policy; only `r`
    (regenerate) during a step has to wait for it.
    """
    wait_for_step(t)
    with t.signals.interruptible():
        queries = [encode_prompt(t.tokenizer, p) for p in prompts]
        responses = generate_responses(t.policy, t.tokenizer, queries, t.args.max_new_tokens)
    return [Answer(p, q, r, decode(t.tokenizer, r)) for p, q, r in zip(prompts, queries, responses)]


def discard_type_ahead():
    """Throw away what was typed before the reward prompt appeared (a `1` typed during a PPO step was not meant
    for an answer that was not on the screen yet). Returns how many bytes of whole lines were thrown away; a
    half-typed line goes too, uncounted."""
    if not sys.stdin.isatty():
        return 0
    fd = sys.stdin.fileno()
    try:
        pending = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        termios.tcflush(fd, termios.TCIFLUSH)
    except OSError:  # the terminal has gone away: reading will say so
        return 0
    return pending


def read_reply():
    """One line typed at the reward prompt, as bytes; an over-long line comes back cut after MAX_REPLY_BYTES + 1."""
    line = sys.stdin.buffer.readline(MAX_REPLY_BYTES + 1)
    if not line:
        raise StopRequested("end of input (Ctrl-D)")
    rest = line
    while rest and not rest.endswith(b"\n"):  # the remainder of an over-long line is read and dropped
        rest = sys.stdin.buffer.readline(4096)
    return line


def parse_reply(raw, low, high):
    """(action, value): ('reward', number), ('skip' | 'regenerate' | 'quit' | 'help', None) or ('refused', why)."""
    raw = raw.rstrip(b"\r\n")
    if len(raw) > MAX_REPLY_BYTES:
        return "refused", f"too long (over {MAX_REPLY_BYTES} bytes): a reward is a number such as 1.5"
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "refused", "not UTF-8 text: type a number such as 1.5, or ? for help"
    if not text:
        return "refused", f"empty: type a number from {low} to {high}, or ? for help"
    if text.lower() in COMMANDS:
        return COMMANDS[text.lower()], None
    try:
        reward = float(text)
    except ValueError:
        return "refused", f"'{text}' is not a number: type a number from {low} to {high}, or ? for help"
    if not math.isfinite(reward):
        return "refused", f"'{text}' is not a finite number"
    if not low <= reward <= high:
        return "refused", f"{reward:g} is outside the reward range {low} ~ {high}"
    return "reward", reward


def help_text(low, high):
    return (f"  a number from {low} to {high}  reward this answer (higher is better)\n"
            "  s  skip this answer (no reward, another prompt comes)\n"
            "  r  write a new answer to the same prompt\n"
            "  q  train on the ratings so far, save, quit (as Ctrl-C, Ctrl-D, SIGTERM)\n"
            "  ?  this help")


def show_answer(console, answer):
    console.print(f"[blue]prompt>>>[/blue] {escape(answer.prompt)}")
    console.print(f"[green]result>>>[/green] {escape(answer.prompt)}[bold]{escape(answer.text)}[/bold]")


def rate(t, answer):
    """Ask until the person rates the answer -> (answer, reward, seconds), or skips it -> None."""
    args = t.args
    show_answer(t.console, answer)
    shown_at = time.time()
    while True:
        discarded = discard_type_ahead()
        if discarded:
            t.console.print(f"[yellow]ignored {discarded} byte(s) typed before this answer was shown")
        sys.stdout.write(f"Reward ({args.min_reward} ~ {args.max_reward}): ")
        sys.stdout.flush()
        with t.signals.interruptible():
            action, value = parse_reply(read_reply(), args.min_reward, args.max_reward)
        if action == "reward":
            return answer, value, time.time() - shown_at
        if action == "skip":
            return None
        if action == "quit":
            raise StopRequested("q")
        if action == "help":
            t.console.print(help_text(args.min_reward, args.max_reward))
        elif action == "regenerate":
            answer = write_answers(t, [answer.prompt])[0]
            show_answer(t.console, answer)
            shown_at = time.time()
        else:
            t.console.print(f"[red]refused:[/red] {escape(value)}")


# ---------------------------------------------------------------- the PPO side
def log_rating(t, answer, reward, seconds):
    t.ratings_log.log({"rating": len(t.ratings_log.records) + 1, "step": t.step_being_collected(),
                       "prompt": answer.prompt, "answer": answer.text, "reward": reward,
                       "seconds": round(seconds, 1), "time": datetime.now().isoformat(timespec="seconds")})


def run_ppo_step(t, batch):
    """One PPO step on the ratings of `batch` (they are on disk already); its statistics, or None if skipped.

    It may run in the background thread: it touches only the PPO state, the policy (which the main thread leaves
    alone meanwhile, see write_answers) and the plot (drawn by one thread at a time)."""
    wait_while_held(t.progress.step + 1)
    answers, rewards = zip(*batch)
    stats = ppo_update(t.ppo, [a.query for a in answers], [a.response for a in answers], list(rewards))
    t.ratings_log.plot(metrics=["reward", "seconds"])
    return stats


def wait_while_held(step):
    """Only in the tests (see HOLD_STEPS_ENV)."""
    folder = os.environ.get(HOLD_STEPS_ENV)
    while folder and os.path.exists(os.path.join(folder, str(step))):
        time.sleep(0.05)


class BackgroundStep(threading.Thread):
    """A PPO step in a thread of its own, so that the person rates the next answers meanwhile."""

    def __init__(self, t, batch):
        super().__init__(daemon=True)
        self.t, self.batch = t, batch
        self.stats = self.error = None
        self.seconds = 0.0

    def run(self):
        started = time.time()
        try:
            self.stats = run_ppo_step(self.t, self.batch)
        except Exception as e:  # handed to the main thread, which raises it when it waits for this step
            self.error = e
        self.seconds = time.time() - started


def count_step(t, batch, stats, seconds, where=""):
    if stats is None:  # ppo_update warned why
        return
    # the NaN policy of every trainer (utils/run.py): stop with one line, the last good checkpoint stays
    stop_if_not_finite(t.ppo.loss(stats), f"PPO step {t.progress.step + 1}", "--learning_rate")
    t.progress.step += 1
    t.progress.steps_this_run += 1
    t.progress.ratings += len(batch)
    t.console.print(f"[green]PPO step {t.progress.step} done in {seconds:.1f}s{where}, "
                    f"KL to the start model {stats['kl']:.4f}")


def wait_for_step(t, only_if_done=False):
    """Wait for the background step (if one runs) and count it; `only_if_done`: only if it has ended."""
    step = t.running
    if step is None or (only_if_done and step.is_alive()):
        return
    if step.is_alive():
        t.console.print(f"[yellow]waiting for PPO step {t.progress.step + 1} to finish ...")
    step.join()  # Ctrl-C / SIGTERM meanwhile are noted by StopRequests and honoured right after
    t.running = None
    if step.error is not None:
        raise step.error
    count_step(t, step.batch, step.stats, step.seconds, " in the background")


def train(t, background):
    """A PPO step on the batch typed since the last one: in a background thread, or while the person waits."""
    batch, t.progress.batch = t.progress.batch, []
    if background:
        t.console.print(f"[yellow]updating the model in the background: PPO step {t.progress.step + 1} "
                        f"on {len(batch)} rating(s)")
        t.running = BackgroundStep(t, batch)
        t.running.start()
    else:
        t.console.print(f"[yellow]updating the model: PPO step {t.progress.step + 1} on {len(batch)} rating(s) ...")
        started = time.time()
        count_step(t, batch, run_ppo_step(t, batch), time.time() - started)


def rate_and_train(t):
    """The loop of the original: a prompt, an answer, a reward; one PPO step every --batch_size ratings."""
    size = t.args.batch_size
    answers = []
    while True:
        if not answers:
            answers = write_answers(t, [random.choice(t.prompts) for _ in range(size - len(t.progress.batch))])
        wait_for_step(t, only_if_done=True)  # say that a background step has ended
        t.console.print(f"\n[bold][Step {t.step_being_collected()}] answer {len(t.progress.batch) + 1}/{size}")
        rated = rate(t, answers.pop(0))
        if rated is None:
            continue
        log_rating(t, *rated)
        t.progress.batch.append(rated[:2])
        if len(t.progress.batch) == size:
            if t.args.async_update:  # the next answers first: the step must not run while they are written
                answers = write_answers(t, [random.choice(t.prompts) for _ in range(size)])
            train(t, background=t.args.async_update)


def finish(t, reason):
    """Wait for a background step, train on the ratings typed since the last step, save the checkpoint and plot."""
    t.console.print(f"\n[yellow]{reason}: saving ...")
    wait_for_step(t)
    if t.progress.batch:
        train(t, background=False)
    progress, save_dir = t.progress, t.args.save_dir
    if progress.steps_this_run:
        save_policy_checkpoint(t.ppo.unwrapped_policy(), t.tokenizer, save_dir,
                               {"step": progress.step, "ratings": progress.ratings, "base_model": t.base_model,
                                "kl_coef": float(t.ppo.kl_coef), "algorithm": "ppo", "reason": reason})
        t.console.print(f"checkpoint: {save_dir} (PPO step {progress.step}, {progress.ratings} ratings behind it; "
                        f"continue with --resume {save_dir})")
    else:
        t.console.print("no PPO step in this run, so no new checkpoint")
    if t.ratings_log.records:
        t.ratings_log.plot(metrics=["reward", "seconds"])
    t.console.print(f"ratings: {t.ratings_log.jsonl_path} ({len(t.ratings_log.records)} in all), "
                    f"plot: {t.ratings_log.png_path}")


# ---------------------------------------------------------------- start screen
def show_start_screen(t):
    args, console = t.args, t.console
    console.print("[blue]" + "#" * 53)
    console.print("[blue]| Reinforcement Learning from Human Feedback 终端版 |")
    console.print("[blue]" + "#" * 53)
    table = Table(title="configuration", show_header=False)
    table.add_column(style="green")
    table.add_column()
    rows = [("model", args.resume or t.base_model), ("reference model (KL)", t.base_model), ("device", t.device),
            ("ratings per PPO step", args.batch_size),
            ("PPO step", "in the background (--async_update)" if args.async_update else "waited for"),
            ("new tokens per answer", args.max_new_tokens),
            ("reward range", f"{args.min_reward} ~ {args.max_reward}"),
            ("ratings log", f"{t.ratings_log.jsonl_path} ({len(t.ratings_log.records)} ratings already)"),
            ("checkpoints", args.save_dir), ("prompts", "\n".join(t.prompts))]
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    console.print(table)
    console.print("type ? at the reward prompt for help")


def main(argv=None):
    args = parse_args(argv)
    prompts = read_prompts(args.prompts_file)
    state = load_checkpoint_state(args.resume, "ppo") if args.resume else {}
    if not args.resume:
        check_causal_lm(args.model_name)  # an encoder or classifier is refused before the ratings log is opened
    ratings_log = open_ratings_log(args.log_dir, args.report_to)
    base_model = state.get("base_model") or args.model_name
    # a fixed default seed would repeat every run's answers
    set_seed(args.seed if args.seed is not None else random.SystemRandom().randrange(2**31))

    device = pick_device(args.device)
    accelerate_kwargs = accelerator_kwargs(device, args.mixed_precision)  # refuses fp16 on the CPU now
    t = Terminal(args, Console(highlight=False), stop_requests(), prompts, ratings_log,
                 Progress(step=state.get("step", 0), ratings=state.get("ratings", 0)), base_model, device)
    show_start_screen(t)
    try:
        with t.signals.interruptible(), t.console.status("[red]loading the models ..."):
            t.policy, ref_model, t.tokenizer = load_policy(args.resume or base_model, t.device,
                                                           ref_model_name_or_path=base_model,
                                                           chat_template=args.chat_template, lora=lora_options(args))
            # PPOConfig's defaults, trl 0.11.4's (4 PPO epochs, adaptive KL, ...), the whole batch in one mini-batch
            ppo_config = PPOConfig(learning_rate=args.learning_rate, mini_batch_size=args.batch_size,
                                   init_kl_coef=state.get("kl_coef", 0.2))
            t.ppo = make_ppo(t.policy, ref_model, t.tokenizer, ppo_config, Accelerator(**accelerate_kwargs),
                             value_head_from=args.resume)
    except StopRequested as stop:
        t.console.print(f"\n{stop}: stopped before the models were ready, nothing to save")
        return
    t.console.print("[green][+] models ready")
    check_room(t.policy, max(len(encode_prompt(t.tokenizer, p)) for p in t.prompts), args.max_new_tokens)
    if args.resume:
        t.console.print(f"resumed from {args.resume}: PPO step {t.progress.step}, "
                        f"{t.progress.ratings} ratings behind it")
    try:
        rate_and_train(t)
    except StopRequested as stop:
        finish(t, str(stop))
        if t.signals.requested:  # Ctrl-C, SIGTERM, SIGHUP: saved, and the exit code says it was stopped
            sys.exit(INTERRUPTED_EXIT)
    finally:
        ratings_log.close()


if __name__ == "__main__":
    run_main(main)
