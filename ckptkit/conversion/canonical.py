"""The uniform layout's tensor names: one scheme for every architecture, from mappings/roles.toml.

A tensor's canonical name is its role (a GGUF-style name, ``attn_q.weight``) placed by layer and
expert, whatever the family or the source format spelled it:

    token_embd.weight                 a global tensor: the role itself
    blk.3.attn_q.weight               layer 3
    blk.3.ffn_up_exps.7.weight        layer 3, expert 7: the number before the part
    blk.3.ffn_down_exps.7.scale       its FP8 block scales (parts: weight, bias, scale,
                                      input_scale, blocks, scales)
    blk.5.ffn_gate_up_exps.2.blocks   expert 2 of a stacked HF tensor (gpt-oss MXFP4), split
    blk.5.ffn_gate_up_exps.blocks     with ``--experts stacked``: no expert number
    mtp.blk.0.attn_q.weight           a layer of a separate multi-token-prediction module
    mtp.nextn.eh_proj.weight          (Qwen3-Next ``mtp.*``); DeepSeek's MTP layer is blk.N
    extra.<source name>               a tensor no role names (vision tower, buffer): kept as is

Pure functions; the per-source spelling comes from ``ckptkit.infer.names``."""
from __future__ import annotations

import re
from typing import NamedTuple

from .. import mapdata
from ..errors import FormatError
from ..infer.names import NameInfo, tables

SCHEME = "blk.{layer}.{role stem}.{expert}.{part}"
EXTRA = "extra."
MTP = "mtp."


class Canonical(NamedTuple):
    name: str
    role: str | None          # None for an ``extra.`` tensor
    layer: int | None
    expert: int | None
    mtp: bool = False         # in a separate MTP container (``mtp.``)


def in_mtp_container(name: str) -> bool:
    """Whether a source name lies in a multi-token-prediction container (``mtp.layers.0...``)."""
    t = tables()
    m = t.prefix.match(name)
    return (name[m.end():] if m else name).startswith(t.mtp)


def canonical_of(source_name: str, info: NameInfo) -> Canonical:
    """The canonical name of a tensor the role tables parsed as ``info`` (see canonicalize)."""
    if info.role is None or info.role in ("vision", "buffer"):
        return Canonical(EXTRA + source_name, None, None, None)
    stem, dot, part = info.role.rpartition(".")
    if not dot:                         # a role without a part ("ssm_a")
        stem, part = info.role, ""
    name = stem + (f".{info.expert}" if info.expert is not None else "") + (f".{part}" if part else "")
    if info.layer is not None:
        name = f"blk.{info.layer}.{name}"
    container = in_mtp_container(source_name)
    return Canonical(MTP + name if container else name, info.role, info.layer, info.expert, container)


_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def parse_canonical(name: str) -> Canonical:
    """A canonical name back to its role, layer and expert; FormatError for a name outside the
    scheme or a role roles.toml does not know."""
    if name.startswith(EXTRA) and len(name) > len(EXTRA):
        return Canonical(name, None, None, None)
    rest, mtp = (name[len(MTP):], True) if name.startswith(MTP) else (name, False)
    layer = None
    m = _LAYER.match(rest)
    if m:
        layer, rest = int(m[1]), m[2]
    tokens = rest.split(".")
    expert = None
    digits = [i for i, tok in enumerate(tokens) if tok.isdigit()]
    if len(digits) == 1 and 0 < digits[0] < len(tokens):
        expert = int(tokens.pop(digits[0]))
    elif digits:
        raise FormatError(f"{name!r} is not a canonical tensor name ({SCHEME})")
    role = ".".join(tokens)
    if not mapdata.roles().is_role(role):
        raise FormatError(f"{name!r}: {role!r} is not a role of mappings/roles.toml")
    return Canonical(name, role, layer, expert, mtp)


def _first_spellings() -> dict[str, str]:
    """Each role's first HF spelling in roles.toml as a full-name template (as GGUF -> HF names)."""
    roles = mapdata.roles()
    out = {role: "model." + names[0] for role, names in roles.global_roles.items() if names}
    out.update((role, "model.layers.{layer}." + names[0].replace("*", "{expert}"))
               for role, names in roles.layer_roles.items() if names)
    return out


def hf_name_for(c: Canonical, config: dict, stacked: bool = False) -> tuple[str, bool]:
    """The Hugging Face name of a canonical tensor for the model ``config`` describes: the GGUF ->
    HF target's [names] for its architectures (mappings/hf_configs.toml), else the role's first
    spelling in roles.toml; and whether the tensor is one expert of an HF tensor that stacks them
    (gpt-oss and Llama 4's ``experts.gate_up_proj``: the name has no expert number). For a
    manifest without ``hf_name``; ``stacked``: a stacked-experts tensor, whose name keeps
    ``{expert}``."""
    if c.role is None:
        return c.name[len(EXTRA):], False
    archs = set(config.get("architectures") or ())
    target = next((t for t in mapdata.hf_targets() if archs & set(t.architectures)), None)
    template = (target.names.get(c.role) if target else None) or _first_spellings().get(c.role)
    unstacked = (template is not None and c.expert is not None and not stacked and c.layer is not None
                 and "{expert}" not in template and mapdata.roles().groups["routed_experts"].matches(c.role))
    if template is None or c.mtp or (("{expert}" in template) != (c.expert is not None or stacked) and not unstacked):
        raise FormatError(f"{c.name}: no Hugging Face name for it in {', '.join(sorted(archs)) or 'this family'}; "
                          "give it an hf_name in manifest.json")
    name = template.replace("{layer}", str(c.layer)).replace("{expert}", "{expert}" if stacked else str(c.expert))
    return name, unstacked
