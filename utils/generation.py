"""Batched sampling from a GPT-2 that uses uer's BertTokenizer (prompts without [CLS]/[SEP])."""
import random

import torch

from utils.common import UserError, add_mixed_precision_argument, add_report_to_argument, clean_text

PROMPTS = ["刚收到货，感觉", "这部电影很", "说实话，真的很", "这次购物总的来说体验很"]  # the original's four


def read_prompts(path=None):
    """Prompts from a UTF-8 file, one per line, blank lines ignored; the original's four without a file."""
    if path is None:
        return PROMPTS
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"{path}: cannot read the prompts file ({e.strerror})") from e
    prompts = []
    for number, line in enumerate(lines, start=1):
        try:
            prompt = line.decode("utf-8").lstrip("\ufeff").strip()
        except UnicodeDecodeError:
            raise UserError(f"{path}:{number}: not valid UTF-8 text (expected one prompt per line)") from None
        if prompt:
            prompts.append(prompt)
    if not prompts:
        raise UserError(f"{path}: no prompts in this file (expected one prompt per line)")
    return prompts


def encode_prompt(tokenizer, prompt):
    """Token ids of a prompt, without the [CLS] ... [SEP] wrapping that would make the model answer after an end mark."""
    return torch.tensor(tokenizer.encode(prompt, add_special_tokens=False), dtype=torch.long)


def banned_token_ids(tokenizer, stop_at_sep=False):
    """[PAD]/[UNK]/[CLS]/[MASK] are never sampled; [SEP] only when it may end an answer."""
    banned = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id]
    if not stop_at_sep:
        banned.append(tokenizer.sep_token_id)
    return banned


@torch.no_grad()
def generate_responses(model, tokenizer, queries, max_new_tokens, stop_at_sep=False):
    """Sample one answer per query tensor in a single `generate` call (pure sampling, left padding).

    Returns the answers' new token ids, each without padding; an answer is exactly `max_new_tokens` long
    unless `stop_at_sep` lets [SEP] end it early (the [SEP] is then kept, as trl expects an end token).
    Sampling runs in eval mode (dropout off), so the rollouts match the log-probabilities PPO computes.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    width = max(len(q) for q in queries)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(queries), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(queries), width), dtype=torch.long)
    for i, query in enumerate(queries):
        input_ids[i, width - len(query):] = query
        attention_mask[i, width - len(query):] = 1
    output = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), do_sample=True, top_k=0,
        top_p=1.0, max_new_tokens=max_new_tokens, min_new_tokens=1, pad_token_id=pad,
        eos_token_id=tokenizer.sep_token_id, suppress_tokens=banned_token_ids(tokenizer, stop_at_sep))
    model.train(was_training)
    responses = []
    for row in output[:, width:].cpu():
        ended = (row == tokenizer.sep_token_id).nonzero()
        responses.append(row[: ended[0, 0] + 1] if len(ended) else row)
    return responses


def add_rollout_arguments(parser, save_dir, log_name):
    """The options every online-sampling script (PPO, GRPO) shares: answers, prompts, checkpoints, logs, device."""
    parser.add_argument("--max_new_tokens", "--gen_len", type=int, default=16, help="new tokens per answer")
    parser.add_argument("--stop_at_sep", action="store_true", help="let [SEP] end an answer early")
    parser.add_argument("--prompts_file", help="one prompt per line (default: the original's four prompts)")
    parser.add_argument("--save_freq", type=int, help="save a checkpoint every N epochs")
    parser.add_argument("--save_dir", default=save_dir)
    parser.add_argument("--resume", help="continue from this checkpoint folder (its epoch count and KL settings too)")
    parser.add_argument("--log_dir", default="logs")
    parser.add_argument("--log_name", default=log_name)
    add_report_to_argument(parser)
    parser.add_argument("--print_samples", "--num_samples", type=int, default=5,
                        help="random answers printed each epoch")
    parser.add_argument("--reward_batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    add_mixed_precision_argument(parser)


def random_samples(prompts, answers, num_samples):
    """The original's "Random Sample N text(s) of model output:" block: `num_samples` random prompt + answer."""
    picked = random.sample(range(len(answers)), min(num_samples, len(answers)))
    return "\n".join([f"Random Sample {num_samples} text(s) of model output:"]
                     + [f"{i}. {prompts[k]}{answers[k]}" for i, k in enumerate(picked, start=1)])


def decode(tokenizer, token_ids):
    """Readable Chinese: no special tokens, no spaces between characters."""
    return clean_text(tokenizer.decode(token_ids, skip_special_tokens=True))


def distinct_2(texts):
    """Distinct character bigrams / all character bigrams over `texts` (1.0 = no bigram repeats)."""
    bigrams = [text[i:i + 2] for text in texts for i in range(len(text) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0
