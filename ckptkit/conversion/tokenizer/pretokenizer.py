"""Which llama.cpp pre-tokenizer a byte-level BPE ``tokenizer.json`` uses, found by comparing its
definition with mappings/pretokenizers.toml; light enough for inference to import."""
from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files
from typing import Any

from ... import mapdata
from ...errors import FormatError, UnsupportedError
from .vocab import SPM_SPACE

# the data file, for tests and tools that read it as text (the converter reads mapdata's objects)
PRETOKENIZERS_TOML = files("ckptkit.mappings") / "pretokenizers.toml"


def identify_pre(tj: dict, config: dict | None = None) -> str:
    """The llama.cpp pre-tokenizer name of a byte-level BPE ``tokenizer.json``, found by
    comparing its pre-tokenizer steps and normalizer with mappings/pretokenizers.toml."""
    steps = _canonical_steps(tj.get("pre_tokenizer"))
    norm = _normalizer_name(tj.get("normalizer"))
    matches = [e for e in _table()["entries"] if e["steps"] == steps or steps in e["also"]]
    if not matches:
        raise UnsupportedError(f"unknown BPE pre-tokenizer {_describe(steps)}; if llama.cpp "
                               f"implements it, pass --pre NAME (e.g. llama-bpe, qwen2, gpt-2)",
                               "tokenizer.json")
    if norm not in ("none", "NFC") and not any(e["normalizer"] == norm for e in matches):
        raise UnsupportedError(f"normalizer {norm} is not applied by llama.cpp's BPE tokenizer; "
                               f"pass --pre NAME to convert anyway", "tokenizer.json")
    hints = _config_hints(config)
    for e in matches:
        if hints & e["hints"]:
            return e["name"]
    for e in matches:
        if e["normalizer"] == norm:
            return e["name"]
    return matches[0]["name"]


def is_sentencepiece_style(tj: dict) -> bool:
    """Whether a ``tokenizer.json`` is SentencePiece-style (Unigram, or BPE over "▁" pieces: byte
    fallback, Metaspace) rather than byte-level BPE; UnsupportedError for a model that is neither."""
    model = tj.get("model")
    if not isinstance(model, dict):
        raise FormatError("tokenizer.json has no model object", "tokenizer.json")
    if model.get("type") == "Unigram":
        return True
    if model.get("type") != "BPE":
        raise UnsupportedError(f"tokenizer model {model.get('type')!r} is not handled (only BPE "
                               f"and Unigram)", "tokenizer.json")
    steps = _canonical_steps(tj.get("pre_tokenizer"))
    if any(s[0] == "ByteLevel" for s in steps):
        return False
    if model.get("byte_fallback") or any(s[0] == "Metaspace" for s in steps) \
            or SPM_SPACE in repr(tj.get("normalizer")):
        return True
    raise UnsupportedError("BPE tokenizer.json is neither byte-level (no ByteLevel step) nor "
                           "SentencePiece-style (no byte_fallback, Metaspace or '▁')", "tokenizer.json")


def pre_names() -> list[str]:
    """Every tokenizer.ggml.pre value llama.cpp accepts."""
    return list(_table()["accepted"])


def check_pre_name(name: str) -> None:
    if name not in _table()["accepted"]:
        raise UnsupportedError(f"llama.cpp knows no pre-tokenizer {name!r}; known: "
                               + ", ".join(sorted(_table()["accepted"])), "--pre")


def split_regex(name: str) -> str:
    """The Split regex of the table entry ``name``."""
    entry = next(e for e in _table()["entries"] if e["name"] == name)
    return next(s[1] for s in entry["steps"] if s[0] == "Split")


def code_module_names(text: str) -> list[str]:
    """The table entries one of whose tokenizer code modules (``code_modules``) ``text`` names."""
    return [e["name"] for e in _table()["entries"] if any(m in text for m in e.get("code_modules", []))]


# ---- the pre-tokenizer table -------------------------------------------------------------------

def _canon_regex(r: str) -> str:
    # a CR/LF/TAB character and its escape match the same thing
    return r.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


# the regex of a ByteLevel step with use_regex (tokenizers' byte_level.rs)
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _step_keys(step: dict) -> tuple:
    r"""One pre-tokenizer step reduced to what changes how text is split: a Digits step is the Split
    it is (Rust's is_numeric is \p{N}), a ByteLevel step with use_regex (and no prefix space) its
    regex's Split then a plain ByteLevel, so either spelling of one definition compares equal."""
    key = _step_key(step)
    if key[0] == "Digits":
        return (("Split", r"\p{N}" if key[1] else r"\p{N}+", "Isolated", False),)
    if key[0] == "ByteLevel" and key[1] and not key[2]:
        return (("Split", GPT2_REGEX, "Isolated", False), ("ByteLevel", False, False))
    return (key,)


def _step_key(step: dict) -> tuple:
    t = step.get("type")
    if t == "Split":
        pat = step.get("regex")
        if pat is None:
            p = step.get("pattern") or {}
            if not isinstance(p, dict) or not ({"Regex", "String"} & p.keys()):
                raise FormatError(f"Split pre-tokenizer without a pattern: {p!r}"[:200], "tokenizer.json")
            pat = p["Regex"] if "Regex" in p else re.escape(str(p["String"]))
        if not isinstance(pat, str):
            raise FormatError("Split pattern is not a string", "tokenizer.json")
        return ("Split", _canon_regex(pat), str(step.get("behavior", "Isolated")),
                bool(step.get("invert", False)))
    if t == "ByteLevel":
        return ("ByteLevel", bool(step.get("use_regex", True)),
                bool(step.get("add_prefix_space", False)))
    if t == "Digits":
        return ("Digits", bool(step.get("individual_digits", False)))
    if t == "Punctuation":
        return ("Punctuation", str(step.get("behavior", "Isolated")))
    rest = tuple(sorted((k, repr(v)) for k, v in step.items() if k != "type"))
    return (str(t),) + rest


def _canonical_steps(pre: Any) -> tuple:
    if pre is None:
        return ()
    if not isinstance(pre, dict):
        raise FormatError("pre_tokenizer is not an object", "tokenizer.json")
    if pre.get("type") == "Sequence":
        subs = pre.get("pretokenizers")
        if not isinstance(subs, list):
            raise FormatError("Sequence pre_tokenizer without a list", "tokenizer.json")
        return tuple(k for s in subs for k in _canonical_steps(s))
    return _step_keys(pre)


def _normalizer_name(n: Any) -> str:
    if n is None:
        return "none"
    if not isinstance(n, dict):
        raise FormatError("normalizer is not an object", "tokenizer.json")
    if n.get("type") == "Sequence":
        subs = [_normalizer_name(x) for x in n.get("normalizers") or []]
        subs = [s for s in subs if s != "none"]
        return "none" if not subs else subs[0] if len(subs) == 1 else "Sequence(" + ",".join(subs) + ")"
    return str(n.get("type"))


def _describe(steps: tuple) -> str:
    parts = []
    for s in steps:
        if s[0] == "Split":
            r = s[1] if len(s[1]) <= 60 else s[1][:57] + "..."
            parts.append(f"Split({r!r})")
        else:
            parts.append(s[0] + ("" if len(s) == 1 else f"{list(s[1:])}"))
    return "[" + ", ".join(parts) + "]" if parts else "(none)"


def _config_hints(config: dict | None) -> set[str]:
    if not config:
        return set()
    out: set[str] = set()
    text = config.get("text_config")
    for c in (config, text if isinstance(text, dict) else {}):
        if isinstance(c.get("model_type"), str):
            out.add(c["model_type"])
        if isinstance(c.get("architectures"), list):
            out |= {a for a in c["architectures"] if isinstance(a, str)}
    return out


@lru_cache(maxsize=1)
def _table() -> dict:
    """mappings/pretokenizers.toml with each entry's steps reduced as tokenizer.json's are."""
    data = mapdata.pretokenizers()
    def keys(steps: tuple) -> tuple:
        return tuple(k for st in steps for k in _step_keys(st.as_dict()))

    entries = [{"name": e.name, "steps": keys(e.steps), "also": [keys(a) for a in e.also],
                "normalizer": e.normalizer,  # None: no preference
                "hints": e.hints, "code_modules": e.code_modules} for e in data.entries]
    return {"accepted": data.accepted, "entries": entries}
