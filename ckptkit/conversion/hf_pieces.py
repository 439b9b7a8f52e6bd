"""The units of a GGUF -> HF tensor plan: pieces (rows of a GGUF tensor plus the inverse ops)
and joins (parts placed at strided rows / picked columns of one HF block)."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from ..formats.safetensors_write import Entry
from ..index import TensorInfo

# an inverse op: the name of a function in transforms.INVERSE_OPS, then its arguments after the array
InverseOp = tuple[str, *tuple[float, ...]]


def gguf_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) as the HF -> GGUF plan sees a tensor: leading axes folded, 1-D a column."""
    if len(shape) <= 1:
        return (shape[0] if shape else 1), 1
    return prod(shape[:-1]), shape[-1]


@dataclass(frozen=True)
class JoinPart:
    """A part of a join: ``piece``'s values (read whole) go to rows ``row0, row0 + row_step, ...``
    and columns ``range(*cols)`` of the joined block."""
    piece: HFPiece
    row0: int
    row_step: int
    cols: tuple[int, int, int]


@dataclass(frozen=True)
class HFPiece:
    """Rows [r0, r1) of a GGUF tensor seen as a matrix, with the inverse ops; chunks hold a
    multiple of ``quantum`` rows. A join (``join`` set) is instead a block of ``join_shape``
    assembled from its parts; ``src``/``r0``/``r1`` then name its first part."""
    src: TensorInfo
    r0: int
    r1: int
    ops: tuple[InverseOp, ...] = ()
    quantum: int = 1
    join: tuple[JoinPart, ...] = ()
    join_shape: tuple[int, int] = (0, 0)

    @property
    def sources(self) -> tuple[TensorInfo, ...]:
        """Every GGUF tensor this piece reads."""
        return tuple(p.piece.src for p in self.join) if self.join else (self.src,)


@dataclass(frozen=True)
class HFTensor:
    """One HF output: its pieces' results concatenated (C order); one piece unless re-fused."""
    entry: Entry
    pieces: tuple[HFPiece, ...]

    @property
    def src(self) -> TensorInfo:
        return self.pieces[0].src

    @property
    def ops(self) -> tuple[tuple[Any, ...], ...]:
        return self.pieces[0].ops
