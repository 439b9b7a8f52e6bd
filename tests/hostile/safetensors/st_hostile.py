"""Hostile safetensors corpus, built at test time (no committed binaries).

``CASES`` maps a case name to (file bytes, regex the FormatError message must match).
``VALID`` holds files that look odd but follow the format (they must load).
``write_corpus(dirpath)`` writes every case as ``<name>.safetensors``.
Some files declare terabytes or deep nesting: rejecting them must stay cheap.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

TB = 1 << 40


def raw(js: bytes | str, data: bytes = b"", declared: int | None = None) -> bytes:
    """A file: length prefix (``declared`` overrides the true JSON length), JSON, data."""
    js = js.encode() if isinstance(js, str) else js
    return struct.pack("<Q", len(js) if declared is None else declared) + js + data


def entry(dtype: str = "F32", shape=(1,), offsets=(0, 4)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def doc(tensors: dict, meta: dict | None = None, data: bytes | None = None) -> bytes:
    """A file from tensor entries; ``data`` defaults to as many bytes as the largest end offset."""
    obj = ({"__metadata__": meta} if meta is not None else {}) | tensors
    if data is None:
        ends = [e["data_offsets"][1] for e in tensors.values()
                if isinstance(e, dict) and isinstance(e.get("data_offsets"), list)
                and len(e["data_offsets"]) == 2 and isinstance(e["data_offsets"][1], int)
                and 0 <= e["data_offsets"][1] < 1 << 20]
        data = bytes(max(ends, default=0))
    return raw(json.dumps(obj), data)


A = '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


def _cases() -> dict[str, tuple[bytes, str]]:
    c: dict[str, tuple[bytes, str]] = {}
    # -- the length prefix
    c["empty_file"] = (b"", "truncated")
    c["short_prefix"] = (b"\x10\x00\x00", "truncated")
    c["header_len_zero"] = (raw(b"", declared=0), "header length is 0")
    c["header_len_past_eof"] = (raw(b"{}", declared=4096), "past the end")
    c["header_len_over_100mb"] = (raw(b"{}", declared=100_000_001), "exceeds")
    c["header_len_u64_max"] = (raw(b"{}", declared=(1 << 64) - 1), "exceeds")
    # -- the JSON text
    c["not_utf8"] = (raw(b'{"\xff\xfe":1}'), "UTF-8")
    c["utf16_bom"] = (raw('{"a":1}'.encode("utf-16")), "UTF-8")
    c["invalid_json"] = (raw(b'{"a": {"dtype": "F32",'), "not valid JSON")
    c["json_trailing_garbage"] = (raw(b'{} {}'), "not valid JSON")
    c["json_array"] = (raw(b'[{"dtype":"F32","shape":[1],"data_offsets":[0,4]}]', bytes(4)), "not a JSON object")
    c["json_string"] = (raw(b'"hello"'), "not a JSON object")
    c["json_null"] = (raw(b'null'), "not a JSON object")
    c["duplicate_tensor"] = (raw("{" + A + "," + A + "}", bytes(4)), "duplicate key 'a'")
    c["duplicate_nested_key"] = (
        raw(b'{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', bytes(4)), "duplicate key 'dtype'")
    c["duplicate_metadata_key"] = (raw(b'{"__metadata__":{"k":"1","k":"2"}}'), "duplicate key 'k'")
    c["recursion_bomb_array"] = (raw(b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"), "nested too deeply")
    c["recursion_bomb_object"] = (raw(b'{"a":' + b'{"b":' * 100_000 + b"1" + b"}" * 100_001), "nested too deeply")
    c["huge_integer_literal"] = (raw(b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}'),
                                 "not valid JSON")
    # -- entries
    c["entry_not_object"] = (doc({"a": [1, 2, 3]}), "entry is not an object")
    c["unknown_field"] = (doc({"a": entry() | {"offset": 0}}), "unknown field")
    c["unknown_dtype"] = (doc({"a": entry("Q4_K")}), "unknown dtype 'Q4_K'")
    c["dtype_lowercase"] = (doc({"a": entry("f32")}), "unknown dtype")
    c["dtype_missing"] = (doc({"a": {"shape": [1], "data_offsets": [0, 4]}}), "unknown dtype None")
    c["shape_negative"] = (doc({"a": entry(shape=(-1,))}), "non-negative")
    c["shape_float"] = (doc({"a": entry(shape=(1.0,))}), "non-negative")
    c["shape_bool"] = (doc({"a": entry(shape=(True,))}), "non-negative")
    c["shape_string"] = (doc({"a": entry(shape=("4",))}), "non-negative")
    c["shape_not_list"] = (doc({"a": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}}), "non-negative")
    c["shape_dim_over_u64"] = (doc({"a": entry(shape=(1 << 64,), offsets=(0, 4))}), "64-bit")
    c["shape_product_overflows"] = (doc({"a": entry(shape=[1 << 40] * 4, offsets=(0, 4))}), "fit in 64 bits")
    c["shape_rank_200k"] = (raw(b'{"a":{"dtype":"F32","shape":[' + b",".join([b"3"] * 200_000)
                                + b'],"data_offsets":[0,4]}}', bytes(4)), "fit in 64 bits")
    c["declared_terabytes"] = (doc({"a": entry(shape=(TB // 4, 4), offsets=(0, 4 * TB))}, data=bytes(64)),
                               "past the end")
    c["offsets_float"] = (doc({"a": entry(offsets=(0.0, 4.0))}, data=bytes(4)), "data_offsets")
    c["offsets_three"] = (doc({"a": entry(offsets=(0, 4, 8))}, data=bytes(4)), "data_offsets")
    c["offsets_reversed"] = (doc({"a": entry(offsets=(4, 0))}, data=bytes(4)), "data_offsets")
    c["offsets_negative"] = (doc({"a": entry(offsets=(-4, 0))}, data=bytes(4)), "data_offsets")
    c["size_not_shape"] = (doc({"a": entry(shape=(3,), offsets=(0, 4))}), "needs 12")
    c["size_wrong_itemsize"] = (doc({"a": entry("BF16", shape=(4,), offsets=(0, 16))}), "needs 8")
    c["subbyte_odd"] = (doc({"a": entry("F4", shape=(3,), offsets=(0, 2))}), "byte boundary")
    # -- layout of the data region
    c["offsets_out_of_order_gap"] = (doc({"b": entry(offsets=(8, 12)), "a": entry(offsets=(0, 4))}), "gap of 4")
    c["offsets_overlap"] = (doc({"a": entry(shape=(2,), offsets=(0, 8)), "b": entry(offsets=(4, 8))}), "overlaps")
    c["offsets_same_range"] = (doc({"a": entry(), "b": entry()}), "overlaps")
    c["offsets_gap_at_start"] = (doc({"a": entry(offsets=(4, 8))}), "gap")
    c["offsets_past_end"] = (doc({"a": entry(shape=(4,), offsets=(0, 16))}, data=bytes(8)), "past the end")
    c["trailing_bytes"] = (doc({"a": entry()}, data=bytes(12)), "not covered")
    c["truncated_data"] = (doc({"a": entry(shape=(1000,), offsets=(0, 4000))}, data=bytes(3000)), "past the end")
    # -- __metadata__
    c["metadata_int_value"] = (doc({"a": entry()}, meta={"format": 1}), "__metadata__")
    c["metadata_nested"] = (doc({"a": entry()}, meta={"format": {"x": "y"}}), "__metadata__")
    c["metadata_list"] = (raw(b'{"__metadata__":["format","pt"]}'), "__metadata__")
    c["metadata_null_value"] = (doc({}, meta={"format": None}), "__metadata__")
    return c


def _valid() -> dict[str, tuple[bytes, list[tuple[str, tuple[int, ...], int]]]]:
    """Odd but valid files -> expected [(name, shape, nbytes)] in data order."""
    v = {}
    v["zero_size_tensor"] = (doc({"e": entry(shape=(0, 7), offsets=(0, 0)), "a": entry()}),
                             [("e", (0, 7), 0), ("a", (1,), 4)])
    v["only_zero_size_tensors"] = (doc({"e": entry(shape=(0,), offsets=(0, 0)),
                                        "f": entry("BF16", shape=(5, 0), offsets=(0, 0))}),
                                   [("e", (0,), 0), ("f", (5, 0), 0)])
    v["scalar"] = (doc({"s": entry(shape=())}), [("s", (), 4)])
    v["no_tensors"] = (raw(b"{}"), [])
    v["metadata_only"] = (raw(b'{"__metadata__":{"format":"pt"}}'), [])
    v["header_padded_with_spaces"] = (raw(("{" + A + "}").encode() + b"       ", bytes(4)), [("a", (1,), 4)])
    v["unicode_names"] = (doc({"ß.λ.权重": entry()}), [("ß.λ.权重", (1,), 4)])
    v["zero_in_shape_with_huge_dims"] = (doc({"z": entry(shape=(0, (1 << 64) - 1, (1 << 64) - 1), offsets=(0, 0))}),
                                         [("z", (0, (1 << 64) - 1, (1 << 64) - 1), 0)])
    return v


CASES = _cases()
VALID = _valid()


def write_corpus(dirpath: Path, cases: dict | None = None) -> dict[str, Path]:
    """Write every case to ``dirpath/<name>.safetensors``; returns name -> path."""
    dirpath.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (blob, _) in (CASES if cases is None else cases).items():
        p = dirpath / f"{name}.safetensors"
        p.write_bytes(blob)
        out[name] = p
    return out
