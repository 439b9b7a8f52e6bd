"""The generated checkpoints are what they claim: real layouts, real counts, parseable headers."""
from __future__ import annotations

import json
import math
import re
import struct

import pytest
from safetensors import safe_open

import modelgen
from modelgen import HEADER_ONLY_SPECS, TINY_FAMILIES, VirtualFile


def _tensors(model_dir) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """name -> (shape, dtype, file) read with the safetensors package from every shard."""
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(f, "pt") as g:
            for k in g.keys():
                s = g.get_slice(k)
                out[k] = (tuple(s.get_shape()), s.get_dtype(), f.name)
    return out


def _parse_prefix(vf: VirtualFile) -> dict:
    n = struct.unpack("<Q", vf.prefix[:8])[0]
    assert len(vf.prefix) == 8 + n
    header = json.loads(vf.prefix[8:])
    header.pop("__metadata__", None)
    return header


# ---- tiny models -------------------------------------------------------------------------------

def _has(names, pattern):
    return any(re.search(pattern, n) for n in names)


def _layer(names, i):
    return {n for n in names if f".layers.{i}." in n or f".h.{i}." in n}


# every feature a family claims in tiny_families.json is checked against the written tensors
FEATURE_CHECKS = {
    "gqa": lambda t, c: t[_one(t, r"layers\.3\.self_attn\.k_proj\.weight" if "layer_types" in c
                                 and c["layer_types"][0] == "linear_attention" else
                                 r"layers\.0\.self_attn\.k_proj\.weight")][0][0]
    < c["num_attention_heads"] * (c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]),
    "untied": lambda t, c: "lm_head.weight" in t,
    "tied": lambda t, c: "lm_head.weight" not in t and c["tie_word_embeddings"],
    "qkv_bias": lambda t, c: _has(t, r"q_proj\.bias") and _has(t, r"v_proj\.bias"),
    "attention_bias": lambda t, c: _has(t, r"self_attn\.(q_proj|k_proj)\.bias"),
    "qk_norm": lambda t, c: t[_one(t, r"layers\.0\.self_attn\.q_norm\.weight")][0] == (c["head_dim"],),
    "qk_norm_full": lambda t, c: t[_one(t, r"layers\.0\.self_attn\.q_norm\.weight")][0] == (c["hidden_size"],),
    "post_norm": lambda t, c: _has(t, r"post_feedforward_layernorm") and not _has(t, r"input_layernorm"),
    "sandwich_norm": lambda t, c: _has(t, r"pre_feedforward_layernorm") and _has(t, r"post_feedforward_layernorm"),
    "moe": lambda t, c: _has(t, r"experts"),
    "stacked_experts": lambda t, c: any("experts" in n and len(s) == 3 for n, (s, _, _) in t.items()),
    "shared_experts": lambda t, c: _has(t, r"shared_expert"),
    "router_bias": lambda t, c: _has(t, r"mlp\.gate\.e_score_correction_bias"),
    "dense_prefix": lambda t, c: _has(_layer(t, 0), r"mlp\.gate_proj") and not _has(_layer(t, 0), "experts")
    and _has(_layer(t, 1), "experts"),
    "interleaved_moe": lambda t, c: not _has(_layer(t, 0), "experts") and _has(_layer(t, 1), "experts"),
    "mla": lambda t, c: _has(t, r"kv_a_proj_with_mqa") and _has(t, r"kv_b_proj"),
    "q_lora": lambda t, c: _has(t, r"q_a_proj") and not _has(t, r"self_attn\.q_proj"),
    "no_q_lora": lambda t, c: _has(t, r"self_attn\.q_proj") and not _has(t, r"q_a_proj"),
    "sinks": lambda t, c: t[_one(t, r"layers\.0\.self_attn\.sinks")][0] == (c["num_attention_heads"],),
    "sliding_window": lambda t, c: c["sliding_window"] > 0,
    "sliding_window_pattern": lambda t, c: {"sliding_attention", "full_attention"} <= set(c["layer_types"]),
    "alternating_sliding": lambda t, c: c["layer_types"][:2] == ["sliding_attention", "full_attention"],
    "linear_attention": lambda t, c: _has(_layer(t, 0), "linear_attn") and _has(_layer(t, 3), "self_attn"),
    "gated_attention": lambda t, c: t[_one(t, r"layers\.3\.self_attn\.q_proj\.weight")][0][0]
    == 2 * c["num_attention_heads"] * c["head_dim"],
    "partial_rotary": lambda t, c: c["rope_parameters"]["partial_rotary_factor"] < 1,
    "nope_layers": lambda t, c: 0 in c.get("no_rope_layers", [1]) or c.get("no_rope_layer_interval", 0) > 0,
    "fused_qkv": lambda t, c: t["transformer.h.0.attn.c_attn.weight"][0] == (c["n_embd"], 3 * c["n_embd"]),
    "conv1d": lambda t, c: t["transformer.h.0.mlp.c_fc.weight"][0] == (c["n_embd"], c["n_inner"]),
    "learned_positions": lambda t, c: t["transformer.wpe.weight"][0] == (c["n_positions"], c["n_embd"]),
}


def _one(names, pattern):
    hits = [n for n in names if re.search(pattern, n)]
    assert len(hits) == 1, (pattern, hits)
    return hits[0]


def test_feature_checks_cover_registry():
    claimed = {f for fam in TINY_FAMILIES.values() for f in fam["features"]}
    assert claimed <= set(FEATURE_CHECKS), claimed - set(FEATURE_CHECKS)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_tiny_family(family, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    d = tiny_model(family)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    config = json.loads((d / "config.json").read_text())
    tensors = _tensors(d)
    shards = sorted(p.name for p in d.glob("*.safetensors"))
    assert len(shards) >= 2
    assert set(index["weight_map"].values()) == set(shards)
    assert index["weight_map"] == {n: f for n, (_, _, f) in tensors.items()}
    assert index["metadata"]["total_size"] == sum(
        math.prod(s) * 4 for s, dt, _ in tensors.values()) and {dt for _, dt, _ in tensors.values()} == {"F32"}
    assert config["model_type"] == TINY_FAMILIES[family]["model_type"]
    assert config["vocab_size"] == modelgen.TINY_VOCAB
    for feature in TINY_FAMILIES[family]["features"]:
        assert FEATURE_CHECKS[feature](tensors, config), feature

    # the checkpoint loads back into transformers and runs on the tokenizer's ids
    tok = PreTrainedTokenizerFast.from_pretrained(d)  # AutoTokenizer would add family specials
    assert len(tok) == config["vocab_size"]
    ids = tok("the model reads a header", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == config["bos_token_id"] == tok.bos_token_id
    model = AutoModelForCausalLM.from_pretrained(d)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], config["vocab_size"])
    assert torch.isfinite(logits).all()


def test_tiny_is_deterministic_and_seeded(tmp_path):
    a = modelgen.make_tiny("llama", tmp_path / "a", seed=0)
    b = modelgen.make_tiny("llama", tmp_path / "b", seed=0)
    c = modelgen.make_tiny("llama", tmp_path / "c", seed=1)
    files = sorted(p.name for p in a.glob("*.safetensors"))
    assert [(a / f).read_bytes() for f in files] == [(b / f).read_bytes() for f in files]
    assert [(a / f).read_bytes() for f in files] != [(c / f).read_bytes() for f in files]


def test_tiny_bf16_and_explicit_shard_size(tmp_path):
    import torch

    d = modelgen.make_tiny("qwen3_moe", tmp_path / "m", dtype=torch.bfloat16, shard_size="40KB")
    tensors = _tensors(d)
    assert {dt for _, dt, _ in tensors.values()} == {"BF16"}
    sizes = [p.stat().st_size for p in d.glob("*.safetensors")]
    assert len(sizes) >= 4
    with pytest.raises(ValueError, match="single file"):
        modelgen.make_tiny("gpt2", tmp_path / "g", shard_size="1GB")


# ---- tokenizers --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bpe", "spm"])
def test_tokenizer(kind, tokenizer_dir):
    from transformers import AutoTokenizer

    d = tokenizer_dir(kind)
    raw = json.loads((d / "tokenizer.json").read_text())
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(d)
    assert len(tok) == modelgen.TINY_VOCAB
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    text = "Weights are streamed: über 42 €"   # unseen characters too
    ids = tok(text)["input_ids"]
    assert ids[0] == 1 and max(ids) < modelgen.TINY_VOCAB
    assert tok.decode(ids, skip_special_tokens=True) == text
    if kind == "spm":
        assert raw["model"]["byte_fallback"] is True
        assert tok.convert_ids_to_tokens(3) == "<0x00>"
        assert any(t.startswith("<0x") for t in tok.convert_ids_to_tokens(ids))  # "€" fell back
    else:
        assert raw["pre_tokenizer"]["type"] == "ByteLevel"
    chat = tok.apply_chat_template([{"role": "user", "content": "hi there"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.startswith(cfg["bos_token"]) and "hi there" in chat


def test_tokenizer_is_deterministic(tmp_path):
    a = modelgen.make_tokenizer(tmp_path / "a", "spm")
    b = modelgen.make_tokenizer(tmp_path / "b", "spm")
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


# ---- header-only full-size checkpoints ---------------------------------------------------------

def _summary(files):
    headers = {n: _parse_prefix(f) for n, f in files.items() if isinstance(f, VirtualFile)}
    return headers, {k: (n, v) for n, h in headers.items() for k, v in h.items()}


@pytest.mark.parametrize("spec", sorted(HEADER_ONLY_SPECS))
def test_header_only_is_consistent(spec, header_only):
    files = header_only(spec)
    headers, tensors = _summary(files)
    index = json.loads(files["model.safetensors.index.json"])
    config = json.loads(files["config.json"])
    assert len(headers) == HEADER_ONLY_SPECS[spec].shards
    assert index["weight_map"] == {k: n for k, (n, _) in tensors.items()}
    total = 0
    for name, h in headers.items():
        vf = files[name]
        end = 0
        for info in sorted(h.values(), key=lambda v: v["data_offsets"]):
            b, e = info["data_offsets"]
            assert b == end  # contiguous, no gaps
            assert e - b == math.prod(info["shape"]) * modelgen._BYTES[info["dtype"]]
            end = e
        assert vf.size == len(vf.prefix) + end
        total += end
    assert index["metadata"]["total_size"] == total
    assert config["architectures"]


def test_deepseek_v3_matches_published_repo(header_only):
    files = header_only("deepseek_v3_671b")
    headers, tensors = _summary(files)
    # published: 91,991 tensors; 684,531,386,000 parameters (671B main + ~14B MTP = "685B" on the
    # model card); 688,574,839,360 bytes of tensor data; 163 shards model-000NN-of-000163
    assert len(tensors) == 91_991
    params = sum(math.prod(v["shape"]) for _, v in tensors.values())
    assert params == 684_531_386_000 and round(params / 1e9) == 685
    assert json.loads(files["model.safetensors.index.json"])["metadata"]["total_size"] == 688_574_839_360
    assert sorted(headers) == [f"model-{i:05d}-of-000163.safetensors" for i in range(1, 164)]
    header_json = sum(len(files[n].prefix) - 8 for n in headers)
    assert 11.0e6 < header_json < 12.0e6   # ~11.5 MB of JSON to fetch for an inspect
    info = {k: v for k, (_, v) in tensors.items()}
    for k, v in info.items():
        if v["dtype"] == "F8_E4M3":
            s = info[k + "_scale_inv"]
            assert s["dtype"] == "F32" and s["shape"] == [math.ceil(x / 128) for x in v["shape"]]
    assert info["model.layers.0.self_attn.q_b_proj.weight"]["shape"] == [128 * 192, 1536]
    assert info["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]["shape"] == [576, 7168]
    assert info["model.layers.2.mlp.gate_proj.weight"]["shape"] == [18432, 7168]
    assert "model.layers.3.mlp.gate_proj.weight" not in info
    assert info["model.layers.3.mlp.experts.255.down_proj.weight"]["shape"] == [7168, 2048]
    assert info["model.layers.61.mlp.gate.e_score_correction_bias"]["dtype"] == "F32"
    for mtp in ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                "shared_head.head.weight", "embed_tokens.weight"):
        assert info[f"model.layers.61.{mtp}"]["dtype"] == "BF16"
    assert info["model.layers.61.eh_proj.weight"]["shape"] == [7168, 14336]
    assert "model.layers.62.input_layernorm.weight" not in info
    assert tensors["model.embed_tokens.weight"][0] == "model-00001-of-000163.safetensors"
    assert tensors["model.layers.61.shared_head.head.weight"][0] == "model-00163-of-000163.safetensors"


def test_other_published_layouts(header_only):
    _, kimi = _summary(header_only("kimi_k2_like"))
    assert len(kimi) == 139_644
    assert sum(math.prod(v["shape"]) for _, v in kimi.values()) == 1_026_470_731_056
    assert kimi["lm_head.weight"][0] == "model-61-of-61.safetensors"
    assert kimi["model.layers.60.mlp.experts.383.up_proj.weight"][1]["shape"] == [2048, 7168]
    assert "model.layers.1.mlp.experts.0.up_proj.weight" in kimi
    assert "model.layers.0.mlp.experts.0.up_proj.weight" not in kimi

    files = header_only("llama3_8b")
    _, llama = _summary(files)
    assert len(llama) == 291
    assert sum(math.prod(v["shape"]) for _, v in llama.values()) == 8_030_261_248
    assert json.loads(files["model.safetensors.index.json"])["metadata"]["total_size"] == 16_060_522_496
    assert {v["dtype"] for _, v in llama.values()} == {"BF16"}

    files = header_only("gpt_oss_20b")
    _, oss = _summary(files)
    assert json.loads(files["model.safetensors.index.json"])["metadata"]["total_size"] == 13_761_264_768
    assert sorted(n for n in files if n.endswith(".safetensors")) == [
        f"model-0000{i}-of-00002.safetensors" for i in range(3)]
    blocks = oss["model.layers.0.mlp.experts.gate_up_proj_blocks"][1]
    assert (blocks["dtype"], blocks["shape"]) == ("U8", [32, 5760, 90, 16])
    assert oss["model.layers.0.mlp.experts.gate_up_proj_scales"][1]["shape"] == [32, 5760, 90]
    assert oss["model.layers.23.self_attn.sinks"][1]["shape"] == [64]
    assert oss["model.layers.0.self_attn.q_proj.weight"][1]["shape"] == [64 * 64, 2880]

    _, scout = _summary(header_only("llama4_scout_like"))
    lm = [k for k in scout if k.startswith("language_model.")]
    assert "language_model.lm_head.weight" in scout and "multi_modal_projector.linear_1.weight" in scout
    assert any(k.startswith("vision_model.") for k in scout)
    assert not any(k.startswith("model.") for k in scout)
    assert scout["language_model.model.layers.0.feed_forward.experts.gate_up_proj"][1]["shape"] == [16, 5120, 16384]
    assert 105e9 < sum(math.prod(scout[k][1]["shape"]) for k in lm) < 110e9


def test_materialize_is_sparse_and_readable(tmp_path, header_only):
    files = header_only("llama3_8b")
    d = modelgen.materialize(files, tmp_path)
    for name, f in files.items():
        p = d / name
        if isinstance(f, VirtualFile):
            st = p.stat()
            assert st.st_size == f.size
            assert st.st_blocks * 512 < 1 << 20     # a hole, not 5 GB of zeros
            with safe_open(p, "pt") as g:          # the reference reader accepts the header
                assert set(g.keys()) == set(_parse_prefix(f))
        else:
            assert p.read_bytes() == f
    prefix, size = modelgen.safetensors_prefix([modelgen.TensorSpec("w", "F32", (3,))])
    modelgen.materialize({"x.safetensors": VirtualFile(prefix, len(prefix) + size)}, tmp_path / "dense",
                         sparse=False)
    with safe_open(tmp_path / "dense" / "x.safetensors", "pt") as g:
        assert g.get_tensor("w").tolist() == [0.0, 0.0, 0.0]


def test_prefix_matches_safetensors_writer():
    import torch
    from safetensors.torch import save

    specs = [modelgen.TensorSpec("b.weight", "BF16", (3, 5)), modelgen.TensorSpec("a.scale", "F32", (2,)),
             modelgen.TensorSpec("z.q", "U8", (7,)), modelgen.TensorSpec("c", "F8_E4M3", (4, 4))]
    dt = {"BF16": torch.bfloat16, "F32": torch.float32, "U8": torch.uint8, "F8_E4M3": torch.float8_e4m3fn}
    data = save({s.name: torch.zeros(s.shape, dtype=dt[s.dtype]) for s in specs}, metadata={"format": "pt"})
    prefix, size = modelgen.safetensors_prefix(specs)
    assert data[: len(prefix)] == prefix and len(data) == len(prefix) + size
