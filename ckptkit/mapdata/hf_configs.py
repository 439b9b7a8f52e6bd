"""mappings/hf_configs.toml: the transformers model each GGUF architecture becomes, its
config.json as expressions over the GGUF metadata, and HF tensor names."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..expr import Expr
from .roles import RoleTable, check_role
from .schema import Table, frozen

DEFAULT_REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class ConfigKey:
    """One config.json key: ``key[?] = "expression"`` ("a.b" nests)."""
    key: str
    expr: Expr
    optional: bool           # "?": a failing expression leaves the key out instead of an error


@dataclass(frozen=True)
class Target:
    arch: str
    architectures: tuple[str, ...]
    model_type: str
    config: Mapping[str, ConfigKey]
    checks: tuple[tuple[Expr, str], ...]
    names: Mapping[str, str]                    # GGUF role -> HF name template
    when: Expr | None = None
    keep_null: frozenset[str] = frozenset()     # config keys written as null rather than left out
    required: tuple[str, ...] = DEFAULT_REQUIRED
    # fused HF role -> its shape as an expression over config.json (re-fusing [[split]] tables
    # whose expressions read src_shape)
    shapes: Mapping[str, Expr] = field(default_factory=dict)


@dataclass
class _Tables:
    """A target's tables while merging: entries, with False marking a dropped inherited one."""
    config: dict[str, Any]
    checks: dict[str, tuple[Expr, str]]       # expression text -> (expression, why)
    names: dict[str, str]
    keep_null: tuple[str, ...]
    required: tuple[str, ...] | None
    shapes: dict[str, Expr] = field(default_factory=dict)


def load_targets(top: Table, roles: RoleTable) -> tuple[Target, ...]:
    ct = top.table("common")
    common = _tables(ct, roles, base=None)
    ct.done()
    by_type: dict[str, _Tables] = {}
    out = []
    for t in top.tables("target"):
        arch, model_type = t.text("arch"), t.text("model_type")
        architectures = t.strs("architectures")
        when = t.expr("when", None)
        ext = t.text("extends", None)
        if ext is not None and ext not in by_type:
            t.fail(f"no earlier target has model_type {ext!r}", "extends")
        base = by_type[ext] if ext is not None else common
        merged = _tables(t, roles, base)
        by_type[model_type] = merged
        t.done()
        out.append(Target(arch, architectures, model_type, frozen(merged.config), tuple(merged.checks.values()),
                          frozen(merged.names), when, frozenset(merged.keep_null),
                          merged.required or DEFAULT_REQUIRED, frozen(merged.shapes)))
    top.done()
    return tuple(out)


def _tables(t: Table, roles: RoleTable, base: _Tables | None) -> _Tables:
    """This table's [config], [checks], [names], keep_null, required over ``base``'s."""
    config = dict(base.config) if base else {}
    ct = t.table("config")
    for raw, v in ct.items(lambda k, v: v):
        key, optional = (raw[:-1], True) if raw.endswith("?") else (raw, False)
        if v is False:
            if key not in config:
                ct.fail("false drops an inherited key, but there is none of this name", raw)
            del config[key]
        elif isinstance(v, str):
            config[key] = ConfigKey(key, ct.compile(v, raw), optional)
        else:
            ct.fail("must be an expression (a string) or false", raw)
    ct.done()
    checks = {e.src: (e, why) for e, why in base.checks.values()} if base else {}
    kt = t.table("checks")
    for src, why in kt.items(lambda k, v: v):
        if why is False:
            if src not in checks:
                kt.fail("false drops an inherited check, but there is none with this expression", repr(src))
            del checks[src]
        elif isinstance(why, str):
            checks[src] = (kt.compile(src, src), why)
        else:
            kt.fail("must be the message shown when the check fails, or false", repr(src))
    kt.done()
    names = dict(base.names) if base else {}
    nt = t.table("names")
    for role, tmpl in nt.items(lambda k, v: v):
        check_role(nt, role, repr(role), roles)
        if not isinstance(tmpl, str):
            nt.fail("must be a Hugging Face tensor name", repr(role))
        names[role] = tmpl
    nt.done()
    shapes = dict(base.shapes) if base else {}
    st = t.table("shapes")
    for role, src in st.items(lambda k, v: v):
        check_role(st, role, repr(role), roles)
        if not isinstance(src, str):
            st.fail("must be an expression (a string) giving the Hugging Face shape", repr(role))
        shapes[role] = st.compile(src, repr(role))
    st.done()
    keep_null = (base.keep_null if base else ()) + t.strs("keep_null", ())
    required = t.strs("required", None) if t.has("required") else (base.required if base else None)
    return _Tables(config, checks, names, keep_null, required, shapes)
