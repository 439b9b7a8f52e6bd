"""Memory at a context length: the stored weights plus what each kind of layer caches.

Pure arithmetic over inferred fact values (``{fact key: value}``), following what llama.cpp
allocates for one sequence:

- full attention (MHA/GQA/MQA): a K and a V row of kv_heads x head_dim per token and layer;
- MLA: one row of kv_lora_rank + qk_rope_head_dim per token and layer. llama.cpp caches the
  compressed latent c_kv with the rope key k_rope in K and reads V as a view of the latent, so
  there is no second row (estimators that expand the latent to every head overcount ~30x);
- sliding-window layers: at most the window, min(ctx, window) tokens; chunked-attention layers
  (Llama 4) likewise at most one chunk;
- linear-attention layers: a fixed conv + recurrent state in F32, whatever the context;
- MTP layers: nothing; they are only run when drafting with them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# bytes per block, elements per block (ggml_row_size)
KV_TYPES: dict[str, tuple[int, int]] = {"f32": (4, 1), "f16": (2, 1), "bf16": (2, 1),
                                        "q8_0": (34, 32)}
STATE_BYTES = 4          # llama.cpp keeps conv and recurrent states in F32


def row_bytes(elements: int, kv_type: str) -> int:
    """Bytes of one cache row of ``elements`` values in ``kv_type`` (whole blocks)."""
    size, block = KV_TYPES[kv_type]
    return -(-elements // block) * size


@dataclass(frozen=True)
class CacheRows:
    """The rows one attention layer caches per token."""
    widths: tuple[int, ...]
    why: str

    @property
    def elements(self) -> int:
        return sum(self.widths)


def cache_rows(values: Mapping[str, Any]) -> CacheRows | None:
    """Rows per token of one attention layer, or None when the head facts are unknown."""
    if values.get("attention") == "mla":
        rank, rope = values.get("kv_lora_rank"), values.get("qk_rope_head_dim")
        if not rank or not rope:
            return None
        return CacheRows((rank + rope,), f"latent: kv_lora_rank {rank} + qk_rope_head_dim {rope}")
    kv, hd = values.get("num_key_value_heads"), values.get("head_dim")
    if not kv or not hd:
        return None
    return CacheRows((kv * hd, kv * hd), f"K and V: 2 x {kv} kv heads x {hd} head_dim")


@dataclass(frozen=True)
class KindMemory:
    """The cache of one kind of layer at the context length."""
    layers: int
    tokens: int | None            # tokens held per layer; None for a fixed state
    bytes_per_layer: int          # at ``tokens`` (or the fixed state)
    arithmetic: str

    @property
    def bytes(self) -> int:
        return self.layers * self.bytes_per_layer

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "tokens": self.tokens,
                "bytes_per_layer": self.bytes_per_layer, "bytes": self.bytes,
                "arithmetic": self.arithmetic}


@dataclass
class Memory:
    weights_bytes: int
    ctx: int
    kv_type: str
    per_kind: dict[str, KindMemory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    complete: bool = True         # False when a fact the cache depends on is unknown

    @property
    def kv_cache_bytes(self) -> int | None:
        return sum(k.bytes for k in self.per_kind.values()) if self.complete else None

    @property
    def total_bytes(self) -> int | None:
        kv = self.kv_cache_bytes
        return None if kv is None else self.weights_bytes + kv

    def to_json(self) -> dict[str, Any]:
        return {"weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
                "total_bytes": self.total_bytes, "ctx": self.ctx, "kv_type": self.kv_type,
                "per_kind": {k: v.to_json() for k, v in self.per_kind.items()},
                "notes": list(self.notes)}


def _bounded(values: Mapping[str, Any], attn: list[int], m: Memory) -> dict[str, tuple[int, list[int]]]:
    """{kind: (most tokens held, its layers)} for sliding-window and chunked layers."""
    out: dict[str, tuple[int, list[int]]] = {}
    for kind, key, size in (("sliding_attention", "sliding_window", "window"),
                            ("chunked_attention", "chunked_attention", "chunk")):
        v = values.get(key)
        if not isinstance(v, dict) or not v.get(size):
            continue
        if v.get("layers") is None:
            m.notes.append(f"{key.replace('_', ' ')} {v[size]} on layers the metadata does "
                           "not list: counted at the full context (an upper bound)")
            continue
        listed, taken = set(v["layers"]), {n for _, ls in out.values() for n in ls}
        layers = [n for n in attn if n in listed and n not in taken]
        if layers:
            out[kind] = (int(v[size]), layers)
    return out


def _attention(values: Mapping[str, Any], attn: list[int], m: Memory) -> None:
    if not attn:
        return
    rows = cache_rows(values)
    if rows is None:
        m.complete = False
        m.notes.append("KV cache unknown: kv heads / head_dim (or MLA ranks) not known")
        return
    per_token = sum(row_bytes(w, m.kv_type) for w in rows.widths)
    if m.kv_type == "q8_0" and any(w % 32 for w in rows.widths):
        m.notes.append(f"rows of {rows.widths} elements are not whole q8_0 blocks of 32; "
                       "llama.cpp refuses such a cache type")
    bounded = _bounded(values, attn, m)
    capped = {n for _, layers in bounded.values() for n in layers}
    full = [n for n in attn if n not in capped]
    mla = values.get("attention") == "mla"
    row = f"{rows.why} = {rows.elements} elements = {per_token} B/token ({m.kv_type})"
    if full:
        m.per_kind["mla" if mla else "full_attention"] = KindMemory(
            len(full), m.ctx, per_token * m.ctx, f"{row} x {m.ctx} tokens")
    for kind, (size, layers) in bounded.items():
        held = min(m.ctx, size)
        what = "window" if kind == "sliding_attention" else "chunk"
        m.per_kind[kind] = KindMemory(len(layers), held, per_token * held,
                                      f"{row} x min(ctx {m.ctx}, {what} {size}) = {held} tokens")


def _linear(values: Mapping[str, Any], linear: list[int], m: Memory) -> None:
    if not linear:
        return
    st = values.get("linear_attention_state")
    if not isinstance(st, dict):
        m.complete = False
        m.notes.append("linear-attention state unknown: conv/state sizes not known")
        return
    conv, rec = int(st["conv"]), int(st["recurrent"])
    m.per_kind["linear_attention"] = KindMemory(
        len(linear), None, (conv + rec) * STATE_BYTES,
        f"fixed state: conv {conv} + recurrent {rec} elements x {STATE_BYTES} B (F32)")


def estimate_memory(values: Mapping[str, Any], weights_bytes: int, ctx: int,
                    kv_type: str = "f16") -> Memory:
    """Weights plus cache for one sequence of ``ctx`` tokens with the cache in ``kv_type``."""
    if kv_type not in KV_TYPES:
        raise ValueError(f"kv type {kv_type!r}; known: {', '.join(KV_TYPES)}")
    if ctx < 1:
        raise ValueError("ctx must be at least 1")
    m = Memory(weights_bytes, ctx, kv_type)
    n = values.get("num_layers")
    if not isinstance(n, int) or n < 1:
        m.complete = False
        m.notes.append("number of layers unknown")
        return m
    linear = [i for i in values.get("linear_attention_layers") or [] if 0 <= i < n]
    # every decoder layer that is not linear attention keeps a KV cache
    attn = [i for i in range(n) if i not in set(linear)]
    _attention(values, attn, m)
    _linear(values, linear, m)
    mtp = values.get("mtp_layers") or 0
    if mtp:
        m.per_kind["mtp"] = KindMemory(mtp, 0, 0, "no cache unless drafting with MTP")
    p = values.get("parameters") or {}
    extra = [label for k, label in (("mtp", "MTP"), ("vision", "vision"))
             if isinstance(p, dict) and p.get(k)]
    if extra:   # they are in the file, so in the weights a loader maps
        m.notes.append(f"weights are the stored tensors, {' and '.join(extra)} included")
    return m


def fact_values(facts: Mapping[str, Any]) -> dict[str, Any]:
    """{key: value} from Fact objects or their JSON form."""
    out = {}
    for k, f in facts.items():
        out[k] = f.get("value") if isinstance(f, dict) else getattr(f, "value", None)
    return out
