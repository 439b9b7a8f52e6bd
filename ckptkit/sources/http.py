"""The one retry core behind every Hub request, and ranged GETs that resume where they broke.

Requests use huggingface_hub's headers and error types, and its shared client except for the
bodies of ranged reads, which transport.py reads with the standard library when it can; retries
and resumption are ckptkit's own because huggingface_hub's helpers neither resume ranged reads nor
bound their total wait.
"""
from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import NetworkError, SourceError
from . import transport

ENV_TIMEOUT = "CKPTKIT_HUB_TIMEOUT"  # seconds without progress before a request is abandoned
ENV_HF_TIMEOUT = "HF_HUB_DOWNLOAD_TIMEOUT"  # huggingface_hub's own, honoured when ours is not set
ENV_RETRIES = "CKPTKIT_HUB_RETRIES"  # attempts after the first, per read, reset by progress
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 5
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_HEX40 = re.compile(r"[0-9a-f]{40}")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request may stall (``timeout``), how many failures in a row it survives
    (``retries``), and how long to wait between them: backoff with jitter doubling from
    ``backoff`` up to ``max_backoff``, or a server's Retry-After up to ``max_retry_after``."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0

    @classmethod
    def from_env(cls, timeout: float | None = None, retries: int | None = None, **kw: float) -> RetryPolicy:
        """Explicit values, else CKPTKIT_HUB_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT and
        CKPTKIT_HUB_RETRIES as they are now, else the defaults."""
        t = float(timeout if timeout is not None else os.environ.get(ENV_TIMEOUT)
                  or os.environ.get(ENV_HF_TIMEOUT) or DEFAULT_TIMEOUT)
        r = int(retries if retries is not None else os.environ.get(ENV_RETRIES) or DEFAULT_RETRIES)
        return cls(timeout=t, retries=r, **kw)

    def sleep_for(self, failures: int, wait: float | None) -> float:
        if wait is not None:
            return min(wait, self.max_retry_after)
        # jitter: many connections failing together do not all come back at the same instant
        return min(self.max_backoff, self.backoff * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)


class Retry(Exception):
    """A transient failure: try again (after ``wait`` seconds when the server said so)."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


def retry_after(header: Callable[[str], str | None] | None) -> float | None:
    """Seconds from a Retry-After header (``header``: a response's header lookup)."""
    value = (header("Retry-After") or "").strip() if header is not None else ""
    return float(value) if value.isdigit() else None


def retrying(fn: Callable[[], T], policy: RetryPolicy, what: str, where: str,
             http_error: Callable[[Any], Exception], progress: Callable[[], int] | None = None) -> T:
    """``fn()`` with retries on transient failures (retryable HTTP statuses, ``Retry``, transport
    errors); other HTTP errors mapped by ``http_error``. With ``progress`` (bytes done so far) the
    failure budget is per stall, as in huggingface_hub's http_get, not per request. The HTTP
    libraries' error types are imported only when an error needs sorting."""
    failures = 0
    while True:
        before = progress() if progress else 0
        try:
            return fn()
        except Retry as e:
            reason, wait = e.reason, e.wait
        except Exception as e:
            reason, wait = _transient(e, what, where, http_error)
        if progress and progress() > before:
            failures = 0
        failures += 1
        if failures > policy.retries:
            raise NetworkError(f"{what} failed {failures} times, last: {reason}", where) from None
        time.sleep(policy.sleep_for(failures, wait))


def _transient(e: Exception, what: str, where: str, http_error: Callable[[Any], Exception]) -> tuple[str, float | None]:
    """(reason, Retry-After) of a failure worth retrying; raises the one-line error of any other."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        raise SourceError(f"offline mode is enabled: {e}", where) from None
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else 0
        if status not in RETRY_STATUS:
            raise http_error(e) from None
        return f"HTTP {status}", retry_after(e.response.headers.get if e.response is not None else None)
    if isinstance(e, httpx2.TransportError):  # connect, timeout, reset, truncated body
        return f"{type(e).__name__}: {e}".rstrip(": "), None
    if isinstance(e, httpx2.HTTPError):  # redirect loops, undecodable bodies: not transient
        raise NetworkError(f"{what}: {type(e).__name__}: {e}", where) from None
    raise e


def http_error(e: Any, *, endpoint: str, revision: str | None, label: str, where: str) -> Exception:
    """huggingface_hub's HTTP error as a one-line ckptkit error."""
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = e.response.status_code if e.response is not None else 0
    if isinstance(e, RevisionNotFoundError):
        return SourceError(f"revision {revision!r} not found on {endpoint}", label)
    if isinstance(e, RemoteEntryNotFoundError):
        return SourceError(f"file not found on {endpoint}", where)
    if status in (401, 403) or isinstance(e, GatedRepoError):
        return SourceError(
            f"access denied (HTTP {status}): the repo is private or gated, or does not exist; "
            "set HF_TOKEN to a token that can read it", where,
        )
    if isinstance(e, RepositoryNotFoundError) or status == 404:
        return SourceError(f"repository not found on {endpoint}", label)
    msg = (getattr(e, "server_message", None) or "").splitlines()
    return SourceError(f"HTTP {status} from {endpoint}" + (f": {msg[0]}" if msg else ""), where)


def get_range(url: str, headers: dict[str, str], start: int, end: int | None,
              write: Callable[[bytes], object], policy: RetryPolicy, where: str,
              http_error: Callable[[Any], Exception],
              library_headers: Callable[[], dict[str, str]] | None = None) -> int | None:
    """Bytes ``[start, end)`` of ``url`` (``end`` None = to EOF) passed to ``write`` in order,
    each byte once, resuming after a broken body. Returns the file size from Content-Range.
    Made with the standard library when transport.py can (far less CPU per byte), else, and for
    every HTTP error status, through huggingface_hub's client (with ``library_headers()`` when
    given: headers made by huggingface_hub, where ``headers`` may be a guess made without it)."""
    headers = dict(headers)
    headers["Accept-Encoding"] = "identity"  # byte offsets must be offsets into the file
    got = 0
    total: int | None = None

    def body(status: int, header: Callable[[str], str | None], chunks: Iterable[bytes]) -> int | None:
        """Check one answer of status < 400 (or retryable) and pass its bytes on."""
        nonlocal got, total
        pos = start + got
        if status in RETRY_STATUS:
            raise Retry(f"HTTP {status}", retry_after(header))
        if status == 416:
            m = re.search(r"/(\d+)", header("Content-Range") or "")
            total = int(m.group(1)) if m else total
            return total  # nothing at or after pos: the file ended
        skip = 0
        expect: int | None
        if status == 206:
            m = _CONTENT_RANGE.fullmatch((header("Content-Range") or "").strip())
            if m is None or int(m.group(1)) != pos:
                raise NetworkError(f"server answered range {header('Content-Range')!r} to {headers['Range']!r}", where)
            if m.group(3) != "*":
                total = int(m.group(3))
            expect = int(m.group(2)) + 1 - pos
        elif status == 200:  # range ignored: the whole file follows
            skip = pos
            cl = header("Content-Length")
            total = int(cl) if cl and cl.isdigit() else total
            expect = (total - pos) if total is not None else None
        else:
            raise NetworkError(f"unexpected HTTP {status}", where)
        if end is not None and expect is not None:
            expect = min(expect, end - pos)
        received = 0
        for chunk in chunks:
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            if end is not None and start + got + len(chunk) > end:
                chunk = chunk[: end - start - got]
            if chunk:
                write(chunk)
                got += len(chunk)
                received += len(chunk)
            if end is not None and start + got >= end:
                return total
        if expect is not None and received < expect:
            raise Retry(f"body ended after {received} of {expect} bytes")
        return total

    def set_range() -> None:
        pos = start + got
        headers["Range"] = f"bytes={pos}-{end - 1}" if end is not None else f"bytes={pos}-"

    def via_library() -> int | None:
        """One GET through huggingface_hub's client, from where the last one stopped."""
        import httpx2
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        set_range()
        h = headers if library_headers is None else {**library_headers(), "Accept-Encoding": "identity",
                                                    "Range": headers["Range"]}
        with get_session().stream("GET", url, headers=h, timeout=httpx2.Timeout(policy.timeout)) as r:
            if r.status_code >= 400 and r.status_code not in RETRY_STATUS and r.status_code != 416:
                r.read()
                hf_raise_for_status(r)
            return body(r.status_code, r.headers.get, r.iter_bytes())

    def via_stdlib() -> int | None:
        """The same GET made by transport.py."""
        set_range()
        reply = open_reply(url, headers, policy.timeout, lambda loop: NetworkError(f"reading: {loop}", where))
        if reply is None:
            return via_library()
        try:
            status = reply.status
            encoded = (reply.header("Content-Encoding") or "identity").strip().lower() != "identity"
            if (status >= 400 and status not in RETRY_STATUS and status != 416) or encoded:
                return via_library()  # its error, in its words (or its decoding)
            return body(status, reply.header, _chunks(reply))
        finally:
            reply.release()

    attempt = via_stdlib if transport.usable(url) else via_library
    return retrying(attempt, policy, "reading", where, http_error, progress=lambda: got)


_READ = 1 << 20


def _chunks(reply: transport.Reply) -> Iterator[bytes]:
    while True:
        try:
            chunk = reply.read(_READ)
        except transport.TRANSPORT_ERRORS as e:
            raise as_retry(e) from None
        if not chunk:
            return
        yield chunk


def open_reply(url: str, headers: dict[str, str], timeout: float,
               on_loop: Callable[[str], Exception]) -> transport.Reply | None:
    """``transport.get`` with its failures sorted for ``retrying``: None when huggingface_hub's
    client must make this request instead, a transport failure as the Retry it is, a redirect
    loop as ``on_loop``'s error."""
    try:
        return transport.get(url, headers, timeout)
    except transport.UseLibrary:
        return None
    except transport.TRANSPORT_ERRORS as e:
        raise as_retry(e) from None
    except transport.RedirectLoop as e:
        raise on_loop(str(e)) from None


def as_retry(e: BaseException) -> Retry:
    """A transport.py failure (TRANSPORT_ERRORS) as the transient failure it is, named as
    huggingface_hub's client names its own (ConnectTimeout, ReadTimeout, ...)."""
    if isinstance(e, transport.ConnectTimeout):
        return Retry(f"ConnectTimeout: {e}")
    if isinstance(e, TimeoutError):
        return Retry("ReadTimeout: nothing received within the timeout")
    return Retry(f"{type(e).__name__}: {e}".rstrip(": "))


def get_with_commit(url: str, headers: dict[str, str], timeout: float,
                    limit: int = 1 << 20) -> tuple[str | None, bytes | None]:
    """One GET of a small file, redirects not followed, made by transport.py (importing the HTTP
    client huggingface_hub uses costs more than the request): the commit the Hub names in its
    answer (``X-Repo-Commit``) and the body when the file is there, whole and at most ``limit``
    bytes. An optimisation only: one attempt, no retry; (None, None) on any failure, behind a
    proxy or when the answer names no commit, and the caller then asks through the retry core."""
    if not transport.usable(url):
        return None, None
    try:
        reply = transport.get_once(url, {**headers, "Accept-Encoding": "identity"}, timeout)
        try:
            sha = (reply.header("X-Repo-Commit") or "").strip().lower()
            if not _HEX40.fullmatch(sha):
                return None, None
            cl = reply.header("Content-Length") or ""
            if reply.status != 200 or not cl.isdigit() or int(cl) > limit:
                return sha, None
            return sha, reply.body(limit)
        finally:
            reply.release()
    except (*transport.TRANSPORT_ERRORS, transport.UseLibrary, ValueError):
        return None, None
