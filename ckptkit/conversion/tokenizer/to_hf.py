"""A GGUF vocabulary -> Hugging Face tokenizer files, for each tokenizer model llama.cpp writes:
byte-level BPE "gpt2" (to_hf_bpe), SentencePiece "llama" with tokenizer.model where it can be
rebuilt exactly (to_hf_spm, to_hf_spm_model), WordPiece "bert" (to_hf_wpm), Gemma 4's "gemma4"
(to_hf_gemma4), Unigram "t5" (to_hf_ugm). What cannot be rebuilt (RWKV, PLaMo-2, ...) is refused
with the reason, never written approximately."""
from __future__ import annotations

import json
from typing import Any

from ...errors import UnsupportedError
from .to_hf_bpe import bpe_files, pretokenizer_steps
from .to_hf_gemma4 import gemma4_files
from .to_hf_spm import spm_files
from .to_hf_ugm import ugm_files
from .to_hf_vocab import read_vocab
from .to_hf_wpm import wpm_files

__all__ = ["pretokenizer_steps", "tokenizer_files", "tokenizer_folder_files"]

_KINDS = {"gpt2": "byte-level BPE", "llama": "SentencePiece", "bert": "WordPiece", "gemma4": "Gemma 4 BPE",
          "t5": "Unigram"}


def _build(meta: dict[str, Any], max_length: int | None) -> tuple[dict[str, Any], list[str], str | None]:
    model = meta.get("tokenizer.ggml.model")
    if model is None or model == "none":
        return {}, [], None
    if model not in _KINDS:
        known = ", ".join(f'{k} ({v})' for k, v in _KINDS.items())
        return {}, [], f"tokenizer model {model!r} is not rebuilt as a Hugging Face tokenizer (only {known})"
    try:
        v = read_vocab(meta)
        notes: list[str] = []
        if model == "gpt2":
            files = bpe_files(v, max_length)
        elif model == "llama":
            files, notes = spm_files(v, max_length)
        elif model == "gemma4":
            files = gemma4_files(v, max_length)
        elif model == "t5":
            files = ugm_files(v, max_length)
        else:
            files = wpm_files(v, max_length)
    except UnsupportedError as e:
        return {}, [], e.message
    return files, notes, None


def tokenizer_files(meta: dict[str, Any], max_length: int | None) -> tuple[dict[str, Any], str | None]:
    """tokenizer.json and tokenizer_config.json (JSON documents) for a GGUF vocabulary, or ({}, why not)."""
    files, _, why = _build(meta, max_length)
    return {k: d for k, d in files.items() if not isinstance(d, bytes)}, why


def tokenizer_folder_files(meta: dict[str, Any], max_length: int | None) -> tuple[dict[str, bytes], list[str]]:
    """Every tokenizer file of a GGUF vocabulary as bytes (tokenizer.model too, where it can be
    rebuilt), and notes: why nothing, or a file, was not written."""
    files, notes, why = _build(meta, max_length)
    out = {name: d if isinstance(d, bytes) else (json.dumps(d, indent=2, ensure_ascii=False) + "\n").encode()
           for name, d in files.items()}
    return out, notes + ([f"tokenizer not written: {why}"] if why else [])
