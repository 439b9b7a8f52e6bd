"""Layers, widths, vocabulary, tied head, positions, MTP modules."""
from __future__ import annotations

from collections.abc import Iterable

from .. import mapdata
from .fact import Fact, Hints
from .scan import Scan, Seen


def _span(nums: Iterable[int]) -> str:
    vals = sorted(nums)
    return f"{vals[0]}..{vals[-1]}" if vals else "none"


def hidden_size(s: Scan) -> tuple[int | None, str | None]:
    emb = s.globals.get("token_embd.weight")
    if emb is not None and len(emb.shape) == 2:
        return emb.shape[1], emb.name
    for layer in s.layers.values():
        norm = layer.roles.get("attn_norm.weight") or layer.roles.get("ffn_norm.weight")
        if norm is not None:
            return norm.shape[0], norm.name
    return None, None


def ignored_head(s: Scan, h: Hints) -> tuple[Seen, str] | None:
    """(head, config key) when config.json ties the output head to the embedding but the head is
    stored anyway, in the embedding's shape (Qwen3-0.6B's published layout): transformers ties
    the two on load and never reads the stored head. A GGUF has no such key: llama.cpp uses an
    output.weight whenever one is present."""
    out, emb = s.globals.get("output.weight"), s.globals.get("token_embd.weight")
    if out is None or emb is None or out.shape != emb.shape or h.arch is not None:
        return None
    tied, key = h.cfg(*mapdata.config_keys()["tied_embeddings"].config)
    return (out, key) if tied is True and key is not None else None


def infer_embeddings(s: Scan, h: Hints) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    nums = sorted(s.layers)
    facts["num_layers"] = Fact(len(nums), "tensors", [f"decoder layers {_span(nums)}"])
    hid, where = hidden_size(s)
    facts["hidden_size"] = Fact(hid, "tensors", [where] if where else [])

    emb = s.globals.get("token_embd.weight")
    out = s.globals.get("output.weight")
    if emb is not None:
        facts["vocab_size"] = Fact(emb.shape[0], "tensors", [f"{emb.name} {list(emb.shape)}"])
    elif out is not None:
        facts["vocab_size"] = Fact(out.shape[0], "tensors", [f"{out.name} {list(out.shape)}"])
    else:
        v, k = h.int_cfg(*mapdata.config_keys()["vocab_size"].config)
        facts["vocab_size"] = Fact(v, "config", [k] if k else ["no embedding tensor"])
    copy = ignored_head(s, h)
    if copy is not None:
        head, key = copy
        facts["tied_embeddings"] = Fact(True, "config", [
            f"{key} = true",
            f"{head.name} is stored too: a copy loaders ignore (they tie the head to "
            f"{s.globals['token_embd.weight'].name})"])
    elif out is not None:
        facts["tied_embeddings"] = Fact(False, "tensors", [f"separate output head {out.name}"])
    else:
        facts["tied_embeddings"] = Fact(True, "tensors", ["no output head tensor; logits reuse "
                                                          "the token embedding"])

    pos = s.globals.get("position_embd.weight")
    if pos is not None:
        facts["positional"] = Fact("learned", "tensors",
                                   [f"{pos.name} {list(pos.shape)}: {pos.shape[0]} positions"])
    else:
        facts["positional"] = _rotary(h)

    mtp = sorted(s.mtp_layers)
    ev = [f"layer {n}" if n >= 0 else f"mtp.layers.{-1 - n}" for n in mtp]
    for name, seen in s.globals.items():
        if name.startswith("mtp."):
            ev.append(seen.name)
    facts["mtp_layers"] = Fact(len(mtp), "tensors",
                               ev or ["no next-token-prediction (eh_proj/nextn) tensors"])
    return facts


def _rotary(h: Hints) -> Fact:
    """No position table: rotary, partly or not at all; which, only config/GGUF say."""
    ev = ["no position-embedding table"]
    nope, k = h.cfg("no_rope_layers")
    if isinstance(nope, list) and nope:
        # SmolLM3 / Llama 4: 1 = rotary on this layer, 0 = no positional encoding (NoPE)
        off = [i for i, x in enumerate(nope) if not x]
        if off:
            return Fact("rope+nope", "config", ev + [f"{k}: no rotary on layers {off}"])
    step, k = h.int_cfg("no_rope_layer_interval")
    if step:
        return Fact("rope+nope", "config", ev + [f"{k}={step}"])
    for key in ("rope_theta", "rope_scaling", "rope_parameters", "rotary_pct",
                "partial_rotary_factor"):
        _, k = h.cfg(key)
        if k is not None:   # a key comes back exactly when its value is set
            return Fact("rope", "config", ev + [k])
    _, k = h.gguf("rope.freq_base", "rope.dimension_count")
    if k is not None:
        return Fact("rope", "gguf", ev + [k])
    return Fact("rope", "derived", ev + ["assumed rotary: nothing else encodes positions"])
