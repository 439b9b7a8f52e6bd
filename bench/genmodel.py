"""Generated benchmark checkpoints: real Llama / Mixtral tensor names and shapes, random BF16
data, sharded safetensors written with ckptkit's own header builder (no torch needed).

    make_llama(dest, gb)        a dense Llama-3-style model of about ``gb`` GB (layers scale)
    make_moe(dest, experts=64)  a Mixtral-style model with 64 per-expert tensors per layer
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ckptkit.formats.safetensors import build_header

SHARD_BYTES = 300 << 20
_POOL = None


def _pool() -> np.ndarray:
    """32 MB of N(0, 0.02) values as BF16 bit patterns; tensors are slices of it (fast, finite)."""
    global _POOL
    if _POOL is None:
        x = np.random.default_rng(0).standard_normal(16 << 20, dtype=np.float32) * 0.02
        _POOL = (x.view(np.uint32) >> 16).astype(np.uint16)
    return _POOL


def _write_shards(dest: Path, tensors: list[tuple[str, tuple[int, ...]]], config: dict) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    groups, cur, size = [[]], 0, 0
    for name, shape in tensors:
        nb = 2 * math.prod(shape)
        if groups[-1] and cur + nb > SHARD_BYTES:
            groups.append([])
            cur = 0
        groups[-1].append((name, shape))
        cur += nb
        size += nb
    pool, rng = _pool(), np.random.default_rng(1)
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        head, _ = build_header([(n, "BF16", s) for n, s in group], {"format": "pt"})
        with open(dest / fname, "wb") as f:
            f.write(head)
            for name, shape in group:
                left = math.prod(shape)
                pos = int(rng.integers(0, len(pool)))
                while left:
                    n = min(left, len(pool) - pos)
                    f.write(memoryview(pool[pos:pos + n]).cast("B"))
                    left -= n
                    pos = 0
                weight_map[name] = fname
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    (dest / ".complete").write_text("ok")
    return dest


def llama_config(layers: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 5632, "num_hidden_layers": layers, "num_attention_heads": 16,
        "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 32000, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "max_position_embeddings": 8192, "tie_word_embeddings": False,
        "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    }


def _attention(p: str, H: int, hd: int, nh: int, nkv: int) -> list[tuple[str, tuple[int, ...]]]:
    """A Llama-style layer's norms and attention projections."""
    return [(f"{p}.input_layernorm.weight", (H,)),
            (f"{p}.self_attn.q_proj.weight", (nh * hd, H)),
            (f"{p}.self_attn.k_proj.weight", (nkv * hd, H)),
            (f"{p}.self_attn.v_proj.weight", (nkv * hd, H)),
            (f"{p}.self_attn.o_proj.weight", (H, nh * hd)),
            (f"{p}.post_attention_layernorm.weight", (H,))]


def llama_tensors(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    H, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out += _attention(p, H, hd, nh, nkv) + [
                (f"{p}.mlp.gate_proj.weight", (F, H)),
                (f"{p}.mlp.up_proj.weight", (F, H)),
                (f"{p}.mlp.down_proj.weight", (H, F))]
    return out + [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]


def llama_layers_for(gb: float) -> int:
    cfg = llama_config(1)
    per_layer = sum(2 * math.prod(s) for n, s in llama_tensors(cfg) if ".layers." in n)
    fixed = sum(2 * math.prod(s) for n, s in llama_tensors(cfg) if ".layers." not in n)
    return max(1, round((gb * 1e9 - fixed) / per_layer))


def make_llama(dest: Path, gb: float) -> Path:
    """A dense Llama model of about ``gb`` GB (hidden 2048, GQA 16/4, vocab 32000; layers scale)."""
    dest = Path(dest)
    if (dest / ".complete").exists():
        return dest
    cfg = llama_config(llama_layers_for(gb))
    return _write_shards(dest, llama_tensors(cfg), cfg)


def moe_config(experts: int, layers: int) -> dict:
    return {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 1024,
        "intermediate_size": 512, "num_local_experts": experts, "num_experts_per_tok": 8,
        "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 4,
        "head_dim": 64, "vocab_size": 32000, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": False, "hidden_act": "silu",
        "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    }


def moe_tensors(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    H, V, E, Fe = cfg["hidden_size"], cfg["vocab_size"], cfg["num_local_experts"], cfg["intermediate_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out += _attention(p, H, hd, nh, nkv) + [(f"{p}.block_sparse_moe.gate.weight", (E, H))]
        for e in range(E):
            x = f"{p}.block_sparse_moe.experts.{e}"
            out += [(f"{x}.w1.weight", (Fe, H)), (f"{x}.w2.weight", (H, Fe)), (f"{x}.w3.weight", (Fe, H))]
    return out + [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]


def make_moe(dest: Path, experts: int = 64, layers: int = 4) -> Path:
    """Mixtral-style: ``experts`` per-expert tensors per layer (stacked into one GGUF tensor each).

    (Mixtral rather than Qwen3-MoE: the reference converter reads a generated Llama-2-style
    tokenizer for Llama/Mixtral, but wants a known pre-tokenizer hash for Qwen's BPE.)"""
    dest = Path(dest)
    if (dest / ".complete").exists():
        return dest
    cfg = moe_config(experts, layers)
    return _write_shards(dest, moe_tensors(cfg), cfg)


def model_bytes(dest: Path) -> tuple[int, int]:
    """(total tensor bytes, largest tensor bytes) from the index and headers on disk."""
    from ckptkit.api import load_index
    from ckptkit.sources.local import LocalSource
    with LocalSource(dest) as src:
        idx = load_index(src)
    sizes = [t.nbytes for t in idx.tensors.values()]
    return sum(sizes), max(sizes)
