"""SIGKILL in the middle of `ckptkit convert`: the destination holds nothing (or the complete
file that was there before), never a partial file under the final name; the same command then
succeeds, and the temporaries a killed run left are removed by the next run for that target.

Kill points come two ways: from outside, polling the hidden temporary's growth (mid-data, at
full size), and exactly, from an audit hook in the child that SIGKILLs its own process at a
named step (temporary created, before the header is written, just before / just after the
rename). The audit hook is test-side code (``sys.addaudithook``), nothing in ckptkit.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
N_LAYERS, HIDDEN, INTER, VOCAB = 12, 256, 512, 384
N_TENSORS = 3 + 9 * N_LAYERS

KILLER = r'''
import os, signal, sys
point, dest_dir = os.environ["KILL_AT"], os.environ["KILL_DIR"]
state = {"tmp": 0, "renames": 0, "nth": int(os.environ.get("KILL_NTH", "1"))}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        if "/.ckptkit-" in args[0]:
            if point == "temp_created":   # the open that creates the temporary
                die()
            state["tmp"] += 1
        elif point == "after_rename" and state["renames"] and os.path.abspath(args[0]) == dest_dir:
            die()                         # fsync of the folder, after the rename
    elif event == "os.chmod" and point == "before_header" and state["tmp"] and isinstance(args[0], int):
        die()                             # fchmod of the new temporary: nothing written yet
    elif event == "os.rename" and ".ckptkit-" in str(args[0]):
        state["renames"] += 1
        if point == "before_rename" and state["renames"] == state["nth"]:
            die()

sys.addaudithook(hook)
from ckptkit.cli import main
sys.argv[0] = "ckptkit"
main()
'''


def make_model(dest: Path) -> Path:
    """A seeded random Llama of ~30 MB: big enough that writing it takes a while."""
    from safetensors.numpy import save_file
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * 0.02

    ones = np.ones(HIDDEN, np.float32)
    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "model.norm.weight": ones, "lm_head.weight": w(VOCAB, HIDDEN)}
    for i in range(N_LAYERS):
        p = f"model.layers.{i}."
        for n in "qkvo":
            t[p + f"self_attn.{n}_proj.weight"] = w(HIDDEN, HIDDEN)
        t[p + "mlp.gate_proj.weight"] = w(INTER, HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(INTER, HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(HIDDEN, INTER)
        t[p + "input_layernorm.weight"] = ones
        t[p + "post_attention_layernorm.weight"] = ones
    save_file(t, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": N_LAYERS, "num_attention_heads": 8,
        "num_key_value_heads": 8, "vocab_size": VOCAB, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2}))
    return dest


def _env(**kw) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), **kw)


def convert_cmd(model: Path, out: Path, *extra: str) -> list[str]:
    return ["convert", str(model), str(out), "--no-vocab", "--no-progress", *extra]


def run(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True,
                          env=_env(**env), timeout=300)


def run_killed_at(point: str, args: list[str], dest_dir: Path, nth: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True, timeout=300,
                          env=_env(KILL_AT=point, KILL_DIR=str(dest_dir.resolve()), KILL_NTH=str(nth)))


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def temps(d: Path) -> list[Path]:
    return sorted(d.glob(".ckptkit-*.tmp"))


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("killed") / "llama12")


@pytest.fixture(scope="session")
def reference(model, tmp_path_factory) -> tuple[str, int]:
    """(sha256, size) of an uninterrupted conversion, loaded by gguf-py as a sanity check."""
    out = tmp_path_factory.mktemp("ref") / "m.gguf"
    r = run(convert_cmd(model, out))
    assert r.returncode == 0, r.stderr
    assert_loads(out)
    return sha(out), out.stat().st_size


@pytest.fixture(scope="session")
def old_file(model, tmp_path_factory) -> Path:
    """A different complete GGUF (F32) to stand at the destination before a killed run."""
    out = tmp_path_factory.mktemp("old") / "m.gguf"
    r = run(convert_cmd(model, out, "--outtype", "f32"))
    assert r.returncode == 0, r.stderr
    return out


def assert_loads(path: Path) -> None:
    from gguf import GGUFReader
    reader = GGUFReader(str(path))
    assert len(reader.tensors) == N_TENSORS
    assert reader.fields["general.architecture"].contents() == "llama"
    blk = {t.name: t for t in reader.tensors}["blk.0.ffn_down.weight"]
    assert list(blk.shape) == [INTER, HIDDEN] and np.isfinite(blk.data.astype(np.float32)).all()


def check_after_kill(out: Path, before: bytes | None, ref_sha: str, may_be_done: bool) -> None:
    """Only the final name (nothing, the old bytes, or a complete new file) and hidden temps."""
    visible = sorted(p.name for p in out.parent.iterdir() if not p.name.startswith(".ckptkit-"))
    assert visible in ([], [out.name]), visible
    if out.exists():
        got = out.read_bytes()
        if before is not None and got == before:
            return
        assert may_be_done, "a file appeared under the final name before the rename"
        assert hashlib.sha256(got).hexdigest() == ref_sha, "partial or corrupt file under the final name"
    else:
        assert before is None, "the old complete file was lost"


def rerun_and_check(model: Path, out: Path, ref_sha: str) -> None:
    stale = temps(out.parent)
    r = run(convert_cmd(model, out))
    assert r.returncode == 0, r.stderr
    assert sha(out) == ref_sha
    assert_loads(out)
    assert temps(out.parent) == [], f"stale temporaries {stale} were not cleaned up"


# ---- exact kill points ---------------------------------------------------------------------------

@pytest.mark.parametrize("had_old", [False, True], ids=["empty", "old-file"])
@pytest.mark.parametrize("point", ["temp_created", "before_header", "before_rename", "after_rename"])
def test_sigkill_at_step(model, reference, old_file, tmp_path, point, had_old):
    out = tmp_path / "m.gguf"
    before = None
    if had_old:
        before = old_file.read_bytes()
        out.write_bytes(before)
    r = run_killed_at(point, convert_cmd(model, out), tmp_path)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    left = temps(tmp_path)
    if point == "temp_created":
        assert left == []
    elif point in ("before_header", "before_rename"):
        assert len(left) == 1
        size = left[0].stat().st_size
        assert size == (0 if point == "before_header" else reference[1])  # whole, but never renamed
    check_after_kill(out, before, reference[0], may_be_done=point == "after_rename")
    if point == "after_rename":
        assert sha(out) == reference[0]   # the rename happened: complete and right
    else:
        assert (out.read_bytes() if out.exists() else None) == before
    rerun_and_check(model, out, reference[0])


def test_split_output_killed_between_renames(model, tmp_path):
    """A multi-file output: the first part (the one loaders open) is renamed last."""
    out = tmp_path / "m.gguf"
    args = convert_cmd(model, out, "--split-max-size", "10M")
    r = run_killed_at("before_rename", args, tmp_path, nth=2)
    assert r.returncode == -signal.SIGKILL, r.stderr
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(visible) == 1 and "-00001-of-" not in visible[0], visible
    r = run(args)
    assert r.returncode == 0, r.stderr
    parts = sorted(tmp_path.glob("m-*-of-*.gguf"))
    assert len(parts) >= 3 and temps(tmp_path) == []
    from gguf import GGUFReader
    assert sum(len(GGUFReader(str(p)).tensors) for p in parts) == N_TENSORS


# ---- kills from outside, by watching the temporary grow ------------------------------------------

def kill_when(args: list[str], d: Path, predicate, timeout: float = 120) -> tuple[int, int]:
    """Start the CLI, poll d's temporaries every millisecond, SIGKILL when ``predicate(size)``.
    Returns (exit status, size seen at the kill; -1 when the run ended first)."""
    p = subprocess.Popen([sys.executable, "-m", "ckptkit", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + timeout
    seen = -1
    try:
        while p.poll() is None and time.monotonic() < deadline:
            for t in temps(d):
                try:
                    size = t.stat().st_size
                except FileNotFoundError:
                    continue
                if predicate(size):
                    p.send_signal(signal.SIGKILL)
                    seen = size
                    break
            if seen >= 0:
                break
            time.sleep(0.001)
    finally:
        if p.poll() is None and seen < 0:
            p.kill()
        p.wait()
    return p.returncode, seen


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 1.0])
def test_sigkill_while_writing(model, reference, old_file, tmp_path, fraction):
    ref_sha, ref_size = reference
    out = tmp_path / "m.gguf"
    before = old_file.read_bytes() if fraction in (0.5, 1.0) else None
    if before:
        out.write_bytes(before)
    rc, seen = kill_when(convert_cmd(model, out), tmp_path, lambda n: n >= fraction * ref_size)
    if seen < 0:
        pytest.skip("the conversion finished before the poller saw the temporary grow")
    assert rc == -signal.SIGKILL
    assert seen < ref_size or fraction == 1.0
    # at full size the kill may land before or after the rename: both must be sound
    check_after_kill(out, before, ref_sha, may_be_done=fraction == 1.0)
    if fraction < 1.0:
        assert (out.read_bytes() if out.exists() else None) == before
    rerun_and_check(model, out, ref_sha)


# ---- stale temporaries ---------------------------------------------------------------------------

def test_stale_temporaries_of_the_same_target_only(model, reference, tmp_path):
    """Dead writers' temporaries for this target go; live writers' and other targets' stay."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ckptkit-m.gguf.{dead.pid}.ab12cd_3.tmp"
    live = tmp_path / f".ckptkit-m.gguf.{os.getpid()}.zz99yy_0.tmp"
    other = tmp_path / f".ckptkit-other.gguf.{dead.pid}.ab12cd_3.tmp"
    longer = tmp_path / f".ckptkit-m.gguf.1.{dead.pid}.ab12cd_3.tmp"   # target "m.gguf.1"
    for p in (stale, live, other, longer):
        p.write_bytes(b"partial")
    (tmp_path / "keep.txt").write_text("mine")
    r = run(convert_cmd(model, tmp_path / "m.gguf"))
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    assert live.exists() and other.exists() and longer.exists()
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sha(tmp_path / "m.gguf") == reference[0]
