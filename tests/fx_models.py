"""Fixtures for generated checkpoints (see modelgen.py). All session-scoped and cached.

The returned directories are shared by the whole session: treat them as read-only, and copy
(``modelgen.copy_model``) before modifying one.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import modelgen

__all__ = ["tiny_models_dir", "tiny_model", "header_only", "header_only_dir", "tokenizer_dir", "gguf_of"]


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """Session directory holding every generated tiny model (one subdirectory per variant)."""
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_model(tiny_models_dir):
    """Factory: ``tiny_model(family, dtype="float32", tokenizer=True) -> Path``.

    A tiny seeded random model of a real architecture (see modelgen.TINY_FAMILIES), >= 2 shards
    with index and config, plus tokenizer.json/tokenizer_config.json when ``tokenizer``.
    ``dtype`` is a torch dtype name ("float32", "bfloat16", "float16").
    """
    cache: dict[tuple, Path] = {}

    def get(family: str, dtype: str = "float32", tokenizer: bool = True) -> Path:
        key = (family, dtype, bool(tokenizer))
        if key not in cache:
            import torch

            name = family + ("" if dtype == "float32" else f"-{dtype}") + ("" if tokenizer else "-notok")
            cache[key] = modelgen.make_tiny(family, tiny_models_dir / name,
                                            dtype=getattr(torch, dtype), tokenizer=tokenizer)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def header_only():
    """Factory: ``header_only(spec) -> {relpath: bytes | VirtualFile}`` (see modelgen.HEADER_ONLY_SPECS)."""
    return modelgen.make_header_only


@pytest.fixture(scope="session")
def header_only_dir(tmp_path_factory):
    """Factory: ``header_only_dir(spec) -> Path``: the spec written to disk as sparse files."""
    cache: dict[str, Path] = {}

    def get(spec: str) -> Path:
        if spec not in cache:
            cache[spec] = modelgen.materialize(modelgen.make_header_only(spec),
                                               tmp_path_factory.mktemp(f"ho_{spec}"))
        return cache[spec]

    return get


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """Factory: ``tokenizer_dir(kind="bpe", vocab_size=384) -> Path`` with tokenizer.json and
    tokenizer_config.json (kind "bpe" byte-level, or "spm" Llama-2 style with byte fallback)."""
    cache: dict[tuple, Path] = {}

    def get(kind: str = "bpe", vocab_size: int = modelgen.TINY_VOCAB) -> Path:
        key = (kind, vocab_size)
        if key not in cache:
            cache[key] = modelgen.make_tokenizer(tmp_path_factory.mktemp(f"tok_{kind}"), kind, vocab_size)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def gguf_of(tiny_model, tmp_path_factory):
    """family, outtype -> a GGUF ckptkit wrote from the family's tiny model (cached)."""
    from ckptkit.conversion import convert_to_gguf
    cache = {}
    d = tmp_path_factory.mktemp("gguf_of")

    def get(family, outtype="f32"):
        if (family, outtype) not in cache:
            out = d / f"{family}-{outtype}.gguf"
            convert_to_gguf(str(tiny_model(family)), out, outtype=outtype)
            cache[family, outtype] = out
        return cache[family, outtype]
    return get
