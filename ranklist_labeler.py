"""Rank-list labelling page (section 4 of the original tutorial).

The GPT-2 writes K answers to a prompt, you give each a rank (1 = best), and "存储当前排序" appends them as
one line to a TSV file, best first, separated by tabs: the rank-list format `train_reward_model.py` reads.
Who saved what and when goes to a `.meta.jsonl` file beside the TSV.

    sh start_ranklist_labler.sh --tiny                                # offline models, port 8904
    LABELER_PASSWORD=... sh start_ranklist_labler.sh --tiny --require_annotator   # only invited annotators
    sh start_ranklist_labler.sh --tiny --address 127.0.0.1            # this machine only
    streamlit run ranklist_labeler.py -- --tiny --dataset_file my_labels.tsv --rank_list_len 3
    sh start_ranklist_labler.sh --tasks data/human_labeled/tasks.jsonl --overlap 0.2   # a team on a task queue

Rank by clicking the answers from best to worst (the last one is implied), or with the rank selectors.
Free mode (default): a prompt of your choice or a random one, and fresh answers from the GPT-2.
Queue mode (`--tasks FILE`, made by `python -m utils.tasks make`): every annotator draws the next task of a
shared file (utils/tasks.py TaskQueue); `--overlap R` sends a share R of the tasks to two annotators, so that
`python -m utils.ranklists agreement` can say how much they agree. The Dataset tab shows that agreement and each
annotator's median time per list.

With an access password (`--password`, or `LABELER_PASSWORD` in the environment so that it stays out of `ps`)
the page shows only a password field until the password is given: labelling, undo, the Dataset tab and its
download are all behind it.
"""
import argparse
import hmac
import os
import random
import re
import statistics
import sys
import time

import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.scriptrunner import get_script_run_ctx

from utils.device import pick_device
from utils.errors import UserError
from utils.generation import sample_answers
from utils.tokens import encode_prompt
from utils.options import (add_device_argument, fraction, input_file, output_file, positive_float, positive_int,
                           utf8_text)
from utils.outputs import LEASES, Output, check_outputs, labels_outputs
from utils.policy import add_model_arguments, load_causal_lm
from utils.presets import Lazy, Preset, parse_with_presets
from utils.ranklists import (agreement, append_rank_list, count_saves, metadata_path, read_meta_records,
                             read_prompted_rank_lists, read_rank_list_table, undo_rank_list)
from utils.tasks import TaskQueue, lease_file, read_tasks

RANDOM_PROMPTS = ["今天早晨我去了", "这部电影很", "刚收到货，感觉", "说实话，真的很", "这次购物总的来说体验很",
                  "这家酒店的服务"]
UNRANKED = -1
PASSWORD_ENV = "LABELER_PASSWORD"


def as_text(text):
    """`text` (a prompt, a saved line, a name, a message quoting them) for the Markdown that st.write, st.success
    and the like render, as a code span: shown verbatim, it makes no link, image, emphasis, HTML, Streamlit
    directive (:red[...], $...$) or link of a bare URL (which GFM makes even of backslash-escaped text). Line
    breaks become spaces (a blank line would end the span); the fence is longer than any run of backticks in it,
    and the spaces inside it are the one pair CommonMark strips."""
    text = re.sub(r"[\r\n]", " ", str(text))
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}"


class PageArgumentParser(argparse.ArgumentParser):
    """argparse for a Streamlit page, which must not exit: errors raise UserError, --help is shown on the page
    (`python ranklist_labeler.py --help`, outside Streamlit, prints it: `help_outside_streamlit`)."""

    def error(self, message):
        raise UserError(f"{message} (`streamlit run ranklist_labeler.py -- --help` lists the options)")

    def print_help(self, file=None):
        st.code(self.format_help(), language=None)
        st.stop()


def parse_args(argv):
    parser = build_parser(PageArgumentParser)
    parser.set_defaults(model_name="uer/gpt2-chinese-cluecorpussmall")
    return checked(parse_with_presets(parser, argv, [Preset("--tiny", lambda args: args.tiny,
                                                            dict(model_name=Lazy("the tiny GPT-2", tiny_gpt2)))]))


def build_parser(parser_class):
    parser = parser_class(prog="streamlit run ranklist_labeler.py --", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", "--model",
                        help="the model that writes the answers: uer's GPT-2 or any causal LM")
    add_model_arguments(parser, lora=False)
    parser.add_argument("--tiny", action="store_true", help="use the offline tiny GPT-2 (utils/tiny.py)")
    add_device_argument(parser)
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads per generation: every annotator's session generates in its own thread, "
                             "and more torch threads than free cores made generation 5-10x slower here")
    parser.add_argument("--dataset_file", type=output_file,
                        default=os.path.join("data", "human_labeled", "total_dataset.tsv"))
    parser.add_argument("--rank_list_len", type=positive_int, default=4, help="answers per prompt (K)")
    parser.add_argument("--max_new_tokens", "--max_gen_seq_len", type=positive_int, default=40,
                        help="new tokens per answer")
    parser.add_argument("--random_prompts", nargs="+", type=utf8_text, default=RANDOM_PROMPTS, metavar="PROMPT",
                        help="the pool that the 随机 prompt button draws from")
    parser.add_argument("--password", type=utf8_text,
                        help=f"access password for the page (better: the {PASSWORD_ENV} environment "
                             "variable, which `ps` does not show); default: no password")
    parser.add_argument("--address", default="0.0.0.0",
                        help="where start_ranklist_labler.sh listens: 0.0.0.0 = every interface, as the original "
                             "(other machines open ip:8904), 127.0.0.1 = this machine only")
    parser.add_argument("--require_annotator", action="store_true",
                        help="refuse to save until the annotator's name is filled in (always so with --tasks)")
    parser.add_argument("--tasks", type=input_file, help="queue mode: a task file (JSONL: id, prompt, answers) that annotators draw "
                                        "from, instead of fresh answers; `python -m utils.tasks make` writes one")
    parser.add_argument("--overlap", type=fraction, default=0.0,
                        help="with --tasks: the share of tasks that two annotators rank (for agreement)")
    parser.add_argument("--task_timeout", type=positive_float, default=600,
                        help="with --tasks: seconds after which a task taken but not saved returns to the queue")
    parser.add_argument("--skip_bad_lines", action="store_true", help="with --tasks: skip and count bad task lines")
    return parser


def checked(args):
    """The checks beyond each option's own, and what follows from the options (the password, queue mode)."""
    if args.password == "":
        raise UserError("--password is empty: give a password, or leave the option out for a page without one")
    if args.password is None:
        args.password = os.environ.get(PASSWORD_ENV, "")
    if args.rank_list_len < 2:
        raise UserError(f"--rank_list_len must be at least 2, got {args.rank_list_len}")
    if args.task_timeout <= 0:
        raise UserError(f"--task_timeout must be a positive number of seconds, got {args.task_timeout}")
    outputs = labels_outputs("--dataset_file", args.dataset_file)
    if args.tasks:
        outputs.append(Output("--dataset_file", lease_file(args.dataset_file), LEASES))
    check_outputs(outputs, [("--tasks", args.tasks)])
    if args.tasks:
        args.require_annotator = True  # the queue hands tasks to names
        args.rank_list_len = len(read_tasks(args.tasks, args.skip_bad_lines)[0].answers)
    args.device = str(pick_device(args.device))
    return args


def tiny_gpt2():
    from utils.tiny import ensure_tiny

    return ensure_tiny()["gpt2"]


@st.cache_resource(show_spinner="加载模型 ...")
def load_model(name_or_path, device, chat_template):
    """Loaded once per server process; every browser session shares it."""
    return load_causal_lm(name_or_path, device, chat_template)


@st.cache_resource(show_spinner="读取任务文件 ...")
def load_queue(tasks_file, modified, skip_bad_lines, dataset_file, overlap, timeout):
    """One queue object per server process and task file version (`modified`); its state lives in files."""
    return TaskQueue(read_tasks(tasks_file, skip_bad_lines), dataset_file, overlap, timeout)


def new_answers(prompt, texts, task_id=None):
    """The answers on show, with what their save records: when they were shown, what came before them."""
    st.session_state.generation += 1
    return {"id": st.session_state.generation, "prompt": prompt, "texts": texts, "ranks": [UNRANKED] * len(texts),
            "saved": False, "task_id": task_id, "shown_at": time.time()}


def generate_answers(model, tokenizer, prompt, args):
    """K answers in one batched sampling call; each shown and saved as prompt + answer, like the original."""
    query = encode_prompt(tokenizer, prompt)
    longest = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if longest and len(query) + args.max_new_tokens > longest:
        raise UserError(f"prompt 太长: {len(query)} tokens + {args.max_new_tokens} new tokens > the model's "
                        f"{longest} positions")
    return [prompt + answer for answer in sample_answers(model, tokenizer, prompt, args.rank_list_len,
                                                           args.max_new_tokens)]


# ---------------------------------------------------------------- callbacks (they run before the page reruns)
def pick_random_prompt(pool):
    others = [p for p in pool if p != st.session_state.prompt] or pool
    st.session_state.prompt = random.choice(others)


def regenerate():
    st.session_state.pop("answers", None)
    st.session_state.regenerations += 1


def skip_task(queue):
    answers = st.session_state.pop("answers", None)
    if answers:
        st.session_state.skipped.add(answers["task_id"])
        queue.release(answers["task_id"], st.session_state.annotator.strip())
        st.session_state.prompt_changes += 1


def click_answer(i):
    """Answer i takes the best rank still free; when one answer is left, it takes the last rank."""
    answers = st.session_state.answers
    ranks = answers["ranks"]
    if ranks[i] != UNRANKED:
        return
    free = [r for r in range(1, len(ranks) + 1) if r not in ranks]
    ranks[i] = free[0]
    unranked = [j for j, r in enumerate(ranks) if r == UNRANKED]
    if len(unranked) == 1:
        ranks[unranked[0]] = free[1]
    sync_selectors(answers)


def undo_click():
    """Take back the last click: the worst rank given (and the implied last one with it)."""
    answers = st.session_state.answers
    ranks = answers["ranks"]
    given = sorted(r for r in ranks if r != UNRANKED)
    for rank in given[-2:] if len(given) == len(ranks) else given[-1:]:
        ranks[ranks.index(rank)] = UNRANKED
    sync_selectors(answers)


def sync_selectors(answers):
    for i, rank in enumerate(answers["ranks"]):
        st.session_state[rank_key(answers, i)] = rank


def refuse_taken_rank(i):
    """A rank another answer holds is refused: the selector goes back to its previous value."""
    answers = st.session_state.answers
    key = rank_key(answers, i)
    chosen = st.session_state[key]
    ranks = answers["ranks"]
    if chosen != UNRANKED and chosen in ranks and ranks.index(chosen) != i:
        holder = ranks.index(chosen) + 1
        st.session_state[key] = ranks[i]
        st.session_state.conflict = (i, f"排名 {chosen} 已经被句子{holder}占用，请先把句子{holder}的排名改为 "
                                        f"{UNRANKED} 再给句子{i + 1}这个排名。")
    else:
        ranks[i] = chosen


def save_ranking(args, queue=None):
    answers = st.session_state.answers
    ranks = answers["ranks"]
    unranked = [str(i + 1) for i, rank in enumerate(ranks) if rank == UNRANKED]
    if unranked:
        st.session_state.notice = ("error", f"请完成排序后再存储！句子 {', '.join(unranked)} 还没有排名，什么也没有写入。")
        return
    if args.require_annotator and not st.session_state.annotator.strip():
        st.session_state.notice = ("error", "请先在侧边栏填写标注者名字再存储，什么也没有写入。")
        return
    if answers["saved"]:
        st.session_state.notice = ("warning", "这组答案已经存储过了。要改排序请先点「撤销上一次存储」，或换一个 prompt。")
        return
    best_first = [answers["texts"][ranks.index(rank)] for rank in range(1, len(ranks) + 1)]
    annotator = st.session_state.annotator.strip()
    meta = {"prompt": answers["prompt"], "rank_list_len": len(ranks), "ranks": ranks, "annotator": annotator,
            "model": args.model_name if queue is None else args.tasks,
            "seconds": round(time.time() - answers["shown_at"], 2),
            "regenerations": st.session_state.regenerations, "prompt_changes": st.session_state.prompt_changes}
    if answers["task_id"] is not None:
        meta["task_id"] = answers["task_id"]
    start = time.perf_counter()
    try:
        saved = append_rank_list(args.dataset_file, best_first, meta)
    except (OSError, UserError) as e:
        st.session_state.notice = ("error", f"存储失败: {as_text(e)}")
        return
    took_ms = (time.perf_counter() - start) * 1000
    answers["saved"] = True
    st.session_state.regenerations = st.session_state.prompt_changes = 0
    st.session_state.saved_lines.append((answers["id"], saved))
    if queue is not None:
        queue.release(answers["task_id"], annotator)
    next_step = "下一个任务已经领取~" if queue is not None else "请更换 prompt 生成新的答案~"
    st.session_state.notice = ("success", f"保存成功（{took_ms:.1f} ms，写入 {as_text(args.dataset_file)}），{next_step}")


def undo_last_save():
    if not st.session_state.saved_lines:
        st.session_state.notice = ("info", "这个浏览器会话还没有存储过排序，没有可撤销的。")
        return
    answers_id, saved = st.session_state.saved_lines.pop()
    if not undo_rank_list(saved):
        st.session_state.notice = ("warning", f"{as_text(saved.path)} 里已经找不到这一行（文件被改过？），什么也没有删除。")
        return
    answers = st.session_state.get("answers")
    if answers and answers["id"] == answers_id:
        answers["saved"] = False
    st.session_state.notice = ("success", f"已撤销这一行: {as_text(saved.line.strip()[:60])}")


def rank_key(answers, i):
    # keyed by the generation, so new answers start unranked
    return f"rank_{answers['id']}_{i}"


# ---------------------------------------------------------------- page parts
def show_sidebar(args, queue):
    st.sidebar.header("Model Config")
    st.sidebar.json({"model": args.model_name, "device": args.device, "threads": args.threads,
                     "dataset_file": args.dataset_file, "metadata_file": metadata_path(args.dataset_file),
                     "rank_list_len": args.rank_list_len, "max_new_tokens": args.max_new_tokens,
                     "random_prompts": args.random_prompts, "require_annotator": args.require_annotator,
                     "tasks": args.tasks, "overlap": args.overlap, "task_timeout": args.task_timeout})
    st.sidebar.text_input("标注者（必填，记入 metadata）" if args.require_annotator else "标注者（可选，记入 metadata）",
                          key="annotator")
    st.sidebar.caption(f"本会话已存储 {len(st.session_state.saved_lines)} 条")
    if queue is not None:
        done, wanted = queue.progress()
        st.sidebar.caption(f"任务队列: 已完成 {done} / {wanted} 次排序（{len(queue.tasks)} 个任务，"
                           f"{len(queue.overlapped)} 个由两人排序）")


def free_answers(args, model, tokenizer):
    """Free mode: answers to the prompt in the box, generated again when the prompt changes."""
    with st.expander("🔍 Setting Prompts", expanded=True):
        st.button("随机 prompt", on_click=pick_random_prompt, args=(args.random_prompts,),
                  help="从 prompt 池中随机选一个（--random_prompts 可以换掉这个池）")
        prompt = st.text_input("prompt: ", key="prompt").strip()
    if not prompt:
        st.info("输入一个 prompt，或点「随机 prompt」。")
        return None
    answers = st.session_state.get("answers")
    if answers is None or answers["prompt"] != prompt:
        if answers is not None and not answers["saved"]:
            st.session_state.prompt_changes += 1
        with st.spinner("生成中 ..."):
            try:
                texts = generate_answers(model, tokenizer, prompt, args)
            except UserError as e:
                st.error(as_text(e))
                return None
        answers = st.session_state.answers = new_answers(prompt, texts)
    return answers


def queue_answers(queue):
    """Queue mode: the task this annotator holds, or the next one the queue has for them."""
    annotator = st.session_state.annotator.strip()
    if not annotator:
        st.info("请先在侧边栏填写标注者名字，再领取任务（同一个任务不会发给同一个人两次）。")
        return None
    answers = st.session_state.get("answers")
    if answers is None or answers["saved"] or answers.get("annotator") != annotator:
        task = queue.take(annotator, st.session_state.skipped)
        if task is None:
            st.session_state.pop("answers", None)
            st.success(f"{as_text(annotator)}，队列里没有留给你的任务了，谢谢！")
            return None
        answers = new_answers(task.prompt, [task.prompt + a for a in task.answers], task.id)
        answers["annotator"] = annotator
        st.session_state.answers = answers
    st.markdown(f"任务 {as_text(answers['task_id'])}，prompt：**{as_text(answers['prompt'])}**")
    return answers


def label_tab(args, model, tokenizer, queue):
    answers = free_answers(args, model, tokenizer) if queue is None else queue_answers(queue)
    if answers is None:
        show_notice()
        return
    conflict = st.session_state.pop("conflict", None)
    rank_choices = [UNRANKED] + list(range(1, args.rank_list_len + 1))
    ranks = answers["ranks"]
    with st.expander("💡 Generate Results", expanded=True):
        st.caption("按从好到差的顺序点击句子（最后一个自动排在最后），或用右边的排名选择框。")
        for i, text in enumerate(answers["texts"]):
            text_column, click_column, rank_column = st.columns([6, 1, 1])
            text_column.text(text)
            ranked = ranks[i] != UNRANKED
            click_column.button(f"句子{i + 1}: 第 {ranks[i]} 名" if ranked else f"选句子{i + 1}",
                                key=f"click_{answers['id']}_{i}", disabled=ranked, on_click=click_answer, args=(i,))
            key = rank_key(answers, i)
            st.session_state.setdefault(key, ranks[i])
            rank_column.selectbox(f"句子{i + 1}排名", rank_choices, key=key, on_change=refuse_taken_rank, args=(i,),
                                  help=f"1 = 最好；{UNRANKED} = 还没有排名")
            if conflict and conflict[0] == i:
                text_column.warning(conflict[1])  # inside the row, so the selectors below keep their places
        order = [f"句子{ranks.index(r) + 1}" for r in range(1, len(ranks) + 1) if r in ranks]
        st.write("当前顺序：" + (" > ".join(order) if order else "（还没有点击）"))

    with st.expander("🥇 Rank Results", expanded=True):
        for rank, column in enumerate(st.columns(args.rank_list_len), start=1):
            column.write(f"Rank {rank}：")
            if rank in ranks:
                column.text(answers["texts"][ranks.index(rank)])

    save_column, undo_click_column, change_column, undo_column = st.columns(4)
    save_column.button("存储当前排序", type="primary", on_click=save_ranking, args=(args, queue))
    undo_click_column.button("撤销一次点击", on_click=undo_click)
    if queue is None:
        change_column.button("重新生成答案", on_click=regenerate)
        change_column.button("跳过这个 prompt", on_click=pick_random_prompt, args=(args.random_prompts,))
    else:
        change_column.button("跳过这个任务", on_click=skip_task, args=(queue,))
    undo_column.button("撤销上一次存储", on_click=undo_last_save, help="只撤销这个浏览器会话自己存的最后一行")
    show_notice()


def show_notice():
    notice = st.session_state.pop("notice", None)
    if notice:
        kind, message = notice
        getattr(st, kind)(message)


def dataset_tab(args):
    path = args.dataset_file
    if not os.path.exists(path):
        st.info(f"{as_text(path)} 还不存在：存储第一条排序时会创建它。")
        return
    try:
        rank_lists, bad_lines = read_rank_list_table(path, args.rank_list_len)
    except UserError as e:
        st.error(f"error: {as_text(e)}")
        return
    st.write(f"{as_text(path)}: 共 **{len(rank_lists)}** 条 rank list")
    if rank_lists:
        st.dataframe(pd.DataFrame(rank_lists, columns=[f"rank {i + 1}" for i in range(args.rank_list_len)]))
    by_annotator, by_day = count_saves(metadata_path(path))
    if by_annotator:
        st.write(f"按标注者、按天统计（来自 {as_text(metadata_path(path))}）:")
        annotator_column, day_column = st.columns(2)
        seconds = median_seconds(metadata_path(path))
        annotator_column.dataframe(pd.DataFrame([(name, count, seconds.get(name)) for name, count
                                                 in by_annotator.most_common()],
                                                columns=["标注者", "条数", "每条中位用时（秒）"]), hide_index=True)
        day_column.dataframe(pd.DataFrame(sorted(by_day.items()), columns=["日期", "条数"]), hide_index=True)
    show_agreement(path)
    with open(path, "rb") as f:
        st.download_button("下载 TSV", f.read(), file_name=os.path.basename(path), mime="text/tab-separated-values")
    if bad_lines:
        st.warning(f"{len(bad_lines)} 行格式不对（每行应是 {args.rank_list_len} 个用 tab 分隔的非空文本）:")
        st.dataframe(pd.DataFrame(bad_lines, columns=["line", "problem"]), hide_index=True)


def median_seconds(meta_file):
    """{annotator: median seconds from answers shown to save} over the records that carry the time."""
    times = {}
    for record in read_meta_records(meta_file):
        if isinstance(record.get("seconds"), (int, float)):
            times.setdefault(str(record.get("annotator") or "").strip() or "(未填写)", []).append(record["seconds"])
    return {name: statistics.median(values) for name, values in times.items()}


def show_agreement(path):
    """Kendall's tau between annotators who ranked the same task (utils/ranklists.py agreement)."""
    try:
        report = agreement(read_prompted_rank_lists(path, skip_bad_lines=True))
    except UserError as e:
        st.warning(f"无法计算一致性: {as_text(e)}")
        return
    overall = report["overall"]
    if not overall["pairs"]:
        st.info("还没有被两位以上标注者排过的任务，无法计算一致性（用 --tasks 队列和 --overlap）。")
        return
    st.write(f"标注者一致性: {overall['tasks']} 个任务、{overall['pairs']} 对排序，平均 Kendall's tau "
             f"**{overall['tau']:.3f}**，最好答案相同的比例 {overall['best_same']:.0%}")
    st.dataframe(pd.DataFrame([(name, a["tau"], a["pairs"], a["tasks"]) for name, a in report["annotators"].items()],
                              columns=["标注者", "与他人的平均 tau", "对数", "任务数"]), hide_index=True)


def show_error(e):
    print(f"error: {e}", file=sys.stderr)
    st.error(f"error: {as_text(e)}")
    st.stop()


def let_in(password):
    """True once this browser session has given the access password (always, without one). Until then the page
    shows only a password field; a wrong password gets no hint beyond 密码错误."""
    if not password or st.session_state.get("let_in"):
        return True
    with st.form("password_form"):
        entered = st.text_input("访问密码", type="password")
        submitted = st.form_submit_button("进入")
    if submitted:
        if hmac.compare_digest(entered.encode(), password.encode()):  # a comparison that takes the same time
            st.session_state.let_in = True
            st.rerun()
        st.error("密码错误 (wrong password)")
    return False


def main():
    st.set_page_config(page_title="Rank List Labeler", page_icon="📌", layout="wide")
    try:
        args = parse_args(sys.argv[1:])
    except UserError as e:
        show_error(e)
    if not let_in(args.password):
        st.stop()
    model = tokenizer = queue = None
    try:
        if args.tasks:  # the answers come from the task file: no model to load
            queue = load_queue(args.tasks, os.path.getmtime(args.tasks), args.skip_bad_lines, args.dataset_file,
                               args.overlap, args.task_timeout)
        else:
            torch.set_num_threads(args.threads)
            model, tokenizer = load_model(args.model_name, args.device, args.chat_template)
    except UserError as e:
        show_error(e)
    for name, value in (("prompt", random.choice(args.random_prompts)), ("annotator", ""), ("saved_lines", []),
                        ("generation", 0), ("regenerations", 0), ("prompt_changes", 0), ("skipped", set())):
        st.session_state.setdefault(name, value)

    show_sidebar(args, queue)
    label, dataset = st.tabs(["Label", "Dataset"])
    with label:
        label_tab(args, model, tokenizer, queue)
    with dataset:
        dataset_tab(args)


def help_outside_streamlit(argv):
    """`python ranklist_labeler.py --help` prints the options and exits 0; anything else outside Streamlit says how
    to start the page (exit 2). Nothing of Streamlit runs: no server starts, and none of its bare-mode warnings."""
    if "-h" in argv or "--help" in argv:
        build_parser(argparse.ArgumentParser).print_help()
        sys.exit(0)
    print("error: ranklist_labeler.py is a Streamlit page: start it with `sh start_ranklist_labler.sh ...` or "
          "`streamlit run ranklist_labeler.py -- ...` (--help lists the options)", file=sys.stderr)
    sys.exit(2)


if get_script_run_ctx(suppress_warning=True) is not None:  # run by Streamlit (its server, or its AppTest in the tests)
    main()
elif __name__ == "__main__":
    help_outside_streamlit(sys.argv[1:])
