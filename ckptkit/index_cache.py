"""A cache of parsed, validated tensor indexes and of `inspect --json` reports.

Reading 163 shard headers over the network and checking 92k tensor entries takes seconds, and
inferring the architecture from them about as long again, while the same commit of a Hub repo
always holds the same bytes. So an index, once it passed every strict check, is stored under
the HF assets cache (``$HF_ASSETS_CACHE`` or ``$HF_HOME/assets``, as huggingface_hub's
``cached_assets_path`` places a library's files; never inside the hub cache, whose scanner
would report a foreign folder, nor next to the user's checkpoint), keyed by what determines it:

- a Hub repo: endpoint, repo id, commit sha, subfolder, the files selected, tokenizer or not;
- a local file or folder: its real path, the names it lists, tokenizer or not. The size,
  mtime_ns and inode of every listed file are stored in the entry and compared on load.

An entry is one line of JSON (kind, version, key, stamps, payload length and sha256) and then
the payload: an index zlib-compressed, a report as the text it prints. Anything that does not
match (truncated, another version or key, a bad checksum, not JSON, an unexpected shape) is
ignored and rebuilt, so the cache never changes a result; entries are written atomically.
``CKPTKIT_NO_CACHE=1`` or ``bypass()`` (the CLI's ``--no-cache``) neither reads nor writes it.
The codec is in ``index_codec``.
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_file
from .errors import CkptError
from .index import TensorIndex
from .index_codec import decode_index, encode_index
from .sources.base import OnlyFiles, Source
from .sources.hub import HubSource, hub_offline
from .sources.local import LocalSource

ENV_NO_CACHE = "CKPTKIT_NO_CACHE"
VERSION = 1
_INDEX_KIND = "ckptkit-index"
_REPORT_KIND = "ckptkit-report"
_HEX40 = re.compile(r"[0-9a-f]{40}")
# A file modified within this long before the index was read may be modified again within the
# same timestamp tick without its mtime changing: such an index is not stored.
RACY_NS = 2_000_000_000
_MAX_HEAD = 1 << 20  # the JSON line before the payload; longer means corrupt
# The whole cache's size; beyond it the least recently used entries are removed (a DeepSeek-V3
# sized repo takes 18 MB: its index 1 MB, its report 17 MB).
MAX_BYTES = 2 << 30

_bypassed: contextvars.ContextVar[bool] = contextvars.ContextVar("ckptkit_no_cache", default=False)

Stamp = tuple[str, int, int, int]  # (path, size, mtime_ns, inode); size -1: missing


def enabled() -> bool:
    v = (os.environ.get(ENV_NO_CACHE) or "").strip().upper()
    return v not in {"1", "ON", "YES", "TRUE"} and not _bypassed.get()


@contextmanager
def bypass(on: bool = True) -> Iterator[None]:
    """Within the block (when ``on``), neither read nor write the cache."""
    token = _bypassed.set(on or _bypassed.get())
    try:
        yield
    finally:
        _bypassed.reset(token)


def cache_root() -> Path:
    """``<HF assets cache>/ckptkit/index-v1``, from the environment as it is now."""
    if os.environ.get("HF_ASSETS_CACHE"):
        assets = os.path.expanduser(os.path.expandvars(os.environ["HF_ASSETS_CACHE"]))
    elif os.environ.get("HF_HOME"):
        assets = os.path.join(os.path.expanduser(os.path.expandvars(os.environ["HF_HOME"])), "assets")
    else:
        from huggingface_hub import constants

        assets = constants.HF_ASSETS_CACHE
    return Path(assets) / "ckptkit" / f"index-v{VERSION}"


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


# ---- what identifies an index ------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """Where one source's index is cached and how to tell the entry is still its own."""

    root: Path
    key: str
    label: str
    local: list[tuple[str, Path]] | None  # (listed name, file on disk) whose stamps must match

    @property
    def path(self) -> Path:
        return self.root / f"{self.key}.index"

    def report_path(self) -> Path:
        return self.root / f"{self.key}-{_digest(self.label)[:16]}.report"

    def stamps(self) -> list[Stamp]:
        return _stamps(self.local) if self.local else []

    # ---- the index -----------------------------------------------------------------------------
    def load(self) -> TensorIndex | None:
        """The cached index, or None when there is none or it is stale or corrupt."""
        got = _read(self.path, _INDEX_KIND, self.key)
        if got is None:
            return None
        head, payload = got
        if head.get("stamps") != [list(s) for s in self.stamps()]:
            return None
        _used(self.path)
        try:
            return decode_index(json.loads(zlib.decompress(payload)), self.label)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
                OverflowError, zlib.error):  # a checksum collision or a bug: rebuild, never fail
            return None

    def save(self, index: TensorIndex, before: list[Stamp]) -> None:
        """Store ``index``, read while the files had the stamps ``before``, unless a file changed
        meanwhile or too recently to tell a later change apart, or the index does not survive
        the codec exactly. Held back while ``hold_writes`` is in force."""
        _store(lambda: self._save(index, before))

    def _save(self, index: TensorIndex, before: list[Stamp]) -> None:
        stamps = self.stamps()
        if stamps != before or _racy(stamps):
            return
        try:
            doc = encode_index(index)
            if doc is None:
                return
            payload = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)
        except (TypeError, ValueError, RecursionError):  # not plain data after all: not cached
            return
        _write(self.path, {"kind": _INDEX_KIND, "version": VERSION, "key": self.key,
                           "stamps": [list(s) for s in stamps]}, payload)

    # ---- the report of `inspect --json` --------------------------------------------------------
    def load_report(self) -> bytes | None:
        """The cached report text (UTF-8) for this index, label and ckptkit build, or None. Only
        while the index entry itself is intact (a few ms to check): a damaged one is rebuilt with it."""
        got_index = _read(self.path, _INDEX_KIND, self.key)
        if got_index is None or got_index[0].get("stamps") != [list(s) for s in self.stamps()]:
            return None
        index_head = got_index[0]
        got = _read(self.report_path(), _REPORT_KIND, self.key)
        if got is None:
            return None
        head, payload = got
        if (head.get("index") != index_head.get("sha256") or head.get("label") != self.label
                or head.get("code") != code_fingerprint()):
            return None
        # a report is one JSON object (ASCII: json escapes the rest); parsing all of it would
        # cost what the cache saves
        if not (payload.startswith(b"{") and payload.endswith(b"}") and payload.isascii()):
            return None
        _used(self.path)
        _used(self.report_path())
        return payload

    def save_report(self, parts: list[bytes]) -> None:
        """Store the report text made of ``parts`` (UTF-8), joined when the store is made."""
        _store(lambda: self._save_report(b"".join(parts)))

    def _save_report(self, text: bytes) -> None:
        index_head = _read_head(self.path, _INDEX_KIND, self.key)
        if index_head is None:  # the index itself was not stored (racy, or not cacheable)
            return
        _write(self.report_path(), {"kind": _REPORT_KIND, "version": VERSION, "key": self.key,
                                    "label": self.label, "index": index_head.get("sha256"),
                                    "code": code_fingerprint()},
               text)  # not compressed: inflating 17 MB would cost more than reading it


# Stores held back until a command's output is out (ckptkit/__main__.py writes them after it, in
# a detached child where it can); None: stored at once, as a library call does.
_held: list[Callable[[], None]] | None = None


def hold_writes() -> None:
    global _held
    _held = []


def _store(task: Callable[[], None]) -> None:
    if _held is not None:
        _held.append(task)
    else:
        task()


def held_writes() -> list[Callable[[], None]]:
    """The held-back stores, in order; later ones are made at once again."""
    global _held
    got, _held = _held or [], None
    return got


def entry_for(source: Source, tokenizer: bool) -> Entry | None:
    """The cache entry of ``source``'s index, or None when the cache is off or the source is
    not one whose content can be identified without reading it."""
    if not enabled():
        return None
    inner, only = source, None
    if type(source) is OnlyFiles:
        inner, only = source.inner, sorted(source.names)
    if type(inner) is HubSource:
        # one HEAD names a branch's commit; the source's reads (and listing, on a miss) are pinned to it
        sha = _hub_sha(inner, light=True)
        if sha is None:
            return None
        key = _digest("hub", inner.endpoint, inner.repo_id, sha, inner.subfolder, only, tokenizer)
        return Entry(cache_root(), key, source.label, None)
    if type(inner) is LocalSource:
        names = sorted(source.files())
        if inner.single_file:  # the file itself, wherever a link named on the command line leads
            try:
                target = inner.local_path(names[0])
            except CkptError:
                return None
            if target is None:
                return None
            on_disk = [(names[0], target)]
        else:
            target = inner.root
            on_disk = [(n, inner.root / n) for n in names]
        return Entry(cache_root(), _digest("local", str(target), names, tokenizer), source.label, on_disk)
    return None


def first_look(source: Source) -> bool:
    """Whether ``source`` is a Hub repo at a branch or tag this cache has never seen (so nothing
    of it is cached here and its index will be read), told without a request."""
    inner = source.inner if type(source) is OnlyFiles else source
    if type(inner) is not HubSource or not enabled() or hub_offline():
        return False
    rev = inner.revision or "main"
    return not _HEX40.fullmatch(rev) and not _refs(inner, rev).exists()


def _refs(src: HubSource, rev: str) -> Path:
    """Where this cache keeps the commit it last saw ``rev`` of ``src`` name."""
    return cache_root() / "refs" / f"{_digest(src.endpoint, src.repo_id, rev)}.json"


def _hub_sha(src: HubSource, light: bool = False) -> str | None:
    """The commit of ``src``: its revision when that is a full sha (no request), else what the
    listing says (``light``: what one HEAD says, the listing only when it says nothing); offline,
    the ref the HF cache or this cache last saw (as huggingface_hub)."""
    rev = src.revision or "main"
    if _HEX40.fullmatch(rev):
        return rev
    refs = _refs(src, rev)
    if hub_offline():
        from .sources.hubspec import repo_cache_folder

        hf_ref = Path(repo_cache_folder(src.cache_dir, src.repo_id)) / "refs" / rev
        for p in (hf_ref, refs):
            try:
                sha = p.read_text().strip()
            except (OSError, UnicodeDecodeError):
                continue
            if _HEX40.fullmatch(sha):
                return sha
        return None
    # never seen here: nothing of it can be cached, so the listing is asked for at once
    sha = (src.light_commit(first_look=not refs.exists()) if light else None) or src.commit_sha
    try:
        known = refs.read_text().strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if known != sha:
        _write_small(refs, sha)
    return sha


def _stamps(files: list[tuple[str, Path]]) -> list[Stamp]:
    """(name, size, mtime_ns, inode) of each listed file, following links; metadata only, so a
    link leading out of the folder is still refused where it is read, not here."""
    out: list[Stamp] = []
    for name, path in files:
        try:
            st = os.stat(path)
            out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((name, -1, 0, 0))
    return out


def _racy(stamps: list[Stamp]) -> bool:
    now = time.time_ns()
    return any(now - mtime < RACY_NS for _, _, mtime, _ in stamps)


# ---- files: a JSON line, then the payload --------------------------------------------------------

def _read_head(path: Path, kind: str, key: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            line = f.readline(_MAX_HEAD)
    except OSError:
        return None
    return _parse_head(line, kind, key)


def _parse_head(line: bytes, kind: str, key: str) -> dict | None:
    try:
        head = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (not isinstance(head, dict) or head.get("kind") != kind or head.get("version") != VERSION
            or head.get("key") != key or not isinstance(head.get("sha256"), str)
            or not isinstance(head.get("length"), int)):
        return None
    return head


def _read(path: Path, kind: str, key: str) -> tuple[dict, bytes] | None:
    """(head, payload) of a cache file whose head matches and whose payload is intact."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    cut = data.find(b"\n", 0, _MAX_HEAD)
    if cut < 0:
        return None
    head = _parse_head(data[:cut], kind, key)
    payload = memoryview(data)[cut + 1:]
    if (head is None or len(payload) != head["length"]
            or hashlib.sha256(payload).hexdigest() != head["sha256"]):
        return None
    return head, bytes(payload)


def _write(path: Path, head: dict, payload: bytes) -> None:
    """Best effort: a cache that cannot be written (read-only home, full disk) is no error."""
    head = {**head, "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    line = json.dumps(head, separators=(",", ":")).encode() + b"\n"
    try:
        with atomic_file(path) as f:
            f.write(line)
            f.write(payload)
    except OSError:
        return
    _prune(path.parent, path)


def _used(path: Path) -> None:
    """Mark an entry as just used (its mtime orders the pruning)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _prune(root: Path, keep: Path) -> None:
    """Remove the least recently used entries until the cache is within MAX_BYTES."""
    try:
        found = [(e.stat().st_mtime_ns, e.stat().st_size, Path(e.path)) for e in os.scandir(root)
                 if e.name.endswith((".index", ".report")) and e.is_file(follow_symlinks=False)]
    except OSError:
        return
    total = sum(size for _, size, _ in found)
    for _, size, p in sorted(found):
        if total <= MAX_BYTES:
            break
        if p != keep:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                continue
            total -= size


def _write_small(path: Path, text: str) -> None:
    try:
        with atomic_file(path) as f:
            f.write(text.encode())
    except OSError:
        pass


# ---- which ckptkit made a report ----------------------------------------------------------------

_code: list[str] = []


def code_fingerprint() -> str:
    """ckptkit's version and the size and mtime of its code and mapping files: a report made by
    another build (even an edited checkout with the same version) is not reused."""
    if not _code:
        import importlib.util

        roots = [Path(__file__).parent]
        spec = importlib.util.find_spec("ckptkit.mappings")
        roots += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
        files: list[tuple[str, int, int]] = []
        for root in roots:
            for p in sorted(root.rglob("*")):
                if p.suffix in (".py", ".toml", ".json") and "__pycache__" not in p.parts:
                    st = p.stat()
                    files.append((p.as_posix(), st.st_size, st.st_mtime_ns))
        _code.append(_digest(__version__, files))
    return _code[0]


__all__ = ["ENV_NO_CACHE", "Entry", "bypass", "cache_root", "code_fingerprint", "enabled", "entry_for"]
