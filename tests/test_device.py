"""Devices and precision: accelerate's state between tests, --mixed_precision, TF32, the fused Adam, the tiny
build's --device; and, marked `gpu` (skipped without CUDA), the real
loops on a GPU: `python -m pytest -m gpu`."""
import json
import os

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from bench.trl_venv import BUILD_COMMAND, trl_venv_python
from conftest import REPO, reset_accelerate_state, run_in_process, run_script
from utils.device import accelerator_kwargs, pick_device, set_seed
from utils.errors import UserError
from utils.data import RANK_LIST_DIR
from utils.generation import generate_responses
from utils.tokens import encode_prompt
from utils.logger import read_jsonl
from utils.checkpoints import load_checkpoint_state
from utils.policy import load_policy
from utils.ranklists import read_rank_lists
from utils.reward_model import load_reward_model
from utils.tiny import build_tiny

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


# ---------------------------------------------------------------- accelerate's process-wide state
def test_accelerate_state_is_reset_between_tests():
    Accelerator(cpu=True, mixed_precision="bf16")
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(cpu=True, mixed_precision="no")  # what a later test would hit without conftest's reset
    reset_accelerate_state()
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"


# ---------------------------------------------------------------- precision
def test_accelerator_kwargs_and_fp16_on_the_cpu():
    assert accelerator_kwargs(torch.device("cpu")) == {"cpu": True, "mixed_precision": None}
    assert accelerator_kwargs("cuda", "bf16") == {"cpu": False, "mixed_precision": "bf16"}
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        accelerator_kwargs("cpu", "fp16")  # accelerate would quietly train in float32


def test_tf32_is_allowed_on_cuda_and_the_cpu_left_alone():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    cpu_matmul = torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        pick_device("cpu")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        pick_device("cuda")  # only names the device: no GPU is needed here
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.mkldnn.matmul.fp32_precision == cpu_matmul
        assert torch.get_float32_matmul_precision() == "high"  # readable: no mix of torch's two TF32 APIs
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_bf16_autocast_through_accelerate_runs_the_ppo_step_on_the_cpu(micro_paths):
    from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update

    policy, ref_model, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    trainer = make_ppo(policy, ref_model, tokenizer, PPOConfig(mini_batch_size=2, ppo_epochs=1, learning_rate=1e-3),
                       Accelerator(**accelerator_kwargs("cpu", "bf16")))
    dtypes = set()
    trainer.unwrapped_policy().pretrained_model.lm_head.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    queries = [encode_prompt(tokenizer, "这部电影很")] * 4
    responses = generate_responses(trainer.unwrapped_policy(), tokenizer, queries, 6)
    before = {key: value.clone() for key, value in trainer.unwrapped_policy().state_dict().items()}
    stats = ppo_update(trainer, queries, responses, [1.0, 0.0, 1.0, 0.0])
    assert trainer.accelerator.mixed_precision == "bf16"
    assert torch.bfloat16 in dtypes and all(torch.isfinite(torch.tensor(value)) for value in stats.values())
    after = trainer.unwrapped_policy().state_dict()
    assert all(torch.isfinite(value).all() for value in after.values())
    assert any(not torch.equal(before[key], value) for key, value in after.items())


def test_preset_gpu_puts_the_batch_in_one_mini_batch_under_bf16(micro_dir, monkeypatch):
    import ppo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    parse = ppo_sentiment_example.parse_args
    tiny = parse(["--tiny", "--preset", "gpu"])
    assert (tiny.batch_size, tiny.mini_batch_size, tiny.mixed_precision, tiny.ppo_epochs) == (128, 128, "bf16", 1)
    full = parse(["--preset", "gpu", "--batch_size", "64"])
    assert (full.mini_batch_size, full.mixed_precision, full.ppo_epochs, full.learning_rate) == (64, "bf16", 4, 1.41e-5)
    explicit = parse(["--tiny", "--preset", "gpu", "--mini_batch_size", "32", "--mixed_precision", "no"])
    assert (explicit.mini_batch_size, explicit.mixed_precision) == (32, "no")
    assert parse(["--tiny"]).mixed_precision is None  # accelerate launch's configuration decides


def test_fp16_on_the_cpu_is_refused_before_anything_is_written(micro_dir, tmp_path, monkeypatch, capsys):
    import ppo_sentiment_example
    import train_reward_model
    from test_ppo import SMALL, assert_error_line

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    code, stderr = run_in_process(ppo_sentiment_example.main, [*SMALL, "--device", "cpu", "--mixed_precision", "fp16",
                                  "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")], capsys)
    assert code == 2
    assert_error_line(stderr, "--mixed_precision fp16 needs a GPU")
    code, stderr = run_in_process(train_reward_model.main, ["--tiny", "--device", "cpu", "--mixed_precision", "fp16",
                                                            "--save_dir", str(tmp_path / "rm"), "--img_log_dir",
                                                            str(tmp_path / "rm_logs")], capsys)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "error: --mixed_precision fp16 needs a GPU; on the CPU use bf16 or no"
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- the same work, less overhead
@pytest.mark.parametrize("device", DEVICES)
def test_fused_adam_trains_like_plain_adam(micro_paths, device):
    """Our update with its fused Adam against the same update with torch's plain (for-each) Adam at the same
    settings, from the same weights on the same batch."""
    from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update

    config = dict(mini_batch_size=4, ppo_epochs=2, learning_rate=1e-3)
    trained = []
    for fused in (True, False):
        set_seed(0)  # the value head starts from random weights
        policy, ref_model, tokenizer = load_policy(micro_paths["gpt2"], device)
        trainer = make_ppo(policy, ref_model, tokenizer, PPOConfig(**config), Accelerator(**accelerator_kwargs(device)))
        if not fused:
            params = [p for p in trainer.policy.parameters() if p.requires_grad]
            trainer.optimizer = trainer.accelerator.prepare(torch.optim.Adam(params, lr=config["learning_rate"]))
        set_seed(0)
        queries = [encode_prompt(tokenizer, p) for p in ("这部电影很", "刚收到货，感觉") * 4]
        responses = generate_responses(policy, tokenizer, queries, 6)
        set_seed(1)
        ppo_update(trainer, queries, responses, [float(i % 3) for i in range(8)])
        trained.append((trainer.optimizer.optimizer.defaults, trainer.unwrapped_policy().state_dict()))
    (ours, ours_weights), (plain, plain_weights) = trained
    assert ours["fused"] and not plain["fused"] and ours["lr"] == plain["lr"] and ours["betas"] == plain["betas"]
    assert ours["weight_decay"] == plain["weight_decay"] == 0 and ours["eps"] == plain["eps"]
    start = AutoModelForCausalLM.from_pretrained(micro_paths["gpt2"]).state_dict()
    name = "pretrained_model.transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(ours_weights[name].cpu(), start[name.removeprefix("pretrained_model.")])  # it trained
    # CUDA's embedding backward adds in no fixed order, and Adam turns a sign flip of a near-zero gradient into a
    # step of the learning rate: there a few elements may differ
    allowed = 0.0 if device == "cpu" else 1e-3
    for name, weight in ours_weights.items():
        assert ((weight - plain_weights[name]).abs() > 1e-5).float().mean() <= allowed, name


# ---------------------------------------------------------------- the tiny build on a device
@pytest.mark.parametrize("device", DEVICES)
def test_tiny_build_on_a_chosen_device_follows_the_same_recipe(micro_dir, tmp_path, device):
    """The micro preset on `device` against the CPU build of the micro_dir fixture (same seed)."""
    report = build_tiny(str(tmp_path / "tiny"), preset="micro", report_dir=None, device=device)
    with open(os.path.join(micro_dir, "report.json")) as f:
        cpu_report = json.load(f)
    assert report["device"] == device and cpu_report["device"] == "cpu"
    assert os.path.isfile(tmp_path / "tiny" / "gpt2" / "model.safetensors")
    if device == "cpu":  # the same random draws and arithmetic: the same models
        assert report["classifier_test_acc"] == cpu_report["classifier_test_acc"]
        assert report["lm_test_perplexity"] == cpu_report["lm_test_perplexity"]
    else:  # the same batches and masks; other dropout draws and arithmetic (TF32)
        assert abs(report["classifier_test_acc"] - cpu_report["classifier_test_acc"]) <= 0.1
        assert abs(report["lm_test_perplexity"] / cpu_report["lm_test_perplexity"] - 1) <= 0.15
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "tiny" / "gpt2"))  # saved weights load on the CPU


# ---------------------------------------------------------------- the real loops on a GPU
@pytest.mark.gpu
@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_ppo_with_the_classifier_on_cuda(micro_dir, tmp_path, monkeypatch, capsys, mixed_precision):
    import ppo_sentiment_example
    from test_ppo import SMALL

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    save_dir, log_dir = tmp_path / "ck", tmp_path / "logs"
    ppo_sentiment_example.main([*SMALL, "--steps", "24", "--device", "cuda", "--mixed_precision", mixed_precision,
                                "--save_dir", str(save_dir), "--log_dir", str(log_dir)])
    assert "PPO on cuda" in capsys.readouterr().out
    records = read_jsonl(str(log_dir / "PPO-Sentiment-Zh.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1, 2] and not any(r["skipped"] for r in records)
    assert all(0.0 <= r["reward_mean"] <= 1.0 and abs(r["kl"]) < 10 for r in records), records
    [saved] = os.listdir(save_dir)
    assert load_checkpoint_state(str(save_dir / saved))["epoch"] == 3
    policy, _, _ = load_policy(str(save_dir / saved), "cpu")  # a GPU checkpoint loads on the CPU
    assert next(policy.parameters()).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_reward_model_trains_on_cuda(micro_env, tmp_path, mixed_precision):
    for name, lists in (("train", read_rank_lists(os.path.join(RANK_LIST_DIR, "train.tsv"))[:320]),
                        ("dev", read_rank_lists(os.path.join(RANK_LIST_DIR, "dev.tsv"))[:60])):
        (tmp_path / f"{name}.tsv").write_text("".join("\t".join(r) + "\n" for r in lists), encoding="utf-8")
    result = run_script(["train_reward_model.py", "--tiny", "--device", "cuda", "--mixed_precision", mixed_precision,
                         "--train_path", str(tmp_path / "train.tsv"), "--dev_path", str(tmp_path / "dev.tsv"),
                         "--save_dir", str(tmp_path / "ckpt"), "--img_log_dir", str(tmp_path / "logs"),
                         "--batch_size", "16", "--learning_rate", "2e-3", "--valid_steps", "10",
                         "--logging_steps", "5"], env=micro_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert " on cuda" in result.stdout and result.stdout.count("Evaluation acc: ") == 2
    losses = [r["train_loss"] for r in read_jsonl(str(tmp_path / "logs" / "ERNIE Reward Model.jsonl"))
              if "train_loss" in r]
    assert len(losses) == 4 and all(0 < loss < 1 for loss in losses)
    model, _ = load_reward_model(str(tmp_path / "ckpt" / "model_best"))
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.gpu
def test_terminal_step_on_cuda(micro_env, tmp_path):
    from test_terminal_main import REWARD, paths, spawn, wait_for_exit

    log_dir, save_dir, jsonl = paths(tmp_path)
    child = spawn(micro_env, "--device", "cuda", "--batch_size", "2", "--log_dir", log_dir, "--save_dir", save_dir)
    child.expect(r"device.*cuda")
    for reward in ("1.5", "-1"):
        child.expect(REWARD)
        child.sendline(reward)
    child.expect(r"PPO step 1 done")
    child.expect(REWARD)
    child.sendline("q")
    child.expect(r"checkpoint: .*PPO step 1, 2 ratings behind it")
    assert wait_for_exit(child) == 0
    assert [r["reward"] for r in read_jsonl(jsonl)] == [1.5, -1.0]
    assert load_checkpoint_state(save_dir)["step"] == 1


@pytest.mark.gpu
def test_labelling_page_generates_on_cuda(micro_dir, tmp_path, monkeypatch):
    import sys

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    monkeypatch.setattr(sys, "argv", ["ranklist_labeler.py", "--tiny", "--device", "cuda", "--dataset_file",
                                      str(tmp_path / "labels.tsv")])
    page = AppTest.from_file(os.path.join(REPO, "ranklist_labeler.py"), default_timeout=180)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert json.loads(page.sidebar.json[0].value)["device"] == "cuda"
    answers = [t.value for t in page.text][:4]
    assert len(answers) == 4 and all(len(a) > 2 for a in answers), answers


@pytest.mark.gpu
def test_benches_run_on_cuda(micro_env):
    ppo = run_script(["bench/bench_ppo.py", "--device", "cuda", "--batch_size", "32", "--repeats", "1",
                      "--full_batch_size", "16"], env=micro_env)
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    # the original's structure and trl's step run in trl 0.11.4's venv (bench/trl_venv.py); a machine without it
    # (no network to build it) times ours alone and says how to build it
    if trl_venv_python() is None:
        assert f"trl 0.11.4's venv is not built: only our variants are timed (build it with `{BUILD_COMMAND}`" \
            in ppo.stdout
        assert ppo.stdout.count("peak GPU memory") == 2 and "ours/trl" not in ppo.stdout
    else:
        assert "ratio ours/original, same settings" in ppo.stdout and ppo.stdout.count("peak GPU memory") == 4
        assert "ratio ours/trl step, same settings (mini-batch 16, 4 PPO epochs): optimize " in ppo.stdout
    reward = run_script(["bench/bench_reward_model.py", "--device", "cuda", "--steps", "1", "--batch_size", "4",
                         "--ernie_steps", "1"], env=micro_env)
    assert reward.returncode == 0, reward.stderr[-3000:]
    assert "ratio ours / original:" in reward.stdout and reward.stdout.count("step/s; peak GPU memory") == 3
