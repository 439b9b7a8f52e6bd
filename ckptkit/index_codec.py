"""A TensorIndex as plain JSON data and back, exactly: the payload of the index cache.

Tensors are stored by column (names, then indexes into small tables of dtypes, shapes and
files, then offsets and sizes): 92k tensors share a few dozen shapes, and columns of small
integers compress and parse faster than 92k objects. ``encode_index`` returns None for an index
that JSON would not give back unchanged (a tuple in the config, a non-string key), so such an
index is simply not cached.
"""
from __future__ import annotations

import json
from itertools import repeat
from operator import itemgetter
from typing import Any

from .formats.safetensors import SafetensorsHeader
from .index import FileInfo, TensorIndex, TensorInfo, Unreadable

CODEC = 1


def encode_index(index: TensorIndex) -> dict[str, Any] | None:
    """``index`` as JSON-ready data, or None when it would not survive JSON exactly."""
    tensors = list(index.tensors.values())
    # one column per TensorInfo field, each by a C-level map (3x faster than zip(*tensors))
    names, dtypes, shapes, paths, offsets, nbytes = (list(map(itemgetter(i), tensors)) for i in range(6))
    dtype_table, dtype_col = _table(dtypes)
    shape_table, shape_col = _table(shapes)
    path_table, path_col = _table(paths)
    if not (_strs(names) is not None and _strs(dtype_table) is not None and _strs(path_table) is not None
            and _ints(offsets) and _ints(nbytes) and all(type(s) is tuple and _ints(s) for s in shape_table)
            and all(type(f.name) is str and type(f.format) is str and type(f.header_bytes) is int
                    and (f.size is None or type(f.size) is int) for f in index.files)):
        return None
    shard_index, weight_map = _encode_shard_index(index.shard_index, names)
    tokenizer = [[name, "unreadable", doc.message] if isinstance(doc, Unreadable) else [name, "doc", doc]
                 for name, doc in index.tokenizer_files.items()]
    if not (type(index.format) is str and _plain([index.config, shard_index, index.metadata, tokenizer])):
        return None
    return {
        "codec": CODEC,
        "format": index.format,
        "files": [[f.name, f.size, f.format, f.header_bytes] for f in index.files],
        "dtypes": dtype_table, "shapes": [list(s) for s in shape_table], "paths": path_table,
        "names": names, "dtype": dtype_col, "shape": shape_col, "path": path_col,
        "offset": offsets, "nbytes": nbytes,
        "config": index.config,
        "shard_index": shard_index,
        "weight_map": weight_map,
        "metadata": index.metadata,
        "tokenizer_files": tokenizer,
    }


def _table(values: list) -> tuple[list, list[int]]:
    """(distinct values in order of first appearance, each value's position in that list)."""
    distinct = list(dict.fromkeys(values))
    pos = dict(zip(distinct, range(len(distinct)), strict=True))
    return distinct, list(map(pos.__getitem__, values))


def _encode_shard_index(shard_index: Any, names: list[str]) -> tuple[Any, dict | None]:
    """The shard index with its weight_map as (tensor number, shard number) columns when every
    key names a tensor (a 92k-entry map repeats every name otherwise); the map's key keeps its
    place, holding None."""
    wm = shard_index.get("weight_map") if isinstance(shard_index, dict) else None
    if not isinstance(wm, dict) or _strs(list(wm.values())) is None:
        return shard_index, None
    pos = dict(zip(names, range(len(names)), strict=True))
    try:
        keys = list(map(pos.__getitem__, wm))
    except (KeyError, TypeError):  # a name that is no tensor (validate reports it): kept as is
        return shard_index, None
    shard_table, shard_col = _table(list(wm.values()))
    return {**shard_index, "weight_map": None}, {"keys": keys, "shards": shard_table, "shard": shard_col}


def decode_index(doc: Any, source: str) -> TensorIndex | None:
    """The TensorIndex ``doc`` holds (its source label set to ``source``), or None when ``doc``
    is not what ``encode_index`` makes. May raise ValueError, TypeError, KeyError or IndexError
    on a malformed ``doc``."""
    if not isinstance(doc, dict) or doc.get("codec") != CODEC:
        return None
    names = _strs(doc["names"])
    cols = [doc[k] for k in ("dtype", "shape", "path", "offset", "nbytes")]
    if names is None or any(not isinstance(c, list) or len(c) != len(names) for c in cols):
        return None
    dtypes, paths = _strs(doc["dtypes"]), _strs(doc["paths"])
    shapes = [tuple(s) for s in doc["shapes"]]
    if dtypes is None or paths is None or not all(_ints(s) for s in shapes) or not (_ints(cols[3]) and _ints(cols[4])):
        return None
    made = map(TensorInfo, names, map(dtypes.__getitem__, cols[0]), map(shapes.__getitem__, cols[1]),
               map(paths.__getitem__, cols[2]), cols[3], cols[4])
    tensors = dict(zip(names, made, strict=True))
    if len(tensors) != len(names):
        return None
    files = [FileInfo(n, s, fm, hb) for n, s, fm, hb in doc["files"]]
    config, shard_index, metadata = doc["config"], doc["shard_index"], doc["metadata"]
    if not (isinstance(config, dict | None) and isinstance(shard_index, dict | None)
            and isinstance(metadata, dict) and isinstance(doc["format"], str)):
        return None
    wm = doc["weight_map"]
    if wm is not None:
        shards = _strs(wm["shards"])
        if shard_index is None or shards is None or len(wm["keys"]) != len(wm["shard"]):
            return None
        shard_index["weight_map"] = dict(zip(map(names.__getitem__, wm["keys"]),
                                             map(shards.__getitem__, wm["shard"]), strict=True))
    tokenizer: dict[str, Any] = {}
    for name, kind, value in doc["tokenizer_files"]:
        tokenizer[name] = Unreadable(value) if kind == "unreadable" else value
    return TensorIndex(doc["format"], files, tensors, config, shard_index, metadata, source, tokenizer)


# ---- parsed headers, from a forked helper (forked.py) to its parent ---------------------------

def encode_headers(headers: dict[int, tuple[SafetensorsHeader, int | None]]) -> bytes:
    """Parsed, checked safetensors headers (and file sizes) by position in a list of files, as
    JSON columns; ``decode_headers`` gives them back exactly (names with any characters: JSON
    escapes what it must)."""
    out = []
    for at, (h, size) in sorted(headers.items()):
        ts = h.tensors
        dtype_table, dtype_col = _table([t.dtype for t in ts])
        shape_table, shape_col = _table([t.shape for t in ts])
        out.append([at, h.header_len, size, h.metadata, [t.name for t in ts], dtype_table, dtype_col,
                    [list(s) for s in shape_table], shape_col, [t.offset for t in ts], [t.nbytes for t in ts]])
    return json.dumps(out).encode()


def decode_headers(data: bytes, files: list[str]) -> dict[int, tuple[SafetensorsHeader, int | None]]:
    """``encode_headers``'s bytes back, for ``files`` (the paths the positions are of); ValueError
    for a position out of range or given twice."""
    got = {}
    for at, n, size, meta, names, dtypes, dtype_col, shapes, shape_col, offsets, nbytes in json.loads(data):
        if type(at) is not int or not 0 <= at < len(files) or at in got:
            raise ValueError(f"no file at position {at!r}, or twice")
        shape_table = [tuple(s) for s in shapes]
        tensors = list(map(TensorInfo, names, map(dtypes.__getitem__, dtype_col),
                           map(shape_table.__getitem__, shape_col), repeat(files[at], len(names)), offsets, nbytes))
        got[at] = (SafetensorsHeader(n, tensors, meta), size)
    return got


def _ints(xs: Any) -> bool:
    return set(map(type, xs)) <= {int}  # map and set run in C: 92k items in a few ms


def _strs(xs: Any) -> list[str] | None:
    return xs if isinstance(xs, list) and set(map(type, xs)) <= {str} else None


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
