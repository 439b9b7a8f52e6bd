"""One pass over a tensor index: each tensor's role, grouped by layer, with parameter sums."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from .. import mapdata
from ..index import TensorIndex, TensorInfo
from .names import NameInfo, parse_name, resolve_contextual

SCALE_PARTS = ("scale", "scales", "input_scale")


@dataclass(frozen=True)
class Seen:
    """A tensor as inference sees it: logical shape (MXFP4 blocks unpacked)."""
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Layer:
    roles: dict[str, Seen] = field(default_factory=dict)   # first tensor seen per role
    experts: set[int] = field(default_factory=set)          # numbers of per-expert tensors
    params: int = 0
    routed_params: int = 0

    def has(self, prefix: str | tuple[str, ...]) -> bool:
        return any(r.startswith(prefix) for r in self.roles)


@dataclass
class Scan:
    globals: dict[str, Seen] = field(default_factory=dict)
    layers: dict[int, Layer] = field(default_factory=dict)      # main decoder layers
    mtp_layers: dict[int, Layer] = field(default_factory=dict)  # next-token-prediction modules
    mtp_global_params: int = 0
    unknown: list[str] = field(default_factory=list)
    scales: list[TensorInfo] = field(default_factory=list)     # quantization scale tensors
    blocks: list[TensorInfo] = field(default_factory=list)     # MXFP4 packed blocks
    vision_params: int = 0
    buffer_params: int = 0
    total_params: int = 0       # logical weights, scales and buffers excluded
    global_params: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)        # dtype -> logical params


def logical_shape(t: TensorInfo, part: str) -> tuple[int, ...]:
    """MXFP4 blocks [.., n_blocks, 16] U8 hold 32 four-bit values per 16 bytes."""
    if part == "blocks" and len(t.shape) >= 2 and t.dtype in ("U8", "I8"):
        return t.shape[:-2] + (t.shape[-2] * t.shape[-1] * 2,)
    return t.shape


def scan(index: TensorIndex) -> Scan:
    s = Scan()
    routed = mapdata.roles().groups["routed_experts"].prefixes
    pending: list[tuple[NameInfo, Layer, Seen]] = []
    mtp_by_num: dict[int, Layer] = {}
    for t in index.tensors.values():
        info = parse_name(t.name)
        role, part = info.role, info.part
        if role is None:
            s.unknown.append(t.name)
            s.total_params += t.numel
            s.dtypes[t.dtype] = s.dtypes.get(t.dtype, 0) + t.numel
            continue
        if role == "vision":
            s.vision_params += t.numel
            s.total_params += t.numel
            s.dtypes[t.dtype] = s.dtypes.get(t.dtype, 0) + t.numel
            continue
        if role == "buffer":
            s.buffer_params += t.numel
            continue
        if part in SCALE_PARTS:
            s.scales.append(t)
        if part == "blocks":
            s.blocks.append(t)
        shape = logical_shape(t, part)
        if info.transposed and len(shape) == 2:
            shape = shape[::-1]              # always [out, in] from here on
        seen = Seen(t.name, shape, t.dtype)
        n = prod(shape) if part not in SCALE_PARTS else 0
        s.total_params += n
        if n:
            s.dtypes[t.dtype] = s.dtypes.get(t.dtype, 0) + n
        if info.layer is None:
            if info.mtp:
                s.mtp_global_params += n
                role = "mtp." + role
            s.globals.setdefault(role, seen)
            s.global_params[role] = s.global_params.get(role, 0) + n
            continue
        # "mtp.layers.N" (Qwen3-Next) is kept apart; DeepSeek's extra layer is moved below
        table = mtp_by_num if info.mtp and not role.startswith("nextn.") else s.layers
        layer = table.get(info.layer)
        if layer is None:
            layer = table[info.layer] = Layer()
        layer.params += n
        if info.expert is not None:
            layer.experts.add(info.expert)
        if role.startswith(routed):
            layer.routed_params += n
        if info.contextual:
            pending.append((info, layer, seen))
        elif role not in layer.roles:
            layer.roles[role] = seen
    # decide every contextual role against the layers' other roles before adding any
    decided = [(layer, resolve_contextual(info.contextual, layer.roles.keys()), seen)
               for info, layer, seen in pending]
    for layer, role, seen in decided:
        layer.roles.setdefault(role, seen)
    # DeepSeek-style MTP modules are extra numbered layers holding nextn.* tensors
    for num in [n for n, layer in s.layers.items() if layer.has("nextn.")]:
        s.mtp_layers[num] = s.layers.pop(num)
    for num, layer in mtp_by_num.items():
        s.mtp_layers[-1 - num] = layer      # Qwen3-Next "mtp.layers.N": keep apart from main
    return s
