"""A Hugging Face folder from the canonical tensor stream of any source: a ckpt folder
(``ckpt -> HF``: canonical names back to the HF names and config.json its manifest keeps), an
HF checkpoint (re-sharded, optionally cast), or a GGUF (``GGUF -> HF``: to_hf.py gives this
writer the GGUF reader's stream).

Sharded safetensors, model.safetensors.index.json, config.json and the files carried along,
streamed into a temporary folder renamed to the output when complete."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnsupportedError
from ..formats.safetensors_write import Entry, atomic_dir, write_sharded
from ..sources.base import Source
from .stream import Stream

DEFAULT_SHARD_SIZE = 5 * 10**9


@dataclass
class HFFolderResult:
    plan: Stream
    out_dir: Path | None
    files: list[str]


def write_hf_folder(stream: Stream, source: Source, out: str | os.PathLike, shard_size: int = DEFAULT_SHARD_SIZE,
                    on_bytes: Callable[[int], None] | None = None) -> list[str]:
    with atomic_dir(out) as tmp:
        entries = [Entry(t.name, t.dtype, t.shape) for t in stream.tensors]
        data = ((t.name, t.chunks(source)) for t in stream.tensors)
        write_sharded(lambda name: open(tmp / name, "wb"), entries, data, shard_size, {"format": "pt"}, on_bytes)
        source.finish()   # from the Hub: every file read passed its hash before the folder is named
        for name, raw in stream.side_files.items():
            (tmp / name).write_bytes(raw)
        (tmp / "config.json").write_text(json.dumps(stream.config, indent=2) + "\n")
        return sorted(p.name for p in tmp.iterdir())


def convert_st_to_hf(spec: str, out: str | os.PathLike, outtype: str = "auto", revision: str | None = None,
                     shard_size: int = DEFAULT_SHARD_SIZE, vocab: bool = True, dry_run: bool = False,
                     on_bytes: Callable[[int], None] | None = None,
                     on_plan: Callable[[Stream], None] | None = None, dequantize: bool = False) -> HFFolderResult:
    """A ckpt folder (or an HF checkpoint) at ``spec`` as a Hugging Face folder at ``out``."""
    from ..api import load_index, open_source
    from .stream import read_stream, reading
    with open_source(spec, revision) as source:
        index = load_index(source)
        if index.format != "safetensors":
            raise UnsupportedError("this writer reads ckpt folders and HF safetensors; a GGUF goes through to_hf")
        stream = read_stream(source, index, outtype, vocab, dequantize)
        if on_plan:
            on_plan(stream)
        if dry_run:
            return HFFolderResult(stream, None, [])
        with reading(source, stream) as src:
            files = write_hf_folder(stream, src, out, shard_size, on_bytes)
        return HFFolderResult(stream, Path(out), files)
