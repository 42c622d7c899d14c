"""Nothing lost, round two (issue 31): no output replaces what is not its own (one output-target check), an empty or
worse result never replaces a good one, one reader for every text input, options and state checked before work,
the terminal's ratings log read by one schema. Each instance the issue names has a test (message, exit code, and
nothing on disk changed), and so do instances of the same classes it did not name."""
import argparse
import importlib
import io
import json
import os
import sys

import pytest
import torch
from accelerate import Accelerator

from conftest import run_in_process, run_script_in_process
from test_safety import last_error_line, one_error_line, reward_model_argv, small_lists, tree  # noqa: F401
from utils.errors import UserError
from utils.outputs import (AI_LABELS, AI_META, EPOCH_LOG, FIGURE, LABELS, LABELS_META, LEASES, OTHER, PREFERENCES,
                           RANK_LISTS, RATINGS, STEP_LOG, TASKS, kind_of)
from utils.ranklists import append_rank_list, metadata_path, read_rank_lists

GBK = b"\xb2\xe2\xca\xd4"  # "测试" in GBK
GBK_ARGUMENT = GBK.decode("utf-8", "surrogateescape")  # as Python hands such an argument to the script
RATING = {"rating": 1, "step": 1, "prompt": "这部电影很", "answer": "好看", "reward": 2.0, "seconds": 3.0}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def labels(folder, name="total_dataset.tsv"):
    """A labelled TSV with its metadata, as the labelling page saves it."""
    path = str(folder / name)
    append_rank_list(path, ["这部电影很好看", "这部电影很难看"], {"prompt": "这部电影很", "annotator": "小王"})
    return path


def refused(main, argv, capsys, folder, *fragments):
    """`main(argv)` stops with exit code 2 and one `error:` line holding `fragments`, the last on stderr (notes and
    warnings about what was read may come before it), and nothing under `folder` changed."""
    before = tree(folder)
    code, stderr = run_in_process(main, argv, capsys)
    assert code == 2, stderr[-2000:]
    last_error_line(stderr, *fragments)
    assert tree(folder) == before


@pytest.fixture
def no_model(monkeypatch):
    """Looking at a model, or building the tiny ones, fails the test: the refusals come before."""
    import transformers
    import utils.tiny

    def looked_at(*args, **kwargs):
        pytest.fail("a model was loaded or built")

    monkeypatch.setattr(utils.tiny, "is_current_build", looked_at)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", looked_at)


# ---------------------------------------------------------------- 1. every output checked before any work
def test_the_kind_of_every_project_file(tmp_path):
    tsv = labels(tmp_path)
    plain = tmp_path / "plain.tsv"
    plain.write_text("好\t坏\n", encoding="utf-8")
    ai = tmp_path / "ai.tsv"
    append_rank_list(str(ai), ["好", "坏"], {"prompt": "", "annotator": "AI feedback: classifier"})
    files = {"ratings.jsonl": (write_jsonl(tmp_path / "ratings.jsonl", [RATING]), RATINGS),
             "tasks.jsonl": (write_jsonl(tmp_path / "tasks.jsonl", [{"id": "t", "prompt": "", "answers": []}]), TASKS),
             "prefs.jsonl": (write_jsonl(tmp_path / "p.jsonl", [{"prompt": "", "chosen": "a", "rejected": "b"}]),
                             PREFERENCES),
             "PPO log": (write_jsonl(tmp_path / "ppo.jsonl", [{"epoch": 0, "reward_mean": 0.5}]), EPOCH_LOG),
             "DPO log": (write_jsonl(tmp_path / "dpo.jsonl", [{"step": 10, "epoch": 1}]), STEP_LOG),
             "leases": (write_jsonl(tmp_path / "x.leases.json", [{"t1": {"小王": 1.0}}]), LEASES),
             "labels": (tsv, LABELS), "labels' meta": (metadata_path(tsv), LABELS_META),
             "plain rank lists": (str(plain), RANK_LISTS), "AI feedback": (str(ai), AI_LABELS),
             "AI feedback's meta": (metadata_path(str(ai)), AI_META)}
    (tmp_path / "prompts.txt").write_text("\ufeff这部电影很\n", encoding="utf-8")
    (tmp_path / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    (tmp_path / "gbk.txt").write_bytes(GBK + b"\n")
    (tmp_path / "empty.txt").write_bytes(b"\n")
    for name, (path, kind) in files.items():
        assert kind_of(path) == kind, name
    assert kind_of(str(tmp_path / "prompts.txt")) == kind_of(str(tmp_path / "gbk.txt")) == OTHER
    assert kind_of(str(tmp_path / "figure.png")) == FIGURE
    assert kind_of(str(tmp_path / "empty.txt")) is None and kind_of(str(tmp_path / "missing")) is None


def test_ppo_refuses_the_terminals_ratings_log_as_its_log(tmp_path, capsys, no_model):
    import ppo_sentiment_example

    ratings = write_jsonl(tmp_path / "Terminal-Human-Feedback.jsonl", [RATING])
    refused(ppo_sentiment_example.main, ["--tiny", "--total_samples", "16", "--batch_size", "8", "--mini_batch_size",
                                         "4", "--log_name", "Terminal-Human-Feedback", "--log_dir", str(tmp_path),
                                         "--save_dir", str(tmp_path / "ck")], capsys, tmp_path,
            f"--log_name: {ratings} exists and is the terminal's ratings log, not a training log of epoch records")


@pytest.mark.parametrize("log_name, fragment", [
    ("../data/human_labeled/total_dataset.meta", "expected a file name without folders (--log_dir names the folder)"),
    ("/tmp/elsewhere", "expected a file name without folders"),
    (GBK_ARGUMENT, "'\\xb2\\xe2\\xca\\xd4' is not valid UTF-8 text"),  # a traceback after training, before
], ids=["relative_path", "absolute_path", "not_utf8"])
@pytest.mark.parametrize("script", ["grpo_sentiment_example", "ppo_sentiment_example", "train_dpo",
                                    "train_reward_model"])
def test_log_name_is_a_name(script, log_name, fragment, tmp_path, capsys, no_model):
    refused(importlib.import_module(script).main, ["--tiny", "--log_name", log_name, "--log_dir", str(tmp_path)],
            capsys, tmp_path, f"--log_name {log_name}: {fragment}" if log_name != GBK_ARGUMENT else fragment)


def test_grpo_refuses_the_labellers_metadata_as_its_log(tmp_path, capsys, no_model):
    import grpo_sentiment_example

    meta = metadata_path(labels(tmp_path))
    refused(grpo_sentiment_example.main, ["--tiny", "--log_dir", str(tmp_path), "--log_name", "total_dataset.meta"],
            capsys, tmp_path, f"{meta} exists and is the metadata of labels (a .meta.jsonl), not a training log")


@pytest.mark.parametrize("script, kind", [("train_dpo", "a training log of epoch records"),
                                          ("ppo_sentiment_example", "a training log of step records")])
def test_a_training_log_of_another_script_is_refused(script, kind, tmp_path, capsys, no_model):
    other = {"train_dpo": {"epoch": 0, "reward_mean": 0.5}, "ppo_sentiment_example": {"step": 1, "epoch": 1}}[script]
    write_jsonl(tmp_path / "run.jsonl", [other])
    refused(importlib.import_module(script).main, ["--tiny", "--log_dir", str(tmp_path), "--log_name", "run"],
            capsys, tmp_path, f"exists and is {kind}")


def test_tasks_make_refuses_to_write_over_its_prompts_file(tmp_path, capsys, no_model):
    from utils import tasks

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("这部电影很\n刚收到货，感觉\n", encoding="utf-8")
    refused(tasks.main, ["make", "--tiny", "--prompts_file", str(prompts), "--output", str(prompts),
                         "--tasks_per_prompt", "1", "--max_new_tokens", "4"], capsys, tmp_path,
            f"--output {prompts} is also what --prompts_file reads ({prompts}): writing it would destroy what is read")


@pytest.mark.parametrize("make", ["the task file", "a task file as labels", "the tasks' own prompts file"])
def test_the_labelling_page_refuses_a_dataset_file_of_another_kind(make, tmp_path):
    import ranklist_labeler as page  # the page runs only inside Streamlit
    task_file = write_jsonl(tmp_path / "T.jsonl", [{"id": "t1", "prompt": "这部电影很", "answers": ["好看", "难看"]}])
    dataset, message = {
        "the task file": (task_file, f"--dataset_file {task_file} is also what --tasks reads"),
        "a task file as labels": (write_jsonl(tmp_path / "other.jsonl", [{"id": "t", "prompt": "", "answers": []}]),
                                  "exists and is a task file, not labels"),
        "the tasks' own prompts file": (str(tmp_path / "prompts.txt"), "exists and is a file that is no command's"),
    }[make]
    (tmp_path / "prompts.txt").write_text("这部电影很\n", encoding="utf-8")
    before = tree(tmp_path)
    with pytest.raises(UserError) as error:
        page.parse_args(["--tasks", task_file, "--dataset_file", dataset])
    assert message in str(error.value)
    assert tree(tmp_path) == before


def test_ratings_export_refuses_to_write_over_labels(tmp_path, capsys):
    from utils import ratings

    ratings_file = write_jsonl(tmp_path / "R.jsonl", [RATING, {**RATING, "rating": 2, "answer": "难看", "reward": -2}])
    tsv = labels(tmp_path)
    refused(ratings.main, [ratings_file, tsv], capsys, tmp_path,
            f"out_file: {tsv} exists and is labels (a rank-list TSV with its .meta.jsonl), not a rank-list TSV without "
            "metadata")


@pytest.mark.parametrize("target", ["ratings log", "task file", "prompts file", "labels' meta"])
def test_the_preference_export_refuses_files_of_another_kind(target, tmp_path, capsys):
    from utils import preferences

    tsv = tmp_path / "good.tsv"
    tsv.write_text("好\t坏\n", encoding="utf-8")
    output = {"ratings log": write_jsonl(tmp_path / "Terminal-Human-Feedback.jsonl", [RATING]),
              "task file": write_jsonl(tmp_path / "tasks.jsonl", [{"id": "t", "prompt": "", "answers": []}]),
              "prompts file": str(tmp_path / "prompts.txt"), "labels' meta": metadata_path(labels(tmp_path))}[target]
    (tmp_path / "prompts.txt").write_text("这部电影很\n", encoding="utf-8")
    refused(preferences.main, [str(tsv), "--output", output], capsys, tmp_path, f"--output: {output} exists and is",
            "not preference pairs (JSONL)")


def test_ai_feedback_never_replaces_human_labels(tmp_path, capsys, no_model):
    from utils import ai_feedback

    tsv = labels(tmp_path)
    refused(ai_feedback.main, ["--tiny", "--output", tsv], capsys, tmp_path,
            f"--output: {tsv} exists and is labels (a rank-list TSV with its .meta.jsonl), not AI-feedback rank lists")


def test_dpo_never_builds_ai_feedback_over_human_labels(tmp_path, capsys, no_model):
    import train_dpo

    tsv = labels(tmp_path)
    refused(train_dpo.main, ["--tiny", "--ai_feedback_file", tsv, "--log_dir", str(tmp_path / "logs")], capsys,
            tmp_path, f"--ai_feedback_file: {tsv} exists and is labels")


def test_dpo_refuses_a_log_that_is_its_training_file(tmp_path, capsys, no_model):
    import train_dpo

    prefs = write_jsonl(tmp_path / "run.jsonl", [{"prompt": "", "chosen": "好", "rejected": "坏"}])
    refused(train_dpo.main, ["--train_path", prefs, "--log_dir", str(tmp_path), "--log_name", "run"], capsys, tmp_path,
            f"--log_name {prefs} is also what --train_path reads")


# ---------------------------------------------------------------- 2. an empty or worse result never replaces a good one
@pytest.mark.parametrize("skip_bad_lines", [False, True])
def test_an_empty_preference_export_keeps_the_earlier_one(skip_bad_lines, tmp_path, capsys):
    from utils import preferences

    good, same, output = tmp_path / "good.tsv", tmp_path / "same.tsv", str(tmp_path / "prefs.jsonl")
    good.write_text("好\t坏\n", encoding="utf-8")
    same.write_text("一样\t一样\n" if not skip_bad_lines else "只有一句\n", encoding="utf-8")
    assert run_in_process(preferences.main, [str(good), "--output", output], capsys)[0] == 0
    refused(preferences.main, [str(same), "--output", output] + ["--skip_bad_lines"] * skip_bad_lines, capsys,
            tmp_path, f"no preference pairs in {same}", f"{output} is left as it was")


def test_a_log_is_replaced_only_by_a_runs_first_record(tmp_path):
    from utils.logger import TrainLogger

    earlier = write_jsonl(tmp_path / "run.jsonl", [{"epoch": 0, "reward_mean": 0.5}])
    TrainLogger(str(tmp_path), "run", x_key="epoch").close()  # a run that stopped before its first epoch
    assert kind_of(earlier) == EPOCH_LOG and len(open(earlier).readlines()) == 1
    logger = TrainLogger(str(tmp_path), "run", x_key="epoch")
    logger.log({"epoch": 0, "reward_mean": 0.7})
    logger.close()
    assert [json.loads(line)["reward_mean"] for line in open(earlier)] == [0.7]


def test_a_better_model_best_of_an_earlier_run_is_kept(small_lists, micro_dir, tmp_path, capsys, monkeypatch):  # noqa: F811 (small_lists is a fixture)
    import train_reward_model

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    argv = reward_model_argv(small_lists, tmp_path)
    assert run_in_process(train_reward_model.main, argv, capsys)[0] == 0
    best = tree(tmp_path / "ck" / "model_best")
    with open(tmp_path / "ck" / "model_best" / "reward_model.json", encoding="utf-8") as f:
        earlier = json.load(f)["dev_metrics"]["pairwise_acc"]

    real_evaluate = train_reward_model.evaluate
    monkeypatch.setattr(train_reward_model, "evaluate",
                        lambda *a: {**real_evaluate(*a), "pairwise_acc": earlier - 0.01})  # a worse run
    result = run_script_in_process(train_reward_model.main, argv, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    path = os.path.join(str(tmp_path / "ck"), "model_best")
    assert f"{path} (an earlier run's) has pairwise_acc {earlier:.5f} on these dev lists: it is kept unless this " \
           "run does better" in result.stdout
    assert f"this run did not beat {path} (pairwise_acc {earlier:.5f}): it is kept" in result.stdout
    assert tree(tmp_path / "ck" / "model_best") == best

    other_dev = train_reward_model.dev_fingerprint(read_rank_lists(small_lists[1])[:16])
    assert train_reward_model.earlier_best(str(tmp_path / "ck"), other_dev) == (path, None)  # not comparable
    train_reward_model.announce_earlier_best(path, None, Accelerator(cpu=True))
    assert capsys.readouterr().out == f"note: {path} (an earlier run's) was not scored on these dev lists, so it " \
                                      "cannot be compared: this run's best replaces it\n"


def test_the_dataset_builder_never_replaces_a_file_a_user_put_there(tmp_path, monkeypatch):
    from utils import data

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / data.RANK_LIST_DIR / "train.tsv"
    mine.parent.mkdir(parents=True)
    mine.write_text("我的\t排序\n", encoding="utf-8")  # the original tutorial's own rank lists, say
    before = tree(tmp_path)
    with pytest.raises(UserError, match=f"{data.RANK_LIST_DIR}/train.tsv: not written by the builder "
                                        rf"\(no data/datasets_build.json\): refusing to replace it"):
        data.ensure_datasets()
    assert tree(tmp_path) == {**before, "data/datasets_build.lock": tree(tmp_path)["data/datasets_build.lock"]}

    mine.unlink()
    data.build_datasets(quiet=True)  # the builder's own files it replaces; one changed since, it does not
    data.build_datasets(quiet=True)
    mine.write_text("我的\t排序\n", encoding="utf-8")
    with pytest.raises(UserError, match="train.tsv: changed since the builder wrote it"):
        data.build_datasets(quiet=True)
    assert mine.read_text(encoding="utf-8") == "我的\t排序\n"


# ---------------------------------------------------------------- 3. one reader for every text input
def test_lines_end_at_lf_cr_or_crlf_and_a_bom_is_no_text():
    from utils.texts import numbered_lines

    assert numbered_lines(b"\xef\xbb\xbfA\rB\r\nC\n" + GBK + b"\nD\xe2\x80\xa8E") == [
        (1, "A"), (2, "B"), (3, "C"), (4, None), (5, "D\u2028E")]


def test_a_cr_prompts_file_makes_one_task_per_prompt(micro_main, tmp_path):
    from utils import tasks

    prompts, output = tmp_path / "p.txt", tmp_path / "t.jsonl"
    prompts.write_bytes(b"A\rB\rC\r")
    result = micro_main(tasks.main, ["make", "--tiny", "--prompts_file", str(prompts), "--output", str(output),
                                     "--tasks_per_prompt", "1", "--max_new_tokens", "4", "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [t.prompt for t in tasks.read_tasks(str(output))] == ["A", "B", "C"]


@pytest.mark.parametrize("data, texts", [(b"\xe5\xa5\xbd\xe8\xaf\x84\r\xe5\xb7\xae\xe8\xaf\x84\r", ["好评", "差评"]),
                                         (b"\xef\xbb\xbf\xe5\xa5\xbd\r\n\r\n", ["好"])])
def test_stdin_texts_are_read_as_files_are(data, texts, monkeypatch):
    from inference_reward_model import read_texts

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert read_texts(argparse.Namespace(texts=["-"])) == texts


def test_stdin_that_is_not_utf8_is_one_line(capsys, monkeypatch):
    from inference_reward_model import read_texts

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xe5\xa5\xbd\n" + GBK + b"\n")))
    code, stderr = run_in_process(read_texts, argparse.Namespace(texts=["-"]), capsys)
    assert code == 2
    one_error_line(stderr, "stdin:2: not valid UTF-8 text (expected one text per line)")


@pytest.mark.parametrize("script, argv", [("inference_reward_model", [GBK_ARGUMENT]),
                                          ("inference_ppo_gpt", ["--prompt", GBK_ARGUMENT])])
def test_a_text_argument_that_is_not_utf8_is_one_line(script, argv, tmp_path, capsys, no_model):
    refused(importlib.import_module(script).main, argv, capsys, tmp_path,
            "'\\xb2\\xe2\\xca\\xd4' is not valid UTF-8 text (another encoding, such as GBK?)")


def test_a_bom_is_no_part_of_a_rank_lists_first_text(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeff好\t坏\r\n很好\t很差\r".encode("utf-8"))
    assert read_rank_lists(str(path)) == [["好", "坏"], ["很好", "很差"]]


@pytest.mark.parametrize("prompt", [" 这部电影很", "\t这部电影很", "这部电影很 "])
def test_a_task_prompt_with_surrounding_whitespace_is_saved_as_its_texts_are(prompt, tmp_path, capsys):
    from utils import preferences

    tsv = str(tmp_path / "labels.tsv")
    append_rank_list(tsv, [prompt + answer for answer in ("好看", "一般", "难看")], {"prompt": prompt})
    result = run_script_in_process(preferences.main, [tsv, "--output", str(tmp_path / "prefs.jsonl")], capsys)
    assert result.returncode == 0, result.stderr
    pairs = [json.loads(line) for line in open(tmp_path / "prefs.jsonl", encoding="utf-8")]
    assert {pair["prompt"] for pair in pairs} == {"这部电影很"} and len(pairs) == 3


def test_a_rank_list_file_of_identical_texts_trains_no_reward_model(tmp_path, capsys, no_model):
    import train_reward_model

    same = tmp_path / "same.tsv"
    same.write_text("质量很好\t质量很好\n" * 30, encoding="utf-8")
    refused(train_reward_model.main, ["--model_name", str(tmp_path / "encoder"), "--train_path", str(same),
                                      "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")],
            capsys, tmp_path, f"{same}: no rank list of 2 or more different texts in this file")


def test_a_labelled_file_without_metadata_keeps_its_lines_and_records_aligned(tmp_path, capsys):
    from utils.ranklists import read_prompted_rank_lists

    tsv = tmp_path / "total_dataset.tsv"
    tsv.write_text("很好\t很差\n\n不错\t一般\n", encoding="utf-8")  # the original labeller wrote no metadata
    append_rank_list(str(tsv), ["这部电影很好看", "这部电影很难看"], {"prompt": "这部电影很"})
    assert [(r.prompt, r.texts) for r in read_prompted_rank_lists(str(tsv))] == [
        (None, ["很好", "很差"]), (None, ["不错", "一般"]), ("这部电影很", ["这部电影很好看", "这部电影很难看"])]


# ---------------------------------------------------------------- 4. devices, options and state checked before work
SCRIPTS_WITH_A_DEVICE = ["ppo_sentiment_example", "grpo_sentiment_example", "train_dpo", "train_reward_model",
                         "terminal_main", "inference_ppo_gpt", "inference_reward_model", "utils.ai_feedback",
                         "utils.tiny"]


@pytest.mark.parametrize("script", SCRIPTS_WITH_A_DEVICE + ["utils.tasks make"])
@pytest.mark.parametrize("device", ["cuda", "foo", "cuda:7"])
def test_a_device_the_machine_lacks_is_one_line_before_any_model(script, device, tmp_path, capsys, no_model):
    if device != "foo" and torch.cuda.device_count() > (0 if device == "cuda" else 7):
        pytest.skip(f"this machine has {device}")
    module, *command = script.split()
    message = {"foo": "expected a device such as cpu, cuda or cuda:1", "cuda": "this machine has no cuda device",
               "cuda:7": "this machine has"}[device]
    refused(importlib.import_module(module).main, command + ["--device", device], capsys, tmp_path,
            f"--device: {device}: " if device != "foo" else "--device foo: ", message)


def test_dpo_refuses_beta_0(tmp_path, capsys, no_model):
    import train_dpo

    refused(train_dpo.main, ["--tiny", "--beta", "0"], capsys, tmp_path, "--beta 0: expected a finite number above 0")


@pytest.mark.parametrize("key, value, expected", [
    ("kl_coef", -5, "expected a finite number, 0 or more, got '-5'"),
    ("kl_coef", float("nan"), "expected a finite number, 0 or more, got 'nan'"),
    ("kl_coef", "0.2", "expected a finite number, 0 or more, got '0.2'"),
    ("epoch", -1, "expected a whole number from 0 to 1000000000, got '-1'"),
    ("epoch", 2.5, "expected a whole number from 0 to 1000000000, got '2.5'"),
    ("step", True, "expected a whole number from 0 to 1000000000, got True"),
    ("base_model", 5, "expected the reference model's name or folder, got 5"),
    ("algorithm", "sft", "expected one of ppo, grpo, dpo, got 'sft'"),
    ("reward_norm", {"mode": "reference", "mean": 0.0, "std": 0.0},
     "expected a finite mean and a positive finite std, got {'mode': 'reference', 'mean': 0.0, 'std': 0.0}"),
    ("judge_ref", {"classifier": "high"}, "expected the reference's mean judge score by judge, got {'classifier': "
                                          "'high'}"),
])
def test_a_checkpoint_state_is_checked_like_an_option(key, value, expected, tmp_path, capsys, no_model):
    import ppo_sentiment_example

    checkpoint = tmp_path / "model_5"
    checkpoint.mkdir()
    state = {"epoch": 5, "kl_coef": 0.2, "base_model": "gpt2", "algorithm": "ppo", key: value}
    (checkpoint / "training_state.json").write_text(json.dumps(state), encoding="utf-8")
    refused(ppo_sentiment_example.main, ["--tiny", "--resume", str(checkpoint)], capsys, tmp_path,
            f'--resume: {checkpoint / "training_state.json"}: "{key}": {expected}; the checkpoint state is corrupt')


# ---------------------------------------------------------------- 5. the ratings log: one schema, one reader
@pytest.mark.parametrize("bad, reason", [
    ({"prompt": "这部电影很", "answer": "好看", "reward": 2.0}, "no 'rating' (a rating record has rating, prompt, "
                                                                "answer, reward)"),
    ({**RATING, "rating": 0}, "'rating': expected a whole number from 1 to 1000000000, got '0'"),
    ({**RATING, "seconds": -1}, "'seconds': expected a finite number, 0 or more, got '-1'"),
    ({**RATING, "answer": 3}, "'answer' should be a text"),
], ids=["no_rating", "rating_0", "negative_seconds", "answer_not_text"])
def test_a_bad_rating_is_one_line_in_both_readers(bad, reason, tmp_path, capsys, no_model, monkeypatch):
    import terminal_main
    from utils import ratings

    log = write_jsonl(tmp_path / "Terminal-Human-Feedback.jsonl", [RATING, bad])
    refused(ratings.main, [log, str(tmp_path / "out.tsv")], capsys, tmp_path,
            f"{log}:2: {reason} (use --skip_bad_lines to skip such lines)")
    monkeypatch.setattr(terminal_main, "check_causal_lm", lambda *a: pytest.fail("a model was looked at"))
    refused(terminal_main.main, ["--model_name", "m", "--log_dir", str(tmp_path), "--save_dir", str(tmp_path / "ck")],
            capsys, tmp_path, f"{log}:2: {reason} (fix or remove that line, or choose another --log_dir)")


def test_a_rating_cut_short_by_a_kill_is_left_out_with_a_warning(tmp_path, capsys):
    from utils.ratings import read_ratings

    log = tmp_path / "Terminal-Human-Feedback.jsonl"
    log.write_text(json.dumps(RATING) + "\n" + '{"rating": 2, "prompt": "这', encoding="utf-8")
    assert read_ratings(str(log)) == [RATING]
    assert capsys.readouterr().err == f"warning: {log}:2: the last line was cut short (a write killed halfway?) and " \
                                      "is left out\n"


def test_the_terminal_refuses_a_ppo_log_as_its_ratings_log(tmp_path, capsys, no_model):
    import terminal_main

    log = write_jsonl(tmp_path / "Terminal-Human-Feedback.jsonl", [{"epoch": 0, "reward_mean": 0.5}])
    refused(terminal_main.main, ["--model_name", "m", "--log_dir", str(tmp_path), "--save_dir", str(tmp_path / "ck")],
            capsys, tmp_path, f"--log_dir: {log} exists and is a training log of epoch records, not the terminal's "
                              "ratings log")
