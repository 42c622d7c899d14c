"""Sharded training with PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`): one code path for CPUs (gloo) and
GPUs (NCCL), for the processes `torchrun` starts on one machine or several.

Each process keeps 1/N of every weight, of its gradient and of Adam's moments (ZeRO-3). A transformer block's
weights are all-gathered just before the block runs and freed after it, in the forward and again in the backward;
gradients are reduce-scattered, averaged over the processes as DDP averages them. docs/scaling.md has the memory
arithmetic and the measurements behind the choices made here.

    start_processes / rank / world_size   torchrun's process group, this process's device
    decoder_layers / shard_model / shard_reference / local_share  fully_shard per transformer block, then the root
    gathered_weights      the whole model gathered once for a rollout's `generate`, sharded again after
    all_sum / global_mean / global_mean_var / global_token_mean   statistics (and a loss) of the whole batch, not of
                          one process's share (gradient clipping: torch's clip_grad_norm_ takes the whole model's norm
                          of sharded parameters)
    full_state_dict / save_pretrained   save_pretrained folders, written once by rank 0 (a run resumes from one as
                          from any checkpoint: every process loads it, then shards it)

Run a script that uses it with `torchrun --standalone --nproc_per_node N script.py` (one machine), or on each of M
machines `torchrun --nnodes M --node_rank I --nproc_per_node N --master_addr HOST --master_port PORT script.py`.
"""
import contextlib
import os

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from utils.policy import AdaptersOff
from utils.value_head import VALUE_HEAD_FILE, PolicyWithValueHead

HEAD_PREFIX, LM_PREFIX = "v_head.", "pretrained_model."  # PolicyWithValueHead's parameter names


# ---------------------------------------------------------------- processes
def start_processes(device=None):
    """Join the process group that torchrun's environment describes (env:// rendezvous) and return this process's
    device: cuda:LOCAL_RANK with NCCL when CUDA is there (and `device` does not say "cpu"), else the CPU with gloo.
    Started without torchrun, the group has this one process, so the same sharded code runs alone."""
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend, device_id=device if cuda else None)
        else:  # no rendezvous to make: an in-memory store, no port opened
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return device


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


# ---------------------------------------------------------------- sharding
def decoder_layers(model):
    """The transformer blocks of a causal LM, also inside a peft model or PPO's `PolicyWithValueHead`: the modules
    of the classes its transformers model keeps whole (`_no_split_modules`, what accelerate's FSDP and
    `device_map` split at), e.g. GPT-2's `transformer.h[i]`, Qwen2's and Llama's `model.layers[i]`."""
    names = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            names.update(module._no_split_modules or ())
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no transformer blocks found to shard (no transformers model "
                         "inside naming them in _no_split_modules)")
    return layers


def mixed_precision_policy(mixed_precision):
    """FSDP2's policy for `--mixed_precision`: "bf16" computes with bfloat16 copies of float32 weights (the
    shards, the optimizer's, stay float32) and reduces gradients in float32; "no"/None computes in float32."""
    if mixed_precision in (None, "no"):
        return MixedPrecisionPolicy()
    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    raise ValueError(f"mixed precision {mixed_precision!r}: sharded training computes in bf16 or float32 ('no')")


def shard_model(model, mixed_precision=None, frozen=False):
    """Shard `model` in place over all processes and return it: each transformer block is one FSDP unit, and the
    root unit holds the rest (embeddings, final norm, LM head, PPO's value head, which thus stays with its policy).

    A trained model's root stays gathered from its forward to its backward (fully_shard's default for a root: it is
    needed again first thing in the backward). A `frozen` model (eval mode, no gradients: the reference) has no
    backward to free it, so its root is freed after each forward like the blocks."""
    policy = mixed_precision_policy(mixed_precision)
    # the mesh of the model's own device: fully_shard's default is CUDA whenever a GPU is visible
    mesh = init_device_mesh(next(model.parameters()).device.type, (world_size(),))
    if frozen:
        model.eval().requires_grad_(False)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True if frozen else None)
    if hasattr(model, "generate"):  # a wrapper's generate (peft's, the value head's) bypasses the root's forward
        register_fsdp_forward_method(model, "generate")
    _initialize_root(model)
    return model


@torch.no_grad()
def _initialize_root(model):
    """FSDP2 sets its units up in the root's first forward: one token through the root, so that the sampling loop
    may call the language model inside a wrapper (PPO's value head, peft's model) directly afterwards."""
    token = torch.zeros((1, 1), dtype=torch.long, device=next(model.parameters()).device)
    model(input_ids=token, attention_mask=torch.ones_like(token))
    model.reshard()


def shard_reference(ref_model, policy, mixed_precision=None):
    """The reference model for the sharded `policy`: a full model is sharded like the policy (it is as large) but
    frozen; a LoRA policy's reference (`AdaptersOff`) stays the policy itself with its adapters off, called
    through the policy's root."""
    if isinstance(ref_model, AdaptersOff):  # FSDP2 gathers the root unit (embeddings, LM head) in the root's forward
        return AdaptersOff(_language_model(policy), root=policy)
    return shard_model(ref_model, mixed_precision, frozen=True)


def local_share(model, trainable=True):
    """(elements this process holds, elements of the whole model) of `model`'s trainable parameters (all of them
    with `trainable=False`)."""
    params = [p for p in model.parameters() if p.requires_grad or not trainable]
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    return local, sum(p.numel() for p in params)


def _units(model):
    return [module for module in model.modules() if isinstance(module, FSDPModule)]


@contextlib.contextmanager
def gathered_weights(model):
    """Inside, every weight of the sharded `model` is whole on every process: gathered once on entry, freed on exit.

    For a rollout's `generate`: a sharded model would all-gather each block at every decoding step, and every
    process would have to take the same number of steps (transformers' `synced_gpus`). Inside, decoding needs no
    collective, so a process whose answers all ended stops. It costs the whole model's weights (in the compute
    precision) while inside, as DDP does all the time. A LoRA reference gathers its policy. Without sharding it
    does nothing."""
    target = model.root if isinstance(model, AdaptersOff) else model
    units = _units(target) if isinstance(target, torch.nn.Module) else []
    if not units:
        yield model
        return
    root = units[0]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield model
    finally:
        trained = any(p.requires_grad for p in root.parameters())
        for unit in units:  # back to what shard_model set
            unit.set_reshard_after_forward(unit is not root or not trained, recurse=False)
            unit.reshard()


# ---------------------------------------------------------------- statistics of the whole batch
@torch.no_grad()
def all_sum(tensor):
    """`tensor` summed over all processes (a copy; the tensor itself with one process)."""
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


@torch.no_grad()
def global_mean(values, mask=None):
    """The mean of `values` (where `mask` is true) over every process's share of the batch."""
    mask = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    total, count = all_sum(torch.stack([(values * mask).sum(), mask.sum()]))
    return total / count


@torch.no_grad()
def global_mean_var(values, mask=None, unbiased=True):
    """(mean, variance) of `values` (where `mask` is true) over every process's share of the batch, in two passes
    as trl's `masked_mean`/`masked_var` compute them on one process (Bessel's correction with `unbiased`)."""
    mask = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    mean = global_mean(values, mask)
    squares, count = all_sum(torch.stack([((values - mean) ** 2 * mask).sum(), mask.sum()]))
    variance = squares / count
    return mean, variance * count / (count - 1) if unbiased else variance


def global_token_mean(values, mask):
    """A loss: the mean of `values` over the whole batch's tokens where `mask` is true, written so that its gradient,
    averaged over the processes (as FSDP2 and DDP average gradients), is that of the mean on one process. (Each
    process's own masked mean would weigh a process with fewer answer tokens more.) Its value on one process is
    its share: `all_sum(loss) / world_size()` is the whole batch's mean."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / all_sum(mask.sum()).clamp(min=1) * world_size()  # no answer tokens: 0


# ---------------------------------------------------------------- checkpoints
def _language_model(model):
    return model.pretrained_model if isinstance(model, PolicyWithValueHead) else model


def _is_peft(model):
    return hasattr(_language_model(model), "peft_config")


def full_state_dict(model):
    """The whole model's weights, gathered into rank 0's CPU memory (a collective: every process calls it; the
    others get {}). A peft model gives its trainable weights only (adapters, value head): all its checkpoint holds."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=_is_peft(model))
    return get_model_state_dict(model, options=options)


def save_pretrained(model, out_dir, state_dict):
    """Write into `out_dir` what `model.save_pretrained(out_dir)` writes in one process, from `state_dict`
    (`full_state_dict(model)`): the language model's weights (a peft model's adapters) and config, a PPO policy's
    value head in value_head.safetensors. Called by rank 0 alone."""
    if isinstance(model, PolicyWithValueHead):
        head = {k[len(HEAD_PREFIX):]: v for k, v in state_dict.items() if k.startswith(HEAD_PREFIX)}
        save_file({k: v.contiguous() for k, v in head.items()}, os.path.join(out_dir, VALUE_HEAD_FILE))
        state_dict = {k[len(LM_PREFIX):]: v for k, v in state_dict.items() if k.startswith(LM_PREFIX)}
    lm = _language_model(model)
    tied = getattr(lm, "all_tied_weights_keys", None) or {}  # one process saves a tied weight once: so do we
    lm.save_pretrained(out_dir, state_dict={k: v for k, v in state_dict.items() if k not in tied})
