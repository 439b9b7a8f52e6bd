"""Hostile GGUF corpus, built byte by byte at test time (no committed binaries).

``CASES`` maps a case name to (file bytes, regex the FormatError message must match).
``write_corpus(dirpath)`` writes every case as ``<name>.gguf``. ``MemSource`` is a minimal
in-memory ``Source`` that counts reads, shared by the GGUF tests.
"""
from __future__ import annotations

import struct
from pathlib import Path

from ckptkit.errors import FormatError
from ckptkit.sources.base import Source

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
F32_T, F16_T, Q8_0_T = 0, 1, 8


class MemSource(Source):
    """Files held in memory. ``known_size=False`` hides sizes (like a server without lengths)."""

    def __init__(self, files: dict[str, bytes], known_size: bool = True):
        self.data = files
        self.known_size = known_size
        self.reads: list[tuple[int, int]] = []   # successful reads: (offset, length)
        self.failed_reads = 0
        self.label = "mem"

    def files(self) -> dict[str, int | None]:
        return {k: (len(v) if self.known_size else None) for k, v in self.data.items()}

    def read(self, path: str, offset: int, length: int) -> bytes:
        blob = self.data[path]
        if offset < 0 or length < 0 or offset + length > len(blob):
            self.failed_reads += 1
            raise FormatError(f"short read: {length} bytes at {offset}", where=path)
        self.reads.append((offset, length))
        return blob[offset:offset + length]

    def read_head(self, path: str, length: int) -> tuple[bytes, int | None]:
        blob = self.data[path][:length]
        self.reads.append((0, len(blob)))
        return blob, (len(self.data[path]) if self.known_size else None)

    @property
    def bytes_read(self) -> int:
        return sum(n for _, n in self.reads)


# ---- a tiny raw writer (little-endian) ----------------------------------------------------------

def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, v: int) -> bytes:
    return kv(key, U32, struct.pack("<I", v))


def tinfo(name: str, ne: list[int], ttype: int, offset: int, n_dims: int | None = None) -> bytes:
    n = len(ne) if n_dims is None else n_dims
    return (s(name) + struct.pack("<I", n) + b"".join(struct.pack("<Q", d) for d in ne)
            + struct.pack("<IQ", ttype, offset))


def gguf(kvs: list[bytes] = (), tensors: list[bytes] = (), data: bytes = b"", *,
         version: int = 3, magic: bytes = b"GGUF", n_kv: int | None = None,
         n_tensors: int | None = None, align: int = 32) -> bytes:
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = -len(body) % align
    return body + b"\0" * pad + data


ARCH = kv("general.architecture", STR, s("llama"))
T1 = tinfo("a.weight", [8, 2], F32_T, 0)  # 64 bytes of F32
DATA64 = bytes(64)


def _cases() -> dict[str, tuple[bytes, str]]:
    big = 1 << 63
    valid = gguf([ARCH], [T1], DATA64)
    c: dict[str, tuple[bytes, str]] = {
        "bad_magic": (b"GGML" + valid[4:], r"bad magic"),
        "empty": (b"", r"truncated"),
        "version_1": (gguf([ARCH], [T1], DATA64, version=1), r"version 1\b"),
        "version_99": (gguf([ARCH], [T1], DATA64, version=99), r"unsupported GGUF version 99"),
        "key_len_2_63": (gguf([struct.pack("<Q", big) + b"x" * 16]), r"length 9223372036854775808 exceeds"),
        "string_len_2_63": (gguf([s("general.name") + struct.pack("<IQ", STR, big) + b"abc"]),
                            r"length 9223372036854775808 exceeds"),
        "array_len_2_63": (gguf([kv("tokenizer.ggml.scores", ARR, struct.pack("<IQ", F32, big))]),
                           r"array .* 9223372036854775808 FLOAT32 elements"),
        "string_array_len_2_62": (gguf([kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 1 << 62))]),
                                  r"array .* 4611686018427387904 STRING elements"),
        "n_kv_huge": (gguf([ARCH], n_kv=(1 << 64) - 1), r"metadata count 18446744073709551615 cannot fit"),
        "n_tensors_huge": (gguf([ARCH], n_tensors=1 << 60), r"tensor count 1152921504606846976 cannot fit"),
        "alignment_0": (gguf([ARCH, kv_u32("general.alignment", 0)], [T1], DATA64),
                        r"general.alignment 0 is not a nonzero power of two"),
        "alignment_3": (gguf([ARCH, kv_u32("general.alignment", 3)], [T1], DATA64, align=3),
                        r"general.alignment 3 is not a nonzero power of two"),
        "alignment_not_u32": (gguf([ARCH, kv("general.alignment", U64, struct.pack("<Q", 32))], [T1], DATA64),
                              r"general.alignment must be UINT32, not UINT64"),
        "misaligned_offset": (gguf([ARCH], [tinfo("a.weight", [8], F32_T, 0), tinfo("b.weight", [8], F32_T, 40)],
                                   bytes(128)), r"'b.weight' offset 40 is not aligned to 32"),
        "offset_past_end": (gguf([ARCH], [tinfo("a.weight", [8, 2], F32_T, 1 << 40)], DATA64),
                            r"'a.weight' data .* past the end of the file"),
        "data_past_end": (gguf([ARCH], [tinfo("a.weight", [1024, 1024], F32_T, 0)], DATA64),
                          r"'a.weight' data .* past the end of the file"),
        "overlapping_tensors": (gguf([ARCH], [tinfo("a.weight", [16, 2], F32_T, 0),
                                              tinfo("b.weight", [16], F32_T, 64)], bytes(192)),
                                r"'a.weight' and 'b.weight' overlap"),
        "unknown_ggml_type": (gguf([ARCH], [tinfo("a.weight", [8, 2], 1000, 0)], DATA64),
                              r"unknown ggml type 1000"),
        "removed_ggml_type_4": (gguf([ARCH], [tinfo("a.weight", [32], 4, 0)], DATA64),
                                r"unknown ggml type 4"),
        "unknown_value_type": (gguf([kv("general.foo", 13, b"\0" * 8)]), r"unknown value type 13"),
        "unknown_array_elem_type": (gguf([kv("general.foo", ARR, struct.pack("<IQ", 77, 1) + b"\0" * 8)]),
                                    r"unknown value type 77"),
        "ne_0": (gguf([ARCH], [tinfo("a.weight", [0, 2], F32_T, 0)], DATA64), r"dimension 0 = 0"),
        "ne_negative": (gguf([ARCH], [tinfo("a.weight", [8, (1 << 64) - 1], F32_T, 0)], DATA64),
                        r"dimension 1 = -1"),
        "n_dims_5": (gguf([ARCH], [tinfo("a.weight", [1, 1, 1, 1, 1], F32_T, 0)], DATA64), r"n_dims 5"),
        "n_dims_0": (gguf([ARCH], [tinfo("a.weight", [], F32_T, 0)], DATA64), r"n_dims 0"),
        "numel_overflow": (gguf([ARCH], [tinfo("a.weight", [1 << 32, 1 << 32, 1 << 2], F32_T, 0)], DATA64),
                           r"overflows int64"),
        "quant_row_not_divisible": (gguf([ARCH], [tinfo("a.weight", [33, 2], Q8_0_T, 0)], bytes(256)),
                                    r"rows of 33 elements, not a multiple of its block size 32"),
        "truncated_mid_kv": (gguf([ARCH, kv("general.name", STR, s("a long model name"))], align=1)[:-5],
                             r"truncated"),
        "truncated_mid_tensor_table": (gguf([ARCH], [T1, tinfo("b.weight", [8], F32_T, 64)], align=1)[:-20],
                                       r"truncated"),
        "truncated_header": (valid[:10], r"truncated"),
        "duplicate_tensor_name": (gguf([ARCH], [tinfo("a.weight", [8], F32_T, 0),
                                                tinfo("a.weight", [8], F32_T, 32)], DATA64),
                                  r"duplicate tensor name 'a.weight'"),
        "duplicate_key": (gguf([ARCH, ARCH]), r"duplicate metadata key 'general.architecture'"),
        "key_not_utf8": (gguf([kv(b"general.\xff\xfe", U8, b"\1")]), r"not valid UTF-8"),
        "bool_2": (gguf([kv("general.flag", BOOL, b"\2")]), r"bool value 2"),
        "nested_too_deep": (gguf([kv("general.deep", ARR, struct.pack("<IQ", ARR, 1) * 40
                                     + struct.pack("<IQ", U8, 0))]), r"nested deeper than 16"),
    }
    return c


CASES = _cases()

# cases whose fault only shows against the end of the file: parse fine when the size is unknown
EOF_ONLY = {"offset_past_end", "data_past_end"}


def write_corpus(dirpath: Path) -> dict[str, Path]:
    """Write every case to ``dirpath/<name>.gguf``; returns name -> path."""
    dirpath.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (blob, _) in CASES.items():
        p = dirpath / f"{name}.gguf"
        p.write_bytes(blob)
        out[name] = p
    return out
