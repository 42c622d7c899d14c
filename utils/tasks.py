"""Task files and the labelling page's task queue: every annotator ranks answers from one shared file.

A task file is JSONL, one task per line: `{"id": "t1", "prompt": "这部电影很", "answers": ["好看", "一般", ...]}`
(the answers without the prompt; the page shows and saves prompt + answer). Write one from the prompt pool and
a GPT-2, or bring your own:

    python -m utils.tasks make --tiny --output data/human_labeled/tasks.jsonl --tasks_per_prompt 8
    sh start_ranklist_labler.sh --tiny --tasks data/human_labeled/tasks.jsonl --overlap 0.2
    python -m utils.tasks check data/human_labeled/tasks.jsonl      # what the start script checks first
"""
import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass

from utils.errors import UserError
from utils.files import write_text_atomically
from utils.options import ArgumentParser, add_device_argument, input_file, output_file, positive_int, seed
from utils.ranklists import clean_field, locked, metadata_path, read_checked_lines, read_meta_records
from utils.outputs import TASKS, Output, check_outputs
from utils.texts import NOT_UTF8


@dataclass
class Task:
    """One task of a task file: a prompt and its K answers (without the prompt), ranked by one or more annotators."""
    id: str
    prompt: str
    answers: list


def read_tasks(path, skip_bad_lines=False):
    """The tasks of a JSONL file, one `{"id": ..., "prompt": ..., "answers": [...]}` per line.

    Every task needs a unique non-empty id, a prompt and at least 2 non-empty answers, as many as the first task.
    A bad line stops with `file:line: reason`; with `skip_bad_lines` it is left out and counted on stderr.
    """
    first_line_of = {}
    answers_per_task = None
    number = 0  # read_checked_lines hands every line, blank ones too, in order

    def parse_line(line):
        nonlocal answers_per_task, number
        number += 1
        if line is None:
            return None, NOT_UTF8
        if not line.strip():
            return None, None
        try:
            task = json.loads(line)
        except ValueError:
            task = None
        if not isinstance(task, dict):
            return None, 'not a JSON object (expected {"id": ..., "prompt": ..., "answers": [...]})'
        task_id, prompt, answers = task.get("id"), task.get("prompt"), task.get("answers")
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)
        if not isinstance(task_id, str) or not task_id.strip():
            return None, '"id" must be a non-empty string'
        if not isinstance(prompt, str):
            return None, '"prompt" must be a string'
        if not isinstance(answers, list) or not all(isinstance(a, str) and clean_field(a) for a in answers):
            return None, '"answers" must be a list of non-empty strings'
        if len(answers) < 2:
            return None, f"a task needs at least 2 answers to rank, found {len(answers)}"
        if answers_per_task is not None and len(answers) != answers_per_task:
            return None, f"{len(answers)} answers, but the first task has {answers_per_task} (one K per file)"
        if task_id in first_line_of:
            return None, f"duplicate task id {task_id!r} (first on line {first_line_of[task_id]})"
        first_line_of[task_id] = number
        answers_per_task = len(answers)
        return Task(task_id, prompt, answers), None

    try:
        tasks = read_checked_lines(path, parse_line, skip_bad_lines)
    except OSError as e:
        raise UserError(f"{path}: cannot read the task file ({e.strerror})") from None
    if not tasks:
        raise UserError(f"{path}: no tasks in this file (expected one JSON task per line)")
    return tasks


def write_tasks(path, tasks):
    """Write a task file at once (the old file stays until the new one is complete)."""
    write_text_atomically(path, "".join(json.dumps({"id": t.id, "prompt": t.prompt, "answers": t.answers},
                                                   ensure_ascii=False) + "\n" for t in tasks))


class TaskQueue:
    """Hands out the tasks of a task file to annotators, `overlap` of them to at least two.

    The queue keeps no state of its own in memory: who has ranked what is read from the dataset's `.meta.jsonl`
    (records with a `task_id`), and who is ranking what now from a lease file beside it
    (`total_dataset.leases.json`: task id -> {annotator: time the lease ends}). Both are read and changed under
    the dataset's lock, so several sessions, or a restarted server, see the same queue. A task taken but not
    saved within `timeout` seconds (a closed tab) goes back to the queue.
    """

    def __init__(self, tasks, dataset_file, overlap=0.0, timeout=600.0):
        self.tasks, self.dataset_file, self.timeout = tasks, dataset_file, timeout
        self.by_id = {t.id: t for t in tasks}
        # a fixed, spread-out share of the tasks (chosen by a hash of the id, so a restart picks the same ones)
        by_hash = sorted(tasks, key=lambda t: hashlib.sha1(t.id.encode("utf-8")).hexdigest())
        self.overlapped = {t.id for t in by_hash[:round(overlap * len(tasks))]}

    def annotators_wanted(self, task_id):
        return 2 if task_id in self.overlapped else 1

    def take(self, annotator, skipped=(), now=None):
        """The task `annotator` should rank next (one they already hold, else the first the queue still needs that
        they have neither ranked nor skipped), leased to them; None when the queue has nothing left for them."""
        now = time.time() if now is None else now
        with locked(self.dataset_file):
            done = self.done_by()
            leases = self._active_leases(now)
            held = [t for t in self.tasks if annotator in leases.get(t.id, {}) and t.id not in skipped
                    and annotator not in done.get(t.id, set())]
            if held:
                task = held[0]
            else:
                free = [t for t in self.tasks if t.id not in skipped and annotator not in done.get(t.id, set())
                        and len(done.get(t.id, set())) + len(leases.get(t.id, {})) < self.annotators_wanted(t.id)]
                if not free:
                    self._write_leases(leases)
                    return None
                task = free[0]
            leases.setdefault(task.id, {})[annotator] = now + self.timeout
            self._write_leases(leases)
        return task

    def release(self, task_id, annotator):
        """Give a task back (skipped, or saved: then the meta record marks it done)."""
        with locked(self.dataset_file):
            leases = self._active_leases(time.time())
            leases.get(task_id, {}).pop(annotator, None)
            self._write_leases(leases)

    def done_by(self):
        """{task id: set of annotators who saved a ranking of it} from the meta file."""
        done = {}
        for record in read_meta_records(metadata_path(self.dataset_file)):
            if record.get("task_id") in self.by_id:
                done.setdefault(record["task_id"], set()).add(str(record.get("annotator") or ""))
        return done

    def progress(self):
        """(rankings saved, rankings the queue asks for) over the whole task file."""
        done = self.done_by()
        wanted = sum(self.annotators_wanted(t.id) for t in self.tasks)
        return sum(min(len(done.get(t.id, ())), self.annotators_wanted(t.id)) for t in self.tasks), wanted

    @property
    def lease_file(self):
        return lease_file(self.dataset_file)

    def _active_leases(self, now):
        try:
            with open(self.lease_file, encoding="utf-8") as f:
                leases = json.load(f)
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: leases only delay, losing them loses no label
        if not isinstance(leases, dict):
            return {}
        return {task_id: {a: until for a, until in holders.items() if isinstance(until, (int, float)) and until > now}
                for task_id, holders in leases.items() if isinstance(holders, dict)}

    def _write_leases(self, leases):
        write_text_atomically(self.lease_file, json.dumps({t: h for t, h in leases.items() if h}, ensure_ascii=False))


def lease_file(dataset_file):
    """Who is ranking which task now: `total_dataset.tsv` -> `total_dataset.leases.json`."""
    return os.path.splitext(dataset_file)[0] + ".leases.json"


def make_tasks(model_name, prompts, tasks_per_prompt, k, max_new_tokens, seed=0, device="cpu"):
    """`tasks_per_prompt` tasks of `k` sampled answers for every prompt, ids `<prompt number>-<task number>`."""
    from utils.device import set_seed
    from utils.generation import sample_answers
    from utils.policy import load_causal_lm

    set_seed(seed)
    model, tokenizer = load_causal_lm(model_name, device)
    return [Task(f"p{p}-{n}", prompt, sample_answers(model, tokenizer, prompt, k, max_new_tokens))
            for p, prompt in enumerate(prompts, start=1) for n in range(1, tasks_per_prompt + 1)]


def main(argv=None):
    parser = ArgumentParser(prog="python -m utils.tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write a task file: K answers of the GPT-2 to every prompt of the pool")
    make.add_argument("--tiny", action="store_true", help="the offline tiny GPT-2")
    make.add_argument("--model_name", help="GPT-2 that writes the answers (default: the original's; --tiny: the "
                                           "tiny one)")
    make.add_argument("--output", type=output_file, default=os.path.join("data", "human_labeled", "tasks.jsonl"))
    make.add_argument("--prompts_file", type=input_file, help="one prompt per line (default: the original's four prompts)")
    make.add_argument("--tasks_per_prompt", type=positive_int, default=8)
    make.add_argument("--rank_list_len", "--k", type=positive_int, default=4, help="answers per task (K)")
    make.add_argument("--max_new_tokens", type=positive_int, default=40, help="new tokens per answer")
    make.add_argument("--seed", type=seed, default=0)
    add_device_argument(make)
    check = commands.add_parser("check", help="read a task file as the labelling page will, and say what is in it")
    check.add_argument("tasks_file", type=input_file)
    check.add_argument("--skip_bad_lines", action="store_true", help="skip and count bad lines")
    args = parser.parse_args(argv)
    if args.command == "check":
        tasks = read_tasks(args.tasks_file, args.skip_bad_lines)
        print(f"{args.tasks_file}: {len(tasks)} tasks of {len(tasks[0].answers)} answers")
        return
    if args.rank_list_len < 2:
        raise UserError(f"--rank_list_len must be at least 2, got {args.rank_list_len}")
    check_outputs([Output("--output", args.output, TASKS)], [("--prompts_file", args.prompts_file)])
    from utils.device import pick_device# imported here: the start script's check needs none of them
    from utils.tokens import read_prompts
    from utils.tiny import ensure_tiny

    prompts = read_prompts(args.prompts_file)
    model_name = args.model_name or (ensure_tiny()["gpt2"] if args.tiny else "uer/gpt2-chinese-cluecorpussmall")
    tasks = make_tasks(model_name, prompts, args.tasks_per_prompt, args.rank_list_len, args.max_new_tokens,
                       args.seed, pick_device(args.device))
    write_tasks(args.output, tasks)
    print(f"{args.output}: {len(tasks)} tasks of {args.rank_list_len} answers ({args.tasks_per_prompt} per prompt)")


if __name__ == "__main__":
    from utils.errors import run_main

    run_main(main)
