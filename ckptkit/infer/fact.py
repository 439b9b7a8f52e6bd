"""Facts with their evidence, and the hints (config.json, GGUF metadata) inference may consult."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SOURCES = ("tensors", "config", "gguf", "derived")


@dataclass
class Fact:
    value: Any
    source: str                      # one of SOURCES
    evidence: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source, "evidence": list(self.evidence)}


_MISSING = object()


class Hints:
    """Read-only access to config.json (with ``text_config`` of multimodal repos) and GGUF
    metadata. Each getter returns (value, key) so facts can cite where a number came from."""

    def __init__(self, config: dict | None, metadata: dict | None, fmt: str = ""):
        self.config = config if isinstance(config, dict) else {}
        text = self.config.get("text_config")
        self.text = text if isinstance(text, dict) else {}
        self.meta = metadata if (fmt == "gguf" and isinstance(metadata, dict)) else {}
        arch = self.meta.get("general.architecture")
        self.arch = arch if isinstance(arch, str) else None

    def cfg(self, *keys: str) -> tuple[Any, str | None]:
        for k in keys:
            for where, d in (("text_config.", self.text), ("", self.config)):
                v = d.get(k, _MISSING)
                if v is not _MISSING and v is not None:
                    return v, f"config.json:{where}{k}"
        return None, None

    def gguf(self, *suffixes: str) -> tuple[Any, str | None]:
        if not self.arch:
            return None, None
        for s in suffixes:
            key = f"{self.arch}.{s}"
            v = self.meta.get(key, _MISSING)
            if v is not _MISSING and v is not None:
                return v, key
        return None, None

    def int_cfg(self, *keys: str) -> tuple[int | None, str | None]:
        v, k = self.cfg(*keys)
        return (v, k) if isinstance(v, int) and not isinstance(v, bool) else (None, None)

    def int_gguf(self, *suffixes: str) -> tuple[int | None, str | None]:
        v, k = self.gguf(*suffixes)
        if isinstance(v, list):   # per-layer arrays (e.g. head_count_kv): take the first nonzero
            v = next((x for x in v if isinstance(x, int) and x), None)
        return (v, k) if isinstance(v, int) and not isinstance(v, bool) else (None, None)
