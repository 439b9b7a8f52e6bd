"""A Unigram ``tokenizer.json`` normalised by a compiled SentencePiece character map (T5, XLM-R and
what GGUF -> HF writes for them) -> ``tokenizer.ggml.model = "t5"``: llama.cpp's Unigram tokenizer,
with the map (``precompiled_charsmap``) and the whitespace flags it applies around it. A Unigram
without the map keeps the SentencePiece "llama" path (sentencepiece.py)."""
from __future__ import annotations

import base64
import binascii

from ...errors import FormatError
from ...formats.gguf_write import KV, VT, kv
from .sentencepiece import hf_spm_vocab
from .vocab import SPM_SPACE, Vocab


def _normalizers(tj: dict) -> list[dict]:
    norm = tj.get("normalizer")
    if not isinstance(norm, dict):
        return []
    subs = norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]
    return [n for n in subs or [] if isinstance(n, dict)]


def is_t5_style(tj: dict) -> bool:
    model = tj.get("model")
    return isinstance(model, dict) and model.get("type") == "Unigram" and \
        any(n.get("type") == "Precompiled" for n in _normalizers(tj))


def t5_vocab(tj: dict, vocab_size: int) -> tuple[Vocab, list[KV]]:
    """The vocabulary (pieces, scores, types) and the normaliser's keys."""
    vocab = hf_spm_vocab(tj, vocab_size)
    vocab.model = "t5"
    norms = _normalizers(tj)
    raw = next(n.get("precompiled_charsmap") for n in norms if n.get("type") == "Precompiled")
    try:
        blob = base64.b64decode(raw or "", validate=True)
    except (binascii.Error, TypeError):
        raise FormatError("Precompiled normalizer's precompiled_charsmap is not base64", "tokenizer.json") from None
    merge = any(n.get("type") == "Strip" or (n.get("type") == "Replace" and
                (n.get("pattern") or {}).get("Regex") in (" +", " {2,}")) for n in norms)
    prefix = any(n.get("type") == "Prepend" and n.get("prepend") == SPM_SPACE for n in norms)
    pre = tj.get("pre_tokenizer")
    if isinstance(pre, dict) and pre.get("type") == "Metaspace":
        prefix = prefix or pre.get("prepend_scheme", "always") in ("always", "first")
    vocab.add_space_prefix = prefix
    kvs = [kv("tokenizer.ggml.remove_extra_whitespaces", merge)]
    if blob:
        kvs.append(kv("tokenizer.ggml.precompiled_charsmap", list(blob), VT.ARRAY, VT.UINT8))
    return vocab, kvs
