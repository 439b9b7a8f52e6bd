"""Coalesced reads for remote sources: a small read fetches a whole window of the file and
later small reads inside it are served from memory. Checkpoints hold thousands of small
tensors (norms, biases, scales) next to each other; without this each would be a round trip."""
from __future__ import annotations

import threading
from collections import OrderedDict

from .base import Source, WrappedSource


class WindowedSource(WrappedSource):
    def __init__(self, inner: Source, window: int = 8 << 20, keep: int = 4):
        super().__init__(inner)
        self.window = window
        self.keep = keep
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: str, offset: int, length: int) -> bytes:
        if length >= self.window // 2:
            return self.inner.read(path, offset, length)
        with self._lock:
            for (p, start), buf in self._cache.items():
                if p == path and start <= offset and offset + length <= start + len(buf):
                    self._cache.move_to_end((p, start))
                    return buf[offset - start: offset - start + length]
        size = self.inner.files().get(path)
        n = self.window if size is None else max(length, min(self.window, size - offset))
        buf = self.inner.read(path, offset, n)
        with self._lock:
            self._cache[(path, offset)] = buf
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return buf[:length]
