"""The shard index (model.safetensors.index.json) against the shards it names."""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..api import checked_shard_name
from ..index import TensorIndex
from .claims import is_int
from .findings import Finding, finding


def missing_shards(shard_index: Any, index_file: str, files: dict[str, int | None]) -> list[Finding]:
    """Shards the index names that the source lacks (checked before reading any header)."""
    wm = shard_index.get("weight_map") if isinstance(shard_index, dict) else None
    if not isinstance(wm, dict):
        return []                      # load_index reports the malformed index
    per: Counter = Counter(checked_shard_name(s, index_file) for s in wm.values())
    return [finding("index.missing_shard", f"{index_file} maps {n} tensor(s) to {s}, which does "
                    "not exist", file=index_file) for s, n in sorted(per.items()) if s not in files]


def check_shard_index(index: TensorIndex, index_file: str,
                      files: dict[str, int | None] | None) -> list[Finding]:
    out: list[Finding] = []
    si = index.shard_index or {}
    wm: dict = si.get("weight_map") or {}
    where = {"file": index_file}
    for name, shard in wm.items():
        t = index.tensors.get(name)
        if t is None:
            out.append(finding("index.missing_tensor", f"weight_map puts {name} in {shard}, but "
                               f"{shard} holds no such tensor", tensor=name, **where))
        elif t.file != shard:
            out.append(finding("index.wrong_shard", f"weight_map puts {name} in {shard}, but it "
                               f"is in {t.file}", tensor=name, **where))
    for name, t in index.tensors.items():
        if name not in wm:
            out.append(finding("index.unlisted_tensor", f"{t.file} holds {name}, which weight_map "
                               "does not list (loaders will not find it)", tensor=name, file=t.file))
    meta = si.get("metadata")
    total = meta.get("total_size") if isinstance(meta, dict) else None
    if total is not None:
        real = index.total_bytes
        if not is_int(total) or total != real:
            out.append(finding("index.total_size", f"metadata.total_size = {total!r}, but the "
                               f"tensors hold {real:,} bytes", key="metadata.total_size", **where))
    if files:
        named = set(wm.values())
        for f in sorted(files):
            if ("/" not in f and f.endswith(".safetensors") and f not in named
                    and not f.startswith("consolidated")):
                out.append(finding("index.stray_shard", f"{f} is not named by {index_file}; "
                                   "loaders ignore it (a leftover of an older upload?)", file=f))
    return out
