"""The public surface the CLI and users share: open a source, read its tensor index."""
from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import index_cache, tp_slices
from .errors import FormatError, SourceError, UnsafeInputError
from .formats import safetensors as st
from .header_reads import PerFile, Progress, read_headers, warm_up
from .index import TOKENIZER_FILES, FileInfo, TensorIndex, TensorInfo, Unreadable, bulk
from .sources.base import Source
from .sources.files import SHARD_INDEX, is_pickle, parse_split_gguf
from .sources.hub import looks_like_repo_id
from .sources.local import LocalSource

MAX_JSON_BYTES = 200_000_000  # config/index files larger than this are refused


# ---- sources ----------------------------------------------------------------------------------

def open_source(spec: str, revision: str | None = None, token: str | None = None) -> Source:
    """A local path (file or folder) or a Hub repo (`org/name`, `org/name@rev`, `hf://...`)."""
    if spec.startswith("hf://"):
        return _hub(spec, revision, token)
    p = Path(spec)
    if p.exists():
        if revision:
            raise SourceError("--revision applies to Hub repos, not local paths", spec)
        part = parse_split_gguf(p.name)
        if p.is_file() and part:  # one part of a split GGUF: read all its parts
            return LocalSource(p.parent, only=_same_split(part.stem, (q.name for q in p.parent.iterdir())))
        return LocalSource(p)
    if looks_like_repo_id(spec):
        if "/" in spec:
            return _hub(spec, revision, token)
        return _single_name(spec, revision, token)
    if re.match(r"^[\w.-]+/[\w.-]+/.+", spec) and not spec.startswith(("/", ".")):
        raise SourceError(f"no such file or directory; for a file or folder of a Hub repo write hf://{spec}", spec)
    if Path(spec).suffix or "/" in spec or "\\" in spec:   # shaped like a path: nothing to look up
        raise SourceError("no such file or directory", spec)
    raise SourceError("no such file or directory, and not a Hub repo id (org/name, or a single "
                      "name such as gpt2)", spec)


def _single_name(spec: str, revision: str | None, token: str | None) -> Source:
    """``gpt2``: a canonical Hub repo, unless the Hub has none, when the likelier meaning is a
    mistyped local folder and the error says both. Asks the Hub at once to know which."""
    src = _hub(spec, revision, token)
    try:
        src.files()
    except SourceError as e:
        src.close()
        if e.message.startswith("repository not found"):
            raise SourceError(f"no such local file or folder, and {e.message}", e.where) from None
        raise
    return src


def _hub(spec: str, revision: str | None, token: str | None) -> Source:
    from .sources.base import OnlyFiles
    from .sources.hub import HubSource, parse_hub_spec
    repo_id, rev, sub = parse_hub_spec(spec, revision)
    folder, _, leaf = sub.rpartition("/")
    if not leaf.endswith((".safetensors", ".gguf")):
        return HubSource(repo_id, revision=rev, subfolder=sub, token=token)
    # one file of a repo (e.g. one quantisation among several GGUFs): its folder, that file only
    src = HubSource(repo_id, revision=rev, subfolder=folder, token=token)
    have = src.files()
    if leaf not in have:
        src.close()
        raise SourceError("no such file in the repo", f"{src.label}/{leaf}")
    part = parse_split_gguf(leaf)
    return OnlyFiles(src, _same_split(part.stem, have) if part else [leaf], f"{src.label}/{leaf}")


def _same_split(stem: str, names: Iterable[str]) -> list[str]:
    """The parts of the split GGUF ``stem`` among ``names``, sorted."""
    return sorted(n for n in names if (p := parse_split_gguf(n)) and p.stem == stem)


# ---- which files make up the checkpoint --------------------------------------------------------

def read_json(source: Source, path: str) -> Any:
    raw = _read_small(source, path)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"not valid JSON: {str(e)[:200]}", path) from None
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        raise FormatError("not valid JSON: nested too deeply", path) from None


def _read_small(source: Source, path: str) -> bytes:
    """A whole small file (config, index, tokenizer), refused past MAX_JSON_BYTES."""
    size = source.files().get(path)
    if size is None:  # local sources list sizes as unknown; an empty read_head tells
        size = source.read_head(path, 0)[1]
    if size is not None and size > MAX_JSON_BYTES:
        raise FormatError(f"{size} bytes is too large for a JSON file", path)
    if size is None:  # still unknown: read at most one byte past the limit
        raw = source.read_head(path, MAX_JSON_BYTES + 1)[0]
        if len(raw) > MAX_JSON_BYTES:
            raise FormatError(f"more than {MAX_JSON_BYTES} bytes is too large for a JSON file", path)
    else:
        raw = source.read_file(path)
    return raw


def _read_tokenizer_file(source: Source, path: str) -> Any:
    """A tokenizer file parsed (a .jinja template as text), or Unreadable: a broken tokenizer
    file does not stop inspect; validate reports it."""
    try:
        if not path.endswith(".jinja"):
            doc = read_json(source, path)
            if not isinstance(doc, dict):
                raise FormatError("not a JSON object", path)
            return doc
        try:
            return _read_small(source, path).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("not UTF-8", path) from None
    except FormatError as e:
        return Unreadable(e.message)


def _top_level(files: dict[str, int | None]) -> list[str]:
    return [f for f in files if "/" not in f]


def checked_shard_name(name: object, where: str) -> str:
    """A shard name from an index, refused when it could lead outside the checkpoint."""
    if not isinstance(name, str) or not name:
        raise FormatError(f"weight_map holds a shard name that is not a string: {repr(name)[:80]}", where)
    # plain string tests (not PurePosixPath): an index may name a million shards
    if (name.startswith("/") or "\\" in name or ".." in name.split("/") or "\0" in name
            or re.match(r"^[A-Za-z]:", name)):
        raise UnsafeInputError(f"weight_map names shard {repr(name)[:120]}, a path outside the checkpoint", where)
    return name


def find_checkpoint_files(source: Source) -> tuple[str, list[str], str | None]:
    """(format, files in order, index file or None) for the checkpoint a source holds."""
    files = source.files()
    top = _top_level(files)
    indexes = sorted(f for f in top if f.endswith(".safetensors.index.json"))
    if indexes:
        # model.safetensors.index.json wins over e.g. consolidated.safetensors.index.json
        idx = SHARD_INDEX if SHARD_INDEX in indexes else indexes[0]
        return "safetensors", [], idx
    sts = sorted(f for f in top if f.endswith(".safetensors"))
    if "model.safetensors" in sts:
        return "safetensors", ["model.safetensors"], None
    if sts:
        others = [f for f in sts if not f.startswith("consolidated")]
        return "safetensors", others or sts, None
    ggufs = sorted(f for f in top if f.endswith(".gguf"))
    if ggufs:
        example = ("hf://" if hasattr(source, "repo_id") else "") + source.label.rstrip("/")
        return "gguf", _pick_gguf(ggufs, source.label, example), None
    pickles = sorted(f for f in files if is_pickle(f))
    if pickles:
        raise UnsafeInputError(
            f"holds only pickle files ({', '.join(pickles[:3])}{', …' if len(pickles) > 3 else ''}); "
            "ckptkit never unpickles: convert them to safetensors with a tool you trust", source.label)
    raise SourceError("no .safetensors or .gguf files found", source.label)


def _pick_gguf(ggufs: list[str], label: str, example: str) -> list[str]:
    from .formats.gguf import split_gguf_parts
    groups = split_gguf_parts(ggufs)
    if len(groups) > 1:
        raise SourceError(f"holds several GGUF models ({', '.join(g[0] for g in groups)}); name one file, "
                          f"e.g. {example}/{groups[0][0]}", label)
    return groups[0]


def config_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """A native (Mistral-format) params.json renamed into config.json keys, by the table in
    mappings/params_json.toml."""
    from . import mapdata
    return mapdata.params_json().to_config(params)


# ---- the index --------------------------------------------------------------------------------

def _header_guess(names: list[str]) -> int:
    # A header entry is the quoted name plus 74-82 bytes of dtype, shape and offsets in the
    # published layouts measured (DeepSeek-V3, Kimi K2, Llama 3, gpt-oss, Llama 4); overshooting
    # slightly is cheaper than a second round trip, and an undershoot costs just that one.
    return 8 + sum(map(len, names)) + 84 * len(names) + 384


def load_index(source: Source, progress: Progress | None = None, tokenizer: bool = False,
               split: bool = False, per_file: PerFile | None = None) -> TensorIndex:
    """Read every header of the checkpoint in ``source`` into one TensorIndex (no tensor data);
    ``tokenizer`` also reads a safetensors checkpoint's tokenizer files (TOKENIZER_FILES);
    ``split`` lets a forked child share the reading of many headers (header_reads.py: headers only),
    and then ``per_file`` (report.PER_FILE) makes ``TensorIndex.per_file`` as they are read.
    An index already read from the same commit or unchanged files comes from ``index_cache``."""
    entry = index_cache.entry_for(source, tokenizer)
    if entry is None:
        with bulk():
            return _read_index(source, progress, tokenizer, split, per_file)
    with bulk():
        cached = entry.load()
    if cached is not None:
        return cached
    before = entry.stamps()
    with bulk():
        index = _read_index(source, progress, tokenizer, split, per_file)
    if not index.joins:         # tensor-parallel joins are not cached (rare; rebuilt each time)
        entry.save(index, before)   # only after every strict check passed
    return index


def _read_index(source: Source, progress: Progress | None, tokenizer: bool, split: bool = False,
                per_file: PerFile | None = None) -> TensorIndex:
    from .sources.ckpt import ckpt_index, is_ckpt
    if is_ckpt(source):     # a uniform-layout folder: read as the HF checkpoint it holds
        return ckpt_index(source, tokenizer)
    fmt, files, index_file = find_checkpoint_files(source)
    # config.json, the shard index and the tokenizer files in one round trip (all small)
    wanted = [p for p in ("config.json", index_file) if p and p in source.files()]
    tok = [p for p in TOKENIZER_FILES if p in source.files()] if tokenizer and fmt == "safetensors" else []
    got = source.map(lambda p: _read_tokenizer_file(source, p) if p in tok else read_json(source, p),
                     wanted + tok)
    docs = dict(zip(wanted, got[:len(wanted)], strict=True))
    tok_docs = dict(zip(tok, got[len(wanted):], strict=True))
    config = docs.get("config.json")
    if "config.json" in docs and not isinstance(config, dict):
        raise FormatError("config.json is not a JSON object", "config.json")
    if config is None and "params.json" in source.files():
        params = read_json(source, "params.json")
        if not isinstance(params, dict):
            raise FormatError("params.json is not a JSON object", "params.json")
        config = config_from_params(params)
    shard_index = None
    guesses: dict[str, int] = {}
    if index_file:
        shard_index = docs[index_file]
        wm = shard_index.get("weight_map") if isinstance(shard_index, dict) else None
        if not isinstance(wm, dict):
            raise FormatError("no weight_map object", index_file)
        shards = wm.values()
        if set(map(type, shards)) - {str}:
            checked_shard_name(next(s for s in shards if type(s) is not str), index_file)  # raises
        # each shard's names, in index order: every step in C (an index may name millions)
        by_shard: dict[str, list[str]] = {shard: [] for shard in dict.fromkeys(shards)}
        deque(map(list.append, map(by_shard.__getitem__, shards), wm), maxlen=0)
        for shard in by_shard:  # once per shard, not per tensor: an index may name millions
            checked_shard_name(shard, index_file)
        have = source.files()
        for shard in by_shard:
            if shard not in have:
                raise SourceError(f"shard {shard!r} named by the index is missing", index_file)
        files = sorted(by_shard)
        guesses = {s: _header_guess(n) for s, n in by_shard.items()}

    if fmt == "gguf":
        return _load_gguf(source, files, config, progress)

    def fetch(path: str) -> tuple[st.SafetensorsHeader, int | None]:
        raw, n, size = st.fetch_header(source, path, guess=guesses.get(path, 1 << 16))
        return st.parse_header(raw, n, path, size), size

    headers, made = read_headers(source, files, fetch, progress, split, per_file)
    parsed: list[tuple[str, list[TensorInfo]]] = []
    infos: list[FileInfo] = []
    metadata: dict[str, Any] = {}
    for path, (header, size) in zip(files, headers, strict=True):
        infos.append(FileInfo(path, size, "safetensors", header.data_start))
        metadata.update(header.metadata)
        parsed.append((path, header.tensors))
    # a name in several files is an error, unless they are tensor-parallel slices (tp_slices.py)
    tensors, joins = tp_slices.merge(parsed, config, source.label)
    if joins:
        tp_slices.attach(source, joins)
    return TensorIndex("safetensors", infos, tensors, config, shard_index, metadata, source.label,
                       tok_docs, joins, {} if joins else made)


def _load_gguf(source: Source, files: list[str], config: dict | None,
               progress: Progress | None) -> TensorIndex:
    from .formats import gguf as gg
    headers = source.map(lambda p: gg.read_gguf_header(source, p), files)
    if len(files) > 1:
        gg.check_split_set(headers, files)
    tensors: dict[str, TensorInfo] = {}
    infos: list[FileInfo] = []
    metadata: dict[str, Any] = {}
    for path, h in zip(files, headers, strict=True):
        infos.append(FileInfo(path, h.file_size, "gguf", h.data_offset))
        for k, v in h.metadata.items():
            metadata.setdefault(k, v)
        for t in gg.tensor_infos(h, path):
            if t.name in tensors:
                raise FormatError(f"tensor {t.name!r} is in both {tensors[t.name].file} and {path}", source.label)
            tensors[t.name] = t
    if progress:
        progress(len(files), len(files))
    return TensorIndex("gguf", infos, tensors, config, None, metadata, source.label)


def inspect(spec: str, revision: str | None = None, progress: Progress | None = None) -> TensorIndex:
    """Open ``spec`` and read its tensor index (with its tokenizer files)."""
    with open_source(spec, revision) as source:
        if index_cache.first_look(source):  # a cold read follows: load inference's tables meanwhile
            warm_up()
        return load_index(source, progress, tokenizer=True, split=True)


def inspect_json(spec: str, revision: str | None, progress: Progress | None,
                 make_parts: Callable[[TensorIndex], list[bytes]], per_file: PerFile | None = None) -> list[bytes]:
    """`inspect --json`'s text for ``spec`` as UTF-8 parts: ``make_parts(index)``
    (report.inspect_report_parts; ``per_file``: see load_index), or the same text from
    ``index_cache`` when this build of ckptkit made it for the same index and label."""
    with open_source(spec, revision) as source:
        if index_cache.first_look(source):  # a cold read follows: load inference's tables meanwhile
            warm_up()
        entry = index_cache.entry_for(source, tokenizer=True)
        text = entry.load_report() if entry else None
        if text is not None:
            return [text]
        parts = make_parts(load_index(source, progress, tokenizer=True, split=True, per_file=per_file))
        if entry:
            entry.save_report(parts)
    return parts
