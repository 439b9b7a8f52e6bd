"""HubSource against a misbehaving server: every read is complete and exact, or a NetworkError."""
from __future__ import annotations

import time

import pytest

from ckptkit.errors import NetworkError
from ckptkit.sources.hub import HubSource

SIZE = 300_000
DATA = bytes((i * 7 + i // 251) % 256 for i in range(SIZE))
FILE = "model.safetensors"
REPO = "faults/blob"


@pytest.fixture(autouse=True, params=["stdlib", "library"])
def transport(request, monkeypatch):
    """Every fault against both ways of reading bodies (ckptkit/sources/transport.py, and
    huggingface_hub's client, used behind proxies)."""
    monkeypatch.setenv("CKPTKIT_HTTP", "" if request.param == "stdlib" else "library")
    return request.param


@pytest.fixture(scope="module")
def repo(hub_server):
    hub_server.add_repo(REPO, {FILE: DATA, "config.json": b'{"ok": true}'})
    return REPO


@pytest.fixture
def src(hub, repo, hf_cache):
    s = HubSource(repo, timeout=0.5, retries=3, backoff=0.01, max_backoff=0.05)
    s.files()  # the listing is not under test here
    hub.reset_stats()
    return s


def _gets(hub):
    return [r for r in hub.requests if r.method == "GET" and FILE in r.path]


def test_connection_reset_mid_body_is_resumed(hub, src):
    hub.fail(FILE, "reset", after_bytes=100_000)
    assert src.read(FILE, 1000, 250_000) == DATA[1000:251_000]
    gets = _gets(hub)
    assert len(gets) == 2
    start = int(gets[1].range.split("=")[1].split("-")[0])
    assert gets[1].range.endswith("-250999") and 1000 <= start <= 101_000


def test_short_body_resumes_from_last_good_byte(hub, src):
    hub.fail(FILE, "short", after_bytes=12_345)
    data, size = src.read_head(FILE, 100_000)
    assert data == DATA[:100_000] and size == SIZE
    assert [r.range for r in _gets(hub)] == ["bytes=0-99999", "bytes=12345-99999"]


def test_server_errors_then_success(hub, src):
    hub.fail(FILE, "status", status=500, times=1)
    hub.fail(FILE, "status", status=503, times=1)
    assert src.read(FILE, 5, 10) == DATA[5:15]
    assert len(_gets(hub)) == 3


def test_listing_is_retried(hub, repo, hf_cache):
    hub.fail("/api/models/", "status", status=502, times=2)
    s = HubSource(repo, timeout=1, retries=3, backoff=0.01)
    assert s.files()[FILE] == SIZE
    assert hub.count("GET", "/api/models/") == 3


def test_429_honours_retry_after(hub, src):
    hub.fail(FILE, "status", status=429, retry_after=1)
    t0 = time.monotonic()
    assert src.read(FILE, 0, 8) == DATA[:8]
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 3.0  # waited what the server asked, not the (tiny) backoff
    assert len(_gets(hub)) == 2


def test_retry_after_is_capped(hub, repo, hf_cache):
    hub.fail(FILE, "status", status=503, retry_after=3600)
    s = HubSource(repo, timeout=1, retries=2, backoff=0.01, max_retry_after=0.2)
    t0 = time.monotonic()
    assert s.read(FILE, 0, 4) == DATA[:4]
    assert time.monotonic() - t0 < 2


def test_stall_before_response_times_out_then_retries(hub, src):
    hub.fail(FILE, "stall", seconds=5)
    t0 = time.monotonic()
    assert src.read(FILE, 100, 1000) == DATA[100:1100]
    assert time.monotonic() - t0 < 3
    assert len(_gets(hub)) == 2


def test_stall_mid_body_resumes(hub, src):
    hub.fail(FILE, "stall", seconds=5, after_bytes=50_000)
    t0 = time.monotonic()
    assert src.read(FILE, 0, 200_000) == DATA[:200_000]
    assert time.monotonic() - t0 < 3
    gets = _gets(hub)
    assert len(gets) == 2 and gets[1].range != gets[0].range


def test_persistent_failures_give_up_quickly(hub, src):
    for kind, kw in [("status", {"status": 503}), ("reset", {}), ("short", {"after_bytes": 0})]:
        hub.reset()
        hub.fail(FILE, kind, times=None, **kw)
        t0 = time.monotonic()
        with pytest.raises(NetworkError) as e:
            src.read(FILE, 0, 1000)
        assert time.monotonic() - t0 < 3
        assert len(_gets(hub)) == src.retries + 1
        msg = str(e.value)
        assert "\n" not in msg and FILE in msg and "failed 4 times" in msg


def test_no_truncated_bytes_under_repeated_cuts(hub, src):
    # every attempt is cut after 40 kB: progress keeps the budget alive, the result is whole
    hub.fail(FILE, "short", after_bytes=40_000, times=None)
    assert src.read(FILE, 0, SIZE) == DATA
    assert len(_gets(hub)) == 8
    hub.reset()
    hub.fail(FILE, "reset", after_bytes=30_000, times=None)
    assert src.read_file(FILE) == DATA


def test_download_survives_faults(hub, src, tmp_path):
    hub.fail(FILE, "short", after_bytes=70_000)
    hub.fail(FILE, "status", status=500)
    out = src.download(FILE, tmp_path / "m.safetensors")
    assert out.read_bytes() == DATA


def test_parallel_reads_under_faults(hub, src):
    hub.fail(FILE, "reset", after_bytes=5_000, times=4)
    hub.fail(FILE, "status", status=503, times=4)
    spans = [(i * 20_000, 15_000) for i in range(12)]
    assert src.map(lambda s: src.read(FILE, *s), spans) == [DATA[o : o + n] for o, n in spans]


def test_env_configures_timeout_and_retries(hub, repo, hf_cache, monkeypatch):
    monkeypatch.setenv("CKPTKIT_HUB_TIMEOUT", "0.3")
    monkeypatch.setenv("CKPTKIT_HUB_RETRIES", "1")
    s = HubSource(repo, backoff=0.01)
    assert (s.timeout, s.retries) == (0.3, 1)
    s.files()
    hub.fail(FILE, "stall", seconds=5, times=None)
    t0 = time.monotonic()
    with pytest.raises(NetworkError, match="ReadTimeout"):
        s.read(FILE, 0, 10)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"id": "x"}',
                                  b'{"id": "x", "sha": "f", "siblings": 3}',
                                  b'{"id": "x", "sha": "' + b"a" * 40
                                  + b'", "siblings": [{"rfilename": "a", "size": -1}]}'])
def test_malformed_listing_is_a_source_error(hub, repo, hf_cache, body):
    from ckptkit.errors import SourceError

    hub.fail("/api/models/", "status", status=200, body=body)
    with pytest.raises(SourceError, match="did not return|malformed"):
        HubSource(repo, timeout=1, retries=1, backoff=0.01).files()
