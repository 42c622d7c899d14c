"""Our losses against the trl that users run today (trl 1.16): each test computes one quantity two ways, on the
same micro model, batch and seed, in float32, and compares them to TOL.

The trl side is always trl's own code: a trainer built on the micro model, its batch prepared by the trainer
itself (`_generate_and_score_completions` for GRPO and RLOO, trl's preference collators for DPO and the reward
model) from the project's own token ids, so that trl's tokenization adds no [CLS]/[SEP] and no end token, then
the trainer's `_compute_loss` / `compute_loss`. Nothing of trl's is typed out again here.

    GRPO           grpo_sentiment_example (group_advantages, answer_logprobs, grpo_loss; grpo_update) against
                   GRPOTrainer: loss_type grpo/dr_grpo x scale_rewards group/batch/none, clip-higher, beta > 0
    RLOO           --advantage rloo against GRPOTrainer (reward_weights [G/(G-1)]) and against RLOOTrainer
    DPO            train_dpo.preference_loss, pairs and Plackett-Luce on lists of 2, against DPOTrainer (sigmoid)
    reward model   utils/reward_model rank_list_loss and listwise_loss on pairs against RewardTrainer

Both sides agree, without any setting, on: GRPO's group std (Bessel-corrected, plus 1e-4 before dividing), its
dr_grpo constant (answers x max_completion_length), the k3 KL term, DPO's sum of answer-token log-probs.
What is set on trl's side to compute the same thing, and why (each a deliberate difference, not a bug of ours):
- `bf16=False`: trl's configs default to bf16 autocast, also on a CPU (log-probabilities then differ by ~4e-3).
- No `utils.policy.forbid_tokens` hook: trl computes log-probabilities with a fused LM head that multiplies the
  head's weight directly, so a forward hook on the head would act on our side only. Both sides use the plain model.
- GRPO `use_bias_correction_kl=False`: trl 1.16 multiplies the k3 KL term by the ratio pi/pi_old by default
  (DeepSeek-V3.2), which changes the KL gradient even on-policy. Ours is the k3 term of the GRPO paper.
- GRPO on GPT-2 with prompts of one length: GRPOTrainer scores a left-padded prompt without position ids, i.e. at
  positions counted from the padding, which GPT-2's absolute position embeddings see (generation and our
  `answer_logprobs` count from the first real token). Left-padded prompts are compared on the micro Qwen2, whose
  rotary positions make a shift of all positions invisible.
- Our RLOO baseline is GRPOTrainer's with `reward_weights` [G/(G-1)] only for unscaled rewards (scaled, trl would
  divide by the weighted rewards' std). RLOOTrainer differs by design (a ratio per answer, not per token; the KL as
  k1 in the reward, not k3 in the loss): its tests check the advantages, and the loss where the two coincide.
"""
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer)

from grpo_sentiment_example import GRPO, GRPOConfig, group_advantages, grpo_loss, grpo_update
from train_dpo import preference_loss
from train_reward_model import make_loader, score_batch
from utils.answer_logprobs import answer_logprobs
from utils.models import load_pretrained
from utils.tokens import PROMPTS, banned_token_ids, encode_prompt
from utils.policy import disable_dropout, load_tokenizer
from utils.preference_data import collate, encode_lists
from utils.reward_model import RewardModel, listwise_loss, rank_list_loss

TOL = 1e-5  # absolute, float32: on losses, advantages, log-probabilities and every element of a gradient
G = 4  # answers per prompt
MAX_NEW = 6  # max_new_tokens (ours) = max_completion_length (trl); answers are 1 to MAX_NEW tokens long
CLIP, CLIP_HIGH = 0.2, 0.28  # --cliprange, --epsilon_high (trl: epsilon, epsilon_high)
SAME_LENGTH_PROMPTS = ["这部电影很", "这次购物很", "说实话真好"]  # 5 tokens each with the micro GPT-2's vocabulary


# trl's trainers read transformers' old names for gradient checkpointing (renamed in transformers 5, going in v6)
pytestmark = pytest.mark.filterwarnings(r"ignore:`(is_)?gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def quiet_rollout_func(monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")  # GRPOTrainer's rollout_func announces itself as experimental


def trl_config(config_class, tmp_path, **settings):
    """A trl config for a comparison on the CPU: float32 (see the module docstring), nothing logged or saved."""
    return config_class(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, report_to="none",
                        save_strategy="no", **settings)


def plain_lm(path):
    """The micro causal LM as both sides score it: dropout off, no forbid_tokens hook (see the module docstring)."""
    return disable_dropout(load_pretrained(AutoModelForCausalLM, path))


def nudge(model, seed, scale=0.05):
    """Move every parameter a little (a fixed random direction): the policy has been updated since it sampled."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


def gradient(loss, model):
    """d loss / d every parameter of `model`, as one flat vector."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def assert_equal(ours, theirs, what):
    ours, theirs = torch.as_tensor(ours).detach().float(), torch.as_tensor(theirs).detach().float()
    assert ours.shape == theirs.shape, f"{what}: shapes {tuple(ours.shape)} vs trl {tuple(theirs.shape)}"
    error = (ours - theirs).abs().max().item() if ours.numel() else 0.0
    assert error <= TOL, f"{what}: ours and trl's differ by up to {error:.3g} (tolerance {TOL})"


# ---------------------------------------------------------------- a GRPO batch, as our loop and as trl see it
def grpo_batch(tokenizer, prompts, seed=0):
    """len(prompts) groups of G answers: our (queries, responses) tensors, random answers of 1..MAX_NEW tokens from
    the tokens our sampling may write, and rewards in [0, 1) except an all-equal last group (zero std)."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.tensor(sorted(set(range(len(tokenizer))) - set(banned_token_ids(tokenizer))))
    queries = [encode_prompt(tokenizer, prompt) for prompt in prompts for _ in range(G)]
    lengths = torch.randint(1, MAX_NEW + 1, (len(queries),), generator=generator)
    responses = [allowed[torch.randint(len(allowed), (int(n),), generator=generator)] for n in lengths]
    rewards = torch.rand(len(queries), generator=generator)
    rewards[-G:] = 0.5
    rows = [{"prompt": prompt, "index": i * G + j} for i, prompt in enumerate(prompts) for j in range(G)]
    return SimpleNamespace(queries=queries, responses=responses, rewards=rewards.tolist(), rows=rows)


def batch_rewards(batch):
    """A trl reward function that gives each row its reward of the batch (trl passes dataset columns as lists)."""
    def reward(prompts, completions, index, **kwargs):
        return [batch.rewards[i] for i in index]
    return reward


def grpo_trainer(policy, tokenizer, batch, tmp_path, advantage="group_mean", **settings):
    """GRPOTrainer on `policy` whose rollouts are `batch` (its `rollout_func`, given our token ids). Our RLOO
    baseline r - mean(others) = G/(G-1) (r - mean): with unscaled rewards, GRPOTrainer's `reward_weights`."""
    from trl import GRPOConfig, GRPOTrainer

    if advantage == "rloo":  # scaled, trl would divide by the std of the weighted rewards (G/(G-1) times ours)
        assert settings["scale_rewards"] == "none"
        settings["reward_weights"] = [G / (G - 1)]
    config = trl_config(GRPOConfig, tmp_path, num_generations=G, per_device_train_batch_size=len(batch.rows),
                        max_completion_length=MAX_NEW, epsilon=CLIP, use_bias_correction_kl=False, **settings)

    def rollout(prompts, trainer):
        assert len(prompts) == len(batch.queries)
        return {"prompt_ids": [q.tolist() for q in batch.queries],
                "completion_ids": [r.tolist() for r in batch.responses], "logprobs": None}

    trainer = GRPOTrainer(model=policy, reward_funcs=batch_rewards(batch), args=config,
                          train_dataset=Dataset.from_list(batch.rows), processing_class=tokenizer, rollout_func=rollout)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets with gradient_accumulation_steps 1
    trainer.model.train()
    return trainer


class Case(NamedTuple):
    """Our GRPO flags; trl's settings of the same names (`advantage` rloo: reward_weights, see `grpo_trainer`)."""
    loss_type: str
    scale_rewards: str
    advantage: str
    beta: float
    epsilon_high: float

    def trl_settings(self):
        return dict(loss_type=self.loss_type, scale_rewards=self.scale_rewards, beta=self.beta,
                    epsilon_high=self.epsilon_high)


ORIGINAL = Case("grpo", "group", "group_mean", 0.04, CLIP)  # the paper, as ORIGINAL runs it: symmetric clipping
TINY = Case("dr_grpo", "none", "rloo", 0.05, CLIP_HIGH)  # Dr. GRPO + RLOO + clip-higher, as TINY runs it
GRPO_CASES = [*[Case(loss_type, scale, "group_mean", 0.1, CLIP_HIGH) for loss_type in ("grpo", "dr_grpo")
                for scale in ("group", "batch", "none")],
              ORIGINAL, Case("grpo", "none", "rloo", 0.0, CLIP), TINY]


def compare_grpo_loss(lm_path, prompts, case, tmp_path):
    """Ours and GRPOTrainer's advantages, log-probabilities, loss and gradient on one batch, off-policy: the policy
    samples (state A), is scored by trl at state A (num_iterations 2 keeps the sampling log-probs), then moves (B)."""
    tokenizer = load_tokenizer(lm_path)
    torch.manual_seed(0)
    policy, ref_model = plain_lm(lm_path), plain_lm(lm_path)  # trl loads its own reference from the same folder
    batch = grpo_batch(tokenizer, prompts)
    trainer = grpo_trainer(policy, tokenizer, batch, tmp_path, case.advantage, num_iterations=2, **case.trl_settings())
    nudge(policy, seed=1)  # state A: away from the reference, so that the KL term is not 0
    inputs = trainer._generate_and_score_completions(batch.rows)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        old_logprobs, mask = answer_logprobs(policy, batch.queries, batch.responses, pad)
        ref_logprobs, _ = answer_logprobs(ref_model, batch.queries, batch.responses, pad)
    nudge(policy, seed=2)  # state B: ratios now spread over both clipping bounds

    advantages, _ = group_advantages(batch.rewards, G, case.advantage, case.scale_rewards)
    assert_equal(advantages, inputs["advantages"], "advantages")
    assert_equal(old_logprobs, inputs["old_per_token_logps"] * mask, "log-probabilities at sampling")
    if case.beta:
        assert_equal(ref_logprobs, inputs["ref_per_token_logps"] * mask, "reference log-probabilities")
    logprobs, _ = answer_logprobs(policy, batch.queries, batch.responses, pad)
    ours, _ = grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, CLIP, case.beta, case.epsilon_high,
                        case.loss_type, MAX_NEW)
    theirs = trainer._compute_loss(policy, inputs)
    assert_equal(ours, theirs, "loss")
    assert_equal(gradient(ours, policy), gradient(theirs, policy), "gradient")

    # the batch exercises what is compared: tokens beyond each clipping bound, and between 1 + CLIP and 1 + CLIP_HIGH
    ratio = (logprobs - old_logprobs).exp()[mask]
    assert (ratio < 1 - CLIP).any() and (ratio > 1 + CLIP_HIGH).any()
    assert ((ratio > 1 + CLIP) & (ratio < 1 + CLIP_HIGH)).any()
    assert inputs["advantages"][-G:].abs().max() == 0  # the all-equal group: zero advantage on both sides


@pytest.mark.parametrize("case", GRPO_CASES, ids=["-".join(map(str, case)) for case in GRPO_CASES])
def test_grpo_loss_advantages_and_gradient_equal_grpo_trainers_on_gpt2(case, micro_paths, tmp_path):
    """Each of our loss types x reward scalings with clip-higher and beta > 0, the paper's settings, and RLOO
    (GRPOTrainer with reward_weights [G/(G-1)], unscaled): advantages, log-probs, loss and gradient within TOL."""
    tokenizer = load_tokenizer(micro_paths["gpt2"])
    assert len({len(encode_prompt(tokenizer, p)) for p in SAME_LENGTH_PROMPTS}) == 1  # no left padding on GPT-2
    compare_grpo_loss(micro_paths["gpt2"], SAME_LENGTH_PROMPTS, case, tmp_path)


@pytest.mark.parametrize("case", [GRPO_CASES[0], TINY], ids=["grpo-group", "tiny"])
def test_grpo_loss_with_left_padded_chat_prompts_equals_grpo_trainers_on_qwen2(case, micro_lms, tmp_path):
    """Prompts of different lengths through the chat template (left padding), on the micro Qwen2."""
    tokenizer = load_tokenizer(micro_lms["qwen2"])
    assert len({len(encode_prompt(tokenizer, p)) for p in PROMPTS}) > 1
    compare_grpo_loss(micro_lms["qwen2"], PROMPTS, case, tmp_path)


@pytest.mark.parametrize("case", [ORIGINAL, TINY], ids=["original", "tiny"])
def test_one_grpo_update_steps_along_grpo_trainers_gradient(case, micro_paths, tmp_path):
    """Our whole `grpo_update` (its own old and reference log-probs, the arguments it passes on), one mini-batch
    of the whole batch with SGD at lr 1, moves the parameters by exactly minus GRPOTrainer's gradient on the same
    on-policy batch (num_iterations 1: trl takes the old log-probs as the detached current ones). Gradient clipping is
    off: trl clips in its optimizer step, outside the loss."""
    path = micro_paths["gpt2"]
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    policy, ref_model = plain_lm(path), plain_lm(path)
    batch = grpo_batch(tokenizer, SAME_LENGTH_PROMPTS)
    trainer = grpo_trainer(policy, tokenizer, batch, tmp_path, case.advantage, num_iterations=1, **case.trl_settings())
    nudge(policy, seed=1)
    inputs = trainer._generate_and_score_completions(batch.rows)
    trl_gradient = gradient(trainer._compute_loss(policy, inputs), policy)

    before = torch.cat([p.detach().flatten().clone() for p in policy.parameters()])
    config = GRPOConfig(learning_rate=1.0, grpo_epochs=1, mini_batch_size=len(batch.queries), group_size=G,
                        cliprange=CLIP, beta=case.beta, epsilon_high=case.epsilon_high or CLIP,
                        scale_rewards=case.scale_rewards, loss_type=case.loss_type, advantage=case.advantage,
                        max_new_tokens=MAX_NEW)
    advantages, _ = group_advantages(batch.rewards, G, case.advantage, case.scale_rewards)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    with torch.no_grad():  # on-policy: the log-probabilities the answers were sampled with are the policy's own
        logprobs, mask = answer_logprobs(policy, batch.queries, batch.responses, tokenizer.pad_token_id)
    sampled_logprobs = [row[keep] for row, keep in zip(logprobs, mask)]
    grpo = GRPO(Accelerator(cpu=True), policy, ref_model, optimizer, tokenizer, config)
    grpo_update(grpo, batch.queries, batch.responses, sampled_logprobs, advantages)
    after = torch.cat([p.detach().flatten() for p in policy.parameters()])
    assert trl_gradient.abs().max() > 100 * TOL  # a step that a wrong term would change beyond TOL
    assert_equal(after - before, -trl_gradient, "parameter step")


# ---------------------------------------------------------------- RLOO against RLOOTrainer
def rloo_trainer(policy, tokenizer, batch, tmp_path, **settings):
    """RLOOTrainer on `policy` whose rollouts are `batch`: RLOOTrainer has no rollout_func, so its `_generate` (trl's
    sampling and tokenization) gives our token ids; the scoring, KL, baseline and loss stay trl's."""
    from trl import RLOOConfig, RLOOTrainer

    config = trl_config(RLOOConfig, tmp_path, num_generations=G, per_device_train_batch_size=len(batch.rows),
                        max_completion_length=MAX_NEW, normalize_advantages=False, epsilon=CLIP, **settings)
    trainer = RLOOTrainer(model=policy, reward_funcs=batch_rewards(batch), args=config,
                          train_dataset=Dataset.from_list(batch.rows), processing_class=tokenizer)
    prompt_ids, completion_ids = [q.tolist() for q in batch.queries], [r.tolist() for r in batch.responses]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    trainer._generate = lambda prompts: (prompt_ids, completion_ids, texts)
    trainer.model.train()
    return trainer


def test_rloo_advantages_equal_rloo_trainers_with_the_kl_in_the_reward(micro_paths, tmp_path):
    """RLOOTrainer's advantage is the leave-one-out one of a KL-penalised reward, r - beta * sum_t (log pi - log ref)
    over the answer's tokens (k1, in the reward; ours puts k3 in the loss, a difference of design). Fed the same
    penalised rewards, our `group_advantages(..., "rloo", "none")` gives RLOOTrainer's advantages; the sequence
    log-probs agree too."""
    path, beta = micro_paths["gpt2"], 0.1
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    policy, ref_model = plain_lm(path), plain_lm(path)
    batch = grpo_batch(tokenizer, SAME_LENGTH_PROMPTS)
    trainer = rloo_trainer(policy, tokenizer, batch, tmp_path, beta=beta)
    nudge(policy, seed=1)
    inputs = trainer._generate_and_score_completions(batch.rows)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        logprobs, mask = answer_logprobs(policy, batch.queries, batch.responses, pad)
        ref_logprobs, _ = answer_logprobs(ref_model, batch.queries, batch.responses, pad)
    sampled_kl = ((logprobs - ref_logprobs) * mask).sum(dim=1)  # the per-answer KL our GRPO logs
    assert sampled_kl.abs().max() > 0.01
    advantages, _ = group_advantages((torch.tensor(batch.rewards) - beta * sampled_kl).tolist(), G, "rloo", "none")
    assert_equal(logprobs.sum(dim=1), inputs["old_logps"], "sequence log-probabilities")
    assert_equal(advantages, inputs["advantages"], "advantages")


def test_rloo_loss_on_one_token_answers_equals_rloo_trainers_with_clip_higher(micro_paths, tmp_path):
    """RLOOTrainer clips the ratio of whole sequences, ours each token's: on one-token answers the two are one ratio,
    and our clipped loss (`--advantage rloo`, beta 0, clip-higher) equals RLOOTrainer's, value and gradient."""
    path = micro_paths["gpt2"]
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    policy = plain_lm(path)
    batch = grpo_batch(tokenizer, SAME_LENGTH_PROMPTS)
    batch.responses = [r[:1] for r in batch.responses]
    trainer = rloo_trainer(policy, tokenizer, batch, tmp_path, beta=0.0, epsilon_high=CLIP_HIGH)
    pad = tokenizer.pad_token_id
    inputs = trainer._generate_and_score_completions(batch.rows)
    with torch.no_grad():
        old_logprobs, mask = answer_logprobs(policy, batch.queries, batch.responses, pad)
    nudge(policy, seed=2)
    advantages, _ = group_advantages(batch.rewards, G, "rloo", "none")
    assert_equal(advantages, inputs["advantages"], "advantages")
    logprobs, _ = answer_logprobs(policy, batch.queries, batch.responses, pad)
    ours, _ = grpo_loss(logprobs, old_logprobs, old_logprobs, advantages, mask, CLIP, 0.0, CLIP_HIGH, "grpo", 1)
    theirs = trainer._compute_loss(policy, inputs)
    assert_equal(ours, theirs, "loss")
    assert_equal(gradient(ours, policy), gradient(theirs, policy), "gradient")
    ratio = (logprobs - old_logprobs).exp()[mask]
    assert (ratio < 1 - CLIP).any() and ((ratio > 1 + CLIP) & (ratio < 1 + CLIP_HIGH)).any()


def test_rloo_on_policy_gradient_is_rloo_trainers_over_max_completion_length(micro_paths, tmp_path):
    """On-policy (ratio 1, our first mini-batch) and beta 0, both are REINFORCE with the leave-one-out baseline:
    RLOOTrainer's loss averages -A * (sum of the answer's token log-probs) over answers, our dr_grpo divides the
    same sum by answers x max_new_tokens. So its gradient is MAX_NEW times ours, on answers of 1..MAX_NEW tokens."""
    path = micro_paths["gpt2"]
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    policy = plain_lm(path)
    batch = grpo_batch(tokenizer, SAME_LENGTH_PROMPTS)
    trainer = rloo_trainer(policy, tokenizer, batch, tmp_path, beta=0.0)
    inputs = trainer._generate_and_score_completions(batch.rows)
    advantages, _ = group_advantages(batch.rewards, G, "rloo", "none")
    logprobs, mask = answer_logprobs(policy, batch.queries, batch.responses, tokenizer.pad_token_id)
    ours, _ = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), advantages, mask, CLIP, 0.0, CLIP_HIGH,
                        "dr_grpo", MAX_NEW)
    theirs = trainer._compute_loss(policy, inputs)
    assert_equal(MAX_NEW * gradient(ours, policy), gradient(theirs, policy), "gradient x max_new_tokens")


# ---------------------------------------------------------------- DPO against DPOTrainer
DPO_ITEMS = [  # (prompt, [chosen, rejected]): prompts and answers of different lengths
    ("这部电影很", ["好看，值得一看", "难看"]),
    ("刚收到货，感觉", ["质量很好，喜欢", "质量太差，非常失望"]),
    ("说实话，真的很", ["满意", "糟糕，不会再买了"]),
    ("这次购物总的来说体验很", ["不错，推荐购买", "差"]),
]


@pytest.mark.parametrize("loss", ["pairs", "plackett_luce"])
def test_dpo_loss_and_gradient_equal_dpo_trainers_sigmoid_loss(loss, micro_paths, tmp_path):
    """train_dpo's loss of a batch (pairs; or Plackett-Luce, which on lists of 2 must be the pairs loss) against
    DPOTrainer's `compute_loss` (loss_type sigmoid, label smoothing 0, explicit reference model) on the same
    encoded pairs, collated by trl's DataCollatorForPreference: value and gradient within TOL. trl adds an end token
    to each answer when it tokenizes text; fed our token ids, it scores exactly the answers we score."""
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    path, beta = micro_paths["gpt2"], 0.5
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    policy, ref_model = plain_lm(path), plain_lm(path)
    nudge(policy, seed=1)  # the policy has learnt something: the implicit rewards are not 0
    policy.train()  # as in training (dropout is off); trl logs its metrics under "train"
    encoded, left_out = encode_lists(tokenizer, DPO_ITEMS, max_seq_len=64)
    assert left_out == 0 and len(encoded) == len(DPO_ITEMS)
    config = trl_config(DPOConfig, tmp_path, beta=beta, loss_type=["sigmoid"], label_smoothing=0.0)
    # the trainer wants a training set (it tokenizes its text, with [CLS]/[SEP] and an end token); unused here
    train_dataset = Dataset.from_list([{"prompt": p, "chosen": a[0], "rejected": a[1]} for p, a in DPO_ITEMS])
    trainer = DPOTrainer(model=policy, ref_model=ref_model, args=config, train_dataset=train_dataset,
                         processing_class=tokenizer)
    trl_batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(
        [{"prompt_ids": prompt, "chosen_ids": answers[0], "rejected_ids": answers[1]} for prompt, answers in encoded])

    ours, margins = preference_loss(policy, ref_model, collate(encoded), beta, loss, Accelerator(cpu=True),
                                    tokenizer.pad_token_id)
    theirs = trainer.compute_loss(policy, trl_batch)
    assert margins.abs().min() > 0.01  # the policy is away from its reference on every pair
    assert_equal(ours, theirs, "loss")
    assert_equal(gradient(ours, policy), gradient(theirs, policy), "gradient")
    # trl's logged margin is beta * (chosen - rejected log-ratio), as our implicit-reward margins
    assert_equal(margins.mean(), trainer._metrics["train"]["rewards/margins"][-1], "mean reward margin")


# ---------------------------------------------------------------- the reward model against RewardTrainer
RANK_PAIRS = [  # best first, texts of different lengths
    ["这部电影很好看，值得一看", "难看"],
    ["质量很好，喜欢", "质量太差，非常失望，不会再买了"],
    ["满意", "糟糕"],
]


@pytest.mark.parametrize("loss", [rank_list_loss, listwise_loss], ids=["pairwise", "listwise"])
def test_reward_model_loss_on_pairs_equals_reward_trainers(loss, micro_paths, tmp_path):
    """train_reward_model's step on rank lists of 2 (our encoder + linear head on the pooled output; the pairwise
    rank-list loss, and ListMLE, which on pairs is the same) against RewardTrainer's `compute_loss`
    (-logsigmoid(chosen - rejected), no margin, center_rewards_coefficient None: ours has no centring term) on a
    sequence-classification model with our weights (num_labels 1: the same pooled output and linear head)."""
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    path = micro_paths["encoder"]
    tokenizer = load_pretrained(AutoTokenizer, path)
    torch.manual_seed(0)
    ours_model = RewardModel(load_pretrained(AutoModel, path))
    nudge(ours_model, seed=1, scale=0.2)  # a reward model that has learnt something: its pairs' scores differ
    nudge(ours_model.head, seed=2, scale=0.5)  # by 0.2 to 2.7 (the fresh head's scores differ by 0.05 at most)
    trl_model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path, num_labels=1))
    trl_encoder = getattr(trl_model, trl_model.base_model_prefix)  # BertForSequenceClassification's .bert
    trl_encoder.load_state_dict(ours_model.encoder.state_dict())
    trl_model.classifier.load_state_dict(ours_model.head.state_dict())
    ours_model.train(), trl_model.train()  # the micro encoder has no dropout: train mode is deterministic

    pairs = [{"chosen_ids": tokenizer(chosen, truncation=True, max_length=64)["input_ids"],
              "rejected_ids": tokenizer(rejected, truncation=True, max_length=64)["input_ids"]}
             for chosen, rejected in RANK_PAIRS]
    config = trl_config(RewardConfig, tmp_path, center_rewards_coefficient=None)
    trainer = RewardTrainer(model=trl_model, args=config, train_dataset=Dataset.from_list(pairs),
                            processing_class=tokenizer)
    trl_batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(pairs)

    scores, list_mask = score_batch(ours_model, next(iter(make_loader(RANK_PAIRS, tokenizer, 64, len(RANK_PAIRS)))))
    ours = loss(scores, list_mask)
    theirs = trainer.compute_loss(trl_model, trl_batch)
    assert (scores[:, 0] - scores[:, 1]).abs().min() > 0.1
    assert_equal(ours, theirs, "loss")
    assert_equal(gradient(ours, ours_model.encoder), gradient(theirs, trl_encoder), "gradient of the encoder")
    assert_equal(gradient(ours, ours_model.head), gradient(theirs, trl_model.classifier), "gradient of the head")
