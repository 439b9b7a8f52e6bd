"""Streaming safetensors writer: sharded files plus model.safetensors.index.json.

Every tensor's name, dtype and shape is known before any data is produced, so each shard's
header is written first and the data streamed after it, chunk by chunk, in header order.
Files go through an open callable (e.g. ``open`` into a folder made with ``atomic_dir``) so the
caller decides when they become visible; the writer closes each file when it is done with it."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import BinaryIO

from ..atomic import _fsync_dir, _umask, write_tensor
from ..dtypes import safetensors_nbytes
from ..errors import CkptError, FormatError
from ..sources.files import SHARD_INDEX
from . import pack_in_order
from .safetensors import build_header


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str                 # safetensors dtype: "BF16", "F16", "F32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = safetensors_nbytes(self.dtype, prod(self.shape))
        if n is None:
            raise FormatError(f"tensor {self.name!r}: {self.dtype} {list(self.shape)} does not end on a byte")
        return n


def plan_shards(entries: list[Entry], shard_size: int) -> list[list[Entry]]:
    """Entries grouped into shards of at most ``shard_size`` data bytes, in order (a tensor
    larger than the limit gets a shard of its own, as transformers does)."""
    if shard_size <= 0:
        raise CkptError("shard size must be positive")
    shards = pack_in_order(entries, shard_size)
    return shards if shards[0] else []


def shard_names(n: int) -> list[str]:
    return [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def write_sharded(open_file: Callable[[str], BinaryIO], entries: list[Entry],
                  data: Iterable[tuple[str, Iterator[bytes]]], shard_size: int,
                  metadata: dict[str, str] | None = None,
                  on_bytes: Callable[[int], None] | None = None) -> dict:
    """Write ``entries`` into shards and the index; ``data`` yields (name, chunks) in entry
    order. ``open_file(relative name)`` returns a writable binary file. Returns the index."""
    shards = plan_shards(entries, shard_size)
    names = shard_names(len(shards))
    weight_map: dict[str, str] = {}
    it = iter(data)
    total = 0
    for fname, shard in zip(names, shards, strict=True):
        header, _ = build_header([(e.name, e.dtype, e.shape) for e in shard], metadata)
        with open_file(fname) as f:
            _write_shard(f, header, shard, it, weight_map, fname, on_bytes)
            total += sum(e.nbytes for e in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open_file(SHARD_INDEX) as f:
        f.write((json.dumps(index, indent=2) + "\n").encode())
    return index


def _write_shard(f: BinaryIO, header: bytes, shard: list[Entry], it: Iterator[tuple[str, Iterator[bytes]]],
                 weight_map: dict[str, str], fname: str, on_bytes: Callable[[int], None] | None) -> None:
    f.write(header)
    for e in shard:
        write_tensor(f, it, e.name, e.nbytes, on_bytes)
        weight_map[e.name] = fname


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A folder of outputs that appears whole or not at all: the block fills a hidden temporary
    folder next to ``path``; on success every file is fsynced and the folder renamed to
    ``path`` (which must not exist, or be empty); on failure it is removed."""
    final = Path(path)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise CkptError("exists and is not an empty folder; refusing to overwrite", str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".ckptkit-{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        for p in tmp.iterdir():
            if p.is_file():
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(tmp)
        if final.is_dir():
            final.rmdir()  # empty (checked above); rename cannot replace a folder on every OS
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
