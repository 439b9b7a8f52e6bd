"""Fixtures for the local Hub server (see hubserver.py).

huggingface_hub freezes HF_ENDPOINT, HF_HUB_CACHE, HF_HOME and HF_HUB_OFFLINE when it is first
imported, so the server is bound and the environment set when this module is imported (conftest
imports it before any test module). Every Hub request of the test session goes to 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

from hubserver import HubServer, VirtualFile  # noqa: F401  (re-exported for tests)

__all__ = ["hub_server", "hub", "hf_cache", "VirtualFile"]

if "huggingface_hub" in sys.modules:  # pragma: no cover - depends on import order
    raise RuntimeError(
        "huggingface_hub was imported before tests/fx_hub.py: its endpoint would not be the local server"
    )

_SERVER = HubServer()
_HOME = tempfile.mkdtemp(prefix="ckptkit-hfhome-")
os.environ["HF_ENDPOINT"] = _SERVER.url
os.environ["HF_HOME"] = _HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HOME, "hub")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_ETAG_TIMEOUT"] = "5"
os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = "5"
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def hub_server():
    """The session's HubServer; HF_ENDPOINT points at it. Repos registered here persist for the session."""
    import huggingface_hub.constants as hc

    # If anything changed the endpoint behind our back, refuse to run rather than reach the internet.
    assert hc.ENDPOINT == _SERVER.url, f"huggingface_hub endpoint is {hc.ENDPOINT}, not the local server"
    assert os.environ["HF_ENDPOINT"] == _SERVER.url
    yield _SERVER
    _SERVER.close()
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def hub(hub_server, monkeypatch):
    """Per test: the server with stats, faults, latency and redirect mode reset; HF env restored after."""
    hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield hub_server
    hub_server.reset()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh, empty HF cache for this test, exported as HF_HUB_CACHE (read at call time by ckptkit;
    pass ``cache_dir=hf_cache`` to huggingface_hub functions, whose default is frozen at import)."""
    path = tmp_path / "hf-cache"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    return path
