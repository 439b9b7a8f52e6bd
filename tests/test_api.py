"""The Python API (`ckptkit.open`, `convert`, `diff`): the same answers as the CLI's --json, as
typed objects; errors as CkptError subclasses with one-line messages."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ckptkit
from ckptkit.errors import CkptError, FormatError, SourceError

REPO = Path(__file__).parent.parent
EXAMPLE = REPO / "examples" / "tiny-llama"


def cli(*args, expect=(0,)):
    r = subprocess.run([sys.executable, "-m", "ckptkit", *map(str, args)], capture_output=True, text=True)
    assert r.returncode in expect, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The example converted to GGUF and back to HF through the API, with the progress calls."""
    d = tmp_path_factory.mktemp("api_convert")
    calls = {"gguf": [], "hf": []}
    gguf = ckptkit.convert(EXAMPLE, d / "tiny.gguf", progress=lambda n, t: calls["gguf"].append((n, t)))
    hf = ckptkit.convert(gguf[0], d / "tiny-hf", progress=lambda n, t: calls["hf"].append((n, t)))
    return {"gguf": gguf, "hf": hf, "dir": d, "calls": calls}


# ---- open: facts, family, tokenizer, memory, report ------------------------------------------------

def test_open_folder_facts_carry_value_source_evidence():
    ck = ckptkit.open(EXAMPLE)
    assert isinstance(ck, ckptkit.Checkpoint) and ck.index.format == "safetensors"
    assert len(ck.index.tensors) == 21
    layers = ck.facts["num_layers"]
    assert isinstance(layers, ckptkit.Fact)
    assert layers.value == 2 and layers.source == "tensors" and layers.evidence
    assert ck.facts["hidden_size"].value == 64
    assert ck.family is not None and ck.family["family"] == "llama"
    tok = ck.tokenizer
    assert tok is not None and tok["vocab_size"] and "chat_template" in tok
    assert tok == ck.facts["tokenizer"].value


def test_report_is_the_inspect_json_text():
    ck = ckptkit.open(str(EXAMPLE))
    text = cli("inspect", EXAMPLE, "--json", "--no-cache")
    assert json.dumps(ck.report()) == text.strip()
    assert ck.report()["schema_version"] == ckptkit.SCHEMA_VERSION == 1


def test_memory_matches_inspect_ctx():
    ck = ckptkit.open(EXAMPLE)
    mem = ck.memory(4096, kv_type="q8_0")
    doc = json.loads(cli("inspect", EXAMPLE, "--json", "--ctx", "4096", "--kv-type", "q8_0"))
    assert mem.to_json() == doc["memory"] == ck.report(ctx=4096, kv_type="q8_0")["memory"]
    # 2 layers x K and V rows of kv_heads x head_dim elements, in q8_0 blocks of 32 (34 bytes)
    v = {k: f.value for k, f in ck.facts.items()}
    row = v["num_key_value_heads"] * v["head_dim"]
    assert mem.kv_cache_bytes == 2 * 2 * (row // 32 * 34) * 4096
    assert mem.total_bytes == mem.weights_bytes + mem.kv_cache_bytes == ck.index.total_bytes + mem.kv_cache_bytes


def test_open_gguf(converted):
    ck = ckptkit.open(converted["gguf"][0])
    assert ck.index.format == "gguf"
    assert ck.facts["num_layers"].value == 2 and ck.facts["num_layers"].source in ("tensors", "gguf")
    assert ck.tokenizer is not None and ck.facts["tokenizer"].source == "gguf"
    assert json.dumps(ck.report()) == cli("inspect", converted["gguf"][0], "--json", "--no-cache").strip()


def test_open_hub_repo(hub, hf_cache):
    hub.add_repo_from_dir("acme/api-tiny", EXAMPLE)
    ck = ckptkit.open("acme/api-tiny")
    assert ck.index.source.startswith("acme/api-tiny") and len(ck.index.tensors) == 21
    assert ck.tokenizer == ckptkit.open(EXAMPLE).tokenizer
    assert hub.count("GET", "acme/api-tiny") > 0
    text = cli("inspect", "acme/api-tiny", "--json", "--no-cache")
    assert json.dumps(ck.report()) == text.strip()
    # the findings of a Hub repo too, read through the commit opened
    assert [f.to_json() for f in ck.validate()] == json.loads(cli("validate", "acme/api-tiny", "--json"))["findings"]


# ---- validate ------------------------------------------------------------------------------------

def _wrong_layers(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_validate_returns_the_cli_findings(tmp_path):
    model = _wrong_layers(tmp_path / "m")
    ck = ckptkit.open(model)
    findings = ck.validate()
    assert findings and all(isinstance(f, ckptkit.Finding) for f in findings)
    assert "config.num_layers" in {f.code for f in findings}
    doc = json.loads(cli("validate", model, "--json", expect=(1,)))
    assert [f.to_json() for f in findings] == doc["findings"]
    assert ck.validation().to_json() == doc and doc["schema_version"] == 1


def test_validate_with_a_policy(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('allowed_dtypes = ["F32"]\nmax_parameters = "1K"\n')
    ck = ckptkit.open(EXAMPLE)
    codes = {f.code for f in ck.validate(policy)}
    assert {"policy.dtype", "policy.max_parameters"} <= codes
    doc = json.loads(cli("validate", EXAMPLE, "--json", "--policy", policy, expect=(1,)))
    assert [f.to_json() for f in ck.validate(str(policy))] == doc["findings"]
    assert not {f.code for f in ck.validate()} & {"policy.dtype", "policy.max_parameters"}


# ---- convert and diff ------------------------------------------------------------------------------

@pytest.mark.parametrize("way", ["gguf", "hf"])
def test_convert_progress_counts_bytes_up_to_the_total(converted, way):
    calls = converted["calls"][way]
    assert len(calls) > 1
    done = [n for n, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)      # strictly increasing
    total = calls[-1][1]
    assert done[-1] == total > 0 and {t for _, t in calls} == {total}


def test_convert_both_ways_round_trips_exactly(converted):
    gguf, hf = converted["gguf"], converted["hf"]
    assert len(gguf) == 1 and gguf[0].suffix == ".gguf" and gguf[0].stat().st_size > 0
    names = {p.name for p in hf}
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)
    assert all(p.exists() and p.parent == hf[0].parent for p in hf)
    res = ckptkit.diff(EXAMPLE, hf[0].parent)
    assert not res.failed and {t.status for t in res.tensors} == {"exact"} and len(res.tensors) == 21


def test_diff_is_the_diff_json(converted):
    steps = []
    res = ckptkit.diff(EXAMPLE, converted["gguf"][0], progress=lambda d, t: steps.append((d, t)))
    assert not res.failed and steps[-1] == (len(res.tensors), len(res.tensors))
    text = cli("diff", EXAMPLE, converted["gguf"][0], "--json")
    assert json.dumps(res.to_json(), indent=1) == text.strip()
    assert res.to_json()["schema_version"] == 1


def test_diff_finds_a_difference(tmp_path, converted):
    from safetensors.torch import load_file, save_file
    other = tmp_path / "other"
    shutil.copytree(converted["hf"][0].parent, other)
    name = "model.norm.weight"
    shard = next(p for p in other.glob("*.safetensors") if name in load_file(str(p)))
    t = load_file(str(shard))
    t[name] = t[name] + 1
    save_file(t, str(shard), metadata={"format": "pt"})
    res = ckptkit.diff(converted["hf"][0].parent, other)
    assert res.failed and [d.name for d in res.tensors if d.status == "differ"] == [name]
    assert not ckptkit.diff(converted["hf"][0].parent, other, atol=1.5).failed


# ---- errors ------------------------------------------------------------------------------------------

def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


def test_errors_are_one_line_ckpt_errors(tmp_path, converted):
    with pytest.raises(SourceError) as e:
        ckptkit.open(tmp_path / "nope")
    assert "no such file" in _one_line(e)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05")
    with pytest.raises(FormatError) as e:
        ckptkit.open(bad)
    assert "truncated" in _one_line(e)
    with pytest.raises(CkptError) as e:
        ckptkit.open(EXAMPLE).memory(0)
    _one_line(e)
    with pytest.raises(CkptError) as e:
        ckptkit.convert(EXAMPLE, tmp_path / "x", to="hf", outtype="q8_0")   # q8_0 is a GGUF type
    assert "GGUF" in _one_line(e) and not (tmp_path / "x").exists()
    with pytest.raises(CkptError) as e:
        ckptkit.convert(converted["gguf"][0], tmp_path / "y.gguf", to="hf")  # a folder, not a .gguf
    assert "folder" in _one_line(e) and not (tmp_path / "y.gguf").exists()
    with pytest.raises(CkptError) as e:
        ckptkit.diff(EXAMPLE, tmp_path / "nope")
    _one_line(e)
    assert issubclass(ckptkit.CkptError, Exception) and ckptkit.CkptError is CkptError


# ---- the package ---------------------------------------------------------------------------------

def test_import_is_cheap_and_names_stay_functions():
    code = ("import sys, ckptkit; print(sorted(m for m in sys.modules if m.startswith('ckptkit') or m == 'numpy'));"
            "import ckptkit.conversion.run, ckptkit.tensordiff;"
            "print(callable(ckptkit.convert), callable(ckptkit.diff), ckptkit.diff.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['ckptkit']", "True True ckptkit.checkpoint"]
    assert set(ckptkit.__all__) == {"open", "convert", "diff", "Checkpoint", "Fact", "Finding", "CkptError",
                                    "SCHEMA_VERSION"}
    for name in ("open", "convert", "diff", "Checkpoint"):
        assert getattr(ckptkit, name).__doc__


def test_the_api_is_typed(tmp_path):
    snippet = tmp_path / "use_api.py"
    snippet.write_text(
        "import ckptkit\n"
        "ck: ckptkit.Checkpoint = ckptkit.open('m', revision=None)\n"
        "findings: list[ckptkit.Finding] = ck.validate()\n"
        "layers: ckptkit.Fact = ck.facts['num_layers']\n"
        "total: int | None = ck.memory(4096, kv_type='q8_0').total_bytes\n"
        "paths = ckptkit.convert('m', 'm.gguf', to='gguf', progress=lambda done, total: None)\n"
        "equal: bool = not ckptkit.diff('a', 'b', atol=1e-3).failed\n"
        "wrong: str = ck.memory(1).weights_bytes\n")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", str(snippet)],
                       capture_output=True, text=True, cwd=REPO)
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "use_api.py:8:" in errors[0] and "incompatible types" in errors[0].lower(), r.stdout


def test_readme_example_runs_and_prints_what_it_says(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    said = [line.split("# ", 1)[1].split(":")[0] for line in code.splitlines()
            if line.startswith("print(") and "# " in line]
    printed = [line.split("\r")[-1] for line in r.stdout.splitlines()]
    assert said and all(any(s in p for p in printed) for s in said), (said, printed)
    assert (tmp_path / "tiny.gguf").stat().st_size > 0
