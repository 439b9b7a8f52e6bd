"""Checksums of remote files computed from the bytes as they arrive, whatever reads fetch them.

The Hub lists each LFS file's sha256 (and every file's git blob id). A file whose every byte
passes through the reads of one session is hashed in file order and compared once its last byte
arrives. Pieces that arrive ahead of the hashed position wait in memory up to a bound shared by
the source's files; past it, the file holding most moves its waiting pieces to an unnamed
temporary file (sparse: each piece at its own offset) and reads them back when their turn comes,
so a file read in a scattered order (experts stacked across a MoE layer) is still checked. Files
that are only partly read (a header inspected alone) cannot be checked and are not.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import IO

from ..errors import NetworkError

# Out-of-order bytes held in memory per source before the file holding most spills to disk.
PENDING_LIMIT = 256 << 20
_READ_BACK = 8 << 20


class ChecksumError(NetworkError):
    """A file's bytes as received do not have the checksum the Hub lists for it."""


class FileDigest:
    """sha256 (LFS) or git blob sha1 of one file, fed (offset, bytes) in any order."""

    def __init__(self, size: int, sha256: str | None, blob_id: str | None, spill_dir: str | None = None):
        self.size = size
        self.expect = sha256 or blob_id or ""
        self._h = hashlib.sha256() if sha256 else hashlib.sha1(b"blob %d\0" % size)
        self.pos = 0
        # waiting pieces: offset -> bytes in memory, or the length of a piece in the spill file
        self.pending: dict[int, bytes | int] = {}
        self.held = 0      # bytes of waiting pieces in memory
        self.spilled = 0   # bytes of waiting pieces on disk
        self.done = False
        self.lock = threading.Lock()
        self._spill_dir = spill_dir
        self._spill: IO[bytes] | None = None

    def feed(self, offset: int, data: bytes | memoryview) -> int:
        """Take bytes at ``offset``; returns the change in bytes held in memory."""
        before = self.held
        end = offset + len(data)
        if self.done or end <= self.pos:
            return 0
        if offset > self.pos:
            old = self.pending.get(offset)
            old_len = old if isinstance(old, int) else len(old) if old is not None else 0
            if old_len >= len(data):
                return 0
            if isinstance(old, bytes):
                self.held -= len(old)
            elif old is not None:
                self.spilled -= old
            if self._spill is not None:
                os.pwrite(self._spill.fileno(), data, offset)
                self.pending[offset] = len(data)
                self.spilled += len(data)
            else:
                self.pending[offset] = bytes(data)
                self.held += len(data)
            return self.held - before
        self._take(memoryview(data)[self.pos - offset:])
        while self.pending:
            nxt = min(self.pending)
            if nxt > self.pos:
                break
            piece = self.pending.pop(nxt)
            if isinstance(piece, bytes):
                self.held -= len(piece)
                if nxt + len(piece) > self.pos:
                    self._take(memoryview(piece)[self.pos - nxt:])
            else:
                self.spilled -= piece
                self._read_back(nxt, piece)
        if self.pos >= self.size:
            self.done = True
            self.close()
        return self.held - before

    def spill(self) -> int:
        """Move the waiting pieces to disk; returns the change in bytes held in memory."""
        freed = self.held
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(dir=self._spill_dir)
        fd = self._spill.fileno()
        for off, piece in list(self.pending.items()):
            if isinstance(piece, bytes):
                os.pwrite(fd, piece, off)
                self.pending[off] = len(piece)
                self.spilled += len(piece)
        self.held = 0
        return -freed

    def _read_back(self, offset: int, length: int) -> None:
        assert self._spill is not None
        fd = self._spill.fileno()
        a = max(offset, self.pos)
        while a < offset + length:
            n = min(_READ_BACK, offset + length - a)
            chunk = os.pread(fd, n, a)
            if len(chunk) != n:
                raise NetworkError("the checksum's spill file lost bytes", self._spill_dir or "")
            self._take(memoryview(chunk))
            a += n

    def _take(self, piece: memoryview) -> None:
        self._h.update(piece)
        self.pos += len(piece)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    @property
    def matches(self) -> bool:
        return self._h.hexdigest() == self.expect


class Digests:
    """Every checkable file of one source; ``feed`` raises ChecksumError when a file completes
    with bytes that differ from the listing. ``spill_dir``: where waiting pieces go past
    ``limit`` (None: the system's temporary folder)."""

    def __init__(self, limit: int | None = None, spill_dir: str | None = None):
        self.limit = PENDING_LIMIT if limit is None else limit
        self.spill_dir = spill_dir
        self._files: dict[str, FileDigest] = {}
        self._held = 0
        self._lock = threading.Lock()
        self.verified: set[str] = set()

    def feed(self, name: str, size: int | None, sha256: str | None, blob_id: str | None,
             offset: int, data: bytes | memoryview, where: str) -> None:
        if size is None or not (sha256 or blob_id) or not data or name in self.verified:
            return
        with self._lock:
            d = self._files.get(name)
            if d is None:
                d = self._files[name] = FileDigest(size, sha256, blob_id, self.spill_dir)
        with d.lock:  # one file at a time; other files hash in parallel (hashlib releases the GIL)
            grew = d.feed(offset, data)
            done = d.done
        if grew:
            with self._lock:
                self._held += grew
                if self._held > self.limit:  # the file holding most moves its waiting pieces to disk
                    worst = max(self._files.values(), key=lambda f: f.held)
                    with worst.lock:
                        self._held += worst.spill()
        if not done:
            return
        with self._lock:
            if name in self.verified or self._files.get(name) is not d:
                return
            del self._files[name]  # verified needs no more bytes; a second attempt hashes afresh
            if not d.matches:
                kind = "sha256" if sha256 else "git blob id"
                raise ChecksumError(f"received bytes do not match the Hub's {kind} {d.expect[:12]}…", where)
            self.verified.add(name)

    def close(self) -> None:
        """Drop every file still incomplete (and its spill file)."""
        with self._lock:
            for d in self._files.values():
                d.close()
            self._files.clear()
            self._held = 0


def matches_published(path: Path, sha256: str | None, blob_id: str | None) -> bool:
    """Whether the file's bytes have the Hub's sha256 (LFS) or git blob id; True when neither is known."""
    if sha256:
        h = hashlib.sha256()
    elif blob_id:
        h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    else:
        return True
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest() == (sha256 or blob_id)
