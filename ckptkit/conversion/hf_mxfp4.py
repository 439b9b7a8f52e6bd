"""GGUF -> HF with MXFP4 experts kept as MXFP4: GGML ``block_mxfp4`` rows become the published
Hugging Face layout (``*_blocks`` U8 [..., G, 16] and ``*_scales`` U8 [..., G], gpt-oss), bit
for bit, instead of being dequantised. The inverse of the ``*.blocks`` [[split]] tables of the
family (gate/up rows re-interleaved per expert) and of transforms.mxfp4_to_ggml."""
from __future__ import annotations

from ..errors import UnsupportedError
from ..formats.safetensors_write import Entry
from ..index import TensorInfo
from .family import Family
from .hf_pieces import HFPiece, HFTensor, JoinPart

# the config.json transformers' Mxfp4 quantizer reads (gpt-oss as published)
QUANTIZATION_CONFIG = {"quant_method": "mxfp4",
                       "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                  "model.embed_tokens", "lm_head"]}


def mxfp4_source(fam: Family, role: str) -> tuple[str, int, int]:
    """The HF ``*.blocks`` role a GGUF MXFP4 role comes from, with its row start and step."""
    for sp in fam.splits:
        if sp.to_role == role and sp.from_role.endswith(".blocks"):
            start = int(sp.start.eval({})) if sp.start else 0
            step = int(sp.step.eval({})) if sp.step else 1
            return sp.from_role, start, step
    return role[: -len(".weight")] + ".blocks", 0, 1


def mxfp4_tensors(fam: Family, names: dict[str, str], layer: int | None,
                  parts: dict[str, TensorInfo]) -> list[HFTensor]:
    """The HF blocks and scales of one ``*.blocks`` role from its GGUF MXFP4 ``parts``
    (GGUF role -> tensor [E, rows, cols]): per expert, each part's rows at their start/step."""
    first = next(iter(parts.values()))
    by_src = {r: mxfp4_source(fam, r) for r in parts}
    from_role = next(iter(by_src.values()))[0]
    template = names.get(from_role)
    if template is None or not template.endswith("_blocks"):
        raise UnsupportedError(f"{fam.name}: no Hugging Face MXFP4 name for {from_role}")
    experts, groups = first.shape[0], first.shape[-1] // 32
    if any(len(t.shape) != 3 or t.shape[0] != experts or t.shape[-1] != first.shape[-1] for t in parts.values()):
        raise UnsupportedError(f"{fam.name}: the MXFP4 parts of {from_role} differ in shape")
    rows = sum(t.shape[1] for t in parts.values())
    out = []
    for what, cols, tail in (("blocks", groups * 16, (groups, 16)), ("scales", groups, (groups,))):
        pieces = []
        for e in range(experts):
            jparts = []
            for role, t in parts.items():
                _, start, step = by_src[role]
                r = t.shape[1]
                piece = HFPiece(t, e * r, (e + 1) * r, (("mxfp4_" + what,),), r)
                jparts.append(JoinPart(piece, start, step, (0, cols, 1)))
            if len(jparts) == 1 and jparts[0].row_step == 1:
                pieces.append(jparts[0].piece)
            else:
                p0 = jparts[0].piece
                pieces.append(HFPiece(p0.src, p0.r0, p0.r1, (), 1, tuple(jparts), (rows, cols)))
        name = template.format(layer=layer, expert=0)
        if what == "scales":
            name = name[: -len("_blocks")] + "_scales"
        out.append(HFTensor(Entry(name, "U8", (experts, rows, *tail)), tuple(pieces)))
    return out
