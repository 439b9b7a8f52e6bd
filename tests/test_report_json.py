"""`inspect --json` writes its tensor list with report.tensors_json, not json.dumps: the text must
be byte for byte what json.dumps gives, for any names, dtypes, shapes and files."""
from __future__ import annotations

import json

import pytest

from ckptkit import api
from ckptkit.index import TensorIndex, TensorInfo
from ckptkit.report import inspect_report, inspect_report_json, inspect_report_parts, tensors_json

NAMES = ["model.embed_tokens.weight", 'quote"and\\backslash', "tab\there\nnewline", "\x00\x1f\x7f",
         "caf\u00e9 \u4e2d\u6587 \U0001f600", "\ud800lone-surrogate", "", "model.layers.0.mlp.down_proj.weight",
         "tensors-0123456789abcdef0123456789abcdef"]


def test_tensor_list_is_what_json_dumps_writes():
    tensors = [TensorInfo(n, dt, shape, f, off, nb)
               for i, n in enumerate(NAMES)
               for dt, shape, f, off, nb in [("BF16", (4, 2), "a.safetensors", 8 * i, 16),
                                             ("F8_E4M3", (), "dir/b \"c\".safetensors", 2**63, 0),
                                             ("Q4_K", (256, 3, 1), "m\u00e9.gguf", 0, 10**20)]]
    assert tensors_json(tensors) == json.dumps([t._asdict() for t in tensors])
    assert tensors_json([]) == "[]"


def test_unusual_field_types_fall_back_to_json():
    class Big(int):
        pass
    odd = [TensorInfo("a", "F32", (2, True), "f", 0, 8), TensorInfo("b", "F32", (2, 2), "f", Big(3), 8),
           TensorInfo("c", "F32", (2, 2), "f", 8, 16.0)]
    assert tensors_json(odd) == json.dumps([t._asdict() for t in odd])


@pytest.mark.parametrize("spec", ["deepseek_v3_671b", "gpt_oss_20b", "llama3_8b"])
def test_inspect_json_text_equals_json_dumps_of_the_report(spec, header_only_dir):
    index = api.inspect(str(header_only_dir(spec)))
    assert inspect_report_json(index) == json.dumps(inspect_report(index))


@pytest.mark.parametrize("empty", [None, 0, 2, 4])
def test_tensor_rows_made_per_file_join_to_the_same_text(header_only_dir, empty):
    """The tensor list joined from rows made file by file as the headers were read (a file may
    hold no tensors) is the list tensors_json writes."""
    import dataclasses

    from ckptkit.index import FileInfo
    from ckptkit.report import tensor_rows
    index = api.inspect(str(header_only_dir("llama3_8b")))
    assert index.per_file == {}        # read in this process alone: none made
    files = [f.name for f in index.files]
    if empty is not None:   # a file with no tensors, at the start, inside or at the end
        files.insert(empty, "empty.safetensors")
        index = dataclasses.replace(index, files=[*index.files, FileInfo("empty.safetensors", 8, "safetensors")])
    by_file = {f: [t for t in index.tensors.values() if t.file == f] for f in files}
    rows = [tensor_rows(by_file[f]) for f in files]
    assert any(rows) and (empty is None or rows[empty] == b"")
    expected = json.dumps(inspect_report(index))
    assert b"".join(inspect_report_parts(dataclasses.replace(index, per_file={"tensor_rows": rows}))).decode() == expected
    # rows that do not fit the files are not used
    assert b"".join(inspect_report_parts(dataclasses.replace(index, per_file={"tensor_rows": rows[1:]}))).decode() \
        == expected


def test_a_name_equal_to_no_marker_is_harmless():
    """The report's other values can hold any tensor name (evidence, unknown names): none may be
    taken for the place of the tensor list."""
    names = [f"tensors-{'0' * 32}", "x.weight", 'tensors-"', "model.norm.weight"]
    index = TensorIndex("safetensors", [], {n: TensorInfo(n, "F32", (2,), "m.safetensors", 8 * i, 8)
                                            for i, n in enumerate(names)}, None, None, {}, "odd")
    assert inspect_report_json(index) == json.dumps(inspect_report(index))


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_inspect_json_of_a_gguf_equals_json_dumps(outtype, gguf_of):
    index = api.inspect(str(gguf_of("llama", outtype)))
    assert index.format == "gguf"
    assert inspect_report_json(index) == json.dumps(inspect_report(index))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_json_parts_reach_stdout_as_one_text(monkeypatch, encoding):
    """The report's parts are written as bytes where stdout's encoding keeps ASCII as it is, and
    through the text layer otherwise; either way the text, then a line end, and nothing else."""
    import io
    import sys

    from ckptkit.cli import _echo_json_parts
    text = json.dumps({"name": "a\u00e9\"\n\\b", "tensors": list(range(5))})
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, newline="\n")
    out.write("before ")     # what the text layer holds must come first
    monkeypatch.setattr(sys, "stdout", out)
    parts = text.encode()
    _echo_json_parts([parts[:7], parts[7:30], parts[30:]])
    assert raw.getvalue().decode(encoding) == "before " + text + "\n"
