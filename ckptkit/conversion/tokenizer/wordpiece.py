"""A WordPiece ``tokenizer.json`` (BERT) -> ``tokenizer.ggml.model = "bert"``: pieces written as
llama.cpp's converter writes them (a word-initial piece "w" as "▁w", a continuation "##w" as "w",
control tokens as they are), and the BertNormalizer's lower-casing and accent stripping."""
from __future__ import annotations

from ...errors import FormatError, UnsupportedError
from ...formats.gguf_write import KV, kv
from .vocab import CONTROL, NORMAL, SPM_SPACE, UNUSED, USER_DEFINED, Vocab, added_tokens, looks_special, table_size


def is_wordpiece(tj: dict | None) -> bool:
    return isinstance(tj, dict) and isinstance(tj.get("model"), dict) and tj["model"].get("type") == "WordPiece"


def wordpiece_vocab(tj: dict, vocab_size: int) -> Vocab:
    model = tj["model"]
    v = model.get("vocab")
    if not isinstance(v, dict) or not all(isinstance(i, int) and i >= 0 for i in v.values()):
        raise FormatError("WordPiece model has no valid vocab object", "tokenizer.json")
    prefix = model.get("continuing_subword_prefix") or "##"
    added = added_tokens(tj)
    n = max(list(v.values()) + [a["id"] for a in added], default=-1) + 1
    size = table_size(n, vocab_size, "tokenizer.json")
    tokens: list[str | None] = [None] * size
    types = [UNUSED] * size
    for text, i in v.items():
        tokens[i], types[i] = text, NORMAL
    for a in added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = CONTROL if a.get("special") or looks_special(a["content"]) else USER_DEFINED
    out = []
    for i, (t, ty) in enumerate(zip(tokens, types, strict=True)):
        if t is None:
            out.append(f"[PAD{i}]")
        elif ty == CONTROL:
            out.append(t)
        elif t.startswith(prefix):
            out.append(t[len(prefix):])
        else:
            out.append(SPM_SPACE + t)
    if len(set(out)) != len(out):
        raise UnsupportedError("two WordPiece tokens have the same text in llama.cpp's '▁' spelling",
                               "tokenizer.json")
    unk = v.get(model.get("unk_token")) if isinstance(model.get("unk_token"), str) else None
    return Vocab("bert", "default", out, types, specials={"unk": unk} if isinstance(unk, int) else {})


def normalizer_kvs(tj: dict) -> list[KV]:
    """tokenizer.ggml.normalizer.* where the BertNormalizer differs from llama.cpp's defaults
    (lower-case, strip accents when lower-casing)."""
    norm = tj.get("normalizer")
    if not isinstance(norm, dict) or norm.get("type") != "BertNormalizer":
        raise UnsupportedError(f"WordPiece tokenizer with normalizer {norm and norm.get('type')!r}: llama.cpp "
                               "applies BERT's", "tokenizer.json")
    lower = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    strip = lower if strip is None else bool(strip)
    out = []
    if not lower:
        out.append(kv("tokenizer.ggml.normalizer.lowercase", False))
    if strip != lower:
        out.append(kv("tokenizer.ggml.normalizer.strip_accents", strip))
    return out
