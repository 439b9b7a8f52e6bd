"""GGUF -> HF for the families with fused or transformed tensors (gpt-oss, GLM-4.5, Llama 4,
Qwen3-Next), OLMo 3's sliding layers and rope scaling: tiny real transformers models go
HF -> GGUF -> HF and must come back bit for bit, load in transformers with no missing,
unexpected or mismatched keys, give the same logits, and keep their config.json settings."""
import json

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ckptkit.cli import main
from ckptkit.conversion import convert_to_gguf, convert_to_hf
from ckptkit.conversion.hf_data import dequantize_rows
from ckptkit.conversion.transforms import log_neg, neg_exp
from ckptkit.index import TensorInfo
from test_convert_families_c import gpt_oss_mxfp4  # noqa: F401  (fixture: gpt-oss as published)

TOKENS = [[1, 5, 9, 100, 200, 3, 77, 42, 300, 12]]
FAMILIES = {"gpt_oss": "GptOssForCausalLM", "glm4_moe": "Glm4MoeForCausalLM",
            "llama4_text": "Llama4ForCausalLM", "qwen3_next": "Qwen3NextForCausalLM"}


def _load(path):
    from transformers import AutoModelForCausalLM
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def _logits(model):
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits[0].numpy()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _diff(a, b):
    r = CliRunner().invoke(main, ["diff", str(a), str(b)])
    return r.exit_code, r.output


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_f32_round_trip_is_bit_exact(family, tiny_model, gguf_of, tmp_path):
    src = tiny_model(family)
    out = tmp_path / "hf"
    res = convert_to_hf(str(gguf_of(family)), out, outtype="f32", shard_size=100_000)
    assert not res.notes or all("tokenizer" in n for n in res.notes)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [FAMILIES[family]]
    assert len(list(out.glob("model-*.safetensors"))) >= 2
    orig, back = _load(src), _load(out)
    _same_weights(orig, back)
    a, b = _logits(orig), _logits(back)
    assert np.array_equal(a, b) and float(np.std(a)) > 0
    # the tensors transformers reads come back with their own names, shapes and bytes
    code, text = _diff(src, out)
    assert code == 0 and "SAME (exact)" in text, text
    code, text = _diff(src, gguf_of(family))
    assert code == 0 and "SAME (exact)" in text, text
    want = json.loads((src / "config.json").read_text())
    skip = {"dtype", "transformers_version", "attention_dropout", "use_cache", "initializer_range",
            "output_router_logits", "router_aux_loss_coef", "router_jitter_noise"}
    for k, v in cfg.items():
        if k in want and k not in skip:
            assert want[k] == v, (family, k, want[k], v)
    assert not (set(want) - set(cfg) - skip), set(want) - set(cfg) - skip


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_q8_0_gguf_loads_close_to_the_original(family, tiny_model, gguf_of, tmp_path):
    out = tmp_path / "hf"
    convert_to_hf(str(gguf_of(family, "q8_0")), out, outtype="f32")
    r = gguf.GGUFReader(gguf_of(family, "q8_0"))
    assert sum(t.tensor_type == gguf.GGMLQuantizationType.Q8_0 for t in r.tensors) >= 4
    a, b = _logits(_load(tiny_model(family))), _logits(_load(out))
    rel = float(np.abs(a - b).max() / np.abs(a).max())
    assert 0 < rel < 0.05, rel


def test_gpt_oss_experts_re_interleaved(gguf_of, tmp_path):
    """gate_up_proj [E, hidden, 2*inter] is gate and up interleaved column by column: each is
    its GGUF expert transposed."""
    from safetensors import safe_open
    out = tmp_path / "hf"
    convert_to_hf(str(gguf_of("gpt_oss")), out, outtype="f32")
    r = gguf.GGUFReader(gguf_of("gpt_oss"))
    t = {x.name: np.asarray(x.data) for x in r.tensors if x.name.startswith("blk.1.")}
    wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.mlp.experts.gate_up_proj"
    with safe_open(str(out / wm[name]), "np") as f:
        gu = f.get_tensor(name)
        bias = f.get_tensor(name + "_bias") if name + "_bias" in f.keys() else None
    assert np.array_equal(gu[:, :, 0::2], t["blk.1.ffn_gate_exps.weight"].transpose(0, 2, 1))
    assert np.array_equal(gu[:, :, 1::2], t["blk.1.ffn_up_exps.weight"].transpose(0, 2, 1))
    if bias is not None:
        assert np.array_equal(bias[:, 0::2], t["blk.1.ffn_gate_exps.bias"])


def test_gpt_oss_mxfp4_experts_are_dequantised(gguf_of, tmp_path):
    """A GGUF whose experts are MXFP4 (as published gpt-oss GGUFs are) comes back as floats
    equal to gguf's own dequantisation of its blocks, and loads."""
    from safetensors import safe_open
    src = gguf.GGUFReader(gguf_of("gpt_oss"))
    mx = tmp_path / "mx.gguf"
    _rewrite(src, mx, lambda name, x: gguf.GGMLQuantizationType.MXFP4 if name.endswith("_exps.weight") else None)
    out = tmp_path / "hf"
    convert_to_hf(str(mx), out, outtype="f32")
    r = gguf.GGUFReader(mx)
    down = next(t for t in r.tensors if t.name == "blk.0.ffn_down_exps.weight")
    assert down.tensor_type == gguf.GGMLQuantizationType.MXFP4
    want = gguf.quants.dequantize(down.data, down.tensor_type)
    wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.0.mlp.experts.down_proj"
    with safe_open(str(out / wm[name]), "np") as f:
        got = f.get_tensor(name)
    assert np.array_equal(got, want.transpose(0, 2, 1))
    deq = _logits(_load(out))
    # --keep-mxfp4: the published HF layout (U8 blocks and exponents, gate/up rows interleaved),
    # bit for bit: HF -> GGUF gives back the very same MXFP4 bytes, and transformers loads it
    keep = tmp_path / "keep"
    r2 = CliRunner().invoke(main, ["convert", str(mx), str(keep), "--outtype", "f32", "--keep-mxfp4", "--no-progress"])
    assert r2.exit_code == 0, r2.output
    cfg = json.loads((keep / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "mxfp4"
    wm = json.loads((keep / "model.safetensors.index.json").read_text())["weight_map"]
    e, inter, hidden = cfg["num_local_experts"], cfg["intermediate_size"], cfg["hidden_size"]
    with safe_open(str(keep / wm["model.layers.0.mlp.experts.gate_up_proj_blocks"]), "np") as f:
        assert f.get_tensor("model.layers.0.mlp.experts.gate_up_proj_blocks").shape == (e, 2 * inter, hidden // 32, 16)
    assert not any(k.endswith(("gate_up_proj", "down_proj")) for k in wm)
    again = tmp_path / "again.gguf"
    convert_to_gguf(str(keep), again, outtype="auto", vocab=False)
    a = {t.name: t for t in gguf.GGUFReader(mx).tensors}
    b = {t.name: t for t in gguf.GGUFReader(again).tensors}
    exps = [n for n in a if n.endswith("_exps.weight")]
    assert len(exps) == 6
    for n in exps:
        assert b[n].tensor_type == gguf.GGMLQuantizationType.MXFP4
        assert np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data)), n
    from transformers import AutoModelForCausalLM, Mxfp4Config
    m, info = AutoModelForCausalLM.from_pretrained(keep, dtype=torch.float32, output_loading_info=True,
                                                   quantization_config=Mxfp4Config(dequantize=True))
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    kept = _logits(m.eval())
    assert float(np.abs(kept - deq).max() / np.abs(deq).max()) < 1e-2


def test_published_mxfp4_layout_round_trips(gpt_oss_mxfp4, tmp_path):  # noqa: F811  (fixture)
    """gpt-oss as published (MXFP4 *_blocks/*_scales) -> GGUF (MXFP4 kept) -> HF: with
    --keep-mxfp4 every tensor comes back byte for byte in the published layout; without, the
    experts are the published blocks dequantised (equal to transformers' own dequantisation)."""
    from safetensors import safe_open
    mx_dir, deq_dir, _ = gpt_oss_mxfp4
    gg = tmp_path / "m.gguf"
    convert_to_gguf(str(mx_dir), gg, outtype="auto", vocab=False)
    assert any(t.tensor_type == gguf.GGMLQuantizationType.MXFP4 for t in gguf.GGUFReader(gg).tensors)
    keep = tmp_path / "keep"
    convert_to_hf(str(gg), keep, outtype="f32", keep_mxfp4=True)
    want = {}
    for f in mx_dir.glob("*.safetensors"):
        with safe_open(str(f), "np") as h:
            want.update({k: h.get_tensor(k) for k in h.keys()})
    wm = json.loads((keep / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(wm) == set(want)
    for k, file in wm.items():
        with safe_open(str(keep / file), "np") as h:
            got = h.get_tensor(k)
        assert got.dtype == want[k].dtype and np.array_equal(got, want[k]), k
    assert json.loads((keep / "config.json").read_text())["quantization_config"] == \
        json.loads((mx_dir / "config.json").read_text())["quantization_config"]
    deq = tmp_path / "deq"
    convert_to_hf(str(gg), deq, outtype="f32")
    code, text = _diff(deq_dir, deq)
    assert code == 0 and "SAME (exact)" in text, text


def test_qwen3_next_linear_attention_inverses(tiny_model, gguf_of, tmp_path):
    """in_proj_qkvz is re-fused per key-head group from attn_qkv (all q, all k, all v) and
    attn_gate; conv1d gets its [channels, 1, kernel] back; A_log = log(-ssm_a)."""
    from safetensors import safe_open
    out = tmp_path / "hf"
    convert_to_hf(str(gguf_of("qwen3_next")), out, outtype="f32")
    cfg = json.loads((out / "config.json").read_text())
    nk, hk = cfg["linear_num_key_heads"], cfg["linear_key_head_dim"]
    nv, hv = cfg["linear_num_value_heads"], cfg["linear_value_head_dim"]
    r = gguf.GGUFReader(gguf_of("qwen3_next"))
    t = {x.name: np.asarray(x.data) for x in r.tensors if x.name.startswith("blk.0.")}
    wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    got = {}
    for n in ("in_proj_qkvz.weight", "conv1d.weight", "A_log"):
        name = "model.layers.0.linear_attn." + n
        with safe_open(str(out / wm[name]), "np") as f:
            got[n] = f.get_tensor(name)
    qkvz = got["in_proj_qkvz.weight"].reshape(nk, 2 * hk + 2 * nv // nk * hv, -1)
    qkv = t["blk.0.attn_qkv.weight"]
    assert np.array_equal(qkvz[:, :hk].reshape(-1, qkv.shape[1]), qkv[:nk * hk])
    assert np.array_equal(qkvz[:, hk:2 * hk].reshape(-1, qkv.shape[1]), qkv[nk * hk:2 * nk * hk])
    assert np.array_equal(qkvz[:, 2 * hk + nv // nk * hv:].reshape(-1, qkv.shape[1]), t["blk.0.attn_gate.weight"])
    assert got["conv1d.weight"].shape[1] == 1
    assert np.array_equal(got["conv1d.weight"][:, 0], t["blk.0.ssm_conv1d.weight"])
    assert np.array_equal(neg_exp(got["A_log"]), t["blk.0.ssm_a"])


def test_log_neg_inverts_neg_exp():
    """A = -exp(A_log) loses nothing for |A_log| not small; log_neg finds a float32 that gives A
    back exactly, and the original wherever one exists uniquely."""
    rng = np.random.default_rng(1)
    a = np.log(rng.uniform(0.01, 16, 20000)).astype(np.float32)
    back = log_neg(neg_exp(a))
    assert np.array_equal(neg_exp(back), neg_exp(a))            # GGUF -> HF -> GGUF is exact
    big = np.abs(a) > 1.0
    assert np.array_equal(back[big], a[big])
    assert np.abs(back - a).max() <= 4 * np.spacing(np.abs(a)).max()


@pytest.mark.parametrize("family", ["glm4_moe", "deepseek_v3"])
def test_mtp_layer_kept_or_dropped(family, tiny_model, tmp_path):
    """GLM-4.5's and DeepSeek-V3's MTP module is an extra layer after the trunk
    (model.layers.N.*, with eh_proj, enorm, hnorm, shared_head): HF -> GGUF keeps it as blk.N;
    GGUF -> HF gives it back bit for bit with num_nextn_predict_layers, or leaves it out
    (plan_hf keep_mtp=False)."""
    from safetensors.torch import save_file

    from ckptkit.api import load_index, open_source
    from ckptkit.conversion.hf_plan import plan_hf
    from modelgen import copy_model
    src = copy_model(tiny_model(family), tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    n, h, v = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    wm = json.loads((src / "model.safetensors.index.json").read_text())
    with open_source(str(src)) as s:
        shapes = {k: t.shape for k, t in load_index(s).tensors.items()}
    g = torch.Generator().manual_seed(5)
    last = f"model.layers.{n - 1}."                      # a MoE layer, copied as the MTP layer's block
    extra = {k.replace(last, f"model.layers.{n}."): torch.randn(shapes[k], generator=g)
             for k in wm["weight_map"] if k.startswith(last)}
    more = {"eh_proj.weight": (h, 2 * h), "enorm.weight": (h,), "hnorm.weight": (h,), "shared_head.norm.weight": (h,)}
    if family == "deepseek_v3":
        more.update({"embed_tokens.weight": (v, h), "shared_head.head.weight": (v, h)})
    for k, shape in more.items():
        extra[f"model.layers.{n}.{k}"] = torch.randn(shape, generator=g)
    shard = "model-mtp.safetensors"
    save_file(extra, str(src / shard), metadata={"format": "pt"})
    wm["weight_map"].update({k: shard for k in extra})
    (src / "model.safetensors.index.json").write_text(json.dumps(wm))
    cfg["num_nextn_predict_layers"] = 1
    (src / "config.json").write_text(json.dumps(cfg))
    gg = tmp_path / "m.gguf"
    convert_to_gguf(str(src), gg, outtype="f32")
    r = gguf.GGUFReader(gg)
    assert f"blk.{n}.nextn.eh_proj.weight" in {t.name for t in r.tensors}
    out = tmp_path / "hf"
    convert_to_hf(str(gg), out, outtype="f32")
    got = json.loads((out / "config.json").read_text())
    assert got["num_hidden_layers"] == n and got["num_nextn_predict_layers"] == 1
    code, text = _diff(src, out)
    assert code == 0 and "SAME (exact)" in text, text
    back_wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(back_wm) == set(wm["weight_map"])
    with open_source(str(gg)) as s:
        plan = plan_hf(load_index(s), "f32", keep_mtp=False)
    names = {t.entry.name for t in plan.tensors}
    assert names == {k for k in wm["weight_map"] if not k.startswith(f"model.layers.{n}.")}
    assert plan.config["num_nextn_predict_layers"] == 0 and plan.notes


def test_qwen3_next_mtp_container_kept_or_dropped(tiny_model, tmp_path):
    """Qwen3-Next keeps its MTP module under "mtp." (mtp.fc, mtp.pre_fc_norm_*, mtp.norm,
    mtp.layers.0.*): GGUF blocks after the trunk come back there bit for bit (the +1 of its
    norms taken off again), transformers ignores them as it does the published ones, or they are
    left out."""
    from safetensors.torch import save_file

    from ckptkit.api import load_index, open_source
    from ckptkit.conversion.hf_plan import plan_hf
    from modelgen import copy_model
    src = copy_model(tiny_model("qwen3_next"), tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    n, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    wm = json.loads((src / "model.safetensors.index.json").read_text())
    with open_source(str(src)) as s:
        shapes = {k: t.shape for k, t in load_index(s).tensors.items()}
    g = torch.Generator().manual_seed(7)
    full = f"model.layers.{n - 1}."                       # the full-attention layer, as the MTP block
    mtp = {"mtp.layers.0." + k[len(full):]: torch.randn(shapes[k], generator=g) * 0.02
           for k in wm["weight_map"] if k.startswith(full)}
    for k in [k for k in mtp if k.endswith("norm.weight")]:
        mtp[k] = torch.zeros(mtp[k].shape)               # (1 + w) norms as initialised: exact through +1 -1
    mtp.update({"mtp.fc.weight": torch.randn((h, 2 * h), generator=g), "mtp.pre_fc_norm_embedding.weight":
                torch.zeros(h), "mtp.pre_fc_norm_hidden.weight": torch.zeros(h), "mtp.norm.weight": torch.zeros(h)})
    save_file(mtp, str(src / "mtp.safetensors"), metadata={"format": "pt"})
    wm["weight_map"].update({k: "mtp.safetensors" for k in mtp})
    (src / "model.safetensors.index.json").write_text(json.dumps(wm))
    gg = tmp_path / "m.gguf"
    convert_to_gguf(str(src), gg, outtype="f32")
    assert f"blk.{n}.nextn.eh_proj.weight" in {t.name for t in gguf.GGUFReader(gg).tensors}
    out = tmp_path / "hf"
    convert_to_hf(str(gg), out, outtype="f32")
    got = json.loads((out / "config.json").read_text())
    assert got["num_hidden_layers"] == n and got["layer_types"] == cfg["layer_types"]
    code, text = _diff(src, out)
    assert code == 0 and "SAME (exact)" in text, text
    assert set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]) == set(wm["weight_map"])
    from transformers import AutoModelForCausalLM
    m, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    with open_source(str(gg)) as s:
        plan = plan_hf(load_index(s), "f32", keep_mtp=False)
    assert {t.entry.name for t in plan.tensors} == {k for k in wm["weight_map"] if not k.startswith("mtp.")}
    r = CliRunner().invoke(main, ["convert", str(gg), str(tmp_path / "no-mtp"), "--no-mtp", "--no-progress"])
    assert r.exit_code == 0 and "multi-token-prediction" in r.output, r.output
    no = json.loads((tmp_path / "no-mtp" / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(no) == {k for k in wm["weight_map"] if not k.startswith("mtp.")}


# ---- rope scaling and sliding windows: config.json settings round-trip ----------------------------

def _make(tmp_path, model_type, cfg):
    """A tiny model of ``model_type``: its tiny family's config (olmo2's for olmo3) with ``cfg`` over it."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from modelgen import TINY_FAMILIES
    transformers.utils.logging.set_verbosity_error()
    base = dict(TINY_FAMILIES["olmo2" if model_type == "olmo3" else model_type]["config"])
    base.update(cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **base)).eval()
    d = tmp_path / "src"
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    model.save_pretrained(d, max_shard_size=total // 3 + 1)
    return d


ROPE_CASES = {
    "llama3": ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8192},
                         "max_position_embeddings": 65536}),
    # low/high frequency factors other than Llama 3.1's, read back from the interpolated divisors
    "llama3_fitted": ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 32.0,
                                                    "original_max_position_embeddings": 8192},
                                "max_position_embeddings": 131072}),
    "yarn": ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                           "original_max_position_embeddings": 64, "beta_fast": 32.0,
                                           "beta_slow": 1.0}, "max_position_embeddings": 256}),
    "qwen3_yarn": ("qwen3", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                                 "original_max_position_embeddings": 64}}),
    "linear": ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}),
    # Llama 4 Scout's scaling (factor 16), which llama.cpp's llama4 applies on its rope layers
    "llama4_llama3": ("llama4_text", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0,
                                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 64}}),
    # Gemma 3 4B-style: linear scaling on the global layers only, its own base on the local ones
    "gemma3_linear": ("gemma3_text", {"rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}),
    "olmo3_sliding": ("olmo3", {"num_hidden_layers": 4, "sliding_window": 4,
                                "layer_types": ["sliding_attention", "full_attention",
                                                "sliding_attention", "full_attention"]}),
}


@pytest.mark.parametrize("case", sorted(ROPE_CASES))
def test_rope_scaling_and_sliding_round_trip(case, tmp_path):
    model_type, cfg = ROPE_CASES[case]
    src = _make(tmp_path, model_type, cfg)
    gg = tmp_path / "m.gguf"
    convert_to_gguf(str(src), gg, outtype="f32")
    out = tmp_path / "hf"
    convert_to_hf(str(gg), out, outtype="f32")
    want = json.loads((src / "config.json").read_text())
    got = json.loads((out / "config.json").read_text())
    assert got["model_type"] == want["model_type"] and got["architectures"] == want["architectures"]
    keys = ("rope_parameters", "sliding_window", "max_position_embeddings") + \
        (("layer_types",) if "sliding_window" in cfg or model_type == "gemma3_text" else ())
    for k in keys:
        assert got.get(k) == want.get(k), (k, want.get(k), got.get(k))
    orig, back = _load(src), _load(out)
    _same_weights(orig, back)
    a, b = _logits(orig), _logits(back)
    assert np.array_equal(a, b)
    code, text = _diff(src, gg)         # a generated rope_freqs is config, not a tensor to compare
    assert code == 0 and "SAME (exact)" in text, text


def test_olmo3_window_matters(tmp_path):
    """The 10 test tokens reach past OLMo 3's window of 4: without the sliding layers the logits
    differ, so the round trip above really carries the window."""
    from transformers import AutoModelForCausalLM
    src = _make(tmp_path, "olmo3", ROPE_CASES["olmo3_sliding"][1])
    a = _logits(_load(src))
    cfg = json.loads((src / "config.json").read_text())
    cfg["layer_types"] = ["full_attention"] * cfg["num_hidden_layers"]
    (src / "config.json").write_text(json.dumps(cfg))
    m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    assert float(np.abs(_logits(m) - a).max()) > 1e-4


# ---- every type gguf can dequantise ---------------------------------------------------------------

def _rewrite(r, dest, type_of):
    """A copy of GGUF ``r`` with tensors re-encoded where ``type_of(name, array)`` names a type."""
    w = gguf.GGUFWriter(str(dest), r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(k, f.contents(), f.types[0], sub)
    for t in r.tensors:
        x = np.asarray(t.data)
        q = type_of(t.name, x) if t.tensor_type == gguf.GGMLQuantizationType.F32 and x.ndim >= 2 else None
        if q is None:
            w.add_tensor(t.name, x, raw_dtype=t.tensor_type)
        else:
            w.add_tensor(t.name, gguf.quants.quantize(x, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _dequantisable():
    return [t for t in gguf.GGMLQuantizationType if t in gguf.quants._type_traits]


@pytest.mark.parametrize("qtype", [t.name for t in _dequantisable()])
def test_every_gguf_quant_type_dequantises_like_gguf(qtype):
    """dequantize_rows gives gguf.quants' own values for every type gguf can dequantise (random
    block bytes: every code path of the format, NaN/inf scales included)."""
    t = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[t]
    cols = 256 if 256 % block == 0 else 4 * block
    raw = np.random.default_rng(int(t)).integers(0, 256, 3 * cols // block * size, dtype=np.uint8)
    info = TensorInfo("x", qtype, (3, cols), "f", 0, raw.size)
    with np.errstate(all="ignore"):
        got = dequantize_rows(raw.tobytes(), info, 3, cols)
        want = gguf.quants.dequantize(raw.reshape(3, -1), t)
    assert got.dtype == np.float32 and got.shape == (3, cols)
    assert np.array_equal(got, want.astype(np.float32), equal_nan=True)


def test_mixed_quant_gguf_converts_and_loads(tiny_model, gguf_of, tmp_path):
    """A GGUF whose matrices use several quantised types comes back and loads; each tensor is
    gguf's dequantisation of its blocks."""
    from transformers import AutoModelForCausalLM
    types = [gguf.GGMLQuantizationType[n] for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4")]
    seen = []

    def pick(name, x):
        if x.shape[-1] % 32:
            return None
        seen.append(types[len(seen) % len(types)])
        return seen[-1]
    mixed = tmp_path / "mixed.gguf"
    _rewrite(gguf.GGUFReader(gguf_of("glm4_moe")), mixed, pick)
    assert set(seen) == set(types)
    out = tmp_path / "hf"
    convert_to_hf(str(mixed), out, outtype="bf16")
    m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert np.isfinite(_logits(m.eval())).all()


# ---- full-size layouts: a GGUF -> HF plan exists and gives every tensor back -----------------------

@pytest.mark.parametrize("spec", ["deepseek_v3_671b", "kimi_k2_like", "llama3_8b", "gpt_oss_20b", "llama4_scout_like"])
def test_full_size_gguf_plans_give_every_tensor_back(spec, header_only_dir):
    """The GGUF a full-size seed layout converts to (planned from headers, never written) plans
    back to HF with every weight of the original: same canonical role, layer, expert and shape
    (FP8 scales aside; gpt-oss's MXFP4 experts kept with keep_mxfp4, as published)."""
    from ckptkit.api import load_index, open_source
    from ckptkit.conversion import build_plan
    from ckptkit.conversion.hf_plan import plan_hf
    from ckptkit.dtypes import GGML_TYPES
    from ckptkit.index import TensorIndex
    from ckptkit.infer.names import canonicalize
    with open_source(str(header_only_dir(spec))) as s:
        src = load_index(s)
        plan = build_plan(s, "auto", vocab=False)
    tensors = {t.slot.name: TensorInfo(t.slot.name, GGML_TYPES[t.slot.ggml_type][0], t.slot.shape, "m.gguf", 0,
                                       t.slot.nbytes) for t in plan.tensors}
    index = TensorIndex("gguf", [], tensors, metadata={k.key: k.value for k in plan.kvs})
    back = plan_hf(index, "bf16", keep_mxfp4=True)

    def facts(names_shapes):
        infos = canonicalize(dict(names_shapes))
        return {(i.role, i.layer, i.expert, tuple(names_shapes[n])) for n, i in infos.items()
                if i.role not in ("vision", "buffer") and i.part not in ("scale", "input_scale")}
    want = facts({n: t.shape for n, t in src.tensors.items()})
    got = facts({t.entry.name: t.entry.shape for t in back.tensors})
    assert got == want, (sorted(want - got)[:5], sorted(got - want)[:5])
    cfg = src.config.get("text_config") or src.config
    for k in ("num_hidden_layers", "hidden_size", "num_attention_heads"):
        assert back.config[k] == cfg[k], k
