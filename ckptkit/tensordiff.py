"""Two checkpoints compared tensor by tensor, in Hugging Face names and value conventions.

Each side is a stream of HF tensors' values with its format's transforms undone (tensordiff_sides.py).
Both are read chunk by chunk and compared on aligned element ranges, so memory holds a chunk of
each side, never a whole tensor. Names are matched as they are first, then by canonical role,
layer and expert (mappings/roles.toml) for checkpoints named differently."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .api import load_index, open_source
from .conversion.to_hf import gguf_matrix
from .errors import CkptError, FormatError
from .infer.names import canonicalize
from .report import SCHEMA_VERSION
from .sources.base import Source
from .tensordiff_sides import Side, SideTensor, convention_ops, converted, side_of, views

CHUNK_BYTES = 8 << 20       # decoded (float32) bytes per chunk and side; float64 work arrays are ~5x that


# ---- comparison arithmetic (pure) ------------------------------------------------------------------

@dataclass(frozen=True)
class Stats:
    """Value differences accumulated over a tensor's chunks. Relative differences are to A's
    value (|a - b| / |a|); a NaN on one side only is an infinite difference."""
    numel: int = 0
    differing: int = 0      # elements whose values are not equal
    beyond: int = 0         # elements with |a - b| > atol + rtol * |a|
    max_abs: float = 0.0
    max_rel: float = 0.0

    @property
    def exact(self) -> bool:
        return self.differing == 0


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in float64: 0 where the values are equal (infinities and NaNs included), inf
    where only one side is NaN."""
    a, b = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - b)
    d[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    d[np.isnan(d)] = np.inf
    return d


def compare_block(st: Stats, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> Stats:
    """``st`` updated with one aligned block of both sides (same element count)."""
    if a.size == 0:
        return st
    a = a.astype(np.float64, copy=False)
    d = abs_diff(a, b)
    mag = np.abs(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = d / mag
    rel[d == 0] = 0.0
    rel[np.isnan(rel)] = np.inf     # an infinite A with a finite B
    beyond = d > atol if rtol == 0 else d > atol + rtol * mag
    return Stats(st.numel + a.size, st.differing + int(np.count_nonzero(d)),
                 st.beyond + int(np.count_nonzero(beyond)),
                 max(st.max_abs, float(d.max())), max(st.max_rel, float(rel.max())))


def aligned(xs: Iterable[np.ndarray], ys: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Two streams of the same elements, cut into chunks at different places, as pairs of
    blocks of equal length (flat, C order)."""
    ix, iy = iter(xs), iter(ys)
    empty = np.empty(0, np.float32)
    a = b = empty
    while True:
        while not a.size and (nxt := next(ix, None)) is not None:
            a = nxt.reshape(-1)
        while not b.size and (nxt := next(iy, None)) is not None:
            b = nxt.reshape(-1)
        if not a.size or not b.size:
            if a.size or b.size:
                raise FormatError("the two sides hold different numbers of elements")
            return
        n = min(a.size, b.size)
        yield a[:n], b[:n]
        a, b = a[n:], b[n:]


# ---- names -------------------------------------------------------------------------------------------

def match_names(a: Iterable[str], b: Iterable[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(pairs, only in A, only in B): equal names first, then names whose canonical role, layer
    and expert (and MTP-ness) are equal and unique on both sides."""
    a, b = list(a), list(b)
    bset = set(b)
    pairs = [(n, n) for n in a if n in bset]
    rest_a = [n for n in a if n not in bset]
    aset = set(a)
    rest_b = [n for n in b if n not in aset]
    if rest_a and rest_b:
        ia, ib = canonicalize(a), canonicalize(b)

        def keyed(names: list[str], infos: dict) -> dict[tuple, str]:
            seen: dict[tuple, list[str]] = {}
            for n in names:
                i = infos[n]
                if i.role is not None:
                    seen.setdefault((i.role, i.layer, i.expert, i.mtp), []).append(n)
            return {k: v[0] for k, v in seen.items() if len(v) == 1}

        ka, kb = keyed(rest_a, ia), keyed(rest_b, ib)
        matched = {ka[k]: kb[k] for k in ka if k in kb}
        pairs += list(matched.items())
        rest_a = [n for n in rest_a if n not in matched]
        taken = set(matched.values())
        rest_b = [n for n in rest_b if n not in taken]
    return pairs, rest_a, rest_b


# ---- the result -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorDiff:
    name_a: str | None
    name_b: str | None
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    stats: Stats | None = None          # None when not compared (one side only, shapes differ)
    b_ops: tuple[str, ...] = ()         # ops that brought B's values into A's convention
    dropped: str | None = None          # why a GGUF conversion leaves this one-side tensor out

    @property
    def name(self) -> str:
        return self.name_a or self.name_b or ""

    @property
    def status(self) -> str:
        """dropped | only_a | only_b | shape | exact | close (within tolerance) | differ."""
        if self.dropped is not None:
            return "dropped"
        if self.name_b is None:
            return "only_a"
        if self.name_a is None:
            return "only_b"
        if self.stats is None:
            return "shape"
        if self.stats.exact:
            return "exact"
        return "differ" if self.stats.beyond else "close"

    @property
    def failed(self) -> bool:
        return self.status in ("only_a", "only_b", "shape", "differ")

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {"name": self.name, "name_a": self.name_a, "name_b": self.name_b, "status": self.status,
                "shape_a": _list(self.shape_a), "shape_b": _list(self.shape_b),
                "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
                "numel": s.numel if s else None, "differing": s.differing if s else None,
                "beyond_tolerance": s.beyond if s else None,
                "max_abs": _num(s.max_abs) if s else None, "max_rel": _num(s.max_rel) if s else None,
                "b_ops": list(self.b_ops), "dropped": self.dropped}


def _list(shape: tuple[int, ...] | None) -> list[int] | None:
    return list(shape) if shape is not None else None


def _num(x: float) -> float | str:
    """JSON has no infinity: it is written as the string "inf"."""
    return x if np.isfinite(x) else "inf"


STATUSES = ("exact", "close", "differ", "shape", "only_a", "only_b", "dropped")

# roles a conversion to GGUF leaves out by design (a text model's GGUF has no vision tower)
_DROPPED_IN_GGUF = {"vision": "vision/audio tower (a GGUF holds the text model)",
                    "buffer": "buffer, not a parameter"}


@dataclass
class DiffResult:
    a: str
    b: str
    atol: float
    rtol: float
    tensors: list[TensorDiff] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(t.failed for t in self.tensors)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for t in self.tensors:
            out[t.status] += 1
        out["dtype_differs"] = sum(1 for t in self.tensors if t.dtype_a and t.dtype_b and t.dtype_a != t.dtype_b)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "a": self.a, "b": self.b, "atol": self.atol,
                "rtol": self.rtol, "equal": not self.failed,
                "counts": self.counts(), "tensors": [t.to_json() for t in self.tensors]}


# ---- the streaming driver ---------------------------------------------------------------------------

def _side(source: Source) -> Side:
    try:
        return side_of(load_index(source))
    except CkptError as e:
        if e.where is None:     # say which of the two checkpoints it is about
            e.where = source.label
        raise


def compare_tensor(ta: SideTensor, tb: SideTensor, sa: Source, sb: Source, atol: float, rtol: float,
                   chunk_bytes: int = CHUNK_BYTES) -> TensorDiff:
    out = TensorDiff(ta.name, tb.name, ta.shape, tb.shape, ta.dtype, tb.dtype)
    if ta.shape != tb.shape:
        return out
    st = Stats()
    for x, y in aligned(ta.values(sa, chunk_bytes), tb.values(sb, chunk_bytes)):
        st = compare_block(st, x, y, atol, rtol)
    return replace(out, stats=st)


def diff_sources(sa: Source, sb: Source, atol: float = 0.0, rtol: float = 0.0,
                 chunk_bytes: int = CHUNK_BYTES,
                 progress: Callable[[int, int], None] | None = None) -> DiffResult:
    """Compare the checkpoints of two open sources; tensors in A's order, then B's extras.
    ``progress(done, total)`` is called after each pair of tensors compared."""
    a, b = _side(sa), _side(sb)
    pairs, _, only_b = match_names(a.tensors, b.tensors)
    partner = dict(pairs)
    roles = canonicalize(b.tensors) if a.family and b.family and a.family.name != b.family.name else {}
    chosen = {n: views(a.tensors[n], b.tensors[m]) for n, m in pairs}
    # the scales of FP8 weights compared times their scales are part of those weights
    consumed = {t.scale for va, vb in chosen.values() for t in (va, vb) if t.scale}
    res = DiffResult(a.label, b.label, atol, rtol)
    done = 0
    for n, ta in a.tensors.items():
        if n in partner:
            va, vb = chosen[n]
            info = roles.get(vb.name)
            ops, quantum = convention_ops(info.role if info else None, a, b, gguf_matrix(vb.shape)[0])
            td = compare_tensor(va, converted(vb, ops, quantum), sa, sb, atol, rtol, chunk_bytes)
            res.tensors.append(replace(td, b_ops=tuple(o[0] for o in ops)))
            done += 1
            if progress:
                progress(done, len(pairs))
        elif n not in consumed:
            res.tensors.append(TensorDiff(n, None, ta.shape, None, ta.dtype, None,
                                          dropped=_dropped(n, a, b)))
    res.tensors += [TensorDiff(None, n, None, b.tensors[n].shape, None, b.tensors[n].dtype,
                               dropped=_dropped(n, b, a))
                    for n in only_b if n not in consumed]
    return res


def _dropped(name: str, side: Side, other: Side) -> str | None:
    """Why ``name``, on ``side`` only, is absent from ``other`` by design: a tower or buffer that
    a conversion to GGUF leaves out; None when its absence is a difference."""
    if other.format != "gguf" or side.format == "gguf":
        return None
    info = canonicalize({name: side.tensors[name]}).get(name)
    return _DROPPED_IN_GGUF.get(info.role) if info is not None and info.role else None


def diff(spec_a: str, spec_b: str, atol: float = 0.0, rtol: float = 0.0, chunk_bytes: int = CHUNK_BYTES,
         progress: Callable[[int, int], None] | None = None) -> DiffResult:
    """Open two checkpoints (folder, file or Hub repo; safetensors or GGUF) and compare them."""
    if atol < 0 or rtol < 0:
        raise CkptError("--atol and --rtol must not be negative")
    with open_source(spec_a) as sa, open_source(spec_b) as sb:
        return diff_sources(sa, sb, atol, rtol, chunk_bytes, progress)
