"""The sharded training run that tests/test_sharding.py launches with torchrun, and the same training in one
process, unsharded, as its reference: micro causal LMs trained for a few Adam steps with a GRPO-like loss (whitened
rewards as advantages, a KL penalty to the reference model, PPO's value loss with a value head, gradient clipping)
on one fixed global batch, each process on its share of the rows. Answers differ in length, so the processes'
shares hold different numbers of answer tokens.

    torchrun --standalone --nproc_per_node 2 tests/sharding_run.py OUT --model gpt2=DIR --variants gpt2

writes OUT/results.json (rank 0) and, per variant, OUT/<variant>/checkpoint (a save_pretrained folder, the
optimizer's state beside it) and OUT/<variant>/gathered.safetensors (each parameter's `full_tensor()`, gathered
apart from the checkpoint code).
"""
import argparse
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import sharding  # noqa: E402
from utils.answer_logprobs import score_answers  # noqa: E402
from utils.tokens import banned_token_ids  # noqa: E402
from utils.policy import load_policy  # noqa: E402
from utils.value_head import with_value_head  # noqa: E402

VARIANTS = {
    "gpt2": dict(model="gpt2", value_head=True),  # PPO's policy: a full GPT-2 (tied embeddings) with its value head
    "gpt2-bf16": dict(model="gpt2", value_head=True, mixed_precision="bf16"),
    "qwen2-lora": dict(model="qwen2", value_head=True, lora=True),  # the reference: the adapters switched off
    "llama": dict(model="llama"),  # untied embeddings, no value head
}
ROWS, STEPS, LEARNING_RATE, MAX_GRAD_NORM, KL_COEF = 8, 3, 1e-3, 0.5, 0.1


def build(variant, model_dir, device):
    """(policy, reference, tokenizer) of a variant, the same weights in every process."""
    spec = VARIANTS[variant]
    lora = {"r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0, "target_modules": None} if spec.get("lora") else None
    torch.manual_seed(0)  # LoRA's and the value head's initial weights
    policy, ref, tokenizer = load_policy(model_dir, device, lora=lora)
    if spec.get("value_head"):
        policy = with_value_head(policy)
    return policy, ref, tokenizer


def fixed_batch(tokenizer):
    """(queries, responses, rewards) of the global batch: prompts of 2-5 tokens, answers of 1-6, never a token the
    models cannot produce."""
    allowed = sorted(set(range(len(tokenizer))) - set(banned_token_ids(tokenizer)))
    generator = torch.Generator().manual_seed(0)

    def tokens(n):
        return torch.tensor(allowed)[torch.randint(len(allowed), (n,), generator=generator)]

    queries = [tokens(2 + i % 4) for i in range(ROWS)]
    responses = [tokens(1 + (5 * i) % 6) for i in range(ROWS)]
    rewards = torch.randn(ROWS, generator=generator)
    return queries, responses, rewards


def my_rows(rank, world_size):
    """This process's share of the batch's rows: contiguous, as a sampler deals them out."""
    per_process = ROWS // world_size
    return slice(rank * per_process, (rank + 1) * per_process)


def grpo_like_loss(policy, ref, answers, rewards):
    """Whitened rewards (over the whole batch) as each answer's advantage, a squared-log-ratio KL penalty, and with
    a value head PPO's squared value error; the mean over the whole batch's answer tokens. `answers`: (queries,
    responses, pad token id)."""
    logprobs, mask, values, _ = score_answers(policy, *answers)
    with torch.no_grad():
        ref_logprobs = score_answers(ref, *answers).logprobs
    mean, variance = sharding.global_mean_var(rewards)
    advantages = (rewards - mean) / variance.sqrt()
    per_token = -advantages[:, None] * logprobs + KL_COEF * 0.5 * (logprobs - ref_logprobs) ** 2
    if values is not None:
        per_token = per_token + 0.5 * (values - rewards[:, None]) ** 2
    return sharding.global_token_mean(per_token, mask)


def train_steps(policy, ref, optimizer, batch, steps):
    """`steps` Adam steps on `batch` (this process's rows); (whole-batch losses, gradient norms before clipping)."""
    answers, rewards = batch
    losses, norms = [], []
    for _ in range(steps):
        loss = grpo_like_loss(policy, ref, answers, rewards)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], MAX_GRAD_NORM)
        # the whole model's gradient norm: a DTensor where the parameters are sharded
        norms.append(float(norm.full_tensor() if isinstance(norm, DTensor) else norm))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(sharding.all_sum(loss.detach()) / sharding.world_size()))
    return losses, norms


def make_optimizer(policy):
    return torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=LEARNING_RATE)


def batch_for(tokenizer, rows, device):
    queries, responses, rewards = fixed_batch(tokenizer)
    return (queries[rows], responses[rows], tokenizer.pad_token_id), rewards[rows].to(device)


def prompt_for(rank, tokenizer):
    """The prompt process `rank` answers in the generation check, and its answer's length (longer for each rank:
    the processes stop after different numbers of decoding steps)."""
    queries, _, _ = fixed_batch(tokenizer)
    return queries[rank], 2 + 3 * rank


@torch.no_grad()
def greedy_answer(policy, prompt, length, pad_token_id):
    input_ids = prompt[None].to(next(policy.parameters()).device)
    output = policy.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=length, min_new_tokens=length, pad_token_id=pad_token_id)
    return output[0, input_ids.shape[1]:].tolist()


def reference_run(variant, model_dir, device="cpu", world_size=2):
    """The variant trained in this process, unsharded, on the whole batch: losses and norms of STEPS steps, the
    weights after them, the loss of the step after, and the greedy answers each process's prompt gets from the
    policy and from the reference."""
    policy, ref, tokenizer = build(variant, model_dir, device)
    optimizer = make_optimizer(policy)
    batch = batch_for(tokenizer, slice(None), device)
    losses, norms = train_steps(policy, ref, optimizer, batch, STEPS)
    weights = {name: p.detach().cpu().clone() for name, p in policy.named_parameters()}
    answers, ref_answers = ([greedy_answer(model, *prompt_for(r, tokenizer), tokenizer.pad_token_id)
                             for r in range(world_size)] for model in (policy, ref))
    next_loss, _ = train_steps(policy, ref, optimizer, batch, 1)
    return {"losses": losses, "norms": norms, "weights": weights, "answers": answers, "ref_answers": ref_answers,
            "next_loss": next_loss[0]}


def gathered_parameters(policy):
    """Every parameter's whole tensor (`DTensor.full_tensor`, a collective), by name, on the CPU."""
    return {name: p.full_tensor().detach().cpu() for name, p in policy.named_parameters()}


def sharded_run(variant, model_dir, out_dir, device):
    rank, world_size = sharding.rank(), sharding.world_size()
    spec = VARIANTS[variant]
    policy, ref, tokenizer = build(variant, model_dir, device)
    sharding.shard_model(policy, spec.get("mixed_precision"))
    ref = sharding.shard_reference(ref, policy, spec.get("mixed_precision"))
    share_before = sharding.local_share(policy)
    optimizer = make_optimizer(policy)
    batch = batch_for(tokenizer, my_rows(rank, world_size), device)
    losses, norms = train_steps(policy, ref, optimizer, batch, STEPS)
    with sharding.gathered_weights(policy):
        answer = greedy_answer(policy, *prompt_for(rank, tokenizer), tokenizer.pad_token_id)
    with sharding.gathered_weights(ref):
        ref_answer = greedy_answer(ref, *prompt_for(rank, tokenizer), tokenizer.pad_token_id)
    share_after = sharding.local_share(policy)

    folder = os.path.join(out_dir, variant)
    checkpoint = os.path.join(folder, "checkpoint")
    state = sharding.full_state_dict(policy)
    gathered = gathered_parameters(policy)
    if rank == 0:
        os.makedirs(checkpoint, exist_ok=True)
        sharding.save_pretrained(policy, checkpoint, state)
        save_file(gathered, os.path.join(folder, "gathered.safetensors"))
    dist.barrier()
    next_loss, _ = train_steps(policy, ref, optimizer, batch, 1)  # training goes on after the gather and the save
    result = {"losses": losses, "norms": norms, "next_loss": next_loss[0]}
    per_process = [None] * world_size
    dist.all_gather_object(per_process, {"share_before": share_before, "share_after": share_after,
                                         "answer": answer, "ref_answer": ref_answer})
    return dict(result, processes=per_process)


def statistics_check(device):
    """global_mean_var of shares of different sizes (process r: 3 + 2r values, the last one masked out)."""
    rank = sharding.rank()
    values = (torch.arange(3 + 2 * rank, dtype=torch.float32) * (rank + 1) + 10 * rank).to(device)
    mask = torch.ones_like(values)
    mask[-1] = 0
    mean, variance = sharding.global_mean_var(values, mask)
    return {"mean": float(mean), "variance": float(variance), "sum": float(sharding.all_sum(values.sum()))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR, e.g. gpt2=/path/to/micro/gpt2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.model)
    device = sharding.start_processes(args.device)
    results = {"world_size": sharding.world_size(), "device": str(device), "statistics": statistics_check(device)}
    for variant in args.variants.split(","):
        results[variant] = sharded_run(variant, models[VARIANTS[variant]["model"]], args.out_dir, device)
    if sharding.rank() == 0:
        with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()
    # The group outlives destroy_process_group here (its device meshes are still held from outside Python: DTensor
    # specs that no Python object refers to), so the interpreter's exit tears it down, and under load a process was
    # aborted there ("terminate called without an active exception", about 1 run in 12 with 6 running at once)
    # after writing its results. Nothing is left to do: leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
