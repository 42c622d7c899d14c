"""Loading pretrained models and tokenizers: quietly, and with one clear line when they cannot be found."""
import os

from utils.errors import UserError


def quiet_transformers():
    """No progress bars from transformers (loading and writing weights): a command that promises one line on an
    error keeps that promise, and a tutorial's output stays the original's."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def quietly(load, *args, **kwargs):
    """`load(*args, **kwargs)` with transformers' warnings off: for loads whose report (weights newly drawn or left
    unused) is expected and would only puzzle a reader."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return load(*args, **kwargs)
    finally:
        logging.set_verbosity(verbosity)


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
