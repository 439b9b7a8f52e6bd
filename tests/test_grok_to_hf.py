"""GGUF -> HF for Grok 2.5: transformers has no class for it, so the folder is written in the layout
xai-org/grok-2 publishes (its config.json keys, its tensor names; one tensor per name in ordinary
shards, not the tensor-parallel slices) and checked by structure: the weights come back bit for bit
(``ckptkit diff``), ``inspect`` tells the same facts, ``validate`` finds nothing, and the folder
converts to the same GGUF again. The tiny models are tests/test_grok_tp.py's numpy builders."""
import json
import math

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

import modelgen
from ckptkit import api
from ckptkit.cli import main
from ckptkit.conversion import convert_to_gguf, convert_to_hf
from ckptkit.errors import UnsupportedError
from ckptkit.infer import infer
from ckptkit.validate import validate
from test_convert_families_c import GROK2_CONFIG, grok2_tensors
from test_grok_tp import TINY, full_size_files, tiny_weights, tp_layout, write

# the keys xai-org/grok-2's config.json has and the tests' Grok configs leave out
PUBLISHED = {"model_type": "git", "sliding_window_size": -1, "global_attn_every_n": 1}
ROPE_KEYS = ("rope_type", "scaling_factor", "original_max_position_embeddings", "extrapolation_factor",
             "attn_factor", "beta_fast", "beta_slow")
VARIANTS = {
    # Grok 2.5's own config, tiny: YaRN ("original") rope, the residual dense MLP beside the experts
    "published": dict(TINY, **PUBLISHED),
    # no rope scaling, no dense MLP, an attention output scale other than head_dim ** -0.5
    "plain": dict({k: v for k, v in TINY.items() if k not in ROPE_KEYS}, **PUBLISHED, residual_moe=False,
                  attn_output_multiplier=0.2),
}


def _weights(variant: str) -> dict[str, np.ndarray]:
    ts = tiny_weights()
    if not VARIANTS[variant]["residual_moe"]:
        ts = {n: x for n, x in ts.items() if ".mlp." not in n}
    return ts


@pytest.fixture(scope="module")
def grok(tmp_path_factory):
    """variant -> (HF folder, its f32 GGUF, the HF folder converted back from that GGUF)."""
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            root = tmp_path_factory.mktemp(f"grok_{variant}")
            hf = write(root / "hf", {"model.safetensors": _weights(variant)}, VARIANTS[variant])
            g = root / "grok.gguf"
            convert_to_gguf(str(hf), g, outtype="f32", vocab=False)
            back = root / "back"
            res = convert_to_hf(str(g), back, outtype="f32", shard_size=100_000)
            assert not res.notes, res.notes
            cache[variant] = hf, g, back
        return cache[variant]
    return get


def _diff(a, b):
    r = CliRunner().invoke(main, ["diff", str(a), str(b)])
    return r.exit_code, r.output


def _same_config(want: dict, got: dict) -> None:
    """Every key comes back, and nothing else but ``dtype`` (what --outtype wrote). Numbers are
    equal as float32: GGUF keeps them as FLOAT32 (Grok 2.5's embedding_multiplier_scale
    90.50966799187809 comes back as 90.50967, the same float32)."""
    assert set(got) - {"dtype"} == set(want) - {"torch_dtype"}, (set(got) ^ set(want))
    for k, v in want.items():
        if k == "torch_dtype":
            continue
        if isinstance(v, float) or isinstance(got[k], float):
            assert np.float32(got[k]) == np.float32(v), (k, v, got[k])
        else:
            assert got[k] == v and type(got[k]) is type(v), (k, v, got[k])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_f32_round_trip_is_the_published_layout_bit_for_bit(variant, grok):
    hf, g, back = grok(variant)
    cfg = json.loads((back / "config.json").read_text())
    assert cfg["architectures"] == ["Grok1ForCausalLM"] and cfg["model_type"] == "git"
    _same_config(VARIANTS[variant], cfg)
    # ordinary shards of whole tensors, the original's names and shapes
    shards = sorted(back.glob("model-*.safetensors"))
    assert len(shards) >= 2
    wm = json.loads((back / "model.safetensors.index.json").read_text())["weight_map"]
    ts = _weights(variant)
    assert wm.keys() == ts.keys()
    from safetensors.numpy import load_file
    got = {}
    for s in shards:
        got.update(load_file(str(s)))
    for name, x in ts.items():
        assert got[name].dtype == np.float32 and np.array_equal(got[name], x), name
    # ckptkit diff proves it both ways: HF vs its GGUF and HF vs HF
    for other in (g, back):
        code, text = _diff(hf, other)
        assert code == 0 and "SAME (exact)" in text and f"{len(ts)} tensors compared" in text, text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checked_by_structure(variant, grok):
    """No transformers class loads it, so its structure is the check: inspect reads the same
    facts from the rebuilt folder as from the original, and validate finds nothing."""
    hf, _, back = grok(variant)
    a, b = api.inspect(str(hf)), api.inspect(str(back))
    assert a.total_parameters == b.total_parameters
    fa, fb = infer(a), infer(b)
    assert fa.family["family"] == fb.family["family"] == "grok"
    runner = CliRunner()
    out_a = json.loads(runner.invoke(main, ["inspect", str(hf), "--json", "--no-cache"]).output)
    out_b = json.loads(runner.invoke(main, ["inspect", str(back), "--json", "--no-cache"]).output)
    va = {k: f["value"] for k, f in out_a["facts"].items()}
    vb = {k: f["value"] for k, f in out_b["facts"].items()}
    assert va == vb
    assert va["num_experts"] == 8 and va["norm_placement"] == "sandwich"
    assert out_a["parameters"] == out_b["parameters"] and out_b["findings"] == []
    v = validate(str(back))
    assert not v.findings, [f.to_json() for f in v.findings]
    r = runner.invoke(main, ["validate", str(back)])
    assert r.exit_code == 0 and "no findings" in r.output, r.output


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gguf_to_hf_to_gguf_gives_the_same_gguf(variant, grok, tmp_path):
    _, g, back = grok(variant)
    again = tmp_path / "again.gguf"
    convert_to_gguf(str(back), again, outtype="f32", vocab=False)
    ra, rb = gguf.GGUFReader(g), gguf.GGUFReader(again)
    ta = {t.name: t for t in ra.tensors}
    tb = {t.name: t for t in rb.tensors}
    assert ta.keys() == tb.keys()
    for n in ta:
        assert ta[n].tensor_type == tb[n].tensor_type and np.array_equal(ta[n].data, tb[n].data), n

    def kvs(r):
        return {k: f.contents() for k, f in r.fields.items() if not k.startswith(("GGUF.", "general.name"))}
    assert kvs(ra) == kvs(rb)


def test_quantised_gguf_comes_back_close(grok, tmp_path):
    """A q8_0 Grok GGUF comes back as the same layout, each weight within q8_0's error."""
    hf, _, _ = grok("published")
    q = tmp_path / "q8.gguf"
    convert_to_gguf(str(hf), q, outtype="q8_0", vocab=False)
    assert any(t.tensor_type == gguf.GGMLQuantizationType.Q8_0 for t in gguf.GGUFReader(q).tensors)
    out = tmp_path / "hf"
    convert_to_hf(str(q), out, outtype="bf16")
    code, text = _diff(hf, out)
    assert code == 1, text                            # not exact ...
    r = CliRunner().invoke(main, ["diff", str(hf), str(out), "--atol", "0.01"])
    assert r.exit_code == 0, r.output                 # ... but close
    assert not validate(str(out)).findings


def test_tp_sliced_source_round_trips_to_whole_tensors(tmp_path):
    """The published tensor-parallel files -> GGUF -> HF: one whole tensor per name, equal to
    the slices joined."""
    ts = tiny_weights()
    tp = write(tmp_path / "tp", tp_layout(ts, 4), VARIANTS["published"])
    g = tmp_path / "g.gguf"
    convert_to_gguf(str(tp), g, outtype="f32", vocab=False)
    back = tmp_path / "back"
    convert_to_hf(str(g), back, outtype="f32")
    assert not list(back.glob("*-TP-*"))
    code, text = _diff(tp, back)
    assert code == 0 and "SAME (exact)" in text, text


# ---- Grok 2.5 at full size, headers only: the GGUF plan plans back ------------------------------

@pytest.fixture(scope="module")
def grok25(tmp_path_factory):
    return modelgen.materialize(full_size_files(dict(GROK2_CONFIG, **PUBLISHED)),
                                tmp_path_factory.mktemp("grok25") / "grok-2")


def test_full_size_gguf_plan_gives_every_tensor_back(grok25):
    """The GGUF Grok 2.5's published TP-sliced files convert to (planned from headers, never
    written) plans back to the published names and full shapes, one tensor per name, with the
    published config.json."""
    from ckptkit.api import load_index, open_source
    from ckptkit.conversion import build_plan
    from ckptkit.conversion.hf_plan import plan_hf
    from ckptkit.dtypes import GGML_TYPES
    from ckptkit.index import TensorIndex, TensorInfo
    with open_source(str(grok25)) as s:
        src = load_index(s)
        plan = build_plan(s, "auto", vocab=False)
    assert src.joins      # the source is the sliced layout
    tensors = {t.slot.name: TensorInfo(t.slot.name, GGML_TYPES[t.slot.ggml_type][0], t.slot.shape, "m.gguf", 0,
                                       t.slot.nbytes) for t in plan.tensors}
    index = TensorIndex("gguf", [], tensors, metadata={k.key: k.value for k in plan.kvs})
    back = plan_hf(index, "bf16")
    want = {t.name: t.shape for t in grok2_tensors(GROK2_CONFIG)}
    got = {t.entry.name: t.entry.shape for t in back.tensors}
    assert got == want
    assert all(t.entry.dtype == "BF16" for t in back.tensors)
    assert back.nbytes == sum(2 * math.prod(s) for s in want.values())
    _same_config(dict(GROK2_CONFIG, **PUBLISHED), back.config)


def test_other_rope_scaling_is_refused_in_one_line(grok, tmp_path):
    """A grok GGUF with a rope scaling Grok's config.json cannot say is refused, naming it."""
    _, g, _ = grok("plain")
    r = gguf.GGUFReader(g)
    out = tmp_path / "linear.gguf"
    w = gguf.GGUFWriter(out, "grok")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), t, f.types[-1])
        else:
            w.add_key_value(k, f.contents(), t)
    w.add_string("grok.rope.scaling.type", "linear")
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError) as e:
        convert_to_hf(str(out), tmp_path / "never")
    assert str(e.value) == "grok: llama.cpp's grok knows YaRN rope scaling only"
    assert not (tmp_path / "never").exists()
