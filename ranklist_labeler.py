"""Rank-list labelling page (section 4 of the original tutorial).

The GPT-2 writes K answers to a prompt, you give each a rank (1 = best), and "存储当前排序" appends them as
one line to a TSV file, best first, separated by tabs: the rank-list format `train_reward_model.py` reads.
Who saved what and when goes to a `.meta.jsonl` file beside the TSV.

    sh start_ranklist_labler.sh --tiny                                # offline models, port 8904
    LABELER_PASSWORD=... sh start_ranklist_labler.sh --tiny --require_annotator   # only invited annotators
    sh start_ranklist_labler.sh --tiny --address 127.0.0.1            # this machine only
    streamlit run ranklist_labeler.py -- --tiny --dataset_file my_labels.tsv --rank_list_len 3

With an access password (`--password`, or `LABELER_PASSWORD` in the environment so that it stays out of `ps`)
the page shows only a password field until the password is given: labelling, undo, the Dataset tab and its
download are all behind it.
"""
import argparse
import hmac
import os
import random
import sys
import time

import pandas as pd
import streamlit as st
import torch

from utils.common import Lazy, UserError, parse_with_presets, pick_device
from utils.generation import decode, encode_prompt, generate_responses
from utils.policy import add_model_arguments, load_causal_lm
from utils.ranklists import (append_rank_list, count_saves, metadata_path, read_rank_list_table,
                             undo_rank_list)

RANDOM_PROMPTS = ["今天早晨我去了", "这部电影很", "刚收到货，感觉", "说实话，真的很", "这次购物总的来说体验很",
                  "这家酒店的服务"]
UNRANKED = -1
PASSWORD_ENV = "LABELER_PASSWORD"


class PageArgumentParser(argparse.ArgumentParser):
    """argparse for a Streamlit page, which must not exit: errors raise UserError, --help is shown on the page."""

    def error(self, message):
        raise UserError(f"{message} (`streamlit run ranklist_labeler.py -- --help` lists the options)")

    def print_help(self, file=None):
        st.code(self.format_help(), language=None)
        st.stop()


def parse_args(argv):
    parser = PageArgumentParser(prog="streamlit run ranklist_labeler.py --", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", "--model",
                        help="the model that writes the answers: uer's GPT-2 or any causal LM")
    add_model_arguments(parser, lora=False)
    parser.add_argument("--tiny", action="store_true", help="use the offline tiny GPT-2 (utils/tiny.py)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per generation: every annotator's session generates in its own thread, "
                             "and more torch threads than free cores made generation 5-10x slower here")
    parser.add_argument("--dataset_file", default=os.path.join("data", "human_labeled", "total_dataset.tsv"))
    parser.add_argument("--rank_list_len", type=int, default=4, help="answers per prompt (K)")
    parser.add_argument("--max_new_tokens", "--max_gen_seq_len", type=int, default=40, help="new tokens per answer")
    parser.add_argument("--random_prompts", nargs="+", default=RANDOM_PROMPTS, metavar="PROMPT",
                        help="the pool that the 随机 prompt button draws from")
    parser.add_argument("--password", help=f"access password for the page (better: the {PASSWORD_ENV} environment "
                                           "variable, which `ps` does not show); default: no password")
    parser.add_argument("--address", default="0.0.0.0",
                        help="where start_ranklist_labler.sh listens: 0.0.0.0 = every interface, as the original "
                             "(other machines open ip:8904), 127.0.0.1 = this machine only")
    parser.add_argument("--require_annotator", action="store_true",
                        help="refuse to save until the annotator's name is filled in")
    args = parse_with_presets(parser, argv, {"default": {"model_name": "uer/gpt2-chinese-cluecorpussmall"},
                                             "tiny": {"model_name": Lazy("the tiny GPT-2", tiny_gpt2)}})
    if args.password == "":
        raise UserError("--password is empty: give a password, or leave the option out for a page without one")
    if args.password is None:
        args.password = os.environ.get(PASSWORD_ENV, "")
    if args.rank_list_len < 2:
        raise UserError(f"--rank_list_len must be at least 2, got {args.rank_list_len}")
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    args.device = str(pick_device(args.device))
    return args


def tiny_gpt2():
    from utils.tiny import ensure_tiny

    return ensure_tiny()["gpt2"]


@st.cache_resource(show_spinner="加载模型 ...")
def load_model(name_or_path, device, chat_template):
    """Loaded once per server process; every browser session shares it."""
    return load_causal_lm(name_or_path, device, chat_template)


def generate_answers(model, tokenizer, prompt, args):
    """K answers in one batched sampling call; each shown and saved as prompt + answer, like the original."""
    query = encode_prompt(tokenizer, prompt)
    longest = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if longest and len(query) + args.max_new_tokens > longest:
        raise UserError(f"prompt 太长: {len(query)} tokens + {args.max_new_tokens} new tokens > the model's "
                        f"{longest} positions")
    responses = generate_responses(model, tokenizer, [query] * args.rank_list_len, args.max_new_tokens)
    return [prompt + decode(tokenizer, response) for response in responses]


# ---------------------------------------------------------------- callbacks (they run before the page reruns)
def pick_random_prompt(pool):
    others = [p for p in pool if p != st.session_state.prompt] or pool
    st.session_state.prompt = random.choice(others)


def regenerate():
    st.session_state.pop("answers", None)


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


def save_ranking(args):
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
    meta = {"prompt": answers["prompt"], "rank_list_len": len(ranks), "ranks": ranks,
            "annotator": st.session_state.annotator.strip(), "model": args.model_name}
    start = time.perf_counter()
    try:
        saved = append_rank_list(args.dataset_file, best_first, meta)
    except (OSError, UserError) as e:
        st.session_state.notice = ("error", f"存储失败: {e}")
        return
    took_ms = (time.perf_counter() - start) * 1000
    answers["saved"] = True
    st.session_state.saved_lines.append((answers["id"], saved))
    st.session_state.notice = ("success", f"保存成功（{took_ms:.1f} ms，写入 {args.dataset_file}），"
                                          "请更换 prompt 生成新的答案~")


def undo_last_save():
    if not st.session_state.saved_lines:
        st.session_state.notice = ("info", "这个浏览器会话还没有存储过排序，没有可撤销的。")
        return
    answers_id, saved = st.session_state.saved_lines.pop()
    if not undo_rank_list(saved):
        st.session_state.notice = ("warning", f"{saved.path} 里已经找不到这一行（文件被改过？），什么也没有删除。")
        return
    answers = st.session_state.get("answers")
    if answers and answers["id"] == answers_id:
        answers["saved"] = False
    st.session_state.notice = ("success", f"已撤销这一行: {saved.line.strip()[:60]}")


def rank_key(answers, i):
    # keyed by the generation, so new answers start unranked
    return f"rank_{answers['id']}_{i}"


# ---------------------------------------------------------------- page parts
def show_sidebar(args):
    st.sidebar.header("Model Config")
    st.sidebar.json({"model": args.model_name, "device": args.device, "threads": args.threads,
                     "dataset_file": args.dataset_file, "metadata_file": metadata_path(args.dataset_file),
                     "rank_list_len": args.rank_list_len, "max_new_tokens": args.max_new_tokens,
                     "random_prompts": args.random_prompts, "require_annotator": args.require_annotator})
    st.sidebar.text_input("标注者（必填，记入 metadata）" if args.require_annotator else "标注者（可选，记入 metadata）",
                          key="annotator")
    st.sidebar.caption(f"本会话已存储 {len(st.session_state.saved_lines)} 条")


def label_tab(args, model, tokenizer):
    with st.expander("🔍 Setting Prompts", expanded=True):
        st.button("随机 prompt", on_click=pick_random_prompt, args=(args.random_prompts,),
                  help="从 prompt 池中随机选一个（--random_prompts 可以换掉这个池）")
        prompt = st.text_input("prompt: ", key="prompt").strip()
    if not prompt:
        st.info("输入一个 prompt，或点「随机 prompt」。")
        return
    answers = st.session_state.get("answers")
    if answers is None or answers["prompt"] != prompt:
        with st.spinner("生成中 ..."):
            try:
                texts = generate_answers(model, tokenizer, prompt, args)
            except UserError as e:
                st.error(str(e))
                return
        st.session_state.generation += 1
        answers = {"id": st.session_state.generation, "prompt": prompt, "texts": texts,
                   "ranks": [UNRANKED] * len(texts), "saved": False}
        st.session_state.answers = answers

    conflict = st.session_state.pop("conflict", None)
    rank_choices = [UNRANKED] + list(range(1, args.rank_list_len + 1))
    with st.expander("💡 Generate Results", expanded=True):
        for i, text in enumerate(answers["texts"]):
            text_column, rank_column = st.columns([6, 1])
            text_column.text(text)
            key = rank_key(answers, i)
            st.session_state.setdefault(key, answers["ranks"][i])
            rank_column.selectbox(f"句子{i + 1}排名", rank_choices, key=key, on_change=refuse_taken_rank, args=(i,),
                                  help=f"1 = 最好；{UNRANKED} = 还没有排名")
            if conflict and conflict[0] == i:
                text_column.warning(conflict[1])  # inside the row, so the selectors below keep their places

    with st.expander("🥇 Rank Results", expanded=True):
        for rank, column in enumerate(st.columns(args.rank_list_len), start=1):
            column.write(f"Rank {rank}：")
            if rank in answers["ranks"]:
                column.text(answers["texts"][answers["ranks"].index(rank)])

    save_column, regenerate_column, skip_column, undo_column = st.columns(4)
    save_column.button("存储当前排序", type="primary", on_click=save_ranking, args=(args,))
    regenerate_column.button("重新生成答案", on_click=regenerate)
    skip_column.button("跳过这个 prompt", on_click=pick_random_prompt, args=(args.random_prompts,))
    undo_column.button("撤销上一次存储", on_click=undo_last_save, help="只撤销这个浏览器会话自己存的最后一行")
    notice = st.session_state.pop("notice", None)
    if notice:
        kind, message = notice
        getattr(st, kind)(message)


def dataset_tab(args):
    path = args.dataset_file
    if not os.path.exists(path):
        st.info(f"{path} 还不存在：存储第一条排序时会创建它。")
        return
    rank_lists, bad_lines = read_rank_list_table(path, args.rank_list_len)
    st.write(f"{path}: 共 **{len(rank_lists)}** 条 rank list")
    if rank_lists:
        st.dataframe(pd.DataFrame(rank_lists, columns=[f"rank {i + 1}" for i in range(args.rank_list_len)]))
    by_annotator, by_day = count_saves(metadata_path(path))
    if by_annotator:
        st.write(f"按标注者、按天统计（来自 {metadata_path(path)}）:")
        annotator_column, day_column = st.columns(2)
        annotator_column.dataframe(pd.DataFrame(by_annotator.most_common(), columns=["标注者", "条数"]),
                                   hide_index=True)
        day_column.dataframe(pd.DataFrame(sorted(by_day.items()), columns=["日期", "条数"]), hide_index=True)
    with open(path, "rb") as f:
        st.download_button("下载 TSV", f.read(), file_name=os.path.basename(path), mime="text/tab-separated-values")
    if bad_lines:
        st.warning(f"{len(bad_lines)} 行格式不对（每行应是 {args.rank_list_len} 个用 tab 分隔的非空文本）:")
        st.dataframe(pd.DataFrame(bad_lines, columns=["line", "problem"]), hide_index=True)


def show_error(e):
    print(f"error: {e}", file=sys.stderr)
    st.error(f"error: {e}")
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
    try:
        torch.set_num_threads(args.threads)
        model, tokenizer = load_model(args.model_name, args.device, args.chat_template)
    except UserError as e:
        show_error(e)
    for name, value in (("prompt", random.choice(args.random_prompts)), ("annotator", ""), ("saved_lines", []),
                        ("generation", 0)):
        st.session_state.setdefault(name, value)

    show_sidebar(args)
    label, dataset = st.tabs(["Label", "Dataset"])
    with label:
        label_tab(args, model, tokenizer)
    with dataset:
        dataset_tab(args)


main()
