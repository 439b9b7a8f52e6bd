"""Plan a conversion from the tensor index alone: every output tensor's name, shape, type and
the pieces of source tensors it is made of. No tensor data is read here.

A piece is a run of rows of one source tensor seen as a matrix (leading axes folded into rows)
plus the ops applied to it; an output tensor is its pieces' results concatenated in C order.
So expert stacking is one piece per expert, a split is a row range, and nothing is ever
gathered in memory beyond one chunk of rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

from ..dtypes import GGML_TYPE_BY_NAME
from ..errors import CkptError, FormatError, UnsupportedError
from ..expr import Expr
from ..formats.gguf_write import KV, TensorSlot
from ..index import TensorIndex, TensorInfo
from ..infer.names import canonicalize
from ..mapdata import Split
from .family import Family, effective_config
from .gguf_metadata import metadata_kvs
from .transforms import ROW_OPS, WHOLE

OUTTYPES = ("auto", "f32", "f16", "bf16", "q8_0")


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of a tensor with all leading axes folded into rows; 1-D is a column."""
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1
    return prod(shape[:-1]), shape[-1]


@dataclass(frozen=True)
class Piece:
    src: TensorInfo
    r0: int
    r1: int
    ops: tuple[tuple[Any, ...], ...] = ()
    quantum: int = 1                       # chunks hold a multiple of this many rows
    scale: TensorInfo | None = None        # FP8 block scales of ``src``
    scale_block: tuple[int, int] = (128, 128)
    # MXFP4: ``src`` is the blocks tensor [..., G, 16] (rows = its leading axes folded) and this
    # its E8M0 exponents [..., G]; run.py reads both and repacks (or dequantises) the rows
    mxfp4_scales: TensorInfo | None = None
    # computed, not read: (generator name in transforms.GENERATORS, *args) gives the piece's values
    gen: tuple[Any, ...] | None = None

    @property
    def rows(self) -> int:
        return self.r1 - self.r0


@dataclass
class OutTensor:
    slot: TensorSlot
    pieces: list[Piece]


@dataclass
class Plan:
    family: str
    arch: str
    kvs: list[KV]
    tensors: list[OutTensor]
    dropped: list[tuple[str, str]] = field(default_factory=list)   # (source name, why)

    @property
    def slots(self) -> list[TensorSlot]:
        return [t.slot for t in self.tensors]

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.slots)


# ---- output types --------------------------------------------------------------------------------

def output_type(role: str, src_dtype: str, shape: tuple[int, ...], outtype: str, fam: Family) -> int:
    T = GGML_TYPE_BY_NAME
    if len(shape) <= 1 or role in fam.f32_roles:
        return T["F32"]
    if outtype == "f32":
        return T["F32"]
    if outtype == "f16":
        return T["F16"]
    if outtype == "bf16":
        return T["BF16"]
    if outtype == "q8_0":
        return T["Q8_0"] if shape[-1] % 32 == 0 else T["F16"]
    # auto: keep 16-bit and 32-bit as they are; widen 8-bit floats to BF16
    if src_dtype in ("F16", "BF16", "F32"):
        return T[src_dtype]
    return T["BF16"]


# ---- the plan -------------------------------------------------------------------------------------

def gguf_name(role: str, layer: int | None) -> str:
    return role if layer is None else f"blk.{layer}.{role}"


def ops_for(role: str, fam: Family, cfg: dict, rows_per_piece: int) -> tuple[tuple, int]:
    """The family's ops for an output role, with arguments evaluated, and the row quantum."""
    ops, quantum = [], 1
    for op in fam.transforms.get(role, ()):
        name, vals = op.name, list(op.values(cfg))
        if name == "permute_rope":
            n_head = int(vals[0])
            head_rows = rows_per_piece // n_head if n_head else 0
            vals = [n_head, head_rows]
            quantum = max(quantum, head_rows)
        if name in WHOLE:
            quantum = rows_per_piece
        ops.append((name, *vals))
    return tuple(ops), quantum


def plan_gguf(index: TensorIndex, fam: Family, outtype: str = "auto", keep_mtp: bool = True) -> Plan:
    if outtype not in OUTTYPES:
        raise CkptError(f"--outtype must be one of {', '.join(OUTTYPES)}")
    cfg = effective_config(index.config)
    infos = canonicalize(index.tensors)
    scales = {}          # weight name -> its FP8 block scale tensor
    for name, info in infos.items():
        if info.part == "scale" and name.endswith(("_scale_inv", ".weight_scale")):
            # DeepSeek-style block scales (weight_scale_inv) and compressed-tensors' per-tensor or
            # per-channel weight_scale: both multiply the FP8 values
            weight = name[: -len("_scale_inv")] if name.endswith("_scale_inv") else name[: -len("_scale")]
            scales[weight] = index.tensors[name]
    plan = Plan(fam.name, fam.arch, [], [])
    # MTP modules stored as extra layers after the trunk (DeepSeek-V3, GLM-4.5): the family
    # option names the first such layer; their attention/FFN tensors are MTP too, not just nextn.*
    first_mtp = fam.mtp_from_layer.eval(cfg) if fam.mtp_from_layer else None
    mtp_kept: set[int] = set()
    # MTP modules kept in their own container (Qwen3-Next "mtp.layers.N", "mtp.fc") become the
    # layers after the trunk: layer offset + N (offset + 0 for the container's global tensors)
    mtp_offset = fam.mtp_layer_offset.eval(cfg) if fam.mtp_layer_offset else None
    experts: dict[tuple[int | None, str], dict[int, TensorInfo]] = {}
    order: list[tuple[str, Any]] = []
    unknown: list[str] = []
    for name, t in index.tensors.items():
        info = infos[name]
        if info.role == "vision":
            plan.dropped.append((name, "vision/audio tower (text model only)"))
            continue
        if info.role == "buffer":
            plan.dropped.append((name, "buffer, not a parameter"))
            continue
        if info.part in ("scale", "input_scale"):
            continue  # consumed with its weight
        if info.part == "scales" and name.endswith("_scales") and name[: -len("_scales")] + "_blocks" in index.tensors:
            continue  # MXFP4 exponents, consumed with their blocks
        if info.role is None:
            unknown.append(name)
            continue
        role = fam.renames.get(info.role, info.role)
        is_mtp = info.mtp or (first_mtp is not None and info.layer is not None and info.layer >= first_mtp)
        if is_mtp and not keep_mtp:
            plan.dropped.append((name, "multi-token-prediction layer (--no-mtp)"))
            continue
        if info.mtp and mtp_offset is not None:
            info = info._replace(layer=int(mtp_offset) + (info.layer or 0))
        if is_mtp and info.layer is not None:
            mtp_kept.add(info.layer)
        if info.part == "blocks":
            order.append(("mxfp4", (role, info, t, _mxfp4_scales(index, name, t))))
            continue
        if info.part not in ("weight", "bias"):
            raise UnsupportedError(f"{name}: {info.part} tensors are not converted yet")
        if info.expert is not None:
            key = (info.layer, role)
            if key not in experts:
                experts[key] = {}
                order.append(("experts", key))
            experts[key][info.expert] = t
        else:
            order.append(("tensor", (role, info, t)))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise UnsupportedError(f"no GGUF name for {', '.join(unknown[:3])}{more} in family {fam.name}")
    # facts of the checkpoint itself that metadata expressions may use besides config.json
    plan.kvs = metadata_kvs(fam, {**cfg, "_mtp_layers": len(mtp_kept)})

    for kind, item in order:
        if kind == "experts":
            (layer, role) = item
            members = experts[item]
            ids = sorted(members)
            if ids != list(range(len(ids))):
                raise CkptError(f"layer {layer} {role}: experts {ids[0]}..{ids[-1]} are not numbered 0..{len(ids) - 1}")
            first = members[0]
            if any(members[e].shape != first.shape for e in ids):
                raise CkptError(f"layer {layer} {role}: experts differ in shape")
            unit = Unit(role, layer, [members[e] for e in ids], (len(ids), *first.shape))
        elif kind == "mxfp4":
            role, info, t, sc = item
            unit = Unit(role, info.layer, [t], (*t.shape[:-2], t.shape[-2] * 32), mxfp4_scales=sc)
        else:
            role, info, t = item
            shape = t.shape
            if info.transposed and len(shape) == 2:
                shape = (shape[1], shape[0])
            unit = Unit(role, info.layer, [t], shape, transposed=info.transposed and len(t.shape) == 2)
        plan.tensors.extend(_outputs(unit, fam, cfg, outtype, scales))
    plan.tensors.extend(generated_outputs(fam, cfg))
    return plan


def generated_outputs(fam: Family, cfg: dict) -> list[OutTensor]:
    """Tensors computed from config.json alone (family [[options.generate]] tables: to, when,
    op = [generator, arg-expressions...], shape), e.g. Llama 3-style rope_freqs. Always F32."""
    out = []
    for g in fam.generate:
        if not g.when.eval(cfg):
            continue
        name, vals = g.op.name, g.op.values(cfg)
        if any(v is None for v in vals):
            raise UnsupportedError(f"config.json lacks what {g.to} needs ({', '.join(map(str, g.op.args))})")
        shape = tuple(int(v) for v in g.shape.eval(cfg))
        info = TensorInfo(f"<{name}>", "F32", shape, "", 0, 4 * prod(shape))
        piece = Piece(info, 0, matrix_shape(shape)[0], gen=(name, *vals))
        out.append(OutTensor(TensorSlot(g.to, shape, GGML_TYPE_BY_NAME["F32"]), [piece]))
    return out


@dataclass
class Unit:
    """One logical source tensor: a tensor, or a layer's experts stacked along a new axis 0."""
    role: str
    layer: int | None
    srcs: list[TensorInfo]
    shape: tuple[int, ...]
    transposed: bool = False
    mxfp4_scales: TensorInfo | None = None      # ``srcs`` are MXFP4 blocks; shape is the values'


def _mxfp4_scales(index: TensorIndex, name: str, blocks: TensorInfo) -> TensorInfo:
    """The E8M0 exponents of an MXFP4 ``*_blocks`` tensor, checked against it."""
    sname = name[: -len("_blocks")] + "_scales"
    sc = index.tensors.get(sname)
    if sc is None:
        raise FormatError(f"{name}: MXFP4 blocks without their exponents {sname}")
    if (blocks.dtype != "U8" or sc.dtype != "U8" or len(blocks.shape) < 3 or blocks.shape[-1] != 16
            or tuple(sc.shape) != tuple(blocks.shape[:-1])):
        raise FormatError(f"{name} {blocks.dtype}{list(blocks.shape)} / {sname} {sc.dtype}{list(sc.shape)}: "
                          "not MXFP4 (U8 blocks [..., G, 16] and U8 exponents [..., G])")
    return sc


def mxfp4_output_type(role: str, outtype: str, fam: Family) -> int:
    """MXFP4 sources stay MXFP4 (a lossless repack) unless a float type is asked for
    explicitly; q8_0 keeps them too, since re-quantising 4-bit values to 8 bits only grows them."""
    T = GGML_TYPE_BY_NAME
    if outtype == "f32" or role in fam.f32_roles:
        return T["F32"]
    if outtype in ("f16", "bf16"):
        return T[outtype.upper()]
    return T["MXFP4"]


def _rows_of(src: TensorInfo, mxfp4: bool) -> int:
    """Rows of a source as pieces count them (MXFP4 blocks: one row per 32-block run)."""
    return prod(src.shape[:-2]) if mxfp4 else matrix_shape(src.shape)[0]


def _mxfp4_out(unit: Unit, fam: Family, cfg: dict, outtype: str) -> OutTensor:
    """An unsplit MXFP4 tensor: its role's ".blocks" becomes ".weight"."""
    role = unit.role[: -len(".blocks")] + ".weight" if unit.role.endswith(".blocks") else unit.role
    rows = _rows_of(unit.srcs[0], True)
    ggml_type = mxfp4_output_type(role, outtype, fam)
    ops, quantum = ops_for(role, fam, cfg, rows)
    _check_mxfp4_ops(unit, ops, ggml_type)
    pieces = [Piece(s, 0, rows, ops, quantum, mxfp4_scales=unit.mxfp4_scales) for s in unit.srcs]
    return OutTensor(TensorSlot(gguf_name(role, unit.layer), unit.shape, ggml_type), pieces)


def _check_mxfp4_ops(unit: Unit, ops: tuple, ggml_type: int) -> None:
    if ggml_type == GGML_TYPE_BY_NAME["MXFP4"] and any(o[0] not in ROW_OPS for o in ops):
        bad = ", ".join(o[0] for o in ops if o[0] not in ROW_OPS)
        raise UnsupportedError(f"{unit.srcs[0].name}: {bad} cannot apply to MXFP4 data kept as MXFP4 "
                               "(use --outtype f32/f16/bf16 to dequantise)")


def _outputs(unit: Unit, fam: Family, cfg: dict, outtype: str, scales: dict[str, TensorInfo]) -> list[OutTensor]:
    splits = [sp for sp in fam.splits if sp.from_role == unit.role]
    if unit.mxfp4_scales is None:
        for s in unit.srcs:
            _check_convertible(s)
    if not splits and unit.mxfp4_scales is not None:
        return [_mxfp4_out(unit, fam, cfg, outtype)]
    if not splits:
        return [_out(gguf_name(unit.role, unit.layer), unit.role, unit.shape, unit.srcs, fam, cfg, outtype,
                     scales, unit.transposed)]
    return [_split_out(unit, sp, fam, cfg, outtype, scales) for sp in splits]


def _split_out(unit: Unit, sp: Split, fam: Family, cfg: dict, outtype: str,
               scales: dict[str, TensorInfo]) -> OutTensor:
    """One output of a [[split]]: from each of ``groups`` row groups of the (stacked) source
    seen as a matrix, rows [start, start + count), with the split's ops, then the target
    role's own transforms."""
    names = {**cfg, "src_shape": list(unit.shape)}
    total_rows = matrix_shape(unit.shape)[0]
    groups = _int(sp.groups, names, 1)
    group_rows = _int(sp.group_rows, names, total_rows // groups)
    # "segments" = [[start, count], ...]: the output is segment by segment, each over all groups
    # (Qwen3-Next's per-head-group [q k v z] rows -> all q, all k, all v)
    segs = [(int(a.eval(names)), int(b.eval(names))) for a, b in sp.segments] if sp.segments else \
        [(_int(sp.start, names, 0), _int(sp.count, names, 0))]
    start, count = segs[0]
    step = _int(sp.step, names, 1)
    role = sp.to_role
    mx = unit.mxfp4_scales is not None
    src_rows = _rows_of(unit.srcs[0], mx)
    if groups * group_rows != total_rows or any(a + (c - 1) * step + 1 > group_rows or c <= 0 for a, c in segs):
        raise CkptError(f"{unit.role}: split into {role} does not fit the tensor's {total_rows} rows")
    if sp.shape is not None:
        shape = tuple(int(v) for v in sp.shape.eval(names))
    else:
        shape = (count, *unit.shape[1:])
    split_ops: list[tuple[Any, ...]] = [(op.name, *op.values(names)) for op in sp.ops]
    if step > 1:
        split_ops.insert(0, ("take_rows", 0, step))
    ggml_type = mxfp4_output_type(role, outtype, fam) if mx else \
        output_type(role, unit.srcs[0].dtype, shape, outtype, fam)
    pieces = []
    for start, count in segs:
        span = (count - 1) * step + 1       # rows read: take_rows(0, step) leaves ``count``
        own_ops, quantum = ops_for(role, fam, cfg, count)
        ops = tuple(split_ops) + own_ops
        if mx:
            _check_mxfp4_ops(unit, ops, ggml_type)
        if any(o[0] in WHOLE for o in ops) or step > 1:
            quantum = span
        for g in range(groups):
            r = g * group_rows + start
            k, local = divmod(r, src_rows)
            if local + span > src_rows:
                raise CkptError(f"{unit.role}: split group {g} crosses a source tensor boundary")
            src = unit.srcs[k]
            if mx:
                pieces.append(Piece(src, local, local + span, ops, quantum, mxfp4_scales=unit.mxfp4_scales))
                continue
            block = scale_block(cfg)
            pieces.append(Piece(src, local, local + span, ops, quantum,
                                checked_scale(src, scales.get(src.name), block), block))
    slot = TensorSlot(gguf_name(role, unit.layer), shape, ggml_type)
    return OutTensor(slot, pieces)


def _int(e: Expr | None, names: dict, default: int) -> int:
    return default if e is None else int(e.eval(names))


_CONVERTIBLE = {"F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2"}


def _check_convertible(t: TensorInfo) -> None:
    """Integer or packed weights are some quantisation (GPTQ, AWQ, bitsandbytes, ...) whose
    companions would be needed to read them; converting their raw integers would be wrong."""
    if t.dtype not in _CONVERTIBLE:
        raise UnsupportedError(f"{t.name} is {t.dtype}: quantised or integer weights of this kind are not converted "
                               "(convert from the unquantised checkpoint)")


def _out(name: str, role: str, shape: tuple[int, ...], srcs: list[TensorInfo], fam: Family, cfg: dict,
         outtype: str, scales: dict[str, TensorInfo], transposed: bool = False) -> OutTensor:
    rows, _ = matrix_shape(srcs[0].shape)
    ops, quantum = ops_for(role, fam, cfg, rows)
    if transposed:
        ops = (("transpose",),) + ops
        quantum = rows
    src_dtype = srcs[0].dtype
    block = scale_block(cfg)
    pieces = []
    for s in srcs:
        scale = scales.get(s.name)
        b = scale_block_of(s, scale, block)
        scale = checked_scale(s, scale, b)
        q = quantum
        if scale is not None:
            q = _lcm(q, b[0])
        pieces.append(Piece(s, 0, rows, ops, q, scale, b))
    slot = TensorSlot(name, shape, output_type(role, src_dtype, shape, outtype, fam))
    return OutTensor(slot, pieces)


def scale_block(cfg: dict) -> tuple[int, int]:
    """(rows, cols) of one FP8 scale block: config quantization_config.weight_block_size, else 128x128."""
    qc = cfg.get("quantization_config")
    block = qc.get("weight_block_size") if isinstance(qc, dict) else None
    if block is None:
        return 128, 128
    if (not isinstance(block, list) or len(block) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise FormatError(f"quantization_config.weight_block_size must be two positive integers, not {block!r}")
    return block[0], block[1]


def scale_block_of(src: TensorInfo, scale: TensorInfo | None, block: tuple[int, int]) -> tuple[int, int]:
    """The block one scale covers: the whole tensor for a single scale, one row for one scale
    per output channel ([rows] or [rows, 1]), else the configured block."""
    if scale is None:
        return block
    rows, cols = matrix_shape(src.shape)
    if prod(scale.shape) == 1:
        return rows, cols
    if tuple(scale.shape) in ((rows,), (rows, 1)) and block != (1, cols):
        return 1, cols
    return block


def checked_scale(src: TensorInfo, scale: TensorInfo | None, block: tuple[int, int]) -> TensorInfo | None:
    """The weight's block-scale tensor, after checking it has one scale per block."""
    if scale is None:
        return None
    rows, cols = matrix_shape(src.shape)
    want = (-(-rows // block[0]), -(-cols // block[1]))
    if len(src.shape) != 2 or matrix_shape(scale.shape) != want:
        raise FormatError(f"{scale.name}: shape {list(scale.shape)} does not hold one scale per "
                          f"{block[0]}x{block[1]} block of {src.name} {list(src.shape)} (expected {list(want)})")
    return scale


def _lcm(a: int, b: int) -> int:
    from math import gcd
    return a * b // gcd(a, b)
