"""A local stand-in for the Hugging Face Hub: a real HTTP/1.1 server speaking the subset of the Hub
protocol that huggingface_hub uses for model repos (model info, tree listing, refs, paths-info,
HEAD/GET ``/resolve`` with ranges, redirects, auth errors), plus instrumentation and fault injection.

Usable from tests (see fx_hub.py) and from plain scripts::

    server = HubServer()                      # binds 127.0.0.1:<free port> and serves in a thread
    server.add_repo("org/name", {"config.json": b"{}", "model.safetensors": VirtualFile(head, 700 << 30)})
    os.environ["HF_ENDPOINT"] = server.url    # before importing huggingface_hub
    ...
    server.close()
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["VirtualFile", "HubServer", "Fault", "RequestRecord"]

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_HEX40 = re.compile(r"[0-9a-f]{40}")
# Suffixes the Hub's default .gitattributes routes to LFS.
_LFS_SUFFIXES = {
    ".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz",
    ".npy", ".pkl", ".model", ".tflite", ".ot", ".arrow", ".parquet", ".zip", ".gz", ".tar",
}
_LFS_MIN_SIZE = 10 << 20
# VirtualFiles up to this size get their true sha256; bigger ones a stand-in (see _Blob).
_VIRTUAL_HASH_LIMIT = 64 << 20


@dataclass(frozen=True)
class VirtualFile:
    """A file of ``size`` bytes: ``prefix`` followed by zeros made up on the fly, never stored."""

    prefix: bytes
    size: int

    def __post_init__(self):
        if self.size < len(self.prefix):
            raise ValueError("VirtualFile size is smaller than its prefix")

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` in pieces of at most 1 MiB."""
        pos = start
        while pos < end:
            if pos < len(self.prefix):
                piece = self.prefix[pos : min(end, len(self.prefix), pos + _CHUNK)]
            else:
                piece = _ZEROS[: min(end - pos, _CHUNK)]
            yield piece
            pos += len(piece)

    def read(self, start: int, end: int) -> bytes:
        return b"".join(self.chunks(start, end))


class _Blob:
    """One file's content and the identifiers the Hub derives from it."""

    def __init__(self, data: bytes | VirtualFile | Path, lfs: bool | None, name: str):
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        self.data = data
        if isinstance(data, bytes):
            self.size = len(data)
        elif isinstance(data, VirtualFile):
            self.size = data.size
        elif isinstance(data, Path):
            self.size = data.stat().st_size
        else:
            raise TypeError(f"{name}: file content must be bytes, VirtualFile or Path, not {type(data).__name__}")
        if lfs is None:
            lfs = (
                isinstance(data, VirtualFile)
                or Path(name).suffix.lower() in _LFS_SUFFIXES
                or self.size >= _LFS_MIN_SIZE
            )
        self.lfs = lfs
        if isinstance(data, VirtualFile) and self.size > _VIRTUAL_HASH_LIMIT:
            # A content hash of 700 GB of zeros is not worth computing: derive a stable stand-in.
            digest = hashlib.sha256(b"virtual\0" + data.prefix + str(data.size).encode()).hexdigest()
        else:
            h = hashlib.sha256()
            for piece in self.chunks(0, self.size):
                h.update(piece)
            digest = h.hexdigest()
        self.sha256 = digest
        if lfs:
            self.pointer = (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {self.size}\n"
            ).encode()
            self.blob_id = _git_blob_sha1(self.pointer)
            self.etag = digest
        else:
            self.pointer = None
            content = b"".join(self.chunks(0, self.size))
            self.blob_id = _git_blob_sha1(content)
            self.etag = self.blob_id

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        if isinstance(self.data, bytes):
            for pos in range(start, end, _CHUNK):
                yield self.data[pos : min(end, pos + _CHUNK)]
        elif isinstance(self.data, VirtualFile):
            yield from self.data.chunks(start, end)
        else:
            with open(self.data, "rb") as f:
                f.seek(start)
                pos = start
                while pos < end:
                    piece = f.read(min(_CHUNK, end - pos))
                    if not piece:
                        raise OSError(f"{self.data} shrank while being served")
                    yield piece
                    pos += len(piece)


def _git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class _Commit:
    sha: str
    files: dict[str, _Blob]
    date: str


@dataclass
class _Repo:
    repo_id: str
    private: bool = False
    gated: bool = False
    token: str | None = None
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """A misbehaviour for requests whose decoded path matches ``pattern`` (a regex, searched).

    kinds: ``status`` (answer ``status`` with an optional ``Retry-After``, and ``body`` instead of the
    usual JSON error when given), ``reset`` (TCP reset after
    ``after_bytes`` body bytes; 0 = before any response), ``short`` (announce the full Content-Length,
    send ``after_bytes`` bytes, close), ``stall`` (wait ``seconds`` before answering, or mid-body after
    ``after_bytes`` bytes when that is > 0: part of the body, then silence), ``corrupt`` (the byte at
    file offset ``after_bytes`` is sent with its bits flipped, headers untouched; a response that does
    not include that byte passes unchanged and is not counted). Fires ``times`` times (None = always).
    """

    pattern: str
    kind: str
    times: int | None = 1
    method: str | None = "GET"
    status: int = 503
    retry_after: int | None = None
    after_bytes: int = 0
    seconds: float = 0.0
    body: bytes | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.pattern, path) is not None


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # percent-decoded, without the query
    query: str
    range: str | None
    authorization: bool


class HubServer:
    """The local Hub. Thread-safe; every public method may be called while it serves."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        lfs_redirect: bool = False,
        cdn_host: str = "localhost",
        start: bool = True,
    ):
        self.latency = latency
        #: when True, /resolve answers LFS files with a 302 to /cdn/<sha256>, as the Hub does.
        self.lfs_redirect = lfs_redirect
        #: host name used in CDN redirect URLs: "localhost" is another origin than 127.0.0.1, so
        #: clients treat it like the Hub's CDN (no auth forwarded, metadata read from the 302).
        self.cdn_host = cdn_host
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._renamed: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._bytes_sent = 0
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._opened = 0  # connections accepted since reset_stats
        self._httpd = _Server((host, port), _Handler)
        self._httpd.hub = self
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}"

    endpoint = url

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="hubserver", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake stalled handlers and drop open connections."""
        self._stop.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- repos -----------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | VirtualFile | Path],
        *,
        private: bool = False,
        gated: bool = False,
        token: str | None = None,
        lfs: dict[str, bool] | None = None,
        branch: str = "main",
    ) -> str:
        """Create (or replace) ``repo_id`` with one commit on ``branch``; returns its commit sha."""
        if (private or gated) and not token:
            raise ValueError("a private or gated repo needs the token that unlocks it")
        with self._lock:
            self._repos[repo_id] = _Repo(repo_id, private=private, gated=gated, token=token)
            self._renamed = {k: v for k, v in self._renamed.items() if k != repo_id}
            return self.add_commit(repo_id, files, branch=branch, lfs=lfs, parent=None)

    def add_repo_from_dir(self, repo_id: str, path: str | Path, **kwargs) -> str:
        """Register every file under ``path`` (served from disk, not loaded into memory)."""
        root = Path(path)
        files: dict[str, bytes | VirtualFile | Path] = {}
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and ".git" not in rel.parts and ".cache" not in rel.parts:
                files[rel.as_posix()] = p
        if not files:
            raise ValueError(f"{root}: no files to serve")
        return self.add_repo(repo_id, files, **kwargs)

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes | VirtualFile | Path],
        *,
        branch: str = "main",
        lfs: dict[str, bool] | None = None,
        parent: str | None = "branch",
    ) -> str:
        """A new commit holding exactly ``files``; moves ``branch`` to it. Returns the commit sha."""
        lfs = lfs or {}
        blobs = {
            name.strip("/"): _Blob(data, lfs.get(name), name) for name, data in sorted(files.items())
        }
        with self._lock:
            repo = self._repos[repo_id]
            if parent == "branch":
                parent = repo.branches.get(branch)
            h = hashlib.sha1(f"{repo_id}\0{parent}\0{len(repo.commits)}\0".encode())
            for name, blob in blobs.items():
                h.update(f"{name}\0{blob.etag}\0{blob.size}\0".encode())
            sha = h.hexdigest()
            date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1_700_000_000 + len(repo.commits) * 60))
            repo.commits[sha] = _Commit(sha, blobs, date)
            repo.branches[branch] = sha
            return sha

    def tag(self, repo_id: str, name: str, sha: str | None = None) -> str:
        """Point tag ``name`` at ``sha`` (default: main's head)."""
        with self._lock:
            repo = self._repos[repo_id]
            sha = sha or repo.branches["main"]
            if sha not in repo.commits:
                raise KeyError(sha)
            repo.tags[name] = sha
            return sha

    def branch(self, repo_id: str, name: str, sha: str | None = None) -> str:
        with self._lock:
            repo = self._repos[repo_id]
            sha = sha or repo.branches["main"]
            repo.branches[name] = sha
            return sha

    def rename_repo(self, old: str, new: str) -> None:
        """Move a repo; requests naming ``old`` get a 307 to ``new``, as on the Hub."""
        with self._lock:
            repo = self._repos.pop(old)
            repo.repo_id = new
            self._repos[new] = repo
            self._renamed[old] = new

    def remove_repo(self, repo_id: str) -> None:
        with self._lock:
            self._repos.pop(repo_id, None)

    def head_sha(self, repo_id: str, ref: str = "main") -> str:
        with self._lock:
            repo = self._repos[repo_id]
            return repo.branches.get(ref) or repo.tags[ref]

    def file_bytes(self, repo_id: str, path: str, start: int = 0, end: int | None = None, ref: str = "main") -> bytes:
        """The bytes the server would send for ``path`` (for byte-exact assertions)."""
        with self._lock:
            repo = self._repos[repo_id]
            sha = ref if ref in repo.commits else (repo.branches.get(ref) or repo.tags[ref])
            blob = repo.commits[sha].files[path]
        return b"".join(blob.chunks(start, blob.size if end is None else end))

    # ---- faults and stats ------------------------------------------------------------------
    def fail(self, pattern: str, kind: str, *, times: int | None = 1, method: str | None = "GET", **kw) -> Fault:
        """Add a fault rule (see Fault); rules are tried in the order they were added."""
        if kind not in ("status", "reset", "short", "stall", "corrupt"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(pattern, kind, times=times, method=method, **kw)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._bytes_sent = 0
            self._opened = 0

    def reset(self) -> None:
        """Stats, faults, latency and redirect mode back to defaults (repos are kept)."""
        self.reset_stats()
        self.clear_faults()
        self.latency = 0.0
        self.lfs_redirect = False

    @property
    def connections_opened(self) -> int:
        """Connections accepted since the last reset_stats (kept-alive ones count once)."""
        with self._lock:
            return self._opened

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._bytes_sent

    def count(self, method: str | None = None, contains: str | None = None) -> int:
        """How many requests matched ``method`` and had ``contains`` in their decoded path."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and (contains is None or contains in r.path)
        )

    # ---- internals used by the handler -----------------------------------------------------
    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._requests.append(rec)

    def _sent(self, n: int) -> None:
        with self._lock:
            self._bytes_sent += n

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.kind != "corrupt":  # counted when a body holding its byte is sent
                        fault.hits += 1
                    return fault
        return None

    def _lookup(self, segments: list[str]) -> tuple[str | None, _Repo | None, list[str]]:
        """Split path segments into (repo id as written, repo, rest); handles 1- and 2-part ids."""
        with self._lock:
            for n in (2, 1):
                if len(segments) < n:
                    continue
                rid = "/".join(segments[:n])
                if rid in self._repos or rid in self._renamed:
                    return rid, self._repos.get(rid), segments[n:]
        return None, None, segments


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops the SYNs of a client opening dozens of connections
    # at once, which then waits a 1 s retransmit: a stall the real Hub does not have.
    request_queue_size = 128
    hub: HubServer

    def handle_error(self, request, client_address):
        # Clients dropping connections (timeouts, injected resets) are expected; stay quiet.
        pass


class _Abort(Exception):
    """Stop handling this request and drop the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ckptkit-hubserver/1"
    server: _Server

    # ---- plumbing --------------------------------------------------------------------------
    def setup(self):
        super().setup()
        with self.server.hub._lock:
            self.server.hub._conns.add(self.connection)
            self.server.hub._opened += 1

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.hub._lock:
                self.server.hub._conns.discard(self.connection)

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self._method = method
        self._query = parse_qs(parts.query)
        self._raw_query = parts.query
        self._body_in = b""
        if method == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            self._body_in = self.rfile.read(n) if n else b""
        hub._record(
            RequestRecord(method, path, parts.query, self.headers.get("Range"), "authorization" in self.headers)
        )
        self._fault = hub._take_fault(method, path)
        try:
            if hub.latency:
                hub._stop.wait(hub.latency)
            if self._fault is not None:
                self._pre_fault(self._fault)
            self._route(parts.path)
        except _Done:
            pass
        except _Abort:
            self.close_connection = True
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _pre_fault(self, fault: Fault) -> None:
        if fault.kind == "stall" and fault.after_bytes <= 0:
            self.server.hub._stop.wait(fault.seconds)
        elif fault.kind == "reset" and fault.after_bytes <= 0:
            self._reset()
        elif fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.body is not None:  # an arbitrary (e.g. malformed) answer
                self._send(fault.status, {"Content-Type": "application/json", **headers}, fault.body)
            else:
                self._error(fault.status, None, f"Injected error {fault.status}", headers)
            raise _Done

    def _reset(self) -> None:
        """Abort the TCP connection with a RST, as a crashed proxy would."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        raise _Abort

    def _send(self, status: int, headers: dict[str, str], body: Iterator[bytes] | bytes = b"",
              length: int | None = None):
        if isinstance(body, bytes):
            length = len(body)
            body = iter([body]) if body else iter(())
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if self._method == "HEAD":
            return
        fault = self._fault if self._fault is not None and self._fault.kind in ("reset", "short", "stall") else None
        limit = None
        if fault is not None and (fault.after_bytes > 0 or fault.kind == "short"):
            limit = fault.after_bytes
        sent = 0
        hub = self.server.hub
        for piece in body:
            if limit is not None and sent + len(piece) >= limit:
                piece = piece[: limit - sent]
                if piece:
                    hub._sent(len(piece))   # counted before the client can see it: no race with reset_stats
                    self.wfile.write(piece)
                    sent += len(piece)
                if fault.kind == "stall":
                    hub._stop.wait(fault.seconds)
                    limit = None
                    continue
                if fault.kind == "reset":
                    self._reset()
                # short: close cleanly, leaving the body incomplete
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                raise _Abort
            hub._sent(len(piece))
            self.wfile.write(piece)
            sent += len(piece)

    def _json(self, status: int, obj, headers: dict[str, str] | None = None):
        body = json.dumps(obj).encode()
        self._send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._json(status, {"error": message}, h)

    def _redirect(self, status: int, location: str, headers: dict[str, str] | None = None):
        self._send(status, {"Location": location, **(headers or {})}, b"")

    # ---- routing ---------------------------------------------------------------------------
    def _route(self, raw_path: str) -> None:
        try:
            self._route_inner(raw_path)
        except _Done:
            pass

    def _route_inner(self, raw_path: str) -> None:
        segments = [unquote(s) for s in raw_path.split("/")[1:]]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments = segments[:-1]
        if segments[:1] == ["cdn"] and len(segments) == 2:
            return self._cdn(segments[1])
        if segments == ["api", "agent-harnesses"]:
            # huggingface_hub fetches this registry once a day (unless telemetry is disabled)
            return self._json(200, {"standardEnvVars": ["AI_AGENT", "AGENT"], "harnesses": {}})
        if segments[:2] == ["api", "models"]:
            return self._api(raw_path, segments[2:])
        rid, repo, rest = self.server.hub._lookup(segments)
        if rid is not None and rest[:1] == ["resolve"]:
            return self._resolve(raw_path, rid, repo, rest[1:])
        if rid is not None and repo is None:
            return self._moved(raw_path, rid)
        self._error(404, None, "Not Found")

    def _moved(self, raw_path: str, rid: str) -> None:
        new = self.server.hub._renamed[rid]
        old_enc, new_enc = quote(rid), quote(new)
        idx = raw_path.find(old_enc)
        location = raw_path[:idx] + new_enc + raw_path[idx + len(old_enc) :]
        if self._raw_query:
            location += "?" + self._raw_query
        self._redirect(307, location)

    def _authorize(self, repo: _Repo) -> None:
        if not (repo.private or repo.gated):
            return
        auth = self.headers.get("Authorization", "")
        if auth == f"Bearer {repo.token}":
            return
        if repo.gated:
            if auth:
                self._error(403, "GatedRepo", "Access to model is restricted and you are not in the authorized list.")
            else:
                self._error(401, "GatedRepo", "Access to model is restricted. You must have access to it "
                            "and be authenticated to access it.")
        elif auth:
            self._error(401, None, "Invalid credentials in Authorization header")
        else:
            self._error(401, "RepoNotFound", "Repository not found")
        raise _Done

    def _revision(self, repo: _Repo, rev: str) -> _Commit:
        sha = repo.branches.get(rev) or repo.tags.get(rev)
        if sha is None and _HEX40.fullmatch(rev) and rev in repo.commits:
            sha = rev
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            raise _Done
        return repo.commits[sha]

    def _repo_or_404(self, raw_path: str, rid: str | None, repo: _Repo | None) -> _Repo:
        if rid is None:
            self._error(404, "RepoNotFound", "Repository not found")
            raise _Done
        if repo is None:
            self._moved(raw_path, rid)
            raise _Done
        self._authorize(repo)
        return repo

    # ---- /api/models -----------------------------------------------------------------------
    def _api(self, raw_path: str, segments: list[str]) -> None:
        rid, repo, rest = self.server.hub._lookup(segments)
        repo = self._repo_or_404(raw_path, rid, repo)
        if not rest:
            return self._model_info(repo, self._revision(repo, "main"))
        if rest[0] == "revision" and len(rest) >= 2:
            return self._model_info(repo, self._revision(repo, "/".join(rest[1:])))
        if rest[0] == "tree" and len(rest) >= 2:
            # revision is one percent-encoded segment (quote(rev, safe="")); the path follows
            commit = self._revision(repo, rest[1])
            return self._tree(repo, commit, "/".join(rest[2:]))
        if rest[0] == "paths-info" and len(rest) >= 2 and self._method == "POST":
            return self._paths_info(repo, self._revision(repo, "/".join(rest[1:])))
        if rest == ["refs"]:
            return self._refs(repo)
        self._error(404, None, "Not Found")

    def _model_info(self, repo: _Repo, commit: _Commit) -> None:
        blobs = self._query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for name, blob in commit.files.items():
            entry: dict = {"rfilename": name}
            if blobs:
                entry["size"] = blob.size
                entry["blobId"] = blob.blob_id
                if blob.lfs:
                    entry["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
            siblings.append(entry)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": "2023-11-14T22:13:20.000Z",
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": siblings,
            "usedStorage": sum(b.size for b in commit.files.values()),
        }
        self._json(200, info)

    def _tree_entry(self, name: str, blob: _Blob) -> dict:
        entry = {"type": "file", "oid": blob.blob_id, "size": blob.size, "path": name}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        return entry

    @staticmethod
    def _folder_entry(path: str, commit: _Commit) -> dict:
        oid = hashlib.sha1(f"tree\0{commit.sha}\0{path}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def _tree(self, repo: _Repo, commit: _Commit, sub: str) -> None:
        recursive = self._query.get("recursive", ["false"])[0].lower() in ("1", "true")
        sub = sub.strip("/")
        prefix = sub + "/" if sub else ""
        if sub and sub in commit.files:
            self._error(404, "EntryNotFound", f"{sub} is a file, not a folder", {"X-Repo-Commit": commit.sha})
            return
        names = [n for n in commit.files if n.startswith(prefix)]
        if sub and not names:
            self._error(404, "EntryNotFound", f"{sub} does not exist on \"{commit.sha}\"",
                        {"X-Repo-Commit": commit.sha})
            return
        out, folders = [], set()
        for name in names:
            rel = name[len(prefix) :].split("/")
            for depth in range(1, len(rel)):
                folder = prefix + "/".join(rel[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    out.append(self._folder_entry(folder, commit))
            if recursive or len(rel) == 1:
                out.append(self._tree_entry(name, commit.files[name]))
        self._json(200, out, {"X-Repo-Commit": commit.sha})

    def _paths_info(self, repo: _Repo, commit: _Commit) -> None:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(self._body_in or b"{}").get("paths", [])
        else:
            paths = parse_qs(self._body_in.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(self._tree_entry(p, commit.files[p]))
            elif any(n.startswith(p + "/") for n in commit.files):
                out.append(self._folder_entry(p, commit))
        self._json(200, out)

    def _refs(self, repo: _Repo) -> None:
        def ref(kind, name, sha):
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        self._json(
            200,
            {
                "branches": [ref("heads", n, s) for n, s in repo.branches.items()],
                "tags": [ref("tags", n, s) for n, s in repo.tags.items()],
                "converts": [],
                "pullRequests": [],
            },
        )

    # ---- /resolve and /cdn -----------------------------------------------------------------
    def _resolve(self, raw_path: str, rid: str, repo: _Repo | None, rest: list[str]) -> None:
        repo = self._repo_or_404(raw_path, rid, repo)
        if len(rest) < 2:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        commit = self._revision(repo, rest[0])
        name = "/".join(rest[1:])
        blob = commit.files.get(name)
        if blob is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
            return
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{Path(name).name}"',
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
            if self.server.hub.lfs_redirect:
                hub = self.server.hub
                location = f"http://{hub.cdn_host}:{hub.port}/cdn/{blob.sha256}?filename={quote(Path(name).name)}"
                self._redirect(302, location, headers)
                return
        self._serve_blob(blob, headers)

    def _cdn(self, sha256: str) -> None:
        with self.server.hub._lock:
            blob = next(
                (
                    b
                    for r in self.server.hub._repos.values()
                    for c in r.commits.values()
                    for b in c.files.values()
                    if b.lfs and b.sha256 == sha256
                ),
                None,
            )
        if blob is None:
            self._send(404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>")
            return
        self._serve_blob(blob, {"ETag": f'"{blob.sha256}"', "Accept-Ranges": "bytes",
                                "Content-Type": "application/octet-stream"})

    def _serve_blob(self, blob: _Blob, headers: dict[str, str]) -> None:
        size = blob.size
        rng = _parse_range(self.headers.get("Range"), size)
        if rng is None:
            self._send(200, headers, self._corrupted(blob.chunks(0, size), 0, size), size)
        elif rng == "unsatisfiable":
            self._send(416, {**headers, "Content-Range": f"bytes */{size}"}, b"")
        else:
            start, end = rng
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
            self._send(206, headers, self._corrupted(blob.chunks(start, end), start, end), end - start)

    def _corrupted(self, chunks: Iterator[bytes], start: int, end: int) -> Iterator[bytes]:
        """The body with the byte a ``corrupt`` fault names flipped, when the body holds it."""
        fault = self._fault
        if fault is None or fault.kind != "corrupt":
            yield from chunks
            return
        with self.server.hub._lock:
            # taken only by a body that holds the byte, checked and counted at once: concurrent
            # ranged requests of one file must not take it from each other
            take = start <= fault.after_bytes < end and (fault.times is None or fault.hits < fault.times)
            if take:
                fault.hits += 1
        if not take:
            self._fault = None
            yield from chunks
            return
        pos = start
        for piece in chunks:
            i = fault.after_bytes - pos
            if 0 <= i < len(piece):
                piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1 :]
            pos += len(piece)
            yield piece


class _Done(Exception):
    """The response has been sent."""


def _parse_range(value: str | None, size: int):
    """(start, end exclusive), "unsatisfiable", or None to serve the whole file."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value, re.IGNORECASE)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: RFC 9110 allows ignoring the header
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end
