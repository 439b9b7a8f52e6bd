"""llama.cpp runs in a child process (llama_child): a consumer that aborts, segfaults or hangs is
one failed test naming the model and the signal, and the run goes on; models load with extra
buffer types off, fixed threads; without llama-cpp-python the tests that need it skip.

The real crash: a GGUF whose RMS-norm epsilon is negative loads, and llama.cpp then aborts in
its CPU RMS norm (GGML_ASSERT(eps >= 0.0f)) on the first evaluation, on every CPU."""
from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llama_child
import llama_worker
from ckptkit.conversion import convert_to_gguf

TESTS = Path(__file__).parent
EXAMPLE = TESTS.parent / "examples" / "tiny-llama"


@pytest.fixture(scope="module")
def aborting_gguf(tmp_path_factory) -> Path:
    """The example model as GGUF with rms epsilon -1 (see the module docstring)."""
    d = tmp_path_factory.mktemp("aborting")
    convert_to_gguf(str(EXAMPLE), d / "tiny.gguf", outtype="f32")
    return with_f32_key(d / "tiny.gguf", d / "negative-eps.gguf", "llama.attention.layer_norm_rms_epsilon", -1.0)


def with_f32_key(src: Path, dst: Path, key: str, value: float) -> Path:
    """A copy of a GGUF with one FLOAT32 metadata value replaced in place (same size)."""
    data = bytearray(src.read_bytes())
    name = key.encode()
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    assert struct.unpack_from("<I", data, at)[0] == 6        # GGUF value type FLOAT32
    struct.pack_into("<f", data, at + 4, value)
    dst.write_bytes(bytes(data))
    return dst


def test_llama_cpp_aborting_is_one_failure_naming_model_and_signal(aborting_gguf):
    llama_child.require()
    assert llama_child.load(aborting_gguf)["use_extra_bufts"] is False       # it loads
    with pytest.raises(pytest.fail.Exception) as e:
        llama_child.logits(aborting_gguf, [1, 5, 9])
    msg = str(e.value)
    assert msg.startswith(f"llama.cpp crashed (SIGABRT) evaluating {aborting_gguf}:"), msg
    assert "GGML_ASSERT(eps >= 0.0f) failed" in msg                          # llama.cpp's own words


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGABRT"])
def test_a_crash_is_one_failure_naming_model_and_signal(sig, tmp_path):
    model = tmp_path / "boom.gguf"
    with pytest.raises(pytest.fail.Exception) as e:
        llama_child.run("crash", model, signal=sig)
    msg = str(e.value)
    assert msg.startswith(f"llama.cpp crashed ({sig}) crash {model}:")
    assert f"llama_worker: crashing with {sig}" in msg      # the child's last stderr lines


def test_a_hang_is_one_failure_after_the_timeout(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"timed out after 2 s hang .*slow\.gguf"):
        llama_child.run("hang", tmp_path / "slow.gguf", timeout=2)


def test_the_run_goes_on_after_a_crash(tmp_path, aborting_gguf):
    """An inner pytest run: each crashing test fails with the signal named, the next one passes."""
    (tmp_path / "test_inner.py").write_text(
        "import llama_child\n\n"
        "def test_segfaults():\n    llama_child.run('crash', 'boom.gguf', signal='SIGSEGV')\n\n"
        f"def test_llama_cpp_aborts():\n    llama_child.logits({str(aborting_gguf)!r}, [1, 5, 9])\n\n"
        "def test_after():\n    assert True\n")
    r = _inner_pytest([str(tmp_path / "test_inner.py")], tmp_path)
    assert r.returncode == 1, r.stdout
    assert "llama.cpp crashed (SIGSEGV) crash boom.gguf" in r.stdout
    if llama_child.installed():
        assert "2 failed, 1 passed" in r.stdout
        assert f"llama.cpp crashed (SIGABRT) evaluating {aborting_gguf}" in r.stdout
    else:
        assert "1 failed, 1 passed, 1 skipped" in r.stdout


def test_the_binding_must_have_use_extra_bufts():
    """Setting a field a ctypes structure lacks would silently add a Python attribute: refused."""
    class Old(ctypes.Structure):
        _fields_ = [("vocab_only", ctypes.c_bool), ("check_tensors", ctypes.c_bool)]

    class New(ctypes.Structure):
        _fields_ = [("vocab_only", ctypes.c_bool), ("use_extra_bufts", ctypes.c_bool)]

    with pytest.raises(llama_worker.SetupError, match="Old has no use_extra_bufts"):
        llama_worker.without_extra_bufts(Old())
    p = New(use_extra_bufts=True)
    assert llama_worker.without_extra_bufts(p) is p and p.use_extra_bufts is False


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_models_load_with_extra_buffer_types_off(outtype, tmp_path):
    llama_child.require()
    out = tmp_path / f"tiny-{outtype}.gguf"
    convert_to_gguf(str(EXAMPLE), out, outtype=outtype)
    assert llama_child.load(out) == {"use_extra_bufts": False, "n_threads": 2, "n_threads_batch": 2}
    tokens = [1, 5, 9, 100, 3]
    a = llama_child.logits(out, tokens)
    assert a.shape[0] == len(tokens) and np.isfinite(a).all() and a.std() > 0
    assert np.array_equal(llama_child.logits(out, tokens), a)     # fixed threads: reproducible


def test_a_refused_file_raises_and_is_not_a_crash(tmp_path):
    llama_child.require()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(llama_child.LlamaRefused, match="bad.gguf.*Failed to load model"):
        llama_child.load(bad)


# Hides llama_cpp from the import system (as if not installed), then runs pytest.
HIDDEN = """
import importlib.machinery, sys
import pytest

class Hidden(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] == "llama_cpp" else super().find_spec(name, path, target)

sys.meta_path[:] = [Hidden if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
try:
    import llama_cpp
except ImportError:
    pass
else:
    sys.exit("llama_cpp is still importable")
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_without_llama_cpp_python_the_tests_skip():
    """Both ways the suite asks (a skipif mark at collection, a skip inside the test) skip
    cleanly, neither errors, when the package is not importable."""
    r = _inner_pytest([str(TESTS / "test_tokenizer.py"), str(TESTS / "test_llama_child.py"),
                       "-k", "tokenizes_like_sentencepiece or extra_buffer_types_off or refused_file"],
                      TESTS.parent, bootstrap=HIDDEN)
    assert r.returncode == 0, r.stdout
    assert "4 skipped" in r.stdout and "failed" not in r.stdout and "error" not in r.stdout
    assert llama_child.SKIP_REASON in r.stdout


def _inner_pytest(args: list[str], cwd: Path, bootstrap: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    head = ["-c", bootstrap] if bootstrap else ["-m", "pytest"]
    return subprocess.run([sys.executable, *head, *args, "-o", "addopts=", "-q", "-rs", "-p", "no:cacheprovider",
                           "--rootdir", str(cwd)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
