"""A SentencePiece ``tokenizer.model`` (ModelProto, protobuf written by hand) from a GGUF
SentencePiece vocabulary, where it can be rebuilt exactly: llama.cpp's SPM tokenizer is
SentencePiece's BPE model without normalisation (the "identity" rule; no NFKC table is in the
GGUF), so the pieces, scores and types, the dummy prefix and byte fallback are all it needs.

Field numbers: sentencepiece_model.proto (ModelProto{1 pieces, 2 trainer_spec,
3 normalizer_spec}; SentencePiece{1 piece, 2 score, 3 type}; TrainerSpec{3 model_type (BPE = 2),
4 vocab_size, 35 byte_fallback, 40..43 unk/bos/eos/pad ids}; NormalizerSpec{1 name,
3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces})."""
from __future__ import annotations

import re
import struct

from ...errors import UnsupportedError
from .to_hf_vocab import BYTE, UNKNOWN, UNUSED, USER_DEFINED, GGUFVocab
from .vocab import SPM_SPACE

_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1                      # negative int32: ten bytes, two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _int(num: int, value: int) -> bytes:
    return _key(num, 0) + _varint(value)


def _bytes(num: int, data: bytes) -> bytes:
    return _key(num, 2) + _varint(len(data)) + data


def _float(num: int, value: float) -> bytes:
    return _key(num, 5) + struct.pack("<f", value)


def spm_model_bytes(v: GGUFVocab, add_dummy_prefix: bool, unigram: bool = False, charsmap: bytes = b"",
                    remove_extra_whitespaces: bool = False) -> bytes:
    """The ModelProto (a BPE model, or ``unigram`` with the compiled normalisation map ``charsmap``),
    or UnsupportedError saying why SentencePiece could not load it as llama.cpp reads the vocabulary."""
    if v.scores is None:
        raise UnsupportedError("no scores")
    types = list(v.types)
    unk = v.ids.get("unk")
    unknowns = [i for i, t in enumerate(types) if t == UNKNOWN]
    if unk is None:
        if len(unknowns) != 1:
            raise UnsupportedError("no unknown token (SentencePiece needs exactly one)")
        unk = unknowns[0]
    # the unknown token llama.cpp uses is SentencePiece's one unk piece; other unknown-typed tokens
    # (old converters' [PADn] fillers) are, like unused pieces, never matched in text nor merged into
    for i in unknowns:
        types[i] = UNUSED
    types[unk] = UNKNOWN
    pieces = []
    for i, (tok, ty) in enumerate(zip(v.tokens, types, strict=True)):
        if ty == USER_DEFINED:     # the GGUF holds user-defined pieces as raw text (spaces)
            tok = tok.replace(" ", SPM_SPACE)
        if ty == BYTE and not _BYTE_PIECE.fullmatch(tok):
            raise UnsupportedError(f"byte token {i} is {tok!r}, not <0xXX>")
        pieces.append((tok, v.scores[i], ty))
    if len({p for p, _, _ in pieces}) != len(pieces):
        raise UnsupportedError("two pieces have the same text once spaces are written as '▁'")
    n_bytes = sum(1 for _, _, t in pieces if t == BYTE)
    if n_bytes not in (0, 256):
        raise UnsupportedError(f"{n_bytes} byte tokens: byte fallback needs all 256")
    body = b"".join(_bytes(1, _bytes(1, p.encode()) + _float(2, s) + _int(3, t)) for p, s, t in pieces)
    trainer = _int(3, 1 if unigram else 2) + _int(4, len(pieces)) + _int(35, int(n_bytes == 256))
    for num, kind in ((40, "unk"), (41, "bos"), (42, "eos"), (43, "pad")):
        trainer += _int(num, unk if kind == "unk" else v.ids.get(kind, -1))
    norm = _bytes(1, b"nmt_nfkc" if charsmap else b"identity") + (_bytes(2, charsmap) if charsmap else b"") + \
        _int(3, int(add_dummy_prefix)) + _int(4, int(remove_extra_whitespaces)) + _int(5, 1)
    return body + _bytes(2, trainer) + _bytes(3, norm)
