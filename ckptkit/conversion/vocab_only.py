"""Tokenizer-only conversions, both ways.

GGUF -> HF: a vocabulary-only GGUF (llama.cpp's ggml-vocab-*.gguf: tokenizer keys, no tensors)
becomes a folder holding only the tokenizer files. HF -> GGUF with ``--vocab-only``: the
architecture's metadata and the tokenizer, no tensors, as llama.cpp's converter writes with the
same flag (llama.cpp loads it with ``vocab_only``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UnsupportedError
from ..formats.gguf_write import kv
from ..formats.safetensors_write import atomic_dir
from ..index import TensorIndex
from ..sources.base import Source

if TYPE_CHECKING:
    from .plan import Plan


def is_vocab_only(index: TensorIndex) -> bool:
    return index.format == "gguf" and not index.tensors


def write_tokenizer_folder(index: TensorIndex, out_dir: str | os.PathLike,
                           dry_run: bool = False) -> tuple[Path | None, list[str], list[str]]:
    """(the folder, its files, notes) for a vocabulary-only GGUF; UnsupportedError when its tokenizer
    cannot be rebuilt (then there is nothing to write)."""
    from .tokenizer.to_hf import tokenizer_folder_files
    ctx = next((v for k, v in index.metadata.items() if k.endswith(".context_length") and isinstance(v, int)),
               None)
    files, notes = tokenizer_folder_files(index.metadata, ctx)
    if "tokenizer.json" not in files:
        why = notes[-1].removeprefix("tokenizer not written: ") if notes else "it holds no tokenizer"
        raise UnsupportedError(f"a vocabulary-only GGUF, and its tokenizer cannot be rebuilt: {why}")
    if dry_run:
        return None, sorted(files), notes
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return out, sorted(files), notes


def vocab_only_plan(source: Source, family: str | None, pre: str | None) -> Plan:
    """A GGUF plan with the architecture's metadata and the tokenizer, no tensors. With weights in
    the source, the header is the full conversion's (same metadata, same padded vocabulary); with
    only tokenizer files, config.json (or ``--family``) names the architecture."""
    from ..api import read_json
    from .family import effective_config, family_for
    from .gguf_metadata import metadata_kvs
    from .plan import Plan
    from .tokenizer import has_tokenizer, tokenizer_kvs
    if not has_tokenizer(source):
        raise UnsupportedError("--vocab-only: no tokenizer.json, SentencePiece tokenizer.model or tiktoken.model",
                               source.label)
    files = source.files()
    if any(f.endswith(".safetensors") for f in files):
        from . import build_plan
        plan = build_plan(source, "auto", True, family, True, pre)
        plan.tensors, plan.dropped = [], []
        plan.kvs = [k for k in plan.kvs if k.key != "general.file_type"]
        return plan
    config = read_json(source, "config.json") if "config.json" in files else None
    if config is None and family is None:
        raise UnsupportedError("--vocab-only without config.json or weights: name the architecture with "
                               "--family (a file stem in mappings/convert, e.g. llama)", source.label)
    fam = family_for(config, family)
    cfg = effective_config(config)
    kvs = metadata_kvs(fam, {**cfg, "_mtp_layers": 0}) if config else [kv("general.architecture", fam.arch)]
    kvs.insert(1, kv("general.name", str(cfg.get("_name_or_path") or Path(source.label.rstrip("/")).name)))
    vocab_size = cfg["vocab_size"] if isinstance(cfg.get("vocab_size"), int) else 0
    kvs += tokenizer_kvs(source, config, vocab_size, pre)
    return Plan(fam.name, fam.arch, kvs, [])
