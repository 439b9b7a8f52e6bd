"""Parameter counts: total, active per token (with and without the input embedding), embedding."""
from __future__ import annotations

from math import prod

from .fact import Fact
from .moe import is_moe
from .scan import Scan, Seen


def infer_params(s: Scan, experts: int | None, top_k: int | None, top_k_src: str,
                 ignored_head: Seen | None = None) -> Fact:
    """Total counts logical weights (MXFP4 unpacked, scale tensors and buffers left out), and a
    stored head that loaders replace by the tied embedding (``ignored_head``) once, not twice.

    Model cards count "active" two ways, so both are given:
    - ``active``: what a token computes with, as gpt-oss's card counts (20.91B total, 3.61B
      active): everything but MTP modules, vision towers and the input-embedding lookup (token
      and learned-position tables), with each MoE layer's routed experts at top_k/num_experts.
      A tied table is also the output head, so it is computed with and counts;
    - ``active_with_embedding``: ``active`` plus the lookup tables, as Qwen, Mistral and
      DeepSeek cards count (Qwen3-30B-A3B: 3.3B)."""
    dup = prod(ignored_head.shape) if ignored_head is not None else 0
    total = s.total_params - dup
    pos = s.global_params.get("position_embd.weight", 0)
    emb = s.global_params.get("token_embd.weight", 0) + pos
    mtp = sum(layer.params for layer in s.mtp_layers.values()) + s.mtp_global_params
    value: dict[str, int | None] = {"total": total, "active": None, "active_with_embedding": None,
                                    "embedding": emb}
    ev = [f"{total} logical parameters"]
    if dup and ignored_head is not None:
        ev.append(f"{ignored_head.name} ({dup}) not counted: a stored copy of the tied embedding")
    if mtp:
        value["mtp"] = mtp
        ev.append(f"{mtp} in multi-token-prediction modules (not active)")
    if s.vision_params:
        value["vision"] = s.vision_params
        ev.append(f"{s.vision_params} in vision/multimodal towers (not active for text)")
    if s.buffer_params:
        ev.append(f"{s.buffer_params} in non-parameter buffers, not counted")
    if s.scales:
        ev.append(f"{len(s.scales)} quantization scale tensors, not counted")
    routed = sum(layer.routed_params for layer in s.layers.values() if is_moe(layer))
    tied = dup > 0 or "output.weight" not in s.globals
    lookup = pos + (0 if tied else s.global_params.get("token_embd.weight", 0))
    base = total - mtp - s.vision_params - lookup
    source = "tensors"
    if not routed:
        value["active"] = base
    elif experts and top_k:
        value["active"] = base - routed + routed * top_k // experts
        ev.append(f"routed experts {routed} counted at {top_k}/{experts}")
        source = "derived"
    else:
        ev.append("active unknown: experts per token not recorded")
        source = "derived"
    active = value["active"]
    if active is not None:
        value["active_with_embedding"] = active + lookup
        ev.append(f"active {active} leaves out the input-embedding lookup ({lookup}); "
                  f"active_with_embedding {active + lookup} counts it"
                  + (" (the tied table is the output head too, so active counts it)"
                     if tied and s.global_params.get("token_embd.weight") else ""))
    return Fact(value, source, ev)
