"""GGUF tensor bytes -> HF values: rows dequantised, the plan's inverse ops applied, encoded as the
output dtype, chunk by chunk."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..dtypes import GGML_TYPE_BY_NAME, ggml_nbytes
from ..errors import FormatError, UnsupportedError
from ..index import TensorInfo
from ..sources.base import Source
from ..tensordata import decode
from .hf_pieces import HFPiece, HFTensor, gguf_matrix
from .transforms import INVERSE_OPS, RAW_OPS

CHUNK_BYTES = 32 << 20      # output bytes per chunk


def _row_bytes(t: TensorInfo, cols: int) -> int:
    tid = GGML_TYPE_BY_NAME.get(t.dtype)
    if tid is None:
        raise UnsupportedError(f"{t.name}: unknown ggml type {t.dtype}")
    n = ggml_nbytes(tid, (1, cols))
    if n is None:
        raise FormatError(f"{t.name}: rows of {cols} do not fill whole {t.dtype} blocks")
    return n


def dequantize_rows(raw: bytes, t: TensorInfo, rows: int, cols: int) -> np.ndarray:
    """GGUF tensor bytes of ``rows`` rows as float32 (rows, cols)."""
    if t.dtype in ("F32", "F16", "BF16", "F64"):
        return decode(raw, t.dtype, (rows, cols)).astype(np.float32, copy=False)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    try:
        q = GGMLQuantizationType[t.dtype]
        x = dequantize(np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1), q)
    except (KeyError, NotImplementedError, ValueError) as e:
        raise UnsupportedError(f"{t.name}: cannot dequantise {t.dtype} ({e})") from None
    return np.asarray(x, dtype=np.float32).reshape(rows, cols)


def encode(x: np.ndarray, dtype: str) -> bytes:
    if dtype == "U8":                     # MXFP4 blocks / exponents kept as stored (RAW_OPS)
        return np.ascontiguousarray(x, dtype=np.uint8).tobytes()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "F32":
        return x.astype("<f4", copy=False).tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        u = x.view(np.uint32)
        # round to nearest, ties to even; NaN stays a quiet NaN
        r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
        r[np.isnan(x)] = 0x7FC0
        return r.tobytes()
    raise UnsupportedError(f"cannot write {dtype}")


def tensor_chunks(source: Source, t: HFTensor, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The output bytes of one HF tensor, in bounded chunks of whole row quanta."""
    for p in t.pieces:
        yield from piece_chunks(source, p, t.entry.dtype, chunk_bytes)


def piece_chunks(source: Source, t: HFPiece, dtype: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    for x in piece_arrays(source, t, chunk_bytes):
        yield encode(x, dtype)


def piece_arrays(source: Source, t: HFPiece, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """A piece's values as float32 arrays in HF layout (C order), in bounded chunks of whole row
    quanta; ``chunk_bytes`` counts float32 output bytes. A join is one block: each part read
    whole, placed at its rows and columns."""
    if t.join:
        out: np.ndarray | None = None
        for jp in t.join:
            x = np.concatenate(list(piece_arrays(source, jp.piece, 1 << 62)), axis=0)
            x = x.reshape(-1, len(range(*jp.cols)))
            if out is None:
                out = np.empty(t.join_shape, dtype=x.dtype)
            out[jp.row0:jp.row0 + (x.shape[0] - 1) * jp.row_step + 1:jp.row_step, slice(*jp.cols)] = x
        assert out is not None
        yield out
        return
    src = t.src
    _, cols = gguf_matrix(src.shape)
    if len(src.shape) <= 1:
        # 1-D: small; the ops see it as a column, as the forward plan did
        x = dequantize_rows(source.read(src.file, src.offset, src.nbytes), src, 1, src.shape[0] if src.shape else 1)
        x = x.reshape(-1, 1)
        for name, *args in t.ops:
            x = INVERSE_OPS[name](x, *args)
        yield x.reshape(-1)
        return
    rb = _row_bytes(src, cols)
    q = max(t.quantum, 1)
    step = max(q, (chunk_bytes // max(cols * 4, 1)) // q * q)
    raw_ops = bool(t.ops) and t.ops[0][0] in RAW_OPS
    for a in range(t.r0, t.r1, step):
        b = min(a + step, t.r1)
        raw = source.read(src.file, src.offset + a * rb, (b - a) * rb)
        if raw_ops:
            x = np.frombuffer(raw, dtype=np.uint8).reshape(b - a, rb)
        else:
            x = dequantize_rows(raw, src, b - a, cols)
        for name, *args in t.ops:
            x = INVERSE_OPS[name](x, *args)
        yield x


def read_tensor(source: Source, t: TensorInfo) -> np.ndarray:
    """A small GGUF tensor's values, whole, as float32 (matrix form, gguf_matrix)."""
    rows, cols = gguf_matrix(t.shape)
    return dequantize_rows(source.read(t.file, t.offset, t.nbytes), t, rows, cols)
