"""One pass over a tensor index: each tensor's role, grouped by layer, with parameter sums."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress, groupby
from math import prod
from operator import itemgetter, methodcaller
from typing import TypeGuard

from .. import mapdata
from ..index import FILE_SCAN, TensorIndex, TensorInfo
from .names import NameInfo, group_by_pattern, number_text, pattern_info, resolve_contextual

SCALE_PARTS = ("scale", "scales", "input_scale")
_DTYPE_SHAPE, _NAME, _SHAPE = itemgetter(1, 2), itemgetter(0), itemgetter(2)
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def fp8_scale_ends() -> tuple[str, ...]:
    """The name ends of FP8 scales ("x.weight" + this): the suffixes whose part is "scale" in
    mappings/roles.toml [parts]."""
    return tuple(end for end, part in mapdata.roles().parts.items() if part == "scale")


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
    # parameters of the weights the FP8 scales scale, found in the scales' own files; and the
    # scales whose weight is not in their file (infer.quant looks those up in the whole index)
    scaled_params: int = 0
    scaled_elsewhere: list[TensorInfo] = field(default_factory=list)
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
    """Names that differ only in their numbers say the same thing, so tensors are grouped by
    pattern (a 92k-tensor checkpoint has about a hundred) and each pattern is parsed once; every
    ordered result (layers, roles, globals, dtypes, lists) keeps the index's tensor order."""
    tensors = list(index.tensors.values())
    pieces = index.pieces(FILE_SCAN)    # scanned file by file as the headers were read
    if pieces is not None:
        joined = _Acc(_routed())
        if joined.join(pieces, tensors):
            return joined.finish()
    return _scanned(tensors, index.tensors).finish()


def file_scan(tensors: list[TensorInfo]) -> bytes:
    """``scan``'s work on one file's tensors (in file order), as JSON that ``scan`` joins to the
    other files' (``TensorIndex.per_file[FILE_SCAN]``, made as each header is read)."""
    return _scanned(tensors, {t.name: t for t in tensors}).encode(len(tensors))


def _routed() -> tuple[str, ...]:
    return mapdata.roles().groups["routed_experts"].prefixes


def _scanned(tensors: list[TensorInfo], named: Mapping[str, TensorInfo]) -> _Acc:
    """What ``scan`` gathers from ``tensors`` (``named``: them by name)."""
    acc = _Acc(_routed())
    for pattern, positions in group_by_pattern([t.name for t in tensors]).items():
        acc.add(pattern, *pattern_info(pattern), [(i, tensors[i]) for i in positions])
    acc.weigh_scales(named)
    return acc


@dataclass
class _Acc:
    """What scan() gathers pattern by pattern, each ordered thing with its first tensor position."""
    routed: tuple[str, ...]
    s: Scan = field(default_factory=Scan)
    dtype_pos: dict[str, int] = field(default_factory=dict)
    unknown: list[tuple[int, str]] = field(default_factory=list)
    scales: list[tuple[int, TensorInfo]] = field(default_factory=list)
    blocks: list[tuple[int, TensorInfo]] = field(default_factory=list)
    globals: dict[str, tuple[int, Seen]] = field(default_factory=dict)
    gparams: dict[str, list[int]] = field(default_factory=dict)          # role -> [first pos, params]
    layers: dict[tuple[bool, int], tuple[int, Layer]] = field(default_factory=dict)  # (mtp?, n) -> first pos
    roles: dict[int, dict[str, tuple[int, Seen]]] = field(default_factory=dict)      # id(layer) -> role
    pending: list[tuple[int, tuple[str, ...], Layer, Seen]] = field(default_factory=list)
    scaled: int = 0                                     # Scan.scaled_params
    elsewhere: list[int] = field(default_factory=list)  # positions of Scan.scaled_elsewhere

    def _dtype(self, pos: int, dtype: str, n: int) -> None:
        d = self.s.dtypes
        d[dtype] = d.get(dtype, 0) + n
        if pos < self.dtype_pos.get(dtype, pos + 1):
            self.dtype_pos[dtype] = pos

    def add(self, pattern: tuple[str, ...], info: NameInfo, ls: int | None, es: int | None,
            members: list[tuple[int, TensorInfo]]) -> None:
        s, role, part = self.s, info.role, info.part
        if role is None or role == "vision":
            for pos, t in members:
                n = t.numel
                s.total_params += n
                self._dtype(pos, t.dtype, n)
                if role is None:
                    self.unknown.append((pos, t.name))
                else:
                    s.vision_params += n
            return
        if role == "buffer":
            s.buffer_params += sum(t.numel for _, t in members)
            return
        is_scale = part in SCALE_PARTS
        if is_scale:
            self.scales += [(pos, t) for pos, t in members]
        if part == "blocks":
            self.blocks += [(pos, t) for pos, t in members]
        is_routed = role.startswith(self.routed)
        # "mtp.layers.N" (Qwen3-Next) is kept apart; DeepSeek's extra layer is moved by finish()
        apart = info.mtp and not role.startswith("nextn.")
        if (ls == 0 and es == 1 and part != "blocks" and not info.contextual
                and self._add_runs(pattern, info, role, apart, is_scale, is_routed, members)):
            return
        total = 0
        by_dtype: dict[str, list[int]] = {}             # dtype -> [first position, params]
        last: str | None = None                         # the layer number text of the last member
        layer = Layer()
        head = len(pattern[0])
        gap = len(pattern[1]) if len(pattern) > 1 else 0
        for pos, t in members:
            shape = logical_shape(t, part) if part == "blocks" else t.shape
            if info.transposed and len(shape) == 2:
                shape = shape[::-1]              # always [out, in] from here on
            n = 0 if is_scale else prod(shape)
            if n:
                total += n
                d = by_dtype.get(t.dtype)
                if d is None:
                    by_dtype[t.dtype] = [pos, n]
                else:
                    d[1] += n
            name = t.name
            end = -1
            if ls == 0:     # the usual "model.layers.N...": inline number_text(name, pattern, 0)
                end = name.find(".", head)
                text = name[head:end] if end >= 0 else name[head:]
            elif ls is not None:
                text = number_text(name, pattern, ls)
            elif info.layer is not None:
                text = str(info.layer)
            else:
                self._global(info, role, pos, Seen(name, shape, t.dtype), n)
                continue
            if text != last:        # members come in index order: a layer's first is its earliest
                last = text
                layer = self._layer(apart, int(text), pos)
                if not info.contextual:
                    roles = self.roles.setdefault(id(layer), {})
                    first = roles.get(role)
                    if first is None or pos < first[0]:
                        roles[role] = (pos, Seen(t.name, shape, t.dtype))
            layer.params += n
            if es == 1 and end >= 0:  # "...experts.E...", the number after the layer's
                at = end + gap
                stop = name.find(".", at)
                layer.experts.add(int(name[at:stop] if stop >= 0 else name[at:]))
            elif es is not None:
                layer.experts.add(int(number_text(name, pattern, es)))
            elif info.expert is not None:
                layer.experts.add(info.expert)
            if is_routed:
                layer.routed_params += n
            if info.contextual:
                self.pending.append((pos, info.contextual, layer, Seen(t.name, shape, t.dtype)))
        s.total_params += total
        for dtype, (pos, n) in by_dtype.items():
            self._dtype(pos, dtype, n)

    def _add_runs(self, pattern: tuple[str, ...], info: NameInfo, role: str, apart: bool, is_scale: bool,
                  is_routed: bool, members: list[tuple[int, TensorInfo]]) -> bool:
        """``add`` for the bulk of a large MoE ("model.layers.L.mlp.experts.E.down_proj.weight":
        a layer number, then an expert's; every tensor of one dtype and shape) with the numbers read
        by one regex over all the names and each run of one layer handled at once: the same result
        as the loop in ``add``, in fewer Python steps. False, having done nothing, for anything else."""
        ts = [t for _, t in members]
        kinds = set(map(_DTYPE_SHAPE, ts))
        text = "\n".join(map(_NAME, ts))
        if len(kinds) != 1 or text.count("\n") != len(ts) - 1:
            return False
        numbers = re.findall(f"(?m)^{re.escape(pattern[0])}([0-9]+){re.escape(pattern[1])}([0-9]+)", text)
        if len(numbers) != len(ts):
            return False
        ((dtype, shape),) = kinds
        if info.transposed and len(shape) == 2:
            shape = shape[::-1]              # always [out, in] from here on
        n = 0 if is_scale else prod(shape)
        i = 0
        for layer_text, run in groupby(numbers, key=_FIRST):  # members come in index order
            experts = list(map(_SECOND, run))
            pos, t = members[i]
            layer = self._layer(apart, int(layer_text), pos)
            roles = self.roles.setdefault(id(layer), {})
            first = roles.get(role)
            if first is None or pos < first[0]:
                roles[role] = (pos, Seen(t.name, shape, t.dtype))
            layer.params += n * len(experts)
            layer.experts.update(map(int, experts))
            if is_routed:
                layer.routed_params += n * len(experts)
            i += len(experts)
        if n:
            self.s.total_params += n * len(ts)
            self._dtype(members[0][0], dtype, n * len(ts))
        return True

    def _global(self, info: NameInfo, role: str, pos: int, seen: Seen, n: int) -> None:
        if info.mtp:
            self.s.mtp_global_params += n
            role = "mtp." + role
        if role not in self.globals:
            self.globals[role] = (pos, seen)
            self.gparams[role] = [pos, 0]
        self.gparams[role][1] += n

    def _layer(self, apart: bool, num: int, pos: int) -> Layer:
        got = self.layers.get((apart, num))
        if got is None:
            got = self.layers[(apart, num)] = (pos, Layer())
        elif pos < got[0]:
            got = self.layers[(apart, num)] = (pos, got[1])
        return got[1]

    def weigh_scales(self, named: Mapping[str, TensorInfo]) -> None:
        """``Scan.scaled_params`` and ``scaled_elsewhere`` of the FP8 scales gathered so far,
        whose weights are looked for in ``named``; each step runs in C (DeepSeek-V3 has 45k
        scales)."""
        names = list(map(_NAME, map(_SECOND, self.scales)))
        is_fp8 = list(map(methodcaller("endswith", fp8_scale_ends()), names))
        if not any(is_fp8):
            return
        fp8 = list(compress(self.scales, is_fp8))
        weights = scaled_weights(named, compress(names, is_fp8))
        self.scaled = params_of(filter(None, weights))
        self.elsewhere = [pos for (pos, _), w in zip(fp8, weights, strict=True) if w is None]

    def encode(self, n: int) -> bytes:
        """What was gathered from ``n`` tensors, as JSON for ``join`` (positions as they are)."""
        s, key = self.s, {id(layer): k for k, (_, layer) in self.layers.items()}
        layers = [[apart, num, pos, layer.params, layer.routed_params, sorted(layer.experts),
                   [[role, p, *_seen_json(seen)] for role, (p, seen) in self.roles.get(id(layer), {}).items()]]
                  for (apart, num), (pos, layer) in self.layers.items()]
        return json.dumps([
            n, [s.total_params, s.vision_params, s.buffer_params, s.mtp_global_params],
            [[d, self.dtype_pos[d], k] for d, k in s.dtypes.items()], self.unknown,
            [p for p, _ in self.scales], [p for p, _ in self.blocks],
            [[role, p, *_seen_json(seen)] for role, (p, seen) in self.globals.items()],
            [[role, p, k] for role, (p, k) in self.gparams.items()], layers,
            [[p, alts, *key[id(layer)], *_seen_json(seen)] for p, alts, layer, seen in self.pending],
            self.scaled, self.elsewhere]).encode()

    def join(self, pieces: list[bytes], tensors: list[TensorInfo]) -> bool:
        """Take in ``encode``'s pieces of consecutive runs of ``tensors`` (files, in order): the
        same as gathering from all of them here. False, leaving this half-filled, unless each is
        what ``encode`` writes (names where it gives them at their positions) and together they
        count every tensor."""
        at = 0
        try:
            for piece in pieces:
                at += self._take(json.loads(piece), at, tensors)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return False
        return at == len(tensors)

    def _take(self, doc: list, at: int, tensors: list[TensorInfo]) -> int:
        n, sums, dtypes, unknown, scales, blocks, globals_, gparams, layers, pending, scaled, elsewhere = doc
        if not (_int(n) and n <= len(tensors) - at and len(sums) == 4 and _ints([*sums, scaled])):
            raise ValueError("not a piece of these tensors")

        def pos(p: object, name: object = None) -> int:
            if not _int(p) or p >= n or (name is not None and tensors[at + p].name != name):
                raise ValueError(f"no such tensor at {p!r}")
            return at + p

        def seen(p: object, name: object, shape: object, dtype: object) -> tuple[int, Seen]:
            if type(dtype) is not str or type(shape) is not list or not _ints(shape):
                raise ValueError("not a tensor")
            return pos(p, name), Seen(name, tuple(shape), dtype)  # type: ignore[arg-type]

        s = self.s
        s.total_params += sums[0]
        s.vision_params += sums[1]
        s.buffer_params += sums[2]
        s.mtp_global_params += sums[3]
        for d, p, k in dtypes:
            if type(d) is not str or not _int(k):
                raise ValueError("not a dtype count")
            self._dtype(pos(p), d, k)
        self.unknown += [(pos(p, name), name) for p, name in unknown]
        for ps in (scales, blocks, elsewhere):
            if ps and not (_ints(ps) and max(ps) < n):
                raise ValueError("no such tensor")
        if not set(elsewhere) <= set(scales):
            raise ValueError("a scale not among the scales")
        for into, ps in ((self.scales, scales), (self.blocks, blocks)):
            shifted = [p + at for p in ps] if at else ps
            into += zip(shifted, map(tensors.__getitem__, shifted), strict=True)
        self.elsewhere += [p + at for p in elsewhere]
        self.scaled += scaled
        for role, p, *t in globals_:
            got = seen(p, *t)
            if type(role) is not str:
                raise ValueError("not a role")
            if role not in self.globals or got[0] < self.globals[role][0]:
                self.globals[role] = got
        for role, p, k in gparams:
            if type(role) is not str or not _int(k):
                raise ValueError("not a parameter count")
            g = self.gparams.setdefault(role, [pos(p), 0])
            g[0], g[1] = min(g[0], pos(p)), g[1] + k
        for apart, num, p, params, routed, experts, roles in layers:
            if type(apart) is not bool or not _ints([num, params, routed, *experts]):
                raise ValueError("not a layer")
            layer = self._layer(apart, num, pos(p))
            layer.params += params
            layer.routed_params += routed
            layer.experts.update(experts)
            first = self.roles.setdefault(id(layer), {})
            for role, q, *t in roles:
                got = seen(q, *t)
                if role not in first or got[0] < first[role][0]:
                    first[role] = got
        for p, alts, apart, num, *t in pending:
            if not (alts and all(type(a) is str for a in alts)):
                raise ValueError("not a choice of roles")
            at_p, got_seen = seen(p, *t)
            self.pending.append((at_p, tuple(alts), self.layers[(apart, num)][1], got_seen))
        return n

    def finish(self) -> Scan:
        s = self.s
        s.dtypes = {d: s.dtypes[d] for d in sorted(s.dtypes, key=self.dtype_pos.__getitem__)}
        s.unknown = [name for _, name in sorted(self.unknown)]
        s.scales = list(map(_SECOND, sorted(self.scales, key=_FIRST)))
        s.blocks = list(map(_SECOND, sorted(self.blocks, key=_FIRST)))
        s.scaled_params = self.scaled
        if self.elsewhere:
            tensor_at = dict(self.scales)
            s.scaled_elsewhere = [tensor_at[p] for p in sorted(self.elsewhere)]
        for role, (_, seen) in sorted(self.globals.items(), key=lambda kv: kv[1][0]):
            s.globals[role] = seen
        s.global_params = {r: v[1] for r, v in sorted(self.gparams.items(), key=lambda kv: kv[1][0])}
        mtp_by_num: dict[int, Layer] = {}
        for (apart, num), (_, layer) in sorted(self.layers.items(), key=lambda kv: kv[1][0]):
            roles = self.roles.get(id(layer), {})
            layer.roles = {r: seen for r, (_, seen) in sorted(roles.items(), key=lambda kv: kv[1][0])}
            (mtp_by_num if apart else s.layers)[num] = layer
        # decide every contextual role against the layers' other roles before adding any
        self.pending.sort(key=_FIRST)
        decided = [(layer, resolve_contextual(alts, layer.roles.keys()), seen)
                   for _, alts, layer, seen in self.pending]
        for layer, role, seen in decided:
            layer.roles.setdefault(role, seen)
        # DeepSeek-style MTP modules are extra numbered layers holding nextn.* tensors
        for num in [n for n, layer in s.layers.items() if layer.has("nextn.")]:
            s.mtp_layers[num] = s.layers.pop(num)
        for num, layer in mtp_by_num.items():
            s.mtp_layers[-1 - num] = layer      # Qwen3-Next "mtp.layers.N": keep apart from main
        return s


def scaled_weights(named: Mapping[str, TensorInfo], scale_names: Iterable[str]) -> list[TensorInfo | None]:
    """The weight each FP8 scale scales (``x.weight`` for ``x.weight_scale_inv``), None where
    ``named`` has none; in C (DeepSeek-V3 has 45k scales)."""
    return list(map(named.get, map(_FIRST, map(methodcaller("rpartition", "_scale"), scale_names))))


def params_of(tensors: Iterable[TensorInfo]) -> int:
    """Their parameters, counted per shape in C."""
    return sum(n * prod(shape) for shape, n in Counter(map(_SHAPE, tensors)).items())


def _int(x: object) -> TypeGuard[int]:
    return type(x) is int and x >= 0


def _ints(xs: list) -> bool:
    """Whether every item is an int >= 0 (checked in C: DeepSeek-V3's pieces hold 45k)."""
    return set(map(type, xs)) <= {int} and (not xs or min(xs) >= 0)


def _seen_json(seen: Seen) -> list:
    return [seen.name, list(seen.shape), seen.dtype]
