"""Per-token log-probabilities of answers given their prompts (what PPO, GRPO and DPO score).

The batch is laid out as `generate_responses` samples it: prompts padded on the left, answers on the right,
positions counted from each prompt's first real token. The model sees exactly what it saw when sampling, so
the log-probabilities are those of the sampling distribution.

    pack              ragged (queries, responses) -> one padded `Packed` batch (select rows with `select`)
    score_answers     log-probs of a packed batch's answers in one forward pass, and with PPO's value head the values
    answer_logprobs   (log-probs, answer mask) of ragged answers, each distinct prompt run once for all its answers
"""
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from utils.value_head import LogitsAndValues, language_model


class Packed(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    answer_mask: torch.Tensor  # [batch, answer length]: True on each answer's tokens

    def to(self, device):
        return Packed(*(t.to(device) for t in self))


def select(packed, rows):
    """The rows `rows` (an index tensor) of a packed batch."""
    return Packed(*(t[rows] for t in packed))


def pack(queries, responses, pad_token_id):
    """A `Packed` batch in which every answer starts at column `max query length` (no Python loop per sample)."""
    prompts = pad_sequence(list(queries), batch_first=True, padding_value=pad_token_id, padding_side="left")
    answers = pad_sequence(list(responses), batch_first=True, padding_value=pad_token_id)
    if answers.dim() < 2:  # no answer token in the whole batch
        answers = answers.view(len(responses), 0)
    input_ids = torch.cat([prompts, answers.to(prompts.dtype)], dim=1)
    query_lengths = torch.tensor([len(q) for q in queries])
    answer_lengths = torch.tensor([len(r) for r in responses])
    width = prompts.shape[1]
    columns = torch.arange(input_ids.shape[1])
    attention_mask = ((columns >= width - query_lengths[:, None]) &
                      (columns < width + answer_lengths[:, None])).long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    answer_mask = attention_mask[:, width:].bool()
    return Packed(input_ids, attention_mask, position_ids, answer_mask)


def score_answers(model, packed, with_entropy=False):
    """(log-probs, values, entropy) of a packed batch's answer tokens, each [batch, answer length], 0 off the answers.

    `model` is any causal LM, or a `utils.value_head.PolicyWithValueHead`, which alone gives `values` (else None).
    `entropy` (of the policy at each answer position, without gradient) only when asked.
    """
    mask = packed.answer_mask
    width, length = packed.input_ids.shape[1], mask.shape[1]
    # the logits (and the value) at column t belong to the state before the token at column t + 1: the answers (the
    # last `length` columns) are predicted at the `length` columns before them, and the language-model head and its
    # softmax run there alone; no cache (nothing is generated)
    predicting = torch.arange(width - length - 1, width - 1, device=packed.input_ids.device)
    output = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                   position_ids=packed.position_ids, logits_to_keep=predicting, use_cache=False)
    all_logprobs = torch.log_softmax(output.logits.float(), dim=-1)
    answers = packed.input_ids[:, width - length:]
    logprobs = all_logprobs.gather(-1, answers.unsqueeze(-1)).squeeze(-1) * mask
    values = output.values.float() * mask if isinstance(output, LogitsAndValues) else None
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(all_logprobs.exp() * all_logprobs).sum(-1) * mask
    return logprobs, values, entropy


def answer_logprobs(model, queries, responses, pad_token_id):
    """(log-probs [batch, answer length], answer mask [same]) of `responses` (token-id tensors) after `queries`
    (each of at least one token).

    Answers to the same prompt (a DPO pair, a GRPO group) share one pass over it: the distinct prompts run once
    (their last logits give each answer's first token), then every answer runs on its prompt's cached keys and
    values, as in sampling. The same log-probabilities as `score_answers` of the packed batch, to float rounding,
    without running a prompt once per answer. Gradients flow unless the caller disables them. Positions past an
    answer's end are 0 and masked out.
    """
    model = language_model(model)
    device = next(model.parameters()).device
    distinct = {}  # prompt -> its row in `prompts`
    rows = torch.tensor([distinct.setdefault(tuple(q.tolist()), len(distinct)) for q in queries], device=device)
    prompts = [torch.tensor(prompt, dtype=torch.long) for prompt in distinct]
    prompts = pack(prompts, [prompt[:0] for prompt in prompts], pad_token_id).to(device)
    # positions as a tensor, as `score_answers` keeps them: the last-column slice is not contiguous, and the head's
    # matmul would then round otherwise for a policy (weights that require gradients) than for its frozen reference
    last = torch.tensor([prompts.input_ids.shape[1] - 1], device=device)
    output = model(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask,
                   position_ids=prompts.position_ids, use_cache=True, logits_to_keep=last)
    answers = pad_sequence(list(responses), batch_first=True, padding_value=pad_token_id).to(device)
    answers = answers.view(len(responses), -1)  # [batch, 0] when no answer has a token
    lengths = torch.tensor([len(r) for r in responses], device=device)
    mask = torch.arange(answers.shape[1], device=device) < lengths[:, None]
    first = torch.log_softmax(output.logits[:, -1].float(), dim=-1)[rows]
    logprobs = [first.gather(1, answers[:, :1])]
    if answers.shape[1] > 1:  # the answers' other tokens, each row on its prompt's keys and values
        cache = output.past_key_values
        cache.reorder_cache(rows)
        steps = torch.arange(1, answers.shape[1], device=device)
        rest = model(input_ids=answers[:, :-1], attention_mask=torch.cat([prompts.attention_mask[rows],
                                                                          mask[:, :-1].long()], dim=1),
                     position_ids=prompts.position_ids[rows, -1:] + steps, past_key_values=cache, use_cache=True)
        logprobs.append(torch.log_softmax(rest.logits.float(), dim=-1).gather(-1, answers[:, 1:, None]).squeeze(-1))
    return torch.cat(logprobs, dim=1) * mask, mask
