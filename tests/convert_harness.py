"""Shared by the conversion tests: logits of the same tiny model from transformers and from
llama.cpp (through llama-cpp-python, in a child process: see llama_child) loading the GGUF
ckptkit wrote."""
from __future__ import annotations

import numpy as np

import llama_child

TOKENS = [1, 5, 9, 100, 200, 3, 77, 42, 300, 12]


def llama_cpp_or_skip() -> None:
    """Skip the test (before any conversion work) when llama-cpp-python is not installed."""
    llama_child.require()


def hf_logits(model_dir, tokens=TOKENS) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().numpy()


def gguf_logits(gguf_path, tokens=TOKENS, n_ctx: int = 128) -> np.ndarray:
    return llama_child.logits(gguf_path, tokens, n_ctx=n_ctx)


def assert_logits_match(gguf_path, model_dir, rtol: float, tokens=TOKENS) -> float:
    """Max |difference| relative to the logits' scale; fails above ``rtol``."""
    ref = hf_logits(model_dir, tokens)
    got = gguf_logits(gguf_path, tokens)
    assert got.shape == ref.shape
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert rel < rtol, f"llama.cpp logits differ from transformers by {rel:.2e} of their scale (limit {rtol})"
    # and not trivially: the model must discriminate between tokens
    assert float(np.std(ref)) > 0
    return rel
