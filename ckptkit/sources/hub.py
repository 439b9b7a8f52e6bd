"""A model repo on the Hugging Face Hub (or any server HF_ENDPOINT points at), read by HTTP ranges.

One request resolves the revision to a commit and lists the files with their sizes; every later
read is pinned to that commit and is one ranged GET (more only when the network misbehaves).
Files already in the local HF cache are read from disk. All HTTP goes through huggingface_hub's
shared client, headers and error types; retries and resumption are ckptkit's own because
huggingface_hub's helpers neither resume ranged reads nor bound their total wait.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from ..errors import FormatError, NetworkError, SourceError, UnsafeInputError, UnsupportedError
from .base import Source
from .digest import Digests

ENV_TIMEOUT = "CKPTKIT_HUB_TIMEOUT"  # seconds without progress before a request is abandoned
ENV_HF_TIMEOUT = "HF_HUB_DOWNLOAD_TIMEOUT"  # huggingface_hub's own, honoured when ours is not set
ENV_RETRIES = "CKPTKIT_HUB_RETRIES"  # attempts after the first, per read, reset by progress
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 5
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_HEX40 = re.compile(r"[0-9a-f]{40}")
_NAME = r"[A-Za-z0-9][\w.-]*"
_REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
# canonical repos without an org (gpt2, bert-base-uncased): no dot, so "model.bin" or "w.pt"
# that does not exist stays a missing local file rather than a Hub lookup
_SINGLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_MAX_NAME = 96            # the Hub's limit on an org or repo name
# a spec ending like a file is a missing local file ("a/b.gguf"), not a repo
_FILE_SUFFIXES = (".safetensors", ".gguf", ".json")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_DOWNLOAD_CHUNK = 8 << 20


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now rather than at import."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    """HF_ENDPOINT, read now (huggingface_hub's own constant is frozen when it is imported)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_cache_dir() -> str:
    """The HF cache folder, from the environment as it is now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.path.expandvars(os.environ[var]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.path.expandvars(os.environ["HF_HOME"])), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


# ---- specs ---------------------------------------------------------------------------------------

def looks_like_repo_id(spec: str) -> bool:
    """True for ``hf://...``, ``org/name[@rev]`` and canonical single-name repos (``gpt2``,
    ``bert-base-uncased[@rev]``) that are not an existing local path nor a file name. The one
    test of whether a command-line spec means the Hub; ``parse_hub_spec`` then refuses what is
    shaped like a repo id but is not a valid one, with the reason."""
    if spec.startswith("hf://"):
        return True
    if os.path.exists(spec) or spec.endswith(_FILE_SUFFIXES):
        return False
    repo = spec.split("@", 1)[0]
    if _SINGLE_NAME.fullmatch(repo):
        return True
    return _REPO_ID.fullmatch(repo) is not None and ".." not in spec


def parse_hub_spec(spec: str, revision: str | None = None) -> tuple[str, str | None, str]:
    """``org/name``, ``name``, ``org/name@rev``, ``hf://org/name[@rev][/sub/dir]`` ->
    (repo_id, revision, subfolder)."""
    rev: str | None = None
    sub = ""
    if spec.startswith("hf://"):
        rest = spec[len("hf://") :].strip("/")
        parts = rest.split("/")
        if parts and parts[0] in ("datasets", "spaces", "buckets"):
            raise UnsupportedError("only model repos are supported", spec)
        if len(parts) == 1 or "@" in parts[0]:  # canonical single-name repo ("hf://gpt2@v1/sub")
            name, _, rev0 = parts[0].partition("@")
            repo_parts, tail = [name], parts[1:]
        else:
            name, _, rev0 = parts[1].partition("@")
            repo_parts, tail = [parts[0], name], parts[2:]
        if "@" in (parts[0] if len(repo_parts) == 1 else parts[1]):
            rev = unquote(rev0)
            # refs/pr/N and refs/convert/X revisions contain slashes
            if rev == "refs" and len(tail) >= 2:
                rev = "/".join(["refs", *tail[:2]])
                tail = tail[2:]
        repo_id = "/".join(repo_parts)
        sub = "/".join(tail)
        if not all(_re_name(p) for p in repo_parts):
            raise SourceError("not a valid Hub repo id", spec)
    else:
        repo_id, at, rev0 = spec.partition("@")
        rev = rev0 if at else None
        if _REPO_ID.fullmatch(repo_id) is None and _SINGLE_NAME.fullmatch(repo_id) is None:
            raise SourceError("not a Hub repo id (expected org/name, a single-name repo such as "
                              "gpt2, or either @revision)", spec)
    if ("--" in repo_id or ".." in repo_id or repo_id.endswith((".", "-"))
            or any(len(p) > _MAX_NAME for p in repo_id.split("/"))):
        raise SourceError("not a valid Hub repo id", spec)
    if rev is not None and not rev:
        raise SourceError("empty revision after '@'", spec)
    if revision and rev and revision != rev:
        raise SourceError(f"two revisions given: {rev!r} in the spec and {revision!r}", spec)
    if any(p in ("", ".", "..") for p in sub.split("/")) and sub:
        raise UnsafeInputError("subfolder may not contain '.', '..' or empty parts", spec)
    return repo_id, revision or rev, sub


def _re_name(part: str) -> bool:
    return re.fullmatch(_NAME, part) is not None


# ---- the source ----------------------------------------------------------------------------------

class _Retry(Exception):
    """A transient failure: try again (after ``wait`` seconds when the server said so)."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


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
        if _REPO_ID.fullmatch(repo_id) is None and re.fullmatch(_NAME, repo_id) is None:
            raise SourceError("not a valid Hub repo id", repo_id)
        self.repo_id = repo_id
        self.revision = revision
        self.subfolder = subfolder.strip("/")
        self.token = token
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.timeout = float(timeout if timeout is not None else os.environ.get(ENV_TIMEOUT)
                             or os.environ.get(ENV_HF_TIMEOUT) or DEFAULT_TIMEOUT)
        self.retries = int(retries if retries is not None else os.environ.get(ENV_RETRIES) or DEFAULT_RETRIES)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.label = repo_id + (f"@{revision}" if revision else "") + (f"/{self.subfolder}" if self.subfolder else "")
        self._lock = threading.Lock()
        self._sha: str | None = None
        self._remote_id = repo_id  # the name the server answers to (differs after a rename)
        self._entries: dict[str, tuple[int | None, str | None, str | None]] | None = None  # size, sha256, blob id
        self._offline_listing = False
        #: checksums of files whose every byte this source has fetched (see digest.py)
        self.digests = Digests()

    # ---- configuration read at call time -------------------------------------------------------
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
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self.token)
        bad = SourceError(f"{self.endpoint} answered the model info request with malformed JSON", self.label)

        def model_info():
            try:
                return api.model_info(self.repo_id, revision=self.revision, files_metadata=True, timeout=self.timeout)
            except (ValueError, KeyError, TypeError, AttributeError):  # JSON or fields not as the Hub sends
                raise bad from None

        info = self._retrying(model_info, "listing the repo")
        if not isinstance(info.sha, str) or not _HEX40.fullmatch(info.sha) or not isinstance(info.siblings, list):
            raise SourceError(f"{self.endpoint} did not return a commit sha and a file list", self.label)
        if isinstance(info.id, str) and info.id != self.repo_id and _REPO_ID.fullmatch(info.id):
            self._remote_id = info.id
        entries = {}
        for s in info.siblings:
            size = s.size
            if not isinstance(s.rfilename, str) or not (size is None or (isinstance(size, int) and size >= 0)):
                raise bad
            entries[s.rfilename] = (size, s.lfs.sha256 if s.lfs else None, s.blob_id)
        return info.sha, entries

    def _resolve_offline(self):
        from huggingface_hub.file_download import repo_folder_name

        storage = Path(self.cache_dir) / repo_folder_name(repo_id=self.repo_id, repo_type="model")
        rev = self.revision or "main"
        if _HEX40.fullmatch(rev):
            sha = rev
        else:
            ref = storage / "refs" / rev
            if not ref.is_file():
                raise SourceError(
                    f"HF_HUB_OFFLINE is set and revision {rev!r} is not in the local HF cache ({self.cache_dir})",
                    self.label,
                )
            sha = ref.read_text().strip()
        entries: dict[str, tuple[int | None, str | None, str | None]] = {}
        try:  # the full listing, when snapshot_download left one
            from huggingface_hub._tree_cache import read_tree_cache

            tree = read_tree_cache(str(storage), sha)
        except Exception:  # noqa: BLE001 - private helper: absent or changed means "no listing"
            tree = None
        if tree:
            entries = {k: (v.size, v.lfs_sha256, v.blob_id) for k, v in tree.items()}
        snap = storage / "snapshots" / sha
        if snap.is_dir():
            for p in snap.rglob("*"):
                if p.is_file():
                    entries.setdefault(p.relative_to(snap).as_posix(), (p.stat().st_size, None, None))
        if not entries:
            raise SourceError(
                f"HF_HUB_OFFLINE is set and commit {sha[:12]} is not in the local HF cache ({self.cache_dir})",
                self.label,
            )
        self._offline_listing = not tree
        return sha, entries

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
        from huggingface_hub import try_to_load_from_cache

        try:
            hit = try_to_load_from_cache(self.repo_id, full, cache_dir=self.cache_dir, revision=self._sha)
        except ValueError:
            return None
        return hit if isinstance(hit, str) and os.path.isfile(hit) else None

    def local_path(self, path: str) -> Path | None:
        full, _ = self._entry(path)
        hit = self._cached(full)
        return Path(hit) if hit else None

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
        if verify and not _matches(tmp, sha256, blob_id):
            tmp.unlink()
            raise NetworkError("downloaded bytes do not match the Hub's checksum", self._where(path))
        os.replace(tmp, dest)
        return dest

    def _entries_of(self, full: str) -> tuple[int | None, str | None, str | None]:
        assert self._entries is not None
        return self._entries.get(full, (None, None, None))

    # ---- HTTP ------------------------------------------------------------------------------------
    def _sleep_for(self, failures: int, wait: float | None) -> float:
        if wait is not None:
            return min(wait, self.max_retry_after)
        # jitter: many connections failing together do not all come back at the same instant
        return min(self.max_backoff, self.backoff * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)

    def _retrying(self, fn: Callable, what: str, path: str | None = None):
        """``fn()`` with retries on transient failures; HTTP errors mapped to ckptkit errors."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        failures = 0
        while True:
            try:
                return fn()
            except OfflineModeIsEnabled as e:
                raise SourceError(f"offline mode is enabled: {e}", self.label) from None
            except HfHubHTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                if status not in _RETRY_STATUS:
                    raise self._http_error(e, path) from None
                reason, wait = f"HTTP {status}", _retry_after(e.response)
            except httpx2.TransportError as e:
                reason, wait = f"{type(e).__name__}: {e}".rstrip(": "), None
            except httpx2.HTTPError as e:  # redirect loops, undecodable bodies: not transient
                raise NetworkError(f"{what}: {type(e).__name__}: {e}", self.label) from None
            failures += 1
            if failures > self.retries:
                raise NetworkError(
                    f"{what} failed {failures} times, last: {reason}", self._where(path) if path else self.label
                ) from None
            time.sleep(self._sleep_for(failures, wait))

    def _http_error(self, e, path: str | None) -> Exception:
        from huggingface_hub.errors import (
            GatedRepoError,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        status = e.response.status_code if e.response is not None else 0
        where = self._where(path) if path else self.label
        if isinstance(e, RevisionNotFoundError):
            return SourceError(f"revision {self.revision!r} not found on {self.endpoint}", self.label)
        if isinstance(e, RemoteEntryNotFoundError):
            return SourceError(f"file not found on {self.endpoint}", where)
        if status in (401, 403) or isinstance(e, GatedRepoError):
            return SourceError(
                f"access denied (HTTP {status}): the repo is private or gated, or does not exist; "
                "set HF_TOKEN to a token that can read it", where,
            )
        if isinstance(e, RepositoryNotFoundError) or status == 404:
            return SourceError(f"repository not found on {self.endpoint}", self.label)
        msg = (getattr(e, "server_message", None) or "").splitlines()
        return SourceError(f"HTTP {status} from {self.endpoint}" + (f": {msg[0]}" if msg else ""), where)

    def _get(self, full: str, start: int, end: int | None, write: Callable[[bytes], object], path: str,
             check: bool = True) -> int | None:
        """Bytes ``[start, end)`` of ``full`` (``end`` None = to EOF) passed to ``write`` in order,
        each byte once; resumes after a broken body. Returns the file size from Content-Range.
        With ``check`` the bytes also go to the file's checksum (ChecksumError on a mismatch)."""
        import httpx2
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        url = hf_hub_url(self._remote_id, full, revision=self._sha, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token, library_name="ckptkit")
        headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets into the file
        timeout = httpx2.Timeout(self.timeout)
        got = 0
        total: int | None = None

        def attempt() -> bool:
            """One GET; True when the range is complete (or the file ended)."""
            nonlocal got, total
            pos = start + got
            headers["Range"] = f"bytes={pos}-{end - 1}" if end is not None else f"bytes={pos}-"
            with get_session().stream("GET", url, headers=headers, timeout=timeout) as r:
                if r.status_code in _RETRY_STATUS:
                    raise _Retry(f"HTTP {r.status_code}", _retry_after(r))
                if r.status_code == 416:
                    m = re.search(r"/(\d+)", r.headers.get("Content-Range", ""))
                    total = int(m.group(1)) if m else total
                    return True  # nothing at or after pos: the file ended
                if r.status_code >= 400:
                    r.read()
                    hf_raise_for_status(r)
                skip = 0
                expect: int | None
                if r.status_code == 206:
                    m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", "").strip())
                    if m is None or int(m.group(1)) != pos:
                        raise NetworkError(
                            f"server answered range {r.headers.get('Content-Range')!r} to {headers['Range']!r}",
                            self._where(path),
                        )
                    if m.group(3) != "*":
                        total = int(m.group(3))
                    expect = int(m.group(2)) + 1 - pos
                elif r.status_code == 200:  # range ignored: the whole file follows
                    skip = pos
                    cl = r.headers.get("Content-Length")
                    total = int(cl) if cl and cl.isdigit() else total
                    expect = (total - pos) if total is not None else None
                else:
                    raise NetworkError(f"unexpected HTTP {r.status_code}", self._where(path))
                if end is not None and expect is not None:
                    expect = min(expect, end - pos)
                received = 0
                for chunk in r.iter_bytes():
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if end is not None and start + got + len(chunk) > end:
                        chunk = chunk[: end - start - got]
                    if chunk:
                        if check:
                            self.digests.feed(full, *self._entries_of(full), start + got, chunk, self._where(path))
                        write(chunk)
                        got += len(chunk)
                        received += len(chunk)
                    if end is not None and start + got >= end:
                        return True
                if expect is not None and received < expect:
                    raise _Retry(f"body ended after {received} of {expect} bytes")
                return True

        failures = 0
        while True:
            before = got
            try:
                if attempt():
                    return total
            except OfflineModeIsEnabled as e:
                raise SourceError(f"offline mode is enabled: {e}", self._where(path)) from None
            except HfHubHTTPError as e:  # only statuses that are not worth retrying get here
                raise self._http_error(e, path) from None
            except _Retry as e:
                reason, wait = e.reason, e.wait
            except httpx2.TransportError as e:  # connect, timeout, reset, truncated body
                reason, wait = f"{type(e).__name__}: {e}".rstrip(": "), None
            except httpx2.HTTPError as e:  # redirect loops, undecodable bodies: not transient
                raise NetworkError(f"reading: {type(e).__name__}: {e}", self._where(path)) from None
            if got > before:
                failures = 0  # progress: the budget is per stall, as in huggingface_hub's http_get
            failures += 1
            if failures > self.retries:
                raise NetworkError(f"reading failed {failures} times, last: {reason}", self._where(path)) from None
            time.sleep(self._sleep_for(failures, wait))


def _retry_after(response) -> float | None:
    value = (response.headers.get("Retry-After") or "").strip() if response is not None else ""
    return float(value) if value.isdigit() else None


def _matches(path: Path, sha256: str | None, blob_id: str | None) -> bool:
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
