"""GGUF -> HF: tiny HF model -> GGUF (ckptkit) -> HF (ckptkit) loads in transformers with no
missing or unexpected keys and gives the original's logits; streamed, sharded and atomic."""
import json

import gguf
import numpy as np
import pytest
import torch

from ckptkit.api import load_index, open_source
from ckptkit.conversion import convert_to_gguf, convert_to_hf
from ckptkit.conversion.to_hf import encode, unpermute_rope
from ckptkit.conversion.transforms import permute_rope
from ckptkit.errors import CkptError, UnsupportedError

TOKENS = [[1, 5, 9, 100, 200, 3, 77, 42, 300, 12]]
FAMILIES = {"llama": "LlamaForCausalLM", "mixtral": "MixtralForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
            "gemma3_text": "Gemma3ForCausalLM", "olmo2": "Olmo2ForCausalLM", "smollm3": "SmolLM3ForCausalLM",
            "gpt2": "GPT2LMHeadModel", "mistral": "LlamaForCausalLM",
            "deepseek_v2": "DeepseekV2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}


def _load(path):
    from transformers import AutoModelForCausalLM
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def _logits(model):
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits[0].numpy()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_round_trip_loads_and_logits_equal(family, tiny_model, gguf_of, tmp_path):
    src = tiny_model(family)
    out = tmp_path / "hf"
    res = convert_to_hf(str(gguf_of(family)), out, outtype="f32", shard_size=150_000)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [FAMILIES[family]]
    assert not res.notes or all("tokenizer" in n for n in res.notes)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    back, info = _load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig, _ = _load(src)
    # every weight comes back bit for bit (f32 -> f32 GGUF -> f32), so the logits do too
    so, sb = orig.state_dict(), back.state_dict()
    assert so.keys() == sb.keys()
    for k in so:
        assert torch.equal(so[k], sb[k]), k
    a, b = _logits(orig), _logits(back)
    assert np.array_equal(a, b) and float(np.std(a)) > 0
    assert set(res.files) >= {"config.json", "model.safetensors.index.json", *shards}


def test_config_matches_original(tiny_model, gguf_of, tmp_path):
    """The hyperparameters transformers reads come back with the original values."""
    for family in ("qwen3_moe", "mixtral"):
        src = tiny_model(family)
        out = tmp_path / family
        convert_to_hf(str(gguf_of(family)), out, outtype="f32")
        want = json.loads((src / "config.json").read_text())
        got = json.loads((out / "config.json").read_text())
        for k, v in got.items():
            if k in want and k not in ("dtype", "head_dim"):
                assert want[k] == v, (family, k, want[k], v)
        for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                  "num_key_value_heads", "rms_norm_eps", "vocab_size", "tie_word_embeddings",
                  "num_experts_per_tok", "rope_parameters"):
            assert k in got, (family, k)
        assert got["rms_norm_eps"] == want["rms_norm_eps"]  # 1e-06, not the float32 9.99e-07


def test_bf16_default_is_rounded_original(tiny_model, gguf_of, tmp_path):
    from safetensors import safe_open
    src = tiny_model("qwen3")
    out = tmp_path / "hf"
    convert_to_hf(str(gguf_of("qwen3")), out)                      # default outtype: bf16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    orig, _ = _load(src)
    name = "model.layers.1.self_attn.k_proj.weight"
    wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(str(out / wm[name]), "pt") as f:
        got = f.get_tensor(name)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, orig.state_dict()[name].to(torch.bfloat16))
    back, info = _load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    rel = np.abs(_logits(back) - _logits(orig)).max() / np.abs(_logits(orig)).max()
    assert rel < 5e-2


def test_bf16_encoding_rounds_to_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38, np.inf, 1e-40], dtype=np.float32)
    got = np.frombuffer(encode(x, "BF16"), dtype="<u2")
    want = torch.tensor(x).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    assert np.array_equal(got, want)
    nan = np.frombuffer(encode(np.array([np.nan], np.float32), "BF16"), "<u2")[0]
    assert (nan & 0x7F80) == 0x7F80 and (nan & 0x7F)


def test_q8_0_source_is_dequantised(tiny_model, gguf_of, tmp_path):
    """A Q8_0 GGUF comes back as gguf's own dequantisation of its blocks (un-permuted)."""
    from safetensors import safe_open
    g = gguf_of("llama", "q8_0")
    out = tmp_path / "hf"
    convert_to_hf(str(g), out, outtype="f32")
    r = gguf.GGUFReader(g)
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    deq = gguf.quants.dequantize(t.data, t.tensor_type)
    cfg = json.loads((out / "config.json").read_text())
    heads = cfg["num_attention_heads"]
    wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.0.self_attn.q_proj.weight"
    with safe_open(str(out / wm[name]), "np") as f:
        got = f.get_tensor(name)
    assert np.array_equal(permute_rope(got, heads, got.shape[0] // heads), deq)
    orig, _ = _load(tiny_model("llama"))
    assert np.allclose(got, orig.state_dict()[name].numpy(), atol=2e-2)
    back, info = _load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_unpermute_inverts_permute():
    rng = np.random.default_rng(0)
    for heads, hd, cols in ((4, 16, 8), (2, 8, 1), (8, 4, 3)):
        x = rng.standard_normal((heads * hd, cols)).astype(np.float32)
        p = permute_rope(x, heads, hd)
        assert not np.array_equal(p, x)
        assert np.array_equal(unpermute_rope(p, heads, hd), x)


def test_tokenizer_round_trip(tiny_model, gguf_of, tmp_path):
    """A byte-level BPE vocabulary comes back as a tokenizer.json that tokenizes like the original."""
    from transformers import AutoTokenizer

    from modelgen import corpus_text
    out = tmp_path / "hf"
    res = convert_to_hf(str(gguf_of("qwen2")), out, outtype="f32")
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(res.files) and not res.notes
    a = AutoTokenizer.from_pretrained(tiny_model("qwen2"))
    b = AutoTokenizer.from_pretrained(out)
    text = corpus_text(30, seed=7) + "\n  Hello 123 4567 don't!! \t x  "
    ids = a(text)["input_ids"]
    assert len(ids) > 100 and b(text)["input_ids"] == ids
    assert b.decode(ids) == a.decode(ids)
    assert (b.bos_token, b.eos_token, b.pad_token) == (a.bos_token, a.eos_token, a.pad_token)
    msgs = [{"role": "user", "content": "hi there"}]
    assert b.apply_chat_template(msgs, tokenize=False) == a.apply_chat_template(msgs, tokenize=False)


def test_sentencepiece_vocab_comes_back(tiny_model, gguf_of, tmp_path):
    """A SentencePiece vocabulary comes back as tokenizer.json and tokenizer.model (more in
    tests/test_vocab_vectors.py)."""
    from tokenizers import Tokenizer

    from modelgen import corpus_text
    res = convert_to_hf(str(gguf_of("llama")), tmp_path / "hf", outtype="f32")
    assert {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"} <= set(res.files) and not res.notes
    a = Tokenizer.from_file(str(tiny_model("llama") / "tokenizer.json"))
    b = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    text = corpus_text(30, seed=7)
    assert b.encode(text).ids == a.encode(text).ids


def test_output_is_strict_safetensors_and_sharded(gguf_of, tmp_path):
    out = tmp_path / "hf"
    limit = 100_000
    convert_to_hf(str(gguf_of("mixtral")), out, outtype="f32", shard_size=limit)
    with open_source(str(out)) as s:
        idx = load_index(s)                      # ckptkit's strict reader accepts every shard
    wm = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(wm["weight_map"]) == set(idx.tensors)
    assert wm["metadata"]["total_size"] == sum(t.nbytes for t in idx.tensors.values())
    for f in idx.files:
        data = sum(t.nbytes for t in idx.tensors.values() if t.file == f.name)
        single = sum(1 for t in idx.tensors.values() if t.file == f.name) == 1
        assert data <= limit or single
    # experts are one tensor per expert, as Mixtral checkpoints store them
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in idx.tensors
    assert not any("exps" in n for n in idx.tensors)


def test_interrupted_run_leaves_nothing(gguf_of, tmp_path):
    out = tmp_path / "hf"
    seen = []

    def boom(n):
        seen.append(n)
        if len(seen) > 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        convert_to_hf(str(gguf_of("qwen3_moe")), out, outtype="f32", shard_size=50_000, on_bytes=boom)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_non_empty_output(gguf_of, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CkptError, match="not an empty folder"):
        convert_to_hf(str(gguf_of("qwen3")), out)
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_unknown_architecture_is_clear(tmp_path):
    p = tmp_path / "x.gguf"
    w = gguf.GGUFWriter(str(p), "madeup")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="madeup"):
        convert_to_hf(str(p), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_cli_dispatches_on_gguf(gguf_of, tmp_path):
    from click.testing import CliRunner

    from ckptkit.cli import main
    out = tmp_path / "hf"
    r = CliRunner().invoke(main, ["convert", str(gguf_of("qwen3")), str(out), "--outtype", "f16",
                                  "--shard-size", "100K", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert len(list(out.glob("model-*.safetensors"))) >= 2
    r = CliRunner().invoke(main, ["convert", str(gguf_of("qwen3")), str(tmp_path / "y"), "--outtype", "q8_0"])
    assert r.exit_code == 2 and not (tmp_path / "y").exists()


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_config_keys_of_new_families(tiny_model, gguf_of, tmp_path):
    """Hyperparameters that change the maths come back with the original values."""
    keys = {"gemma3_text": ("sliding_window", "layer_types", "head_dim", "query_pre_attn_scalar",
                            "hidden_activation", "tie_word_embeddings", "rms_norm_eps", "num_key_value_heads"),
            "olmo2": ("num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "intermediate_size"),
            "smollm3": ("no_rope_layers", "no_rope_layer_interval", "tie_word_embeddings", "num_key_value_heads"),
            "gpt2": ("n_embd", "n_layer", "n_head", "n_inner", "n_positions", "layer_norm_epsilon",
                     "activation_function", "tie_word_embeddings", "vocab_size")}
    for family, names in keys.items():
        src = tiny_model(family)
        out = tmp_path / family
        convert_to_hf(str(gguf_of(family)), out, outtype="f32")
        want = json.loads((src / "config.json").read_text())
        got = json.loads((out / "config.json").read_text())
        assert got["model_type"] == want["model_type"], family
        for k in names:
            assert got[k] == want[k], (family, k, want[k], got[k])
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            assert got[k] == want[k], (family, k)
    # Gemma 3: the local (sliding) layers' rope base and the global one, per layer type
    got = json.loads((tmp_path / "gemma3_text" / "config.json").read_text())
    want = json.loads((tiny_model("gemma3_text") / "config.json").read_text())
    for kind in ("full_attention", "sliding_attention"):
        assert got["rope_parameters"][kind]["rope_theta"] == want["rope_parameters"][kind]["rope_theta"]
    assert set(got["rope_parameters"]) == {"full_attention", "sliding_attention"}
    assert want["rope_parameters"]["full_attention"]["rope_theta"] != want["rope_parameters"]["sliding_attention"]["rope_theta"]


def test_gemma3_norms_inverted_and_window_used(tiny_model, tmp_path):
    """Random (non-zero) Gemma norm weights: the +1 folded into the GGUF is taken off again, and
    the sliding window comes back (the logits past the window depend on it)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from modelgen import copy_model
    src = copy_model(tiny_model("gemma3_text"), tmp_path / "src")
    g = torch.Generator().manual_seed(3)
    for shard in src.glob("*.safetensors"):
        sd = load_file(str(shard))
        for k in sd:
            if k.endswith("norm.weight"):
                sd[k] = torch.randn(sd[k].shape, generator=g) * 0.5
        save_file(sd, str(shard), metadata={"format": "pt"})
    gg = tmp_path / "m.gguf"
    convert_to_gguf(str(src), gg, outtype="f32")
    out = tmp_path / "hf"
    convert_to_hf(str(gg), out, outtype="f32")
    back, info = _load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig, _ = _load(src)
    so, sb = orig.state_dict(), back.state_dict()
    norms = [k for k in so if k.endswith("norm.weight")]
    assert norms and all(float(so[k].abs().max()) > 0.1 for k in norms)
    for k in so:
        assert torch.allclose(so[k], sb[k], rtol=0, atol=1e-6), k
    a, b = _logits(orig), _logits(back)
    assert _rel(a, b) < 1e-5
    # the window (4) is shorter than the 10 tokens: without it the logits would differ
    assert json.loads((out / "config.json").read_text())["sliding_window"] == 4
    cfg = json.loads((out / "config.json").read_text())
    cfg["sliding_window"] = 64
    wide = tmp_path / "wide"
    wide.mkdir()
    for p in out.iterdir():
        (wide / p.name).write_bytes(p.read_bytes())
    (wide / "config.json").write_text(json.dumps(cfg))
    m = AutoModelForCausalLM.from_pretrained(wide, dtype=torch.float32).eval()
    assert _rel(a, _logits(m)) > 1e-3


def test_mistral_native_gguf_comes_back_as_llama(tiny_model, tmp_path):
    """A GGUF made from Mistral's native format (q/k already interleaved, not permuted by the
    converter) is an ordinary llama GGUF: it comes back as LlamaForCausalLM with the HF
    original's weights and logits."""
    from modelgen import make_mistral_native
    src = tiny_model("mistral")
    d = make_mistral_native(src, tmp_path / "native")
    gg = tmp_path / "native.gguf"
    assert convert_to_gguf(str(d), gg, outtype="f32", vocab=False).plan.family == "mistral_native"
    out = tmp_path / "hf"
    convert_to_hf(str(gg), out, outtype="f32")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    back, info = _load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig, _ = _load(src)
    so, sb = orig.state_dict(), back.state_dict()
    assert so.keys() == sb.keys() and all(torch.equal(so[k], sb[k]) for k in so)
    assert _rel(_logits(orig), _logits(back)) < 1e-5


def test_unsupported_settings_fail_clearly(tiny_model, tmp_path):
    """What is not mapped back (here a rope scaling type config.json has no form for) stops
    before writing anything, naming what is missing."""
    g = tmp_path / "o.gguf"
    convert_to_gguf(str(tiny_model("olmo2", tokenizer=False)), g, outtype="f32", vocab=False)
    r = gguf.GGUFReader(g)
    w = gguf.GGUFWriter(str(tmp_path / "rope.gguf"), "olmo2")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        w.add_key_value(k, f.contents(), f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    w.add_string("olmo2.rope.scaling.type", "longrope")
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="linear and YaRN"):
        convert_to_hf(str(tmp_path / "rope.gguf"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_mla_kv_b_re_fused_per_head(tiny_model, gguf_of, tmp_path):
    """DeepSeek MLA: the GGUF's attn_k_b [heads, kv_lora, nope] and attn_v_b [heads, v, kv_lora]
    are re-fused into kv_b_proj [heads * (nope + v), kv_lora], head by head; the config's MLA,
    MoE routing and YaRN settings come back."""
    from safetensors import safe_open
    for family in ("deepseek_v2", "deepseek_v3"):
        src = tiny_model(family)
        out = tmp_path / family
        convert_to_hf(str(gguf_of(family)), out, outtype="f32")
        want = json.loads((src / "config.json").read_text())
        got = json.loads((out / "config.json").read_text())
        for k in ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                  "first_k_dense_replace", "n_routed_experts", "n_shared_experts", "num_experts_per_tok",
                  "moe_intermediate_size", "routed_scaling_factor", "norm_topk_prob", "topk_method",
                  "n_group", "topk_group", "num_attention_heads", "num_key_value_heads"):
            assert got[k] == want[k], (family, k, want[k], got[k])
        for k in ("rope_type", "factor", "original_max_position_embeddings", "mscale", "mscale_all_dim", "rope_theta"):
            assert got["rope_parameters"][k] == want["rope_parameters"][k], (family, k)
        r = gguf.GGUFReader(gguf_of(family))
        kb = next(t for t in r.tensors if t.name == "blk.1.attn_k_b.weight")
        vb = next(t for t in r.tensors if t.name == "blk.1.attn_v_b.weight")
        heads, nope, v = want["num_attention_heads"], want["qk_nope_head_dim"], want["v_head_dim"]
        kb = np.asarray(kb.data).reshape(heads, want["kv_lora_rank"], nope)
        vb = np.asarray(vb.data).reshape(heads, v, want["kv_lora_rank"])
        name = "model.layers.1.self_attn.kv_b_proj.weight"
        wm = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        with safe_open(str(out / wm[name]), "np") as f:
            got_w = f.get_tensor(name).reshape(heads, nope + v, -1)
        assert np.array_equal(got_w[:, :nope], kb.transpose(0, 2, 1)) and np.array_equal(got_w[:, nope:], vb)
        assert not any("attn_k_b" in n or "attn_v_b" in n for n in wm) and len(wm) == len(set(wm))


def test_refusion_needs_every_part():
    """A GGUF with attn_k_b but no attn_v_b cannot give kv_b_proj back: a clear error."""
    from ckptkit.conversion.family import families
    from ckptkit.conversion.to_hf import refuse_plan
    from ckptkit.errors import FormatError
    from ckptkit.index import TensorInfo
    fam = families()["deepseek2"]
    cfg = {"num_attention_heads": 4, "qk_nope_head_dim": 16, "v_head_dim": 12, "kv_lora_rank": 32}
    kb = TensorInfo("blk.0.attn_k_b.weight", "F32", (4, 32, 16), "m.gguf", 0, 4 * 32 * 16 * 4)
    vb = TensorInfo("blk.0.attn_v_b.weight", "F32", (4, 12, 32), "m.gguf", 8192, 4 * 12 * 32 * 4)
    with pytest.raises(FormatError, match="lacks attn_v_b"):
        refuse_plan(fam, "attn_kv_b.weight", {"attn_k_b.weight": kb}, cfg)
    shape, pieces = refuse_plan(fam, "attn_kv_b.weight", {"attn_k_b.weight": kb, "attn_v_b.weight": vb}, cfg)
    assert shape == (4 * (16 + 12), 32)
    assert [(p.src.name[-10:], p.r0, p.r1) for p in pieces[:3]] == \
        [("k_b.weight", 0, 32), ("v_b.weight", 0, 12), ("k_b.weight", 32, 64)]
    bad = TensorInfo("blk.0.attn_v_b.weight", "F32", (4, 13, 32), "m.gguf", 8192, 4 * 13 * 32 * 4)
    with pytest.raises(FormatError, match="does not fit"):
        refuse_plan(fam, "attn_kv_b.weight", {"attn_k_b.weight": kb, "attn_v_b.weight": bad}, cfg)


def test_unmapped_settings_are_refused_by_name(gguf_of):
    """GGUF settings a family's mapping cannot express stop the conversion with a message
    naming them: a rope scaling type config.json cannot take back, DeepSeek's MTP layers."""
    from ckptkit.conversion.to_hf import build_config, metadata_names, pick_target
    for family, arch, extra, msg in (("olmo2", "olmo2", {"rope_scaling_type": "longrope"}, "linear and YaRN"),
                                     ("deepseek_v2", "deepseek2", {"nextn_predict_layers": 1}, "multi-token")):
        with open_source(str(gguf_of(family))) as s:
            names = metadata_names(load_index(s), arch)
        target = pick_target(arch, names)
        assert build_config(target, names, "float32")["architectures"] == [FAMILIES[family]]
        with pytest.raises(UnsupportedError, match=msg):
            build_config(target, {**names, **extra}, "float32")
