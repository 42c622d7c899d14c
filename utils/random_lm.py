"""Random-weight causal LMs of today's architectures (Qwen2, Llama) with a byte-level BPE tokenizer trained on the
spot and a chat template: what the tests and benches use in place of a model from the hub.

    build_random_causal_lm(out_dir, "qwen2" | "llama", sentences, shape="micro" | "qwen2-0.5b")
"""
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
          "+ m['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
SHAPES = {
    "micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    # Qwen2.5-0.5B's configuration; its 151936-token embedding is kept (ids past the small tokenizer decode to
    # nothing), so memory and speed are those of the real model
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936),
}


def build_random_causal_lm(out_dir, arch, sentences, shape="micro", vocab_size=1200):
    """A random-weight Qwen2 or Llama in `out_dir` with a byte-level BPE tokenizer trained on `sentences` and a
    chat template: Qwen's ChatML (eos <|im_end|>, pad <|endoftext|>), or Llama 3's (a start token, no pad)."""
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
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if arch == "llama":  # Llama's tokenizer starts every text with its start token
        bpe.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
            ("<|begin_of_text|>", bpe.token_to_id("<|begin_of_text|>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, chat_template=CHATML if arch == "qwen2" else LLAMA3,
                                        **names)
    config = {"vocab_size": len(tokenizer), "max_position_embeddings": 256, "eos_token_id": tokenizer.eos_token_id,
              "bos_token_id": tokenizer.bos_token_id, "tie_word_embeddings": arch == "qwen2", **SHAPES[shape]}
    config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig,
                                                                                        LlamaForCausalLM)
    torch.manual_seed(0)
    model_class(config_class(**config)).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
