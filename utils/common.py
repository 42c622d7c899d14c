"""Small helpers every script needs: errors for users, device, seed, text cleanup, model loading, files
written atomically."""
import contextlib
import os
import random
import re
import shutil
import sys

import numpy as np
import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
# a space is dropped only when a CJK character or CJK punctuation stands on one side of it
_CJK = r"\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
_CJK_SPACE_RE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""


def run_main(main):
    """Run `main()`; a UserError becomes `error: ...` on stderr and exit code 2."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


class Lazy:
    """A preset value computed only when it is used (the tiny models' paths: built on first use); `label`
    stands for it in --help."""

    def __init__(self, label, compute):
        self.label, self.compute = label, compute

    def __str__(self):
        return self.label


def parse_with_presets(parser, argv, presets):
    """Parse `argv` with the one --tiny rule every script follows: an option left out takes its value from
    `presets["tiny"]` when --tiny is given, else from `presets["default"]`; an option given explicitly always
    wins. Each such option's --help line shows both values."""
    default, tiny = presets["default"], presets["tiny"]
    for action in parser._actions:
        if action.dest in default or action.dest in tiny:
            both = (f"default: {default.get(action.dest, action.default)}; "
                    f"--tiny: {tiny.get(action.dest, default.get(action.dest, action.default))}")
            action.help = f"{action.help} ({both})" if action.help else both
            default.setdefault(action.dest, action.default)
            action.default = None
    args = parser.parse_args(argv)
    for key, value in {**default, **(tiny if args.tiny else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value.compute() if isinstance(value, Lazy) else value)
    return args


def pick_device(name=None):
    """`--device` if given, else CUDA when present, else CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def clean_text(text):
    """Undo BERT-tokenizer decoding: drop special tokens and the spaces put between Chinese characters."""
    text = _SPECIAL_RE.sub("", text)
    text = _CJK_SPACE_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def load_pretrained(loader, name_or_path, **kwargs):
    """`loader.from_pretrained(name_or_path)`, with one clear line when it cannot be found."""
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        if os.path.isdir(name_or_path):
            raise UserError(f"cannot load '{name_or_path}' with {loader.__name__}: {str(e).splitlines()[0]}") from e
        raise UserError(
            f"cannot load model '{name_or_path}': it is not a local folder and the Hugging Face hub "
            "could not provide it (offline?). Use --tiny for the offline models, or pass a local path."
        ) from e


def write_text_atomically(path, text):
    """Write to a temporary file beside `path`, then rename: a killed write never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def folder_written_atomically(out_dir):
    """Yields a fresh `out_dir.tmp` to write into; once the block has finished, it replaces `out_dir`. The old
    `out_dir` waits as `out_dir.previous` until the new one is in place, so a write killed at any moment
    leaves a complete folder (the old or the new one), never half of one."""
    out_dir = os.path.normpath(out_dir)
    tmp, previous = f"{out_dir}.tmp", f"{out_dir}.previous"
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(out_dir):
        os.replace(out_dir, previous)
    os.replace(tmp, out_dir)
    shutil.rmtree(previous, ignore_errors=True)
