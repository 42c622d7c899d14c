"""Preference export: rank lists (+ the labelling page's .meta.jsonl) -> prompt/chosen/rejected JSONL."""
import json

import pytest

from conftest import run_script, run_script_in_process
from utils.preferences import main, preference_pairs
from utils.ranklists import append_rank_list, metadata_path, read_prompted_rank_lists

MOVIE = "这部电影很"
SHOP = "刚收到货，感觉"


def labelled_file(tmp_path, name="labels.tsv"):
    """A file written as the labelling page writes it: a list of 4 and a list of 3, best first."""
    path = str(tmp_path / name)
    append_rank_list(path, [MOVIE + "好看", MOVIE + "一般", MOVIE + "无聊", MOVIE + "难看"],
                     {"prompt": MOVIE, "rank_list_len": 4, "annotator": "a"})
    append_rank_list(path, [SHOP + "很好", SHOP + "还行", SHOP + "很差"], {"prompt": SHOP, "rank_list_len": 3})
    return path


def export(tmp_path, *args):
    """`python -m utils.preferences ARGS --output prefs.jsonl`, as a user runs it: (result, the pairs written)."""
    output = tmp_path / "prefs.jsonl"
    result = run_script(["-m", "utils.preferences", *map(str, args), "--output", str(output)])
    pairs = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()] if output.exists() else None
    return result, pairs


def test_every_ordered_pair_in_order_with_the_prompt_apart(tmp_path, capsys):
    path = labelled_file(tmp_path)
    main([path, "--output", str(tmp_path / "prefs.jsonl")])
    pairs = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == 4 * 3 // 2 + 3 * 2 // 2
    assert [(p["chosen"], p["rejected"]) for p in pairs[:6]] == [
        ("好看", "一般"), ("好看", "无聊"), ("好看", "难看"), ("一般", "无聊"), ("一般", "难看"), ("无聊", "难看")]
    assert {p["prompt"] for p in pairs[:6]} == {MOVIE}
    assert pairs[6:] == [{"prompt": SHOP, "chosen": a, "rejected": b}
                         for a, b in (("很好", "还行"), ("很好", "很差"), ("还行", "很差"))]
    out = capsys.readouterr().out
    assert "9 preference pairs from 2 rank lists" in out and "no known prompt" not in out


def test_lists_without_a_known_prompt_get_an_empty_one_and_are_counted(tmp_path):
    labelled = labelled_file(tmp_path)
    no_meta = tmp_path / "corpus.tsv"
    no_meta.write_text("好评一\t差评一\t差评二\n好评二\t差评三\n", encoding="utf-8")
    # a record without a prompt (say, written by hand) counts as unknown too
    append_rank_list(labelled, ["甲很好", "乙很差"], {"annotator": "b"})
    result, pairs = export(tmp_path, labelled, no_meta)
    assert result.returncode == 0, result.stderr
    assert len(pairs) == 9 + 1 + 3 + 1
    assert pairs[9] == {"prompt": "", "chosen": "甲很好", "rejected": "乙很差"}
    assert pairs[10:] == [{"prompt": "", "chosen": a, "rejected": b} for a, b in
                          (("好评一", "差评一"), ("好评一", "差评二"), ("差评一", "差评二"), ("好评二", "差评三"))]
    assert "14 preference pairs from 5 rank lists" in result.stdout
    assert "3 rank list(s) (5 pairs) have no known prompt" in result.stdout


def test_a_repeated_text_counts_once_at_its_best_place(tmp_path):
    path = tmp_path / "same.tsv"
    path.write_text("好\t好\t差\n好\t差\t好\n", encoding="utf-8")
    result, pairs = export(tmp_path, path)
    assert result.returncode == 0, result.stderr
    assert pairs == [{"prompt": "", "chosen": "好", "rejected": "差"}] * 2
    assert f"note: {path}: left out 2 repeated text(s)" in result.stderr


def meta_lines(path):
    with open(metadata_path(path), encoding="utf-8") as f:
        return f.readlines()


def write_meta(path, lines):
    with open(metadata_path(path), "w", encoding="utf-8") as f:
        f.writelines(lines)


# each case: how to spoil a good labelled file -> the message's place and reason
def one_text_list(path):
    with open(path, "a", encoding="utf-8") as f:
        f.write("只有一个文本\n")
    write_meta(path, meta_lines(path) + ['{"prompt": "只有"}\n'])
    return f"{path}:3", "a rank list needs at least 2 tab-separated texts, found 1"


def empty_field(path):
    with open(path, "a", encoding="utf-8") as f:
        f.write("好评\t\t差评\n")
    write_meta(path, meta_lines(path) + ["{}\n"])
    return f"{path}:3", "empty text in field 2"


def wrong_length(path):
    lines = meta_lines(path)
    write_meta(path, [lines[0], lines[1].replace('"rank_list_len": 3', '"rank_list_len": 4')])
    return f"{path}:2", f"3 texts, but its record {metadata_path(path)}:2 says rank_list_len 4"


def wrong_prompt(path):
    lines = meta_lines(path)
    write_meta(path, [lines[0].replace(MOVIE, "这本书很"), lines[1]])
    return f"{path}:1", f"text 1 does not begin with the prompt '这本书很' of its record {metadata_path(path)}:1"


def not_json(path):
    write_meta(path, ["{broken\n", meta_lines(path)[1]])
    return f"{path}:1", f"its record {metadata_path(path)}:1 is not a JSON object"


def missing_record(path):
    write_meta(path, meta_lines(path)[:1])
    return f"{path}:2", f"no record for this rank list in {metadata_path(path)} (it has 1)"


def extra_record(path):
    write_meta(path, meta_lines(path) + ['{"prompt": "多余"}\n'])
    return f"{metadata_path(path)}:3", f"a record without a rank list ({path} has 2 lists)"


EARLIER_EXPORT = '{"prompt": "这部电影很", "chosen": "好看", "rejected": "难看"}\n'
BAD = [one_text_list, empty_field, wrong_length, wrong_prompt, not_json, missing_record, extra_record]


@pytest.mark.parametrize("spoil", BAD, ids=[f.__name__ for f in BAD])
def test_bad_lines_are_named_and_nothing_is_written(spoil, tmp_path, capsys):
    path = labelled_file(tmp_path)
    where, reason = spoil(path)
    (tmp_path / "prefs.jsonl").write_text(EARLIER_EXPORT, encoding="utf-8")
    result = run_script_in_process(main, [path, "--output", str(tmp_path / "prefs.jsonl")], capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: {where}: {reason} (use --skip_bad_lines to skip such lines)"
    assert (tmp_path / "prefs.jsonl").read_text(encoding="utf-8") == EARLIER_EXPORT


@pytest.mark.parametrize("spoil", BAD, ids=[f.__name__ for f in BAD])
def test_skip_bad_lines_keeps_the_good_lists_and_counts_the_bad_one(spoil, tmp_path, capsys):
    path = labelled_file(tmp_path)
    where, reason = spoil(path)
    lists = read_prompted_rank_lists(path, skip_bad_lines=True)
    file, line = where.rsplit(":", 1)
    counted = "record(s)" if spoil is extra_record else "bad line(s)"
    first = where if spoil is extra_record else f"line {line}"
    assert f"warning: skipped 1 {counted} in {file} (first: {first}: {reason})" in capsys.readouterr().err
    good = {(r.prompt, len(r.texts)) for r in lists}
    # the spoiled list is the one left out; the other keeps its prompt
    assert len(lists) == (2 if spoil in (one_text_list, empty_field, extra_record) else 1)
    assert good <= {(MOVIE, 4), (SHOP, 3)}


def test_lines_from_several_files_and_blank_lines(tmp_path):
    first = labelled_file(tmp_path, "a.tsv")
    with open(first, "a", encoding="utf-8") as f:
        f.write("\n\r\n")  # blank lines have no meta record
    second = labelled_file(tmp_path, "b.tsv")
    pairs = preference_pairs(read_prompted_rank_lists(first) + read_prompted_rank_lists(second))
    assert len(pairs) == 18 and pairs[:9] == pairs[9:]
