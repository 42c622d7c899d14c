"""Small helpers every script needs: errors for users, device and precision, seed, text cleanup, model loading,
files written atomically."""
import contextlib
import importlib.util
import os
import random
import re
import shutil
import sys
import tempfile

# torch and numpy are imported in the functions that use them: the labelling page's storage (utils.ranklists) and
# the task-file check (utils.tasks) take UserError from here, and start in a fraction of a second without them

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
# a space is dropped only when a CJK character or CJK punctuation stands on one side of it
_CJK = r"\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
_CJK_SPACE_RE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""


def run_main(main):
    """Run `main()`; a UserError becomes `error: ...` on stderr and exit code 2, a KeyboardInterrupt (a second
    Ctrl-C) one line and exit code 130."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C (the first one asks the loop to save and stop: utils.run)
        print("\nstopped at once: the last complete checkpoint stays as it was", file=sys.stderr)
        sys.exit(130)
    finally:
        leave_process_group()


def leave_process_group():
    """End torch.distributed's process group (under `accelerate launch`) before the interpreter exits: left to the
    exit, a process of a finished two-process run was once aborted ("terminate called without an active
    exception")."""
    torch = sys.modules.get("torch")  # not imported: no process group
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "swanlab": "swanlab", "wandb": "wandb"}  # --report_to: pip name


def add_report_to_argument(parser):
    parser.add_argument("--report_to", choices=("none", *TRACKER_PACKAGES), default="none",
                        help="also log the JSONL's numbers to this tracker (its package is not in requirements.txt: "
                             "pip install it)")


def check_tracker_installed(report_to):
    """One line naming the package to install, before anything is loaded (utils.presets.parse_with_presets calls
    this)."""
    package = TRACKER_PACKAGES.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        raise UserError(f"--report_to {report_to} needs the '{package}' package, which is not installed: "
                        f"pip install {package}")


MIXED_PRECISION = ("no", "bf16", "fp16")


def pick_device(name=None):
    """`--device` if given, else CUDA when present, else CPU. On CUDA, TF32 matmuls are allowed (`allow_tf32`)."""
    import torch

    device = torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        allow_tf32()
    return device


def allow_tf32():
    """Let CUDA run float32 matmuls and convolutions in TF32 (Ampere GPUs and newer; ignored by older ones).
    On one H100 it took the reward model's step from 6.3 to 14.6 step/s; the CPU is left as it is. The
    legacy flags, as accelerate and transformers set them: mixing them with torch's newer `fp32_precision`
    API makes later reads of either raise."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def add_mixed_precision_argument(parser):
    parser.add_argument("--mixed_precision", choices=MIXED_PRECISION,
                        help="autocast through accelerate: bf16 (GPUs since Ampere, also the CPU) or fp16 (GPU "
                             "only); default: what `accelerate launch` or `accelerate config` chose, else no")


def accelerator_kwargs(device, mixed_precision=None):
    """Keyword arguments for `Accelerator(...)` (and trl's `PPOConfig(accelerator_kwargs=...)`): the device
    `pick_device` chose and `--mixed_precision` (None leaves it to `accelerate launch`'s configuration)."""
    import torch

    on_cpu = torch.device(device).type == "cpu"
    if mixed_precision == "fp16" and on_cpu:  # accelerate would silently train in float32 instead
        raise UserError("--mixed_precision fp16 needs a GPU; on the CPU use bf16 or no")
    return {"cpu": on_cpu, "mixed_precision": mixed_precision}


def any_process(accelerator, flag):
    """True on every process when `flag` is true on any (processes must take the same branch)."""
    import torch

    flag = torch.tensor([float(flag)], device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() > 0 if accelerator.num_processes > 1 else flag.item() > 0


def set_seed(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def user_cache(*parts):
    """A path in this project's per-user cache, shared by every clone: $XDG_CACHE_HOME/rlhf-zh/..., or
    ~/.cache/rlhf-zh/... when XDG_CACHE_HOME is unset (the way the Hugging Face hub caches models)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "rlhf-zh", *parts)


def clean_text(text):
    """Undo BERT-tokenizer decoding: drop special tokens and the spaces put between Chinese characters."""
    text = _SPECIAL_RE.sub("", text)
    text = _CJK_SPACE_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def quiet_transformers():
    """No progress bars from transformers (loading and writing weights): a command that promises one line on an
    error keeps that promise, and a tutorial's output stays the original's."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_pretrained(loader, name_or_path, **kwargs):
    """`loader.from_pretrained(name_or_path)`, quietly (`quiet_transformers`), with one clear line when it cannot be
    found."""
    quiet_transformers()
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        if os.path.isdir(name_or_path):
            raise UserError(f"cannot load '{name_or_path}' with {loader.__name__}: {str(e).splitlines()[0]}") from e
        raise UserError(
            f"cannot load model '{name_or_path}': it is not a local folder and the Hugging Face hub "
            "could not provide it (offline?). Use --tiny for the offline models, or pass a local path."
        ) from e


# ---------------------------------------------------------------- writing without destroying anything
def check_safetensors(path):
    """UserError unless `path` is a complete safetensors file (safetensors checks that its header covers the whole
    file): a truncated or corrupt model is one line, not a traceback from deep inside the loader."""
    from safetensors import safe_open

    try:
        with safe_open(path, "pt"):
            pass
    except Exception as e:  # safetensors' own SafetensorError, or OSError
        raise UserError(f"{path}: not a complete safetensors file ({str(e).splitlines()[0]}); the save may have "
                        "been cut short: use an earlier checkpoint") from e


def write_text_atomically(path, text):
    """Write to a temporary file beside `path`, then rename: a killed write never leaves half a file, and a
    failed one leaves no temporary file behind."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def folder_written_atomically(out_dir, marker):
    """Yields a fresh temporary folder beside `out_dir` to write into; once the block has finished, it replaces
    `out_dir`. The old `out_dir` is replaced only if it is one of ours (it holds the file `marker`, which the
    block writes too): anything else there is refused (UserError), never deleted. The old folder waits under a
    temporary name until the new one is in place, so a write killed at any moment leaves a complete folder
    (the old or the new one) under `out_dir`, never half of one; a failed write leaves nothing behind."""
    out_dir = os.path.normpath(out_dir)
    check_replaceable_folder(out_dir, marker)
    parent = os.path.dirname(out_dir) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{os.path.basename(out_dir)}.", suffix=".tmp", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private; a checkpoint is shared like any folder
    previous = f"{tmp}.previous"
    try:
        yield tmp
        if not _holds(tmp, marker):
            raise ValueError(f"folder_written_atomically: the block did not write {marker}")
        if os.path.exists(out_dir):
            os.replace(out_dir, previous)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)


def check_replaceable_folder(path, marker, option="the output"):
    """UserError unless `path` is missing, an empty folder or a folder this project wrote (it holds `marker`, a
    name or a tuple of names of which one is enough)."""
    if os.path.isdir(path) and (_holds(path, marker) or not os.listdir(path)):
        return
    if os.path.lexists(path):
        kind = "a folder" if os.path.isdir(path) else "a file"
        names = " or ".join((marker,) if isinstance(marker, str) else marker)
        raise UserError(f"{option} {path} exists and is {kind} this script did not write (no {names} in it): "
                        "refusing to replace it; choose another path or move it away")


def _holds(folder, marker):
    names = (marker,) if isinstance(marker, str) else marker
    return any(os.path.exists(os.path.join(folder, name)) for name in names)
