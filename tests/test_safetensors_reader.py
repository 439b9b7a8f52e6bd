"""The strict safetensors header reader against the reference library and hand-made headers."""
import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptkit.errors import FormatError
from ckptkit.formats import safetensors as st
from ckptkit.sources.local import LocalSource


def _raw(header: dict, data: bytes = b"", pad: bytes = b"") -> bytes:
    js = json.dumps(header).encode() + pad
    return struct.pack("<Q", len(js)) + js + data


def _read(tmp_path, blob: bytes, name="x.safetensors"):
    p = tmp_path / name
    p.write_bytes(blob)
    return st.read_header(LocalSource(p), name)[0]


def test_matches_reference_writer(tmp_path):
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.zeros((5,), dtype=np.float16),
        "c": np.ones((2, 2, 2), dtype=np.int64),
        "empty": np.zeros((0, 7), dtype=np.float32),
    }
    path = tmp_path / "ref.safetensors"
    save_file(arrays, str(path), metadata={"format": "pt"})
    header = st.read_header(LocalSource(path), "ref.safetensors")[0]
    blob = path.read_bytes()
    assert header.metadata == {"format": "pt"}
    got = {t.name: t for t in header.tensors}
    assert set(got) == set(arrays)
    dt = {"float32": "F32", "float16": "F16", "int64": "I64"}
    for name, arr in arrays.items():
        t = got[name]
        assert t.shape == arr.shape and t.dtype == dt[str(arr.dtype)] and t.nbytes == arr.nbytes
        assert blob[t.offset:t.offset + t.nbytes] == arr.tobytes()


def test_one_read_when_guess_covers_header(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({f"t{i}": np.zeros(4, np.float32) for i in range(50)}, str(path))
    calls = []

    class Counting(LocalSource):
        def read_head(self, p, n):
            calls.append(("head", n))
            return super().read_head(p, n)

        def read(self, p, off, n):
            calls.append(("read", off, n))
            return super().read(p, off, n)

    st.read_header(Counting(path), "m.safetensors", guess=1 << 16)
    assert [c[0] for c in calls] == ["head"]
    calls.clear()
    st.read_header(Counting(path), "m.safetensors", guess=64)  # too small: exactly one more read
    assert [c[0] for c in calls] == ["head", "read"]


def test_subbyte_and_new_dtypes(tmp_path):
    hdr = {"f4": {"dtype": "F4", "shape": [4, 8], "data_offsets": [0, 16]},
           "e8": {"dtype": "F8_E8M0", "shape": [4], "data_offsets": [16, 20]},
           "f6": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [20, 23]}}
    h = _read(tmp_path, _raw(hdr, bytes(23)))
    assert [t.nbytes for t in h.tensors] == [16, 4, 3]


@pytest.mark.parametrize("blob, message", [
    (b"\x01\x02", "truncated"),
    (struct.pack("<Q", 1 << 40) + b"{}", "exceeds"),
    (struct.pack("<Q", 500) + b"{}", "past the end"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "UTF-8"),
    (struct.pack("<Q", 5) + b"{abc}", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (_raw({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}, b"x"), "unknown dtype"),
    (_raw({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)), "non-negative"),
    (_raw({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, bytes(4)), "non-negative"),
    (_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)), "needs 8"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
           "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, bytes(6)), "overlaps"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "gap"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(2)), "past the end"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(9)), "not covered"),
    (_raw({"__metadata__": {"k": 1}}), "__metadata__"),
    (_raw({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, bytes(2)), "byte boundary"),
    (_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, bytes(4)), "unknown field"),
])
def test_rejects(tmp_path, blob, message):
    with pytest.raises(FormatError, match=message):
        _read(tmp_path, blob)


_ENTRY = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


@pytest.mark.parametrize("js", [
    f'{{"a":{_ENTRY},"a":{_ENTRY}}}',
    f'{{"a" :{_ENTRY},"a"\n\t: {_ENTRY}}}',                         # whitespace before the colons
    '{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}',   # inside an entry
    f'{{"__metadata__":{{"k":"v","k":"w"}},"a":{_ENTRY}}}',
    f'{{"a:b":{_ENTRY},"a:b":{_ENTRY}}}',                            # colons in the names too
])
def test_duplicate_keys_rejected(tmp_path, js):
    raw = js.encode()
    with pytest.raises(FormatError, match="duplicate key"):
        _read(tmp_path, struct.pack("<Q", len(raw)) + raw + bytes(4))


def test_colons_in_names_and_metadata_read(tmp_path):
    """Colons inside strings take the slower duplicate check, and read the same."""
    raw, _ = st.build_header([("x:y", "F32", (1,)), ("z", "F32", (1,))], {"a:b": "c:d"})
    h = _read(tmp_path, raw + bytes(8))
    assert [t.name for t in h.tensors] == ["x:y", "z"] and h.metadata == {"a:b": "c:d"}


def test_build_header_roundtrip(tmp_path):
    raw, offsets = st.build_header([("w", "BF16", (3, 5)), ("b", "F32", (5,))], {"k": "v"})
    assert (8 + len(raw) - 8) % 8 == 0 and offsets == [0, 30]
    h = _read(tmp_path, raw + bytes(50))
    assert [(t.name, t.shape, t.offset) for t in h.tensors] == [("w", (3, 5), len(raw)), ("b", (5,), len(raw) + 30)]
    assert h.metadata == {"k": "v"}
