"""Loading the tensor index from local folders and files; collapsing names by pattern."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptkit import api
from ckptkit.errors import FormatError, SourceError, UnsafeInputError
from ckptkit.index import TensorInfo, group_tensors, split_numbers

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"


def _sharded(tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    d.mkdir()
    save_file({"a.0.w": np.zeros((2, 3), np.float32), "a.1.w": np.ones((2, 3), np.float32)}, str(d / "m-1.safetensors"))
    save_file({"b": np.zeros((4,), np.float16)}, str(d / "m-2.safetensors"))
    wm = {"a.0.w": "m-1.safetensors", "a.1.w": "m-1.safetensors", "b": "m-2.safetensors"}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 56}, "weight_map": wm}))
    (d / "config.json").write_text(json.dumps({"model_type": "x"}))
    return d


def test_example_index():
    idx = api.inspect(str(EXAMPLE))
    st = json.loads((EXAMPLE / "model.safetensors.index.json").read_text())
    assert set(idx.tensors) == set(st["weight_map"])
    assert idx.total_bytes == st["metadata"]["total_size"]
    assert idx.config["model_type"] == "llama"
    assert all(idx.tensors[n].file == f for n, f in st["weight_map"].items())


def test_dir_file_and_index_agree(tmp_path):
    d = _sharded(tmp_path)
    idx = api.inspect(str(d))
    assert idx.format == "safetensors" and [f.name for f in idx.files] == ["m-1.safetensors", "m-2.safetensors"]
    assert idx.total_parameters == 16 and idx.parameters_by_dtype() == {"F32": 12, "F16": 4}
    single = api.inspect(str(d / "m-1.safetensors"))
    assert set(single.tensors) == {"a.0.w", "a.1.w"}
    assert single.tensors["a.1.w"] == idx.tensors["a.1.w"]


def test_missing_shard(tmp_path):
    d = _sharded(tmp_path)
    os.remove(d / "m-2.safetensors")
    with pytest.raises(SourceError, match="m-2.safetensors.*missing"):
        api.inspect(str(d))


@pytest.mark.parametrize("shard", ["../../etc/passwd", "/etc/passwd", "C:\\x.safetensors", "a/../../b"])
def test_index_path_traversal_refused(tmp_path, shard):
    d = _sharded(tmp_path)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["b"] = shard
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(UnsafeInputError, match="outside"):
        api.inspect(str(d))


@pytest.mark.parametrize("shard", [7, None, ["m-2.safetensors"], {"a": 1}])
def test_index_shard_name_not_a_string_refused(tmp_path, shard):
    """Whichever entry holds it, the first shard name that is not a non-empty string is named."""
    d = _sharded(tmp_path)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["a.1.w"] = shard
    idx["weight_map"]["b"] = 8
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(FormatError, match=f"not a string: {re.escape(repr(shard))}$"):
        api.inspect(str(d))


def test_pickle_only_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04junk")
    with pytest.raises(UnsafeInputError, match="never unpickles"):
        api.inspect(str(tmp_path))


def test_symlink_out_of_folder_refused(tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_file({"x": np.zeros(1, np.float32)}, str(outside))
    d = tmp_path / "d"
    d.mkdir()
    (d / "model.safetensors").symlink_to(outside)
    with pytest.raises(UnsafeInputError, match="symlink"):
        api.inspect(str(d))


def test_config_must_be_object(tmp_path):
    d = _sharded(tmp_path)
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match="config.json"):
        api.inspect(str(d))


def test_tensor_in_two_shards(tmp_path):
    d = tmp_path / "dup"
    d.mkdir()
    save_file({"w": np.zeros(2, np.float32)}, str(d / "a.safetensors"))
    save_file({"w": np.zeros(2, np.float32)}, str(d / "b.safetensors"))
    with pytest.raises(FormatError, match="both"):
        api.inspect(str(d))


def test_nothing_readable(tmp_path):
    (tmp_path / "README.txt").write_text("hi")
    with pytest.raises(SourceError, match="no .safetensors"):
        api.inspect(str(tmp_path))


def test_split_numbers_and_grouping():
    assert split_numbers("model.layers.12.mlp.experts.3.w1.weight") == ("model.layers.{}.mlp.experts.{}.w1.weight", (12, 3))
    assert split_numbers("blk.0.attn_q.weight") == ("blk.{}.attn_q.weight", (0,))
    ts = [TensorInfo(f"m.layers.{l}.experts.{e}.w", "BF16", (4, 2), "f", 0, 16) for l in (0, 1, 2, 5) for e in range(3)]
    ts.append(TensorInfo("m.layers.3.experts.0.w", "BF16", (8, 2), "f", 0, 32))
    groups = group_tensors(ts)
    assert [(g.pattern, g.count) for g in groups] == [
        ("m.layers.{0..2,5}.experts.{0..2}.w", 12), ("m.layers.3.experts.0.w", 1)]
    assert groups[0].numel == 12 * 8


def test_bulk_pauses_the_collector_and_always_restores_it(tmp_path):
    import gc

    from ckptkit.index import bulk
    assert gc.isenabled()
    with bulk():
        assert not gc.isenabled()
        with bulk():
            assert not gc.isenabled()
        assert not gc.isenabled()      # the inner block leaves the outer one's pause alone
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk():
            pass
        assert not gc.isenabled()      # a collector that was off stays off
    finally:
        gc.enable()
    # a hostile header fails inside the paused block: the collector comes back all the same
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((20).to_bytes(8, "little") + b'{"a": {"dtype": 1}} ')
    with pytest.raises(FormatError):
        api.inspect(str(bad))
    assert gc.isenabled()


def test_census_counted_per_file_merges_to_the_census_of_all(header_only_dir):
    """A census made file by file as the headers were read (TensorIndex.per_file) is the census
    of all the tensors, in the same order; pieces that do not count them all are not used."""
    import dataclasses

    from ckptkit.index import CENSUS, file_census
    index = api.inspect(str(header_only_dir("deepseek_v3_671b")))
    by_file = [[t for t in index.tensors.values() if t.file == f.name] for f in index.files]
    made = dataclasses.replace(index, per_file={CENSUS: [file_census(ts) for ts in by_file]})
    assert list(made.census().items()) == list(index.census().items())
    assert made.parameters_by_dtype() == index.parameters_by_dtype()
    short = dataclasses.replace(index, per_file={CENSUS: [file_census(ts) for ts in by_file[:-1]] + [b"[]"]})
    assert list(short.census().items()) == list(index.census().items())    # counted again, not trusted
    odd = dataclasses.replace(index, per_file={CENSUS: [b'[["F32", [2], "3"]]'] * len(by_file)})
    assert list(odd.census().items()) == list(index.census().items())
    # pieces that count every tensor are what the census is made of (here: a made-up one)
    taken = dataclasses.replace(index, per_file={CENSUS: [f'[["F32", [1], {len(ts)}]]'.encode() for ts in by_file]})
    assert dict(taken.census()) == {("F32", (1,)): len(index.tensors)}
