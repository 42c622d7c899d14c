"""What sharding (utils/sharding.py, PyTorch FSDP2) costs and saves, measured in one torchrun run on a random-weight
GPT-2 (uer's Chinese GPT-2 architecture, so no download is needed): the choices docs/scaling.md explains.

1. Rollouts: one batched `generate` of --batch_size answers of --max_new_tokens tokens per process, sampled
   - sharded: straight from the sharded model, which all-gathers every block at every decoding step (and needs
     transformers' synced_gpus, so that every process takes the same number of steps);
   - gathered: inside `gathered_weights`, the whole model gathered once per rollout;
   - replica: the full state dict gathered once into a plain copy of the model kept beside the sharded one (what
     a separate rollout engine such as vLLM gets);
   - unsharded: a plain model, no communication at all (DDP's case, the floor).
2. One training step (forward, backward, Adam) on --batch_size sequences per process: FSDP2 next to DDP, and one
   process alone on the same per-process batch.
3. Memory per process: bytes of weights, gradients and Adam moments each process holds, sharded and replicated.
"gather only" times entering and leaving `gathered_weights` without decoding: what the gathered rollout pays on
top of its decoding.

    torchrun --standalone --nproc_per_node 2 bench/bench_sharding.py                 # GPT-2 base shape, 102M
    torchrun --standalone --nproc_per_node 2 bench/bench_sharding.py --shape tiny --rounds 1
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import transformers
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import GPT2Config, GPT2LMHeadModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from utils import sharding  # noqa: E402
from utils.errors import run_main  # noqa: E402

SHAPES = {  # uer/gpt2-chinese-cluecorpussmall's vocabulary, and its width and depth ("base") or the --tiny GPT-2's
    "base": dict(n_embd=768, n_layer=12, n_head=12),
    "tiny": dict(n_embd=192, n_layer=1, n_head=4),
    "micro": dict(n_embd=32, n_layer=1, n_head=2),
}


def random_gpt2(shape, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=21128, n_positions=256, bos_token_id=101, eos_token_id=102, pad_token_id=0,
                        **SHAPES[shape])
    return GPT2LMHeadModel(config).eval()


def median_seconds(run, rounds):
    times = []
    for _ in range(rounds):
        dist.barrier()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rollout(model, prompts, max_new_tokens, **kwargs):
    return model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=0,
                          max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=0, **kwargs)


def copy_into_replica(sharded, replica):
    state = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    replica.load_state_dict(state)


def bench_rollouts(args, plain, sharded, prompts):
    replica = copy.deepcopy(plain)
    strategies = {
        "sharded": lambda: rollout(sharded, prompts, args.max_new_tokens, synced_gpus=True),
        "gathered": lambda: gathered_rollout(sharded, prompts, args.max_new_tokens),
        "gather only": lambda: gathered_rollout(sharded, prompts, 0),  # its all-gather and free, no decoding
        "replica": lambda: (copy_into_replica(sharded, replica), rollout(replica, prompts, args.max_new_tokens)),
        "unsharded": lambda: rollout(plain, prompts, args.max_new_tokens),
    }
    seconds = {}
    with torch.no_grad():
        for name, run in strategies.items():
            run()  # warm-up: lazy initialisation, allocator
            seconds[name] = median_seconds(run, args.rounds)
    return seconds


def gathered_rollout(model, prompts, max_new_tokens):
    with sharding.gathered_weights(model):
        return rollout(model, prompts, max_new_tokens) if max_new_tokens else None


def train_step(model, optimizer, batch):
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)


def bench_steps(args, shape, batch):
    """Seconds per training step: FSDP2, DDP (both on every process), one process alone (rank 0, the others wait)."""
    seconds = {}
    fsdp = sharding.shard_model(random_gpt2(shape).train())
    ddp = torch.nn.parallel.DistributedDataParallel(random_gpt2(shape).train())
    for name, model in (("FSDP2", fsdp), ("DDP", ddp)):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        train_step(model, optimizer, batch)
        seconds[name] = median_seconds(lambda m=model, o=optimizer: train_step(m, o, batch), args.rounds)
    memory = held_bytes(fsdp)
    if sharding.rank() == 0:
        alone = random_gpt2(shape).train()
        optimizer = torch.optim.Adam(alone.parameters(), lr=1e-4)
        train_step(alone, optimizer, batch)
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            train_step(alone, optimizer, batch)
            times.append(time.perf_counter() - start)
        seconds["one process"] = statistics.median(times)
    dist.barrier()
    return seconds, memory


def held_bytes(model):
    """Bytes of weights this process holds (its shards), and what their gradients and Adam's two moments take."""
    weights = sum((p.to_local() if hasattr(p, "to_local") else p).nbytes for p in model.parameters())
    return {"weights": weights, "gradients": weights, "Adam moments": 2 * weights}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base")
    parser.add_argument("--batch_size", type=int, default=8, help="sequences per process")
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions (the median is shown)")
    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()  # GPT2Config's loss_type note, once per model
    device = sharding.start_processes()
    n = sharding.world_size()
    torch.manual_seed(1 + sharding.rank())
    prompts = torch.randint(200, 21000, (args.batch_size, args.prompt_len), device=device)
    plain = random_gpt2(args.shape).to(device)
    sharded = sharding.shard_model(random_gpt2(args.shape).to(device))
    params = sum(p.numel() for p in plain.parameters())
    say = print if sharding.rank() == 0 else (lambda *a, **k: None)
    say(f"GPT-2 '{args.shape}' ({params / 1e6:.1f}M parameters), {n} processes on {device.type}, "
        f"{torch.get_num_threads()} thread(s) each, load average {os.getloadavg()[0]:.1f} at start")
    say(f"rollout: {args.batch_size} prompts of {args.prompt_len} tokens per process, {args.max_new_tokens} new "
        f"tokens; median of {args.rounds}")
    seconds = bench_rollouts(args, plain, sharded, prompts)
    gathered_mb = params * 4 / 2**20
    traffic = {"sharded": args.max_new_tokens * gathered_mb, "gathered": gathered_mb, "gather only": gathered_mb,
               "replica": gathered_mb, "unsharded": 0}
    for name, s in seconds.items():
        say(f"  {name:11s} {s:7.3f} s per rollout, {s / args.max_new_tokens * 1000:7.1f} ms per token, "
            f"~{traffic[name]:7.0f} MB of float32 weights all-gathered per process")
    say(f"ratio sharded / gathered: {seconds['sharded'] / seconds['gathered']:.1f}; gathered / unsharded: "
        f"{seconds['gathered'] / seconds['unsharded']:.2f}")
    batch = torch.randint(200, 21000, (args.batch_size, args.prompt_len + args.max_new_tokens), device=device)
    step_seconds, memory = bench_steps(args, args.shape, batch)
    say(f"training step on {args.batch_size} sequences of {batch.shape[1]} tokens per process: "
        + ", ".join(f"{name} {s:.3f} s" for name, s in step_seconds.items()))
    replicated = {key: value * n for key, value in memory.items()}
    say("held per process, float32 (FSDP2 / DDP): " + ", ".join(
        f"{key} {memory[key] / 2**20:.0f} / {replicated[key] / 2**20:.0f} MB" for key in memory))
    say(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    run_main(main)
