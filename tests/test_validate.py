"""`ckptkit validate`: corrupted configs, broken structure, index/shard mismatches, catalogue
claims and policies are caught with the right code; clean checkpoints pass."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import modelgen
from ckptkit.validate import CODES, validate
from ckptkit.validate.policy import load_policy

FAMILIES = list(json.loads((Path(__file__).parent / "configs" / "tiny_families.json").read_text())["families"])


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True)


def codes(v) -> set[str]:
    return {f.code for f in v.findings}


def errors(v) -> list:
    return [f for f in v.findings if f.level == "error"]


def edit_config(path: Path, fn) -> None:
    cfg = json.loads((path / "config.json").read_text())
    fn(cfg)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


def set_keys(**kv):
    return lambda cfg: cfg.update(kv)


def bump(key: str, fn):
    """Change ``key`` relative to its current value (the tiny configs are data and may change)."""
    return lambda cfg: cfg.update({key: fn(cfg[key])})


def double(key: str):
    return bump(key, lambda x: 2 * x)


# family -> (corruption, expected code, config key the finding names)
CORRUPTIONS = {
    "llama": (double("num_key_value_heads"), "config.num_key_value_heads", "num_key_value_heads"),
    "mistral": (double("num_key_value_heads"), "config.num_key_value_heads", "num_key_value_heads"),
    "mixtral": (double("num_local_experts"), "config.num_experts", "num_local_experts"),
    "qwen2": (bump("num_hidden_layers", lambda x: x + 1), "config.num_layers", "num_hidden_layers"),
    "qwen3": (bump("tie_word_embeddings", lambda x: not x), "config.tie_word_embeddings", "tie_word_embeddings"),
    "qwen3_moe": (bump("num_local_experts", lambda x: x - 1), "config.num_experts", "num_local_experts"),
    "deepseek_v2": (bump("first_k_dense_replace", lambda x: x + 1), "config.dense_prefix", "first_k_dense_replace"),
    "deepseek_v3": (double("kv_lora_rank"), "config.kv_lora_rank", "kv_lora_rank"),
    "gemma3_text": (double("num_key_value_heads"), "config.num_key_value_heads", "num_key_value_heads"),
    "olmo2": (bump("num_key_value_heads", lambda x: x // 2), "config.num_key_value_heads", "num_key_value_heads"),
    "gpt_oss": (double("num_attention_heads"), "config.num_attention_heads", "num_attention_heads"),
    "glm4_moe": (bump("first_k_dense_replace", lambda x: 0 if x else 1), "config.dense_prefix",
                 "first_k_dense_replace"),
    "llama4_text": (bump("moe_layers", lambda x: list(range(4))), "config.moe_layers", "moe_layers"),
    "qwen3_next": (bump("layer_types", lambda t: t[::-1]), "config.layer_types", "layer_types"),
    "smollm3": (bump("tie_word_embeddings", lambda x: not x), "config.tie_word_embeddings", "tie_word_embeddings"),
    "gpt2": (bump("n_layer", lambda x: x + 10), "config.num_layers", "n_layer"),
}
VIA_CLI = {"llama", "deepseek_v3", "gpt2", "qwen3_next"}


def test_every_seed_family_has_a_corruption():
    assert set(CORRUPTIONS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_tiny_checkpoint_passes(family, tiny_model):
    v = validate(str(tiny_model(family, tokenizer=False)))
    assert errors(v) == [], [f.to_json() for f in v.findings]
    assert v.tensors > 0 and v.family and v.family["family"]
    assert not v.failed("error")


@pytest.mark.parametrize("family", FAMILIES)
def test_corrupted_config_is_caught(family, tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model(family, tokenizer=False), tmp_path / family)
    corrupt, code, key = CORRUPTIONS[family]
    edit_config(path, corrupt)
    if family in VIA_CLI:
        r = cli("validate", str(path), "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        found = json.loads(r.stdout)["findings"]
    else:
        v = validate(str(path))
        assert v.failed("error")
        found = [f.to_json() for f in v.findings]
    hits = [f for f in found if f["code"] == code]
    assert hits, found
    assert hits[0]["level"] == "error" and hits[0]["key"].endswith(key) and hits[0]["file"] == "config.json"


@pytest.mark.parametrize("family,edit,code", [
    ("llama", set_keys(num_hidden_layers=10**9), "config.implausible"),
    ("llama", bump("vocab_size", lambda x: x + 1), "config.vocab_size"),
    ("qwen2", double("hidden_size"), "config.hidden_size"),
    ("llama", double("intermediate_size"), "config.intermediate_size"),
    ("qwen3", double("head_dim"), "config.head_dim"),
    ("deepseek_v3", double("n_routed_experts"), "config.num_experts"),
    ("deepseek_v2", bump("q_lora_rank", lambda x: None if x else 8), "config.q_lora_rank"),
    ("deepseek_v3", double("qk_rope_head_dim"), "config.mla_dims"),
    ("deepseek_v3", bump("n_shared_experts", lambda x: x + 1), "config.num_shared_experts"),
    ("qwen3_moe", double("moe_intermediate_size"), "config.expert_intermediate_size"),
    ("qwen3_moe", set_keys(decoder_sparse_step=2), "config.moe_layers"),
    ("mixtral", bump("num_experts_per_tok", lambda x: 100), "config.num_experts_per_tok"),
    ("qwen3_next", double("shared_expert_intermediate_size"), "config.shared_expert_intermediate_size"),
    ("llama4_text", set_keys(interleave_moe_layer_step=1), "config.moe_layers"),
    ("gemma3_text", set_keys(layer_types=["full_attention"] * 4), "config.layer_types"),
    ("llama", set_keys(tie_word_embeddings=True), "config.tie_word_embeddings"),
    ("qwen2", set_keys(num_experts=8), "config.num_experts"),
    ("glm4_moe", set_keys(attention_bias=False), "config.attention_bias"),
])
def test_more_config_faults(family, edit, code, tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model(family, tokenizer=False), tmp_path / "m")
    edit_config(path, edit)
    v = validate(str(path))
    assert code in codes(v), [f.to_json() for f in v.findings]
    assert v.failed("error")


def test_implausible_value_is_not_also_compared(tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    edit_config(path, set_keys(num_hidden_layers=10**9))
    v = validate(str(path))
    assert codes(v) == {"config.implausible"}
    assert "1000000000" in v.findings[0].message


# ---- structure: rewrite shards ---------------------------------------------------------------

def rewrite(path: Path, fn) -> None:
    """Load every shard, let ``fn(tensors)`` change the {name: array} dict of all of them, write
    the shards back (new names go to the first shard) and the index to match."""
    idx_path = path / "model.safetensors.index.json"
    idx = json.loads(idx_path.read_text())
    shards = sorted(set(idx["weight_map"].values()))
    where, tensors = {}, {}
    for s in shards:
        for k, a in load_file(str(path / s)).items():
            tensors[k], where[k] = a, s
    fn(tensors)
    per = {s: {} for s in shards}
    for k, a in tensors.items():
        per[where.get(k, shards[0])][k] = a
    for s, ts in per.items():
        save_file(ts, str(path / s), metadata={"format": "pt"})
    idx["weight_map"] = {k: where.get(k, shards[0]) for k in sorted(tensors)}
    idx["metadata"]["total_size"] = sum(a.nbytes for a in tensors.values())
    idx_path.write_text(json.dumps(idx, indent=2))


def _drop(name):
    return lambda t: t.pop(name)


def _rename(old, new):
    return lambda t: t.__setitem__(new, t.pop(old))


def _reshape(name, shape):
    return lambda t: t.__setitem__(name, np.zeros(shape, t[name].dtype))


def _retype(name, dtype):
    return lambda t: t.__setitem__(name, t[name].astype(dtype))


def _add(name, like):
    return lambda t: t.__setitem__(name, t[like].copy())


def _move_layer(src, dst):
    def fn(t):
        for k in [k for k in t if k.startswith(f"model.layers.{src}.")]:
            t[k.replace(f"layers.{src}.", f"layers.{dst}.")] = t.pop(k)
    return fn


@pytest.mark.parametrize("family,edit,code,level", [
    ("llama", _drop("model.layers.1.self_attn.k_proj.weight"), "structure.missing_tensor", "error"),
    ("mixtral", _drop("model.layers.1.block_sparse_moe.experts.2.w3.weight"), "structure.missing_expert", "error"),
    ("mixtral", _rename("model.layers.1.block_sparse_moe.experts.3.w1.weight",
                        "model.layers.1.block_sparse_moe.experts.7.w1.weight"), "structure.stray_expert", "error"),
    ("qwen2", _reshape("model.layers.1.self_attn.q_proj.weight", (32, 64)), "structure.shape_mismatch", "error"),
    ("mixtral", _retype("model.layers.1.block_sparse_moe.experts.2.w3.weight", np.float16),
     "structure.dtype_mismatch", "warning"),
    ("llama", _add("model.layers.0.self_attn.frobnicate.weight", "model.layers.0.input_layernorm.weight"),
     "structure.unknown_tensor", "warning"),
    ("llama", _add("model.layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight"),
     "structure.duplicate", "error"),
    ("llama", _move_layer(1, 2), "structure.layer_gap", "error"),
    ("deepseek_v3", _drop("model.layers.2.mlp.gate.weight"), "structure.missing_tensor", "error"),
    ("qwen3_next", _drop("model.layers.1.linear_attn.out_proj.weight"), "structure.missing_tensor", "error"),
    ("gpt2", _drop("transformer.h.1.mlp.c_fc.weight"), "structure.missing_tensor", "error"),
])
def test_structure_faults(family, edit, code, level, tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model(family, tokenizer=False), tmp_path / "m")
    rewrite(path, edit)
    v = validate(str(path))
    hits = [f for f in v.findings if f.code == code]
    assert hits and hits[0].level == level, [f.to_json() for f in v.findings]
    assert v.failed("warning")
    assert not any(f.code.startswith("index.") for f in v.findings)


def test_stacked_experts_must_match_the_router(tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("gpt_oss", tokenizer=False), tmp_path / "m")
    name = next(k for k in json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
                if k.startswith("model.layers.1.") and k.endswith("experts.down_proj"))
    rewrite(path, lambda t: t.__setitem__(name, t[name][:3].copy()))
    v = validate(str(path))
    assert {"structure.expert_count", "structure.shape_mismatch"} <= codes(v), [f.to_json() for f in v.findings]


# ---- index vs shards -------------------------------------------------------------------------

def edit_index(path: Path, fn) -> None:
    p = path / "model.safetensors.index.json"
    idx = json.loads(p.read_text())
    fn(idx)
    p.write_text(json.dumps(idx))


def _other_shard(idx, name):
    return next(s for s in sorted(set(idx["weight_map"].values())) if s != idx["weight_map"][name])


def test_index_faults(tiny_model, tmp_path):
    src = tiny_model("llama", tokenizer=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    cases = {
        "index.wrong_shard": lambda i: i["weight_map"].__setitem__(name, _other_shard(i, name)),
        "index.unlisted_tensor": lambda i: i["weight_map"].pop(name),
        "index.missing_tensor": lambda i: i["weight_map"].__setitem__(
            "model.layers.0.self_attn.q_proj.bias", i["weight_map"][name]),
        "index.total_size": lambda i: i["metadata"].__setitem__("total_size", i["metadata"]["total_size"] + 4),
    }
    for code, fn in cases.items():
        path = modelgen.copy_model(src, tmp_path / code)
        edit_index(path, fn)
        v = validate(str(path))
        assert codes(v) == {code}, (code, [f.to_json() for f in v.findings])
        assert v.findings[0].level == CODES[code][0]
        assert v.failed("warning")


def test_total_size_reports_the_real_bytes(tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    real = json.loads((path / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    edit_index(path, lambda i: i["metadata"].__setitem__("total_size", 7))
    r = cli("validate", str(path))
    assert r.returncode == 0, r.stdout          # a warning: below the default --fail-on error
    assert f"{real:,} bytes" in r.stdout and "index.total_size" in r.stdout
    assert cli("validate", str(path), "--fail-on", "warning").returncode == 1


def test_missing_and_stray_shards(tiny_model, tmp_path):
    src = tiny_model("llama", tokenizer=False)
    path = modelgen.copy_model(src, tmp_path / "missing")
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.unlink()
    r = cli("validate", str(path), "--json")
    assert r.returncode == 1, r.stderr          # a finding, not unreadable input
    found = json.loads(r.stdout)["findings"]
    assert [f["code"] for f in found] == ["index.missing_shard"] and shard.name in found[0]["message"]

    path = modelgen.copy_model(src, tmp_path / "stray")
    (path / "model-00009-of-00009.safetensors").write_bytes(
        (path / sorted(p.name for p in path.glob("model-*.safetensors"))[0]).read_bytes())
    v = validate(str(path))
    assert codes(v) == {"index.stray_shard"} and v.findings[0].file == "model-00009-of-00009.safetensors"


# ---- catalogue ---------------------------------------------------------------------------------

def _gpt_oss_variant(dest: Path, name_or_path: str | None, experts: int) -> Path:
    """A header-only gpt-oss-20b with ``experts`` experts (config consistent with the tensors)."""
    cfg = json.loads((modelgen.CONFIG_DIR / "real" / "gpt_oss_20b.json").read_text())
    cfg["num_local_experts"] = experts
    if name_or_path:
        cfg["_name_or_path"] = name_or_path
    prefix, data = modelgen.safetensors_prefix(modelgen._gpt_oss_tensors(cfg))
    files = {"config.json": json.dumps(cfg).encode(),
             "model.safetensors": modelgen.VirtualFile(prefix, len(prefix) + data)}
    return modelgen.materialize(files, dest)


def test_catalogue_claims(tmp_path):
    v = validate(str(_gpt_oss_variant(tmp_path / "same", "openai/gpt-oss-20b", 32)))
    assert v.findings == [] and v.family["model"] == "gpt-oss-20b"

    v = validate(str(_gpt_oss_variant(tmp_path / "claimed", "openai/gpt-oss-20b", 16)))
    hit = [f for f in v.findings if f.code == "catalogue.model_mismatch"]
    assert hit and hit[0].level == "error", [f.to_json() for f in v.findings]
    assert "num_experts 16 (published 32)" in hit[0].message

    v = validate(str(_gpt_oss_variant(tmp_path / "near", None, 16)))
    hit = [f for f in v.findings if f.code == "catalogue.near_model"]
    assert hit and hit[0].level == "warning" and not v.failed("error")
    assert "gpt-oss-20b" in hit[0].message and "num_experts 16 (published 32)" in hit[0].message


def test_claimed_family_without_its_signature(tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    edit_config(path, set_keys(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"]))
    v = validate(str(path))
    assert "catalogue.family_signature" in codes(v), [f.to_json() for f in v.findings]


# ---- the layout reuses inference's scan ---------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_layout_from_the_scan_matches_every_name(family, tiny_model):
    """Built from inference's scan, the per-layer roles are what parsing every name on its own
    (with the context-dependent norms resolved) gives: same roles, same names, MTP layers apart."""
    from ckptkit.api import inspect
    from ckptkit.infer import canonicalize, infer
    from ckptkit.validate.layout import Layout
    index = inspect(str(tiny_model(family, tokenizer=False)))
    inf = infer(index)
    layout = Layout.of(index, inf.scan)
    want: dict = {}
    for name, info in canonicalize(index.tensors).items():
        if info.layer is not None and info.role not in (None, "vision", "buffer") and not info.mtp:
            want.setdefault(info.layer, set()).add((info.role, info.expert, name))
    for num in inf.scan.mtp_layers:          # DeepSeek's next-token-prediction layer
        want.pop(num, None)
    got = {num: {(r, None, n) for r, names in lv.roles.items() for n in names}
           | {(r, e, n) for r, by in lv.experts.items() for e, n in by.items()}
           for num, lv in layout.layers.items()}
    assert got == want
    assert layout.unknown == [n for n, i in canonicalize(index.tensors).items() if i.role is None]


# ---- full size: DeepSeek-V3 671B, headers only --------------------------------------------------

def test_deepseek_v3_671b_is_validated_in_seconds(header_only_dir, tmp_path):
    src = header_only_dir("deepseek_v3_671b")
    t0 = time.process_time()
    v = validate(str(src))
    cpu = time.process_time() - t0
    print(f"\nvalidate DeepSeek-V3 671B header-only ({v.tensors:,} tensors, {v.files} shards): "
          f"{cpu:.2f} s CPU")
    assert v.tensors == 91991 and v.findings == []
    assert v.family["model"] == "DeepSeek-V3 / R1"
    assert cpu < 30

    # the same shards (hard links: no data copied) under a corrupted config.json
    bad = tmp_path / "ds"
    bad.mkdir()
    for p in src.iterdir():
        if p.name != "config.json":
            os.link(p, bad / p.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(n_routed_experts=255, first_k_dense_replace=4, num_key_value_heads=128)
    (bad / "config.json").write_text(json.dumps(cfg))
    v = validate(str(bad))
    assert {"config.num_experts", "config.dense_prefix"} <= codes(v), [f.to_json() for f in v.findings]
    assert "255" in next(f.message for f in v.findings if f.code == "config.num_experts")


# ---- policies -----------------------------------------------------------------------------------

def write_policy(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ckptkit.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,code", [
    ('formats = ["gguf"]', "policy.format"),
    ('allowed_dtypes = ["BF16"]', "policy.dtype"),
    ('max_parameters = "100K"', "policy.max_parameters"),
    ("forbid_pickle = true", "policy.pickle"),
    ("forbid_remote_code = true", "policy.remote_code"),
    ('require_files = ["tokenizer.json", "special.json"]', "policy.missing_file"),
])
def test_policy_violations(text, code, tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama"), tmp_path / "m")
    (path / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")   # never opened
    edit_config(path, set_keys(auto_map={"AutoModelForCausalLM": "modeling_x.X"}))
    v = validate(str(path), policy=load_policy(write_policy(tmp_path, text)))
    assert codes(v) == {code}, [f.to_json() for f in v.findings]
    if code == "policy.missing_file":
        assert "special.json" in v.findings[0].message and len(v.findings) == 1


def test_policy_passes_and_config_requirement(tiny_model, tmp_path):
    src = tiny_model("llama")
    pol = write_policy(tmp_path, '[policy]\nformats = ["safetensors"]\nallowed_dtypes = ["F32"]\n'
                                 'max_parameters = "1M"\nrequire_config = true\nforbid_pickle = true\n')
    r = cli("validate", str(src), "--policy", str(pol))
    assert r.returncode == 0 and "no findings" in r.stdout, r.stdout + r.stderr
    path = modelgen.copy_model(src, tmp_path / "noconfig")
    (path / "config.json").unlink()
    v = validate(str(path), policy=load_policy(pol))
    assert codes(v) == {"policy.config_missing"}


def test_policy_ignore_levels_and_fail_on(tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    rewrite(path, _add("model.layers.0.self_attn.frobnicate.weight", "model.layers.0.input_layernorm.weight"))
    r = cli("validate", str(path))
    assert r.returncode == 0 and "structure.unknown_tensor" in r.stdout
    pol = write_policy(tmp_path, 'fail_on = "warning"\n')
    assert cli("validate", str(path), "--policy", str(pol)).returncode == 1
    pol = write_policy(tmp_path, '[levels]\n"structure.unknown_tensor" = "error"\n')
    assert cli("validate", str(path), "--policy", str(pol)).returncode == 1
    pol = write_policy(tmp_path, 'fail_on = "warning"\nignore = ["structure.*"]\n')
    r = cli("validate", str(path), "--policy", str(pol))
    assert r.returncode == 0 and "no findings" in r.stdout


@pytest.mark.parametrize("text", ['formats = "safetensors"', "max_parameters = \"lots\"",
                                  "colour = 3", "forbid_pickle = 1", "[levels]\n\"x.y\" = \"error\"",
                                  "not toml ["])
def test_bad_policy_is_bad_input(text, tiny_model, tmp_path):
    r = cli("validate", str(tiny_model("llama", tokenizer=False)), "--policy", str(write_policy(tmp_path, text)))
    assert r.returncode == 2 and r.stderr.startswith("ckptkit: ") and r.stderr.count("\n") == 1, r.stderr


# ---- output formats and exit codes -------------------------------------------------------------------

def test_github_annotations(tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    edit_config(path, set_keys(num_key_value_heads=4))
    r = cli("validate", str(path), "--format", "github")
    assert r.returncode == 1
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"::error file={path}/config.json,title=config.num_key_value_heads::"), first
    assert "num_key_value_heads = 4" in first and "(2 kv heads)" in first


def test_github_escapes_newlines_and_percent():
    from ckptkit.validate import Finding, Validation, format_github
    v = Validation("x", "safetensors", [Finding("structure.unknown_tensor", "warning", "a%b\nc",
                                                file="a,b:c.safetensors")], root="dir")
    line = format_github(v).splitlines()[0]
    assert line == "::warning file=dir/a%2Cb%3Ac.safetensors,title=structure.unknown_tensor::a%25b%0Ac"


def test_bad_input_exits_2(tmp_path):
    r = cli("validate", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("ckptkit: ")
    (tmp_path / "empty").mkdir()
    assert cli("validate", str(tmp_path / "empty")).returncode == 2


def test_every_code_is_documented():
    for code, (level, text) in CODES.items():
        assert level in ("error", "warning") and text and "." in code or code == "truncated"


def test_example_ci_policy_and_workflow(tiny_model):
    root = Path(__file__).parent.parent / "examples" / "ci"
    pol = load_policy(root / "ckptkit.toml")
    assert pol.formats == ["safetensors"] and pol.fail_on == "warning" and pol.forbid_pickle
    r = cli("validate", str(tiny_model("llama")), "--policy", str(root / "ckptkit.toml"), "--format", "github")
    assert r.returncode == 0, r.stdout + r.stderr
    wf = (root / "audit.yml").read_text()
    assert '--policy "$POLICY" --format github' in wf and "ckptkit compare" in wf
    try:
        import yaml
    except ImportError:
        return
    steps = yaml.safe_load(wf)["jobs"]["audit"]["steps"]
    assert any("ckptkit validate" in s.get("run", "") for s in steps)


def test_gguf_metadata_checked_against_tensors(tiny_model, tmp_path):
    """GGUF metadata plays config.json's part: a wrong head_count_kv is a finding."""
    import json
    import shutil
    import subprocess
    import sys

    from ckptkit.conversion import convert_to_gguf
    good = tmp_path / "good.gguf"
    convert_to_gguf(str(tiny_model("qwen3")), good, outtype="f32", vocab=False)
    r = subprocess.run([sys.executable, "-m", "ckptkit", "validate", str(good), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    d = tmp_path / "bad"
    shutil.copytree(tiny_model("qwen3"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_key_value_heads"] = cfg["num_key_value_heads"] * 2
    (d / "config.json").write_text(json.dumps(cfg))
    bad = tmp_path / "bad.gguf"
    convert_to_gguf(str(d), bad, outtype="f32", vocab=False)   # the wrong value lands in the metadata
    r = subprocess.run([sys.executable, "-m", "ckptkit", "validate", str(bad), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    codes = {f["code"] for f in json.loads(r.stdout)["findings"]}
    assert "config.num_key_value_heads" in codes
