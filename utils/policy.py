"""The policy every script trains: any of our GPT-2 folders or checkpoints with a value head, plus its frozen
reference model and tokenizer.

    load_policy     policy GPT-2 with a value head (dropout off) + frozen reference model + tokenizer
    import_trl      trl 0.11.4 without its deprecation noise (its value-head model class)
    unwrap_policy   the policy without its distributed wrapper
"""
import os
import warnings

import torch
import transformers
from accelerate import PartialState
from transformers import AutoTokenizer

from utils.checkpoints import STATE_FILE, load_checkpoint_state
from utils.common import UserError, load_pretrained
from utils.generation import banned_token_ids


def import_trl():
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
    trl = import_trl()
    # trl's from_pretrained asks accelerate for the process state; created there without `cpu`, it makes every
    # process of a CPU `accelerate launch` believe it is alone
    PartialState(cpu=torch.device(device).type == "cpu")
    if ref_model_name_or_path is None:
        ref_model_name_or_path = model_name_or_path
        if os.path.isfile(os.path.join(model_name_or_path, STATE_FILE)):
            ref_model_name_or_path = load_checkpoint_state(model_name_or_path)["base_model"]
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


def unwrap_policy(trainer):
    """The policy without its distributed wrapper (for `generate` and saving)."""
    return trainer.accelerator.unwrap_model(trainer.model)
