"""Conversion families: the GGUF architecture, metadata expressions and per-role transforms
of each family, loaded from mappings/convert/*.toml (data, not code)."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UnsupportedError

CONVERT_DIR = Path(__file__).resolve().parents[2] / "mappings" / "convert"


@dataclass(frozen=True)
class Family:
    name: str                                   # file stem: "llama", "qwen3moe", ...
    arch: str                                   # GGUF general.architecture
    architectures: tuple[str, ...]              # HF architecture class names
    model_types: tuple[str, ...]                # config.json model_type values
    metadata: dict[str, str]                    # GGUF key (may hold {arch}, :type) -> expression
    required: tuple[str, ...]
    transforms: dict[str, list[list[Any]]]      # output role -> [[op, arg-expr...], ...]
    f32_roles: frozenset[str]
    renames: dict[str, str] = field(default_factory=dict)   # canonical role -> GGUF role
    options: dict[str, Any] = field(default_factory=dict)   # family switches (see files)
    checks: dict[str, str] = field(default_factory=dict)    # expression that must hold -> why
    splits: tuple[dict, ...] = ()                           # [[split]] tables (see plan._split_out)


def _load(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


@lru_cache(maxsize=None)
def families() -> dict[str, Family]:
    common = _load(CONVERT_DIR / "_common.toml")
    out: dict[str, Family] = {}
    for path in sorted(CONVERT_DIR.glob("*.toml")):
        if path.name.startswith("_"):
            continue
        d = _load(path)
        meta = dict(common.get("metadata", {}))
        meta.update(d.get("metadata", {}))
        required = list(common.get("required", {}).get("keys", [])) + d.get("required", {}).get("keys", [])
        f32 = set(common.get("dtypes", {}).get("f32", [])) | set(d.get("dtypes", {}).get("f32", []))
        out[path.stem] = Family(
            name=path.stem, arch=d["arch"], architectures=tuple(d.get("architectures", [])),
            model_types=tuple(d.get("model_types", [])), metadata=meta, required=tuple(required),
            transforms=d.get("transforms", {}), f32_roles=frozenset(f32),
            renames=d.get("renames", {}), options=d.get("options", {}), checks=d.get("checks", {}),
            splits=tuple(d.get("split", [])))
    return out


def family_for(config: dict | None, override: str | None = None) -> Family:
    """The family that converts a checkpoint with this config.json."""
    fams = families()
    if override:
        if override not in fams:
            raise UnsupportedError(f"unknown family {override!r}; known: {', '.join(sorted(fams))}")
        return fams[override]
    if not config:
        raise UnsupportedError("no config.json: cannot tell the model family (use --family)")
    archs = config.get("architectures") or []
    for fam in fams.values():
        if any(a in fam.architectures for a in archs):
            return fam
    mt = config.get("model_type")
    for fam in fams.values():
        if mt in fam.model_types:
            return fam
    what = ", ".join(archs) or mt or "unknown"
    raise UnsupportedError(f"no GGUF conversion for {what}; supported families: {', '.join(sorted(fams))}")


def effective_config(config: dict | None) -> dict:
    """config.json with a multimodal repo's text_config merged on top, as the text model sees it."""
    cfg = dict(config or {})
    text = cfg.get("text_config")
    if isinstance(text, dict):
        cfg.update(text)
    return cfg
