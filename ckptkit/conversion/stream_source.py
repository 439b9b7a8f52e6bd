"""A canonical tensor stream seen as an HF safetensors checkpoint: one virtual
``model.safetensors`` (its header built from the stream, its data computed tensor by tensor),
``config.json`` and the stream's side files (the rebuilt tokenizer). Any reader's stream can so
feed any writer that reads HF checkpoints: GGUF -> GGUF goes GGUF reader -> stream -> this ->
the HF -> GGUF planner, with no file in between.

Reads are served from the tensors they fall in. A tensor read front to back (as the planner
reads most) is served from its chunk iterator as the chunks come, with a few recent chunks kept
for reads a little out of order: memory stays within a few chunks. A read before that window
(a tensor split into parts read one after another, such as MLA's kv_b) computes the tensor whole
and keeps it until a read needs a tensor not held (``keep`` tensors at most)."""
from __future__ import annotations

import bisect
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator

from ..errors import FormatError
from ..formats.safetensors import build_header
from ..sources.base import Source
from .stream import Stream

WEIGHTS = "model.safetensors"
WINDOW = 4   # chunks of a tensor kept behind the furthest read, for reads slightly out of order


class _Cursor:
    """A tensor's chunk iterator with the last chunks it gave: (start, bytes) in order."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.window: deque[tuple[int, bytes]] = deque()
        self.end = 0   # bytes the iterator has given

    def serve(self, a: int, b: int) -> bytes | None:
        """Bytes [a, b) of the tensor, or None when they begin before the window."""
        if a < (self.window[0][0] if self.window else self.end):
            return None
        while self.end < b:
            chunk = next(self.chunks, None)
            if chunk is None:
                return None
            self.window.append((self.end, bytes(chunk)))
            self.end += len(chunk)
            while len(self.window) > WINDOW and self.window[0][0] + len(self.window[0][1]) <= a:
                self.window.popleft()
        out = bytearray()
        for start, data in self.window:
            lo, hi = max(a, start), min(b, start + len(data))
            if lo < hi:
                out += data[lo - start:hi - start]
        return bytes(out)


class StreamSource(Source):
    """``stream``'s tensors, computed from ``inner`` (the stream's own source)."""

    def __init__(self, stream: Stream, inner: Source, label: str | None = None, keep: int = 2):
        self.stream, self.inner, self.keep = stream, inner, keep
        self.label = label or inner.label
        header, offsets = build_header([(t.name, t.dtype, t.shape) for t in stream.tensors], {"format": "pt"})
        self._header = header
        self._starts = [len(header) + o for o in offsets]
        self._sizes = [self._entry_nbytes(i) for i in range(len(stream.tensors))]
        size = len(header) + (offsets[-1] + self._sizes[-1] if offsets else 0)
        self._small = {"config.json": (json.dumps(stream.config, indent=2) + "\n").encode(),
                       **{n: b for n, b in stream.side_files.items() if n not in ("config.json", WEIGHTS)}}
        self._files: dict[str, int | None] = {WEIGHTS: size, **{n: len(b) for n, b in self._small.items()}}
        self._held: OrderedDict[int, bytearray] = OrderedDict()
        self._cursors: OrderedDict[int, _Cursor] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0   # tensors computed (a tensor computed twice counts twice)

    def _entry_nbytes(self, i: int) -> int:
        from ..formats.safetensors_write import Entry
        t = self.stream.tensors[i]
        return Entry(t.name, t.dtype, t.shape).nbytes

    def files(self) -> dict[str, int | None]:
        return dict(self._files)

    def local_path(self, path: str):  # noqa: ANN201 - nothing of it is on disk
        return None

    def read_head(self, path: str, length: int) -> tuple[bytes, int | None]:
        # a header read never computes tensors: it gets the header alone, which is all it needs
        if path == WEIGHTS:
            return self._header[:max(0, length)], self._files[WEIGHTS]
        return super().read_head(path, length)

    def read(self, path: str, offset: int, length: int) -> bytes:
        if path in self._small:
            data = self._small[path]
            if offset + length > len(data):
                raise FormatError("read past the end", path)
            return data[offset:offset + length]
        if path != WEIGHTS:
            raise FormatError("no such file in the stream", path)
        out = bytearray()
        pos, end = offset, offset + length
        if pos < len(self._header):
            out += self._header[pos:min(end, len(self._header))]
            pos = len(self._header)
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i < 0 or pos >= self._starts[i] + self._sizes[i]:
                raise FormatError(f"read of {length} bytes at {offset} runs past the data", path)
            a = pos - self._starts[i]
            b = min(end - self._starts[i], self._sizes[i])
            out += self._range(i, a, b)
            pos = self._starts[i] + b
        return bytes(out)

    def _range(self, i: int, a: int, b: int) -> bytes:
        with self._lock:
            if i not in self._held:
                cur = self._cursors.get(i)
                if cur is None:
                    cur = self._cursors[i] = _Cursor(iter(self.stream.tensors[i].chunks(self.inner)))
                    while len(self._cursors) > self.keep:
                        self._cursors.popitem(last=False)
                got = cur.serve(a, b)
                if got is not None and len(got) == b - a:
                    return got
                self._cursors.pop(i, None)
        return bytes(self._tensor(i)[a:b])   # out of order: the whole tensor, computed again

    def _tensor(self, i: int) -> bytearray:
        with self._lock:  # one computation at a time: parallel readers of a tensor share it
            if i in self._held:
                self._held.move_to_end(i)
                return self._held[i]
            while len(self._held) >= self.keep:  # room first: the tensor computed counts
                self._held.popitem(last=False)
            # filled in place: joining a list of chunks held the tensor twice (2 x 262 MB for a
            # 32000 x 2048 float32 embedding, bench/directions.py)
            data, pos = bytearray(self._sizes[i]), 0
            for chunk in self.stream.tensors[i].chunks(self.inner):
                if pos + len(chunk) > len(data):
                    break
                data[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
            else:
                if pos == len(data):
                    self.computed += 1
                    self._held[i] = data
                    return data
            raise FormatError(f"{self.stream.tensors[i].name}: the stream gave a size other than "
                              f"{self._sizes[i]} bytes", self.label)

    def finish(self) -> None:
        self.inner.finish()

    def close(self) -> None:
        self._held.clear()
        self._cursors.clear()
