"""Annotators as a team: the task file and queue, agreement between annotators, consensus for training."""
import json
import os
import pickle
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO
from utils.errors import UserError
from utils.preferences import main as preferences_main
from utils.ranklists import (PromptedRankList, agreement, append_rank_list, consensus_order, kendall_tau,
                             main as ranklists_main, merge_rank_lists, read_prompted_rank_lists, undo_rank_list)
from utils.tasks import Task, TaskQueue, read_tasks, write_tasks

PROMPT = "这部电影很"
ANSWERS = ["好看", "一般", "无聊", "难看"]


def task_file(tmp_path, lines, name="tasks.jsonl"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def task_line(task_id, answers=ANSWERS, prompt=PROMPT):
    return json.dumps({"id": task_id, "prompt": prompt, "answers": answers}, ensure_ascii=False)


@pytest.mark.parametrize("bad, line, reason", [
    ("{not json", 2, "not a JSON object"),
    (task_line("t9", answers=["只有一个"]), 2, "at least 2 answers to rank, found 1"),
    (task_line("t1"), 2, "duplicate task id 't1' (first on line 1)"),
    (task_line("t9", answers=["a", "b", "c"]), 2, "3 answers, but the first task has 4"),
    (json.dumps({"id": "t9", "prompt": PROMPT, "answers": ["a", "", "c", "d"]}), 2, "list of non-empty strings"),
])
def test_bad_task_lines_name_file_and_line_or_are_skipped_and_counted(tmp_path, capsys, bad, line, reason):
    path = task_file(tmp_path, [task_line("t1"), bad, task_line("t2")])
    with pytest.raises(UserError, match=re.escape(f"{path}:{line}: ") + ".*" + re.escape(reason)):
        read_tasks(path)
    assert [t.id for t in read_tasks(path, skip_bad_lines=True)] == ["t1", "t2"]
    assert "skipped 1 bad line(s)" in capsys.readouterr().err


def test_unreadable_or_empty_task_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_tasks(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="no tasks in this file"):
        read_tasks(task_file(tmp_path, ["", "  "]))


def test_queue_overlap_never_twice_and_survives_a_restart(tmp_path):
    tasks = [Task("t1", PROMPT, ANSWERS), Task("t2", PROMPT, ANSWERS)]
    dataset = str(tmp_path / "labels.tsv")
    queue = TaskQueue(tasks, dataset, overlap=1.0, timeout=60)
    assert queue.take("甲", now=0).id == "t1"
    assert queue.take("甲", now=1).id == "t1", "a task held and not saved is handed back to its holder"
    assert queue.take("乙", now=1).id == "t1", "with --overlap 1 a task goes to two annotators"
    assert queue.take("丙", now=1).id == "t2", "t1 has its two annotators"
    save(dataset, tasks[0], "甲")
    queue.release("t1", "甲")
    restarted = TaskQueue(tasks, dataset, overlap=1.0, timeout=60)  # a new server process: state from the files
    assert restarted.done_by() == {"t1": {"甲"}}
    assert restarted.take("甲", now=2).id == "t2", "an annotator never gets a task twice"
    save(dataset, tasks[1], "甲")
    assert restarted.take("甲", now=3) is None
    assert restarted.progress() == (2, 4)
    assert TaskQueue(tasks, dataset, overlap=0.5).annotators_wanted("t1") + \
        TaskQueue(tasks, dataset, overlap=0.5).annotators_wanted("t2") == 3


def test_an_abandoned_task_returns_after_the_timeout(tmp_path):
    tasks = [Task("t1", PROMPT, ANSWERS), Task("t2", PROMPT, ANSWERS)]
    dataset = str(tmp_path / "labels.tsv")
    queue = TaskQueue(tasks, dataset, overlap=0.0, timeout=60)
    assert queue.take("甲", now=0).id == "t1"  # ... and 甲 closes the tab
    assert queue.take("乙", now=10).id == "t2"
    assert queue.take("乙", skipped={"t2"}, now=10) is None, "t1 is still 甲's"
    assert queue.take("乙", skipped={"t2"}, now=61).id == "t1", "after the timeout t1 is back in the queue"
    assert not os.path.exists(dataset), "nothing was written for the abandoned task"


def save(dataset, task, annotator):
    append_rank_list(dataset, [task.prompt + a for a in task.answers],
                     {"prompt": task.prompt, "rank_list_len": len(task.answers), "annotator": annotator,
                      "task_id": task.id})


def test_kendall_tau_and_consensus_by_mean_rank():
    assert kendall_tau(list("abcd"), list("abcd")) == 1
    assert kendall_tau(list("abcd"), list("dcba")) == -1
    assert kendall_tau(list("abcd"), list("bacd")) == pytest.approx(4 / 6)
    assert kendall_tau(["x", "x", "y"], ["x", "y", "x"]) == pytest.approx(1 / 3)  # identical texts told apart
    lists = [PromptedRankList(list(order)) for order in ("abcd", "bacd", "abdc")]
    assert consensus_order(lists) == list("abcd")
    # a and b tie on mean rank (positions a: 3,0,0,0 and b: 0,1,1,1); a's better median puts it first, over the
    # first list's order
    tie = [PromptedRankList(list(order)) for order in ("bcda", "abcd", "abcd", "abcd")]
    assert consensus_order(tie) == list("abcd")
    assert consensus_order([PromptedRankList(list("ba")), PromptedRankList(list("ab"))]) == list("ba")


def labelled(tmp_path, rankings, task_ids=True, name="labels.tsv"):
    """A dataset as the page writes it: one line per (annotator, task, best-first answers)."""
    path = str(tmp_path / name)
    for annotator, task_id, best_first in rankings:
        append_rank_list(path, [PROMPT + a for a in best_first],
                         {"prompt": PROMPT, "rank_list_len": len(best_first), "annotator": annotator,
                          **({"task_id": task_id} if task_ids else {})})
    return path


RANKINGS = [("甲", "t1", ["好看", "一般", "无聊", "难看"]), ("乙", "t1", ["好看", "无聊", "一般", "难看"]),
            ("丙", "t1", ["难看", "无聊", "一般", "好看"]), ("甲", "t2", ["一般", "好看", "难看", "无聊"]),
            ("甲", "t3", ["无聊", "好看", "一般", "难看"]), ("乙", "t3", ["无聊", "好看", "一般", "难看"])]


def test_agreement_per_annotator_and_overall(tmp_path, capsys):
    path = labelled(tmp_path, RANKINGS)
    report = agreement(read_prompted_rank_lists(path))
    assert report["overall"]["tasks"] == 2 and report["overall"]["pairs"] == 4
    assert report["tasks"]["t3"] == {"rankings": 2, "tau": 1.0, "best_same": 1.0}
    assert report["tasks"]["t1"]["tau"] == pytest.approx((4 / 6 - 1 - 4 / 6) / 3)
    assert report["annotators"]["甲"]["pairs"] == 3 and report["annotators"]["甲"]["tasks"] == 2
    assert report["annotators"]["丙"]["tau"] == pytest.approx((-1 - 4 / 6) / 2)
    ranklists_main(["agreement", path])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["annotator", "mean", "tau", "pairs", "tasks"]
    assert json.loads(out[-1]) == json.loads(json.dumps(report, ensure_ascii=False))


def test_merge_consensus_min_agreement_and_free_mode(tmp_path, capsys):
    path = labelled(tmp_path, RANKINGS)
    lists = read_prompted_rank_lists(path)
    merged, _ = merge_rank_lists(lists, "all")
    assert len(merged) == 6
    merged, summary = merge_rank_lists(lists, "consensus")
    assert [(m.task_id, m.texts[0]) for m in merged] == [("t1", PROMPT + "好看"), ("t2", PROMPT + "一般"),
                                                          ("t3", PROMPT + "无聊")]
    assert "6 rank lists -> 3" in summary and "1 ranked once" in summary
    merged, summary = merge_rank_lists(lists, "consensus", min_agreement=0.5)
    assert [m.task_id for m in merged] == ["t2", "t3"] and "1 dropped" in summary
    with pytest.raises(UserError, match="--min_agreement needs --merge consensus"):
        merge_rank_lists(lists, "all", min_agreement=0.5)
    # without task ids, lists of the same prompt and the same answers are one task
    free = read_prompted_rank_lists(labelled(tmp_path, RANKINGS, task_ids=False, name="free.tsv"))
    assert len(merge_rank_lists(free, "consensus")[0]) == 1  # all six rank the same four answers of one prompt

    out = tmp_path / "prefs.jsonl"
    preferences_main([path, "--merge", "consensus", "--output", str(out)])
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3 * 6
    assert "6 rank lists -> 3" in capsys.readouterr().out


def test_write_tasks_reads_back(tmp_path):
    tasks = [Task("a", PROMPT, ANSWERS), Task("b", "刚收到货", ["x", "y", "z", "w"])]
    write_tasks(str(tmp_path / "t.jsonl"), tasks)
    assert read_tasks(str(tmp_path / "t.jsonl")) == tasks


def test_training_scripts_merge_before_the_split(tmp_path, capsys):
    """train_reward_model.py and train_dpo.py read --merge consensus through the same merge_rank_lists."""
    from accelerate import Accelerator

    import train_dpo
    import train_reward_model

    path = labelled(tmp_path, RANKINGS)
    accelerator = Accelerator(cpu=True)
    common = ["--train_path", path, "--dev_ratio", "0.4", "--merge", "consensus", "--model_name", "unused"]
    train, dev = train_reward_model.read_data(train_reward_model.parse_args(common + ["--tiny"]), accelerator)
    assert len(train) + len(dev) == 3 and all(isinstance(texts[0], str) for texts in train + dev)
    train, dev = train_dpo.read_data(train_dpo.parse_args(common + ["--tiny", "--min_agreement", "0.5"]),
                                     accelerator)
    assert len(train) + len(dev) == 2 * 6  # t2 and t3, six pairs each
    assert "6 rank lists -> 2" in capsys.readouterr().out
    for script in (train_reward_model, train_dpo):
        with pytest.raises(UserError, match="--min_agreement needs --merge consensus"):
            script.read_data(script.parse_args(["--train_path", path, "--tiny", "--model_name", "unused",
                                                "--min_agreement", "0.1"]),
                             accelerator)


def test_same_task_saved_by_two_at_once_and_each_undoes_only_their_own(tmp_path):
    """Two annotators save the same ranking of one task at the same moment (two processes): both lines stay,
    each with its own name; an undo removes the undoing annotator's line and record, and the pairing of lines
    and records (n-th line <-> n-th record) stays right although the two lines are identical."""
    dataset, go = str(tmp_path / "labels.tsv"), str(tmp_path / "go")
    worker = ("import os, sys, time, pickle\nfrom utils.ranklists import append_rank_list\n"
              "name, go = sys.argv[1], sys.argv[2]\nopen(go + name, 'w').close()\n"
              "while not os.path.exists(go): time.sleep(0.001)\n"
              f"saved = append_rank_list({dataset!r}, ['A', 'B', 'C'], {{'annotator': name, 'task_id': 't1'}})\n"
              "pickle.dump(saved, open(go + name + '.saved', 'wb'))\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, "-c", worker, name, go], cwd=REPO, env=env) for name in ("甲", "乙")]
    deadline = time.time() + 120
    while not all(os.path.exists(go + name) for name in ("甲", "乙")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a worker did not start"
        time.sleep(0.01)
    open(go, "w").close()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    append_rank_list(dataset, ["X", "Y", "Z"], {"annotator": "丙", "task_id": "t2"})
    append_rank_list(dataset, ["A", "B", "C"], {"annotator": "丁", "task_id": "t1"})  # the same line once more
    lists = read_prompted_rank_lists(dataset)
    assert sorted((r.annotator, r.task_id) for r in lists) == [("丁", "t1"), ("丙", "t2"), ("乙", "t1"), ("甲", "t1")]

    first = next(r.annotator for r in lists)  # undo the first saver's line: the last occurrence is not theirs
    with open(go + first + ".saved", "rb") as f:
        assert undo_rank_list(pickle.load(f))
    after = read_prompted_rank_lists(dataset)
    assert [(r.annotator, r.task_id, r.texts) for r in after] == [
        ({"甲": "乙", "乙": "甲"}[first], "t1", ["A", "B", "C"]), ("丙", "t2", ["X", "Y", "Z"]),
        ("丁", "t1", ["A", "B", "C"])]


def test_make_a_task_file_from_the_prompt_pool_and_the_model(tmp_path, micro_dir, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    from utils.tasks import main as tasks_main

    output = tmp_path / "tasks.jsonl"
    tasks_main(["make", "--tiny", "--output", str(output), "--tasks_per_prompt", "2", "--rank_list_len", "3",
                "--max_new_tokens", "4", "--device", "cpu"])
    tasks = read_tasks(str(output))
    assert len(tasks) == 4 * 2 and len({t.id for t in tasks}) == 8 and all(len(t.answers) == 3 for t in tasks)
    assert "8 tasks of 3 answers" in capsys.readouterr().out
    tasks_main(["check", str(output)])
    assert capsys.readouterr().out.strip() == f"{output}: 8 tasks of 3 answers"
