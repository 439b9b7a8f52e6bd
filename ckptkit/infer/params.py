"""Parameter counts: total, active per token, embedding."""
from __future__ import annotations

from .fact import Fact
from .moe import is_moe
from .scan import Scan


def infer_params(s: Scan, experts: int | None, top_k: int | None, top_k_src: str) -> Fact:
    """Total counts logical weights (MXFP4 unpacked, scale tensors and buffers left out).
    Active = everything but MTP modules, vision towers and the input-embedding table, with
    each MoE layer's routed experts counted at top_k/num_experts."""
    emb = s.global_params.get("token_embd.weight", 0) + s.global_params.get("position_embd.weight", 0)
    mtp = sum(layer.params for layer in s.mtp_layers.values()) + s.mtp_global_params
    value = {"total": s.total_params, "active": None, "embedding": emb}
    ev = [f"{s.total_params} logical parameters"]
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
    # the input embedding is a lookup (one row per token), not active compute; model cards
    # count it out too (gpt-oss-20b: 20.91B total, 3.61B active)
    base = s.total_params - mtp - s.vision_params - s.global_params.get("token_embd.weight", 0)
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
    return Fact(value, source, ev)
