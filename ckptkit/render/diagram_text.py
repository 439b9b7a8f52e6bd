"""What the boxes of an architecture diagram say: the facts of a model as short lines of text
(attention of its kind and the layers that use it, dense FFN or experts, norms)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ABBR = {"mha": "MHA", "gqa": "GQA", "mqa": "MQA", "mla": "MLA"}
TITLE = {"mha": "Multi-head attention", "gqa": "Grouped-query attention",
         "mqa": "Multi-query attention", "mla": "Multi-head latent attention"}


def num(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else "?"


def count_of(n: int, total: Any, noun: str = "layers") -> str:
    return f"{n} of {total} {noun}" if isinstance(total, int) else f"{n} {noun}"


def norm_name(f: Mapping[str, Any]) -> str:
    return {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}.get(f.get("norm_kind") or "", "Norm")


def attention_tags(f: Mapping[str, Any]) -> str:
    pos = {"rope": "RoPE", "rope+nope": "RoPE + NoPE layers"}.get(f.get("positional") or "", "")
    tags = [t for t, on in (("QK-norm", f.get("qk_norm")), ("sinks", f.get("attention_sinks")),
                            ("bias", f.get("attention_bias")), (pos, pos)) if on]
    return ", ".join(tags)


def attention_text(f: Mapping[str, Any], short: bool) -> tuple[str, ...]:
    """Title and detail lines of the (full) attention of a model."""
    kind = f.get("attention")
    if kind == "mla":
        return (("MLA" if short else TITLE["mla"]),
                f"{num(f.get('num_attention_heads'))} heads, kv rank {num(f.get('kv_lora_rank'))}, "
                f"q rank {num(f.get('q_lora_rank')) if f.get('q_lora_rank') else 'none'}",
                f"head {num(f.get('qk_nope_head_dim'))} + {num(f.get('qk_rope_head_dim'))} rope, "
                f"v {num(f.get('v_head_dim'))}")
    kind = kind if isinstance(kind, str) else ""
    title = (ABBR.get(kind, "Attention") if short else TITLE.get(kind, "Attention"))
    if short:
        detail = (f"{num(f.get('num_attention_heads'))} q / {num(f.get('num_key_value_heads'))} kv, "
                  f"hd {num(f.get('head_dim'))}")
    else:
        detail = (f"{num(f.get('num_attention_heads'))} q heads / "
                  f"{num(f.get('num_key_value_heads'))} kv heads, head_dim {num(f.get('head_dim'))}")
    return title, detail


def attention_boxes(f: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(role, lines) per attention variant the layers use, left to right."""
    n = f.get("num_layers")
    lin = f.get("linear_attention_layers") or []
    win = f.get("sliding_window") if isinstance(f.get("sliding_window"), dict) else None
    tags = attention_tags(f)
    if lin:
        full = attention_text(f, True)
        rest = n - len(lin) if isinstance(n, int) else None
        return [("attention-linear", ("Linear attention", count_of(len(lin), n), "fixed-size state")),
                ("attention", ("Full " + full[0], *full[1:], count_of(rest or 0, n))
                 + ((tags,) if tags else ()))]
    if win is not None:
        wl = win.get("layers")
        if wl is not None and isinstance(n, int) and 0 < len(wl) < n:
            full = attention_text(f, True)
            return [("attention-sliding", (f"Sliding-window {full[0]}", f"window {num(win['window'])}",
                                           count_of(len(wl), n))),
                    ("attention", (f"Global {full[0]}", *full[1:], count_of(n - len(wl), n))
                     + ((tags,) if tags else ()))]
        where = "every layer" if wl is not None else "layers fixed by the arch"
        lines = attention_text(f, False)
        return [("attention-sliding", (f"Sliding-window {lines[0].lower()}", *lines[1:],
                                       f"window {num(win['window'])} on {where}")
                 + ((tags,) if tags else ()))]
    return [("attention", attention_text(f, False) + ((tags,) if tags else ()))]


def ffn_lines(f: Mapping[str, Any]) -> tuple[str, ...]:
    ne = f.get("num_experts")
    if not ne:
        return ("Feed-forward", f"hidden {num(f.get('intermediate_size'))}"
                + (", bias" if f.get("mlp_bias") else ""))
    k, shared = f.get("num_experts_per_tok"), f.get("num_shared_experts")
    lines = ["Mixture of experts",
             f"{num(ne)} experts x {num(f.get('expert_intermediate_size'))}, "
             f"top-{k if k else '?'} active"
             + (f", {shared} shared" if shared else "")]
    n, moe, prefix = f.get("num_layers"), f.get("moe_layers") or [], f.get("dense_prefix_layers") or 0
    dense = f"dense FFN {num(f.get('intermediate_size'))}"
    if isinstance(n, int) and moe and len(moe) < n - prefix:
        lines.append(f"MoE on {count_of(len(moe), n)}; {dense} on the rest")
    elif prefix:
        lines.append(f"first {prefix} layer{'s' if prefix > 1 else ''}: {dense}")
    return tuple(lines)
