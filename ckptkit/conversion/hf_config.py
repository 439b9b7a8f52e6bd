"""GGUF metadata -> config.json: the target a GGUF architecture converts to (mappings/hf_configs.toml:
transformers class, config.json keys as expressions over the GGUF metadata) and its config."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import mapdata
from ..errors import FormatError, UnsupportedError
from ..expr import ExprError
from ..index import TensorIndex
from ..infer.names import canonicalize
from ..mapdata import Target


def targets() -> tuple[Target, ...]:
    """The [[target]] tables of mappings/hf_configs.toml, merged over [common] / ``extends``."""
    return mapdata.hf_targets()


def _f32_short(v: float) -> float:
    """A float read from a GGUF FLOAT32 as the shortest decimal giving the same float32."""
    f = np.float32(v)
    return float(str(f)) if float(f) == v and np.isfinite(f) else v


def _name(key: str) -> str:
    return key.replace(".", "_").replace("-", "_")


def metadata_names(index: TensorIndex, arch: str) -> dict[str, Any]:
    """The names [config] expressions see (see mappings/hf_configs.toml)."""
    names: dict[str, Any] = {}
    for k, v in index.metadata.items():
        if isinstance(v, float):
            v = _f32_short(v)
        if k.startswith(arch + "."):
            names[_name(k[len(arch) + 1:])] = v
        elif not k.startswith("tokenizer.ggml.") or not isinstance(v, list):
            names[_name(k)] = v
    emb = index.tensors.get("token_embd.weight")
    names["n_vocab"] = emb.shape[0] if emb is not None else names.get("vocab_size")
    names["tied"] = "output.weight" not in index.tensors
    for gname, info in canonicalize(index.tensors).items():
        if info.role:
            names["has_" + _name(info.role)] = True
        elif not gname.startswith("blk."):     # a GGUF-only global tensor (rope_freqs.weight)
            names["has_" + _name(gname)] = True
    return names


def pick_target(arch: str, names: dict[str, Any]) -> Target:
    cands = [t for t in targets() if t.arch == arch]
    if not cands:
        known = sorted({t.arch for t in targets()})
        raise UnsupportedError(f"no Hugging Face mapping for GGUF architecture {arch!r}; known: {', '.join(known)}")
    for t in cands:
        if t.when is None or t.when.eval(names):
            return t
    raise UnsupportedError(f"GGUF architecture {arch!r}: no mapping applies to this model")


def build_config(target: Target, names: dict[str, Any], torch_dtype: str) -> dict[str, Any]:
    for expr, why in target.checks:
        if not expr.eval(names):
            raise UnsupportedError(f"{target.arch}: {why}")
    cfg: dict[str, Any] = {"architectures": list(target.architectures), "model_type": target.model_type}
    for key, ck in target.config.items():
        try:
            value = ck.expr.eval(names)
        except ExprError as e:
            if not ck.optional:     # only a key the data marks optional ("key?") may be left out
                raise ExprError(f"cannot compute config.json {key}: {e.message}") from None
            value = None
        if value is None and key not in target.keep_null:
            continue
        if isinstance(value, float):
            value = _f32_short(value)
        d = cfg
        *path, last = key.split(".")
        for p in path:
            d = d.setdefault(p, {})
        d[last] = value
    for need in target.required:
        if need not in cfg:
            wanted = target.config.get(need)
            raise FormatError(f"GGUF metadata lacks what config.json {need} needs "
                              f"({wanted.expr if wanted else '?'})")
    cfg["dtype"] = torch_dtype
    return cfg


def flat_config(cfg: dict) -> dict:
    """config.json as the family's transform expressions see it (nested dicts kept too)."""
    out = dict(cfg)
    for v in cfg.values():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out.setdefault(k2, v2)
    return out


def llama3_rope_parameters(freqs: np.ndarray, theta: float, original: int | None,
                           max_positions: int | None) -> dict[str, Any]:
    """Llama 3-style rope scaling read back from GGUF ``rope_freqs`` (per-frequency divisors):
    ``factor`` is the largest divisor; ``original_max_position_embeddings`` the GGUF's
    rope.scaling.original_context_length (else max positions / factor); the low / high frequency
    factors are Llama 3.1's 1 and 4 when they give the same divisors, else fitted to the
    interpolated ones. Only a set that regenerates every divisor is returned."""
    from .transforms import llama3_rope_factors
    freqs = np.asarray(freqs, dtype=np.float32).reshape(-1)
    factor = _f32_short(float(freqs.max()))
    dim = 2 * len(freqs)
    if original is None and max_positions:
        original = int(round(max_positions / factor))
    if not original or factor <= 1.0:
        raise UnsupportedError("rope_freqs: cannot read Llama 3 rope scaling back (no factor above 1 or no "
                               "original context length)")
    cands = [(1.0, 4.0)]
    inv_freq = 1.0 / (float(theta) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    ratio = original * inv_freq / (2 * np.pi)            # original_context / wavelength
    mid = (freqs > 1.0) & (freqs < np.float32(factor))
    if mid.sum() >= 2:
        smooth = (1.0 / freqs[mid].astype(np.float64) - 1.0 / factor) / (1.0 - 1.0 / factor)
        slope, icpt = np.polyfit(ratio[mid], smooth, 1)   # smooth = (ratio - low) / (high - low)
        low = -icpt / slope
        cands.append((float(f"{low:.6g}"), float(f"{low + 1.0 / slope:.6g}")))
    for low, high in cands:
        again = llama3_rope_factors(dim, theta, factor, low, high, original)
        if np.allclose(again, freqs, rtol=2e-6, atol=0):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": int(original)}
    raise UnsupportedError("rope_freqs: these divisors are not Llama 3-style rope scaling")


def config_from_tensors(cfg: dict[str, Any], derived: dict[str, Any], read: Any) -> None:
    """Fill in config.json facts a GGUF keeps as tensors (``derived``: role -> TensorInfo of
    what the family generated): Llama 3 rope scaling from ``rope_freqs.weight``. ``read(t)``
    gives a tensor's values as float32."""
    t = derived.get("rope_freqs.weight")
    if t is None:
        return
    rp = cfg.setdefault("rope_parameters", {})
    theta = rp.get("rope_theta", 10000.0)
    rp.update(llama3_rope_parameters(read(t), theta, rp.get("original_max_position_embeddings"),
                                     cfg.get("max_position_embeddings")))
