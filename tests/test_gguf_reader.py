"""GGUF header reader: agreement with gguf-py's GGUFReader, incremental reads, splits, hostile input."""
from __future__ import annotations

import dataclasses
import itertools
import re
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import quantize

from ckptkit.errors import CkptError, FormatError, SourceError
from ckptkit.formats.gguf import (
    check_split_set,
    read_gguf_header,
    split_gguf_parts,
    split_info,
    tensor_infos,
)

sys.path.insert(0, str(Path(__file__).parent / "hostile" / "gguf"))
import gguf_hostile as H  # noqa: E402

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType

SCALARS = {
    "t.u8": (250, VT.UINT8), "t.i8": (-100, VT.INT8), "t.u16": (65000, VT.UINT16),
    "t.i16": (-32000, VT.INT16), "t.u32": (4_000_000_000, VT.UINT32),
    "t.i32": (-2_000_000_000, VT.INT32), "t.f32": (0.15625, VT.FLOAT32),
    "t.bool_t": (True, VT.BOOL), "t.bool_f": (False, VT.BOOL),
    "t.u64": ((1 << 64) - 5, VT.UINT64), "t.i64": (-(1 << 62), VT.INT64),
    "t.f64": (1e300, VT.FLOAT64), "t.str": ("héllo wörld ✓", VT.STRING), "t.empty": ("", VT.STRING),
}
ARRAYS = {
    "t.arr_i32": ([1, -2, 3], VT.INT32), "t.arr_u8": ([0, 255, 7], VT.UINT8),
    "t.arr_f32": ([0.5, -1.25], VT.FLOAT32), "t.arr_f64": ([1.5, 2.5e-300], VT.FLOAT64),
    "t.arr_bool": ([True, False, True], VT.BOOL), "t.arr_str": (["a", "", "ünï"], VT.STRING),
    "t.arr_u64": ([1 << 63, 0], VT.UINT64), "t.arr_i16": ([-5, 5], VT.INT16),
}
NESTED = [[1, 2], [3], [4, 5, 6]]
NESTED_STR = [["x", "y"], ["z"]]


def _tensors(rng) -> dict[str, tuple[np.ndarray, QT | None]]:
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {
        "tok_embd.weight": (f(4, 8), None),
        "blk.0.attn_q.weight": (f(3, 32).astype(np.float16), None),
        "blk.0.attn_k.weight": (quantize(f(2, 64), QT.BF16), QT.BF16),
        "blk.0.ffn_up.weight": (quantize(f(3, 64), QT.Q8_0), QT.Q8_0),
        "blk.0.ffn_down.weight": (rng.integers(0, 255, (2, 144), dtype=np.uint8), QT.Q4_K),
        "blk.0.ffn_gate_exps.weight": (quantize(f(2, 2, 64), QT.MXFP4), QT.MXFP4),
        "blk.0.ids": (np.arange(5, dtype=np.int32), None),
        "blk.0.four_d": (f(1, 2, 3, 8), None),
    }


def write_model(path: Path, endian=gguf.GGUFEndian.LITTLE, extra=None, tensors=None, align=None):
    w = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    if align:
        w.add_custom_alignment(align)
    for k, (v, t) in SCALARS.items():
        w.add_key_value(k, v, t)
    for k, (v, t) in ARRAYS.items():
        w.add_key_value(k, v, VT.ARRAY, sub_type=t)
    w.add_key_value("t.nested", NESTED, VT.ARRAY)
    w.add_key_value("t.nested_str", NESTED_STR, VT.ARRAY)
    for k, v in (extra or {}).items():
        w.add_array(k, v)
    for name, (arr, raw) in (tensors or _tensors(np.random.default_rng(0))).items():
        w.add_tensor(name, arr, raw_dtype=raw)   # the writer byte-swaps for big-endian files
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("gguf") / "m.gguf")


@pytest.fixture(scope="session")
def model_bytes(model_file) -> bytes:
    return model_file.read_bytes()


def parse(blob: bytes, known_size=True, **kw):
    src = H.MemSource({"m.gguf": blob}, known_size)
    return read_gguf_header(src, "m.gguf", **kw), src


def _assert_matches_gguf_py(header, path: Path):
    ref = gguf.GGUFReader(str(path))
    assert header.data_offset == ref.data_offset
    assert header.alignment == ref.alignment
    keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    assert list(header.metadata) == keys
    for k in keys:
        field = ref.fields[k]
        if field.types[0] == VT.ARRAY:
            assert header.metadata_types[k] == (VT.ARRAY, field.types[1])
            if field.types[1] == VT.ARRAY:
                continue  # gguf-py does not decode nested arrays; checked against the writer input
        else:
            assert header.metadata_types[k] == field.types[0]
        assert header.metadata[k] == field.contents(), k
    assert len(header.tensors) == len(ref.tensors)
    for mine, theirs in zip(header.tensors, ref.tensors, strict=True):
        assert mine.name == theirs.name
        assert mine.type_id == int(theirs.tensor_type)
        assert mine.type_name == theirs.tensor_type.name
        assert mine.shape == tuple(int(d) for d in reversed(theirs.shape))
        assert mine.offset == theirs.data_offset
        assert mine.nbytes == theirs.n_bytes


def test_matches_gguf_py(model_file, model_bytes):
    header, _ = parse(model_bytes)
    _assert_matches_gguf_py(header, model_file)
    assert header.version == 3 and header.byteorder == "little"
    assert header.file_size == len(model_bytes)
    assert {t.type_name for t in header.tensors} == {"F32", "F16", "BF16", "Q8_0", "Q4_K", "MXFP4", "I32"}


def test_metadata_values_match_writer_input(model_bytes):
    md, types = parse(model_bytes)[0].metadata, parse(model_bytes)[0].metadata_types
    assert md["general.architecture"] == "llama"
    for k, (v, t) in SCALARS.items():
        assert md[k] == v and types[k] == t, k
        assert type(md[k]) is type(v), k
    for k, (v, t) in ARRAYS.items():
        assert md[k] == v and types[k] == (VT.ARRAY, t), k
    assert md["t.nested"] == NESTED and types["t.nested"] == (VT.ARRAY, VT.ARRAY)
    assert md["t.nested_str"] == NESTED_STR


def test_tensor_shapes_and_infos(model_bytes):
    header, _ = parse(model_bytes)
    by = {t.name: t for t in header.tensors}
    assert by["tok_embd.weight"].shape == (4, 8)
    assert by["blk.0.attn_k.weight"].shape == (2, 64) and by["blk.0.attn_k.weight"].nbytes == 256
    assert by["blk.0.ffn_down.weight"].shape == (2, 256) and by["blk.0.ffn_down.weight"].nbytes == 288
    assert by["blk.0.ffn_gate_exps.weight"].shape == (2, 2, 64)
    assert by["blk.0.ffn_gate_exps.weight"].nbytes == 2 * 2 * 2 * 17
    assert by["blk.0.four_d"].shape == (1, 2, 3, 8)
    infos = tensor_infos(header, "sub/m.gguf")
    assert [i.name for i in infos] == [t.name for t in header.tensors]
    for i, t in zip(infos, header.tensors, strict=True):
        assert (i.dtype, i.shape, i.file, i.offset, i.nbytes) == (
            t.type_name, t.shape, "sub/m.gguf", t.offset, t.nbytes)
    # offsets are absolute: the F32 tensor's bytes are the writer's values
    t = by["tok_embd.weight"]
    data = np.frombuffer(model_bytes[t.offset:t.offset + t.nbytes], np.float32).reshape(t.shape)
    assert np.array_equal(data, _tensors(np.random.default_rng(0))["tok_embd.weight"][0])


def test_big_endian(tmp_path):
    path = write_model(tmp_path / "be.gguf", endian=gguf.GGUFEndian.BIG)
    header, _ = parse(path.read_bytes())
    assert header.byteorder == "big"
    _assert_matches_gguf_py(header, path)
    assert header.metadata["t.u64"] == SCALARS["t.u64"][0]


def test_custom_alignment(tmp_path):
    path = write_model(tmp_path / "a.gguf", align=64)
    header, _ = parse(path.read_bytes())
    assert header.alignment == 64 and header.data_offset % 64 == 0
    assert all((t.offset - header.data_offset) % 64 == 0 for t in header.tensors)
    _assert_matches_gguf_py(header, path)


def test_version_2_and_hand_built_values():
    empty_arr = H.kv("t.empty_arr", H.ARR, struct.pack("<IQ", H.F32, 0))
    bad_utf8 = H.kv("t.bad", H.STR, H.s(b"ok\xffok"))
    blob = H.gguf([H.ARCH, empty_arr, bad_utf8], [H.T1], H.DATA64, version=2)
    header, _ = parse(blob)
    assert header.version == 2
    assert header.metadata["t.empty_arr"] == [] and header.metadata_types["t.empty_arr"] == (9, 6)
    assert header.metadata["t.bad"] == "ok\ufffdok"   # values: replacement, not an error
    assert header.tensors[0].offset == header.data_offset == len(blob) - len(H.DATA64)


# ---- incremental reading -----------------------------------------------------------------------

def _vocab() -> list[str]:
    return [f"tok_{i}_{'x' * (i % 40)}" for i in range(60_000)]


@pytest.fixture(scope="session")
def big_data_file(tmp_path_factory) -> Path:
    """Small header, 4 MiB of tensor data, and a 60k-token vocabulary in a second file."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(1)
    write_model(d / "data.gguf", tensors={"w": (rng.standard_normal((1024, 1024)).astype(np.float32), None)})
    write_model(d / "vocab.gguf", extra={"tokenizer.ggml.tokens": _vocab()},
                tensors={"w": (rng.standard_normal((512, 1024)).astype(np.float32), None)})
    return d


def test_one_read_for_small_header(big_data_file):
    blob = (big_data_file / "data.gguf").read_bytes()
    header, src = parse(blob)
    assert len(src.reads) == 1
    assert src.bytes_read <= 1 << 20 < len(blob)
    assert header.tensors[0].nbytes == 4 << 20


def test_tiny_first_chunk_forces_few_geometric_reads(model_bytes):
    full, _ = parse(model_bytes)
    header, src = parse(model_bytes, first_chunk=64)
    assert header == full
    assert 3 <= len(src.reads) <= 8                      # 64 -> 128 -> ... doubling, not per field
    assert max(o + n for o, n in src.reads) <= 2 * header.data_offset
    for (o1, n1), (o2, n2) in itertools.pairwise(src.reads):
        assert o2 == o1 + n1 and n2 >= n1                # contiguous and growing


def test_large_vocab_reads_stay_few(big_data_file):
    blob = (big_data_file / "vocab.gguf").read_bytes()
    header, src = parse(blob)
    assert header.metadata["tokenizer.ggml.tokens"] == _vocab()
    assert header.metadata_types["tokenizer.ggml.tokens"] == (VT.ARRAY, VT.STRING)
    assert header.data_offset > 1 << 20                  # the header outgrew the first chunk
    assert len(src.reads) <= 3
    assert src.bytes_read < len(blob)                    # tensor data (2 MiB) not all fetched
    assert header.tensors[0].offset == header.data_offset and header.tensors[0].nbytes == 2 << 20


@pytest.mark.parametrize("first_chunk", [24, 100, 1 << 20])
def test_unknown_file_size(model_bytes, first_chunk):
    full, _ = parse(model_bytes)
    header, src = parse(model_bytes, known_size=False, first_chunk=first_chunk)
    assert header.tensors == full.tensors and header.metadata == full.metadata
    # a head read shorter than asked reveals the size; otherwise it stays unknown
    assert header.file_size == (len(model_bytes) if first_chunk > len(model_bytes) else None)


# ---- split files -------------------------------------------------------------------------------

def test_split_grouping():
    names = ["b-00002-of-00002.gguf", "config.json", "a-00003-of-00003.gguf", "solo.gguf",
             "a-00001-of-00003.gguf", "b-00001-of-00002.gguf", "a-00002-of-00003.gguf",
             "dir/m-00001-of-00001.gguf"]
    assert split_gguf_parts(names) == [
        ["a-00001-of-00003.gguf", "a-00002-of-00003.gguf", "a-00003-of-00003.gguf"],
        ["b-00001-of-00002.gguf", "b-00002-of-00002.gguf"],
        ["dir/m-00001-of-00001.gguf"],
        ["solo.gguf"],
    ]
    assert split_gguf_parts([]) == []


@pytest.mark.parametrize("names, message", [
    (["a-00001-of-00003.gguf", "a-00003-of-00003.gguf"], r"missing split part a-00002-of-00003\.gguf"),
    (["a-00001-of-00002.gguf", "a-00002-of-00003.gguf"], r"disagree on the part count"),
    (["a-00000-of-00002.gguf"], r"part number 0 of 2 is out of range"),
    (["a-00004-of-00003.gguf"], r"part number 4 of 3 is out of range"),
])
def test_split_grouping_errors(names, message):
    with pytest.raises(SourceError, match=message):
        split_gguf_parts(names)


def test_real_split_set(tmp_path):
    rng = np.random.default_rng(2)
    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama", split_max_tensors=2)
    w.add_uint32("llama.block_count", 3)
    for i in range(5):
        w.add_tensor(f"blk.{i}.w", rng.standard_normal((2, 8)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    groups = split_gguf_parts(list(files))
    assert groups == [[f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]]
    src = H.MemSource(files)
    headers = [read_gguf_header(src, p) for p in groups[0]]
    assert [split_info(h) for h in headers] == [(0, 3, 5), (1, 3, 5), (2, 3, 5)]
    assert headers[0].metadata["llama.block_count"] == 3
    assert [len(h.tensors) for h in headers] == [2, 2, 1]
    check_split_set(headers, groups[0])
    with pytest.raises(FormatError, match=r"says part 2 of 3, file is part 0 of 3"):
        check_split_set(headers[::-1], groups[0][::-1])
    with pytest.raises(FormatError, match=r"says part 0 of 3, file is part 0 of 2"):
        check_split_set(headers[:2], groups[0][:2])
    short = dataclasses.replace(headers[2], tensors=[])
    with pytest.raises(FormatError, match=r"split set holds 4 tensors, split.tensors.count says 5"):
        check_split_set(headers[:2] + [short], groups[0])
    dup = dataclasses.replace(headers[2], tensors=headers[0].tensors[:1])
    with pytest.raises(FormatError, match=r"'blk.0.w' appears in more than one split part"):
        check_split_set(headers[:2] + [dup], groups[0])
    single = read_gguf_header(H.MemSource({"m": H.gguf([H.ARCH], [H.T1], H.DATA64)}), "m")
    assert split_info(single) is None
    check_split_set([single], ["m"])


# ---- hostile corpus ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return H.write_corpus(tmp_path_factory.mktemp("hostile_gguf"))


def test_corpus_is_complete(corpus):
    assert len(corpus) >= 15
    for must in ("bad_magic", "version_1", "version_99", "key_len_2_63", "array_len_2_63",
                 "n_kv_huge", "n_tensors_huge", "alignment_0", "alignment_3", "misaligned_offset",
                 "offset_past_end", "overlapping_tensors", "unknown_ggml_type",
                 "unknown_value_type", "ne_0", "n_dims_5", "quant_row_not_divisible",
                 "truncated_mid_kv", "duplicate_tensor_name"):
        assert must in corpus


@pytest.mark.parametrize("name", sorted(H.CASES))
def test_hostile_file_raises_format_error(corpus, name):
    blob = corpus[name].read_bytes()
    _, pattern = H.CASES[name]
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FormatError) as exc:
            parse(blob)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(exc.value) is FormatError
    assert re.search(pattern, exc.value.message), exc.value.message
    assert exc.value.where == "m.gguf"
    assert elapsed < 1.0
    assert peak < 10 << 20


@pytest.mark.parametrize("name", sorted(H.CASES))
def test_hostile_file_unknown_size(corpus, name):
    """Without a known size, only end-of-file faults may pass; everything else still fails."""
    blob = corpus[name].read_bytes()
    if name in H.EOF_ONLY:
        header, src = parse(blob, known_size=False, first_chunk=32)
        assert header.file_size is None
        assert max(o + n for o, n in src.reads) <= len(blob)
    else:
        with pytest.raises(CkptError) as exc:
            parse(blob, known_size=False, first_chunk=32)
        assert isinstance(exc.value, FormatError)


def test_valid_baseline_of_corpus_parses():
    """The corpus builder itself writes valid files when nothing is broken."""
    header, _ = parse(H.gguf([H.ARCH], [H.T1], H.DATA64))
    assert header.tensors[0].shape == (2, 8) and header.tensors[0].nbytes == 64
