"""Issue 3's done-when on real saved layouts: for every tiny checkpoint and every header-only
full-size replica, each fact the tensors determine equals the config's value and says it came
from the tensors."""
import json

import pytest

from ckptkit import api
from ckptkit.infer import infer
from modelgen import HEADER_ONLY_SPECS, TINY_FAMILIES

# fact -> config keys that state it (first present wins)
CONFIG_KEYS = {
    "num_layers": ["num_hidden_layers", "n_layer"],
    "hidden_size": ["hidden_size", "n_embd"],
    "vocab_size": ["vocab_size"],
    "num_experts": ["n_routed_experts", "num_local_experts", "num_experts"],
    "kv_lora_rank": ["kv_lora_rank"],
    "q_lora_rank": ["q_lora_rank"],
    "qk_rope_head_dim": ["qk_rope_head_dim"],
    "qk_nope_head_dim": ["qk_nope_head_dim"],
    "v_head_dim": ["v_head_dim"],
    "dense_prefix_layers": ["first_k_dense_replace"],
}
# facts that, when the tensors can tell them, must come from the tensors
TENSOR_FACTS = ["num_layers", "hidden_size", "vocab_size", "tied_embeddings", "attention_bias",
                "num_experts", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
                "v_head_dim", "moe_layers", "attention_sinks", "qk_norm", "norm_placement", "norm_kind",
                "mtp_layers", "linear_attention_layers", "quantization"]


def _text_config(cfg: dict) -> dict:
    return {**cfg, **cfg["text_config"]} if isinstance(cfg.get("text_config"), dict) else cfg


def _check(index, cfg):
    facts = infer(index).facts
    cfg = _text_config(cfg)
    checked = 0
    for fact, keys in CONFIG_KEYS.items():
        key = next((k for k in keys if cfg.get(k) is not None), None)
        if key is None or facts[fact].value is None:
            continue
        assert facts[fact].value == cfg[key], f"{fact}: tensors say {facts[fact].value}, config {key} = {cfg[key]}"
        checked += 1
    for fact in TENSOR_FACTS:
        f = facts[fact]
        if f.value not in (None, [], {}):
            assert f.source == "tensors", f"{fact} = {f.value!r} came from {f.source}, not the tensors"
    tie = cfg.get("tie_word_embeddings")
    if tie is not None and "lm_head.weight" not in {n.split("language_model.")[-1] for n in index.tensors}:
        assert facts["tied_embeddings"].value is True
    kv = cfg.get("num_key_value_heads")
    if kv is not None and facts["num_key_value_heads"].source == "tensors" and facts["attention"].value != "mla":
        assert facts["num_key_value_heads"].value == kv
    assert facts["parameters"].value["total"] == index.total_parameters or facts["quantization"].value
    return facts, checked


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_tiny_checkpoint_facts(family, tiny_model):
    d = tiny_model(family)
    index = api.inspect(str(d))
    facts, checked = _check(index, json.loads((d / "config.json").read_text()))
    assert checked >= 3


@pytest.mark.parametrize("spec", sorted(HEADER_ONLY_SPECS))
def test_full_size_facts(spec, header_only_dir):
    d = header_only_dir(spec)
    index = api.inspect(str(d))
    facts, checked = _check(index, json.loads((d / "config.json").read_text()))
    assert checked >= 3
    if spec == "deepseek_v3_671b":
        assert facts["attention"].value == "mla" and facts["attention"].source == "tensors"
        assert facts["num_attention_heads"].value == 128
        assert facts["num_shared_experts"].value == 1 and facts["dense_prefix_layers"].value == 3
        assert facts["mtp_layers"].value == 1
        assert facts["quantization"].value and "FP8" in json.dumps(facts["quantization"].value).upper()
    if spec == "gpt_oss_20b":
        assert facts["attention_sinks"].value is True and facts["num_experts"].value == 32
        assert "MXFP4" in json.dumps(facts["quantization"].value).upper()
