"""What config.json or GGUF metadata claims about a checkpoint, by fact name."""
from __future__ import annotations

from typing import Any

from .. import mapdata
from ..index import TensorIndex
from ..infer.fact import Hints


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Claims:
    """What config.json or GGUF metadata says, by fact name (keys from ``mappings/config_keys.toml``)."""

    def __init__(self, index: TensorIndex):
        self.h = Hints(index.config, index.metadata, index.format)
        self.gguf = index.format == "gguf" and self.h.arch is not None
        self.file = "config.json" if index.config else (index.files[0].name if index.files else None)
        self.available = bool(index.config) or self.gguf
        self.implausible: set[str] = set()   # facts whose claim is already reported as unbelievable

    def get(self, fact: str) -> tuple[Any, str | None]:
        """(value, key) for ``fact``; config.json first, GGUF metadata when there is no config."""
        said = mapdata.config_keys()[fact]
        config_keys, gguf_keys = said.config, said.gguf
        if self.h.config:
            v, k = self.h.cfg(*config_keys)
            if k is not None:
                return v, k
            # an explicit null (q_lora_rank: null) is a claim too
            for key in config_keys:
                for where, d in (("text_config.", self.h.text), ("", self.h.config)):
                    if key in d:
                        return None, f"config.json:{where}{key}"
            return None, None
        if self.gguf and gguf_keys:
            v, k = self.h.gguf(*gguf_keys)
            if isinstance(v, list):          # per-layer arrays: the first nonzero entry
                v = next((x for x in v if x), None)
            return v, k
        return None, None

    def claim(self, fact: str) -> tuple[Any, str | None]:
        """``get``, but nothing for a fact whose value was implausible (reported once, not compared)."""
        if fact in self.implausible:
            return None, None
        return self.get(fact)

    def raw(self, key: str) -> tuple[Any, str | None]:
        v, k = self.h.cfg(key)
        return v, k
