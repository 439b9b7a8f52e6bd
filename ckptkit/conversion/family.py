"""Conversion families: the GGUF architecture, metadata expressions and per-role transforms
of each family, from mappings/convert/*.toml (data, not code; loaded and checked by
``ckptkit.mapdata``)."""
from __future__ import annotations

from collections.abc import Mapping

from .. import mapdata
from ..errors import UnsupportedError
from ..mapdata import ConvertFamily as Family

__all__ = ["Family", "families", "family_for", "effective_config"]


def families() -> Mapping[str, Family]:
    return mapdata.convert_families()


def family_for(config: dict | None, override: str | None = None, arch: str | None = None) -> Family:
    """The family that converts a checkpoint with this config.json. ``arch`` (GGUF -> HF: the
    file's general.architecture) considers only the families writing that architecture, and
    the only one when there is one (mistral3 writes a MistralForCausalLM as GGUF arch mistral3)."""
    fams = dict(families())
    if override:
        if override not in fams:
            raise UnsupportedError(f"unknown family {override!r}; known: {', '.join(sorted(fams))}")
        return fams[override]
    if arch is not None:
        fams = {k: f for k, f in fams.items() if f.arch == arch}
        if len(fams) == 1:
            return next(iter(fams.values()))
        if not fams:
            raise UnsupportedError(f"no conversion family writes GGUF architecture {arch!r}")
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
