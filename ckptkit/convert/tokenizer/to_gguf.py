"""A checkpoint's tokenizer files -> the GGUF `tokenizer.*` metadata llama.cpp needs.

Three inputs are understood:
- HF ``tokenizer.json`` with a byte-level BPE model -> ``tokenizer.ggml.model = "gpt2"``,
  with the pre-tokenizer named from its definition (``mappings/pretokenizers.toml``);
- SentencePiece: ``tokenizer.model`` (protobuf, parsed here) or a ``tokenizer.json`` whose model
  is Unigram or a byte-fallback/Metaspace BPE -> ``"llama"`` with scores;
- tiktoken ranks (``tiktoken.model``, Kimi K2) -> ``"gpt2"`` with merges replayed from the ranks.

Facts (key names, token types, llama.cpp's expectations): gguf-py's constants.py and vocab.py,
llama.cpp's src/llama-vocab.cpp.
"""
from __future__ import annotations

import ast
import base64
import binascii
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any, NamedTuple

from ... import mapdata
from ...errors import CkptError, FormatError, UnsupportedError
from ...formats.gguf_write import KV, VT, kv
from ...sources.base import Source

# gguf TokenType (== SentencePiece's piece types)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# the data file, for tests and tools that read it as text (the converter reads mapdata's objects)
PRETOKENIZERS_TOML = files("ckptkit.mappings") / "pretokenizers.toml"
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SPM_SPACE = "\u2581"
_SPECIAL_KINDS = ("bos", "eos", "unk", "pad")
_KEY_OF_KIND = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
                "pad": "padding_token_id"}


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


# ---- public ---------------------------------------------------------------------------------

def has_tokenizer(source: Source) -> bool:
    """Whether the checkpoint carries a tokenizer ckptkit can read."""
    files = source.files()
    return any(name in files for name in ("tokenizer.json", "tokenizer.model", "tiktoken.model"))


def tokenizer_kvs(source: Source, config: dict | None, vocab_size: int,
                  pre_override: str | None = None) -> list[KV]:
    """The ``tokenizer.*`` KVs for a model with ``vocab_size`` embedding rows."""
    files = source.files()
    if config is None and "config.json" in files:
        config = _read_json(source, "config.json")
    tok_config = _read_json(source, "tokenizer_config.json") if "tokenizer_config.json" in files else {}
    if not isinstance(tok_config, dict):
        raise FormatError("not a JSON object", "tokenizer_config.json")
    if config is not None and not isinstance(config, dict):
        raise FormatError("not a JSON object", "config.json")
    if pre_override is not None:
        check_pre_name(pre_override)
    tj = _read_json(source, "tokenizer.json") if "tokenizer.json" in files else None
    if tj is not None and not isinstance(tj, dict):
        raise FormatError("not a JSON object", "tokenizer.json")
    spm = None
    if "tokenizer.model" in files:
        data = source.read_file("tokenizer.model")
        if data[:1] == b"\x0a":  # field 1, length-delimited: a SentencePiece ModelProto
            spm = parse_sentencepiece(data, "tokenizer.model")

    if tj is not None and not _is_spm_style(tj):
        vocab = _bpe_vocab(tj, config, vocab_size, pre_override)
    elif spm is not None:
        vocab = _spm_vocab(spm, vocab_size)
        _apply_added_tokens(vocab, source, tj, tok_config, vocab_size)
    elif tj is not None:
        vocab = _hf_spm_vocab(tj, vocab_size)
        _apply_added_tokens(vocab, source, tj, tok_config, vocab_size)
    elif "tiktoken.model" in files:
        vocab = _tiktoken_vocab(source, tok_config, vocab_size, pre_override)
    else:
        raise UnsupportedError("no tokenizer.json, SentencePiece tokenizer.model or tiktoken.model "
                               "found", source.label)
    if pre_override is not None and vocab.model == "gpt2":
        vocab.pre = pre_override

    out = [kv("tokenizer.ggml.model", vocab.model), kv("tokenizer.ggml.pre", vocab.pre),
           kv("tokenizer.ggml.tokens", vocab.tokens, VT.ARRAY, VT.STRING)]
    if vocab.scores is not None:
        out.append(kv("tokenizer.ggml.scores", vocab.scores, VT.ARRAY, VT.FLOAT32))
    out.append(kv("tokenizer.ggml.token_type", vocab.types, VT.ARRAY, VT.INT32))
    if vocab.merges is not None:
        out.append(kv("tokenizer.ggml.merges", vocab.merges, VT.ARRAY, VT.STRING))
    if vocab.add_space_prefix is not None:
        out.append(kv("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix))

    ids, adds = special_tokens(source, tj, tok_config, config, vocab)
    for kind in _SPECIAL_KINDS:
        if kind in ids:
            out.append(kv(f"tokenizer.ggml.{_KEY_OF_KIND[kind]}", ids[kind], VT.UINT32))
    for kind in ("bos", "eos"):
        if kind in adds:
            out.append(kv(f"tokenizer.ggml.add_{kind}_token", adds[kind]))
    out += chat_template_kvs(source, tok_config)
    return out


def identify_pre(tj: dict, config: dict | None = None) -> str:
    """The llama.cpp pre-tokenizer name of a byte-level BPE ``tokenizer.json``, found by
    comparing its pre-tokenizer steps and normalizer with mappings/pretokenizers.toml."""
    steps = _canonical_steps(tj.get("pre_tokenizer"))
    norm = _normalizer_name(tj.get("normalizer"))
    matches = [e for e in _table()["entries"] if e["steps"] == steps]
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
    """Whether a ``tokenizer.json`` is SentencePiece-style (Unigram, or BPE over "▁" pieces)
    rather than byte-level BPE; UnsupportedError for a model that is neither."""
    return _is_spm_style(tj)


def pre_names() -> list[str]:
    """Every tokenizer.ggml.pre value llama.cpp accepts."""
    return list(_table()["accepted"])


def check_pre_name(name: str) -> None:
    if name not in _table()["accepted"]:
        raise UnsupportedError(f"llama.cpp knows no pre-tokenizer {name!r}; known: "
                               + ", ".join(sorted(_table()["accepted"])), "--pre")


# ---- the pre-tokenizer table ----------------------------------------------------------------

def _canon_regex(r: str) -> str:
    # a CR/LF/TAB character and its escape match the same thing
    return r.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def _step_key(step: dict) -> tuple:
    """One pre-tokenizer step reduced to what changes how text is split."""
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
    return (_step_key(pre),)


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
    entries = [{"name": e.name, "steps": tuple(_step_key(st.as_dict()) for st in e.steps),
                "normalizer": e.normalizer,  # None: no preference
                "hints": e.hints, "code_modules": e.code_modules} for e in data.entries]
    return {"accepted": data.accepted, "entries": entries}


# ---- byte-level BPE (tokenizer.json) ----------------------------------------------------------

def _is_spm_style(tj: dict) -> bool:
    """Unigram, or a BPE over SentencePiece-style pieces (byte fallback, "▁" for spaces)."""
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
            or _SPM_SPACE in repr(tj.get("normalizer")):
        return True
    raise UnsupportedError("BPE tokenizer.json is neither byte-level (no ByteLevel step) nor "
                           "SentencePiece-style (no byte_fallback, Metaspace or '▁')", "tokenizer.json")


def _added_tokens(tj: dict | None) -> list[dict]:
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


def _table_size(n_needed: int, vocab_size: int, what: str) -> int:
    if not vocab_size:
        return n_needed
    if n_needed > vocab_size:
        raise FormatError(f"{what} has token id {n_needed - 1} but the model has only {vocab_size} "
                          f"embedding rows", what)
    return vocab_size


def _bpe_vocab(tj: dict, config: dict | None, vocab_size: int, pre_override: str | None) -> Vocab:
    model = tj["model"]
    v = model.get("vocab")
    if not isinstance(v, dict):
        raise FormatError("BPE model has no vocab object", "tokenizer.json")
    added = _added_tokens(tj)
    ids = [i for i in v.values()]
    if not all(isinstance(i, int) and i >= 0 for i in ids):
        raise FormatError("BPE vocab ids must be non-negative integers", "tokenizer.json")
    n = max(ids + [a["id"] for a in added], default=-1) + 1
    size = _table_size(n, vocab_size, "tokenizer.json")
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
    return Vocab("gpt2", pre, out_tokens, types, merges=_merges(model.get("merges")))


def _merges(merges: Any) -> list[str]:
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


# ---- SentencePiece ----------------------------------------------------------------------------

@dataclass
class SpmModel:
    pieces: list[tuple[str, float, int]]   # (piece, score, type)
    model_type: int = 1                    # 1 unigram, 2 bpe
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    special_ids: dict[str, int] = field(default_factory=dict)


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise FormatError("truncated protobuf varint", where)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise FormatError("protobuf varint longer than 10 bytes", where)


class _Field(NamedTuple):
    """One protobuf field: a varint's value, or the bytes of any other wire type."""
    num: int
    wire: int             # 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
    varint: int = 0
    data: bytes = b""


def _fields(buf: bytes, where: str) -> Iterator[_Field]:
    """The fields of one protobuf message, in order."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        num, wt = tag >> 3, tag & 7
        if num == 0:
            raise FormatError("protobuf field number 0", where)
        if wt == 0:
            val, pos = _varint(buf, pos, where)
            yield _Field(num, wt, varint=val)
            continue
        if wt == 1:
            n = 8
            if pos + n > len(buf):
                raise FormatError("truncated protobuf fixed64", where)
        elif wt == 2:
            n, pos = _varint(buf, pos, where)
            if pos + n > len(buf):
                raise FormatError("protobuf field runs past the end of the message", where)
        elif wt == 5:
            n = 4
            if pos + n > len(buf):
                raise FormatError("truncated protobuf fixed32", where)
        else:
            raise FormatError(f"protobuf wire type {wt} is not used by SentencePiece", where)
        pos += n
        yield _Field(num, wt, data=buf[pos - n:pos])


def _int32(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_sentencepiece(data: bytes, where: str = "tokenizer.model") -> SpmModel:
    """Pieces, scores and types of a SentencePiece ModelProto (sentencepiece_model.proto:
    ModelProto{1: pieces, 2: trainer_spec, 3: normalizer_spec}; SentencePiece{1: piece,
    2: score (float), 3: type (enum, NORMAL when absent)})."""
    m = SpmModel(pieces=[])
    trainer_ids = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}  # TrainerSpec defaults
    for f in _fields(data, where):
        if f.num == 1 and f.wire == 2:
            piece: str | None = None
            score: float = 0.0
            typ = NORMAL
            for g in _fields(f.data, where):
                if g.num == 1 and g.wire == 2:
                    try:
                        piece = g.data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise FormatError(f"piece {len(m.pieces)} is not UTF-8", where) from None
                elif g.num == 2 and g.wire == 5:
                    score = struct.unpack("<f", g.data)[0]
                elif g.num == 3 and g.wire == 0:
                    typ = g.varint
            if piece is None:
                raise FormatError(f"piece {len(m.pieces)} has no text", where)
            if not 1 <= typ <= 6:
                raise FormatError(f"piece {len(m.pieces)} has unknown type {typ}", where)
            m.pieces.append((piece, score, typ))
        elif f.num == 2 and f.wire == 2:  # TrainerSpec: model_type 3, unk/bos/eos/pad ids 40..43
            for g in _fields(f.data, where):
                if g.num == 3 and g.wire == 0:
                    m.model_type = g.varint
                elif 40 <= g.num <= 43 and g.wire == 0:
                    trainer_ids[("unk", "bos", "eos", "pad")[g.num - 40]] = _int32(g.varint)
        elif f.num == 3 and f.wire == 2:  # NormalizerSpec: add_dummy_prefix 3, remove_extra_ws 4
            for g in _fields(f.data, where):
                if g.num == 3 and g.wire == 0:
                    m.add_dummy_prefix = bool(g.varint)
                elif g.num == 4 and g.wire == 0:
                    m.remove_extra_whitespaces = bool(g.varint)
    if not m.pieces:
        raise FormatError("SentencePiece model has no pieces", where)
    m.special_ids = {k: v for k, v in trainer_ids.items() if 0 <= v < len(m.pieces)}
    return m


def _spm_vocab(spm: SpmModel, vocab_size: int) -> Vocab:
    n = len(spm.pieces)
    size = vocab_size or n
    if n > size:
        raise FormatError(f"tokenizer.model has {n} pieces but the model has only {size} "
                          f"embedding rows", "tokenizer.model")
    tokens = [p for p, _, _ in spm.pieces] + [f"[PAD{i}]" for i in range(n, size)]
    scores = [s for _, s, _ in spm.pieces] + [-1000.0] * (size - n)
    types = [t for _, _, t in spm.pieces] + [UNUSED] * (size - n)
    return Vocab("llama", "default", tokens, types, scores, add_space_prefix=spm.add_dummy_prefix,
                 specials=dict(spm.special_ids))


def _hf_spm_vocab(tj: dict, vocab_size: int) -> Vocab:
    """A SentencePiece-style tokenizer.json: Unigram ([piece, score] in id order) or a BPE with
    byte fallback, whose scores are made from merge ranks (earlier merge = higher score), which
    is what llama.cpp's SPM tokenizer uses to choose merges."""
    model = tj["model"]
    if model["type"] == "Unigram":
        v = model.get("vocab")
        if not isinstance(v, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                              and isinstance(e[1], (int, float)) for e in v):
            raise FormatError("Unigram vocab must be a list of [piece, score]", "tokenizer.json")
        pieces = [(e[0], float(e[1])) for e in v]
        unk = model.get("unk_id")
    else:
        v = model.get("vocab")
        if not isinstance(v, dict) or not all(isinstance(i, int) and i >= 0 for i in v.values()):
            raise FormatError("BPE model has no valid vocab object", "tokenizer.json")
        rank: dict[str, int] = {}
        for r, m in enumerate(_merges(model.get("merges"))):
            a, _, b = m.partition(" ")
            rank.setdefault(a + b, r)
        n = max(v.values(), default=-1) + 1
        by_id: list[str | None] = [None] * n
        for text, i in v.items():
            by_id[i] = text
        pieces = [(t if t is not None else f"[PAD{i}]", -float(rank.get(t, 0)) if t is not None else -1000.0)
                  for i, t in enumerate(by_id)]
        unk = v.get(model["unk_token"]) if isinstance(model.get("unk_token"), str) else None
    byte_fallback = bool(model.get("byte_fallback"))
    types = []
    for i, (p, _) in enumerate(pieces):
        if i == unk:
            types.append(UNKNOWN)
        elif byte_fallback and _BYTE_PIECE.fullmatch(p):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    n = len(pieces)
    size = _table_size(n, vocab_size, "tokenizer.json")
    tokens = [p for p, _ in pieces] + [f"[PAD{i}]" for i in range(n, size)]
    scores = [s for _, s in pieces] + [-1000.0] * (size - n)
    types += [UNUSED] * (size - n)
    specials = {"unk": unk} if isinstance(unk, int) and 0 <= unk < n else {}
    return Vocab("llama", "default", tokens, types, scores,
                 add_space_prefix=_hf_adds_space_prefix(tj), specials=specials)


def _hf_adds_space_prefix(tj: dict) -> bool:
    pre = tj.get("pre_tokenizer")
    for s in ([pre] if not (isinstance(pre, dict) and pre.get("type") == "Sequence")
              else pre.get("pretokenizers") or []):
        if isinstance(s, dict) and s.get("type") == "Metaspace":
            if "prepend_scheme" in s:
                return s["prepend_scheme"] in ("always", "first")
            return bool(s.get("add_prefix_space", True))
    norm = tj.get("normalizer")
    subs = norm.get("normalizers") or [] if isinstance(norm, dict) and norm.get("type") == "Sequence" else [norm]
    return any(isinstance(n, dict) and n.get("type") == "Prepend" and n.get("prepend") == _SPM_SPACE
               for n in subs)


def _apply_added_tokens(vocab: Vocab, source: Source, tj: dict | None, tok_config: dict,
                        vocab_size: int) -> None:
    """Added tokens of a SentencePiece vocab (added_tokens.json, tokenizer.json's added_tokens,
    tokenizer_config's added_tokens_decoder): they extend or re-type pieces."""
    found: dict[int, tuple[str, bool]] = {}
    if "added_tokens.json" in source.files():
        extra = _read_json(source, "added_tokens.json")
        if not isinstance(extra, dict):
            raise FormatError("not an object", "added_tokens.json")
        for text, i in extra.items():
            if isinstance(i, int) and i >= 0:
                found[i] = (text, False)
    for a in _added_tokens(tj):
        found[a["id"]] = (a["content"], bool(a.get("special")))
    dec = tok_config.get("added_tokens_decoder") or {}
    if isinstance(dec, dict):
        for i, d in dec.items():
            if str(i).isdigit() and isinstance(d, dict) and isinstance(d.get("content"), str):
                found[int(i)] = (d["content"], bool(d.get("special")))
    if not found:
        return
    scores = vocab.scores
    if scores is None:
        raise CkptError("internal: added tokens extend a SentencePiece vocab, which has scores")
    top = max(found) + 1
    if top > len(vocab.tokens):
        size = _table_size(top, vocab_size, "added tokens")
        grow = size - len(vocab.tokens)
        vocab.tokens += [f"[PAD{len(vocab.tokens) + k}]" for k in range(grow)]
        vocab.types += [UNUSED] * grow
        scores.extend([-1000.0] * grow)
    for i, (text, special) in sorted(found.items()):
        same = vocab.tokens[i] == text and vocab.types[i] != UNUSED
        if same and vocab.types[i] in (UNKNOWN, CONTROL, BYTE):
            continue  # the piece already says what it is
        if special or looks_special(text):
            vocab.types[i] = CONTROL
        else:
            # llama.cpp matches user-defined tokens against raw text, where spaces are spaces
            text = text.replace(_SPM_SPACE, " ")
            vocab.types[i] = USER_DEFINED
        vocab.tokens[i] = text
        if not same:  # a piece of the model keeps its score
            scores[i] = -1000.0


# ---- tiktoken (Kimi K2) -------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for
    themselves, the other 68 bytes take the characters from U+0100 on, in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(0x100 + extra)
            extra += 1
    return out


def bytes_to_token(b: bytes) -> str:
    m = _byte_to_unicode()
    return "".join(m[x] for x in b)


def parse_tiktoken(data: bytes, where: str = "tiktoken.model") -> dict[bytes, int]:
    """``base64-token rank`` lines -> {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for no, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise FormatError(f"line {no} is not 'base64 rank'", where)
        try:
            tok = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"line {no}: bad base64", where) from None
        ranks[tok] = int(parts[1])
    if not ranks:
        raise FormatError("no tokens", where)
    return ranks


def replay_merges(ranks: dict[bytes, int]) -> list[str]:
    """BPE merges implied by tiktoken ranks: each multi-byte token is rebuilt from its bytes
    with lower-ranked merges only; the last two parts are its merge."""
    out: list[tuple[int, str]] = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        parts = [tok[i:i + 1] for i in range(len(tok))]
        while len(parts) > 2:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) == 2:
            out.append((rank, bytes_to_token(parts[0]) + " " + bytes_to_token(parts[1])))
    out.sort()
    return [m for _, m in out]


def _code_pattern(source: Source, tok_config: dict) -> str | None:
    """The ``pat_str`` a tiktoken checkpoint's tokenizer code defines, read with ``ast`` (never
    executed): a string literal or ``"|".join([...literals...])``."""
    for path in sorted(p for p in source.files() if p.endswith(".py") and "/" not in p):
        try:
            tree = ast.parse(source.read_file(path).decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, CkptError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, (ast.Name, ast.Attribute)) and
                                                    getattr(t, "id", getattr(t, "attr", "")) == "pat_str"
                                                    for t in node.targets):
                pattern = _pattern_literal(node.value)
                if pattern is not None:
                    return pattern
    return None


def _literal_str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _pattern_literal(v: ast.expr) -> str | None:
    """A string literal, or ``"sep".join([...string literals...])``; None for anything else."""
    if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr == "join" \
            and len(v.args) == 1 and isinstance(v.args[0], (ast.List, ast.Tuple)):
        sep = _literal_str(v.func.value)
        parts = [p for p in map(_literal_str, v.args[0].elts) if p is not None]
        return sep.join(parts) if sep is not None and len(parts) == len(v.args[0].elts) else None
    return _literal_str(v)


def _table_regex(name: str) -> str:
    entry = next(e for e in _table()["entries"] if e["name"] == name)
    return next(s[1] for s in entry["steps"] if s[0] == "Split")


def _tiktoken_vocab(source: Source, tok_config: dict, vocab_size: int, pre_override: str | None) -> Vocab:
    ranks = parse_tiktoken(source.read_file("tiktoken.model"))
    n = max(ranks.values()) + 1
    dec = tok_config.get("added_tokens_decoder") or {}
    specials = {int(i): d["content"] for i, d in dec.items()
                if str(i).isdigit() and isinstance(d, dict) and isinstance(d.get("content"), str)}
    size = _table_size(max([n - 1, *specials]) + 1, vocab_size, "tiktoken.model")
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for tok, r in ranks.items():
        tokens[r], types[r] = bytes_to_token(tok), NORMAL
    for i, text in specials.items():
        tokens[i], types[i] = text, CONTROL
    if pre_override is not None:
        pre = pre_override
    else:
        pat = _code_pattern(source, tok_config)
        if pat is None:
            # the tokenizer code is not in the checkpoint, only auto_map names it: known modules
            # map to table entries (mappings/pretokenizers.toml code_modules)
            auto = repr(tok_config.get("auto_map"))
            known = [e["name"] for e in _table()["entries"] if any(m in auto for m in e.get("code_modules", []))]
            pat = _table_regex(known[0]) if known else None
        if pat is None:
            raise UnsupportedError("tiktoken tokenizer whose split regex ckptkit cannot find (no "
                                   "pat_str in the checkpoint's tokenizer code); pass --pre NAME",
                                   "tiktoken.model")
        pre = identify_pre({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "use_regex": False, "add_prefix_space": False}]}})
    return Vocab("gpt2", pre, tokens, types, merges=replay_merges(ranks))


# ---- special tokens and chat template -------------------------------------------------------------

def _content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def special_tokens(source: Source, tj: dict | None, tok_config: dict, config: dict | None,
                   vocab: Vocab) -> tuple[dict[str, int], dict[str, bool]]:
    """({kind: token id}, {"bos"/"eos": add it?}) from, in order of trust: tokenizer_config.json,
    special_tokens_map.json, the tokenizer's post-processor, config.json,
    generation_config.json, the tokenizer file itself."""
    files = source.files()
    stmap = _read_json(source, "special_tokens_map.json") if "special_tokens_map.json" in files else {}
    gen = _read_json(source, "generation_config.json") if "generation_config.json" in files else {}
    lookup: dict[str, int] = {}
    for i, t in enumerate(vocab.tokens):
        lookup.setdefault(t, i)
    for a in _added_tokens(tj):
        lookup[a["content"]] = a["id"]

    ids: dict[str, int] = {}
    names = {"bos": "bos_token", "eos": "eos_token", "unk": "unk_token", "pad": "pad_token"}
    for kind, name in names.items():
        for src in (tok_config, stmap):
            text = _content(src.get(name)) if isinstance(src, dict) else None
            if text is not None and text in lookup:
                ids[kind] = lookup[text]
                break

    adds: dict[str, bool] = {}
    for kind in ("bos", "eos"):
        if isinstance(tok_config.get(f"add_{kind}_token"), bool):
            adds[kind] = tok_config[f"add_{kind}_token"]
    first, last, says = _post_processor(tj)
    if says:
        for kind, tok in (("bos", first), ("eos", last)):
            if tok is not None and kind not in ids and tok in lookup:
                ids[kind] = lookup[tok]
            if kind not in adds:
                adds[kind] = tok is not None and kind in ids and lookup.get(tok) == ids[kind]

    for cfg in (config or {}, (config or {}).get("text_config") or {}, gen or {}):
        if not isinstance(cfg, dict):
            continue
        for kind in _SPECIAL_KINDS:
            v = cfg.get(f"{kind}_token_id")
            if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
                v = v[0]
            if kind not in ids and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(vocab.tokens):
                ids[kind] = v
    for kind, i in vocab.specials.items():
        ids.setdefault(kind, i)
    return ids, adds


def _post_processor(tj: dict | None) -> tuple[str | None, str | None, bool]:
    """(token put first, token put last, whether the post-processor says anything) for a
    single sequence, from TemplateProcessing / RobertaProcessing / ByteLevel."""
    pp = (tj or {}).get("post_processor")
    if not isinstance(pp, dict):
        return None, None, False
    procs = pp.get("processors") if pp.get("type") == "Sequence" else [pp]
    first = last = None
    says = False
    for p in procs or []:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "ByteLevel":
            says = True
        elif p.get("type") == "RobertaProcessing":
            says = True
            cls, sep = p.get("cls"), p.get("sep")
            first = cls[0] if isinstance(cls, list) and cls else first
            last = sep[0] if isinstance(sep, list) and sep else last
        elif p.get("type") == "TemplateProcessing":
            says = True
            single = p.get("single")
            single = [_special_id(x) for x in single] if isinstance(single, list) else []
            if single:
                first = single[0]
            if len(single) > 1:
                last = single[-1]
    return first, last, says


def _special_id(piece: Any) -> str | None:
    """The token of a TemplateProcessing item {"SpecialToken": {"id": ...}}, else None."""
    st = piece.get("SpecialToken") if isinstance(piece, dict) else None
    tid = st.get("id") if isinstance(st, dict) else None
    return tid if isinstance(tid, str) else None


def chat_template_kvs(source: Source, tok_config: dict) -> list[KV]:
    """``tokenizer.chat_template`` (and named extra templates) from tokenizer_config.json,
    chat_template.jinja or chat_template.json."""
    files = source.files()
    tmpl = tok_config.get("chat_template")
    if tmpl is None and "chat_template.jinja" in files:
        try:
            tmpl = source.read_file("chat_template.jinja").decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("not UTF-8", "chat_template.jinja") from None
    if tmpl is None and "chat_template.json" in files:
        tmpl = (_read_json(source, "chat_template.json") or {}).get("chat_template")
    if tmpl is None:
        return []
    if isinstance(tmpl, str):
        return [kv("tokenizer.chat_template", tmpl)]
    if isinstance(tmpl, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                      and isinstance(t.get("template"), str) for t in tmpl):
        out: list[KV] = []
        names: list[str] = []
        for t in tmpl:
            if t["name"] == "default":
                out.insert(0, kv("tokenizer.chat_template", t["template"]))
            else:
                out.append(kv(f"tokenizer.chat_template.{t['name']}", t["template"]))
                names.append(t["name"])
        if names:
            out.append(kv("tokenizer.chat_templates", names, VT.ARRAY, VT.STRING))
        return out
    raise FormatError("chat_template is neither a string nor a list of {name, template}",
                      "tokenizer_config.json")


def _read_json(source: Source, path: str) -> Any:
    from ...api import read_json  # late: api imports the converter
    return read_json(source, path)
