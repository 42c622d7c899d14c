"""Batched sampling from a causal LM, and the text handling every tokenizer needs alike: uer's GPT-2 with its BERT
WordPiece tokenizer (prompts without [CLS]/[SEP], [SEP] ends a text, spaces between Chinese characters removed
after decoding) as well as byte-level BPE models such as Qwen2 or Llama (their own end and padding tokens, their
chat template for prompts, decoded text kept as it is).

    prepare_tokenizer   end and padding tokens set, chat template kept or dropped (--chat_template)
    encode_prompt       a prompt's token ids (through the chat template when the tokenizer has one)
    end_token_ids / banned_token_ids / generate_responses / decode
"""
import math
import random

import torch
from transformers import BertTokenizer, BertTokenizerFast

from utils.answer_logprobs import pack
from utils.device import add_mixed_precision_argument
from utils.errors import UserError
from utils.options import add_report_to_argument
from utils.texts import clean_text
from utils.checkpoints import checkpoint_folder
from utils.texts import read_lines
from utils.options import add_device_argument, file_name, input_file, nonnegative_int, output_folder, positive_int, seed
from utils.value_head import language_model

CHAT_TEMPLATE_CHOICES = ("auto", "none")
_said = set()


def say_once(message):
    """Print `message` the first time this process asks for it."""
    if message not in _said:
        _said.add(message)
        print(message, flush=True)


def is_wordpiece(tokenizer):
    """A BERT-style WordPiece tokenizer (uer's Chinese GPT-2): its decoding puts spaces between Chinese characters."""
    if isinstance(tokenizer, (BertTokenizer, BertTokenizerFast)):
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordPiece"


def prepare_tokenizer(tokenizer, name, chat_template="auto"):
    """Give `tokenizer` what generation needs, from its own special tokens: an end-of-sequence token (a BERT
    tokenizer's [SEP]) and a padding token (the end-of-sequence token when it has none, as transformers
    recommends). `chat_template` "none" drops the tokenizer's chat template, so prompts are plain text."""
    if chat_template not in CHAT_TEMPLATE_CHOICES:
        raise UserError(f"--chat_template {chat_template}: expected one of {', '.join(CHAT_TEMPLATE_CHOICES)}")
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is None:
            raise UserError(f"{name}: the tokenizer has neither an end-of-sequence nor a separator token, so no "
                            "answer could end (expected a causal language model's tokenizer)")
        tokenizer.eos_token = tokenizer.sep_token  # BertTokenizer has none; [SEP] ends a text
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        say_once(f"note: {name}: the tokenizer has no padding token; its end-of-sequence token "
                 f"{tokenizer.eos_token} pads instead (as transformers recommends)")
    if chat_template == "none":
        tokenizer.chat_template = None
    elif not tokenizer.chat_template and not is_wordpiece(tokenizer):  # uer's GPT-2 never had one
        say_once(f"note: --chat_template auto: {name} defines no chat template; prompts are given as plain text")
    return tokenizer

PROMPTS = ["刚收到货，感觉", "这部电影很", "说实话，真的很", "这次购物总的来说体验很"]  # the original's four


def read_prompts(path=None):
    """Prompts from a UTF-8 file, one per line (utils/texts.py: any line ending), blank lines ignored, each
    stripped of surrounding whitespace; the original's four without a file."""
    if path is None:
        return PROMPTS
    prompts = [line.strip() for line in read_lines(path, "expected one prompt per line") if line.strip()]
    if not prompts:
        raise UserError(f"{path}: no prompts in this file (expected one prompt per line)")
    return prompts


def encode_prompt(tokenizer, prompt):
    """Token ids of a prompt. With a chat template, the prompt is the user's turn and the ids end where the
    assistant's reply begins. Without one, the plain text: a WordPiece tokenizer's [CLS] ... [SEP] wrapping is left
    out (the model would answer after an end mark), other tokenizers keep their start token but no end token."""
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
    elif is_wordpiece(tokenizer):
        ids = tokenizer.encode(prompt, add_special_tokens=False)
    else:
        ids = tokenizer.encode(prompt)
        if ids and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]
    return torch.tensor(ids, dtype=torch.long)


def end_of_turn_id(tokenizer):
    """The special token the chat template closes an assistant's reply with (Qwen's <|im_end|>, Llama 3's
    <|eot_id|>), found by rendering a short conversation; None without a template or such a token."""
    reply = "好的"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "你好"},
                                              {"role": "assistant", "content": reply}], tokenize=False)
    after_reply = rendered[rendered.rfind(reply) + len(reply):]
    special = special_token_ids(tokenizer)
    return next((i for i in tokenizer.encode(after_reply, add_special_tokens=False) if i in special), None)


def end_token_ids(tokenizer):
    """The tokens that end an answer: the end-of-sequence token ([SEP] for uer's GPT-2, also when the tokenizer
    has not been through `prepare_tokenizer`), and with a chat template the token that closes the assistant's turn."""
    ends = [tokenizer.sep_token_id if tokenizer.eos_token is None else tokenizer.eos_token_id]
    if tokenizer.chat_template:
        turn_end = end_of_turn_id(tokenizer)
        if turn_end is not None and turn_end not in ends:
            ends.append(turn_end)
    return ends


def special_token_ids(tokenizer):
    """Every special token of the tokenizer, including added ones marked special (a chat template's)."""
    added = [i for i, token in tokenizer.added_tokens_decoder.items() if token.special]
    return set(tokenizer.all_special_ids) | set(added)


def banned_token_ids(tokenizer, stop_at_sep=False):
    """The special tokens are never sampled ([PAD]/[UNK]/[CLS]/[MASK] for uer's GPT-2), except the end tokens
    when they may end an answer (`stop_at_sep`)."""
    banned = special_token_ids(tokenizer)
    ends = set(end_token_ids(tokenizer))
    return sorted(banned - ends if stop_at_sep else banned | ends)


def check_room(model, longest, max_new_tokens):
    """UserError unless the longest prompt plus `max_new_tokens` fits in the model's positions (checked before
    training, so that a too long --max_new_tokens is one line, not an index error deep inside generate)."""
    config = getattr(model, "config", None)
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if positions and longest + max_new_tokens > positions:
        raise UserError(f"--max_new_tokens {max_new_tokens}: with the longest prompt ({longest} tokens) that is more "
                        f"than the model's {positions} positions; use at most {positions - longest}")


@torch.no_grad()
def generate_responses(model, tokenizer, queries, max_new_tokens, stop_at_sep=False, with_logprobs=False):
    """Sample one answer per query tensor, all of them in one batch (pure sampling, left padding, a KV cache).

    Returns the answers' new token ids, each without padding; an answer is exactly `max_new_tokens` long
    unless `stop_at_sep` lets an end token ([SEP], eos, end of turn) end it early (that token is then kept, as trl
    expects an end token). `with_logprobs`: also each answer's token log-probabilities under the distribution it
    was drawn from (a list of float tensors, each as long as its answer), i.e. the policy's `answer_logprobs` of
    the answers up to float rounding (and, at the first token, the end tokens it may not draw there).
    Sampling runs in eval mode (dropout off), so the rollouts match the log-probabilities PPO computes. The loop is
    `generate(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=1, suppress_tokens=...)` written out, with the
    positions and masks `utils.answer_logprobs.pack` gives the same batch later; only the draw differs (`sample`).
    """
    lm = language_model(model)
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    check_room(lm, max(len(q) for q in queries), max_new_tokens)
    pad = tokenizer.pad_token_id
    ends = torch.tensor(end_token_ids(tokenizer), device=device)
    never = torch.tensor(banned_token_ids(tokenizer, stop_at_sep), device=device)
    prompts = pack(queries, [query[:0] for query in queries], pad).to(device)
    input_ids, attention_mask, position_ids = prompts.input_ids, prompts.attention_mask, prompts.position_ids
    cache, columns, logprobs = None, [], []
    finished = torch.zeros(len(queries), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        output = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = output.past_key_values
        logits = output.logits[:, -1].float()
        logits[:, never if step else torch.cat([never, ends])] = -math.inf  # at least one token before an end
        token = sample(logits.softmax(-1)).masked_fill(finished, pad)
        columns.append(token)
        if with_logprobs:
            logprobs.append(logits.log_softmax(-1).gather(1, token[:, None]).squeeze(1))
        finished |= torch.isin(token, ends)
        if stop_at_sep and finished.all():  # (without it no end token is ever drawn: no host sync per token)
            break
        input_ids, position_ids = token[:, None], position_ids[:, -1:] + 1
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(queries), 1)], dim=1)
    lm.train(was_training)
    responses = []
    for row in torch.stack(columns, dim=1).cpu():
        ended = torch.isin(row, ends.cpu()).nonzero()
        responses.append(row[: ended[0, 0] + 1] if len(ended) else row)
    if not with_logprobs:
        return responses
    return responses, [row[:len(response)] for row, response in zip(torch.stack(logprobs, dim=1).cpu(), responses)]


def sample(probs):
    """One index per row of `probs` [rows, vocabulary], drawn with probability probs / row sum: the first index whose
    cumulative probability (float64) reaches a uniform draw in (0, row sum], which never lands on a zero. The same
    distribution as `torch.multinomial(probs, 1)`, at a fraction of its cost on a CPU (it draws an exponential
    variate for every vocabulary entry: 40% of the tiny GPT-2's sampling time there)."""
    cdf = probs.double().cumsum(-1)
    draw = (1 - torch.rand(len(cdf), 1, dtype=cdf.dtype, device=cdf.device)) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw).squeeze(1)


def sample_answers(model, tokenizer, prompt, k, max_new_tokens):
    """K sampled answers to one prompt (without the prompt), in one batched call, as readable text."""
    responses = generate_responses(model, tokenizer, [encode_prompt(tokenizer, prompt)] * k, max_new_tokens)
    return [decode(tokenizer, response) for response in responses]


def add_rollout_arguments(parser, save_dir, log_name):
    """The options every online-sampling script (PPO, GRPO) shares: answers, prompts, checkpoints, logs, device."""
    parser.add_argument("--max_new_tokens", "--gen_len", type=positive_int, default=16, help="new tokens per answer")
    parser.add_argument("--stop_at_sep", action="store_true",
                        help="let the end token ([SEP] for uer's GPT-2; eos or the end of the assistant's turn for "
                             "others) end an answer early")
    parser.add_argument("--prompts_file", type=input_file,
                        help="one prompt per line (default: the original's four prompts)")
    parser.add_argument("--save_freq", type=positive_int, help="save a checkpoint every N epochs")
    parser.add_argument("--save_dir", type=output_folder, default=save_dir)
    parser.add_argument("--resume", type=checkpoint_folder,
                        help="continue from this checkpoint folder (its epoch count and KL settings too)")
    parser.add_argument("--log_dir", type=output_folder, default="logs")
    parser.add_argument("--log_name", type=file_name, default=log_name, help="logs: <log_dir>/<log_name>.jsonl and .png")
    add_report_to_argument(parser)
    parser.add_argument("--print_samples", "--num_samples", type=nonnegative_int, default=5,
                        help="random answers printed each epoch")
    parser.add_argument("--reward_batch_size", type=positive_int, default=64)
    parser.add_argument("--seed", type=seed, default=0)
    add_device_argument(parser)
    add_mixed_precision_argument(parser)


def random_samples(prompts, answers, num_samples):
    """The original's "Random Sample N text(s) of model output:" block of `num_samples` random prompt + answer,
    after a line break, to follow the epoch's line; "" for none."""
    picked = random.sample(range(len(answers)), min(num_samples, len(answers)))
    if not picked:
        return ""
    return "\n".join(["", f"Random Sample {len(picked)} text(s) of model output:"]
                     + [f"{i}. {prompts[k]}{answers[k]}" for i, k in enumerate(picked, start=1)])


def decode(tokenizer, token_ids):
    """The answer's text without special tokens; a WordPiece tokenizer's spaces between Chinese characters removed."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    return clean_text(text) if is_wordpiece(tokenizer) else text


def distinct_2(texts):
    """Distinct character bigrams / all character bigrams over `texts` (1.0 = no bigram repeats)."""
    bigrams = [text[i:i + 2] for text in texts for i in range(len(text) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0
