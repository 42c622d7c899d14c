"""trl 0.11.4, the last trl with a step-wise `PPOTrainer.step`, in a venv of its own: it cannot be installed beside
today's trl 1.x. It gets the same torch, transformers and accelerate as requirements.txt pins, so both sides run
the same model code. bench/record_trl_ppo.py records its step there, bench/bench_ppo.py times it there.

    trl_venv_python   the venv's interpreter, or None while it is not built
    build_trl_venv    build it once (about 2 minutes on 2 cores; pip takes torch from the local wheel when it has one)

The venv lives in the per-user cache beside the tiny models ($XDG_CACHE_HOME/rlhf-zh/trl-0.11.4-venv), or in
$RLHF_TRL_VENV.

    python bench/trl_venv.py     # build it (or say where it is)
"""
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.errors import UserError, run_main  # noqa: E402
from utils.files import user_cache  # noqa: E402

TRL_VERSION = "0.11.4"
TRL = f"trl=={TRL_VERSION}"
# taken from requirements.txt; trl 0.11.4 needs rich without declaring it (its dependency tyro dropped it)
SHARED = ("torch", "transformers", "accelerate", "numpy", "safetensors", "tqdm", "rich")
REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
MARKER = "rlhf-zh-pins.json"  # written last: the pins a finished venv was built with
BUILD_COMMAND = "python bench/trl_venv.py"


def venv_dir():
    return os.environ.get("RLHF_TRL_VENV") or user_cache("trl-0.11.4-venv")


def pins():
    """trl 0.11.4 and the pins of requirements.txt for the packages both sides share, e.g. 'torch==2.13.0'."""
    with open(REQUIREMENTS, encoding="utf-8") as f:
        pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", f.read(), flags=re.MULTILINE))
    return [TRL] + [f"{name}=={pinned[name]}" for name in SHARED]


def python_in(folder):
    return os.path.join(folder, "bin", "python")


def is_built(folder):
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as f:
            return json.load(f) == pins()
    except (OSError, ValueError):
        return False


def trl_venv_python():
    folder = venv_dir()
    return python_in(folder) if is_built(folder) else None


def build_trl_venv():
    """The venv's interpreter, building the venv first if it is missing, half-built or built with other pins."""
    folder = venv_dir()
    if is_built(folder):
        return python_in(folder)
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    with open(os.path.abspath(folder) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if not is_built(folder):
            if os.path.lexists(folder):
                if not os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
                    raise UserError(f"{folder} exists and is not a venv: refusing to replace it; move it away or "
                                    "set RLHF_TRL_VENV to another path")
                shutil.rmtree(folder)  # half-built, or built with other pins
            print(f"building trl 0.11.4's venv in {folder} (once; about 2 minutes): {' '.join(pins())}", flush=True)
            subprocess.run([sys.executable, "-m", "venv", folder], check=True)
            subprocess.run([python_in(folder), "-m", "pip", "install", "-q", *pins()], check=True)
            subprocess.run([python_in(folder), "-m", "pip", "check"], check=True)
            with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
                json.dump(pins(), f)
    return python_in(folder)


def main():
    print(f"trl 0.11.4's venv: {build_trl_venv()}")


if __name__ == "__main__":
    run_main(main)
