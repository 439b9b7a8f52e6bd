"""The local Hub server against unmodified huggingface_hub, and HubSource against the server."""
from __future__ import annotations

import hashlib
import json
import os
import random
import time

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from ckptkit.errors import FormatError, SourceError, UnsafeInputError, UnsupportedError
from ckptkit.sources.hub import HubSource, looks_like_repo_id, parse_hub_spec
from hubserver import VirtualFile

TOKEN = "hf_test_secret_token"
HUGE = 700 * 10**9


def _safetensors(seed: int, names=("a.weight", "b.bias")) -> bytes:
    rng = np.random.default_rng(seed)
    return st_save({n: rng.standard_normal((8, 4 + i)).astype(np.float32) for i, n in enumerate(names)},
                   metadata={"format": "pt"})


@pytest.fixture(scope="module")
def repos(hub_server):
    """Repos registered once for this module, under names no other module uses."""
    tiny = {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 4}).encode(),
        "model.safetensors": _safetensors(1),
        "nested/dir/model.safetensors": _safetensors(2, ("x",)),
        "nested/dir/config.json": b'{"nested": true}',
        "empty.txt": b"",
    }
    hub_server.add_repo("hubtest/tiny", tiny)
    s1, s2 = _safetensors(3, ("l0.w", "l0.b")), _safetensors(4, ("l1.w",))
    index = {"metadata": {"total_size": 123},
             "weight_map": {"l0.w": "model-00001-of-00002.safetensors", "l0.b": "model-00001-of-00002.safetensors",
                            "l1.w": "model-00002-of-00002.safetensors"}}
    sharded = {"model.safetensors.index.json": json.dumps(index).encode(),
               "model-00001-of-00002.safetensors": s1, "model-00002-of-00002.safetensors": s2}
    hub_server.add_repo("hubtest/sharded", sharded)
    head = _safetensors(5)[:200]
    hub_server.add_repo("hubtest/huge", {"model.safetensors": VirtualFile(head, HUGE), "config.json": b"{}"})
    hub_server.add_repo("hubtest/private", {"config.json": b'{"secret": 1}'}, private=True, token=TOKEN)
    hub_server.add_repo("hubtest/gated", {"config.json": b'{"gated": 1}'}, gated=True, token=TOKEN)
    return {"tiny": tiny, "sharded": sharded, "huge_head": head}


def _fast(repo, **kw):
    kw.setdefault("timeout", 5)
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.01)
    return HubSource(repo, **kw)


# ---- unmodified huggingface_hub against the server ---------------------------------------------

def test_hf_hub_download_uses_etag_cache(hub, repos, hf_cache):
    from huggingface_hub import hf_hub_download

    p = hf_hub_download("hubtest/tiny", "model.safetensors", cache_dir=hf_cache)
    assert open(p, "rb").read() == repos["tiny"]["model.safetensors"]
    assert hub.head_sha("hubtest/tiny") in p
    assert hub.count("GET", "/resolve/") == 1
    hub.reset_stats()
    p2 = hf_hub_download("hubtest/tiny", "model.safetensors", cache_dir=hf_cache)
    assert p2 == p
    # cached: only the HEAD to compare ETags, no body
    assert [r.method for r in hub.requests] == ["HEAD"]
    assert hub.bytes_sent == 0
    blob = os.path.realpath(p)
    assert os.path.basename(blob) == hashlib.sha256(repos["tiny"]["model.safetensors"]).hexdigest()
    small = hf_hub_download("hubtest/tiny", "config.json", cache_dir=hf_cache)
    data = repos["tiny"]["config.json"]
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert os.path.basename(os.path.realpath(small)) == git_sha1


def test_hf_api_model_info_tree_and_errors(hub, repos):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()
    info = api.model_info("hubtest/tiny", files_metadata=True)
    assert info.sha == hub.head_sha("hubtest/tiny")
    sib = {s.rfilename: s for s in info.siblings}
    assert set(sib) == set(repos["tiny"])
    for name, data in repos["tiny"].items():
        assert sib[name].size == len(data)
    st = sib["model.safetensors"]
    assert st.lfs is not None and st.lfs.sha256 == hashlib.sha256(repos["tiny"]["model.safetensors"]).hexdigest()
    assert sib["config.json"].lfs is None
    assert sorted(api.list_repo_files("hubtest/tiny")) == sorted(repos["tiny"])
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("hubtest/tiny")}
    assert top["nested"] == "RepoFolder" and "nested/dir/config.json" not in top
    sub = [e.path for e in api.list_repo_tree("hubtest/tiny", "nested/dir")]
    assert sorted(sub) == ["nested/dir/config.json", "nested/dir/model.safetensors"]
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("hubtest/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("hubtest/tiny", revision="no-such-branch")
    from huggingface_hub import hf_hub_download

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("hubtest/tiny", "missing.json")


def test_get_safetensors_metadata_single_and_sharded(hub, repos):
    from huggingface_hub import get_safetensors_metadata

    single = get_safetensors_metadata("hubtest/tiny")
    assert not single.sharded
    tensors = single.files_metadata["model.safetensors"].tensors
    assert {k: (v.dtype, v.shape) for k, v in tensors.items()} == {"a.weight": ("F32", [8, 4]),
                                                                    "b.bias": ("F32", [8, 5])}
    sharded = get_safetensors_metadata("hubtest/sharded")
    assert sharded.sharded and sharded.metadata == {"total_size": 123}
    assert set(sharded.files_metadata) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert sharded.parameter_count == {"F32": 8 * 4 + 8 * 5 + 8 * 4}
    ranged = [r for r in hub.requests if r.method == "GET" and r.range]
    assert ranged and all(r.range == "bytes=0-100000" for r in ranged)


def test_snapshot_download_and_hub_redirects(hub, repos, hf_cache):
    from huggingface_hub import hf_hub_download, snapshot_download

    folder = snapshot_download("hubtest/sharded", cache_dir=hf_cache)
    for name, data in repos["sharded"].items():
        assert open(os.path.join(folder, name), "rb").read() == data
    # LFS files through a CDN-style 302 on another origin
    hub.lfs_redirect = True
    p = hf_hub_download("hubtest/tiny", "model.safetensors", cache_dir=hf_cache, force_download=True)
    assert open(p, "rb").read() == repos["tiny"]["model.safetensors"]
    assert hub.count("GET", "/cdn/") == 1


# ---- HubSource -----------------------------------------------------------------------------------

def test_files_listing_is_one_request(hub, repos, hf_cache):
    src = _fast("hubtest/tiny")
    files = src.files()
    assert files == {k: len(v) for k, v in repos["tiny"].items()}
    assert src.commit_sha == hub.head_sha("hubtest/tiny")
    src.files()
    assert [(r.method, r.path) for r in hub.requests] == [("GET", "/api/models/hubtest/tiny")]


def test_read_head_is_one_ranged_get(hub, repos, hf_cache):
    src = _fast("hubtest/tiny")
    src.files()
    hub.reset_stats()
    data, size = src.read_head("model.safetensors", 100)
    full = repos["tiny"]["model.safetensors"]
    assert data == full[:100] and size == len(full)
    assert [(r.method, r.range) for r in hub.requests] == [("GET", "bytes=0-99")]
    assert hub.requests[0].path == f"/hubtest/tiny/resolve/{src.commit_sha}/model.safetensors"
    # asking for more than the file holds returns the file
    data, size = src.read_head("config.json", 1 << 20)
    assert data == repos["tiny"]["config.json"] and size == len(data)
    assert src.read_head("empty.txt", 10) == (b"", 0)


def test_ranged_reads_are_byte_exact(hub, repos, hf_cache):
    src = _fast("hubtest/tiny")
    full = repos["tiny"]["model.safetensors"]
    rnd = random.Random(7)
    spans = [(0, 1), (len(full) - 1, 1), (0, len(full))] + [
        (o, rnd.randrange(0, len(full) - o + 1)) for o in (rnd.randrange(len(full)) for _ in range(20))
    ]
    for off, n in spans:
        assert src.read("model.safetensors", off, n) == full[off : off + n], (off, n)
    got = src.map(lambda s: src.read("model.safetensors", *s), spans)
    assert got == [full[o : o + n] for o, n in spans]
    assert src.read_file("config.json") == repos["tiny"]["config.json"]
    before = len(hub.requests)
    with pytest.raises(FormatError, match="past the end"):
        src.read("model.safetensors", len(full) - 2, 3)
    with pytest.raises(SourceError, match="no such file"):
        src.read("nope.safetensors", 0, 1)
    assert len(hub.requests) == before  # refused from the listing, no request
    assert b"".join(src.stream("model.safetensors", 3, None, chunk=50)) == full[3:]


def test_virtual_file_ranges(hub, repos, hf_cache):
    src = _fast("hubtest/huge")
    assert src.files()["model.safetensors"] == HUGE
    head = repos["huge_head"]
    data, size = src.read_head("model.safetensors", 64)
    assert data == head[:64] and size == HUGE
    assert src.read("model.safetensors", 150, 100) == head[150:] + bytes(50)
    assert src.read("model.safetensors", 500 * 10**9, 4096) == bytes(4096)
    assert src.read("model.safetensors", HUGE - 3, 3) == bytes(3)
    assert hub.bytes_sent < 10_000


def test_revision_pinning(hub, hf_cache):
    sha1 = hub.add_repo("hubtest/moving", {"config.json": b'{"v": 1}', "w.safetensors": b"A" * 64})
    hub.tag("hubtest/moving", "v1")
    src = _fast("hubtest/moving")
    assert src.commit_sha == sha1
    sha2 = hub.add_commit("hubtest/moving", {"config.json": b'{"v": 2}', "w.safetensors": b"B" * 64})
    assert sha2 != sha1
    # the open source stays on its commit while main moves
    assert src.read_file("config.json") == b'{"v": 1}'
    assert src.read("w.safetensors", 10, 4) == b"AAAA"
    assert _fast("hubtest/moving").read_file("config.json") == b'{"v": 2}'
    for rev in ("v1", sha1):
        old = _fast("hubtest/moving", revision=rev)
        assert old.commit_sha == sha1 and old.read_file("config.json") == b'{"v": 1}'
    repo, rev, sub = parse_hub_spec(f"hf://hubtest/moving@{sha1}")
    assert HubSource(repo, revision=rev, subfolder=sub).read("w.safetensors", 0, 2) == b"AA"
    with pytest.raises(SourceError, match="revision 'nope' not found"):
        _fast("hubtest/moving", revision="nope").files()
    with pytest.raises(SourceError, match="repository not found"):
        _fast("hubtest/absent").files()


def test_subfolder(hub, repos, hf_cache):
    repo, rev, sub = parse_hub_spec("hf://hubtest/tiny/nested/dir")
    src = _fast(repo, revision=rev, subfolder=sub)
    assert src.files() == {"model.safetensors": len(repos["tiny"]["nested/dir/model.safetensors"]),
                           "config.json": len(repos["tiny"]["nested/dir/config.json"])}
    assert src.read_file("config.json") == b'{"nested": true}'
    data, _ = src.read_head("model.safetensors", 16)
    assert data == repos["tiny"]["nested/dir/model.safetensors"][:16]


@pytest.mark.parametrize("spec,revision,expected", [
    ("org/name", None, ("org/name", None, "")),
    ("org/name@v1.0", None, ("org/name", "v1.0", "")),
    ("org/name", "dev", ("org/name", "dev", "")),
    ("org/name@refs/pr/3", None, ("org/name", "refs/pr/3", "")),
    ("hf://org/name", None, ("org/name", None, "")),
    ("hf://org/name@dev/sub/dir", None, ("org/name", "dev", "sub/dir")),
    ("hf://org/name/sub/dir", None, ("org/name", None, "sub/dir")),
    ("hf://org/name@refs%2Fpr%2F1/sub", None, ("org/name", "refs/pr/1", "sub")),
    ("hf://org/name@refs/pr/1/sub", None, ("org/name", "refs/pr/1", "sub")),
    ("hf://gpt2@main", None, ("gpt2", "main", "")),
    ("gpt2", None, ("gpt2", None, "")),
    ("bert-base-uncased@v1", None, ("bert-base-uncased", "v1", "")),
])
def test_parse_hub_spec(spec, revision, expected):
    assert parse_hub_spec(spec, revision) == expected


@pytest.mark.parametrize("spec,error", [
    ("org/name@v1", SourceError),  # with revision="v2": two revisions
    ("not a repo", SourceError),
    ("org/na--me", SourceError),
    ("hf://datasets/org/name", UnsupportedError),
    ("hf://org/name/../x", UnsafeInputError),
    ("org/name@", SourceError),
])
def test_parse_hub_spec_rejects(spec, error):
    with pytest.raises(error):
        parse_hub_spec(spec, "v2" if spec == "org/name@v1" else None)


def test_looks_like_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_repo_id("org/name") and looks_like_repo_id("org/name@v1") and looks_like_repo_id("hf://x/y")
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not looks_like_repo_id("org/local")  # an existing path wins
    assert not looks_like_repo_id("model.safetensors") and not looks_like_repo_id("/abs/path")
    assert not looks_like_repo_id("a/b/c") and not looks_like_repo_id("../x")
    assert looks_like_repo_id("gpt2") and looks_like_repo_id("bert-base-uncased@main")
    (tmp_path / "gpt2").mkdir()
    assert not looks_like_repo_id("gpt2")  # a local folder of that name wins


def test_private_and_gated_repos(hub, repos, hf_cache, monkeypatch):
    for repo in ("hubtest/private", "hubtest/gated"):
        with pytest.raises(SourceError, match="HF_TOKEN"):
            _fast(repo).files()
        with pytest.raises(SourceError, match="HF_TOKEN"):
            _fast(repo, token="hf_wrong").files()
        assert _fast(repo, token=TOKEN).read_file("config.json") in (b'{"secret": 1}', b'{"gated": 1}')
    hub.reset_stats()
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # huggingface_hub's own token resolution, read at call time
    assert _fast("hubtest/private").read_file("config.json") == b'{"secret": 1}'
    assert all(r.authorization for r in hub.requests)


def test_cached_files_are_read_without_requests(hub, repos, hf_cache):
    from huggingface_hub import hf_hub_download

    sha = hub.head_sha("hubtest/tiny")
    cached = hf_hub_download("hubtest/tiny", "model.safetensors", revision=sha, cache_dir=hf_cache)
    src = _fast("hubtest/tiny")  # HF_HUB_CACHE is hf_cache (set by the fixture)
    src.files()
    hub.reset_stats()
    full = repos["tiny"]["model.safetensors"]
    assert src.read_head("model.safetensors", 10) == (full[:10], len(full))
    assert src.read("model.safetensors", 5, 20) == full[5:25]
    assert str(src.local_path("model.safetensors")) == cached
    assert hub.requests == []
    assert src.local_path("config.json") is None
    src.read_file("config.json")
    assert hub.count("GET") == 1


def test_offline_mode_reads_cache_and_says_what_is_missing(hub, repos, hf_cache, monkeypatch):
    from huggingface_hub import hf_hub_download, snapshot_download

    hf_hub_download("hubtest/tiny", "config.json", cache_dir=hf_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset_stats()
    src = _fast("hubtest/tiny")
    assert src.read_file("config.json") == repos["tiny"]["config.json"]
    assert src.commit_sha == hub.head_sha("hubtest/tiny")
    with pytest.raises(SourceError, match="offline"):
        src.read_head("model.safetensors", 8)  # not listed offline: only cached files are known
    with pytest.raises(SourceError, match="not in the local HF cache"):
        _fast("hubtest/sharded").files()
    assert hub.requests == []
    # with a full snapshot (and its tree listing) cached, uncached files are known but not readable
    monkeypatch.delenv("HF_HUB_OFFLINE")
    snapshot_download("hubtest/sharded", cache_dir=hf_cache, allow_patterns=["*.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset_stats()
    src = _fast("hubtest/sharded")
    assert src.files() == {k: len(v) for k, v in repos["sharded"].items()}
    assert json.loads(src.read_file("model.safetensors.index.json"))["metadata"] == {"total_size": 123}
    with pytest.raises(SourceError, match="not in the local HF cache and HF_HUB_OFFLINE is set"):
        src.read_head("model-00001-of-00002.safetensors", 8)
    assert hub.requests == []


def test_redirects_are_followed(hub, hf_cache):
    data = _safetensors(9)
    hub.add_repo("hubtest/old-name", {"model.safetensors": data, "config.json": b"{}"})
    hub.rename_repo("hubtest/old-name", "hubtest/new-name")
    src = _fast("hubtest/old-name")
    assert src.read_head("model.safetensors", 32) == (data[:32], len(data))
    assert hub.count(contains="/api/models/hubtest/old-name") == 1  # answered by a 307
    assert hub.count("GET", "/hubtest/new-name/resolve/") == 1  # later reads use the new name
    hub.lfs_redirect = True
    hub.reset_stats()
    src2 = _fast("hubtest/new-name")
    assert src2.read("model.safetensors", 8, 40) == data[8:48]
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert len(cdn) == 1 and cdn[0].range == "bytes=8-47"


def test_download_resumes_and_verifies(hub, repos, hf_cache, tmp_path):
    src = _fast("hubtest/tiny")
    full = repos["tiny"]["model.safetensors"]
    dest = tmp_path / "out" / "model.safetensors"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors.incomplete").write_bytes(full[:40])
    src.files()
    hub.reset_stats()
    assert src.download("model.safetensors", dest).read_bytes() == full
    assert [r.range for r in hub.requests] == [f"bytes=40-{len(full) - 1}"]
    assert not (tmp_path / "out" / "model.safetensors.incomplete").exists()
    assert src.download("config.json", tmp_path / "c.json").read_bytes() == repos["tiny"]["config.json"]


def test_source_errors_after_listing(hub, hf_cache):
    hub.add_repo("hubtest/vanishing", {"config.json": b"{}"})
    src = _fast("hubtest/vanishing")
    src.files()
    hub.remove_repo("hubtest/vanishing")
    with pytest.raises(SourceError) as e:
        src.read_file("config.json")
    assert "hubtest/vanishing" in str(e.value) and "\n" not in str(e.value)


def test_file_metadata_headers(hub, repos):
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    sha = hub.head_sha("hubtest/huge")
    meta = get_hf_file_metadata(hf_hub_url("hubtest/huge", "model.safetensors"))
    assert (meta.commit_hash, meta.size) == (sha, HUGE)
    assert meta.etag and len(meta.etag) == 64  # LFS: sha256-like
    hub.lfs_redirect = True  # metadata then comes from the 302 itself, as with the Hub's CDN
    meta2 = get_hf_file_metadata(hf_hub_url("hubtest/huge", "model.safetensors"))
    assert (meta2.commit_hash, meta2.size, meta2.etag) == (sha, HUGE, meta.etag)
    assert "/cdn/" in meta2.location and hub.count("HEAD", "/cdn/") == 0
    small = get_hf_file_metadata(hf_hub_url("hubtest/tiny", "config.json"))
    assert small.size == len(repos["tiny"]["config.json"]) and len(small.etag) == 40


def test_server_from_a_plain_script(tmp_path):
    """The bench's use: a private server, a folder registered from disk, latency, clean close."""
    import httpx2

    from hubserver import HubServer

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_bytes(b'{"a": 1}')
    (tmp_path / "m" / "w.safetensors").write_bytes(_safetensors(11))
    with HubServer(latency=0.05) as server:
        sha = server.add_repo_from_dir("script/model", tmp_path / "m")
        src = HubSource("script/model", endpoint=server.url, timeout=5)
        t0 = time.monotonic()
        assert src.read_file("config.json") == b'{"a": 1}'
        assert time.monotonic() - t0 >= 0.1  # two requests, 50 ms each
        assert src.commit_sha == sha
        assert src.read("w.safetensors", 0, 8) == (tmp_path / "m" / "w.safetensors").read_bytes()[:8]
        assert server.count() == 3
        url = server.url
    with pytest.raises(httpx2.TransportError):
        httpx2.get(url + "/api/models/script/model", timeout=1)


def test_virtual_file_is_not_materialised():
    vf = VirtualFile(b"abc", 10)
    assert vf.read(0, 10) == b"abc" + bytes(7)
    assert vf.read(2, 5) == b"c\0\0"
    assert list(VirtualFile(b"", 3 << 20).chunks(0, 3 << 20))[0] == bytes(1 << 20)
    with pytest.raises(ValueError):
        VirtualFile(b"abcd", 2)


def test_reads_run_concurrently(hub, repos, hf_cache):
    src = _fast("hubtest/tiny")
    src.files()
    hub.latency = 0.2
    full = repos["tiny"]["model.safetensors"]
    spans = [(i * 10, 10) for i in range(8)]
    t0 = time.monotonic()
    assert src.map(lambda s: src.read("model.safetensors", *s), spans) == [full[o : o + n] for o, n in spans]
    assert time.monotonic() - t0 < 1.0  # 8 x 200 ms one after the other would take 1.6 s
    assert src.concurrency >= 8 and hub.count("GET", "/resolve/") == 8
