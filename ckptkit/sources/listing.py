"""A Hub repo's listing: the commit a revision is at and every file with its size and checksums.

Online it is one GET of the model-info API with blob metadata, the request huggingface_hub's
``HfApi.model_info(files_metadata=True)`` makes; made with the standard library when
transport.py can (importing ``HfApi`` and its HTTP stack cost more than the request), through
``HfApi`` behind a proxy, with ``CKPTKIT_HTTP=library``, and for any HTTP error status (so the
error is the one huggingface_hub reports). Offline it is what the local HF cache holds.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import SourceError
from . import transport
from .http import RETRY_STATUS, Retry, RetryPolicy, as_retry, open_reply, retry_after, retrying

Entries = dict[str, tuple[int | None, str | None, str | None]]  # path -> (size, LFS sha256, git blob id)
_HEX40 = re.compile(r"[0-9a-f]{40}")
_MAX_LISTING = 256 << 20


def listing_url(endpoint: str, repo_id: str, revision: str | None) -> str:
    """The model-info URL ``HfApi.model_info`` asks (``?blobs=true``: sizes and checksums)."""
    path = f"{endpoint}/api/models/{repo_id}"
    if revision is not None:
        path += f"/revision/{quote(revision, safe='')}"
    return path + "?blobs=true"


def online(endpoint: str, repo_id: str, revision: str | None, token: str | bool | None,
           light_headers: dict[str, str], policy: RetryPolicy, label: str,
           http_error: Callable[[Any], Exception]) -> tuple[str, str | None, Entries]:
    """(commit sha, the id the server answers to, entries)."""
    bad = SourceError(f"{endpoint} answered the model info request with malformed JSON", label)
    url = listing_url(endpoint, repo_id, revision)

    def library() -> tuple[str, str | None, Entries]:
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=endpoint, token=token).model_info(
                repo_id, revision=revision, files_metadata=True, timeout=policy.timeout)
        except (ValueError, KeyError, TypeError, AttributeError):  # JSON or fields not as the Hub sends
            raise bad from None
        siblings = info.siblings if isinstance(info.siblings, list) else None
        rows = None if siblings is None else [
            (s.rfilename, s.size, s.lfs.sha256 if s.lfs else None, s.blob_id) for s in siblings]
        return _checked(info.sha, info.id, rows, endpoint, label, bad)

    def stdlib() -> tuple[str, str | None, Entries]:
        reply = open_reply(url, {**light_headers, "Accept": "application/json"}, policy.timeout,
                           lambda loop: SourceError(f"listing the repo: {loop}", label))
        if reply is None:
            return library()
        try:
            if reply.status in RETRY_STATUS:
                raise Retry(f"HTTP {reply.status}", retry_after(reply.header))
            if reply.status != 200:
                return library()  # its error, in its words
            try:
                body = reply.body(_MAX_LISTING)
            except transport.TRANSPORT_ERRORS as e:
                raise as_retry(e) from None
            except ValueError as e:
                raise SourceError(f"listing the repo: {e}", label) from None
        finally:
            reply.release()
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise bad from None
        if not isinstance(doc, dict):
            raise bad
        siblings = doc.get("siblings")
        rows = None
        if isinstance(siblings, list) and all(isinstance(s, dict) for s in siblings):
            rows = []
            for s in siblings:
                lfs = s.get("lfs")
                if lfs is not None and not isinstance(lfs, dict):
                    raise bad
                rows.append((s.get("rfilename"), s.get("size"), lfs.get("sha256") if lfs else None, s.get("blobId")))
        return _checked(doc.get("sha"), doc.get("id"), rows, endpoint, label, bad)

    way = stdlib if transport.usable(url) else library
    return retrying(way, policy, "listing the repo", label, http_error)


def _checked(sha: Any, remote_id: Any, rows: list[tuple[Any, Any, Any, Any]] | None, endpoint: str, label: str,
             bad: SourceError) -> tuple[str, str | None, Entries]:
    if not isinstance(sha, str) or not _HEX40.fullmatch(sha) or rows is None:
        raise SourceError(f"{endpoint} did not return a commit sha and a file list", label)
    entries: Entries = {}
    for name, size, sha256, blob_id in rows:
        ok_size = size is None or (type(size) is int and size >= 0)
        ok_sums = isinstance(sha256, str | None) and isinstance(blob_id, str | None)
        if not (isinstance(name, str) and ok_size and ok_sums):
            raise bad
        entries[name] = (size, sha256, blob_id)
    return sha, remote_id if isinstance(remote_id, str) else None, entries


def offline(storage: Path, revision: str | None, cache_dir: str, label: str) -> tuple[str, Entries, bool]:
    """(commit sha, entries, whether only the snapshot's files are known) from the local HF
    cache folder ``storage`` of the repo."""
    rev = revision or "main"
    if _HEX40.fullmatch(rev):
        sha = rev
    else:
        ref = storage / "refs" / rev
        if not ref.is_file():
            raise SourceError(
                f"HF_HUB_OFFLINE is set and revision {rev!r} is not in the local HF cache ({cache_dir})", label)
        sha = ref.read_text().strip()
    entries: Entries = {}
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
            f"HF_HUB_OFFLINE is set and commit {sha[:12]} is not in the local HF cache ({cache_dir})", label)
    return sha, entries, not tree
