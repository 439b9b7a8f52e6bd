"""Ten more published models at full size, beyond the hand-built replicas: each config.json as
published (tests/configs/real/), its tensors named and shaped by transformers' own class for that
architecture, built on the meta device (no memory), stored header-only. Inference must name the
catalogue's model, agree with config.json and with every number the catalogue row holds, and
count the parameters the model card gives; validation must find nothing wrong.

None of these layouts was written for ckptkit: transformers 5 stores a MoE's experts stacked
(``mlp.experts.gate_up_proj`` [E, 2I, H]), Qwen3-Next mixes linear and full attention, Gemma 3
alternates sliding and global layers, GLM-4.5 has attention biases and a router bias."""
from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import modelgen
from ckptkit import api
from ckptkit.catalogue import compare_model, models
from ckptkit.infer import infer
from ckptkit.validate import validate

pytest.importorskip("transformers")

# config file -> (catalogue model, published total in billions when the catalogue's differs:
# its Gemma 3 27B counts the vision tower this text-only build has not)
LAYOUTS = {
    "qwen2_5_7b.json": ("Qwen2.5 7B", None),
    "mistral_7b.json": ("Mistral 7B v0.1", None),
    "mixtral_8x7b.json": ("Mixtral 8x7B", None),
    "llama3_1_70b.json": ("Llama 3 70B", None),   # Llama 3.1 70B: the same shapes
    "olmo2_7b.json": ("OLMo 2 7B", None),
    "smollm3_3b.json": ("SmolLM3 3B", None),
    "gemma3_27b_text.json": ("Gemma 3 27B", 27.0),
    "deepseek_v2_lite.json": ("DeepSeek-V2-Lite", None),
    "glm4_5_air.json": ("GLM-4.5-Air", None),
    "qwen3_next_80b.json": ("Qwen3-Next 80B-A3B", None),
}
# transformers' classes leave out the multi-token-prediction layer config.json announces, as a
# copy stripped of it would be: validation says so
MTP_LEFT_OUT = {"glm4_5_air.json"}


ROUTED = re.compile(r"(?<!shared_)experts\.")   # a routed expert's weights, not a shared one's


def stored_sizes(path: Path) -> dict[str, int]:
    """Each stored tensor's element count, read from the shards' headers with no ckptkit code."""
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        out.update((name, math.prod(t["shape"])) for name, t in header.items())
    return out


@pytest.fixture(scope="module")
def replica_of(tmp_path_factory) -> Callable[[str], Path]:
    """The replica of a config file, made once for this module's tests."""
    made: dict[str, Path] = {}

    def get(config: str) -> Path:
        if config not in made:
            made[config] = modelgen.meta_replica(config, tmp_path_factory.mktemp(config.split(".")[0]))
        return made[config]
    return get


@pytest.mark.parametrize("config", sorted(LAYOUTS))
def test_inference_names_the_model_and_agrees_with_config_and_card(config, replica_of):
    path = replica_of(config)
    cfg = json.loads((path / "config.json").read_text())
    name, published = LAYOUTS[config]
    inf = infer(api.inspect(str(path)))
    assert inf.family["model"] == name
    row = next(m for m in models() if m.name == name)
    agree, differ = compare_model(row, {k: f.value for k, f in inf.facts.items()})
    assert differ == [] and agree >= 6, (agree, differ)
    assert inf.value("num_layers") == cfg["num_hidden_layers"]
    assert inf.value("hidden_size") == cfg["hidden_size"]
    assert inf.value("vocab_size") == cfg["vocab_size"]
    assert inf.value("tied_embeddings") is bool(cfg.get("tie_word_embeddings"))
    experts = cfg.get("num_local_experts") or cfg.get("n_routed_experts") or cfg.get("num_experts")
    assert inf.value("num_experts") == experts
    p = inf.value("parameters")
    total = (published or row["params_total"]) * 1e9
    assert abs(p["total"] - total) <= 0.01 * total, (p["total"], total)
    # counted here from the stored tensors: all but the input table (unless it is the output
    # head too) and the routed experts a token does not use (cards round this: Qwen3-Next's
    # "A3B" is 3.56B)
    sizes = stored_sizes(path)
    assert p["total"] == sum(sizes.values())
    embedding = sum(n for k, n in sizes.items() if k.endswith("embed_tokens.weight"))
    routed = sum(n for k, n in sizes.items() if ROUTED.search(k))
    k = cfg.get("num_experts_per_tok", 0) if experts else 0
    assert p["embedding"] == embedding
    input_only = 0 if cfg.get("tie_word_embeddings") else embedding
    assert p["active"] == p["total"] - input_only - routed + routed * k // (experts or 1)
    if row.get("params_active") is not None:   # the card's figure, without the embedding
        assert abs(p["active"] - row["params_active"] * 1e9) <= 0.2 * row["params_active"] * 1e9, p


@pytest.mark.parametrize("config", sorted(LAYOUTS))
def test_validation_finds_nothing_wrong(config, replica_of):
    v = validate(str(replica_of(config)))
    want = ["config.mtp_layers"] if config in MTP_LEFT_OUT else []
    assert [f.code for f in v.findings] == want, [f.to_json() for f in v.findings]
    assert not v.failed("error")
