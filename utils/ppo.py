"""The PPO pieces every PPO script shares (trl 0.11.4's step-wise `PPOTrainer`).

    load_policy          policy GPT-2 with a value head (dropout off) + frozen reference model + tokenizer
    make_ppo_trainer     a `PPOTrainer` without trl's deprecation noise, with a fused Adam
    ppo_step             one PPO update from (queries, responses, float rewards); any batch size; NaN-safe
    save_ppo_checkpoint  an atomic `save_pretrained` folder (value head included) + tokenizer + ppo_state.json
    load_ppo_checkpoint_state / find_latest_checkpoint / distinct_2

A checkpoint folder is what `AutoModelForCausalLMWithValueHead.from_pretrained` reloads; its
`ppo_state.json` records where training stands (epoch, KL coefficient) and the base (reference) model.
"""
import json
import math
import os
import warnings

import torch
import transformers
from accelerate import DistributedType, PartialState
from transformers import AutoTokenizer

from utils.common import UserError, folder_written_atomically, load_pretrained
from utils.generation import banned_token_ids

STATE_FILE = "ppo_state.json"
REQUIRED_STATE = ("kl_coef", "base_model")


def _import_trl():
    """trl 0.11.4 warns at import and construction time that this API is deprecated: silence only that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"trl(\.|$)")
        import trl
    return trl


def disable_dropout(model):
    """Dropout 0 everywhere: trl leaves the policy in train mode after `step`, and rollouts sampled with
    dropout on would not match the log-probabilities PPO computes without it."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def forbid_tokens(model, token_ids):
    """Make `token_ids` impossible in the model's own output distribution (a hook on the LM head).

    `generate` never samples [PAD]/[UNK]/[CLS]/[MASK] (nor [SEP] with fixed-length answers), but trl scores
    answers with the full softmax: the policy could then move probability onto tokens it never samples and
    the KL estimate would go negative. Masking the logits makes sampling and scoring use one distribution.
    """
    banned = torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    def mask_logits(module, inputs, logits):
        logits = logits.clone()
        logits[..., banned.to(logits.device)] = torch.finfo(logits.dtype).min / 2  # finite: entropy stays defined
        return logits

    return model.pretrained_model.get_output_embeddings().register_forward_hook(mask_logits)


def load_policy(model_name_or_path, device, ref_model_name_or_path=None, stop_at_sep=False):
    """(policy, ref_model, tokenizer).

    The policy is `model_name_or_path` (a hub name, a plain GPT-2 folder or a PPO checkpoint) with a value
    head. Both models can never produce the tokens `generate_responses` never samples (`stop_at_sep` as
    there). The reference model is `ref_model_name_or_path`, else the base model a PPO checkpoint was trained
    from (so resuming keeps the KL anchored to the original model), else the same model; it is frozen.
    """
    trl = _import_trl()
    # trl's from_pretrained asks accelerate for the process state; created there without `cpu`, it makes every
    # process of a CPU `accelerate launch` believe it is alone
    PartialState(cpu=torch.device(device).type == "cpu")
    if ref_model_name_or_path is None:
        ref_model_name_or_path = model_name_or_path
        if os.path.isfile(os.path.join(model_name_or_path, STATE_FILE)):
            ref_model_name_or_path = load_ppo_checkpoint_state(model_name_or_path)["base_model"]
    tokenizer = load_pretrained(AutoTokenizer, model_name_or_path)
    if tokenizer.sep_token is None:
        raise UserError(f"{model_name_or_path}: the tokenizer has no [SEP] token (expected uer's BertTokenizer)")
    tokenizer.eos_token = tokenizer.sep_token  # BertTokenizer has none; trl trims padding with it
    # a PPO checkpoint also holds the value head's weights, which the bare GPT-2 inside reports as unused
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        policy = load_pretrained(trl.AutoModelForCausalLMWithValueHead, model_name_or_path)
        ref_model = load_pretrained(trl.AutoModelForCausalLMWithValueHead, ref_model_name_or_path)
    finally:
        transformers.logging.set_verbosity(verbosity)
    disable_dropout(policy).to(device)
    disable_dropout(ref_model).to(device).eval()
    for model in (policy, ref_model):
        forbid_tokens(model, banned_token_ids(tokenizer, stop_at_sep))
    ref_model.requires_grad_(False)
    return policy, ref_model, tokenizer


def make_ppo_trainer(policy, ref_model, tokenizer, **ppo_config_kwargs):
    """A `PPOTrainer` configured by `PPOConfig(**ppo_config_kwargs)` (no dataset: we feed batches ourselves)."""
    trl = _import_trl()
    if PartialState().distributed_type == DistributedType.MULTI_CPU:
        # accelerate wraps every prepared model in DDP on several CPU processes, and DDP refuses a model with
        # nothing to train: the reference's value head stays trainable (it is never used nor optimised)
        ref_model.v_head.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(PPOTrainer|PPOConfig|deprecated)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"No dataset is provided")
        config = trl.PPOConfig(**ppo_config_kwargs)
        return trl.PPOTrainer(config=config, model=policy, ref_model=ref_model, tokenizer=tokenizer,
                              optimizer=fused_adam(policy, config.learning_rate))


def fused_adam(model, learning_rate):
    """The Adam that trl would make (same hyperparameters), as one fused kernel over all parameters instead of
    a Python loop over them on the CPU (trl's default there) or a few multi-tensor calls on CUDA."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate, fused=True)


def unwrap_policy(trainer):
    """The policy without its distributed wrapper (for `generate` and saving)."""
    return trainer.accelerator.unwrap_model(trainer.model)


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


# ---------------------------------------------------------------- checkpoints
def save_ppo_checkpoint(trainer_or_policy, tokenizer, out_dir, state):
    """Save policy (value head included), tokenizer and `state` into `out_dir`, atomically.

    Everything is written into `out_dir.tmp` first and moved into place when complete, so an interrupted save
    never leaves a half checkpoint. With a trainer, `kl_coef` defaults to its current
    KL coefficient, and in a distributed run only the main process writes.
    """
    state = dict(state)
    policy = trainer_or_policy
    if hasattr(trainer_or_policy, "accelerator"):
        trainer = trainer_or_policy
        policy = unwrap_policy(trainer)
        state.setdefault("kl_coef", float(trainer.kl_ctl.value))
        trainer.accelerator.wait_for_everyone()
        if not trainer.accelerator.is_main_process:
            return out_dir
    missing = [key for key in REQUIRED_STATE if key not in state]
    if missing:
        raise ValueError(f"save_ppo_checkpoint: state needs {', '.join(missing)}")
    with folder_written_atomically(out_dir) as tmp:
        policy.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, ensure_ascii=False)
    return os.path.normpath(out_dir)


def load_ppo_checkpoint_state(path):
    """The `ppo_state.json` of a checkpoint folder; UserError (one line) if it is not a complete checkpoint."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such PPO checkpoint folder")
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_file):
        raise UserError(f"{path}: not a PPO checkpoint (no {STATE_FILE}; expected a folder saved by "
                        "ppo_sentiment_example.py or terminal_main.py)")
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{state_file}: corrupt checkpoint state ({e})") from e
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_STATE):
        raise UserError(f"{state_file}: corrupt checkpoint state (needs {', '.join(REQUIRED_STATE)})")
    for name in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(path, name)):
            raise UserError(f"{path}: incomplete PPO checkpoint ({name} is missing)")
    return state


def find_latest_checkpoint(save_dir):
    """The most recently saved complete checkpoint folder under `save_dir`; UserError if there is none."""
    candidates = []
    if os.path.isdir(save_dir):
        for name in os.listdir(save_dir):
            path = os.path.join(save_dir, name)
            if os.path.isfile(os.path.join(path, STATE_FILE)) and not name.endswith((".tmp", ".previous")):
                candidates.append((os.path.getmtime(os.path.join(path, STATE_FILE)), path))
    if not candidates:
        raise UserError(f"no PPO checkpoint under {save_dir} (train one with ppo_sentiment_example.py, "
                        "or pass a checkpoint folder)")
    return max(candidates)[1]


# ---------------------------------------------------------------- metrics
def distinct_2(texts):
    """Distinct character bigrams / all character bigrams over `texts` (1.0 = no bigram repeats)."""
    bigrams = [text[i:i + 2] for text in texts for i in range(len(text) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0
