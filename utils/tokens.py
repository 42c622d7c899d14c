"""The text side of every model here, tokenizer by tokenizer: uer's GPT-2 with its BERT WordPiece tokenizer (prompts
without [CLS]/[SEP], [SEP] ends a text, spaces between Chinese characters removed after decoding) as well as
byte-level BPE models such as Qwen2 or Llama (their own end and padding tokens, their chat template for prompts,
decoded text kept as it is).

    prepare_tokenizer   end and padding tokens set, chat template kept or dropped (--chat_template)
    read_prompts        prompts from a file, one per line (the original's four without one)
    encode_prompt       a prompt's token ids (through the chat template when the tokenizer has one)
    decode              an answer's ids as readable text
    end_token_ids / banned_token_ids   the tokens that end an answer; those never sampled
"""
import torch
from transformers import BertTokenizer, BertTokenizerFast

from utils.errors import UserError
from utils.texts import clean_text, read_lines

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


def decode(tokenizer, token_ids):
    """The answer's text without special tokens; a WordPiece tokenizer's spaces between Chinese characters removed."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    return clean_text(text) if is_wordpiece(tokenizer) else text


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
