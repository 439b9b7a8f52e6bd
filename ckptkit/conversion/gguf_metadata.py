"""A conversion family's [metadata] tables evaluated over config.json: the GGUF key-value header,
after the family's [checks] (what llama.cpp's implementation assumes about the config)."""
from __future__ import annotations

from ..errors import UnsupportedError
from ..expr import ExprError
from ..formats.gguf_write import KV, VT, kv
from .family import Family

_TYPED = {"u32": VT.UINT32, "i32": VT.INT32, "f32": VT.FLOAT32, "bool": VT.BOOL, "str": VT.STRING,
          "u64": VT.UINT64}


def check_config(fam: Family, cfg: dict) -> None:
    """The family's [checks]: what llama.cpp's implementation assumes about the config."""
    for expr, why in fam.checks:
        if not expr.eval(cfg):
            raise UnsupportedError(f"{fam.arch}: {why}")


def metadata_kvs(fam: Family, cfg: dict) -> list[KV]:
    check_config(fam, cfg)
    out = [kv("general.architecture", fam.arch)]
    names = dict(cfg)
    for m in fam.metadata.values():
        key = m.key.replace("{arch}", fam.arch)
        typ = _TYPED[m.type] if m.type else None
        try:
            value = m.expr.eval(names)
        except ExprError as e:
            if m.optional:          # declared in the data: may not apply to every config
                continue
            raise ExprError(f"cannot compute GGUF key {key}: {e.message}") from None
        if value is None:           # the documented "not written"
            continue
        if typ == VT.FLOAT32:
            value = float(value)
        out.append(kv(key, value, typ))
    have = {k.key for k in out}
    for req in fam.required:
        key = req.replace("{arch}", fam.arch)
        if key not in have:
            raise UnsupportedError(f"config.json lacks what GGUF key {key} needs ({fam.metadata[req].expr})")
    return out
