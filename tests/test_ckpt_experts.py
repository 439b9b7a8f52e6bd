"""`--experts split` of checkpoints that store their routed experts stacked (gpt-oss
`mlp.experts.gate_up_proj` [E, ...], Llama 4 `feed_forward.experts.gate_up_proj`/`down_proj`): one
canonical tensor per expert (blk.N.ffn_*_exps.E.weight), each recorded with its place in the HF
stack (`hf_stack`), so ckpt -> HF stacks them back bit for bit and ckpt -> GGUF equals HF -> GGUF."""
from __future__ import annotations

import json
import shutil

import pytest

import ckptkit
from ckptkit.api import load_index, open_source
from test_ckpt_layout import manifest, raw_tensors, run

STACKED = {"gpt_oss": ["ffn_gate_up_exps.weight", "ffn_gate_up_exps.bias", "ffn_down_exps.weight",
                       "ffn_down_exps.bias"],
           "llama4_text": ["ffn_gate_up_exps.weight", "ffn_down_exps.weight"]}


@pytest.fixture(scope="module")
def split_of(tiny_model, tmp_path_factory):
    cache = {}
    d = tmp_path_factory.mktemp("split_of")

    def get(family, shard_size=100_000):
        key = (family, shard_size)
        if key not in cache:
            out = d / f"{family}-{shard_size}"
            ckptkit.convert(tiny_model(family), out, to="ckpt", shard_size=shard_size)
            cache[key] = out
        return cache[key]
    return get


@pytest.mark.parametrize("family", list(STACKED))
def test_stacked_experts_are_split_and_stacked_back_bit_exactly(family, tiny_model, split_of, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    src, ck = tiny_model(family), split_of(family)
    orig, stored, m = raw_tensors(src), raw_tensors(ck), manifest(ck)
    n = m["facts"]["num_experts"]["value"]
    rows = [t for t in m["tensors"] if "hf_stack" in t]
    assert {t["role"] for t in rows} == set(STACKED[family])
    assert not any(t["expert"] is None and t["role"] in STACKED[family] for t in m["tensors"])
    for t in rows:
        e = t["expert"]
        assert t["hf_stack"] == [e, n] and t["name"].split(".")[3] == str(e)
        assert t["source"] == [f"{t['hf_name']}[{e}]"] and "stacked_experts" not in t
        dtype, shape, data = orig[t["hf_name"]]
        assert list(shape[1:]) == t["shape"] == list(stored[t["name"]][1])
        per = len(data) // shape[0]
        assert stored[t["name"]][2] == data[e * per:(e + 1) * per]     # plain safetensors sees expert e
    back = tmp_path / "back"
    ckptkit.convert(ck, back, to="hf")
    assert raw_tensors(back) == orig
    _, info = AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    a, b = tmp_path / "hf.gguf", tmp_path / "ckpt.gguf"
    ckptkit.convert(src, a)
    ckptkit.convert(ck, b)
    assert a.read_bytes() == b.read_bytes()
    assert run("diff", src, ck).returncode == 0


@pytest.mark.parametrize("shard_size", [100_000, 10**9])
def test_the_stack_is_read_in_place_or_joined_across_shards(shard_size, tiny_model, split_of):
    """Experts written back to back in one shard read as one HF tensor in place; a stack the
    shards cut is joined from its experts (a virtual tensor: no bytes copied on disk)."""
    ck = split_of("gpt_oss", shard_size)
    hf = "model.layers.1.mlp.experts.gate_up_proj"
    with open_source(str(ck)) as s:
        index = load_index(s)
        t = index.tensors[hf]
        assert list(t.shape) == list(raw_tensors(tiny_model("gpt_oss"))[hf][1])
        assert s.read(t.file, t.offset, t.nbytes) == raw_tensors(tiny_model("gpt_oss"))[hf][2]
        one_shard = len({r["file"] for r in manifest(ck)["tensors"] if r["hf_name"] == hf}) == 1
        assert (t.file in index.joins) != one_shard
    if shard_size == 100_000:
        assert any(len({r["file"] for r in manifest(ck)["tensors"] if r["hf_name"] == h}) > 1
                   for h in {r["hf_name"] for r in manifest(ck)["tensors"] if "hf_stack" in r})


def test_stacked_keeps_a_stacked_source_as_it_is(tiny_model, tmp_path):
    src, st = tiny_model("gpt_oss"), tmp_path / "st"
    r = run("convert", src, st, "--to", "ckpt", "--experts", "stacked", "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = {t["name"]: t for t in manifest(st)["tensors"]}
    up = rows["blk.0.ffn_gate_up_exps.weight"]
    assert up["expert"] is None and "hf_stack" not in up and up["hf_name"] == "model.layers.0.mlp.experts.gate_up_proj"
    back = tmp_path / "back"
    ckptkit.convert(st, back)
    assert raw_tensors(back) == raw_tensors(src)
    again = tmp_path / "split"                         # stacked -> split: the default layout
    ckptkit.convert(st, again, to="ckpt")
    assert {t["name"] for t in manifest(again)["tensors"]} >= {"blk.0.ffn_gate_up_exps.3.weight"}
    ckptkit.convert(again, tmp_path / "back2")
    assert raw_tensors(tmp_path / "back2") == raw_tensors(src)


def test_a_manifest_without_hf_names_stacks_by_the_family(split_of, tiny_model, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(split_of("llama4_text"), ck)
    m = manifest(ck)
    for t in m["tensors"]:
        del t["hf_name"]
        t.pop("hf_stack", None)
    (ck / "manifest.json").write_text(json.dumps(m))
    ckptkit.convert(ck, tmp_path / "back")
    assert raw_tensors(tmp_path / "back") == raw_tensors(tiny_model("llama4_text"))


@pytest.mark.parametrize("edit, words", [
    (lambda rows: rows.remove(next(t for t in rows if t.get("hf_stack") == [2, 4])), "not 0..2"),
    (lambda rows: next(t for t in rows if "hf_stack" in t).update(hf_stack=[0, 5]), "not 0..3"),
    (lambda rows: next(t for t in rows if "hf_stack" in t).update(hf_stack="0"), "hf_stack must be"),
])
def test_a_broken_stack_is_one_line(edit, words, split_of, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(split_of("llama4_text"), ck)
    m = manifest(ck)
    edit(m["tensors"])
    (ck / "manifest.json").write_text(json.dumps(m))
    r = run("convert", ck, tmp_path / "o", "--to", "hf", "--no-progress")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and words in lines[0] and "manifest.json" in lines[0], r.stderr


def test_gguf_experts_split_in_chunks_that_cut_across_experts(tiny_model, tmp_path, monkeypatch):
    """GGUF -> ckpt of gpt-oss: the stack the GGUF reader streams in small chunks (not on expert
    boundaries) is cut into its experts on the way; ckpt -> HF equals GGUF -> HF."""
    from ckptkit.conversion import stream
    gg, ck, a, b = tmp_path / "m.gguf", tmp_path / "ck", tmp_path / "a", tmp_path / "b"
    ckptkit.convert(tiny_model("gpt_oss"), gg, outtype="f32")
    ckptkit.convert(gg, a, to="hf", outtype="f32")
    monkeypatch.setattr(stream, "CHUNK_BYTES", 3000)
    ckptkit.convert(gg, ck, to="ckpt", outtype="f32")
    assert "blk.1.ffn_down_exps.2.weight" in {t["name"] for t in manifest(ck)["tensors"]}
    ckptkit.convert(ck, b)
    assert raw_tensors(b) == raw_tensors(a)


def test_experts_asked_for_out_of_order_are_still_right():
    from ckptkit.conversion.stream import StreamTensor
    from ckptkit.conversion.to_ckpt import _unstacked
    data = bytes(range(256)) * 3       # 4 experts of 192 bytes, served in chunks of 100
    reads = []

    def chunks(source):
        reads.append(source)
        for i in range(0, len(data), 100):
            yield data[i:i + 100]
    t = StreamTensor("x.experts.down_proj", "U8", (4, 12, 16), ("x",), chunks)
    parts = _unstacked(t)
    src = object()
    got = {e: b"".join(parts[e].chunks(src)) for e in (0, 1, 3, 2)}
    assert all(got[e] == data[e * 192:(e + 1) * 192] for e in range(4))
    assert len(reads) == 2          # in order: one pass; expert 2 after 3: the stack again
    assert [p.shape for p in parts] == [(12, 16)] * 4


def test_a_stack_joined_across_shards_reads_from_the_hub_and_is_checked(split_of, tiny_model, hub, hf_cache, tmp_path):
    from ckptkit.sources.digest import ChecksumError
    ck = split_of("gpt_oss")
    hub.add_repo_from_dir("cktest/oss-split", ck)
    ckptkit.convert("cktest/oss-split", tmp_path / "back", to="hf")
    assert raw_tensors(tmp_path / "back") == raw_tensors(tiny_model("gpt_oss"))
    row = next(t for t in manifest(ck)["tensors"] if t.get("hf_stack") == [1, 4])
    with open_source(str(ck)) as s:
        start = next(f.header_bytes for f in load_index(s).files if f.name == row["file"])
    hub.fail(row["file"], "corrupt", after_bytes=start + 10, times=None)
    (tmp_path / "o").mkdir()
    with pytest.raises(ChecksumError) as e:
        ckptkit.convert("cktest/oss-split", tmp_path / "o" / "back", to="hf")
    assert row["file"] in str(e.value) and "\n" not in str(e.value)
    assert list((tmp_path / "o").iterdir()) == []
