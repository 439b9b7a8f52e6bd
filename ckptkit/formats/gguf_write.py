"""GGUF v3 writer that streams: the header (metadata and tensor table) is computed from the
plan alone, then each tensor's bytes are written in order as they are produced.

Layout facts (ggml's gguf.md): magic "GGUF", u32 version, u64 tensor count, u64 KV count,
the KVs, the tensor infos (name, n_dims, ne[] innermost first, ggml type, offset relative to
the data section), padding to ``general.alignment``, then the data, each tensor aligned.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from ..atomic import AtomicFiles, Chunk, write_tensor
from ..dtypes import GGML_TYPES, ggml_nbytes
from ..errors import CkptError, FormatError
from ..sources.files import split_gguf_name
from . import pack_in_order

DEFAULT_ALIGNMENT = 32


class VT(IntEnum):
    """GGUF metadata value types."""
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I",
           VT.INT32: "<i", VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q",
           VT.FLOAT64: "<d"}


@dataclass(frozen=True)
class KV:
    key: str
    type: VT
    value: Any
    item_type: VT | None = None  # for arrays


def kv(key: str, value: Any, type: VT | None = None, item_type: VT | None = None) -> KV:
    """A KV with the type GGUF convention gives a Python value unless told otherwise:
    bool -> BOOL, int -> UINT32 (INT32 if negative), float -> FLOAT32, str -> STRING,
    list -> ARRAY of the first element's type."""
    if type is None:
        type = _infer_type(value)
    if type == VT.ARRAY and item_type is None:
        item_type = _infer_type(value[0]) if value else VT.INT32
        if item_type == VT.UINT32 and any(v < 0 for v in value):
            item_type = VT.INT32
    return KV(key, type, value, item_type)


def _infer_type(v: Any) -> VT:
    if isinstance(v, bool):
        return VT.BOOL
    if isinstance(v, int):
        return VT.INT32 if v < 0 else VT.UINT32
    if isinstance(v, float):
        return VT.FLOAT32
    if isinstance(v, str):
        return VT.STRING
    if isinstance(v, (list, tuple)):
        return VT.ARRAY
    raise FormatError(f"no GGUF type for a {type(v).__name__} value")


def _string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(t: VT, v: Any, item: VT | None = None) -> bytes:
    if t == VT.STRING:
        return _string(v)
    if t == VT.ARRAY:
        assert item is not None
        head = struct.pack("<IQ", item, len(v))
        if item == VT.STRING:
            return head + b"".join(_string(x) for x in v)
        if item in _SCALAR:
            return head + struct.pack("<" + _SCALAR[item][1] * len(v), *v)
        raise FormatError("nested arrays are not written")
    return struct.pack(_SCALAR[t], v)


def encode_kvs(kvs: Sequence[KV]) -> bytes:
    seen: set[str] = set()
    out = []
    for k in kvs:
        if k.key in seen:
            raise CkptError(f"GGUF key {k.key!r} written twice")
        seen.add(k.key)
        out.append(_string(k.key) + struct.pack("<I", k.type) + _value(k.type, k.value, k.item_type))
    return b"".join(out)


@dataclass(frozen=True)
class TensorSlot:
    """One tensor of the output: name, numpy-order shape, ggml type."""
    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def nbytes(self) -> int:
        n = ggml_nbytes(self.ggml_type, self.shape)
        if n is None:
            raise FormatError(f"tensor {self.name}: rows of {self.shape[-1]} do not fill "
                              f"{GGML_TYPES[self.ggml_type][0]} blocks")
        return n


def _align(n: int, a: int) -> int:
    return n + (-n % a)


def header_bytes(kvs: Sequence[KV], slots: Sequence[TensorSlot],
                 alignment: int = DEFAULT_ALIGNMENT) -> tuple[bytes, list[int]]:
    """The whole header, padded to the alignment, and each tensor's offset in the data section."""
    offsets, cursor = [], 0
    infos = []
    for s in slots:
        offsets.append(cursor)
        ne = tuple(reversed(s.shape)) or (1,)
        infos.append(_string(s.name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, s.ggml_type, cursor))
        cursor = _align(cursor + s.nbytes, alignment)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(slots), len(kvs)) + encode_kvs(kvs) + b"".join(infos)
    return head + bytes(-len(head) % alignment), offsets


def split_slots(slots: Sequence[TensorSlot], max_bytes: int | None) -> list[list[TensorSlot]]:
    """Tensors grouped into files of at most ``max_bytes`` of data (one tensor may exceed it)."""
    return pack_in_order(slots, max_bytes) if max_bytes else [list(slots)]


def split_name(path: Path, no: int, count: int) -> Path:
    stem = path.name[:-5] if path.name.endswith(".gguf") else path.name
    return path.with_name(split_gguf_name(stem, no, count))


# Each slot, in order, with the chunks that together make up exactly its data.
ChunkSource = Iterable[tuple[TensorSlot, Iterable[Chunk]]]


def write_gguf(path: str | os.PathLike, kvs: Sequence[KV], slots: Sequence[TensorSlot],
               chunks: ChunkSource,
               alignment: int = DEFAULT_ALIGNMENT, split_max_bytes: int | None = None,
               on_bytes: Callable[[int], None] | None = None) -> list[Path]:
    """Write the GGUF file(s) atomically. ``chunks`` yields, for each slot in order, an
    iterable of byte chunks that together make up exactly that tensor's data."""
    path = Path(path)
    groups = split_slots(slots, split_max_bytes)
    n = len(groups)
    names = [path] if n == 1 else [split_name(path, i + 1, n) for i in range(n)]
    by_name = ((s.name, parts) for s, parts in chunks)
    with AtomicFiles() as files:
        for i, (group, name) in enumerate(zip(groups, names, strict=True)):
            file_kvs = list(kvs) if i == 0 else [k for k in kvs if k.key == "general.architecture"]
            if n > 1:
                file_kvs += [kv("split.no", i, VT.UINT16), kv("split.count", n, VT.UINT16),
                             kv("split.tensors.count", len(slots), VT.INT32)]
            head, _ = header_bytes(file_kvs, group, alignment)
            f = files.open(name)
            f.write(head)
            for slot in group:
                written = write_tensor(f, by_name, slot.name, slot.nbytes, on_bytes)
                pad = -written % alignment
                if pad and slot is not group[-1]:
                    f.write(bytes(pad))
        files.commit()
    return names
