"""Grok 2.5 as xai-org/grok-2 publishes it: presharded for tensor parallelism. Every expert tensor
name is repeated in each rank's ``pytorch_model-*-TP-<rank>.safetensors`` holding that rank's
slice (w1/w3 along rows, w2 along columns, as llama.cpp's conversion/grok.py joins them); all other
tensors are whole, in ``*-TP-common.safetensors``. ckptkit's index joins each set into one tensor
(mappings/convert/grok.toml [tensor_parallel]), so inspect, validate and convert see the true model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import llama_child
import modelgen
from ckptkit import api, tp_slices
from ckptkit.conversion import convert_to_gguf
from ckptkit.errors import CkptError
from ckptkit.infer import infer
from ckptkit.sources.base import Counted
from ckptkit.validate import validate
from test_convert_families_c import GROK2_CONFIG, grok2_tensors

COMMON = "pytorch_model-00000-TP-common.safetensors"
# how each expert weight is cut: the axis its rank slices are taken along
AXIS = {"w1": 0, "w3": 0, "w2": 1}

TINY = dict(GROK2_CONFIG, num_hidden_layers=2, vocab_size=384, hidden_size=64, intermediate_size=128,
            moe_intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            max_position_embeddings=256, original_max_position_embeddings=64, rope_theta=10000.0)


def rank_file(rank: int, part: int = 1) -> str:
    return f"pytorch_model-{part:05d}-TP-{rank:03d}.safetensors"


def _axis(name: str) -> int | None:
    """The slice axis of an expert weight, None for a whole (TP-common) tensor."""
    return AXIS[name.split(".")[-2]] if ".experts." in name else None


def tp_layout(ts: dict[str, np.ndarray], ranks: int) -> dict[str, dict[str, np.ndarray]]:
    """file -> tensors: the whole tensors in the TP-common file, each expert weight cut into
    ``ranks`` slices, one per rank file (tp_slices.split, the inverse of the join)."""
    out: dict[str, dict[str, np.ndarray]] = {COMMON: {}}
    for name, x in ts.items():
        ax = _axis(name)
        if ax is None:
            out[COMMON][name] = x
            continue
        for r, piece in enumerate(tp_slices.split(x, ax, ranks)):
            out.setdefault(rank_file(r), {})[name] = np.ascontiguousarray(piece)
    return out


def tiny_weights(c: dict = TINY, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for spec in grok2_tensors(c, "F32"):
        base = 1.0 if spec.name.endswith("norm.weight") else 0.0
        out[spec.name] = (base + rng.normal(0, 0.1 if base else 0.05, spec.shape)).astype(np.float32)
    return out


def write(d, files: dict[str, dict[str, np.ndarray]], config: dict):
    d.mkdir(parents=True)
    for name, ts in files.items():
        save_file(ts, str(d / name), {"format": "pt"})
    (d / "config.json").write_text(json.dumps(config))
    return d


@pytest.fixture(scope="module")
def tiny_tp(tmp_path_factory):
    """(TP-sliced folder, the same weights whole in one model.safetensors, the weights)."""
    root = tmp_path_factory.mktemp("grok_tp")
    ts = tiny_weights()
    tp = write(root / "tp", tp_layout(ts, 4), TINY)
    whole = write(root / "whole", {"model.safetensors": ts}, TINY)
    return tp, whole, ts


def test_index_presents_one_joined_tensor_per_name(tiny_tp):
    tp, whole, ts = tiny_tp
    a, b = api.inspect(str(tp)), api.inspect(str(whole))
    assert a.tensors.keys() == b.tensors.keys() == ts.keys()
    for name, t in a.tensors.items():
        assert t.shape == ts[name].shape and t.dtype == "F32", name
    assert a.total_parameters == b.total_parameters == sum(x.size for x in ts.values())
    assert len(a.joins) == 2 * 8 * 3 and len(a.files) == 5
    j = a.tensors["model.layers.1.block_sparse_moe.experts.5.w2.weight"]
    assert j.file == "tp4:model.layers.1.block_sparse_moe.experts.5.w2.weight"
    fa, fb = infer(a), infer(b)
    assert fa.family["family"] == "grok"
    assert fa.value("parameters") == fb.value("parameters")
    assert fa.value("num_experts") == 8
    v = validate(str(tp))
    assert not v.failed("error"), [f.to_json() for f in v.findings]


def test_joined_bytes_any_range(tiny_tp):
    """Every byte range of a joined tensor (row and column joins, ranges cutting rows) is the
    range of the concatenated slices."""
    tp, _, ts = tiny_tp
    with api.open_source(str(tp)) as s:
        index = api.load_index(s)
        rng = np.random.default_rng(1)
        for name in ("model.layers.0.block_sparse_moe.experts.2.w1.weight",
                     "model.layers.1.block_sparse_moe.experts.7.w2.weight"):
            t = index.tensors[name]
            want = ts[name].tobytes()
            assert s.read(t.file, 0, t.nbytes) == want
            for _ in range(50):
                a = int(rng.integers(0, t.nbytes))
                n = int(rng.integers(0, t.nbytes - a + 1))
                assert s.read(t.file, a, n) == want[a: a + n], (name, a, n)
            with pytest.raises(CkptError, match="past the end"):
                s.read(t.file, t.nbytes - 4, 8)
            # a range costs the slice bytes of the rows it touches, never the whole tensor
            join = index.joins[t.file]
            counted = Counted(s)
            row = t.nbytes // t.shape[0]
            assert tp_slices.read_joined(counted, join, 3 * row + 5, row) == want[3 * row + 5: 4 * row + 5]
            assert counted.fetched <= 2 * row


def test_converts_to_gguf_as_the_whole_model(tiny_tp, tmp_path):
    """HF -> GGUF streams the joined tensors: each GGUF expert tensor equals its slices joined,
    and the whole file's tensors equal those converted from the same weights stored whole."""
    tp, whole, ts = tiny_tp
    slices = tp_layout(ts, 4)
    a, b = tmp_path / "tp.gguf", tmp_path / "whole.gguf"
    convert_to_gguf(str(tp), a, outtype="f32", vocab=False)
    convert_to_gguf(str(whole), b, outtype="f32", vocab=False)
    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    assert ta.keys() == tb.keys()
    for n in tb:
        assert np.array_equal(ta[n].data, tb[n].data), n
    for layer in (0, 1):
        for gname, w in (("ffn_gate_exps", "w1"), ("ffn_up_exps", "w3"), ("ffn_down_exps", "w2")):
            got = np.asarray(ta[f"blk.{layer}.{gname}.weight"].data)
            for e in range(8):
                name = f"model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight"
                joined = np.concatenate([slices[rank_file(r)][name] for r in range(4)], axis=AXIS[w])
                assert np.array_equal(got[e], joined), name
    if llama_child.installed():   # llama.cpp runs it, with the whole model's logits
        toks = [1, 5, 9, 100, 200, 3]
        la = llama_child.logits(a, toks)
        assert np.isfinite(la).all() and la.std() > 0
        assert np.array_equal(la, llama_child.logits(b, toks))


# ---- the full-size published layout, headers only ----------------------------------------------

def full_size_files(c: dict = GROK2_CONFIG, ranks: int = 8) -> dict:
    """Grok 2.5's 270B layout as header-only files: whole tensors in two TP-common files, each
    expert weight cut into ``ranks`` slices, layers 0-31 and 32-63 in two files per rank."""
    tensors = grok2_tensors(c)
    common = [t for t in tensors if ".experts." not in t.name]
    files: dict = {"config.json": json.dumps(c).encode()}
    groups = {f"pytorch_model-0000{i}-TP-common.safetensors": common[i::2] for i in range(2)}
    half = c["num_hidden_layers"] // 2
    for t in tensors:
        if ".experts." not in t.name:
            continue
        ax, layer = _axis(t.name), int(t.name.split(".")[2])
        shape = list(t.shape)
        shape[ax] //= ranks
        for r in range(ranks):
            groups.setdefault(rank_file(r, 1 + layer // half), []).append(modelgen.TensorSpec(t.name, t.dtype, tuple(shape)))
    for name, group in groups.items():
        prefix, size = modelgen.safetensors_prefix(group)
        files[name] = modelgen.VirtualFile(prefix=prefix, size=len(prefix) + size)
    return files


@pytest.fixture(scope="module")
def grok25(tmp_path_factory):
    return modelgen.materialize(full_size_files(), tmp_path_factory.mktemp("grok25") / "grok-2")


def test_full_size_inspects_with_the_true_facts(grok25):
    index = api.inspect(str(grok25))
    whole = grok2_tensors(GROK2_CONFIG)
    assert len(index.files) == 2 + 8 * 2 and len(index.tensors) == len(whole)
    assert index.total_parameters == sum(t.numel for t in whole)
    assert 265e9 < index.total_parameters < 275e9          # "270B"
    for t in whole:
        assert index.tensors[t.name].shape == t.shape, t.name
    inf = infer(index)
    assert inf.family["family"] == "grok" and inf.family["model"] == "Grok 2.5"
    assert inf.value("num_experts") == 8 and inf.value("num_layers") == 64
    v = validate(str(grok25))
    assert not v.findings, [f.to_json() for f in v.findings]
    out = subprocess.run([sys.executable, "-m", "ckptkit", "inspect", str(grok25), "--no-cache"],
                         capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert out.returncode == 0, out.stderr
    assert "Grok 2.5" in out.stdout and "[8, 16384, 8192]" not in out.stdout
    assert "model.layers.{0..63}.block_sparse_moe.experts.{0..7}.w2.weight  [8192, 16384]" in out.stdout
    assert "269.52B total, 114.90B active" in out.stdout                  # "270B total, ~115B active"


def test_full_size_dry_run_plan(grok25, tmp_path):
    plan = convert_to_gguf(str(grok25), tmp_path / "never.gguf", dry_run=True, vocab=False).plan
    assert not (tmp_path / "never.gguf").exists()
    slots = {s.name: s for s in plan.slots}
    assert len(slots) == 3 + 64 * 15
    for layer in (0, 31, 32, 63):
        b = f"blk.{layer}."
        assert slots[b + "ffn_gate_exps.weight"].shape == (8, 16384, 8192)
        assert slots[b + "ffn_up_exps.weight"].shape == (8, 16384, 8192)
        assert slots[b + "ffn_down_exps.weight"].shape == (8, 8192, 16384)
    kv = {k.key: k.value for k in plan.kvs}
    assert kv["grok.expert_feed_forward_length"] == 16384 and kv["grok.expert_count"] == 8
    # every slice is read: each stacked expert tensor is made of 8 joined tensors of 8 slices
    down = next(t for t in plan.tensors if t.slot.name == "blk.63.ffn_down_exps.weight")
    assert [p.src.file for p in down.pieces] == [
        f"tp8:model.layers.63.block_sparse_moe.experts.{e}.w2.weight" for e in range(8)]


# ---- hostile variants: one line each ------------------------------------------------------------

def _hostile(tmp_path, change) -> str:
    files = full_size_files(dict(TINY, moe_intermediate_size=64), ranks=4)
    change(files)
    d = modelgen.materialize(files, tmp_path / "bad")
    with pytest.raises(CkptError) as e:
        api.inspect(str(d))
    msg = str(e.value)
    assert "\n" not in msg
    with pytest.raises(CkptError) as e2:
        convert_to_gguf(str(d), tmp_path / "x.gguf", dry_run=True, vocab=False)
    assert str(e2.value) == msg
    return msg


def _rewrite(files: dict, name: str, edit) -> None:
    """Rewrite one header-only file's tensor list with ``edit(list of TensorSpec)``."""
    raw = files[name].prefix
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8: 8 + n])
    specs = [modelgen.TensorSpec(k, v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"]
    prefix, size = modelgen.safetensors_prefix(edit(specs))
    files[name] = modelgen.VirtualFile(prefix=prefix, size=len(prefix) + size)


W2 = "model.layers.1.block_sparse_moe.experts.3.w2.weight"


def test_missing_slice(tmp_path):
    msg = _hostile(tmp_path, lambda f: _rewrite(f, rank_file(2, 2), lambda s: [t for t in s if t.name != W2]))
    assert f"tensor {W2!r} has tensor-parallel slices for ranks 0..1,3 but none for rank 2 (of 4 rank files)" in msg


def test_missing_rank_file(tmp_path):
    def drop(f):
        del f[rank_file(3, 1)], f[rank_file(3, 2)]
    msg = _hostile(tmp_path, drop)
    assert "join to 48 along axis" in msg and "moe_intermediate_size = 64: is a rank file missing?" in msg


def test_rank_gap(tmp_path):
    def drop(f):
        del f[rank_file(1, 1)], f[rank_file(1, 2)]
    assert "ranks 0,2..3: none for rank 1" in _hostile(tmp_path, drop)


@pytest.mark.parametrize("dtype, shape, what", [
    ("F16", (64, 16), "disagree: pytorch_model-00002-TP-000.safetensors holds BF16 [64, 16], "
                      "pytorch_model-00002-TP-001.safetensors F16 [64, 16] (they may differ only along axis 1)"),
    ("F8_E4M3", (64, 16), "F8_E4M3 [64, 16] (they may differ only along axis 1)"),
    ("BF16", (60, 16), "BF16 [60, 16] (they may differ only along axis 1)"),
    ("BF16", (64, 20), "join to 68 along axis 1, but config.json gives moe_intermediate_size = 64"),
])
def test_slices_disagree(tmp_path, dtype, shape, what):
    def bad(specs):
        return [modelgen.TensorSpec(t.name, dtype, shape) if t.name == W2 else t for t in specs]
    msg = _hostile(tmp_path, lambda f: _rewrite(f, rank_file(1, 2), bad))
    assert repr(W2) in msg and what in msg


def test_duplicate_outside_rank_files(tmp_path):
    def dup(f):
        f["pytorch_model-00009-TP-common.safetensors"] = f["pytorch_model-00000-TP-common.safetensors"]
    msg = _hostile(tmp_path, dup)
    assert "is in both pytorch_model-00000-TP-common.safetensors and pytorch_model-00009-TP-common" in msg
    assert "not a tensor-parallel rank file" in msg


def test_replicated_attention_in_rank_files_is_not_joined(tmp_path):
    q = modelgen.TensorSpec("model.layers.0.self_attn.q_norm.weight", "BF16", (16,))   # in no common file

    def add(f):
        for r in range(4):
            _rewrite(f, rank_file(r, 1), lambda s: s + [q])
    msg = _hostile(tmp_path, add)
    assert "gives no axis for its role attn_q_norm.weight" in msg


def test_duplicates_in_a_family_without_tp(tmp_path):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
         "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 4}
    files: dict = {"config.json": json.dumps(c).encode()}
    for i in range(2):
        prefix, size = modelgen.safetensors_prefix([modelgen.TensorSpec("model.norm.weight", "F32", (8,))])
        files[rank_file(i)] = modelgen.VirtualFile(prefix=prefix, size=len(prefix) + size)
    d = modelgen.materialize(files, tmp_path / "llama")
    with pytest.raises(CkptError, match=r"tensor 'model.norm.weight' is in both pytorch_model-00001-TP-000"):
        api.inspect(str(d))


def test_split_inverts_join():
    x = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    for axis in (0, 1):
        parts = tp_slices.split(x, axis, 2)
        assert np.array_equal(np.concatenate(parts, axis=axis), x)
    with pytest.raises(CkptError, match="does not split into 4"):
        tp_slices.split(x, 0, 4)


def test_from_the_hub_as_from_disk(tiny_tp, hub, hf_cache, tmp_path):
    """The same TP-sliced repo on the (local test) Hub: inspected by ranged header reads and
    converted with every slice fetched and checked, to the same GGUF as from disk."""
    tp, _, _ = tiny_tp
    hub.add_repo_from_dir("xai-tiny/grok-tp", tp)
    index = api.inspect("xai-tiny/grok-tp")
    assert index.total_parameters == api.inspect(str(tp)).total_parameters and index.joins
    local, remote = tmp_path / "local.gguf", tmp_path / "grok-tp.gguf"
    convert_to_gguf(str(tp), local, outtype="f32", vocab=False)
    # a byte flipped on the way inside a rank file's slices is caught by that file's hash
    size = (tp / rank_file(2)).stat().st_size
    fault = hub.fail(rank_file(2), "corrupt", after_bytes=size - 100)
    convert_to_gguf("xai-tiny/grok-tp", remote, outtype="f32", vocab=False)
    assert fault.hits == 1
    ta = {t.name: t for t in gguf.GGUFReader(local).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(remote).tensors}
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[n].data, tb[n].data) for n in ta)


def test_diff_and_uniform_layout_see_the_joined_model(tiny_tp, tmp_path):
    """ckptkit diff proves the TP-sliced files hold the whole model's weights; the uniform
    layout written from them holds whole tensors and converts to the same GGUF tensors."""
    from ckptkit.conversion import convert_to_ckpt
    from ckptkit.tensordiff import diff
    tp, whole, ts = tiny_tp
    res = diff(str(tp), str(whole))
    assert not res.failed and len(res.tensors) == len(ts)
    assert all(t.status == "exact" for t in res.tensors), [t.to_json() for t in res.tensors if t.status != "exact"]
    ck = tmp_path / "ckpt"
    convert_to_ckpt(str(tp), ck)
    a, b = tmp_path / "ckpt.gguf", tmp_path / "whole.gguf"
    convert_to_gguf(str(ck), a, outtype="f32", vocab=False)
    convert_to_gguf(str(whole), b, outtype="f32", vocab=False)
    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[n].data, tb[n].data) for n in ta)


# ---- the [tensor_parallel] table is checked when the mapping data loads -------------------------

@pytest.mark.parametrize("old, new, parts", [
    ("rank_file = '-TP-(\\d+)\\.safetensors$'", "rank_file = '-TP-\\d+\\.safetensors$'",
     ("[tensor_parallel] rank_file", "exactly one group")),
    ("rank_file = '-TP-(\\d+)\\.safetensors$'", "rank_file = '-TP-(\\d+\\.safetensors$'",
     ("[tensor_parallel] rank_file", "not a regular expression")),
    ('"ffn_down_exps.weight" = [1, ', '"ffn_down_exp.weight" = [1, ', ("'ffn_down_exp.weight'", "unknown role")),
    ('"ffn_down_exps.weight" = [1, ', '"ffn_down_exps.weight" = [-1, ', ("'ffn_down_exps.weight'", "must be [axis")),
    ('[0, "moe_intermediate_size"]', '[0, "moe_intermediate_size +"]', ("'ffn_gate_exps.weight'", "bad expression")),
    ("rank_file = '", "ranks = 8\nrank_file = '", ("[tensor_parallel] ranks", "unknown key")),
])
def test_broken_tensor_parallel_table_is_refused(tmp_path, old, new, parts):
    from importlib.resources import files

    from test_mappings import _copy, _edit, _refused
    root = tmp_path / "mappings"
    _copy(files("ckptkit.mappings"), root)
    _edit(root, "convert/grok.toml", old, new)
    _refused(root, "mappings/convert/grok.toml", *parts)


def test_resume_keys_on_the_slice_files(tiny_tp, tmp_path):
    """--resume on a TP checkpoint: the journal's key names the rank files (sizes, mtimes), so a
    resumed run gives the same file and a changed slice file is not mixed into an old output."""
    import shutil

    from ckptkit.conversion import _resume_key, build_plan
    tp = shutil.copytree(tiny_tp[0], tmp_path / "tp")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    convert_to_gguf(str(tp), a, outtype="f32", vocab=False)
    convert_to_gguf(str(tp), b, outtype="f32", vocab=False, resume=True)
    assert a.read_bytes() == b.read_bytes()
    with api.open_source(str(tp)) as s:
        plan = build_plan(s, "f32", vocab=False)
        before = _resume_key(plan, s, None)
        st = (tp / rank_file(3)).stat()
        os.utime(tp / rank_file(3), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert _resume_key(plan, s, None) != before
