"""PPO sentiment example: learning, logs, checkpoints and resume, reward sources, bad input, accelerate."""
import copy
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

import ppo_sentiment_example
import utils.online
from bench import micro_ppo
from conftest import REPO, cpu_only, run_in_process, run_script_in_process
from utils.device import set_seed
from utils.errors import UserError
from utils.generation import generate_responses
from utils.logger import distinct_2, random_samples, read_jsonl
from utils.tokens import encode_prompt
from utils.checkpoints import load_checkpoint_state, save_policy_checkpoint
from utils.policy import load_policy
from utils.reward_model import RewardModel, save_reward_model
from utils.reward_sources import RewardModelReward, RewardNormalizer, SentimentPipelineReward
from utils.value_head import with_value_head

SCRIPT = os.path.join(REPO, "ppo_sentiment_example.py")
SMALL = ["--tiny", "--batch_size", "8", "--mini_batch_size", "4", "--gen_len", "6", "--num_samples", "2"]
FIELDS = ("epoch", "raw_score_mean", "raw_score_std", "reward_mean", "reward_std", "kl", "kl_coef", "response_len",
          "distinct_2", "time_generate", "time_reward", "time_optimize", "time_epoch")


@pytest.fixture
def env(micro_env):
    return dict(micro_env, OMP_NUM_THREADS="1")  # the micro models gain nothing from threads on a busy machine


def tree_digest(path):
    """Hash of every file under `path` (names and contents)."""
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            digest.update(os.path.relpath(os.path.join(root, name), path).encode())
            with open(os.path.join(root, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def checkpoints(save_dir):
    return sorted(os.listdir(save_dir)) if os.path.isdir(save_dir) else []


def micro_trainer(micro_paths, **ppo):
    """Our PPO on the micro GPT-2 (mini-batches of 4, 2 PPO epochs) and its tokenizer."""
    from ppo_sentiment_example import PPOConfig, make_ppo

    policy, ref_model, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    config = PPOConfig(**dict(dict(mini_batch_size=4, ppo_epochs=2, learning_rate=1e-3), **ppo))
    return make_ppo(policy, ref_model, tokenizer, config, Accelerator(cpu=True)), tokenizer


# ---------------------------------------------------------------- learning
def test_the_loop_learns_an_easy_reward(micro_dir, tmp_path, monkeypatch):
    """16 epochs of the real loop on the micro GPT-2 raise the share of common characters in the answers (of '的'
    alone, about 0.04 at the start, the batch of 16 sees too few to learn from within 16 epochs)."""
    import ppo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    torch.set_num_threads(1)

    def share_of_common(texts):
        return [sum(text.count(ch) for ch in "的了是很不我一") / len(text) for text in texts]

    ppo_sentiment_example.main(
        ["--tiny", "--steps", str(16 * 16), "--batch_size", "16", "--mini_batch_size", "8", "--gen_len", "8",
         "--lr", "5e-3", "--ppo_epochs", "4", "--init_kl_coef", "0.01", "--num_samples", "0", "--save_freq", "100",
         "--seed", "0",
         "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")], reward_fn=share_of_common)
    rewards = [r["reward_mean"] for r in read_jsonl(str(tmp_path / "logs" / "PPO-Sentiment-Zh.jsonl"))]
    assert len(rewards) == 16
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.03 and last > 1.5 * first, rewards


def test_the_run_stops_once_the_last_ten_epochs_reach_stop_at_reward(micro_dir, tmp_path, monkeypatch, capsys):
    """--tiny stops at a mean reward of 0.9 over the last 10 epochs (the quick start's lesson shown); off trains all."""
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    for option, epochs in (([], 15), (["--stop_at_reward", "off"], 18)):
        levels = iter([0.1] * 5 + [0.95] * 13)  # the 10-epoch mean passes 0.9 at epoch 15

        def reward(texts):
            return [next(levels)] * len(texts)

        save_dir, log_dir = tmp_path / f"ck{epochs}", tmp_path / f"logs{epochs}"
        ppo_sentiment_example.main([*SMALL, "--steps", str(18 * 8), "--save_freq", "100", *option,
                                    "--save_dir", str(save_dir), "--log_dir", str(log_dir)], reward_fn=reward)
        assert len(read_jsonl(str(log_dir / "PPO-Sentiment-Zh.jsonl"))) == epochs
        (saved,) = checkpoints(save_dir)
        state = load_checkpoint_state(str(save_dir / saved), "ppo")
        assert state["epoch"] == epochs
        out = capsys.readouterr().out
        if option:
            assert state["reason"] == "end" and "stopping" not in out
        else:
            assert state["reason"] == "reward_reached"
            assert "the mean reward of the last 10 epochs reached 0.9 at epoch 15: stopping" in out


# ---------------------------------------------------------------- the shared PPO pieces
def test_ppo_step_trains_a_short_batch_and_refuses_nan(micro_paths):
    from ppo_sentiment_example import ppo_update

    trainer, tokenizer = micro_trainer(micro_paths)
    queries = [encode_prompt(tokenizer, "这部电影很")] * 5
    responses = generate_responses(trainer.unwrapped_policy(), tokenizer, queries, 6)
    before = {k: v.clone() for k, v in trainer.unwrapped_policy().state_dict().items()}

    with pytest.warns(UserWarning, match="NaN or infinite"):
        assert ppo_update(trainer, queries, responses, [0.5, float("nan"), 0.1, 0.2, 0.3]) is None
    with pytest.warns(UserWarning, match="NaN or infinite"):
        assert ppo_update(trainer, queries, responses, [0.5, float("inf"), 0.1, 0.2, 0.3]) is None
    after = trainer.unwrapped_policy().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a NaN reward changed the model"

    stats = ppo_update(trainer, queries, responses, [1.0, 0.0, 1.0, 0.0, 1.0])  # mini-batches of 4 and 1
    assert stats is not None and all(math.isfinite(value) for value in stats.values()), stats
    assert trainer.config.mini_batch_size == 4
    assert any(not torch.equal(before[k], v) for k, v in trainer.unwrapped_policy().state_dict().items())
    assert trainer.unwrapped_policy().pretrained_model.transformer.h[0].attn.attn_dropout.p == 0.0


def test_ppo_update_skips_batches_without_enough_answer_tokens(micro_paths):
    """All answers empty, or a single one-token answer: nothing to whiten advantages over, so the update is skipped
    with a warning and the weights stay as they were; empty answers beside real ones train without NaN (in
    mini-batches of one answer: one of them has no answer token at all)."""
    from ppo_sentiment_example import ppo_update

    trainer, tokenizer = micro_trainer(micro_paths, mini_batch_size=1)
    policy = trainer.unwrapped_policy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    query = encode_prompt(tokenizer, "这部电影很")
    empty, one_token = torch.zeros(0, dtype=torch.long), query[-1:].clone()
    for responses in ([empty, empty], [one_token], [empty, one_token]):
        with pytest.warns(UserWarning, match="too few answer tokens"):
            assert ppo_update(trainer, [query] * len(responses), responses, [1.0] * len(responses)) is None
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())

    stats = ppo_update(trainer, [query] * 3, [empty, one_token, query[-3:].clone()], [1.0, 0.0, 0.5])
    assert all(math.isfinite(value) for value in stats.values()), stats
    after = policy.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], v) for k, v in after.items())


def test_sampling_keeps_the_log_probs_and_values_the_update_would_compute(micro_paths):
    """What `generate_responses(..., with_logprobs=True)` keeps of a policy with PPO's value head equals what
    `score_answers` computes of the same answers, and a full forward pass of each answer alone: answers that end at
    [SEP] after different lengths (the first token's log-probability under the model's own distribution, not the
    one sampling renormalised without the end tokens), repeated prompts, a one-token prompt, and a batch of one-token
    prompts only (no prefix pass at all)."""
    from utils.answer_logprobs import score_answers

    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu", stop_at_sep=True)
    policy = with_value_head(policy)
    texts = ["这部电影很", "好", "这部电影很", "这次购物总的来说体验很"] * 4
    lengths = set()
    for queries in ([encode_prompt(tokenizer, text) for text in texts], [encode_prompt(tokenizer, "好")] * 4):
        set_seed(0)
        sampled = generate_responses(policy, tokenizer, queries, 8, stop_at_sep=True, with_logprobs=True)
        lengths |= {len(response) for response in sampled.responses}
        with torch.no_grad():
            scores = score_answers(policy, queries, sampled.responses, tokenizer.pad_token_id)
            for i, (query, response) in enumerate(zip(queries, sampled.responses)):
                n = len(response)
                assert scores.mask[i].sum() == n and (scores.logprobs[i, n:] == 0).all()
                assert sampled.logprobs[i].tolist() == pytest.approx(scores.logprobs[i, :n].tolist(), abs=1e-5)
                assert sampled.values[i].tolist() == pytest.approx(scores.values[i, :n].tolist(), abs=1e-5)
                alone = policy(input_ids=torch.cat([query, response])[None])
                direct = alone.logits[0, len(query) - 1:-1].log_softmax(-1).gather(1, response[:, None]).squeeze(1)
                assert direct.tolist() == pytest.approx(sampled.logprobs[i].tolist(), abs=1e-5)
                assert alone.values[0, len(query) - 1:-1].tolist() == pytest.approx(sampled.values[i].tolist(),
                                                                                     abs=1e-5)
    assert len(lengths) > 1, lengths  # some answers ended early


def test_the_gradients_of_score_answers_repeat_bit_for_bit_with_two_threads(micro_paths):
    """A fixed seed repeats a run: the gradients of answers that share a prompt are summed in a fixed order also
    when torch uses two threads (the backward of `tensor[rows]` sums them in an order that varies)."""
    from utils.answer_logprobs import score_answers

    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    policy = with_value_head(policy)
    queries = [encode_prompt(tokenizer, text) for text in ["这部电影很", "这次购物总的来说体验很"] * 16]
    set_seed(0)
    responses = generate_responses(policy, tokenizer, queries, 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(5):
            policy.zero_grad(set_to_none=True)
            scores = score_answers(policy, queries, responses, tokenizer.pad_token_id)
            (scores.logprobs.sum() + scores.values.sum()).backward()
            gradients.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(gradients[0], other) for other in gradients[1:])


def test_the_update_from_sampling_is_the_update_that_recomputes(micro_paths):
    """`ppo_update` given the log-probabilities and values sampling kept takes the step it takes computing them
    (the step tests/fixtures records from trl): the same statistics and, to float rounding, the same weights."""
    from ppo_sentiment_example import ppo_update

    trainers = [micro_trainer(micro_paths)[0] for _ in range(2)]
    head = trainers[0].unwrapped_policy().v_head.state_dict()
    trainers[1].unwrapped_policy().v_head.load_state_dict(head)
    tokenizer = trainers[0].tokenizer
    queries = [encode_prompt(tokenizer, text) for text in ["这部电影很", "好", "说实话，真的很"] * 3]
    set_seed(0)
    sampled = generate_responses(trainers[0].unwrapped_policy(), tokenizer, queries, 6, with_logprobs=True)
    scores = [float(i % 3) / 2 for i in range(len(queries))]
    stats = []
    for trainer, kept in zip(trainers, (sampled[1:], None)):
        torch.manual_seed(1)
        stats.append(ppo_update(trainer, queries, sampled.responses, scores, kept))
    assert stats[0] == pytest.approx(stats[1], rel=1e-4, abs=1e-6)
    start = micro_trainer(micro_paths)[0].unwrapped_policy().state_dict()
    first, second = (trainer.unwrapped_policy().state_dict() for trainer in trainers)
    moved = sum((first[name] - start[name]).norm() ** 2 for name in first if "v_head" not in name) ** 0.5
    differ = sum((first[name] - second[name]).norm() ** 2 for name in first) ** 0.5
    assert moved > 0.01 and differ < 1e-3 * moved, (differ, moved)


with open(micro_ppo.FIXTURE, encoding="utf-8") as f:
    TRL_RECORDED = json.load(f)


@pytest.mark.parametrize("run", sorted(micro_ppo.RUNS))
def test_our_ppo_update_matches_trls_recorded_step(run):
    """Our `ppo_update` against trl 0.11.4's `PPOTrainer.step` as bench/record_trl_ppo.py recorded it (trl 1.x has
    no PPO): from the same seeded weights on the same ragged batches (prompts and answers of several lengths), two
    updates in a row (the second with the KL controller's new coefficient and a policy that moved from its
    reference), the same statistics and the same weights afterwards.

    One run is a single mini-batch (its order cannot matter), the other the original's shape (mini-batch of half
    the batch, 4 PPO epochs) with the same shuffles: trl drew them with numpy, which drew from torch's generator,
    seeded alike on both sides. The learning rate is large, so that ratios get clipped. Tolerances: float32
    arithmetic in another order (our packing pads prompts on the left, trl pads on the right; other thread counts).
    """
    from ppo_sentiment_example import PPOConfig, make_ppo, ppo_update

    recorded = TRL_RECORDED["runs"][run]
    assert recorded["config"] == micro_ppo.RUNS[run], "the fixture is older than bench/micro_ppo.py: " + \
        TRL_RECORDED["command"]
    config = PPOConfig(**recorded["config"])
    tokenizer, policy = micro_ppo.micro_tokenizer(), micro_ppo.micro_policy()
    assert micro_ppo.weights_digest(policy) == TRL_RECORDED["start_weights_sha256"], \
        "bench/micro_ppo.py builds other starting weights than those recorded: " + TRL_RECORDED["command"]
    start = micro_ppo.named_weights(policy)
    ref_lm = copy.deepcopy(policy.pretrained_model).eval().requires_grad_(False)
    ours = make_ppo(policy.pretrained_model, ref_lm, tokenizer, config, Accelerator(cpu=True))
    ours.unwrapped_policy().v_head.load_state_dict(policy.v_head.state_dict())
    clipped = 0.0
    for step, expected in enumerate(recorded["steps"]):
        queries, responses, scores = micro_ppo.micro_batch(tokenizer, seed=expected["batch_seed"])
        torch.manual_seed(expected["torch_seed"])
        assert [torch.randperm(micro_ppo.BATCH_SIZE).tolist() for _ in range(config.ppo_epochs)] == \
            expected["shuffles"], "torch draws other shuffles than trl was given: " + TRL_RECORDED["command"]
        torch.manual_seed(expected["torch_seed"])
        stats = ppo_update(ours, queries, responses, scores)
        for ours_name, trl_name in micro_ppo.TRL_STATS.items():
            assert stats[ours_name] == pytest.approx(expected["stats"][trl_name], rel=1e-4, abs=1e-5), \
                (step, ours_name)
        assert ours.kl_ctl.value == pytest.approx(expected["kl_coef_after"], rel=1e-6)
        clipped += stats["clip_frac"]
    assert ours.kl_ctl.value != config.init_kl_coef  # the controller moved
    assert clipped > 0 if config.ppo_epochs > 1 else clipped == 0  # a single pass starts at ratio 1: nothing to clip

    # the same weights: where the two updates differ, they differ by float32 noise, a thousandth of the update
    trained = micro_ppo.named_weights(ours.unwrapped_policy())
    assert list(trained) == list(recorded["moved"])
    width = policy.config.n_embd
    moved = without_key_biases({name: micro_ppo.decode_floats(m["float32_base64"], m["shape"])
                                for name, m in recorded["moved"].items()}, width)
    ours_moved = without_key_biases({name: trained[name] - start[name] for name in trained}, width)
    differ = {name: ours_moved[name] - moved[name] for name in moved}
    total_moved = torch.cat([m.flatten() for m in moved.values()]).norm()
    total_differ = torch.cat([d.flatten() for d in differ.values()]).norm()
    worst = max(differ, key=lambda name: differ[name].norm())
    assert total_moved > 0.1 and total_differ < 1e-3 * total_moved, (total_differ, total_moved, worst)


def without_key_biases(weights, width):
    """`weights` without GPT-2's attention key biases (the middle third of each `c_attn.bias`). They get no gradient
    in exact arithmetic (a key bias adds the same number to all of a query's scores, which the softmax ignores),
    only float32 noise, which Adam (eps 1e-8) turns into steps of up to the learning rate: noise on either side,
    and other noise on each."""
    return {name: torch.cat([weight[:width], weight[2 * width:]]) if name.endswith(".attn.c_attn.bias") else weight
            for name, weight in weights.items()}


def test_checkpoint_reloads_to_the_same_generations(micro_paths, tmp_path):
    from ppo_sentiment_example import ppo_update

    trainer, tokenizer = micro_trainer(micro_paths)
    queries = [encode_prompt(tokenizer, "这部电影很")] * 8
    responses = generate_responses(trainer.unwrapped_policy(), tokenizer, queries, 6)
    ppo_update(trainer, queries, responses, [float(i % 2) for i in range(8)])
    out = save_policy_checkpoint(trainer.unwrapped_policy(), tokenizer, str(tmp_path / "model_1_0.50"),
                                 {"epoch": 1, "kl_coef": trainer.kl_coef, "base_model": micro_paths["gpt2"]})
    assert os.listdir(tmp_path) == ["model_1_0.50"]  # no temporary folder left
    state = load_checkpoint_state(out)
    assert state["epoch"] == 1 and state["kl_coef"] == pytest.approx(float(trainer.kl_ctl.value))

    policy, ref_model, reloaded_tokenizer = load_policy(out, "cpu")
    policy = with_value_head(policy, out)
    trained = trainer.unwrapped_policy()
    assert torch.equal(policy.v_head.summary.weight, trained.v_head.summary.weight)
    set_seed(7)
    expected = generate_responses(trained, tokenizer, queries, 10)
    set_seed(7)
    again = generate_responses(policy, reloaded_tokenizer, queries, 10)
    assert all(torch.equal(a, b) for a, b in zip(expected, again))
    # the reference model is the base model, not the trained checkpoint
    base = AutoModel.from_pretrained(micro_paths["gpt2"])
    assert torch.equal(ref_model.transformer.wte.weight, base.wte.weight)
    assert not torch.equal(policy.pretrained_model.transformer.wte.weight, base.wte.weight)
    assert not any(p.requires_grad for p in ref_model.parameters())


def test_sentiment_reward_picks_the_positive_label_by_name(micro_paths, tmp_path):
    reward = SentimentPipelineReward(micro_paths["classifier"], "cpu")
    texts = ["这部电影很好看，推荐", "太差了，不要买"]
    scores = reward(texts)
    assert all(0.0 <= s <= 1.0 for s in scores)
    # swap the label order: the reward must follow the name, not the position
    model = AutoModelForSequenceClassification.from_pretrained(micro_paths["classifier"])
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = {0: model.config.id2label[1], 1: model.config.id2label[0]}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "swapped")
    AutoTokenizer.from_pretrained(micro_paths["classifier"]).save_pretrained(tmp_path / "swapped")
    assert SentimentPipelineReward(str(tmp_path / "swapped"), "cpu")(texts) == pytest.approx(scores, abs=1e-5)


def test_distinct_2():
    assert distinct_2(["好好好好"]) == pytest.approx(1 / 3)
    assert distinct_2(["很好看", "不错"]) == 1.0
    assert distinct_2([]) == 0.0


def test_hub_name_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not a local folder"):
        load_policy("uer/no-such-gpt2-offline", "cpu")


# ---------------------------------------------------------------- the script as a user runs it
def test_run_logs_sigterm_saves_resume_and_inference(env, micro_main, tmp_path, capsys):
    """A run killed with SIGTERM saves a checkpoint; --resume continues it; inference loads the newest."""
    save_dir, log_dir = str(tmp_path / "ck"), str(tmp_path / "logs")
    common = SMALL + ["--save_dir", save_dir, "--log_dir", log_dir, "--save_freq", "2"]
    jsonl = os.path.join(log_dir, "PPO-Sentiment-Zh.jsonl")
    process = subprocess.Popen([sys.executable, SCRIPT, *common, "--steps", "8000"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(read_jsonl(jsonl)) < 3:
        time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    records = read_jsonl(jsonl)
    done = len(records)
    assert done >= 3 and [r["epoch"] for r in records] == list(range(done))
    for epoch in range(done):
        assert f"epoch {epoch} mean-reward: " in out
    assert out.count("Random Sample 2 text(s) of model output:") == done
    assert "PPO epochs" in err  # the progress bar
    for record in records:
        assert all(isinstance(record[key], (int, float)) for key in FIELDS), record
        assert 0.0 <= record["reward_mean"] <= 1.0 and record["time_epoch"] >= record["time_optimize"] > 0
        assert record["response_len"] >= 5  # fixed-length answers: 6 tokens, at least 5 characters
    assert os.path.getsize(os.path.join(log_dir, "PPO-Sentiment-Zh.png")) > 1000
    interrupted = os.path.join(save_dir, checkpoints(save_dir)[-1])
    state = load_checkpoint_state(interrupted)
    assert state["epoch"] == done, (checkpoints(save_dir), err)
    # a SIGTERM right after a periodic save (every 2 epochs) has nothing newer to save
    assert state["reason"] == "interrupted" or (done % 2 == 0 and state["reason"] == "periodic"), state
    assert checkpoints(save_dir)[0].startswith("model_2_")  # the periodic one

    # resume from the periodic checkpoint: the epoch count and the KL coefficient carry over, and the epochs
    # after that checkpoint are redone, logged once
    periodic = os.path.join(save_dir, checkpoints(save_dir)[0])
    periodic_state = load_checkpoint_state(periodic)
    result = micro_main(ppo_sentiment_example.main, [*common, "--steps", str(8 * (done + 1)), "--resume", periodic])
    assert result.returncode == 0, result.stderr
    assert "epoch 2 mean-reward" in result.stdout and f"epoch {done} mean-reward" in result.stdout
    assert "epoch 1 mean-reward" not in result.stdout
    records = read_jsonl(jsonl)
    assert [r["epoch"] for r in records] == list(range(done + 1))
    assert records[2]["kl_coef"] == pytest.approx(periodic_state["kl_coef"])
    final = [name for name in checkpoints(save_dir) if name.startswith(f"model_{done + 1}_")]
    assert final and load_checkpoint_state(os.path.join(save_dir, final[0]))["epoch"] == done + 1

    import inference_ppo_gpt  # in this process: the interpreter start-up is the slow part here

    inference_ppo_gpt.main(["--save_dir", save_dir, "--prompt", "这部电影很", "--num", "3", "--compare_ref"])
    out = capsys.readouterr().out
    assert f"model_{done + 1}_" in out and out.count("PPO: 这部电影很") == 3
    assert out.count("ref: 这部电影很") == 3 and "[SEP]" not in out


def save_micro_reward_model(micro_paths, path, constant=None):
    """A reward-model checkpoint on the micro encoder: a random head (seed 0), or one that scores every text `constant`."""
    torch.manual_seed(0)
    reward_model = RewardModel(AutoModel.from_pretrained(micro_paths["encoder"]))
    if constant is not None:
        with torch.no_grad():
            reward_model.head.weight.zero_()
            reward_model.head.bias.fill_(constant)
    save_reward_model(reward_model, AutoTokenizer.from_pretrained(micro_paths["encoder"]), str(path))
    return str(path)


def test_reward_model_with_equal_scores_warns_and_trains_without_nan(micro_main, micro_paths, tmp_path):
    """A reward model that scores every text 5.0: the raw score is logged as it is, the reference normalisation
    warns about the missing spread instead of dividing by zero, and PPO steps without NaN."""
    reward_model = save_micro_reward_model(micro_paths, tmp_path / "rm", constant=5.0)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n好评如潮\n\n   \n", encoding="utf-8")  # blank lines are skipped
    with pytest.warns(UserWarning, match="all the same score.*not scaled"):  # on stderr in a terminal
        result = micro_main(ppo_sentiment_example.main, [
            *SMALL, "--steps", "16", "--reward_model", reward_model, "--prompts_file", str(prompts),
            "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")])
    assert result.returncode == 0, result.stderr
    records = read_jsonl(str(tmp_path / "logs" / "PPO-Sentiment-Zh.jsonl"))
    assert [r["raw_score_mean"] for r in records] == [pytest.approx(5.0, abs=1e-4)] * 2
    assert [r["reward_mean"] for r in records] == [pytest.approx(0.0, abs=1e-4)] * 2
    for record in records:
        assert not record["skipped"] and all(math.isfinite(record[key]) for key in FIELDS), record
    samples = [line for line in result.stdout.splitlines() if line[:3] in ("1. ", "2. ")]
    assert samples and all(line[3:].startswith("好评如潮") for line in samples)


def test_reward_model_loop_logs_raw_scores_and_judge_and_resumes_its_normalisation(micro_main, micro_paths, tmp_path):
    """The RLHF loop with a micro reward model: raw score, reward and judge fields in every record where they
    belong, KL bounded, and a resumed run normalises with the statistics its checkpoint kept (not measured again)."""
    reward_model = save_micro_reward_model(micro_paths, tmp_path / "rm")
    save_dir, log_dir = tmp_path / "ck", tmp_path / "logs"
    common = [*SMALL, "--reward_model", reward_model, "--save_dir", str(save_dir), "--log_dir", str(log_dir),
              "--save_freq", "2", "--ref_samples", "32"]
    first = micro_main(ppo_sentiment_example.main, [*common, "--steps", "24"])  # 3 epochs: saved after 2 and at the end
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("reference model, 32 answers per process: raw score") == 1
    periodic = str(save_dir / checkpoints(save_dir)[0])
    state = load_checkpoint_state(periodic)
    assert state["epoch"] == 2 and state["reward_norm"]["mode"] == "reference" and state["reward_norm"]["std"] > 0
    judge_ref = state["judge_ref"]["positive_prob"]
    assert 0 < judge_ref < 1

    resumed = micro_main(ppo_sentiment_example.main, [*common, "--steps", "40", "--resume", periodic])  # 2..4
    assert resumed.returncode == 0, resumed.stderr
    assert "reference model," not in resumed.stdout  # nothing measured again
    records = read_jsonl(str(log_dir / "PPO-Sentiment-Zh.jsonl"))
    assert [r["epoch"] for r in records] == list(range(5))
    mean, std = state["reward_norm"]["mean"], state["reward_norm"]["std"]
    for record in records:
        assert all(isinstance(record[key], (int, float)) for key in FIELDS), record
        # the reward PPO was given is the raw score in the same fixed units before and after the resume
        assert record["reward_mean"] == pytest.approx((record["raw_score_mean"] - mean) / std, rel=1e-6, abs=1e-6)
        assert record["reward_std"] == pytest.approx(record["raw_score_std"] / std, rel=1e-6, abs=1e-6)
        assert abs(record["kl"]) < 5.0, record
    judged = [r["epoch"] for r in records if "judge_positive_prob" in r]
    assert judged == [1, 3, 4]  # every save_freq epochs and at the end: 2 epochs done, 4 done, the end (5 done)
    for record in records:
        if "judge_positive_prob" in record:
            assert 0 < record["judge_positive_prob"] < 1 and record["judge_ref_positive_prob"] == judge_ref
    assert "judge positive_prob: " in resumed.stdout and f"(reference {judge_ref:.4f})" in resumed.stdout
    assert "raw-score: " in resumed.stdout


def test_reward_normaliser_modes():
    scores = [1.0, 2.0, 3.0, 6.0]
    assert RewardNormalizer("none")(scores) == scores
    reference = RewardNormalizer("reference").measure([0.0, 2.0])  # mean 1, std 1
    assert reference(scores) == [0.0, 1.0, 2.0, 5.0]
    assert reference(scores) == [0.0, 1.0, 2.0, 5.0]  # fixed: scoring more texts does not move it
    assert RewardNormalizer.from_state(reference.state())(scores) == [0.0, 1.0, 2.0, 5.0]
    whitened = RewardNormalizer("batch")(scores)
    assert sum(whitened) == pytest.approx(0.0) and sum(x * x for x in whitened) / 4 == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="all the same score"):
        flat = RewardNormalizer("reference").measure([0.7] * 8)
    assert flat([0.7, 1.7]) == pytest.approx([0.0, 1.0])
    with pytest.warns(UserWarning, match="all the same score"):
        assert RewardNormalizer("batch")([0.3] * 4) == [0.0] * 4
    with pytest.raises(UserError, match="unknown reward normalisation"):
        RewardNormalizer("running")


def test_reward_model_gives_raw_scores(micro_paths, tmp_path):
    reward_model = save_micro_reward_model(micro_paths, tmp_path / "rm")
    texts = ["这部电影很好看", "太差了", "还行吧，一般般"]
    reward = RewardModelReward(reward_model, "cpu", batch_size=2)
    assert reward(texts) == reward(texts) and len(set(reward(texts))) == 3


# ---------------------------------------------------------------- bad input
def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert_error_line(result.stderr, *fragments)


def assert_error_line(stderr, *fragments):
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]




def test_bad_reward_model_folder(micro_main, micro_paths, tmp_path):
    result = micro_main(ppo_sentiment_example.main, [*SMALL, "--reward_model", micro_paths["classifier"], "--save_dir",
                                                     str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")])
    assert_one_line_error(result, micro_paths["classifier"], "not a reward-model checkpoint")
    assert not os.path.exists(tmp_path / "ck") and not os.path.exists(tmp_path / "logs")


def test_bad_judge_model_folder(micro_dir, micro_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "PPO-Sentiment-Zh.jsonl").write_text('{"epoch": 0}\n')  # an earlier run's log stays as it was
    before = tree_digest(str(tmp_path))
    for folder, fragment in ((micro_paths["gpt2"], "not a reward-model checkpoint"),
                             (str(tmp_path / "nowhere"), "no such checkpoint folder")):
        code, stderr = run_in_process(ppo_sentiment_example.main, [*SMALL, "--judge_model", folder, "--save_dir", str(tmp_path / "ck"),
                                       "--log_dir", str(log_dir)], capsys)
        assert code == 2
        assert_error_line(stderr, folder, fragment)
        assert tree_digest(str(tmp_path)) == before


def test_classifier_with_other_labels(micro_dir, micro_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    model = AutoModelForSequenceClassification.from_pretrained(micro_paths["classifier"])
    model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    model.save_pretrained(tmp_path / "clf")
    AutoTokenizer.from_pretrained(micro_paths["classifier"]).save_pretrained(tmp_path / "clf")
    code, stderr = run_in_process(ppo_sentiment_example.main, [*SMALL, "--sentiment_model", str(tmp_path / "clf"), "--log_dir",
                                   str(tmp_path / "logs")], capsys)
    assert code == 2
    assert_error_line(stderr, "LABEL_0", "LABEL_1", "positive")


def test_empty_prompts_file(micro_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n  \n\n", encoding="utf-8")
    code, stderr = run_in_process(ppo_sentiment_example.main, [*SMALL, "--prompts_file", str(prompts), "--log_dir", str(tmp_path / "logs")],
                                  capsys)
    assert code == 2
    assert_error_line(stderr, str(prompts), "no prompts")
    assert not os.path.exists(tmp_path / "logs")


def test_resume_missing_or_corrupt(micro_dir, micro_paths, tmp_path, monkeypatch, capsys):
    save_dir, log_dir = tmp_path / "ck", tmp_path / "logs"
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    code, stderr = run_in_process(ppo_sentiment_example.main, [*SMALL, "--save_dir", str(save_dir), "--log_dir", str(log_dir), "--resume",
                                   str(tmp_path / "nowhere")], capsys)
    assert code == 2
    assert_error_line(stderr, "nowhere", "no such checkpoint")
    assert not os.path.exists(log_dir) and not os.path.exists(save_dir)

    trainer, tokenizer = micro_trainer(micro_paths)
    corrupt = save_policy_checkpoint(trainer.unwrapped_policy(), tokenizer, str(save_dir / "model_4_0.70"),
                                     {"epoch": 4, "kl_coef": trainer.kl_coef, "base_model": micro_paths["gpt2"]})
    with open(os.path.join(corrupt, "training_state.json"), "w") as f:
        f.write('{"epoch": 4, "kl_')
    log_dir.mkdir()
    (log_dir / "PPO-Sentiment-Zh.jsonl").write_text('{"epoch": 3}\n')
    before = tree_digest(str(tmp_path))
    result = run_script_in_process(ppo_sentiment_example.main, [*SMALL, "--save_dir", str(save_dir), "--log_dir",
                                                                 str(log_dir), "--resume", corrupt], capsys)
    assert_one_line_error(result, "training_state.json", "corrupt")
    assert tree_digest(str(tmp_path)) == before  # nothing written, nothing overwritten
    with open(os.path.join(corrupt, "training_state.json"), "w") as f:
        json.dump({"epoch": 4, "kl_coef": 0.2, "base_model": micro_paths["gpt2"]}, f)
    os.remove(os.path.join(corrupt, "model.safetensors"))
    with pytest.raises(UserError, match="incomplete checkpoint"):
        load_checkpoint_state(corrupt)


def test_nan_reward_skips_the_epoch(micro_dir, tmp_path, monkeypatch, capsys):
    import ppo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    calls = []

    def flaky(texts):
        calls.append(len(texts))
        return [float("nan") if len(calls) == 2 else 0.5] * len(texts)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ppo_sentiment_example.main([*SMALL, "--steps", "24", "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                    str(tmp_path / "logs")], reward_fn=flaky)
    assert any("PPO update skipped" in str(w.message) for w in caught)
    records = read_jsonl(str(tmp_path / "logs" / "PPO-Sentiment-Zh.jsonl"))
    assert [r["skipped"] for r in records] == [False, True, False]
    assert "kl" not in records[1] and "kl" in records[2]


# ---------------------------------------------------------------- several processes
@pytest.mark.slow
def test_accelerate_launch_two_processes(env, micro_paths, tmp_path):
    """Two processes with a reward model: reference statistics and judge scores pooled over both, logged once."""
    save_dir, log_dir = str(tmp_path / "ck"), str(tmp_path / "logs")
    reward_model = save_micro_reward_model(micro_paths, tmp_path / "rm")
    # `--cpu --num_processes 2` starts a single process in accelerate 1.x (several need mpirun)
    # --main_process_port 0: a free port, not the default 29500 that another test worker may take at the same moment
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", "0", SCRIPT,
                             *SMALL, "--steps", "16", "--save_dir", save_dir, "--log_dir", log_dir,
                             "--reward_model", reward_model, "--ref_samples", "16"],
                            cwd=REPO, env=cpu_only(env), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 2 process(es)" in result.stdout
    assert result.stdout.count("reference model, 16 answers per process") == 1
    records = read_jsonl(os.path.join(log_dir, "PPO-Sentiment-Zh.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1]  # written once, by the main process
    assert result.stdout.count("epoch 1 mean-reward") == 1
    assert 0 < records[1]["judge_positive_prob"] < 1 and 0 < records[1]["judge_ref_positive_prob"] < 1
    saved = checkpoints(save_dir)
    state = load_checkpoint_state(os.path.join(save_dir, saved[0]))
    assert len(saved) == 1 and state["epoch"] == 2 and state["reward_norm"]["std"] > 0


def test_the_samples_block_names_what_it_prints_and_is_empty_for_none(capsys):
    """`--print_samples 0` prints the epoch line alone, and asking for more samples than answers names how many
    are printed."""
    record = dict(epoch=3, reward_mean=0.5, kl=1.0, distinct_2=0.7, time_epoch=0.6)
    utils.online.print_epoch(record, ["这部电影很"], ["好看"], 0, show_raw=False)
    assert capsys.readouterr().out == "epoch 3 mean-reward: 0.5000  kl: 1.000  distinct-2: 0.70  (0.6s)\n"
    lines = random_samples(["这部电影很", "说实话，真的很"], ["好看", "不错"], 5).splitlines()
    assert lines[:2] == ["", "Random Sample 2 text(s) of model output:"]
    assert sorted(line[3:] for line in lines[2:]) == ["说实话，真的很不错", "这部电影很好看"]

