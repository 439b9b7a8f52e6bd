"""Fuzzing the GGUF header reader: whatever the bytes, it returns a sound header or raises CkptError.

Examples per test default to a CI-sized budget (2,000+ in total); set CKPTKIT_FUZZ_EXAMPLES to
run that many per test instead.
"""
from __future__ import annotations

import itertools
import os
import struct
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptkit.errors import CkptError
from ckptkit.formats.gguf import GGUFHeader, read_gguf_header

sys.path.insert(0, str(Path(__file__).parent / "hostile" / "gguf"))
import gguf_hostile as H  # noqa: E402

_ENV = os.environ.get("CKPTKIT_FUZZ_EXAMPLES")


def fuzz_settings(default: int):
    n = int(_ENV) if _ENV else default
    return settings(max_examples=n, deadline=None, derandomize=not _ENV, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed() -> bytes:
    """A small valid GGUF touching every value type, nested arrays and three tensor types."""
    kvs = [
        H.ARCH,
        H.kv_u32("general.alignment", 32),
        H.kv("t.u8", H.U8, b"\x07"), H.kv("t.i16", H.I16, struct.pack("<h", -3)),
        H.kv("t.i32", H.I32, struct.pack("<i", -9)), H.kv("t.f32", H.F32, struct.pack("<f", 1.5)),
        H.kv("t.bool", H.BOOL, b"\x01"), H.kv("t.u64", H.U64, struct.pack("<Q", 1 << 40)),
        H.kv("t.i64", H.I64, struct.pack("<q", -5)), H.kv("t.f64", H.F64, struct.pack("<d", 2.5)),
        H.kv("t.tokens", H.ARR, struct.pack("<IQ", H.STR, 3) + H.s("a") + H.s("bc") + H.s("")),
        H.kv("t.ids", H.ARR, struct.pack("<IQ", H.I32, 2) + struct.pack("<ii", 1, 2)),
        H.kv("t.nested", H.ARR, struct.pack("<IQ", H.ARR, 2) + struct.pack("<IQ", H.U8, 1) + b"\x05"
             + struct.pack("<IQ", H.U16, 1) + b"\x06\x00"),
    ]
    tensors = [
        H.tinfo("a.weight", [8, 2], H.F32_T, 0),        # 64 bytes
        H.tinfo("b.weight", [32, 1], H.Q8_0_T, 64),     # 34 bytes, padded to 96
        H.tinfo("c.weight", [4, 2, 2], H.F16_T, 128),   # 32 bytes
    ]
    return H.gguf(kvs, tensors, bytes(160))


SEED = _seed()
INTERESTING_U64 = [0, 1, 2, 31, 32, 33, 255, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 62, 1 << 63,
                   (1 << 64) - 1]


def check(blob: bytes, known_size: bool = True, first_chunk: int = 1 << 20) -> None:
    """The property: a header whose invariants hold, or a CkptError; never anything else."""
    src = H.MemSource({"f.gguf": blob}, known_size)
    try:
        h = read_gguf_header(src, "f.gguf", first_chunk=first_chunk)
    except CkptError as e:
        assert e.where == "f.gguf" and e.message
        return
    assert isinstance(h, GGUFHeader)
    assert h.version in (2, 3)
    assert h.alignment > 0 and h.alignment & (h.alignment - 1) == 0
    assert h.data_offset % h.alignment == 0 and h.data_offset >= h.tensor_table_end
    assert len({t.name for t in h.tensors}) == len(h.tensors)
    spans = sorted((t.offset, t.offset + t.nbytes) for t in h.tensors)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end
    for t in h.tensors:
        assert 1 <= len(t.shape) <= 4 and all(d > 0 for d in t.shape)
        assert (t.offset - h.data_offset) % h.alignment == 0
        if h.file_size is not None:
            assert t.offset + t.nbytes <= h.file_size == len(blob)
    # reads never went past the file, and never fetched far beyond the header
    assert max(o + n for o, n in src.reads) <= len(blob)


def test_seed_is_valid():
    src = H.MemSource({"f.gguf": SEED})
    h = read_gguf_header(src, "f.gguf")
    assert [t.name for t in h.tensors] == ["a.weight", "b.weight", "c.weight"]
    assert h.metadata["t.nested"] == [[5], [6]] and h.metadata["t.tokens"] == ["a", "bc", ""]


@fuzz_settings(300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(blob):
    check(blob)


@fuzz_settings(400)
@given(st.sampled_from([2, 3, 1, 99, 0x03000000]), st.integers(0, 40), st.integers(0, 40),
       st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_after_valid_prefix(version, n_tensors, n_kv, rest, known):
    check(b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + rest, known)


@fuzz_settings(500)
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 7)), min_size=1, max_size=8),
       st.booleans(), st.sampled_from([24, 64, 1 << 20]))
def test_bit_flips(flips, known, first_chunk):
    blob = bytearray(SEED)
    for pos, bit in flips:
        blob[pos] ^= 1 << bit
    check(bytes(blob), known, first_chunk)


@fuzz_settings(300)
@given(st.integers(0, len(SEED)), st.booleans(), st.sampled_from([24, 100, 1 << 20]))
def test_truncations(cut, known, first_chunk):
    check(SEED[:cut], known, first_chunk)


@fuzz_settings(400)
@given(st.integers(0, len(SEED)), st.integers(0, 64), st.binary(max_size=64), st.booleans())
def test_splices(start, length, insert, known):
    check(SEED[:start] + insert + SEED[start + length:], known, 64)


@fuzz_settings(400)
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 8), st.sampled_from(INTERESTING_U64)),
                min_size=1, max_size=3), st.booleans())
def test_overwritten_counts_and_lengths(writes, known):
    """Overwrite u64 fields (lengths, counts, dims, offsets) with boundary values."""
    blob = bytearray(SEED)
    for pos, value in writes:
        blob[pos:pos + 8] = struct.pack("<Q", value)
    check(bytes(blob), known, 64)
