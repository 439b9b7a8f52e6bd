"""What every tokenizer reader produces (a GGUF vocabulary) and the pieces they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError
from ...sources.base import Source

# gguf TokenType (== SentencePiece's piece types)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPM_SPACE = "\u2581"


@dataclass
class Vocab:
    """What goes into the GGUF, before special tokens and the chat template."""
    model: str                       # "gpt2" | "llama"
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    add_space_prefix: bool | None = None
    # special-token ids the tokenizer file itself defines (fallbacks)
    specials: dict[str, int] = field(default_factory=dict)


def added_tokens(tj: dict | None) -> list[dict]:
    if tj is None:
        return []
    added = tj.get("added_tokens") or []
    if not isinstance(added, list):
        raise FormatError("added_tokens is not a list", "tokenizer.json")
    out = []
    for a in added:
        if not isinstance(a, dict) or not isinstance(a.get("id"), int) or not isinstance(a.get("content"), str) \
                or a["id"] < 0:
            raise FormatError(f"malformed added token {a!r}"[:200], "tokenizer.json")
        out.append(a)
    return out


def looks_special(text: str) -> bool:
    """Added tokens some models forget to flag special (same heuristic as llama.cpp's converter)."""
    return (text.startswith("<|") and text.endswith("|>")) or \
        (text.startswith("<\uff5c") and text.endswith("\uff5c>")) or text in ("<pad>", "<mask>")


def table_size(n_needed: int, vocab_size: int, what: str) -> int:
    if not vocab_size:
        return n_needed
    if n_needed > vocab_size:
        raise FormatError(f"{what} has token id {n_needed - 1} but the model has only {vocab_size} "
                          f"embedding rows", what)
    return vocab_size


def read_json(source: Source, path: str) -> Any:
    from ...api import read_json as read  # late: keeps importing the converter from importing the API
    return read(source, path)
