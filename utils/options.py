"""Options checked where they are declared: each script's parser gives every number and every path a `type=`
from this module, so a bad value stops the script while the arguments are parsed (one line, exit 2), before any
model is loaded, and `--help` and the checks cannot drift apart. Checks that involve two options live in one
function per script (`check=` of `utils.presets.parse_with_presets`).

    p = ArgumentParser(...)
    p.add_argument("--batch_size", type=positive_int)
    p.add_argument("--learning_rate", type=learning_rate)
    p.add_argument("--save_dir", type=output_folder)
"""
import argparse
import importlib.util
import math
import os
import re
import sys

from utils.errors import UserError

LARGEST_COUNT = 10**9  # sizes, steps and counts above this are a typo, not a plan
LARGEST_SEED = 2**31 - 1  # numpy's seeds stop at 2**32 - 1; the scripts add epoch numbers to them


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as every other bad input: one line `error: ...` on stderr, exit 2."""

    def error(self, message):
        # "argument --lr/--learning_rate: expected ..., got 'x'" reads better as "--lr x: expected ..."
        flag = re.match(r"argument ([^:/ ]+)(/\S+)?: (.*)", message)
        if flag:
            value = re.fullmatch(r"(expected .*), got '(.*)'", flag.group(3))
            message = f"{flag.group(1)} {value.group(2)}: {value.group(1)}" if value else \
                f"{flag.group(1)}: {flag.group(3)}"
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _number(text, convert, what):
    try:
        value = convert(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _checked(name, convert, what, ok):
    def check(text):
        value = _number(text, convert, what)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    check.__name__ = name
    check.what = what
    return check


positive_int = _checked("positive_int", int, f"a whole number from 1 to {LARGEST_COUNT}",
                        lambda v: 1 <= v <= LARGEST_COUNT)
nonnegative_int = _checked("nonnegative_int", int, f"a whole number from 0 to {LARGEST_COUNT}",
                           lambda v: 0 <= v <= LARGEST_COUNT)
seed = _checked("seed", int, f"a seed from 0 to {LARGEST_SEED}", lambda v: 0 <= v <= LARGEST_SEED)
finite_float = _checked("finite_float", float, "a finite number", lambda v: True)
positive_float = _checked("positive_float", float, "a finite number above 0", lambda v: v > 0)
nonnegative_float = _checked("nonnegative_float", float, "a finite number, 0 or more", lambda v: v >= 0)
learning_rate = _checked("learning_rate", float, "a learning rate above 0 and at most 1", lambda v: 0 < v <= 1)
ratio = _checked("ratio", float, "a share strictly between 0 and 1", lambda v: 0 < v < 1)
fraction = _checked("fraction", float, "a number from 0 to 1", lambda v: 0 <= v <= 1)
correlation = _checked("correlation", float, "a correlation (Kendall's tau) from -1 to 1", lambda v: -1 <= v <= 1)
dropout = _checked("dropout", float, "a probability from 0 up to (not including) 1", lambda v: 0 <= v < 1)


def finite_float_or_off(text):
    """A finite number, or `off` (infinity: a threshold never reached)."""
    return math.inf if text == "off" else _number(text, float, finite_float_or_off.what)


finite_float_or_off.what = "a finite number or off"

NUMBER_TYPES = (positive_int, nonnegative_int, seed, finite_float, positive_float, nonnegative_float, learning_rate,
                ratio, fraction, dropout, correlation, finite_float_or_off)


def checked_value(type_, value):
    """A number read from a file (a JSON value), checked by the option type `type_` as a command line's text is
    (ArgumentTypeError): state kept on disk, such as a checkpoint's KL coefficient, is checked like an option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise argparse.ArgumentTypeError(f"expected {type_.what}, got {value!r}")
    return type_(repr(value))


# ---------------------------------------------------------------- texts, names and devices
def utf8_text(value):
    """A text given on the command line (a prompt, texts to score). Python decodes an argument that is not UTF-8
    into lone surrogates (surrogateescape), which no tokenizer and no file can take: such an argument is refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise argparse.ArgumentTypeError(f"'{shown}' is not valid UTF-8 text (another encoding, such as GBK?)") \
            from None
    return value


LONGEST_NAME = 200  # bytes: a file name of <name> plus its suffix stays within the usual 255


def file_name(value):
    """A name that a script turns into files inside a folder of its own (--log_name: <log_dir>/<name>.jsonl and
    .png): a name, not a path, so that it cannot point outside that folder."""
    utf8_text(value)
    if not value.strip() or value in (".", "..") or "/" in value or os.sep in value or "\0" in value:
        raise argparse.ArgumentTypeError(f"expected a file name without folders (--log_dir names the folder), "
                                         f"got {value!r}")
    if len(value.encode("utf-8")) > LONGEST_NAME:
        raise argparse.ArgumentTypeError(f"expected a file name of at most {LONGEST_NAME} bytes, got "
                                         f"{len(value.encode('utf-8'))}")
    return value


def device(name):
    """A torch device this machine has: cpu, or the machine's accelerator (cuda, cuda:N with N below its number of
    devices; mps, xpu ... where torch finds one). Checked while the arguments are parsed: asked for a GPU it does
    not have, a script would otherwise fail deep inside a model, or quietly run on the CPU."""
    import torch

    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda or cuda:1, got {name!r}") from None
    if chosen.type == "cpu":
        return name
    present = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if present is None or present.type != chosen.type:
        raise argparse.ArgumentTypeError(f"{name}: this machine has no {chosen.type} device (torch finds "
                                         f"{present.type if present else 'none'}); use --device cpu")
    count = torch.accelerator.device_count()
    if chosen.index is not None and chosen.index >= count:
        raise argparse.ArgumentTypeError(f"{name}: this machine has {count} {chosen.type} device(s), numbered from "
                                         f"0 to {count - 1}")
    return name


def add_device_argument(parser):
    parser.add_argument("--device", type=device, help="cpu, cuda, cuda:1 ... (default: CUDA when present, else cpu)")


# ---------------------------------------------------------------- paths
def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _writable_place(path, inside=False):
    """ArgumentTypeError unless something can be created at `path` (or, with `inside`, in the folder `path`): its
    nearest existing ancestor is a folder in which a file can be created (tried with a temporary file, which also
    catches read-only file systems)."""
    import tempfile

    folder = _nearest_existing(path if inside else os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{path}: {folder} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot write in {folder} ({e.strerror})") from None


def output_folder(path):
    """A folder the script creates or writes into (checkpoints, logs): missing, or a folder, and writable."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    _writable_place(path, inside=True)
    return path


def output_file(path):
    """A file the script writes as a whole (replacing an older one of its own): not a folder, writable."""
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a folder; expected a file name")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{path} is not a regular file")
    _writable_place(path)
    return path


def input_file(path):
    """A text file the script reads: it exists, is a file and can be opened (its content is checked on reading)."""
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a folder; expected a file")
    try:
        open(path, "rb").close()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot read it ({e.strerror})") from None
    return path


def checked_by(check, name):
    """A `type=` that runs `check(value)`, one of the project's checks that raise UserError (a checkpoint folder,
    a reward-model folder), while the arguments are parsed; `name` names the type in the bad-input tests."""
    def argument_type(value):
        try:
            check(value)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e).strip()) from None
        return value

    argument_type.__name__ = name
    return argument_type


def replaceable_folder(marker):
    """The type of a folder the script replaces as a whole (a checkpoint): missing, empty, or one this project
    wrote (it holds `marker`); anything else is refused, never deleted (`utils.files.folder_written_atomically`)."""
    from utils.files import check_replaceable_folder

    def check(path):
        check_replaceable_folder(path, marker, "")
        output_folder(path)

    return checked_by(check, "replaceable_folder")


PATH_TYPES = (output_folder, output_file, input_file, "replaceable_folder")  # and the checkpoint folders' own types


def same_file(a, b):
    """True when the paths name one existing file (the output would overwrite an input)."""
    return bool(a and b) and os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


# ---------------------------------------------------------------- trackers
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


# ---------------------------------------------------------------- option groups several scripts share
def add_sampling_arguments(parser, print_samples, printed):
    """How answers are sampled and how many are shown (`printed`: when, for the help)."""
    parser.add_argument("--max_new_tokens", "--gen_len", type=positive_int, default=16, help="new tokens per answer")
    parser.add_argument("--print_samples", "--num_samples", type=nonnegative_int, default=print_samples,
                        help=f"random answers printed {printed}")
