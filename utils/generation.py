"""Batched sampling from a causal LM (any tokenizer: utils/tokens.py handles the text).

    generate_responses   one answer per prompt, all in one batch, sampled from the model's own distribution
    sample_answers       K answers to one prompt, as text
    check_room           a prompt plus the answer fits in the model's positions
"""
import math
from typing import NamedTuple

import torch

from utils.answer_logprobs import pack
from utils.errors import UserError
from utils.tokens import banned_token_ids, decode, encode_prompt, end_token_ids
from utils.value_head import LogitsAndValues, language_model


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
    expects an end token). `with_logprobs`: a `Sampled`, also with each answer's token log-probabilities under the
    model's own distribution (`utils.answer_logprobs.score_answers` of the answers, up to float rounding: sampling
    computed them anyway) and, for a policy with PPO's value head, the values at each answer token's state.
    Sampling runs in eval mode (dropout off), so the rollouts match the log-probabilities the updates compute. The
    loop is `generate(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=1, suppress_tokens=...)` written out, with
    the positions and masks `utils.answer_logprobs.pack` gives the same batch; only the draw differs (`sample`).
    """
    lm = language_model(model)
    forward = model if with_logprobs else lm  # through PPO's value head only where its values are kept
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    check_room(lm, max(len(q) for q in queries), max_new_tokens)
    pad = tokenizer.pad_token_id
    ends = torch.tensor(end_token_ids(tokenizer), device=device)
    never = torch.tensor(banned_token_ids(tokenizer, stop_at_sep), device=device)
    prompts = pack(queries, [query[:0] for query in queries], pad).to(device)
    input_ids, attention_mask, position_ids = prompts.input_ids, prompts.attention_mask, prompts.position_ids
    cache, columns, logprobs, values = None, [], [], []
    finished = torch.zeros(len(queries), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        output = forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = output.past_key_values
        logits = output.logits[:, -1].float()
        own = logits.log_softmax(-1) if with_logprobs else None  # before the bans below: the model's distribution
        logits[:, never if step else torch.cat([never, ends])] = -math.inf  # at least one token before an end
        token = sample(logits.softmax(-1)).masked_fill(finished, pad)
        columns.append(token)
        if with_logprobs:
            logprobs.append(own.gather(1, token[:, None]).squeeze(1))
            if isinstance(output, LogitsAndValues):
                values.append(output.values[:, -1].float())
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
    return Sampled(responses, per_answer(logprobs, responses), per_answer(values, responses) if values else None)


class Sampled(NamedTuple):
    responses: list  # token-id tensors
    logprobs: list  # float tensors, each as long as its answer
    values: list = None  # the same, PPO's value estimates (a policy with a value head only)


def per_answer(columns, responses):
    """Per-step columns [batch] -> one CPU tensor per answer, as long as the answer."""
    return [row[:len(response)] for row, response in zip(torch.stack(columns, dim=1).cpu(), responses)]


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
