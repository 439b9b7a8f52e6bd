"""Side-by-side architecture tables: `ckptkit compare` (one column per checkpoint or catalogue
model) and `ckptkit catalogue` (one row per known model), as rich tables or Markdown."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..catalogue import families, models
from ..mapdata import KnownModel
from .text import human_count

# (row label, column key) in the order of a published architecture comparison
ROWS: list[tuple[str, str]] = [
    ("Family", "family"),
    ("Layers", "layers"),
    ("Hidden size", "hidden"),
    ("Vocabulary", "vocab"),
    ("Attention", "attention"),
    ("Q / KV heads", "heads"),
    ("Head dim", "head_dim"),
    ("MLA ranks (kv / q)", "mla"),
    ("Sliding window", "window"),
    ("Norm", "norm"),
    ("Positions", "positional"),
    ("FFN / MoE", "ffn"),
    ("Experts active / total", "experts"),
    ("Context", "context"),
    ("Params total", "params_total"),
    ("Params active", "params_active"),
    ("Params active + embedding", "params_active_with_embedding"),
    ("KV cache / token (16-bit)", "kv_cache"),
]
CATALOGUE_COLUMNS = ["name", "family", "layers", "hidden", "attention", "heads", "head_dim",
                     "experts", "ffn", "context", "params_total", "params_active",
                     "params_active_with_embedding", "kv_cache"]
CATALOGUE_HEADERS = {"name": "Model", **{k: label for label, k in ROWS}}


def kib(n: int | None) -> str:
    if not n:
        return ""
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _billions(b: float | None) -> str:
    if b is None:
        return ""
    if b >= 1000:
        return f"{b / 1000:g}T"
    return f"{b * 1000:g}M" if b < 1 else f"{b:g}B"


def _heads(q: Any, kv: Any) -> str:
    if q is None and kv is None:
        return ""
    return f"{q if q is not None else '?'} / {kv if kv is not None else '?'}"


def _experts(k: Any, n: Any, shared: Any) -> str:
    if not n:
        return ""
    extra = f"+{shared}" if shared else ""
    return f"{k if k is not None else '?'}{extra} / {n}"


def _ffn(dense: Any, n: Any, width: Any, shared: Any, prefix: Any, moe_layers: Any = None,
         layers: Any = None) -> str:
    if not n:
        return f"dense {dense:,}" if isinstance(dense, int) else ""
    txt = f"MoE {n} x {width:,}" if isinstance(width, int) else f"MoE {n} experts"
    if shared:
        txt += f" + {shared} shared"
    if prefix:
        txt += f"; first {prefix} dense"
    if isinstance(moe_layers, list) and layers and len(moe_layers) < layers - (prefix or 0):
        txt += f"; MoE in {len(moe_layers)} of {layers} layers"
    return txt


def column_from_report(label: str, report: dict, config: dict | None = None,
                       gguf_metadata: dict | None = None) -> dict[str, str]:
    """A column from an inspect-style report ({"family", "facts"}) and config.json (or, for a
    GGUF file, its metadata)."""
    facts = report.get("facts", {})

    def v(key: str) -> Any:
        f = facts.get(key)
        return f.get("value") if isinstance(f, dict) else None

    fam = report.get("family") or {}
    attn = (v("attention") or "").upper()
    if v("linear_attention_layers"):
        attn += f" + {len(v('linear_attention_layers'))} linear-attn layers"
    if v("attention_sinks"):
        attn += ", sinks"
    norm = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}.get(v("norm_kind") or "", "")
    if v("norm_placement"):
        norm += f", {v('norm_placement')}"
    if v("qk_norm"):
        norm += ", QK-norm"
    win = v("sliding_window")
    params = v("parameters") or {}
    cfg = config or {}
    tc = cfg.get("text_config")
    text = tc if isinstance(tc, dict) else {}
    ctx = next((d[k] for d in (text, cfg) for k in ("max_position_embeddings", "n_positions",
                                                     "seq_length") if isinstance(d.get(k), int)), None)
    if ctx is None and gguf_metadata:
        ctx = gguf_metadata.get(f"{gguf_metadata.get('general.architecture')}.context_length")
    mla = f"{v('kv_lora_rank')} / {v('q_lora_rank') or '-'}" if v("attention") == "mla" else ""
    return {
        "name": label,
        "family": fam.get("model") or fam.get("title") or "",
        "layers": _layers(v("num_layers"), v("mtp_layers")),
        "hidden": _int(v("hidden_size")),
        "vocab": _int(v("vocab_size")),
        "attention": attn,
        "heads": _heads(v("num_attention_heads"), v("num_key_value_heads")),
        "head_dim": _int(v("head_dim")),
        "mla": mla,
        "window": (f"{win['window']} on {len(win['layers'])} layers" if isinstance(win, dict)
                   and win.get("layers") is not None else
                   str(win["window"]) if isinstance(win, dict) else ""),
        "norm": norm,
        "positional": v("positional") or "",
        "ffn": _ffn(v("intermediate_size"), v("num_experts"), v("expert_intermediate_size"),
                    v("num_shared_experts"), v("dense_prefix_layers"), v("moe_layers"),
                    v("num_layers")),
        "experts": _experts(v("num_experts_per_tok"), v("num_experts"), v("num_shared_experts")),
        "context": _int(ctx),
        "params_total": human_count(params["total"]) if params.get("total") else "",
        "params_active": human_count(params["active"]) if params.get("active") else "",
        "params_active_with_embedding": (human_count(params["active_with_embedding"])
                                         if params.get("active_with_embedding") else ""),
        "kv_cache": kib(v("kv_cache_bytes_per_token")),
    }


def _int(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else ""


def _layers(n: Any, mtp: Any) -> str:
    return _int(n) + (f" (+{mtp} MTP)" if mtp else "")


def model_kv_cache(m: KnownModel) -> int | None:
    """Bytes per token at 16 bits from a catalogue row (same rule as inference)."""
    fam = families().get(m.family)
    if (fam is not None and "linear_attention_layers" in fam.signature) or not m.num_layers:
        return None              # the row does not say how many layers keep a cache
    if m.attention == "mla":
        if m.kv_lora_rank and m.qk_rope_head_dim:
            return (m.kv_lora_rank + m.qk_rope_head_dim) * 2 * m.num_layers
        return None
    if m.num_key_value_heads and m.head_dim:
        return 2 * m.num_key_value_heads * m.head_dim * 2 * m.num_layers
    return None


def column_from_model(m: KnownModel) -> dict[str, str]:
    """A column from a catalogue row (published facts; blank where the row says nothing)."""
    fam = families().get(m.family)
    mla = f"{m.kv_lora_rank} / {m.q_lora_rank or '-'}" if m.attention == "mla" else ""
    return {
        "name": m.name + ("" if m.weights else " (no weights)"),
        "family": fam.title if fam is not None else m.family,
        "layers": _layers(m.num_layers, m.mtp_layers),
        "hidden": _int(m.hidden_size),
        "vocab": _int(m.vocab_size),
        "attention": (m.attention or "").upper(),
        "heads": _heads(m.num_attention_heads, m.num_key_value_heads),
        "head_dim": _int(m.head_dim or (m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0) or None),
        "mla": mla,
        "window": _int(m.sliding_window),
        "norm": "",
        "positional": "",
        "ffn": _ffn(m.intermediate_size, m.num_experts, m.expert_intermediate_size,
                    m.num_shared_experts, m.dense_prefix_layers),
        "experts": _experts(m.num_experts_per_tok, m.num_experts, m.num_shared_experts),
        "context": _int(m.context_length),
        "params_total": _billions(m.params_total),
        **_card_active(m),
        "kv_cache": kib(model_kv_cache(m)),
    }


def _card_active(m: KnownModel) -> dict[str, str]:
    """A card's active count goes in the row of the way that card counts: with the input
    embedding unless the row says otherwise (gpt-oss). A dense model is all active."""
    active = _billions(m.params_active if m.params_active is not None else m.params_total)
    with_emb = m.params_active_counts_embedding is not False
    return {"params_active": "" if with_emb else active,
            "params_active_with_embedding": active if with_emb else ""}


def find_model(name: str) -> KnownModel | None:
    """A catalogue row by its name (case-insensitive)."""
    low = name.strip().lower()
    return next((m for m in models() if m.name.lower() == low), None)


def compare_table(columns: list[dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per ROWS entry that any column fills."""
    headers = [""] + [c["name"] for c in columns]
    rows = [[label] + [c.get(key, "") for c in columns] for label, key in ROWS
            if any(c.get(key) for c in columns)]
    return headers, rows


def catalogue_table(family: str | None = None) -> tuple[list[str], list[list[str]]]:
    cols = [column_from_model(m) for m in models() if family in (None, m.family)]
    keep = [k for k in CATALOGUE_COLUMNS if any(c.get(k) for c in cols)]
    return [CATALOGUE_HEADERS[k] for k in keep], [[c.get(k, "") for k in keep] for c in cols]


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def render(headers: list[str], rows: list[list[str]], console: Console,
           as_markdown: bool = False, first_bold: bool = True) -> None:
    if as_markdown:
        console.print(markdown(headers, rows), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(show_header=True, header_style="bold", show_lines=False)
    for i, h in enumerate(headers):
        table.add_column(h, style="bold" if i == 0 and first_bold else None, overflow="fold")
    for r in rows:
        table.add_row(*r)
    console.print(table)

