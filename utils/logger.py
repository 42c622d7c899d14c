"""Training logger: one JSON record per step in `<log_dir>/<name>.jsonl`, curves in `<log_dir>/<name>.png`."""
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.common import write_text_atomically  # noqa: E402


class TrainLogger:
    """Appends each record to the JSONL file at once (flushed), and redraws the PNG on `plot()`."""

    def __init__(self, log_dir, name, x_key="step", resume=False, redo_from=None):
        """`resume` keeps the records already on disk, except those whose `x_key` is `redo_from` or later (a run
        resumed from a checkpoint redoes them, so they would otherwise appear twice)."""
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
        else:
            write_text_atomically(self.jsonl_path, "")
        self._file = open(self.jsonl_path, "a", encoding="utf-8")

    def log(self, record):
        self.records.append(record)
        self._file.write(_json_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def plot(self, metrics=None):
        """One panel per numeric metric (all of them unless `metrics` names some), against `x_key`; records
        without the metric are left out."""
        if metrics is None:
            metrics = sorted({k for r in self.records for k, v in r.items() if k != self.x_key and _is_number(v)})
        if not metrics:
            return
        cols = min(3, len(metrics))
        rows = math.ceil(len(metrics) / cols)
        plt.style.use("seaborn-v0_8-darkgrid")
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
        for ax, metric in zip(axes.flat, metrics):
            points = [(r[self.x_key], r[metric]) for r in self.records if _is_number(r.get(metric))]
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
            ax.set_title(metric)
            ax.set_xlabel(self.x_key)
        for ax in list(axes.flat)[len(metrics):]:
            ax.axis("off")
        fig.suptitle(self.name)
        fig.tight_layout()
        tmp = self.png_path + ".tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, self.png_path)

    def close(self):
        self._file.close()


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


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
