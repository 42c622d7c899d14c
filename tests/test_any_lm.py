"""Any causal LM as the policy: micro Qwen2 / Llama models (byte-level BPE, chat templates) through every policy
script, tokenizer-agnostic text handling, LoRA through peft, and the bad inputs of issue 19."""
import os
import re
import shutil
import sys

import pexpect
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import grpo_sentiment_example
import inference_ppo_gpt
import ppo_sentiment_example
import train_dpo
from conftest import REPO, run_script, run_script_in_process
from utils import ai_feedback, tokens
from utils.answer_logprobs import answer_logprobs
from utils.checkpoints import find_latest_checkpoint, load_checkpoint_state, save_policy_checkpoint
from utils.device import set_seed
from utils.errors import UserError
from utils.generation import generate_responses
from utils.tokens import banned_token_ids, decode, encode_prompt, end_token_ids, prepare_tokenizer
from utils.policy import AdaptersOff, load_causal_lm, load_policy, merge_lora_checkpoint
from utils.value_head import with_value_head

MIXED = ["iPhone 15很好用，价格2999元！Good.", "wifi信号很差，3天就坏了。", "价格:¥1,299 (含税) OK?"]
LORA = {"r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0, "target_modules": None}


@pytest.fixture(autouse=True)
def tiny_env(micro_dir, monkeypatch):
    monkeypatch.setenv("RLHF_TINY_DIR", micro_dir)  # the reward classifier of --tiny


def tokenizer_of(path):
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path), path)


def run(main, argv, capsys):
    """main(argv) in-process as the command line runs it: (exit code, stdout, stderr)."""
    result = run_script_in_process(main, argv, capsys)
    return result.returncode, result.stdout, result.stderr


# ---------------------------------------------------------------- text handling
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_byte_level_bpe_round_trips_chinese_latin_digits_and_punctuation_exactly(micro_lms, arch):
    tokenizer = tokenizer_of(micro_lms[arch])
    for text in MIXED:
        assert decode(tokenizer, tokenizer.encode(text, add_special_tokens=False)) == text


def test_wordpiece_round_trip_drops_only_the_spaces_it_put_between_chinese(micro_paths):
    tokenizer = tokenizer_of(micro_paths["gpt2"])
    for text in MIXED[:2]:  # uer's vocabulary is lower-case; the space between two Latin words stays
        assert decode(tokenizer, tokenizer.encode(text, add_special_tokens=False)) == text.lower()


def test_special_tokens_come_from_each_tokenizer(micro_lms, micro_paths):
    gpt2 = tokenizer_of(micro_paths["gpt2"])
    assert end_token_ids(gpt2) == [gpt2.sep_token_id]  # exactly as before: [SEP] ends, the rest never sampled
    bert_specials = {gpt2.pad_token_id, gpt2.unk_token_id, gpt2.cls_token_id, gpt2.mask_token_id}
    assert set(banned_token_ids(gpt2)) == bert_specials | {gpt2.sep_token_id}
    assert set(banned_token_ids(gpt2, stop_at_sep=True)) == bert_specials
    assert encode_prompt(gpt2, "这部电影很").tolist() == gpt2.encode("这部电影很", add_special_tokens=False)

    qwen = tokenizer_of(micro_lms["qwen2"])
    assert qwen.convert_ids_to_tokens(end_token_ids(qwen)) == ["<|im_end|>"]
    assert qwen.convert_ids_to_tokens(banned_token_ids(qwen, stop_at_sep=True)) == ["<|endoftext|>", "<|im_start|>"]
    llama = tokenizer_of(micro_lms["llama"])
    assert llama.convert_ids_to_tokens(end_token_ids(llama)) == ["<|end_of_text|>", "<|eot_id|>"]
    assert set(banned_token_ids(llama)) == set(range(5))  # every special token when answers have a fixed length


def test_prompts_go_through_the_chat_template_unless_told_otherwise(micro_lms):
    qwen = tokenizer_of(micro_lms["qwen2"])
    ids = encode_prompt(qwen, "这部电影很").tolist()
    assert qwen.decode(ids) == "<|im_start|>user\n这部电影很<|im_end|>\n<|im_start|>assistant\n"
    llama = prepare_tokenizer(AutoTokenizer.from_pretrained(micro_lms["llama"]), "llama", chat_template="none")
    plain = encode_prompt(llama, "这部电影很").tolist()
    assert plain[0] == llama.bos_token_id and llama.decode(plain[1:]) == "这部电影很"  # its start token, no end


def test_a_missing_pad_token_becomes_eos_and_is_said_once(micro_lms, capsys, monkeypatch):
    monkeypatch.setattr(tokens, "_said", set())  # as in a fresh process
    for _ in range(2):
        tokenizer = tokenizer_of(micro_lms["llama"])
    assert tokenizer.pad_token == tokenizer.eos_token == "<|end_of_text|>"
    assert capsys.readouterr().out.count("has no padding token") == 1


def test_no_template_is_said_once_and_the_prompt_stays_plain(micro_lms, tmp_path, capsys):
    base = str(tmp_path / "base")
    shutil.copytree(micro_lms["qwen2"], base)
    os.remove(os.path.join(base, "chat_template.jinja"))
    for _ in range(2):
        tokenizer = tokenizer_of(base)
    assert capsys.readouterr().out.count("defines no chat template; prompts are given as plain text") == 1
    assert tokenizer.decode(encode_prompt(tokenizer, "这部电影很")) == "这部电影很"


def test_a_tokenizer_without_eos_or_sep_is_one_line(micro_lms):
    tokenizer = AutoTokenizer.from_pretrained(micro_lms["qwen2"])
    tokenizer.eos_token = None
    with pytest.raises(UserError, match="neither an end-of-sequence nor a separator token"):
        prepare_tokenizer(tokenizer, "mine")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_answers_stop_at_the_end_of_the_assistants_turn(micro_lms, arch):
    policy, _, tokenizer = load_policy(micro_lms[arch], "cpu", stop_at_sep=True)
    ends = end_token_ids(tokenizer)
    bonus = torch.zeros(len(tokenizer))
    bonus[ends[-1]] = 100.0  # the model ends its turn as soon as it may (after the one token generate insists on)
    policy.get_output_embeddings().register_forward_hook(lambda module, inputs, logits: logits + bonus)
    set_seed(0)
    responses = generate_responses(policy, tokenizer, [encode_prompt(tokenizer, "这部电影很")] * 2, 8, True)
    assert [r.tolist()[1:] for r in responses] == [[ends[-1]]] * 2
    assert [decode(tokenizer, r) for r in responses] == [decode(tokenizer, r[:1]) for r in responses]


# ---------------------------------------------------------------- every policy script on a micro Qwen2
SMALL_PPO = ["--tiny", "--batch_size", "8", "--mini_batch_size", "4", "--gen_len", "6", "--num_samples", "1",
             "--steps", "16"]


def only_checkpoint(save_dir):
    [name] = [n for n in os.listdir(save_dir) if not n.endswith((".tmp", ".previous"))]
    return os.path.join(save_dir, name)


def assert_loads(checkpoint, arch_class):
    policy, ref_model, tokenizer = load_policy(checkpoint, "cpu")
    assert type(policy).__name__ == arch_class
    assert tokenizer.chat_template  # the checkpoint keeps the model's template


@pytest.mark.parametrize("script, lora_r, lm_class", [(ppo_sentiment_example, "0", "Qwen2ForCausalLM"),
                                                     (grpo_sentiment_example, "0", "Qwen2ForCausalLM"),
                                                     (grpo_sentiment_example, "2", "PeftModelForCausalLM")])
def test_online_scripts_train_two_epochs_on_qwen2_and_save_a_checkpoint_that_loads(script, lora_r, lm_class, micro_lms,
                                                                                  tmp_path, capsys):
    argv = [*SMALL_PPO, "--model_name", micro_lms["qwen2"], "--lora_r", lora_r, "--save_dir", str(tmp_path / "ck"),
            "--log_dir", str(tmp_path / "logs")]
    if script is grpo_sentiment_example:
        argv += ["--group_size", "4"]
    code, out, err = run(script.main, argv, capsys)
    assert code == 0, err[-2000:]
    assert re.search(r"epoch 1 ", out)
    checkpoint = only_checkpoint(str(tmp_path / "ck"))
    assert load_checkpoint_state(checkpoint)["epoch"] == 2
    assert_loads(checkpoint, lm_class)
    code, out, err = run(inference_ppo_gpt.main, ["--checkpoint", checkpoint, "--num", "2", "--max_new_tokens", "4",
                                                  "--compare_ref"], capsys)
    assert code == 0, err
    assert out.count("这部电影很") == 4


def test_ai_feedback_then_dpo_on_llama(micro_lms, micro_paths, tmp_path, capsys):
    lists = str(tmp_path / "ai" / "lists.tsv")
    code, out, err = run(ai_feedback.main, ["--model_name", micro_lms["llama"], "--sentiment_model",
                                            micro_paths["classifier"], "--output", lists, "--lists_per_prompt", "4",
                                            "--max_new_tokens", "5"], capsys)
    assert code == 0, err
    with open(lists, encoding="utf-8") as f:
        rows = [line.split("\t") for line in f.read().splitlines()]
    assert len(rows) == 16 and all(len(row) == 4 for row in rows)
    assert "<|" not in "".join(sum(rows, []))  # answers without special tokens
    code, out, err = run(train_dpo.main, ["--tiny", "--model_name", micro_lms["llama"], "--train_path", lists,
                                          "--batch_size", "8", "--num_train_epochs", "2", "--gen_len", "4",
                                          "--num_samples", "1", "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                          str(tmp_path / "logs")], capsys)
    assert code == 0, err[-2000:]
    n_train = int(re.search(r"(\d+) train / \d+ dev preference pairs", out).group(1))
    assert n_train >= 60  # the chat template's special tokens do not make pairs unscorable
    assert_loads(find_latest_checkpoint(str(tmp_path / "ck")), "LlamaForCausalLM")
    code, out, err = run(train_dpo.main, ["--tiny", "--model_name", micro_lms["llama"], "--train_path", lists,
                                          "--lora_r", "2", "--batch_size", "16", "--num_train_epochs", "1",
                                          "--gen_len", "4", "--num_samples", "1", "--save_dir",
                                          str(tmp_path / "lora"), "--log_dir", str(tmp_path / "logs")], capsys)
    assert code == 0, err[-2000:]
    assert_loads(find_latest_checkpoint(str(tmp_path / "lora")), "PeftModelForCausalLM")


REWARD = r"Reward \(-2\.0 ~ 2\.0\): "  # the rating prompt


@pytest.mark.slow
def test_terminal_rates_two_answers_of_a_lora_qwen2_and_saves(micro_lms, micro_env, tmp_path):
    save_dir, log_dir = str(tmp_path / "ck"), str(tmp_path / "logs")
    child = pexpect.spawn(sys.executable, ["terminal_main.py", "--model_name", micro_lms["qwen2"], "--lora_r", "4",
                                           "--batch_size", "1", "--no-async_update", "--max_new_tokens", "5",
                                           "--save_dir", save_dir, "--log_dir", log_dir],
                          cwd=REPO, env=dict(micro_env, OMP_NUM_THREADS="1"), encoding="utf-8",
                          codec_errors="replace", timeout=240, dimensions=(50, 250))
    for step, reward in ((1, "1.5"), (2, "-1")):
        child.expect(REWARD)
        child.sendline(reward)
        child.expect(rf"PPO step {step} done")
    child.expect(REWARD)
    child.sendline("Q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert load_checkpoint_state(save_dir)["step"] == 2
    assert os.path.isfile(os.path.join(save_dir, "adapter_model.safetensors"))
    assert_loads(save_dir, "PeftModelForCausalLM")


def test_labelling_page_writes_answers_with_a_chat_model(micro_lms, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["ranklist_labeler.py", "--model_name", micro_lms["qwen2"], "--dataset_file",
                                      str(tmp_path / "d.tsv"), "--max_new_tokens", "5"])
    at = AppTest.from_file(os.path.join(REPO, "ranklist_labeler.py"), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [t.value for t in at.text][:4]
    assert len(texts) == 4 and all("<|" not in t for t in texts)


# ---------------------------------------------------------------- LoRA
def lm_logits(model, ids):
    with torch.no_grad():
        output = model(input_ids=ids)
    return output[0] if isinstance(output, tuple) else output.logits


def test_lora_trains_only_adapters_and_value_head_and_the_reference_stays_the_base(micro_lms, tmp_path):
    base_dir = micro_lms["qwen2"]
    policy, ref_model, tokenizer = load_policy(base_dir, "cpu", lora=LORA)
    policy = with_value_head(policy)
    assert isinstance(ref_model, AdaptersOff)  # no second copy of the weights
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("v_head.") for n in trainable)
    targeted = {re.search(r"\.(\w+)\.lora_A\.", n).group(1) for n in trainable if "lora_A" in n}
    assert targeted == {"q_proj", "k_proj", "v_proj", "o_proj"}
    ids = encode_prompt(tokenizer, "这部电影很").unsqueeze(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    sampled = torch.ones(len(tokenizer), dtype=torch.bool)
    sampled[banned_token_ids(tokenizer)] = False  # load_policy masks the tokens never sampled
    base_logits = lm_logits(base, ids)[..., sampled]
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}

    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    responses = generate_responses(policy, tokenizer, [ids[0]] * 4, 6)
    for _ in range(3):  # raise the answers' log-probabilities and fit the value head to 1
        logprobs, mask = answer_logprobs(policy, [ids[0]] * 4, responses, tokenizer.pad_token_id)
        values = policy(input_ids=ids).values
        loss = -(logprobs * mask).sum() + ((values - 1) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable and any(n.startswith("v_head.") for n in changed)
    assert any("lora_B" in n for n in changed)
    assert torch.equal(lm_logits(ref_model, ids), lm_logits(ref_model, ids))
    assert torch.allclose(lm_logits(ref_model, ids)[..., sampled], base_logits, atol=1e-5)  # still the base
    trained_logits = lm_logits(policy, ids)[..., sampled]
    assert not torch.allclose(trained_logits, base_logits, atol=1e-3)

    # save -> load -> merge: the same logits and value head every time
    checkpoint = save_policy_checkpoint(policy, tokenizer, str(tmp_path / "ck"),
                                        {"kl_coef": 0.2, "base_model": os.path.abspath(base_dir), "epoch": 1})
    assert not os.path.exists(os.path.join(checkpoint, "model.safetensors"))  # adapters only
    reloaded, reloaded_ref, _ = load_policy(checkpoint, "cpu")
    reloaded = with_value_head(reloaded, checkpoint)
    assert torch.allclose(lm_logits(reloaded, ids)[..., sampled], trained_logits, atol=1e-5)
    assert torch.allclose(lm_logits(reloaded_ref, ids)[..., sampled], base_logits, atol=1e-5)
    assert torch.equal(reloaded.v_head.summary.weight, policy.v_head.summary.weight)
    assert all(p.requires_grad == ("lora_" in n or n.startswith("v_head.")) for n, p in reloaded.named_parameters())
    merged = merge_lora_checkpoint(checkpoint, str(tmp_path / "merged"))
    full = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert torch.allclose(lm_logits(full, ids)[..., sampled], trained_logits, atol=1e-4)
    merged_policy, _, _ = load_policy(merged, "cpu")
    merged_policy = with_value_head(merged_policy, merged)
    assert torch.equal(merged_policy.v_head.summary.weight, policy.v_head.summary.weight)
    assert load_checkpoint_state(merged)["merged_from"] == os.path.abspath(checkpoint)


def test_merge_command_and_a_lora_checkpoint_as_the_labelling_model(micro_lms, tmp_path, capsys):
    code, out, err = run(ppo_sentiment_example.main, [*SMALL_PPO, "--model_name", micro_lms["llama"], "--lora_r", "2",
                                                      "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                                      str(tmp_path / "logs")], capsys)
    assert code == 0, err[-2000:]
    checkpoint = only_checkpoint(str(tmp_path / "ck"))
    from utils import policy as policy_module

    code, out, err = run(policy_module.main, ["merge", checkpoint, str(tmp_path / "merged")], capsys)
    assert code == 0 and "merged" in out, err
    model, tokenizer = load_causal_lm(checkpoint, "cpu")  # the adapters merged on the fly
    full, _ = load_causal_lm(str(tmp_path / "merged"), "cpu")
    ids = encode_prompt(tokenizer, "这部电影很").unsqueeze(0)
    assert torch.allclose(lm_logits(model, ids), lm_logits(full, ids), atol=1e-5)


# ---------------------------------------------------------------- bad input
def test_a_classifier_as_the_policy_is_one_line_and_writes_nothing(micro_paths, tmp_path, capsys):
    save_dir, log_dir = tmp_path / "ck", tmp_path / "logs"
    code, out, err = run(ppo_sentiment_example.main, [*SMALL_PPO, "--model_name", micro_paths["classifier"],
                                                      "--save_dir", str(save_dir), "--log_dir", str(log_dir)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: " + micro_paths["classifier"])
    assert "BertForSequenceClassification has no causal language-model head" in err
    assert not save_dir.exists() and not log_dir.exists()


def test_the_terminal_refuses_a_classifier_before_opening_its_ratings_log(micro_paths, tmp_path, capsys):
    import terminal_main

    code, out, err = run(terminal_main.main, ["--model_name", micro_paths["classifier"], "--log_dir",
                                              str(tmp_path / "logs"), "--save_dir", str(tmp_path / "ck")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "has no causal language-model head" in err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "ck").exists()


def test_lora_target_modules_that_do_not_exist_name_the_option(micro_lms, tmp_path, capsys):
    code, out, err = run(grpo_sentiment_example.main, [*SMALL_PPO, "--group_size", "4", "--model_name",
                                                       micro_lms["qwen2"], "--lora_r", "4", "--lora_target_modules",
                                                       "c_attn", "--save_dir", str(tmp_path / "ck"), "--log_dir",
                                                       str(tmp_path / "logs")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--lora_target_modules" in err and "q_proj" in err  # the layers it does have
    assert not (tmp_path / "ck").exists()


def test_a_layout_without_lora_defaults_names_the_option(tmp_path, micro_lms):
    from transformers import XGLMConfig, XGLMForCausalLM

    folder = str(tmp_path / "xglm")
    tokenizer = AutoTokenizer.from_pretrained(micro_lms["qwen2"])
    XGLMForCausalLM(XGLMConfig(vocab_size=len(tokenizer), d_model=16, num_layers=1, attention_heads=2, ffn_dim=32,
                               max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(UserError, match=r"--lora_r: peft cannot find the modules to adapt .* --lora_target_modules"):
        load_policy(folder, "cpu", lora=LORA)
    policy, _, _ = load_policy(folder, "cpu", lora=dict(LORA, target_modules=["q_proj", "v_proj"]))
    assert any("lora_A" in n for n, _ in policy.named_parameters())


def test_bad_lora_values_are_refused_by_the_parser(micro_lms, capsys):
    for option, value in (("--lora_r", "-1"), ("--lora_dropout", "1.5")):
        with pytest.raises(SystemExit) as e:
            ppo_sentiment_example.parse_args([*SMALL_PPO, option, value])
        assert e.value.code == 2 and option in capsys.readouterr().err



@pytest.mark.gpu
def test_bench_any_lm_measures_peak_memory_on_cuda(micro_env):
    result = run_script(["bench/bench_any_lm.py", "--shape", "micro", "--batch_size", "16", "--epochs", "2",
                         "--device", "cuda"], env=micro_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(re.findall(r"peak GPU memory \d+\.\d+ GiB", result.stdout)) == 2
    assert "ratio LoRA / full: time" in result.stdout and "peak memory" in result.stdout
