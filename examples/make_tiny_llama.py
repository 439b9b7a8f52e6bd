"""Regenerate examples/tiny-llama: a 2-layer Llama with random weights and a small trained
byte-level BPE tokenizer (needs the test extra).

    python examples/make_tiny_llama.py
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HERE = Path(__file__).parent
OUT = HERE / "tiny-llama"
sys.path.insert(0, str(HERE.parent / "tests"))
from modelgen import make_tokenizer  # noqa: E402  (the tests' tokenizer trainer)

if __name__ == "__main__":
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    cfg = LlamaConfig(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(OUT, max_shard_size="150KB")
    make_tokenizer(OUT, kind="bpe", vocab_size=384)
    print(f"wrote {OUT}")
