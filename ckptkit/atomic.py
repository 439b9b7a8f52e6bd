"""Outputs that appear whole or not at all: write to a temporary name in the destination
folder, fsync, then rename. A multi-file output is renamed into place only once every file
is complete."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


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


class AtomicFiles:
    """A set of output files committed together.

    ``open(path)`` gives a file object writing to a hidden temporary in the same folder;
    ``commit()`` fsyncs and renames all of them; leaving the ``with`` block without commit
    (an exception, a signal) removes the temporaries. A SIGKILL can leave only hidden
    ``.ckptkit-*.tmp`` files, never a file under a final name."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path, BinaryIO]] = []

    def open(self, path: str | os.PathLike) -> BinaryIO:
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".ckptkit-{final.name}.", suffix=".tmp", dir=final.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        f = os.fdopen(fd, "w+b")
        self._pending.append((final, Path(tmp), f))
        return f

    def commit(self) -> None:
        for _, _, f in self._pending:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for final, tmp, _ in self._pending:
            os.replace(tmp, final)
        for d in {final.parent for final, _, _ in self._pending}:
            _fsync_dir(d)
        self._pending.clear()

    def abort(self) -> None:
        for _, tmp, f in self._pending:
            try:
                f.close()
            finally:
                tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> "AtomicFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """One file, committed when the block ends without an exception."""
    with AtomicFiles() as files:
        f = files.open(path)
        yield f
        files.commit()
