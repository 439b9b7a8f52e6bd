"""Tensor-parallel slices: a checkpoint published as per-rank files that hold slices of the same
tensor names (xai-org/grok-2: ``pytorch_model-*-TP-000..007.safetensors``, plus whole tensors in
``*-TP-common`` files), read as ONE logical tensor per name.

What is a rank file, and along which axis each role's slices join, is data: the ``[tensor_parallel]``
table of the family's ``mappings/convert/<family>.toml`` (the family config.json names). The index
then holds each joined tensor with its true dtype and shape, in a virtual file ``tp<N>:<name>``
(``JOIN_PREFIX``); ``read_joined`` serves byte ranges of it from the slices, one chunk at a time
(never the whole tensor), so every reader (inspect, validate, convert, diff) sees the model's
real tensors without knowing about slices. ``split`` is the inverse, for writing slices back.

Strict: slices that disagree in dtype or in any dimension but the join axis, a rank missing
(from one tensor or from the whole checkpoint, the latter caught by the declared joined size),
a name twice in one rank, or duplicate names that are not a tensor-parallel set are each an
error of one line.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from math import prod
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .errors import FormatError
from .index import TensorInfo, span_text

_NAME = itemgetter(0)  # TensorInfo -> name

if TYPE_CHECKING:
    import numpy as np

    from .mapdata import ConvertFamily, TensorParallel, TPJoin
    from .sources.base import Source

JOIN_PREFIX = "tp"    # a joined tensor's file: "tp8:model.layers.0.block_sparse_moe.experts.0.w1.weight"


@dataclass(frozen=True)
class Join:
    """One logical tensor made of its ranks' slices, concatenated along ``axis`` in rank order."""
    name: str
    axis: int
    parts: tuple[TensorInfo, ...]          # rank 0 first
    dtype: str
    shape: tuple[int, ...]

    @property
    def file(self) -> str:
        return f"{JOIN_PREFIX}{len(self.parts)}:{self.name}"

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def info(self) -> TensorInfo:
        return TensorInfo(self.name, self.dtype, self.shape, self.file, 0, self.nbytes)


# ---- building the index ------------------------------------------------------------------------

def merge(parsed: Sequence[tuple[str, Sequence[TensorInfo]]], config: dict | None,
          label: str) -> tuple[dict[str, TensorInfo], dict[str, Join]]:
    """The tensors of every file (``parsed``: file -> its header's tensors, in file order) as one
    name -> tensor map, tensor-parallel slices joined; and the joins by virtual file name."""
    every = list(chain.from_iterable(ts for _, ts in parsed))
    tensors: dict[str, TensorInfo] = dict(zip(map(_NAME, every), every, strict=True))  # in C: 92k names
    dups: dict[str, list[TensorInfo]] = {}
    if len(tensors) < len(every):     # a name in several files: keep the first, list the others
        tensors = {}
        for t in every:
            prev = tensors.setdefault(t.name, t)
            if prev is not t:
                dups.setdefault(t.name, [prev]).append(t)
    files = [f for f, _ in parsed]
    if not dups and not _any_rank_file(files):
        return tensors, {}
    fam = _family(config)
    tp = fam.tensor_parallel if fam is not None else None
    if tp is None:
        if dups:
            name, ts = next(iter(dups.items()))
            raise FormatError(f"tensor {name!r} is in both {ts[0].file} and {ts[1].file}", label)
        return tensors, {}
    assert fam is not None
    return _join_all(tensors, dups, files, fam, tp, config, label)


def _any_rank_file(files: list[str]) -> bool:
    from . import mapdata
    pats = [f.tensor_parallel.rank_file for f in mapdata.convert_families().values() if f.tensor_parallel]
    return any(re.search(p, f) for p in pats for f in files)


def _family(config: dict | None) -> ConvertFamily | None:
    from .conversion.family import family_for
    from .errors import CkptError
    if not config:
        return None
    try:
        return family_for(config)
    except CkptError:
        return None


def _join_all(tensors: dict[str, TensorInfo], dups: dict[str, list[TensorInfo]], files: list[str],
              fam: ConvertFamily, tp: TensorParallel, config: dict | None,
              label: str) -> tuple[dict[str, TensorInfo], dict[str, Join]]:
    pat = re.compile(tp.rank_file)
    rank_of = {f: int(m.group(1)) for f in files if (m := pat.search(f))}
    for name, ts in dups.items():
        other = next((t.file for t in ts if t.file not in rank_of), None)
        if other is not None:
            raise FormatError(f"tensor {name!r} is in both {ts[0].file} and {ts[1].file}, and {other} is not "
                              f"a tensor-parallel rank file ({tp.rank_file})", label)
    ranks = sorted(set(rank_of.values()))
    n = len(ranks)
    if ranks != list(range(n)):
        gone = min(set(range(ranks[-1] + 1)) - set(ranks))
        raise FormatError(f"tensor-parallel rank files for ranks {span_text(ranks)}: none for rank {gone}", label)
    from .conversion.family import effective_config
    cfg = effective_config(config)
    from .infer.names import parse_name
    joins: dict[str, Join] = {}
    for name, t in list(tensors.items()):
        if t.file not in rank_of:
            continue
        parts = dups.get(name, [t])
        by_rank: dict[int, TensorInfo] = {}
        for p in parts:
            r = rank_of[p.file]
            if r in by_rank:
                raise FormatError(f"tensor {name!r} is twice in rank {r}: {by_rank[r].file} and {p.file}", label)
            by_rank[r] = p
        if len(by_rank) < n:
            gone = min(set(range(n)) - set(by_rank))
            raise FormatError(f"tensor {name!r} has tensor-parallel slices for ranks {span_text(by_rank)} "
                              f"but none for rank {gone} (of {n} rank files)", label)
        role = parse_name(name).role
        spec = tp.join.get(role or "")
        if spec is None:
            raise FormatError(f"tensor {name!r} is in the tensor-parallel rank files, but "
                              f"mappings/convert/{fam.name}.toml [tensor_parallel.join] gives no axis for "
                              f"its role {role}", label)
        j = check_join(name, spec, [by_rank[r] for r in range(n)], cfg, label)
        if n > 1:
            joins[j.file] = j
            tensors[name] = j.info()
    return tensors, joins


def check_join(name: str, spec: TPJoin, parts: list[TensorInfo], cfg: Mapping[str, Any], label: str) -> Join:
    """The join of ``parts`` (rank order) along ``spec.axis``, refused when the slices disagree
    or do not add up to the size config.json gives."""
    from .expr import ExprError
    first, axis = parts[0], spec.axis
    if axis >= len(first.shape):
        raise FormatError(f"tensor-parallel slices of {name!r} have {len(first.shape)} dimension(s); "
                          f"they cannot join along axis {axis}", label)
    for p in parts[1:]:
        if (p.dtype != first.dtype or len(p.shape) != len(first.shape)
                or any(a != b for i, (a, b) in enumerate(zip(p.shape, first.shape, strict=True)) if i != axis)):
            raise FormatError(f"tensor-parallel slices of {name!r} disagree: {first.file} holds {first.dtype} "
                              f"{list(first.shape)}, {p.file} {p.dtype} {list(p.shape)} (they may differ only "
                              f"along axis {axis})", label)
    size = sum(p.shape[axis] for p in parts)
    if spec.size is not None:
        try:
            want = spec.size.eval(cfg)
        except ExprError:
            want = None
        if isinstance(want, int) and not isinstance(want, bool) and want != size:
            raise FormatError(f"the {len(parts)} tensor-parallel slices of {name!r} join to {size} along axis "
                              f"{axis}, but config.json gives {spec.size.src} = {want}: is a rank file missing?",
                              label)
    shape = first.shape[:axis] + (size,) + first.shape[axis + 1:]
    return Join(name, axis, tuple(parts), first.dtype, shape)


# ---- reading and writing -----------------------------------------------------------------------

def attach(source: Source, joins: Mapping[str, Join]) -> None:
    """Let ``source`` (and every wrapper around the same concrete source) read the joined
    tensors' virtual files."""
    s = _concrete(source)
    s.tp_joins = {**s.tp_joins, **joins}


def _concrete(source: Source) -> Source:
    """The source under every wrapper (the one whose ``read`` serves the virtual files)."""
    from .sources.base import Source
    s = source
    while isinstance(getattr(s, "inner", None), Source):
        s = s.inner  # type: ignore[attr-defined]
    return s


def real_files(source: Source, file: str) -> list[str]:
    """The files holding ``file``'s bytes: its slices' files for a joined tensor's virtual file."""
    j = _concrete(source).tp_joins.get(file)
    return [file] if j is None else list(dict.fromkeys(p.file for p in j.parts))


def read_joined(source: Source, j: Join, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of the joined tensor (C order), from its slices: one
    contiguous read per slice; for a join along an inner axis, whole outer rows interleaved."""
    if offset < 0 or length < 0 or offset + length > j.nbytes:
        raise FormatError(f"read of [{offset}, {offset + length}) past the end of the joined tensor "
                          f"({j.nbytes} bytes)", j.file)
    outer = prod(j.shape[: j.axis])
    if outer <= 1:                               # joined along the first axis: slices back to back
        out, pos = [], 0
        for p in j.parts:
            a, b = max(offset, pos), min(offset + length, pos + p.nbytes)
            if a < b:
                out.append(source.read(p.file, p.offset + a - pos, b - a))
            pos += p.nbytes
        return b"".join(out)
    import numpy as np
    row = j.nbytes // outer
    o0, o1 = offset // row, -(-(offset + length) // row)
    blocks = []
    for p in j.parts:
        pr = p.nbytes // outer
        raw = source.read(p.file, p.offset + o0 * pr, (o1 - o0) * pr)
        blocks.append(np.frombuffer(raw, dtype=np.uint8).reshape(o1 - o0, pr))
    start = offset - o0 * row
    return np.concatenate(blocks, axis=1).reshape(-1)[start: start + length].tobytes()


def split(x: np.ndarray, axis: int, ranks: int) -> list[np.ndarray]:
    """The inverse of a join: ``x`` cut into ``ranks`` equal slices along ``axis`` (rank order),
    as a tensor-parallel checkpoint stores them."""
    import numpy as np
    if x.shape[axis] % ranks:
        raise FormatError(f"{x.shape[axis]} does not split into {ranks} equal tensor-parallel slices")
    return list(np.split(x, ranks, axis=axis))
