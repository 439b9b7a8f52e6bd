"""Every tensor's role, per decoder layer: what the structure and config checks look at.

Built from the scan inference already made: its unknown names, its resolution of the
context-dependent norm roles and its choice of which numbered layers are MTP modules. Only the
per-tensor detail the scan keeps no copy of (every name of a role, every expert) is added here.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain

from .. import mapdata
from ..index import TensorIndex
from ..infer.names import NameInfo, parse_name
from ..infer.scan import Layer, Scan

_ATTENTION = ("attn_q.", "attn_qkv.", "attn_k.", "attn_v.", "attn_output.")


@dataclass
class LayerView:
    num: int
    roles: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # role -> names
    experts: dict[str, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))

    def has(self, role: str) -> bool:
        return role in self.roles or role in self.experts

    def kinds(self) -> tuple[str, str]:
        """(attention kind, feed-forward kind) of the layer, from the roles it holds."""
        keys = set(self.roles) | set(self.experts)
        if any(r.startswith("attn_kv_a_mqa.") for r in keys):
            attn = "mla"
        elif any(r.startswith("ssm_") for r in keys):
            attn = "linear"
        elif any(r.startswith(_ATTENTION) for r in keys):
            attn = "attention"
        else:
            attn = "none"
        groups = mapdata.roles().groups
        if any(r.startswith(groups["router"].prefixes + groups["routed_experts"].prefixes) for r in keys):
            ffn = "moe"
        elif any(r.startswith(groups["dense_ffn"].prefixes) for r in keys):
            ffn = "dense"
        else:
            ffn = "none"
        return attn, ffn


@dataclass
class Layout:
    layers: dict[int, LayerView]          # main decoder layers (MTP modules left out)
    globals: dict[str, list[str]]         # role -> names outside any layer
    unknown: list[str]                    # names no table knows

    @classmethod
    def of(cls, index: TensorIndex, s: Scan) -> Layout:
        resolved = _resolved_roles(s)
        layers: dict[int, LayerView] = {}
        glob: dict[str, list[str]] = defaultdict(list)
        for name in index.tensors:
            info = parse_name(name)         # cached: the scan parsed every name already
            role = info.role
            if role is None or role in ("vision", "buffer"):
                continue
            if info.layer is None:
                glob[("mtp." if info.mtp else "") + role].append(name)
                continue
            if (info.mtp and not role.startswith("nextn.")) or info.layer in s.mtp_layers:
                continue
            if info.contextual:
                role = resolved.get(name) or _twin_role(info, s.layers.get(info.layer))
            lv = layers.get(info.layer)
            if lv is None:
                lv = layers[info.layer] = LayerView(info.layer)
            if info.expert is not None:
                prev = lv.experts[role].get(info.expert)
                if prev is not None:
                    lv.roles.setdefault("dup:" + role, []).extend([prev, name])
                lv.experts[role][info.expert] = name
            else:
                lv.roles[role].append(name)
        return cls(layers, dict(glob), list(s.unknown))


def _resolved_roles(s: Scan) -> dict[str, str]:
    """Tensor name -> the role the scan gave it, for the first tensor of each role per layer."""
    return {seen.name: role for layer in chain(s.layers.values(), s.mtp_layers.values())
            for role, seen in layer.roles.items()}


def _twin_role(info: NameInfo, layer: Layer | None) -> str:
    """The role of a second tensor with the same ambiguous name: whatever its twin became."""
    for alt in info.contextual:
        seen = layer.roles.get(alt) if layer is not None else None
        if seen is not None and parse_name(seen.name).contextual:
            return alt
    return info.contextual[0]


def first(lv: LayerView, role: str) -> str | None:
    names = lv.roles.get(role)
    return names[0] if names else None
