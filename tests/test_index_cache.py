"""The parsed-index cache: a second inspect reuses the first one's work, never its mistakes.

Hub repos come from the local Hub server (its request log shows what the second run asked
for); local folders are copies whose mtimes the tests set, so the cache's "too recent to
trust" rule does not hide what is being tested."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from ckptkit import api, index_cache
from ckptkit.cli import main
from ckptkit.errors import CkptError
from ckptkit.index import TensorIndex, Unreadable
from ckptkit.index_codec import decode_index, encode_index
from ckptkit.sources.local import LocalSource

OLD_NS = 1_600_000_000 * 10**9  # September 2020: long before any test runs


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty index cache of this test's own (under HF_ASSETS_CACHE), switched on."""
    monkeypatch.setenv("HF_ASSETS_CACHE", str(tmp_path / "assets"))
    monkeypatch.delenv(index_cache.ENV_NO_CACHE, raising=False)
    return tmp_path / "assets" / "ckptkit" / f"index-v{index_cache.VERSION}"


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Labels of the sources whose headers were really read (not taken from the cache)."""
    seen: list[str] = []
    real = api._read_index

    def counting(source, *args):
        seen.append(source.label)
        return real(source, *args)

    monkeypatch.setattr(api, "_read_index", counting)
    return seen


def _aged(d: Path) -> Path:
    """``d`` with every file's mtime set long ago (as a downloaded model's would be)."""
    for p in d.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(OLD_NS, OLD_NS))
    return d


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return _aged(dest)


def _cli(*args: str) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def _inspect_json(spec: str, *extra: str) -> str:
    return _cli("inspect", spec, "--json", "--no-progress", *extra)


def _entries(cache_dir: Path, suffix: str) -> list[Path]:
    return sorted(cache_dir.glob(f"*{suffix}")) if cache_dir.is_dir() else []


# ---- Hub repos -----------------------------------------------------------------------------------

def test_hub_second_inspect_reads_no_headers(tiny_model, hub, hf_cache, cache_dir, reads):
    sha = hub.add_repo_from_dir("cache/llama", tiny_model("llama"))
    hub.reset_stats()
    first = _inspect_json("cache/llama")
    assert any(r.range for r in hub.requests)  # the headers were read by ranges
    # cold: the commit-naming GET (which brings config.json), the listing, the shard index, and
    # one header read per shard: the budget of shards + 3, the light request included
    # (the tokenizer's files, read for its facts, come on top)
    shards = len(list(tiny_model("llama").glob("*.safetensors")))
    names = [r.path.rsplit("/", 1)[-1] for r in hub.requests]
    model_reads = [n for n in names if not n.startswith(("tokenizer", "special_tokens", "generation_config"))]
    assert len(model_reads) <= shards + 3 and names.count("config.json") == 1, names
    hub.reset_stats()
    second = _inspect_json("cache/llama")
    assert second == first
    # one small GET that names main's commit (no listing); no header or tokenizer reads
    assert [(r.method, r.path) for r in hub.requests] == [("GET", "/cache/llama/resolve/main/config.json")], \
        hub.requests
    assert not any(r.range for r in hub.requests)
    # a full sha needs no request at all, and the same index serves it
    _inspect_json(f"cache/llama@{sha}")
    hub.reset_stats()
    pinned = json.loads(_inspect_json(f"cache/llama@{sha}"))
    assert hub.requests == []
    assert pinned["tensors"] == json.loads(first)["tensors"] and pinned["facts"] == json.loads(first)["facts"]
    assert pinned["source"] == f"cache/llama@{sha}"   # the label is this run's own
    assert reads == ["cache/llama"]                  # headers parsed once in all
    # and the cached report is exactly the uncached one
    assert _inspect_json("cache/llama", "--no-cache") == first


def test_first_look_is_a_revision_never_seen_here(tiny_model, hub, hf_cache, cache_dir, tmp_path):
    """``first_look`` (which starts inference's warm-up during the first requests) holds for a
    branch of a Hub repo this cache has no ref of, and for nothing else; it makes no request."""
    from ckptkit import api
    from ckptkit.index_cache import first_look
    sha = hub.add_repo_from_dir("cache/first", tiny_model("llama"))
    hub.reset_stats()
    with api.open_source("cache/first") as src:
        assert first_look(src)
    with api.open_source(str(tiny_model("llama"))) as local:
        assert not first_look(local)
    assert not hub.requests
    _inspect_json("cache/first")
    for spec, revision in (("cache/first", None), ("cache/first", sha)):
        with api.open_source(spec, revision) as src:
            assert not first_look(src), revision
    with api.open_source("cache/first", "other-branch") as src:
        assert first_look(src)


def test_hub_index_reused_by_validate_and_compare(tiny_model, hub, hf_cache, cache_dir, reads):
    sha = hub.add_repo_from_dir("cache/qwen3", tiny_model("qwen3_moe"))
    spec = f"cache/qwen3@{sha}"
    uncached = _without_seconds(_cli("validate", spec, "--json", "--no-cache"))
    assert _without_seconds(_cli("validate", spec, "--json")) == uncached
    hub.reset_stats()
    assert _without_seconds(_cli("validate", spec, "--json")) == uncached
    assert not any(r.path.endswith(".safetensors") for r in hub.requests), hub.requests
    assert _cli("compare", spec) == _cli("compare", spec, "--no-cache")
    assert reads.count(spec) == 3   # the two --no-cache runs and the first cached one


def _without_seconds(text: str) -> dict:
    doc = json.loads(text)
    doc.pop("seconds", None)
    return doc


def test_hub_offline_with_a_warm_cache(tiny_model, hub, hf_cache, cache_dir, monkeypatch):
    sha = hub.add_repo_from_dir("cache/offline", tiny_model("llama"))
    online = _inspect_json("cache/offline")     # learns main's commit, stores index and report
    pinned = _inspect_json(f"cache/offline@{sha}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset_stats()
    assert _inspect_json(f"cache/offline@{sha}") == pinned
    assert _inspect_json("cache/offline") == online  # the ref this cache saw for main
    offline_index = api.inspect(f"cache/offline@{sha}")
    assert hub.requests == []
    assert offline_index == _online_index(monkeypatch, f"cache/offline@{sha}")
    r = CliRunner().invoke(main, ["inspect", "cache/offline", "--json", "--no-cache"])
    assert r.exit_code == 2 and "HF_HUB_OFFLINE" in r.output


def _online_index(monkeypatch, spec: str) -> TensorIndex:
    with monkeypatch.context() as m:
        m.delenv("HF_HUB_OFFLINE")
        with index_cache.bypass():
            index = api.inspect(spec)
    return index


def test_new_commit_is_read_again(tiny_model, hub, hf_cache, cache_dir, reads):
    d = tiny_model("llama")
    hub.add_repo_from_dir("cache/moving", d)
    first = json.loads(_inspect_json("cache/moving"))
    files = {p.relative_to(d).as_posix(): p for p in d.rglob("*") if p.is_file()}
    config = json.loads((d / "config.json").read_text())
    files["config.json"] = json.dumps({**config, "rms_norm_eps": 1e-3}).encode()  # type: ignore[assignment]
    hub.add_commit("cache/moving", files)
    second = json.loads(_inspect_json("cache/moving"))
    assert reads == ["cache/moving", "cache/moving"]
    assert second["tensors"] == first["tensors"]


def test_branch_commit_from_the_listing_when_head_names_none(tiny_model, hub, hf_cache, cache_dir, reads):
    hub.add_repo_from_dir("cache/nohead", tiny_model("llama"))
    first = _inspect_json("cache/nohead")
    # that GET fails (no X-Repo-Commit): the listing names the commit and the cache still serves
    hub.fail(r"/resolve/main/config\.json$", "status", status=403, times=None)
    hub.reset_stats()
    assert _inspect_json("cache/nohead") == first
    assert "/api/models/cache/nohead" in [r.path for r in hub.requests]
    assert not any(r.range for r in hub.requests)
    assert reads == ["cache/nohead"]


# ---- local folders -------------------------------------------------------------------------------

def test_local_folder_cached_until_a_file_changes(tiny_model, tmp_path, cache_dir, reads):
    d = _copy(tiny_model("llama"), tmp_path / "llama")
    first = _inspect_json(str(d))
    assert _inspect_json(str(d)) == first
    assert reads == [str(d)]
    assert api.inspect(str(d)) == api.inspect(str(d)) == _uncached(str(d))
    assert reads == [str(d)] * 2   # the first inspect and the uncached one

    shard = sorted(d.glob("*.safetensors"))[0]
    os.utime(shard, ns=(OLD_NS + 10**9, OLD_NS + 10**9))  # touched: same bytes, another mtime
    assert _inspect_json(str(d)) == first
    assert len(reads) == 3

    # rewritten with other content: a different dtype and size, seen at once
    from safetensors import safe_open
    with safe_open(str(shard), "np") as f:
        arrays = {k: f.get_tensor(k).astype(np.float16) for k in f.keys()}
    save_file(arrays, str(shard), metadata={"format": "pt"})
    os.utime(shard, ns=(OLD_NS + 2 * 10**9,) * 2)
    changed = json.loads(_inspect_json(str(d)))
    assert changed != json.loads(first)
    assert {t["dtype"] for t in changed["tensors"] if t["file"] == shard.name} == {"F16"}
    assert _inspect_json(str(d)) == json.dumps(changed) + "\n" == _inspect_json(str(d), "--no-cache")


def test_local_same_size_same_mtime_other_inode(tiny_model, tmp_path, cache_dir, reads):
    """A file replaced by another (rename over it) with the same size and mtime is re-read."""
    d = _copy(tiny_model("llama"), tmp_path / "m")
    api.inspect(str(d))
    cfg = d / "config.json"
    config = json.loads(cfg.read_text())
    eps = config["rms_norm_eps"]
    text = cfg.read_text().replace(repr(eps), repr(eps * 2))
    assert len(text) == len(cfg.read_text()) and text != cfg.read_text()
    tmp = d / "config.json.new"
    tmp.write_text(text)
    os.replace(tmp, cfg)
    os.utime(cfg, ns=(OLD_NS, OLD_NS))
    assert api.inspect(str(d)).config["rms_norm_eps"] == eps * 2
    assert len(reads) == 2


def test_local_new_file_changes_the_key(tiny_model, tmp_path, cache_dir, reads):
    d = _copy(tiny_model("llama", tokenizer=False), tmp_path / "m")
    assert "chat_template.jinja" not in api.inspect(str(d)).tokenizer_files
    (d / "chat_template.jinja").write_text("{{ messages }}")
    _aged(d)
    assert api.inspect(str(d)).tokenizer_files["chat_template.jinja"] == "{{ messages }}"
    assert len(reads) == 2


def test_recently_written_files_are_not_cached(tiny_model, tmp_path, cache_dir, reads):
    """A file written within the last moments could change again without its mtime changing."""
    d = tmp_path / "fresh"
    shutil.copytree(tiny_model("llama"), d)
    for p in d.iterdir():
        os.utime(p)  # now
    api.inspect(str(d))
    api.inspect(str(d))
    assert len(reads) == 2 and _entries(cache_dir, ".index") == []


def test_single_file_and_gguf(tiny_model, tmp_path, cache_dir, reads):
    d = _copy(tiny_model("llama"), tmp_path / "m")
    shard = sorted(d.glob("*.safetensors"))[0]
    one = api.inspect(str(shard))
    assert api.inspect(str(shard)) == one and list(one.tensors) and reads == [str(shard)]
    gguf_path = _gguf(tmp_path / "t.gguf")
    g = api.inspect(str(gguf_path))
    assert g.format == "gguf" and api.inspect(str(gguf_path)) == g == _uncached(str(gguf_path))
    assert reads.count(str(gguf_path)) == 2  # the cached read, then the uncached one


def test_single_file_through_a_link_follows_the_target(tiny_model, tmp_path, cache_dir, reads):
    """As in an HF cache snapshot: model.safetensors links to blobs/<hash>, another name."""
    d = _copy(tiny_model("llama"), tmp_path / "m")
    shard = sorted(d.glob("*.safetensors"))[0]
    blob = tmp_path / "blobs" / "0123abcd"
    blob.parent.mkdir()
    shutil.move(shard, blob)
    link = tmp_path / "snap" / "model.safetensors"
    link.parent.mkdir()
    link.symlink_to(blob)
    first = api.inspect(str(link))
    assert api.inspect(str(link)) == first and len(reads) == 1
    from safetensors import safe_open
    with safe_open(str(blob), "np") as f:
        arrays = {k: f.get_tensor(k).astype(np.float16) for k in f.keys()}
    save_file(arrays, str(blob))
    os.utime(blob, ns=(OLD_NS, OLD_NS))
    assert {t.dtype for t in api.inspect(str(link)).tensors.values()} == {"F16"}
    assert len(reads) == 2


def _gguf(path: Path) -> Path:
    import gguf
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_tensor("token_embd.weight", np.ones((3, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return _aged(path.parent) / path.name


def _uncached(spec: str) -> TensorIndex:
    with index_cache.bypass():
        return api.inspect(spec)


# ---- damaged entries -----------------------------------------------------------------------------

def _forge(path: Path, head_edit=None, payload: bytes | None = None) -> None:
    """Rewrite a cache file with a consistent checksum, so only the rest of the checks stand."""
    data = path.read_bytes()
    line, _, body = data.partition(b"\n")
    head = json.loads(line)
    body = body if payload is None else payload
    head.update(length=len(body), sha256=hashlib.sha256(body).hexdigest())
    if head_edit:
        head_edit(head)
    path.write_bytes(json.dumps(head).encode() + b"\n" + body)


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(4096)),
    "no_newline": lambda p: p.write_bytes(b"{" * 100),
    "bit_flip": lambda p: p.write_bytes(p.read_bytes()[:-10] + bytes([p.read_bytes()[-10] ^ 1])
                                        + p.read_bytes()[-9:]),
    "wrong_version": lambda p: _forge(p, lambda h: h.update(version=999)),
    "wrong_key": lambda p: _forge(p, lambda h: h.update(key="0" * 64)),
    "head_not_object": lambda p: p.write_bytes(b"[1,2]\n" + p.read_bytes().partition(b"\n")[2]),
    "payload_not_zlib": lambda p: _forge(p, payload=b"not zlib at all"),
    "payload_not_json": lambda p: _forge(p, payload=__import__("zlib").compress(b"{nope")),
    "payload_wrong_shape": lambda p: _forge(p, payload=__import__("zlib").compress(b'{"codec": 1, "names": 5}')),
    "payload_deep": lambda p: _forge(p, payload=__import__("zlib").compress(b"[" * 100_000)),
}


# what makes an entry another one's: fields of the head, with a consistent checksum
STALE = {
    ".index": {"stale_stamps": lambda p: _forge(p, lambda h: h.update(stamps=[]))},
    ".report": {"other_build": lambda p: _forge(p, lambda h: h.update(code="0" * 64)),
                "other_index": lambda p: _forge(p, lambda h: h.update(index="0" * 64)),
                "other_label": lambda p: _forge(p, lambda h: h.update(label="elsewhere"))},
}
CASES = [(which, kind, fn) for which in (".index", ".report")
         for kind, fn in [*DAMAGE.items(), *STALE[which].items()]
         # a JSON object with a consistent checksum is a forgery, not damage: the report text is
         # not parsed (test_forged_entry_is_read... shows what a forgery does)
         if (which, kind) != (".report", "payload_wrong_shape")]


@pytest.mark.parametrize(("which", "kind", "damage"), CASES, ids=[f"{w}-{k}" for w, k, _ in CASES])
def test_damaged_entry_is_ignored_and_rebuilt(which, kind, damage, tiny_model, tmp_path, cache_dir, reads):
    d = _copy(tiny_model("qwen3_moe"), tmp_path / "m")
    first = _inspect_json(str(d))
    (entry,) = _entries(cache_dir, which)
    intact = entry.read_bytes()
    damage(entry)
    assert entry.read_bytes() != intact
    assert _inspect_json(str(d)) == first
    assert len(reads) == (2 if which == ".index" else 1)  # a bad index is read again from the files
    assert entry.read_bytes() == intact                   # and the entry rebuilt as it was
    assert _inspect_json(str(d)) == first and len(reads) <= 2
    assert _entries(cache_dir, which) == [entry]


def test_forged_entry_is_read_and_no_cache_ignores_it(tiny_model, tmp_path, cache_dir, monkeypatch):
    """Proof both ways: a consistent entry saying something else is believed by a normal run
    (the cache is really read) and never by --no-cache or CKPTKIT_NO_CACHE=1."""
    d = _copy(tiny_model("llama"), tmp_path / "m")
    true = api.inspect(str(d))
    (entry,) = _entries(cache_dir, ".index")
    zlib = __import__("zlib")
    doc = json.loads(zlib.decompress(entry.read_bytes().partition(b"\n")[2]))
    doc["dtypes"] = ["Q9_X" for _ in doc["dtypes"]]
    _forge(entry, payload=zlib.compress(json.dumps(doc).encode()))
    assert {t.dtype for t in api.inspect(str(d)).tensors.values()} == {"Q9_X"}
    assert '"Q9_X"' not in _inspect_json(str(d), "--no-cache")
    monkeypatch.setenv(index_cache.ENV_NO_CACHE, "1")
    assert api.inspect(str(d)) == true


def test_no_cache_neither_reads_nor_writes(tiny_model, tmp_path, cache_dir, monkeypatch):
    d = _copy(tiny_model("llama"), tmp_path / "m")
    _inspect_json(str(d), "--no-cache")
    _cli("validate", str(d), "--no-cache")
    _cli("compare", str(d), "--no-cache")
    assert not cache_dir.exists()
    monkeypatch.setenv(index_cache.ENV_NO_CACHE, "1")
    _inspect_json(str(d))
    _cli("validate", str(d))
    assert not cache_dir.exists()
    monkeypatch.delenv(index_cache.ENV_NO_CACHE)
    _cli("validate", str(d))
    assert _entries(cache_dir, ".index")


def test_least_recently_used_entries_go_first(tiny_model, tmp_path, cache_dir, monkeypatch):
    a, b, c = (_copy(tiny_model("llama"), tmp_path / n) for n in "abc")
    _inspect_json(str(a))
    one = sum(p.stat().st_size for p in cache_dir.iterdir())   # one model's index and report
    monkeypatch.setattr(index_cache, "MAX_BYTES", int(2.5 * one))
    for p in cache_dir.iterdir():
        os.utime(p, ns=(OLD_NS, OLD_NS))
    _inspect_json(str(b))
    for p in cache_dir.iterdir():
        if p.stat().st_mtime_ns > OLD_NS:
            os.utime(p, ns=(OLD_NS + 10**9,) * 2)
    assert len(_entries(cache_dir, ".index")) == 2
    _inspect_json(str(a))        # a hit: a is now the most recently used
    _inspect_json(str(c))        # c's entries push the cache over: b's go
    kept = {p.name for p in cache_dir.iterdir()}
    assert len(_entries(cache_dir, ".index")) == 2 and len(kept) == 4
    for d, there in ((a, True), (b, False), (c, True)):
        with LocalSource(d) as src:
            entry = index_cache.entry_for(src, tokenizer=True)
            assert entry is not None and entry.path.exists() is there, d


def test_unwritable_cache_is_no_error(tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "assets"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("HF_ASSETS_CACHE", str(blocker))
    d = _copy(tiny_model("llama"), tmp_path / "m")
    assert _inspect_json(str(d)) == _inspect_json(str(d), "--no-cache")


# ---- hostile input: strict on the first read, and every read -----------------------------------

def test_hostile_repos_fail_the_same_every_time(tmp_path, cache_dir, reads):
    sys.path.insert(0, str(Path(__file__).parent / "hostile" / "repos"))
    import repo_hostile as R
    root = tmp_path / "repos"
    root.mkdir()
    for name in R.REPOS:
        R.build(name, root)
    _aged(root)
    for name in sorted(R.REPOS):
        errors = []
        for _ in range(2):
            with pytest.raises(CkptError) as e:
                api.inspect(str(root / name))
            errors.append((type(e.value), e.value.message))
        assert errors[0] == errors[1], name
    assert _entries(cache_dir, ".index") == []


# ---- the codec -----------------------------------------------------------------------------------

def test_codec_round_trip_is_exact(tiny_model, tmp_path):
    (tmp_path / "g").mkdir()
    for spec in (str(tiny_model("gemma3_text")), str(_gguf(tmp_path / "g" / "t.gguf"))):
        with index_cache.bypass():
            index = api.inspect(spec)
        index.tokenizer_files["chat_template.jinja"] = Unreadable("not UTF-8")
        doc = encode_index(index)
        assert doc is not None
        back = decode_index(json.loads(json.dumps(doc)), index.source)
        assert back == index
        assert all(type(t.shape) is tuple for t in back.tensors.values())
        if index.shard_index is not None:  # the weight map by columns, in its place and order
            assert doc["weight_map"] is not None and doc["shard_index"]["weight_map"] is None
            assert list(back.shard_index) == list(index.shard_index)
            assert list(back.shard_index["weight_map"].items()) == list(index.shard_index["weight_map"].items())
            # a name that is no tensor: the map is kept as it is
            index.shard_index["weight_map"] = {"not.a.tensor": "x.safetensors", **index.shard_index["weight_map"]}
            doc = encode_index(index)
            assert doc is not None and doc["weight_map"] is None
            assert decode_index(json.loads(json.dumps(doc)), index.source) == index


@pytest.mark.parametrize("odd", [{"k": (1, 2)}, {1: "int key"}, {"k": b"bytes"}, {"k": {1.5}}])
def test_codec_refuses_what_json_would_change(odd, tiny_model, tmp_path):
    with index_cache.bypass():
        index = api.inspect(str(tiny_model("llama")))
    index.config = {**(index.config or {}), "extra": odd}
    assert encode_index(index) is None


def test_private_branch_commit_with_the_saved_token(tiny_model, hub, hf_cache, cache_dir, reads, monkeypatch):
    """The light commit request finds the token as huggingface_hub does (HF_TOKEN here), so a
    private repo's warm inspect is one authorised GET; without a token it falls back to the
    listing, whose error is the usual one-line one."""
    token = "hf_light_commit_test_token"
    hub.add_repo_from_dir("cache/private", tiny_model("llama"), private=True, token=token)
    monkeypatch.setenv("HF_TOKEN", token)
    first = _inspect_json("cache/private")
    hub.reset_stats()
    assert _inspect_json("cache/private") == first
    assert [(r.method, r.path, r.authorization) for r in hub.requests] == \
        [("GET", "/cache/private/resolve/main/config.json", True)]
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    r = CliRunner().invoke(main, ["inspect", "cache/private", "--json"])
    assert r.exit_code == 2 and "HF_TOKEN" in r.output and len(r.output.strip().splitlines()) == 1


def test_console_script_stores_the_cache_after_its_output(tiny_model, hub, hf_cache, cache_dir, tmp_path):
    """`python -m ckptkit` (as the console script) prints the report, exits, and a detached
    child stores the index: the next run, a separate process, reads no header."""
    import subprocess
    import time

    hub.add_repo_from_dir("cache/script", tiny_model("llama"))
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "HF_ASSETS_CACHE": str(cache_dir.parent.parent)}
    cmd = [sys.executable, "-m", "ckptkit", "inspect", "cache/script", "--json", "--no-progress"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["tensors"] and first.stderr == ""
    deadline = time.monotonic() + 30
    while not (_entries(cache_dir, ".index") and _entries(cache_dir, ".report")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _entries(cache_dir, ".index") and _entries(cache_dir, ".report")
    hub.reset_stats()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert not any(r.range for r in hub.requests)
    assert [r.path for r in hub.requests] == ["/cache/script/resolve/main/config.json"]


def test_first_look_is_kept_only_for_the_commit_config_json_names(tiny_model, hub, hf_cache, cache_dir):
    """A first inspect asks for the listing and the shard index by the branch's name while
    config.json names the commit. Here the branch moves while config.json's answer is held back:
    the listing and index name the old commit, config.json the new one, so both are asked again
    pinned to the new commit, and the report is the new commit's."""
    import threading

    hub.add_repo_from_dir("cache/moving", tiny_model("llama"))
    qwen = tiny_model("qwen2")
    hub.fail(r"/cache/moving/resolve/main/config\.json$", "stall", seconds=1.0)
    mover = threading.Timer(0.5, lambda: hub.add_commit(
        "cache/moving", {str(p.relative_to(qwen)): p for p in qwen.rglob("*") if p.is_file()}))
    mover.start()
    try:
        report = json.loads(_inspect_json("cache/moving"))
    finally:
        mover.join()
    listings = [r for r in hub.requests if r.path.startswith("/api/models/cache/moving")]
    assert len(listings) == 2, listings      # by the branch's name, then pinned to the new commit
    hub.add_repo_from_dir("cache/moved", qwen)
    new = json.loads(_inspect_json("cache/moved"))
    assert report["tensors"] == new["tensors"] and report["facts"] == new["facts"]
    assert report["family"] == new["family"] and "qwen" in json.dumps(report["family"]).lower()
