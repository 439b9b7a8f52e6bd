"""Feed-forward and mixture of experts: widths, experts, shared experts, dense prefix."""
from __future__ import annotations

from .. import mapdata
from .fact import Fact, Hints
from .scan import Layer, Scan, Seen


def is_moe(layer: Layer) -> bool:
    groups = mapdata.roles().groups
    return any(r in layer.roles for r in groups["router"].weights()) or \
        layer.has(groups["routed_experts"].prefixes)


def _width(seen: Seen, hidden: int | None, fused: bool) -> int | None:
    """The FFN width of a weight: whichever matrix dim is not the model width."""
    dims = seen.shape[-2:]
    if len(dims) != 2:
        return None
    a, b = dims
    w = b if (hidden is not None and a == hidden and b != hidden) else a
    return w // 2 if fused else w


def ffn_width(layer: Layer, roles: tuple[str, ...], hidden: int | None) -> tuple[int | None, str | None]:
    for role in roles:
        # MXFP4 checkpoints hold the weight as ".blocks" (logical shape already unpacked)
        x = layer.roles.get(role) or layer.roles.get(role.replace(".weight", ".blocks"))
        if x is not None:
            return _width(x, hidden, "gate_up" in role), f"{x.name} {list(x.shape)}"
    return None, None


def infer_moe(s: Scan, h: Hints, hidden: int | None) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    groups = mapdata.roles().groups
    dense, shared = groups["dense_ffn"].weights(), groups["shared_experts"].weights()
    nums = sorted(s.layers)
    moe = [n for n in nums if is_moe(s.layers[n])]

    dense_layer = next((s.layers[n] for n in nums if n not in moe and
                        any(r in s.layers[n].roles for r in dense)), None)
    if dense_layer is not None:
        w, ev = ffn_width(dense_layer, dense, hidden)
        facts["intermediate_size"] = Fact(w, "tensors", [ev] if ev else [])
    else:
        facts["intermediate_size"] = Fact(None, "tensors", ["no dense feed-forward layer"])

    bias = []
    for n in nums:
        bias = [x.name for r, x in s.layers[n].roles.items() if r.startswith("ffn_") and
                r.endswith(".bias") and "norm" not in r and not r.startswith("ffn_gate_inp.")]
        if bias:
            break
    facts["mlp_bias"] = Fact(bool(bias), "tensors", bias[:1] or ["no feed-forward bias tensors"])

    if not moe:
        facts["num_experts"] = Fact(None, "tensors", ["no router or expert tensors"])
        for name in ("num_shared_experts", "expert_intermediate_size", "dense_prefix_layers",
                     "num_experts_per_tok"):
            facts[name] = Fact(None, "tensors", ["dense model"])
        facts["moe_layers"] = Fact([], "tensors", ["dense model"])
        facts["router_bias"] = Fact(False, "tensors", ["dense model"])
        return facts

    first = s.layers[moe[0]]
    router = first.roles.get("ffn_gate_inp.weight")
    stacked = next((x for r, x in first.roles.items() if r.startswith(groups["routed_experts"].prefixes)
                    and len(x.shape) == 3), None)
    if router is not None:
        ne, ev = router.shape[0], f"{router.name} {list(router.shape)}: one row per expert"
    elif stacked is not None:
        ne, ev = stacked.shape[0], f"{stacked.name} {list(stacked.shape)}"
    else:
        ne, ev = len(first.experts), f"experts numbered {min(first.experts)}..{max(first.experts)}"
    facts["num_experts"] = Fact(ne, "tensors", [ev])

    ew, eev = ffn_width(first, groups["routed_experts"].weights(), hidden)
    facts["expert_intermediate_size"] = Fact(ew, "tensors", [eev] if eev else [])

    sw, sev = ffn_width(first, shared, hidden)
    if sw:
        count = sw // ew if ew and sw % ew == 0 else 1
        facts["num_shared_experts"] = Fact(count, "tensors", [
            f"{sev}: always-on shared FFN of width {sw}"
            + (f" = {count} x expert width {ew}" if ew and sw % ew == 0 else "")])
    else:
        facts["num_shared_experts"] = Fact(0, "tensors", ["no shared-expert tensors"])

    prefix = 0
    for n in nums:
        if n in moe:
            break
        prefix += 1
    facts["dense_prefix_layers"] = Fact(prefix, "tensors",
                                        [f"first MoE layer is {moe[0]}"])
    facts["moe_layers"] = Fact(moe, "tensors", [f"{len(moe)} of {len(nums)} layers route to experts"])

    rb = [x.name for r, x in first.roles.items() if r in ("exp_probs_b.bias", "ffn_gate_inp.bias")]
    facts["router_bias"] = Fact(bool(rb), "tensors", rb or ["router has no bias/correction term"])

    said = mapdata.config_keys()["num_experts_per_tok"]
    k, key = h.int_gguf(*said.gguf)
    src = "gguf"
    if not k:
        k, key = h.int_cfg(*said.config)
        src = "config"
    facts["num_experts_per_tok"] = Fact(k, src, [key] if key else
                                        ["not recorded: the tensors do not say how many experts "
                                         "a token uses"])
    return facts
