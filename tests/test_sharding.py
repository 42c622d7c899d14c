"""utils/sharding.py (PyTorch FSDP2) on 2 CPU processes (torchrun, gloo): micro GPT-2, Qwen2 (LoRA) and Llama trained
a few steps sharded (tests/sharding_run.py) against the same global batch in this process, unsharded.

One torchrun launch carries every check of the standalone run (they share its few seconds of start-up): each
process holds about half of the trainable parameters, the losses, gradient norms and weights equal the single
process's, greedy answers from the gathered weights (of the policy and of the reference) equal the single
process's, the saved folders load in one process with AutoModelForCausalLM (peft for LoRA) and hold the gathered
weights, and training goes on after the gather and the save (tests/test_trainers_sharded.py runs the trainers
themselves, also on two nodes and resumed). The `gpu` tests repeat the first on CUDA (NCCL), one process per GPU
(at most 2).
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import sharding_run
from conftest import REPO, cpu_only
from utils import sharding
from utils.policy import load_policy, peft_on_transformers_5
from utils.value_head import VALUE_HEAD_FILE, with_value_head

LAUNCH_TIMEOUT = 300


@pytest.fixture
def models(micro_paths, micro_lms):
    return {"gpt2": micro_paths["gpt2"], **micro_lms}


def worker_command(out_dir, models, variants):
    return ["tests/sharding_run.py", str(out_dir), *[f"--model={name}={path}" for name, path in models.items()],
            "--variants", ",".join(variants)]


def launch_env(device):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return cpu_only(env) if device == "cpu" else env


def torchrun_standalone(out_dir, models, variants, device="cpu", processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               *worker_command(out_dir, models, variants), "--device", device]
    result = subprocess.run(command, cwd=REPO, env=launch_env(device), capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- the checks
def check_shares(variant, processes):
    """Each of N processes holds about 1/N of the trainable parameters, before and after a gathered rollout."""
    total, n = processes[0]["share_before"][1], len(processes)
    held = [p["share_before"][0] for p in processes]
    assert sum(held) == total, f"{variant}: the shards add up to {sum(held)} parameters, not {total}"
    for share in held:
        assert abs(share - total / n) <= 0.05 * total, f"{variant}: a process holds {share} of {total}"
    assert [p["share_after"] for p in processes] == [p["share_before"] for p in processes], \
        f"{variant}: the model is not sharded again after gathered_weights"


def check_training(variant, sharded, reference, tolerances):
    """Losses and gradient norms (before clipping) step by step, and the loss of the step after the checkpoint."""
    for key, tolerance in tolerances.items():
        assert sharded[key] == pytest.approx(reference[key], rel=tolerance), f"{variant}: {key}"


def check_weights(variant, gathered, reference, tolerance):
    assert gathered.keys() == reference.keys(), variant
    for name, weight in gathered.items():
        assert torch.allclose(weight, reference[name], atol=tolerance, rtol=0), f"{variant}: {name}"


def load_saved_lm(variant, checkpoint, models):
    """The saved folder loaded in one process: AutoModelForCausalLM, or with LoRA the base model plus peft."""
    if sharding_run.VARIANTS[variant].get("lora"):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(models[sharding_run.VARIANTS[variant]["model"]])
        with peft_on_transformers_5():
            return PeftModel.from_pretrained(base, checkpoint)
    return AutoModelForCausalLM.from_pretrained(checkpoint)


def check_checkpoint(variant, folder, models):
    """The checkpoint folder loads in one process and holds exactly the sharded model's gathered weights."""
    gathered = load_file(os.path.join(folder, "gathered.safetensors"))
    checkpoint = os.path.join(folder, "checkpoint")
    saved = dict(load_saved_lm(variant, checkpoint, models).named_parameters())
    if sharding_run.VARIANTS[variant].get("value_head"):
        head = load_file(os.path.join(checkpoint, VALUE_HEAD_FILE))
        saved.update({f"v_head.{name}": tensor for name, tensor in head.items()})
        gathered = {name.removeprefix("pretrained_model."): tensor for name, tensor in gathered.items()}
    assert saved.keys() == gathered.keys(), variant
    for name, weight in gathered.items():
        assert torch.equal(saved[name].detach(), weight), f"{variant}: {name} differs in the checkpoint"
    config = "adapter_config.json" if sharding_run.VARIANTS[variant].get("lora") else "config.json"
    with open(os.path.join(checkpoint, config), encoding="utf-8") as f:
        assert "FSDP" not in f.read(), f"{variant}: the sharded class's name leaked into {config}"


def check_statistics(statistics, processes):
    values = [torch.arange(3 + 2 * r, dtype=torch.float32) * (r + 1) + 10 * r for r in range(processes)]
    kept = torch.cat([v[:-1] for v in values])  # each process's last value is masked out
    assert statistics["mean"] == pytest.approx(float(kept.mean()), rel=1e-6)
    assert statistics["variance"] == pytest.approx(float(kept.var(unbiased=True)), rel=1e-6)
    assert statistics["sum"] == pytest.approx(float(torch.cat(values).sum()), rel=1e-6)


def check_run(results, out_dir, models, device, processes):
    assert results["world_size"] == processes and results["device"].startswith(device)
    check_statistics(results["statistics"], processes)
    for variant in sharding_run.VARIANTS:
        reference = sharding_run.reference_run(variant, models[sharding_run.VARIANTS[variant]["model"]], device,
                                               processes)
        sharded = results[variant]
        check_shares(variant, sharded["processes"])
        if sharding_run.VARIANTS[variant].get("mixed_precision") == "bf16":
            # computing in bf16 gives other numbers: held to the float32 run loosely, it should still train alike
            check_training(variant, sharded, reference, {"losses": 2e-3, "norms": 2e-2, "next_loss": 2e-3})
        else:
            check_training(variant, sharded, reference, {"losses": 1e-5, "norms": 1e-5, "next_loss": 1e-5})
            check_weights(variant, load_file(os.path.join(out_dir, variant, "gathered.safetensors")),
                          reference["weights"], 1e-5)
            assert [p["answer"] for p in sharded["processes"]] == reference["answers"], variant
        assert [p["ref_answer"] for p in sharded["processes"]] == reference["ref_answers"], f"{variant}: reference"
        check_checkpoint(variant, os.path.join(out_dir, variant), models)


@pytest.mark.slow
def test_two_processes_train_like_one_and_save_folders_that_load_in_one(models, tmp_path):
    results = torchrun_standalone(tmp_path, models, sharding_run.VARIANTS)
    check_run(results, tmp_path, models, "cpu", processes=2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- in this process, no process group
def test_the_blocks_found_are_the_transformer_layers_also_inside_peft_and_the_value_head(models):
    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_pretrained(models["gpt2"])
    assert sharding.decoder_layers(gpt2) == list(gpt2.transformer.h)
    for arch in ("qwen2", "llama"):
        lora = {"r": 2, "lora_alpha": 4.0, "lora_dropout": 0.0, "target_modules": None}
        policy = load_policy(models[arch], "cpu", lora=lora)[0]
        layers = list(policy.get_base_model().model.layers)
        assert sharding.decoder_layers(with_value_head(policy)) == layers
    with pytest.raises(ValueError, match="no transformer blocks"):
        sharding.decoder_layers(torch.nn.Linear(2, 2))


def test_mixed_precision_is_bf16_over_float32_or_none():
    bf16 = sharding.mixed_precision_policy("bf16")
    assert (bf16.param_dtype, bf16.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert sharding.mixed_precision_policy("no").param_dtype is None
    with pytest.raises(ValueError, match="bf16 or float32"):
        sharding.mixed_precision_policy("fp16")


def test_statistics_and_the_token_mean_without_processes_are_the_plain_ones():
    values = torch.tensor([[1.0, 2.0, 7.0], [3.0, -1.0, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    kept = values[mask.bool()]
    mean, variance = sharding.global_mean_var(values, mask)
    assert (float(mean), float(variance)) == pytest.approx((float(kept.mean()), float(kept.var())))
    assert float(sharding.global_mean_var(values, mask, unbiased=False)[1]) == pytest.approx(
        float(kept.var(unbiased=False)))
    assert float(sharding.global_token_mean(values, mask)) == pytest.approx(float(kept.mean()))
    assert (sharding.rank(), sharding.world_size()) == (0, 1)


# ---------------------------------------------------------------- CUDA (NCCL)
@pytest.mark.gpu
def test_on_cuda_processes_train_like_one_and_save_folders_that_load(models, tmp_path):
    processes = min(2, torch.cuda.device_count())
    results = torchrun_standalone(tmp_path, models, sharding_run.VARIANTS, device="cuda", processes=processes)
    check_run(results, tmp_path, models, "cuda", processes)
