"""Regenerate examples/tiny-llama: a 2-layer Llama with random weights (needs the test extra).

    python examples/make_tiny_llama.py
"""
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

OUT = Path(__file__).parent / "tiny-llama"

if __name__ == "__main__":
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(OUT, max_shard_size="150KB")
    print(f"wrote {OUT}")
