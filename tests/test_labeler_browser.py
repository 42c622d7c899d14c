"""End to end: `start_ranklist_labler.sh` serves the page behind a password, headless Chromium gives the password,
ranks four answers and saves them; two annotators in two browser contexts rank the same task of a queue by
clicking the answers in order, each in at most five actions.

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it) and the `playwright` package; Playwright
drives that browser directly, no `playwright install` download. Prints how long the page takes to show the
answers once the model is loaded (from the password's submission), and how long a save takes (targets: 3 s and 100 ms). The page runs on the
micro models; `LABELER_TINY_DIR=~/.cache/rlhf-zh/tiny/recipe2-datasets1 python -m pytest -s tests/test_labeler_browser.py` measures it on
the project's tiny models instead, the issue's target.
"""
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO

CHROMIUM = "/usr/bin/chromium"
RANKS = [2, 1, 4, 3]  # the rank chosen for answers 1..4
PASSWORD = "标注 team-2026"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(micro_dir, tmp_path):
    """The real server, started as a user would: `PORT=... sh start_ranklist_labler.sh --tiny --dataset_file ...`."""
    tiny_dir = os.path.abspath(os.environ.get("LABELER_TINY_DIR", micro_dir))
    with serve(tmp_path, tiny_dir, "--tiny") as (url, dataset, log):
        yield url, dataset, log, "micro" if tiny_dir == micro_dir else tiny_dir


@contextlib.contextmanager
def serve(tmp_path, tiny_dir, *args):
    port, dataset, log = free_port(), tmp_path / "labels.tsv", tmp_path / "server.log"
    env = dict(os.environ, PORT=str(port), PYTHON=sys.executable, RLHF_TINY_DIR=tiny_dir, LABELER_PASSWORD=PASSWORD)
    with open(log, "w") as out:
        proc = subprocess.Popen(["sh", "start_ranklist_labler.sh", *args, "--dataset_file", str(dataset)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, f"server did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", dataset, log
    finally:
        proc.kill()  # at once: its graceful stop takes 2 s and is not what these tests check
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; each test opens its own pages and contexts."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


def open_until_answers(browser, url):
    """A new browser session on the page; returns (page, seconds until the four answers and selectors show)."""
    # tall enough for all selectors: a selector at the bottom edge of a 720 px window did not open its list
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(url)
    page.get_by_label("访问密码").fill(PASSWORD)
    start = time.perf_counter()
    page.get_by_role("button", name="进入").click()
    page.get_by_role("combobox", name="句子4排名").wait_for(timeout=120_000)
    page.get_by_test_id("stText").nth(3).wait_for(timeout=120_000)
    seconds = time.perf_counter() - start
    wait_until_idle(page)
    return page, seconds


def wait_until_idle(page):
    """Until the page's script run is over: while it runs, the old elements are still on the page."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=60_000)


def choose_rank(page, answer, rank, shown=None):
    page.get_by_role("combobox", name=f"句子{answer}排名").click()
    page.get_by_role("option", name=str(rank), exact=True).click()
    # the page reruns after each choice; wait until the selector shows the outcome
    page.wait_for_function(
        "([label, rank]) => document.querySelector(`input[aria-label='${label}']`)?.value === rank",
        arg=[f"句子{answer}排名", str(shown or rank)], timeout=60_000)
    wait_until_idle(page)


@pytest.mark.slow
def test_rank_four_answers_and_save_in_a_real_browser(server, browser):
    url, dataset, log, models = server
    stranger = browser.new_page()
    stranger.goto(url)
    stranger.get_by_label("访问密码").fill("guess")
    stranger.get_by_role("button", name="进入").click()
    stranger.get_by_text("密码错误 (wrong password)").wait_for(timeout=60_000)
    wait_until_idle(stranger)
    assert stranger.get_by_role("combobox").count() == 0 and stranger.get_by_role("tab").count() == 0
    assert stranger.get_by_test_id("stMainMenu").count() == 0 and stranger.get_by_text("Deploy").count() == 0
    stranger.close()
    assert "warning: listening on every interface" not in log.read_text()  # a password is set

    first, model_load_seconds = open_until_answers(browser, url)  # loads the model into the server once
    first.close()
    page_seconds = []
    for _ in range(2):
        other, seconds = open_until_answers(browser, url)
        other.close()
        page_seconds.append(seconds)
    page, seconds = open_until_answers(browser, url)
    page_seconds.append(seconds)
    answers = [page.get_by_test_id("stText").nth(i).inner_text() for i in range(4)]

    choose_rank(page, 1, RANKS[0])
    choose_rank(page, 2, RANKS[0], shown=-1)  # taken by answer 1: refused
    page.get_by_text(f"排名 {RANKS[0]} 已经被句子1占用").wait_for(timeout=60_000)
    for answer, rank in enumerate(RANKS[1:], start=2):
        choose_rank(page, answer, rank)
    start = time.perf_counter()
    page.get_by_role("button", name="存储当前排序").click()
    success = page.get_by_text("保存成功")
    success.wait_for(timeout=60_000)
    round_trip_ms = (time.perf_counter() - start) * 1000
    store_ms = float(re.search(r"保存成功（([\d.]+) ms", success.inner_text()).group(1))

    best_first = [answers[RANKS.index(rank)] for rank in (1, 2, 3, 4)]
    assert dataset.read_text(encoding="utf-8") == "\t".join(best_first) + "\n"
    load = os.getloadavg()[0]
    print(f"\nlabeller page on the {models} GPT-2 (load average {load:.1f} on {os.cpu_count()} cores): "
          f"first open incl. model load {model_load_seconds:.2f} s; answers shown after "
          f"{', '.join(f'{s:.2f}' for s in page_seconds)} s (median {statistics.median(page_seconds):.2f} s, "
          f"target 3 s); save: {store_ms:.1f} ms in storage (target 100 ms), "
          f"{round_trip_ms:.0f} ms click to message")
    # loose ceilings: a busy shared machine is slow, but regenerating per rerun or a stuck lock is far slower
    assert statistics.median(page_seconds) < 15 and store_ms < 1000, log.read_text()


@pytest.mark.slow
def test_two_annotators_rank_one_task_by_clicks_in_at_most_five_actions(browser, micro_dir, tmp_path):
    from utils.ranklists import read_prompted_rank_lists
    from utils.ranklists import agreement, merge_rank_lists

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": "电影-1", "prompt": "这部电影很", "answers": ["好看", "一般", "无聊", "难看"]},
                                ensure_ascii=False) + "\n", encoding="utf-8")
    with serve(tmp_path, micro_dir, "--tasks", str(tasks), "--overlap", "1") as (url, dataset, log):
        pages = {}
        for name in ("甲", "乙"):  # two browser contexts: two people, nothing shared but the server
            page = pages[name] = browser.new_context(viewport={"width": 1280, "height": 1600}).new_page()
            page.goto(url)
            page.get_by_label("访问密码").fill(PASSWORD)
            page.get_by_role("button", name="进入").click()
            page.get_by_label("标注者").fill(name)
            page.get_by_label("标注者").press("Enter")
            page.get_by_text("任务 电影-1").wait_for(timeout=60_000)
            wait_until_idle(page)
        orders = {"甲": [1, 2, 3], "乙": [2, 1, 3]}  # the answers clicked, best first; answer 4 is implied
        for name, page in pages.items():
            actions = 0
            for rank, answer in enumerate(orders[name], start=1):
                page.get_by_role("button", name=f"选句子{answer}").click()
                actions += 1
                page.get_by_role("button", name=f"句子{answer}: 第 {rank} 名").wait_for(timeout=60_000)
                wait_until_idle(page)
            expected = " > ".join(f"句子{a}" for a in orders[name] + [4])
            try:
                page.get_by_text(f"当前顺序：{expected}").wait_for(timeout=60_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
                raise AssertionError(page.inner_text("body")[:3000])
            page.get_by_role("button", name="存储当前排序").click()
            actions += 1
            page.get_by_text("保存成功").wait_for(timeout=60_000)
            assert actions <= 5, f"{name} needed {actions} actions"
            page.get_by_text("队列里没有留给你的任务了").wait_for(timeout=60_000)
        lists = read_prompted_rank_lists(str(dataset))
        answers = ["好看", "一般", "无聊", "难看"]
        assert [(r.task_id, r.annotator, r.texts) for r in lists] == [
            ("电影-1", name, ["这部电影很" + answers[a - 1] for a in orders[name] + [4]]) for name in ("甲", "乙")]
        assert agreement(lists)["tasks"]["电影-1"]["tau"] == pytest.approx(2 / 3)
        [merged], _ = merge_rank_lists(lists, "consensus")
        assert merged.task_id == "电影-1" and len(merged.texts) == 4


# Markdown that would make every annotator's browser fetch an image and show a link (issue 31)
HOSTILE_PROMPT = "这部电影很![x](http://127.0.0.1:9/track.png)[点此重新登录](http://127.0.0.1:9/phish)"
HOSTILE_ANSWERS = ["<img src=http://127.0.0.1:9/a.png>好看", ":red[红] $x^2$ **粗**", "www.example.com 一般",
                   "http://127.0.0.1:9/x 难看"]


def rank_and_save(page):
    """Click answers 1, 2, 3 (the fourth is implied) and save."""
    for answer in (1, 2, 3):
        page.get_by_role("button", name=f"选句子{answer}").click()
        page.get_by_role("button", name=f"句子{answer}: 第 {answer} 名").wait_for(timeout=60_000)
        wait_until_idle(page)
    page.get_by_role("button", name="存储当前排序").click()
    page.get_by_text("保存成功").wait_for(timeout=60_000)
    wait_until_idle(page)


@pytest.mark.slow
def test_prompts_answers_and_saved_lines_are_shown_as_plain_text(browser, micro_dir, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": task_id, "prompt": HOSTILE_PROMPT, "answers": HOSTILE_ANSWERS},
                                        ensure_ascii=False) + "\n" for task_id in ("t*1`", "t2")), encoding="utf-8")
    annotator = "甲[我](http://127.0.0.1:9/me)"
    saved_line = "\t".join(HOSTILE_PROMPT + answer for answer in HOSTILE_ANSWERS)
    with serve(tmp_path, micro_dir, "--tasks", str(tasks)) as (url, dataset, log):
        context = browser.new_context(viewport={"width": 1280, "height": 1600})
        requested = []
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        page.goto(url)
        page.get_by_label("访问密码").fill(PASSWORD)
        page.get_by_role("button", name="进入").click()
        page.get_by_label("标注者").fill(annotator)
        page.get_by_label("标注者").press("Enter")
        page.get_by_text(f"任务 t*1`，prompt：{HOSTILE_PROMPT}", exact=True).wait_for(timeout=60_000)
        wait_until_idle(page)
        main = page.get_by_test_id("stMain")
        shown = main.inner_text()
        assert all(HOSTILE_PROMPT + answer in shown for answer in HOSTILE_ANSWERS)
        rank_and_save(page)  # task t*1`; t2 comes next
        page.get_by_role("button", name="撤销上一次存储").click()
        notice = page.get_by_text("已撤销这一行")
        notice.wait_for(timeout=60_000)
        assert notice.inner_text() == f"已撤销这一行: {saved_line[:60]}"
        assert main.locator("a, img").count() == 0
        wait_until_idle(page)
        rank_and_save(page)  # t2, then t*1` again (its save was undone)
        rank_and_save(page)
        page.get_by_text(f"{annotator}，队列里没有留给你的任务了，谢谢！", exact=True).wait_for(timeout=60_000)
        assert main.locator("a, img").count() == 0
        assert [url for url in requested if "127.0.0.1:9/" in url] == []
        assert dataset.read_text(encoding="utf-8") == (saved_line + "\n") * 2
