"""The policy every script trains: any causal LM (uer's GPT-2, a Qwen2- or Llama-style model, our checkpoints),
plus its frozen reference model and tokenizer; LoRA adapters through peft when asked. (PPO puts its value head on
the policy itself: utils.value_head.)

    load_policy        policy (dropout off) + frozen reference model + tokenizer
    load_causal_lm     a causal LM for generation only (labelling page, AI feedback) + tokenizer
    add_model_arguments / lora_options   the --chat_template and --lora_* options every policy script shares
    AdaptersOff        a LoRA policy's reference: the same weights with the adapters switched off

`python -m utils.policy merge CHECKPOINT OUT` merges a LoRA checkpoint's adapters into a full model folder.
"""
import contextlib
import os
import warnings

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from utils.checkpoints import (ADAPTER_CONFIG, STATE_FILES, checkpoint_folder, load_checkpoint_state, state_file,
                               save_policy_checkpoint)
from utils.errors import UserError, run_main
from utils.models import load_pretrained, quietly
from utils.options import ArgumentParser, dropout, nonnegative_int, positive_float, replaceable_folder
from utils.tokens import CHAT_TEMPLATE_CHOICES, banned_token_ids, prepare_tokenizer
from utils.value_head import load_value_head, with_value_head

# LoRA's default target modules where peft's own defaults (query and value only) are not the usual choice
LORA_TARGETS = {model_type: ["q_proj", "k_proj", "v_proj", "o_proj"]
                for model_type in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2")}


def disable_dropout(model):
    """Dropout 0 everywhere: the updates run the policy in train mode, and rollouts sampled with dropout on would
    not match the log-probabilities the updates compute."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def forbid_tokens(model, token_ids):
    """Make `token_ids` impossible in the model's own output distribution (a hook on the LM head).

    `generate` never samples [PAD]/[UNK]/[CLS]/[MASK] (nor [SEP] with fixed-length answers), but the updates score
    answers with the full softmax: the policy could then move probability onto tokens it never samples and
    the KL estimate would go negative. Masking the logits makes sampling and scoring use one distribution.
    """
    banned = torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    def mask_logits(module, inputs, logits):
        # in place: the head's output is fresh and no backward needs it; finite, so that entropy stays defined
        return logits.index_fill_(-1, banned.to(logits.device), torch.finfo(logits.dtype).min / 2)

    return model.get_output_embeddings().register_forward_hook(mask_logits)


def add_model_arguments(parser, lora=True):
    """--chat_template for every script that generates; --lora_* for the ones that train a policy."""
    parser.add_argument("--chat_template", choices=CHAT_TEMPLATE_CHOICES, default="auto",
                        help="auto: a prompt becomes the user's turn in the tokenizer's chat template when it has "
                             "one (the answer is the assistant's reply); none: always the plain prompt")
    if lora:
        parser.add_argument("--lora_r", type=nonnegative_int, default=0,
                            help="train LoRA adapters of this rank instead of every weight (0: off); the reference "
                                 "model is then the same weights with the adapters off")
        parser.add_argument("--lora_alpha", type=positive_float, default=16.0, help="LoRA scaling numerator (alpha / r)")
        parser.add_argument("--lora_dropout", type=dropout, default=0.0,
                            help="dropout on the adapters' input during updates (0: rollouts and updates see the "
                                 "same model, as everywhere here)")
        parser.add_argument("--lora_target_modules",
                            help="comma-separated module names to adapt (default: q_proj,k_proj,v_proj,o_proj for "
                                 "Qwen2/Llama, c_attn for GPT-2, peft's defaults otherwise)")


def lora_options(args):
    """The LoRA settings of parsed `args` for `load_policy` (None when --lora_r is 0 or absent)."""
    r = getattr(args, "lora_r", 0)
    if not r:
        return None
    targets = args.lora_target_modules
    return {"r": r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "target_modules": [t.strip() for t in targets.split(",") if t.strip()] if targets else None}


def check_causal_lm(name_or_path):
    """UserError (one line) unless `name_or_path` holds a model with a causal-LM head (not an encoder, not a
    classifier): AutoModelForCausalLM would otherwise put a fresh, untrained LM head on it. A LoRA checkpoint
    stands for its base model."""
    if is_lora_checkpoint(name_or_path):
        name_or_path = load_checkpoint_state(name_or_path)["base_model"]
    config = load_pretrained(AutoConfig, name_or_path)
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = config.architectures or []
    if architectures and not any(a in causal or a.endswith("LMHeadModel") for a in architectures):
        raise UserError(f"{name_or_path}: a {', '.join(architectures)} has no causal language-model head "
                        "(expected a GPT-2, Qwen2, Llama or other *ForCausalLM model to generate with)")
    if not architectures and config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(f"{name_or_path}: model type '{config.model_type}' is not a causal language model")


def is_lora_checkpoint(path):
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


@contextlib.contextmanager
def peft_on_transformers_5():
    """peft 0.21 asks every model it wraps for `is_gradient_checkpointing`, which transformers 5 deprecates with a
    FutureWarning that each LoRA run would print: only that one is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _with_lora(base, base_name, options):
    """`base` with fresh LoRA adapters (peft): target modules from `options`, else our per-architecture defaults,
    else peft's."""
    from peft import LoraConfig, get_peft_model

    targets = options["target_modules"] or LORA_TARGETS.get(base.config.model_type)
    conv1d = any(isinstance(m, transformers.pytorch_utils.Conv1D) for m in base.modules())  # GPT-2's (in, out) layout
    config = LoraConfig(r=options["r"], lora_alpha=options["lora_alpha"], lora_dropout=options["lora_dropout"],
                        target_modules=targets, task_type="CAUSAL_LM", fan_in_fan_out=conv1d)
    try:
        with peft_on_transformers_5():
            return get_peft_model(base, config)
    except ValueError as e:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in base.named_modules()
                         if isinstance(m, (torch.nn.Linear, transformers.pytorch_utils.Conv1D))} - {"lm_head"})
        raise UserError(f"--lora_r: peft cannot find the modules to adapt in {base_name} (model type "
                        f"'{base.config.model_type}'{', asked for ' + ','.join(targets) if targets else ''}); name "
                        f"them with --lora_target_modules (its linear layers: {','.join(linear)})") from e


def _load_lora_policy(path, base_name, options):
    """`base_name` with LoRA adapters: those of the checkpoint `path`, or fresh ones from `options`. Only they are
    trainable."""
    from peft import PeftModel

    check_causal_lm(base_name)
    base = disable_dropout(load_pretrained(AutoModelForCausalLM, base_name))  # the adapters keep --lora_dropout
    if path is not None:
        with peft_on_transformers_5():
            return PeftModel.from_pretrained(base, path, is_trainable=True)
    return _with_lora(base, base_name, options)


class AdaptersOff:
    """The reference model of a LoRA policy: calls into the policy (a peft model) itself with its adapters switched
    off, so the two share one copy of the base weights. Deliberately not a torch module: moving, freezing or
    switching this object to eval mode must not reach the policy.

    `root` is what is called, the peft model itself unless a wrapper around it must be: a sharded policy's FSDP
    root (utils.sharding.shard_reference), which alone gathers the weights outside the transformer blocks."""

    def __init__(self, peft_model, root=None):
        self.model = peft_model
        self.root = peft_model if root is None else root

    def __call__(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.root(*args, **kwargs)

    forward = __call__

    def generate(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.root.generate(*args, **kwargs)

    @property
    def config(self):
        return self.model.config

    @property
    def training(self):
        return False

    def parameters(self):
        return self.model.parameters()

    def to(self, *args, **kwargs):
        return self

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def requires_grad_(self, requires_grad=True):
        return self


def load_tokenizer(name_or_path, chat_template="auto"):
    return prepare_tokenizer(load_pretrained(AutoTokenizer, name_or_path), name_or_path, chat_template)


def load_policy(model_name_or_path, device, ref_model_name_or_path=None, stop_at_sep=False, chat_template="auto",
                lora=None):
    """(policy, ref_model, tokenizer).

    The policy is `model_name_or_path` (a hub name, a causal-LM folder or one of our checkpoints), a causal LM. Both
    models can never produce the tokens `generate_responses` never samples (`stop_at_sep` as there). The reference
    model is `ref_model_name_or_path`, else the base model a checkpoint was trained from (so resuming keeps the KL
    anchored to the original model), else the same model; it is frozen. With `lora` (see `lora_options`) or a
    LoRA checkpoint, the policy is a peft model whose adapters alone train, and the reference is the base model
    with the adapters off (`AdaptersOff`).
    """
    state = None
    if state_file(model_name_or_path):
        state = load_checkpoint_state(model_name_or_path)
    base_name = state["base_model"] if state else model_name_or_path
    tokenizer = load_tokenizer(model_name_or_path, chat_template)
    if lora or is_lora_checkpoint(model_name_or_path):
        if ref_model_name_or_path not in (None, base_name):
            raise UserError(f"--ref_model_name {ref_model_name_or_path}: with LoRA the reference is the base model "
                            f"{base_name} with its adapters off; leave --ref_model_name out")
        checkpoint = model_name_or_path if is_lora_checkpoint(model_name_or_path) else None
        if checkpoint is None and state is not None:
            raise UserError(f"--lora_r: {model_name_or_path} is a full checkpoint; LoRA starts from a base model "
                            "(or resumes a LoRA checkpoint)")
        policy = _load_lora_policy(checkpoint, base_name, lora).to(device)
        ref_model = AdaptersOff(policy)
    else:
        ref_model_name_or_path = ref_model_name_or_path or base_name
        for name in dict.fromkeys((model_name_or_path, ref_model_name_or_path)):
            check_causal_lm(name)
        # quietly: a checkpoint written with trl's value-head class also holds the value head's weights, which the
        # bare LM reports as unexpected
        policy = disable_dropout(quietly(load_pretrained, AutoModelForCausalLM, model_name_or_path)).to(device)
        ref_model = disable_dropout(quietly(load_pretrained, AutoModelForCausalLM, ref_model_name_or_path))
        ref_model.to(device).eval().requires_grad_(False)
        forbid_tokens(ref_model, banned_token_ids(tokenizer, stop_at_sep))
    forbid_tokens(policy, banned_token_ids(tokenizer, stop_at_sep))
    return policy, ref_model, tokenizer


def load_causal_lm(name_or_path, device, chat_template="auto"):
    """(model, tokenizer) for generation only: a causal-LM folder or hub name, or one of our checkpoints (a
    LoRA checkpoint's adapters merged into its base model); eval mode."""
    tokenizer = load_tokenizer(name_or_path, chat_template)
    if is_lora_checkpoint(name_or_path):
        model = merged_lora_lm(name_or_path)
    else:
        check_causal_lm(name_or_path)
        model = quietly(load_pretrained, AutoModelForCausalLM, name_or_path)
    return model.to(device).eval(), tokenizer


def merged_lora_lm(checkpoint):
    """The causal LM of a LoRA checkpoint with its adapters merged into the base weights."""
    from peft import PeftModel

    base_name = load_checkpoint_state(checkpoint)["base_model"]
    check_causal_lm(base_name)
    base = load_pretrained(AutoModelForCausalLM, base_name)
    with peft_on_transformers_5():
        return PeftModel.from_pretrained(base, checkpoint).merge_and_unload()


def merge_lora_checkpoint(checkpoint, out_dir):
    """Write `checkpoint`'s LoRA adapters merged into its base model as a full checkpoint in `out_dir`: a
    `save_pretrained` folder (a PPO checkpoint's value head included) that any script, or AutoModelForCausalLM,
    loads."""
    if not is_lora_checkpoint(checkpoint):
        raise UserError(f"{checkpoint}: not a LoRA checkpoint (no {ADAPTER_CONFIG})")
    state = load_checkpoint_state(checkpoint)
    policy = merged_lora_lm(checkpoint)
    if load_value_head(checkpoint) is not None:
        policy = with_value_head(policy, checkpoint)
    tokenizer = load_pretrained(AutoTokenizer, checkpoint)
    return save_policy_checkpoint(policy, tokenizer, out_dir, dict(state, merged_from=os.path.abspath(checkpoint)))


def main(argv=None):
    parser = ArgumentParser(prog="python -m utils.policy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="merge a LoRA checkpoint's adapters into a full model folder")
    merge.add_argument("checkpoint", type=checkpoint_folder, help="a LoRA checkpoint folder (trained with --lora_r)")
    merge.add_argument("out_dir", type=replaceable_folder(STATE_FILES),
                       help="where the merged model goes (a full checkpoint folder)")
    args = parser.parse_args(argv)
    if os.path.abspath(args.out_dir) == os.path.abspath(args.checkpoint):
        raise UserError(f"{args.out_dir}: the merged model needs a folder other than the checkpoint's")
    out = merge_lora_checkpoint(args.checkpoint, args.out_dir)
    print(f"merged {args.checkpoint} into {out}")


if __name__ == "__main__":
    run_main(main)
