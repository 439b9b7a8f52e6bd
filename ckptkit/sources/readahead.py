"""Read-ahead for a remote source whose reads are known in advance (a conversion plan).

Each file's needed bytes are grouped into ranges of up to ``chunk`` bytes that are needed at
about the same time (small gaps, the header and a short tail are included, so a fully used
file is fetched whole and its checksum can be checked). Each range is fetched once, by
``connections`` workers, in the order the reads first need it, into a buffer of at most
``budget`` bytes; a read waits for its ranges and takes its bytes from memory. A range is
dropped when its last planned read has taken its bytes. When the buffer is full of ranges
needed only later (bytes read at distant times, such as scales shared by far-apart rows), the
one needed last is dropped and its later reads go to the source directly (the only case where
bytes are fetched twice).
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import CkptError
from .base import Source, WrappedSource

Range = tuple[str, int, int]  # file, offset, length

CHUNK = 8 << 20
# Gaps between needed bytes this small are fetched rather than cut around: a request costs more.
GAP = 1 << 20

# Requests in flight by default; more, up to MAX_AUTO, when the ranges are small (per-expert
# tensors of a MoE read role by role): then the round trips, not the bytes, set the pace.
BASE_CONNECTIONS = 4
MAX_AUTO = 16

_PLANNED, _FETCHING, _READY, _DROPPED = range(4)


@dataclass(eq=False)
class Unit:
    """One ranged request: bytes [start, end) of ``file``; ``uses`` are the indices of the
    planned reads that touch it, in plan order."""

    file: str
    start: int
    end: int
    uses: list[int] = field(default_factory=list)
    state: int = _PLANNED
    data: bytes | None = None
    error: BaseException | None = None
    left: int = 0  # planned reads still to take bytes from it

    @property
    def size(self) -> int:
        return self.end - self.start

    def next_use(self) -> int:
        return self.uses[len(self.uses) - self.left] if self.left > 0 else 1 << 62


def _spans(reads: Sequence[Range]) -> dict[str, list[list[int]]]:
    """Per file, the reads' byte spans in file order as [start, end, first use, last use], where
    a use is the read's place in the plan measured in bytes read before it; overlaps joined."""
    at = 0
    raw: dict[str, list[tuple[int, int, int]]] = {}
    for f, off, n in reads:
        if n > 0:
            raw.setdefault(f, []).append((off, off + n, at))
            at += n
    out: dict[str, list[list[int]]] = {}
    for f, ss in raw.items():
        merged: list[list[int]] = []
        for a, b, t in sorted(ss):
            if merged and a < merged[-1][1]:
                m = merged[-1]
                m[1], m[2], m[3] = max(m[1], b), min(m[2], t), max(m[3], t)
            else:
                merged.append([a, b, t, t])
        out[f] = merged
    return out


def group(spans: list[list[int]], chunk: int, gap: int, window: int) -> list[tuple[int, int]]:
    """Requests for one file: neighbouring spans join while the request stays within ``chunk``
    bytes, the gap between them within ``gap`` and their uses within ``window`` bytes of reading
    (bytes needed far apart in time are fetched apart, so neither waits long in memory); a span
    larger than ``chunk`` is cut at multiples of ``chunk``."""
    out: list[tuple[int, int]] = []
    cur: list[int] | None = None  # start, end, first use, last use
    for a, b, t0, t1 in spans:
        if (cur is not None and a - cur[1] <= gap and b - cur[0] <= chunk
                and max(cur[3], t1) - min(cur[2], t0) <= window):
            cur = [cur[0], b, min(cur[2], t0), max(cur[3], t1)]
            continue
        if cur is not None:
            out.append((cur[0], a if a - cur[1] <= gap else cur[1]))  # a small gap goes with it
        cur = [a, b, t0, t1]
    if cur is not None:
        out.append((cur[0], cur[1]))
    cut: list[tuple[int, int]] = []
    for a, b in out:
        while b - a > chunk:
            e = (a // chunk + 1) * chunk
            cut.append((a, e))
            a = e
        cut.append((a, b))
    return cut


def _whole(spans: list[list[int]], size: int) -> list[list[int]]:
    """``spans`` with the bytes between them, before the first and after the last added, each
    filler needed when its neighbour is: the whole file is fetched (so its checksum is judged)."""
    out: list[list[int]] = []
    pos = 0
    for a, b, t0, t1 in spans:
        if a > pos:
            out.append([pos, a, t0, t0])
        out.append([a, b, t0, t1])
        pos = b
    if pos < size:
        out.append([pos, size, spans[-1][3], spans[-1][3]])
    return out


def plan_units(reads: Sequence[Range], sizes: dict[str, int | None], chunk: int,
               gap: int | None = None, window: int | None = None, whole: bool = False) -> list[Unit]:
    """The ranged requests covering ``reads``, ordered by their first use; with ``whole``, every
    byte of each file read (of known size) is fetched, including bytes no read needs."""
    gap = GAP if gap is None else gap
    window = 2 * chunk if window is None else window
    units: list[Unit] = []
    by_file: dict[str, list[Unit]] = {}
    for f, spans in _spans(reads).items():
        size = sizes.get(f)
        if whole and size is not None:
            spans = _whole(spans, size)
        if spans[0][0] <= gap:  # the header: lets a fully used file be checked
            spans[0][0] = 0
        if size is not None and size - spans[-1][1] <= gap:
            spans[-1][1] = size
        by_file[f] = [Unit(f, a, b) for a, b in group(spans, chunk, gap, window)]
        units += by_file[f]
    starts = {f: [u.start for u in us] for f, us in by_file.items()}
    for i, (f, off, n) in enumerate(reads):
        us = by_file.get(f)
        if not us or n <= 0:
            continue
        k = bisect.bisect_right(starts[f], off) - 1
        while k < len(us) and us[k].start < off + n:
            us[k].uses.append(i)
            k += 1
    for us in by_file.values():  # a range no read touches (a gap, the header) goes with its neighbour
        for j, u in enumerate(us):
            if not u.uses:
                near = next((v for v in us[j + 1:] + us[j::-1] if v.uses), None)
                u.uses = [near.uses[0]] if near else [0]
                u.left = -1  # nothing will take it: dropped once fetched
    for u in units:
        if u.left == 0:
            u.left = len(u.uses)
    units.sort(key=lambda u: (u.uses[0], u.file, u.start))
    return units


def auto_connections(units: Sequence[Unit], chunk: int) -> int:
    """Enough requests in flight to keep about ``BASE_CONNECTIONS`` full ranges' bytes moving."""
    if not units:
        return BASE_CONNECTIONS
    median = sorted(u.size for u in units)[len(units) // 2]
    return max(BASE_CONNECTIONS, min(MAX_AUTO, BASE_CONNECTIONS * chunk // max(median, 1)))


class ReadAhead(WrappedSource):
    """``inner`` read through planned, concurrent, once-only ranged requests (see module doc)."""

    def __init__(self, inner: Source, reads: Sequence[Range], connections: int | None = None,
                 chunk: int | None = None, budget: int | None = None, whole: bool = True):
        super().__init__(inner)
        chunk = CHUNK if chunk is None else chunk
        sizes = inner.files()
        remote = [r for r in reads if inner.local_path(r[0]) is None]  # the HF cache is a disk
        # ``whole``: the bytes of a file no read needs (a dropped tower or MTP layer) are fetched
        # too, so that every file read can be checked against its published hash
        self.units = plan_units(remote, sizes, chunk, whole=whole)
        self.files_read = sorted({r[0] for r in remote})
        self.whole = whole
        self.budget = budget if budget is not None else chunk * (2 * (connections or BASE_CONNECTIONS) + 2)
        self._by_file: dict[str, list[Unit]] = {}
        for u in sorted(self.units, key=lambda u: (u.file, u.start)):
            self._by_file.setdefault(u.file, []).append(u)
        self._starts = {f: [u.start for u in us] for f, us in self._by_file.items()}
        self._pos = {id(u): i for i, u in enumerate(self.units)}
        self._cond = threading.Condition()
        self._next = 0      # index in self.units of the next range to fetch
        self._demand = -1   # a read waits for units[:demand + 1]: fetch them whatever the budget
        self._held = 0      # bytes fetched or being fetched and not yet dropped
        self._ready: set[Unit] = set()
        self._closed = False
        self.peak = 0
        self.refetched = 0  # bytes read again after their range was dropped early
        n = max(1, min(connections or auto_connections(self.units, chunk), len(self.units)))
        self._workers = [threading.Thread(target=self._work, name=f"readahead-{i}", daemon=True)
                         for i in range(n)] if self.units else []
        for t in self._workers:
            t.start()

    # ---- the fetching side -----------------------------------------------------------------------
    def _take_next(self) -> Unit | None:
        with self._cond:
            while not self._closed and self._next < len(self.units):
                u = self.units[self._next]
                if self._held + u.size <= self.budget or self._next <= self._demand or not self._held:
                    self._next += 1
                    u.state = _FETCHING
                    self._held += u.size
                    self.peak = max(self.peak, self._held)
                    return u
                victim = max(self._ready, key=Unit.next_use, default=None)
                if victim is not None and victim.next_use() > u.uses[0]:
                    self._drop(victim)
                    continue
                self._cond.wait()
            return None

    def _work(self) -> None:
        while (u := self._take_next()) is not None:
            data: bytes | None = None
            error: BaseException | None = None
            try:
                data = self.inner.read(u.file, u.start, u.size)
            except BaseException as e:  # noqa: BLE001 - handed to the read that needs it
                error = e
            with self._cond:
                u.data, u.error, u.state = data, error, _READY
                if u.left < 0 and error is None:
                    self._drop(u)
                else:
                    self._ready.add(u)
                self._cond.notify_all()

    def _drop(self, u: Unit) -> None:
        """Forget a range's bytes (lock held)."""
        self._ready.discard(u)
        if u.state == _READY:
            self._held -= u.size
        u.state, u.data = _DROPPED, None
        self._cond.notify_all()

    # ---- the reading side ------------------------------------------------------------------------
    def _covering(self, path: str, offset: int, length: int) -> list[Unit] | None:
        """The units holding every byte of the read, or None if some byte is in none."""
        us = self._by_file.get(path)
        if not us or length <= 0:
            return None
        k = bisect.bisect_right(self._starts[path], offset) - 1
        if k < 0:
            return None
        out, pos, end = [], offset, offset + length
        while pos < end:
            if k >= len(us) or not us[k].start <= pos < us[k].end:
                return None
            out.append(us[k])
            pos = us[k].end
            k += 1
        return out

    def read(self, path: str, offset: int, length: int) -> bytes:
        data = self.view(path, offset, length)
        return data if isinstance(data, bytes) else bytes(data)

    def view(self, path: str, offset: int, length: int) -> bytes | memoryview:
        """``read`` without a copy: a view into the fetched range (which stays in memory while the
        view lives, so a reader keeps views only briefly)."""
        units = self._covering(path, offset, length)
        if units is None:
            return self.inner.read(path, offset, length)
        parts: list[bytes | memoryview] = []
        for u in units:
            a, b = max(offset, u.start), min(offset + length, u.end)
            with self._cond:
                while u.state in (_PLANNED, _FETCHING):
                    if self._closed:  # the conversion stopped: a job still running must not wait
                        raise CkptError("internal: read after the read-ahead was closed", path)
                    if u.state == _PLANNED:
                        self._demand = max(self._demand, self._pos[id(u)])
                        self._cond.notify_all()
                    self._cond.wait()
                if u.error is not None:
                    raise u.error
                data: bytes | memoryview | None = None
                if u.data is not None:
                    data = memoryview(u.data)[a - u.start:b - u.start]
                if u.left > 0:
                    u.left -= 1
                    if u.left == 0 and u.state == _READY:
                        self._drop(u)
            if data is None:  # dropped before this read: fetch just these bytes
                data = self.inner.read(path, a, b - a)
                with self._cond:
                    self.refetched += b - a
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> None:
        """Wait for every range to be fetched (a checksum can only be judged on complete files)
        and raise the first error any of them met."""
        with self._cond:
            while not self._closed and self._next < len(self.units):
                self._demand = len(self.units)
                self._cond.notify_all()
                self._cond.wait()
        for t in self._workers:
            t.join()
        for u in self.units:
            if u.error is not None:
                raise u.error
        if self.whole:
            bad = self.inner.unverified(self.files_read)
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                raise CkptError("could not check the bytes received against the published hash",
                                bad[0] + more)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._workers:
            t.join()
