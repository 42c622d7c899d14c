"""Training logger: one JSON record per step in `<log_dir>/<name>.jsonl`, curves in `<log_dir>/<name>.png`, and
with `--report_to` the same numbers in TensorBoard, SwanLab or Weights & Biases (through accelerate's trackers)."""
import fnmatch
import json
import math
import os
import random

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.files import write_text_atomically  # noqa: E402
from utils.options import check_tracker_installed  # noqa: E402


# the order in which panels are read: what is optimised first (the raw score before the reward made from it, then
# the independent judge), then how far the policy moved (KL) and how varied it stays, then losses and training
# metrics, then timings; it serves the PPO, reward-model and terminal logs alike
READING_ORDER = ("raw_score*", "reward*", "judge*", "kl", "kl_*", "distinct*", "response_len", "*loss*",
                 "entropy", "*acc*", "kendall_tau", "learning_rate", "time_*", "seconds")


# the default figure: one panel per question a reader asks of a run, in this order (title, the metrics drawn in it);
# a panel none of whose metrics was logged is left out, and so is the raw score where it equals the reward (a
# classifier's probability is both). Everything else stays in the JSONL and the trackers.
COMPACT_PANELS = (("raw score", ("raw_score_mean",)), ("reward", ("reward_mean",)), ("judge", ("judge_*",)),
                  ("KL", ("kl",)), ("distinct-2", ("distinct_2",)), ("losses", ("*loss*",)), ("entropy", ("entropy",)),
                  ("dev metrics", ("*_acc", "kendall_tau")), ("seconds per epoch", ("time_epoch",)))


class TrainLogger:
    """Appends each record to the JSONL file at once (flushed), and redraws the PNG on `plot()`."""

    def __init__(self, log_dir, name, x_key="step", resume=False, redo_from=None, report_to="none"):
        """`resume` keeps the records already on disk, except those whose `x_key` is `redo_from` or later (a run
        resumed from a checkpoint redoes them, so they would otherwise appear twice); without it, the first record
        replaces an earlier run's log (a run that logs nothing leaves it as it was). `report_to` also sends each
        record's numbers to that tracker (TensorBoard's files go to `<log_dir>/tensorboard/<name>`)."""
        os.makedirs(log_dir, exist_ok=True)
        self.jsonl_path = os.path.join(log_dir, f"{name}.jsonl")
        self.png_path = os.path.join(log_dir, f"{name}.png")
        self.name = name
        self.x_key = x_key
        self.records = []
        if resume:
            on_disk = read_jsonl(self.jsonl_path)
            self.records = [r for r in on_disk if redo_from is None or r.get(x_key, redo_from) < redo_from]
            if len(self.records) < len(on_disk) or _ends_mid_line(self.jsonl_path):
                write_text_atomically(self.jsonl_path, "".join(_json_line(r) for r in self.records))
        self._mode = "a" if resume else "w"
        self._file = None  # opened by the first record
        self.tracker = start_tracker(report_to, log_dir, name)

    def log(self, record):
        self.records.append(record)
        if self._file is None:
            self._file = open(self.jsonl_path, self._mode, encoding="utf-8")
        self._file.write(_json_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())
        if self.tracker:
            numbers = {k: v for k, v in record.items() if k != self.x_key and _is_number(v)}
            self.tracker.log(numbers, step=record.get(self.x_key))

    def panels(self, metrics=None, order=READING_ORDER):
        """[(metric, its companions)] in reading order, one per panel: all numeric metrics unless `metrics` names
        some. A metric's place is the first pattern of `order` it matches (fnmatch); unmatched ones come last,
        ties by name. Companions share their metric's panel instead of getting their own: `<name>_std` (a band
        around `<name>_mean` or `<name>`) and `<a>_ref_<b>` (the reference model's value, beside `<a>_<b>`)."""
        numeric = sorted({k for r in self.records for k, v in r.items() if k != self.x_key and _is_number(v)})
        companion_of = {k: _companion_of(k, numeric) for k in numeric}
        if metrics is None:
            metrics = [k for k in numeric if companion_of[k] is None]
        metrics = sorted(metrics, key=lambda k: (_place(k, order), k))
        return [(m, [k for k in numeric if companion_of[k] == m]) for m in metrics]

    def compact_panels(self):
        """[(title, [(metric, its companions)])]: COMPACT_PANELS as far as this log has their metrics."""
        numeric = sorted({k for r in self.records for k, v in r.items() if k != self.x_key and _is_number(v)})
        companion_of = {k: _companion_of(k, numeric) for k in numeric}
        drawn = []
        for title, patterns in COMPACT_PANELS:
            members = [k for k in numeric
                       if companion_of[k] is None and any(fnmatch.fnmatchcase(k, p) for p in patterns)]
            if members == ["raw_score_mean"] and self._same_as_reward("raw_score_mean"):
                continue
            if members:
                drawn.append((title, [(m, [k for k in numeric if companion_of[k] == m]) for m in members]))
        return drawn

    def _same_as_reward(self, metric):
        return all(r.get(metric) == r.get("reward_mean") for r in self.records)

    def plot(self, metrics=None, order=READING_ORDER):
        """Draw the compact figure, or `panels(metrics, order)` when `metrics` names some, into the PNG (three
        panels a row, records without a metric left out)."""
        if metrics is None:
            panels = self.compact_panels()
        else:
            panels = [(metric, [(metric, companions)]) for metric, companions in self.panels(metrics, order)]
        if not panels:
            return
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        plt.style.use("seaborn-v0_8-darkgrid")
        # constrained layout keeps the figure's title clear of the panels' titles
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows + 0.4), squeeze=False, layout="constrained")
        for ax, (title, members) in zip(axes.flat, panels):
            for metric, companions in members:
                self._draw(ax, metric, label=metric)
                for companion in companions:
                    if companion.endswith("_std"):
                        self._draw_band(ax, metric, companion)
                    else:
                        self._draw(ax, companion, linestyle="--", label=f"{metric} (reference)")
            if len(members) > 1 or any(not c.endswith("_std") for _, companions in members for c in companions):
                ax.legend(loc="best", fontsize="small")  # more than one line
            ax.set_title(title)
            ax.set_xlabel(self.x_key)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(self.name)
        tmp = self.png_path + ".tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, self.png_path)

    def _draw(self, ax, metric, **style):
        points = [(r[self.x_key], r[metric]) for r in self.records if _is_number(r.get(metric))]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None, **style)

    def _draw_band(self, ax, mean_key, std_key):
        rows = [(r[self.x_key], r[mean_key], r[std_key]) for r in self.records
                if _is_number(r.get(mean_key)) and _is_number(r.get(std_key))]
        if rows:
            x, mean, std = zip(*rows)
            ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)

    def close(self):
        if self._file is not None:
            self._file.close()
        if self.tracker:
            self.tracker.finish()
            self.tracker = None


def start_tracker(report_to, log_dir, name):
    """accelerate's tracker for `report_to` ("none": None), started."""
    check_tracker_installed(report_to)
    if report_to == "none":
        return None
    from accelerate import PartialState
    from accelerate.tracking import SwanLabTracker, TensorBoardTracker, WandBTracker

    PartialState()  # the trackers ask it which process is the main one (the scripts have made it already)

    tracker = {"tensorboard": lambda: TensorBoardTracker(name, os.path.join(log_dir, "tensorboard")),
               "swanlab": lambda: SwanLabTracker(name, logdir=os.path.join(log_dir, "swanlog")),
               "wandb": lambda: WandBTracker(name)}[report_to]()
    tracker.start()
    return tracker


def _json_line(record):
    return json.dumps(record, ensure_ascii=False) + "\n"


def _ends_mid_line(path):
    """True when a killed run left a last line without its newline."""
    if not os.path.exists(path):
        return False
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def read_jsonl(path):
    """The records of a JSONL file; a last line that does not parse is being written (or was cut by a kill)
    and is left out."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    try:
        records += [json.loads(line) for line in lines[-1:]]
    except json.JSONDecodeError:
        pass
    return records


def _place(metric, order):
    return next((i for i, pattern in enumerate(order) if fnmatch.fnmatchcase(metric, pattern)), len(order))


def _companion_of(key, keys):
    """The metric whose panel `key` is drawn in (`x_std` -> `x_mean`, `a_ref_b` -> `a_b`), or None."""
    if key.endswith("_std"):
        return next((name for name in (key[:-4] + "_mean", key[:-4]) if name in keys), None)
    if "_ref_" in key and key.replace("_ref_", "_", 1) in keys:
        return key.replace("_ref_", "_", 1)
    return None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- what a run prints and measures of its answers
def random_samples(prompts, answers, num_samples):
    """The original's "Random Sample N text(s) of model output:" block of `num_samples` random prompt + answer,
    after a line break, to follow the epoch's line; "" for none."""
    picked = random.sample(range(len(answers)), min(num_samples, len(answers)))
    if not picked:
        return ""
    return "\n".join(["", f"Random Sample {len(picked)} text(s) of model output:"]
                     + [f"{i}. {prompts[k]}{answers[k]}" for i, k in enumerate(picked, start=1)])


def distinct_2(texts):
    """Distinct character bigrams / all character bigrams over `texts` (1.0 = no bigram repeats)."""
    bigrams = [text[i:i + 2] for text in texts for i in range(len(text) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0
