"""The maths of conversion: small named functions over a chunk of rows.

Every op takes a float32 array of shape (rows, cols) — a run of rows of the source tensor
seen as a matrix (all leading axes folded into rows) — plus arguments from the mapping data,
and returns the output's values for those rows in C order. Ops that need a whole matrix
(transpose) declare it in WHOLE so the planner hands them one."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import FormatError
from ..mapdata.convert import GENERATOR_NAMES, OP_NAMES


def permute_rope(x: np.ndarray, n_head: int, head_rows: int) -> np.ndarray:
    """HF "rotate half" row order -> GGML's interleaved pairs, head by head.

    ``head_rows`` is the rows one head takes (head_dim); the chunk holds whole heads."""
    rows = x.shape[0]
    if rows % head_rows or head_rows % 2:
        raise FormatError(f"cannot permute {rows} rows in heads of {head_rows}")
    h = rows // head_rows
    return x.reshape(h, 2, head_rows // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def unpermute_rope(x: np.ndarray, n_head: int, head_rows: int) -> np.ndarray:
    """The inverse of ``permute_rope``: GGML's interleaved pairs -> HF "rotate half"."""
    rows = x.shape[0]
    if rows % head_rows or head_rows % 2:
        raise FormatError(f"cannot un-permute {rows} rows in heads of {head_rows}")
    return x.reshape(rows // head_rows, head_rows // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def add(x: np.ndarray, value: float) -> np.ndarray:
    return x + np.float32(value)


def neg_exp(x: np.ndarray) -> np.ndarray:
    """A_log -> A = -exp(A_log) (Mamba-style state decay).

    Evaluated in float64 and rounded once, so each value is the correctly rounded float32 (numpy's
    float32 exp is off by an ulp for some inputs)."""
    return (-np.exp(x.astype(np.float64))).astype(np.float32)


def log_neg(x: np.ndarray) -> np.ndarray:
    """The inverse of ``neg_exp``: A -> A_log = log(-A), as the float32 nearest log(-A) whose
    ``neg_exp`` gives back exactly A (several float32 A_log round to one A when |A_log| is small:
    then the one nearest the exact logarithm)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(-x.astype(np.float64)).astype(np.float32)
    out = a.copy()
    done = neg_exp(a) == x
    up, down = a.copy(), a.copy()
    for _ in range(8):
        if done.all():
            break
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        for cand in (up, down):
            hit = ~done & (neg_exp(cand) == x)
            out[hit] = cand[hit]
            done |= hit
    return out


def transpose(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T)


def take_cols(x: np.ndarray, start: int, step: int) -> np.ndarray:
    """Every ``step``-th column from ``start`` (de-interleaving fused gate/up columns)."""
    return np.ascontiguousarray(x[:, start::step])


def col_range(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Columns [start, stop) (one half of a fused [gate | up] stacked expert, Llama 4)."""
    if not 0 <= start < stop <= x.shape[1]:
        raise FormatError(f"columns {start}..{stop} outside a matrix of {x.shape[1]}")
    return np.ascontiguousarray(x[:, start:stop])


def take_rows(x: np.ndarray, start: int, step: int) -> np.ndarray:
    """Every ``step``-th row from ``start`` (de-interleaving fused rows)."""
    return np.ascontiguousarray(x[start::step])


def dequant_fp8_blocks(x: np.ndarray, scale: np.ndarray, row0: int, block_rows: int, block_cols: int) -> np.ndarray:
    """FP8 weights times their block scales (``weight_scale_inv``): scale[i // br, j // bc].

    ``scale`` holds the scale rows covering this chunk, whose first row is ``row0``."""
    rows, cols = x.shape
    first = row0 // block_rows
    r = (np.arange(row0, row0 + rows) // block_rows) - first
    c = np.arange(cols) // block_cols
    return x * scale[r][:, c]


# ---- MXFP4 (OCP microscaling: 32 E2M1 values share one E8M0 exponent) ----------------------------

_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                  -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


def mxfp4_to_ggml(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """HF/OpenAI MXFP4 rows -> GGML ``block_mxfp4`` bytes, losslessly (only bits move).

    ``blocks`` uint8 (rows, G, 16): value 2k in the low nibble of byte k, 2k+1 in the high one;
    ``scales`` uint8 (rows, G): E8M0 exponents. GGML's block is the exponent byte then 16 bytes
    where byte j holds value j (low nibble) and value j+16 (high nibble); the 4-bit codes and the
    exponent byte mean the same on both sides. Returns uint8 (rows, G * 17)."""
    rows, groups = scales.shape
    if blocks.shape != (rows, groups, 16):
        raise FormatError(f"MXFP4 blocks {blocks.shape} do not match scales {scales.shape}")
    vals = np.empty((rows, groups, 32), dtype=np.uint8)
    vals[..., 0::2] = blocks & 0x0F
    vals[..., 1::2] = blocks >> 4
    out = np.empty((rows, groups, 17), dtype=np.uint8)
    out[..., 0] = scales
    out[..., 1:] = vals[..., :16] | (vals[..., 16:] << 4)
    return out.reshape(rows, groups * 17)


def ggml_to_mxfp4(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``mxfp4_to_ggml``: GGML ``block_mxfp4`` rows, uint8 (rows, G * 17) -> HF
    blocks uint8 (rows, G * 16) and E8M0 exponents uint8 (rows, G); only bits move."""
    rows = raw.shape[0]
    b = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, 17)
    vals = np.empty((rows, b.shape[1], 32), dtype=np.uint8)
    vals[..., :16] = b[..., 1:] & 0x0F
    vals[..., 16:] = b[..., 1:] >> 4
    blocks = vals[..., 0::2] | (vals[..., 1::2] << 4)
    return blocks.reshape(rows, -1), np.ascontiguousarray(b[..., 0])


def mxfp4_dequant(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """HF/OpenAI MXFP4 rows -> float32 (rows, G * 32): E2M1 value times 2**(exponent - 127)."""
    rows, groups = scales.shape
    vals = np.empty((rows, groups, 32), dtype=np.float32)
    vals[..., 0::2] = _E2M1[blocks & 0x0F]
    vals[..., 1::2] = _E2M1[blocks >> 4]
    vals *= np.ldexp(np.float32(1.0), scales.astype(np.int32) - 127)[..., None].astype(np.float32)
    return vals.reshape(rows, groups * 32)


OPS: dict[str, Callable[..., np.ndarray]] = {
    "permute_rope": permute_rope,
    "add": add,
    "neg_exp": neg_exp,
    "transpose": transpose,
    "take_cols": take_cols,
    "take_rows": take_rows,
    "col_range": col_range,
}
# the ops a GGUF -> HF plan uses
INVERSE_OPS: dict[str, Callable[..., np.ndarray]] = {
    "unpermute_rope": unpermute_rope, "add": add, "transpose": transpose, "log_neg": log_neg,
    # raw GGML MXFP4 rows (uint8) -> HF blocks or exponents, not dequantised (RAW_OPS)
    "mxfp4_blocks": lambda raw: ggml_to_mxfp4(raw)[0],
    "mxfp4_scales": lambda raw: ggml_to_mxfp4(raw)[1],
}
# inverse ops that take a piece's stored bytes (uint8 rows) rather than its dequantised values
RAW_OPS = {"mxfp4_blocks", "mxfp4_scales"}


def _inverse_permute(args: tuple, rows: int) -> tuple[tuple, int]:
    n_head = int(args[0])
    if not n_head or rows % n_head:
        raise FormatError(f"{rows} rows do not split into {n_head} heads")
    return ("unpermute_rope", n_head, rows // n_head), rows // n_head


# each forward op's inverse: (forward arguments, rows of the piece) -> (INVERSE_OPS op with its
# arguments, row quantum). An op missing here makes GGUF -> HF refuse the family by name.
INVERSE_OF: dict[str, Callable[[tuple, int], tuple[tuple, int]]] = {
    "permute_rope": _inverse_permute,                       # undone by unpermute_rope
    "add": lambda args, rows: (("add", -float(args[0])), 1),  # add(v) by add(-v)
    "neg_exp": lambda args, rows: (("log_neg",), 1),         # A = -exp(A_log) by A_log = log(-A)
    "transpose": lambda args, rows: (("transpose",), rows),  # its own inverse, on the whole piece
}
# ops that need the whole piece in one chunk
WHOLE = {"transpose"}
# ops that select rows only: applicable to MXFP4 blocks and scales as they are
ROW_OPS = {"take_rows"}
# ops that only move values (any dtype): a BF16 -> F16 chunk can be converted before them
LAYOUT_OPS = {"permute_rope", "transpose", "take_cols", "take_rows", "col_range"}


# ---- generated tensors: values computed from config.json, not read --------------------------------

def llama3_rope_factors(dim: int, theta: float, factor: float, low_freq_factor: float,
                        high_freq_factor: float, original_context: int) -> np.ndarray:
    """Llama 3-style rope scaling as GGML's per-frequency divisors (``rope_freqs``, dim // 2):
    wavelengths shorter than original_context / high_freq_factor are kept (1), longer than
    original_context / low_freq_factor slowed by ``factor``, and those between interpolated."""
    inv_freq = 1.0 / (float(theta) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelen = 2 * np.pi / inv_freq
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    out = np.where(wavelen > low_wavelen, float(factor), 1.0)
    mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    if mid.any():   # only then is high_freq_factor != low_freq_factor
        smooth = (original_context / wavelen[mid] - low_freq_factor) / (high_freq_factor - low_freq_factor)
        out[mid] = 1.0 / ((1 - smooth) / factor + smooth)
    return out.astype(np.float32)


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "llama3_rope_factors": llama3_rope_factors,
}

# the mapping data is checked against these names without importing this module
if set(OPS) != OP_NAMES or set(GENERATORS) != GENERATOR_NAMES:
    raise ImportError("internal: the ops of conversion/transforms.py and mapdata.convert.OP_NAMES / "
                      "GENERATOR_NAMES disagree")
