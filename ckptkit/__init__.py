"""ckptkit: inspect, validate and convert LLM checkpoints.

The Python API (the CLI is a layer over the same functions)::

    import ckptkit
    ck = ckptkit.open("Qwen/Qwen3-0.6B")        # folder, file or Hub repo; headers only
    ck.facts["num_layers"].value, ck.family, ck.tokenizer, ck.memory(32768).total_bytes
    ck.validate()                               # list[Finding]
    ck.report()                                 # the dict `ckptkit inspect --json` prints
    ckptkit.convert("org/model", "model.gguf", progress=lambda done, total: ...)
    ckptkit.diff("org/model", "model.gguf").failed

Every JSON report carries ``schema_version`` (``SCHEMA_VERSION``), raised when a key changes
meaning or goes away. Names are imported on first use, so ``import ckptkit`` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["open", "convert", "diff", "Checkpoint", "Fact", "Finding", "CkptError", "SCHEMA_VERSION"]

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, convert, diff
    from .checkpoint import open_checkpoint as open  # noqa: A004 - the API's name for it
    from .errors import CkptError
    from .infer.fact import Fact
    from .report import SCHEMA_VERSION
    from .validate.findings import Finding

# public name -> (module, attribute)
_LAZY = {"open": ("checkpoint", "open_checkpoint"), "convert": ("checkpoint", "convert"),
         "diff": ("checkpoint", "diff"), "Checkpoint": ("checkpoint", "Checkpoint"),
         "Fact": ("infer.fact", "Fact"), "Finding": ("validate.findings", "Finding"),
         "CkptError": ("errors", "CkptError"), "SCHEMA_VERSION": ("report", "SCHEMA_VERSION")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ckptkit' has no attribute {name!r}")
    module, attr = _LAZY[name]
    return getattr(import_module(f".{module}", __name__), attr)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
