"""HF -> GGUF for the seed families: llama.cpp loads what ckptkit wrote and its logits match
transformers' on the same tiny model."""
import gguf
import numpy as np
import pytest

from ckptkit.conversion import convert_to_gguf
from ckptkit.errors import UnsupportedError
from convert_harness import assert_logits_match, llama_cpp_or_skip

# family fixture name -> GGUF architecture
FAMILIES = {
    "llama": "llama", "mistral": "llama", "mixtral": "llama",
    "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe",
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_f32(family, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = tiny_model(family)
    out = tmp_path / "m.gguf"
    res = convert_to_gguf(str(src), out, outtype="f32")
    assert res.outputs == [out] and out.exists()
    arch = gguf.GGUFReader(out).fields["general.architecture"].contents()
    assert arch == FAMILIES[family]
    assert_logits_match(out, src, rtol=2e-3)


@pytest.mark.parametrize("outtype, rtol", [("f16", 2e-2), ("bf16", 5e-2), ("q8_0", 5e-2)])
def test_logits_match_lower_precision(outtype, rtol, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = tiny_model("qwen3_moe")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype=outtype)
    assert_logits_match(out, src, rtol=rtol)


def test_rope_permutation_is_exact(tiny_model, tmp_path):
    """llama's q rows are re-ordered head by head; qwen2's are not."""
    from safetensors import safe_open
    src = tiny_model("llama")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    r = gguf.GGUFReader(out)
    q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight").data
    import json
    cfg = json.loads((src / "config.json").read_text())
    wm = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.0.self_attn.q_proj.weight"
    with safe_open(str(src / wm[name]), "np") as f:
        hf = f.get_tensor(name)
    heads = cfg["num_attention_heads"]
    hd = hf.shape[0] // heads
    expect = hf.reshape(heads, 2, hd // 2, -1).swapaxes(1, 2).reshape(hf.shape)
    assert np.array_equal(q, expect)
    assert not np.array_equal(q, hf)


def test_threads_give_identical_bytes(tiny_model, tmp_path):
    src = tiny_model("mixtral")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    convert_to_gguf(str(src), a, outtype="q8_0", threads=1)
    convert_to_gguf(str(src), b, outtype="q8_0", threads=3)
    assert a.read_bytes() == b.read_bytes()


def test_experts_stacked_in_order(tiny_model, tmp_path):
    import json

    from safetensors import safe_open
    src = tiny_model("mixtral")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    r = gguf.GGUFReader(out)
    t = next(t for t in r.tensors if t.name == "blk.1.ffn_down_exps.weight")
    wm = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    for e in range(t.data.shape[0]):
        name = f"model.layers.1.block_sparse_moe.experts.{e}.w2.weight"
        with safe_open(str(src / wm[name]), "np") as f:
            assert np.array_equal(t.data[e], f.get_tensor(name))


def test_unsupported_family_is_clear(tiny_model, tmp_path):
    import json
    import shutil
    src = tiny_model("llama")
    d = tmp_path / "x"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["MadeUpForCausalLM"]
    cfg["model_type"] = "madeup"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match="MadeUpForCausalLM"):
        convert_to_gguf(str(d), tmp_path / "o.gguf")
    assert not (tmp_path / "o.gguf").exists()


def test_convert_straight_from_the_hub(tiny_model, hub, hf_cache, tmp_path):
    """Same bytes as from disk, even with connection resets and 503s on the way."""
    src = tiny_model("qwen3_moe")
    hub.add_repo_from_dir("tiny/convert-hub", src)
    local = tmp_path / "local.gguf"
    convert_to_gguf(str(src), local, outtype="q8_0")
    resets = hub.fail("safetensors", "reset", times=2, after_bytes=1000)
    errors = hub.fail("safetensors", "status", times=2, status=503)
    remote = tmp_path / "remote.gguf"
    convert_to_gguf("tiny/convert-hub", remote, outtype="q8_0", threads=2)
    assert resets.hits == 2 and errors.hits == 2
    a, b = gguf.GGUFReader(local), gguf.GGUFReader(remote)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert np.array_equal(ta.data, tb.data), ta.name
    assert any(r.range for r in hub.requests if "safetensors" in r.path)
    # small tensors next to each other are fetched together, not one round trip each
    data_gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert len(data_gets) < len(res_tensors(src)) / 2


def res_tensors(src):
    import json
    return json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]


def test_llama3_rope_scaling(tiny_model, tmp_path):
    """Llama 3.1-style rope scaling becomes llama.cpp's rope_freqs tensor; logits still match
    on a sequence long enough for the scaled frequencies to matter."""
    import json
    import shutil
    llama_cpp_or_skip()
    d = tmp_path / "l31"
    shutil.copytree(tiny_model("llama"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 16}
    cfg.pop("rope_scaling", None)
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m.gguf"
    res = convert_to_gguf(str(d), out, outtype="f32")
    assert "rope_freqs.weight" in [t.slot.name for t in res.plan.tensors]
    tokens = [(i * 37) % 300 + 3 for i in range(40)]
    assert_logits_match(out, d, rtol=2e-3, tokens=tokens)


def test_bf16_to_f16_with_layout_ops_is_exact(tiny_model, tmp_path):
    """BF16 -> F16 takes a bit-arithmetic path, also before permutations and transposes:
    its values must equal the plain float32 route."""
    import json

    from safetensors import safe_open
    src = tiny_model("llama", dtype="bfloat16")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f16", vocab=False)
    r = gguf.GGUFReader(out)
    q = next(t for t in r.tensors if t.name == "blk.1.attn_q.weight")
    assert q.data.dtype == np.float16
    cfg = json.loads((src / "config.json").read_text())
    wm = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.self_attn.q_proj.weight"
    with safe_open(str(src / wm[name]), "pt") as f:
        hf = f.get_tensor(name).float().numpy()
    heads = cfg["num_attention_heads"]
    expect = hf.reshape(heads, 2, hf.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(hf.shape)
    assert np.array_equal(q.data, expect.astype(np.float16))


def test_mistral_native_format(tiny_model, tmp_path):
    """consolidated.safetensors + params.json (Mistral's own format, Meta's names, q/k already
    in interleaved rotary order): inspected with params.json as the config, converted without
    a second permutation, and llama.cpp's logits match transformers on the HF original."""
    import json

    from ckptkit import api
    from modelgen import make_mistral_native
    src = tiny_model("mistral")
    cfg = json.loads((src / "config.json").read_text())
    kv = cfg["num_key_value_heads"]
    d = make_mistral_native(src, tmp_path / "native")
    idx = api.inspect(str(d))
    assert idx.config["num_key_value_heads"] == kv and idx.config["hidden_size"] == cfg["hidden_size"]
    out = tmp_path / "native.gguf"
    res = convert_to_gguf(str(d), out, outtype="f32", vocab=False)
    assert res.plan.family == "mistral_native"
    assert all(not p.ops for t in res.plan.tensors for p in t.pieces)   # nothing permuted twice
    llama_cpp_or_skip()
    assert_logits_match(out, src, rtol=2e-3)


@pytest.mark.parametrize("kind", ["per_tensor", "per_channel"])
def test_fp8_weight_scale_layouts(kind, tiny_model, tmp_path):
    """compressed-tensors FP8 checkpoints store `weight_scale` per tensor ([] or [1]) or per
    output channel ([out, 1]); the converted values are the FP8 values times their scale."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    src = tiny_model("llama")
    d = tmp_path / "fp8"
    shutil.copytree(src, d)
    expect = {}
    for shard in d.glob("*.safetensors"):
        sd = load_file(str(shard))
        out = {}
        for k, w in sd.items():
            if w.ndim == 2 and "proj" in k:
                if kind == "per_tensor":
                    scale = (w.abs().max() / 448).reshape(1)
                    q = (w / scale).to(torch.float8_e4m3fn)
                else:
                    scale = (w.abs().amax(dim=1, keepdim=True) / 448)
                    q = (w / scale).to(torch.float8_e4m3fn)
                out[k] = q
                out[k + "_scale"] = scale.float()
                expect[k] = (q.float() * scale).numpy()
            else:
                out[k] = w
        save_file(out, str(shard))
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    for k in list(idx["weight_map"]):
        if k in expect:
            idx["weight_map"][k + "_scale"] = idx["weight_map"][k]
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(d), out, outtype="f32", vocab=False)
    r = {t.name: t.data for t in gguf.GGUFReader(out).tensors}
    assert np.array_equal(r["blk.0.ffn_down.weight"], expect["model.layers.0.mlp.down_proj.weight"])
    assert np.array_equal(r["blk.1.attn_v.weight"], expect["model.layers.1.self_attn.v_proj.weight"])


def test_integer_weights_are_refused(tiny_model, tmp_path):
    """A weight stored as integers (some quantisation whose companions ckptkit does not read)
    is refused with a clear error instead of converted as if its integers were the values."""
    import shutil

    from safetensors.numpy import load_file, save_file
    d = tmp_path / "int8"
    shutil.copytree(tiny_model("llama"), d)
    for shard in d.glob("*.safetensors"):
        sd = load_file(str(shard))
        sd = {k: (v.astype(np.int8) if k.endswith("q_proj.weight") else v) for k, v in sd.items()}
        save_file(sd, str(shard))
    with pytest.raises(UnsupportedError, match="q_proj.weight is I8"):
        convert_to_gguf(str(d), tmp_path / "o.gguf")
    assert not (tmp_path / "o.gguf").exists()
