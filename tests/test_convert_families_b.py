"""HF -> GGUF for gemma3, olmo2, smollm3, gpt2 and llama4: llama.cpp loads what ckptkit wrote
and its logits match transformers' on the same tiny model; the layout-changing steps (Gemma's
+1 on norms, GPT-2's transposed Conv1D, Llama 4's stacked experts) are checked value by value;
the metadata llama.cpp would otherwise silently default is shown to matter."""
import json
import shutil

import gguf
import numpy as np
import pytest
from safetensors import safe_open

from ckptkit.conversion import build_plan, convert_to_gguf
from ckptkit.errors import UnsupportedError
from ckptkit.sources.local import LocalSource
from convert_harness import assert_logits_match, gguf_logits, hf_logits, llama_cpp_or_skip

# family fixture name -> GGUF architecture
FAMILIES = {"gemma3_text": "gemma3", "olmo2": "olmo2", "smollm3": "smollm3", "gpt2": "gpt2",
            "llama4_text": "llama4"}

# longer than the tiny Gemma 3's sliding window (4), so which layers slide changes the logits
TOKENS = [1, 5, 9, 100, 200, 3, 77, 42, 300, 12, 17, 250, 8, 64, 99, 120, 33, 7, 380, 150, 11, 2, 44, 55]


def hf_tensor(model_dir, name):
    wm = json.loads((model_dir / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(str(model_dir / wm[name]), "np") as f:
        return f.get_tensor(name)


def gguf_tensors(path):
    return {t.name: np.asarray(t.data) for t in gguf.GGUFReader(path).tensors}


def gguf_fields(path):
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}


def variant(src, tmp_path, **changes):
    """A copy of a tiny model dir with config.json keys changed (same weights)."""
    d = tmp_path / "variant"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def rel_diff(gguf_path, model_dir, tokens=TOKENS):
    ref = hf_logits(model_dir, tokens)
    got = gguf_logits(gguf_path, tokens)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_f32(family, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = tiny_model(family)
    out = tmp_path / "m.gguf"
    res = convert_to_gguf(str(src), out, outtype="f32")
    assert res.outputs == [out]
    assert gguf_fields(out)["general.architecture"] == FAMILIES[family]
    assert_logits_match(out, src, rtol=2e-3, tokens=TOKENS)


@pytest.mark.parametrize("family, outtype, rtol", [("gemma3_text", "f16", 2e-2), ("llama4_text", "q8_0", 5e-2),
                                                   ("gpt2", "bf16", 5e-2)])
def test_logits_match_lower_precision(family, outtype, rtol, tiny_model, tmp_path):
    llama_cpp_or_skip()
    src = tiny_model(family)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype=outtype)
    assert_logits_match(out, src, rtol=rtol, tokens=TOKENS)


# ---- gemma3 --------------------------------------------------------------------------------------

def test_gemma3_metadata_and_norms(tiny_model, tmp_path):
    src = tiny_model("gemma3_text")
    cfg = json.loads((src / "config.json").read_text())
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    f = gguf_fields(out)
    assert f["gemma3.attention.sliding_window"] == cfg["sliding_window"]
    assert f["gemma3.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in cfg["layer_types"]]
    assert f["gemma3.rope.freq_base"] == cfg["rope_parameters"]["full_attention"]["rope_theta"]
    assert f["gemma3.rope.freq_base_swa"] == cfg["rope_parameters"]["sliding_attention"]["rope_theta"]
    assert f["gemma3.attention.key_length"] == cfg["head_dim"]
    assert "gemma3.final_logit_softcapping" not in f          # null in this config
    t = gguf_tensors(out)
    assert "output.weight" not in t                            # tied: llama.cpp reuses token_embd
    # Gemma3RMSNorm scales by (1 + w): every norm, q/k norms and the final one included, gets +1
    pairs = {"blk.2.attn_norm.weight": "model.layers.2.input_layernorm.weight",
             "blk.2.post_attention_norm.weight": "model.layers.2.post_attention_layernorm.weight",
             "blk.2.ffn_norm.weight": "model.layers.2.pre_feedforward_layernorm.weight",
             "blk.2.post_ffw_norm.weight": "model.layers.2.post_feedforward_layernorm.weight",
             "blk.2.attn_q_norm.weight": "model.layers.2.self_attn.q_norm.weight",
             "blk.2.attn_k_norm.weight": "model.layers.2.self_attn.k_norm.weight",
             "output_norm.weight": "model.norm.weight"}
    for g, h in pairs.items():
        np.testing.assert_array_equal(t[g], hf_tensor(src, h) + np.float32(1.0), err_msg=g)
    np.testing.assert_array_equal(t["blk.2.attn_q.weight"], hf_tensor(src, "model.layers.2.self_attn.q_proj.weight"))


def test_gemma3_window_pattern_and_local_base_matter(tiny_model, tmp_path):
    """An irregular layer pattern and a non-default local rope base still match transformers;
    the same GGUF without its sliding-window keys loads but gives wrong logits."""
    llama_cpp_or_skip()
    base = tiny_model("gemma3_text")
    cfg = json.loads((base / "config.json").read_text())
    rope = dict(cfg["rope_parameters"])
    rope["sliding_attention"] = {"rope_type": "default", "rope_theta": 50.0}
    layers = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
              "full_attention", "sliding_attention"]
    src = variant(base, tmp_path, layer_types=layers, rope_parameters=rope, final_logit_softcapping=3.0)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    f = gguf_fields(out)
    assert f["gemma3.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in layers]
    assert f["gemma3.rope.freq_base_swa"] == 50.0
    assert f["gemma3.final_logit_softcapping"] == pytest.approx(3.0)
    assert rel_diff(out, src) < 2e-3

    for dropped in (("gemma3.attention.sliding_window_pattern",), ("gemma3.rope.freq_base_swa",),
                    ("gemma3.attention.sliding_window", "gemma3.attention.sliding_window_pattern")):
        bad = tmp_path / "bad.gguf"
        def drop(p, dropped=dropped):
            p.kvs[:] = [k for k in p.kvs if k.key not in dropped]
        convert_to_gguf(str(src), bad, outtype="f32", vocab=False, on_plan=drop)
        assert rel_diff(bad, src) > 2e-2, f"logits do not depend on {dropped}"


def test_gemma3_multimodal_layout(tiny_model, tmp_path):
    """Gemma3ForConditionalGeneration: text weights under model.language_model.*, a vision
    tower and projector beside them, the text config nested. The vision part is dropped and the
    text model runs as the plain one does."""
    from safetensors.numpy import save_file
    base = tiny_model("gemma3_text")
    cfg = json.loads((base / "config.json").read_text())
    wm = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = {}
    for name in wm:
        tensors[name.replace("model.", "model.language_model.", 1)] = hf_tensor(base, name)
    rng = np.random.default_rng(0)
    tensors["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = rng.standard_normal((8, 3, 2, 2)).astype(np.float32)
    tensors["model.multi_modal_projector.mm_input_projection_weight"] = rng.standard_normal((8, 64)).astype(np.float32)
    d = tmp_path / "mm"
    d.mkdir()
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForConditionalGeneration"],
                                               "model_type": "gemma3", "text_config": cfg}))
    out = tmp_path / "m.gguf"
    res = convert_to_gguf(str(d), out, outtype="f32", vocab=False)
    assert {n for n, _ in res.plan.dropped} == {k for k in tensors if "vision" in k or "multi_modal" in k}
    assert gguf_fields(out)["gemma3.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in cfg["layer_types"]]
    llama_cpp_or_skip()
    assert rel_diff(out, base) < 2e-3


def test_gemma3_published_config_defaults():
    """Multimodal Gemma 3 configs leave transformers' defaults out of text_config (gemma-3-4b-it
    gives only these); the GGUF gets the values transformers would use."""
    from ckptkit.conversion.family import effective_config, families
    from ckptkit.conversion.plan import metadata_kvs
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
           "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                           "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                           "sliding_window": 1024}}
    kv = {k.key: k.value for k in metadata_kvs(families()["gemma3"], effective_config(cfg))}
    assert kv["gemma3.attention.head_count"] == 8 and kv["gemma3.attention.head_count_kv"] == 4
    assert kv["gemma3.attention.key_length"] == 256 and kv["gemma3.context_length"] == 131072
    assert kv["gemma3.rope.freq_base"] == 1e6 and kv["gemma3.rope.freq_base_swa"] == 1e4
    assert kv["gemma3.rope.scaling.type"] == "linear" and kv["gemma3.rope.scaling.factor"] == 8.0
    assert kv["gemma3.attention.sliding_window"] == 1024
    assert kv["gemma3.attention.sliding_window_pattern"] == [(i + 1) % 6 != 0 for i in range(34)]


@pytest.mark.parametrize("changes, match", [
    ({"attn_logit_softcapping": 50.0}, "soft-capping"),
    ({"query_pre_attn_scalar": 32}, "query_pre_attn_scalar"),
])
def test_gemma3_config_llama_cpp_cannot_run(changes, match, tiny_model, tmp_path):
    src = variant(tiny_model("gemma3_text"), tmp_path, **changes)
    with pytest.raises(UnsupportedError, match=match):
        convert_to_gguf(str(src), tmp_path / "o.gguf", dry_run=True)


# ---- olmo2 / smollm3 / gpt2 ------------------------------------------------------------------------

def test_olmo2_post_norms(tiny_model, tmp_path):
    src = tiny_model("olmo2")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    t = gguf_tensors(out)
    assert "blk.0.attn_norm.weight" not in t and "blk.0.ffn_norm.weight" not in t
    np.testing.assert_array_equal(t["blk.1.post_attention_norm.weight"],
                                  hf_tensor(src, "model.layers.1.post_attention_layernorm.weight"))
    np.testing.assert_array_equal(t["blk.1.post_ffw_norm.weight"],
                                  hf_tensor(src, "model.layers.1.post_feedforward_layernorm.weight"))
    # q/k norm spans the whole projection, not one head
    assert t["blk.0.attn_k_norm.weight"].shape == hf_tensor(src, "model.layers.0.self_attn.k_proj.weight").shape[:1]


def test_smollm3_nope_layers_checked(tiny_model, tmp_path):
    src = tiny_model("smollm3")
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["no_rope_layers"] == [1, 1, 1, 0]         # what llama.cpp's smollm3 hard-codes
    plan = build_plan(LocalSource(src), "f32", vocab=False)
    assert not any(k.key.startswith("smollm3.attention.sliding") for k in plan.kvs)
    bad = variant(src, tmp_path, no_rope_layers=[1, 0, 1, 1])
    with pytest.raises(UnsupportedError, match="every 4th layer"):
        convert_to_gguf(str(bad), tmp_path / "o.gguf", dry_run=True)


def test_smollm3_rope_permuted(tiny_model, tmp_path):
    src = tiny_model("smollm3")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    k = gguf_tensors(out)["blk.0.attn_k.weight"]
    hf = hf_tensor(src, "model.layers.0.self_attn.k_proj.weight")
    heads, hd = 2, hf.shape[0] // 2
    np.testing.assert_array_equal(k, hf.reshape(heads, 2, hd // 2, -1).swapaxes(1, 2).reshape(hf.shape))


def test_gpt2_conv1d_transposed_and_positions(tiny_model, tmp_path):
    src = tiny_model("gpt2")
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    t = gguf_tensors(out)
    f = gguf_fields(out)
    for g, h in [("blk.1.attn_qkv.weight", "transformer.h.1.attn.c_attn.weight"),
                 ("blk.1.attn_output.weight", "transformer.h.1.attn.c_proj.weight"),
                 ("blk.1.ffn_up.weight", "transformer.h.1.mlp.c_fc.weight"),
                 ("blk.1.ffn_down.weight", "transformer.h.1.mlp.c_proj.weight")]:
        np.testing.assert_array_equal(t[g], hf_tensor(src, h).T, err_msg=g)
    np.testing.assert_array_equal(t["blk.1.attn_qkv.bias"], hf_tensor(src, "transformer.h.1.attn.c_attn.bias"))
    np.testing.assert_array_equal(t["position_embd.weight"], hf_tensor(src, "transformer.wpe.weight"))
    assert f["gpt2.context_length"] == t["position_embd.weight"].shape[0]
    assert f["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert "output.weight" not in t and "output_norm.bias" in t


# ---- llama4 --------------------------------------------------------------------------------------

def test_llama4_experts_split_per_expert(tiny_model, tmp_path):
    src = tiny_model("llama4_text")
    out = tmp_path / "m.gguf"
    res = convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    t = gguf_tensors(out)
    f = gguf_fields(out)
    gate_up = hf_tensor(src, "model.layers.1.feed_forward.experts.gate_up_proj")     # [E, H, 2I]
    down = hf_tensor(src, "model.layers.1.feed_forward.experts.down_proj")           # [E, I, H]
    e_count, _, two_i = gate_up.shape
    inter = two_i // 2
    for e in range(e_count):
        np.testing.assert_array_equal(t["blk.1.ffn_gate_exps.weight"][e], gate_up[e][:, :inter].T)
        np.testing.assert_array_equal(t["blk.1.ffn_up_exps.weight"][e], gate_up[e][:, inter:].T)
        np.testing.assert_array_equal(t["blk.1.ffn_down_exps.weight"][e], down[e].T)
    # one piece per expert: the stack is never gathered
    slot = next(o for o in res.plan.tensors if o.slot.name == "blk.1.ffn_gate_exps.weight")
    assert len(slot.pieces) == e_count
    # interleaved MoE: layers 1 and 3 routed, 0 and 2 dense
    assert "blk.0.ffn_gate.weight" in t and "blk.0.ffn_gate_exps.weight" not in t
    assert "blk.3.ffn_gate_inp.weight" in t and "blk.3.ffn_up_shexp.weight" in t
    assert f["llama4.interleave_moe_layer_step"] == 2
    assert f["llama4.expert_feed_forward_length"] == inter
    assert f["llama4.feed_forward_length"] == 128
    assert f["llama4.attention.sliding_window"] == 8192
    assert f["llama4.attention.sliding_window_pattern"] == [True, True, True, False]
    # HF Llama 4 rotary is already interleaved: q is not permuted
    np.testing.assert_array_equal(t["blk.0.attn_q.weight"], hf_tensor(src, "model.layers.0.self_attn.q_proj.weight"))


@pytest.mark.parametrize("changes, match", [
    ({"attention_chunk_size": 64}, "chunk"),
    ({"no_rope_layers": [1, 0, 1, 1]}, "every 4th layer"),
    ({"use_qk_norm": False}, "q/k L2 norm"),
])
def test_llama4_config_llama_cpp_cannot_run(changes, match, tiny_model, tmp_path):
    src = variant(tiny_model("llama4_text"), tmp_path, **changes)
    with pytest.raises(UnsupportedError, match=match):
        convert_to_gguf(str(src), tmp_path / "o.gguf", dry_run=True)


def test_llama4_scout_plan_from_headers(header_only_dir):
    """Llama-4-Scout layout (multimodal repo, language_model.* prefix, BF16 stacked experts):
    the plan drops the vision tower, splits every expert stack per expert, reads no data."""
    src = header_only_dir("llama4_scout_like")
    cfg = json.loads((src / "config.json").read_text())
    tc = cfg["text_config"]
    plan = build_plan(LocalSource(src), "auto", vocab=False)
    assert plan.arch == "llama4"
    kv = {k.key: k.value for k in plan.kvs}
    assert kv["llama4.block_count"] == tc["num_hidden_layers"] == 48
    assert kv["llama4.expert_count"] == 16 and kv["llama4.expert_used_count"] == 1
    assert kv["llama4.expert_feed_forward_length"] == tc["intermediate_size"]
    assert kv["llama4.feed_forward_length"] == tc["intermediate_size_mlp"]
    assert kv["llama4.interleave_moe_layer_step"] == 1
    assert kv["llama4.attention.sliding_window"] == 8192
    names = {t.slot.name: t for t in plan.tensors}
    assert plan.dropped and all(why.startswith("vision") for _, why in plan.dropped)
    assert any("vision_model" in n for n, _ in plan.dropped)
    assert any("multi_modal_projector" in n for n, _ in plan.dropped)
    assert not any(n.startswith(("v.", "mm.")) for n in names)
    h, inter, e = tc["hidden_size"], tc["intermediate_size"], tc["num_local_experts"]
    for layer in (0, 47):
        gate = names[f"blk.{layer}.ffn_gate_exps.weight"]
        assert gate.slot.shape == (e, inter, h)
        assert names[f"blk.{layer}.ffn_up_exps.weight"].slot.shape == (e, inter, h)
        assert names[f"blk.{layer}.ffn_down_exps.weight"].slot.shape == (e, h, inter)
        assert len(gate.pieces) == e
        assert all(p.src.name == f"language_model.model.layers.{layer}.feed_forward.experts.gate_up_proj"
                   for p in gate.pieces)
        assert gate.slot.ggml_type == gguf.GGMLQuantizationType.BF16
        assert names[f"blk.{layer}.ffn_gate_inp.weight"].slot.ggml_type == gguf.GGMLQuantizationType.F32
    assert names["token_embd.weight"].slot.shape == (tc["vocab_size"], h)
    assert names["output.weight"].slot.shape == (tc["vocab_size"], h)
    # Scout's llama3 rope scaling becomes a computed rope_freqs tensor (no source data)
    rf = names["rope_freqs.weight"]
    assert rf.slot.shape == (tc["head_dim"] // 2,) and rf.slot.ggml_type == gguf.GGMLQuantizationType.F32
    assert rf.pieces[0].gen[0] == "llama3_rope_factors"


def test_llama4_llama3_rope_scaling(tiny_model, tmp_path):
    """Llama 3-style rope scaling (as Llama 4 Scout has) is written as rope_freqs: logits match
    with it and are wrong without it."""
    llama_cpp_or_skip()
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    src = variant(tiny_model("llama4_text"), tmp_path, rope_parameters=rope)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    rf = gguf_tensors(out)["rope_freqs.weight"]
    # head_dim 16, theta 5e5: wavelengths 6.3 (kept), 32 (between 16 and 64: interpolated), >= 166 (x16)
    assert rf.shape == (8,) and rf[0] == 1.0 and 1.0 < rf[1] < 16.0 and np.all(rf[2:] == 16.0)
    assert rel_diff(out, src) < 2e-3
    bad = tmp_path / "bad.gguf"
    convert_to_gguf(str(src), bad, outtype="f32", vocab=False,
                    on_plan=lambda p: p.tensors.__setitem__(slice(None), [t for t in p.tensors
                                                                          if t.slot.name != "rope_freqs.weight"]))
    assert rel_diff(bad, src) > 2e-2


def test_olmo3_sliding_layers(tmp_path):
    """OLMo 3 (olmo2 in llama.cpp plus sliding-window layers): window and pattern are written
    and logits match past the window."""
    llama_cpp_or_skip()
    import torch
    from transformers import Olmo3Config, Olmo3ForCausalLM
    torch.manual_seed(0)
    c = Olmo3Config(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                    sliding_window=4, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    m = Olmo3ForCausalLM(c)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02)
    src = tmp_path / "olmo3"
    m.save_pretrained(src)
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(src), out, outtype="f32", vocab=False)
    f = gguf_fields(out)
    assert f["general.architecture"] == "olmo2"
    assert f["olmo2.attention.sliding_window"] == 4
    assert f["olmo2.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in m.config.layer_types]
    assert rel_diff(out, src) < 2e-3
