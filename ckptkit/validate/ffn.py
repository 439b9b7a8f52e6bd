"""config.json / GGUF metadata feed-forward claims against the FFN tensors: dense and expert
widths, expert counts, shared experts, and which layers are MoE."""
from __future__ import annotations

from typing import Any

from .. import mapdata
from ..index import span_text
from ..infer import Inference
from ..infer.moe import ffn_width
from .claims import Claims, is_int
from .findings import Finding, finding


def check_ffn(c: Claims, inf: Inference, where: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    f = inf.facts
    n_layers = f["num_layers"].value or 0
    moe = list(f["moe_layers"].value or [])
    dense_w, ew = f["intermediate_size"].value, f["expert_intermediate_size"].value

    def mismatch(code: str, k: str, v: Any, got: Any, what: str, ev: str) -> None:
        out.append(finding(code, f"{k} = {v}, but {what} {got} ({ev})", key=k, **where))

    v, k = c.claim("intermediate_size")
    mlp_key = bool(k and k.endswith("intermediate_size_mlp"))
    if dense_w is not None and k and is_int(v) and v != dense_w:
        mismatch("config.intermediate_size", k, v, dense_w, "the dense feed-forward width is",
                 f["intermediate_size"].evidence[0])
    v, k = c.claim("expert_intermediate_size")
    if k is None and moe and not c.gguf and (dense_w is None or mlp_key):
        v, k = c.raw("intermediate_size")       # Mixtral, gpt-oss, Llama 4: the expert width
    if ew is not None and k and is_int(v) and v != ew:
        mismatch("config.expert_intermediate_size", k, v, ew, "the experts are",
                 f["expert_intermediate_size"].evidence[0] if f["expert_intermediate_size"].evidence
                 else "expert tensors")
    v, k = c.claim("shared_expert_intermediate_size")
    if moe and k and is_int(v) and inf.scan is not None:
        shared_roles = mapdata.roles().groups["shared_experts"].weights()
        sw, sev = ffn_width(inf.scan.layers[moe[0]], shared_roles, f["hidden_size"].value)
        if sw is not None and sev is not None and v != sw:
            mismatch("config.shared_expert_intermediate_size", k, v, sw, "the shared expert is", sev)

    ne = f["num_experts"].value
    v, k = c.claim("num_experts")
    if k and is_int(v):
        if v and not moe:
            out.append(finding("config.num_experts", f"{k} = {v}, but no layer has router or "
                               "expert tensors (a dense checkpoint)", key=k, **where))
        elif ne is not None and v != ne:
            mismatch("config.num_experts", k, v, ne, "the checkpoint has experts",
                     f["num_experts"].evidence[0])
    topk, tk = c.claim("num_experts_per_tok")
    if tk and is_int(topk) and moe and ne and topk > ne:
        out.append(finding("config.num_experts_per_tok", f"{tk} = {topk}, but there are only "
                           f"{ne} experts", key=tk, **where))
    v, k = c.claim("num_shared_experts")
    shared = f["num_shared_experts"]
    if moe and k and is_int(v) and shared.value is not None and v != shared.value:
        mismatch("config.num_shared_experts", k, v, shared.value, "the shared FFN holds",
                 shared.evidence[0])

    # which layers are MoE
    moe_set = set(moe)
    first_k, fk = c.claim("dense_prefix_layers")
    dense_bad = False
    if fk and is_int(first_k) and (moe or (is_int(ne) and ne)):
        got = f["dense_prefix_layers"].value or 0
        if first_k != got:
            dense_bad = True
            mismatch("config.dense_prefix", fk, first_k, got, "the leading dense layers number",
                     f"MoE layers {span_text(moe)}")
    expected: list[tuple[str, set[int]]] = []
    if not c.gguf:
        ml, mk = c.raw("moe_layers")
        if isinstance(ml, list) and all(is_int(x) for x in ml):
            expected.append((f"{mk} = {ml}", set(ml)))
        step, sk = c.raw("interleave_moe_layer_step")
        if is_int(step) and step > 0:
            expected.append((f"{sk} = {step}",
                             {i for i in range(n_layers) if (i + 1) % step == 0}))
        step, sk = c.raw("decoder_sparse_step")
        nexp, _ = c.claim("num_experts")
        if is_int(step) and step > 0 and is_int(nexp) and nexp:
            only, ok = c.raw("mlp_only_layers")
            only = set(only) if isinstance(only, list) else set()
            expected.append((f"{sk} = {step}" + (f", {ok} = {sorted(only)}" if only else ""),
                             {i for i in range(n_layers) if i not in only and (i + 1) % step == 0}))
        if fk and is_int(first_k) and not dense_bad and moe:
            freq, qk = c.raw("moe_layer_freq")
            freq = freq if is_int(freq) and freq > 0 else 1
            expected.append((f"{fk} = {first_k}" + (f", {qk} = {freq}" if qk else ""),
                             {i for i in range(first_k, n_layers) if i % freq == 0}))
    for why, want in expected:
        if want != moe_set:
            key = why.split(" = ")[0]
            out.append(finding("config.moe_layers", f"{why} makes layers {span_text(want)} MoE, but "
                               f"the expert tensors are in layers {span_text(moe_set)}", key=key, **where))
    return out
