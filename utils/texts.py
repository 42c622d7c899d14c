"""One reader for every text the scripts take in: files (rank lists, prompts, tasks, ratings, preference pairs,
metadata), stdin, and texts given on the command line.

- A line ends at LF, CR or CRLF alike (only these: Unicode's other separators, such as U+2028, are text inside a
  line; UTF-8 never uses the bytes of LF or CR inside a character, so the bytes are split before decoding).
- A UTF-8 byte-order mark before the first line is no part of its text.
- A line that is not UTF-8 is one line naming where it is: `file:line`, `stdin:line`, or the option.

    read_numbered_lines(path)   [(line number, text, or None where the line is not UTF-8)], for the readers that
                                may skip bad lines (utils.ranklists.read_checked_lines)
    read_lines(path, what)      [text], stopping at the first line that is not UTF-8
    read_stdin_lines(what)      the same for stdin

Texts given on the command line are checked by their options' `type=` (utils/options.py `utf8_text`).

    clean_text                  what a BERT tokenizer decodes, without its special tokens and inter-character spaces
"""
import codecs
import os
import re
import sys

from utils.errors import UserError

NOT_UTF8 = "not valid UTF-8 text"


def read_bytes(path):
    """The bytes of a file, with one line (UserError) for a folder, a missing file or one that cannot be read."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; expected a file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None


def numbered_lines(data):
    """[(line number, text)] of `data` (bytes); text is None for a line that is not UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    numbered = []
    for number, raw in enumerate(data.splitlines(), start=1):  # bytes.splitlines: LF, CR and CRLF only
        try:
            numbered.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            numbered.append((number, None))
    return numbered


def read_numbered_lines(path):
    return numbered_lines(read_bytes(path))


def ends_mid_line(data):
    """True when the last line of `data` has no line ending (a write cut short, or a file edited by hand)."""
    return bool(data) and not data.endswith((b"\n", b"\r"))


def checked_texts(numbered, where, what):
    """The texts of `numbered_lines`, or UserError `where:line: not valid UTF-8 text (what)` at the first bad one."""
    for number, text in numbered:
        if text is None:
            raise UserError(f"{where}:{number}: {NOT_UTF8} ({what})")
    return [text for _, text in numbered]


def read_lines(path, what):
    """The lines of a UTF-8 text file; `what` says what a line should be, for the message about a bad one."""
    return checked_texts(read_numbered_lines(path), path, what)


def read_stdin_lines(what):
    """The lines of stdin, read as `read_lines` reads a file (the bytes: the terminal's encoding plays no part)."""
    return checked_texts(numbered_lines(sys.stdin.buffer.read()), "stdin", what)


# ---------------------------------------------------------------- decoded text
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
# a space is dropped only when a CJK character or CJK punctuation stands on one side of it
_CJK = r"\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
_CJK_SPACE_RE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


def clean_text(text):
    """Undo BERT-tokenizer decoding: drop special tokens and the spaces put between Chinese characters."""
    text = _SPECIAL_RE.sub("", text)
    text = _CJK_SPACE_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()
