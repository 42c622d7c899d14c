"""DPO: the loss against its per-pair definition, learning on a hand-made set, the script (AI-feedback lists,
logs, checkpoints, resume, inference, accelerate) and bad input."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import train_dpo
from conftest import REPO, run_script
from train_dpo import answer_logps, dpo_loss, list_margins, plackett_luce_loss, preference_loss
from utils.ai_feedback import build_ai_feedback, ensure_ai_feedback
from utils.logger import read_jsonl
from utils.checkpoints import load_checkpoint_state
from utils.policy import load_policy
from utils import preferences
from utils.preference_data import collate, encode_lists
from utils.ranklists import append_rank_list, metadata_path

SCRIPT = os.path.join(REPO, "train_dpo.py")
PAIRS = [  # hand-made: a positive answer chosen over a negative one
    {"prompt": "这部电影很", "chosen": "好看，值得一看", "rejected": "难看，浪费时间"},
    {"prompt": "刚收到货，感觉", "chosen": "质量很好，喜欢", "rejected": "质量太差，失望"},
    {"prompt": "说实话，真的很", "chosen": "满意，推荐购买", "rejected": "糟糕，不会再买"},
    {"prompt": "", "chosen": "很好，非常满意", "rejected": "很差，非常失望"},  # no prompt: the first token conditions
]
PAIR_ITEMS = [(pair["prompt"], [pair["chosen"], pair["rejected"]]) for pair in PAIRS]  # pairs are lists of 2


@pytest.fixture
def env(micro_env):
    return dict(micro_env, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ai_lists(micro_paths, tmp_path_factory):
    """AI-feedback rank lists from the micro models: 4 prompts x 6 lists of 4 answers of 6 tokens."""
    path = str(tmp_path_factory.mktemp("ai") / "lists.tsv")
    return build_ai_feedback(path, micro_paths["gpt2"], micro_paths["classifier"], lists_per_prompt=6, gen_len=6)


def small_run(tmp_path, *extra):
    return ["--tiny", "--beta", "0.2", "--batch_size", "8", "--num_train_epochs", "1", "--gen_len", "6",
            "--num_samples", "2", "--logging_steps", "2", "--save_dir", str(tmp_path / "ck"),
            "--img_log_dir", str(tmp_path / "logs"), *extra]


# ---------------------------------------------------------------- the loss
def test_dpo_loss_equals_the_per_pair_definition():
    torch.manual_seed(0)
    logps = [-40 * torch.rand(9) for _ in range(4)]  # policy chosen / rejected, reference chosen / rejected
    for beta in (0.1, 0.5, 2.0):
        loss, chosen_rewards, rejected_rewards = dpo_loss(*logps, beta)
        losses = []
        for i, (pi_chosen, pi_rejected, ref_chosen, ref_rejected) in enumerate(zip(*(x.tolist() for x in logps))):
            chosen_reward, rejected_reward = beta * (pi_chosen - ref_chosen), beta * (pi_rejected - ref_rejected)
            assert chosen_rewards[i].item() == pytest.approx(chosen_reward, abs=1e-6)
            assert rejected_rewards[i].item() == pytest.approx(rejected_reward, abs=1e-6)
            losses.append(-math.log(1 / (1 + math.exp(-(chosen_reward - rejected_reward)))))
        assert loss.item() == pytest.approx(sum(losses) / len(losses), abs=1e-6)


def plain_answer_logp(model, prompt_ids, answer_ids):
    """log p(answer | prompt), one token at a time from an unpadded sequence (the first token of a sequence
    without prompt is given, not scored)."""
    ids = torch.tensor([prompt_ids + answer_ids])
    logprobs = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(logprobs[t - 1, ids[0, t]].item() for t in range(max(len(prompt_ids), 1), ids.shape[1]))


def test_only_the_answer_tokens_are_scored_with_the_prompt_as_condition(micro_paths):
    policy, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    encoded, _ = encode_lists(tokenizer, PAIR_ITEMS, 64)
    with torch.no_grad():
        logps = answer_logps(policy, collate(encoded), tokenizer.pad_token_id)
        plain = [plain_answer_logp(policy, prompt, answer) for prompt, answers in encoded
                 for answer in answers]
    assert len(encoded) == len(PAIRS) and encoded[3][0] == []  # the pair without a prompt is scored too
    assert logps.tolist() == pytest.approx(plain, abs=1e-4)  # batched and padded vs one sequence at a time


def test_dpo_loss_is_log_2_when_the_policy_is_the_reference():
    logps = torch.tensor([-3.0, -7.5])
    loss, chosen_rewards, rejected_rewards = dpo_loss(logps, logps + 1, logps, logps + 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and chosen_rewards.abs().max() == 0


def test_a_few_steps_raise_the_chosen_over_rejected_margin(micro_paths):
    policy, ref_model, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    lm, ref_lm = policy, ref_model
    batch = collate(encode_lists(tokenizer, PAIR_ITEMS, 64)[0])
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    margins = []
    for _ in range(8):
        loss, batch_margins = preference_loss(lm, ref_lm, batch, 0.1, "pairs", accelerator, tokenizer.pad_token_id)
        margins.append(batch_margins.tolist())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert margins[0] == [0.0] * len(PAIRS)  # the policy starts as the reference
    assert min(margins[-1]) > 0.1, margins[-1]  # every pair, the one without a prompt too
    assert loss.item() < math.log(2) - 0.05


# ---------------------------------------------------------------- Plackett-Luce on whole lists
def direct_plackett_luce(rewards):
    """-log P(order) of one list (best first) under Plackett-Luce, term by term in plain Python."""
    nll = 0.0
    for k in range(len(rewards) - 1):
        nll -= math.log(math.exp(rewards[k]) / sum(math.exp(r) for r in rewards[k:]))
    return nll


def test_plackett_luce_loss_equals_the_direct_computation_on_hand_made_lists():
    policy = torch.tensor([-10.0, -12.0, -9.0, -15.0, -20.0, -18.0, -19.0])  # a list of 4, then one of 3
    ref = torch.tensor([-11.0, -11.5, -10.0, -13.0, -19.0, -18.5, -20.0])
    for beta in (0.1, 0.5, 2.0):
        loss, rewards = plackett_luce_loss(policy, ref, [4, 3], beta)
        r = (beta * (policy - ref)).tolist()
        assert rewards.tolist() == pytest.approx(r)
        assert loss.item() == pytest.approx((direct_plackett_luce(r[:4]) + direct_plackett_luce(r[4:])) / 2, rel=1e-6)
    # margins: every ordered pair within each list, none across them
    assert list_margins(torch.tensor([3.0, 2.0, 0.0, 5.0, 1.0]), [3, 2]).tolist() == [1.0, 3.0, 2.0, 4.0]


def test_plackett_luce_on_lists_of_2_is_exactly_the_pairs_loss():
    torch.manual_seed(0)
    policy, ref = -40 * torch.rand(10), -40 * torch.rand(10)  # 5 pairs, chosen then rejected
    for beta in (0.1, 0.5):
        pl, rewards = plackett_luce_loss(policy, ref, [2] * 5, beta)
        dpo, chosen, rejected = dpo_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], beta)
        assert pl.item() == pytest.approx(dpo.item(), rel=1e-6)
        assert list_margins(rewards, [2] * 5).tolist() == pytest.approx((chosen - rejected).tolist())


def test_lists_keep_their_order_without_unscorable_or_repeated_answers(micro_paths):
    _, _, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    encoded, left_out = encode_lists(tokenizer, [("这部电影很", ["好看", "好看", "一般", "难看"]),
                                                 ("刚收到货", ["很好", "很好"])], 64)
    assert left_out == 3  # the repeat in each list, then the single answer the second list keeps
    assert len(encoded) == 1 and [tokenizer.decode(a).replace(" ", "") for a in encoded[0][1]] == ["好看", "一般", "难看"]


def test_plackett_luce_steps_order_a_whole_list(micro_paths):
    policy, ref_model, tokenizer = load_policy(micro_paths["gpt2"], "cpu")
    lm, ref_lm = policy, ref_model
    batch = collate(encode_lists(tokenizer, [("这部电影很", ["好看，值得一看", "还行吧", "难看，浪费时间"]),
                                             ("刚收到货，感觉", ["很满意", "一般般", "太差了"])], 64)[0])
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    for step in range(32):
        loss, margins = preference_loss(lm, ref_lm, batch, 0.1, "plackett_luce", accelerator, tokenizer.pad_token_id)
        if step == 0:
            assert loss.item() == pytest.approx(math.log(6))  # the policy is the reference: each order 1 / 3!
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        loss, margins = preference_loss(lm, ref_lm, batch, 0.1, "plackett_luce", accelerator, tokenizer.pad_token_id)
    assert len(margins) == 6 and min(margins.tolist()) > 0, margins  # every pair of both lists in order
    assert loss.item() < math.log(6) - 0.3


def test_ai_feedback_is_built_again_when_its_gpt2_is_rebuilt_in_the_same_folder(micro_paths, tmp_path, capsys):
    """With RLHF_TINY_DIR the tiny models keep their folder when a new recipe rebuilds them: the lists the old
    GPT-2 wrote are not taken for the new one's."""
    from transformers import GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    shutil.copytree(micro_paths["gpt2"], gpt2)
    output = str(tmp_path / "lists.tsv")
    build = dict(model_name=str(gpt2), sentiment_model=micro_paths["classifier"], lists_per_prompt=1, gen_len=4)
    ensure_ai_feedback(output, **build)
    ensure_ai_feedback(output, **build)
    assert capsys.readouterr().out.count(f"AI-feedback rank lists: reusing {output}") == 1
    GPT2LMHeadModel.from_pretrained(gpt2).save_pretrained(gpt2)  # rebuilt in place
    ensure_ai_feedback(output, **build)
    assert f"AI-feedback rank lists: building {output}" in capsys.readouterr().out


# ---------------------------------------------------------------- the script
def test_tiny_run_builds_ai_feedback_once_then_trains_logs_saves_resumes_and_infers(micro_main, tmp_path, capsys):
    ai_file = tmp_path / "ai" / "lists.tsv"
    args = small_run(tmp_path, "--ai_feedback_file", str(ai_file), "--ai_feedback_lists", "4", "--valid_steps", "3")
    first = micro_main(train_dpo.main, args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"AI-feedback rank lists: building {ai_file}" in first.stdout
    lines = ai_file.read_text(encoding="utf-8").splitlines()
    with open(metadata_path(str(ai_file)), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert len(lines) == len(records) == 16  # 4 prompts x 4 lists
    for line, record in zip(lines, records):  # the labelling page's format, best first by the classifier
        texts = line.split("\t")
        assert len(texts) == 4 and all(t.startswith(record["prompt"]) for t in texts)
        assert record["scores"] == sorted(record["scores"], reverse=True)
    # 16 lists -> 2 dev lists (12 pairs) and 14 training lists (84 pairs), less the pairs with a word piece that
    # the micro GPT-2 wrote at the start of an answer ("##3" decodes to a text that encodes as [UNK])
    n_train, n_dev = map(int, re.search(r"(\d+) train / (\d+) dev preference pairs", first.stdout).groups())
    assert 72 <= n_train <= 84 and 6 <= n_dev <= 12
    last = math.ceil(n_train / 8)
    assert last >= 9 and f"{last} steps" in first.stdout
    for step in (2, 4, 6, 8):
        assert f"global step {step}, epoch: 1, loss: " in first.stdout
    assert first.stdout.count("Evaluation acc: preference_acc ") == 4  # steps 3, 6, 9 and the last
    assert "Random Sample 2 text(s) of model output:" in first.stdout
    records = read_jsonl(str(tmp_path / "logs" / "DPO-Sentiment-Zh.jsonl"))
    evaluations = [r for r in records if "preference_acc" in r]
    assert [r["step"] for r in evaluations] == [3, 6, 9, last]
    assert all(0 <= r["preference_acc"] <= 1 and math.isfinite(r["reward_margin"]) for r in evaluations)
    assert all(math.isfinite(r["train_loss"]) for r in records if "train_loss" in r)
    assert os.path.getsize(tmp_path / "logs" / "DPO-Sentiment-Zh.png") > 1000
    saved = sorted(os.listdir(tmp_path / "ck"))
    assert saved == sorted(["model_3", "model_6", "model_9", f"model_{last}"])
    state = load_checkpoint_state(str(tmp_path / "ck" / f"model_{last}"))
    assert state["algorithm"] == "dpo" and state["reason"] == "end"
    assert state["step"] == last and state["kl_coef"] == 0.2
    assert os.path.isabs(state["base_model"]) and state["base_model"].endswith("gpt2")
    # the language model learned; DPO has no value head
    early, final = (load_file(str(tmp_path / "ck" / name / "model.safetensors"))
                    for name in ("model_3", f"model_{last}"))
    assert not any(k.startswith("v_head.") for k in final)
    assert not os.path.exists(tmp_path / "ck" / f"model_{last}" / "value_head.safetensors")
    assert any(not torch.equal(early[k], final[k]) for k in final)

    # resume from step 6: the lists are reused, the steps after 6 are redone and logged once, on the learning-rate
    # schedule of the run that was not stopped (and without torch's warning that a schedule stepped ahead prints)
    first_rates = {r["step"]: r["learning_rate"] for r in records if "learning_rate" in r}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = micro_main(train_dpo.main, args + ["--resume", str(tmp_path / "ck" / "model_6")])
    assert second.returncode == 0, second.stderr[-3000:]
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]
    assert f"AI-feedback rank lists: reusing {ai_file}" in second.stdout
    assert "resuming after step 6" in second.stdout and "global step 4," not in second.stdout
    assert "global step 8, epoch: 1" in second.stdout and second.stdout.count("Evaluation acc: ") == 2
    records = read_jsonl(str(tmp_path / "logs" / "DPO-Sentiment-Zh.jsonl"))
    assert [r["step"] for r in records if "preference_acc" in r] == [3, 6, 9, last]
    assert [r["step"] for r in records if "train_loss" in r] == list(range(2, last + 1, 2))
    resumed_rates = {r["step"]: r["learning_rate"] for r in records if "learning_rate" in r and r["step"] > 6}
    assert resumed_rates and resumed_rates == {step: first_rates[step] for step in resumed_rates}

    import inference_ppo_gpt  # in this process: the interpreter start-up is the slow part here

    inference_ppo_gpt.main(["--save_dir", str(tmp_path / "ck"), "--prompt", "这部电影很", "--num", "3",
                            "--compare_ref", "--gen_len", "6"])
    out = capsys.readouterr().out
    assert f"model_{last} (DPO, epoch 1," in out and out.count("DPO: 这部电影很") == 3 and out.count("ref: 这部电影很") == 3


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(env, ai_lists, tmp_path):
    # `--cpu --num_processes 2` starts a single process in accelerate 1.x (several need mpirun)
    # --main_process_port 0: a free port, not the default 29500 that another test worker may take at the same moment
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", "0",
                             SCRIPT, *small_run(tmp_path, "--train_path", ai_lists, "--valid_steps", "1000")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    # 22 training lists (132 pairs, less those the micro model cannot score), batches of 8 shared by 2 processes
    n_train, n_dev = map(int, re.search(r"(\d+) train / (\d+) dev preference pairs; beta 0.2; cpu(?::0)? x 2",
                                        result.stdout).groups())
    steps = math.ceil(math.ceil(n_train / 8) / 2)
    assert n_train > 100 and f" x 2; {steps} steps" in result.stdout and f"done: {steps} steps" in result.stdout
    assert result.stdout.count("global step 2, epoch: 1") == 1  # printed by the main process only
    assert result.stdout.count("Evaluation acc: ") == 1
    assert os.listdir(tmp_path / "ck") == [f"model_{steps}"]
    evaluation = [r for r in read_jsonl(str(tmp_path / "logs" / "DPO-Sentiment-Zh.jsonl")) if "preference_acc" in r]
    # every dev pair counted once: the accuracy is a whole number of pairs out of n_dev
    assert len(evaluation) == 1 and evaluation[0]["preference_acc"] * n_dev == pytest.approx(
        round(evaluation[0]["preference_acc"] * n_dev), abs=1e-4)


def test_a_nan_loss_stops_at_its_step_and_keeps_the_checkpoints(micro_main, ai_lists, tmp_path, monkeypatch):
    """As PPO and GRPO: one line naming the step and the option to lower, exit code 2, no checkpoint written over
    the good ones (utils/run.py stop_if_not_finite)."""
    argv = small_run(tmp_path, "--train_path", ai_lists, "--valid_steps", "3")
    assert micro_main(train_dpo.main, argv).returncode == 0
    good = files_as_written(tmp_path / "ck")
    assert "model_3/model.safetensors" in good

    real_loss, calls = dpo_loss, []

    def nan_from_the_second_step(*args, **kwargs):  # what --learning_rate 1e30 does
        calls.append(1)
        loss, chosen_rewards, rejected_rewards = real_loss(*args, **kwargs)
        return (loss * float("nan") if len(calls) >= 2 else loss), chosen_rewards, rejected_rewards

    monkeypatch.setattr(train_dpo, "dpo_loss", nan_from_the_second_step)
    result = micro_main(train_dpo.main, argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: step 2: the loss is NaN or infinite, so training stopped; the checkpoints saved before stay as they "
        "were. Check --learning_rate (a smaller learning rate is the usual cure)")
    assert "global step 2," not in result.stdout and "saved " not in result.stdout
    assert files_as_written(tmp_path / "ck") == good  # none written, none replaced


def files_as_written(folder):
    """{relative path: (inode, modification time)} of every file under `folder`: writing a file again, or renaming
    a new checkpoint folder into place, changes them."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            found[os.path.relpath(os.path.join(root, name), folder)] = (stat.st_ino, stat.st_mtime_ns)
    return found


# ---------------------------------------------------------------- bad input
def labelled(tmp_path, lists, name="labels.tsv"):
    path = str(tmp_path / name)
    for prompt, answers in lists:
        append_rank_list(path, [prompt + a for a in answers], {"prompt": prompt, "rank_list_len": len(answers)})
    return path


def assert_refused(result, message, tmp_path):
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "global step" not in result.stdout and not (tmp_path / "ck").exists()


def test_rank_lists_without_prompts_need_prompt_mode_none(micro_main, tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("".join(f"好评{i}很好\t一般{i}\t差评{i}很差\n" for i in range(10)), encoding="utf-8")
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", str(path)))
    assert_refused(result, f"{path}: the prompts are not known (there is no {tmp_path / 'corpus.meta.jsonl'} beside "
                           "it); pass --prompt_mode none to train on the whole texts without prompts", tmp_path)
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", str(path), "--prompt_mode", "none"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "27 train / 3 dev preference pairs" in result.stdout and "Evaluation acc: " in result.stdout


def test_a_list_of_one_text_is_named_with_file_and_line(env, tmp_path):  # the one `python train_dpo.py` exit code
    path = labelled(tmp_path, [("这部电影很", ["好看", "难看"])] * 3)
    with open(path, "a", encoding="utf-8") as f:
        f.write("这部电影很好看\n")
    with open(metadata_path(path), "a", encoding="utf-8") as f:
        f.write('{"prompt": "这部电影很"}\n')
    result = run_script([SCRIPT, *small_run(tmp_path, "--train_path", path)], env=env)
    assert_refused(result, f"{path}:4: a rank list needs at least 2 tab-separated texts, found 1 "
                           "(use --skip_bad_lines to skip such lines)", tmp_path)


def test_a_repeated_text_counts_once_and_is_counted(micro_main, tmp_path):
    path = labelled(tmp_path, [("这部电影很", ["好看", "好看", "难看"])] * 10)  # per list: one text twice
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"note: {path}: left out 10 repeated text(s) (each text counts once, at its best place in its list) " \
           "and with them 0 rank list(s) that had fewer than 2 different texts" in result.stderr
    assert "9 train / 1 dev preference pairs" in result.stdout


@pytest.mark.parametrize("case", ["all_identical", "one_list"])
def test_an_empty_training_or_dev_set_stops_before_training(case, micro_main, tmp_path):
    if case == "all_identical":
        path = labelled(tmp_path, [("这部电影很", ["好看", "好看"])] * 5)
        message = f"{path}: no rank list of 2 or more different texts in it: nothing to train on"
    else:
        path = labelled(tmp_path, [("这部电影很", ["好看", "难看"])])
        message = (f"{path}: cannot hold out --dev_ratio 0.1 of 1 rank list(s) for evaluation and train on the rest; "
                   "give more lists, another ratio, or a --dev_path")
    assert_refused(micro_main(train_dpo.main, small_run(tmp_path, "--train_path", path)), message, tmp_path)


# ---------------------------------------------------------------- Plackett-Luce and the preference JSONL, as a user runs them
def test_plackett_luce_trains_on_whole_lists(micro_main, ai_lists, tmp_path):
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", ai_lists, "--loss", "plackett_luce",
                                                  "--batch_size", "4", "--valid_steps", "1000"))
    assert result.returncode == 0, result.stderr[-3000:]
    n_train, n_dev = map(int, re.search(r"(\d+) train / (\d+) dev rank lists", result.stdout).groups())
    assert 18 <= n_train <= 22 and 1 <= n_dev <= 2  # 24 lists of 4, 2 held out, a few with an unscorable answer
    assert f"{math.ceil(n_train / 4)} steps" in result.stdout and "Evaluation acc: preference_acc " in result.stdout
    state = load_checkpoint_state(os.path.join(tmp_path / "ck", os.listdir(tmp_path / "ck")[0]))
    assert state["loss"] == "plackett_luce"


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return str(path)


def test_the_preference_jsonl_that_utils_preferences_writes_trains(micro_main, tmp_path):
    lists = labelled(tmp_path, [("这部电影很", ["好看", "一般", "难看"]), ("刚收到货，感觉", ["很好", "不错", "很差"])] * 5)
    jsonl = str(tmp_path / "prefs.jsonl")
    made = micro_main(preferences.main, [lists, "--output", jsonl])
    assert made.returncode == 0, made.stderr
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", jsonl))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "27 train / 3 dev preference pairs" in result.stdout and "Evaluation acc: " in result.stdout
    # pairs only: Plackett-Luce would be the pairs loss itself, so it is refused with the way out
    result = micro_main(train_dpo.main, small_run(tmp_path / "pl", "--train_path", jsonl, "--loss", "plackett_luce"))
    assert_refused(result, f"{jsonl}: --loss plackett_luce needs whole rank lists of 3 or more answers, but every "
                           "item here is a pair (on pairs it is exactly --loss pairs: use that)", tmp_path / "pl")


def test_plackett_luce_refuses_rank_lists_of_two(micro_main, tmp_path):
    path = labelled(tmp_path, [("这部电影很", ["好看", "难看"])] * 5)
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", path, "--loss", "plackett_luce"))
    assert_refused(result, f"{path}: --loss plackett_luce needs whole rank lists of 3 or more answers, but every "
                           "item here is a pair (on pairs it is exactly --loss pairs: use that)", tmp_path)


GOOD = {"prompt": "这部电影很", "chosen": "好看", "rejected": "难看"}


@pytest.mark.parametrize("bad, reason", [
    ({"prompt": "这部电影很", "chosen": "好看"}, 'no "rejected" field (a preference line has prompt, chosen, rejected)'),
    ({**GOOD, "chosen": " "}, 'empty "chosen" answer'),
    ({**GOOD, "prompt": None}, '"prompt" is not a string'),
    ("[1, 2]", "not a JSON object"),
], ids=["missing_field", "empty_chosen", "prompt_not_text", "not_an_object"])
def test_a_bad_preference_line_is_named_with_file_and_line_or_skipped(bad, reason, micro_main, tmp_path, capsys):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD] * 3 + [bad] + [GOOD] * 7)
    assert_refused(micro_main(train_dpo.main, small_run(tmp_path, "--train_path", path)),
                   f"{path}:4: {reason} (use --skip_bad_lines to skip such lines)", tmp_path)
    # what --skip_bad_lines reads (the training on it: the next test)
    assert len(preferences.read_preference_jsonl(path, skip_bad_lines=True)) == 10
    assert capsys.readouterr().err == f"warning: skipped 1 bad line(s) in {path} (first: line 4: {reason})\n"


def test_skip_bad_lines_trains_on_the_other_lines(micro_main, tmp_path):
    reason = 'no "rejected" field (a preference line has prompt, chosen, rejected)'
    no_rejected = {"prompt": "这部电影很", "chosen": "好看"}
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD] * 3 + [no_rejected] + [GOOD] * 7)
    result = micro_main(train_dpo.main, small_run(tmp_path, "--train_path", path, "--skip_bad_lines"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"warning: skipped 1 bad line(s) in {path} (first: line 4: {reason})" in result.stderr
    assert "9 train / 1 dev preference pairs" in result.stdout
