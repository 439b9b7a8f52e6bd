"""Issue 2's done-when: one tensor index whatever the source, and the Hub request budget."""
import json
import subprocess
import sys

import gguf
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


def test_split_gguf_all_parts_read(tiny_model, tmp_path):
    from ckptkit.conversion import convert_to_gguf
    d = tiny_model("llama")
    res = convert_to_gguf(str(d), tmp_path / "m.gguf", outtype="f32", split_max_size="60K", vocab=False)
    assert len(res.outputs) >= 3
    assert all(p.name.endswith(f"-of-{len(res.outputs):05d}.gguf") for p in res.outputs)
    whole = api.inspect(str(res.outputs[1]))          # naming any part reads every part
    assert {f.name for f in whole.files} == {p.name for p in res.outputs}
    assert len(whole.tensors) == len(res.plan.tensors)
    assert api.inspect(str(tmp_path)).total_parameters == whole.total_parameters
    res.outputs[2].unlink()
    with pytest.raises(Exception, match="missing split part"):
        api.inspect(str(res.outputs[0]))


def test_remote_gguf_reads_header_only(hub, hf_cache):
    """A 4 GB GGUF on the Hub: metadata and tensor table come from ranged reads, no data."""
    from ckptkit.formats.gguf_write import TensorSlot, header_bytes, kv
    from hubserver import VirtualFile
    slots = [TensorSlot(f"blk.{i}.ffn_up.weight", (8192, 16384), 1) for i in range(16)]
    kvs = [kv("general.architecture", "llama"), kv("tokenizer.ggml.tokens", [f"t{i}" for i in range(50_000)])]
    head, offsets = header_bytes(kvs, slots)
    size = len(head) + offsets[-1] + slots[-1].nbytes
    hub.add_repo("big/gguf-remote", {"model.gguf": VirtualFile(head, size)})
    hub.reset_stats()
    idx = api.inspect("big/gguf-remote")
    assert idx.format == "gguf" and len(idx.tensors) == 16
    assert idx.tensors["blk.3.ffn_up.weight"].shape == (8192, 16384)
    assert idx.tensors["blk.3.ffn_up.weight"].offset == len(head) + offsets[3]
    assert len(idx.metadata["tokenizer.ggml.tokens"]) == 50_000
    assert idx.total_bytes == 16 * 8192 * 16384 * 2
    assert hub.bytes_sent < 4 * len(head) + (1 << 20)   # header-sized, not 4 GB
    assert len(hub.requests) <= 4


def test_one_file_of_a_hub_repo(tiny_model, hub, hf_cache, tmp_path):
    """Repos of GGUF quantisations hold several models: hf://org/name/file.gguf picks one,
    and naming one part of a split GGUF reads all its parts."""
    from ckptkit.conversion import convert_to_gguf
    from ckptkit.errors import SourceError
    d = tiny_model("llama")
    one = tmp_path / "one.gguf"
    convert_to_gguf(str(d), one, outtype="q8_0", vocab=False)
    parts = convert_to_gguf(str(d), tmp_path / "split.gguf", outtype="f32", split_max_size="60K",
                            vocab=False).outputs
    files = {"m-Q8_0.gguf": one.read_bytes(), "m-F16.gguf": one.read_bytes()}
    files.update({f"f32/{p.name}": p.read_bytes() for p in parts})
    hub.add_repo("quants/tiny-GGUF", files)
    with pytest.raises(SourceError, match="several GGUF models.*hf://quants/tiny-GGUF/m-F16.gguf"):
        api.inspect("quants/tiny-GGUF")
    hub.reset_stats()
    idx = api.inspect("hf://quants/tiny-GGUF/m-Q8_0.gguf")
    assert idx.format == "gguf" and [f.name for f in idx.files] == ["m-Q8_0.gguf"]
    assert len([r for r in hub.requests if "/api/" in r.path]) == 1   # one listing
    whole = api.inspect(f"hf://quants/tiny-GGUF/f32/{parts[1].name}")
    assert len(whole.files) == len(parts) and whole.total_parameters == idx.total_parameters
    with pytest.raises(SourceError, match="no such file"):
        api.inspect("hf://quants/tiny-GGUF/m-Q4_K_M.gguf")
