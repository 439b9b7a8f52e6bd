"""Attention: kind (MHA/GQA/MQA/MLA), heads, head sizes, biases, sinks, linear-attention
layers, sliding windows and the KV-cache size per token."""
from __future__ import annotations

from .. import mapdata
from .fact import Fact, Hints
from .memory import cache_rows
from .scan import Layer, Scan, Seen

ATTN_KEYS = ("num_attention_heads", "num_key_value_heads", "head_dim")


def _shape(seen: Seen) -> str:
    return f"{seen.name} {list(seen.shape)}"


def _layers_with(s: Scan, prefix: str) -> list[int]:
    return [n for n, layer in sorted(s.layers.items()) if layer.has(prefix)]


def infer_attention(s: Scan, h: Hints) -> dict[str, Fact]:
    facts: dict[str, Fact] = {}
    linear = _layers_with(s, "ssm_")
    mla = _layers_with(s, "attn_kv_a_mqa.")
    std = [n for n in sorted(s.layers) if n not in mla and n not in linear and
           (s.layers[n].has("attn_q.") or s.layers[n].has("attn_qkv.") or s.layers[n].has("attn_k."))]
    facts["linear_attention_layers"] = Fact(
        linear, "tensors", [f"linear-attention (ssm_*/linear_attn) tensors in layers {linear}"]
        if linear else ["no linear-attention tensors"])
    facts["linear_attention_state"] = linear_state(s, h, linear)

    bias = []
    for n in std + mla:
        for role in ("attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_qkv.bias",
                     "attn_output.bias"):
            if role in s.layers[n].roles:
                bias.append(s.layers[n].roles[role].name)
        if bias:
            break
    facts["attention_bias"] = Fact(bool(bias), "tensors", bias or ["no attention bias tensors"])

    sink_layer = next((s.layers[n] for n in std + mla if "attn_sinks.weight" in s.layers[n].roles),
                      None)
    if sink_layer is not None:
        sk = sink_layer.roles["attn_sinks.weight"]
        facts["attention_sinks"] = Fact(True, "tensors", [f"{_shape(sk)}: one logit per head"])
    else:
        facts["attention_sinks"] = Fact(False, "tensors", ["no sink tensors"])

    mla_keys = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    if mla:
        facts.update(_mla(s.layers[mla[0]], h))
    elif std:
        facts.update(_standard(s.layers[std[0]], h))
        for k in mla_keys:
            facts[k] = Fact(None, "tensors", ["not multi-head latent attention"])
    else:
        for k in ("attention",) + ATTN_KEYS + mla_keys:
            facts[k] = Fact(None, "tensors", ["no attention tensors"])

    windows = sliding_window(h, len(s.layers))
    facts["sliding_window"] = windows
    facts["chunked_attention"] = chunked_attention(h, len(s.layers))
    facts["kv_cache_bytes_per_token"] = kv_cache(facts, std, mla, windows)
    return facts


def _standard(layer: Layer, h: Hints) -> dict[str, Fact]:
    r = layer.roles
    q, k, o = r.get("attn_q.weight"), r.get("attn_k.weight"), r.get("attn_output.weight")
    qkv = r.get("attn_qkv.weight")
    ev: list[str] = []
    # o_proj's input is heads*head_dim even where q_proj also carries a gate (Qwen3-Next)
    q_width = o.shape[1] if o is not None and len(o.shape) == 2 else (q.shape[0] if q else None)
    k_width = k.shape[0] if k is not None else None
    if o is not None:
        ev.append(f"{_shape(o)}: heads*head_dim = {q_width}")
    if k is not None:
        ev.append(f"{_shape(k)}: kv_heads*head_dim = {k_width}")
    if qkv is not None:
        ev.append(f"{_shape(qkv)}: fused q,k,v")

    head_dim = heads = None
    src = "tensors"
    qn, kn = r.get("attn_q_norm.weight"), r.get("attn_k_norm.weight")
    sk = r.get("attn_sinks.weight")
    if qn is not None and q_width and qn.shape[0] != q_width and q_width % qn.shape[0] == 0:
        head_dim = qn.shape[0]
        ev.append(f"{_shape(qn)}: per-head norm, head_dim = {head_dim}")
    elif kn is not None and k_width and kn.shape[0] != k_width and k_width % kn.shape[0] == 0:
        head_dim = kn.shape[0]
        ev.append(f"{_shape(kn)}: per-head norm, head_dim = {head_dim}")
    if sk is not None and q_width and q_width % sk.shape[0] == 0:
        heads = sk.shape[0]
        head_dim = head_dim or q_width // heads
        ev.append(f"{_shape(sk)}: one sink per head, heads = {heads}")
    if head_dim is None:
        keys = mapdata.config_keys()
        g, gk = h.int_gguf(*keys["head_dim"].gguf)
        gh, ghk = h.int_gguf(*keys["num_attention_heads"].gguf)
        c, ck = h.int_cfg(*keys["head_dim"].config)
        ch, chk = h.int_cfg(*keys["num_attention_heads"].config)
        if g:
            head_dim, src = g, "gguf"
            ev.append(f"{gk} = {g} (shapes cannot split heads from head_dim)")
        elif gh and q_width:
            head_dim, src = q_width // gh, "gguf"
            ev.append(f"{ghk} = {gh} (shapes cannot split heads from head_dim)")
        elif c:
            head_dim, src = c, "config"
            ev.append(f"{ck} = {c} (shapes cannot split heads from head_dim)")
        elif ch and q_width:
            head_dim, src = q_width // ch, "config"
            ev.append(f"{chk} = {ch} (shapes cannot split heads from head_dim)")
        elif ch and qkv is not None:
            hid, _ = h.int_cfg(*keys["hidden_size"].config)
            if hid:
                head_dim, src = hid // ch, "config"
                ev.append(f"{chk} = {ch} (shapes cannot split heads from head_dim)")

    kv_heads = None
    if head_dim:
        if q_width:
            heads = heads or q_width // head_dim
        if k_width:
            kv_heads = k_width // head_dim
        elif qkv is not None:
            if heads is None:
                heads, hk = h.int_cfg(*mapdata.config_keys()["num_attention_heads"].config)
                heads = heads or None
            if heads:
                kv_heads = (qkv.shape[0] // head_dim - heads) // 2

    facts = {
        "num_attention_heads": Fact(heads, src, ev),
        "num_key_value_heads": Fact(kv_heads, src, ev),
        "head_dim": Fact(head_dim, src, ev),
    }
    # the kind follows from widths alone when k is as wide as the attention output
    if q_width and k_width and k_width == q_width:
        kind, ksrc = "mha", "tensors"
    elif qkv is not None and q_width and qkv.shape[0] == 3 * q_width:
        kind, ksrc = "mha", "tensors"       # fused rows = q + k + v, all equally wide
    elif qkv is not None and heads and kv_heads is None:
        kind, ksrc = None, src
    elif kv_heads and heads:
        kind = "mha" if kv_heads == heads else "mqa" if kv_heads == 1 else "gqa"
        ksrc = src
    elif q_width and k_width and k_width < q_width and k_width > 256 and not head_dim:
        # narrower k than q means shared kv heads; wider than any usual head (<= 256) means
        # more than one of them
        kind, ksrc = "gqa", "derived"
        ev = ev + ["k narrower than q and wider than one head of <= 256: grouped kv heads"]
    else:
        kind, ksrc = None, src
    if qkv is not None and kv_heads and heads and kind is None:
        kind = "mha" if kv_heads == heads else "mqa" if kv_heads == 1 else "gqa"
    facts["attention"] = Fact(kind, ksrc, ev)
    return facts


def _mla(layer: Layer, h: Hints) -> dict[str, Fact]:
    r = layer.roles
    kva, kvn = r["attn_kv_a_mqa.weight"], r.get("attn_kv_a_norm.weight")
    qa, qb, q = r.get("attn_q_a.weight"), r.get("attn_q_b.weight"), r.get("attn_q.weight")
    kvb, o = r.get("attn_kv_b.weight"), r.get("attn_output.weight")
    ev = [_shape(x) for x in (qa, qb or q, kva, kvn, kvb, o) if x is not None]
    facts: dict[str, Fact] = {}
    rank = kvn.shape[0] if kvn is not None else None
    rope = kva.shape[0] - rank if rank else None
    qproj = qb or q
    heads = nope = v = None
    if rope and qproj is not None and kvb is not None and o is not None:
        # q = H(nope+rope), kv_b = H(nope+v), o_in = H*v
        q_rows, kvb_rows, o_cols = qproj.shape[0], kvb.shape[0], o.shape[1]
        hr = q_rows - kvb_rows + o_cols
        if hr > 0 and hr % rope == 0:
            heads = hr // rope
            if (kvb_rows - o_cols) % heads == 0 and o_cols % heads == 0:
                nope, v = (kvb_rows - o_cols) // heads, o_cols // heads
    src = "tensors"
    if heads is None:   # GGUF MLA files may split kv_b; take the metadata's word
        src = "gguf" if h.arch else "config"
        keys = mapdata.config_keys()
        heads = (h.int_gguf(*keys["num_attention_heads"].gguf)[0] if h.arch else
                 h.int_cfg(*keys["num_attention_heads"].config)[0])
        rope = rope or h.int_cfg(*keys["qk_rope_head_dim"].config)[0] or h.int_gguf(*keys["qk_rope_head_dim"].gguf)[0]
        nope = h.int_cfg(*keys["qk_nope_head_dim"].config)[0]
        v = h.int_cfg(*keys["v_head_dim"].config)[0] or h.int_gguf(*keys["v_head_dim"].gguf)[0]
        ev.append("heads and head sizes from metadata: kv_b_proj absent or inconsistent")
    facts["attention"] = Fact("mla", "tensors", [_shape(kva) + ": compressed kv (latent + rope)"])
    facts["kv_lora_rank"] = Fact(rank, "tensors", [_shape(kvn)] if kvn else [])
    facts["q_lora_rank"] = Fact(qa.shape[0] if qa is not None else None, "tensors",
                                [_shape(qa)] if qa is not None else ["queries not compressed"])
    facts["qk_rope_head_dim"] = Fact(rope, "tensors" if rank else src,
                                     [f"{kva.shape[0]} - kv_lora_rank {rank}"])
    facts["qk_nope_head_dim"] = Fact(nope, src, ev)
    facts["v_head_dim"] = Fact(v, src, ev)
    facts["num_attention_heads"] = Fact(heads, src, ev)
    facts["num_key_value_heads"] = Fact(heads, src, ev + ["MLA expands the latent to every head"])
    facts["head_dim"] = Fact((nope or 0) + (rope or 0) or None, src, ev + ["qk head = nope + rope"])
    return facts


def sliding_window(h: Hints, num_layers: int) -> Fact:
    """Window size and the layers that use it: only config.json or GGUF metadata say."""
    use, uk = h.cfg("use_sliding_window")
    keys = mapdata.config_keys()["sliding_window"]
    win, wk = h.int_cfg(*keys.config)
    if use is False:
        return Fact(None, "config", [f"{uk} = false"])
    if win:
        types, tk = h.cfg("layer_types")
        ev = [f"{wk} = {win}"]
        if isinstance(types, list) and types:
            layers = [i for i, t in enumerate(types) if isinstance(t, str) and "sliding" in t]
            ev.append(f"{tk}: {len(layers)} sliding of {len(types)}")
        else:
            pat, pk = h.int_cfg("sliding_window_pattern")
            if pat:   # Gemma 3: every pat-th layer is global
                layers = [i for i in range(num_layers) if (i + 1) % pat]
                ev.append(f"{pk} = {pat}")
            else:
                layers = list(range(num_layers))
                ev.append("no layer_types: window applies to every layer")
        if not layers:
            return Fact(None, "config", ev + ["no layer uses the window"])
        return Fact({"window": win, "layers": layers}, "config", ev)
    g, gk = h.int_gguf(*keys.gguf)
    if g:
        listed, why = _gguf_window_layers(h, num_layers)
        return Fact({"window": g, "layers": listed}, "gguf", [f"{gk} = {g}", why])
    return Fact(None, "config" if h.config else "tensors", ["no sliding window configured"])


# llama.cpp's built-in patterns for archs whose GGUF carries none: every n-th layer is global
# (llama4's "window" is its attention chunk)
ARCH_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2, "cohere2": 4, "llama4": 4}


def chunked_attention(h: Hints, num_layers: int) -> Fact:
    """Llama 4: the rope layers attend within chunks of attention_chunk_size tokens, so they
    never need more than one chunk; the NoPE layers (every 4th by default) see everything."""
    chunk, ck = h.int_cfg("attention_chunk_size")
    if not chunk:
        return Fact(None, "config" if h.config else "tensors", ["no attention_chunk_size"])
    types, tk = h.cfg("layer_types")
    rope, rk = h.cfg("no_rope_layers")
    if isinstance(types, list) and types:
        layers = [i for i, t in enumerate(types) if t == "chunked_attention"]
        why = f"{tk}: {len(layers)} chunked of {len(types)}"
    elif isinstance(rope, list) and rope:
        layers = [i for i, r in enumerate(rope) if r]
        why = f"{rk}: the {len(layers)} rope layers are chunked"
    else:
        layers = [i for i in range(num_layers) if (i + 1) % 4]
        why = "no layer_types: every 4th layer global (the Llama 4 default)"
    if not layers:
        return Fact(None, "config", [f"{ck} = {chunk}", why, "no layer is chunked"])
    return Fact({"chunk": chunk, "layers": layers}, "config", [f"{ck} = {chunk}", why])


def _gguf_window_layers(h: Hints, num_layers: int) -> tuple[list[int] | None, str]:
    """The sliding layers of a GGUF: its per-layer pattern, or the arch's fixed one."""
    pat, pk = h.gguf("attention.sliding_window_pattern")
    if isinstance(pat, list):
        return [i for i, on in enumerate(pat) if on], f"{pk}: per-layer flags"
    n, src = (pat, pk) if isinstance(pat, int) and not isinstance(pat, bool) else \
        (ARCH_SWA_PATTERN.get(h.arch or ""), f"llama.cpp's fixed pattern for {h.arch}")
    if not n:
        return None, "which layers: fixed by the arch, not known here"
    # llama.cpp set_swa_pattern: layer i slides unless i % n == n - 1
    return [i for i in range(num_layers) if i % n < n - 1], f"{src}: every {n}th layer global"


def linear_state(s: Scan, h: Hints, linear: list[int]) -> Fact:
    """Elements of the fixed state one linear-attention (Gated DeltaNet) layer keeps per
    sequence: the causal conv's last kernel-1 inputs over its channels, and one key x value
    matrix per value head (llama.cpp's n_embd_r and n_embd_s)."""
    if not linear:
        return Fact(None, "tensors", ["no linear-attention layers"])
    r = s.layers[linear[0]].roles
    conv, out = r.get("ssm_conv1d.weight"), r.get("ssm_out.weight")
    if conv is None or out is None or len(conv.shape) < 2 or len(out.shape) != 2:
        return Fact(None, "tensors", ["no conv1d and out_proj tensors to size the state"])
    channels, kernel, v_width = conv.shape[0], conv.shape[-1], out.shape[1]
    ev = [f"{_shape(conv)}: {channels} conv channels, kernel {kernel}",
          f"{_shape(out)}: value heads x value head_dim = {v_width}"]
    dk, dk_key = h.int_cfg("linear_key_head_dim")
    src = "config"
    if not dk:
        dk, dk_key = h.int_gguf("ssm.state_size")
        src = "gguf"
    if not dk:   # the shapes give key heads x key head_dim only
        return Fact(None, "tensors", ev + ["key head_dim unknown (no linear_key_head_dim or "
                                           "ssm.state_size)"])
    conv_el, rec = (kernel - 1) * channels, dk * v_width
    return Fact({"conv": conv_el, "recurrent": rec}, src, ev + [
        f"{dk_key} = {dk}", f"conv state: (kernel {kernel} - 1) x {channels} = {conv_el}",
        f"recurrent state: key head_dim {dk} x {v_width} = {rec}"])


def kv_cache(facts: dict[str, Fact], std: list[int], mla: list[int], windows: Fact) -> Fact:
    """Bytes of KV cache each token adds at 16 bits, over the layers whose cache grows with the
    context. Windowed layers stop growing at the window; linear-attention layers keep none."""
    win = windows.value if isinstance(windows.value, dict) else None
    rows = cache_rows({k: f.value for k, f in facts.items()})
    if mla:
        if rows is None:
            return Fact(None, "derived", ["MLA dimensions unknown"])
        per = rows.elements * 2
        return Fact(per * len(mla), "derived",
                    [f"MLA: ({rows.why}) x 2 bytes x {len(mla)} layers"])
    if not std or rows is None:
        return Fact(None, "derived", ["KV heads or head_dim unknown"])
    kv, hd = facts["num_key_value_heads"].value, facts["head_dim"].value
    per = rows.elements * 2
    layers = win.get("layers") if win else None
    windowed = [n for n in std if n in set(layers)] if layers is not None else []
    ev = [f"2 (k,v) x {kv} kv heads x {hd} head_dim x 2 bytes = {per} per layer",
          f"{len(std)} attention layers"]
    if win and windowed:
        ev.append(f"{len(windowed)} of them sliding-window layers: their cache stops growing at "
                  f"{win['window']} tokens ({per * len(windowed) * win['window']} bytes); beyond "
                  f"that {per * (len(std) - len(windowed))} bytes per token")
    elif win:
        ev.append(f"sliding window {win['window']} on layers the metadata does not list")
    return Fact(per * len(std), "derived", ev)
