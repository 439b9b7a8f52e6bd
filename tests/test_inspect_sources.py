"""Issue 2's done-when: one tensor index whatever the source, and the Hub request budget."""
import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
from safetensors import safe_open

from ckptkit import api

FAMILIES = ["llama", "mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "gemma3_text"]


def _key(index):
    return {n: (t.dtype, t.shape) for n, t in index.tensors.items()}


def _write_gguf_copy(src_dir, dest):
    """The same tensors written with gguf-py's own writer, under their HF names."""
    w = gguf.GGUFWriter(str(dest), "llama")
    wm = json.loads((src_dir / "model.safetensors.index.json").read_text())["weight_map"]
    for name, shard in wm.items():
        with safe_open(str(src_dir / shard), "np") as f:
            w.add_tensor(name, f.get_tensor(name))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_same_index_from_every_source(family, tiny_model, hub, hf_cache, tmp_path):
    d = tiny_model(family)
    local = api.inspect(str(d))
    assert len(local.files) >= 2
    # each shard on its own
    merged = {}
    for f in local.files:
        merged.update(_key(api.inspect(str(d / f.name))))
    assert merged == _key(local)
    # the Hub (real huggingface_hub against the local server)
    repo = f"tiny/{family}-src"
    hub.add_repo_from_dir(repo, d)
    remote = api.inspect(repo)
    assert _key(remote) == _key(local)
    assert [(t.file, t.offset, t.nbytes) for t in remote.tensors.values()] == \
           [(t.file, t.offset, t.nbytes) for t in local.tensors.values()]
    assert remote.config == local.config and remote.total_parameters == local.total_parameters
    # its GGUF form
    g = tmp_path / "same.gguf"
    _write_gguf_copy(d, g)
    gi = api.inspect(str(g))
    assert gi.format == "gguf" and _key(gi) == _key(local)
    assert gi.parameters_by_dtype() == local.parameters_by_dtype()


def test_revision_and_hf_uri(tiny_model, hub, hf_cache):
    d = tiny_model("llama")
    sha = hub.add_repo_from_dir("tiny/rev", d)
    a = api.inspect("tiny/rev@" + sha)
    b = api.inspect("hf://tiny/rev", revision="main")
    assert _key(a) == _key(b) and a.total_parameters == b.total_parameters


def test_deepseek_v3_full_size_within_request_budget(header_only, hub, hf_cache):
    files = header_only("deepseek_v3_671b")
    hub.add_repo("big/deepseek-v3", files)
    shards = [f for f in files if f.endswith(".safetensors")]
    hub.reset_stats()
    index = api.inspect("big/deepseek-v3")
    n_requests = len(hub.requests)
    assert len(shards) == 163
    assert n_requests <= len(shards) + 3, f"{n_requests} requests for {len(shards)} shards"
    assert len(index.tensors) == 91_991
    assert index.total_parameters == 684_531_386_000
    wm = json.loads(files["model.safetensors.index.json"])["weight_map"]
    assert set(index.tensors) == set(wm)
    assert index.total_bytes == json.loads(files["model.safetensors.index.json"])["metadata"]["total_size"]
    # no tensor data: bytes sent stay near the headers + index + config
    header_bytes = sum(len(files[s].prefix) for s in shards)
    small = len(files["model.safetensors.index.json"]) + len(files["config.json"])
    assert hub.bytes_sent <= 1.1 * (header_bytes + small) + 200_000


def test_cli_inspect_hub_json(tiny_model, hub, hf_cache):
    d = tiny_model("qwen3_moe")
    hub.add_repo_from_dir("tiny/cli-json", d)
    r = subprocess.run([sys.executable, "-m", "ckptkit", "inspect", "tiny/cli-json", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["parameters"]["total"] == api.inspect(str(d)).total_parameters
    assert len(rep["files"]) >= 2


def test_missing_repo_is_one_line(hub, hf_cache):
    r = subprocess.run([sys.executable, "-m", "ckptkit", "inspect", "nobody/nothing"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "nobody/nothing" in r.stderr
