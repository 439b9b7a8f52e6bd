"""config.json / GGUF metadata attention claims against the attention tensors: heads, kv heads,
head_dim, and the MLA ranks and head sizes."""
from __future__ import annotations

from typing import Any

from ..index import TensorIndex
from ..infer import Inference
from .claims import Claims, is_int
from .findings import Finding, finding
from .layout import Layout, first


def _widths(layout: Layout, index: TensorIndex) -> dict[str, Any]:
    """Attention widths of the first standard-attention layer: o_proj input (heads*head_dim),
    k_proj output (kv_heads*head_dim) and fused qkv rows."""
    for num in sorted(layout.layers):
        lv = layout.layers[num]
        if lv.kinds()[0] != "attention":
            continue
        out: dict[str, Any] = {"layer": num}
        o = first(lv, "attn_output.weight")
        if o is not None:
            shape = index.tensors[o].shape
            transposed = ".c_proj." in o          # GPT-2 Conv1D stores [in, out]
            if len(shape) == 2:
                out["q"] = (shape[0] if transposed else shape[1], o)
        kk = first(lv, "attn_k.weight")
        if kk is not None:
            out["k"] = (index.tensors[kk].shape[0], kk)
        qkv = first(lv, "attn_qkv.weight")
        if qkv is not None:
            shape = index.tensors[qkv].shape
            out["qkv"] = (shape[1] if ".c_attn." in qkv else shape[0], qkv)
        return out
    return {}


def check_attention(c: Claims, inf: Inference, layout: Layout, index: TensorIndex,
                    where: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    f = inf.facts
    kind = f["attention"].value if "attention" in f else None
    if kind == "mla":
        rank, k = c.claim("kv_lora_rank")
        if k and rank is not None and rank != f["kv_lora_rank"].value:
            out.append(finding("config.kv_lora_rank", f"{k} = {rank}, but the latent is "
                               f"{f['kv_lora_rank'].value} wide ({f['kv_lora_rank'].evidence[0]})",
                               key=k, **where))
        qr, k = c.claim("q_lora_rank")
        got = f["q_lora_rank"].value
        if k and qr != got and not (c.gguf and qr is None):
            out.append(finding("config.q_lora_rank",
                               f"{k} = {qr if qr is not None else 'null'}, but "
                               + (f"q_a_proj compresses queries to {got}" if got else
                                  "the checkpoint has no q_a_proj (queries are not compressed)"),
                               key=k, **where))
        for dim in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            v, k = c.claim(dim)
            got = f[dim].value
            if k and v is not None and got is not None and f[dim].source == "tensors" and v != got:
                out.append(finding("config.mla_dims", f"{k} = {v}, but the projection shapes give "
                                   f"{got} ({'; '.join(f[dim].evidence[:3])})", key=k, **where))
        v, k = c.claim("num_attention_heads")
        got = f["num_attention_heads"].value
        if k and v is not None and got and f["num_attention_heads"].source == "tensors" and v != got:
            out.append(finding("config.num_attention_heads",
                               f"{k} = {v}, but the MLA projections hold {got} heads", key=k, **where))
        return out

    w = _widths(layout, index)
    if not w:
        return out
    heads, hk = c.claim("num_attention_heads")
    kv, kvk = c.claim("num_key_value_heads")
    hd_claim, hdk = c.claim("head_dim")
    hidden = f["hidden_size"].value
    hd_fact, heads_fact = f["head_dim"], f["num_attention_heads"]
    heads = heads if is_int(heads) and heads > 0 else None
    kv = kv if is_int(kv) and kv > 0 else None
    hd_from_heads = False
    if hd_fact.source == "tensors" and hd_fact.value:
        hd = hd_fact.value
        if hdk and is_int(hd_claim) and hd_claim != hd:
            out.append(finding("config.head_dim", f"{hdk} = {hd_claim}, but the tensors give "
                               f"head_dim {hd} ({'; '.join(hd_fact.evidence[-1:])})", key=hdk, **where))
    elif is_int(hd_claim) and hd_claim:
        hd = hd_claim
    elif heads and hidden and hidden % heads == 0:
        hd, hd_from_heads = hidden // heads, True
    else:
        hd = None
        if heads and hidden and hdk is None:
            out.append(finding("config.num_attention_heads",
                               f"{hk} = {heads} does not divide the model width {hidden}, and no "
                               "head_dim is given", key=hk, **where))
            return out
    hd_txt = f"head_dim {hd}" + (f" ({hidden}/{heads})" if hd_from_heads else "")
    heads_bad = False
    if heads and hd:
        q = w.get("q")
        if heads_fact.source == "tensors" and heads_fact.value and heads_fact.value != heads:
            heads_bad = True
            out.append(finding("config.num_attention_heads", f"{hk} = {heads}, but the checkpoint "
                               f"has {heads_fact.value} heads ({heads_fact.evidence[-1]})",
                               key=hk, **where))
        elif q and heads * hd != q[0]:
            heads_bad = True
            out.append(finding("config.num_attention_heads",
                               f"{hk} = {heads} x {hd_txt} = {heads * hd}, but {q[1]} takes "
                               f"{q[0]} inputs ({q[0] / hd:g} heads)", key=hk, tensor=q[1], **where))
    if kv and hd and not (heads_bad and hd_from_heads):
        k, qkv = w.get("k"), w.get("qkv")
        if k and kv * hd != k[0]:
            out.append(finding("config.num_key_value_heads",
                               f"{kvk} = {kv} x {hd_txt} = {kv * hd}, but {k[1]} has {k[0]} rows "
                               f"({k[0] / hd:g} kv heads)", key=kvk, tensor=k[1], **where))
        elif not k and qkv and heads and (heads + 2 * kv) * hd != qkv[0]:
            out.append(finding("config.num_key_value_heads",
                               f"{kvk} = {kv}: ({heads} + 2 x {kv}) x {hd_txt} = "
                               f"{(heads + 2 * kv) * hd}, but the fused {qkv[1]} has {qkv[0]} rows",
                               key=kvk, tensor=qkv[1], **where))
        elif heads and (kv > heads or heads % kv):
            out.append(finding("config.num_key_value_heads",
                               f"{kvk} = {kv} does not divide {hk} = {heads}", key=kvk, **where))
    return out
