"""Continue a prompt with a fine-tuned GPT-2 checkpoint (default: the newest one under --save_dir): PPO
(ppo_sentiment_example.py, terminal_main.py), GRPO (grpo_sentiment_example.py) and DPO (train_dpo.py) save the
same kind of folder.

    python inference_ppo_gpt.py --prompt 这部电影很 --num 5
    python inference_ppo_gpt.py --checkpoint checkpoints/ppo_sentiment_gpt/model_300_0.93 --compare_ref
    python inference_ppo_gpt.py --save_dir checkpoints/dpo_sentiment_gpt --compare_ref
"""
import argparse
import os

from utils.device import pick_device, set_seed
from utils.errors import UserError, run_main
from utils.generation import generate_responses
from utils.tokens import decode, encode_prompt
from utils.checkpoints import checkpoint_folder, find_latest_checkpoint, load_checkpoint_state
from utils.options import ArgumentParser, add_device_argument, positive_int, seed, utf8_text
from utils.policy import add_model_arguments, load_policy


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=checkpoint_folder,
                   help="checkpoint folder (default: the newest under --save_dir)")
    p.add_argument("--save_dir", default=os.path.join("checkpoints", "ppo_sentiment_gpt"),
                   help="where to look for the newest checkpoint (GRPO: checkpoints/grpo_sentiment_gpt, "
                        "DPO: checkpoints/dpo_sentiment_gpt)")
    p.add_argument("--prompt", type=utf8_text, default="这部电影很")
    p.add_argument("--num", type=positive_int, default=5, help="continuations to write")
    p.add_argument("--max_new_tokens", "--gen_len", type=positive_int, default=16, help="new tokens per continuation")
    p.add_argument("--stop_at_sep", action="store_true", help="let the end token ([SEP], eos) end a continuation early")
    add_model_arguments(p, lora=False)
    p.add_argument("--compare_ref", action="store_true", help="also show the reference (base) model's continuations")
    p.add_argument("--seed", type=seed, default=0)
    add_device_argument(p)
    return p.parse_args(argv)


def continuations(model, tokenizer, prompt, num, gen_len, stop_at_sep):
    query = encode_prompt(tokenizer, prompt)
    if len(query) == 0:
        raise UserError("the prompt is empty: give some text with --prompt")
    responses = generate_responses(model, tokenizer, [query] * num, gen_len, stop_at_sep)
    return [prompt + decode(tokenizer, response) for response in responses]


def main(argv=None):
    args = parse_args(argv)
    checkpoint = args.checkpoint or find_latest_checkpoint(args.save_dir)
    state = load_checkpoint_state(checkpoint)
    device = pick_device(args.device)
    policy, ref_model, tokenizer = load_policy(checkpoint, device, stop_at_sep=args.stop_at_sep,
                                               chat_template=args.chat_template)
    algorithm = state.get("algorithm", "ppo").upper()  # PPO, GRPO or DPO (older checkpoints have no name: PPO's)
    print(f"checkpoint: {checkpoint} ({algorithm}, epoch {state.get('epoch', '?')}, "
          f"reference model {state['base_model']})")
    set_seed(args.seed)
    texts = continuations(policy, tokenizer, args.prompt, args.num, args.max_new_tokens, args.stop_at_sep)
    if not args.compare_ref:
        for i, text in enumerate(texts, start=1):
            print(f"{i}. {text}")
        return
    set_seed(args.seed)
    ref_texts = continuations(ref_model, tokenizer, args.prompt, args.num, args.max_new_tokens, args.stop_at_sep)
    for i, (text, ref_text) in enumerate(zip(texts, ref_texts), start=1):
        print(f"{i}. {algorithm}: {text}\n   ref: {ref_text}")


if __name__ == "__main__":
    run_main(main)
