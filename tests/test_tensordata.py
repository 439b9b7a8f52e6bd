"""bf16 -> f16 by bit arithmetic equals widening to float32 and casting, for every bf16 value."""
import numpy as np

from ckptkit.tensordata import bf16_to_f16, decode


def test_bf16_to_f16_matches_the_float32_cast_for_all_65536_patterns():
    raw = np.arange(1 << 16, dtype="<u2").tobytes()
    got = bf16_to_f16(raw)
    with np.errstate(over="ignore"):
        want = decode(raw, "BF16", (1 << 16,)).astype(np.float16)
    assert got.dtype == np.float16 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))  # NaN payloads too


def test_bf16_to_f16_edge_values():
    vals = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 1e5, -1e5, 6.1e-5, 1e-6, 1e-9, np.inf, -np.inf],
                    dtype=np.float32)
    raw = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    got = bf16_to_f16(raw)
    assert got[0] == 0 and np.signbit(got[1]) and got[2] == 1.0 and got[3] == -2.5
    assert np.isinf(got[5]) and got[6] == -np.inf and got[10] == np.inf and got[11] == -np.inf
    assert abs(got[8] - 1e-6) < 6e-8 and got[9] == 0  # subnormal kept, underflow to zero


def test_bf16_to_f16_across_blocks_and_empty():
    from ckptkit import tensordata

    rng = np.random.default_rng(7)
    n = 3 * tensordata._BLOCK + 12_345  # several blocks and a short last one, odd patterns anywhere
    u = rng.permutation(np.resize(np.arange(1 << 16, dtype="<u2"), n))
    raw = u.tobytes()
    with np.errstate(over="ignore"):
        want = decode(raw, "BF16", (n,)).astype(np.float16)
    assert np.array_equal(bf16_to_f16(raw).view(np.uint16), want.view(np.uint16))
    assert bf16_to_f16(b"").size == 0
