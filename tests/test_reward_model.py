"""Reward model: loss, metrics, checkpoints, training (also under accelerate), inference and bad input."""
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertModel

import inference_reward_model
import train_reward_model
from conftest import REPO, cpu_only
from utils.errors import UserError, run_main
from utils.data import RANK_LIST_DIR
from utils.logger import read_jsonl
from utils.ranklists import read_rank_lists
from utils.reward_model import (HEAD_FILE, META_FILE, RewardModel, listwise_loss, load_reward_model,
                                rank_list_loss,
                                ranking_metrics, save_reward_model, score_texts)

POSITIVE = "买过很多箱这个苹果了，一如既往的好，汁多味甜～"
NEGATIVE = "一台充电很慢，信号不好！退了！又买一台竟然是次品。。服了。。"


# ---------------------------------------------------------------- loss and metrics
def loop_loss(score_lists):
    """The original's definition: a plain loop over every pair i<j of every list, averaged over all pairs."""
    total, count = 0.0, 0
    for scores in score_lists:
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                total += -F.logsigmoid(scores[i] - scores[j])
                count += 1
    return total / count


def test_rank_list_loss_equals_the_pair_loop_with_lists_of_different_lengths():
    torch.manual_seed(0)
    lengths = [4, 2, 3, 4, 5, 2]
    scores = torch.randn(len(lengths), 5, dtype=torch.float64) * 3
    mask = torch.tensor([[i < n for i in range(5)] for n in lengths])
    expected = loop_loss([row[:n] for row, n in zip(scores, lengths)])
    assert abs(rank_list_loss(scores, mask).item() - expected.item()) < 1e-6
    scores[~mask] = 1e4  # what stands in the padded places must not matter
    assert abs(rank_list_loss(scores, mask).item() - expected.item()) < 1e-6
    full = torch.randn(8, 4)
    assert abs(rank_list_loss(full).item() - loop_loss(full).item()) < 1e-6


def direct_list_mle(scores):
    """-log P(order) of one list under Plackett-Luce, term by term."""
    return -sum(math.log(math.exp(scores[k]) / sum(math.exp(s) for s in scores[k:])) for k in range(len(scores) - 1))


def test_listwise_loss_equals_the_direct_computation_with_lists_of_different_lengths():
    torch.manual_seed(0)
    lengths = [4, 2, 3, 5]
    scores = torch.randn(len(lengths), 5, dtype=torch.float64) * 3
    mask = torch.tensor([[i < n for i in range(5)] for n in lengths])
    expected = sum(direct_list_mle(row[:n].tolist()) for row, n in zip(scores, lengths)) / len(lengths)
    assert listwise_loss(scores, mask).item() == pytest.approx(expected, rel=1e-9)
    scores[~mask] = 1e4  # what stands in the padded places must not matter
    assert listwise_loss(scores, mask).item() == pytest.approx(expected, rel=1e-9)
    scores.requires_grad_(True)
    listwise_loss(scores, mask).backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[~mask] == 0).all()


def test_listwise_loss_on_lists_of_2_is_exactly_the_pairwise_loss():
    torch.manual_seed(0)
    pairs = torch.randn(16, 2) * 4
    assert listwise_loss(pairs).item() == pytest.approx(rank_list_loss(pairs).item(), rel=1e-6)
    right, wrong = torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert listwise_loss(right) < math.log(24) < listwise_loss(wrong)  # log 4! is the loss of equal scores


def test_rank_list_loss_prefers_the_given_order():
    right, wrong = torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert rank_list_loss(right) < 0.35 < 0.69 < rank_list_loss(wrong)


def test_ranking_metrics_on_known_lists():
    m = ranking_metrics([[3, 2, 1, 0], [0, 1, 2, 3], [1, 0, 3, 2]])
    assert m["pairwise_acc"] == pytest.approx(8 / 18)
    assert m["exact_order_acc"] == pytest.approx(1 / 3)
    assert m["kendall_tau"] == pytest.approx((1 - 1 - 1 / 3) / 3)
    assert m["best_vs_worst_acc"] == pytest.approx(1 / 3)
    assert ranking_metrics([[1.0, 1.0, 1.0]])["exact_order_acc"] == 0  # constant scores rank nothing


def test_random_scores_give_the_chance_levels_on_the_dev_lists():
    rank_lists = read_rank_lists(os.path.join(RANK_LIST_DIR, "dev.tsv"))
    rng = random.Random(0)
    runs = [ranking_metrics([[rng.random() for _ in r] for r in rank_lists]) for _ in range(40)]
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    assert mean["pairwise_acc"] == pytest.approx(0.5, abs=0.02)
    assert mean["best_vs_worst_acc"] == pytest.approx(0.5, abs=0.03)
    assert mean["kendall_tau"] == pytest.approx(0.0, abs=0.03)
    assert mean["exact_order_acc"] == pytest.approx(1 / 24, abs=0.015)  # lists of 4: 1 order in 4!


# ---------------------------------------------------------------- model and checkpoints
def test_head_size_comes_from_the_encoder_and_cls_is_used_without_a_pooler(micro_paths):
    config = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    with_pooler = RewardModel(BertModel(config)).eval()
    without = RewardModel(BertModel(config, add_pooling_layer=False)).eval()
    assert with_pooler.head.in_features == without.head.in_features == 24
    ids = torch.randint(5, 50, (3, 7))
    assert with_pooler(ids, torch.ones_like(ids)).shape == without(ids, torch.ones_like(ids)).shape == (3,)
    cls = without.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0]
    assert torch.allclose(without(ids, torch.ones_like(ids)), without.head(cls).squeeze(-1))


def micro_model(micro_paths, seed=0):
    torch.manual_seed(seed)
    return RewardModel(BertModel.from_pretrained(micro_paths["encoder"])), \
        AutoTokenizer.from_pretrained(micro_paths["encoder"])


def test_batched_scores_equal_one_by_one_scores(micro_paths):
    model, tokenizer = micro_model(micro_paths)
    texts = [POSITIVE, "好", NEGATIVE * 3, "还行吧"]  # the third is longer than the encoder's 64 positions
    batched = score_texts(model, tokenizer, texts, batch_size=3)
    single = [score_texts(model, tokenizer, [t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)


def test_save_and_load_give_the_same_scores_without_pickles(micro_paths, tmp_path):
    model, tokenizer = micro_model(micro_paths)
    save_reward_model(model, tokenizer, str(tmp_path / "ckpt"))
    files = os.listdir(tmp_path / "ckpt")
    assert HEAD_FILE in files and "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    meta = json.load(open(tmp_path / "ckpt" / META_FILE))
    assert (meta["encoder_class"], meta["hidden_size"]) == ("BertModel", 32)
    loaded, loaded_tokenizer = load_reward_model(str(tmp_path / "ckpt"))
    assert not loaded.training
    assert score_texts(loaded, loaded_tokenizer, [POSITIVE, NEGATIVE]) == \
        pytest.approx(score_texts(model, tokenizer, [POSITIVE, NEGATIVE]), abs=1e-6)


class _Trap:
    """Unpickling this creates a marker file: proof that a loader ran code from the pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_killed_mid_save_leaves_the_previous_checkpoint_loadable(micro_paths, tmp_path, monkeypatch):
    first, tokenizer = micro_model(micro_paths, seed=0)
    second, _ = micro_model(micro_paths, seed=1)
    out = str(tmp_path / "model_best")
    save_reward_model(first, tokenizer, out)
    expected = score_texts(first, tokenizer, [POSITIVE, NEGATIVE])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the head is being written

    monkeypatch.setattr("utils.reward_model.save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_reward_model(second, tokenizer, out)
    monkeypatch.undo()
    model, tok = load_reward_model(out)
    assert score_texts(model, tok, [POSITIVE, NEGATIVE]) == pytest.approx(expected, abs=1e-6)
    save_reward_model(second, tokenizer, out)  # the next save clears the half-written folder
    assert sorted(os.listdir(tmp_path)) == ["model_best"]
    model, tok = load_reward_model(out)
    assert score_texts(model, tok, [POSITIVE]) != pytest.approx(expected[:1], abs=1e-6)


def run_in_process(main, argv, stdin=None):
    """`main(argv)` as the command line runs it (one-line errors, exit 2), in this process: (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode("utf-8")), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_main(lambda: main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def run_trainer(argv):
    code, stdout, stderr = run_in_process(train_reward_model.main, argv)
    return types.SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr)


# ---------------------------------------------------------------- inference: bad checkpoints
@pytest.mark.parametrize("kind", ["old_pickle_folder", "old_pickle_file", "empty_folder", "missing"])
def test_inference_refuses_what_is_not_a_reward_model_checkpoint(kind, tmp_path):
    marker = tmp_path / "unpickled.txt"
    folder = tmp_path / "model_best"
    if kind != "missing":
        folder.mkdir()
    if kind.startswith("old_pickle"):
        torch.save(_Trap(str(marker)), folder / "model.pt")  # the original saved torch.save(model)
    target = folder / "model.pt" if kind == "old_pickle_file" else folder
    code, _, err = run_in_process(inference_reward_model.main, ["--model", str(target)])
    assert code == 2 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ") and str(target) in message
    expected = {"old_pickle_folder": "pickled", "old_pickle_file": "pickled",
                "empty_folder": "not a reward-model checkpoint", "missing": "no such checkpoint folder"}[kind]
    assert expected in message
    assert not marker.exists(), "the pickle was loaded"
    if kind.startswith("old_pickle"):
        assert (folder / "model.pt").exists()


def test_load_reward_model_raises_user_error_for_a_plain_encoder_folder(micro_paths):
    with pytest.raises(UserError, match="not a reward-model checkpoint"):
        load_reward_model(micro_paths["encoder"])


# ---------------------------------------------------------------- training and inference end to end
def write_lists(path, rank_lists, newline="\n"):
    path.write_text("".join("\t".join(r) + newline for r in rank_lists), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """640 train and 120 dev lists of the corpus-made data: enough to learn from in seconds."""
    root = tmp_path_factory.mktemp("rank_lists")
    train = read_rank_lists(os.path.join(RANK_LIST_DIR, "train.tsv"))[:640]
    dev = read_rank_lists(os.path.join(RANK_LIST_DIR, "dev.tsv"))[:120]
    return {"train": write_lists(root / "train.tsv", train), "dev": write_lists(root / "dev.tsv", dev),
            "dev_lists": dev}


def train_args(data, out, *extra):
    return ["--tiny", "--train_path", data["train"], "--dev_path", data["dev"],
            "--save_dir", str(out / "ckpt"), "--img_log_dir", str(out / "logs"), "--img_log_name", "RM",
            "--batch_size", "16", "--learning_rate", "2e-3", "--num_train_epochs", "1", "--valid_steps", "20",
            "--logging_steps", "10", "--seed", "0", *extra]


@pytest.fixture(autouse=True)
def tiny_is_micro(micro_dir, monkeypatch):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory, micro_dir):
    out = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLHF_TINY_DIR", micro_dir)
        code, stdout, stderr = run_in_process(train_reward_model.main, train_args(small_data, out))
    assert code == 0, stderr[-2000:]
    return out, stdout


def test_training_learns_to_rank_and_logs_like_the_original(trained):
    out, stdout = trained
    lines = stdout.splitlines()
    first = next(line for line in lines if line.startswith("global step "))
    assert first.startswith("global step 10, epoch: 1, loss: ") and first.endswith(" step/s")
    assert sum(line.startswith("global step ") for line in lines) == 4  # 40 steps, a line every 10
    evaluations = [line for line in lines if line.startswith("Evaluation acc: ")]
    assert len(evaluations) == 2 and all(k in evaluations[0] for k in ("pairwise_acc", "exact_order_acc",
                                                                        "kendall_tau", "best_vs_worst_acc"))
    assert "best pairwise_acc performance has been updated: 0.00000 --> " in stdout
    records = read_jsonl(str(out / "logs" / "RM.jsonl"))
    evals = [r for r in records if "pairwise_acc" in r]
    assert [r["step"] for r in evals] == [20, 40] and (out / "logs" / "RM.png").stat().st_size > 1000
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < 0.66 < 0.69 < losses[0] + 0.02  # starts at log(2) (no preference), then falls
    # chance is 0.5 for both; a micro encoder after 40 steps of 16 lists clears it with a margin
    assert evals[-1]["best_vs_worst_acc"] >= 0.68 and evals[-1]["pairwise_acc"] >= 0.6
    assert sorted(os.listdir(out / "ckpt")) == ["model_20", "model_40", "model_best"]


def test_listwise_training_learns_to_rank_too(small_data, tmp_path):
    code, _, err = run_in_process(train_reward_model.main, train_args(small_data, tmp_path, "--loss", "listwise"))
    assert code == 0, err[-2000:]
    records = read_jsonl(str(tmp_path / "logs" / "RM.jsonl"))
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < losses[0] - 0.05, losses  # ListMLE falls from log K! (no preference)
    evals = [r for r in records if "pairwise_acc" in r]
    assert evals[-1]["best_vs_worst_acc"] >= 0.68 and evals[-1]["pairwise_acc"] >= 0.6, evals[-1]


def test_inference_metrics_match_the_training_evaluation(trained, small_data):
    """The dev metrics the training printed are those of the whole dev file (not just a last batch)."""
    out, _ = trained
    last = [r for r in read_jsonl(str(out / "logs" / "RM.jsonl")) if "pairwise_acc" in r][-1]
    code, stdout, err = run_in_process(inference_reward_model.main, ["--model", str(out / "ckpt" / "model_40"),
                                                                     "--eval_tsv", small_data["dev"]])
    assert code == 0, err
    metrics = json.loads(stdout)
    for key in ("pairwise_acc", "exact_order_acc", "kendall_tau", "best_vs_worst_acc"):
        assert metrics[key] == pytest.approx(last[key], abs=0.01)


def test_inference_scores_examples_arguments_and_stdin(trained):
    model = str(trained[0] / "ckpt" / "model_best")
    code, stdout, err = run_in_process(inference_reward_model.main, ["--model", model])
    assert code == 0, err
    rows = [line.split("\t") for line in stdout.splitlines()]
    assert [text for _, text in rows] == [POSITIVE, NEGATIVE]
    expected = score_texts(*load_reward_model(model), [POSITIVE, NEGATIVE])
    assert [float(score) for score, _ in rows] == pytest.approx(expected, abs=1e-4)
    _, piped, _ = run_in_process(inference_reward_model.main, ["--model", model, "-"],
                                 stdin="太好吃了，下次还来\n\n难吃，服务也差\n")
    assert [line.split("\t")[1] for line in piped.splitlines()] == ["太好吃了，下次还来", "难吃，服务也差"]
    _, from_args, _ = run_in_process(inference_reward_model.main, ["--model", model, "好评", "差评"])
    assert len(from_args.splitlines()) == 2


@pytest.mark.slow
def test_training_under_accelerate_with_two_processes(small_data, tmp_path, micro_env):
    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    args = train_args(small_data, tmp_path, "--valid_steps", "1000")  # 20 steps per process, one evaluation
    # `--cpu --num_processes 2` starts a single process in accelerate 1.x (several need mpirun); on a machine
    # without GPUs `--multi_gpu` starts torchrun, and the script's Accelerator(cpu=True) then runs gloo on CPUs
    # --main_process_port 0: a free port, not the default 29500 that another test worker may take at the same moment
    result = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
                             "train_reward_model.py", *args],
                            cwd=REPO,
                            env=cpu_only(micro_env), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert " x 2; 20 steps" in result.stdout  # 640 lists, batches of 16, split over 2 processes
    assert result.stdout.count("global step 10, epoch: 1") == 1  # printed by the main process only
    assert result.stdout.count("Evaluation acc: ") == 1
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["model_20", "model_best"]
    logged = [r for r in read_jsonl(str(tmp_path / "logs" / "RM.jsonl")) if "pairwise_acc" in r]
    assert len(logged) == 1
    # the gathered evaluation covered every dev list exactly once: the same figures as scoring the file
    _, check, _ = run_in_process(inference_reward_model.main, ["--model", str(tmp_path / "ckpt" / "model_best"),
                                                               "--eval_tsv", small_data["dev"]])
    metrics = json.loads(check)
    for key in ("pairwise_acc", "exact_order_acc", "kendall_tau", "best_vs_worst_acc"):
        assert metrics[key] == pytest.approx(logged[0][key], abs=0.01)


# ---------------------------------------------------------------- bad input to training
BAD_LINES = {
    "one_field": ("只有一个文本", "a rank list needs at least 2 tab-separated texts, found 1"),
    "empty_field": ("好评\t\t差评", "empty text in field 2"),
    "not_utf8": ("好评\t差评".encode("gbk"), "not valid UTF-8 text"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_train_line_is_named_with_file_and_line(kind, small_data, tmp_path):
    good = ["\t".join(r) + "\n" for r in read_rank_lists(small_data["train"])[:5]]
    bad, reason = BAD_LINES[kind]
    path = tmp_path / "train.tsv"
    path.write_bytes("".join(good[:3]).encode() + (bad if isinstance(bad, bytes) else bad.encode()) + b"\n"
                     + "".join(good[3:]).encode())
    (tmp_path / "ckpt" / "model_best").mkdir(parents=True)
    (tmp_path / "ckpt" / "model_best" / "keep.txt").write_text("earlier work")
    result = run_trainer(train_args(dict(small_data, train=str(path)), tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: {path}:4: {reason} (use --skip_bad_lines to skip such lines)"
    assert "global step" not in result.stdout
    assert os.listdir(tmp_path / "ckpt") == ["model_best"]
    assert (tmp_path / "ckpt" / "model_best" / "keep.txt").read_text() == "earlier work"


def test_skip_bad_lines_counts_them_and_crlf_and_a_blank_last_line_are_fine(small_data, tmp_path):
    lists = read_rank_lists(small_data["train"])[:20]
    rows = [("\t".join(r) + "\r\n").encode() for r in lists]
    bad = [b if isinstance(b, bytes) else b.encode() for b, _ in BAD_LINES.values()]
    path = tmp_path / "train.tsv"
    path.write_bytes(b"".join(rows[:5]) + bad[0] + b"\r\n" + b"".join(rows[5:]) + bad[1] + b"\n" + bad[2]
                     + b"\n\r\n")
    dev = write_lists(tmp_path / "dev.tsv", small_data["dev_lists"][:24])
    args = train_args(dict(small_data, train=str(path), dev=dev), tmp_path, "--skip_bad_lines", "--valid_steps", "1000")
    result = run_trainer(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"skipped 3 bad line(s) in {path} (first: line 6: " in result.stderr
    assert "20 train / 24 dev rank lists" in result.stdout
    assert read_rank_lists(str(path), skip_bad_lines=True) == lists  # no text keeps a stray \r
    load_reward_model(str(tmp_path / "ckpt" / "model_best"))


def test_a_dev_set_that_ends_up_empty_stops_before_training(small_data, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_bytes(b"only one text\n\xff\xfe\tbroken\n\n")
    result = run_trainer(train_args(dict(small_data, dev=str(dev)), tmp_path, "--skip_bad_lines"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: {dev}: no rank lists in this file (expected one tab-separated list per line)"
    assert "global step" not in result.stdout and not (tmp_path / "ckpt").exists()


def test_an_unreachable_model_is_one_line(small_data, tmp_path):
    args = [a for a in train_args(small_data, tmp_path) if a != "--tiny"] + ["--model", "no-such-org/no-such-model"]
    result = run_trainer(args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: cannot load model 'no-such-org/no-such-model'") and "--tiny" in message
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("how", ["--tiny", "TINY=1", "original"])
def test_shell_wrapper_passes_its_configuration_to_the_trainer(how, tmp_path, micro_dir, monkeypatch):
    """The wrapper is what is tested here (training is tested above): PYTHON is a stand-in that records the
    command line the wrapper runs, which the trainer's own parser then reads."""
    import train_reward_model

    recorder = tmp_path / "python"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "argv.txt"}\n')
    recorder.chmod(0o755)
    env = dict(os.environ, PYTHON=str(recorder), **({"TINY": "1"} if how == "TINY=1" else {}))
    result = subprocess.run(["sh", "train_reward_model.sh", *(["--tiny"] if how == "--tiny" else []),
                             "--valid_steps", "1000"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[0] == "train_reward_model.py" and argv[-2:] == ["--valid_steps", "1000"]  # extra arguments last
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    args = train_reward_model.parse_args(argv[1:])
    assert args.valid_steps == 1000
    if how == "original":  # the original tutorial's configuration, option by option
        assert (args.model_name, args.batch_size, args.max_seq_len, args.learning_rate, args.num_train_epochs,
                args.logging_steps) == ("nghuyong/ernie-3.0-base-zh", 32, 128, 1e-5, 10, 10)
        assert args.train_path == os.path.join(RANK_LIST_DIR, "train.tsv") and args.log_name == "ERNIE Reward Model"
    else:
        assert argv[1] == "--tiny" and args.model_name == os.path.join(micro_dir, "encoder")
        assert vars(args) == vars(train_reward_model.parse_args(["--tiny", "--valid_steps", "1000"]))


def test_training_batches_cover_every_list_once_with_the_short_batch_last():
    """accelerate drops a round of batches whose last batch is short unless it is the epoch's last."""
    from train_reward_model import SimilarLengthBatches

    rank_lists = [["好" * (i % 7 + 1), "差"] for i in range(103)]
    sampler = SimilarLengthBatches(rank_lists, batch_size=8, seed=0, window=2)
    for _ in range(3):  # three epochs, three orders
        batches = list(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(103))
        assert [len(batch) for batch in batches] == [8] * 12 + [7]
    assert list(SimilarLengthBatches(rank_lists, 8, seed=0, window=2)) != batches
