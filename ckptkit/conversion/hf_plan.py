"""The GGUF -> HF tensor plan: tensor names go back through the canonical role tables
(mappings/roles.toml), the conversion family's [transforms] are inverted and its [[split]]
tables re-fused (mappings/convert/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .. import mapdata
from ..errors import CkptError, FormatError, UnsupportedError
from ..formats.safetensors_write import Entry
from ..index import TensorIndex, TensorInfo
from ..infer.names import canonicalize
from ..mapdata import Target
from .family import Family, family_for
from .hf_config import build_config, flat_config, metadata_names, pick_target
from .hf_mxfp4 import QUANTIZATION_CONFIG, mxfp4_source, mxfp4_tensors
from .hf_pieces import HFPiece, HFTensor, InverseOp, JoinPart, gguf_matrix
from .hf_refuse import inverse_splits, refuse_plan
from .transforms import INVERSE_OF

__all__ = ["OUTTYPES", "HFPiece", "HFPlan", "HFTensor", "InverseOp", "JoinPart", "gguf_matrix", "inverse_ops",
           "plan_hf", "refuse_plan"]

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


@dataclass
class HFPlan:
    target: Target
    family: Family
    config: dict[str, Any]
    tensors: list[HFTensor]
    notes: list[str] = field(default_factory=list)
    # GGUF tensors generated from config.json on the way in (rope_freqs), by role: their values
    # go back into config.json, not into a tensor
    derived: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.entry.nbytes for t in self.tensors)


def inverse_ops(fam: Family, role: str, cfg: dict, rows: int,
                split: bool = False) -> tuple[tuple[InverseOp, ...], int]:
    """The family's transforms of a GGUF role undone, last first (each op's inverse is declared
    next to it: transforms.INVERSE_OF); and the chunk row quantum."""
    if not split and any(sp.to_role == role for sp in inverse_splits(fam)):
        raise UnsupportedError(f"{fam.name}: {role} is split from a fused HF tensor; re-fusing is not supported yet")
    ops: list[InverseOp] = []
    quantum = 1
    for op in reversed(fam.transforms.get(role, ())):
        inv = INVERSE_OF.get(op.name)
        if inv is None:
            raise UnsupportedError(f"{fam.name}: no inverse for the {op.name!r} transform of {role}")
        try:
            iop, q = inv(op.values(cfg), rows)
        except FormatError as e:
            raise FormatError(f"{role}: {e}") from None
        ops.append(iop)
        quantum = max(quantum, q)
    return tuple(ops), quantum


def plan_hf(index: TensorIndex, outtype: str = "bf16", keep_mtp: bool = True, keep_mxfp4: bool = False) -> HFPlan:
    """The HF folder a GGUF becomes: config.json and every tensor's pieces. Multi-token-prediction
    layers stored after the trunk (GLM-4.5) are written back as their published layer, or left
    out with ``keep_mtp=False``. Tensors a family generates from config.json (rope_freqs) are
    not HF tensors: they are read back into config.json (hf_config.config_from_tensors).
    MXFP4 experts are dequantised to ``outtype``, or with ``keep_mxfp4`` written as the
    published HF MXFP4 layout (blocks and scales, bit for bit; hf_mxfp4)."""
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
    fam = family_for({"architectures": list(target.architectures)}, arch=arch)
    if fam.arch != arch:
        raise UnsupportedError(f"{target.architectures[0]} converts to GGUF arch {fam.arch}, not {arch}")
    ecfg = flat_config(cfg)
    renamed_from = {v: k for k, v in fam.renames.items()}
    spellings = _role_spellings()
    plan = HFPlan(target, fam, cfg, [])
    expect: dict[str, tuple[str, int | None, int | None]] = {}
    infos = canonicalize(index.tensors)
    split_to = {sp.to_role for sp in inverse_splits(fam)}
    generated = {g.to for g in fam.generate}
    first_mtp = fam.mtp_from_layer.eval(ecfg) if fam.mtp_from_layer else None
    # MTP modules kept in their own container (Qwen3-Next "mtp.*"): GGUF blocks from this one on
    mtp_offset = int(fam.mtp_layer_offset.eval(ecfg)) if fam.mtp_layer_offset else None
    if first_mtp is None:
        first_mtp = mtp_offset
    dropped_mtp = 0
    fused: dict[tuple[str, int | None], dict[str, TensorInfo]] = {}
    mxfp4: dict[tuple[str, int | None], dict[str, TensorInfo]] = {}
    for gname, t in index.tensors.items():
        info = infos[gname]
        if gname in generated:
            plan.derived[gname] = t
            continue
        if first_mtp is not None and info.layer is not None and info.layer >= first_mtp and not keep_mtp:
            dropped_mtp += 1
            continue
        if keep_mxfp4 and t.dtype == "MXFP4" and info.role is not None and len(t.shape) == 3 \
                and mxfp4_source(fam, info.role)[0] in target.names:
            # stacked experts with a published MXFP4 layout; any other MXFP4 tensor is dequantised
            mxfp4.setdefault((mxfp4_source(fam, info.role)[0], info.layer), {})[info.role] = t
            continue
        part = _split_part_of(gname, split_to)
        if part is not None:
            # GGUF-only roles (attn_k_b, ...): re-fused below, once every part is known
            fused.setdefault((_split_from(fam, part[0]), part[1]), {})[part[0]] = t
            continue
        if info.role is None:
            raise UnsupportedError(f"GGUF tensor {gname} has no Hugging Face name in {target.architectures[0]}")
        role = renamed_from.get(info.role, info.role)
        layer = info.layer
        if mtp_offset is not None and layer is not None and layer >= mtp_offset:
            template, layer = _mtp_template(role, layer - mtp_offset, target.names.get(role) or spellings.get(role))
        else:
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
            hf = template.format(layer=layer, expert=e)
            if hf in expect:
                raise CkptError(f"two GGUF tensors map to {hf}")
            expect[hf] = (role, layer, e if per_expert else None)
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
        want = target.shapes.get(from_role)
        src_shape = None if want is None else tuple(int(v) for v in want.eval(ecfg))
        shape, pieces = refuse_plan(fam, from_role, parts, ecfg, src_shape)
        plan.tensors.append(HFTensor(Entry(hf, st_dtype, shape), pieces))
    for (from_role, layer), parts in mxfp4.items():
        for ht in mxfp4_tensors(fam, dict(target.names), layer, parts):
            if ht.entry.name in expect:
                raise CkptError(f"two GGUF tensors map to {ht.entry.name}")
            expect[ht.entry.name] = (from_role[: -len(".blocks")] + "." + ht.entry.name.rsplit("_", 1)[1], layer, None)
            plan.tensors.append(ht)
    if mxfp4:
        cfg["quantization_config"] = dict(QUANTIZATION_CONFIG)
    if dropped_mtp:
        plan.notes.append(f"{dropped_mtp} multi-token-prediction tensor(s) left out")
        _drop_mtp_config(plan.config)
    _check_names(expect)
    return plan


def _mtp_template(role: str, index: int, template: str | None) -> tuple[str | None, int | None]:
    """The HF name template of a GGUF block that is MTP module ``index`` in its own container:
    the container's globals (mtp.fc, mtp.norm, ...: roles.toml [mtp_global]) or its layer."""
    container = mapdata.roles().mtp_containers[0]
    glob = mapdata.roles().mtp_global_roles.get(role)
    if glob:
        return f"{container}.{glob[0]}", None
    if template is None or not template.startswith("model.layers.{layer}."):
        return None, index
    return f"{container}.layers.{{layer}}." + template[len("model.layers.{layer}."):], index


def _drop_mtp_config(cfg: dict) -> None:
    for key in ("num_nextn_predict_layers",):
        if key in cfg:
            cfg[key] = 0


def _split_part_of(gname: str, split_to: set[str]) -> tuple[str, int | None] | None:
    """(role, layer) when a GGUF name is a part split from a fused HF tensor."""
    layer, sep, role = gname.partition(".")[2].partition(".") if gname.startswith("blk.") else ("", "", gname)
    if role in split_to:
        return role, (int(layer) if layer.isdigit() else None)
    return None


def _split_from(fam: Family, role: str) -> str:
    froms = {sp.from_role for sp in inverse_splits(fam) if sp.to_role == role}
    if len(froms) != 1:
        raise UnsupportedError(f"{fam.name}: {role} is split from {sorted(froms)}; cannot tell which to re-fuse")
    return froms.pop()


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
