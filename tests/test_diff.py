"""`ckptkit diff`: two checkpoints compared tensor by tensor with each format's transforms undone,
streamed; exit 0 equal, 1 different, 2 unreadable."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelgen
from ckptkit.api import load_index, open_source
from ckptkit.conversion import convert_to_gguf
from ckptkit.errors import FormatError
from ckptkit.sources.base import WrappedSource
from ckptkit.tensordata import read_rows
from ckptkit.tensordiff import Stats, aligned, compare_block, diff, diff_sources, match_names
from ckptkit.tensordiff_sides import whole_units

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"
Q = "model.layers.0.self_attn.q_proj.weight"


def run(*args):
    return subprocess.run([sys.executable, "-m", "ckptkit", "diff", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def example_gguf(tmp_path_factory):
    """outtype -> the example model converted to GGUF by ckptkit (cached)."""
    d = tmp_path_factory.mktemp("diff_gguf")
    cache = {}

    def get(outtype):
        if outtype not in cache:
            cache[outtype] = d / f"tiny-llama-{outtype}.gguf"
            convert_to_gguf(str(EXAMPLE), cache[outtype], outtype=outtype)
        return cache[outtype]
    return get


def edited_copy(dest: Path, edit) -> Path:
    """The example model rewritten with ``edit(tensors)`` applied to its {name: torch tensor}."""
    from safetensors.torch import load_file, save_file
    modelgen.copy_model(EXAMPLE, dest)
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(dest / shard)))
        (dest / shard).unlink()
    edit(tensors)
    save_file(tensors, str(dest / "model.safetensors"))
    (dest / "model.safetensors.index.json").unlink()
    return dest


def _json(*args):
    r = run(*args, "--json")
    assert r.returncode in (0, 1), r.stderr
    # strict JSON: no NaN or Infinity literals
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    return r.returncode, doc, {t["name"]: t for t in doc["tensors"]}


# ---- the arithmetic ------------------------------------------------------------------------------

def test_compare_block_counts_and_maxima():
    a = np.array([1.0, 2.0, 0.0, -4.0, np.nan, np.inf], np.float32)
    b = np.array([1.0, 2.5, 0.0, -4.0, np.nan, np.inf], np.float32)
    st = compare_block(Stats(), a, b, 0.0, 0.0)
    assert (st.numel, st.differing, st.beyond) == (6, 1, 1)
    assert st.max_abs == 0.5 and st.max_rel == 0.25
    # within tolerance: counted as differing, not beyond
    st = compare_block(Stats(), a, b, 0.0, 0.25)
    assert (st.differing, st.beyond) == (1, 0)
    # a NaN on one side only, and a value where A has zero, are infinite differences
    st = compare_block(Stats(), np.array([np.nan, 0.0]), np.array([1.0, 0.0]), 1e9, 0.0)
    assert st.max_abs == np.inf and st.beyond == 1
    st = compare_block(Stats(), np.array([0.0]), np.array([1e-30]), 0.0, 0.0)
    assert st.max_rel == np.inf and st.max_abs == pytest.approx(1e-30)


def test_compare_block_accumulates_and_widens_to_float64():
    big = np.array([2**24], np.int64)
    st = compare_block(Stats(), big, big + 1, 0.0, 0.0)      # equal as float32, not as float64
    st = compare_block(st, np.ones(3, np.float32), np.ones(3, np.float32), 0.0, 0.0)
    assert (st.numel, st.differing, st.max_abs) == (4, 1, 1.0)


def test_aligned_pairs_streams_cut_differently():
    x = np.arange(20, dtype=np.float32)
    cuts_a = [x[:3], x[3:3], x[3:11], x[11:]]
    cuts_b = [x[:7].reshape(7, 1), x[7:20].reshape(13, 1)]
    pairs = list(aligned(cuts_a, cuts_b))
    assert all(p.size == q.size for p, q in pairs)
    assert np.array_equal(np.concatenate([p for p, _ in pairs]), x)
    assert np.array_equal(np.concatenate([q for _, q in pairs]), x)
    with pytest.raises(FormatError):
        list(aligned([x], [x[:19]]))


def test_whole_units_recuts():
    x = np.arange(12, dtype=np.float32)
    got = list(whole_units([x[:5], x[5:6], x[6:12]], 4))
    assert all(g.size % 4 == 0 for g in got) and np.array_equal(np.concatenate(got), x)
    with pytest.raises(FormatError):
        list(whole_units([x[:10]], 4))


def test_match_names_exact_then_canonical():
    a = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "mystery"]
    b = ["model.embed_tokens.weight", "layers.0.attention.wq.weight", "other"]
    pairs, only_a, only_b = match_names(a, b)
    assert pairs == [("model.embed_tokens.weight",) * 2,
                     ("model.layers.0.self_attn.q_proj.weight", "layers.0.attention.wq.weight")]
    assert only_a == ["mystery"] and only_b == ["other"]


# ---- the command ----------------------------------------------------------------------------------

def test_same_model_exits_0():
    r = run(EXAMPLE, EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert "21 tensors compared: 21 equal in value" in r.stdout and "SAME" in r.stdout


def test_f32_gguf_equals_its_source_rotary_undone(example_gguf):
    gguf = example_gguf("f32")
    code, doc, by = _json(EXAMPLE, gguf)
    assert code == 0 and doc["equal"]
    assert len(by) == 21 and all(t["status"] == "exact" and t["name_a"] == t["name_b"] for t in by.values())
    assert by[Q]["dtype_a"] == "BF16" and by[Q]["dtype_b"] == "F32" and by[Q]["numel"] == 64 * 64
    # the GGUF really stores q in another row order: equality needed the un-permutation
    with open_source(str(EXAMPLE)) as s:
        hf = read_rows(s, load_index(s).tensors[Q])
    with open_source(str(gguf)) as s:
        raw = read_rows(s, load_index(s).tensors["blk.0.attn_q.weight"])
    assert not np.array_equal(hf, raw) and np.array_equal(np.sort(hf, axis=None), np.sort(raw, axis=None))
    # either way round
    assert run(gguf, EXAMPLE).returncode == 0


def test_q8_0_gguf_differs_unless_tolerated(example_gguf):
    gguf = example_gguf("q8_0")
    code, doc, by = _json(EXAMPLE, gguf)
    assert code == 1 and not doc["equal"]
    q = by[Q]
    assert q["status"] == "differ" and q["dtype_b"] == "Q8_0" and 0 < q["max_abs"] < 1e-3
    assert by["model.norm.weight"]["status"] == "exact"     # norms stay F32 in a q8_0 GGUF
    # Q8_0 rounds each value to within half a step of its 32-value block's scale
    code, doc, by = _json(EXAMPLE, gguf, "--atol", "1e-3")
    assert code == 0 and by[Q]["status"] == "close" and doc["counts"]["differ"] == 0
    r = run(EXAMPLE, gguf, "--atol", "1e-3")
    assert r.returncode == 0 and "within tolerance" in r.stdout


def test_one_changed_value_is_named(tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"
    old = {}

    def edit(t):
        old["v"] = float(t[name][5, 7])
        t[name][5, 7] += 0.5
    copy = edited_copy(tmp_path / "m", edit)
    r = run(EXAMPLE, copy)
    assert r.returncode == 1 and name in r.stdout and "DIFFERS" in r.stdout
    code, doc, by = _json(EXAMPLE, copy)
    import torch
    new = float(torch.tensor(old["v"], dtype=torch.bfloat16) + 0.5)
    want = abs(new - old["v"])
    assert [n for n, t in by.items() if t["status"] != "exact"] == [name]
    assert by[name]["differing"] == 1 and by[name]["max_abs"] == pytest.approx(want, rel=1e-6)
    assert by[name]["max_rel"] == pytest.approx(want / abs(old["v"]), rel=1e-6)
    assert run(EXAMPLE, copy, "--atol", str(want * 1.01)).returncode == 0


def test_removed_and_renamed_tensors(tmp_path):
    def edit(t):
        del t["model.layers.1.self_attn.v_proj.weight"]
        t["model.layers.0.extra.weight"] = t.pop("model.layers.0.self_attn.o_proj.weight")
        # another spelling of the same role: matched by canonical role, not reported missing
        t["layers.0.feed_forward.w1.weight"] = t.pop("model.layers.0.mlp.gate_proj.weight")
    copy = edited_copy(tmp_path / "m", edit)
    code, doc, by = _json(EXAMPLE, copy)
    assert code == 1
    assert by["model.layers.1.self_attn.v_proj.weight"]["status"] == "only_a"
    assert by["model.layers.0.self_attn.o_proj.weight"]["status"] == "only_a"
    assert by["model.layers.0.extra.weight"]["status"] == "only_b"
    assert by["model.layers.0.extra.weight"]["shape_b"] == [64, 64]
    gate = by["model.layers.0.mlp.gate_proj.weight"]
    assert gate["status"] == "exact" and gate["name_b"] == "layers.0.feed_forward.w1.weight"
    assert doc["counts"] == {"exact": 19, "close": 0, "differ": 0, "shape": 0, "only_a": 2, "only_b": 1, "dropped": 0,
                             "dtype_differs": 0}
    out = run(EXAMPLE, copy).stdout
    assert "only in A" in out and "only in B" in out and "matched by canonical role" in out


def test_shape_mismatch(tmp_path):
    def edit(t):
        t["model.embed_tokens.weight"] = t["model.embed_tokens.weight"][:383].clone()
    code, doc, by = _json(EXAMPLE, edited_copy(tmp_path / "m", edit))
    e = by["model.embed_tokens.weight"]
    assert code == 1 and e["status"] == "shape" and e["shape_a"] == [384, 64] and e["shape_b"] == [383, 64]
    assert e["max_abs"] is None and doc["counts"]["shape"] == 1 and doc["counts"]["exact"] == 20


def test_json_schema(example_gguf):
    code, doc, by = _json(EXAMPLE, example_gguf("f32"))
    assert set(doc) == {"schema_version", "a", "b", "atol", "rtol", "equal", "counts", "tensors"}
    assert doc["schema_version"] == 1
    assert doc["a"] == str(EXAMPLE) and doc["atol"] == 0 and doc["rtol"] == 0
    assert set(doc["counts"]) == {"exact", "close", "differ", "shape", "only_a", "only_b", "dropped", "dtype_differs"}
    for t in doc["tensors"]:
        assert set(t) == {"name", "name_a", "name_b", "status", "shape_a", "shape_b", "dtype_a", "dtype_b",
                          "numel", "differing", "beyond_tolerance", "max_abs", "max_rel", "b_ops", "dropped"}
        assert isinstance(t["numel"], int) and isinstance(t["max_abs"], float) and t["b_ops"] == []


def test_errors_exit_2(tmp_path):
    r = run(EXAMPLE, tmp_path / "nope")
    assert r.returncode == 2 and r.stderr.startswith("ckptkit: ") and len(r.stderr.splitlines()) == 1
    r = run(EXAMPLE, EXAMPLE, "--atol", "-1")
    assert r.returncode == 2


# ---- streaming -------------------------------------------------------------------------------------

class Recording(WrappedSource):
    def __init__(self, inner):
        super().__init__(inner)
        self.reads = []

    def read(self, path, offset, length):
        self.reads.append((path, offset, length))
        return super().read(path, offset, length)


def test_reads_tensors_chunk_by_chunk(example_gguf):
    chunk = 4096      # 16 rows of 64 float32 values
    with open_source(str(EXAMPLE)) as s:
        emb = load_index(s).tensors["model.embed_tokens.weight"]
    with Recording(open_source(str(EXAMPLE))) as sa, Recording(open_source(str(example_gguf("f32")))) as sb:
        res = diff_sources(sa, sb, chunk_bytes=chunk)
        with open_source(str(example_gguf("f32"))) as g:
            gemb = load_index(g).tensors["token_embd.weight"]
    assert not res.failed and len(res.tensors) == 21
    a = [n for p, o, n in sa.reads if p == emb.file and emb.offset <= o < emb.offset + emb.nbytes]
    b = [n for p, o, n in sb.reads if gemb.offset <= o < gemb.offset + gemb.nbytes]
    assert len(a) == 384 // 16 and sum(a) == emb.nbytes and max(a) <= chunk // 2      # BF16: half
    assert len(b) == 384 // 16 and sum(b) == gemb.nbytes and max(b) <= chunk


# ---- other families and layouts ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["deepseek_v2", "qwen3_moe"])
def test_moe_and_mla_family_equals_its_f32_gguf(family, tiny_model, tmp_path):
    """MLA's kv_b re-fused from GGUF's k_b/v_b, and stacked experts split back, compare exact."""
    src = tiny_model(family)
    gguf = tmp_path / f"{family}.gguf"
    convert_to_gguf(str(src), gguf, outtype="f32")
    res = diff(str(src), str(gguf))
    assert not res.failed and {t.status for t in res.tensors} == {"exact"}
    with open_source(str(src)) as s:
        assert len(res.tensors) == len(load_index(s).tensors)
    names = [t.name for t in res.tensors]
    if family == "deepseek_v2":
        assert "model.layers.0.self_attn.kv_b_proj.weight" in names
    else:
        assert "model.layers.0.mlp.experts.3.down_proj.weight" in names


def test_mistral_native_layout_compared_in_hf_convention(tiny_model, tmp_path):
    src = tiny_model("mistral", tokenizer=False)
    native = modelgen.make_mistral_native(src, tmp_path / "native")
    res = diff(str(src), str(native))
    assert not res.failed and {t.status for t in res.tensors} == {"exact"}
    by = {t.name_a: t for t in res.tensors}
    assert by[Q].name_b == "layers.0.attention.wq.weight"
    assert by[Q].b_ops == ("unpermute_rope",)         # q/k rows interleaved in the native layout
    assert by["model.layers.0.mlp.up_proj.weight"].b_ops == ()


def fp8_copy(dest: Path, names: list[str], block: int = 16) -> Path:
    """The example with ``names`` stored as FP8 E4M3 times per-block scales (weight_scale_inv),
    as DeepSeek-V3 publishes its weights."""
    import torch

    def edit(t):
        for n in names:
            w = t[n].float()
            r, c = w.shape
            scale = w.reshape(r // block, block, c // block, block).abs().amax(dim=(1, 3)) / 448.0
            full = scale.repeat_interleave(block, 0).repeat_interleave(block, 1)
            t[n] = (w / full).to(torch.float8_e4m3fn)
            t[n + "_scale_inv"] = scale
    edited_copy(dest, edit)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": [block, block]}
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_fp8_weights_compared_times_their_scales(tmp_path):
    names = [Q, "model.layers.1.mlp.down_proj.weight"]
    fp8 = fp8_copy(tmp_path / "fp8", names)
    gguf = tmp_path / "fp8.gguf"
    convert_to_gguf(str(fp8), gguf, outtype="f32")
    # against its GGUF (dequantised by the converter): equal, the scales consumed with their weights
    code, doc, by = _json(fp8, gguf)
    assert code == 0 and len(by) == 21 and by[Q]["dtype_a"] == "F8_E4M3×F32" and by[Q]["status"] == "exact"
    # against itself: FP8 as stored, scales as tensors of their own
    code, doc, by = _json(fp8, fp8)
    assert code == 0 and len(by) == 23 and by[Q]["dtype_a"] == "F8_E4M3"
    # against the BF16 original: FP8 rounding, within E4M3's 3-bit mantissa (relative 1/16)
    code, doc, by = _json(EXAMPLE, fp8)
    assert code == 1 and [n for n, t in by.items() if t["status"] != "exact"] == names
    assert all(0 < by[n]["max_rel"] <= 1 / 16 + 1e-6 for n in names)
    code, doc, by = _json(EXAMPLE, fp8, "--rtol", str(1 / 16 + 1e-6))
    assert code == 0 and doc["counts"]["close"] == 2


def test_hub_repos_compare_with_local_files(hub, hf_cache, example_gguf, tmp_path):
    """A Hub repo (ranged reads) against a local GGUF, and a GGUF in a Hub repo against the folder."""
    hub.add_repo("difftest/tiny-llama", {p.name: p.read_bytes() for p in EXAMPLE.iterdir()})
    hub.add_repo("difftest/tiny-llama-gguf", {"tiny-q8_0.gguf": example_gguf("q8_0").read_bytes(),
                                              "tiny-f32.gguf": example_gguf("f32").read_bytes()})
    res = diff("difftest/tiny-llama", str(example_gguf("f32")))
    assert not res.failed and len(res.tensors) == 21
    res = diff(str(EXAMPLE), "hf://difftest/tiny-llama-gguf/tiny-f32.gguf")
    assert not res.failed and len(res.tensors) == 21
    res = diff(str(EXAMPLE), "hf://difftest/tiny-llama-gguf/tiny-q8_0.gguf", atol=1e-3)
    assert not res.failed and res.counts()["close"] == 16
