"""Training logger: one JSON record per step in `<log_dir>/<name>.jsonl`, curves in `<log_dir>/<name>.png`."""
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class TrainLogger:
    """Appends each record to the JSONL file at once (flushed), and redraws the PNG on `plot()`."""

    def __init__(self, log_dir, name, x_key="step", resume=False):
        os.makedirs(log_dir, exist_ok=True)
        self.jsonl_path = os.path.join(log_dir, f"{name}.jsonl")
        self.png_path = os.path.join(log_dir, f"{name}.png")
        self.name = name
        self.x_key = x_key
        self.records = read_jsonl(self.jsonl_path) if resume else []
        self._file = open(self.jsonl_path, "a" if resume else "w", encoding="utf-8")

    def log(self, record):
        self.records.append(record)
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
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


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
