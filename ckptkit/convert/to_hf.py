"""GGUF -> Hugging Face safetensors, streamed: the HF -> GGUF mapping data read backwards.

The GGUF architecture picks a target (mappings/hf_configs.toml: transformers class, config.json
keys as expressions over the GGUF metadata, HF tensor names); tensor names go back through the
canonical role tables (mappings/roles.toml) and the conversion family's [transforms] are
inverted (mappings/convert/). Data is dequantised and written tensor by tensor, chunk by chunk,
into shards in a temporary folder that is renamed to the output only when complete."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from .. import mapdata
from ..api import load_index, open_source
from ..dtypes import GGML_TYPE_BY_NAME, ggml_nbytes
from ..errors import CkptError, FormatError, UnsupportedError
from ..expr import ExprError
from ..formats.safetensors_write import Entry, atomic_dir, write_sharded
from ..index import TensorIndex, TensorInfo
from ..infer.names import canonicalize
from ..mapdata import Split, Target
from ..sources.base import Source
from ..tensordata import decode
from .family import Family, family_for
from .transforms import add, transpose

OUTTYPES = {"bf16": ("BF16", "bfloat16"), "f16": ("F16", "float16"), "f32": ("F32", "float32")}
CHUNK_BYTES = 32 << 20      # output bytes per chunk
DEFAULT_SHARD_SIZE = 5 * 10**9


# ---- the mapping data ------------------------------------------------------------------------------

def targets() -> tuple[Target, ...]:
    """The [[target]] tables of mappings/hf_configs.toml, merged over [common] / ``extends``."""
    return mapdata.hf_targets()


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


# ---- metadata -> config.json -----------------------------------------------------------------------

def _f32_short(v: float) -> float:
    """A float read from a GGUF FLOAT32 as the shortest decimal giving the same float32."""
    f = np.float32(v)
    return float(str(f)) if float(f) == v and np.isfinite(f) else v


def _name(key: str) -> str:
    return key.replace(".", "_").replace("-", "_")


def metadata_names(index: TensorIndex, arch: str) -> dict[str, Any]:
    """The names [config] expressions see (see mappings/hf_configs.toml)."""
    names: dict[str, Any] = {}
    for k, v in index.metadata.items():
        if isinstance(v, float):
            v = _f32_short(v)
        if k.startswith(arch + "."):
            names[_name(k[len(arch) + 1:])] = v
        elif not k.startswith("tokenizer.ggml.") or not isinstance(v, list):
            names[_name(k)] = v
    emb = index.tensors.get("token_embd.weight")
    names["n_vocab"] = emb.shape[0] if emb is not None else names.get("vocab_size")
    names["tied"] = "output.weight" not in index.tensors
    for info in canonicalize(index.tensors).values():
        if info.role:
            names["has_" + _name(info.role)] = True
    return names


def pick_target(arch: str, names: dict[str, Any]) -> Target:
    cands = [t for t in targets() if t.arch == arch]
    if not cands:
        known = sorted({t.arch for t in targets()})
        raise UnsupportedError(f"no Hugging Face mapping for GGUF architecture {arch!r}; known: {', '.join(known)}")
    for t in cands:
        if t.when is None or t.when.eval(names):
            return t
    raise UnsupportedError(f"GGUF architecture {arch!r}: no mapping applies to this model")


def build_config(target: Target, names: dict[str, Any], torch_dtype: str) -> dict[str, Any]:
    for expr, why in target.checks:
        if not expr.eval(names):
            raise UnsupportedError(f"{target.arch}: {why}")
    cfg: dict[str, Any] = {"architectures": list(target.architectures), "model_type": target.model_type}
    for key, ck in target.config.items():
        try:
            value = ck.expr.eval(names)
        except ExprError as e:
            if not ck.optional:     # only a key the data marks optional ("key?") may be left out
                raise ExprError(f"cannot compute config.json {key}: {e.message}") from None
            value = None
        if value is None and key not in target.keep_null:
            continue
        if isinstance(value, float):
            value = _f32_short(value)
        d = cfg
        *path, last = key.split(".")
        for p in path:
            d = d.setdefault(p, {})
        d[last] = value
    for need in target.required:
        if need not in cfg:
            wanted = target.config.get(need)
            raise FormatError(f"GGUF metadata lacks what config.json {need} needs "
                              f"({wanted.expr if wanted else '?'})")
    cfg["dtype"] = torch_dtype
    return cfg


def _flat(cfg: dict) -> dict:
    """config.json as the family's transform expressions see it (nested dicts kept too)."""
    out = dict(cfg)
    for v in cfg.values():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out.setdefault(k2, v2)
    return out


# ---- the plan ---------------------------------------------------------------------------------------

# an inverse op: the name of a function in OPS, then its arguments after the array
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


def unpermute_rope(x: np.ndarray, n_head: int, head_rows: int) -> np.ndarray:
    """The inverse of ``transforms.permute_rope``: GGML's interleaved pairs -> HF "rotate half"."""
    rows = x.shape[0]
    if rows % head_rows or head_rows % 2:
        raise FormatError(f"cannot un-permute {rows} rows in heads of {head_rows}")
    return x.reshape(rows // head_rows, head_rows // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


# the ops an inverse plan uses: permute_rope is undone by unpermute_rope, add(v) by add(-v)
OPS: dict[str, Callable[..., np.ndarray]] = {"unpermute_rope": unpermute_rope, "add": add, "transpose": transpose}


def _inverse_ops(fam: Family, role: str, cfg: dict, rows: int,
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
    ecfg = _flat(cfg)
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
        ops, quantum = _inverse_ops(fam, info.role, ecfg, unit_rows)
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
        ops, quantum = _inverse_ops(fam, sp.to_role, cfg, per, split=True)
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


# ---- data ---------------------------------------------------------------------------------------------

def _row_bytes(t: TensorInfo, cols: int) -> int:
    tid = GGML_TYPE_BY_NAME.get(t.dtype)
    if tid is None:
        raise UnsupportedError(f"{t.name}: unknown ggml type {t.dtype}")
    n = ggml_nbytes(tid, (1, cols))
    if n is None:
        raise FormatError(f"{t.name}: rows of {cols} do not fill whole {t.dtype} blocks")
    return n


def dequantize_rows(raw: bytes, t: TensorInfo, rows: int, cols: int) -> np.ndarray:
    """GGUF tensor bytes of ``rows`` rows as float32 (rows, cols)."""
    if t.dtype in ("F32", "F16", "BF16", "F64"):
        return decode(raw, t.dtype, (rows, cols)).astype(np.float32, copy=False)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    try:
        q = GGMLQuantizationType[t.dtype]
        x = dequantize(np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1), q)
    except (KeyError, NotImplementedError, ValueError) as e:
        raise UnsupportedError(f"{t.name}: cannot dequantise {t.dtype} ({e})") from None
    return np.asarray(x, dtype=np.float32).reshape(rows, cols)


def encode(x: np.ndarray, dtype: str) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "F32":
        return x.astype("<f4", copy=False).tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        u = x.view(np.uint32)
        # round to nearest, ties to even; NaN stays a quiet NaN
        r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
        r[np.isnan(x)] = 0x7FC0
        return r.tobytes()
    raise UnsupportedError(f"cannot write {dtype}")


def tensor_chunks(source: Source, t: HFTensor, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The output bytes of one HF tensor, in bounded chunks of whole row quanta."""
    for p in t.pieces:
        yield from piece_chunks(source, p, t.entry.dtype, chunk_bytes)


def piece_chunks(source: Source, t: HFPiece, dtype: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    for x in piece_arrays(source, t, chunk_bytes):
        yield encode(x, dtype)


def piece_arrays(source: Source, t: HFPiece, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """A piece's values as float32 arrays in HF layout (C order), in bounded chunks of whole row
    quanta; ``chunk_bytes`` counts float32 output bytes."""
    src = t.src
    _, cols = gguf_matrix(src.shape)
    if len(src.shape) <= 1:
        # 1-D: small; the ops see it as a column, as the forward plan did
        x = dequantize_rows(source.read(src.file, src.offset, src.nbytes), src, 1, src.shape[0] if src.shape else 1)
        x = x.reshape(-1, 1)
        for name, *args in t.ops:
            x = OPS[name](x, *args)
        yield x.reshape(-1)
        return
    rb = _row_bytes(src, cols)
    q = max(t.quantum, 1)
    step = max(q, (chunk_bytes // max(cols * 4, 1)) // q * q)
    for a in range(t.r0, t.r1, step):
        b = min(a + step, t.r1)
        raw = source.read(src.file, src.offset + a * rb, (b - a) * rb)
        x = dequantize_rows(raw, src, b - a, cols)
        for name, *args in t.ops:
            x = OPS[name](x, *args)
        yield x


# ---- tokenizer -------------------------------------------------------------------------------------------

def _pretokenizer_steps(pre: str) -> tuple[list[dict], str | None] | None:
    """tokenizer.json pre_tokenizer steps and normalizer of a pre-tokenizer named in
    mappings/pretokenizers.toml."""
    for e in mapdata.pretokenizers().entries:
        if e.name != pre:
            continue
        steps: list[dict] = []
        for st in e.steps:
            if st.type == "Split":
                steps.append({"type": "Split", "pattern": {"Regex": st.regex},
                              "behavior": st.behavior, "invert": st.invert})
            elif st.type == "ByteLevel":
                steps.append({"type": "ByteLevel", "add_prefix_space": st.add_prefix_space,
                              "trim_offsets": True, "use_regex": st.use_regex})
            else:
                steps.append({"type": "Digits", "individual_digits": st.individual_digits})
        return steps, (None if e.normalizer in (None, "none") else e.normalizer)
    return None


def tokenizer_files(meta: dict[str, Any], max_length: int | None) -> tuple[dict[str, Any], str | None]:
    """tokenizer.json and tokenizer_config.json for a GGUF byte-level BPE vocabulary, or ({}, why not)."""
    model = meta.get("tokenizer.ggml.model")
    if model is None or model == "none":
        return {}, None
    if model != "gpt2":
        return {}, f"tokenizer model {model!r} is not converted back (only byte-level BPE \"gpt2\" is)"
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    types = meta.get("tokenizer.ggml.token_type") or []
    if not isinstance(tokens, list) or not isinstance(merges, list):
        return {}, "the GGUF BPE vocabulary lacks tokens or merges"
    pre = meta.get("tokenizer.ggml.pre", "default")
    found = _pretokenizer_steps(pre)
    if found is None:
        return {}, f"pre-tokenizer {pre!r} has no tokenizer.json definition in mappings/pretokenizers.toml"
    steps, norm = found
    added = []
    for i, tok in enumerate(tokens):
        ty = types[i] if i < len(types) else 1
        if ty in (3, 4):   # CONTROL, USER_DEFINED
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": ty == 4, "special": ty == 3})
    pairs = []
    for m in merges:
        a, sep, b = str(m).partition(" ")
        if not sep:
            return {}, f"malformed merge {m!r}"
        pairs.append([a, b])

    def tok_of(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    bos, eos, pad, unk = tok_of("bos"), tok_of("eos"), tok_of("padding"), tok_of("unknown")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    post = None
    if add_bos or add_eos:
        def seq(x):
            return ([{"SpecialToken": {"id": bos, "type_id": 0}}] if add_bos else []) + \
                   [{"Sequence": {"id": x, "type_id": 0}}] + \
                   ([{"SpecialToken": {"id": eos, "type_id": 0}}] if add_eos else [])
        specials = {t: {"id": t, "ids": [tokens.index(t)], "tokens": [t]} for t in
                    ([bos] if add_bos else []) + ([eos] if add_eos else [])}
        post = {"type": "TemplateProcessing", "single": seq("A"), "pair": seq("A") + seq("B"),
                "special_tokens": specials}
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": norm} if norm else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)}, "merges": pairs},
    }
    tc: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos,
                          "add_eos_token": add_eos, "clean_up_tokenization_spaces": False}
    for key, val in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", unk)):
        if val is not None:
            tc[key] = val
    if max_length:
        tc["model_max_length"] = max_length
    if isinstance(meta.get("tokenizer.chat_template"), str):
        tc["chat_template"] = meta["tokenizer.chat_template"]
    return {"tokenizer.json": tj, "tokenizer_config.json": tc}, None


# ---- run --------------------------------------------------------------------------------------------------

@dataclass
class HFResult:
    plan: HFPlan
    out_dir: Path | None
    files: list[str]
    notes: list[str]


def convert_to_hf(spec: str, out_dir: str | os.PathLike, outtype: str = "bf16",
                  shard_size: int = DEFAULT_SHARD_SIZE, revision: str | None = None, vocab: bool = True,
                  dry_run: bool = False, on_bytes: Callable[[int], None] | None = None,
                  on_plan: Callable[[HFPlan], None] | None = None) -> HFResult:
    """Convert the GGUF model at ``spec`` into a Hugging Face folder at ``out_dir``."""
    with open_source(spec, revision) as source:
        index = load_index(source)
        plan = plan_hf(index, outtype)
        files: dict[str, Any] = {}
        if vocab:
            files, why = tokenizer_files(index.metadata, plan.config.get("max_position_embeddings"))
            if why:
                plan.notes.append(f"tokenizer not written: {why}")
        if on_plan:
            on_plan(plan)
        if dry_run:
            return HFResult(plan, None, [], plan.notes)
        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            entries = [t.entry for t in plan.tensors]
            data = ((t.entry.name, tensor_chunks(source, t)) for t in plan.tensors)
            write_sharded(lambda name: open(tmp / name, "wb"), entries, data, shard_size,
                          {"format": "pt"}, on_bytes)
            (tmp / "config.json").write_text(json.dumps(plan.config, indent=2) + "\n")
            for name, obj in files.items():
                (tmp / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
            written = sorted(p.name for p in tmp.iterdir())
        return HFResult(plan, out, written, plan.notes)
