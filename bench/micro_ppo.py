"""The micro PPO problem on which trl 0.11.4's `PPOTrainer.step` was recorded (bench/record_trl_ppo.py writes
tests/fixtures/trl_0_11_4_ppo_step.json) and against which tests/test_ppo.py checks our `ppo_update`: a micro GPT-2
with a small BERT-style vocabulary, PPO's value head, and ragged batches, all drawn from fixed seeds, so that both
sides build the same starting weights, bit for bit, without a file.

It needs only torch and transformers (and utils.value_head): the recorder imports it inside trl 0.11.4's venv.

    micro_tokenizer   WordPiece over VOCAB: one token per Chinese character, [PAD] [UNK] [CLS] [SEP] [MASK]
    micro_policy      the GPT-2 with its value head, every parameter drawn in name order from one seed
    micro_batch       8 prompts of 1 to 7 characters, answers of 1 to 6 tokens and their scores, from a seed
    weights_digest    sha256 of a model's parameters (the starting weights' checksum in the fixture)
    encode_floats / decode_floats   float32 tensors as base64 text in the fixture, and back
"""
import base64
import hashlib
import os

import torch
from transformers import BertTokenizer, GPT2Config, GPT2LMHeadModel

from utils.value_head import PolicyWithValueHead

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                       "trl_0_11_4_ppo_step.json")
PROMPTS = ["这部电影很", "好", "太差了，不要买", "还行吧", "推荐", "质量一般", "物流很快，", "不"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + sorted(set("".join(PROMPTS) + "的了是我也都没有看真喜欢失望便宜贵"))
BATCH_SIZE = 8
STEPS = 2  # the second with the KL coefficient the first one adapted, from a policy that moved off its reference
# trl's PPOConfig defaults, given explicitly to both sides; the learning rate is large, so that ratios get clipped
PPO_SETTINGS = dict(learning_rate=1e-2, init_kl_coef=0.2, target=6.0, horizon=10000, gamma=1.0, lam=0.95,
                    cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)
# one mini-batch (its order cannot matter), and the original's shape: mini-batches of half the batch, 4 PPO epochs
RUNS = {"one mini-batch": dict(PPO_SETTINGS, mini_batch_size=8, ppo_epochs=1),
        "mini-batch 4, 4 PPO epochs": dict(PPO_SETTINGS, mini_batch_size=4, ppo_epochs=4)}
# our statistics (ppo_update's names) and the names trl 0.11.4's step gives them
TRL_STATS = dict(policy_loss="ppo/loss/policy", value_loss="ppo/loss/value", kl="objective/kl",
                 approx_kl="ppo/policy/approxkl", policy_kl="ppo/policy/policykl", clip_frac="ppo/policy/clipfrac",
                 value_clip_frac="ppo/val/clipfrac", advantages_mean="ppo/policy/advantages_mean",
                 entropy="ppo/policy/entropy", kl_coef="objective/kl_coef")


def micro_tokenizer():
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=False)
    tokenizer.eos_token = tokenizer.sep_token  # as utils.tokens.prepare_tokenizer sets it
    return tokenizer


def micro_policy(seed=0):
    """A 2-layer, 16-wide GPT-2 (dropout off) inside PPO's value head. Every parameter, in name order, is drawn
    from one generator: LayerNorm gains 1 + 0.1 z, everything else 0.1 z (z standard normal)."""
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=16, n_embd=16, n_layer=2, n_head=2, n_inner=32,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=VOCAB.index("[PAD]"),
                        bos_token_id=VOCAB.index("[CLS]"), eos_token_id=VOCAB.index("[SEP]"))
    policy = PolicyWithValueHead(GPT2LMHeadModel(config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(policy.named_parameters()):
            noise = 0.1 * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1 + noise if ".ln_" in name and name.endswith(".weight") else noise)
    return policy


def micro_batch(tokenizer, seed):
    """(queries, responses, scores): the prompts' token ids, random answers of 1 to 6 tokens (never a special
    token) and standard-normal scores, drawn from `seed`."""
    queries = [torch.tensor(tokenizer.encode(prompt, add_special_tokens=False)) for prompt in PROMPTS]
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (len(PROMPTS),), generator=generator).tolist()
    responses = [torch.randint(len(SPECIAL), len(VOCAB), (length,), generator=generator) for length in lengths]
    return queries, responses, torch.randn(len(PROMPTS), generator=generator).tolist()


def named_weights(model):
    """{name: float32 copy} of `model`'s parameters, in name order."""
    return {name: parameter.detach().float().cpu().clone() for name, parameter in sorted(model.named_parameters())}


def weights_digest(model):
    digest = hashlib.sha256()
    for name, weight in named_weights(model).items():
        digest.update(name.encode())
        digest.update(weight.contiguous().numpy().tobytes())
    return digest.hexdigest()


def encode_floats(tensor):
    """A float32 tensor's values as base64 text (little-endian), for a JSON fixture."""
    return base64.b64encode(tensor.detach().float().cpu().contiguous().numpy().astype("<f4").tobytes()).decode()


def decode_floats(text, shape):
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.float32).view(shape)
