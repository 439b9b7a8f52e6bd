"""A model repo on the Hugging Face Hub (or any server HF_ENDPOINT points at), read by HTTP ranges.

One request resolves the revision to a commit and lists the files with their sizes; every later
read is pinned to that commit and is one ranged GET (more only when the network misbehaves; the
retry core is in http.py). Files already in the local HF cache are read from disk. Spec parsing
and the environment are in hubspec.py; their names are re-exported here.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..errors import FormatError, NetworkError, SourceError, UnsafeInputError
from ..tp_slices import read_joined
from . import listing, transport
from .ahead import Ahead
from .base import Source
from .digest import Digests, matches_published
from .files import SHARD_INDEX
from .http import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    ENV_HF_TIMEOUT,
    ENV_RETRIES,
    ENV_TIMEOUT,
    RetryPolicy,
    get_range,
    get_with_commit,
    http_error,
)
from .hubspec import (
    cached_file,
    hub_cache_dir,
    hub_endpoint,
    hub_offline,
    implicit_token,
    looks_like_repo_id,
    parse_hub_spec,
    repo_cache_folder,
    valid_repo_id,
)

__all__ = [
    "DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "ENV_HF_TIMEOUT", "ENV_RETRIES", "ENV_TIMEOUT",
    "HubSource", "hub_cache_dir", "hub_endpoint", "hub_offline", "looks_like_repo_id", "parse_hub_spec",
]

_HEX40 = re.compile(r"[0-9a-f]{40}")
_DOWNLOAD_CHUNK = 8 << 20
EARLY_LIMIT = 64 << 20                           # a larger one is read the ordinary way


class HubSource(Source):
    """A Hub model repo at one commit. ``files()`` paths are relative to ``subfolder``.

    ``timeout`` (seconds a read may receive nothing before it is abandoned and resumed from its
    last byte) defaults to CKPTKIT_HUB_TIMEOUT, then HF_HUB_DOWNLOAD_TIMEOUT, then 10 s; ``retries``
    to CKPTKIT_HUB_RETRIES, then 5. Backoff (with jitter) doubles from ``backoff`` up to ``max_backoff``;
    a Retry-After header is honoured up to ``max_retry_after`` seconds.
    """

    # Header reads are latency-bound: 163 DeepSeek-V3 shards take 21 round trips at 8, 6 at 32.
    concurrency = 32

    def __init__(
        self,
        repo_id: str,
        revision: str | None = None,
        subfolder: str = "",
        token: str | bool | None = None,
        *,
        endpoint: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
    ):
        if not valid_repo_id(repo_id):
            raise SourceError("not a valid Hub repo id", repo_id)
        self.repo_id = repo_id
        self.revision = revision
        self.subfolder = subfolder.strip("/")
        self.token = token
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.policy = RetryPolicy.from_env(timeout, retries, backoff=backoff, max_backoff=max_backoff,
                                           max_retry_after=max_retry_after)
        self.label = repo_id + (f"@{revision}" if revision else "") + (f"/{self.subfolder}" if self.subfolder else "")
        self._lock = threading.Lock()
        self._sha: str | None = None
        self._remote_id = repo_id  # the name the server answers to (differs after a rename)
        self._entries: dict[str, tuple[int | None, str | None, str | None]] | None = None  # size, sha256, blob id
        self._offline_listing = False
        self._pin: str | None = None  # the commit named before any listing (light_commit)
        self._light: dict[str, str] | None = None  # see _light_headers
        self._early: dict[str, bytes] = {}  # small files fetched with it, served to reads from memory
        self._ahead_listing: Any = None      # the listing light_commit's first look got
        #: checksums of files whose every byte this source has fetched (see digest.py)
        self.digests = Digests()

    # ---- configuration read at call time -------------------------------------------------------
    @property
    def timeout(self) -> float:
        return self.policy.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.policy = dataclasses.replace(self.policy, timeout=float(seconds))

    @property
    def retries(self) -> int:
        return self.policy.retries

    @property
    def endpoint(self) -> str:
        return self._endpoint or hub_endpoint()

    @property
    def cache_dir(self) -> str:
        return self._cache_dir or hub_cache_dir()

    # ---- resolution ------------------------------------------------------------------------------
    @property
    def commit_sha(self) -> str:
        """The commit every read is pinned to."""
        self._resolve()
        assert self._sha is not None
        return self._sha

    def light_commit(self, first_look: bool = False) -> str | None:
        """The commit the revision is at, from one GET of config.json instead of the listing
        (which imports and runs ``HfApi``); later reads are pinned to it and config.json's bytes
        are kept for them. None when the answer names no commit (the listing will say why).
        ``first_look`` (nothing of this revision cached: the listing will be needed): the listing
        and the likely shard index are asked for at the same time, by the revision's name, and
        kept when they name the same commit as config.json (else asked again, pinned)."""
        if self._sha is not None or self._pin is not None:
            return self._sha or self._pin
        index = self._full(SHARD_INDEX)
        ahead = (Ahead(self._listing, self.revision), Ahead(self._get_small, self.revision, index)) \
            if first_look else ()
        try:
            self._pin, body = self._get_small(self.revision, self._full("config.json"), 1 << 20)
            if self._pin and body is not None:
                self._early[self._full("config.json")] = body
        finally:
            got = [a.value() for a in ahead]
        if got:
            self._ahead_listing = got[0]
            self._keep_early(index, got[1])
        return self._pin

    def _get_small(self, revision: str | None, full: str, limit: int = EARLY_LIMIT):
        """(commit, body) of one GET of a small file (http.get_with_commit: one attempt)."""
        return get_with_commit(self._file_url(self.repo_id, revision, full), self._light_headers(), self.timeout, limit)

    def _keep_early(self, full: str, got: tuple[str | None, bytes | None] | None) -> None:
        """Bytes fetched ahead, served to reads when they are of the pinned commit (and checked
        against the listing like any others)."""
        if got is not None and self._pin and got[0] == self._pin and got[1] is not None:
            self._early[full] = got[1]

    def _listing(self, revision: str | None):
        return listing.online(self.endpoint, self.repo_id, revision, self.token, self._light_headers(),
                              self.policy, self.label, self._http_error)

    def _resolve(self) -> None:
        if self._entries is not None:
            return
        with self._lock:
            if self._entries is not None:
                return
            if hub_offline():
                sha, entries = self._resolve_offline()
            else:
                sha, entries = self._resolve_online()
            for name in entries:
                p = PurePosixPath(name)
                if p.is_absolute() or ".." in p.parts or "\\" in name or not name:
                    raise UnsafeInputError(f"the repo lists an unsafe file name {name!r}", self.label)
            self._sha = sha
            self._entries = entries

    def _resolve_online(self):
        got = self._ahead_listing
        if got is not None and self._pin is not None and got[0] == self._pin:  # light_commit's first look
            sha, remote_id, entries = got
        else:
            # most large repos' next read is their shard index: asked for alongside the listing
            index = self._full(SHARD_INDEX)
            early = Ahead(self._get_small, self._pin, index) if self._pin and index not in self._early else None
            try:
                sha, remote_id, entries = self._listing(self._pin or self.revision)
            finally:
                if early is not None:
                    self._keep_early(index, early.value())
        if remote_id and remote_id != self.repo_id and "/" in remote_id and valid_repo_id(remote_id):
            self._remote_id = remote_id
        return sha, entries

    def _resolve_offline(self):
        storage = Path(repo_cache_folder(self.cache_dir, self.repo_id))
        sha, entries, self._offline_listing = listing.offline(storage, self.revision, self.cache_dir, self.label)
        return sha, entries

    def _file_url(self, repo_id: str, revision: str | None, full: str) -> str:
        """The URL huggingface_hub's hf_hub_url makes for a model repo's file."""
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision or 'main', safe='')}/{quote(full)}"

    def _light_headers(self) -> dict[str, str]:
        """Headers of requests made without huggingface_hub (transport.py): its user agent's
        library part and the token it would send, found without importing it. A wrong guess
        gets an error status, and a request with one is asked again through huggingface_hub.
        Made once per source (the token file is not read again for every range)."""
        if self._light is None:
            from .. import __version__

            self._light = {"user-agent": f"ckptkit/{__version__}"}
            token = implicit_token(self.token)
            if token:
                self._light["authorization"] = f"Bearer {token}"
        return dict(self._light)

    # ---- paths -----------------------------------------------------------------------------------
    def _full(self, path: str) -> str:
        return f"{self.subfolder}/{path}" if self.subfolder else path

    def _where(self, path: str) -> str:
        return f"{self.repo_id}@{self.revision or 'main'}/{self._full(path)}"

    def _entry(self, path: str):
        self._resolve()
        assert self._entries is not None
        full = self._full(path)
        if full not in self._entries:
            hint = " (offline: only cached files are known)" if self._offline_listing else ""
            raise SourceError(f"no such file in the repo at commit {self.commit_sha[:12]}{hint}", self._where(path))
        return full, self._entries[full]

    def files(self) -> dict[str, int | None]:
        self._resolve()
        assert self._entries is not None
        if not self.subfolder:
            return {k: v[0] for k, v in self._entries.items()}
        prefix = self.subfolder + "/"
        return {k[len(prefix) :]: v[0] for k, v in self._entries.items() if k.startswith(prefix)}

    def _cached(self, full: str) -> str | None:
        return cached_file(self.cache_dir, self.repo_id, self._sha, full) if self._sha else None

    def local_path(self, path: str) -> Path | None:
        if path in self.tp_joins:      # joined tensor-parallel slices: read from the repo's files
            return None
        full, _ = self._entry(path)
        hit = self._cached(full)
        return Path(hit) if hit else None

    def close(self) -> None:
        self.digests.close()

    def unverified(self, paths: Iterable[str]) -> list[str]:
        out = []
        # a joined tensor-parallel tensor is checked as the files holding its slices
        paths = dict.fromkeys(f for x in paths for f in ([p.file for p in self.tp_joins[x].parts]
                                                         if x in self.tp_joins else [x]))
        for path in paths:
            full, (size, sha256, blob_id) = self._entry(path)
            if (sha256 or blob_id) and size and full not in self.digests.verified and self._cached(full) is None:
                out.append(path)
        return out

    def _need_network(self, path: str) -> None:
        if hub_offline():
            raise SourceError("not in the local HF cache and HF_HUB_OFFLINE is set", self._where(path))

    # ---- reads -----------------------------------------------------------------------------------
    def read_head(self, path: str, length: int) -> tuple[bytes, int | None]:
        full, (size, _, _) = self._entry(path)
        hit = self._cached(full)
        if hit:
            with open(hit, "rb") as f:
                return f.read(max(0, length)), os.fstat(f.fileno()).st_size
        if length <= 0 or size == 0:
            return b"", size
        self._need_network(path)
        buf = bytearray()
        total = self._get(full, 0, length, buf.extend, path)
        return bytes(buf), total if total is not None else size

    def read(self, path: str, offset: int, length: int) -> bytes:
        if path in self.tp_joins:  # a tensor joined from tensor-parallel slices (ckptkit/tp_slices.py)
            return read_joined(self, self.tp_joins[path], offset, length)
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        full, (size, _, _) = self._entry(path)
        if size is not None and offset + length > size:
            raise FormatError(f"read of {length} bytes at {offset} runs past the end ({size} bytes)", self._where(path))
        if length == 0:
            return b""
        hit = self._cached(full)
        if hit:
            with open(hit, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        else:
            self._need_network(path)
            parts: list[bytes] = []  # joined once: one copy of the data, not a growing buffer's
            self._get(full, offset, offset + length, parts.append, path)
            data = b"".join(parts)
        if len(data) != length:
            raise FormatError(f"file ends before {offset + length} bytes", self._where(path))
        return data

    def read_file(self, path: str) -> bytes:
        full, (size, _, _) = self._entry(path)
        hit = self._cached(full)
        if hit:
            return Path(hit).read_bytes()
        if size == 0:
            return b""
        self._need_network(path)
        buf = bytearray()
        self._get(full, 0, size, buf.extend, path)
        if size is not None and len(buf) != size:
            raise FormatError(f"got {len(buf)} bytes, the listing says {size}", self._where(path))
        return bytes(buf)

    def stream(self, path: str, offset: int = 0, length: int | None = None,
               chunk: int = _DOWNLOAD_CHUNK) -> Iterator[bytes]:
        """Successive ranged reads of ``chunk`` bytes covering ``[offset, offset+length)``."""
        _, (size, _, _) = self._entry(path)
        if length is None:
            if size is None:
                raise SourceError("file size unknown: give a length", self._where(path))
            length = size - offset
        pos, end = offset, offset + length
        while pos < end:
            n = min(chunk, end - pos)
            yield self.read(path, pos, n)
            pos += n

    def download(self, path: str, dest: str | os.PathLike, verify: bool = True) -> Path:
        """The whole file to ``dest`` via ``dest.incomplete`` (resumed if present), checked against
        the Hub's sha256 (LFS) or git blob id when ``verify``."""
        full, (size, sha256, blob_id) = self._entry(path)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        hit = self._cached(full)
        if hit:
            shutil.copyfile(hit, dest)
            return dest
        self._need_network(path)
        tmp = dest.with_name(dest.name + ".incomplete")
        have = tmp.stat().st_size if tmp.exists() else 0
        if size is not None and have > size:
            have = 0
        with open(tmp, "r+b" if have else "wb") as f:
            f.truncate(have)
            f.seek(have)
            if size is None or have < size:
                self._get(full, have, size, f.write, path, check=False)
        got = tmp.stat().st_size
        if size is not None and got != size:
            raise NetworkError(f"downloaded {got} of {size} bytes", self._where(path))
        if verify and not matches_published(tmp, sha256, blob_id):
            tmp.unlink()
            raise NetworkError("downloaded bytes do not match the Hub's checksum", self._where(path))
        os.replace(tmp, dest)
        return dest

    def _entries_of(self, full: str) -> tuple[int | None, str | None, str | None]:
        assert self._entries is not None
        return self._entries.get(full, (None, None, None))

    # ---- HTTP ------------------------------------------------------------------------------------
    def _http_error(self, e: Any, path: str | None = None) -> Exception:
        where = self._where(path) if path else self.label
        return http_error(e, endpoint=self.endpoint, revision=self.revision, label=self.label, where=where)

    def _get(self, full: str, start: int, end: int | None, write: Callable[[bytes], object], path: str,
             check: bool = True) -> int | None:
        """Bytes ``[start, end)`` of ``full`` (``end`` None = to EOF) passed to ``write`` in order,
        each byte once. Returns the file size from Content-Range. With ``check`` the bytes also go
        to the file's checksum (ChecksumError on a mismatch)."""
        url = self._file_url(self._remote_id, self._sha, full)
        headers = self._light_headers() if transport.usable(url) else self._library_headers()
        where = self._where(path)
        sink = write
        early = self._early.get(full)
        if early is not None and (end if end is not None else len(early)) <= len(early):
            # fetched by light_commit at the same commit: served from memory, and checked
            size, sha256, blob_id = self._entries_of(full)
            piece = early[start:end]
            if check and piece:
                self.digests.feed(full, size, sha256, blob_id, start, piece, where)
            if piece:
                sink(piece)
            return len(early)
        if check:
            size, sha256, blob_id = self._entries_of(full)
            pos = start

            def sink(chunk: bytes) -> object:
                nonlocal pos
                self.digests.feed(full, size, sha256, blob_id, pos, chunk, where)
                pos += len(chunk)
                return write(chunk)

        return get_range(url, headers, start, end, sink, self.policy, where,
                         lambda e: self._http_error(e, path), library_headers=self._library_headers)

    def _library_headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token, library_name="ckptkit")
