"""PPO's critic: a scalar value head on a causal LM's last hidden state, as trl's `AutoModelForCausalLMWithValueHead`
had it (trl 1.x no longer has that class). It works with any causal LM the collection accepts, a peft (LoRA) model
included, and keeps trl's parameter names (`pretrained_model.*`, `v_head.summary.*`).

    PolicyWithValueHead   forward -> (logits, values); generate and save as the language model inside
    language_model        the language model of a policy with or without the head
    load_value_head       the head's weights from a checkpoint folder, in today's layout or in trl's

A checkpoint keeps the value head in `value_head.safetensors` beside the language model's own files, so the model
folder is a plain causal LM that any tool loads. Checkpoints written with trl's class (before December 2026) hold
it inside `model.safetensors` as `v_head.summary.*`: read from there when the file is absent.
"""
import json
import os
from typing import NamedTuple

import torch
from safetensors import safe_open
from transformers.modeling_utils import slice_logits_to_keep

VALUE_HEAD_FILE = "value_head.safetensors"
TRL_PREFIX = "v_head."  # where trl's class put the head inside model.safetensors


class LogitsAndValues(NamedTuple):
    logits: torch.Tensor  # [batch, kept positions, vocabulary]
    values: torch.Tensor  # [batch, kept positions]: the critic's estimate of the return from each position
    past_key_values: object = None  # the language model's cache, when `use_cache` asked for it


class ValueHead(torch.nn.Module):
    """One linear layer from a hidden state to a number (trl's `ValueHead` without its dropout, which PPO here
    always turned off)."""

    def __init__(self, hidden_size):
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)

    def forward(self, hidden_states):
        # a bf16 language model beside a float32 head (or the reverse): the head reads in its own precision. The
        # values are a tensor of their own, not a squeezed view: FSDP2 warns about a sharded model's view outputs
        # (an in-place op on one would skip the backward's all-gather)
        return self.summary(hidden_states.to(self.summary.weight.dtype)).squeeze(-1).clone()


class PolicyWithValueHead(torch.nn.Module):
    """A causal LM (`pretrained_model`) with a value head (`v_head`) on its last hidden state."""

    def __init__(self, lm):
        super().__init__()
        self.pretrained_model = lm
        self.v_head = ValueHead(lm.config.hidden_size)

    @property
    def config(self):
        return self.pretrained_model.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kwargs):
        """Logits and values at the positions `logits_to_keep` names, as transformers reads it (an int: the last that
        many, 0 all; a tensor: those positions); `kwargs` go to the language model."""
        output = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                       logits_to_keep=logits_to_keep, output_hidden_states=True, **kwargs)
        hidden = slice_logits_to_keep(output.hidden_states[-1], logits_to_keep)
        return LogitsAndValues(output.logits, self.v_head(hidden), output.past_key_values)

    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)


def language_model(model):
    """The causal LM inside a `PolicyWithValueHead`, else `model` itself: what sampling and log-probabilities need."""
    return model.pretrained_model if isinstance(model, PolicyWithValueHead) else model


def with_value_head(lm, checkpoint=None):
    """`lm` inside a `PolicyWithValueHead`: the head's weights from `checkpoint` when it holds them (a PPO checkpoint,
    either layout), else fresh (PPO starting from a base model, or from a GRPO or DPO policy, which has none)."""
    policy = PolicyWithValueHead(lm)
    state = load_value_head(checkpoint) if checkpoint and os.path.isdir(checkpoint) else None
    if state is not None:
        policy.v_head.load_state_dict(state)
    return policy.to(next(lm.parameters()).device)


def load_value_head(folder):
    """The value head's state dict (`summary.weight`, `summary.bias`) saved in `folder`, or None if it has none."""
    own = os.path.join(folder, VALUE_HEAD_FILE)
    if os.path.isfile(own):
        return read_tensors(own)
    for weights in trl_weight_files(folder):
        state = read_tensors(weights, prefix=TRL_PREFIX)
        if state:
            return state
    return None


def trl_weight_files(folder):
    """The safetensors files of a full checkpoint: model.safetensors, or the shards its index names."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(folder, shard) for shard in shards]
    single = os.path.join(folder, "model.safetensors")
    return [single] if os.path.isfile(single) else []


def read_tensors(path, prefix=""):
    """The tensors of a safetensors file whose names start with `prefix`, the prefix removed."""
    with safe_open(path, "pt") as f:
        return {name[len(prefix):]: f.get_tensor(name) for name in f.keys() if name.startswith(prefix)}
