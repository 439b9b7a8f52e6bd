"""Architecture inference: facts from tensor names and shapes, checked against the configs the
tensors were built from (transformers models on the meta device) and synthetic checkpoints."""
from __future__ import annotations

import time
import warnings

import pytest

from ckptkit.index import FileInfo, TensorIndex, TensorInfo
from ckptkit.infer import FACT_KEYS, canonical_name, canonicalize, infer, parse_name
from ckptkit.infer.quant import block_size

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
warnings.filterwarnings("ignore")

DT = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
TINY = dict(num_hidden_layers=4, hidden_size=64, intermediate_size=96, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256)
EXTRA = {
    "gpt2": dict(n_layer=3, n_embd=64, n_head=4, vocab_size=256, n_positions=128),
    "smollm3": dict(pad_token_id=0),
    "deepseek_v3": dict(first_k_dense_replace=2, n_routed_experts=8, moe_intermediate_size=32,
                        q_lora_rank=48, kv_lora_rank=32, qk_rope_head_dim=8,
                        qk_nope_head_dim=16, v_head_dim=24, n_group=2, topk_group=1,
                        num_experts_per_tok=2),
    "glm4_moe": dict(first_k_dense_replace=1, n_routed_experts=8, moe_intermediate_size=32,
                     num_experts_per_tok=2, n_group=1, topk_group=1, head_dim=32),
    "qwen3_moe": dict(num_experts=8, moe_intermediate_size=32, num_experts_per_tok=2, head_dim=32),
    "qwen3": dict(head_dim=32),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, head_dim=32,
                    layer_types=["sliding_attention", "full_attention"] * 2),
    "llama4_text": dict(num_local_experts=4, intermediate_size_mlp=80, interleave_moe_layer_step=2,
                        head_dim=32),
    "qwen3_next": dict(num_experts=8, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                       num_experts_per_tok=2, head_dim=32, linear_num_key_heads=2,
                       linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16),
    "gemma3_text": dict(head_dim=32, sliding_window=16, layer_types=["sliding_attention"] * 3
                        + ["full_attention"]),
}
ARCHS = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3",
         "gemma3_text", "olmo2", "gpt_oss", "glm4_moe", "llama4_text", "qwen3_next", "smollm3",
         "gpt2"]


def index_from_model(model, config: dict | None) -> TensorIndex:
    """What a safetensors save would hold: each tensor once (tied weights saved once)."""
    seen: set[int] = set()
    tensors = {}
    offset = 0
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        n = t.numel() * t.element_size()
        tensors[name] = TensorInfo(name, DT[t.dtype], tuple(t.shape), "model.safetensors",
                                   offset, n)
        offset += n
    return TensorIndex("safetensors", [FileInfo("model.safetensors", offset, "safetensors")],
                       tensors, config)


def build(model_type: str, **overrides):
    from transformers import AutoConfig, AutoModelForCausalLM
    base = AutoConfig.for_model(model_type)
    kw = {k: v for k, v in TINY.items() if hasattr(base, k)} if model_type != "gpt2" else {}
    kw.update(EXTRA.get(model_type, {}))
    kw.update(overrides)
    cfg = AutoConfig.for_model(model_type, **kw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return cfg, index_from_model(model, cfg.to_dict())


@pytest.fixture(scope="session")
def tiny():
    cache: dict[str, tuple] = {}

    def get(model_type: str):
        if model_type not in cache:
            cfg, idx = build(model_type)
            cache[model_type] = (cfg, idx, infer(idx))
        return cache[model_type]
    return get


def expected(cfg) -> dict:
    """The facts a config promises, by the config's own keys."""
    c = cfg.to_dict()
    g = lambda *ks: next((c[k] for k in ks if c.get(k) is not None), None)  # noqa: E731
    exp = {
        "num_layers": g("num_hidden_layers", "n_layer"),
        "hidden_size": g("hidden_size", "n_embd"),
        "vocab_size": c["vocab_size"],
        "tied_embeddings": bool(c.get("tie_word_embeddings")),
        "num_attention_heads": g("num_attention_heads", "n_head"),
    }
    exp["num_key_value_heads"] = g("num_key_value_heads") or exp["num_attention_heads"]
    exp["head_dim"] = g("head_dim") or exp["hidden_size"] // exp["num_attention_heads"]
    if c.get("kv_lora_rank"):      # MLA: the latent is expanded to every head
        exp["num_key_value_heads"] = exp["num_attention_heads"]
        exp["head_dim"] = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    experts = g("num_local_experts", "n_routed_experts", "num_experts")
    if experts:
        exp["num_experts"] = experts
        exp["expert_intermediate_size"] = g("moe_intermediate_size", "intermediate_size")
        exp["num_experts_per_tok"] = g("num_experts_per_tok", "experts_per_token")
    return exp


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_facts_match_config(tiny, arch):
    cfg, idx, inf = tiny(arch)
    assert set(inf.facts) == set(FACT_KEYS)
    for key, want in expected(cfg).items():
        f = inf.facts[key]
        if f.source == "tensors" or key in ("num_layers", "hidden_size", "vocab_size",
                                            "tied_embeddings", "num_experts",
                                            "expert_intermediate_size"):
            assert f.source == "tensors", (key, f)
            assert f.value == want, (arch, key, f.value, want, f.evidence)
        else:
            assert f.source in ("config", "derived"), (key, f)
            assert f.value == want, (arch, key, f.value, want)
    # every fact that came from tensors carries evidence
    for key, f in inf.facts.items():
        assert f.source in ("tensors", "config", "gguf", "derived")
        assert f.evidence, key
    # parameters: total is exactly what the tensors hold
    assert inf.value("parameters")["total"] == sum(t.numel for t in idx.tensors.values())


TENSOR_HEADS = ["qwen3", "qwen3_moe", "gemma3_text", "gpt_oss", "qwen3_next", "deepseek_v3"]


@pytest.mark.parametrize("arch", TENSOR_HEADS)
def test_heads_from_tensors_where_shapes_tell(tiny, arch):
    cfg, _, inf = tiny(arch)
    exp = expected(cfg)
    for key in ("num_attention_heads", "head_dim"):
        assert inf.facts[key].source == "tensors", (arch, key, inf.facts[key])
    assert inf.value("num_attention_heads") == exp["num_attention_heads"]
    if arch != "deepseek_v3":
        assert inf.value("head_dim") == exp["head_dim"]
        assert inf.value("num_key_value_heads") == exp["num_key_value_heads"]
        assert inf.value("attention") == "gqa"


def test_heads_from_config_say_so(tiny):
    _, _, inf = tiny("llama")
    f = inf.facts["head_dim"]
    assert f.source == "config"
    assert any("cannot split" in e for e in f.evidence)


def test_mla_dimensions(tiny):
    cfg, _, inf = tiny("deepseek_v3")
    v = inf.value
    assert v("attention") == "mla" and inf.facts["attention"].source == "tensors"
    for key in ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
                "v_head_dim"):
        assert inf.facts[key].source == "tensors"
        assert v(key) == getattr(cfg, key), key
    assert v("dense_prefix_layers") == 2 and v("moe_layers") == [2, 3]
    assert v("num_shared_experts") == cfg.n_shared_experts
    assert v("router_bias") is True
    assert v("intermediate_size") == cfg.intermediate_size
    # MLA caches the latent plus the rope part per layer
    assert v("kv_cache_bytes_per_token") == (32 + 8) * 2 * 4


def test_norm_placement_and_kinds(tiny):
    assert tiny("llama")[2].value("norm_placement") == "pre"
    assert tiny("olmo2")[2].value("norm_placement") == "post"
    assert tiny("gemma3_text")[2].value("norm_placement") == "sandwich"
    assert tiny("gpt2")[2].value("norm_kind") == "layernorm"
    assert tiny("llama")[2].value("norm_kind") == "rmsnorm"
    assert tiny("qwen3")[2].value("qk_norm") is True
    assert tiny("olmo2")[2].value("qk_norm") is True
    assert tiny("llama")[2].value("qk_norm") is False


def test_gpt2_quirks(tiny):
    cfg, _, inf = tiny("gpt2")
    v = inf.value
    assert v("positional") == "learned" and inf.facts["positional"].source == "tensors"
    assert v("intermediate_size") == 4 * cfg.n_embd      # Conv1D stored [in, out]
    assert v("attention") == "mha" and inf.facts["attention"].source == "tensors"
    assert v("attention_bias") is True and v("mlp_bias") is True


def test_moe_details(tiny):
    _, _, mix = tiny("mixtral")
    assert mix.value("num_shared_experts") == 0 and mix.value("intermediate_size") is None
    assert mix.value("router_bias") is False
    cfg, _, l4 = tiny("llama4_text")
    assert l4.value("moe_layers") == [1, 3]          # every other layer
    assert l4.value("dense_prefix_layers") == 1
    assert l4.value("intermediate_size") == cfg.intermediate_size_mlp
    assert l4.value("num_shared_experts") == 1
    cfg, _, glm = tiny("glm4_moe")
    assert glm.value("dense_prefix_layers") == 1 and glm.value("router_bias") is True
    cfg, _, qn = tiny("qwen3_next")
    assert qn.value("num_shared_experts") == 2       # shared width 64 = 2 x expert width 32
    _, _, oss = tiny("gpt_oss")
    assert oss.value("attention_sinks") is True and oss.value("router_bias") is True
    assert oss.value("mlp_bias") is True and oss.value("attention_bias") is True


def test_active_parameters(tiny):
    _, idx, inf = tiny("mixtral")
    p = inf.value("parameters")
    routed = sum(t.numel for n, t in idx.tensors.items() if ".experts." in n)
    emb = idx.tensors["model.embed_tokens.weight"].numel
    assert p["active"] == p["total"] - emb - routed + routed * 2 // 4
    assert p["embedding"] == idx.tensors["model.embed_tokens.weight"].numel


def test_linear_attention_and_kv_cache(tiny):
    cfg, _, inf = tiny("qwen3_next")
    types = cfg.layer_types
    assert inf.value("linear_attention_layers") == [i for i, t in enumerate(types)
                                                    if t == "linear_attention"]
    full = sum(1 for t in types if t == "full_attention")
    assert inf.value("kv_cache_bytes_per_token") == full * 2 * 2 * 32 * 2


def test_sliding_window(tiny):
    _, _, g = tiny("gemma3_text")
    assert g.value("sliding_window") == {"window": 16, "layers": [0, 1, 2]}
    _, _, oss = tiny("gpt_oss")
    sw = oss.value("sliding_window")
    assert sw["layers"] == [0, 2]
    ev = " ".join(oss.facts["kv_cache_bytes_per_token"].evidence)
    assert "sliding-window" in ev


def test_positional_nope(tiny):
    assert tiny("smollm3")[2].value("positional") == "rope+nope"
    assert tiny("llama")[2].value("positional") == "rope"


def test_tensors_win_over_config(tiny):
    """A config that lies does not change tensor-determined facts."""
    cfg, idx, _ = tiny("qwen3")
    lying = dict(idx.config, num_key_value_heads=1, num_hidden_layers=99, vocab_size=7)
    idx2 = TensorIndex(idx.format, idx.files, idx.tensors, lying)
    inf = infer(idx2)
    assert inf.value("num_key_value_heads") == cfg.num_key_value_heads
    assert inf.value("num_layers") == cfg.num_hidden_layers
    assert inf.value("vocab_size") == cfg.vocab_size


def test_to_json_shape(tiny):
    _, _, inf = tiny("qwen3_moe")
    j = inf.to_json()
    assert set(j) == {"family", "facts"}
    assert j["family"]["family"] == "qwen3_moe"
    for f in j["facts"].values():
        assert set(f) == {"value", "source", "evidence"}
    import json
    json.dumps(j)


# ---- real-size architectures on the meta device ----------------------------------------------

def test_real_size_llama3_8b():
    cfg, idx = build("llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                     tie_word_embeddings=False)
    inf = infer(idx)
    assert inf.value("parameters")["total"] == 8_030_261_248
    assert inf.family["family"] == "llama" and inf.family["model"] == "Llama 3 8B"
    # without config.json: the tensors alone still name the model
    bare = infer(TensorIndex(idx.format, idx.files, idx.tensors, None))
    assert bare.family["model"] == "Llama 3 8B"
    assert bare.value("head_dim") is None and bare.value("attention") == "gqa" or \
        bare.value("attention") is None
    assert bare.value("kv_cache_bytes_per_token") is None


def test_real_size_gpt_oss_20b():
    cfg, idx = build("gpt_oss", num_hidden_layers=24, hidden_size=2880, intermediate_size=2880,
                     num_attention_heads=64, num_key_value_heads=8, head_dim=64,
                     vocab_size=201088, num_local_experts=32, num_experts_per_tok=4,
                     layer_types=["sliding_attention", "full_attention"] * 12)
    inf = infer(idx)
    v = inf.value
    assert (v("num_attention_heads"), v("num_key_value_heads"), v("head_dim")) == (64, 8, 64)
    assert inf.facts["num_attention_heads"].source == "tensors"
    assert inf.family["model"] == "gpt-oss-20b"
    p = v("parameters")
    # model card: 20.91B total, 3.61B active
    assert 20.85e9 < p["total"] < 20.95e9 and 3.55e9 < p["active"] < 3.65e9
    assert v("kv_cache_bytes_per_token") == 24 * 2 * 8 * 64 * 2


# ---- synthetic checkpoints: names and quirks transformers does not produce ---------------------

def T(name, shape, dtype="BF16"):
    from math import prod
    bits = {"BF16": 16, "F32": 32, "F8_E4M3": 8, "U8": 8, "Q4_K": 4.5, "F16": 16, "Q8_0": 8.5}
    return TensorInfo(name, dtype, tuple(shape), "m", 0, int(prod(shape) * bits[dtype] / 8))


def index_of(tensors, config=None, fmt="safetensors", metadata=None):
    return TensorIndex(fmt, [FileInfo("m", None, fmt)], {t.name: t for t in tensors}, config,
                       None, metadata or {})


def deepseek_v3_like(layers=61, experts=256, dense=3, fp8=True, mtp=True):
    """Header-level DeepSeek-V3: per-expert FP8 tensors with 128x128 block scales."""
    H, I, E_I, V = 7168, 18432, 2048, 129280
    out = [T("model.embed_tokens.weight", (V, H)), T("model.norm.weight", (H,)),
           T("lm_head.weight", (V, H))]

    def lin(name, o, i):
        if fp8:
            out.append(T(name + ".weight", (o, i), "F8_E4M3"))
            out.append(T(name + ".weight_scale_inv", (-(-o // 128), -(-i // 128)), "F32"))
        else:
            out.append(T(name + ".weight", (o, i)))

    for L in range(layers + (1 if mtp else 0)):
        p = f"model.layers.{L}."
        out += [T(p + "input_layernorm.weight", (H,)), T(p + "post_attention_layernorm.weight", (H,)),
                T(p + "self_attn.q_a_layernorm.weight", (1536,)),
                T(p + "self_attn.kv_a_layernorm.weight", (512,))]
        lin(p + "self_attn.q_a_proj", 1536, H)
        lin(p + "self_attn.q_b_proj", 128 * 192, 1536)
        lin(p + "self_attn.kv_a_proj_with_mqa", 576, H)
        lin(p + "self_attn.kv_b_proj", 128 * 256, 512)
        lin(p + "self_attn.o_proj", H, 128 * 128)
        if L < dense:
            lin(p + "mlp.gate_proj", I, H)
            lin(p + "mlp.up_proj", I, H)
            lin(p + "mlp.down_proj", H, I)
        else:
            out += [T(p + "mlp.gate.weight", (experts, H)),
                    T(p + "mlp.gate.e_score_correction_bias", (experts,), "F32")]
            for e in range(experts):
                lin(p + f"mlp.experts.{e}.gate_proj", E_I, H)
                lin(p + f"mlp.experts.{e}.up_proj", E_I, H)
                lin(p + f"mlp.experts.{e}.down_proj", H, E_I)
            lin(p + "mlp.shared_experts.gate_proj", E_I, H)
            lin(p + "mlp.shared_experts.up_proj", E_I, H)
            lin(p + "mlp.shared_experts.down_proj", H, E_I)
        if L == layers:
            out += [T(p + "embed_tokens.weight", (V, H)), T(p + "enorm.weight", (H,)),
                    T(p + "hnorm.weight", (H,)), T(p + "eh_proj.weight", (H, 2 * H)),
                    T(p + "shared_head.head.weight", (V, H)),
                    T(p + "shared_head.norm.weight", (H,))]
    return out


@pytest.fixture(scope="session")
def dsv3_index():
    cfg = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
           "num_experts_per_tok": 8, "num_hidden_layers": 61}
    return index_of(deepseek_v3_like(), cfg)


def test_deepseek_v3_full_size(dsv3_index):
    n = len(dsv3_index.tensors)
    t0 = time.perf_counter()
    inf = infer(dsv3_index)
    dt = time.perf_counter() - t0
    print(f"\ninfer() on {n} tensors: {dt * 1000:.0f} ms")
    assert n > 90_000
    assert dt < 5.0
    v = inf.value
    assert v("num_layers") == 61 and v("mtp_layers") == 1
    assert v("num_experts") == 256 and v("expert_intermediate_size") == 2048
    assert v("dense_prefix_layers") == 3 and len(v("moe_layers")) == 58
    assert (v("kv_lora_rank"), v("q_lora_rank"), v("qk_rope_head_dim"), v("qk_nope_head_dim"),
            v("v_head_dim"), v("num_attention_heads")) == (512, 1536, 64, 128, 128, 128)
    p = v("parameters")
    # published: 671B main model + 14B MTP module, 37B active
    assert 670e9 < p["total"] - p["mtp"] < 672e9
    assert 11e9 < p["mtp"] < 12.5e9 or 13e9 < p["mtp"] < 15e9
    assert 36e9 < p["active"] < 38e9
    q = v("quantization")
    assert q["method"] == "fp8" and q["block_size"] == [128, 128]
    assert q["scale_tensors"] == sum(1 for k in dsv3_index.tensors if k.endswith("scale_inv"))
    assert v("kv_cache_bytes_per_token") == 576 * 2 * 61
    assert inf.family["family"] == "deepseek_v3" and inf.family["model"] == "DeepSeek-V3 / R1"


def test_mxfp4_blocks_count_logical_params():
    E, I, H = 4, 64, 64
    p = "model.layers.0."
    ts = [T("model.embed_tokens.weight", (100, H)), T("lm_head.weight", (100, H)),
          T(p + "input_layernorm.weight", (H,)), T(p + "post_attention_layernorm.weight", (H,)),
          T(p + "self_attn.q_proj.weight", (4 * 16, H)), T(p + "self_attn.k_proj.weight", (16, H)),
          T(p + "self_attn.v_proj.weight", (16, H)), T(p + "self_attn.o_proj.weight", (H, 64)),
          T(p + "self_attn.sinks", (4,), "F32"),
          T(p + "mlp.router.weight", (E, H)), T(p + "mlp.router.bias", (E,)),
          T(p + "mlp.experts.gate_up_proj_blocks", (E, 2 * I, H // 32, 16), "U8"),
          T(p + "mlp.experts.gate_up_proj_scales", (E, 2 * I, H // 32), "U8"),
          T(p + "mlp.experts.gate_up_proj_bias", (E, 2 * I)),
          T(p + "mlp.experts.down_proj_blocks", (E, H, I // 32, 16), "U8"),
          T(p + "mlp.experts.down_proj_scales", (E, H, I // 32), "U8"),
          T(p + "mlp.experts.down_proj_bias", (E, H))]
    inf = infer(index_of(ts, {"num_experts_per_tok": 2}))
    v = inf.value
    logical = E * 2 * I * H + E * H * I
    q = v("quantization")
    assert q["method"] == "mxfp4" and q["quantized_params"] == logical and q["scale_tensors"] == 2
    assert v("expert_intermediate_size") == I and v("num_experts") == E
    assert (v("num_attention_heads"), v("head_dim"), v("num_key_value_heads")) == (4, 16, 1)
    assert v("attention") == "mqa"
    scales = E * 2 * I * (H // 32) + E * H * (I // 32)
    raw = sum(t.numel for t in ts)
    assert v("parameters")["total"] == raw - scales - E * 2 * I * (H // 32) * 16 \
        - E * H * (I // 32) * 16 + logical


def test_gguf_names_and_metadata():
    H, V, L = 64, 300, 2
    ts = [T("token_embd.weight", (V, H), "Q4_K"), T("output_norm.weight", (H,), "F32")]
    for i in range(L):
        b = f"blk.{i}."
        ts += [T(b + "attn_norm.weight", (H,), "F32"), T(b + "ffn_norm.weight", (H,), "F32"),
               T(b + "attn_q.weight", (H, H), "Q4_K"), T(b + "attn_k.weight", (16, H), "Q4_K"),
               T(b + "attn_v.weight", (16, H), "Q8_0"), T(b + "attn_output.weight", (H, H), "Q4_K"),
               T(b + "ffn_gate_inp.weight", (8, H), "F32"),
               T(b + "ffn_gate_exps.weight", (8, 32, H), "Q4_K"),
               T(b + "ffn_up_exps.weight", (8, 32, H), "Q4_K"),
               T(b + "ffn_down_exps.weight", (8, H, 32), "Q4_K")]
    meta = {"general.architecture": "llama", "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 1, "llama.expert_used_count": 2,
            "general.file_type": 15}
    inf = infer(index_of(ts, None, "gguf", meta))
    v = inf.value
    assert v("num_layers") == 2 and v("hidden_size") == H and v("vocab_size") == V
    assert v("tied_embeddings") is True
    assert v("head_dim") == 16 and inf.facts["head_dim"].source == "gguf"
    assert v("attention") == "mqa"
    assert v("num_experts") == 8 and v("expert_intermediate_size") == 32
    assert v("num_experts_per_tok") == 2 and inf.facts["num_experts_per_tok"].source == "gguf"
    q = v("quantization")
    assert q["method"] == "gguf" and q["types"][0] == "Q4_K" and "Q8_0" in q["types"]


def test_prefixes_fused_and_per_expert_names():
    """language_model. prefixes, fused qkv/gate_up (Phi-3 style), Mixtral per-expert names."""
    H = 64
    ts = [T("language_model.model.embed_tokens.weight", (100, H)),
          T("language_model.lm_head.weight", (100, H)),
          T("vision_tower.encoder.layers.0.attn.q.weight", (32, 32))]
    for i in range(2):
        p = f"language_model.model.layers.{i}."
        ts += [T(p + "self_attn.qkv_proj.weight", (H + 2 * 16, H)),
               T(p + "self_attn.o_proj.weight", (H, H)),
               T(p + "self_attn.q_norm.weight", (16,)),
               T(p + "input_layernorm.weight", (H,)), T(p + "post_attention_layernorm.weight", (H,)),
               T(p + "block_sparse_moe.gate.weight", (3, H))]
        for e in range(3):
            ts += [T(p + f"block_sparse_moe.experts.{e}.w1.weight", (48, H)),
                   T(p + f"block_sparse_moe.experts.{e}.w3.weight", (48, H)),
                   T(p + f"block_sparse_moe.experts.{e}.w2.weight", (H, 48))]
    inf = infer(index_of(ts, {"num_attention_heads": 4}))
    v = inf.value
    assert v("num_layers") == 2 and v("num_experts") == 3 and v("expert_intermediate_size") == 48
    assert (v("head_dim"), v("num_attention_heads"), v("num_key_value_heads")) == (16, 4, 1)
    assert v("parameters")["vision"] == 32 * 32
    ts2 = [T("model.layers.0.mlp.gate_up_proj.weight", (2 * 80, H)),
           T("model.layers.0.mlp.down_proj.weight", (H, 80)),
           T("model.embed_tokens.weight", (100, H))]
    assert infer(index_of(ts2)).value("intermediate_size") == 80


def test_canonical_names():
    assert canonical_name("model.layers.3.self_attn.q_proj.weight") == ("attn_q.weight", 3, None)
    assert canonical_name("blk.7.ffn_down_exps.weight") == ("ffn_down_exps.weight", 7, None)
    assert canonical_name("model.layers.5.mlp.experts.17.up_proj.weight") == \
        ("ffn_up_exps.weight", 5, 17)
    assert canonical_name("language_model.model.layers.0.feed_forward.router.weight") == \
        ("ffn_gate_inp.weight", 0, None)
    assert canonical_name("transformer.h.2.attn.c_attn.bias") == ("attn_qkv.bias", 2, None)
    assert canonical_name("h.0.mlp.c_fc.weight") == ("ffn_up.weight", 0, None)
    assert canonical_name("model.embed_tokens.weight") == ("token_embd.weight", None, None)
    assert canonical_name("lm_head.weight") == ("output.weight", None, None)
    assert canonical_name("model.layers.1.self_attn.kv_b_proj.weight_scale_inv") == \
        ("attn_kv_b.scale", 1, None)
    assert canonical_name("model.layers.1.mlp.experts.gate_up_proj_blocks") == \
        ("ffn_gate_up_exps.blocks", 1, None)
    assert canonical_name("model.layers.1.some.new.thing") == (None, 1, None)
    assert parse_name("transformer.h.0.attn.c_attn.weight").transposed
    info = parse_name("mtp.layers.0.self_attn.q_proj.weight")
    assert info.mtp and info.role == "attn_q.weight"


def test_canonicalize_resolves_post_attention_norm():
    llama = canonicalize(["model.layers.0.input_layernorm.weight",
                          "model.layers.0.post_attention_layernorm.weight"])
    assert llama["model.layers.0.post_attention_layernorm.weight"].role == "ffn_norm.weight"
    gemma = canonicalize(["model.layers.0.input_layernorm.weight",
                          "model.layers.0.post_attention_layernorm.weight",
                          "model.layers.0.pre_feedforward_layernorm.weight"])
    assert gemma["model.layers.0.post_attention_layernorm.weight"].role == \
        "post_attention_norm.weight"
    olmo = canonicalize(["model.layers.0.post_attention_layernorm.weight",
                         "model.layers.0.post_feedforward_layernorm.weight"])
    assert olmo["model.layers.0.post_attention_layernorm.weight"].role == \
        "post_attention_norm.weight"


def test_scan_and_canonicalize_agree_on_norms_with_bias():
    """StableLM: a Llama-style layer whose norms carry a bias. The weight and the bias of
    post_attention_layernorm are one norm and must get one meaning (ffn_norm) in both the
    scan and canonicalize, whichever of the two is seen first."""
    from ckptkit.infer import scan
    H, p = 64, "model.layers.0."
    names = [p + n for n in (
        "input_layernorm.weight", "input_layernorm.bias", "self_attn.q_proj.weight",
        "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "post_attention_layernorm.weight", "post_attention_layernorm.bias",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")]
    for order in (names, names[::-1]):
        canon = canonicalize(order)
        assert canon[p + "post_attention_layernorm.weight"].role == "ffn_norm.weight"
        assert canon[p + "post_attention_layernorm.bias"].role == "ffn_norm.bias"
        layer = scan(index_of([T(n, (H,) if "layernorm" in n else (H, H)) for n in order])).layers[0]
        assert {r: x.name for r, x in layer.roles.items()} == {canon[n].role: n for n in order}


def test_block_size():
    assert block_size((7168, 2048), (56, 16)) == [128, 128]
    assert block_size((576, 7168), (5, 56)) == [128, 128]      # ragged last block
    assert block_size((100, 100), (3, 7)) is None or block_size((100, 100), (3, 7)) != [128, 128]


def test_fp8_scale_granularity():
    """compressed-tensors FP8 keeps one scale per tensor or per output channel; DeepSeek one per
    128x128 block: the quantization fact says which."""
    from ckptkit.index import TensorIndex, TensorInfo
    from ckptkit.infer import infer

    def index_with(scale_shape):
        ts = {}
        for l in range(2):
            w = f"model.layers.{l}.mlp.down_proj.weight"
            ts[w] = TensorInfo(w, "F8_E4M3", (256, 512), "a", 0, 256 * 512)
            ts[w + "_scale"] = TensorInfo(w + "_scale", "F32", scale_shape, "a", 0, 4)
        return TensorIndex("safetensors", [], ts)

    assert infer(index_with(())).facts["quantization"].value["granularity"] == "tensor"
    assert infer(index_with((256, 1))).facts["quantization"].value["granularity"] == "channel"
    q = infer(index_with((2, 4))).facts["quantization"].value
    assert q["granularity"] == "block" and q["block_size"] == [128, 128]
