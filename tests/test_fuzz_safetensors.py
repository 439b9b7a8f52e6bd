"""Fuzzing the safetensors header reader: whatever the bytes, it returns a sound header or raises
CkptError, nothing else (no KeyError, RecursionError, OverflowError, MemoryError...).

Examples per test default to a CI-sized budget (over 2,000 in total, well under 30 s); set
CKPTKIT_FUZZ_EXAMPLES to run that many per test instead (a longer run on demand).
"""
from __future__ import annotations

import json
import os
import struct
import sys
from math import prod
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptkit.dtypes import SAFETENSORS_BITS, safetensors_nbytes
from ckptkit.errors import CkptError
from ckptkit.formats import safetensors as sft

sys.path.insert(0, str(Path(__file__).parent / "hostile" / "gguf"))
import gguf_hostile as H  # noqa: E402  (MemSource: an in-memory Source that records reads)

_ENV = os.environ.get("CKPTKIT_FUZZ_EXAMPLES")
# per-test CI budgets; their sum is what one CI run fuzzes the parser with
BUDGET = {"bytes": 400, "prefixed": 400, "flips": 400, "truncate": 200, "splice": 200,
          "json_aware": 600, "any_json": 300}


def fuzz_settings(kind: str):
    n = int(_ENV) if _ENV else BUDGET[kind]
    return settings(max_examples=n, deadline=None, derandomize=not _ENV, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed() -> bytes:
    """A valid file with several dtypes (sub-byte included), a scalar, a zero-size tensor and
    metadata, laid out out of name order."""
    tensors = [("z.weight", "BF16", (3, 5)), ("a.bias", "F32", (5,)), ("empty", "F16", (0, 4)),
               ("scalar", "I64", ()), ("packed", "F4", (4, 2)), ("scale", "F8_E8M0", (2,)),
               ("m.q", "U8", (7,))]
    raw, _ = sft.build_header(tensors, {"format": "pt", "note": "ß"})
    data = sum(safetensors_nbytes(d, prod(s)) for _, d, s in tensors)
    return raw + bytes(range(256)) * (data // 256) + bytes(data % 256)


SEED = _seed()
SEED_LEN = struct.unpack("<Q", SEED[:8])[0]


def check(blob: bytes, known_size: bool = True, guess: int = 1 << 16) -> None:
    """The property, through the Source interface (one or two reads) and the pure parser."""
    src = H.MemSource({"f.safetensors": blob}, known_size)
    try:
        header, size = sft.read_header(src, "f.safetensors", guess=guess)
    except CkptError as e:
        assert e.where == "f.safetensors" and e.message and "\n" not in e.message
        assert len(str(e)) < 1000  # hostile names and shapes are cut short in messages
        return
    assert size == (len(blob) if known_size else None)
    assert 0 < header.header_len <= sft.MAX_HEADER_BYTES
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in header.metadata.items())
    names = [t.name for t in header.tensors]
    assert len(set(names)) == len(names) and "__metadata__" not in names
    cursor = header.data_start
    for t in header.tensors:
        assert t.dtype in SAFETENSORS_BITS and all(isinstance(d, int) and d >= 0 for d in t.shape)
        assert t.nbytes == safetensors_nbytes(t.dtype, prod(t.shape))
        assert t.offset == cursor   # contiguous, in order, no gap, no overlap
        cursor += t.nbytes
    if known_size:
        assert cursor == len(blob)
    assert max((o + n for o, n in src.reads), default=0) <= len(blob)


# ---- arbitrary input ----------------------------------------------------------------------------

@fuzz_settings("bytes")
@given(st.binary(max_size=512))
def test_arbitrary_bytes(blob):
    check(blob)
    check(blob, known_size=False)


@fuzz_settings("prefixed")
@given(st.binary(max_size=512), st.integers(-8, 8), st.binary(max_size=64))
def test_arbitrary_header_with_plausible_length(body, skew, data):
    """A length prefix that (nearly) matches: the JSON parser sees arbitrary bytes."""
    n = max(0, len(body) + skew)
    check(struct.pack("<Q", n) + body + data)


# ---- mutations of a valid file ------------------------------------------------------------------

@fuzz_settings("flips")
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 7)), min_size=1, max_size=6))
def test_bit_flips(flips):
    blob = bytearray(SEED)
    for pos, bit in flips:
        blob[pos] ^= 1 << bit
    check(bytes(blob))


@fuzz_settings("truncate")
@given(st.integers(0, len(SEED)), st.sampled_from([8, 64, 1 << 16]))
def test_truncations(cut, guess):
    check(SEED[:cut], guess=guess)
    check(SEED[:cut], known_size=False, guess=guess)


@fuzz_settings("splice")
@given(st.integers(8, 8 + SEED_LEN), st.integers(0, 40), st.binary(max_size=40), st.booleans())
def test_splices_into_the_json(pos, drop, insert, fix_length):
    """Delete and insert bytes inside the JSON; optionally keep the length prefix consistent."""
    js = SEED[8:8 + SEED_LEN]
    rel = pos - 8
    js2 = js[:rel] + insert + js[rel + drop:]
    n = len(js2) if fix_length else SEED_LEN
    check(struct.pack("<Q", n) + js2 + SEED[8 + SEED_LEN:])


# ---- JSON-aware mutations: well-formed JSON, hostile values -------------------------------------

DTYPES = st.sampled_from(sorted(SAFETENSORS_BITS) + ["Q4_K", "f32", "", "F32 ", "BOOL"])
WEIRD_NUMBERS = st.sampled_from([0, 1, 2, 3, -1, -(1 << 63), (1 << 63) - 1, (1 << 64) - 1, 1 << 64,
                                 1 << 200, 1.0, 0.5, -0.0, 1e308, True, False, None, "4", [], {}])
DIM = st.one_of(st.integers(0, 9), WEIRD_NUMBERS)
SHAPE = st.one_of(st.lists(st.integers(0, 6), max_size=4), st.lists(DIM, max_size=5),
                  WEIRD_NUMBERS)


@st.composite
def json_aware(draw):
    """Tensors with (mostly) right offsets, then damage to dtype, shape, offsets or metadata."""
    n = draw(st.integers(0, 5))
    obj: dict = {}
    cursor = 0
    names = draw(st.lists(st.text(max_size=6), min_size=n, max_size=n, unique=True))
    for name in names:
        if name == "__metadata__":
            continue
        dtype = draw(st.one_of(st.sampled_from(["F32", "F16", "BF16", "U8", "F4"]), DTYPES))
        shape = draw(SHAPE)
        sane = (isinstance(shape, list) and dtype in SAFETENSORS_BITS
                and all(type(d) is int and 0 <= d < 10 for d in shape))
        nb = safetensors_nbytes(dtype, prod(shape)) if sane else None
        nb = 4 if nb is None else nb  # insane shapes: any offsets will do
        offsets = [cursor, cursor + nb]
        how = draw(st.sampled_from(["ok", "ok", "ok", "skew", "swap", "weird", "three", "absent"]))
        if how == "skew":
            offsets[draw(st.integers(0, 1))] += draw(st.integers(-5, 5))
        elif how == "swap":
            offsets.reverse()
        elif how == "weird":
            offsets[draw(st.integers(0, 1))] = draw(WEIRD_NUMBERS)
        elif how == "three":
            offsets.append(cursor)
        entry = {"dtype": dtype, "shape": shape}
        if how != "absent":
            entry["data_offsets"] = offsets
        if draw(st.integers(0, 20)) == 17:  # rare (hypothesis favours small numbers)
            entry["extra"] = 1
        obj[name] = entry
        cursor += nb
    if draw(st.booleans()):
        obj["__metadata__"] = draw(st.one_of(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
            st.dictionaries(st.text(max_size=4), WEIRD_NUMBERS, min_size=1, max_size=2),
            WEIRD_NUMBERS))
    items = list(obj.items())
    order = draw(st.permutations(range(len(items))))
    js = json.dumps({items[i][0]: items[i][1] for i in order}).encode()
    js += b" " * draw(st.integers(0, 3))
    data = bytes(max(0, cursor + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))))
    return struct.pack("<Q", len(js)) + js + data


@fuzz_settings("json_aware")
@given(json_aware())
def test_json_aware_mutations(blob):
    check(blob)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                              st.text(max_size=5)),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
                    max_leaves=20)


@fuzz_settings("any_json")
@given(JSON, st.binary(max_size=32))
def test_any_json_value_as_header(value, data):
    js = json.dumps(value).encode()
    check(struct.pack("<Q", len(js)) + js + data)


def test_seed_is_valid():
    """The mutations start from a file the reader (and the reference library) accept."""
    src = H.MemSource({"f.safetensors": SEED})
    header, _ = sft.read_header(src, "f.safetensors")
    assert len(header.tensors) == 7 and header.metadata["note"] == "ß"
    check(SEED)


def test_ci_budget_is_over_2000():
    assert sum(BUDGET.values()) >= 2000
