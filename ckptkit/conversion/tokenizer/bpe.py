"""A byte-level BPE ``tokenizer.json`` -> ``tokenizer.ggml.model = "gpt2"``."""
from __future__ import annotations

from typing import Any

from ...errors import FormatError
from .pretokenizer import identify_pre
from .vocab import CONTROL, NORMAL, UNUSED, USER_DEFINED, Vocab, added_tokens, looks_special, table_size


def bpe_vocab(tj: dict, config: dict | None, vocab_size: int, pre_override: str | None) -> Vocab:
    model = tj["model"]
    v = model.get("vocab")
    if not isinstance(v, dict):
        raise FormatError("BPE model has no vocab object", "tokenizer.json")
    added = added_tokens(tj)
    ids = [i for i in v.values()]
    if not all(isinstance(i, int) and i >= 0 for i in ids):
        raise FormatError("BPE vocab ids must be non-negative integers", "tokenizer.json")
    n = max(ids + [a["id"] for a in added], default=-1) + 1
    size = table_size(n, vocab_size, "tokenizer.json")
    tokens: list[str | None] = [None] * size
    types = [UNUSED] * size
    for text, i in v.items():
        if tokens[i] is not None and tokens[i] != text:
            raise FormatError(f"two tokens share id {i}: {tokens[i]!r} and {text!r}", "tokenizer.json")
        tokens[i], types[i] = text, NORMAL
    for a in added:
        i = a["id"]
        tokens[i] = a["content"]
        types[i] = CONTROL if a.get("special") or looks_special(a["content"]) else USER_DEFINED
    out_tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    pre = pre_override if pre_override is not None else identify_pre(tj, config)
    return Vocab("gpt2", pre, out_tokens, types, merges=parse_merges(model.get("merges")))


def parse_merges(merges: Any) -> list[str]:
    if merges is None:
        return []
    if not isinstance(merges, list):
        raise FormatError("BPE merges is not a list", "tokenizer.json")
    out = []
    for m in merges:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            # tokenizers >= 0.20 stores pairs; llama.cpp splits "a b" at the first space after
            # position 0, so a space inside a part is written as U+0120 like byte-level does
            out.append(" ".join(p.replace(" ", "\u0120") for p in m))
        else:
            raise FormatError(f"malformed merge {m!r}"[:200], "tokenizer.json")
    return out
