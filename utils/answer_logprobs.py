"""Per-token log-probabilities of answers given their prompts (what PPO, GRPO and DPO score).

    score_answers     log-probs of ragged (queries, responses), with PPO's value head the values, and the entropy
    answer_logprobs   (log-probs, answer mask) alone: what GRPO and DPO need
    pack              ragged prompts (and answers) -> one padded `Packed` batch, laid out as sampling lays it out

Answers to the same prompt (a DPO pair, a GRPO group, the PPO answers to one of the example's prompts) share one
pass over that prompt, and every position runs as it ran when the answer was sampled: prompts padded on the left,
positions counted from each prompt's first real token, the answer's tokens on the prompt's cached keys and values.
"""
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from utils.value_head import LogitsAndValues


class Packed(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    answer_mask: torch.Tensor  # [batch, answer length]: True on each answer's tokens

    def to(self, device):
        return Packed(*(t.to(device) for t in self))


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


class AnswerScores(NamedTuple):
    logprobs: torch.Tensor  # [batch, width]: log pi(answer token | prompt, the answer before it), 0 off the answers
    mask: torch.Tensor  # [batch, width]: True on each answer's tokens
    values: torch.Tensor = None  # [batch, width]: PPO's value estimate at each answer token's state (0 off them)
    entropy: torch.Tensor = None  # [batch, width]: the policy's entropy there, without gradient


def score_answers(model, queries, responses, pad_token_id, width=None, with_entropy=False):
    """The `AnswerScores` of `responses` (token-id tensors) after `queries` (each of at least one token).

    `model` is any causal LM, or a `utils.value_head.PolicyWithValueHead`, which alone gives `values`; it is called
    as it is (a data-parallel or sharded wrapper included). Two passes: every distinct prompt runs once (its last
    position predicts each of its answers' first token), then every answer runs on its prompt's cached keys and
    values, the language-model head on the positions that predict answer tokens alone. The columns are `width`
    (default: the longest answer; a mini-batch of a larger batch passes the batch's width). Gradients flow unless
    the caller disables them.
    """
    device = next(model.parameters()).device
    distinct = {}  # prompt -> its row in `prompts`
    rows = torch.tensor([distinct.setdefault(tuple(q.tolist()), len(distinct)) for q in queries], device=device)
    prompts = [torch.tensor(prompt, dtype=torch.long) for prompt in distinct]
    prompts = pack(prompts, [prompt[:0] for prompt in prompts], pad_token_id).to(device)
    # the last column as a tensor, as the answers' pass keeps its columns: a slice would not be contiguous, and the
    # head's matmul would then round otherwise for a policy (weights that require gradients) than for its reference
    last = torch.tensor([prompts.input_ids.shape[1] - 1], device=device)
    first = model(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask,
                  position_ids=prompts.position_ids, use_cache=True, logits_to_keep=last)
    lengths = [len(response) for response in responses]
    width = max(width or max(lengths, default=0), 1)  # (one column at least: the first token's)
    answers = pad_sequence(list(responses), batch_first=True, padding_value=pad_token_id).view(len(responses), -1)
    answers = torch.nn.functional.pad(answers, (0, width - answers.shape[1]), value=pad_token_id).to(device)
    mask = torch.arange(width, device=device) < torch.tensor(lengths, device=device)[:, None]
    # index_select, not [rows]: the backward of indexing sums the rows' gradients in an order that varies between
    # runs when torch uses several threads (its index_put_ with accumulate), and a fixed seed would no longer give
    # the same run
    outputs = [(first.logits[:, -1:].index_select(0, rows),
                first.values[:, -1:].index_select(0, rows) if isinstance(first, LogitsAndValues) else None)]
    if width > 1:  # the answers' other tokens, each row on its prompt's keys and values
        cache = first.past_key_values
        cache.reorder_cache(rows)
        steps = torch.arange(1, width, device=device)
        rest = model(input_ids=answers[:, :-1], attention_mask=torch.cat([prompts.attention_mask[rows],
                                                                          mask[:, :-1].long()], dim=1),
                     position_ids=prompts.position_ids[rows, -1:] + steps, past_key_values=cache, use_cache=True)
        outputs.append((rest.logits, rest.values if isinstance(rest, LogitsAndValues) else None))

    # log-softmax per pass, not of the passes' logits joined: those would be copied whole
    all_logprobs = [torch.log_softmax(logits.float(), dim=-1) for logits, _ in outputs]
    logprobs = torch.cat([part.gather(-1, answers[:, column:column + part.shape[1], None]).squeeze(-1)
                          for part, column in zip(all_logprobs, (0, 1))], dim=1) * mask
    values = None
    if outputs[0][1] is not None:
        values = torch.cat([part for _, part in outputs], dim=1).float() * mask
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = torch.cat([-(part.exp() * part).sum(-1) for part in all_logprobs], dim=1) * mask
    return AnswerScores(logprobs, mask, values, entropy)


def answer_logprobs(model, queries, responses, pad_token_id, width=None):
    """(log-probs, answer mask) of `responses` after `queries`, each [batch, width]: `score_answers` without the
    values and the entropy."""
    scores = score_answers(model, queries, responses, pad_token_id, width)
    return scores.logprobs, scores.mask
