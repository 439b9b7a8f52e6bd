"""GGUF -> HF re-fusion: the inverse of a conversion family's [[split]] tables.

A [[split]] cuts an output role from the row groups of a fused HF tensor: in each of ``groups``
groups, rows ``start + k * step`` (k < count) or several [start, count] ``segments``, then the
split's ops (column selection, transpose), then the output role's own transforms. Read backwards,
each (split, segment, group) is a run of rows of the GGUF part, which the inverse ops turn back
into a block of the HF group: whole rows (a plain piece, concatenated in order) or, when the
forward op picked columns or strided rows, a join that places each part's values at their rows
and columns (gpt-oss's interleaved gate/up, Llama 4's [gate | up])."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, UnsupportedError
from ..expr import Expr
from ..index import TensorInfo
from ..mapdata import Split
from .family import Family
from .hf_pieces import HFPiece, InverseOp, JoinPart, gguf_matrix

# split ops the re-fusion undoes in place, and their inverses; column selections become joins
_SPLIT_INVERSE = {"transpose": "transpose"}
_COLUMN_OPS = ("take_cols", "col_range")


def inverse_splits(fam: Family) -> tuple[Split, ...]:
    """The [[split]] tables GGUF -> HF reads backwards: those from float HF tensors (the MXFP4
    ``*.blocks`` layouts of the same roles are the other way in, not a way back)."""
    return tuple(sp for sp in fam.splits if not sp.from_role.endswith(".blocks"))


@dataclass(frozen=True)
class _Contrib:
    group: int
    start: int                                  # first HF row within the group
    span: int                                   # HF rows spanned: (count - 1) * step + 1
    step: int
    cols: tuple[int, int, int] | None           # HF columns (start, stop, step) it fills; None: all
    piece: HFPiece                              # (count, ncols) in HF orientation


def _int(e: Expr | None, names: dict, default: int) -> int:
    return default if e is None else int(e.eval(names))


def refuse_plan(fam: Family, from_role: str, parts: dict[str, TensorInfo], cfg: dict,
                src_shape: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], tuple[HFPiece, ...]]:
    """The HF tensor of ``from_role`` re-fused from its GGUF ``parts`` (to_role -> tensor):
    its shape and its pieces in C order. ``src_shape`` is the HF shape, needed when the splits'
    expressions read ``src_shape`` (from hf_configs.toml [target.shapes]); without it the shape
    follows from the parts."""
    from .hf_plan import inverse_ops
    splits = [sp for sp in inverse_splits(fam) if sp.from_role == from_role]
    missing = [sp.to_role for sp in splits if sp.to_role not in parts]
    if missing:
        raise FormatError(f"{from_role} is re-fused from {', '.join(sp.to_role for sp in splits)}, "
                          f"but the GGUF lacks {', '.join(missing)}")
    if not splits:
        raise UnsupportedError(f"{fam.name}: no split of {from_role} to re-fuse")
    if src_shape is None and any(sp.uses_src_shape for sp in splits):
        raise UnsupportedError(f"{fam.name}: re-fusing {from_role} needs its Hugging Face shape "
                               "([target.shapes] in mappings/hf_configs.toml)")
    names: dict[str, Any] = {**cfg, "src_shape": list(src_shape)} if src_shape is not None else dict(cfg)
    total, C = gguf_matrix(tuple(src_shape)) if src_shape is not None else (None, None)
    contribs: list[_Contrib] = []
    groups: int | None = None
    for sp in splits:
        t = parts[sp.to_role]
        t_rows, t_cols = gguf_matrix(t.shape)
        g = _int(sp.groups, names, 1)
        if groups not in (None, g):
            raise UnsupportedError(f"{fam.name}: the splits of {from_role} use different groups; cannot re-fuse")
        groups = g
        segs = [(int(a.eval(names)), int(b.eval(names))) for a, b in sp.segments] if sp.segments else \
            [(_int(sp.start, names, 0), _int(sp.count, names, 0))]
        step = _int(sp.step, names, 1)
        split_ops = [(op.name, *op.values(names)) for op in sp.ops]
        cols = C
        if cols is None:
            # the HF width from the part: its columns, or its rows per piece when transposed
            flips = sum(o[0] == "transpose" for o in split_ops) % 2
            if any(o[0] in _COLUMN_OPS for o in split_ops) or (flips and (not g or t_rows % (g * len(segs)))):
                raise UnsupportedError(f"{fam.name}: re-fusing {from_role} needs its Hugging Face shape")
            cols = t_rows // (g * len(segs)) if flips else t_cols
        at = 0
        for start, count in segs:
            r, c, inv, col_sel = _forward_shape(fam, sp, split_ops, count, cols)
            if c != t_cols or count <= 0:
                raise FormatError(f"{t.name}: shape {list(t.shape)} does not fit {count} rows per group of {from_role}")
            own, quantum = inverse_ops(fam, sp.to_role, cfg, r, split=True)
            ops = own + inv
            if inv:
                quantum = r
            for gi in range(g):
                if at + r > t_rows:
                    raise FormatError(f"{t.name}: shape {list(t.shape)} does not fit {count} rows per group "
                                      f"of {from_role}")
                piece = HFPiece(t, at, at + r, ops, quantum)
                contribs.append(_Contrib(gi, start, (count - 1) * step + 1, step, col_sel, piece))
                at += r
        if at != t_rows:
            raise FormatError(f"{t.name}: shape {list(t.shape)} does not fit the rows of {from_role}")
        C = cols
    assert groups is not None and C is not None
    group_rows = total // groups if total is not None else max(c.start + c.span for c in contribs)
    pieces: list[HFPiece] = []
    for gi in range(groups):
        pieces.extend(_group_pieces(fam, from_role, [c for c in contribs if c.group == gi], group_rows, C))
    shape = tuple(src_shape) if src_shape is not None else (groups * group_rows, C)
    return shape, tuple(pieces)


def _forward_shape(fam: Family, sp: Split, split_ops: list[tuple], count: int,
                   cols: int) -> tuple[int, int, tuple[InverseOp, ...], tuple[int, int, int] | None]:
    """The GGUF (rows, cols) one group's rows become, the inverse of the split's own ops, and
    the HF columns a column op picked."""
    r, c = count, cols
    inv: list[InverseOp] = []
    col_sel = None
    for i, (name, *args) in enumerate(split_ops):
        if name in _COLUMN_OPS:
            if i or col_sel is not None:
                raise UnsupportedError(f"{fam.name}: {name} after another op in the {sp.to_role} split; cannot re-fuse")
            a, b = int(args[0]), int(args[1])
            col_sel = (a, c, b) if name == "take_cols" else (a, b, 1)
            c = len(range(*col_sel))
        elif name in _SPLIT_INVERSE:
            r, c = c, r
            inv.insert(0, (_SPLIT_INVERSE[name],))
        else:
            raise UnsupportedError(f"{fam.name}: no inverse for the {name!r} op of the {sp.to_role} split")
    return r, c, tuple(inv), col_sel


def _group_pieces(fam: Family, from_role: str, contribs: list[_Contrib], group_rows: int,
                  cols: int) -> list[HFPiece]:
    """One group's HF rows from its contributions: plain pieces in row order, and a join
    wherever parts share rows (strided rows, or columns picked by a column op)."""
    out: list[HFPiece] = []
    contribs = sorted(contribs, key=lambda c: (c.start, c.cols or (0, 0, 0)))
    at = 0
    i = 0
    while i < len(contribs):
        block = [contribs[i]]
        end = contribs[i].start + contribs[i].span
        while i + 1 < len(contribs) and contribs[i + 1].start < end:
            i += 1
            block.append(contribs[i])
            end = max(end, contribs[i].start + contribs[i].span)
        i += 1
        b0 = block[0].start
        if b0 != at:
            raise UnsupportedError(f"{fam.name}: the splits of {from_role} do not tile it; cannot re-fuse")
        at = end
        one = block[0]
        if len(block) == 1 and one.step == 1 and (one.cols is None or one.cols == (0, cols, 1)):
            out.append(one.piece)
            continue
        filled = 0
        jparts = []
        for c in block:
            cs = c.cols or (0, cols, 1)
            n_rows = (c.span - 1) // c.step + 1
            filled += n_rows * len(range(*cs))
            jparts.append(JoinPart(c.piece, c.start - b0, c.step, cs))
        if filled != (end - b0) * cols:
            raise UnsupportedError(f"{fam.name}: the splits of {from_role} do not tile it; cannot re-fuse")
        first = block[0].piece
        out.append(HFPiece(first.src, first.r0, first.r1, (), 1, tuple(jparts), (end - b0, cols)))
    if at != group_rows:
        raise UnsupportedError(f"{fam.name}: the splits of {from_role} cover {at} of {group_rows} rows per group; "
                               "cannot re-fuse")
    return out
