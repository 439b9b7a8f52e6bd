"""Outputs that appear whole or not at all: write to a temporary name in the destination
folder, fsync, then rename. A multi-file output is renamed into place only once every file
is complete."""
from __future__ import annotations

import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import CkptError
from .journal import active_journal

# What writers take as tensor data: numpy arrays' memory passes as a memoryview, without a copy.
Chunk = bytes | bytearray | memoryview


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed ckptkit left for ``final``: files named
    ``.ckptkit-<final name>.<pid>.<random>.tmp`` whose writing process no longer exists on this
    machine. Live writers' temporaries, folders and other names are left alone."""
    final = Path(final)
    prefix = f".ckptkit-{final.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(".tmp")):
            continue
        pid, _, rand = e.name[len(prefix):-4].partition(".")
        # mkstemp's random part has no dots: "a.gguf.7" temporaries never match "a.gguf"
        if not pid.isdigit() or not rand or "." in rand or _alive(int(pid)):
            continue
        try:
            if e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            pass
    return removed


# Early writeback: every WRITEBACK bytes written to an output, its dirty pages are handed to the
# disk by an fdatasync on a background thread while writing goes on, so the final fsync of the
# commit finds little left to do (it was the last ~15 % of a local or Hub conversion's time).
WRITEBACK = 256 << 20


class _Writeback:
    """The background fdatasync of one output file: at most one in flight."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.since = 0
        self.thread: threading.Thread | None = None

    def wrote(self, n: int) -> None:
        self.since += n
        if self.since < WRITEBACK or (self.thread is not None and self.thread.is_alive()):
            return
        self.since = 0
        self.f.flush()
        fd = self.f.fileno()

        def sync() -> None:
            try:
                os.fdatasync(fd)
            except OSError:  # the commit's own fsync reports what matters
                pass
        self.thread = threading.Thread(target=sync, name="ckptkit-writeback", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


_writebacks: weakref.WeakKeyDictionary[BinaryIO, _Writeback] = weakref.WeakKeyDictionary()


class AtomicFiles:
    """A set of output files committed together.

    ``open(path)`` gives a file object writing to a hidden temporary in the same folder;
    ``commit()`` fsyncs and renames all of them; leaving the ``with`` block without commit
    (an exception, a signal) removes the temporaries. A SIGKILL can leave only hidden
    ``.ckptkit-*.tmp`` files, never a file under a final name; the next ``open`` of the same
    final name removes them (see ``remove_stale_temps``)."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path, BinaryIO]] = []

    def open(self, path: str | os.PathLike) -> BinaryIO:
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(final)
        journal = active_journal()
        if journal is not None:  # a resumable write: a fixed temporary name, kept on failure
            f, kept = journal.open(final)
            os.chmod(kept, 0o666 & ~_umask())
            self._pending.append((final, kept, f))
            return f
        fd, tmp = tempfile.mkstemp(prefix=f".ckptkit-{final.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=final.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        f = os.fdopen(fd, "w+b")
        self._pending.append((final, Path(tmp), f))
        _writebacks[f] = _Writeback(f)
        return f

    def commit(self) -> None:
        for _, _, f in self._pending:
            _join_writeback(f)
            f.flush()
            os.fsync(f.fileno())
            f.close()
        # Last file first: readers open the first part of a split output, so a set interrupted
        # mid-commit never shows its first part.
        for final, tmp, _ in reversed(self._pending):
            os.replace(tmp, final)
        for d in {final.parent for final, _, _ in self._pending}:
            _fsync_dir(d)
        self._pending.clear()
        journal = active_journal()
        if journal is not None:
            journal.finished()

    def abort(self) -> None:
        keep = active_journal() is not None  # a resumable write keeps what its journal records
        for _, tmp, f in self._pending:
            try:
                _join_writeback(f)
                f.close()
            finally:
                if not keep:
                    tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _join_writeback(f: BinaryIO) -> None:
    wb = _writebacks.pop(f, None)
    if wb is not None:
        wb.join()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """One file, committed when the block ends without an exception."""
    with AtomicFiles() as files:
        f = files.open(path)
        yield f
        files.commit()


def write_tensor(f: BinaryIO, produced: Iterator[tuple[str, Iterable[Chunk]]], name: str, nbytes: int,
                 on_bytes: Callable[[int], None] | None = None) -> int:
    """Write the next (name, chunks) of ``produced`` to ``f``, checking it is tensor ``name``
    and exactly ``nbytes`` long: the one loop every streaming writer runs per tensor."""
    try:
        got, chunks = next(produced)
    except StopIteration:
        raise CkptError(f"internal: no data for tensor {name}") from None
    if got != name:
        raise CkptError(f"internal: tensor data out of order: got {got}, expected {name}")
    written = 0
    wb = _writebacks.get(f)
    for chunk in chunks:
        f.write(chunk)
        written += len(chunk)
        if wb is not None:
            wb.wrote(len(chunk))
        if on_bytes:
            on_bytes(len(chunk))
    if written != nbytes:
        raise CkptError(f"internal: tensor {name} produced {written} bytes, expected {nbytes}")
    return written
