"""A GGUF vocabulary as the GGUF -> HF tokenizer writers read it, and what they share: the added
tokens, the post-processor that adds BOS/EOS, tokenizer_config.json.

Facts (key names, token types, llama.cpp's defaults when a key is absent): gguf-py's constants.py,
llama.cpp's src/llama-vocab.cpp (llama_vocab::impl::load)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import UnsupportedError
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED

# tokenizer.ggml.<key> -> the kind of special token it names
SPECIAL_KEYS = {"bos_token_id": "bos", "eos_token_id": "eos", "unknown_token_id": "unk",
                "padding_token_id": "pad", "seperator_token_id": "sep", "cls_token_id": "cls",
                "mask_token_id": "mask"}
# tokenizer_config.json's name of each kind
CONFIG_NAMES = {k: f"{k}_token" for k in ("bos", "eos", "unk", "pad", "sep", "cls", "mask")}

# llama.cpp adds BOS by default (no tokenizer.ggml.add_bos_token) for SentencePiece and WordPiece,
# and for these byte-level BPE pre-tokenizers (src/llama-vocab.cpp, llama_vocab::impl::load)
BPE_ADD_BOS_BY_DEFAULT = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                    "midm-2.0", "lfm2", "jina-v5-nano", "tekken", "chameleon"})


@dataclass
class GGUFVocab:
    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    ids: dict[str, int] = field(default_factory=dict)     # kind -> token id
    flags: dict[str, bool] = field(default_factory=dict)  # add_bos_token, add_space_prefix, ... as stored
    meta: dict[str, Any] = field(default_factory=dict)

    def text(self, kind: str) -> str | None:
        i = self.ids.get(kind)
        return self.tokens[i] if i is not None else None

    def flag(self, name: str, default: bool) -> bool:
        return self.flags.get(name, default)


def read_vocab(meta: dict[str, Any]) -> GGUFVocab:
    """The ``tokenizer.ggml.*`` keys, checked; UnsupportedError (a one-line reason) when malformed."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise UnsupportedError("the GGUF vocabulary has no tokenizer.ggml.tokens list")
    n = len(tokens)
    if len(set(tokens)) != n:
        raise UnsupportedError("the GGUF vocabulary holds the same token text twice")
    types = meta.get("tokenizer.ggml.token_type")
    if types is None:
        types = [NORMAL] * n
    if not isinstance(types, list) or len(types) < n or not all(isinstance(t, int) for t in types):
        raise UnsupportedError("tokenizer.ggml.token_type does not give a type per token")
    types = [t if NORMAL <= t <= BYTE else NORMAL for t in types[:n]]   # llama.cpp: undefined -> normal
    scores = meta.get("tokenizer.ggml.scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) < n:
            raise UnsupportedError("tokenizer.ggml.scores does not give a score per token")
        scores = [float(s) for s in scores[:n]]
    merges = meta.get("tokenizer.ggml.merges")
    if merges is not None and (not isinstance(merges, list) or not all(isinstance(m, str) for m in merges)):
        raise UnsupportedError("tokenizer.ggml.merges is not a list of strings")
    ids = {}
    for key, kind in SPECIAL_KEYS.items():
        i = meta.get(f"tokenizer.ggml.{key}")
        if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n:
            ids[kind] = i
    flags = {}
    for name in ("add_bos_token", "add_eos_token", "add_sep_token", "add_space_prefix",
                 "remove_extra_whitespaces", "normalizer.lowercase", "normalizer.strip_accents"):
        v = meta.get(f"tokenizer.ggml.{name}")
        if isinstance(v, bool):
            flags[name] = v
    return GGUFVocab(str(meta.get("tokenizer.ggml.model")), str(meta.get("tokenizer.ggml.pre", "default")),
                     tokens, types, scores, merges, ids, flags, meta)


def added_tokens(v: GGUFVocab) -> list[dict]:
    """Control and unknown tokens as special added tokens, user-defined ones as plain added tokens:
    llama.cpp matches user-defined tokens in raw text (never control ones unless asked), and so does
    ``tokenizers`` with ``normalized: false``."""
    out = []
    for i, (tok, ty) in enumerate(zip(v.tokens, v.types, strict=True)):
        if ty in (CONTROL, UNKNOWN, USER_DEFINED):
            out.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                        "normalized": False, "special": ty != USER_DEFINED})
    return out


def post_processor(v: GGUFVocab, add_bos: bool, add_eos: bool, first: str = "bos",
                   last: str = "eos", pair_head: bool = True) -> dict | None:
    """A TemplateProcessing adding the ``first`` token before and the ``last`` one after a sequence
    (before the second of a pair too unless not ``pair_head``: BERT's [CLS] A [SEP] B [SEP])."""
    head, tail = (v.text(first) if add_bos else None), (v.text(last) if add_eos else None)
    if head is None and tail is None:
        return None

    def seq(x: str, type_id: int) -> list[dict]:
        lead = head is not None and (type_id == 0 or pair_head)
        return ([{"SpecialToken": {"id": head, "type_id": type_id}}] if lead else []) + \
               [{"Sequence": {"id": x, "type_id": type_id}}] + \
               ([{"SpecialToken": {"id": tail, "type_id": type_id}}] if tail is not None else [])
    specials = {t: {"id": t, "ids": [v.tokens.index(t)], "tokens": [t]} for t in (head, tail) if t is not None}
    return {"type": "TemplateProcessing", "single": seq("A", 0), "pair": seq("A", 0) + seq("B", 1),
            "special_tokens": specials}


def chat_template(meta: dict[str, Any]) -> str | list[dict] | None:
    """``tokenizer.chat_template`` (and named ones: ``tokenizer.chat_template.NAME``) as
    tokenizer_config.json holds them."""
    default = meta.get("tokenizer.chat_template")
    names = meta.get("tokenizer.chat_templates")
    named = [(n, meta.get(f"tokenizer.chat_template.{n}")) for n in names] if isinstance(names, list) else []
    named = [(n, t) for n, t in named if isinstance(n, str) and isinstance(t, str)]
    if not named:
        return default if isinstance(default, str) else None
    out = [{"name": "default", "template": default}] if isinstance(default, str) else []
    return out + [{"name": n, "template": t} for n, t in named]


def tokenizer_config(v: GGUFVocab, add_bos: bool, add_eos: bool, max_length: int | None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    tc: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos,
                          "add_eos_token": add_eos, "clean_up_tokenization_spaces": False}
    for kind, name in CONFIG_NAMES.items():
        t = v.text(kind)
        if t is not None:
            tc[name] = t
    if max_length:
        tc["model_max_length"] = max_length
    tc.update(extra or {})
    tmpl = chat_template(v.meta)
    if tmpl is not None:
        tc["chat_template"] = tmpl
    return tc


__all__ = ["BYTE", "CONTROL", "NORMAL", "UNKNOWN", "UNUSED", "USER_DEFINED", "GGUFVocab", "added_tokens",
           "chat_template", "post_processor", "read_vocab", "tokenizer_config"]
