"""trl 0.11.4's step-wise `PPOTrainer`, as the PPO scripts use it.

    make_ppo_trainer     a `PPOTrainer` without trl's deprecation noise, with a fused Adam
    ppo_step             one PPO update from (queries, responses, float rewards); any batch size; NaN-safe
"""
import math
import warnings

import torch
from accelerate import DistributedType, PartialState

from utils.policy import AdaptersOff, import_trl


def make_ppo_trainer(policy, ref_model, tokenizer, **ppo_config_kwargs):
    """A `PPOTrainer` configured by `PPOConfig(**ppo_config_kwargs)` (no dataset: we feed batches ourselves)."""
    trl = import_trl()
    lora = isinstance(ref_model, AdaptersOff)  # trl runs a peft policy with its adapters off as the reference
    if PartialState().distributed_type == DistributedType.MULTI_CPU and not lora:
        # accelerate wraps every prepared model in DDP on several CPU processes, and DDP refuses a model with
        # nothing to train: the reference's value head stays trainable (it is never used nor optimised)
        ref_model.v_head.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(PPOTrainer|PPOConfig|deprecated)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"No dataset is provided")
        config = trl.PPOConfig(**ppo_config_kwargs)
        trainer = trl.PPOTrainer(config=config, model=policy, ref_model=None if lora else ref_model,
                                 tokenizer=tokenizer, optimizer=fused_adam(policy, config.learning_rate))
    if lora:
        trainer.ref_model = ref_model  # for our own use (reference samples); trl uses the policy's adapters-off ctx
    return trainer


def fused_adam(model, learning_rate):
    """The Adam that trl would make (same hyperparameters), as one fused kernel over all parameters instead of
    a Python loop over them on the CPU (trl's default there) or a few multi-tensor calls on CUDA."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate, fused=True)


def ppo_step(trainer, queries, responses, rewards):
    """One PPO update; returns trl's stats dict, or None when the update was skipped.

    `rewards` are plain floats, one per (query, response). A batch smaller than `config.batch_size`
    (say the person skipped some answers) is trained as it is: trl insists on exactly `batch_size`
    samples, so the sizes are narrowed for this call only. A NaN or infinite reward skips the update
    with a warning (on every process, so that distributed workers stay in step).
    """
    rewards = [float(r) for r in rewards]
    if not (len(queries) == len(responses) == len(rewards)):
        raise ValueError(f"ppo_step: {len(queries)} queries, {len(responses)} responses, {len(rewards)} rewards")
    bad = sum(not math.isfinite(r) for r in rewards)
    too_small = sum(len(r) for r in responses) < 2  # trl whitens advantages over the response tokens
    skip = torch.tensor([float(bad > 0 or too_small)], device=trainer.accelerator.device)
    if trainer.accelerator.num_processes > 1:
        skip = trainer.accelerator.reduce(skip, reduction="sum")
    if skip.item() > 0:
        reason = f"{bad} of {len(rewards)} rewards are NaN or infinite" if bad else \
            "too few answer tokens to train on"
        warnings.warn(f"PPO update skipped: {reason}; the model is not updated with this batch", stacklevel=2)
        return None

    config = trainer.config
    saved = config.batch_size, config.mini_batch_size, config.backward_batch_size
    n = len(queries)
    mini = min(config.mini_batch_size, n)
    config.batch_size, config.mini_batch_size = n, mini
    config.backward_batch_size = min(config.backward_batch_size, n)
    try:
        scores = [torch.tensor(r) for r in rewards]
        return trainer.step(list(queries), list(responses), scores)
    finally:
        config.batch_size, config.mini_batch_size, config.backward_batch_size = saved
