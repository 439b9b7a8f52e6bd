"""GGUF SentencePiece (``tokenizer.ggml.model = "llama"``) -> tokenizer.json, as Hugging Face's
Llama tokenizers are written: a BPE model over "▁" pieces with byte fallback, whose merges are
made from the scores (llama.cpp's SPM tokenizer merges the adjacent pair whose result scores
highest), the dummy prefix as a Prepend normalizer (applied after every special token, as
llama.cpp does); and tokenizer.model where it can be rebuilt exactly (to_hf_spm_model)."""
from __future__ import annotations

from typing import Any

from ...errors import UnsupportedError
from .to_hf_spm_model import spm_model_bytes
from .to_hf_vocab import BYTE, UNKNOWN, GGUFVocab, added_tokens, post_processor, tokenizer_config
from .vocab import SPM_SPACE


def merges_from_scores(tokens: list[str], scores: list[float]) -> list[list[str]]:
    """Every split of a piece into two pieces, ordered by the piece's score (highest first; equal
    scores in vocabulary order), as transformers' SentencePieceExtractor makes them."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found: list[tuple[float, str, str]] = []
    for i, piece in enumerate(tokens):
        local = sorted((vocab[piece[:k]], vocab[piece[k:]]) for k in range(1, len(piece))
                       if piece[:k] in vocab and piece[k:] in vocab)
        found += [(scores[i], tokens[a], tokens[b]) for a, b in local]
    found.sort(key=lambda m: m[0], reverse=True)   # stable: ties keep vocabulary order
    return [[a, b] for _, a, b in found]


def spm_files(v: GGUFVocab, max_length: int | None) -> tuple[dict[str, Any], list[str]]:
    if v.scores is None:
        raise UnsupportedError("the SentencePiece vocabulary has no tokenizer.ggml.scores")
    prefix = v.flag("add_space_prefix", True)
    unk = v.text("unk")
    if unk is None and UNKNOWN in v.types:
        unk = v.tokens[v.types.index(UNKNOWN)]
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPM_SPACE}
    normalizer = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPM_SPACE}, replace]} \
        if prefix else replace
    decoders = [{"type": "Replace", "pattern": {"String": SPM_SPACE}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    add_bos = v.flag("add_bos_token", True) and "bos" in v.ids
    add_eos = v.flag("add_eos_token", False) and "eos" in v.ids
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(v),
        "normalizer": normalizer, "pre_tokenizer": None,
        "post_processor": post_processor(v, add_bos, add_eos),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": BYTE in v.types,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(v.tokens)},
                  "merges": merges_from_scores(v.tokens, v.scores)},
    }
    files: dict[str, Any] = {"tokenizer.json": tj,
                             "tokenizer_config.json": tokenizer_config(v, add_bos, add_eos, max_length)}
    notes = []
    try:
        files["tokenizer.model"] = spm_model_bytes(v, prefix)
    except UnsupportedError as e:
        notes.append(f"tokenizer.model not written: {e.message}")
    return files, notes
