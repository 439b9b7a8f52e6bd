"""The uniform layout (`convert --to ckpt`): canonical names any safetensors reader sees, a
manifest, and every direction through it — HF -> ckpt -> HF bit-exact and loadable by
transformers, ckpt -> GGUF equal to HF -> GGUF byte for byte, GGUF(f32) -> ckpt -> HF bit-exact,
`diff` across formats, one-line errors for a broken manifest."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ckptkit
import test_convert_families_c
from ckptkit.conversion.canonical import parse_canonical

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"
# fixture: an MXFP4 gpt-oss in the published layout and its twin dequantised by transformers
mxfp4_models = test_convert_families_c.gpt_oss_mxfp4
# every tiny family HF -> ckpt -> HF is checked on (the layout is family-independent)
HF_FAMILIES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3",
               "gemma3_text", "olmo2", "gpt_oss", "glm4_moe", "llama4_text", "qwen3_next", "smollm3", "gpt2"]
# the families GGUF -> HF converts back (tests/test_convert_to_hf.py)
GGUF_FAMILIES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3",
                 "gemma3_text", "olmo2", "smollm3", "gpt2", "gpt_oss", "glm4_moe", "llama4_text", "qwen3_next"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "ckptkit", *map(str, args)], capture_output=True, text=True)


def raw_tensors(folder: Path) -> dict[str, tuple[str, tuple, bytes]]:
    """name -> (dtype, shape, raw bytes) of every tensor of a folder, read with plain safetensors."""
    import torch
    from safetensors import safe_open
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = (str(t.dtype), tuple(t.shape), t.contiguous().view(torch.uint8).numpy().tobytes())
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="session")
def ckpt_of(tiny_model, tmp_path_factory):
    """family -> the uniform layout ckptkit wrote from the family's tiny HF model (cached)."""
    cache = {}
    d = tmp_path_factory.mktemp("ckpt_of")

    def get(family):
        if family not in cache:
            out = d / family
            ckptkit.convert(tiny_model(family), out, to="ckpt", shard_size=100_000)
            cache[family] = out
        return cache[family]
    return get


# ---- the layout itself -----------------------------------------------------------------------

def test_example_round_trip_and_names(tmp_path):
    """No torch needed: the example Llama to ckpt and back gives the same bytes, names parse."""
    ck, back = tmp_path / "ck", tmp_path / "back"
    files = ckptkit.convert(EXAMPLE, ck, to="ckpt")
    assert ck / "manifest.json" in files and (ck / "tokenizer.json").exists()
    assert not (ck / "config.json").exists()     # the config lives in the manifest
    m = manifest(ck)
    assert m["format"] == "ckptkit-ckpt" and m["format_version"] == 1
    assert m["config"] == json.loads((EXAMPLE / "config.json").read_text())
    assert m["family"]["conversion"] == "llama" and m["family"]["catalogue"]["family"] == "llama"
    assert m["facts"]["num_layers"]["value"] == 2 and m["facts"]["num_layers"]["evidence"]
    assert m["source"]["format"] == "safetensors" and m["source"]["name"] == "tiny-llama"
    names = {t["name"] for t in m["tensors"]}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.0.attn_q.weight",
            "blk.1.ffn_down.weight", "blk.1.ffn_norm.weight"} <= names
    row = next(t for t in m["tensors"] if t["name"] == "blk.1.attn_k.weight")
    assert row["hf_name"] == row["source"][0] == "model.layers.1.self_attn.k_proj.weight"
    assert (row["role"], row["layer"], row["expert"], row["dtype"]) == ("attn_k.weight", 1, None, "BF16")
    ckptkit.convert(ck, back)                     # a ckpt source goes to HF by default
    assert json.loads((back / "config.json").read_text()) == m["config"]
    assert raw_tensors(back) == raw_tensors(EXAMPLE)
    assert (back / "tokenizer.json").read_bytes() == (EXAMPLE / "tokenizer.json").read_bytes()
    assert not ckptkit.diff(EXAMPLE, ck).failed and not ckptkit.diff(ck, back).failed


def test_names_follow_the_scheme_for_experts_and_mla(ckpt_of):
    for family, want in (("qwen3_moe", {"blk.1.ffn_up_exps.3.weight", "blk.0.ffn_gate_inp.weight",
                                        "blk.0.attn_q_norm.weight"}),
                         ("deepseek_v3", {"blk.1.attn_kv_a_mqa.weight", "blk.1.attn_kv_b.weight",
                                          "blk.1.ffn_down_shexp.weight", "blk.1.exp_probs_b.bias"}),
                         # experts the source stacks are split too (--experts split, the default)
                         ("gpt_oss", {"blk.0.ffn_gate_up_exps.3.weight", "blk.0.attn_sinks.weight"})):
        ck = ckpt_of(family)
        m = manifest(ck)
        stored = raw_tensors(ck)
        assert want <= set(stored), (family, sorted(set(want) - set(stored)))
        assert set(stored) == {t["name"] for t in m["tensors"]}
        for t in m["tensors"]:
            c = parse_canonical(t["name"])
            assert (c.role, c.layer, c.expert) == (t["role"], t["layer"], t["expert"]), t["name"]
            assert list(stored[t["name"]][1]) == t["shape"]
        role = "ffn_gate_up_exps.weight" if family == "gpt_oss" else "ffn_up_exps.weight"
        experts = {t["expert"] for t in m["tensors"] if t["role"] == role}
        assert experts == set(range(m["facts"]["num_experts"]["value"])) and len(experts) == 4


# ---- HF -> ckpt -> HF -------------------------------------------------------------------------

@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hf_ckpt_hf_is_bit_exact_and_loads(family, tiny_model, ckpt_of, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    src, ck, back = tiny_model(family), ckpt_of(family), tmp_path / "back"
    ckptkit.convert(ck, back, to="hf", shard_size=100_000)
    assert raw_tensors(back) == raw_tensors(src)
    assert json.loads((back / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    model, info = AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for a, b in ((src, ck), (ck, back)):
        r = run("diff", a, b)
        assert r.returncode == 0, r.stdout + r.stderr


# ---- ckpt -> GGUF and GGUF -> ckpt ---------------------------------------------------------------

@pytest.mark.parametrize("family", HF_FAMILIES)
def test_ckpt_to_gguf_equals_hf_to_gguf(family, tiny_model, ckpt_of, tmp_path):
    a, b = tmp_path / "hf.gguf", tmp_path / "ckpt.gguf"
    ckptkit.convert(tiny_model(family), a)
    ckptkit.convert(ckpt_of(family), b)           # a .gguf output implies --to gguf
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_gguf_f32_ckpt_hf_is_bit_exact(family, tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    src, g, ck, back, direct = (tiny_model(family), tmp_path / "m.gguf", tmp_path / "ck", tmp_path / "back",
                                tmp_path / "direct")
    ckptkit.convert(src, g, outtype="f32")
    ckptkit.convert(g, ck, to="ckpt", outtype="f32")
    m = manifest(ck)
    assert m["source"]["format"] == "gguf" and m["family"]["gguf_arch"]
    in_gguf = set(ckptkit.open(g).index.tensors)
    assert all(s.split("[")[0] in in_gguf for t in m["tensors"] for s in t["source"])
    ckptkit.convert(ck, back)
    ckptkit.convert(g, direct, outtype="f32")
    assert raw_tensors(back) == raw_tensors(direct)
    assert json.loads((back / "config.json").read_text()) == json.loads((direct / "config.json").read_text())
    model, info = AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, orig[k]), k
    assert run("diff", src, ck).returncode == 0


def test_ckpt_to_ckpt_keeps_the_tensors_and_the_origin(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ckptkit.convert(EXAMPLE, a, to="ckpt")
    ckptkit.convert(a, b, to="ckpt", outtype="f32")
    mb = manifest(b)
    assert mb["source"]["format"] == "ckpt" and mb["source"]["origin"]["name"] == "tiny-llama"
    assert {t["dtype"] for t in mb["tensors"]} == {"F32"}
    assert [t["source"][0] for t in mb["tensors"]] == [t["name"] for t in mb["tensors"]]
    assert run("diff", EXAMPLE, b).returncode == 0    # bf16 -> f32 is exact


# ---- the command line ---------------------------------------------------------------------------

def test_cli_to_and_defaults(tmp_path):
    ck = tmp_path / "ck"
    r = run("convert", EXAMPLE, ck, "--to", "ckpt", "--no-progress")
    assert r.returncode == 0, r.stderr
    r = run("inspect", ck)
    assert r.returncode == 0 and "Llama" in r.stdout, r.stdout + r.stderr
    r = run("convert", ck, tmp_path / "x.gguf", "--no-progress")
    assert r.returncode == 0 and (tmp_path / "x.gguf").is_file(), r.stderr
    r = run("convert", tmp_path / "x.gguf", tmp_path / "y", "--to", "ckpt", "--no-progress", "--outtype", "f32")
    assert r.returncode == 0 and (tmp_path / "y" / "manifest.json").is_file(), r.stderr
    r = run("convert", ck, tmp_path / "plan", "--dry-run")
    assert r.returncode == 0 and "model.layers.0.self_attn.q_proj.weight" in r.stdout
    assert not (tmp_path / "plan").exists()
    r = run("convert", EXAMPLE, tmp_path / "plan2", "--to", "ckpt", "--dry-run")
    assert "blk.0.attn_q.weight" in r.stdout and not (tmp_path / "plan2").exists()
    r = run("convert", tmp_path / "x.gguf", tmp_path / "z.gguf", "--to", "hf")   # a folder, not a .gguf
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for args in (("--to", "ckpt", "--outtype", "q8_0"), ("--to", "ckpt", "--vocab-only")):
        r = run("convert", EXAMPLE, tmp_path / "z", *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "z").exists()


def _break(ck: Path, edit) -> None:
    m = manifest(ck)
    text = edit(m)
    (ck / "manifest.json").write_text(text if isinstance(text, str) else json.dumps(m))


@pytest.mark.parametrize("edit, words", [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: m.update(format="other"), "not a ckptkit"),
    (lambda m: m.pop("config"), "config"),
    (lambda m: m.update(format_version=99), "newer"),
    (lambda m: m["tensors"][0].update(shape=[1, 2]), "holds"),
    (lambda m: m["tensors"].pop(), "does not list"),
    (lambda m: m["tensors"][0].update(file="../x.safetensors"), "shard"),
    (lambda m: m["tensors"][1].update(hf_name=m["tensors"][0]["hf_name"]), "twice"),
    (lambda m: (m["tensors"][0].update(name="blk.0.nonsense.weight"), m["tensors"][0].pop("hf_name")), "not a role"),
])
def test_broken_manifest_is_one_line(edit, words, tmp_path):
    ck = tmp_path / "ck"
    ckptkit.convert(EXAMPLE, ck, to="ckpt")
    broken = tmp_path / "broken"
    shutil.copytree(ck, broken)
    _break(broken, edit)
    for cmd in (("inspect", broken, "--no-cache"), ("convert", broken, tmp_path / "o.gguf"),
                ("diff", EXAMPLE, broken)):
        r = run(*cmd)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], (cmd, r.stderr)
        assert "manifest.json" in lines[0]


# ---- from the Hub -----------------------------------------------------------------------------------

def test_hub_source_is_recorded_with_commit_and_hashes(hub, hf_cache, tmp_path):
    import hashlib
    hub.add_repo("cktest/tiny-llama", {p.name: p.read_bytes() for p in EXAMPLE.iterdir()})
    ck, back = tmp_path / "ck", tmp_path / "back"
    ckptkit.convert("cktest/tiny-llama", ck, to="ckpt")
    src = manifest(ck)["source"]
    assert src["spec"] == "cktest/tiny-llama" and len(src["revision"]) == 40
    shards = {f["name"]: f for f in src["files"]}
    assert set(shards) == {p.name for p in EXAMPLE.glob("*.safetensors")}
    for name, f in shards.items():
        data = (EXAMPLE / name).read_bytes()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    ckptkit.convert(ck, back)
    assert raw_tensors(back) == raw_tensors(EXAMPLE)
    # a ckpt folder on the Hub is a source too; its tensor bytes come in a few large ranges
    hub.add_repo("cktest/tiny-ckpt", {p.name: p.read_bytes() for p in ck.iterdir()})
    hub.reset_stats()
    ckptkit.convert("cktest/tiny-ckpt", tmp_path / "from-hub")
    assert raw_tensors(tmp_path / "from-hub") == raw_tensors(EXAMPLE)
    shards = [p.name for p in ck.glob("*.safetensors")]
    gets = sum(hub.count("GET", s) for s in shards)
    assert 0 < gets <= 2 * len(shards) + 2, gets      # headers and one range each, not one per tensor


# ---- streaming ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, outtype", [("example", "auto"), ("example", "f32"), ("gguf", "f32")])
def test_tensors_stream_in_bounded_reads(spec, outtype, monkeypatch, tmp_path):
    """Every tensor is read in chunks of about CHUNK_BYTES, never whole."""
    from ckptkit.api import load_index, open_source
    from ckptkit.conversion import stream
    from ckptkit.conversion.to_ckpt import plan_ckpt, write_ckpt
    from ckptkit.sources.base import WrappedSource
    src = EXAMPLE
    if spec == "gguf":
        src = tmp_path / "m.gguf"
        ckptkit.convert(EXAMPLE, src, outtype="f32")
    monkeypatch.setattr(stream, "CHUNK_BYTES", 2048)
    sizes = []

    class Counting(WrappedSource):
        def read(self, path, offset, length):
            sizes.append(length)
            return super().read(path, offset, length)

    with open_source(str(src)) as source:
        index = load_index(source)
        plan = plan_ckpt(stream.read_stream(source, index, outtype))
        write_ckpt(plan, Counting(source), tmp_path / "ck", {}, {"spec": str(src)})
    largest = max(t.nbytes for t in index.tensors.values())
    # a GGUF is read in whole rotary heads at least: 16 rows of 64 f32 (4 KB) for q/k
    bound = 4096 if spec == "gguf" else 2048
    assert largest >= 24_000 and sizes and max(sizes) <= bound, (largest, max(sizes))
    assert not ckptkit.diff(EXAMPLE, tmp_path / "ck").failed


@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "gemma3_text", "deepseek_v3", "gpt2", "olmo2"])
def test_ckpt_without_hf_names_is_named_by_its_family(family, tiny_model, ckpt_of, tmp_path):
    """A manifest that gives only canonical names (another tool's ckpt): HF names come from the
    family's GGUF -> HF names and roles.toml, and the model is the original again."""
    ck, back = tmp_path / "ck", tmp_path / "back"
    shutil.copytree(ckpt_of(family), ck)
    m = manifest(ck)
    for t in m["tensors"]:
        del t["hf_name"]
    (ck / "manifest.json").write_text(json.dumps(m))
    ckptkit.convert(ck, back)
    assert raw_tensors(back) == raw_tensors(tiny_model(family))


# ---- quantised sources ------------------------------------------------------------------------------

def test_fp8_stays_fp8_with_its_scales_unless_dequantized(tmp_path):
    from test_diff import fp8_copy
    q, d = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"
    fp8 = fp8_copy(tmp_path / "fp8", [q, d])
    ck, back, deq = tmp_path / "ck", tmp_path / "back", tmp_path / "deq"
    ckptkit.convert(fp8, ck, to="ckpt")
    rows = {t["name"]: t for t in manifest(ck)["tensors"]}
    assert rows["blk.0.attn_q.weight"]["dtype"] == "F8_E4M3"
    assert rows["blk.0.attn_q.scale"]["source"] == [q + "_scale_inv"]
    assert rows["blk.1.ffn_down.scale"]["dtype"] == "F32"
    ckptkit.convert(ck, back)
    assert raw_tensors(back) == raw_tensors(fp8)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    ckptkit.convert(fp8, a, outtype="f32")
    ckptkit.convert(ck, b, outtype="f32")
    assert a.read_bytes() == b.read_bytes()
    # --dequantize: the weights times their scales, in f32 exactly what the GGUF converter computes
    r = run("convert", fp8, deq, "--to", "ckpt", "--dequantize", "--outtype", "f32")
    assert r.returncode == 0, r.stderr
    m = manifest(deq)
    rows = {t["name"]: t for t in m["tensors"]}
    assert "blk.0.attn_q.scale" not in rows and rows["blk.0.attn_q.weight"]["dtype"] == "F32"
    assert rows["blk.0.attn_q.weight"]["source"] == [q, q + "_scale_inv"]
    assert "quantization_config" not in m["config"]
    assert run("diff", a, deq).returncode == 0
    r = run("diff", fp8, deq)
    assert r.returncode == 0, r.stdout     # FP8 times its scales against the dequantised values


def test_q8_0_gguf_is_dequantised_into_the_layout(tmp_path):
    g, ck = tmp_path / "q8.gguf", tmp_path / "ck"
    ckptkit.convert(EXAMPLE, g, outtype="q8_0")
    ckptkit.convert(g, ck, to="ckpt", outtype="f32")
    m = manifest(ck)
    assert {t["source_dtype"] for t in m["tensors"]} == {"Q8_0", "F32"}
    assert {t["dtype"] for t in m["tensors"]} == {"F32"}
    assert not ckptkit.diff(g, ck).failed                       # the GGUF's own dequantisation, exactly
    assert ckptkit.diff(EXAMPLE, ck).failed and not ckptkit.diff(EXAMPLE, ck, atol=1e-3).failed


# ---- experts stacked on request ----------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3", "mixtral"])
def test_stacked_experts_round_trip(family, tiny_model, ckpt_of, tmp_path):
    src, st, back, split = tiny_model(family), tmp_path / "st", tmp_path / "back", tmp_path / "split"
    r = run("convert", src, st, "--to", "ckpt", "--experts", "stacked", "--no-progress")
    assert r.returncode == 0, r.stderr
    m = manifest(st)
    rows = {t["name"]: t for t in m["tensors"]}
    up = rows["blk.1.ffn_up_exps.weight"]
    assert up["expert"] is None and up["stacked_experts"] == 4 and up["shape"][0] == 4
    assert "{expert}" in up["hf_name"] and len(up["source"]) == 4
    assert not any(t["expert"] is not None for t in m["tensors"])
    stored = raw_tensors(st)
    # expert 2's bytes are the third quarter of the stack, as plain safetensors reads it
    orig = raw_tensors(src)
    quarter = len(stored["blk.1.ffn_up_exps.weight"][2]) // 4
    assert stored["blk.1.ffn_up_exps.weight"][2][2 * quarter:3 * quarter] == orig[up["hf_name"].replace("{expert}", "2")][2]
    ckptkit.convert(st, back)
    assert raw_tensors(back) == orig
    assert run("diff", src, st).returncode == 0
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    ckptkit.convert(src, a)
    ckptkit.convert(st, b)
    assert a.read_bytes() == b.read_bytes()
    ckptkit.convert(st, split, to="ckpt")                  # stacked -> split: the default layout again
    assert raw_tensors(split) == raw_tensors(ckpt_of(family))
    for t in m["tensors"]:                                # and named from the family alone
        del t["hf_name"]
    (st / "manifest.json").write_text(json.dumps(m))
    ckptkit.convert(st, tmp_path / "named")
    assert raw_tensors(tmp_path / "named") == orig


def test_mxfp4_kept_as_blocks_or_dequantized_as_transformers_does(mxfp4_models, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    mx_dir, deq_dir, _ = mxfp4_models
    ck, back, deq, deq_hf = tmp_path / "ck", tmp_path / "back", tmp_path / "deq", tmp_path / "deq-hf"
    ckptkit.convert(mx_dir, ck, to="ckpt")
    rows = {t["name"]: t for t in manifest(ck)["tensors"]}
    assert rows["blk.0.ffn_gate_up_exps.0.blocks"]["dtype"] == rows["blk.0.ffn_gate_up_exps.0.scales"]["dtype"] == "U8"
    ckptkit.convert(ck, back)
    assert raw_tensors(back) == raw_tensors(mx_dir)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    ckptkit.convert(mx_dir, a)
    ckptkit.convert(ck, b)
    assert a.read_bytes() == b.read_bytes()
    # --dequantize: bit for bit the float weights transformers' own MXFP4 dequantisation gives
    ckptkit.convert(mx_dir, deq, to="ckpt", dequantize=True, outtype="f32")
    m = manifest(deq)
    rows = {t["name"]: t for t in m["tensors"]}
    assert not any(".blocks" in n or ".scales" in n for n in rows)
    assert rows["blk.0.ffn_gate_up_exps.1.weight"]["source_dtype"] == "MXFP4"
    ckptkit.convert(deq, deq_hf)
    assert raw_tensors(deq_hf) == raw_tensors(deq_dir)
    assert json.loads((deq_hf / "config.json").read_text()) == json.loads((deq_dir / "config.json").read_text())
    _, info = AutoModelForCausalLM.from_pretrained(deq_hf, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_a_config_json_next_to_the_manifest_does_not_hide_the_layout(tmp_path):
    ck = tmp_path / "ck"
    ckptkit.convert(EXAMPLE, ck, to="ckpt")
    (ck / "config.json").write_text((EXAMPLE / "config.json").read_text())
    assert not ckptkit.diff(EXAMPLE, ck).failed
    ckptkit.convert(ck, tmp_path / "back")
    assert raw_tensors(tmp_path / "back") == raw_tensors(EXAMPLE)
    # a folder with some other manifest.json and a config.json is an ordinary HF checkpoint
    hf = tmp_path / "hf"
    shutil.copytree(EXAMPLE, hf)
    (hf / "manifest.json").write_text('{"files": []}')
    assert not ckptkit.diff(EXAMPLE, hf).failed
