"""The catalogue in mappings/: its data is well formed, and matching names families/models."""
from __future__ import annotations

import re

import pytest

from ckptkit.catalogue import (
    MODEL_KEYS,
    catalogue_rows,
    compare_model,
    families,
    match_family,
    models,
    signature_matches,
)
from ckptkit.infer import FACT_KEYS

REQUIRED_FAMILIES = {"gpt2", "llama", "mistral", "mixtral", "deepseek_v2", "deepseek_v3",
                     "kimi_k2", "qwen2", "qwen3", "qwen3_moe", "olmo2", "gemma3", "mistral3",
                     "llama4", "smollm3", "gpt_oss", "grok", "glm4_moe", "qwen3_next"}


def test_every_family_file_is_complete():
    fams = families()
    assert REQUIRED_FAMILIES <= set(fams)
    for name, fam in fams.items():
        for key in ("title", "hf_architectures", "gguf_arch", "features", "source", "signature"):
            assert key in fam, (name, key)
        for k in fam["signature"]:
            assert k in FACT_KEYS, (name, k)
        for p in fam.get("name_patterns", []):
            re.compile(p)


def test_model_rows_are_consistent():
    fams = families()
    names = set()
    numeric = set(MODEL_KEYS) | {"context_length", "mtp_layers", "num_experts_per_tok",
                                 "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
                                 "sliding_window"}
    for m in models():
        assert m["name"] not in names
        names.add(m["name"])
        assert m["source"]
        if m["weights"]:
            assert m["family"] in fams, m["name"]
            assert m.get("repo"), m["name"]
        for k in numeric:
            if k in m:
                assert isinstance(m[k], int) and m[k] >= 0, (m["name"], k)
        h = m.get("num_attention_heads")
        if h and m.get("num_key_value_heads"):
            assert h % m["num_key_value_heads"] == 0, m["name"]
            kind = {1: "mqa", h: "mha"}.get(m["num_key_value_heads"], "gqa")
            if m.get("attention") != "mla":
                assert m.get("attention") == kind, m["name"]
        if m.get("params_active") is not None:
            assert m["params_active"] <= m["params_total"]
        if m.get("num_experts"):
            assert m["num_experts_per_tok"] <= m["num_experts"]
    for closed in ("GPT-3 175B", "PaLM 540B", "Gemini 1.5 Pro"):
        assert closed in names
    # every required family has at least one model with weights
    assert REQUIRED_FAMILIES <= {m["family"] for m in models() if m["weights"]}


def test_published_facts_spot_checks():
    by = {m["name"]: m for m in models()}
    d = by["DeepSeek-V3 / R1"]
    assert (d["num_layers"], d["hidden_size"], d["num_experts"], d["num_experts_per_tok"],
            d["dense_prefix_layers"], d["kv_lora_rank"]) == (61, 7168, 256, 8, 3, 512)
    assert by["Kimi K2"]["dense_prefix_layers"] == 1 and by["Kimi K2"]["num_experts"] == 384
    assert by["GLM-4.5"]["dense_prefix_layers"] == 3
    assert by["Llama 4 Maverick"]["num_experts"] == 128 and by["Llama 4 Scout"]["num_experts"] == 16


def test_match_by_config_and_gguf():
    facts = {"num_layers": 32, "hidden_size": 4096, "vocab_size": 128256,
             "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8}
    m = match_family(facts, {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    assert m["family"] == "llama" and m["model"] == "Llama 3 8B"
    assert m["matched_by"].startswith("config.json")
    # a Kimi config (DeepseekV3ForCausalLM class, kimi_k2 type) names Kimi, not DeepSeek
    m = match_family({"num_layers": 61, "hidden_size": 7168, "num_experts": 384},
                     {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2"})
    assert m["family"] == "kimi_k2" and m["model"] == "Kimi K2"
    m = match_family({"num_layers": 46, "hidden_size": 4096, "num_experts": 128,
                      "attention": "gqa", "router_bias": True, "num_shared_experts": 1,
                      "attention_bias": True}, None, {"general.architecture": "glm4moe"})
    assert m["family"] == "glm4_moe" and m["model"] == "GLM-4.5-Air"


def test_claimed_model_that_differs_is_reported():
    facts = {"num_layers": 32, "hidden_size": 4096, "vocab_size": 128256,
             "intermediate_size": 14000}
    m = match_family(facts, {"architectures": ["LlamaForCausalLM"]})
    assert m["model"] is None and m["closest_model"] == "Llama 3 8B"
    assert m["differs_in"] == ["intermediate_size"]


def test_tensor_only_signatures():
    mla = {"attention": "mla", "router_bias": True, "num_layers": 61, "hidden_size": 7168,
           "num_experts": 256, "dense_prefix_layers": 3, "kv_lora_rank": 512}
    m = match_family(mla)
    assert m["family"] == "deepseek_v3" and m["model"] == "DeepSeek-V3 / R1"
    assert m["matched_by"] == "tensor signature"
    assert match_family({**mla, "router_bias": False, "num_layers": 60, "hidden_size": 5120, "dense_prefix_layers": 1,
                         "num_experts": 160})["model"] == "DeepSeek-V2"
    assert match_family({"attention_sinks": True})["family"] == "gpt_oss"
    assert match_family({"linear_attention_layers": [0, 1, 2]})["family"] == "qwen3_next"
    assert not signature_matches(families()["gpt2"], {"positional": "rope"})


@pytest.mark.parametrize("arch,family", [("gemma3_text", "gemma3"), ("olmo2", "olmo2"),
                                         ("qwen3_next", "qwen3_next"), ("gpt_oss", "gpt_oss")])
def test_inferred_tiny_models_fit_their_family_signature(arch, family):
    from ckptkit.infer import infer
    from test_infer import build
    _, idx = build(arch)
    inf = infer(idx)
    assert inf.family["family"] == family
    assert inf.family["signature_ok"] is True
    # and with no config at all, the tensors alone point at the same family
    from ckptkit.index import TensorIndex
    bare = infer(TensorIndex(idx.format, idx.files, idx.tensors, None))
    fams = [bare.family["family"]] + bare.family.get("also_fits", [])
    assert family in fams


def test_catalogue_rows():
    rows = catalogue_rows()
    assert len(rows) == len(models())
    row = next(r for r in rows if r["model"] == "Mixtral 8x7B")
    assert row["experts"] == "2/8" and row["params_active_b"] == 12.9
    assert all(r["source"] for r in rows)
    assert {r["model"] for r in catalogue_rows("gpt_oss")} == {"gpt-oss-20b", "gpt-oss-120b"}


def test_compare_model_counts_agreement():
    m = next(x for x in models() if x["name"] == "Qwen3 8B")
    agree, differ = compare_model(m, {"num_layers": 36, "hidden_size": 4096, "head_dim": 64})
    assert agree == 2 and differ == ["head_dim"]
