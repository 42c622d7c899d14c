"""One flag vocabulary: every script takes the canonical spelling of an idea and still the older spellings
(the original tutorial's and this project's earlier ones) as aliases, with the same meaning."""
import importlib

import pytest

# script: [(canonical argv, the same with older spellings)]
SPELLINGS = {
    "ppo_sentiment_example": [
        (["--learning_rate", "0.1", "--max_new_tokens", "7", "--total_samples", "64", "--print_samples", "2"],
         ["--lr", "0.1", "--gen_len", "7", "--steps", "64", "--num_samples", "2"]),
        (["--reward_norm", "reference", "--reward_model", "{rm}"], ["--normalize_reward", "--reward_model", "{rm}"]),
    ],
    "grpo_sentiment_example": [
        (["--learning_rate", "0.1", "--max_new_tokens", "7", "--total_samples", "64", "--print_samples", "2"],
         ["--lr", "0.1", "--gen_len", "7", "--steps", "64", "--num_samples", "2"]),
    ],
    "train_reward_model": [
        (["--model_name", "m", "--log_dir", "d", "--log_name", "n", "--learning_rate", "0.1"],
         ["--model", "m", "--img_log_dir", "d", "--img_log_name", "n", "--lr", "0.1"]),
    ],
    "train_dpo": [
        (["--log_dir", "d", "--log_name", "n", "--learning_rate", "0.1", "--max_new_tokens", "7", "--print_samples", "2"],
         ["--img_log_dir", "d", "--img_log_name", "n", "--lr", "0.1", "--gen_len", "7", "--num_samples", "2"]),
    ],
    "terminal_main": [(["--model_name", "m"], ["--model_name", "m"])],
    "inference_ppo_gpt": [(["--max_new_tokens", "7"], ["--gen_len", "7"])],
    "inference_reward_model": [(["--model_name", "{rm}"], ["--model", "{rm}"])],
}


@pytest.fixture(scope="module")
def reward_model_folder(micro_paths, tmp_path_factory):
    """A reward-model checkpoint: --reward_model and inference's --model are checked as they are parsed."""
    from transformers import AutoModel, AutoTokenizer

    from utils.reward_model import RewardModel, save_reward_model

    folder = str(tmp_path_factory.mktemp("rm") / "model_best")
    save_reward_model(RewardModel(AutoModel.from_pretrained(micro_paths["encoder"])),
                      AutoTokenizer.from_pretrained(micro_paths["encoder"]), folder)
    return folder


@pytest.mark.parametrize("script", sorted(SPELLINGS))
def test_canonical_flags_and_their_older_spellings_mean_the_same(script, reward_model_folder):
    parse_args = importlib.import_module(script).parse_args
    for canonical, older in SPELLINGS[script]:
        canonical, older = ([arg.format(rm=reward_model_folder) for arg in argv] for argv in (canonical, older))
        assert vars(parse_args(canonical)) == vars(parse_args(older))


@pytest.mark.parametrize("module, argv, message", [
    ("utils.data", ["--list_len", "1"], "--rank_list_len must be at least 2"),
    ("utils.ai_feedback", ["--tiny", "--k", "1"], "a rank list needs at least 2 answers"),
])
def test_commands_take_the_older_spellings_too(micro_main, module, argv, message):
    result = micro_main(importlib.import_module(module).main, argv)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_an_explicit_model_beats_tiny(micro_env, monkeypatch, micro_paths):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_env["RLHF_TINY_DIR"])
    for script in ("ppo_sentiment_example", "grpo_sentiment_example", "terminal_main", "train_reward_model"):
        parse_args = importlib.import_module(script).parse_args
        assert parse_args(["--tiny", "--model_name", "mine"]).model_name == "mine"
        tiny = parse_args(["--tiny"]).model_name
        assert tiny in (micro_paths["gpt2"], micro_paths["encoder"]), (script, tiny)
