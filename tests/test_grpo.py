"""GRPO sentiment example: the algorithm's pieces, learning, logs, checkpoints and resume, bad input, accelerate."""
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

import grpo_sentiment_example
from conftest import REPO, cpu_only, run_in_process
from grpo_sentiment_example import TINY
from utils.answer_logprobs import answer_logprobs
from utils.tokens import encode_prompt
from utils.logger import read_jsonl
from utils.checkpoints import load_checkpoint_state, save_policy_checkpoint
from utils.policy import load_policy

SCRIPT = os.path.join(REPO, "grpo_sentiment_example.py")
SMALL = ["--tiny", "--batch_size", "8", "--group_size", "4", "--mini_batch_size", "4", "--gen_len", "6",
         "--num_samples", "2"]
FIELDS = ("epoch", "reward_mean", "reward_std", "group_reward_std", "kl", "kl_coef", "policy_loss", "kl_penalty",
          "response_len", "distinct_2", "time_generate", "time_reward", "time_optimize", "time_epoch")
LOG = "GRPO-Sentiment-Zh.jsonl"


@pytest.fixture
def env(micro_env):
    return dict(micro_env, OMP_NUM_THREADS="1")


def checkpoints(save_dir):
    return sorted(os.listdir(save_dir)) if os.path.isdir(save_dir) else []




def assert_error_line(stderr, *fragments):
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- the algorithm's pieces
def test_group_advantages_whiten_each_group_and_zero_an_equal_group():
    from grpo_sentiment_example import group_advantages

    advantages, std = group_advantages([1.0, 2.0, 3.0, 0.7, 0.7, 0.7], group_size=3)
    assert advantages[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-3)  # std 1 (unbiased)
    assert advantages[3:].tolist() == [0.0, 0.0, 0.0]  # zero std: zero advantage, no NaN
    assert std.tolist() == pytest.approx([1.0, 0.0])
    # the scale of the rewards does not matter: raw reward-model scores need no normalising
    scaled, _ = group_advantages([100.0, 200.0, 300.0], group_size=3)
    assert scaled.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-3)


def test_grpo_loss_clips_the_ratio_and_penalises_kl():
    from grpo_sentiment_example import grpo_loss

    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    advantages = torch.tensor([1.0, -1.0])
    # the same policy as when sampled and as the reference: ratio 1, loss -mean(A), no KL
    loss, parts = grpo_loss(old, old, old, advantages, mask, cliprange=0.2, beta=0.1)
    assert loss.item() == pytest.approx(0.0) and parts["kl_penalty"] == pytest.approx(0.0)
    # ratio 1.5 on every token: the positive advantage counts up to 1.2 only, the negative one fully
    new = old + math.log(1.5)
    loss, parts = grpo_loss(new, old, new, advantages, mask, cliprange=0.2, beta=0.1)
    assert parts["policy_loss"] == pytest.approx((-1.2 + 1.5) / 2) and parts["clip_frac"] == 1.0
    # k3 of a policy 1.5x the reference per token: exp(-log 1.5) + log 1.5 - 1, added with weight beta
    k3 = 1 / 1.5 + math.log(1.5) - 1
    loss, parts = grpo_loss(new, new, old, advantages, mask, cliprange=0.2, beta=0.1)
    assert parts["kl_penalty"] == pytest.approx(k3) and loss.item() == pytest.approx(0.0 + 0.1 * k3)


def test_answer_logprobs_match_each_answer_scored_alone(micro_paths):
    """A padded batch (prompts of different lengths, answers too) gives each answer the log-probs it has alone."""
    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu", stop_at_sep=True)
    queries = [encode_prompt(tokenizer, p) for p in ["这部电影很", "好", "这次购物总的来说体验很"]]
    responses = [torch.tensor(tokenizer.convert_tokens_to_ids(list(a))) for a in ["好看", "不错啊真的", "一般"]]
    responses[2] = torch.cat([responses[2], torch.tensor([tokenizer.sep_token_id])])
    with torch.no_grad():
        batch, mask = answer_logprobs(policy, queries, responses, tokenizer.pad_token_id)
        for i, (query, response) in enumerate(zip(queries, responses)):
            alone, _ = answer_logprobs(policy, [query], [response], tokenizer.pad_token_id)
            assert mask[i].sum().item() == len(response)
            assert batch[i, :len(response)].tolist() == pytest.approx(alone[0].tolist(), abs=1e-5)
            assert batch[i, len(response):].abs().sum().item() == 0.0
            logits = policy(torch.cat([query, response]).unsqueeze(0)).logits[0]
            direct = torch.log_softmax(logits[len(query) - 1:-1], -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
            assert alone[0].tolist() == pytest.approx(direct.tolist(), abs=1e-5)


def test_a_mini_batch_of_answers_shorter_than_the_batchs_longest_trains(micro_paths):
    """With --stop_at_sep answers end after different lengths, and a mini-batch may hold only short ones: it is
    scored on the batch's columns (it used to stop the run: "The size of tensor a (4) must match ... (16)")."""
    from grpo_sentiment_example import GRPOConfig, grpo_update, make_grpo

    policy, ref_model, tokenizer = load_policy(micro_paths["gpt2"], "cpu", stop_at_sep=True)
    config = GRPOConfig(learning_rate=1e-3, mini_batch_size=1, grpo_epochs=1, group_size=2, beta=0.1, cliprange=0.2,
                        epsilon_high=0.28, scale_rewards="group", loss_type="grpo", advantage="group_mean",
                        max_new_tokens=6)
    grpo = make_grpo(policy, ref_model, tokenizer, config, Accelerator(cpu=True))
    before = [p.detach().clone() for p in grpo.policy.parameters()]
    queries = [encode_prompt(tokenizer, "这部电影很")] * 2
    responses = [torch.tensor(tokenizer.convert_tokens_to_ids(list("好看的电影"))),
                 torch.tensor(tokenizer.convert_tokens_to_ids(["好", "[SEP]"]))]
    with torch.no_grad():
        logprobs, mask = answer_logprobs(grpo.policy, queries, responses, tokenizer.pad_token_id)
    stats, kl = grpo_update(grpo, queries, responses, [row[keep] for row, keep in zip(logprobs, mask)],
                            torch.tensor([1.0, -1.0]))
    assert all(math.isfinite(value) for value in stats.values()) and kl.tolist() == pytest.approx([0.0, 0.0])
    assert any(not torch.equal(b, p) for b, p in zip(before, grpo.policy.parameters()))


# ---------------------------------------------------------------- learning
def test_a_few_grpo_epochs_learn_an_easy_reward(micro_dir, tmp_path, monkeypatch):
    """12 epochs of the real loop on the micro GPT-2 raise the share of '的' in the answers."""
    import grpo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    torch.set_num_threads(1)

    def share_of_de(texts):
        return [text.count("的") / len(text) for text in texts]

    grpo_sentiment_example.main(
        ["--tiny", "--steps", str(12 * 32), "--batch_size", "32", "--group_size", "8", "--mini_batch_size", "16",
         "--gen_len", "8", "--lr", "5e-3", "--grpo_epochs", "2", "--beta", "0.01", "--num_samples", "0",
         "--save_freq", "100", "--seed", "0", "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")],
        reward_fn=share_of_de)
    records = read_jsonl(str(tmp_path / "logs" / LOG))
    rewards = [r["reward_mean"] for r in records]
    assert len(rewards) == 12
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.05 and last > 2 * first, rewards
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-4) and records[-1]["kl"] > 0.01  # moved from the reference


@pytest.mark.parametrize("variant", [[], ["--scale_rewards", "none", "--advantage", "rloo", "--loss_type", "dr_grpo",
                                      "--epsilon_high", "0.28"]], ids=["paper", "dr_grpo_rloo"])
def test_equal_rewards_give_zero_advantage_and_finite_logs(variant, micro_dir, micro_paths, tmp_path, monkeypatch):
    """A constant reward: every group's std is 0, no NaN anywhere, and (no advantage, no KL yet) no update."""
    import grpo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    grpo_sentiment_example.main([*SMALL, *variant, "--steps", "16", "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                 str(tmp_path / "logs")], reward_fn=lambda texts: [0.5] * len(texts))
    records = read_jsonl(str(tmp_path / "logs" / LOG))
    assert len(records) == 2 and not any(r["skipped"] for r in records)
    for record in records:
        assert all(math.isfinite(record[key]) for key in FIELDS), record
        assert record["group_reward_std"] == 0.0 and record["policy_loss"] == 0.0
    saved = os.path.join(tmp_path / "ck", checkpoints(tmp_path / "ck")[0])
    trained, _, _ = load_policy(saved, "cpu")
    base, _, _ = load_policy(micro_paths["gpt2"], "cpu")
    pairs = zip(trained.parameters(), base.parameters())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_nan_reward_skips_the_update(micro_dir, tmp_path, monkeypatch):
    import grpo_sentiment_example

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    calls = []

    def flaky(texts):
        calls.append(len(texts))
        bad = {2: float("nan"), 3: float("inf")}.get(len(calls))
        return [bad if bad is not None and i == 1 else float(i % 2) for i in range(len(texts))]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grpo_sentiment_example.main([*SMALL, "--steps", "32", "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                     str(tmp_path / "logs")], reward_fn=flaky)
    skipped = [w for w in caught if "GRPO update skipped" in str(w.message)]
    assert len(skipped) == 2 and "1 of 8 rewards" in str(skipped[0].message)
    records = read_jsonl(str(tmp_path / "logs" / LOG))
    assert [r["skipped"] for r in records] == [False, True, True, False]
    assert "kl" not in records[1] and "policy_loss" not in records[2] and "kl" in records[3]
    assert all(math.isfinite(r["reward_mean"]) for r in records)  # the finite rewards are still reported


# ---------------------------------------------------------------- the script as a user runs it
def test_run_logs_sigterm_saves_resume_and_inference(env, micro_main, tmp_path, capsys):
    """A run killed with SIGTERM saves a checkpoint; --resume continues it; inference_ppo_gpt.py loads it."""
    save_dir, log_dir = str(tmp_path / "ck"), str(tmp_path / "logs")
    common = SMALL + ["--save_dir", save_dir, "--log_dir", log_dir, "--save_freq", "2"]
    jsonl = os.path.join(log_dir, LOG)
    process = subprocess.Popen([sys.executable, SCRIPT, *common, "--steps", "8000"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(read_jsonl(jsonl)) < 3 and process.poll() is None:
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
    assert "2 prompts x 4 answers" in out and "GRPO epochs" in err  # the progress bar
    for record in records:
        assert all(isinstance(record[key], (int, float)) for key in FIELDS), record
        assert 0.0 <= record["reward_mean"] <= 1.0 and record["time_epoch"] >= record["time_optimize"] > 0
        assert record["response_len"] >= 5 and record["kl_coef"] == TINY["beta"]
    assert os.path.getsize(os.path.join(log_dir, "GRPO-Sentiment-Zh.png")) > 1000
    interrupted = os.path.join(save_dir, checkpoints(save_dir)[-1])
    state = load_checkpoint_state(interrupted)
    assert state["epoch"] == done and state["algorithm"] == "grpo", (checkpoints(save_dir), err)
    assert state["reason"] == "interrupted" or (done % 2 == 0 and state["reason"] == "periodic"), state
    assert checkpoints(save_dir)[0].startswith("model_2_")  # the periodic one

    # resume from the periodic checkpoint: the epochs after it are redone and logged once
    periodic = os.path.join(save_dir, checkpoints(save_dir)[0])
    result = micro_main(grpo_sentiment_example.main, [*common, "--steps", str(8 * (done + 1)), "--resume", periodic])
    assert result.returncode == 0, result.stderr
    assert "epoch 2 mean-reward" in result.stdout and f"epoch {done} mean-reward" in result.stdout
    assert "epoch 1 mean-reward" not in result.stdout
    assert [r["epoch"] for r in read_jsonl(jsonl)] == list(range(done + 1))
    final = [name for name in checkpoints(save_dir) if name.startswith(f"model_{done + 1}_")]
    assert final and load_checkpoint_state(os.path.join(save_dir, final[0]))["epoch"] == done + 1

    import inference_ppo_gpt

    inference_ppo_gpt.main(["--save_dir", save_dir, "--prompt", "这部电影很", "--num", "3", "--compare_ref"])
    out = capsys.readouterr().out
    assert f"model_{done + 1}_" in out and out.count(": 这部电影很") == 6 and "[SEP]" not in out


def test_reward_model_raw_scores_drive_the_loop(micro_main, micro_paths, tmp_path):
    """--reward_model: raw scores (here around 5, far from the classifier's 0..1) are logged as they are; bf16."""
    from transformers import AutoModel, AutoTokenizer

    from utils.reward_model import RewardModel, save_reward_model

    torch.manual_seed(0)
    reward_model = RewardModel(AutoModel.from_pretrained(micro_paths["encoder"]))
    with torch.no_grad():
        reward_model.head.bias.fill_(5.0)
    save_reward_model(reward_model, AutoTokenizer.from_pretrained(micro_paths["encoder"]), str(tmp_path / "rm"))
    result = micro_main(grpo_sentiment_example.main, [
        *SMALL, "--steps", "16", "--reward_model", str(tmp_path / "rm"), "--mixed_precision", "bf16",
        "--save_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs")])
    assert result.returncode == 0, result.stderr
    records = read_jsonl(str(tmp_path / "logs" / LOG))
    assert len(records) == 2 and all(3.0 < r["reward_mean"] < 7.0 for r in records), records
    assert all(math.isfinite(r["policy_loss"]) for r in records)


def test_a_run_of_one_epoch_says_so_in_the_singular(micro_main, tmp_path):
    result = micro_main(grpo_sentiment_example.main, [*SMALL, "--steps", "8", "--save_dir", str(tmp_path / "ck"),
                                                      "--log_dir", str(tmp_path / "logs")])
    assert result.returncode == 0, result.stderr
    assert "done: 1 epoch, logs in " in result.stdout


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("sizes, fragments", [
    (["--group_size", "1"], ["--group_size 1", "at least 2"]),
    (["--group_size", "3"], ["--batch_size 8", "not a multiple of --group_size 3"]),
])
def test_bad_group_size_is_refused_at_start(micro_dir, tmp_path, monkeypatch, capsys, sizes, fragments):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    code, stderr = run_in_process(grpo_sentiment_example.main, [*SMALL, *sizes, "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                   str(tmp_path / "logs")], capsys)
    assert code == 2
    assert_error_line(stderr, *fragments)
    assert not os.path.exists(tmp_path / "logs") and not os.path.exists(tmp_path / "ck")


# ---------------------------------------------------------------- several processes
@pytest.mark.slow
def test_accelerate_launch_two_processes(env, tmp_path):
    save_dir, log_dir = str(tmp_path / "ck"), str(tmp_path / "logs")
    # --main_process_port 0: a free port, not the default 29500 that another test worker may take at the same moment
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", "0", SCRIPT,
                             *SMALL, "--steps", "16", "--save_dir", save_dir, "--log_dir", log_dir],
                            cwd=REPO, env=cpu_only(env), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 2 process(es)" in result.stdout
    records = read_jsonl(os.path.join(log_dir, LOG))
    assert [r["epoch"] for r in records] == [0, 1]  # written once, by the main process
    assert result.stdout.count("epoch 1 mean-reward") == 1
    saved = checkpoints(save_dir)
    assert len(saved) == 1 and load_checkpoint_state(os.path.join(save_dir, saved[0]))["epoch"] == 2


# ---------------------------------------------------------------- the judge the README's figures come from
def test_bench_independent_scorer_compares_a_checkpoint_with_its_reference(micro_paths, tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import bench_independent_scorer

    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    with torch.no_grad():
        policy.lm_head.weight.mul_(3.0)  # sharper: a different model, far from the reference
    checkpoint = save_policy_checkpoint(policy, tokenizer, str(tmp_path / "model_1_0.50"),
                                     {"epoch": 1, "kl_coef": 0.5, "base_model": micro_paths["gpt2"]})
    bench_independent_scorer.main(["--checkpoint", checkpoint, "--num", "4", "--gen_len", "5"])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"reference", "tuned"} and all(row[1] == "16" for row in rows.values())
    assert all(0.0 <= float(row[2]) <= 1.0 and 0.0 < float(row[3]) <= 1.0 for row in rows.values())
    assert float(rows["reference"][5]) == 0.0 and float(rows["tuned"][5]) > 1.0


# ---------------------------------------------------------------- the field's variants, each against a direct computation
REWARDS = [0.9, 0.5, 0.1, 0.3, 0.2, 0.2, 0.2, 0.2]  # two groups of 4: one spread out, one all equal but one


def direct_advantages(rewards, group_size, baseline, scale):
    """The same advantages with plain Python loops over a hand-made batch."""
    out, batch_mean = [], sum(rewards) / len(rewards)
    batch_std = math.sqrt(sum((r - batch_mean) ** 2 for r in rewards) / (len(rewards) - 1))
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        mean = sum(group) / group_size
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (group_size - 1))
        for i, r in enumerate(group):
            others = (sum(group) - r) / (group_size - 1)
            advantage = r - (others if baseline == "rloo" else mean)
            out.append({"group": advantage / (std + 1e-4), "batch": advantage / (batch_std + 1e-4),
                        "none": advantage}[scale])
    return out


@pytest.mark.parametrize("baseline", ["group_mean", "rloo"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_a_direct_computation(baseline, scale):
    from grpo_sentiment_example import group_advantages

    advantages, _ = group_advantages(REWARDS, 4, baseline, scale)
    assert advantages.tolist() == pytest.approx(direct_advantages(REWARDS, 4, baseline, scale), rel=1e-5, abs=1e-6)


def test_rloo_is_the_group_mean_advantage_times_g_over_g_minus_1():
    from grpo_sentiment_example import group_advantages

    mean_based, _ = group_advantages(REWARDS, 4, "group_mean", "none")
    rloo, _ = group_advantages(REWARDS, 4, "rloo", "none")
    assert rloo.tolist() == pytest.approx((mean_based * 4 / 3).tolist())


@pytest.mark.parametrize("baseline", ["group_mean", "rloo"])
def test_unscaled_advantages_of_an_all_equal_group_are_zero_not_nan(baseline):
    from grpo_sentiment_example import group_advantages

    advantages, std = group_advantages([0.7] * 4 + [0.96, 0.961, 0.96, 0.96], 4, baseline, "none")
    assert advantages[:4].tolist() == [0.0] * 4 and torch.isfinite(advantages).all()
    # Dr. GRPO's point: a group whose rewards differ by a thousandth keeps a thousandth-size advantage ...
    assert advantages[4:].abs().max().item() < 0.002
    # ... where the paper's group scaling blows it up to unit size
    scaled, _ = group_advantages([0.96, 0.961, 0.96, 0.96], 4, baseline, "group")
    assert scaled.abs().max().item() > 1.0


def direct_loss(logprobs, old, ref, advantages, mask, low, high, beta, loss_type, max_new_tokens):
    """The GRPO loss token by token in plain Python."""
    per_answer, total = [], 0.0
    for i in range(len(advantages)):
        answer = []
        for t in range(len(mask[i])):
            if not mask[i][t]:
                continue
            ratio = math.exp(logprobs[i][t] - old[i][t])
            surrogate = -min(ratio * advantages[i], min(max(ratio, 1 - low), 1 + high) * advantages[i])
            d = ref[i][t] - logprobs[i][t]
            answer.append(surrogate + beta * (math.exp(d) - d - 1))
        per_answer.append(sum(answer) / len(answer))
        total += sum(answer)
    if loss_type == "dr_grpo":
        return total / (len(advantages) * max_new_tokens)
    return sum(per_answer) / len(per_answer)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
@pytest.mark.parametrize("epsilon_high", [None, 0.28])
def test_grpo_loss_variants_match_a_direct_computation(loss_type, epsilon_high):
    from grpo_sentiment_example import grpo_loss

    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    old = torch.randn(3, 3) - 2
    logprobs = old + torch.tensor([[0.25, -0.3, 0.1], [0.22, 0.0, 0.0], [-0.1, 0.4, 0.9]])  # ratios inside and out
    ref = old + 0.3 * torch.randn(3, 3)
    advantages = torch.tensor([1.0, 0.5, -1.0])
    loss, _ = grpo_loss(logprobs, old, ref, advantages, mask, 0.2, 0.1, epsilon_high, loss_type, max_new_tokens=4)
    expected = direct_loss(logprobs.tolist(), old.tolist(), ref.tolist(), advantages.tolist(), mask.tolist(),
                           0.2, 0.2 if epsilon_high is None else epsilon_high, 0.1, loss_type, 4)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_clip_higher_lets_a_positive_advantage_push_the_ratio_further():
    from grpo_sentiment_example import grpo_loss

    mask, old, advantages = torch.ones(1, 1), torch.zeros(1, 1), torch.tensor([1.0])
    new = old + math.log(1.25)  # ratio 1.25: clipped at 1.2 symmetrically, not at 1 + 0.28
    _, symmetric = grpo_loss(new, old, new, advantages, mask, 0.2, 0.0)
    _, higher = grpo_loss(new, old, new, advantages, mask, 0.2, 0.0, epsilon_high=0.28)
    assert symmetric["policy_loss"] == pytest.approx(-1.2) and symmetric["clip_frac"] == 1.0
    assert higher["policy_loss"] == pytest.approx(-1.25) and higher["clip_frac"] == 0.0


@pytest.mark.parametrize("bad, fragment", [(["--epsilon_high", "-0.1"], "--epsilon_high -0.1"),
                                           (["--cliprange", "1.5"], "--cliprange 1.5"),
                                           (["--scale_rewards", "std"], "--scale_rewards")])
def test_bad_variant_options_are_one_line_errors(bad, fragment, micro_dir, monkeypatch, capsys):
    import grpo_sentiment_example
    from utils.errors import run_main

    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: grpo_sentiment_example.main(["--tiny", *bad]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
