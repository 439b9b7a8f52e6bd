"""infer.scan groups tensors by name pattern and parses each pattern once; its result must be what
a plain walk over every tensor, in index order, with ``parse_name`` per name gives (the oracle
below), whatever the order of the index and however odd the names."""
from __future__ import annotations

import dataclasses
import random
from math import prod

import pytest

from ckptkit import api, mapdata
from ckptkit.index import NAME_GROUPS, FileInfo, TensorIndex, TensorInfo
from ckptkit.infer.names import (
    file_groups,
    group_by_pattern,
    merged_groups,
    number_text,
    parse_name,
    resolve_contextual,
    split_at_numbers,
)
from ckptkit.infer.scan import SCALE_PARTS, Layer, Scan, Seen, logical_shape, scan


def oracle(index: TensorIndex) -> Scan:
    """One tensor at a time, first seen wins: the definition scan() must keep."""
    s = Scan()
    routed = mapdata.roles().groups["routed_experts"].prefixes
    pending = []
    apart: dict[int, Layer] = {}
    for t in index.tensors.values():
        info = parse_name(t.name)
        role, part = info.role, info.part
        if role is None or role == "vision":
            s.total_params += t.numel
            s.dtypes[t.dtype] = s.dtypes.get(t.dtype, 0) + t.numel
            if role is None:
                s.unknown.append(t.name)
            else:
                s.vision_params += t.numel
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
            shape = shape[::-1]
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
        table = apart if info.mtp and not role.startswith("nextn.") else s.layers
        layer = table.setdefault(info.layer, Layer())
        layer.params += n
        if info.expert is not None:
            layer.experts.add(info.expert)
        if role.startswith(routed):
            layer.routed_params += n
        if info.contextual:
            pending.append((info.contextual, layer, seen))
        else:
            layer.roles.setdefault(role, seen)
    decided = [(layer, resolve_contextual(alts, layer.roles.keys()), seen) for alts, layer, seen in pending]
    for layer, role, seen in decided:
        layer.roles.setdefault(role, seen)
    for num in [n for n, layer in s.layers.items() if layer.has("nextn.")]:
        s.mtp_layers[num] = s.layers.pop(num)
    for num, layer in apart.items():
        s.mtp_layers[-1 - num] = layer
    return s


def as_data(s: Scan) -> dict:
    """Everything scan() returns, dict and list orders included."""
    def layers(table: dict[int, Layer]) -> list:
        return [(n, list(x.roles.items()), sorted(x.experts), x.params, x.routed_params) for n, x in table.items()]
    return {"globals": list(s.globals.items()), "layers": layers(s.layers), "mtp": layers(s.mtp_layers),
            "mtp_global": s.mtp_global_params, "unknown": s.unknown, "scales": [t.name for t in s.scales],
            "blocks": [t.name for t in s.blocks], "vision": s.vision_params, "buffer": s.buffer_params,
            "total": s.total_params, "global_params": list(s.global_params.items()),
            "dtypes": list(s.dtypes.items())}


def shuffled(index: TensorIndex, seed: int) -> TensorIndex:
    items = list(index.tensors.items())
    random.Random(seed).shuffle(items)
    return dataclasses.replace(index, tensors=dict(items))


@pytest.mark.parametrize("spec", ["deepseek_v3_671b", "gpt_oss_20b", "llama4_scout_like", "llama3_8b"])
def test_scan_equals_the_per_tensor_walk_in_any_order(spec, header_only_dir):
    index = api.inspect(str(header_only_dir(spec)))
    for seed in (None, 1, 2):
        idx = index if seed is None else shuffled(index, seed)
        assert as_data(scan(idx)) == as_data(oracle(idx)), (spec, seed)


@pytest.mark.parametrize("family", ["qwen3_next", "gemma3_text", "deepseek_v3", "gpt2", "olmo2", "glm4_moe"])
def test_scan_equals_the_per_tensor_walk_on_tiny_models(family, tiny_model):
    index = api.inspect(str(tiny_model(family)))
    for seed in (None, 3):
        idx = index if seed is None else shuffled(index, seed)
        assert as_data(scan(idx)) == as_data(oracle(idx)), (family, seed)


ODD = ["model.layers.007.self_attn.q_proj.weight",       # leading zeros: layer 7
       "model.layers.7.self_attn.k_proj.weight",
       "model.layers.3.mlp.experts.12.down_proj.weight",
       "model.layers.12.mlp.experts.3.down_proj.weight",
       "model.layers.3.mlp.experts.5.down_proj.weight",    # layer 3 again, after layer 12
       "model.layers.3.mlp.experts.x12.up_proj.weight",   # not a number
       "model.layers.\u0661.self_attn.v_proj.weight",     # an Arabic-Indic digit is not a number
       "model.layers.4.self_attn.q_proj.weight\n",        # trailing newline
       "model.layers.\x00.self_attn.q_proj.weight",        # NUL where a number could be
       "model.layers.5.\x00.weight",
       "blk.2.attn_q.weight", "blk.2.ffn_down_exps.weight", "output.weight", "9.8.7", "..1..", "1"]


def test_scan_equals_the_per_tensor_walk_on_odd_names():
    tensors = {n: TensorInfo(n, "BF16", (4, 2), "a.safetensors", 0, 16) for n in ODD}
    index = TensorIndex("safetensors", [], tensors, None, None, {}, "odd")
    for seed in (None, 1, 2, 3):
        idx = index if seed is None else shuffled(index, seed)
        assert as_data(scan(idx)) == as_data(oracle(idx)), seed


@pytest.mark.parametrize("names", [ODD, [n for n in ODD if "\x00" not in n],
                                   [n for n in ODD if "\x00" not in n and "\n" not in n]])  # one regex pass
def test_patterns_group_names_by_their_text_between_numbers(names):
    groups = group_by_pattern(names)
    assert sorted(i for v in groups.values() for i in v) == list(range(len(names)))
    for pattern, positions in groups.items():
        assert positions == sorted(positions)
        for i in positions:
            parts = split_at_numbers(names[i])
            assert tuple(parts[0::2]) == pattern
            assert [number_text(names[i], pattern, k) for k in range(len(pattern) - 1)] == parts[1::2]
    assert list(groups) == list(dict.fromkeys(tuple(split_at_numbers(n)[0::2]) for n in names))


@pytest.mark.parametrize("cuts", [(), (3,), (1, 5, 9), (0, 0, 7)])   # files (some with no names)
def test_groups_made_file_by_file_merge_to_the_groups_of_all(cuts):
    """Names grouped per file as the headers are read, then merged, are grouped as all at once;
    pieces that do not add up to the names are refused (None), not trusted."""
    bounds = [0, *cuts, len(ODD)]
    files = [ODD[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    pieces = [file_groups(f) for f in files]
    merged = merged_groups(pieces, len(ODD))
    assert merged == group_by_pattern(ODD) and list(merged) == list(group_by_pattern(ODD))
    assert merged_groups(pieces, len(ODD) + 1) is None
    assert merged_groups(pieces[1:], len(ODD) - len(files[0])) == group_by_pattern(ODD[len(files[0]):])
    assert merged_groups([b"[2, [[[\"a\"], [0, 5]]]]"], 2) is None     # a position past its file
    assert merged_groups([b"not json"], 2) is None


def test_scan_uses_groups_made_per_file_and_gets_the_same_result():
    tensors = {n: TensorInfo(n, "BF16", (4, 2), f"{i % 3}.safetensors", 0, 16) for i, n in enumerate(ODD)}
    files = [FileInfo(f"{k}.safetensors", None, "safetensors") for k in range(3)]
    index = TensorIndex("safetensors", files, dict(sorted(tensors.items(), key=lambda kv: kv[1].file)),
                        None, None, {}, "odd")
    by_file = [[t.name for t in index.tensors.values() if t.file == f.name] for f in files]
    made = dataclasses.replace(index, per_file={NAME_GROUPS: [file_groups(n) for n in by_file]})
    assert as_data(scan(made)) == as_data(scan(index)) == as_data(oracle(index))
    for wrong in ([file_groups(n) for n in by_file[1:]],              # not one piece per file
                  [file_groups(n) for n in by_file[:2]] + [b"[0, []]"]):  # not all the names
        assert as_data(scan(dataclasses.replace(index, per_file={NAME_GROUPS: wrong}))) == as_data(scan(index))
