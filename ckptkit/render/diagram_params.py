"""Parameters by part of the model (embedding, attention, feed-forward, experts, ...), counted
from the tensor index by canonical role, for the breakdown bar of an architecture diagram."""
from __future__ import annotations

from math import prod

from .. import mapdata
from ..index import TensorIndex
from ..infer.names import parse_name
from ..infer.scan import SCALE_PARTS, logical_shape

# (key, legend label) in the order the bar draws them
PARTS: tuple[tuple[str, str], ...] = (
    ("embedding", "embedding"),
    ("attention", "attention"),
    ("dense_ffn", "dense FFN"),
    ("routed_experts", "routed experts"),
    ("shared_experts", "shared experts"),
    ("router", "router"),
    ("norms", "norms"),
    ("head", "output head"),
    ("mtp", "MTP"),
    ("vision", "vision"),
    ("other", "other"),
)
_ROUTER_EXTRA = ("exp_probs_b.",)          # DeepSeek's routing correction bias
_SHARED_EXTRA = ("ffn_gate_inp_shexp.",)   # Qwen's gate on the shared expert


def layer_part(role: str) -> str:
    """The part a per-layer role belongs to."""
    groups = mapdata.roles().groups
    stem = role.split(".", 1)[0]
    if groups["routed_experts"].matches(role):
        return "routed_experts"
    if groups["router"].matches(role) or role.startswith(_ROUTER_EXTRA):
        return "router"
    if groups["shared_experts"].matches(role) or role.startswith(_SHARED_EXTRA):
        return "shared_experts"
    if groups["dense_ffn"].matches(role):
        return "dense_ffn"
    if stem.endswith("norm"):
        return "norms"
    if stem.startswith(("attn_", "ssm_")):
        return "attention"
    return "other"


def global_part(role: str) -> str:
    if role.startswith(("token_embd.", "position_embd.")):
        return "embedding"
    if role.startswith("output_norm."):
        return "norms"
    if role.startswith("output."):
        return "head"
    return "other"


def param_breakdown(index: TensorIndex, tied: bool = False) -> dict[str, int]:
    """Logical parameters per part, counted as the scan counts them (MXFP4 blocks unpacked,
    scale tensors and buffers left out), so the parts sum to its total. With ``tied`` a stored
    output head is the embedding's copy and counts once."""
    named = [(t, parse_name(t.name)) for t in index.tensors.values()]
    # DeepSeek-style MTP modules are numbered layers holding nextn.* tensors, as in the scan
    mtp_nums = {info.layer for _, info in named
                if info.layer is not None and (info.role or "").startswith("nextn.")}
    out = {key: 0 for key, _ in PARTS}
    for t, info in named:
        role = info.role
        if role == "buffer":
            continue
        if role is None or role == "vision":
            out["other" if role is None else "vision"] += t.numel
            continue
        if info.part in SCALE_PARTS:
            continue
        n = prod(logical_shape(t, info.part))
        if info.mtp or info.layer in mtp_nums:
            out["mtp"] += n
        elif info.layer is None:
            part = global_part(role)
            if not (tied and part == "head" and role.startswith("output.weight")):
                out[part] += n
        else:
            out[layer_part(role)] += n
    return out
