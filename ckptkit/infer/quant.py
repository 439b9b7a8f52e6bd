"""Quantization: FP8 block scales, MXFP4 blocks, GGUF quant types."""
from __future__ import annotations

from itertools import compress
from operator import itemgetter, methodcaller

from ..index import TensorIndex
from .fact import Fact, Hints
from .scan import Scan, fp8_scale_ends, params_of, scaled_weights

FULL = {"F32", "F16", "BF16", "F64"}
_NAME, _NBYTES = itemgetter(0), itemgetter(5)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def block_size(weight: tuple[int, ...], scale: tuple[int, ...]) -> list[int] | None:
    """Block shape that turns ``weight`` into ``scale`` by ceil-division, per dimension."""
    if len(weight) != len(scale) or not weight:
        return None
    out = []
    for w, s in zip(weight, scale, strict=True):
        if s <= 0:
            return None
        b = _ceil_div(w, s)
        # prefer the power of two that fits (ragged last blocks make w/s inexact)
        p = 1
        while p < b:
            p *= 2
        if _ceil_div(w, p) == s:
            b = p
        if _ceil_div(w, b) != s:
            return None
        out.append(b)
    return out


def infer_quant(index: TensorIndex, s: Scan, h: Hints) -> Fact:
    if index.format == "gguf":
        types: dict[str, int] = {}
        for t in index.tensors.values():
            types[t.dtype] = types.get(t.dtype, 0) + t.numel
        quant = {k: v for k, v in types.items() if k not in FULL}
        ft, fk = index.metadata.get("general.file_type"), "general.file_type"
        ev = [f"{k}: {v} params" for k, v in sorted(types.items(), key=lambda kv: -kv[1])]
        if ft is not None:
            ev.append(f"{fk} = {ft}")
        return Fact({"method": "gguf" if quant else None, "types": sorted(quant, key=lambda k: -quant[k])},
                    "tensors", ev)
    ev = []
    value: dict | None = None
    if s.blocks:
        b = s.blocks[0]
        q = sum(t.numel * 2 for t in s.blocks)
        scales = [t for t in s.scales if t.name.endswith("_scales")]
        value = {"method": "mxfp4", "quantized_params": q, "scale_tensors": len(scales),
                 "scale_bytes": sum(t.nbytes for t in scales), "block": 32}
        ev.append(f"{b.name} {b.dtype} {list(b.shape)}: 32 four-bit values per 16 bytes")
    fp8 = list(compress(s.scales, map(methodcaller("endswith", fp8_scale_ends()), map(_NAME, s.scales))))
    if fp8:
        sc = fp8[0]
        base = sc.name[: sc.name.rindex("_scale")]
        w = index.tensors.get(base)
        blk = block_size(w.shape, sc.shape) if w is not None else None
        n_scales = 1
        for d in sc.shape:
            n_scales *= d
        granularity = ("tensor" if n_scales == 1 else
                       "channel" if w is not None and w.shape and tuple(sc.shape) in ((w.shape[0],), (w.shape[0], 1))
                       else "block")
        value = {"method": "fp8", "weight_dtype": w.dtype if w is not None else None,
                 "granularity": granularity, "block_size": blk if granularity == "block" else None,
                 "scale_tensors": len(fp8),
                 "scale_bytes": sum(map(_NBYTES, fp8)),
                 "quantized_params": s.scaled_params + params_of(filter(None, scaled_weights(
                     index.tensors, map(_NAME, s.scaled_elsewhere))))}
        ev.append(f"{sc.name} {list(sc.shape)} scales {base} "
                  f"{list(w.shape) if w is not None else '(missing)'}")
    if value is None:
        low = [d for d in s.dtypes if d.startswith(("F8", "F4", "F6", "I8", "U8", "I4"))]
        if low:
            value = {"method": "low-precision dtypes", "dtypes": low}
        ev.append("dtypes: " + ", ".join(f"{d} {n}" for d, n in s.dtypes.items()))
    qc, qk = h.cfg("quantization_config")
    if isinstance(qc, dict):
        ev.append(f"{qk}: quant_method = {qc.get('quant_method')}")
    return Fact(value, "tensors", ev)
