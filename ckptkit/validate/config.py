"""config.json (or GGUF metadata) against what the tensors show: sizes, head, biases, MTP,
layer types; the attention and feed-forward claims are in ``attention`` and ``ffn``."""
from __future__ import annotations

from typing import Any

from .. import mapdata
from ..index import TensorIndex, span_text
from ..infer import Inference
from .attention import check_attention
from .claims import Claims, is_int
from .ffn import check_ffn
from .findings import Finding, finding
from .layout import Layout


def check_config(index: TensorIndex, inf: Inference, layout: Layout,
                 head_copy: bool | None = None) -> list[Finding]:
    """``head_copy``: whether a stored head tied by config.json equals the embedding (None: not
    compared)."""
    c = Claims(index)
    if not c.available:
        return []
    out: list[Finding] = []
    facts = inf.facts
    where = {"file": c.file}

    for fact, limit in mapdata.validate_table().limits.items():
        v, k = c.get(fact)
        if k is None or v is None:
            continue
        if not is_int(v) or v < 0 or v > limit:
            c.implausible.add(fact)
            out.append(finding("config.implausible",
                               f"{k} = {v!r} is not a believable {fact.replace('_', ' ')} "
                               f"(expected a whole number from 0 to {limit:,})", key=k, **where))

    def val(fact: str) -> Any:
        f = facts.get(fact)
        return None if f is None else f.value

    def ev(fact: str) -> str:
        f = facts.get(fact)
        return f.evidence[0] if f is not None and f.evidence else "the tensors"

    def compare(fact: str, code: str, what: str, got: Any = None, evidence: str | None = None) -> None:
        v, k = c.claim(fact)
        got = val(fact) if got is None else got
        if k is None or v is None or got is None:
            return
        f = facts.get(fact)
        if evidence is None and f is not None and f.source != "tensors":
            return
        if v != got:
            out.append(finding(code, f"{k} = {v}, but the checkpoint has {got} {what} "
                                      f"({evidence or ev(fact)})", key=k, **where))

    # ---- sizes
    mtp_n = val("mtp_layers") or 0
    v, k = c.claim("num_layers")
    if k and v is not None and v != val("num_layers") and not (c.gguf and v == val("num_layers") + mtp_n):
        out.append(finding("config.num_layers",
                           f"{k} = {v}, but the checkpoint has {val('num_layers')} decoder layers "
                           f"({ev('num_layers')})", key=k, **where))
    compare("hidden_size", "config.hidden_size", "as model width")
    compare("vocab_size", "config.vocab_size", "vocabulary rows")

    out += check_attention(c, inf, layout, index, where)
    out += check_ffn(c, inf, where)

    # ---- head, biases, MTP
    tied, k = c.claim("tied_embeddings")
    if k is not None and isinstance(tied, bool) and not c.gguf:
        head = layout.globals.get("output.weight")
        if tied and head and (head_copy is False or not _same_shape(index, layout)):
            out.append(finding("config.tie_word_embeddings",
                               f"{k} = true, but the checkpoint has a separate output head "
                               f"{head[0]} (a loader would silently replace it by the embedding)",
                               key=k, tensor=head[0], **where))
        elif tied and head:
            emb = layout.globals["token_embd.weight"][0]
            how = ("holds the same bytes as" if head_copy else
                   "has the shape of (contents not compared)")
            out.append(finding("config.tied_head_copy",
                               f"{k} = true and {head[0]} is stored too: it {how} {emb}; loaders "
                               f"tie the head to {emb} and ignore the stored copy",
                               key=k, tensor=head[0], **where))
        elif not tied and not head:
            out.append(finding("config.tie_word_embeddings",
                               f"{k} = false, but the checkpoint has no output head (lm_head): a "
                               "loader would initialise it at random", key=k, **where))
    for fact, code in (("attention_bias", "config.attention_bias"), ("mlp_bias", "config.mlp_bias")):
        v, k = c.claim(fact)
        got = val(fact)
        if isinstance(v, bool) and isinstance(got, bool) and v != got and layout.layers:
            # qwen2-style configs leave attention_bias out; only an explicit value is a claim
            out.append(finding(code, f"{k} = {str(v).lower()}, but the checkpoint "
                                     f"{'has' if got else 'has no'} such bias tensors ({ev(fact)})",
                               key=k, **where))
    v, k = c.claim("mtp_layers")
    if k is not None and is_int(v) and v != mtp_n:
        out.append(finding("config.mtp_layers",
                           f"{k} = {v}, but the checkpoint holds {mtp_n} next-token-prediction "
                           f"layer(s)" + (" (stripped from this copy?)" if v > mtp_n else ""),
                           key=k, **where))

    types, tk = c.raw("layer_types") if index.config else (None, None)
    n_layers = val("num_layers")
    if isinstance(types, list) and n_layers:
        if len(types) != n_layers:
            out.append(finding("config.layer_types",
                               f"{tk} lists {len(types)} layers, but the checkpoint has {n_layers}",
                               key=tk, **where))
        else:
            lin = set(val("linear_attention_layers") or [])
            said = {i for i, t in enumerate(types) if t == "linear_attention"}
            if said != lin and (said or lin):
                out.append(finding("config.layer_types",
                                   f"{tk} makes layers {span_text(said)} linear attention, but the "
                                   f"linear-attention tensors are in layers {span_text(lin)}",
                                   key=tk, **where))
    return out


def _same_shape(index: TensorIndex, layout: Layout) -> bool:
    """The stored head has the embedding's shape and dtype: it can be a copy of it."""
    head, emb = layout.globals.get("output.weight"), layout.globals.get("token_embd.weight")
    if not head or not emb:
        return False
    h, e = index.tensors.get(head[0]), index.tensors.get(emb[0])
    return h is not None and e is not None and (h.shape, h.dtype) == (e.shape, e.dtype)
