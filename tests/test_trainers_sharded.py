"""Every trainer with --fsdp on 2 CPU processes (torchrun, gloo) against one process on the same global batch:
each trainer's own update (tests/trainer_steps.py) a few steps, and whole runs of the scripts under torchrun, one
machine and two nodes on loopback."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, cpu_only
from test_sharding import free_port
from utils.checkpoints import load_checkpoint_state
from utils.policy import load_policy
from utils.reward_model import load_reward_model

TRAINERS = ("ppo", "grpo", "dpo", "reward_model")
TIMEOUT = 300
WEIGHT_FILES = {"ppo": ("model.safetensors", "value_head.safetensors"), "grpo": ("model.safetensors",),
                "dpo": ("model.safetensors",),
                "reward_model": ("model.safetensors", "reward_head.safetensors")}


def env(micro_dir=None, device="cpu"):
    extra = {"RLHF_TINY_DIR": micro_dir} if micro_dir else {}
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO, **extra)
    return cpu_only(env) if device == "cpu" else env


def run(command, device="cpu", timeout=TIMEOUT):
    result = subprocess.run(command, cwd=REPO, env=env(device=device), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def trainer_steps(out_dir, micro_paths, torchrun=False, device="cpu", processes=2):
    os.makedirs(out_dir)
    script = ["tests/trainer_steps.py", str(out_dir), "--gpt2", micro_paths["gpt2"],
              "--encoder", micro_paths["encoder"], "--device", device]
    if torchrun:
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
             *script, "--fsdp"], device)
    else:
        run([sys.executable, *script], device)
    processes = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("steps-"):
            with open(os.path.join(out_dir, name), encoding="utf-8") as f:
                processes.append(json.load(f))
    return processes


@pytest.fixture(scope="module")
def steps(micro_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer_steps")
    return (trainer_steps(root / "one", micro_paths), trainer_steps(root / "sharded", micro_paths, torchrun=True),
            root)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_two_sharded_processes_take_the_steps_of_one_and_hold_half_each(trainer, steps, micro_paths):
    (one,), sharded, root = steps
    assert len(sharded) == 2 and all(process["world_size"] == 2 for process in sharded)
    expected = one[trainer]["losses"]
    # each process's loss is its share of the batch's: their mean is the whole batch's (a sharding bug shows here)
    got = [sum(process[trainer]["losses"][step] for process in sharded) / 2 for step in range(len(expected))]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(round(loss, 6) for loss in expected)) == len(expected)  # the steps moved the model
    for process in sharded:
        local, total = process[trainer]["share"]
        assert total == one[trainer]["share"][1] and 0.4 < local / total < 0.6
    # what rank 0 saved from the gathered shards is what one process trained: the two differ by float rounding,
    # which Adam's step (about the learning rate whatever the gradient's size) lifts to far less than the steps moved
    alone, gathered = (load_file(root / run / trainer / "model.safetensors") for run in ("one", "sharded"))
    base = micro_paths["encoder" if trainer == "reward_model" else "gpt2"]
    start = load_file(os.path.join(base, "model.safetensors"))
    assert alone.keys() == gathered.keys() and set(alone) <= set(start)
    moved = torch.cat([(alone[key] - start[key]).flatten() for key in alone]).norm()
    apart = torch.cat([(alone[key] - gathered[key]).flatten() for key in alone]).norm()
    assert moved > 0.1 and apart < 1e-3 * moved, (moved, apart)
    for name in WEIGHT_FILES[trainer][1:]:  # the heads
        alone, gathered = load_file(root / "one" / trainer / name), load_file(root / "sharded" / trainer / name)
        assert all(torch.allclose(alone[key], gathered[key], atol=1e-3) for key in alone)


@pytest.mark.gpu
def test_on_cuda_sharded_processes_take_the_steps_of_one(micro_paths, tmp_path):
    """The same steps on CUDA with NCCL, one GPU per process (two where there are two), against one process on
    one GPU: the losses agree (TF32 matmuls: a looser tolerance)."""
    processes = min(2, torch.cuda.device_count())
    (one,) = trainer_steps(tmp_path / "one", micro_paths, device="cuda")
    sharded = trainer_steps(tmp_path / "sharded", micro_paths, torchrun=True, device="cuda", processes=processes)
    for trainer in TRAINERS:
        expected = one[trainer]["losses"]
        got = [sum(p[trainer]["losses"][step] for p in sharded) / len(sharded) for step in range(len(expected))]
        assert got == pytest.approx(expected, rel=1e-2, abs=1e-3), trainer


@pytest.mark.parametrize("trainer", TRAINERS)
def test_what_two_sharded_processes_saved_loads_in_one(trainer, steps):
    folder = str(steps[2] / "sharded" / trainer)
    if trainer == "reward_model":
        model, _ = load_reward_model(folder)
        assert model.head.weight.shape[0] == 1
        return
    assert load_checkpoint_state(folder, trainer)["algorithm"] == trainer
    policy, _, tokenizer = load_policy(folder, "cpu")
    ids = tokenizer("这部电影很", return_tensors="pt").input_ids
    assert torch.isfinite(policy(ids).logits).all()


@pytest.mark.parametrize("script", ["ppo_sentiment_example", "grpo_sentiment_example", "train_dpo",
                                    "train_reward_model"])
def test_fsdp_with_fp16_is_one_line_before_anything_is_loaded_or_written(script, tmp_path, monkeypatch, capsys):
    import importlib

    import utils.tiny
    from utils.errors import run_main

    monkeypatch.setenv("RLHF_TINY_DIR", str(tmp_path / "no_models_yet"))
    monkeypatch.setattr(utils.tiny, "build_tiny", lambda *a, **k: pytest.fail("built the tiny models first"))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: module.main(["--tiny", "--fsdp", "--mixed_precision", "fp16", "--log_dir", "logs",
                                      "--save_dir", "ck"]))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: --fsdp computes in bf16 or float32") and "Traceback" not in "".join(lines)
    assert os.listdir(tmp_path) == []  # not even the tiny models' folder


# ---------------------------------------------------------------- the scripts, whole runs
SMALL = ["--tiny", "--total_samples", "16", "--batch_size", "8", "--mini_batch_size", "4", "--max_new_tokens", "6",
         "--print_samples", "0", "--fsdp"]


@pytest.mark.slow
def test_ppo_runs_sharded_on_two_nodes_on_loopback_saves_one_checkpoint_and_resumes_from_it(micro_dir, tmp_path):
    port = free_port()
    command = ["ppo_sentiment_example.py", *SMALL, "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path)]
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node",
         "1", "--master_addr", "127.0.0.1", "--master_port", str(port), *command],
        cwd=REPO, env=env(micro_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    try:
        outputs = [agent.communicate(timeout=TIMEOUT) for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
    for node, (agent, (_, err)) in enumerate(zip(agents, outputs)):
        assert agent.returncode == 0, f"node {node}: {err[-3000:]}"
    assert "x 2 process(es), the policy sharded (FSDP2)" in outputs[0][0]
    assert os.listdir(tmp_path / "ck") == ["model_2_" + os.listdir(tmp_path / "ck")[0].split("_")[2]]
    checkpoint = str(tmp_path / "ck" / os.listdir(tmp_path / "ck")[0])
    assert load_checkpoint_state(checkpoint, "ppo")["epoch"] == 2
    result = subprocess.run([sys.executable, "inference_ppo_gpt.py", "--checkpoint", checkpoint,
                             "--prompt", "这部电影很", "--max_new_tokens", "4"], cwd=REPO, env=env(micro_dir), capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0 and "这部电影很" in result.stdout, result.stderr[-2000:]

    # resumed sharded on one machine's 2 processes, as a run resumes from any checkpoint: loaded, then sharded
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              *command, "--total_samples", "24", "--resume", checkpoint], cwd=REPO, env=env(micro_dir),
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [third] = [name for name in os.listdir(tmp_path / "ck") if name.startswith("model_3_")]
    state = load_checkpoint_state(str(tmp_path / "ck" / third), "ppo")
    assert state["epoch"] == 3 and state["kl_coef"] != load_checkpoint_state(checkpoint, "ppo")["kl_coef"]
