"""--report_to: the JSONL's numbers in TensorBoard (offline, read back from the event file), and a tracker whose
package is missing refused in one line before any model is built or loaded."""
import importlib
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from utils import options
from utils.errors import run_main
from utils.logger import TrainLogger, read_jsonl

SCRIPTS = ["ppo_sentiment_example", "grpo_sentiment_example", "train_dpo", "train_reward_model", "terminal_main"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_tracker_package_is_one_line_before_any_model(script, tmp_path, monkeypatch, capsys):
    import utils.tiny

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(options.importlib.util, "find_spec",
                        lambda name, *a: None if name == "swanlab" else real_find_spec(name, *a))
    monkeypatch.setenv("RLHF_TINY_DIR", str(tmp_path / "no_models_yet"))
    monkeypatch.setattr(utils.tiny, "build_tiny", lambda *a, **k: pytest.fail("built the tiny models first"))
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: module.parse_args(["--tiny", "--report_to", "swanlab", "--log_dir", str(tmp_path / "logs")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --report_to swanlab needs the 'swanlab' package, which is not installed: pip install swanlab\n"
    assert not (tmp_path / "no_models_yet").exists() and not (tmp_path / "logs").exists()


def tensorboard_scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_train_logger_sends_each_records_numbers_to_tensorboard(tmp_path):
    logger = TrainLogger(str(tmp_path), "run", x_key="epoch", report_to="tensorboard")
    for epoch in range(3):
        logger.log({"epoch": epoch, "reward_mean": 0.5 + epoch / 10, "kl": float(epoch), "note": "text is not a scalar",
                    "skipped": False, "loss": float("nan") if epoch == 1 else 1.0})
    logger.close()
    scalars = tensorboard_scalars(tmp_path / "tensorboard" / "run")
    assert sorted(scalars) == ["kl", "loss", "reward_mean"]
    assert scalars["reward_mean"] == [(0, 0.5), (1, pytest.approx(0.6)), (2, pytest.approx(0.7))]
    assert [step for step, _ in scalars["loss"]] == [0, 2]  # the NaN is left out, as the PNG leaves it out


def test_a_short_grpo_run_writes_the_jsonl_fields_to_tensorboard(micro_dir, tmp_path, monkeypatch):
    import grpo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    grpo_sentiment_example.main(["--tiny", "--batch_size", "8", "--group_size", "4", "--mini_batch_size", "4",
                                 "--gen_len", "6", "--num_samples", "0", "--steps", "16", "--report_to", "tensorboard",
                                 "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")],
                                reward_fn=lambda texts: [len(t) % 3 / 2 for t in texts])
    records = read_jsonl(str(tmp_path / "logs" / "GRPO-Sentiment-Zh.jsonl"))
    scalars = tensorboard_scalars(tmp_path / "logs" / "tensorboard" / "GRPO-Sentiment-Zh")
    numeric = {k for r in records for k, v in r.items()
               if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    assert len(records) == 2 and {"reward_mean", "kl", "distinct_2", "policy_loss", "time_epoch"} <= numeric
    assert set(scalars) == numeric
    for key in numeric:
        assert scalars[key] == [(r["epoch"], pytest.approx(r[key], rel=1e-6, abs=1e-6)) for r in records if key in r]
