"""Rank lists with AI feedback: the labelling page's job with a sentiment classifier as the labeller.

For each prompt of the pool, the GPT-2 writes K answers (as on the labelling page: one batched sampling call,
fixed length), the classifier's probability of the positive label ranks them, and the list is appended in the
page's own format: the TSV (prompt + answer, best first, tab-separated) and its `.meta.jsonl` (prompt, scores).
`train_dpo.py` and `train_reward_model.py` then read it as they read human labels.

    python -m utils.ai_feedback --tiny                   # data/ai_feedback/sentiment_rank_lists.tsv (+ .meta.jsonl)
    python -m utils.ai_feedback --model_name uer/gpt2-chinese-cluecorpussmall \\
        --sentiment_model uer/roberta-base-finetuned-jd-binary-chinese --output my_lists.tsv

The files are built under a temporary name and renamed into place when complete, so an interrupted build is
never reused; `ensure_ai_feedback` builds them once and reuses them afterwards.
"""
import argparse
import json
import os

from tqdm import tqdm

from utils.device import pick_device, set_seed
from utils.errors import UserError, run_main
from utils.generation import sample_answers
from utils.tokens import PROMPTS, read_prompts
from utils.options import ArgumentParser, add_device_argument, input_file, output_file, positive_int, seed
from utils.outputs import AI_LABELS, check_outputs, labels_outputs
from utils.policy import add_model_arguments, load_causal_lm
from utils.ranklists import append_rank_list, metadata_path
from utils.reward_sources import SentimentPipelineReward
from utils.presets import Preset, parse_with_presets
from utils.tiny import TINY_CLASSIFIER, TINY_GPT2

DEFAULT_OUTPUT = os.path.join("data", "ai_feedback", "sentiment_rank_lists.tsv")
ORIGINAL_MODELS = dict(model_name="uer/gpt2-chinese-cluecorpussmall",
                       sentiment_model="uer/roberta-base-finetuned-jd-binary-chinese")


def build_ai_feedback(output, model_name, sentiment_model, prompts=PROMPTS, lists_per_prompt=128, k=4, gen_len=16,
                      seed=0, device="cpu", chat_template="auto"):
    """Write `lists_per_prompt` rank lists of `k` answers for every prompt to `output` and its meta file."""
    if k < 2 or lists_per_prompt < 1 or gen_len < 1:
        raise UserError("AI feedback needs --rank_list_len >= 2 answers per list, --lists_per_prompt >= 1 and --max_new_tokens >= 1")
    set_seed(seed)
    model, tokenizer = load_causal_lm(model_name, device, chat_template)
    labeller = SentimentPipelineReward(sentiment_model, device)
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        for prompt in tqdm(prompts, desc="AI feedback (prompts)"):
            for _ in range(lists_per_prompt):
                texts = [prompt + answer for answer in sample_answers(model, tokenizer, prompt, k, gen_len)]
                scores = labeller(texts)
                order = sorted(range(k), key=lambda i: -scores[i])
                append_rank_list(tmp, [texts[i] for i in order],
                                 {"prompt": prompt, "rank_list_len": k, "scores": [round(scores[i], 4) for i in order],
                                  "annotator": f"AI feedback: {sentiment_model}", "model": model_name,
                                  "model_written": model_written(model_name)})
        os.replace(metadata_path(tmp), metadata_path(output))  # the TSV last: its presence means "complete"
        os.replace(tmp, output)
    finally:
        for leftover in (tmp, metadata_path(tmp), tmp + ".lock"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return output


def ensure_ai_feedback(output=DEFAULT_OUTPUT, **build_kwargs):
    """`output` (with its meta file) if a complete build by the same GPT-2 is there, else built now."""
    model_name = build_kwargs["model_name"]
    if os.path.isfile(output) and written_by(output) == (model_name, model_written(model_name)):
        print(f"AI-feedback rank lists: reusing {output} (delete it, or run python -m utils.ai_feedback, to rebuild)")
        return output
    print(f"AI-feedback rank lists: building {output} (the classifier ranks the GPT-2's answers) ...")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    return build_ai_feedback(output, **build_kwargs)


def written_by(output):
    """(the GPT-2 that wrote the answers of an AI-feedback file, `model_written` of it then), from its first meta
    record, or None."""
    try:
        with open(metadata_path(output), encoding="utf-8") as f:
            record = json.loads(f.readline())
        return record.get("model"), record.get("model_written")
    except (OSError, ValueError, AttributeError):
        return None


def model_written(model_name):
    """When the newest file of a model folder was written (None for a hub name): a model rebuilt in the same folder,
    as the tiny models are after a recipe change when RLHF_TINY_DIR names their folder, is another model."""
    if not os.path.isdir(model_name):
        return None
    return max((entry.stat().st_mtime_ns for entry in os.scandir(model_name) if entry.is_file()), default=None)


def check_options(args):
    if args.rank_list_len < 2:
        raise UserError(f"--rank_list_len {args.rank_list_len}: a rank list needs at least 2 answers")
    check_outputs(labels_outputs("--output", args.output, AI_LABELS), [("--prompts_file", args.prompts_file)])


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the offline tiny GPT-2 and classifier")
    parser.add_argument("--model_name", help="the model that writes the answers: uer's GPT-2 or any causal LM")
    add_model_arguments(parser, lora=False)
    parser.add_argument("--sentiment_model", help="classifier that ranks them")
    parser.add_argument("--output", type=output_file, default=DEFAULT_OUTPUT,
                        help="rank-list TSV to write (its .meta.jsonl beside it)")
    parser.add_argument("--prompts_file", type=input_file,
                        help="one prompt per line (default: the original's four prompts)")
    parser.add_argument("--lists_per_prompt", type=positive_int, default=128)
    parser.add_argument("--rank_list_len", "--k", type=positive_int, default=4,
                        help="answers per rank list (the labelling page's K)")
    parser.add_argument("--max_new_tokens", "--gen_len", type=positive_int, default=16, help="new tokens per answer")
    parser.add_argument("--seed", type=seed, default=0)
    add_device_argument(parser)
    parser.set_defaults(**ORIGINAL_MODELS)
    tiny = Preset("--tiny", lambda args: args.tiny, dict(model_name=TINY_GPT2, sentiment_model=TINY_CLASSIFIER))
    args = parse_with_presets(parser, argv, [tiny], check=check_options)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    path = build_ai_feedback(args.output, args.model_name, args.sentiment_model, read_prompts(args.prompts_file),
                             args.lists_per_prompt, args.rank_list_len, args.max_new_tokens, args.seed,
                             pick_device(args.device), args.chat_template)
    print(f"{path}: {args.lists_per_prompt * len(read_prompts(args.prompts_file))} rank lists of {args.rank_list_len} "
          f"(+ {metadata_path(path)})")


if __name__ == "__main__":
    run_main(main)
