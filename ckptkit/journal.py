"""Resumable outputs: a small journal next to the temporaries of an output being written.

The journal records, after an fsync of the temporaries, how many tensors are complete and how
many bytes of each temporary hold them. A later run writing the same thing (same key: the plan
and the source's exact bytes) reopens the temporaries, keeps those bytes and skips the tensors;
the writer still passes every byte, and the ones already on disk are dropped on the way
(``_SkippingFile``), so writers need not know about resuming. Final names appear only at the
commit, as for any atomic output.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO, cast

# fsync + journal write at most this often: a checkpoint per small tensor would cost more than
# the work it saves.
CHECKPOINT_SECONDS = 2.0

_ACTIVE: ContextVar[Journal | None] = ContextVar("ckptkit_journal", default=None)


def journal_path(final: Path) -> Path:
    return final.parent / f".ckptkit-{final.name}.resume.json"


def temp_path(final: Path) -> Path:
    return final.parent / f".ckptkit-{final.name}.resume.tmp"


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _SkippingFile:
    """A file open for writing whose first ``keep`` bytes are already there: writes of those
    positions are dropped, later ones go to the file."""

    def __init__(self, f: BinaryIO, keep: int):
        self.f = f
        self.keep = keep
        self.pos = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self.pos + n > self.keep:
            self.f.write(memoryview(data)[max(0, self.keep - self.pos):])
        self.pos += n
        return n

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()


class Journal:
    """The resumable state of the output whose (first) final path is ``final``."""

    def __init__(self, final: str | os.PathLike, key: str, interval: float | None = None):
        self.final = Path(final)
        self.path = journal_path(self.final)
        self.key = key
        self.interval = CHECKPOINT_SECONDS if interval is None else interval
        self.tensors = 0                   # complete tensors kept from an earlier run
        self.lengths: dict[str, int] = {}  # part name -> bytes kept
        self._open: dict[str, _SkippingFile] = {}
        self._last = time.monotonic()
        state = self._load()
        if state is None:
            return
        if state.get("key") == key and self._intact(state):
            self.tensors, self.lengths = int(state["tensors"]), dict(state["files"])
        else:  # another plan or source, or its temporaries are gone: start again
            self._remove(state)

    def _load(self) -> dict | None:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get("files"), dict) else None

    def _intact(self, state: dict) -> bool:
        for name, n in state["files"].items():
            t = temp_path(self.final.with_name(name))
            if not isinstance(n, int) or not t.is_file() or t.stat().st_size < n:
                return False
        return isinstance(state.get("tensors"), int)

    def _remove(self, state: dict) -> None:
        for name in state.get("files", {}):
            temp_path(self.final.with_name(str(name))).unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def open(self, final: Path) -> tuple[BinaryIO, Path]:
        """The temporary for ``final``, positioned at its start, keeping the journal's bytes."""
        tmp = temp_path(final)
        keep = self.lengths.get(final.name, 0)
        f = open(tmp, "r+b" if keep else "w+b")  # noqa: SIM115 - closed by AtomicFiles
        f.truncate(keep)  # bytes after the last checkpoint may be torn
        f.seek(keep)
        sf = _SkippingFile(f, keep)
        self._open[final.name] = sf
        return cast(BinaryIO, sf), tmp

    def checkpoint(self, tensors: int, force: bool = False) -> None:
        """Record that ``tensors`` tensors are complete in what was written so far."""
        if not force and time.monotonic() - self._last < self.interval:
            return
        for sf in self._open.values():
            sf.flush()
            os.fsync(sf.fileno())
        files = {**self.lengths, **{n: sf.pos for n, sf in self._open.items()}}
        tmp = self.path.with_name(self.path.name + ".new")
        with open(tmp, "w") as f:
            json.dump({"key": self.key, "tensors": tensors, "files": files}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._last = time.monotonic()

    def finished(self) -> None:
        """The output was committed: the journal has nothing left to resume."""
        self.path.unlink(missing_ok=True)


def discard(final: str | os.PathLike) -> None:
    """Remove the journal and temporaries of ``final``'s output (nothing to resume from)."""
    j = Journal.__new__(Journal)
    j.final, j.path = Path(final), journal_path(Path(final))
    state = j._load()
    if state is not None:
        j._remove(state)


def active_journal() -> Journal | None:
    """The journal outputs opened now should use, if a resumable write is running."""
    return _ACTIVE.get()


@contextmanager
def resumable(journal: Journal) -> Iterator[Journal]:
    """Outputs opened through AtomicFiles in this block are resumable with ``journal``."""
    token = _ACTIVE.set(journal)
    try:
        yield journal
    finally:
        _ACTIVE.reset(token)
