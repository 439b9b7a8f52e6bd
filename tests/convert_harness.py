"""Shared by the conversion tests: logits of the same tiny model from transformers and from
llama.cpp (through llama-cpp-python) loading the GGUF ckptkit wrote."""
from __future__ import annotations

import numpy as np
import pytest

TOKENS = [1, 5, 9, 100, 200, 3, 77, 42, 300, 12]


def llama_cpp_or_skip():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python (test extra) is not installed")


def hf_logits(model_dir, tokens=TOKENS) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().numpy()


def gguf_logits(gguf_path, tokens=TOKENS, n_ctx: int = 128) -> np.ndarray:
    llama_cpp = llama_cpp_or_skip()
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                          verbose=False, n_threads=2, seed=0)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


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
