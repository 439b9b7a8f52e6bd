"""GGUF WordPiece (``tokenizer.ggml.model = "bert"``) -> tokenizer.json. llama.cpp's converter
writes a word-initial piece "w" as "▁w" and a continuation "##w" as "w" (control tokens, and
in older files [BRACKETED] ones, as they are); this undoes it. llama.cpp lower-cases and strips accents unless
``tokenizer.ggml.normalizer.*`` say otherwise, splits at whitespace, punctuation and CJK
characters, and matches the longest piece, a word it cannot cover becoming [UNK]: BertNormalizer,
BertPreTokenizer and the WordPiece model do the same."""
from __future__ import annotations

from typing import Any

from ...errors import UnsupportedError
from .to_hf_vocab import CONTROL, NORMAL, GGUFVocab, added_tokens, post_processor, tokenizer_config
from .vocab import SPM_SPACE

# llama.cpp puts no limit on a word's length; tokenizers needs one
_NO_LIMIT = 1 << 30


def hf_piece(tok: str, ty: int = NORMAL) -> str:
    if ty == CONTROL:
        return tok
    if tok.startswith(SPM_SPACE):
        return tok[1:]
    if tok.startswith("[") and tok.endswith("]"):
        return tok
    return "##" + tok


def wpm_files(v: GGUFVocab, max_length: int | None) -> dict[str, Any]:
    unk = v.text("unk")
    if unk is None:
        raise UnsupportedError("the WordPiece vocabulary names no unknown token")
    pieces = [hf_piece(t, ty) for t, ty in zip(v.tokens, v.types, strict=True)]
    if len(set(pieces)) != len(pieces):
        raise UnsupportedError("two WordPiece tokens have the same text once '▁' / '##' are undone")
    lower = v.flag("normalizer.lowercase", True)
    strip = v.flag("normalizer.strip_accents", lower)
    cls, sep = ("cls" if "cls" in v.ids else "bos"), "sep"
    add = v.flag("add_bos_token", True) and cls in v.ids and sep in v.ids
    added = added_tokens(v)
    for a in added:
        a["content"] = pieces[a["id"]]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": strip, "lowercase": lower},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": post_processor(v, add, add, first=cls, last=sep, pair_head=False),
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": pieces[v.ids["unk"]], "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": _NO_LIMIT, "vocab": {p: i for i, p in enumerate(pieces)}},
    }
    tc = tokenizer_config(v, add, False, max_length, {"do_lower_case": lower})
    tc.pop("add_eos_token")
    for key in ("bos_token", "eos_token"):
        if tc.get(key) in (tc.get("cls_token"), tc.get("sep_token")):
            tc.pop(key)
    return {"tokenizer.json": tj, "tokenizer_config.json": tc}
