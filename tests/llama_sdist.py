"""The llama-cpp-python source distribution the tests read from (llama.cpp's reference converter,
its vocabulary-only GGUF files): downloaded from the package index once per machine into the test
cache, and kept there for every test that extracts something from it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

VERSION = "0.3.36"
CACHE = Path(os.environ.get("CKPTKIT_TEST_CACHE") or Path.home() / ".cache" / "ckptkit-tests")


def archive() -> Path:
    """The sdist archive in the cache; the calling test skips when pip cannot fetch it."""
    path = CACHE / f"llama_cpp_python-{VERSION}.tar.gz"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    dl = Path(tempfile.mkdtemp(prefix="sdist-", dir=CACHE))
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={VERSION}", "-d", str(dl), "-q"],
                           capture_output=True, text=True, timeout=900)
        archives = list(dl.glob("*.tar.gz"))
        if r.returncode or not archives:
            why = (r.stderr.strip().splitlines() or ["no archive"])[-1]
            pytest.skip(f"cannot download the llama-cpp-python {VERSION} sdist (no network?): {why}")
        os.replace(archives[0], path)      # atomic: concurrent runs race safely
    finally:
        shutil.rmtree(dl, ignore_errors=True)
    return path
