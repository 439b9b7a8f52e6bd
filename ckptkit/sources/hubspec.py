"""Where the Hub is and what names it: repo-id specs and the environment huggingface_hub users set.

Everything is read at call time, not import time, so a test or a long-lived process sees the
environment as it is now (huggingface_hub freezes its own constants when it is imported).
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote

from ..errors import SourceError, UnsafeInputError, UnsupportedError

_NAME = r"[A-Za-z0-9][\w.-]*"
_REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
# canonical repos without an org (gpt2, bert-base-uncased): no dot, so "model.bin" or "w.pt"
# that does not exist stays a missing local file rather than a Hub lookup
_SINGLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_MAX_NAME = 96            # the Hub's limit on an org or repo name
# a spec ending like a file is a missing local file ("a/b.gguf"), not a repo
_FILE_SUFFIXES = (".safetensors", ".gguf", ".json")


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


def repo_cache_folder(cache_dir: str | os.PathLike, repo_id: str) -> str:
    """A model repo's folder in the HF cache (``models--org--name``, the cache's documented layout)."""
    return os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))


def cached_file(cache_dir: str | os.PathLike, repo_id: str, commit: str, path: str) -> str | None:
    """The file ``path`` of ``repo_id`` at ``commit`` in the HF cache's snapshot, if it is there
    (what huggingface_hub's try_to_load_from_cache finds for a commit, without importing it)."""
    full = os.path.join(repo_cache_folder(cache_dir, repo_id), "snapshots", commit, *path.split("/"))
    return full if os.path.isfile(full) else None


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


def valid_repo_id(repo_id: str) -> bool:
    """``org/name`` or a single ``name``, each part a valid Hub name."""
    return _REPO_ID.fullmatch(repo_id) is not None or _re_name(repo_id)


def _re_name(part: str) -> bool:
    return re.fullmatch(_NAME, part) is not None


def implicit_token(token: str | bool | None) -> str | None:
    """The token huggingface_hub would send for ``token`` (an explicit token, or for None:
    HF_TOKEN, then the saved token file), found without importing its HTTP stack; for the light
    commit request, where a wrong guess only costs the listing request it saves."""
    if token is False:
        return None
    if isinstance(token, str):
        return token
    if os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return None
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if env and env.strip():
        return env.strip()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    try:
        with open(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token"), encoding="utf-8") as f:
            saved = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return saved or None
