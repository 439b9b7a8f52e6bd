"""Local files and folders."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import FormatError, SourceError, UnsafeInputError
from ..tp_slices import read_joined
from .base import Source
from .files import is_pickle

# Files a checkpoint folder may hold that ckptkit looks at; everything else is ignored. Pickles
# are listed (never opened) so that a pickle-only folder and a pickle policy can see them.
_WANTED_SUFFIXES = (".safetensors", ".gguf", ".json", ".model", ".txt", ".jinja", ".tiktoken",
                    ".py")  # .py: read as text (ast), never run
_MAX_DEPTH = 3


class LocalSource(Source):
    """A single file or a folder on disk. Symlinks may not lead out of the folder."""

    concurrency = 1  # header parsing is CPU-bound; a local disk gains nothing from threads

    def __init__(self, path: str | os.PathLike, only: list[str] | None = None):
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        p = Path(path)
        if not p.exists():
            raise SourceError("no such file or directory", str(path))
        self.label = str(path)
        if p.is_dir():
            self.root = p.resolve()
            self._files = self._scan(self.root)
            if only is not None:
                self._files = {k: v for k, v in self._files.items() if k in set(only)}
        else:
            # A file named on the command line may be a link (an HF cache snapshot links to
            # ../../blobs/<hash>): the user chose it, so follow it.
            self._target = p.resolve()
            self.root = self._target.parent
            self._files = {p.name: self._target.stat().st_size}
        self.single_file = not p.is_dir()

    def _scan(self, root: Path) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            rel = Path(dirpath).relative_to(root)
            depth = len(rel.parts)
            dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".") and depth < _MAX_DEPTH]
            for fn in sorted(filenames):
                if fn.startswith(".") or not (fn.endswith(_WANTED_SUFFIXES) or is_pickle(fn)):
                    continue
                relpath = (rel / fn).as_posix()
                out[relpath] = None  # sizes are taken when a file is actually used
        return out

    def _resolve(self, path: str) -> Path:
        if path not in self._files:
            raise SourceError("no such file in the checkpoint", f"{self.label}/{path}")
        if self.single_file:
            if not self._target.is_file():
                raise SourceError("not a regular file", self.label)
            return self._target
        full = self.root / path
        real = full.resolve()
        if real != full.absolute() and not any(real.is_relative_to(r) for r in self._allowed_roots()):
            raise UnsafeInputError(f"symlink leads out of the checkpoint folder (to {real})", str(full))
        if not real.is_file():
            raise SourceError("not a regular file", str(full))
        return real

    def _allowed_roots(self) -> list[Path]:
        roots = [self.root]
        # A snapshot folder of the HF cache links its files to ../../blobs: that is still inside
        # the cached repo, so it is allowed.
        if self.root.parent.name == "snapshots":
            roots.append(self.root.parent.parent / "blobs")
        return roots

    def files(self) -> dict[str, int | None]:
        return self._files

    def size(self, path: str) -> int:
        n = self._files.get(path)
        if n is None:
            n = self._files[path] = self._resolve(path).stat().st_size
        return n

    def _fd(self, path: str) -> int:
        """An open descriptor per file, checked once: conversion reads thousands of chunks."""
        fd = self._fds.get(path)
        if fd is None:
            full = self._resolve(path)
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(full, os.O_RDONLY)
        return fd

    def read(self, path: str, offset: int, length: int) -> bytes:
        if path in self.tp_joins:  # a tensor joined from tensor-parallel slices (ckptkit/tp_slices.py)
            return read_joined(self, self.tp_joins[path], offset, length)
        fd = self._fd(path)
        data = os.pread(fd, length, offset)
        while 0 < len(data) < length:  # a read may stop short of a large request
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
        if len(data) != length:
            raise FormatError(f"truncated: wanted {length} bytes at offset {offset}, file has "
                              f"{offset + len(data)}", f"{self.label}/{path}" if not self.single_file else self.label)
        return data

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def read_head(self, path: str, length: int) -> tuple[bytes, int | None]:
        full = self._resolve(path)
        size = self.size(path)
        with open(full, "rb") as f:
            return f.read(min(length, size)), size

    def read_file(self, path: str) -> bytes:
        return self.read(path, 0, self.size(path))

    def local_path(self, path: str) -> Path | None:
        return self._resolve(path)
