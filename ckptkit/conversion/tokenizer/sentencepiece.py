"""SentencePiece: ``tokenizer.model`` (protobuf, parsed here) or a ``tokenizer.json`` whose model is
Unigram or a byte-fallback/Metaspace BPE -> ``tokenizer.ggml.model = "llama"`` with scores."""
from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ...errors import CkptError, FormatError
from ...sources.base import Source
from .bpe import parse_merges
from .vocab import (
    BYTE,
    CONTROL,
    NORMAL,
    SPM_SPACE,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    Vocab,
    added_tokens,
    looks_special,
    read_json,
    table_size,
)

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


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


def spm_vocab(spm: SpmModel, vocab_size: int) -> Vocab:
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


def hf_spm_vocab(tj: dict, vocab_size: int) -> Vocab:
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
        for r, m in enumerate(parse_merges(model.get("merges"))):
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
    size = table_size(n, vocab_size, "tokenizer.json")
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
    return any(isinstance(n, dict) and n.get("type") == "Prepend" and n.get("prepend") == SPM_SPACE
               for n in subs)


def apply_added_tokens(vocab: Vocab, source: Source, tj: dict | None, tok_config: dict,
                        vocab_size: int) -> None:
    """Added tokens of a SentencePiece vocab (added_tokens.json, tokenizer.json's added_tokens,
    tokenizer_config's added_tokens_decoder): they extend or re-type pieces."""
    found: dict[int, tuple[str, bool]] = {}
    if "added_tokens.json" in source.files():
        extra = read_json(source, "added_tokens.json")
        if not isinstance(extra, dict):
            raise FormatError("not an object", "added_tokens.json")
        for text, i in extra.items():
            if isinstance(i, int) and i >= 0:
                found[i] = (text, False)
    for a in added_tokens(tj):
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
        size = table_size(top, vocab_size, "added tokens")
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
            text = text.replace(SPM_SPACE, " ")
            vocab.types[i] = USER_DEFINED
        vocab.tokens[i] = text
        if not same:  # a piece of the model keeps its score
            scores[i] = -1000.0
