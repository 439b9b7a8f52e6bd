"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True, **kw)


def _example_params() -> int:
    from safetensors import safe_open
    n = 0
    for shard in EXAMPLE.glob("*.safetensors"):
        with safe_open(str(shard), "np") as f:
            for k in f.keys():
                shape = f.get_slice(k).get_shape()
                p = 1
                for d in shape:
                    p *= d
                n += p
    return n


def test_inspect_text():
    r = run("inspect", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "model.layers.{0..1}.self_attn.k_proj.weight" in r.stdout
    assert f"{_example_params():,}" in r.stdout


def test_inspect_json_report():
    r = run("inspect", str(EXAMPLE), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    for key in ("format", "files", "tensors", "parameters", "dtypes", "family", "facts", "findings"):
        assert key in rep
    n = _example_params()
    assert rep["format"] == "safetensors" and rep["parameters"]["total"] == n
    assert rep["dtypes"] == {"BF16": n}
    assert {t["file"] for t in rep["tensors"]} == {f["name"] for f in rep["files"]}
    t = next(t for t in rep["tensors"] if t["name"] == "model.embed_tokens.weight")
    assert t["shape"] == [384, 64] and t["dtype"] == "BF16"


def test_inspect_all_tensors():
    r = run("inspect", str(EXAMPLE), "--tensors")
    assert r.returncode == 0 and "model.layers.1.mlp.up_proj.weight" in r.stdout


@pytest.mark.parametrize("content, needle", [
    (b"\x05", "truncated"),
    (struct.pack("<Q", 10**6) + b"{}", "past the end"),
    (struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, content, needle):
    f = tmp_path / "bad.safetensors"
    f.write_bytes(content)
    r = run("inspect", str(f))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptkit: ") and needle in lines[0]
    assert "bad.safetensors" in lines[0] and "Traceback" not in r.stderr


def test_missing_path_exit_2(tmp_path):
    r = run("inspect", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("ckptkit: ")
