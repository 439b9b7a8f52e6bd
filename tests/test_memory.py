"""Memory at a context length: one test per attention kind, the arithmetic spelled out.

Real-size layouts come from the header-only replicas (tests/configs/real, modelgen) or small
synthetic indexes built here; nothing is downloaded and no weights exist."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import modelgen
from ckptkit.index import FileInfo, TensorIndex, TensorInfo
from ckptkit.infer import infer
from ckptkit.infer.memory import Memory, estimate_memory, fact_values, row_bytes

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"
BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1}


def _index(tensors: list[tuple[str, tuple[int, ...], str]], config: dict | None) -> TensorIndex:
    infos = {n: TensorInfo(n, dt, shape, "m.safetensors", 0, math.prod(shape) * BYTES[dt])
             for n, shape, dt in tensors}
    return TensorIndex("safetensors", [FileInfo("m.safetensors", None, "safetensors")], infos,
                       config)


def replica(spec: str, with_config: bool = True) -> TensorIndex:
    """A header-only replica's tensors as an index (no files written)."""
    cfg = json.loads((modelgen.CONFIG_DIR / "real" / modelgen.HEADER_ONLY_SPECS[spec].config)
                     .read_text())
    ts = [(t.name, t.shape, t.dtype) for t in modelgen.header_only_tensors(spec)]
    return _index(ts, cfg if with_config else None)


def memory(idx: TensorIndex, ctx: int, kv_type: str = "f16") -> Memory:
    return estimate_memory(fact_values(infer(idx, match=False).facts), idx.total_bytes, ctx,
                           kv_type)


# ---- GQA --------------------------------------------------------------------------------------

def test_gqa_llama3_8b():
    pytest.importorskip("transformers")
    idx = replica("llama3_8b")
    m = memory(idx, 8192)
    # 32 layers x 2 (K, V) x 8 kv heads x 128 head_dim x 2 bytes (f16) x 8192 tokens = 1 GiB
    assert m.kv_cache_bytes == 32 * 2 * 8 * 128 * 2 * 8192 == 2 ** 30
    assert m.weights_bytes == 8_030_261_248 * 2          # BF16 as stored
    assert m.total_bytes == m.weights_bytes + 2 ** 30
    assert list(m.per_kind) == ["full_attention"]
    assert m.per_kind["full_attention"].layers == 32
    # q8_0: a 1024-wide row is 32 blocks of 34 bytes
    q8 = memory(idx, 8192, "q8_0")
    assert q8.kv_cache_bytes == 32 * 2 * (1024 // 32 * 34) * 8192
    assert memory(idx, 8192, "f32").kv_cache_bytes == 2 * m.kv_cache_bytes


# ---- MLA and MTP ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dsv3():
    idx = replica("deepseek_v3_671b")
    return idx, infer(idx, match=False)


def test_mla_caches_the_latent(dsv3):
    idx, inf = dsv3
    m = estimate_memory(fact_values(inf.facts), idx.total_bytes, 163840)
    # one row per token and layer: kv_lora_rank 512 + qk_rope_head_dim 64 = 576 elements,
    # 61 layers x 576 x 2 bytes x 163,840 tokens = 11.5 GB
    assert m.per_kind["mla"].layers == 61
    assert m.per_kind["mla"].bytes_per_layer == (512 + 64) * 2 * 163840
    assert m.kv_cache_bytes == 61 * 576 * 2 * 163840 == 11_513_364_480
    # expanding the latent to 128 heads of K (128 nope + 64 rope) and V (128) would be 71x more
    expanded = 61 * 128 * ((128 + 64) + 128) * 2 * 163840
    assert expanded // m.kv_cache_bytes == 71
    # agrees with the per-token fact
    assert inf.value("kv_cache_bytes_per_token") * 163840 == m.kv_cache_bytes


def test_mtp_layers_hold_no_cache(dsv3):
    idx, inf = dsv3
    m = estimate_memory(fact_values(inf.facts), idx.total_bytes, 4096)
    assert inf.value("mtp_layers") == 1
    assert m.per_kind["mtp"].layers == 1 and m.per_kind["mtp"].bytes == 0
    # 61 decoder layers cached, not 62: the MTP module's attention is not run by default
    assert m.kv_cache_bytes == 61 * 576 * 2 * 4096
    # but its weights are in the file, so in the weights
    mtp_bytes = sum(t.nbytes for n, t in idx.tensors.items() if n.startswith("model.layers.61."))
    assert mtp_bytes > 10 ** 10
    assert m.weights_bytes == sum(t.nbytes for t in idx.tensors.values())
    assert any("MTP included" in note for note in m.notes)


# ---- sliding windows --------------------------------------------------------------------------

def gemma3_like(window: int, layers: int = 62) -> TensorIndex:
    """Gemma-3-27B-shaped text model: 32 q heads, 16 kv heads of 128 (per-head q/k norms tell
    head_dim), every 6th layer global, the rest sliding."""
    H, heads, kv, hd, inter, V = 5376, 32, 16, 128, 21504, 262208
    ts = [("model.embed_tokens.weight", (V, H), "BF16"), ("model.norm.weight", (H,), "BF16")]
    for i in range(layers):
        p, a = f"model.layers.{i}", f"model.layers.{i}.self_attn"
        ts += [(f"{a}.q_proj.weight", (heads * hd, H), "BF16"),
               (f"{a}.k_proj.weight", (kv * hd, H), "BF16"),
               (f"{a}.v_proj.weight", (kv * hd, H), "BF16"),
               (f"{a}.o_proj.weight", (H, heads * hd), "BF16"),
               (f"{a}.q_norm.weight", (hd,), "BF16"), (f"{a}.k_norm.weight", (hd,), "BF16"),
               (f"{p}.mlp.gate_proj.weight", (inter, H), "BF16"),
               (f"{p}.mlp.up_proj.weight", (inter, H), "BF16"),
               (f"{p}.mlp.down_proj.weight", (H, inter), "BF16")]
        ts += [(f"{p}.{n}.weight", (H,), "BF16") for n in
               ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm")]
    cfg = {"model_type": "gemma3_text", "num_hidden_layers": layers, "hidden_size": H,
           "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
           "sliding_window": window, "sliding_window_pattern": 6}
    return _index(ts, cfg)


@pytest.mark.parametrize("window", [1024, 4096])
def test_sliding_gemma3_like(window):
    idx = gemma3_like(window)
    per = 2 * 16 * 128 * 2                      # K and V, 16 kv heads x 128, f16: 8 KiB/token
    m = memory(idx, 32768)
    # global layers 5, 11, ..., 59: 10 of 62; the other 52 hold at most the window
    assert m.per_kind["full_attention"].layers == 10
    assert m.per_kind["sliding_attention"].layers == 52
    assert m.per_kind["sliding_attention"].tokens == window
    assert m.kv_cache_bytes == 10 * per * 32768 + 52 * per * window
    naive = 62 * per * 32768                    # every layer at the full context
    assert naive / m.kv_cache_bytes > (4.5 if window == 1024 else 3)
    # below the window every layer holds the whole context
    short = memory(idx, 512)
    assert short.per_kind["sliding_attention"].tokens == 512
    assert short.kv_cache_bytes == 62 * per * 512


def test_sliding_gpt_oss_20b():
    idx = replica("gpt_oss_20b")
    m = memory(idx, 131072)
    per = 2 * 8 * 64 * 2                        # K and V, 8 kv heads x 64, f16: 2 KiB/token
    # layer_types alternate sliding (window 128) and full: 12 of each
    assert m.per_kind["sliding_attention"].layers == 12
    assert m.per_kind["full_attention"].layers == 12
    assert m.kv_cache_bytes == 12 * per * 131072 + 12 * per * 128
    assert m.weights_bytes == sum(t.nbytes for t in idx.tensors.values())   # MXFP4 as stored


def test_chunked_llama4_scout():
    pytest.importorskip("transformers")
    idx = replica("llama4_scout_like")
    ctx = 10 * 2 ** 20                          # the 10M context Scout is published for
    m = memory(idx, ctx)
    per = 2 * 8 * 128 * 2                       # K and V, 8 kv heads x 128, f16: 4 KiB/token
    # rope layers attend within chunks of 8192: 36 of 48 hold one chunk; layers 3, 7, ..., 47
    # (NoPE) see everything
    assert m.per_kind["chunked_attention"].layers == 36
    assert m.per_kind["chunked_attention"].tokens == 8192
    assert m.per_kind["full_attention"].layers == 12
    assert m.kv_cache_bytes == 12 * per * ctx + 36 * per * 8192
    assert any("vision included" in n for n in m.notes)     # a multimodal repo


# ---- linear attention -------------------------------------------------------------------------

def qwen3_next_like() -> TensorIndex:
    """Qwen3-Next-80B-A3B-shaped attention: 48 layers, every 4th full attention (16 q heads
    gated, 2 kv heads of 256), the rest Gated DeltaNet (16 key heads, 32 value heads, of 128),
    plus one MTP layer. Dense MLPs stand in for the experts; they do not change the cache."""
    H, L = 2048, 48
    hk, hv, dk, dv, kernel = 16, 32, 128, 128, 4
    key, val = hk * dk, hv * dv
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(L)]

    def attn(a: str) -> list:
        return [(f"{a}.q_proj.weight", (16 * 256 * 2, H), "BF16"),
                (f"{a}.k_proj.weight", (2 * 256, H), "BF16"),
                (f"{a}.v_proj.weight", (2 * 256, H), "BF16"),
                (f"{a}.o_proj.weight", (H, 16 * 256), "BF16"),
                (f"{a}.q_norm.weight", (256,), "BF16"), (f"{a}.k_norm.weight", (256,), "BF16")]

    def layer(p: str, kind: str) -> list:
        ts = [(f"{p}.input_layernorm.weight", (H,), "BF16"),
              (f"{p}.post_attention_layernorm.weight", (H,), "BF16"),
              (f"{p}.mlp.gate_proj.weight", (512, H), "BF16"),
              (f"{p}.mlp.up_proj.weight", (512, H), "BF16"),
              (f"{p}.mlp.down_proj.weight", (H, 512), "BF16")]
        if kind == "full_attention":
            return ts + attn(f"{p}.self_attn")
        la = f"{p}.linear_attn"
        return ts + [(f"{la}.in_proj_qkvz.weight", (2 * key + 2 * val, H), "BF16"),
                     (f"{la}.in_proj_ba.weight", (2 * hv, H), "BF16"),
                     (f"{la}.conv1d.weight", (2 * key + val, 1, kernel), "BF16"),
                     (f"{la}.dt_bias", (hv,), "BF16"), (f"{la}.A_log", (hv,), "F32"),
                     (f"{la}.norm.weight", (dv,), "F32"),
                     (f"{la}.out_proj.weight", (H, val), "BF16")]

    ts = [("model.embed_tokens.weight", (151936, H), "BF16"), ("model.norm.weight", (H,), "BF16"),
          ("lm_head.weight", (151936, H), "BF16"), ("mtp.fc.weight", (H, 2 * H), "BF16"),
          ("mtp.norm.weight", (H,), "BF16")]
    for i, kind in enumerate(types):
        ts += layer(f"model.layers.{i}", kind)
    ts += layer("mtp.layers.0", "full_attention")
    cfg = {"model_type": "qwen3_next", "num_hidden_layers": L, "hidden_size": H,
           "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
           "layer_types": types, "linear_conv_kernel_dim": kernel, "linear_key_head_dim": dk,
           "linear_value_head_dim": dv, "linear_num_key_heads": hk, "linear_num_value_heads": hv}
    return _index(ts, cfg)


def test_linear_attention_qwen3_next_like():
    idx = qwen3_next_like()
    inf = infer(idx, match=False)
    # conv state: (kernel 4 - 1) x channels (q 16x128 + k 16x128 + v 32x128 = 8192) = 24,576
    # recurrent state: key head_dim 128 x (32 value heads x 128) = 524,288; F32
    assert inf.value("linear_attention_state") == {"conv": 3 * 8192, "recurrent": 128 * 4096}
    state = (3 * 8192 + 128 * 4096) * 4          # 2,195,456 bytes per layer
    long = estimate_memory(fact_values(inf.facts), idx.total_bytes, 262144)
    lin = long.per_kind["linear_attention"]
    assert (lin.layers, lin.tokens, lin.bytes_per_layer) == (36, None, state)
    # 12 full-attention layers x 2 (K, V) x 2 kv heads x 256 x 2 bytes x 262,144 tokens
    assert long.per_kind["full_attention"].layers == 12
    assert long.kv_cache_bytes == 36 * state + 12 * 2 * 2 * 256 * 2 * 262144
    # the state does not grow with the context; q8_0 leaves it in F32
    short = estimate_memory(fact_values(inf.facts), idx.total_bytes, 1, "q8_0")
    assert short.per_kind["linear_attention"].bytes == 36 * state
    assert short.per_kind["full_attention"].bytes == 12 * 2 * row_bytes(512, "q8_0")
    # the MTP layer's attention is not cached
    assert long.per_kind["mtp"].layers == 1 and long.per_kind["mtp"].bytes == 0


# ---- what is not known is said ----------------------------------------------------------------

def test_unknown_head_dim_is_said_not_guessed():
    pytest.importorskip("transformers")
    m = memory(replica("llama3_8b", with_config=False), 8192)
    assert m.kv_cache_bytes is None and m.total_bytes is None
    assert m.weights_bytes == 8_030_261_248 * 2
    assert any("head_dim" in n for n in m.notes)


def test_window_without_layers_is_an_upper_bound():
    values = {"num_layers": 4, "attention": "gqa", "num_key_value_heads": 2, "head_dim": 64,
              "sliding_window": {"window": 256, "layers": None}}
    m = estimate_memory(values, 0, 1000)
    assert m.kv_cache_bytes == 4 * 2 * 2 * 64 * 2 * 1000
    assert any("upper bound" in n for n in m.notes)


@pytest.mark.parametrize("meta, layers", [
    ({"general.architecture": "gpt-oss", "gpt-oss.attention.sliding_window": 128},
     [0, 2, 4, 6]),                                     # llama.cpp's fixed pattern: 2
    ({"general.architecture": "gemma3", "gemma3.attention.sliding_window": 1024},
     [0, 1, 2, 3, 4, 6, 7]),                            # 6: layer 5 is global
    ({"general.architecture": "cohere2", "cohere2.attention.sliding_window": 4096,
      "cohere2.attention.sliding_window_pattern": [True, True, False] * 2 + [True, True]},
     [0, 1, 3, 4, 6, 7]),                               # per-layer flags win
    ({"general.architecture": "mistral3", "mistral3.attention.sliding_window": 4096}, None),
])
def test_gguf_sliding_layers(meta, layers):
    from ckptkit.infer.attention import sliding_window
    from ckptkit.infer.fact import Hints
    win = sliding_window(Hints(None, meta, "gguf"), 8)
    assert win.source == "gguf" and win.value["layers"] == layers, win.evidence
    values = {"num_layers": 8, "attention": "gqa", "num_key_value_heads": 1, "head_dim": 32,
              "sliding_window": win.value}
    m = estimate_memory(values, 0, 10 ** 5)
    if layers is None:   # the window is known but not where: an upper bound, said
        assert m.kv_cache_bytes == 8 * 2 * 32 * 2 * 10 ** 5 and "upper bound" in m.notes[0]
    else:
        window = win.value["window"]
        assert m.kv_cache_bytes == (8 - len(layers)) * 128 * 10 ** 5 + len(layers) * 128 * window


def test_linear_state_unknown_is_said():
    values = {"num_layers": 4, "attention": "gqa", "num_key_value_heads": 2, "head_dim": 64,
              "linear_attention_layers": [0, 1, 2], "linear_attention_state": None}
    m = estimate_memory(values, 0, 1000)
    assert m.kv_cache_bytes is None and any("linear-attention" in n for n in m.notes)


# ---- command line -----------------------------------------------------------------------------

def run(*args):
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True,
                          text=True)


def test_cli_ctx_json_and_text():
    r = run("inspect", str(EXAMPLE), "--ctx", "4096", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    mem = rep["memory"]
    # tiny-llama: 2 layers x 2 (K, V) x 2 kv heads x 16 head_dim x 2 bytes x 4096 tokens
    assert mem["kv_cache_bytes"] == 2 * 2 * 2 * 16 * 2 * 4096 == 1_048_576
    assert mem["weights_bytes"] == rep["total_bytes"]
    assert mem["total_bytes"] == rep["total_bytes"] + 1_048_576
    assert (mem["ctx"], mem["kv_type"]) == (4096, "f16")
    assert mem["per_kind"]["full_attention"]["layers"] == 2

    r = run("inspect", str(EXAMPLE), "--ctx", "4096", "--kv-type", "q8_0", "--json")
    assert json.loads(r.stdout)["memory"]["kv_cache_bytes"] == 2 * 2 * 34 * 4096

    r = run("inspect", str(EXAMPLE), "--ctx", "4096")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("memory"))
    assert "1.05 MB KV cache at 4,096 tokens (f16)" in line
    assert "2 full-attention layers x 4,096 tokens" in line

    assert "memory" not in json.loads(run("inspect", str(EXAMPLE), "--json").stdout)
    bad = run("inspect", str(EXAMPLE), "--ctx", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
