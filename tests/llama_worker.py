"""One llama.cpp operation in a process of its own, for tests/llama_child.py.

Usage: python llama_worker.py DIR. Reads DIR/request.json, writes DIR/result.json (and
DIR/logits.npy for "logits"). If llama.cpp aborts or segfaults, only this process dies; the
parent turns that into one failed test. Importing this module does not import llama_cpp, so the
parameter check below is testable without it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# reproducible: the same threads and seed in every run on every machine
N_THREADS = 2
SEED = 0


class SetupError(Exception):
    """The binding cannot be set up as the tests require: never reported as a refused model."""


def without_extra_bufts(params: Any) -> Any:
    """Model parameters with llama.cpp's CPU "extra buffer types" (weight repacking, AMX) off:
    on AVX-512/AMX CPUs they abort graph scheduling for some tiny test models. A binding without
    the field would silently keep them on, so its absence is an error, not a no-op."""
    fields = {f[0] for f in getattr(type(params), "_fields_", ())}
    if "use_extra_bufts" not in fields:
        raise SetupError(f"{type(params).__name__} has no use_extra_bufts field: cannot turn off "
                           "llama.cpp's extra buffer types with this llama-cpp-python")
    params.use_extra_bufts = False
    return params


def open_model(path: str, **kwargs: Any) -> Any:
    """``llama_cpp.Llama`` with extra buffer types off, fixed threads and seed.

    ``Llama`` takes no such argument (unknown keyword arguments are silently swallowed) and builds
    its model parameters from ``llama_model_default_params()`` inside ``__init__``, so that
    function is wrapped for the duration of the load."""
    import llama_cpp
    from llama_cpp import llama_cpp as lib
    default = lib.llama_model_default_params
    lib.llama_model_default_params = lambda: without_extra_bufts(default())
    try:
        # verbose: llama.cpp's log (and an assertion's message) reaches stderr, which the parent
        # keeps; quiet mode redirects stderr to /dev/null exactly while loading
        llm = llama_cpp.Llama(model_path=path, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                              seed=SEED, verbose=True, **kwargs)
    finally:
        lib.llama_model_default_params = default
    if llm.model_params.use_extra_bufts:
        raise SetupError("llama_cpp.Llama did not use the wrapped model parameters")
    return llm


def _settings(llm: Any) -> dict[str, Any]:
    return {"use_extra_bufts": bool(llm.model_params.use_extra_bufts),
            "n_threads": llm.context_params.n_threads, "n_threads_batch": llm.context_params.n_threads_batch}


def op_logits(req: dict[str, Any], out: Path) -> dict[str, Any]:
    tokens = req["tokens"]
    llm = open_model(req["model"], n_ctx=req["n_ctx"], n_batch=req["n_ctx"], logits_all=True)
    step(f"evaluating {len(tokens)} tokens")
    llm.eval(tokens)
    np.save(out / "logits.npy", np.array(llm.scores[: len(tokens)], dtype=np.float32))
    settings = _settings(llm)
    llm.close()
    return settings


def op_load(req: dict[str, Any], out: Path) -> dict[str, Any]:
    llm = open_model(req["model"], n_ctx=req["n_ctx"])
    settings = _settings(llm)
    llm.close()
    return settings


def op_tokenize(req: dict[str, Any], out: Path) -> dict[str, Any]:
    llm = open_model(req["model"], vocab_only=True)
    step(f"tokenizing {len(req['texts'])} texts")
    add = req["add_special"]      # one flag for every text, or one per text
    flags = add if isinstance(add, list) else [add] * len(req["texts"])
    ids = [llm.tokenize(t.encode("utf-8"), add_bos=a, special=req["parse_special"])
           for t, a in zip(req["texts"], flags, strict=True)]
    llm.close()
    return {"ids": ids}


# Stand-ins for a consumer that crashes or hangs: they prove the parent's isolation.
def op_crash(req: dict[str, Any], out: Path) -> dict[str, Any]:
    step(f"crashing with {req['signal']}")
    if req["signal"] == "SIGABRT":
        os.abort()
    import ctypes
    ctypes.string_at(0)          # a real invalid read in native code: SIGSEGV
    raise AssertionError("unreachable")


def op_hang(req: dict[str, Any], out: Path) -> dict[str, Any]:
    step("hanging")
    time.sleep(3600)
    raise AssertionError("unreachable")


OPS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "logits": op_logits, "load": op_load, "tokenize": op_tokenize, "crash": op_crash, "hang": op_hang}


def step(what: str) -> None:
    """A marker in stderr, so a crash's last lines say how far the worker got."""
    print(f"llama_worker: {what}", file=sys.stderr, flush=True)


def main(folder: str) -> int:
    out = Path(folder)
    req = json.loads((out / "request.json").read_text())
    step(f"{req['op']} {req.get('model', '')}")
    result: dict[str, Any]
    try:
        result = {"ok": OPS[req["op"]](req, out)}
    except (ValueError, RuntimeError) as e:   # what llama-cpp-python raises when llama.cpp refuses
        result = {"error": f"{type(e).__name__}: {e}"}
    (out / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
