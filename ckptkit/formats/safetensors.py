"""Strict safetensors header reader, to the letter of the format.

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data region.
The JSON maps tensor names to {dtype, shape, data_offsets: [begin, end]} (relative to the
data region) plus an optional "__metadata__" of string to string. Offsets must tile the data
region exactly: sorted, contiguous from 0, no gap, no overlap, ending at its end.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from math import prod

from ..dtypes import SAFETENSORS_BITS, safetensors_nbytes
from ..errors import FormatError
from ..index import TensorInfo
from ..sources.base import Source

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's own ceiling
_U64 = 1 << 64                  # shapes and offsets are usize in the reference: larger is corrupt
_FIRST_READ = 1 << 16           # a good first guess: most shard headers are smaller


@dataclass
class SafetensorsHeader:
    header_len: int                       # N
    tensors: list[TensorInfo]             # in data order
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + self.header_len


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


# Every member of every JSON object is one key, one colon, one value; colons appear nowhere else
# but inside strings. So when the parsed objects hold as many members as the text has colons, no
# key was duplicated (the C parser keeps the last one silently): a duplicate leaves a member fewer.
# A colon inside a name only makes the counts disagree, which sends the header to the slow path.

def _members(obj: dict) -> int:
    """Members of the top-level object and of the objects directly inside it (deeper objects
    are not counted, which only makes the count disagree and sends the header to the slow path)."""
    n = len(obj)
    for v in obj.values():
        if isinstance(v, dict):
            n += len(v)
    return n


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _short(x: object, limit: int = 80) -> str:
    """repr() for messages, cut short: hostile names and shapes can be megabytes long."""
    if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 200:
        return f"<a {x.bit_length()}-bit integer>"  # str() of huge ints is slow, and limited
    if isinstance(x, list) and len(x) > 16:
        return f"[{', '.join(_short(v, 20) for v in x[:8])}, ... ({len(x)} items)]"
    if isinstance(x, list):
        r = "[" + ", ".join(_short(v, 20) for v in x) + "]"
    else:
        r = repr(x)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _numel(shape: list[int]) -> int | None:
    """Product of the dimensions, or None when it does not fit in 64 bits (stops early, so a
    long list of large dimensions costs no big-integer arithmetic)."""
    if 0 in shape:
        return 0
    n = 1
    for d in shape:
        n *= d
        if n >= _U64:
            return None
    return n


def parse_header_length(first8: bytes, file_size: int | None, where: str) -> int:
    if len(first8) < 8:
        raise FormatError(
            f"truncated: {len(first8)} bytes, a safetensors file starts with an 8-byte header length", where)
    (n,) = struct.unpack("<Q", first8[:8])
    if n == 0:
        raise FormatError("header length is 0", where)
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit", where)
    if file_size is not None and 8 + n > file_size:
        raise FormatError(f"header length {n} runs past the end of the {file_size}-byte file", where)
    return n


def parse_header_json(raw: bytes, where: str) -> tuple[dict, dict[str, str]]:
    """The header's JSON as (tensor entries, __metadata__), checked for form, not offsets."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header is not valid UTF-8 (byte {e.start})", where) from None
    if not text.lstrip().startswith("{"):
        raise FormatError("header is not a JSON object", where)
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and _members(obj) != text.count(":"):
            # some key may be duplicated: parse again, slowly, to find and name it
            obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as e:  # JSONDecodeError is a ValueError; so is our duplicate check
        raise FormatError(f"header is not valid JSON: {_short(str(e), 200)}", where) from None
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        raise FormatError("header JSON is nested too deeply", where) from None
    if not isinstance(obj, dict):
        raise FormatError("header is not a JSON object", where)
    meta = obj.pop("__metadata__", None)
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("__metadata__ must map strings to strings", where)
    return obj, meta


def _check_entry(name: str, entry: object, where: str) -> tuple[str, tuple[int, ...], int, int]:
    # The common case, checked with as few Python steps as possible; anything unusual takes
    # the slow path below, which names the fault.
    if type(entry) is dict and len(entry) == 3:
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (type(dtype) is str and (bits := SAFETENSORS_BITS.get(dtype))
                and type(shape) is list and type(offsets) is list and len(offsets) == 2
                and type(offsets[0]) is int and type(offsets[1]) is int and 0 <= offsets[0] <= offsets[1] < _U64
                and len(shape) <= 8):
            numel = 1
            for d in shape:
                if type(d) is not int or not 0 <= d < _U64:
                    break
                numel *= d
            else:
                if numel < _U64 and (numel * bits) % 8 == 0 and offsets[1] - offsets[0] == numel * bits // 8:
                    return dtype, tuple(shape), offsets[0], offsets[1]
    return _check_entry_slow(name, entry, where)


def _check_entry_slow(name: str, entry: object, where: str) -> tuple[str, tuple[int, ...], int, int]:
    tn = f"tensor {_short(name)}"
    if not isinstance(entry, dict):
        raise FormatError(f"{tn}: entry is not an object", where)
    extra = set(entry) - {"dtype", "shape", "data_offsets"}
    if extra:
        raise FormatError(f"{tn}: unknown field {_short(sorted(extra)[0])}", where)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_BITS:
        raise FormatError(f"{tn}: unknown dtype {_short(dtype)}", where)
    if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d < _U64 for d in shape):
        raise FormatError(f"{tn}: shape must be a list of non-negative 64-bit integers, got {_short(shape)}", where)
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or offsets[0] < 0 or offsets[1] < offsets[0] or offsets[1] >= _U64):
        raise FormatError(f"{tn}: data_offsets must be [begin, end] with 0 <= begin <= end < 2^64, "
                          f"got {_short(offsets)}", where)
    numel = _numel(shape)
    if numel is None:
        raise FormatError(f"{tn}: shape {_short(shape)} has more elements than fit in 64 bits", where)
    nbytes = safetensors_nbytes(dtype, numel)
    if nbytes is None:
        raise FormatError(f"{tn}: {dtype} data of shape {_short(shape)} does not end on a byte boundary", where)
    if offsets[1] - offsets[0] != nbytes:
        raise FormatError(
            f"{tn}: data_offsets span {offsets[1] - offsets[0]} bytes but {dtype} {_short(shape)} needs {nbytes}",
            where)
    return dtype, tuple(shape), offsets[0], offsets[1]


def parse_header(raw: bytes, header_len: int, file: str, file_size: int | None,
                 where: str | None = None) -> SafetensorsHeader:
    """Validate a header completely: every entry, and that the offsets tile the data region."""
    where = where or file
    entries, meta = parse_header_json(raw, where)
    rows = []
    for name, entry in entries.items():
        dtype, shape, begin, end = _check_entry(name, entry, where)
        rows.append((begin, end, name, dtype, shape))
    rows.sort()  # by offsets (names break ties: they are unique)
    data_start = 8 + header_len
    cursor = 0
    tensors: list[TensorInfo] = []
    for begin, end, name, dtype, shape in rows:
        if begin < cursor:
            raise FormatError(
                f"tensor {_short(name)}: data [{begin}, {end}) overlaps the previous tensor (ends at {cursor})", where)
        if begin > cursor:
            raise FormatError(f"tensor {_short(name)}: gap of {begin - cursor} bytes before its data at {begin}", where)
        cursor = end
        tensors.append(TensorInfo(name, dtype, shape, file, data_start + begin, end - begin))
    if file_size is not None:
        data_len = file_size - data_start
        if cursor > data_len:
            raise FormatError(f"tensor data ends at byte {data_start + cursor}, "
                              f"past the end of the {file_size}-byte file (truncated?)", where)
        if cursor < data_len:
            raise FormatError(f"{data_len - cursor} bytes after the last tensor are not covered by the header", where)
    return SafetensorsHeader(header_len, tensors, meta)


def fetch_header(source: Source, path: str, guess: int = _FIRST_READ,
                 where: str | None = None) -> tuple[bytes, int, int | None]:
    """The raw header JSON, its length N and the file size, in one read when ``guess`` covers
    the header, two otherwise. I/O only: parsing is left to the caller, so many fetches can
    run on threads while the parsing (CPU-bound) runs on one."""
    where = where or path
    head, size = source.read_head(path, max(guess, 8))
    n = parse_header_length(head[:8], size, where)
    if len(head) < 8 + n:
        if size is not None and len(head) >= size:
            raise FormatError(f"header length {n} runs past the end of the file", where)
        head += source.read(path, len(head), 8 + n - len(head))
    return head[8:8 + n], n, size


def read_header(source: Source, path: str, guess: int = _FIRST_READ,
                where: str | None = None) -> tuple[SafetensorsHeader, int | None]:
    """Read and validate one file's header. Returns the header and the file size (None when
    the source cannot tell)."""
    raw, n, size = fetch_header(source, path, guess, where)
    return parse_header(raw, n, path, size, where or path), size


def build_header(tensors: list[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None, align: int = 8) -> tuple[bytes, list[int]]:
    """Header bytes (length prefix included) for tensors laid out in the given order, and each
    tensor's offset from the start of the data region. The JSON is padded with spaces so the
    data starts aligned, as the reference writer does."""
    obj: dict = {}
    if metadata:
        obj["__metadata__"] = metadata
    offsets, cursor = [], 0
    for name, dtype, shape in tensors:
        nbytes = safetensors_nbytes(dtype, prod(shape))
        if nbytes is None:
            raise FormatError(f"tensor {name!r}: {dtype} {list(shape)} does not end on a byte boundary")
        obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [cursor, cursor + nbytes]}
        offsets.append(cursor)
        cursor += nbytes
    raw = json.dumps(obj, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % align)
    return struct.pack("<Q", len(raw)) + raw, offsets
