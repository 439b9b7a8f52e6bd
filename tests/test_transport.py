"""Ranged reads made with the standard library (ckptkit/sources/transport.py): same bytes and
requests as through huggingface_hub's client, redirects followed safely, and the client chosen
from the environment."""
from __future__ import annotations

import http.server
import threading

import pytest

from ckptkit.errors import NetworkError, SourceError
from ckptkit.sources import listing, transport
from ckptkit.sources.http import RetryPolicy, get_range
from ckptkit.sources.hub import HubSource

DATA = bytes((i * 13 + i // 97) % 256 for i in range(200_000))
TOKEN = "hf_transport_test_token"


@pytest.fixture(scope="module")
def repos(hub_server):
    hub_server.add_repo("transport/private", {"model.safetensors": DATA, "config.json": b"{}"},
                        private=True, token=TOKEN)
    hub_server.add_repo("transport/public", {"model.safetensors": DATA, "config.json": b"{}"})


def _read(repo: str, offset: int, length: int, token: str | None = None) -> bytes:
    s = HubSource(repo, token=token, timeout=2, retries=2, backoff=0.01)
    s.files()
    return s.read("model.safetensors", offset, length)


@pytest.mark.parametrize("way", ["stdlib", "library"])
def test_cdn_redirect_drops_authorization_on_both_ways(hub, repos, hf_cache, monkeypatch, way):
    monkeypatch.setenv("CKPTKIT_HTTP", "" if way == "stdlib" else "library")
    hub.lfs_redirect = True
    assert _read("transport/private", 1234, 50_000, token=TOKEN) == DATA[1234:51_234]
    resolve = [r for r in hub.requests if "/resolve/" in r.path and r.method == "GET"]
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert resolve and all(r.authorization for r in resolve)
    assert len(cdn) == 1 and not cdn[0].authorization and cdn[0].range == "bytes=1234-51233"


def test_both_ways_make_the_same_requests(hub, repos, hf_cache, monkeypatch):
    seen = []
    for way in ("stdlib", "library"):
        monkeypatch.setenv("CKPTKIT_HTTP", "" if way == "stdlib" else "library")
        hub.reset_stats()
        hub.fail("model.safetensors", "short", after_bytes=7_000)
        assert _read("transport/public", 100, 90_000) == DATA[100:90_100]
        seen.append([(r.method, r.range) for r in hub.requests if "model.safetensors" in r.path])
    assert seen[0] == seen[1] == [("GET", "bytes=100-90099"), ("GET", "bytes=7100-90099")]


def test_ranged_reads_on_one_thread_keep_one_connection(hub, repos, hf_cache, monkeypatch):
    """A read that stops at the end of its range leaves the connection ready for the next (a
    new one per range would cost a TCP and TLS handshake each on the real Hub)."""
    monkeypatch.setenv("CKPTKIT_HTTP", "")
    s = HubSource("transport/public", timeout=2, retries=2, backoff=0.01)
    transport._forget_connections()                 # this thread's connection starts with this test
    hub.reset_stats()
    s.files()                                       # the listing opens this thread's connection
    got = [s.read("model.safetensors", i * 10_000, 10_000) for i in range(8)]
    got.append(s.read_head("model.safetensors", 5_000)[0])
    assert got[:8] == [DATA[i * 10_000:(i + 1) * 10_000] for i in range(8)] and got[8] == DATA[:5_000]
    assert len([r for r in hub.requests if r.range]) == 9
    assert hub.connections_opened == 1


def test_error_status_is_reported_as_the_library_reports_it(hub, repos, hf_cache, monkeypatch):
    monkeypatch.setenv("CKPTKIT_HTTP", "")
    s = HubSource("transport/public", timeout=2, retries=1, backoff=0.01)
    s.files()
    hub.fail("model.safetensors", "status", status=403, times=None)
    with pytest.raises(SourceError, match="HTTP 403|access denied"):
        s.read("model.safetensors", 0, 10)


def test_client_chosen_from_the_environment(monkeypatch):
    for var in transport.PROXY_VARS + (transport.ENV_TRANSPORT,):
        monkeypatch.delenv(var, raising=False)
    assert transport.usable("https://huggingface.co/x/resolve/main/a")
    assert not transport.usable("ftp://example.org/a")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not transport.usable("https://huggingface.co/x/resolve/main/a")  # proxies: the library's rules
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv(transport.ENV_TRANSPORT, "library")
    assert not transport.usable("https://huggingface.co/x/resolve/main/a")


class _Loop(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        self.send_response(302)
        self.send_header("Location", self.path + "x")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_redirect_loop_is_one_line_error(monkeypatch):
    monkeypatch.delenv(transport.ENV_TRANSPORT, raising=False)
    for var in transport.PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Loop)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/f"
        with pytest.raises(NetworkError, match="redirects"):
            get_range(url, {}, 0, 10, lambda b: None, RetryPolicy(timeout=2, retries=1), "loop", lambda e: e)
        assert _Loop.hits == transport.MAX_REDIRECTS + 1  # not retried: a loop stays a loop
        # the repo listing meets the same loop, in its own words
        _Loop.hits = 0
        endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(SourceError, match="^a/b: listing the repo: more than .* redirects$") as e:
            listing.online(endpoint, "a/b", None, None, {}, RetryPolicy(timeout=2, retries=1), "a/b", lambda e: e)
        assert e.type is SourceError and _Loop.hits == transport.MAX_REDIRECTS + 1
    finally:
        srv.shutdown()
        srv.server_close()


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"data")

    def log_message(self, *args):
        pass


def test_unverifiable_certificate_hands_over_to_the_library(tmp_path, monkeypatch):
    """A certificate the system's store cannot verify: this and later requests go through
    huggingface_hub's client, whose own verification then reports the failure."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    for var in transport.PROXY_VARS + (transport.ENV_TRANSPORT,):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(transport, "_tls_refused", False)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}/f"
    try:
        assert transport.usable(url)
        with pytest.raises(NetworkError, match="(?i)certificate|SSL"):
            get_range(url, {}, 0, 4, lambda b: None, RetryPolicy(timeout=2, retries=0), "tls", lambda e: e)
        assert not transport.usable(url)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("way", ["stdlib", "library"])
def test_listing_is_the_same_both_ways(hub, repos, hf_cache, monkeypatch, way):
    monkeypatch.setenv("CKPTKIT_HTTP", "" if way == "stdlib" else "library")
    s = HubSource("transport/private", token=TOKEN)
    assert s.files() == {"model.safetensors": len(DATA), "config.json": 2}
    assert s.commit_sha == hub.head_sha("transport/private")
    size, sha256, blob_id = s._entries["model.safetensors"]
    import hashlib

    assert (size, sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest()) and blob_id
    assert [(r.method, r.path) for r in hub.requests] == [("GET", "/api/models/transport/private")]


class _Listing(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("body, message", [
    (b"{not json", "malformed JSON"),
    (b"[]", "malformed JSON"),
    (b'{"sha": "abc", "siblings": []}', "did not return a commit sha"),
    (b'{"sha": "' + b"a" * 40 + b'"}', "did not return a commit sha"),
    (b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": "x", "size": -1}]}', "malformed JSON"),
    (b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": "x", "size": 3, "lfs": 7}]}', "malformed JSON"),
    (b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": 5}]}', "malformed JSON"),
])
def test_listing_that_is_not_the_hubs_is_one_line_error(monkeypatch, body, message):
    for var in transport.PROXY_VARS + (transport.ENV_TRANSPORT,):
        monkeypatch.delenv(var, raising=False)
    handler = type("H", (_Listing,), {"body": body})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        s = HubSource("some/repo", endpoint=f"http://127.0.0.1:{srv.server_address[1]}", retries=0)
        with pytest.raises(SourceError, match=message):
            s.files()
    finally:
        srv.shutdown()
        srv.server_close()
