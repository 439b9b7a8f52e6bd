"""Gemma 4's tokenizer.json -> ``tokenizer.ggml.model = "gemma4"``: a byte-fallback BPE over "▁"
pieces that llama.cpp tokenizes with its merges (not by scores, as it does "llama" vocabularies).
Recognised by the model's config (Gemma 4) or by the definition GGUF -> HF writes for it (the
newline-run split llama.cpp applies)."""
from __future__ import annotations

from typing import Any

from ...errors import UnsupportedError
from .sentencepiece import hf_spm_vocab
from .to_hf_gemma4 import GEMMA4_SPLIT
from .vocab import Vocab


def is_gemma4(tj: dict, config: dict | None) -> bool:
    model = tj.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        return False
    cfgs = [config or {}, (config or {}).get("text_config") or {}]
    if any(isinstance(c, dict) and (str(c.get("model_type", "")).startswith("gemma4")
                                    or any(str(a).startswith("Gemma4") for a in c.get("architectures") or []))
           for c in cfgs):
        return True
    pre = tj.get("pre_tokenizer")
    return isinstance(pre, dict) and pre.get("type") == "Split" and \
        (pre.get("pattern") or {}).get("Regex") == GEMMA4_SPLIT


def gemma4_vocab(tj: dict, vocab_size: int) -> Vocab:
    vocab = hf_spm_vocab(tj, vocab_size)
    vocab.model, vocab.add_space_prefix = "gemma4", False
    vocab.merges = [_merge(m) for m in tj["model"].get("merges") or []]
    return vocab


def _merge(m: Any) -> str:
    if isinstance(m, str):
        return m
    if isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) and " " not in p for p in m):
        return " ".join(m)
    raise UnsupportedError(f"merge {m!r} cannot be written as llama.cpp's 'a b'"[:200], "tokenizer.json")
