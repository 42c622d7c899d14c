"""The bad-input matrix: every option of every top-level script and `python -m utils.*` tool, given a value it must
refuse (0, -1, NaN, inf, an absurd size; a missing path, a folder where a file is expected, a file where a folder
is expected, a place that cannot be written), stops the script with exit code 2 and exactly one line on stderr,
no traceback, and no file changed. The table is read from the parsers themselves: an option added without a
checked `type=` (utils/options.py), or without an entry in UNCHECKED below, fails this test."""
import argparse
import importlib
import os

import pytest

from conftest import REPO, run_in_process
from utils import options

SCRIPTS = ["ppo_sentiment_example", "grpo_sentiment_example", "train_dpo", "train_reward_model", "terminal_main",
           "inference_ppo_gpt", "inference_reward_model", "ranklist_labeler", "utils.preferences", "utils.ratings",
           "utils.ai_feedback", "utils.tiny", "utils.data", "utils.policy", "utils.ranklists", "utils.tasks"]

# options without a checked type, and why that is safe
UNCHECKED = {
    "model_name": "a hub name or a local folder: load_pretrained refuses it in one line before anything is written",
    "ref_model_name": "as --model_name",
    "sentiment_model": "as --model_name",
    "address": "any text: streamlit's own option",
    "lora_target_modules": "module names: an unknown one is one line when the model loads (tests/test_any_lm.py)",
    "save_dir@inference_ppo_gpt": "read, not written: find_latest_checkpoint refuses it in one line first",
}

NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e30", str(10**12)]
NOT_UTF8 = b"\xb2\xe2\xca\xd4".decode("utf-8", "surrogateescape")  # GBK bytes, as Python decodes them from argv
# the other checked types: values each must refuse
REFUSED = {options.utf8_text: [NOT_UTF8],
           options.file_name: ["../x", "/tmp/x", "a/b", "..", " ", NOT_UTF8, "x" * 201],
           options.device: ["foo", "cuda:99", "cpu:x", "meta"]}


def parser_of(module_name, monkeypatch):
    """The parser a script's main() builds, caught as it starts parsing."""
    module = importlib.import_module(module_name)  # the labelling page runs only inside Streamlit
    caught = []

    class Caught(Exception):
        pass

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    entry = module.parse_args if module_name == "ranklist_labeler" else module.main
    with pytest.raises(Caught):
        entry([])
    monkeypatch.undo()
    return module, entry, caught[0]


def bad_paths(kind, tmp_path):
    """{case: path} that an option of this kind must refuse."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x\n", encoding="utf-8")
    a_folder = tmp_path / "a_folder"
    (a_folder / "inside").mkdir(parents=True, exist_ok=True)
    (a_folder / "keep.tsv").write_text("not ours\n", encoding="utf-8")
    missing, under_a_file = tmp_path / "missing" / "x", a_file / "x"  # nothing can be created under a file
    cases = {
        "input_file": {"missing": missing, "a folder": a_folder},
        "reward_model_folder": {"missing": missing, "a file": a_file, "a folder of something else": a_folder},
        "checkpoint_folder": {"missing": missing, "a file": a_file, "a folder of something else": a_folder},
        "output_file": {"a folder": a_folder, "unwritable": under_a_file},
        "output_folder": {"a file": a_file, "unwritable": under_a_file / "y"},
        "replaceable_folder": {"a file": a_file, "a folder of something else": a_folder,
                               "unwritable": under_a_file / "y"},
    }[kind]
    return {case: str(path) for case, path in cases.items()}


def snapshot(*roots):
    """Every file and folder under `roots` with its size and modification time."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".pytest_cache")]
            for name in dirs + files:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                seen[path] = (info.st_size, info.st_mtime_ns if name in files else None)
    return seen




def actions_of(parser, prefix=()):
    """(sub-command words, action) for every option of the parser and of its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, subparser in action.choices.items():
                yield from actions_of(subparser, prefix + (word,))
        else:
            yield list(prefix), action


def base_argv(module_name, action, tmp_path, prefix):
    """The sub-command, and what the script needs besides the argument under test (required positionals; those
    after the one under test get a good value)."""
    if module_name == "utils.preferences" and action.dest != "rank_list_files":
        tsv = tmp_path / "lists.tsv"
        tsv.write_text("好\t差\n", encoding="utf-8")
        return [str(tsv)], []
    if module_name == "utils.policy" and action.dest == "checkpoint":
        return prefix, [str(tmp_path / "merged")]
    if module_name == "utils.policy" and action.dest == "out_dir":  # (its checkpoint is refused too: no model here)
        return prefix + [str(tmp_path / "no_checkpoint")], []
    return prefix, []


@pytest.mark.parametrize("module_name", SCRIPTS)
def test_every_option_refuses_bad_values_in_one_line(module_name, tmp_path, capsys, monkeypatch):
    module, entry, parser = parser_of(module_name, monkeypatch)
    work = [os.path.join(REPO, name) for name in ("data", "logs", "checkpoints")] + [str(tmp_path)]
    cases, unchecked = [], []
    for prefix, action in actions_of(parser):
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreConstAction,
                               argparse.BooleanOptionalAction)) or action.choices is not None:
            continue  # no value, or argparse's own choices check
        flag = action.option_strings[0] if action.option_strings else None
        type_name = getattr(action.type, "__name__", None)
        if action.type in options.NUMBER_TYPES:
            bad = []
            for value in NUMBERS:
                try:
                    action.type(value)
                except argparse.ArgumentTypeError:
                    bad.append(value)
            assert {"nan", "inf", "-inf"} <= set(bad), (module_name, flag)
            cases += [(prefix, flag, action, value, value) for value in bad]
        elif type_name in options.PATH_TYPES + ("reward_model_folder", "checkpoint_folder") or \
                action.type in options.PATH_TYPES:
            cases += [(prefix, flag, action, case, path) for case, path in bad_paths(type_name, tmp_path).items()]
        elif action.type in REFUSED:
            cases += [(prefix, flag, action, value, value) for value in REFUSED[action.type]]
        elif action.dest not in UNCHECKED and f"{action.dest}@{module_name}" not in UNCHECKED:
            unchecked.append(flag or action.dest)
    assert not unchecked, f"{module_name}: options without a checked type= and not in UNCHECKED: {unchecked}"
    assert cases

    cases = [(flag, action, case, value, base_argv(module_name, action, tmp_path, prefix))
             for prefix, flag, action, case, value in cases]
    before = snapshot(*work)
    for flag, action, case, value, (before_value, after_value) in cases:
        code, stderr = run_in_process(entry, before_value + ([flag, value] if flag else [value]) + after_value, capsys)
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
            (module_name, flag or action.dest, case, code, stderr)
        assert "Traceback" not in stderr
    assert snapshot(*work) == before, f"{module_name}: files changed by refused arguments"
