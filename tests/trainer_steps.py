"""A few steps of each trainer's own update (PPO, GRPO, DPO, the reward model) on a fixed global batch, for
tests/test_trainers_sharded.py: under torchrun with `--fsdp` each process takes its rows and the model is sharded
with FSDP2 (utils.run.make_accelerator); without, one process takes the whole batch, unsharded (the reference).

    python tests/trainer_steps.py OUT_DIR --gpt2 DIR --encoder DIR [--fsdp] [--device cuda]

Writes OUT_DIR/<trainer>/ (the checkpoint after the steps, written as the trainer writes it) and
OUT_DIR/steps-<rank>.json: per trainer, the loss of each step (this process's share; the mean over the processes
is the whole batch's), and the trainable elements this process holds and the model has.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpo_sentiment_example import GRPOConfig, group_advantages, grpo_update, make_grpo  # noqa: E402
from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update  # noqa: E402
from train_dpo import preference_loss  # noqa: E402
from train_reward_model import NO_DECAY, make_loader, save_checkpoint as save_reward_checkpoint, score_batch  # noqa: E402
from utils.answer_logprobs import answer_logprobs  # noqa: E402
from utils.policy import load_policy  # noqa: E402
from utils.preference_data import collate  # noqa: E402
from utils.reward_model import RewardModel, rank_list_loss  # noqa: E402
from utils.run import (make_accelerator, optimizer_step, prepare_frozen, prepare_trainable, save_checkpoint,  # noqa: E402
                       sharded)
from utils.sharding import local_share  # noqa: E402
from utils.tokens import banned_token_ids, encode_prompt  # noqa: E402

ROWS, ANSWER, STEPS, GROUP = 8, 6, 3, 4  # answers in the global batch, tokens per answer, steps, GRPO's group


def my_rows(accelerator):
    """This process's rows of the global batch: consecutive, so that a GRPO group stays on one process."""
    share = ROWS // accelerator.num_processes
    return range(accelerator.process_index * share, (accelerator.process_index + 1) * share)


def fixed_batch(tokenizer):
    """ROWS answers of ANSWER tokens to one prompt (no padding: the same numbers whatever the split), and scores."""
    allowed = torch.tensor(sorted(set(range(len(tokenizer))) - set(banned_token_ids(tokenizer))))
    generator = torch.Generator().manual_seed(0)
    query = encode_prompt(tokenizer, "这部电影很")
    responses = [allowed[torch.randint(len(allowed), (ANSWER,), generator=generator)] for _ in range(ROWS)]
    scores = torch.rand(ROWS, generator=generator).tolist()
    return [query] * ROWS, responses, scores


def state(algorithm, base_model):
    return dict(epoch=STEPS, kl_coef=0.1, base_model=base_model, algorithm=algorithm, reason="end")


def ppo_steps(accelerator, gpt2, out_dir):
    torch.manual_seed(0)  # the value head's initial weights
    policy, ref_model, tokenizer = load_policy(gpt2, accelerator.device)
    rows = my_rows(accelerator)
    ppo = make_ppo(policy, ref_model, tokenizer, PPOConfig(learning_rate=1e-3, mini_batch_size=len(rows),
                                                           ppo_epochs=1, max_grad_norm=1.0), accelerator)
    queries, responses, scores = fixed_batch(tokenizer)
    losses = []
    for _ in range(STEPS):
        stats = ppo_update(ppo, [queries[i] for i in rows], [responses[i] for i in rows], [scores[i] for i in rows])
        losses.append(stats["policy_loss"] + stats["value_loss"])
    save_checkpoint(accelerator, ppo.policy, tokenizer, os.path.join(out_dir, "ppo"), state("ppo", gpt2))
    return losses, local_share(ppo.policy)


def grpo_steps(accelerator, gpt2, out_dir):
    policy, ref_model, tokenizer = load_policy(gpt2, accelerator.device)
    rows = my_rows(accelerator)
    config = GRPOConfig(learning_rate=1e-3, mini_batch_size=len(rows), grpo_epochs=1, group_size=GROUP, beta=0.1,
                        cliprange=0.2, epsilon_high=0.28, scale_rewards="group", loss_type="grpo",
                        advantage="group_mean", max_new_tokens=ANSWER, max_grad_norm=1.0)
    grpo = make_grpo(policy, ref_model, tokenizer, config, accelerator)
    queries, responses, scores = fixed_batch(tokenizer)
    queries, responses = [queries[i] for i in rows], [responses[i] for i in rows]
    advantages = group_advantages(scores, GROUP)[0][list(rows)]
    losses = []
    for _ in range(STEPS):
        with torch.no_grad():  # on-policy: the answers' log-probabilities under the policy now
            logprobs, mask = answer_logprobs(grpo.policy, queries, responses, tokenizer.pad_token_id)
        stats, _ = grpo_update(grpo, queries, responses, [row[keep] for row, keep in zip(logprobs, mask.bool())],
                               advantages)
        losses.append(stats["policy_loss"] + config.beta * stats["kl_penalty"])
    save_checkpoint(accelerator, grpo.policy, tokenizer, os.path.join(out_dir, "grpo"), state("grpo", gpt2))
    return losses, local_share(grpo.policy)


def dpo_steps(accelerator, gpt2, out_dir):
    policy, ref_model, tokenizer = load_policy(gpt2, accelerator.device)
    lm, optimizer = prepare_trainable(accelerator, policy, learning_rate=1e-3, weight_decay=0.01)
    ref_lm = prepare_frozen(accelerator, ref_model, trained=lm)
    queries, responses, _ = fixed_batch(tokenizer)
    pairs = [(queries[0].tolist(), [responses[i].tolist(), responses[i + 1].tolist()]) for i in range(0, ROWS, 2)]
    mine = [pairs[i // 2] for i in my_rows(accelerator)[::2]]
    losses = []
    for _ in range(STEPS):
        loss, _ = preference_loss(lm, ref_lm, collate(mine), 0.1, "pairs", accelerator, tokenizer.pad_token_id)
        optimizer_step(accelerator, optimizer, loss)
        losses.append(loss.item())
    save_checkpoint(accelerator, lm, tokenizer, os.path.join(out_dir, "dpo"), dict(state("dpo", gpt2), step=STEPS))
    return losses, local_share(lm)


def reward_model_steps(accelerator, encoder_dir, out_dir):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)  # the head's initial weights
    model, tokenizer = RewardModel(AutoModel.from_pretrained(encoder_dir)), AutoTokenizer.from_pretrained(encoder_dir)
    model, optimizer = prepare_trainable(accelerator, model, learning_rate=1e-3, weight_decay=0.01, no_decay=NO_DECAY)
    lists = [["质量很好，非常满意", "还可以吧", "太差了，不推荐"], ["服务热情，房间干净", "一般般", "又脏又吵"]] * 2
    rows = range(accelerator.process_index * len(lists) // accelerator.num_processes,
                 (accelerator.process_index + 1) * len(lists) // accelerator.num_processes)
    batch = next(iter(make_loader([lists[i] for i in rows], tokenizer, 32, len(rows))))
    losses = []
    for _ in range(STEPS):
        loss = rank_list_loss(*score_batch(model, {**batch}))
        optimizer_step(accelerator, optimizer, loss, 1.0)
        losses.append(loss.item())
    save_reward_checkpoint(model, tokenizer, os.path.join(out_dir, "reward_model"), accelerator, "end")
    return losses, local_share(model)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--gpt2", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (gloo), or cuda: one GPU per process (NCCL)")
    args = parser.parse_args()
    accelerator = make_accelerator(args.device, fsdp=args.fsdp)
    assert sharded(accelerator) == args.fsdp
    results = {}
    for name, steps, model in (("ppo", ppo_steps, args.gpt2), ("grpo", grpo_steps, args.gpt2),
                               ("dpo", dpo_steps, args.gpt2), ("reward_model", reward_model_steps, args.encoder)):
        losses, share = steps(accelerator, model, args.out_dir)
        results[name] = {"losses": losses, "share": share}
    results["world_size"] = accelerator.num_processes
    with open(os.path.join(args.out_dir, f"steps-{accelerator.process_index}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
