"""Writing without destroying anything: files and folders written atomically, replacing only what this project
wrote; complete safetensors files; the per-user cache."""
import contextlib
import os
import shutil
import tempfile

from utils.errors import UserError


def user_cache(*parts):
    """A path in this project's per-user cache, shared by every clone: $XDG_CACHE_HOME/rlhf-zh/..., or
    ~/.cache/rlhf-zh/... when XDG_CACHE_HOME is unset (the way the Hugging Face hub caches models)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "rlhf-zh", *parts)


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
