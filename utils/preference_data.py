"""DPO's data, from a file to the batches its loss takes: rank lists (TSV, best first, with their .meta.jsonl) or a
preference JSONL, read and checked before any model is loaded, with whole lists held out for dev; each list as
its ordered pairs (--loss pairs) or whole (--loss plackett_luce); encoded with the policy's tokenizer; batched
in a shuffled order that a resumed run repeats; collated into one forward's sequences."""
import math
import os
import random

import torch

from utils.ai_feedback import ensure_ai_feedback
from utils.errors import UserError
from utils.preferences import preference_pairs, read_preference_jsonl
from utils.ranklists import merge_rank_lists, metadata_path, read_prompted_rank_lists, split_rank_lists
from utils.texts import read_numbered_lines
from utils.tiny import ensure_tiny
from utils.tokens import banned_token_ids, encode_prompt

DEFAULT_TRAIN = os.path.join("data", "human_labeled", "total_dataset.tsv")  # the labelling page's file


# ---------------------------------------------------------------- rank lists -> pairs or whole lists
def read_data(args, accelerator):
    """(train items, dev items), each item (prompt, [answers best first]): pairs, or with --loss plackett_luce
    whole lists; read and checked before any model is loaded. Without --dev_path the dev items come from a
    --dev_ratio share of the training lists, as the reward model's do (utils/ranklists.py `split_rank_lists`)."""
    train_path = args.train_path or DEFAULT_TRAIN
    if args.tiny and not args.train_path:
        with accelerator.main_process_first():
            tiny = ensure_tiny()
            train_path = ensure_ai_feedback(args.ai_feedback_file, model_name=tiny["gpt2"],
                                            sentiment_model=tiny["classifier"], lists_per_prompt=args.ai_feedback_lists,
                                            gen_len=args.max_new_tokens, seed=args.seed)
    elif not os.path.isfile(train_path):
        raise UserError(f"{train_path}: no such file (rank lists from the labelling page, a preference JSONL, or "
                        "--tiny for AI-feedback rank lists)")
    train_lists = read_lists(train_path, args)
    if not train_lists:
        raise UserError(f"{train_path}: no rank list of 2 or more different texts in it: nothing to train on")
    if args.dev_path:
        dev_lists = read_lists(args.dev_path, args)
    else:  # hold out whole lists, so that no dev answer is trained on
        train_lists, dev_lists = split_rank_lists(train_lists, args.dev_ratio, args.seed, train_path)
    if args.loss == "plackett_luce":
        return to_whole_lists(train_lists, train_path), to_whole_lists(dev_lists, args.dev_path or train_path)
    return to_pairs(train_lists, "training"), to_pairs(dev_lists, "dev")


def is_preference_jsonl(path):
    """True when the file's first non-blank line is a JSON object (a preference JSONL), not a rank list."""
    first = next((line for _, line in read_numbered_lines(path) if line is None or line.strip()), None)
    return first is not None and first.lstrip().startswith("{")


def read_lists(path, args):
    """The rank lists of a file with their prompts, checked as --prompt_mode asks. A preference JSONL's pairs
    are lists of 2 with the prompt their line gives ("" for none); rank lists take theirs from the .meta.jsonl."""
    if is_preference_jsonl(path):
        rank_lists = read_preference_jsonl(path, args.skip_bad_lines)
    else:
        rank_lists = read_prompted_rank_lists(path, args.skip_bad_lines)
        if args.prompt_mode == "none":
            for rank_list in rank_lists:
                rank_list.prompt = None
        else:
            check_prompts_known(path, rank_lists)
    rank_lists, summary = merge_rank_lists(rank_lists, args.merge, args.min_agreement)
    if args.merge != "all":
        print(f"{path}: {summary}")
    return rank_lists


def check_prompts_known(path, rank_lists):
    unknown = sum(r.prompt is None for r in rank_lists)
    if unknown:
        meta = metadata_path(path)
        why = f"{unknown} of its {len(rank_lists)} lists have no prompt in {meta}" if os.path.isfile(meta) else \
            f"there is no {meta} beside it"
        raise UserError(f"{path}: the prompts are not known ({why}); pass --prompt_mode none to train on the "
                        "whole texts without prompts")


def to_pairs(rank_lists, name):
    """Every ordered pair i<j of the lists, as lists of 2: (prompt, [chosen, rejected])."""
    pairs = preference_pairs(rank_lists)
    if not pairs:
        raise UserError(f"no {name} preference pairs ({len(rank_lists)} rank lists): nothing to train on")
    return [(pair["prompt"], [pair["chosen"], pair["rejected"]]) for pair in pairs]


def to_whole_lists(rank_lists, path):
    """Each list as (prompt, [answers best first]) for the Plackett-Luce loss; data that has only pairs stops."""
    if all(len(r.texts) == 2 for r in rank_lists):
        raise UserError(f"{path}: --loss plackett_luce needs whole rank lists of 3 or more answers, but every item "
                        "here is a pair (on pairs it is exactly --loss pairs: use that)")
    return [(r.prompt or "", [text[len(r.prompt or ""):] for text in r.texts]) for r in rank_lists]


# ---------------------------------------------------------------- token ids and batches
def encode_lists(tokenizer, items, max_seq_len):
    """[(prompt ids, [answer ids best first])] of [(prompt, [answers best first])], and how many answers were
    left out: those the model cannot score (no answer tokens to score, a prompt without room for an answer, or a
    token the model never writes, such as [UNK]) and repeats of an answer higher in the list. What is left is
    still a ranking; a list left with fewer than 2 answers is left out. Nothing predicts a sequence's first
    token, so without a prompt an answer's first token becomes its prompt."""
    banned = set(banned_token_ids(tokenizer))
    encoded, left_out = [], 0
    for prompt_text, answer_texts in items:
        prompt = encode_prompt(tokenizer, prompt_text).tolist()
        room = max_seq_len - len(prompt)
        answers = []
        for text in answer_texts:
            answer = tokenizer.encode(text, add_special_tokens=False)[:room]
            if not prompt and len(answer) < 2:
                answer = []  # a first token alone has nothing to score
            # a chat template's prompt holds special tokens by design: of the prompt's tokens only [UNK] is refused
            if room < 1 or not answer or banned.intersection(answer) or tokenizer.unk_token_id in prompt \
                    or answer in answers:
                left_out += 1
            else:
                answers.append(answer)
        if len(answers) >= 2:
            encoded.append((prompt, answers))
        else:
            left_out += len(answers)
    return encoded, left_out


def collate(batch):
    """Every answer of every list of a batch, list after list, as (prompt ids, answer ids) tensors; and the
    lists' sizes."""
    queries, responses = [], []
    for prompt, answers in batch:
        for answer in answers:
            query = prompt
            if not prompt:
                query, answer = answer[:1], answer[1:]
            queries.append(torch.tensor(query))
            responses.append(torch.tensor(answer))
    return {"queries": queries, "responses": responses, "sizes": [len(answers) for _, answers in batch]}


class ShuffledBatches:
    """Batches of pair indices in a new order each epoch, drawn from (seed, epoch): every process draws the same
    order (accelerate deals the batches out), and a resumed run sees the order an uninterrupted one would."""

    def __init__(self, num_items, size, seed):
        self.num_items, self.size, self.seed, self.epoch = num_items, size, seed, 0

    def __iter__(self):
        order = list(range(self.num_items))
        random.Random(self.seed + self.epoch).shuffle(order)
        self.epoch += 1
        return iter([order[i:i + self.size] for i in range(0, self.num_items, self.size)])

    def __len__(self):
        return math.ceil(self.num_items / self.size)
