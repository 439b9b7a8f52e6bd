"""A TensorIndex as plain JSON data and back, exactly: the payload of the index cache.

Tensors are stored by column (names, then indexes into small tables of dtypes, shapes and
files, then offsets and sizes): 92k tensors share a few dozen shapes, and columns of small
integers compress and parse faster than 92k objects. ``encode_index`` returns None for an index
that JSON would not give back unchanged (a tuple in the config, a non-string key), so such an
index is simply not cached.
"""
from __future__ import annotations

from typing import Any

from .index import FileInfo, TensorIndex, TensorInfo, Unreadable

CODEC = 1


def encode_index(index: TensorIndex) -> dict[str, Any] | None:
    """``index`` as JSON-ready data, or None when it would not survive JSON exactly."""
    tensors = list(index.tensors.values())
    dtypes: dict[str, int] = {}
    shapes: dict[tuple[int, ...], int] = {}
    files: dict[str, int] = {}
    cols: tuple[list[int], list[int], list[int]] = ([], [], [])
    for t in tensors:
        cols[0].append(dtypes.setdefault(t.dtype, len(dtypes)))
        cols[1].append(shapes.setdefault(t.shape, len(shapes)))
        cols[2].append(files.setdefault(t.file, len(files)))
    offsets = [t.offset for t in tensors]
    nbytes = [t.nbytes for t in tensors]
    if not (all(type(t.name) is str for t in tensors) and _ints(offsets) and _ints(nbytes)
            and all(type(s) is tuple and _ints(s) for s in shapes)
            and all(type(d) is str for d in dtypes) and all(type(f) is str for f in files)
            and all(type(f.name) is str and type(f.format) is str and type(f.header_bytes) is int
                    and (f.size is None or type(f.size) is int) for f in index.files)):
        return None
    tokenizer = []
    for name, doc in index.tokenizer_files.items():
        tokenizer.append([name, "unreadable", doc.message] if isinstance(doc, Unreadable) else [name, "doc", doc])
    if not (type(index.format) is str and _plain([index.config, index.shard_index, index.metadata, tokenizer])):
        return None
    return {
        "codec": CODEC,
        "format": index.format,
        "files": [[f.name, f.size, f.format, f.header_bytes] for f in index.files],
        "dtypes": list(dtypes),
        "shapes": [list(s) for s in shapes],
        "paths": list(files),
        "names": [t.name for t in tensors],
        "dtype": cols[0], "shape": cols[1], "path": cols[2], "offset": offsets, "nbytes": nbytes,
        "config": index.config,
        "shard_index": index.shard_index,
        "metadata": index.metadata,
        "tokenizer_files": tokenizer,
    }


def decode_index(doc: Any, source: str) -> TensorIndex | None:
    """The TensorIndex ``doc`` holds (its source label set to ``source``), or None when ``doc``
    is not what ``encode_index`` makes. May raise ValueError, TypeError, KeyError or IndexError
    on a malformed ``doc``."""
    if not isinstance(doc, dict) or doc.get("codec") != CODEC:
        return None
    names = doc["names"]
    cols = [doc[k] for k in ("dtype", "shape", "path", "offset", "nbytes")]
    if not isinstance(names, list) or any(not isinstance(c, list) or len(c) != len(names) for c in cols):
        return None
    dtypes, paths = _strs(doc["dtypes"]), _strs(doc["paths"])
    shapes = [tuple(s) for s in doc["shapes"]]
    if dtypes is None or paths is None or not all(_ints(s) for s in shapes) or not _ints(cols[3] + cols[4]):
        return None
    made = map(TensorInfo, names, map(dtypes.__getitem__, cols[0]), map(shapes.__getitem__, cols[1]),
               map(paths.__getitem__, cols[2]), cols[3], cols[4])
    tensors = dict(zip(names, made, strict=True))
    if len(tensors) != len(names) or not all(type(n) is str for n in names):
        return None
    files = [FileInfo(n, s, fm, hb) for n, s, fm, hb in doc["files"]]
    config, shard_index, metadata = doc["config"], doc["shard_index"], doc["metadata"]
    if not (isinstance(config, dict | None) and isinstance(shard_index, dict | None)
            and isinstance(metadata, dict) and isinstance(doc["format"], str)):
        return None
    tokenizer: dict[str, Any] = {}
    for name, kind, value in doc["tokenizer_files"]:
        tokenizer[name] = Unreadable(value) if kind == "unreadable" else value
    return TensorIndex(doc["format"], files, tensors, config, shard_index, metadata, source, tokenizer)


def _ints(xs: Any) -> bool:
    return all(type(x) is int for x in xs)


def _strs(xs: Any) -> list[str] | None:
    return xs if isinstance(xs, list) and all(type(x) is str for x in xs) else None


def _plain(value: Any) -> bool:
    """Whether ``value`` is made only of what JSON gives back as it was: dicts with string keys,
    lists, strings, ints, floats, bools and None (no tuples, no other types)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            if not all(type(k) is str for k in v):
                return False
            stack.extend(x for x in v.values() if type(x) is not str)
        elif t is list:
            stack.extend(x for x in v if type(x) is not str)
        elif not (v is None or t in (str, int, float, bool)):
            return False
    return True
