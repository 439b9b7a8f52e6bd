"""The GGUF -> HF tensor plan: tensor names go back through the canonical role tables
(mappings/roles.toml), the conversion family's [transforms] are inverted and its [[split]]
tables re-fused (mappings/convert/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from math import prod
from typing import Any

from .. import mapdata
from ..errors import CkptError, FormatError, UnsupportedError
from ..formats.safetensors_write import Entry
from ..index import TensorIndex, TensorInfo
from ..infer.names import canonicalize
from ..mapdata import Split, Target
from .family import Family, family_for
from .hf_config import build_config, flat_config, metadata_names, pick_target

OUTTYPES = {"bf16": ("BF16", "bfloat16"), "f16": ("F16", "float16"), "f32": ("F32", "float32")}


@lru_cache(maxsize=1)
def _role_spellings() -> dict[str, str]:
    """Each role's first HF spelling in roles.toml, as a full-name template."""
    roles = mapdata.roles()
    out = {}
    for role, names in roles.global_roles.items():
        if names:
            out[role] = "model." + names[0]
    for role, names in roles.layer_roles.items():
        if names:
            out[role] = "model.layers.{layer}." + names[0].replace("*", "{expert}")
    return out


# an inverse op: the name of a function in transforms.INVERSE_OPS, then its arguments after the array
InverseOp = tuple[str, *tuple[float, ...]]


@dataclass(frozen=True)
class HFPiece:
    """Rows [r0, r1) of a GGUF tensor seen as a matrix, with the inverse ops; chunks hold a
    multiple of ``quantum`` rows."""
    src: TensorInfo
    r0: int
    r1: int
    ops: tuple[InverseOp, ...] = ()
    quantum: int = 1


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


@dataclass
class HFPlan:
    target: Target
    family: Family
    config: dict[str, Any]
    tensors: list[HFTensor]
    notes: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.entry.nbytes for t in self.tensors)


def gguf_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) as the HF -> GGUF plan sees a tensor: leading axes folded, 1-D a column."""
    if len(shape) <= 1:
        return (shape[0] if shape else 1), 1
    return prod(shape[:-1]), shape[-1]


def inverse_ops(fam: Family, role: str, cfg: dict, rows: int,
                 split: bool = False) -> tuple[tuple[InverseOp, ...], int]:
    """The family's transforms of a GGUF role undone, last first; and the chunk row quantum."""
    if not split and any(sp.to_role == role for sp in fam.splits):
        raise UnsupportedError(f"{fam.name}: {role} is split from a fused HF tensor; re-fusing is not supported yet")
    ops: list[InverseOp] = []
    quantum = 1
    for op in reversed(fam.transforms.get(role, ())):
        name, vals = op.name, op.values(cfg)
        if name == "permute_rope":
            n_head = int(vals[0])
            if not n_head or rows % n_head:
                raise FormatError(f"{role}: {rows} rows do not split into {n_head} heads")
            ops.append(("unpermute_rope", n_head, rows // n_head))
            quantum = max(quantum, rows // n_head)
        elif name == "add":
            ops.append(("add", -float(vals[0])))
        else:
            raise UnsupportedError(f"{fam.name}: no inverse for the {name!r} transform of {role}")
    return tuple(ops), quantum


def plan_hf(index: TensorIndex, outtype: str = "bf16") -> HFPlan:
    if index.format != "gguf":
        raise UnsupportedError("GGUF -> HF reads a GGUF file; this source is not GGUF")
    if outtype not in OUTTYPES:
        raise CkptError(f"--outtype for GGUF -> HF must be one of {', '.join(OUTTYPES)}")
    st_dtype, torch_dtype = OUTTYPES[outtype]
    arch = index.metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise FormatError("no general.architecture in the GGUF metadata")
    names = metadata_names(index, arch)
    target = pick_target(arch, names)
    cfg = build_config(target, names, torch_dtype)
    fam = family_for({"architectures": list(target.architectures)})
    if fam.arch != arch:
        raise UnsupportedError(f"{target.architectures[0]} converts to GGUF arch {fam.arch}, not {arch}")
    ecfg = flat_config(cfg)
    renamed_from = {v: k for k, v in fam.renames.items()}
    spellings = _role_spellings()
    plan = HFPlan(target, fam, cfg, [])
    expect: dict[str, tuple[str, int | None, int | None]] = {}
    infos = canonicalize(index.tensors)
    split_to = {sp.to_role for sp in fam.splits}
    fused: dict[tuple[str, int | None], dict[str, TensorInfo]] = {}
    for gname, t in index.tensors.items():
        info = infos[gname]
        part = _split_part_of(gname, split_to)
        if part is not None:
            # GGUF-only roles (attn_k_b, ...): re-fused below, once every part is known
            fused.setdefault((_split_from(fam, part[0]), part[1]), {})[part[0]] = t
            continue
        if info.role is None:
            raise UnsupportedError(f"GGUF tensor {gname} has no Hugging Face name in {target.architectures[0]}")
        role = renamed_from.get(info.role, info.role)
        template = target.names.get(role) or spellings.get(role)
        if template is None:
            raise UnsupportedError(f"no Hugging Face name for role {role} ({gname})")
        rows, cols = gguf_matrix(t.shape)
        per_expert = "{expert}" in template
        n_exp = t.shape[0] if per_expert else 1
        if per_expert and len(t.shape) != 3:
            raise FormatError(f"{gname}: stacked experts should be 3-D, got {list(t.shape)}")
        unit_rows = rows // n_exp
        ops, quantum = inverse_ops(fam, info.role, ecfg, unit_rows)
        hf_shape = t.shape[1:] if per_expert else t.shape
        if len(hf_shape) == 2 and _stored_transposed(template):
            # GPT-2's Conv1D keeps [in, out]: the whole matrix is transposed back, last
            ops, quantum = ops + (("transpose",),), unit_rows
            hf_shape = tuple(reversed(hf_shape))
        for e in range(n_exp):
            hf = template.format(layer=info.layer, expert=e)
            if hf in expect:
                raise CkptError(f"two GGUF tensors map to {hf}")
            expect[hf] = (role, info.layer, e if per_expert else None)
            plan.tensors.append(HFTensor(Entry(hf, st_dtype, tuple(hf_shape)),
                                         (HFPiece(t, e * unit_rows, (e + 1) * unit_rows, ops, quantum),)))
    for (from_role, layer), parts in fused.items():
        template = target.names.get(from_role) or spellings.get(from_role)
        if template is None or "{expert}" in template:
            raise UnsupportedError(f"no Hugging Face name for the fused role {from_role}")
        hf = template.format(layer=layer, expert=0)
        if hf in expect:
            raise CkptError(f"two GGUF tensors map to {hf}")
        expect[hf] = (from_role, layer, None)
        shape, pieces = refuse_plan(fam, from_role, parts, ecfg)
        plan.tensors.append(HFTensor(Entry(hf, st_dtype, shape), pieces))
    _check_names(expect)
    return plan


def _split_part_of(gname: str, split_to: set[str]) -> tuple[str, int | None] | None:
    """(role, layer) when a GGUF name is a part split from a fused HF tensor."""
    layer, sep, role = gname.partition(".")[2].partition(".") if gname.startswith("blk.") else ("", "", gname)
    if role in split_to:
        return role, (int(layer) if layer.isdigit() else None)
    return None


def _split_from(fam: Family, role: str) -> str:
    froms = {sp.from_role for sp in fam.splits if sp.to_role == role}
    if len(froms) != 1:
        raise UnsupportedError(f"{fam.name}: {role} is split from {sorted(froms)}; cannot tell which to re-fuse")
    return froms.pop()


# split ops the re-fusion can undo, and their inverses
_SPLIT_INVERSE = {"transpose": "transpose"}


def refuse_plan(fam: Family, from_role: str, parts: dict[str, TensorInfo],
                cfg: dict) -> tuple[tuple[int, int], tuple[HFPiece, ...]]:
    """The inverse of a family's [[split]] tables from ``from_role``: for each of ``groups`` row
    groups, each split's share of the GGUF tensor (its rows for that group, inverse ops
    applied), in the order of the split's ``start``. Returns the HF shape and the pieces."""
    splits = sorted((sp for sp in fam.splits if sp.from_role == from_role), key=lambda sp: _start(sp, cfg))
    missing = [sp.to_role for sp in splits if sp.to_role not in parts]
    if missing:
        raise FormatError(f"{from_role} is re-fused from {', '.join(sp.to_role for sp in splits)}, "
                          f"but the GGUF lacks {', '.join(missing)}")
    layout: list[tuple[TensorInfo, int, tuple[InverseOp, ...], int]] = []   # (src, rows per group, ops, quantum)
    groups: int | None = None
    cols: int | None = None
    at = 0
    for sp in splits:
        if sp.segments or sp.step or sp.group_rows or sp.uses_src_shape or sp.count is None:
            raise UnsupportedError(f"{fam.name}: re-fusing {sp.to_role} into {from_role} is not supported "
                                   "(segmented, strided or shape-dependent split)")
        g = int(sp.groups.eval(cfg)) if sp.groups else 1
        start, count = _start(sp, cfg), int(sp.count.eval(cfg))
        if groups not in (None, g) or start != at:
            raise UnsupportedError(f"{fam.name}: the splits of {from_role} do not tile it; cannot re-fuse")
        groups, at = g, at + count
        t = parts[sp.to_role]
        rows, c = gguf_matrix(t.shape)
        if not g or rows % g:
            raise FormatError(f"{t.name}: {rows} rows do not split into {g} groups")
        per = rows // g
        ops, quantum = inverse_ops(fam, sp.to_role, cfg, per, split=True)
        out_rows, out_cols = per, c
        for op in reversed(sp.ops):
            if op.name not in _SPLIT_INVERSE:
                raise UnsupportedError(f"{fam.name}: no inverse for the {op.name!r} op of the {sp.to_role} split")
            ops += ((_SPLIT_INVERSE[op.name],),)
            quantum = per
            out_rows, out_cols = out_cols, out_rows
        if out_rows != count or cols not in (None, out_cols):
            raise FormatError(f"{t.name}: shape {list(t.shape)} does not fit {count} rows per group of {from_role}")
        cols = out_cols
        layout.append((t, per, ops, quantum))
    if groups is None or cols is None:
        raise UnsupportedError(f"{fam.name}: no split of {from_role} to re-fuse")
    pieces = tuple(HFPiece(t, g * per, (g + 1) * per, ops, quantum)
                   for g in range(groups) for t, per, ops, quantum in layout)
    return (groups * at, cols), pieces


def _start(sp: Split, cfg: dict) -> int:
    return int(sp.start.eval(cfg)) if sp.start else 0


def _stored_transposed(template: str) -> bool:
    """Whether roles.toml says HF stores this name [in, out] (Conv1D)."""
    name = template.format(layer=0, expert=0)
    return bool(canonicalize([name])[name].transposed)


def _check_names(expect: dict[str, tuple[str, int | None, int | None]]) -> None:
    """Every HF name must parse back (roles.toml) to the role, layer and expert it came from."""
    back = canonicalize(expect)
    for hf, (role, layer, expert) in expect.items():
        b = back[hf]
        if (b.role, b.layer, b.expert) != (role, layer, expert):
            raise CkptError(f"mapping error: {hf} reads back as {b.role} (layer {b.layer}, expert {b.expert}), "
                            f"not {role} (layer {layer}, expert {expert})")
