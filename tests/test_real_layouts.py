"""What published checkpoints look like, as a new user meets them: a tied head stored anyway
(Qwen3-0.6B), active parameters counted both ways cards count them (Qwen3-30B-A3B, gpt-oss),
canonical single-name Hub repos (gpt2), no "closest model" for a custom model, and the Llama 4
chunk refusal. Full-size layouts are header-only replicas (sparse files, no tensor data)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import modelgen
from ckptkit import api
from ckptkit.catalogue import match_family
from ckptkit.conversion import build_plan
from ckptkit.errors import SourceError, UnsupportedError
from ckptkit.infer import infer
from ckptkit.render.compare import column_from_model, find_model
from ckptkit.sources.local import LocalSource
from ckptkit.validate import validate
from modelgen import TensorSpec

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True,
                          text=True, cwd=cwd)


# ---- Qwen3 layouts, as published (per-expert tensors, q/k norm, BF16) --------------------------

QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
    "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072, "head_dim": 128,
    "max_position_embeddings": 40960, "num_attention_heads": 16, "num_hidden_layers": 28,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 151936,
    "bos_token_id": 151643, "eos_token_id": 151645,
}
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "attention_bias": False,
    "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144, "head_dim": 128,
    "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
    "max_position_embeddings": 40960, "num_attention_heads": 32, "num_hidden_layers": 48,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 151936,
}


def qwen3_tensors(cfg: dict, lm_head: bool) -> list[TensorSpec]:
    H, L, V, hd = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def w(name: str, *shape: int) -> TensorSpec:
        return TensorSpec(name, "BF16", shape)

    def mlp(p: str, inter: int) -> list[TensorSpec]:
        return [w(f"{p}.gate_proj.weight", inter, H), w(f"{p}.up_proj.weight", inter, H),
                w(f"{p}.down_proj.weight", H, inter)]

    out = [w("model.embed_tokens.weight", V, H), w("model.norm.weight", H)]
    for i in range(L):
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        out += [w(f"{p}.input_layernorm.weight", H), w(f"{p}.post_attention_layernorm.weight", H),
                w(f"{a}.q_proj.weight", q, H), w(f"{a}.k_proj.weight", kv, H),
                w(f"{a}.v_proj.weight", kv, H), w(f"{a}.o_proj.weight", H, q),
                w(f"{a}.q_norm.weight", hd), w(f"{a}.k_norm.weight", hd)]
        if "num_experts" in cfg:
            out.append(w(f"{p}.mlp.gate.weight", cfg["num_experts"], H))
            for e in range(cfg["num_experts"]):
                out += mlp(f"{p}.mlp.experts.{e}", cfg["moe_intermediate_size"])
        else:
            out += mlp(f"{p}.mlp", cfg["intermediate_size"])
    if lm_head:
        out.append(w("lm_head.weight", V, H))
    return out


def replica(dest: Path, cfg: dict, tensors: list[TensorSpec]) -> Path:
    """One sparse safetensors file holding only the header, plus config.json."""
    prefix, data = modelgen.safetensors_prefix(tensors)
    return modelgen.materialize({"config.json": json.dumps(cfg).encode(),
                                 "model.safetensors": modelgen.VirtualFile(prefix, len(prefix) + data)},
                                dest)


@pytest.fixture(scope="module")
def qwen3_0_6b(tmp_path_factory) -> Path:
    """Qwen/Qwen3-0.6B's layout: tie_word_embeddings true, and lm_head.weight stored anyway."""
    return replica(tmp_path_factory.mktemp("qwen3_0_6b"), QWEN3_0_6B, qwen3_tensors(QWEN3_0_6B, True))


@pytest.fixture(scope="module")
def qwen3_30b_a3b(tmp_path_factory) -> Path:
    return replica(tmp_path_factory.mktemp("qwen3_30b_a3b"), QWEN3_30B_A3B,
                   qwen3_tensors(QWEN3_30B_A3B, True))


# Qwen3-0.6B, by hand: per layer q 2048x1024 + k, v 1024x1024 + o 1024x2048 + FFN 3 x 3072x1024
# + 2 norms of 1024 + q/k norms of 128
Q06_LAYER = 2048 * 1024 + 2 * 1024 * 1024 + 1024 * 2048 + 3 * 3072 * 1024 + 2 * 1024 + 2 * 128
Q06_EMB = 151936 * 1024
Q06_TOTAL = Q06_EMB + 28 * Q06_LAYER + 1024          # + final norm; the stored head not again


def test_qwen3_0_6b_stored_head_is_tied(qwen3_0_6b):
    inf = infer(api.inspect(str(qwen3_0_6b)))
    tied = inf.facts["tied_embeddings"]
    assert tied.value is True and tied.source == "config"
    assert tied.evidence[0] == "config.json:tie_word_embeddings = true"
    assert "lm_head.weight is stored too" in tied.evidence[1] and "ignore" in tied.evidence[1]
    p = inf.value("parameters")
    # 596,049,920: the "0.6B" of the card (counting lm_head twice would give 751.6M)
    assert p["total"] == Q06_TOTAL == 596_049_920
    assert p["embedding"] == Q06_EMB
    # tied: the one table is the output head too, so a token computes with every parameter
    assert p["active"] == p["active_with_embedding"] == Q06_TOTAL
    assert inf.family["model"] == "Qwen3 0.6B"


def test_qwen3_0_6b_validates_with_a_warning(qwen3_0_6b):
    v = validate(str(qwen3_0_6b))
    assert [f.code for f in v.findings] == ["config.tied_head_copy"], [f.to_json() for f in v.findings]
    f = v.findings[0]
    assert f.level == "warning" and not v.failed("error")
    assert f.tensor == "lm_head.weight" and "loaders" in f.message and "ignore" in f.message
    assert "holds the same bytes as model.embed_tokens.weight" in f.message
    r = cli("inspect", str(qwen3_0_6b))
    assert r.returncode == 0, r.stderr
    assert "151936, tied to the embedding" in r.stdout
    assert "596.05M total, all active per token" in r.stdout


def _tie_and_copy_head(tiny: Path, dest: Path, copy: bool) -> Path:
    """A tiny llama with tie_word_embeddings true and lm_head.weight either a byte copy of the
    embedding (the Qwen3-0.6B case) or its own trained matrix (a head a loader would discard)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = modelgen.copy_model(tiny, dest)
    cfg = json.loads((path / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    if copy:
        tensors = {}
        for shard in sorted(path.glob("*.safetensors")):
            with safe_open(str(shard), "np") as f:
                tensors[shard] = {k: f.get_tensor(k) for k in f.keys()}
        emb = next(t["model.embed_tokens.weight"] for t in tensors.values() if "model.embed_tokens.weight" in t)
        for shard, t in tensors.items():
            if "lm_head.weight" in t:
                t["lm_head.weight"] = emb.copy()
                save_file(t, str(shard), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("copy, code, level", [
    (True, "config.tied_head_copy", "warning"),        # loaders ignore an identical copy
    (False, "config.tie_word_embeddings", "error"),    # ... and a trained head they would discard
])
def test_tied_head_copy_or_distinct(copy, code, level, tiny_model, tmp_path):
    path = _tie_and_copy_head(tiny_model("llama", tokenizer=False), tmp_path / "m", copy)
    v = validate(str(path))
    tied = [f for f in v.findings if f.code.startswith("config.tie")]
    assert [(f.code, f.level) for f in tied] == [(code, level)], [f.to_json() for f in v.findings]
    assert v.failed("error") is (level == "error")


# ---- active parameters, both ways -----------------------------------------------------------

def test_qwen3_30b_a3b_active_both_ways(qwen3_30b_a3b):
    p = infer(api.inspect(str(qwen3_30b_a3b))).value("parameters")
    H, L, V, E, k, inter = 2048, 48, 151936, 128, 8, 768
    attn = 4096 * H + 2 * 512 * H + H * 4096 + 2 * 128 + 2 * H     # q, k, v, o, q/k norm, 2 norms
    expert = 3 * inter * H
    router = E * H
    assert p["total"] == 2 * V * H + L * (attn + router + E * expert) + H
    # a token: attention, router and 8 of 128 experts in each layer, the final norm and the head
    active = L * (attn + router + k * expert) + H + V * H
    assert p["active"] == active == 3_041_867_776                       # 3.04B: gpt-oss's way
    assert p["active_with_embedding"] == active + V * H == 3_353_032_704  # 3.35B: the card's 3.3B
    assert p["embedding"] == V * H


def test_active_in_text_json_and_compare(qwen3_30b_a3b, header_only_dir):
    r = cli("inspect", str(qwen3_30b_a3b))
    assert r.returncode == 0, r.stderr
    assert "3.35B active per token with the input embedding, 3.04B without" in r.stdout
    r = cli("inspect", str(qwen3_30b_a3b), "--json")
    p = json.loads(r.stdout)["facts"]["parameters"]["value"]
    assert (p["active"], p["active_with_embedding"]) == (3_041_867_776, 3_353_032_704)
    oss = header_only_dir("gpt_oss_20b")
    r = cli("compare", str(qwen3_30b_a3b), str(oss), "Qwen3 30B-A3B", "gpt-oss-20b", "--markdown")
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    # each card's number sits in the row of the way that card counts
    assert rows["Params active"] == ["3.04B", "3.61B", "", "3.6B"]
    assert rows["Params active + embedding"][:3] == ["3.35B", "4.19B", "3.3B"]
    assert rows["Params active + embedding"][3] == ""


def test_catalogue_column_follows_the_card():
    qwen = column_from_model(find_model("Qwen3 30B-A3B"))
    assert (qwen["params_active"], qwen["params_active_with_embedding"]) == ("", "3.3B")
    oss = column_from_model(find_model("gpt-oss-20b"))
    assert (oss["params_active"], oss["params_active_with_embedding"]) == ("3.6B", "")


# ---- canonical single-name Hub repos ----------------------------------------------------------

def test_inspect_gpt2_from_the_hub(hub, hf_cache, tmp_path):
    hub.add_repo_from_dir("gpt2", EXAMPLE)
    r = cli("inspect", "gpt2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    local = api.inspect(str(EXAMPLE))
    assert rep["parameters"]["total"] == local.total_parameters
    r = cli("validate", "gpt2@main", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("gpt2@main: safetensors")


def test_single_name_missing_everywhere_says_both(hub, hf_cache, tmp_path):
    r = cli("inspect", "no-such-model", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no such local file or folder, and repository not found" in r.stderr


@pytest.mark.parametrize("spec", ["model.safetensors", "weights.gguf", "pytorch_model.bin"])
def test_missing_file_is_not_a_hub_lookup(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def no_hub(*a, **k):
        raise AssertionError("asked the Hub")
    monkeypatch.setattr(api, "_hub", no_hub)
    with pytest.raises(SourceError) as e:
        api.open_source(spec)
    assert e.value.message == "no such file or directory" and e.value.where == spec


def test_local_folder_named_like_a_repo_wins(monkeypatch, tmp_path):
    import shutil
    shutil.copytree(EXAMPLE, tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    assert api.inspect("gpt2").source == "gpt2"


# ---- a nearest model only when near ---------------------------------------------------------

def test_tiny_example_names_no_closest_model():
    inf = infer(api.inspect(str(EXAMPLE)))
    assert inf.family["family"] == "llama" and inf.family["model"] is None
    assert "closest_model" not in inf.family and "differs_in" not in inf.family
    r = cli("inspect", str(EXAMPLE))
    assert "closest" not in r.stdout


def test_near_variant_still_names_its_model():
    llama3 = {"num_layers": 32, "hidden_size": 4096, "vocab_size": 128256, "num_attention_heads": 32,
              "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 14336}
    one_off = dict(llama3, vocab_size=128512)
    m = match_family(one_off, {"model_type": "llama"})
    assert (m["closest_model"], m["differs_in"]) == ("Llama 3 8B", ["vocab_size"])
    two_off = dict(one_off, intermediate_size=16384)
    assert match_family(two_off, {"model_type": "llama"})["differs_in"] == ["vocab_size", "intermediate_size"]
    three_off = dict(two_off, num_key_value_heads=4)
    assert "closest_model" not in match_family(three_off, {"model_type": "llama"})
    other_shape = dict(llama3, num_layers=30)
    assert "closest_model" not in match_family(other_shape, {"model_type": "llama"})


# ---- Llama 4 with another attention chunk -----------------------------------------------------

def test_llama4_other_chunk_says_how_far_outputs_agree(tmp_path):
    files = modelgen.make_header_only("llama4_scout_like")
    cfg = json.loads(files["config.json"])
    assert cfg["text_config"]["attention_chunk_size"] == 8192
    cfg["text_config"]["attention_chunk_size"] = 4096
    files["config.json"] = json.dumps(cfg).encode()
    src = modelgen.materialize(files, tmp_path / "scout")
    with pytest.raises(UnsupportedError) as e:
        build_plan(LocalSource(src), "auto", vocab=False)
    msg = str(e.value)
    assert "fixes the attention chunk at 8192 tokens" in msg
    assert "identical only for contexts up to min(attention_chunk_size, 8192) tokens" in msg
    assert "different beyond" in msg and "not converted" in msg
