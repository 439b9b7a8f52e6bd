"""Element types: safetensors dtypes (bits per element) and ggml tensor types (block layout).

Numbers are facts of the two formats: safetensors 0.8's Dtype enum and ggml's type traits.
"""
from __future__ import annotations

# safetensors dtype name -> bits per element
SAFETENSORS_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "F64": 64, "I64": 64, "U64": 64,
}

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}
GGML_TYPE_BY_NAME: dict[str, int] = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}

# dtypes that count as floating point for "parameters" purposes (everything does; scales are
# reported separately by inference, not here)
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"}


def safetensors_nbytes(dtype: str, numel: int) -> int | None:
    """Bytes a tensor of ``numel`` elements takes, or None when it does not end on a byte."""
    bits = SAFETENSORS_BITS[dtype] * numel
    return bits // 8 if bits % 8 == 0 else None


def ggml_nbytes(type_id: int, shape: tuple[int, ...]) -> int | None:
    """Bytes of a ggml tensor (numpy-order shape), or None when rows do not fill whole blocks."""
    _, block, size = GGML_TYPES[type_id]
    if not shape:
        return size if block == 1 else None
    row = shape[-1]
    if row % block:
        return None
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows * (row // block) * size
