"""Policy checkpoints, one layout for every algorithm: the language model's `save_pretrained` folder (a full model,
or a LoRA policy's adapters: peft's adapter_config.json + adapter_model.safetensors), the tokenizer, PPO's value
head in value_head.safetensors, and a state file, training_state.json, that records where training stands (epoch
or step, KL coefficient or beta) and the base (reference) model. `AutoModelForCausalLM.from_pretrained` loads a full
checkpoint as it is; `utils.policy.load_policy` reloads both kinds, and `utils.value_head` the head (also from
checkpoints that trl's value-head class wrote, with the head inside model.safetensors). Checkpoints written before
the state file had its algorithm-neutral name hold ppo_state.json instead: they are read alike.

    save_policy_checkpoint / load_checkpoint_state / find_latest_checkpoint / state_file

The state names the algorithm that trained the policy, lowercase: "ppo", "grpo" or "dpo" (an older checkpoint
without one is PPO's; "DPO" and "GRPO" are read lowercase), and why it was saved ("periodic", "end",
"interrupted" ...). A model with NaN or infinite weights is never saved.
"""
import argparse
import json
import math
import os

from utils.errors import UserError
from utils.files import check_safetensors, folder_written_atomically
from utils.options import checked_by, checked_value, nonnegative_float, nonnegative_int
from utils.run import check_finite_weights
from utils.value_head import VALUE_HEAD_FILE, PolicyWithValueHead, load_value_head

STATE_FILE = "training_state.json"
OLD_STATE_FILE = "ppo_state.json"  # the name every checkpoint was written with before
STATE_FILES = (STATE_FILE, OLD_STATE_FILE)  # what makes a folder a checkpoint (and one of ours to replace)
ADAPTER_CONFIG = "adapter_config.json"
REQUIRED_STATE = ("kl_coef", "base_model")
ALGORITHMS = ("ppo", "grpo", "dpo")


def checkpoint_algorithm(state):
    """The algorithm a checkpoint state names, lowercase; "ppo" for checkpoints older than the name."""
    return str(state.get("algorithm", "ppo")).lower()


def state_file(folder):
    """The state file of the checkpoint `folder`: training_state.json, or an older checkpoint's ppo_state.json;
    None when it has neither."""
    for name in STATE_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def save_policy_checkpoint(policy, tokenizer, out_dir, state, weights=None):
    """Save `policy` (a PPO policy's value head included), its tokenizer and `state` into `out_dir`, atomically.

    Everything is written into a temporary folder beside it first and moved into place when complete, so an
    interrupted save never leaves a half checkpoint. `weights` is the policy's state dict gathered from its shards
    (utils.sharding.full_state_dict, for a policy sharded with FSDP2); without it the policy's own weights are
    saved. One process writes (`utils.run.Run.save` calls it on the main process).
    """
    state = dict(state)
    missing = [key for key in REQUIRED_STATE if key not in state]
    if missing:
        raise ValueError(f"save_policy_checkpoint: state needs {', '.join(missing)}")
    state["algorithm"] = checkpoint_algorithm(state)
    if state["algorithm"] not in ALGORITHMS:
        raise ValueError(f"save_policy_checkpoint: algorithm {state['algorithm']!r} is not one of {ALGORITHMS}")
    check_finite_weights(weights.items() if weights is not None else policy.named_parameters(), out_dir,
                         hint="--learning_rate (or a larger KL coefficient / beta)")
    with folder_written_atomically(out_dir, STATE_FILES) as tmp:
        if weights is not None:
            from utils.sharding import save_pretrained

            save_pretrained(policy, tmp, weights)
        else:
            if isinstance(policy, PolicyWithValueHead):
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in policy.v_head.state_dict().items()},
                          os.path.join(tmp, VALUE_HEAD_FILE))
                policy = policy.pretrained_model
            policy.save_pretrained(tmp)  # safetensors; a peft model writes its adapters only
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, ensure_ascii=False)
    return os.path.normpath(out_dir)


def load_checkpoint_state(path, algorithm=None):
    """The state of a checkpoint folder (`state_file`); UserError (one line) if it is not a complete checkpoint, or,
    with `algorithm`, if another algorithm trained it (continuing PPO from a DPO policy is not resuming)."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such checkpoint folder")
    path_of_state = state_file(path)
    if path_of_state is None:
        raise UserError(f"{path}: not a checkpoint (no {STATE_FILE}; expected a folder saved by one of the training "
                        "scripts: ppo_sentiment_example.py, grpo_sentiment_example.py, train_dpo.py, terminal_main.py)")
    try:
        with open(path_of_state, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path_of_state}: corrupt checkpoint state ({e})") from e
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_STATE):
        raise UserError(f"{path_of_state}: corrupt checkpoint state (needs {', '.join(REQUIRED_STATE)})")
    check_state(state, path_of_state)
    required = ("config.json", "model.safetensors")
    if os.path.isfile(os.path.join(path, ADAPTER_CONFIG)):
        required = (ADAPTER_CONFIG, "adapter_model.safetensors")
    for name in required:
        if not os.path.isfile(os.path.join(path, name)):
            raise UserError(f"{path}: incomplete checkpoint ({name} is missing)")
        if name.endswith(".safetensors"):
            check_safetensors(os.path.join(path, name))
    found = checkpoint_algorithm(state)
    if algorithm and found != algorithm:
        raise UserError(f"{path} is a {found.upper()} checkpoint; --resume here continues {algorithm.upper()} "
                        f"checkpoints only (to start {algorithm.upper()} from that policy, pass it as --model_name)")
    if algorithm == "ppo" and load_value_head(path) is None:  # resuming PPO needs its critic
        raise UserError(f"{path}: incomplete PPO checkpoint (no value head: neither {VALUE_HEAD_FILE} nor trl's "
                        "v_head.* weights in model.safetensors)")
    return state


STATE_NUMBERS = {"epoch": nonnegative_int, "step": nonnegative_int, "ratings": nonnegative_int,
                 "kl_coef": nonnegative_float}  # the values a run resumes from, checked as the options that set them


def check_state(state, state_file):
    """UserError (one line naming the file and the key) unless what a run resumes from is what an option could
    have set: a state file is read from disk like any input (a KL coefficient of -5 would resume with the KL
    penalty turned into a bonus)."""
    def refuse(key, what):
        raise UserError(f'{state_file}: "{key}": {what}; the checkpoint state is corrupt (edited by hand?)')

    for key, type_ in STATE_NUMBERS.items():
        if key in state:
            try:
                checked_value(type_, state[key])
            except argparse.ArgumentTypeError as e:
                refuse(key, e)
    if not isinstance(state["base_model"], str) or not state["base_model"].strip():
        refuse("base_model", f"expected the reference model's name or folder, got {state['base_model']!r}")
    if checkpoint_algorithm(state) not in ALGORITHMS:
        refuse("algorithm", f"expected one of {', '.join(ALGORITHMS)}, got {state['algorithm']!r}")
    if checkpoint_algorithm(state) == "dpo" and "step" not in state:
        refuse("step", "missing (a DPO checkpoint resumes from its step)")
    if state.get("reward_norm") is not None:
        check_reward_norm(state["reward_norm"], refuse)
    judge_ref = state.get("judge_ref") or {}
    if not isinstance(judge_ref, dict) or not all(_finite(v) for v in judge_ref.values()):
        refuse("judge_ref", f"expected the reference's mean judge score by judge, got {judge_ref!r}")


def check_reward_norm(norm, refuse):
    """The reward normalisation a PPO run resumes with (utils/reward_sources.py RewardNormalizer.state)."""
    from utils.reward_sources import REWARD_NORMS

    if not isinstance(norm, dict) or norm.get("mode") not in REWARD_NORMS:
        refuse("reward_norm", f"expected a mode from {', '.join(REWARD_NORMS)} with its mean and std, got {norm!r}")
    if not _finite(norm.get("mean")) or not (_finite(norm.get("std")) and norm["std"] > 0):
        refuse("reward_norm", f"expected a finite mean and a positive finite std, got {norm!r}")


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def list_checkpoints(save_dir):
    """The complete checkpoint folders under `save_dir`, oldest save first."""
    candidates = []
    if os.path.isdir(save_dir):
        for name in os.listdir(save_dir):
            path = os.path.join(save_dir, name)
            found = state_file(path) if os.path.isdir(path) else None
            if found and not name.endswith((".tmp", ".previous")):
                candidates.append((os.path.getmtime(found), path))
    return [path for _, path in sorted(candidates)]


checkpoint_folder = checked_by(load_checkpoint_state, "checkpoint_folder")  # the `type=` of --resume and --checkpoint


def find_latest_checkpoint(save_dir):
    """The most recently saved complete checkpoint folder under `save_dir`; UserError if there is none."""
    candidates = list_checkpoints(save_dir)
    if not candidates:
        raise UserError(f"no checkpoint under {save_dir} (train one with ppo_sentiment_example.py or another "
                        "training script, or pass a checkpoint folder)")
    return candidates[-1]
