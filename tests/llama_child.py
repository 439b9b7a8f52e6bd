"""llama.cpp (through llama-cpp-python) as a test consumer, always in a child process.

llama.cpp is third-party native code: on some CPUs it aborts (a GGML_ASSERT) or segfaults on
files it should load. In the test process that would end the whole run; here each operation runs
in ``sys.executable tests/llama_worker.py`` and a crash, a non-zero exit or a timeout becomes one
failed test naming the model and the signal. A file llama.cpp refuses cleanly (a Python
exception in the binding) raises :class:`LlamaRefused`, which tests can expect.

The parent never imports llama_cpp (importing it loads native code too): "installed" is decided
by finding the package, and a test skips as with ``pytest.importorskip`` when it is not.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

WORKER = Path(__file__).with_name("llama_worker.py")
TIMEOUT = 300.0          # seconds; a tiny model loads and runs in well under one
TAIL_LINES = 10          # stderr lines shown when the child dies
LINE_CHARS = 300         # each cut to this (llama-cpp-python logs the whole metadata on one line)
SKIP_REASON = "llama-cpp-python (test extra) is not installed"
DOING = {"logits": "evaluating", "load": "loading", "tokenize": "tokenizing with"}


class LlamaRefused(Exception):
    """llama.cpp declined the file or the input (the binding raised); the child exited normally."""


def installed() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):     # ValueError: a blocked module in sys.modules
        return False


def require() -> None:
    """Skip the calling test when llama-cpp-python is not installed."""
    if not installed():
        pytest.skip(SKIP_REASON)


def logits(model: str | os.PathLike[str], tokens: list[int], n_ctx: int = 128) -> np.ndarray:
    """Logits (len(tokens), n_vocab) of one forward pass over ``tokens``."""
    require()
    out = run("logits", model, tokens=list(tokens), n_ctx=n_ctx)[1]
    assert out is not None, "the worker wrote no logits"
    return out


def load(model: str | os.PathLike[str], n_ctx: int = 32) -> dict[str, Any]:
    """Load the model and create a context; returns the settings the child used."""
    require()
    return run("load", model, n_ctx=n_ctx)[0]


def tokenize(model: str | os.PathLike[str], texts: list[str], *, add_special: bool = False,
             parse_special: bool = False) -> list[list[int]]:
    """Token ids of each text from the model's vocabulary (vocab-only load), all in one child."""
    require()
    return run("tokenize", model, texts=list(texts), add_special=add_special,
               parse_special=parse_special)[0]["ids"]


def run(op: str, model: str | os.PathLike[str] = "", timeout: float = TIMEOUT,
        **args: Any) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run one worker operation: (its result, logits if it wrote any). Fails the test on a crash."""
    with tempfile.TemporaryDirectory(prefix="llama-child-") as tmp:
        folder = Path(tmp)
        (folder / "request.json").write_text(json.dumps({"op": op, "model": str(model), **args}))
        # no debugger attach on GGML_ASSERT: it can hang or bury the message
        env = dict(os.environ, GGML_NO_BACKTRACE="1")
        try:
            proc = subprocess.run([sys.executable, str(WORKER), str(folder)], capture_output=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"llama.cpp timed out after {timeout:g} s {DOING.get(op, op)} {model}:\n"
                        f"{_tail(e.stderr)}", pytrace=False)
        if proc.returncode != 0:
            what = "crashed" if proc.returncode < 0 else "failed"
            pytest.fail(f"llama.cpp {what} ({describe_exit(proc.returncode)}) {DOING.get(op, op)} {model}:\n"
                        f"{_tail(proc.stderr)}", pytrace=False)
        result = json.loads((folder / "result.json").read_text())
        if "error" in result:
            raise LlamaRefused(f"{model}: {result['error']}\n{_tail(proc.stderr, 4)}")
        npy = folder / "logits.npy"
        return result["ok"], (np.load(npy) if npy.exists() else None)


def describe_exit(returncode: int) -> str:
    """SIGSEGV for a signal, "exit status N" otherwise."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _tail(stderr: bytes | None, n: int = TAIL_LINES) -> str:
    lines = [ln[:LINE_CHARS] for ln in (stderr or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    return "\n".join(lines[-n:]) or "(no output on stderr)"
