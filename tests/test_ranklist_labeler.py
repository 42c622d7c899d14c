"""The rank-list labelling page (Streamlit AppTest on the micro GPT-2) and its storage (several processes)."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
from streamlit.proto.TextInput_pb2 import TextInput as TextInputProto
from streamlit.testing.v1 import AppTest

from conftest import REPO, run_in_process
from utils.device import pick_device
from utils.errors import UserError
from utils.ranklists import (append_rank_list, clean_field, format_rank_line, metadata_path, read_rank_list_table,
                             read_rank_lists, undo_rank_list)
from utils.tasks import main as tasks_main

PAGE = os.path.join(REPO, "ranklist_labeler.py")
SAVE, REGENERATE, SKIP, UNDO, RANDOM = "存储当前排序", "重新生成答案", "跳过这个 prompt", "撤销上一次存储", "随机 prompt"
UNDO_CLICK, SKIP_TASK = "撤销一次点击", "跳过这个任务"


@pytest.fixture
def open_page(monkeypatch, micro_dir, tmp_path):
    """Run the page as `streamlit run ranklist_labeler.py -- --tiny --dataset_file <tmp> <extra>` would."""
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)

    def open_page(*extra, dataset_file=None, tiny=True):
        dataset_file = dataset_file or str(tmp_path / "human_labeled" / "total_dataset.tsv")
        monkeypatch.setattr(sys, "argv", [PAGE, *(["--tiny"] if tiny else []), "--dataset_file", dataset_file, *extra])
        at = AppTest.from_file(PAGE, default_timeout=180)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def click(at, label):
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]


def rank(at, answer, value):
    at.selectbox[answer].set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]


def answers(at):
    return [t.value for t in at.text][:4]


def rank_results(at):
    """The texts under "Rank 1：" ... in the Rank Results row."""
    return [t.value for t in at.text][4:]


def lines_of(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_rank_conflict_incomplete_save_save_and_undo(open_page, tmp_path):
    at = open_page()
    dataset = str(tmp_path / "human_labeled" / "total_dataset.tsv")
    assert [s.label for s in at.selectbox] == ["句子1排名", "句子2排名", "句子3排名", "句子4排名"]
    texts = answers(at)
    prompt = at.text_input[0].value
    assert len(texts) == 4 and all(t.startswith(prompt) and len(t) > len(prompt) for t in texts)
    # a space may stand between two Latin words the micro GPT-2 writes, never beside a Chinese character
    assert not any(re.search(r"[\u4e00-\u9fff] | [\u4e00-\u9fff]", t) for t in texts), "inter-character spaces left in"

    rank(at, 0, 2)
    assert answers(at) == texts, "a rerun must reuse the cached answers, not generate new ones"
    rank(at, 1, 2)  # rank 2 is taken by answer 1
    assert at.selectbox[1].value == -1
    assert any("排名 2 已经被句子1占用" in w.value for w in at.warning)

    rank(at, 1, 1)
    click(at, SAVE)
    assert any("请完成排序后再存储" in e.value and "3, 4" in e.value for e in at.error)
    assert not os.path.exists(dataset), "an incomplete ranking must write nothing"

    rank(at, 2, 4)
    rank(at, 3, 3)
    best_first = [texts[1], texts[0], texts[3], texts[2]]
    assert rank_results(at) == best_first
    at.sidebar.text_input[0].set_value("小王").run()
    click(at, SAVE)
    assert any("保存成功" in s.value for s in at.success)
    assert lines_of(dataset) == ["\t".join(best_first)]
    assert read_rank_lists(dataset, expected_fields=4) == [best_first]  # what train_reward_model.py reads
    [record] = [json.loads(line) for line in lines_of(metadata_path(dataset))]
    assert (record["prompt"], record["ranks"], record["annotator"], record["rank_list_len"]) == (prompt, [2, 1, 4, 3],
                                                                                                 "小王", 4)

    click(at, SAVE)  # a second click on the same answers
    assert any("已经存储过" in w.value for w in at.warning)
    assert len(lines_of(dataset)) == 1

    click(at, UNDO)
    assert any("已撤销" in s.value for s in at.success)
    assert lines_of(dataset) == [] and lines_of(metadata_path(dataset)) == []
    click(at, UNDO)
    assert any("没有可撤销" in i.value for i in at.info)


def test_undo_removes_only_this_sessions_line(open_page, tmp_path):
    dataset = str(tmp_path / "shared.tsv")
    append_rank_list(dataset, ["别人先存的 A", "别人先存的 B", "别人先存的 C", "别人先存的 D"])
    at = open_page(dataset_file=dataset)
    for answer, value in enumerate([1, 2, 3, 4]):
        rank(at, answer, value)
    click(at, SAVE)
    append_rank_list(dataset, ["别人后存的 A", "别人后存的 B", "别人后存的 C", "别人后存的 D"])
    before = lines_of(dataset)
    assert len(before) == 3

    click(at, UNDO)
    assert lines_of(dataset) == [before[0], before[2]]
    assert len(lines_of(metadata_path(dataset))) == 2


def test_regenerate_skip_and_random_prompt(open_page):
    at = open_page("--random_prompts", "这部电影很", "这家酒店的服务")
    texts = answers(at)
    rank(at, 0, 1)
    click(at, REGENERATE)
    assert answers(at) != texts
    assert [s.value for s in at.selectbox] == [-1] * 4, "new answers start unranked"

    prompt = at.text_input[0].value
    click(at, SKIP)
    assert at.text_input[0].value == ({"这部电影很", "这家酒店的服务"} - {prompt}).pop()
    assert all(t.startswith(at.text_input[0].value) for t in answers(at))
    click(at, RANDOM)
    assert at.text_input[0].value == prompt


def test_configuration_from_command_line(open_page, tmp_path):
    at = open_page("--rank_list_len", "3", "--max_new_tokens", "5")
    assert [s.label for s in at.selectbox] == ["句子1排名", "句子2排名", "句子3排名"]
    assert at.selectbox[0].options == ["-1", "1", "2", "3"]
    config = json.loads(at.sidebar.json[0].value)
    assert (config["rank_list_len"], config["max_new_tokens"], config["device"]) == (3, 5, str(pick_device()))
    assert config["model"].endswith("gpt2") and config["dataset_file"].startswith(str(tmp_path))

    help_page = open_page("--help")
    assert "--rank_list_len" in help_page.code[0].value and not help_page.selectbox


@pytest.mark.parametrize("extra, message", [
    (["--rank_list_len", "1"], "--rank_list_len must be at least 2"),
    (["--max_new_tokens", "0"], "--max_new_tokens/--max_gen_seq_len: expected a whole number from 1"),
    (["--no_such_option"], "unrecognized arguments: --no_such_option"),
    (["--model", "no-such-user/no-such-model"], "cannot load model 'no-such-user/no-such-model'"),
])
def test_bad_configuration_is_one_message_on_the_page(open_page, tmp_path, extra, message):
    at = open_page(*extra, tiny="--model" not in extra)
    assert [e.value for e in at.error] and message in at.error[0].value
    assert not at.selectbox and not os.path.exists(tmp_path / "human_labeled")


def test_an_unwritable_dataset_file_is_a_message_before_any_ranking(open_page, tmp_path):
    """Refused when the page opens (utils.options.output_file), not after the first ranking."""
    (tmp_path / "a_file").write_text("不是文件夹\n", encoding="utf-8")
    at = open_page(dataset_file=str(tmp_path / "a_file" / "labels.tsv"))
    assert any("a_file is a file, not a folder" in e.value for e in at.error) and not at.selectbox
    assert (tmp_path / "a_file").read_text(encoding="utf-8") == "不是文件夹\n"


def test_prompt_longer_than_the_model_is_refused(open_page):
    at = open_page()
    at.text_input[0].set_value("很" * 200).run()
    assert any("prompt 太长" in e.value for e in at.error)
    assert not at.selectbox


def test_dataset_tab_missing_good_and_malformed_file(open_page, tmp_path):
    missing = open_page(dataset_file=str(tmp_path / "none.tsv"))
    assert any("还不存在" in i.value for i in missing.tabs[1].info)

    good = tmp_path / "good.tsv"
    good.write_text("好1\t好2\t坏1\t坏2\n很好\t不错\t一般\t差\n", encoding="utf-8")
    at = open_page(dataset_file=str(good))
    tab = at.tabs[1]
    assert any("共 **2** 条" in m.value for m in tab.markdown)
    assert tab.dataframe[0].value.values.tolist() == [["好1", "好2", "坏1", "坏2"], ["很好", "不错", "一般", "差"]]
    assert not tab.warning

    bad = tmp_path / "bad.tsv"
    content = "好1\t好2\t坏1\t坏2\n只有\t三个\t字段\n\n很好\t\t一般\t差\n很好\t不错\t一般\t差\n"
    bad.write_text(content, encoding="utf-8")
    at = open_page(dataset_file=str(bad))
    tab = at.tabs[1]
    assert any("共 **2** 条" in m.value for m in tab.markdown)
    assert any("2 行格式不对" in w.value for w in tab.warning)
    problems = tab.dataframe[1].value
    assert problems["line"].tolist() == [2, 4]
    assert "expected 4 tab-separated texts, found 3" in problems["problem"][0]
    assert "empty text in field 2" in problems["problem"][1]
    assert bad.read_text(encoding="utf-8") == content, "viewing must not change the file"


# ---------------------------------------------------------------- who may label, and who labelled what
def enter_password(at, password):
    at.text_input[0].set_value(password)
    click(at, "进入")


def test_a_password_keeps_everything_behind_it(open_page, monkeypatch, tmp_path):
    dataset = tmp_path / "labels.tsv"
    append_rank_list(str(dataset), ["甲", "乙", "丙", "丁"], {"annotator": "小王"})
    at = open_page("--password", "开门 sesame", dataset_file=str(dataset))
    assert [t.label for t in at.text_input] == ["访问密码"] and at.text_input[0].proto.type == TextInputProto.PASSWORD
    shown = " ".join(m.value for m in at.markdown) + str(at.sidebar.json)
    assert not at.selectbox and not at.tabs and not at.sidebar.json and "甲" not in shown
    assert not at.get("download_button")

    enter_password(at, "开门")
    assert [e.value for e in at.error] == ["密码错误 (wrong password)"]
    assert not at.selectbox and not at.tabs

    enter_password(at, "开门 sesame")
    assert not at.error and len(at.selectbox) == 4 and at.get("download_button")
    assert any("共 **1** 条" in m.value for m in at.tabs[1].markdown)
    for answer, value in enumerate([1, 2, 3, 4]):
        rank(at, answer, value)
    click(at, SAVE)
    assert len(lines_of(dataset)) == 2, "after the password the page works as before"

    monkeypatch.setenv("LABELER_PASSWORD", "from the environment")  # stays out of `ps`
    at = open_page(dataset_file=str(dataset))
    assert not at.selectbox and [t.label for t in at.text_input] == ["访问密码"]
    enter_password(at, "from the environment")
    assert len(at.selectbox) == 4


def test_an_empty_password_is_refused(open_page, tmp_path):
    at = open_page("--password", "")
    assert [e.value for e in at.error] == ["error: ` --password is empty: give a password, or leave the option "
                                           "out for a page without one `"]  # a code span: shown as plain text
    assert not at.selectbox and not at.text_input
    result = subprocess.run(["sh", "start_ranklist_labler.sh", "--tiny", "--password", ""], cwd=REPO,
                            env=dict(os.environ, PYTHON="false"), capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: --password is empty: give a password, or leave the option out for a page " \
                            "without one\n"


@pytest.mark.parametrize("args, env, warned, address", [
    ([], {}, True, "0.0.0.0"),
    (["--address", "127.0.0.1"], {}, False, "127.0.0.1"),
    (["--address=::"], {}, True, "::"),
    ([], {"LABELER_PASSWORD": "secret"}, False, "0.0.0.0"),
    (["--password", "secret"], {}, False, "0.0.0.0"),
])
def test_start_script_warns_on_every_interface_without_a_password(args, env, warned, address):
    # PYTHON=echo shows the command the script would run instead of starting a server
    result = subprocess.run(["sh", "start_ranklist_labler.sh", "--tiny", *args], cwd=REPO,
                            env=dict(os.environ, PYTHON="echo", **env), capture_output=True, text=True)
    assert result.returncode == 0
    assert (result.stderr.startswith("warning: listening on every interface without a password")
            and result.stderr.count("\n") == 1) == warned, result.stderr
    command = result.stdout.split()
    assert command[command.index("--server.address") + 1] == address
    assert command[command.index("--client.toolbarMode") + 1] == "minimal"  # no Deploy / rerun / settings menu
    assert command[command.index("--") + 1:] == ["--tiny", *args]


def test_require_annotator_and_counts_per_annotator_and_day(open_page, tmp_path):
    dataset = tmp_path / "labels.tsv"
    for name in ("小王", "小李", "小王", " "):
        append_rank_list(str(dataset), ["甲", "乙", "丙", "丁"], {"annotator": name})
    with open(metadata_path(str(dataset)), "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": "2026-01-02T10:00:00+0000", "annotator": "小李"}) + "\n不是 JSON\n")
    at = open_page("--require_annotator", dataset_file=str(dataset))
    for answer, value in enumerate([1, 2, 3, 4]):
        rank(at, answer, value)
    click(at, SAVE)
    assert any("请先在侧边栏填写标注者名字" in e.value for e in at.error)
    assert len(lines_of(dataset)) == 4, "nothing written without a name"
    at.sidebar.text_input[0].set_value("  ").run()
    click(at, SAVE)
    assert len(lines_of(dataset)) == 4, "a blank name is no name"
    at.sidebar.text_input[0].set_value("小张").run()
    click(at, SAVE)
    assert any("保存成功" in s.value for s in at.success) and len(lines_of(dataset)) == 5

    at = open_page(dataset_file=str(dataset))  # a new session sees the counts
    by_annotator, by_day = (frame.value for frame in at.tabs[1].dataframe[1:3])
    assert by_annotator.iloc[:, :2].values.tolist() == [["小王", 2], ["小李", 2], ["(未填写)", 1], ["小张", 1]]
    today = time.strftime("%Y-%m-%d")
    assert by_day.values.tolist() == [["2026-01-02", 1], [today, 5]]


def order_shown(at):
    return next(m.value for m in at.markdown if m.value.startswith("当前顺序"))


def test_click_ranking_undo_a_click_and_the_records_of_a_save(open_page, tmp_path):
    at = open_page()
    dataset = str(tmp_path / "human_labeled" / "total_dataset.tsv")
    at.sidebar.text_input[0].set_value("小王").run()
    click(at, REGENERATE)
    texts = answers(at)
    click(at, "选句子2")
    click(at, "选句子1")
    assert order_shown(at) == "当前顺序：句子2 > 句子1"
    assert [b.value for b in at.selectbox] == [2, 1, -1, -1], "the selectors follow the clicks"
    click(at, UNDO_CLICK)
    assert order_shown(at) == "当前顺序：句子2" and at.selectbox[0].value == -1
    click(at, "选句子1")
    click(at, "选句子4")  # answer 3 is the one left: it is last
    assert order_shown(at) == "当前顺序：句子2 > 句子1 > 句子4 > 句子3"
    assert [b.value for b in at.selectbox] == [2, 1, 4, 3]
    assert rank_results(at) == [texts[1], texts[0], texts[3], texts[2]]
    click(at, SAVE)
    assert lines_of(dataset) == ["\t".join([texts[1], texts[0], texts[3], texts[2]])]
    [record] = [json.loads(line) for line in lines_of(metadata_path(dataset))]
    assert record["ranks"] == [2, 1, 4, 3] and "task_id" not in record
    assert (record["regenerations"], record["prompt_changes"]) == (1, 0) and 0 < record["seconds"] < 600
    click(at, SKIP)  # a new prompt after a save is no change "before the save"
    rank(at, 0, 1)
    at.text_input[0].set_value("今天天气").run()  # changed before saving
    for answer in range(3):
        click(at, f"选句子{answer + 1}")
    click(at, SAVE)
    record = json.loads(lines_of(metadata_path(dataset))[1])
    assert (record["regenerations"], record["prompt_changes"], record["prompt"]) == (0, 1, "今天天气")
    medians = at.tabs[1].dataframe[1].value
    assert medians.values.tolist()[0][:2] == ["小王", 2] and medians.values.tolist()[0][2] > 0


def task_file(tmp_path, n=2, answers=("好看", "一般", "无聊", "难看")):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "prompt": "这部电影很", "answers": list(answers)},
                                       ensure_ascii=False) + "\n" for i in range(1, n + 1)), encoding="utf-8")
    return str(path)


def test_queue_mode_two_annotators_share_a_task(open_page, tmp_path):
    tasks, dataset = task_file(tmp_path), str(tmp_path / "labels.tsv")
    pages = {}
    for name in ("甲", "乙"):
        at = pages[name] = open_page("--tasks", tasks, "--overlap", "1", dataset_file=dataset, tiny=False)
        assert any("请先在侧边栏填写标注者名字" in i.value for i in at.info), "a task needs a name"
        assert not at.button or SAVE not in [b.label for b in at.button]
        at.sidebar.text_input[0].set_value(name).run()
        assert any("任务 ` t1 `" in m.value for m in at.markdown), "with --overlap 1 both rank t1"
    for name, clicks in (("甲", ["选句子1", "选句子2", "选句子3"]), ("乙", ["选句子1", "选句子3", "选句子2"])):
        for label in clicks:
            click(pages[name], label)
        click(pages[name], SAVE)
        assert any("任务 ` t2 `" in m.value for m in pages[name].markdown), "the next task comes after a save"
    records = [json.loads(line) for line in lines_of(metadata_path(dataset))]
    assert [(r["task_id"], r["annotator"]) for r in records] == [("t1", "甲"), ("t1", "乙")]
    assert [r["model"] for r in records] == [tasks, tasks]
    click(pages["甲"], SKIP_TASK)  # t2 skipped: nothing left for 甲
    assert any("没有留给你的任务了" in s.value for s in pages["甲"].success)
    at = open_page("--tasks", tasks, "--overlap", "1", dataset_file=dataset, tiny=False)
    agreement_table = at.tabs[1].dataframe[-1].value
    assert agreement_table.values.tolist() == [["乙", pytest.approx(2 / 3), 1, 1], ["甲", pytest.approx(2 / 3), 1, 1]]
    assert any("平均 Kendall's tau **0.667**" in m.value for m in at.tabs[1].markdown)


BAD_TASK_LINES = [
    ('{"id": "t1", "prompt": "p", "answers": ["只有一个"]}', "tasks.jsonl:1: a task needs at least 2 answers"),
    ("不是 JSON", "tasks.jsonl:1: not a JSON object"),
]


@pytest.mark.parametrize("line, message", BAD_TASK_LINES)
def test_a_bad_task_file_is_named_in_one_line(tmp_path, line, message, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(line + "\n", encoding="utf-8")
    code, err = run_in_process(tasks_main, ["check", str(tasks)], capsys)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    code, err = run_in_process(tasks_main, ["check", str(tasks), "--skip_bad_lines"], capsys)
    assert code == 2 and "no tasks in this file" in err


def test_the_server_does_not_start_on_a_bad_task_file(tmp_path):
    """The start script checks the task file (`python -m utils.tasks check`) before it starts Streamlit."""
    line, message = BAD_TASK_LINES[0]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(line + "\n", encoding="utf-8")
    result = subprocess.run(["sh", "start_ranklist_labler.sh", "--tasks", str(tasks), "--address", "127.0.0.1"],
                            cwd=REPO, env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    result = subprocess.run(["sh", "start_ranklist_labler.sh", "--tasks", str(tasks), "--skip_bad_lines"], cwd=REPO,
                            env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no tasks in this file" in result.stderr


# ---------------------------------------------------------------- storage
def test_fields_stay_one_valid_line(tmp_path):
    assert clean_field(" 第一行\n第二行\t第三列\r\n ") == "第一行 第二行 第三列"
    with pytest.raises(UserError, match="text 2 of the rank list is empty"):
        format_rank_line(["好", "\t\n", "差"])
    dataset = tmp_path / "d.tsv"
    dataset.write_text("手写的\t最后一行没有换行", encoding="utf-8")
    append_rank_list(str(dataset), ["答案\n一", "答案\t二"])
    assert read_rank_lists(str(dataset)) == [["手写的", "最后一行没有换行"], ["答案 一", "答案 二"]]


def test_undo_of_a_line_that_is_gone_changes_nothing(tmp_path):
    dataset = str(tmp_path / "d.tsv")
    saved = append_rank_list(dataset, ["甲", "乙"])
    with open(dataset, "w", encoding="utf-8") as f:
        f.write("别人\t改过\n")
    assert undo_rank_list(saved) is False
    assert lines_of(dataset) == ["别人\t改过"]
    assert read_rank_list_table(dataset, 2) == ([["别人", "改过"]], [])


WORKER = r"""
import os, sys, time
from utils.ranklists import append_rank_list, undo_rank_list
dataset, worker, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
open(go + "." + worker, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(n):
    # long texts with a tab and a newline inside: a torn or interleaved write would show
    texts = [f"w{worker}-{i}-r{r} " + "好" * 3000 + "\t尾\n巴" for r in range(4)]
    saved = append_rank_list(dataset, texts, {"worker": worker, "i": i})
    if i % 3 == 0:
        assert undo_rank_list(saved)
"""


def test_concurrent_saves_and_undos_lose_nothing(tmp_path):
    dataset, go = str(tmp_path / "shared.tsv"), str(tmp_path / "go")
    workers, n = 5, 30
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, dataset, str(w), str(n), go], cwd=REPO, env=env)
             for w in range(workers)]
    deadline = time.time() + 120
    while not all(os.path.exists(f"{go}.{w}") for w in range(workers)) and time.time() < deadline:
        time.sleep(0.05)
    open(go, "w").close()  # all start saving at the same moment
    assert [p.wait(timeout=120) for p in procs] == [0] * workers

    kept = [(w, i) for w in range(workers) for i in range(n) if i % 3 != 0]
    expected = sorted("\t".join(f"w{w}-{i}-r{r} " + "好" * 3000 + " 尾 巴" for r in range(4)) for w, i in kept)
    assert sorted(lines_of(dataset)) == expected
    records = [json.loads(line) for line in lines_of(metadata_path(dataset))]
    assert sorted((r["worker"], r["i"]) for r in records) == sorted((str(w), i) for w, i in kept)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p], "temporary files left behind"
