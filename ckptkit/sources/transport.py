"""GETs made with the standard library, for the bulk of a repo's bytes.

huggingface_hub's HTTP client parses bodies in pure Python (h11): reading 442 MB from a local
server cost 0.5–0.7 s of CPU there against 0.1 s with ``http.client``, whose responses read straight
from the socket into the returned bytes. Ranged reads (http.py's ``get_range``) therefore go through
this module when they can, keeping one persistent connection per thread and origin; they keep going
through huggingface_hub's client when a proxy is configured (its rules for proxies are not redone
here), when ``CKPTKIT_HTTP=library``, and for any answer that needs its error types (an HTTP error
status is asked again through it, so that the error a user sees is the one it reports).

Redirects are followed as HTTP clients do (at most 10; the Authorization header is dropped when
one leaves the origin, as the Hub's redirects to its CDN do). HTTPS uses certifi's certificates
when installed (as huggingface_hub's client does), else the system's; ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` override both.
"""
from __future__ import annotations

import http.client
import os
import ssl
import threading
from urllib.parse import urljoin, urlsplit

ENV_TRANSPORT = "CKPTKIT_HTTP"  # "library": every request through huggingface_hub's client
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
MAX_REDIRECTS = 10
_REDIRECT = frozenset({301, 302, 303, 307, 308})
# What a broken connection or body raises here: every one is worth a retry.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class ConnectTimeout(TimeoutError):
    """No connection within the timeout (a TimeoutError raised later is a read's)."""


class RedirectLoop(Exception):
    """More than MAX_REDIRECTS redirects in a row."""


def usable(url: str) -> bool:
    """Whether ``url`` may be fetched here rather than through huggingface_hub's client."""
    if _tls_refused or os.environ.get(ENV_TRANSPORT, "").strip().lower() in ("library", "huggingface_hub", "httpx"):
        return False
    if any(os.environ.get(k) for k in PROXY_VARS):
        return False
    u = urlsplit(url)
    return u.scheme in ("http", "https") and bool(u.hostname)


_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()
_tls_refused = False  # a certificate this machine's store could not verify: the library from then on


class UseLibrary(Exception):
    """This request (and, after a TLS failure, every later one) goes through huggingface_hub's client."""


def _ssl_context() -> ssl.SSLContext:
    global _context
    with _context_lock:
        if _context is None:  # the system's store (SSL_CERT_FILE / SSL_CERT_DIR honoured by OpenSSL)
            _context = ssl.create_default_context()
        return _context


_local = threading.local()
Origin = tuple[str, str, int | None]


def _pool() -> dict[Origin, http.client.HTTPConnection]:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    return pool


def _forget_connections() -> None:
    """In a forked child (forked.py): no connection of the parent's is used, its sockets stay its own."""
    _local.pool = {}


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_connections)


def _connect(origin: Origin, timeout: float) -> http.client.HTTPConnection:
    scheme, host, port = origin
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=_ssl_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


class Reply:
    """A response whose body is read with ``read``; ``release`` hands its connection back for
    the next request of this thread when the body was read to its end (also when the reader
    stopped at its last byte without asking for more), else closes it."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, origin: Origin):
        self._conn, self._resp, self._origin = conn, resp, origin
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body, what one receive gives (b"" at its end): bytes that
        arrived before a stall are returned, not lost with the timeout."""
        return self._resp.read1(n)

    def body(self, limit: int) -> bytes:
        """The whole body; ValueError past ``limit`` bytes, IncompleteRead when it ends before
        its Content-Length."""
        parts, n = [], 0
        while chunk := self.read(1 << 20):
            n += len(chunk)
            if n > limit:
                raise ValueError(f"the answer is larger than {limit >> 20} MB")
            parts.append(chunk)
        length = self.header("Content-Length")
        if length and length.isdigit() and int(length) != n:
            raise http.client.IncompleteRead(b"", int(length) - n)
        return b"".join(parts)

    def release(self) -> None:
        resp, conn = self._resp, self._conn
        if not resp.isclosed() and resp.length == 0:
            resp.read()  # the body was read to its end (a range's last byte): mark the answer done
        if resp.isclosed() and not resp.will_close:
            _pool()[self._origin] = conn
        else:
            resp.close()
            conn.close()


def _request(origin: Origin, target: str, headers: dict[str, str], timeout: float) -> Reply:
    """One GET on this thread's connection to ``origin`` (a fresh one when a kept connection
    turns out closed by the server before answering)."""
    global _tls_refused
    kept = _pool().pop(origin, None)
    for conn in ([kept] if kept is not None else []) + [None]:
        fresh = conn is None
        c = _connect(origin, timeout) if conn is None else conn
        c.timeout = timeout
        if c.sock is not None:
            c.sock.settimeout(timeout)
        if c.sock is None:
            try:
                c.connect()
            except TimeoutError:
                c.close()
                raise ConnectTimeout(f"no connection to {origin[1]} within {timeout:g} s") from None
            except ssl.SSLCertVerificationError:
                # the system's certificates may lack what huggingface_hub's client bundles (certifi)
                _tls_refused = True
                c.close()
                raise UseLibrary from None
        try:
            c.request("GET", target, headers=headers)
            return Reply(c, c.getresponse(), origin)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            c.close()
            if fresh:
                raise
        except BaseException:
            c.close()
            raise
    raise AssertionError("unreachable")


def get_once(url: str, headers: dict[str, str], timeout: float) -> Reply:
    """GET ``url`` without following a redirect. Raises TRANSPORT_ERRORS."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise http.client.InvalidURL(f"cannot fetch {url!r}")
    return _request((u.scheme, u.hostname, u.port), (u.path or "/") + (f"?{u.query}" if u.query else ""),
                    headers, timeout)


def get(url: str, headers: dict[str, str], timeout: float) -> Reply:
    """GET ``url``, following redirects. Raises TRANSPORT_ERRORS or RedirectLoop."""
    headers = dict(headers)
    first = urlsplit(url)
    for _ in range(MAX_REDIRECTS + 1):
        u = urlsplit(url)
        if (u.scheme, u.hostname, u.port) != (first.scheme, first.hostname, first.port):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        reply = get_once(url, headers, timeout)
        location = reply.header("Location")
        if reply.status not in _REDIRECT or not location:
            return reply
        reply.read(1 << 16)  # a redirect's body is short or empty: read it so the connection stays usable
        reply.release()
        url = urljoin(url, location)
    raise RedirectLoop(f"more than {MAX_REDIRECTS} redirects")
