"""Checkpoints written before the move to transformers 5 and our own value head still load, resume and infer.

Until December 2026 PPO's policy was trl 0.11.4's `AutoModelForCausalLMWithValueHead`: a full checkpoint held the
value head inside model.safetensors as `v_head.summary.*` (GRPO's and DPO's too, an untrained one), a LoRA
checkpoint held it in value_head.safetensors beside the adapters (the layout kept today). The tests here write a
checkpoint with today's code, rewrite it into trl's layout exactly as trl's `save_pretrained` wrote it (the
language model's tensors and the head's, prefixed, in one file), and load that.
"""
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import grpo_sentiment_example
import inference_ppo_gpt
import ppo_sentiment_example
from conftest import run_script
from utils.checkpoints import OLD_STATE_FILE, STATE_FILE, load_checkpoint_state
from utils.policy import load_policy
from utils.value_head import VALUE_HEAD_FILE, load_value_head, with_value_head

SMALL = ["--tiny", "--batch_size", "8", "--mini_batch_size", "4", "--gen_len", "6", "--num_samples", "0",
         "--save_freq", "100"]


def train(micro_main, script, tmp_path, name, *extra, epochs=1):
    save_dir = tmp_path / name
    result = micro_main(script.main, [*SMALL, "--steps", str(8 * epochs), "--save_dir", str(save_dir),
                                      "--log_dir", str(tmp_path / "logs"), *extra])
    assert result.returncode == 0, result.stderr[-2000:]
    [checkpoint] = os.listdir(save_dir)
    return str(save_dir / checkpoint)


def as_trl_wrote_it(checkpoint, value_head):
    """`checkpoint` rewritten into the layout of the releases on trl 0.11.4: `value_head` (a state dict) inside
    model.safetensors under `v_head.`, no value_head.safetensors, and the state in ppo_state.json."""
    weights = os.path.join(checkpoint, "model.safetensors")
    tensors = load_file(weights)
    tensors.update({f"v_head.{name}": tensor for name, tensor in value_head.items()})
    save_file(tensors, weights, metadata={"format": "pt"})
    if os.path.exists(os.path.join(checkpoint, VALUE_HEAD_FILE)):
        os.remove(os.path.join(checkpoint, VALUE_HEAD_FILE))
    os.rename(os.path.join(checkpoint, STATE_FILE), os.path.join(checkpoint, OLD_STATE_FILE))


def test_a_ppo_checkpoint_in_trls_layout_resumes_with_its_value_head_and_infers(micro_main, tmp_path, capsys):
    checkpoint = train(micro_main, ppo_sentiment_example, tmp_path, "ppo")
    head = load_file(os.path.join(checkpoint, VALUE_HEAD_FILE))
    old = str(tmp_path / "old" / "model_1")
    shutil.copytree(checkpoint, old)
    as_trl_wrote_it(old, head)

    assert not os.path.exists(os.path.join(old, VALUE_HEAD_FILE))
    assert all(torch.equal(load_value_head(old)[name], tensor) for name, tensor in head.items())
    lm, _, _ = load_policy(old, "cpu")  # the head's tensors are not the language model's: left out, quietly
    assert not any(name.startswith("v_head") for name in lm.state_dict())
    assert torch.equal(with_value_head(lm, old).v_head.summary.weight, head["summary.weight"])

    resumed = train(micro_main, ppo_sentiment_example, tmp_path, "resumed", "--resume", old, epochs=2)
    assert load_checkpoint_state(resumed, "ppo")["epoch"] == 2
    assert os.path.exists(os.path.join(resumed, VALUE_HEAD_FILE))  # saved again in today's layout

    result = micro_main(inference_ppo_gpt.main, ["--checkpoint", old, "--num", "2", "--gen_len", "4"])
    assert result.returncode == 0 and result.stdout.count("这部电影很") == 2, result.stderr[-2000:]


def test_a_ppo_checkpoint_without_any_value_head_is_refused_on_resume(micro_main, tmp_path):
    checkpoint = train(micro_main, ppo_sentiment_example, tmp_path, "ppo")
    os.remove(os.path.join(checkpoint, VALUE_HEAD_FILE))
    result = micro_main(ppo_sentiment_example.main, [*SMALL, "--steps", "16", "--resume", checkpoint,
                                                     "--save_dir", str(tmp_path / "again")])
    assert result.returncode == 2 and "incomplete PPO checkpoint (no value head" in result.stderr
    assert not os.path.exists(tmp_path / "again")


@pytest.mark.parametrize("lora", [False, True])
def test_a_grpo_checkpoint_with_trls_unused_value_head_resumes_without_one(micro_main, tmp_path, lora):
    extra = ["--lora_r", "2", "--lora_target_modules", "c_attn"] if lora else []
    checkpoint = train(micro_main, grpo_sentiment_example, tmp_path, "grpo", *extra)
    assert not os.path.exists(os.path.join(checkpoint, VALUE_HEAD_FILE))  # GRPO has no critic
    fresh_head = {"summary.weight": torch.randn(1, 32), "summary.bias": torch.zeros(1)}
    if lora:  # trl's LoRA checkpoints kept the (untrained) head beside the adapters
        save_file(fresh_head, os.path.join(checkpoint, VALUE_HEAD_FILE))
    else:
        as_trl_wrote_it(checkpoint, fresh_head)
    resumed = train(micro_main, grpo_sentiment_example, tmp_path, "resumed", "--resume", checkpoint, *extra,
                    epochs=2)
    assert load_checkpoint_state(resumed, "grpo")["epoch"] == 2
    assert not os.path.exists(os.path.join(resumed, VALUE_HEAD_FILE))


def test_the_terminal_resumes_a_checkpoint_in_trls_layout(micro_main, micro_env, tmp_path):
    checkpoint = train(micro_main, ppo_sentiment_example, tmp_path, "ppo")
    as_trl_wrote_it(checkpoint, load_file(os.path.join(checkpoint, VALUE_HEAD_FILE)))
    result = run_script(["terminal_main.py", "--tiny", "--resume", checkpoint, "--batch_size", "1", "--max_new_tokens", "4",
                         "--save_dir", str(tmp_path / "terminal"), "--log_dir", str(tmp_path / "terminal_logs")],
                        env=micro_env, input="1\nq\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint_state(str(tmp_path / "terminal"), "ppo")["step"] == 1
