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
    for info in canonicalize(index.tensors).values():
        if info.role:
            names["has_" + _name(info.role)] = True
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
