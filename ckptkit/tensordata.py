"""Tensor bytes to numpy arrays: decoding of every float format ckptkit converts from.

numpy has no bfloat16 or float8: those are widened to float32 by bit manipulation and a
lookup table (facts: bfloat16 is the top half of an IEEE float32; float8 e4m3fn has no
infinities and one NaN pattern; e5m2 is the top byte of a float16)."""
from __future__ import annotations

from functools import cache
from math import prod

import numpy as np

from .errors import UnsupportedError
from .index import TensorInfo
from .sources.base import Source

_NATIVE = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "U8": "u1", "I16": "<i2",
           "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "?"}


@cache
def _fp8_table(kind: str) -> np.ndarray:
    codes = np.arange(256, dtype=np.uint32)
    if kind == "F8_E5M2":
        return (codes.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    # e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa; S.1111.111 is NaN, no infinities
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> 3) & 0xF
    man = codes & 0x7
    val = np.where(exp == 0, man / 8.0 * 2.0 ** -6, (1 + man / 8.0) * 2.0 ** (exp.astype(np.int32) - 7))
    val = sign * val
    val[(codes & 0x7F) == 0x7F] = np.nan
    return val.astype(np.float32)


def e8m0_to_float(codes: np.ndarray) -> np.ndarray:
    """E8M0 scale exponents (OCP microscaling) as float32: 2^(code-127)."""
    return np.ldexp(np.float32(1.0), codes.astype(np.int32) - 127).astype(np.float32)


def decode(raw: bytes | bytearray | memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw little-endian bytes of ``dtype`` as an array of ``shape``: float32 for BF16/F8,
    the native type otherwise."""
    if dtype in _NATIVE:
        return np.frombuffer(raw, dtype=_NATIVE[dtype]).reshape(shape)
    if dtype == "BF16":
        u = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        u <<= 16  # in place: one float32-sized temporary, not two
        return u.view(np.float32).reshape(shape)
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return _fp8_table(dtype)[np.frombuffer(raw, dtype=np.uint8)].reshape(shape)
    if dtype == "F8_E8M0":
        return e8m0_to_float(np.frombuffer(raw, dtype=np.uint8)).reshape(shape)
    raise UnsupportedError(f"cannot decode {dtype} tensors")


_BLOCK = 1 << 18  # elements per step of bf16_to_f16: its scratch arrays stay small and are reused


def bf16_to_f16(raw: bytes | bytearray | memoryview) -> np.ndarray:
    """BF16 bytes as float16, identical to widening to float32 and casting (numpy's float16 cast
    is the slowest step of a bf16 -> f16 conversion). In float16's normal range the conversion
    is exact and is only bit arithmetic (bf16 has 7 mantissa bits, f16 10, exponent bias 127 vs
    15); the rest (tiny, huge, inf, nan: rare in weights) goes through float32. Worked in blocks
    into the result with two small scratch arrays: temporaries the size of the tensor cost more
    (fresh pages) than the arithmetic (2 x faster on 100 MB here)."""
    u = np.frombuffer(raw, dtype="<u2")
    out = np.empty(u.size, dtype=np.uint16)
    scratch = np.empty(min(_BLOCK, u.size), dtype=np.uint16)
    flags = np.empty(scratch.size, dtype=np.bool_)
    for i in range(0, u.size, _BLOCK):
        src, v = u[i : i + _BLOCK], out[i : i + _BLOCK]
        t, odd = scratch[: src.size], flags[: src.size]
        np.bitwise_and(src, 0x7FFF, out=v)
        np.subtract(v, 0x3880, out=t)
        np.greater(t, 0x477F - 0x3880, out=odd)  # exponent outside 113..142 (uint16 wrap-around)
        # ((e - 112) << 10) | (m << 3) == (v << 3) - (112 << 10), exact modulo 2**16 in this range
        np.left_shift(v, 3, out=v)
        np.subtract(v, 0xC000, out=v)
        np.bitwise_and(src, 0x8000, out=t)
        np.bitwise_or(v, t, out=v)
        if odd.any():
            idx = np.flatnonzero(odd)
            with np.errstate(over="ignore"):  # out of range becomes inf, as in the plain cast
                v[idx] = decode(src[idx].tobytes(), "BF16", (idx.size,)).astype(np.float16).view(np.uint16)
    return out.view(np.float16)


def row_nbytes(t: TensorInfo) -> int:
    """Bytes of one index along axis 0 (the whole tensor for 0-d tensors)."""
    return t.nbytes // t.shape[0] if t.shape and t.shape[0] else t.nbytes


def read_raw_rows(source: Source, t: TensorInfo, r0: int, r1: int) -> bytes:
    rb = row_nbytes(t)
    return source.read(t.file, t.offset + r0 * rb, (r1 - r0) * rb)


def read_rows(source: Source, t: TensorInfo, r0: int = 0, r1: int | None = None) -> np.ndarray:
    """Rows [r0, r1) along axis 0, decoded."""
    if not t.shape:
        return decode(source.read(t.file, t.offset, t.nbytes), t.dtype, ())
    r1 = t.shape[0] if r1 is None else r1
    return decode(read_raw_rows(source, t, r0, r1), t.dtype, (r1 - r0, *t.shape[1:]))


def numel(shape: tuple[int, ...]) -> int:
    return prod(shape)
