"""The tokenizer fact: what a checkpoint's tokenizer is, from its files or GGUF metadata.

A safetensors checkpoint describes it in ``tokenizer.json`` (model kind, pre-tokenizer, tokens),
``tokenizer_config.json`` / ``special_tokens_map.json`` (special tokens by text, chat template),
config.json and ``generation_config.json`` (special ids) and ``chat_template.jinja``/``.json``;
a GGUF in ``tokenizer.ggml.*`` and ``tokenizer.chat_template``. The readers here are shared
with validate's tokenizer checks.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeGuard

from ..errors import CkptError
from .fact import Fact

SPECIAL_KINDS = ("bos", "eos", "pad", "unk")
GGUF_SPECIAL_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
                     "pad": "tokenizer.ggml.padding_token_id", "unk": "tokenizer.ggml.unknown_token_id"}
# files naming special tokens by their text, most trusted first (as the converter reads them)
TEXT_FILES = ("tokenizer_config.json", "special_tokens_map.json")
# files naming special tokens by id
ID_FILES = ("config.json", "generation_config.json")


def doc(files: dict[str, Any], name: str) -> dict | None:
    d = files.get(name)
    return d if isinstance(d, dict) else None


def is_id(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


# ---- tokens ---------------------------------------------------------------------------------------

def added_tokens(files: dict[str, Any]) -> Iterator[tuple[int, str, str]]:
    """(id, text, where) of every added token: tokenizer.json's ``added_tokens``,
    tokenizer_config.json's ``added_tokens_decoder``, added_tokens.json."""
    tj = doc(files, "tokenizer.json") or {}
    added = tj.get("added_tokens")
    for a in added if isinstance(added, list) else []:
        if isinstance(a, dict) and is_id(a.get("id")) and isinstance(a.get("content"), str):
            yield a["id"], a["content"], "tokenizer.json:added_tokens"
    dec = (doc(files, "tokenizer_config.json") or {}).get("added_tokens_decoder")
    for i, d in dec.items() if isinstance(dec, dict) else ():
        if str(i).isdigit() and isinstance(d, dict) and isinstance(d.get("content"), str):
            yield int(i), d["content"], "tokenizer_config.json:added_tokens_decoder"
    for text, i in (doc(files, "added_tokens.json") or {}).items():
        if is_id(i):
            yield i, text, "added_tokens.json"


def model_vocab(files: dict[str, Any]) -> dict[str, int] | None:
    """tokenizer.json's model vocabulary as {text: id} (a Unigram's pieces by position)."""
    model = (doc(files, "tokenizer.json") or {}).get("model")
    v = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(v, dict):
        return {t: i for t, i in v.items() if is_id(i)}
    if isinstance(v, list):
        return {p[0]: i for i, p in enumerate(v) if isinstance(p, list) and p and isinstance(p[0], str)}
    return None


def vocab_ids(files: dict[str, Any]) -> set[int] | None:
    """Every id the tokenizer gives a token (None without a tokenizer.json vocabulary)."""
    v = model_vocab(files)
    if v is None:
        return None
    return set(v.values()) | {i for i, _, _ in added_tokens(files)}


def token_id(files: dict[str, Any], text: str) -> int | None:
    for i, t, _ in added_tokens(files):
        if t == text:
            return i
    model = (doc(files, "tokenizer.json") or {}).get("model")
    v = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(v, dict):  # looked up in place: a vocabulary holds up to a few 100k tokens
        found = v.get(text)
        return found if is_id(found) else None
    return (model_vocab(files) or {}).get(text)


def _content(entry: Any) -> str | None:
    """A special token as tokenizer_config writes it: a string or {"content": ...}."""
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


def named_specials(files: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, text, where) of each special token a file names by its text."""
    for name in TEXT_FILES:
        d = doc(files, name) or {}
        for kind in SPECIAL_KINDS:
            text = _content(d.get(f"{kind}_token"))
            if text is not None:
                yield kind, text, f"{name}:{kind}_token"


def config_specials(files: dict[str, Any], config: dict | None) -> Iterator[tuple[str, int, str]]:
    """(kind, id, where) of each special id config.json (and its text_config) and
    generation_config.json set; a list (several EOS ids) gives each; negative ids mean unset."""
    cfg = config if isinstance(config, dict) else {}
    text = cfg.get("text_config")
    docs = [("config.json:", cfg), ("config.json:text_config.", text if isinstance(text, dict) else {}),
            ("generation_config.json:", doc(files, "generation_config.json") or {})]
    for prefix, d in docs:
        for kind in SPECIAL_KINDS:
            v = d.get(f"{kind}_token_id")
            for i in v if isinstance(v, list) else [v]:
                if is_id(i) and i >= 0:
                    yield kind, i, f"{prefix}{kind}_token_id"


def special_ids(files: dict[str, Any], config: dict | None) -> dict[str, tuple[int, str]]:
    """{kind: (id, evidence)}: a token named by text that the tokenizer holds wins, then the
    first id config.json or generation_config.json sets."""
    out: dict[str, tuple[int, str]] = {}
    for kind, text, where in named_specials(files):
        i = token_id(files, text)
        if kind not in out and i is not None:
            out[kind] = (i, f"{where} = {text!r} (id {i})")
    for kind, i, where in config_specials(files, config):
        if kind not in out:
            out[kind] = (i, f"{where} = {i}")
    return out


def chat_templates(files: dict[str, Any], metadata: dict | None = None) -> dict[str, str]:
    """{where: template text} of every chat template (named ones included)."""
    out: dict[str, str] = {}
    for key, v in (metadata or {}).items():
        if key.startswith("tokenizer.chat_template") and isinstance(v, str):
            out[key] = v
    for name, d in (("tokenizer_config.json", doc(files, "tokenizer_config.json")),
                    ("chat_template.json", doc(files, "chat_template.json"))):
        t = (d or {}).get("chat_template")
        if isinstance(t, str):
            out[f"{name}:chat_template"] = t
        elif isinstance(t, list):
            for e in t:
                if isinstance(e, dict) and isinstance(e.get("template"), str):
                    out[f"{name}:chat_template[{e.get('name')}]"] = e["template"]
    if isinstance(files.get("chat_template.jinja"), str):
        out["chat_template.jinja"] = files["chat_template.jinja"]
    return out


# ---- the fact -------------------------------------------------------------------------------------

def infer_tokenizer(files: dict[str, Any], config: dict | None, metadata: dict | None,
                    fmt: str) -> Fact:
    """``{model, pre, vocab_size, bos_token_id, eos_token_id[, pad_token_id, unk_token_id],
    chat_template}``; None when the checkpoint carries no tokenizer ckptkit read."""
    meta = metadata if isinstance(metadata, dict) else {}
    if fmt == "gguf":
        if isinstance(meta.get("tokenizer.ggml.model"), str):
            return _from_gguf(meta)
        return Fact(None, "gguf", ["no tokenizer.ggml.model in the GGUF metadata"])
    if doc(files, "tokenizer.json") is None and doc(files, "tokenizer_config.json") is None:
        return Fact(None, "config", ["no tokenizer.json or tokenizer_config.json read"])
    model, pre, evidence = _model_and_pre(doc(files, "tokenizer.json"), config)
    ids = vocab_ids(files)
    if ids is not None:
        evidence.append(f"tokenizer.json: {len(ids)} tokens (model vocabulary and added tokens)")
    value: dict[str, Any] = {"model": model, "pre": pre, "vocab_size": None if ids is None else len(ids)}
    specials = special_ids(files, config)
    for kind in SPECIAL_KINDS:
        if kind in specials or kind in ("bos", "eos"):
            i, ev = specials.get(kind, (None, None))
            value[f"{kind}_token_id"] = i
            if ev:
                evidence.append(ev)
    templates = chat_templates(files)
    value["chat_template"] = bool(templates)
    evidence += list(templates)
    return Fact(value, "config", evidence)


def _model_and_pre(tj: dict | None, config: dict | None) -> tuple[str | None, str | None, list[str]]:
    """The model kind (BPE, SentencePiece-BPE, Unigram, WordPiece, ...) and llama.cpp's
    pre-tokenizer name for it, as the GGUF converter would name it."""
    model = (tj or {}).get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if not isinstance(kind, str):
        return None, None, []
    evidence = [f"tokenizer.json:model.type = {kind}"]
    if kind not in ("BPE", "Unigram"):
        return kind, None, evidence
    from ..conversion.tokenizer.pretokenizer import identify_pre, is_sentencepiece_style
    assert tj is not None
    try:
        spm = is_sentencepiece_style(tj)
    except CkptError:
        return kind, None, evidence
    if spm:  # llama.cpp's SentencePiece tokenizer has no pre-tokenizer choice
        return ("Unigram" if kind == "Unigram" else "SentencePiece-BPE"), "default", evidence
    try:
        pre = identify_pre(tj, config)
    except CkptError as e:
        return "BPE", None, evidence + [f"tokenizer.json:pre_tokenizer: {e.message}"]
    return "BPE", pre, evidence + [f"tokenizer.json:pre_tokenizer is llama.cpp's {pre!r}"]


def _from_gguf(meta: dict) -> Fact:
    value: dict[str, Any] = {"model": meta["tokenizer.ggml.model"]}
    evidence = ["tokenizer.ggml.model"]
    pre = meta.get("tokenizer.ggml.pre")
    value["pre"] = pre if isinstance(pre, str) else None
    if value["pre"] is not None:
        evidence.append("tokenizer.ggml.pre")
    tokens = meta.get("tokenizer.ggml.tokens")
    value["vocab_size"] = len(tokens) if isinstance(tokens, list) else None
    if isinstance(tokens, list):
        evidence.append(f"tokenizer.ggml.tokens: {len(tokens)} tokens")
    for kind, key in GGUF_SPECIAL_KEYS.items():
        i = meta.get(key)
        if is_id(i) or kind in ("bos", "eos"):
            value[f"{kind}_token_id"] = i if is_id(i) else None
            if is_id(i):
                evidence.append(key)
    templates = chat_templates({}, meta)
    value["chat_template"] = bool(templates)
    evidence += list(templates)
    return Fact(value, "gguf", evidence)
