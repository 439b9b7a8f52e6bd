"""The one interface every source implements: a set of named files and ranged reads of them.

Sources do I/O on input and nothing else; format parsing lives in ``ckptkit.formats``.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Source(ABC):
    """A checkpoint's files, addressed by path relative to the checkpoint root ("a/b.safetensors")."""

    #: how many reads may run at once (a local disk gains little; the Hub gains a lot)
    concurrency: int = 1
    #: human-readable name used in messages ("org/name@rev", "/path/to/dir")
    label: str = ""
    #: virtual file -> tensor joined from tensor-parallel slices, set by load_index on the
    #: concrete source (ckptkit/tp_slices.py); its ``read`` serves those files
    tp_joins: Mapping[str, Any] = MappingProxyType({})

    @abstractmethod
    def files(self) -> dict[str, int | None]:
        """Every file of the checkpoint and its size in bytes (None when unknown)."""

    @abstractmethod
    def read(self, path: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; FormatError when the file is shorter."""

    def read_head(self, path: str, length: int) -> tuple[bytes, int | None]:
        """Up to ``length`` bytes from the start (fewer if the file is shorter) and the file size.

        Speculative header reads use this: one request whatever the file's real header size.
        """
        size = self.files().get(path)
        n = length if size is None else min(length, size)
        return self.read(path, 0, n), size

    def read_file(self, path: str) -> bytes:
        """A whole (small) file: config.json, an index, a tokenizer."""
        size = self.files().get(path)
        if size is None:
            data, size = self.read_head(path, 1 << 30)
            return data
        return self.read(path, 0, size)

    def local_path(self, path: str) -> Path | None:
        """A path on disk holding the file's bytes, when there is one (local files, HF cache)."""
        return None

    def finish(self) -> None:  # noqa: B027 - an optional hook
        """Before a writer commits its output: wait for reads still in flight and raise what they
        met, including bytes that failed their published hash (a read-ahead); nothing here."""

    def unverified(self, paths: Iterable[str]) -> list[str]:
        """Those of ``paths`` whose source publishes a hash that the bytes read so far have not
        been checked against (a remote file not read whole); empty for local files."""
        return []

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items`` with this source's concurrency, results in order."""
        items = list(items)
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:  # noqa: B027 - an optional hook; pragma: no cover - nothing to release
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WrappedSource(Source):
    """A source that passes everything to another one; subclasses change a part of it."""

    def __init__(self, inner: Source, label: str | None = None):
        self.inner = inner
        self.label = label or inner.label
        self.concurrency = inner.concurrency

    def files(self) -> dict[str, int | None]:
        return self.inner.files()

    def read(self, path: str, offset: int, length: int) -> bytes:
        return self.inner.read(path, offset, length)

    def read_head(self, path: str, length: int) -> tuple[bytes, int | None]:
        return self.inner.read_head(path, length)

    def read_file(self, path: str) -> bytes:
        return self.inner.read_file(path)

    def local_path(self, path: str) -> Path | None:
        return self.inner.local_path(path)

    def finish(self) -> None:
        self.inner.finish()

    def unverified(self, paths: Iterable[str]) -> list[str]:
        return self.inner.unverified(paths)

    def close(self) -> None:
        self.inner.close()


class OnlyFiles(WrappedSource):
    """Some files of another source: one file of a repo, or the parts of one split GGUF."""

    def __init__(self, inner: Source, names: list[str], label: str):
        super().__init__(inner, label)
        self.names = set(names)

    def files(self) -> dict[str, int | None]:
        return {k: v for k, v in self.inner.files().items() if k in self.names}


class Counted(WrappedSource):
    """Another source whose ``read``s are counted: ``fetched`` bytes so far, each read also
    reported to ``on_read`` (called from whichever thread read, so it must be thread-safe)."""

    def __init__(self, inner: Source, on_read: Callable[[int], None] | None = None):
        super().__init__(inner)
        self.fetched = 0
        self._on_read = on_read
        self._lock = threading.Lock()

    def read(self, path: str, offset: int, length: int) -> bytes:
        data = self.inner.read(path, offset, length)
        with self._lock:
            self.fetched += len(data)
        if self._on_read is not None:
            self._on_read(len(data))
        return data
