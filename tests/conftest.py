"""Shared fixtures: micro models built in seconds from the installed corpus (never the Hugging Face hub)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, REPO)
os.chdir(REPO)  # the scripts' default paths (data/, logs/, checkpoints/) are relative to the repository


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on a CUDA device, skipped without one (python -m pytest -m gpu)")


def pytest_collection_modifyitems(config, items):
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if gpu_tests:
        import torch

        if not torch.cuda.is_available():
            for item in gpu_tests:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)"))


def reset_accelerate_state():
    """Forget accelerate's process-wide state (device, mixed precision), as a fresh process would not have it."""
    if "accelerate" in sys.modules:  # nothing to reset before anything imported it
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one device and one mixed precision per process: after a loop ran here on CUDA (the default
    device on a GPU machine), the next test asking for a CPU trainer would fail with "AcceleratorState has already
    been initialized". Every test starts without that state."""
    reset_accelerate_state()
    yield


def cpu_only(env):
    """`env` with no GPU visible: `accelerate launch --multi_gpu --num_processes 2` then runs two CPU processes
    (gloo), also on a machine with one GPU, where two processes would share it and fail at start."""
    return dict(env, CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="session", autouse=True)
def corpus_datasets():
    """The corpus-made datasets under data/ (built in a second if missing), whichever test runs first."""
    from utils.data import ensure_datasets

    ensure_datasets()


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory):
    """A micro `--tiny` cache: encoder, classifier, GPT-2 and tokenizer, a few seconds to build."""
    from utils.tiny import build_tiny

    root = str(tmp_path_factory.mktemp("micro") / "tiny")
    build_tiny(root, preset="micro", report_dir=None)
    return root


@pytest.fixture(scope="session")
def micro_paths(micro_dir):
    from utils.tiny import tiny_paths

    return tiny_paths(micro_dir)


@pytest.fixture
def micro_env(micro_dir):
    """Environment for running a script as a subprocess with `--tiny` pointing at the micro models."""
    return dict(os.environ, RLHF_TINY_DIR=micro_dir, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)


def run_script(args, env=None, cwd=REPO, input=None, timeout=600):
    """Run `python <args>` and return the CompletedProcess (text mode)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or dict(os.environ), input=input,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- micro Qwen2 / Llama (byte-level BPE, chat template)
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
          "+ m['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def build_micro_causal_lm(out_dir, arch, sentences):
    """A random-weight two-layer Qwen2 or Llama with a byte-level BPE tokenizer trained here on `sentences` and a
    chat template: Qwen's ChatML (eos <|im_end|>, pad <|endoftext|>), or Llama 3's (a start token, no pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if arch == "qwen2":
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        names = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    else:
        special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        names = dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(sentences, trainers.BpeTrainer(
        vocab_size=1200, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if arch == "llama":  # Llama's tokenizer starts every text with its start token
        bpe.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
            ("<|begin_of_text|>", bpe.token_to_id("<|begin_of_text|>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, chat_template=CHATML if arch == "qwen2" else LLAMA3,
                                        **names)
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                 eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig,
                                                                                        LlamaForCausalLM)
    import torch

    torch.manual_seed(0)
    model_class(config_class(**shape, tie_word_embeddings=arch == "qwen2")).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def micro_lms(tmp_path_factory):
    """{"qwen2": folder, "llama": folder}: micro causal LMs of today's architectures, built in a second or two."""
    from utils.data import read_corpus_split

    sentences = [s for _, s in read_corpus_split("train")[:3000]]
    root = tmp_path_factory.mktemp("micro_lms")
    return {arch: build_micro_causal_lm(str(root / arch), arch, sentences) for arch in ("qwen2", "llama")}
