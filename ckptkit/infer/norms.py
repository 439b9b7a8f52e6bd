"""Normalisation: RMSNorm or LayerNorm, where the norms sit, per-head q/k norms."""
from __future__ import annotations

from .fact import Fact
from .scan import Scan

NORM_ROLES = ("attn_norm.", "ffn_norm.", "post_attention_norm.", "post_ffw_norm.")


def infer_norms(s: Scan) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    biased = [x.name for r, x in s.globals.items() if r == "output_norm.bias"]
    for layer in s.layers.values():
        biased += [x.name for r, x in layer.roles.items()
                   if r.startswith(NORM_ROLES) and r.endswith(".bias")]
        if biased:
            break
    norms = next(([x.name for r, x in layer.roles.items() if r.startswith(NORM_ROLES)]
                  for layer in s.layers.values()), [])
    if biased:
        facts["norm_kind"] = Fact("layernorm", "tensors", [f"norm with bias: {biased[0]}"])
    elif norms:
        facts["norm_kind"] = Fact("rmsnorm", "tensors", ["norms carry a weight only: "
                                                         + norms[0]])
    else:
        facts["norm_kind"] = Fact(None, "tensors", ["no norm tensors"])

    first = s.layers[min(s.layers)] if s.layers else None
    if first is None:
        facts["norm_placement"] = Fact(None, "tensors", ["no layers"])
    else:
        pre = [x.name for r, x in first.roles.items() if r.startswith(("attn_norm.", "ffn_norm."))]
        post = [x.name for r, x in first.roles.items()
                if r.startswith(("post_attention_norm.", "post_ffw_norm."))]
        kind = "sandwich" if pre and post else "post" if post else "pre" if pre else None
        facts["norm_placement"] = Fact(kind, "tensors", pre + post or ["no block norms"])

    qk = []
    for layer in s.layers.values():
        for role in ("attn_q_norm.weight", "attn_k_norm.weight"):
            if role in layer.roles:
                x = layer.roles[role]
                qk.append(f"{x.name} {list(x.shape)}")
        if qk:
            break
    facts["qk_norm"] = Fact(bool(qk), "tensors", qk or ["no q/k norm tensors"])
    return facts
