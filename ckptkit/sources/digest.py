"""Checksums of remote files computed from the bytes as they arrive, whatever reads fetch them.

The Hub lists each LFS file's sha256 (and every file's git blob id). A file whose every byte
passes through the reads of one session is hashed in file order and compared once its last byte
arrives; pieces that arrive ahead of the hashed position wait in a bounded buffer. Files that are
only partly read (an unused shard tail, a header inspected alone) cannot be checked and are not.
"""
from __future__ import annotations

import hashlib
import threading

from ..errors import NetworkError

# Out-of-order pieces held per source before a file is given up as uncheckable: reads fetched in
# file order keep this to a few chunks; a file read in a scattered order is not worth the memory.
PENDING_LIMIT = 256 << 20


class ChecksumError(NetworkError):
    """A file's bytes as received do not have the checksum the Hub lists for it."""


class FileDigest:
    """sha256 (LFS) or git blob sha1 of one file, fed (offset, bytes) in any order."""

    def __init__(self, size: int, sha256: str | None, blob_id: str | None):
        self.size = size
        self.expect = sha256 or blob_id or ""
        self._h = hashlib.sha256() if sha256 else hashlib.sha1(b"blob %d\0" % size)
        self.pos = 0
        self.pending: dict[int, bytes] = {}
        self.held = 0
        self.done = False
        self.abandoned = False
        self.lock = threading.Lock()

    def feed(self, offset: int, data: bytes) -> int:
        """Take bytes at ``offset``; returns the change in held bytes."""
        before = self.held
        end = offset + len(data)
        if self.done or self.abandoned or end <= self.pos:
            return 0
        if offset > self.pos:
            if len(self.pending.get(offset, b"")) < len(data):
                self.held += len(data) - len(self.pending.get(offset, b""))
                self.pending[offset] = bytes(data)
            return self.held - before
        self._take(memoryview(data)[self.pos - offset:])
        while self.pending:
            nxt = min(self.pending)
            if nxt > self.pos:
                break
            piece = self.pending.pop(nxt)
            self.held -= len(piece)
            if nxt + len(piece) > self.pos:
                self._take(memoryview(piece)[self.pos - nxt:])
        if self.pos >= self.size:
            self.done = True
        return self.held - before

    def _take(self, piece: memoryview) -> None:
        self._h.update(piece)
        self.pos += len(piece)

    def abandon(self) -> int:
        freed = self.held
        self.abandoned = True
        self.pending.clear()
        self.held = 0
        return -freed

    @property
    def matches(self) -> bool:
        return self._h.hexdigest() == self.expect


class Digests:
    """Every checkable file of one source; ``feed`` raises ChecksumError when a file completes
    with bytes that differ from the listing."""

    def __init__(self, limit: int = PENDING_LIMIT):
        self.limit = limit
        self._files: dict[str, FileDigest] = {}
        self._held = 0
        self._lock = threading.Lock()
        self.verified: set[str] = set()

    def feed(self, name: str, size: int | None, sha256: str | None, blob_id: str | None,
             offset: int, data: bytes, where: str) -> None:
        if size is None or not (sha256 or blob_id) or not data:
            return
        with self._lock:
            d = self._files.get(name)
            if d is None:
                d = self._files[name] = FileDigest(size, sha256, blob_id)
        with d.lock:  # one file at a time; other files hash in parallel (hashlib releases the GIL)
            grew = d.feed(offset, data)
            done = d.done and not d.abandoned
        if grew:
            with self._lock:
                self._held += grew
                if self._held > self.limit:  # the file holding most waits no longer: it is not checked
                    worst = max(self._files.values(), key=lambda f: f.held)
                    with worst.lock:
                        self._held += worst.abandon()
        if not done:
            return
        with self._lock:
            if name in self.verified or self._files.get(name) is not d:
                return
            if not d.matches:
                del self._files[name]  # a second attempt hashes afresh
                kind = "sha256" if sha256 else "git blob id"
                raise ChecksumError(f"received bytes do not match the Hub's {kind} {d.expect[:12]}…", where)
            self.verified.add(name)
