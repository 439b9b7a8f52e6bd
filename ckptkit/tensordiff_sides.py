"""The two sides of `ckptkit diff`: each checkpoint read as a stream of HF tensors' values.

A GGUF goes through the GGUF -> HF plan (convert/hf_plan.py), which undoes its format's transforms
(rotary permutation, norm offsets, split tensors, stacked experts); a safetensors checkpoint is
read as stored, with FP8 weights also offered times their block scales (for a side without
them). A side in another family's layout of the same GGUF arch (Mistral's native q/k rows) is
brought into the other's convention through the families' transforms. A uniform-layout (ckpt)
folder is read by ``load_index`` under its HF names (sources/ckpt.py), so it is a safetensors side."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .conversion.family import Family, effective_config, family_for
from .conversion.hf_plan import gguf_matrix
from .errors import CkptError, FormatError
from .index import TensorIndex, TensorInfo
from .sources.base import Source
from .tensordata import decode, read_rows, row_nbytes

# dtypes whose values float32 cannot hold exactly: compared as float64
_WIDE = {"F64", "I32", "U32", "I64", "U64"}
Chunks = Callable[[Source, int], Iterator[np.ndarray]]    # (source, chunk bytes) -> flat chunks


@dataclass(frozen=True)
class SideTensor:
    name: str                           # the HF name
    shape: tuple[int, ...]              # the HF shape
    dtype: str                          # as stored: safetensors dtype or ggml type(s)
    values: Chunks
    scaled: SideTensor | None = None    # an FP8 weight's view times its scales
    scale: str | None = None            # in that view: the scale tensor it consumes


@dataclass
class Side:
    label: str
    format: str
    tensors: dict[str, SideTensor]
    family: Family | None = None        # the conversion family whose HF convention the values follow
    config: dict[str, Any] = field(default_factory=dict)   # what the family's expressions see


def stored_chunks(t: TensorInfo) -> Chunks:
    """A safetensors tensor's values, decoded, a bounded number of rows at a time."""
    def chunks(source: Source, chunk_bytes: int) -> Iterator[np.ndarray]:
        if len(t.shape) == 0 or t.nbytes == 0:
            yield decode(source.read(t.file, t.offset, t.nbytes), t.dtype, t.shape).reshape(-1)
            return
        row_elems = t.numel // t.shape[0]
        elem = 8 if t.dtype in _WIDE else 4
        rows = max(1, chunk_bytes // max(row_elems * elem, 1))
        rb = row_nbytes(t)
        for r0 in range(0, t.shape[0], rows):
            r1 = min(r0 + rows, t.shape[0])
            raw = source.read(t.file, t.offset + r0 * rb, (r1 - r0) * rb)
            yield decode(raw, t.dtype, ((r1 - r0) * row_elems,))
    return chunks


def scaled_chunks(t: TensorInfo, scale: TensorInfo, block: tuple[int, int]) -> Chunks:
    """An FP8 matrix times its scales (one per ``block``), whole block rows at a time."""
    from .conversion.transforms import dequant_fp8_blocks
    rows, cols = gguf_matrix(t.shape)
    br, bc = block
    scols = gguf_matrix(scale.shape)[1]

    def chunks(source: Source, chunk_bytes: int) -> Iterator[np.ndarray]:
        step = max(br, chunk_bytes // max(cols * 4, 1) // br * br)
        for r0 in range(0, rows, step):
            r1 = min(r0 + step, rows)
            x = decode(source.read(t.file, t.offset + r0 * cols, (r1 - r0) * cols), t.dtype, (r1 - r0, cols))
            s0, s1 = r0 // br, -(-r1 // br)
            s = read_rows(source, scale, s0, s1) if scale.shape else read_rows(source, scale)
            yield dequant_fp8_blocks(x, s.astype(np.float32).reshape(-1, scols), r0, br, bc).reshape(-1)
    return chunks


def fp8_scales(index: TensorIndex, cfg: dict) -> dict[str, tuple[TensorInfo, tuple[int, int]]]:
    """FP8 weight name -> (its scale tensor, the block one scale covers), as HF -> GGUF reads them."""
    from .conversion.plan import checked_scale, scale_block, scale_block_of
    out = {}
    for name, s in index.tensors.items():
        for suffix in ("_scale_inv", "_scale"):
            w = index.tensors.get(name[: -len(suffix)]) if name.endswith(".weight" + suffix) else None
            if w is None or not w.dtype.startswith("F8_") or len(w.shape) != 2:
                continue
            block = scale_block_of(w, s, scale_block(cfg))
            try:
                checked_scale(w, s, block)
            except FormatError:     # not one scale per block: the weight is compared as stored
                continue
            out[w.name] = (s, block)
    return out


def side_of(index: TensorIndex) -> Side:
    """A checkpoint's tensors under their HF names; a GGUF through the GGUF -> HF plan (f32, so
    dequantisation adds no rounding)."""
    if index.format != "gguf":
        try:
            fam: Family | None = family_for(index.config)
        except CkptError:       # no conversion family: values are compared as stored
            fam = None
        cfg = effective_config(index.config)
        scales = fp8_scales(index, cfg)
        tensors = {}
        for n, t in index.tensors.items():
            scaled = None
            if n in scales:
                s, block = scales[n]
                scaled = SideTensor(n, t.shape, f"{t.dtype}×{s.dtype}", scaled_chunks(t, s, block), scale=s.name)
            tensors[n] = SideTensor(n, t.shape, t.dtype, stored_chunks(t), scaled)
        return Side(index.source, index.format, tensors, fam, cfg)
    from .conversion.hf_config import flat_config
    from .conversion.hf_data import piece_arrays
    from .conversion.hf_plan import plan_hf
    plan = plan_hf(index, "f32")
    out = {}
    for h in plan.tensors:
        def chunks(source: Source, chunk_bytes: int, pieces=h.pieces) -> Iterator[np.ndarray]:
            for p in pieces:
                yield from piece_arrays(source, p, chunk_bytes)
        dtype = "+".join(dict.fromkeys(p.src.dtype for p in h.pieces))
        out[h.entry.name] = SideTensor(h.entry.name, h.entry.shape, dtype, chunks)
    return Side(index.source, "gguf", out, plan.family, flat_config(plan.config))


def views(ta: SideTensor, tb: SideTensor) -> tuple[SideTensor, SideTensor]:
    """What to compare: FP8 as stored against FP8, times its scales against anything else."""
    return (ta.scaled if ta.scaled and not tb.scaled else ta), (tb.scaled if tb.scaled and not ta.scaled else tb)


# ---- one side's values in the other's convention -------------------------------------------------

def convention_ops(role: str | None, a: Side, b: Side, rows: int) -> tuple[tuple[Any, ...], int]:
    """Ops that bring B's values of ``role`` into A's convention, and their row quantum: none
    unless the two families (same GGUF arch) store the role differently, as Mistral's native
    layout (q/k rows interleaved) and HF's do. Then B's transforms to GGUF, A's undone."""
    fa, fb = a.family, b.family
    if (role is None or fa is None or fb is None or fa.name == fb.name or fa.arch != fb.arch
            or fa.transforms.get(role, ()) == fb.transforms.get(role, ())):
        return (), 1
    from .conversion.hf_plan import inverse_ops
    from .conversion.plan import ops_for
    fwd, q1 = ops_for(role, fb, b.config, rows)
    inv, q2 = inverse_ops(fa, role, a.config, rows, split=True)
    return fwd + inv, max(q1, q2)


def whole_units(xs: Iterable[np.ndarray], unit: int) -> Iterator[np.ndarray]:
    """A flat stream re-cut into blocks of whole ``unit``s of elements."""
    pending = np.empty(0, np.float32)
    for x in xs:
        x = x.reshape(-1)
        if pending.size:
            x = np.concatenate([pending, x])
        n = x.size // unit * unit
        if n:
            yield x[:n]
        pending = x[n:]
    if pending.size:
        raise FormatError(f"{pending.size} elements left over, not a whole row group of {unit}")


def converted(t: SideTensor, ops: tuple[tuple[Any, ...], ...], quantum: int) -> SideTensor:
    """``t`` with ``ops`` applied to whole quanta of its rows (the tensor seen as a matrix)."""
    if not ops:
        return t
    from .conversion.transforms import INVERSE_OPS
    from .conversion.transforms import OPS as FORWARD_OPS
    table = {**FORWARD_OPS, **INVERSE_OPS}
    cols = gguf_matrix(t.shape)[1]

    def chunks(source: Source, chunk_bytes: int) -> Iterator[np.ndarray]:
        for x in whole_units(t.values(source, chunk_bytes), quantum * cols):
            y = x.astype(np.float32).reshape(-1, cols)
            for name, *args in ops:
                y = table[name](y, *args)
            yield y.reshape(-1)
    return replace(t, values=chunks)
