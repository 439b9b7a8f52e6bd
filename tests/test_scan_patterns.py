"""infer.scan groups tensors by name pattern and parses each pattern once; its result must be what
a plain walk over every tensor, in index order, with ``parse_name`` per name gives (the oracle
below), whatever the order of the index and however odd the names."""
from __future__ import annotations

import dataclasses
import random
from math import prod

import pytest

from ckptkit import api, mapdata
from ckptkit.index import FILE_SCAN, FileInfo, TensorIndex, TensorInfo
from ckptkit.infer.names import (
    group_by_pattern,
    number_text,
    parse_name,
    resolve_contextual,
    split_at_numbers,
)
from ckptkit.infer.scan import SCALE_PARTS, Layer, Scan, Seen, _Acc, file_scan, logical_shape, scan


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


def scaled(s: Scan, index: TensorIndex) -> int:
    """The parameters of the weights FP8 scales scale, as infer.quant adds them up from the scan."""
    return s.scaled_params + sum(w.numel for t in s.scaled_elsewhere
                                 if (w := index.tensors.get(t.name.rpartition("_scale")[0])) is not None)


def oracle_scaled(index: TensorIndex, walked: Scan) -> int:
    """What ``scaled`` must give, from the per-tensor walk ``walked`` of ``index``."""
    return sum(index.tensors[base].numel for t in walked.scales
               if t.name.endswith(("weight_scale_inv", "weight_scale"))
               and (base := t.name.rpartition("_scale")[0]) in index.tensors)


def shuffled(index: TensorIndex, seed: int) -> TensorIndex:
    items = list(index.tensors.items())
    random.Random(seed).shuffle(items)
    return dataclasses.replace(index, tensors=dict(items))


@pytest.mark.parametrize("spec", ["deepseek_v3_671b", "gpt_oss_20b", "llama4_scout_like", "llama3_8b"])
def test_scan_equals_the_per_tensor_walk_in_any_order(spec, header_only_dir):
    index = api.inspect(str(header_only_dir(spec)))
    for seed in (None, 1, 2):
        idx = index if seed is None else shuffled(index, seed)
        walked, got = oracle(idx), scan(idx)
        assert as_data(got) == as_data(walked), (spec, seed)
        assert scaled(got, idx) == oracle_scaled(idx, walked)


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


def in_files(index: TensorIndex, cuts: list[int]) -> TensorIndex:
    """``index`` with its tensors (in their order) cut into files at ``cuts``, and each file's
    scan made as header_reads.py makes it."""
    ts = list(index.tensors.values())
    bounds = [0, *cuts, len(ts)]
    files = [ts[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    infos = [FileInfo(f"{k}.safetensors", None, "safetensors") for k in range(len(files))]
    return dataclasses.replace(index, files=infos, per_file={FILE_SCAN: [file_scan(f) for f in files]})


@pytest.mark.parametrize("spec", ["deepseek_v3_671b", "gpt_oss_20b", "llama4_scout_like", "llama3_8b"])
def test_scans_made_file_by_file_join_to_the_per_tensor_walk(spec, header_only_dir):
    """Each file scanned as its header is read (by whichever process read it), then joined: the
    same result as the per-tensor walk over all, however the tensors are cut into files and in
    whatever order they come (layers and roles split across files, files without tensors)."""
    index = api.inspect(str(header_only_dir(spec)))
    n = len(index.tensors)
    rng = random.Random(spec)
    some = sorted(rng.sample(range(n), min(n, 37)))
    for seed, every_cut in ((None, ([], [1], [n // 2, n // 2], some)), (1, (some,))):
        idx = index if seed is None else shuffled(index, seed)
        walked = oracle(idx)
        want, want_scaled = as_data(walked), oracle_scaled(idx, walked)
        for cuts in every_cut:
            made = in_files(idx, cuts)
            assert made.pieces(FILE_SCAN) is not None
            got = scan(made)
            assert as_data(got) == want, (spec, seed, cuts)
            assert scaled(got, idx) == want_scaled, (spec, seed, cuts)
    if spec == "deepseek_v3_671b":   # FP8: some weights are in other files than their scales
        assert want_scaled > 0 and scan(in_files(shuffled(index, 1), [n // 2])).scaled_elsewhere


@pytest.mark.parametrize("family", ["qwen3_next", "deepseek_v3", "gpt2", "glm4_moe"])
def test_scans_made_file_by_file_on_tiny_models(family, tiny_model):
    index = api.inspect(str(tiny_model(family)))
    n = len(index.tensors)
    for cuts in ([n // 3, 2 * n // 3], list(range(1, n))):
        assert as_data(scan(in_files(index, cuts))) == as_data(oracle(index)), (family, cuts)


def test_scans_made_file_by_file_on_odd_names():
    tensors = {n: TensorInfo(n, "BF16", (4, 2), "a.safetensors", 0, 16) for n in ODD}
    index = TensorIndex("safetensors", [], tensors, None, None, {}, "odd")
    for cuts in ([3], [1, 5, 9], [0, 0, 7], list(range(1, len(ODD)))):
        assert as_data(scan(in_files(index, cuts))) == as_data(oracle(index)), cuts


def test_file_scans_that_do_not_add_up_are_not_trusted():
    """Pieces that are not what file_scan writes, name other tensors or do not count them all are
    refused, and the scan is made again from the index: never a wrong result."""
    tensors = {n: TensorInfo(n, "BF16", (4, 2), f"{i % 3}.safetensors", 0, 16) for i, n in enumerate(ODD)}
    index = TensorIndex("safetensors", [], dict(sorted(tensors.items(), key=lambda kv: kv[1].file)),
                        None, None, {}, "odd")
    made = in_files(index, [5, 11])
    pieces = made.per_file[FILE_SCAN]
    want = as_data(oracle(index))
    assert as_data(scan(made)) == want
    swapped = in_files(dataclasses.replace(index, tensors=dict(reversed(index.tensors.items()))), [5, 11])
    shifted = pieces[0].replace(b'[[3, "model.layers.5.', b'[[2, "model.layers.5.')   # a name not at its position
    assert shifted != pieces[0]
    for wrong in ([pieces[1], pieces[0], pieces[2]],       # out of order: names are not where they say
                  swapped.per_file[FILE_SCAN],              # another order of the same tensors
                  pieces[:2] + [b"[0, [0, 0, 0, 0], [], [], [], [], [], [], [], []]"],  # not all the tensors
                  [shifted, *pieces[1:]],
                  [b"not json", *pieces[1:]],
                  [pieces[0].replace(b"[", b"{", 1), *pieces[1:]],
                  [pieces[0][:-3] + b"[0]]", *pieces[1:]]):   # a scale "elsewhere" that is not a scale
        assert not _Acc(()).join(wrong, list(index.tensors.values()))
        odd = dataclasses.replace(made, per_file={FILE_SCAN: wrong})
        assert as_data(scan(odd)) == want
    assert _Acc(()).join(pieces, list(index.tensors.values()))
