"""Per-token log-probabilities of answers given their prompts, in one forward pass (what GRPO and DPO score).

The batch is laid out as `generate_responses` samples it: prompts padded on the left, answers on the right,
positions counted from each prompt's first real token. The model sees exactly what it saw when sampling, so
the log-probabilities are those of the sampling distribution.
"""
import torch


def pack(queries, responses, pad_token_id):
    """(input_ids, attention_mask, position_ids, answer_mask); every answer starts at column `max query length`."""
    width, length = max(len(q) for q in queries), max(len(r) for r in responses)
    input_ids = torch.full((len(queries), width + length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, (query, response) in enumerate(zip(queries, responses)):
        input_ids[i, width - len(query):width] = query
        input_ids[i, width:width + len(response)] = response
        attention_mask[i, width - len(query):width + len(response)] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    answer_mask = attention_mask[:, width:].bool()
    return input_ids, attention_mask, position_ids, answer_mask


def answer_logprobs(model, queries, responses, pad_token_id):
    """(log-probs [batch, answer length], answer mask [same]) of `responses` (token-id tensors) after `queries`.

    `model` is any causal LM (or trl's value-head wrapper, whose first output is the logits); gradients flow
    unless the caller disables them. Positions past an answer's end are 0 and masked out.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, position_ids, answer_mask = (
        t.to(device) for t in pack(queries, responses, pad_token_id))
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    logits = output[0] if isinstance(output, tuple) else output.logits
    length = answer_mask.shape[1]
    # the logits at column t predict the token at column t + 1
    answer_logits = logits[:, -length - 1:-1].float()
    answers = input_ids[:, -length:]
    logprobs = torch.log_softmax(answer_logits, dim=-1).gather(-1, answers.unsqueeze(-1)).squeeze(-1)
    return logprobs * answer_mask, answer_mask
