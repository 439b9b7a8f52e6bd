"""Canonical tensor names: what role a tensor plays, in which layer, for which expert.

The name tables live in ``mappings/roles.toml`` (loaded by ``ckptkit.mapdata``); this module
holds only the parsing logic.
Roles are GGUF-style names without the ``blk.N.`` part (``attn_q.weight``), so a GGUF name
maps to itself and an HF name maps to what llama.cpp would call it.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from functools import lru_cache, partial
from typing import NamedTuple

from .. import mapdata


class NameInfo(NamedTuple):  # a tuple: made ~100k times per big checkpoint, it must be cheap
    role: str | None          # "attn_q.weight", "ffn_down_exps.scale", "vision", None if unknown
    layer: int | None         # layer number; None for global tensors
    expert: int | None        # expert number of a per-expert tensor
    part: str = "weight"      # "weight", "bias", "scale", "blocks", "scales", "input_scale"
    mtp: bool = False         # belongs to a multi-token-prediction module
    transposed: bool = False  # stored [in, out] (GPT-2 Conv1D)
    contextual: tuple[str, ...] = ()  # alternative roles, resolved by canonicalize()


class _Tables:
    """Compiled lookup tables, built once from roles.toml."""

    def __init__(self, data: mapdata.RoleTable):
        strip = "|".join(re.escape(p) for p in data.strip)
        self.prefix = re.compile(rf"^(?:(?:{strip})\.)+")
        conts = "|".join(re.escape(c) for c in data.layer_containers)
        self.layer = re.compile(rf"^(?:{conts})\.(\d+)\.(.+)$")
        self.mtp = tuple(c + "." for c in data.mtp_containers)
        self.vision = tuple(v + "." for v in data.vision)
        self.expert = re.compile(r"^(.*\.experts)\.(\d+)\.(.+)$")
        self.glob = _invert(data.global_roles)
        self.mtp_glob = _invert(data.mtp_global_roles)
        self.layer_roles = _invert(data.layer_roles)
        self.contextual = data.contextual
        self.transposed = data.transposed
        # longest suffix first so "weight_scale_inv" wins over "weight_scale"
        self.parts = sorted(data.parts.items(), key=lambda kv: -len(kv[0]))


def _invert(table: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for role, names in table.items():
        out[role] = role
        for n in names:
            out[n] = role
    return out


@lru_cache(maxsize=1)
def tables() -> _Tables:
    return _Tables(mapdata.roles())


def _split_part(name: str, t: _Tables) -> tuple[str, str | None]:
    for suffix, part in t.parts:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if suffix.startswith("_"):          # "gate_up_proj_blocks" -> "gate_up_proj"
                return base, part
            if base.endswith("."):              # "x.weight_scale_inv" -> "x.weight"
                return base + "weight", part
    return name, None


def _with_part(role: str, part: str | None) -> tuple[str, str]:
    if part is None:
        return role, ("bias" if role.endswith(".bias") else "weight")
    stem = role[: -len(".weight")] if role.endswith(".weight") else role
    return f"{stem}.{part}", part


@lru_cache(maxsize=1 << 16)
def _parse_suffix(rest: str, is_layer: bool, is_mtp: bool) -> tuple[str | None, str, tuple[str, ...], bool]:
    """Role of a name with prefix and layer removed; expert numbers already starred. Cached:
    a 100k-tensor checkpoint has only a few hundred distinct suffixes."""
    t = tables()
    base, part = _split_part(rest, t)
    alts: tuple[str, ...] = ()
    if is_layer:
        role = t.layer_roles.get(base)
        if role is None and base in t.contextual:
            alts = t.contextual[base]
            role = alts[0]
    else:
        role = (t.mtp_glob if is_mtp else t.glob).get(base)
    if role is None:
        return None, part or "weight", (), False
    if alts:
        alts = tuple(_with_part(a, part)[0] for a in alts)
    role, p = _with_part(role, part)
    return role, p, alts, base in t.transposed


# a number is a run of ASCII digits between a "." and the next "." or the end of the name
_NUMBER = re.compile(r"(?<=\.)([0-9]+)(?![^.])")
_NUMBER_KEY = re.compile(r"\.([0-9]+)(?![^.])")  # the same numbers, found faster (no look-behind)
_NUMBER_LINE_KEY = re.compile(r"\.([0-9]+)(?![^.\n])")  # the same in names joined by newlines
_PROBE = 1_000_000_007  # numbers no real name uses, to see which slot is the layer, which the expert
split_at_numbers = _NUMBER.split   # name -> [text, number, text, ...] (index.split_numbers, for display, differs)


def group_by_pattern(names: list[str]) -> dict[tuple[str, ...], list[int]]:
    """Positions of ``names`` by pattern (``split_at_numbers(name)[0::2]``), patterns in order of
    first appearance and positions ascending."""
    text = "\n".join(names)
    if "\0" in text:  # NUL marks the numbers below: names holding one are split
        slow: dict[tuple[str, ...], list[int]] = {}
        for i, name in enumerate(names):
            slow.setdefault(tuple(split_at_numbers(name)[0::2]), []).append(i)
        return slow
    by_key: dict[str, list[int]] = {}
    if text.count("\n") == len(names) - 1:   # one pass of the regex over all the names, a line each
        keys = _NUMBER_LINE_KEY.sub(".\0", text).split("\n")
    else:
        keys = list(map(partial(_NUMBER_KEY.sub, ".\0"), names))
    for i, key in enumerate(keys):
        group = by_key.get(key)
        if group is None:
            by_key[key] = [i]
        else:
            group.append(i)
    return {tuple(k.split("\0")): v for k, v in by_key.items()}


def number_text(name: str, pattern: tuple[str, ...], slot: int) -> str:
    """The text of number ``slot`` of ``name``, a name of ``pattern``."""
    at = len(pattern[0])
    for i in range(slot):   # each number ends at the "." that starts the text after it
        at = name.index(".", at) + len(pattern[i + 1])
    end = name.find(".", at)
    return name[at:] if end < 0 else name[at:end]


@lru_cache(maxsize=8192)
def pattern_info(pattern: tuple[str, ...]) -> tuple[NameInfo, int | None, int | None]:
    """What every name of ``pattern`` says, and which number slot is its layer and which its
    expert. A pattern is a name's text around its numbers: ``split_at_numbers(name)[0::2]``."""
    probe = pattern[0] + "".join(f"{_PROBE + i}{p}" for i, p in enumerate(pattern[1:]))
    info = _parse_name(probe)
    layer = info.layer - _PROBE if info.layer is not None and info.layer >= _PROBE else None
    expert = info.expert - _PROBE if info.expert is not None and info.expert >= _PROBE else None
    return info, layer, expert


@lru_cache(maxsize=1 << 18)
def parse_name(name: str) -> NameInfo:
    """Everything the name alone says about a tensor.

    Names that differ only in layer and expert numbers say the same thing, so each pattern is
    parsed once: a 92k-tensor checkpoint has about a hundred."""
    parts = split_at_numbers(name)
    nums = parts[1::2]
    info, ls, es = pattern_info(tuple(parts[0::2]))
    if not nums:
        return info
    layer = int(nums[ls]) if ls is not None else info.layer
    expert = int(nums[es]) if es is not None else info.expert
    if layer == info.layer and expert == info.expert:
        return info
    return NameInfo(info.role, layer, expert, info.part, info.mtp, info.transposed, info.contextual)


def _parse_name(name: str) -> NameInfo:
    t = tables()
    m = t.prefix.match(name)
    rest = name[m.end():] if m else name
    if rest.startswith(t.vision) or name.startswith(t.vision):
        return NameInfo("vision", None, None)
    mtp = False
    if rest.startswith(t.mtp):
        mtp = True
        rest = rest.split(".", 1)[1]
    layer = expert = None
    lm = t.layer.match(rest)
    if lm:
        layer = int(lm.group(1))
        rest = lm.group(2)
        em = t.expert.match(rest) if ".experts." in rest else None
        if em:
            expert = int(em.group(2))
            rest = f"{em.group(1)}.*.{em.group(3)}"
    role, part, alts, transposed = _parse_suffix(rest, layer is not None, mtp)
    if role is not None and role.startswith("nextn."):
        mtp = True
    return NameInfo(role, layer, expert, part, mtp, transposed, alts)


def canonical_name(name: str) -> tuple[str | None, int | None, int | None]:
    """``name`` -> (role, layer, expert). Role is None for names no table knows.

    ``post_attention_layernorm`` gets its Llama meaning (``ffn_norm``) here; use
    ``canonicalize`` on a whole checkpoint to resolve it from the layer's other norms."""
    info = parse_name(name)
    return info.role, info.layer, info.expert


def resolve_contextual(alts: tuple[str, ...], layer_roles: Collection[str]) -> str:
    """Pick the role of an ambiguous norm (``alts``: its default role, then the alternative)
    given the other roles in its layer. ``layer_roles`` must not hold roles resolved this way:
    else a norm's weight, once resolved, would decide its own bias differently."""
    default, alt = alts[0], alts[1]
    stem = default.split(".")[0]
    has_own = any(r.startswith(stem + ".") for r in layer_roles)   # e.g. a pre_feedforward norm
    has_input = any(r.startswith("attn_norm.") for r in layer_roles)
    return alt if (has_own or not has_input) else default


def canonicalize(names: Iterable[str]) -> dict[str, NameInfo]:
    """Parse every name of a checkpoint and resolve the context-dependent norm roles."""
    infos = {n: parse_name(n) for n in names}
    per_layer: dict[tuple[int | None, bool], set[str]] = {}
    for info in infos.values():
        if info.layer is not None and info.role and not info.contextual:
            per_layer.setdefault((info.layer, info.mtp), set()).add(info.role)
    for n, info in infos.items():
        if info.contextual:
            role = resolve_contextual(info.contextual, per_layer.get((info.layer, info.mtp), set()))
            infos[n] = NameInfo(role, info.layer, info.expert, info.part, info.mtp,
                                info.transposed, ())
    return infos
