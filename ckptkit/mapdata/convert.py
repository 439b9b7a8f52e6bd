"""mappings/convert/*.toml: how each family converts to GGUF (metadata expressions, tensor
transforms, splits, generated tensors, checks), merged over convert/_common.toml."""
from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..expr import Expr
from .roles import RoleTable, check_role
from .schema import Table, frozen

GGUF_TYPES = ("u32", "i32", "f32", "bool", "str", "u64")
#: the ops a [transforms] or [[split]] entry may name, and the generators a [[generate]] entry may:
#: exactly those conversion/transforms.py implements (it checks so when imported), listed here so
#: that checking the mapping data does not import the numerical code
OP_NAMES = frozenset({"permute_rope", "add", "neg_exp", "transpose", "take_cols", "take_rows", "col_range"})
GENERATOR_NAMES = frozenset({"llama3_rope_factors"})
_FAMILY_KEYS = ("arch", "architectures", "model_types", "options", "metadata", "required",
                "checks", "transforms", "renames", "dtypes", "split", "tensor_parallel")


@dataclass(frozen=True)
class MetaKey:
    """One GGUF metadata key: ``"{arch}.name[:type][?]" = "expression"``."""
    key: str                 # GGUF key; "{arch}" not yet filled in
    expr: Expr
    type: str | None         # forced GGUF type (one of GGUF_TYPES) or None
    optional: bool           # "?": a failing expression leaves the key out instead of an error


@dataclass(frozen=True)
class Op:
    """A tensor op and its arguments: numbers as written, strings as expressions."""
    name: str
    args: tuple[Any, ...]

    def values(self, names: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(a.eval(names) if isinstance(a, Expr) else a for a in self.args)


@dataclass(frozen=True)
class Split:
    """A [[split]] table (see mappings/convert/deepseek2.toml): an output role cut from the
    row groups of a source role. Absent fields are None."""
    from_role: str
    to_role: str
    groups: Expr | None
    group_rows: Expr | None
    start: Expr | None
    count: Expr | None
    step: Expr | None
    segments: tuple[tuple[Expr, Expr], ...] | None
    shape: Expr | None
    ops: tuple[Op, ...]

    def exprs(self) -> list[Expr]:
        out = [e for e in (self.groups, self.group_rows, self.start, self.count, self.step, self.shape) if e]
        out += [e for seg in self.segments or () for e in seg]
        out += [a for op in self.ops for a in op.args if isinstance(a, Expr)]
        return out

    @property
    def uses_src_shape(self) -> bool:
        return any(isinstance(n, ast.Name) and n.id == "src_shape" for e in self.exprs() for n in ast.walk(e.node))


@dataclass(frozen=True)
class Generate:
    """An [[options.generate]] table: a tensor computed from config.json alone."""
    to: str
    when: Expr
    op: Op
    shape: Expr


@dataclass(frozen=True)
class TPJoin:
    """How a role's tensor-parallel slices join: along ``axis``, in rank order, to ``size``
    (an expression over config.json; None: unchecked). Split along it to write them back."""
    axis: int
    size: Expr | None


@dataclass(frozen=True)
class TensorParallel:
    """A [tensor_parallel] table: a checkpoint published as per-rank slices of the same names."""
    rank_file: str                      # regular expression; its one group is the rank number
    join: Mapping[str, TPJoin]          # role -> how its slices join


@dataclass(frozen=True)
class ConvertFamily:
    name: str                                   # file stem: "llama", "qwen3moe", ...
    arch: str                                   # GGUF general.architecture
    architectures: tuple[str, ...]              # HF architecture class names
    model_types: tuple[str, ...]                # config.json model_type values
    metadata: Mapping[str, MetaKey]             # GGUF key ("{arch}." unexpanded) -> its entry
    required: tuple[str, ...]                   # GGUF keys that must be written
    transforms: Mapping[str, tuple[Op, ...]]    # output role -> ops, applied in order
    f32_roles: frozenset[str]
    renames: Mapping[str, str]                  # canonical role -> GGUF role
    checks: tuple[tuple[Expr, str], ...]        # expression that must hold, why
    splits: tuple[Split, ...]
    mtp_from_layer: Expr | None = None          # first layer that is an MTP module
    mtp_layer_offset: Expr | None = None        # GGUF layer of "mtp.layers.0"
    generate: tuple[Generate, ...] = ()
    tensor_parallel: TensorParallel | None = None


def load_families(common: Table, files: dict[str, Table], roles: RoleTable) -> dict[str, ConvertFamily]:
    """``files``: family name -> its top-level table; ``common``: _common.toml's."""
    c_meta = _metadata(common)
    c_req = _required(common)
    c_f32 = _f32(common, roles)
    common.done()
    out = {}
    for name, t in files.items():
        out[name] = _family(name, t, c_meta, c_req, c_f32, roles)
    return out


def _family(name: str, t: Table, c_meta: dict[str, MetaKey], c_req: tuple[str, ...],
            c_f32: frozenset[str], roles: RoleTable) -> ConvertFamily:
    arch = t.text("arch")
    architectures, model_types = t.strs("architectures", ()), t.strs("model_types", ())
    meta = {**c_meta, **_metadata(t)}
    required = c_req + _required(t)
    for req in required:
        if req not in meta:
            t.fail(f"{req!r} has no [metadata] entry in this file or convert/_common.toml", "[required] keys")
    opts = t.table("options")
    mtp_from, mtp_off = opts.expr("mtp_from_layer", None), opts.expr("mtp_layer_offset", None)
    generate = tuple(_generate(g, roles) for g in opts.tables("generate"))
    opts.done()
    ct = t.table("checks")
    checks = tuple((ct.compile(k, k), _why(ct, k, v)) for k, v in ct.items(lambda k, v: v))
    ct.done()
    tt = t.table("transforms")
    transforms = {}
    for role, ops in tt.items(lambda k, v: v):
        check_role(tt, role, repr(role), roles)
        transforms[role] = _ops(tt, role, ops, transform=True)
    tt.done()
    rt = t.table("renames")
    renames = {}
    for src, dst in rt.items(lambda k, v: v):
        check_role(rt, src, repr(src), roles)
        if not isinstance(dst, str):
            rt.fail("must be a role name", repr(src))
        renames[src] = check_role(rt, dst, repr(src), roles)
    rt.done()
    f32 = c_f32 | _f32(t, roles)
    splits = tuple(_split(s, roles) for s in t.tables("split"))
    tp = _tensor_parallel(t.table("tensor_parallel"), roles) if t.has("tensor_parallel") else None
    t.done()
    return ConvertFamily(name, arch, architectures, model_types, frozen(meta), required, frozen(transforms),
                         f32, frozen(renames), checks, splits, mtp_from, mtp_off, generate, tp)


def _tensor_parallel(tt: Table, roles: RoleTable) -> TensorParallel:
    pattern = tt.text("rank_file")
    try:
        groups = re.compile(pattern).groups
    except re.error as e:
        tt.fail(f"not a regular expression: {e}", "rank_file")
    if groups != 1:
        tt.fail("must have exactly one group (the rank number)", "rank_file")
    jt = tt.table("join", required=True)
    join = {}
    for role, v in jt.items(lambda k, v: v):
        check_role(jt, role, repr(role), roles)
        if not (isinstance(v, list) and len(v) == 2 and type(v[0]) is int and v[0] >= 0 and isinstance(v[1], str)):
            jt.fail('must be [axis, "joined size expression"] (axis an integer >= 0, "" for no check)', repr(role))
        join[role] = TPJoin(v[0], jt.compile(v[1], role) if v[1] else None)
    jt.done()
    tt.done()
    return TensorParallel(pattern, frozen(join))


def _why(t: Table, key: str, v: Any) -> str:
    if not isinstance(v, str):
        t.fail("must be the message shown when the check fails", repr(key))
    return v


def _metadata(top: Table) -> dict[str, MetaKey]:
    mt = top.table("metadata")
    out: dict[str, MetaKey] = {}
    for raw, src in mt.items(lambda k, v: v):
        shown = repr(raw)
        if not isinstance(src, str):
            mt.fail("must be an expression (a string)", shown)
        key, optional = (raw[:-1], True) if raw.endswith("?") else (raw, False)
        typ = None
        if ":" in key:
            key, typ = key.rsplit(":", 1)
            if typ not in GGUF_TYPES:
                mt.fail(f"unknown GGUF type {typ!r} (one of {', '.join(GGUF_TYPES)})", shown)
        if key in out:
            mt.fail(f"{key!r} is given twice", shown)
        out[key] = MetaKey(key, mt.compile(src, raw), typ, optional)
    mt.done()
    return out


def _required(top: Table) -> tuple[str, ...]:
    rt = top.table("required")
    keys = rt.strs("keys", ())
    rt.done()
    return keys


def _f32(top: Table, roles: RoleTable) -> frozenset[str]:
    dt = top.table("dtypes")
    f32 = dt.strs("f32", ())
    for r in f32:
        check_role(dt, r, "f32", roles)
    dt.done()
    return frozenset(f32)


def _ops(t: Table, key: str, ops: Any, transform: bool) -> tuple[Op, ...]:
    shown = repr(key) if transform else key
    if not isinstance(ops, list) or not all(isinstance(o, list) and o and isinstance(o[0], str) for o in ops):
        t.fail('must be a list of ops: [["op", arg, ...], ...]', shown)
    out = []
    for name, *args in ops:
        if name not in OP_NAMES:
            t.fail(f"unknown op {name!r} (known: {', '.join(sorted(OP_NAMES))})", shown)
        out.append(Op(name, tuple(_arg(t, shown, a) for a in args)))
    return tuple(out)


def _arg(t: Table, key: str, a: Any) -> Any:
    if isinstance(a, bool) or not isinstance(a, (str, int, float)):
        t.fail(f"op arguments are numbers or expressions, not {a!r}", key)
    return t.compile(a, key) if isinstance(a, str) else a


def _split(s: Table, roles: RoleTable) -> Split:
    src, dst = s.text("from"), s.text("to")
    check_role(s, src, "from", roles)
    check_role(s, dst, "to", roles)
    segments = None
    if s.has("segments"):
        raw = s.get("segments", (list,))
        if not all(isinstance(x, list) and len(x) == 2 for x in raw):
            s.fail("must be a list of [start, count] pairs", "segments")
        segments = tuple((s.compile(str(a), "segments"), s.compile(str(b), "segments")) for a, b in raw)
    ops = _ops(s, "ops", s.get("ops", (list,), []), transform=False)
    if segments is None and not s.has("count"):
        s.fail("a split needs count (or segments)", "count")
    sp = Split(src, dst, s.expr("groups", None), s.expr("group_rows", None), s.expr("start", None),
               s.expr("count", None), s.expr("step", None), segments, s.expr("shape", None), ops)
    s.done()
    return sp


def _generate(g: Table, roles: RoleTable) -> Generate:
    to = check_role(g, g.text("to"), "to", roles)
    raw = g.get("op", (list,))
    if not raw or not isinstance(raw[0], str) or raw[0] not in GENERATOR_NAMES:
        g.fail(f"must start with a generator name (known: {', '.join(sorted(GENERATOR_NAMES))})", "op")
    op = Op(raw[0], tuple(_arg(g, "op", a) for a in raw[1:]))
    gen = Generate(to, g.expr("when", None) or g.compile("True", "when"), op, g.expr("shape"))
    g.done()
    return gen
