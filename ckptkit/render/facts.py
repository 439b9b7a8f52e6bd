"""Terminal summary of inferred architecture facts (the ``facts``/``family`` of a report)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from ..index import span_text
from .text import human_bytes, human_count


class _Facts:
    def __init__(self, report: dict):
        self.facts = report.get("facts") or {}

    def v(self, key: str) -> Any:
        f = self.facts.get(key)
        return f.get("value") if isinstance(f, dict) else None

    def mark(self, *keys: str) -> str:
        """" [config]" etc. when a shown fact did not come from the tensors."""
        srcs = []
        for k in keys:
            f = self.facts.get(k)
            if not isinstance(f, dict):
                continue
            s = f.get("source")
            if s and s != "tensors" and f.get("value") not in (None, [], False) and s not in srcs:
                srcs.append(s)
        return f" [dim]\\[{', '.join(srcs)}][/dim]" if srcs else ""


def fact_lines(report: dict) -> list[tuple[str, str]]:
    """(label, rich text) lines; facts not from the tensors carry their source in brackets."""
    F = _Facts(report)
    v, mark = F.v, F.mark
    if report.get("tensor_count") == 0:  # a vocabulary-only GGUF: no architecture to tell
        tok = v("tokenizer")
        return [("weights", "none: a vocabulary-only file" if tok else "none")] + \
            ([("tokenizer", tokenizer_text(tok))] if tok else [])
    out: list[tuple[str, str]] = []
    fam = report.get("family")
    if fam:
        name = fam.get("model") or fam.get("title") or fam.get("family")
        txt = f"[bold]{escape(name)}[/bold] ({escape(fam.get('family', ''))}, matched by " \
              f"{escape(fam.get('matched_by', '?'))})"
        if not fam.get("model") and fam.get("closest_model"):
            txt += f"; closest {escape(fam['closest_model'])}, differs in " \
                   f"{', '.join(fam.get('differs_in') or [])}"
        out.append(("family", txt))
    else:
        out.append(("family", "not in the catalogue"))
    layers = f"{v('num_layers')}"
    if v("mtp_layers"):
        layers += f" (+{v('mtp_layers')} MTP)"
    out.append(("layers", layers + mark("num_layers")))
    out.append(("hidden", f"{v('hidden_size')}" + mark("hidden_size")))
    tied = "tied to the embedding" if v("tied_embeddings") else "separate output head"
    out.append(("vocab", f"{v('vocab_size')}, {tied}" + mark("vocab_size", "tied_embeddings")))

    kind = v("attention")
    if kind == "mla":
        attn = (f"MLA, {v('num_attention_heads')} heads, head_dim {v('head_dim')} "
                f"(nope {v('qk_nope_head_dim')} + rope {v('qk_rope_head_dim')}, v {v('v_head_dim')}); "
                f"kv_lora_rank {v('kv_lora_rank')}, q_lora_rank {v('q_lora_rank') or 'none'}")
        attn += mark("num_attention_heads", "kv_lora_rank", "q_lora_rank")
    elif kind:
        attn = (f"{kind.upper()}, {v('num_attention_heads')} q heads / {v('num_key_value_heads')} "
                f"kv heads, head_dim {v('head_dim')}")
        attn += mark("attention", "num_attention_heads", "num_key_value_heads", "head_dim")
    else:
        attn = "unknown"
    extras = [x for x, on in (("bias", v("attention_bias")), ("sinks", v("attention_sinks")))
              if on]
    if extras:
        attn += "; " + ", ".join(extras)
    out.append(("attention", attn))
    lin = v("linear_attention_layers")
    if lin:
        out.append(("linear attn", f"layers {span_text(lin)} ({len(lin)} of {v('num_layers')})"))
    win = v("sliding_window")
    if isinstance(win, dict):
        where = (f"layers {span_text(win['layers'])}" if win.get("layers") is not None
                 else "layers fixed by the architecture")
        out.append(("sliding win", f"{win['window']} tokens on {where}" + mark("sliding_window")))

    if v("num_experts"):
        moe = v("moe_layers") or []
        ffn = (f"MoE, {v('num_experts')} experts x {v('expert_intermediate_size')}, "
               f"top-{v('num_experts_per_tok') or '?'}{mark('num_experts_per_tok')}")
        if v("num_shared_experts"):
            ffn += f", {v('num_shared_experts')} shared"
        if v("dense_prefix_layers"):
            ffn += f"; first {v('dense_prefix_layers')} layer(s) dense ({v('intermediate_size')})"
        ffn += f"; MoE layers {span_text(moe)}"
        if v("router_bias"):
            ffn += "; router bias"
    else:
        ffn = f"dense, {v('intermediate_size')}"
    if v("mlp_bias"):
        ffn += "; bias"
    out.append(("ffn", ffn))

    norm = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}.get(v("norm_kind") or "", "?")
    norm += f", {v('norm_placement') or '?'}-norm"
    if v("qk_norm"):
        norm += ", QK-norm"
    out.append(("norm", norm))
    out.append(("positions", f"{v('positional') or '?'}" + mark("positional")))

    if v("tokenizer"):
        out.append(("tokenizer", tokenizer_text(v("tokenizer"))))

    q = v("quantization")
    if isinstance(q, dict) and q.get("method"):
        if q["method"] == "fp8":
            gran = q.get("granularity", "block")
            scales = f"block scales {q.get('block_size')}" if gran == "block" else f"per-{gran} scales"
            txt = f"FP8 ({q.get('weight_dtype')}), {scales}"
        elif q["method"] == "mxfp4":
            txt = f"MXFP4 ({human_count(q.get('quantized_params') or 0)} params in 4-bit blocks of 32)"
        elif q["method"] == "gguf":
            txt = "GGUF " + ", ".join(q.get("types") or [])
        else:
            txt = f"{q['method']}: {', '.join(q.get('dtypes') or [])}"
        out.append(("quantization", escape(txt)))

    p = v("parameters") or {}
    if p:
        txt = f"{human_count(p['total'])} total, {active_text(p)}"
        txt += f", {human_count(p.get('embedding') or 0)} embedding"
        if p.get("mtp"):
            txt += f", {human_count(p['mtp'])} MTP"
        if p.get("vision"):
            txt += f", {human_count(p['vision'])} vision"
        out.append(("parameters", txt + mark("parameters")))
    kv = v("kv_cache_bytes_per_token")
    if kv:
        out.append(("kv cache", f"{kv:,} bytes/token at 16-bit ({kv / 1024:.1f} KiB)"
                    + mark("kv_cache_bytes_per_token")))
    if isinstance(report.get("memory"), dict):
        out.append(("memory", memory_text(report["memory"])))
    return out


_KIND_LABELS = {"full_attention": "full-attention", "sliding_attention": "sliding-window",
                "chunked_attention": "chunked-attention", "mla": "MLA latent",
                "linear_attention": "linear-attention", "mtp": "MTP"}


def memory_text(mem: dict) -> str:
    """Weights + cache = total, then what each kind of layer holds, then what is not known."""
    kv = mem.get("kv_cache_bytes")
    txt = (f"{human_bytes(mem.get('weights_bytes'))} weights + {human_bytes(kv)} KV cache at "
           f"{mem.get('ctx'):,} tokens ({mem.get('kv_type')}) = "
           f"[bold]{human_bytes(mem.get('total_bytes'))}[/bold]")
    parts = []
    for kind, k in (mem.get("per_kind") or {}).items():
        label = _KIND_LABELS.get(kind, kind)
        if kind == "mtp":
            parts.append(f"{k['layers']} {label} layer{'s' if k['layers'] > 1 else ''}: no cache")
        elif k.get("tokens") is None:
            parts.append(f"{k['layers']} {label} layers x {human_bytes(k['bytes_per_layer'])} "
                         "fixed state (F32)")
        else:
            parts.append(f"{k['layers']} {label} layers x {k['tokens']:,} tokens = "
                         f"{human_bytes(k['bytes'])}")
    if parts:
        txt += "; " + ", ".join(parts)
    notes = mem.get("notes") or []
    if notes:
        txt += " [dim](" + escape("; ".join(notes)) + ")[/dim]"
    return txt


# GGUF's tokenizer.ggml.model values, as the kind of tokenizer they stand for
_GGUF_TOKENIZERS = {"gpt2": "byte-level BPE", "llama": "SentencePiece", "bert": "WordPiece",
                    "t5": "Unigram", "rwkv": "RWKV", "none": "no vocabulary"}


def tokenizer_text(t: dict) -> str:
    """``BPE, pre llama-bpe, 128,256 tokens; bos 128000, eos 128001; chat template``."""
    model = str(t.get("model") or "?")
    if model in _GGUF_TOKENIZERS:
        model += f" ({_GGUF_TOKENIZERS[model]})"
    parts = [model]
    if t.get("pre"):
        parts.append(f"pre {t['pre']}")
    if t.get("vocab_size") is not None:
        parts.append(f"{t['vocab_size']:,} tokens")
    txt = ", ".join(parts)
    ids = [f"{kind} {t[f'{kind}_token_id']}" for kind in ("bos", "eos", "pad", "unk")
           if t.get(f"{kind}_token_id") is not None]
    if ids:
        txt += "; " + ", ".join(ids)
    txt += "; chat template" if t.get("chat_template") else "; no chat template"
    return escape(txt)


def active_text(p: dict) -> str:
    """Active parameters per token both ways model cards count them: with the input embedding
    (Qwen, Mistral, DeepSeek) and without (gpt-oss)."""
    act, emb = p.get("active"), p.get("active_with_embedding")
    if act is None:
        return "active per token unknown"
    if emb is None or emb == act:
        return "all active per token" if act == p["total"] else f"{human_count(act)} active per token"
    return (f"{human_count(emb)} active per token with the input embedding, "
            f"{human_count(act)} without")


def render_facts(report: dict, console: Console) -> None:
    if not report.get("facts"):
        return
    console.print("[bold]architecture[/bold] [dim](\\[config]/\\[derived]: not read from tensor shapes alone)[/dim]")
    for label, text in fact_lines(report):
        console.print(f"  {label:12s} {text}", highlight=False, soft_wrap=True)
