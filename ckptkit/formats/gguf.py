"""Strict, incremental GGUF header reader (versions 2 and 3, either byte order).

Reads only the header (metadata, tensor table) through ranged reads of a Source: one speculative
head read, then geometrically growing reads, so a remote file's tensor data is never fetched.
Every problem in the input is a FormatError naming it; sizes are checked against the bytes left
in the file before anything is allocated.

Strings: keys and tensor names must be valid UTF-8 (FormatError otherwise); string *values* are
decoded with errors="replace" so one bad token in a vocabulary does not make a model unreadable.
Bools must be 0 or 1.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeGuard

from ckptkit.dtypes import GGML_TYPES
from ckptkit.errors import FormatError, SourceError
from ckptkit.index import TensorInfo
from ckptkit.sources.base import Source
from ckptkit.sources.files import parse_split_gguf, split_gguf_name

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                     # GGML_MAX_DIMS
FIRST_CHUNK = 1 << 20            # first speculative read
MAX_HEADER_BYTES = 1 << 30       # bound on what we buffer when the file size is unknown
MAX_ARRAY_DEPTH = 16             # nested arrays deeper than this are refused, not recursed into

KEY_ALIGNMENT = "general.alignment"
KEY_SPLIT_NO = "split.no"
KEY_SPLIT_COUNT = "split.count"
KEY_SPLIT_TENSORS = "split.tensors.count"

# GGUF value types: id -> (name, struct code or None, fixed size or minimum encoded size)
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)
VALUE_TYPES: dict[int, tuple[str, str | None, int]] = {
    T_UINT8: ("UINT8", "B", 1), T_INT8: ("INT8", "b", 1),
    T_UINT16: ("UINT16", "H", 2), T_INT16: ("INT16", "h", 2),
    T_UINT32: ("UINT32", "I", 4), T_INT32: ("INT32", "i", 4),
    T_FLOAT32: ("FLOAT32", "f", 4), T_BOOL: ("BOOL", "B", 1),
    T_STRING: ("STRING", None, 8),          # u64 length + bytes
    T_ARRAY: ("ARRAY", None, 12),           # u32 type + u64 count + elements
    T_UINT64: ("UINT64", "Q", 8), T_INT64: ("INT64", "q", 8), T_FLOAT64: ("FLOAT64", "d", 8),
}
_MIN_KV = 8 + 4 + 1              # empty key, type, 1-byte value
_MIN_TENSOR = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset
_FIXED_HEADER = 4 + 4 + 8 + 8    # magic, version, n_tensors, n_kv


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    type_id: int
    type_name: str
    shape: tuple[int, ...]       # numpy order: ne[] reversed
    offset: int                  # absolute in the file
    nbytes: int


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    metadata_types: dict[str, int | tuple]   # type id; arrays: (9, element type id)
    tensors: list[GGUFTensor]
    alignment: int
    data_offset: int                         # absolute start of the tensor data section
    file_size: int | None
    byteorder: str = "little"
    tensor_table_end: int = field(default=0)  # end of the tensor table (before padding)


# ---- incremental cursor ------------------------------------------------------------------------

class _Cursor:
    """A read position over a file's prefix that fetches more bytes from the source on demand."""

    def __init__(self, source: Source, path: str, first_chunk: int):
        self.source, self.path = source, path
        data, size = source.read_head(path, first_chunk)
        if size is None and len(data) < first_chunk:
            size = len(data)     # a short head read means we saw the whole file
        self.buf = bytearray(data)
        self.size = size
        self.pos = 0
        self.end = "<"

    def fail(self, message: str) -> FormatError:
        return FormatError(message, where=self.path)

    def left(self) -> int:
        """Bytes left after the position: in the file, or the buffering bound if size unknown."""
        limit = self.size if self.size is not None else MAX_HEADER_BYTES
        return max(limit - self.pos, 0)

    def ensure(self, n: int, what: str) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if self.size is not None and end > self.size:
            raise self.fail(f"truncated: {what} at offset {self.pos} needs {n} bytes, "
                            f"file has {self.size - self.pos} left")
        if end > MAX_HEADER_BYTES:
            raise self.fail(f"header larger than {MAX_HEADER_BYTES} bytes while reading {what}")
        have = len(self.buf)
        want = max(end, 2 * have)
        want = min(want, self.size if self.size is not None else MAX_HEADER_BYTES)
        try:
            chunk = self.source.read(self.path, have, want - have)
        except FormatError:
            if self.size is not None or want == end:
                raise self.fail(f"truncated: {what} at offset {self.pos} runs past end of file") from None
            try:  # size unknown and the speculative read overshot: read only what is needed
                chunk = self.source.read(self.path, have, end - have)
            except FormatError:
                raise self.fail(f"truncated: {what} at offset {self.pos} runs past end of file") from None
        if len(chunk) < end - have:
            raise self.fail(f"truncated: {what} at offset {self.pos} runs past end of file")
        self.buf += chunk

    def unpack(self, code: str, size: int, what: str):
        self.ensure(size, what)
        (v,) = struct.unpack_from(self.end + code, self.buf, self.pos)
        self.pos += size
        return v

    def u32(self, what: str) -> int:
        return self.unpack("I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", 8, what)

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        if n > self.left():
            raise self.fail(f"{what} length {n} exceeds the {self.left()} bytes left in the file "
                            "(truncated or corrupt)")
        self.ensure(n, what)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def name(self, what: str) -> str:
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8: {raw[:64]!r}") from None


# ---- metadata values ----------------------------------------------------------------------------

def _value_type(cur: _Cursor, what: str) -> int:
    t = cur.u32(f"type of {what}")
    if t not in VALUE_TYPES:
        raise cur.fail(f"unknown value type {t} for {what}")
    return t


def _bool(cur: _Cursor, v: int, what: str) -> bool:
    if v > 1:
        raise cur.fail(f"bool value {v} (not 0 or 1) in {what}")
    return bool(v)


def _read_value(cur: _Cursor, vtype: int, what: str, depth: int = 0) -> Any:
    if vtype == T_STRING:
        return cur.raw_string(what).decode("utf-8", errors="replace")
    if vtype == T_ARRAY:
        return _read_array(cur, what, depth + 1)[0]
    _, code, size = VALUE_TYPES[vtype]
    assert code is not None  # every type but STRING and ARRAY (handled above) has a struct code
    v = cur.unpack(code, size, what)
    return _bool(cur, v, what) if vtype == T_BOOL else v


def _read_array(cur: _Cursor, what: str, depth: int) -> tuple[list, int]:
    if depth > MAX_ARRAY_DEPTH:
        raise cur.fail(f"arrays nested deeper than {MAX_ARRAY_DEPTH} in {what}")
    etype = _value_type(cur, f"elements of {what}")
    count = cur.u64(f"length of {what}")
    _, code, size = VALUE_TYPES[etype]
    if count * size > cur.left():  # checked before allocating anything
        raise cur.fail(f"array {what} of {count} {VALUE_TYPES[etype][0]} elements needs at least "
                       f"{count * size} bytes, only {cur.left()} left in the file")
    if code is not None:
        cur.ensure(count * size, what)
        vals = list(struct.unpack_from(f"{cur.end}{count}{code}", cur.buf, cur.pos))
        cur.pos += count * size
        if etype == T_BOOL:
            vals = [_bool(cur, v, what) for v in vals]
        return vals, etype
    return [_read_value(cur, etype, what, depth) for _ in range(count)], etype


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, int | tuple]]:
    metadata: dict[str, Any] = {}
    types: dict[str, int | tuple] = {}
    for i in range(n_kv):
        key = cur.name(f"key of metadata entry {i}")
        if key in metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        vtype = _value_type(cur, f"metadata {key!r}")
        if vtype == T_ARRAY:
            metadata[key], etype = _read_array(cur, f"metadata {key!r}", 1)
            types[key] = (T_ARRAY, etype)
        else:
            metadata[key] = _read_value(cur, vtype, f"metadata {key!r}")
            types[key] = vtype
    return metadata, types


def _alignment(cur: _Cursor, metadata: dict, types: dict) -> int:
    if KEY_ALIGNMENT not in metadata:
        return DEFAULT_ALIGNMENT
    if types[KEY_ALIGNMENT] != T_UINT32:
        raise cur.fail(f"{KEY_ALIGNMENT} must be UINT32, not {_type_label(types[KEY_ALIGNMENT])}")
    a = metadata[KEY_ALIGNMENT]
    if a == 0 or a & (a - 1):
        raise cur.fail(f"{KEY_ALIGNMENT} {a} is not a nonzero power of two")
    return a


def _type_label(t: int | tuple) -> str:
    if isinstance(t, tuple):
        return f"ARRAY of {VALUE_TYPES[t[1]][0]}"
    return VALUE_TYPES[t][0]


# ---- tensor table --------------------------------------------------------------------------------

def _read_tensor_info(cur: _Cursor, i: int) -> tuple[str, tuple[int, ...], int, int]:
    """One table entry: (name, ne (ggml order), type id, offset relative to the data section)."""
    name = cur.name(f"name of tensor {i}")
    n_dims = cur.u32(f"n_dims of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has n_dims {n_dims} (must be 1..{MAX_DIMS})")
    ne = []
    for j in range(n_dims):
        d = cur.u64(f"dimension {j} of tensor {name!r}")
        if d == 0 or d >= 1 << 63:
            shown = d if d < 1 << 63 else d - (1 << 64)
            raise cur.fail(f"tensor {name!r} has dimension {j} = {shown} (must be > 0)")
        ne.append(d)
    type_id = cur.u32(f"type of tensor {name!r}")
    if type_id not in GGML_TYPES:
        raise cur.fail(f"tensor {name!r} has unknown ggml type {type_id}")
    rel = cur.u64(f"offset of tensor {name!r}")
    return name, tuple(ne), type_id, rel


def _tensor_nbytes(cur: _Cursor, name: str, ne: tuple[int, ...], type_id: int) -> int:
    type_name, block, size = GGML_TYPES[type_id]
    numel = 1
    for d in ne:
        numel *= d
    if numel >= 1 << 63:
        raise cur.fail(f"tensor {name!r} shape {tuple(reversed(ne))} overflows int64 elements")
    if ne[0] % block:
        raise cur.fail(f"tensor {name!r} of type {type_name} has rows of {ne[0]} elements, "
                       f"not a multiple of its block size {block}")
    return numel // block * size


def _check_layout(cur: _Cursor, tensors: list[GGUFTensor], rel: list[int], alignment: int) -> None:
    for t, r in zip(tensors, rel, strict=True):
        if r % alignment:
            raise cur.fail(f"tensor {t.name!r} offset {r} is not aligned to {alignment}")
        if cur.size is not None and t.offset + t.nbytes > cur.size:
            raise cur.fail(f"tensor {t.name!r} data [{t.offset}, {t.offset + t.nbytes}) extends "
                           f"past the end of the file ({cur.size} bytes)")
    ordered = sorted(tensors, key=lambda t: t.offset)
    for a, b in pairwise(ordered):
        if b.offset < a.offset + a.nbytes:
            raise cur.fail(f"tensors {a.name!r} and {b.name!r} overlap "
                           f"([{a.offset}, {a.offset + a.nbytes}) and [{b.offset}, ...))")


# ---- public API ----------------------------------------------------------------------------------

def read_gguf_header(source: Source, path: str, first_chunk: int = FIRST_CHUNK) -> GGUFHeader:
    """Parse and validate the header of GGUF file ``path`` of ``source`` (no tensor data read)."""
    cur = _Cursor(source, path, max(first_chunk, _FIXED_HEADER))
    cur.ensure(4, "magic")
    magic = bytes(cur.buf[:4])
    if magic != MAGIC:
        raise cur.fail(f"bad magic {magic!r}: not a GGUF file (expected b'GGUF')")
    cur.pos = 4
    version = cur.u32("version")
    if version & 0xFFFF == 0 and version >> 24 in (1, 2, 3):  # written big-endian
        cur.end, version = ">", version >> 24
    if version == 1:
        raise cur.fail("GGUF version 1 (32-bit counts) is not supported; re-convert the model")
    if version not in (2, 3):
        raise cur.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    room = cur.left()
    if n_kv * _MIN_KV > room:
        raise cur.fail(f"metadata count {n_kv} cannot fit in the {room} bytes left "
                       f"(each entry needs at least {_MIN_KV})")
    if n_tensors * _MIN_TENSOR + n_kv * _MIN_KV > room:
        raise cur.fail(f"tensor count {n_tensors} cannot fit in the {room} bytes left "
                       f"(each entry needs at least {_MIN_TENSOR})")

    metadata, types = _read_metadata(cur, n_kv)
    alignment = _alignment(cur, metadata, types)

    infos, seen = [], set()
    for i in range(n_tensors):
        info = _read_tensor_info(cur, i)
        if info[0] in seen:
            raise cur.fail(f"duplicate tensor name {info[0]!r}")
        seen.add(info[0])
        infos.append(info)
    table_end = cur.pos
    data_offset = -(-table_end // alignment) * alignment

    tensors = []
    for name, ne, type_id, rel in infos:
        nbytes = _tensor_nbytes(cur, name, ne, type_id)
        tensors.append(GGUFTensor(name, type_id, GGML_TYPES[type_id][0], tuple(reversed(ne)),
                                  data_offset + rel, nbytes))
    _check_layout(cur, tensors, [info[3] for info in infos], alignment)
    return GGUFHeader(version, metadata, types, tensors, alignment, data_offset, cur.size,
                      "big" if cur.end == ">" else "little", table_end)


def tensor_infos(header: GGUFHeader, path: str) -> list[TensorInfo]:
    """The header's tensors as index entries (dtype = ggml type name, numpy-order shape)."""
    return [TensorInfo(t.name, t.type_name, t.shape, path, t.offset, t.nbytes)
            for t in header.tensors]


# ---- split files (gguf-split: name-00001-of-00003.gguf) ---------------------------------------

def split_gguf_parts(filenames: list[str]) -> list[list[str]]:
    """Group .gguf files into models: each split set ordered by part, other .gguf files alone.

    Names not ending in .gguf are ignored. A missing, extra or inconsistent part is a SourceError.
    """
    sets: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    singles: list[str] = []
    for fn in filenames:
        if not fn.endswith(".gguf"):
            continue
        part = parse_split_gguf(fn)
        if part is None:
            singles.append(fn)
            continue
        prefix, no, count = part
        if count == 0 or not 1 <= no <= count:
            raise SourceError(f"split part number {no} of {count} is out of range", where=fn)
        if counts.setdefault(prefix, count) != count:
            raise SourceError(f"split parts of {prefix!r} disagree on the part count "
                              f"({counts[prefix]} vs {count})", where=fn)
        sets.setdefault(prefix, {})[no] = fn
    groups = [[fn] for fn in singles]
    for prefix in sorted(sets):
        parts, count = sets[prefix], counts[prefix]
        for no in range(1, count + 1):
            if no not in parts:
                raise SourceError(f"missing split part {split_gguf_name(prefix, no, count)}",
                                  where=prefix)
        groups.append([parts[no] for no in range(1, count + 1)])
    return sorted(groups, key=lambda g: g[0])


def split_info(header: GGUFHeader) -> tuple[object, object, object] | None:
    """(split.no (0-based), split.count, split.tensors.count) of a split part, else None.
    The values are as stored (a key may be missing or of another type): see _int_triple."""
    md = header.metadata
    if KEY_SPLIT_COUNT not in md:
        return None
    return md.get(KEY_SPLIT_NO), md[KEY_SPLIT_COUNT], md.get(KEY_SPLIT_TENSORS)


def _int_triple(info: tuple[object, object, object] | None) -> TypeGuard[tuple[int, int, int]]:
    return info is not None and all(isinstance(v, int) and not isinstance(v, bool) for v in info)


def check_split_set(headers: list[GGUFHeader], paths: list[str]) -> None:
    """Check that ordered part headers form one consistent split set (FormatError if not)."""
    if len(headers) == 1 and split_info(headers[0]) is None:
        return
    names: set[str] = set()
    total = None
    for i, (h, p) in enumerate(zip(headers, paths, strict=True)):
        info = split_info(h)
        if not _int_triple(info):
            raise FormatError(f"split part lacks integer {KEY_SPLIT_NO}/{KEY_SPLIT_COUNT}/"
                              f"{KEY_SPLIT_TENSORS} metadata", where=p)
        no, count, n_tensors = info
        if no != i or count != len(headers):
            raise FormatError(f"split metadata says part {no} of {count}, file is part {i} of "
                              f"{len(headers)} (0-based)", where=p)
        total = n_tensors if total is None else total
        if n_tensors != total:
            raise FormatError(f"{KEY_SPLIT_TENSORS} {n_tensors} differs from the first part's "
                              f"{total}", where=p)
        for t in h.tensors:
            if t.name in names:
                raise FormatError(f"tensor {t.name!r} appears in more than one split part", where=p)
            names.add(t.name)
    if total is not None and len(names) != total:
        raise FormatError(f"split set holds {len(names)} tensors, {KEY_SPLIT_TENSORS} says "
                          f"{total}", where=paths[0])
