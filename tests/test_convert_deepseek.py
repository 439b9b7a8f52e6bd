"""HF -> GGUF for llama.cpp's deepseek2 (DeepSeek-V2/V3/R1, Kimi K2) and glm4moe (GLM-4.5)
architectures: MLA split, metadata, MTP layers kept or dropped, FP8 block-scale dequantisation,
and plans of the full-size DeepSeek-V3 / Kimi K2 layouts built from headers alone."""
from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest

import modelgen
from ckptkit.conversion import convert_to_gguf
from ckptkit.errors import CkptError, UnsupportedError
from convert_harness import assert_logits_match, llama_cpp_or_skip
from test_reference_converter import reference_root  # noqa: F401  (fixture: llama.cpp's converter)

ARCH = {"deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2", "glm4_moe": "glm4moe"}


# ---- helpers -------------------------------------------------------------------------------------

def kvs(path) -> dict:
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def tensors(path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def gguf_types(path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def config(src: Path) -> dict:
    return json.loads((src / "config.json").read_text())


def hf_tensors(src: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    out = {}
    for f in sorted(set(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"].values())):
        out.update(load_file(str(src / f)))
    return out


def rewrite_shards(src: Path, fn) -> None:
    """Rewrite every shard of ``src`` in place: ``fn(name, tensor) -> {name: tensor}``."""
    from safetensors.torch import load_file, save_file
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    wm = {}
    for shard in sorted(set(index["weight_map"].values())):
        out = {}
        for name, t in load_file(str(src / shard)).items():
            out.update(fn(name, t))
        save_file({k: v.contiguous() for k, v in out.items()}, str(src / shard), metadata={"format": "pt"})
        wm.update({k: shard for k in out})
    index["weight_map"] = wm
    index_path.write_text(json.dumps(index))


def add_mtp_layer(src: Path) -> int:
    """Append a DeepSeek-V3/GLM-4.5-style MTP module as layer ``num_hidden_layers``: a copy of the
    last layer plus the nextn tensors, in a shard of its own. Returns the MTP layer's number."""
    from safetensors.numpy import save_file
    cfg = config(src)
    L, H, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    rng = np.random.default_rng(7)
    hf = hf_tensors(src)
    new = {k.replace(f"model.layers.{L - 1}.", f"model.layers.{L}."): v
           for k, v in hf.items() if k.startswith(f"model.layers.{L - 1}.")}
    p = f"model.layers.{L}."
    new.update({p + "embed_tokens.weight": rng.standard_normal((V, H), dtype=np.float32),
                p + "enorm.weight": np.ones(H, np.float32), p + "hnorm.weight": np.ones(H, np.float32),
                p + "eh_proj.weight": rng.standard_normal((H, 2 * H), dtype=np.float32),
                p + "shared_head.norm.weight": np.ones(H, np.float32),
                p + "shared_head.head.weight": rng.standard_normal((V, H), dtype=np.float32)})
    save_file(new, str(src / "model-mtp.safetensors"), metadata={"format": "pt"})
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"].update({k: "model-mtp.safetensors" for k in new})
    index_path.write_text(json.dumps(index))
    return L


FP8_MAX = 448.0   # largest finite float8_e4m3fn


def is_fp8_linear(name: str, t) -> bool:
    """What DeepSeek-V3's published checkpoint stores as FP8: every linear weight inside the
    layers except the router (mlp.gate), i.e. attention, dense, expert and shared-expert
    projections. Embeddings, head and norms stay 16-bit."""
    return name.startswith("model.layers.") and t.ndim == 2 and not name.endswith("mlp.gate.weight")


def quantize_fp8_blocks(w, block: tuple[int, int]):
    """(float8_e4m3fn weight, float32 weight_scale_inv [ceil(rows/br), ceil(cols/bc)]) as the
    DeepSeek-V3 repo stores them: per block, scale = amax / 448 and weight = w / scale."""
    import torch
    br, bc = block
    rows, cols = w.shape
    nr, nc = math.ceil(rows / br), math.ceil(cols / bc)
    padded = torch.zeros(nr * br, nc * bc, dtype=torch.float32)
    padded[:rows, :cols] = w.float()
    blocks = padded.reshape(nr, br, nc, bc)
    scale = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)
    q = (blocks / scale[:, None, :, None]).reshape(nr * br, nc * bc)[:rows, :cols]
    return q.to(torch.float8_e4m3fn), scale.float()


def dequantize_fp8_blocks(q, scale, block: tuple[int, int]):
    import torch
    br, bc = block
    s = scale.repeat_interleave(br, 0)[: q.shape[0]].repeat_interleave(bc, 1)[:, : q.shape[1]]
    return q.to(torch.float32) * s


# ---- logits: llama.cpp vs transformers ------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(ARCH))
def test_logits_match_f32(family, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = tiny_model(family)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32")
    assert kvs(out)["general.architecture"] == ARCH[family]
    assert_logits_match(out, src, rtol=2e-3)


@pytest.mark.parametrize("family", sorted(ARCH))
def test_logits_match_q8_0(family, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = tiny_model(family)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="q8_0")
    types = gguf_types(out)
    assert types["blk.1.ffn_gate_exps.weight"] == "Q8_0"
    assert types["blk.1.ffn_gate_inp.weight"] == "F32"      # routers stay F32
    assert_logits_match(out, src, rtol=5e-2)


# ---- metadata --------------------------------------------------------------------------------------

def test_deepseek_v3_metadata(tiny_model, tmp_path):
    src = tiny_model("deepseek_v3")
    c = config(src)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    kv = kvs(out)
    a = "deepseek2."
    rope = c["rope_parameters"]
    expect = {
        "block_count": c["num_hidden_layers"],
        "attention.head_count": c["num_attention_heads"],
        "attention.head_count_kv": 1,
        "attention.kv_lora_rank": c["kv_lora_rank"],
        "attention.q_lora_rank": c["q_lora_rank"],
        "attention.key_length": c["kv_lora_rank"] + c["qk_rope_head_dim"],
        "attention.value_length": c["kv_lora_rank"],
        "attention.key_length_mla": c["qk_nope_head_dim"] + c["qk_rope_head_dim"],
        "attention.value_length_mla": c["v_head_dim"],
        "rope.dimension_count": c["qk_rope_head_dim"],
        "leading_dense_block_count": c["first_k_dense_replace"],
        "feed_forward_length": c["intermediate_size"],
        "expert_feed_forward_length": c["moe_intermediate_size"],
        "expert_count": c["n_routed_experts"],
        "expert_used_count": c["num_experts_per_tok"],
        "expert_shared_count": c["n_shared_experts"],
        "expert_weights_norm": True,
        "expert_gating_func": 2,                    # sigmoid
        "expert_group_count": c["n_group"],
        "expert_group_used_count": c["topk_group"],
        "rope.scaling.type": "yarn",
        "rope.scaling.original_context_length": rope["original_max_position_embeddings"],
    }
    for k, v in expect.items():
        assert kv[a + k] == v, k
    for k, v in {"expert_weights_scale": c["routed_scaling_factor"], "rope.scaling.factor": rope["factor"],
                 "rope.scaling.yarn_log_multiplier": 0.1 * rope["mscale_all_dim"],
                 "rope.freq_base": rope["rope_theta"], "attention.layer_norm_rms_epsilon": c["rms_norm_eps"]}.items():
        assert kv[a + k] == pytest.approx(v, rel=1e-6), k
    # the tiny transformers model has no MTP weights although its config counts one MTP layer
    assert kv[a + "nextn_predict_layers"] == 0


def test_deepseek_v2_metadata(tiny_model, tmp_path):
    """No q LoRA (V2-Lite): plain attn_q and q_lora_rank 0; softmax gating; greedy routing
    writes no expert groups; V2's yarn mscale = mscale_all_dim = 0.707."""
    src = tiny_model("deepseek_v2")
    c = config(src)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    kv, names = kvs(out), set(tensors(out))
    a = "deepseek2."
    assert kv[a + "attention.q_lora_rank"] == 0
    assert kv[a + "expert_gating_func"] == 1
    assert kv[a + "expert_weights_norm"] is False
    assert a + "expert_group_count" not in kv
    assert kv[a + "rope.scaling.yarn_log_multiplier"] == pytest.approx(0.0707, rel=1e-6)
    assert kv[a + "expert_shared_count"] == c["n_shared_experts"] == 2
    assert "blk.0.attn_q.weight" in names and "blk.0.attn_q_a.weight" not in names
    assert "blk.0.ffn_gate.weight" in names and "blk.0.ffn_gate_exps.weight" not in names  # dense prefix
    assert "blk.1.ffn_gate_exps.weight" in names and "blk.1.ffn_up_shexp.weight" in names
    assert not any(n.endswith("attn_kv_b.weight") for n in names)


def test_glm4moe_metadata_and_names(tiny_model, tmp_path):
    src = tiny_model("glm4_moe")
    c = config(src)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    kv, ts = kvs(out), tensors(out)
    a = "glm4moe."
    assert kv[a + "rope.dimension_count"] == int(c["head_dim"] * c["rope_parameters"]["partial_rotary_factor"])
    assert kv[a + "attention.key_length"] == kv[a + "attention.value_length"] == c["head_dim"]
    assert kv[a + "attention.head_count_kv"] == c["num_key_value_heads"]
    assert kv[a + "expert_gating_func"] == 2
    assert kv[a + "leading_dense_block_count"] == c["first_k_dense_replace"]
    assert kv[a + "expert_shared_count"] == c["n_shared_experts"]
    assert kv[a + "expert_feed_forward_length"] == c["moe_intermediate_size"]
    # HF's post_attention_layernorm is the pre-FFN norm, loaded by glm4moe as attn_post_norm
    hf = hf_tensors(src)
    assert np.array_equal(ts["blk.1.post_attention_norm.weight"], hf["model.layers.1.post_attention_layernorm.weight"])
    assert "blk.1.ffn_norm.weight" not in ts
    assert np.array_equal(ts["blk.1.exp_probs_b.bias"], hf["model.layers.1.mlp.gate.e_score_correction_bias"])
    assert "blk.1.attn_q.bias" in ts and "blk.1.attn_k_norm.weight" in ts


# ---- MLA kv_b split ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["deepseek_v2", "deepseek_v3"])
def test_kv_b_split_into_k_b_transposed_and_v_b(family, tiny_model, tmp_path):
    src = tiny_model(family)
    c = config(src)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    ts = tensors(out)
    kv_b = hf_tensors(src)["model.layers.2.self_attn.kv_b_proj.weight"]
    n_head, nope, v, rank = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    per_head = kv_b.reshape(n_head, nope + v, rank)
    k_b, v_b = ts["blk.2.attn_k_b.weight"], ts["blk.2.attn_v_b.weight"]
    assert k_b.shape == (n_head, rank, nope) and v_b.shape == (n_head, v, rank)
    assert np.array_equal(k_b, per_head[:, :nope].transpose(0, 2, 1))
    assert np.array_equal(v_b, per_head[:, nope:])


# ---- MTP ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["deepseek_v3", "glm4_moe"])
def test_mtp_layer_kept_by_default_dropped_with_no_mtp(family, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = modelgen.copy_model(tiny_model(family), tmp_path / "src")
    mtp = add_mtp_layer(src)
    a = ARCH[family] + "."

    kept = tmp_path / "kept.gguf"
    res = convert_to_gguf(str(src), kept, outtype="f32")
    kv, ts = kvs(kept), tensors(kept)
    assert kv[a + "block_count"] == mtp + 1 and kv[a + "nextn_predict_layers"] == 1
    for role in ("nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight", "nextn.embed_tokens.weight",
                 "nextn.shared_head_head.weight", "nextn.shared_head_norm.weight", "attn_norm.weight",
                 "ffn_gate_exps.weight", "exp_probs_b.bias"):
        assert f"blk.{mtp}.{role}" in ts, role
    assert not res.plan.dropped
    hf = hf_tensors(src)
    assert np.array_equal(ts[f"blk.{mtp}.nextn.eh_proj.weight"], hf[f"model.layers.{mtp}.eh_proj.weight"])
    assert_logits_match(kept, src, rtol=2e-3)      # llama.cpp loads it; the trunk is unchanged

    dropped = tmp_path / "dropped.gguf"
    res = convert_to_gguf(str(src), dropped, outtype="f32", keep_mtp=False)
    kv, ts = kvs(dropped), tensors(dropped)
    assert kv[a + "block_count"] == mtp and kv[a + "nextn_predict_layers"] == 0
    assert not any(n.startswith(f"blk.{mtp}.") for n in ts)
    assert {n for n, _ in res.plan.dropped} == {k for k in hf if k.startswith(f"model.layers.{mtp}.")}
    assert_logits_match(dropped, src, rtol=2e-3)


# ---- FP8 block-scale dequantisation -----------------------------------------------------------------

FP8_BLOCK = (16, 24)   # not the usual 128: exercises partial blocks and the config's block size


@pytest.fixture(scope="module")
def fp8_pair(tiny_model, tmp_path_factory):
    """(FP8 checkpoint, the same with the dequantised weights in f32, the original) from tiny deepseek_v3."""
    base = tmp_path_factory.mktemp("fp8")
    src = tiny_model("deepseek_v3")
    fp8 = modelgen.copy_model(src, base / "fp8")
    deq = modelgen.copy_model(src, base / "deq")

    def quant(name, t):
        if not is_fp8_linear(name, t):
            return {name: t}
        q, s = quantize_fp8_blocks(t, FP8_BLOCK)
        return {name: q, name + "_scale_inv": s}

    def dequant(name, t):
        if not is_fp8_linear(name, t):
            return {name: t}
        q, s = quantize_fp8_blocks(t, FP8_BLOCK)
        return {name: dequantize_fp8_blocks(q, s, FP8_BLOCK)}

    rewrite_shards(fp8, quant)
    rewrite_shards(deq, dequant)
    cfg = config(fp8)
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": list(FP8_BLOCK)}
    (fp8 / "config.json").write_text(json.dumps(cfg, indent=2))
    return fp8, deq, src


def test_fp8_checkpoint_is_built_like_the_real_repo(fp8_pair):
    from safetensors import safe_open
    fp8 = fp8_pair[0]
    wm = json.loads((fp8 / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"
    with safe_open(str(fp8 / wm[name]), "pt") as f:
        w = f.get_slice(name)
        s = f.get_slice(name + "_scale_inv")
        assert w.get_dtype() == "F8_E4M3" and s.get_dtype() == "F32"
        rows, cols = w.get_shape()
        assert s.get_shape() == [math.ceil(rows / FP8_BLOCK[0]), math.ceil(cols / FP8_BLOCK[1])]
        assert rows % FP8_BLOCK[0] and cols % FP8_BLOCK[1]        # partial blocks on both axes
    assert "model.layers.1.mlp.gate.weight_scale_inv" not in wm  # the router stays unquantised


def test_fp8_dequantised_exactly_in_f32(fp8_pair, tmp_path):
    """Every tensor of the FP8 checkpoint's f32 conversion equals the conversion of the
    dequantised checkpoint bit for bit (splits, expert stacks and all)."""
    fp8, deq, src = fp8_pair
    a, b = tmp_path / "fp8.gguf", tmp_path / "deq.gguf"
    convert_to_gguf(str(fp8), a, outtype="f32", vocab=False)
    convert_to_gguf(str(deq), b, outtype="f32", vocab=False)
    ta, tb = tensors(a), tensors(b)
    assert set(ta) == set(tb)
    for name in ta:
        assert ta[name].dtype == np.float32 and np.array_equal(ta[name], tb[name]), name
    # FP8 really lost precision: the dequantised weights are close to, not equal to, the originals
    orig = hf_tensors(src)["model.layers.1.self_attn.q_b_proj.weight"]
    assert not np.array_equal(ta["blk.1.attn_q_b.weight"], orig)
    np.testing.assert_allclose(ta["blk.1.attn_q_b.weight"], orig, atol=0.1 * np.abs(orig).max())


def test_fp8_logits_match_dequantised_model(fp8_pair, tmp_path):
    llama_cpp_or_skip()
    fp8, deq, _ = fp8_pair
    out = tmp_path / "f32.gguf"
    convert_to_gguf(str(fp8), out, outtype="f32")
    assert_logits_match(out, deq, rtol=2e-3)
    auto = tmp_path / "auto.gguf"
    res = convert_to_gguf(str(fp8), auto)          # auto widens FP8 to BF16
    types = gguf_types(auto)
    assert types["blk.1.attn_q_b.weight"] == "BF16" and types["blk.1.ffn_down_exps.weight"] == "BF16"
    assert types["blk.1.attn_k_b.weight"] == "BF16"
    assert types["blk.1.ffn_gate_inp.weight"] == "F32"
    assert res.plan.nbytes == sum(int(t.n_bytes) for t in gguf.GGUFReader(auto).tensors)
    assert_logits_match(auto, deq, rtol=5e-2)


def test_fp8_scale_of_wrong_shape_is_refused(fp8_pair, tmp_path):
    fp8 = fp8_pair[0]
    bad = modelgen.copy_model(fp8, tmp_path / "bad")
    cfg = config(bad)
    cfg["quantization_config"]["weight_block_size"] = [128, 128]   # disagrees with the stored scales
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CkptError, match="one scale per 128x128 block"):
        convert_to_gguf(str(bad), tmp_path / "x.gguf", dry_run=True, vocab=False)


# ---- config assumptions llama.cpp makes ----------------------------------------------------------

@pytest.mark.parametrize("change, why", [
    ({"rope_interleave": False}, "rope_interleave"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "YaRN"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                       "mscale": 0.5, "mscale_all_dim": 1.0}}, "mscale"),
    ({"scoring_func": "sqrtsoftplus"}, "softmax or sigmoid"),
])
def test_unsupported_configs_are_refused(change, why, tiny_model, tmp_path):
    src = modelgen.copy_model(tiny_model("deepseek_v3"), tmp_path / "src")
    cfg = config(src)
    cfg.pop("rope_parameters", None)
    cfg.update(change)
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match=why):
        convert_to_gguf(str(src), tmp_path / "x.gguf", dry_run=True, vocab=False)


# ---- full-size layouts, planned from headers only -------------------------------------------------

def expected_bytes(spec: str, keep_mtp: bool = True) -> int:
    """Output bytes under --outtype auto, from the published layout: FP8 and BF16 weights -> BF16
    (2 bytes), 1-D tensors and routers -> F32; scales are consumed, rotary buffers dropped."""
    cfg = json.loads((Path(__file__).parent / "configs" / "real" / modelgen.HEADER_ONLY_SPECS[spec].config).read_text())
    total = 0
    for t in modelgen.header_only_tensors(spec):
        if t.name.endswith("_scale_inv") or t.name.endswith("inv_freq"):
            continue
        if not keep_mtp and t.name.startswith(f"model.layers.{cfg['num_hidden_layers']}."):
            continue
        total += t.numel * (4 if len(t.shape) == 1 or t.name.endswith("mlp.gate.weight") else 2)
    return total


def test_plan_deepseek_v3_671b_from_headers(header_only_dir):
    src = header_only_dir("deepseek_v3_671b")
    res = convert_to_gguf(str(src), src / "never-written.gguf", dry_run=True)
    assert res.outputs == [] and not (src / "never-written.gguf").exists()
    plan = res.plan
    slots = {s.name: s for s in plan.slots}
    # 3 globals; 61 layers x 10 attention/norm tensors (kv_b split in two); 3 dense x 3;
    # 58 MoE x 8 (router, bias, 3 expert stacks, 3 shared); MTP layer 61: 10 + 8 + 6 nextn
    assert len(plan.tensors) == 3 + 61 * 10 + 3 * 3 + 58 * 8 + 24 == 1110
    T = gguf.GGMLQuantizationType
    for name, shape, typ in [
        ("token_embd.weight", (129280, 7168), T.BF16),
        ("blk.0.attn_q_a.weight", (1536, 7168), T.BF16),
        ("blk.0.attn_q_b.weight", (128 * 192, 1536), T.BF16),
        ("blk.0.attn_kv_a_mqa.weight", (576, 7168), T.BF16),
        ("blk.0.attn_k_b.weight", (128, 512, 128), T.BF16),
        ("blk.0.attn_v_b.weight", (128, 128, 512), T.BF16),
        ("blk.0.ffn_gate.weight", (18432, 7168), T.BF16),
        ("blk.3.ffn_gate_exps.weight", (256, 2048, 7168), T.BF16),
        ("blk.3.ffn_down_exps.weight", (256, 7168, 2048), T.BF16),
        ("blk.3.ffn_gate_inp.weight", (256, 7168), T.F32),
        ("blk.3.exp_probs_b.bias", (256,), T.F32),
        ("blk.60.ffn_up_shexp.weight", (2048, 7168), T.BF16),
        ("blk.61.nextn.eh_proj.weight", (7168, 14336), T.BF16),
        ("blk.61.nextn.shared_head_head.weight", (129280, 7168), T.BF16),
    ]:
        assert slots[name].shape == shape and slots[name].ggml_type == typ, name
    # expert stacks are one piece per expert, each dequantised with its own block scales
    gate = next(t for t in plan.tensors if t.slot.name == "blk.3.ffn_gate_exps.weight")
    assert len(gate.pieces) == 256 and all(p.scale is not None and p.scale_block == (128, 128) for p in gate.pieces)
    assert gate.pieces[5].src.name == "model.layers.3.mlp.experts.5.gate_proj.weight"
    k_b = next(t for t in plan.tensors if t.slot.name == "blk.0.attn_k_b.weight")
    assert len(k_b.pieces) == 128 and k_b.pieces[1].r0 == 256 and k_b.pieces[1].r1 == 256 + 128
    assert plan.nbytes == expected_bytes("deepseek_v3_671b") == 1_369_198_341_120
    kv = {k.key: k.value for k in plan.kvs}
    assert kv["deepseek2.block_count"] == 62 and kv["deepseek2.nextn_predict_layers"] == 1
    assert kv["deepseek2.rope.scaling.factor"] == 40.0 and kv["deepseek2.expert_group_count"] == 8

    res = convert_to_gguf(str(src), src / "x.gguf", dry_run=True, keep_mtp=False)
    assert len(res.plan.tensors) == 1086
    assert res.plan.nbytes == expected_bytes("deepseek_v3_671b", keep_mtp=False)
    assert not any(s.name.startswith("blk.61.") for s in res.plan.slots)
    kv = {k.key: k.value for k in res.plan.kvs}
    assert kv["deepseek2.block_count"] == 61 and kv["deepseek2.nextn_predict_layers"] == 0


def test_plan_kimi_k2_from_headers(header_only_dir):
    src = header_only_dir("kimi_k2_like")
    plan = convert_to_gguf(str(src), src / "x.gguf", dry_run=True).plan
    assert plan.arch == "deepseek2"          # model_type kimi_k2, DeepseekV3ForCausalLM
    # no MTP layer; 1 dense layer, 60 MoE layers of 384 experts; inv_freq buffers dropped
    assert len(plan.tensors) == 3 + 61 * 10 + 1 * 3 + 60 * 8 == 1096
    assert len(plan.dropped) == 61 and all(n.endswith("rotary_emb.inv_freq") for n, _ in plan.dropped)
    slots = {s.name: s for s in plan.slots}
    assert slots["blk.1.ffn_up_exps.weight"].shape == (384, 2048, 7168)
    assert slots["blk.0.attn_k_b.weight"].shape == (64, 512, 128)
    assert slots["blk.0.attn_v_b.weight"].shape == (64, 128, 512)
    assert slots["token_embd.weight"].shape == (163840, 7168)
    assert plan.nbytes == expected_bytes("kimi_k2_like") == 2_053_148_825_600
    kv = {k.key: k.value for k in plan.kvs}
    assert kv["deepseek2.expert_count"] == 384 and kv["deepseek2.leading_dense_block_count"] == 1
    assert kv["deepseek2.expert_weights_scale"] == pytest.approx(2.827)
    assert kv["deepseek2.rope.freq_base"] == 50000.0 and kv["deepseek2.rope.scaling.factor"] == 32.0
    assert kv["deepseek2.rope.scaling.yarn_beta_fast"] == 1.0
    assert kv["deepseek2.nextn_predict_layers"] == 0 and kv["deepseek2.block_count"] == 61


# ---- against llama.cpp's own convert_hf_to_gguf.py -------------------------------------------------

# Runs the reference converter (found by test_reference_converter's fixture) with its hash-based
# pre-tokenizer lookup answered by the name ckptkit derived, and -- for GLM, whose vocabulary code
# insists on GLM's own special tokens ([gMASK], <sop>, ...) the tiny tokenizer lacks -- with its
# plain byte-level BPE vocabulary code. Only tokenizer handling is replaced; weights and model
# metadata are the reference's own.
REF_WRAPPER = """
import os, runpy, sys
root = sys.argv[1]
sys.path[:0] = [os.path.join(root, "gguf-py"), root]
import conversion.base as base
pre = os.environ["CKPTKIT_PRE"]
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
base.TextModel._set_vocab_glm = base.TextModel._set_vocab_gpt2
sys.argv = [os.path.join(root, "convert_hf_to_gguf.py")] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
REF_NOT_WRITTEN = {"general.type", "general.size_label", "tokenizer.ggml.add_sep_token"}   # descriptive / default


@pytest.mark.parametrize("family", sorted(ARCH))
def test_same_tensors_and_metadata_as_reference_converter(family, tiny_model, reference_root, tmp_path):  # noqa: F811
    import os
    import subprocess
    import sys
    src = tiny_model(family)
    mine = tmp_path / "ckptkit.gguf"
    convert_to_gguf(str(src), mine, outtype="f32")
    ck = gguf.GGUFReader(mine)
    ref_path = tmp_path / "reference.gguf"
    env = dict(os.environ, PYTHONPATH=str(reference_root / "gguf-py"),
               CKPTKIT_PRE=ck.fields["tokenizer.ggml.pre"].contents())
    r = subprocess.run([sys.executable, "-c", REF_WRAPPER, str(reference_root), "--outtype", "f32",
                        "--outfile", str(ref_path), str(src)], capture_output=True, text=True, timeout=900,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0 and ref_path.exists(), "reference converter failed:\n" + r.stderr[-3000:]
    ref = gguf.GGUFReader(ref_path)
    rt, ct = {t.name: t for t in ref.tensors}, {t.name: t for t in ck.tensors}
    assert set(rt) == set(ct), f"only in the reference: {sorted(set(rt) - set(ct))}; only in ckptkit: {sorted(set(ct) - set(rt))}"
    for name, t in rt.items():
        c = ct[name]
        assert list(c.shape) == list(t.shape) and c.tensor_type == t.tensor_type, name
        assert c.data.tobytes() == t.data.tobytes(), f"{name}: data differ"
    rf = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    cf = {k: f.contents() for k, f in ck.fields.items() if not k.startswith("GGUF.")}
    arch = ARCH[family]
    assert not sorted(set(rf) - set(cf) - REF_NOT_WRITTEN)
    for k, v in rf.items():
        if k.startswith(arch + "."):
            assert (np.float32(cf[k]) == np.float32(v)) if isinstance(v, float) else cf[k] == v, (k, cf[k], v)
