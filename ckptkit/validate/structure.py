"""Structure: every layer holds the tensors its kind needs, in agreeing shapes and dtypes;
experts are numbered 0..E-1; nothing stray or duplicated."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from .. import mapdata
from ..index import TensorIndex, TensorInfo, span_text
from ..infer import Inference
from .findings import Finding, finding
from .layout import LayerView, Layout, first


def check_structure(index: TensorIndex, inf: Inference, layout: Layout) -> list[Finding]:
    out: list[Finding] = []
    T = index.tensors

    def at(name: str) -> dict:
        return {"tensor": name, "file": T[name].file}

    nums = sorted(layout.layers)
    if nums and nums != list(range(len(nums))):
        gone = sorted(set(range(nums[-1] + 1)) - set(nums))
        out.append(finding("structure.layer_gap", f"decoder layers run 0..{nums[-1]} but layer(s) "
                           f"{span_text(gone)} hold no tensors"))
    for name in layout.unknown:
        out.append(finding("structure.unknown_tensor", f"{name} {list(T[name].shape)} matches no "
                           "known tensor name (stray, or an architecture ckptkit does not know)",
                           **at(name)))

    for role, names in layout.globals.items():
        if len(names) > 1:
            out.append(finding("structure.duplicate", f"{', '.join(names)} all play {role}",
                               **at(names[1])))
    for lv in layout.layers.values():
        for role, names in lv.roles.items():
            if role.startswith("dup:") or len(names) > 1:
                what = role[4:] if role.startswith("dup:") else role
                out.append(finding("structure.duplicate", f"layer {lv.num}: {', '.join(names[:4])} "
                                   f"all play {what}", **at(names[-1])))
        for fused, parts in (("attn_qkv.weight", ("attn_q.weight", "attn_k.weight")),
                             ("ffn_gate_up.weight", ("ffn_up.weight", "ffn_gate.weight"))):
            if lv.has(fused) and any(lv.has(p) for p in parts):
                other = next(_example(lv, p) for p in parts if lv.has(p))
                out.append(finding("structure.duplicate", f"layer {lv.num} holds both the fused "
                                   f"{_example(lv, fused)} and the separate {other}", **at(other)))

    groups: dict[tuple[str, str], list[LayerView]] = defaultdict(list)
    for n in nums:
        groups[layout.layers[n].kinds()].append(layout.layers[n])
    attn_kinds = {k[0] for k in groups if k[0] != "none"}
    ffn_kinds = {k[1] for k in groups if k[1] != "none"}
    required = mapdata.validate_table().required     # kind -> roles, each a tuple of alternatives
    for (attn, ffn), lvs in groups.items():
        desc = f"({attn}, {ffn})"
        for lv in lvs:
            if attn == "none" and attn_kinds:
                out.append(finding("structure.missing_tensor", f"layer {lv.num} has no attention "
                                   "tensors, though other layers do"))
            if ffn == "none" and ffn_kinds:
                out.append(finding("structure.missing_tensor", f"layer {lv.num} has no "
                                   "feed-forward tensors, though other layers do"))
        union: dict[str, None] = {}
        for lv in lvs:
            for r in list(lv.roles) + list(lv.experts):
                if not r.startswith("dup:"):
                    union.setdefault(r, None)
        for role in union:
            have = [lv for lv in lvs if lv.has(role)]
            if len(have) == len(lvs):
                continue
            if 2 * len(have) >= len(lvs):
                for lv in lvs:
                    if not lv.has(role):
                        out.append(finding("structure.missing_tensor",
                                           f"layer {lv.num} lacks {role}, which {len(have)} other "
                                           f"{desc} layer(s) hold (e.g. {_example(have[0], role)})"))
            else:
                for lv in have:
                    name = _example(lv, role)
                    out.append(finding("structure.unexpected_tensor",
                                       f"{name} ({role}) is in only {len(have)} of {len(lvs)} "
                                       f"{desc} layers", **at(name)))
        for alts in required.get(attn, ()) + required.get(ffn, ()):
            if not any(lv.has(a) for lv in lvs for a in alts):
                out.append(finding("structure.missing_tensor", f"no {desc} layer holds "
                                   f"{' or '.join(alts)} (layers {span_text(lv.num for lv in lvs)})"))
        for role in union:
            out += _shapes_agree(T, lvs, role, desc)

    out += _check_experts(T, layout, inf)
    return out


def _example(lv: LayerView, role: str) -> str:
    if role in lv.roles:
        return lv.roles[role][0]
    return next(iter(lv.experts[role].values()))


def _shapes_agree(T: dict[str, TensorInfo], lvs: list[LayerView], role: str, desc: str) -> list[Finding]:
    names: list[str] = []
    for lv in lvs:
        names += lv.roles.get(role, [])[:1]
        names += lv.experts.get(role, {}).values()
    if len(names) < 2:
        return []
    infos = [T[n] for n in names]
    out = []
    checks: tuple[tuple[list[Any], str, Callable[[Any], Any]], ...] = (
        ([t.shape for t in infos], "structure.shape_mismatch", list),
        ([t.dtype for t in infos], "structure.dtype_mismatch", str))
    for values, code, show in checks:
        if values.count(values[0]) == len(values):      # the common case, without a Counter
            continue
        common, n_common = Counter(values).most_common(1)[0]
        for t, got in zip(infos, values, strict=True):
            if got != common:
                out.append(finding(code, f"{t.name} is {show(got)}, but {role} is {show(common)} in "
                                   f"{n_common} other {desc} tensor(s)", tensor=t.name, file=t.file))
    return out


def _check_experts(T: dict[str, TensorInfo], layout: Layout, inf: Inference) -> list[Finding]:
    out: list[Finding] = []
    ne = inf.facts["num_experts"].value
    for lv in (layout.layers[n] for n in sorted(layout.layers)):
        router = first(lv, "ffn_gate_inp.weight")
        rows = T[router].shape[0] if router and T[router].shape else None
        count = rows or ne
        for role, by in lv.experts.items():
            E = count or (max(by) + 1)
            gone = sorted(set(range(E)) - set(by))
            extra = sorted(e for e in by if e >= E)
            some = next(iter(by.values()))
            if gone:
                out.append(finding("structure.missing_expert",
                                   f"layer {lv.num}: {role} lacks expert(s) {span_text(gone)} "
                                   f"(has {len(by) - len(extra)} of {E})", tensor=some, file=T[some].file))
            for e in extra:
                out.append(finding("structure.stray_expert", f"{by[e]} is expert {e}, but the "
                                   f"router has {E} experts (0..{E - 1})", tensor=by[e], file=T[by[e]].file))
        if rows:
            for role, names in lv.roles.items():
                if "_exps." in role and not role.startswith("dup:") and len(T[names[0]].shape) == 3:
                    if T[names[0]].shape[0] != rows:
                        out.append(finding("structure.expert_count",
                                           f"{names[0]} stacks {T[names[0]].shape[0]} experts, but "
                                           f"the router {router} has {rows} rows",
                                           tensor=names[0], file=T[names[0]].file))
    return out
