"""Converting straight from the Hub: checksums, stalls, and each byte fetched once."""
from __future__ import annotations

import hashlib
import json
import struct
import time

import pytest

from ckptkit.conversion import convert_to_gguf
from ckptkit.sources.digest import ChecksumError, Digests, FileDigest

REPO = "stream/llama"


@pytest.fixture
def model(tiny_model, hub):
    src = tiny_model("llama")
    hub.add_repo_from_dir(REPO, src)
    return src


@pytest.fixture
def local_gguf(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.gguf"
    if not out.exists():
        convert_to_gguf(str(model), out, outtype="f16")
    return out


def _shards(src):
    return sorted(set(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"].values()))


def _data_start(path) -> int:
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def _leftovers(d):
    return sorted(p.name for p in d.iterdir())


# ---- checksums -------------------------------------------------------------------------------------

def test_digest_accepts_pieces_in_any_order():
    data = bytes(range(256)) * 1000
    d = FileDigest(len(data), hashlib.sha256(data).hexdigest(), None)
    for off in (100_000, 50_000, 0, 200_000, 150_000):
        d.feed(off, data[off:off + 60_000])
    assert d.done and d.matches and d.held == 0


def test_digest_git_blob_id_and_partial_files():
    data = b'{"a": 1}\n'
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    ds = Digests()
    ds.feed("config.json", len(data), None, blob, 0, data, "x")
    assert ds.verified == {"config.json"}
    ds.feed("m.safetensors", 100, "0" * 64, None, 0, b"x" * 60, "y")  # partly read: not judged
    assert "m.safetensors" not in ds.verified
    with pytest.raises(ChecksumError, match="^z: received bytes do not match the Hub's sha256"):
        ds.feed("n.safetensors", 4, hashlib.sha256(b"abcd").hexdigest(), None, 0, b"abce", "z")


def test_flipped_byte_once_is_refetched(model, local_gguf, hub, hf_cache, tmp_path):
    shard = _shards(model)[0]
    at = _data_start(model / shard) + 1234
    fault = hub.fail(shard, "corrupt", after_bytes=at)
    out = tmp_path / "remote.gguf"
    convert_to_gguf(REPO, out, outtype="f16", threads=2)
    assert fault.hits == 1
    assert hub.count("GET", f"/api/models/{REPO}") == 2  # caught, and fetched once more
    assert out.read_bytes() == local_gguf.read_bytes()


def test_persistent_corruption_fails_and_writes_nothing(model, hub, hf_cache, tmp_path):
    from click.testing import CliRunner

    from ckptkit.cli import main

    shard = _shards(model)[-1]
    at = _data_start(model / shard) + 77
    hub.fail(shard, "corrupt", after_bytes=at, times=None)
    out = tmp_path / "out" / "remote.gguf"
    with pytest.raises(ChecksumError) as e:
        convert_to_gguf(REPO, out, outtype="f16")
    assert shard in str(e.value) and "\n" not in str(e.value) and "twice" in str(e.value)
    assert not out.parent.exists() or _leftovers(out.parent) == []
    r = CliRunner().invoke(main, ["convert", REPO, str(out), "--outtype", "f16", "--no-progress"])
    assert r.exit_code == 2 and shard in r.output and "Traceback" not in r.output
    assert _leftovers(out.parent) == []



def test_digest_spills_out_of_order_pieces_to_disk_and_still_checks(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    ds = Digests(limit=100_000, spill_dir=str(tmp_path))
    pieces = [(off, data[off:off + 65536]) for off in range(0, len(data), 65536)]
    for off, piece in pieces[1:][::-1] + pieces[:1]:  # everything ahead of the hashed position first
        ds.feed("w.safetensors", len(data), hashlib.sha256(data).hexdigest(), None, off, piece, "w")
        assert ds._held <= 100_000 + 65536  # memory stays bounded: the rest went to the spill file
    assert ds.verified == {"w.safetensors"}
    bad = bytearray(data)
    bad[700_000] ^= 1
    ds2 = Digests(limit=100_000)
    with pytest.raises(ChecksumError):
        for off, _ in pieces[1:][::-1] + pieces[:1]:
            ds2.feed("w.safetensors", len(data), hashlib.sha256(data).hexdigest(), None, off,
                     bytes(bad[off:off + 65536]), "w")


def test_bytes_of_dropped_tensors_are_fetched_and_checked(tiny_model, hub, hf_cache, tmp_path):
    """A tensor the conversion drops (a vision tower) is still fetched once, so its shard is
    checked whole: a corrupted byte there is caught, and the output equals a local conversion."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    src = tiny_model("llama")
    d = tmp_path / "tower"  # the name the Hub conversion gives general.name too
    d.mkdir()
    for p in src.iterdir():
        if p.is_file() and not p.name.endswith(".safetensors") and p.name != "model.safetensors.index.json":
            (d / p.name).write_bytes(p.read_bytes())
    tensors: dict = {}
    for shard in _shards(src):
        tensors.update(load_file(str(src / shard)))
    tower = "vision_tower.encoder.weight"
    tensors[tower] = np.arange(64 * 1024, dtype=np.float32).reshape(256, 256)
    save_file(dict(sorted(tensors.items())), str(d / "model.safetensors"), {"format": "pt"})
    hub.add_repo_from_dir("stream/tower", d)
    local = tmp_path / "local.gguf"
    convert_to_gguf(str(d), local, outtype="f16")
    header = json.loads((d / "model.safetensors").read_bytes()[8:_data_start(d / "model.safetensors")])
    at = _data_start(d / "model.safetensors") + header[tower]["data_offsets"][0] + 4096
    fault = hub.fail("model.safetensors", "corrupt", after_bytes=at)
    hub.reset_stats()
    out = tmp_path / "remote.gguf"
    convert_to_gguf("stream/tower", out, outtype="f16")
    assert fault.hits == 1
    assert hub.count("GET", "/api/models/stream/tower") == 2  # caught in the dropped bytes, fetched again
    assert out.read_bytes() == local.read_bytes()



def test_moe_experts_read_out_of_file_order_are_still_checked(tiny_model, hub, hf_cache, tmp_path, monkeypatch):
    """Stacking experts reads each layer's shard out of file order: with a tiny memory bound the
    waiting bytes go to disk, every shard is checked, and a flipped byte is caught."""
    import ckptkit.sources.digest as digest
    import ckptkit.sources.readahead as readahead

    monkeypatch.setattr(digest, "PENDING_LIMIT", 4096)
    monkeypatch.setattr(readahead, "CHUNK", 2048)  # ranges as small as a tiny expert's rows
    spills = []
    real_spill = digest.FileDigest.spill
    monkeypatch.setattr(digest.FileDigest, "spill", lambda self: spills.append(1) or real_spill(self))
    import shutil

    src = shutil.copytree(tiny_model("qwen3_moe"), tmp_path / "moe")  # general.name as the repo's
    hub.add_repo_from_dir("stream/moe", src)
    local = tmp_path / "moe.gguf"
    convert_to_gguf(str(src), local, outtype="f32")
    shard = _shards(src)[0]
    fault = hub.fail(shard, "corrupt", after_bytes=_data_start(src / shard) + 999)
    out = tmp_path / "o" / "moe.gguf"
    out.parent.mkdir()
    convert_to_gguf("stream/moe", out, outtype="f32")
    assert fault.hits == 1 and hub.count("GET", "/api/models/stream/moe") == 2
    assert out.read_bytes() == local.read_bytes()
    assert _leftovers(out.parent) == ["moe.gguf"]  # the spill file had no name and is gone
    assert spills  # the bound was passed: bytes waited on disk



@pytest.mark.parametrize("to", ["ckpt", "hf"])
def test_hub_to_folder_checks_every_byte(model, hub, hf_cache, tmp_path, to):
    """HF -> ckpt and HF -> HF from the Hub check each file against its hash before the folder
    gets its name: a flipped byte fails in one line and leaves nothing."""
    import ckptkit
    shard = _shards(model)[0]
    hub.fail(shard, "corrupt", after_bytes=_data_start(model / shard) + 55, times=None)
    out = tmp_path / "o" / "folder"
    out.parent.mkdir()
    with pytest.raises(ChecksumError) as e:
        ckptkit.convert(REPO, out, to=to)
    assert shard in str(e.value) and "\n" not in str(e.value)
    assert _leftovers(out.parent) == []
    hub.clear_faults()
    ckptkit.convert(REPO, out, to=to)
    assert (out / ("manifest.json" if to == "ckpt" else "config.json")).is_file()


# ---- stalls ------------------------------------------------------------------------------------------

def test_stalled_bodies_cost_about_one_read_timeout(model, local_gguf, hub, hf_cache, tmp_path):
    clean = tmp_path / "clean.gguf"
    t0 = time.monotonic()
    convert_to_gguf(REPO, clean, outtype="f16", threads=2, read_timeout=0.5)
    base = time.monotonic() - t0
    # every tensor-data file: part of the body, then 30 s of silence, three times each
    stalls = [hub.fail(shard, "stall", seconds=30, after_bytes=700, times=3) for shard in _shards(model)]
    out = tmp_path / "stalled.gguf"
    t0 = time.monotonic()
    convert_to_gguf(REPO, out, outtype="f16", threads=2, read_timeout=0.5)
    took = time.monotonic() - t0
    n = sum(f.hits for f in stalls)
    assert n == 3 * len(stalls)
    assert out.read_bytes() == local_gguf.read_bytes() == clean.read_bytes()
    # each stall: one read timeout plus a short backoff; stalls on parallel reads may overlap
    assert took < base + n * (0.5 + 0.6) + 2


def test_read_timeout_comes_from_hf_hub_download_timeout(monkeypatch):
    from ckptkit.sources.hub import HubSource

    monkeypatch.delenv("CKPTKIT_HUB_TIMEOUT", raising=False)
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "7.5")
    assert HubSource("a/b").timeout == 7.5
    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT")
    assert HubSource("a/b").timeout == 10.0
    assert HubSource("a/b", timeout=0.5).timeout == 0.5


# ---- each byte once ----------------------------------------------------------------------------------

def _spans(hub, name):
    """[start, end) of every ranged GET of ``name`` in the request log."""
    out = []
    for r in hub.requests:
        if r.method == "GET" and r.path.endswith("/" + name) and r.range:
            a, _, b = r.range.split("=")[1].partition("-")
            out.append((int(a), int(b) + 1))
    return out


def test_tensor_data_is_fetched_once(model, local_gguf, hub, hf_cache, tmp_path):
    out = tmp_path / "remote.gguf"
    convert_to_gguf(REPO, out, outtype="f16", threads=2)
    assert out.read_bytes() == local_gguf.read_bytes()
    data = fetched = 0
    for shard in _shards(model):
        lo, hi = _data_start(model / shard), (model / shard).stat().st_size
        spans = [(max(a, lo), min(b, hi)) for a, b in _spans(hub, shard) if min(b, hi) > max(a, lo)]
        covered = sorted(spans)
        pos = lo
        for a, b in covered:
            assert a <= pos, f"{shard}: bytes {pos}-{a} never fetched"
            pos = max(pos, b)
        assert pos == hi
        data += hi - lo
        fetched += sum(b - a for a, b in spans)
    assert fetched <= 1.02 * data


def test_readahead_serves_any_order_from_one_pass(hub, hf_cache):
    from ckptkit.sources.hub import HubSource
    from ckptkit.sources.readahead import ReadAhead

    blob = bytes((i * 31 + i // 7) % 251 for i in range(600_000))
    hub.add_repo("stream/blob", {"w.safetensors": blob})
    src = HubSource("stream/blob", timeout=2, retries=3, backoff=0.01)
    src.files()
    # a writer's order that is not the file's: the 30 pieces of 20 kB in a scrambled order, the
    # first pieces read again at the end (as block scales are by far-apart rows)
    reads = [("w.safetensors", (i * 7) % 30 * 20_000, 20_000) for i in range(30)]
    reads += [("w.safetensors", o, 20_000) for o in (0, 140_000, 280_000)]
    for budget, once in ((1 << 20, True), (120_000, False)):
        hub.reset_stats()
        with ReadAhead(src, reads, connections=3, chunk=64 << 10, budget=budget) as ra:
            got = [ra.read(*r) for r in reads]
            ra.finish()
            assert got == [blob[o:o + n] for _, o, n in reads]
            fetched = sum(b - a for a, b in _spans(hub, "w.safetensors"))
            assert max(ra.peak, 0) <= budget + 3 * (64 << 10)
            if once:  # room for everything: each range once, the checksum judged on the whole file
                assert ra.refetched == 0 and fetched == len(blob)
                assert "w.safetensors" in src.digests.verified
            else:     # a tight buffer drops ranges needed only later and reads them again
                assert 0 < ra.refetched and fetched == len(blob) + ra.refetched


def test_cli_through_every_kind_of_fault(model, local_gguf, hub, hf_cache, tmp_path):
    from click.testing import CliRunner

    from ckptkit.cli import main

    shards = _shards(model)
    faults = [hub.fail(shards[0], "status", status=503, times=2),
              hub.fail(shards[-1], "status", status=429, retry_after=1),
              hub.fail(shards[0], "short", after_bytes=5000, times=2),
              hub.fail(shards[-1], "reset", after_bytes=3000),
              hub.fail(shards[-1], "stall", seconds=30, after_bytes=2000, times=2),
              hub.fail(shards[0], "corrupt", after_bytes=(model / shards[0]).stat().st_size - 10)]
    out = tmp_path / "cli.gguf"
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["convert", REPO, str(out), "--outtype", "f16", "--no-progress",
                                  "--connections", "2", "--read-timeout", "0.5"])
    assert r.exit_code == 0, r.output
    assert time.monotonic() - t0 < 20
    assert out.read_bytes() == local_gguf.read_bytes()
    assert [f.hits for f in faults] == [2, 1, 2, 1, 2, 1]


# ---- progress --------------------------------------------------------------------------------------

def test_fetched_bytes_reported_are_the_bytes_the_server_sent(model, local_gguf, hub, hf_cache, tmp_path):
    fetched: list[int] = []
    out = tmp_path / "counted.gguf"
    # headers and the tokenizer are read while planning; what follows the plan is tensor data
    convert_to_gguf(REPO, out, outtype="f16", threads=2, on_plan=lambda plan: hub.reset_stats(),
                    on_fetched=fetched.append)
    assert out.read_bytes() == local_gguf.read_bytes()
    served = sum(b - a for s in _shards(model) for a, b in _spans(hub, s))
    assert all(r.path.endswith(tuple(_shards(model))) for r in hub.requests)
    assert sum(fetched) == served == hub.bytes_sent
    assert served >= sum((model / s).stat().st_size - _data_start(model / s) for s in _shards(model))


def test_fetched_bytes_from_local_files_are_the_tensor_data_read(model, tmp_path):
    fetched: list[int] = []
    written: list[int] = []
    convert_to_gguf(str(model), tmp_path / "local.gguf", outtype="f16", on_bytes=written.append,
                    on_fetched=fetched.append)
    data = sum((model / s).stat().st_size - _data_start(model / s) for s in _shards(model))
    assert sum(fetched) == data and sum(written) > 0


def _cli_stderr(args, env, tty: bool) -> str:
    """``ckptkit convert ...`` in a child whose stderr is a pseudo-terminal (or a pipe)."""
    import fcntl
    import os
    import pty
    import subprocess
    import sys
    import termios

    code = "import sys; from ckptkit.cli import main; sys.argv[0] = 'ckptkit'; main()"
    if not tty:
        r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stderr.decode()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # tqdm draws nothing at width 0
    child = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=slave)
    os.close(slave)
    text = b""
    while True:
        try:
            block = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not block:
            break
        text += block
    os.close(master)
    assert child.wait(timeout=120) == 0, text
    return text.decode(errors="replace")


def test_cli_progress_shows_bytes_fetched_only_on_a_terminal(model, hub, hf_cache, tmp_path):
    import os
    import re

    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache)}
    shown = _cli_stderr(["convert", REPO, str(tmp_path / "tty.gguf"), "--outtype", "f16"], env, tty=True)
    m = re.findall(r"fetched ([\d.]+)([kMGT]?)B at ([\d.]+)([kMGT]?)B/s", shown)
    assert m, shown
    value, unit, rate, _ = m[-1]
    got = float(value) * 1024 ** " kMGT".index(unit or " ")
    total = sum((model / s).stat().st_size for s in _shards(model))  # read-ahead takes the headers too
    assert abs(got - total) <= 0.01 * total and float(rate) > 0
    quiet = _cli_stderr(["convert", REPO, str(tmp_path / "pipe.gguf"), "--outtype", "f16"], env, tty=False)
    assert "fetched" not in quiet and "convert:" not in quiet and "wrote" in quiet


# ---- resume ----------------------------------------------------------------------------------------

class _Stop(Exception):
    """Stands for Ctrl-C or a network failure halfway through."""


def _data_fetched(hub, model):
    lo = {s: _data_start(model / s) for s in _shards(model)}
    return sum(max(0, b - max(a, lo[s])) for s in lo for a, b in _spans(hub, s))


def test_resume_after_an_interruption_fetches_only_the_rest(model, local_gguf, hub, hf_cache, tmp_path, monkeypatch):
    import ckptkit.journal as journal

    monkeypatch.setattr(journal, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "o" / "resumed.gguf"
    total = sum(s.stat().st_size - _data_start(s) for s in (model / n for n in _shards(model)))
    written = [0]

    def stop_halfway(n):
        written[0] += n
        if written[0] > local_gguf.stat().st_size // 2:
            raise _Stop

    with pytest.raises(_Stop):
        convert_to_gguf(REPO, out, outtype="f16", threads=2, on_bytes=stop_halfway, resume=True)
    assert not out.exists()
    kept = json.loads(journal.journal_path(out).read_text())
    assert kept["tensors"] > 0 and journal.temp_path(out).exists()

    hub.reset_stats()
    convert_to_gguf(REPO, out, outtype="f16", threads=2, resume=True)
    assert out.read_bytes() == local_gguf.read_bytes()
    assert _data_fetched(hub, model) < 0.75 * total
    assert _leftovers(out.parent) == ["resumed.gguf"]


def test_resume_ignores_a_journal_of_another_conversion(model, hub, hf_cache, tmp_path, monkeypatch):
    import ckptkit.journal as journal

    monkeypatch.setattr(journal, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "o" / "m.gguf"
    calls = [0]

    def stop(n):
        calls[0] += 1
        if calls[0] > 3:
            raise _Stop

    with pytest.raises(_Stop):
        convert_to_gguf(REPO, out, outtype="f16", on_bytes=stop, resume=True)
    assert journal.journal_path(out).exists()
    convert_to_gguf(REPO, out, outtype="f32", resume=True)  # another plan: starts again
    ref = tmp_path / "ref.gguf"
    convert_to_gguf(str(model), ref, outtype="f32")
    assert out.read_bytes() == ref.read_bytes()
    assert _leftovers(out.parent) == ["m.gguf"]


def test_resume_after_sigkill(model, local_gguf, hub, hf_cache, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import ckptkit.journal as journal

    out = tmp_path / "killed.gguf"
    hub.latency = 0.2  # slow enough to be killed halfway
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache)}
    code = ("import sys, ckptkit.journal as j; j.CHECKPOINT_SECONDS = 0.0; from ckptkit.cli import main; "
            "sys.argv[0] = 'ckptkit'; main()")
    child = subprocess.Popen([sys.executable, "-c", code, "convert", REPO, str(out), "--outtype", "f16",
                              "--no-progress", "--resume", "--connections", "1"], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            p = journal.journal_path(out)
            if p.exists() and json.loads(p.read_text() or "{}").get("tensors", 0) >= 3:
                break
            time.sleep(0.02)
        assert child.poll() is None, "finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists()
    hub.latency = 0.0
    convert_to_gguf(REPO, out, outtype="f16", resume=True)
    assert out.read_bytes() == local_gguf.read_bytes()


def test_a_failed_conversion_leaves_no_thread_waiting(model, hub, hf_cache, tmp_path):
    import threading

    def ours():
        return {t.name for t in threading.enumerate() if t.name.startswith(("readahead", "ThreadPool"))}

    before = ours()
    out = tmp_path / "o" / "x.gguf"
    # the headers are read; then every tensor read of the first shard is refused
    with pytest.raises(Exception, match="not found"):
        convert_to_gguf(REPO, out, outtype="f16", threads=3, connections=2,
                        on_plan=lambda plan: hub.fail(_shards(model)[0], "status", status=404, times=None))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ours() - before:
        time.sleep(0.05)
    assert not ours() - before
    assert not out.parent.exists() or _leftovers(out.parent) == []


def test_a_read_waiting_when_the_read_ahead_closes_fails_instead_of_hanging():
    import threading

    from ckptkit.errors import CkptError
    from ckptkit.sources.base import Source
    from ckptkit.sources.readahead import ReadAhead

    class Slow(Source):
        label = "slow"

        def files(self):
            return {"f": 1 << 20}

        def read(self, path, offset, length):
            time.sleep(0.2)
            return bytes(length)

    reads = [("f", o, 1024) for o in range(0, 1 << 20, 64 << 10)]
    ra = ReadAhead(Slow(), reads, connections=1, chunk=64 << 10, budget=64 << 10)
    got: list = []
    t = threading.Thread(target=lambda: got.append(_catch(lambda: ra.read(*reads[-1]), CkptError)))
    t.start()
    time.sleep(0.05)
    ra.close()
    t.join(5)
    assert not t.is_alive() and isinstance(got[0], CkptError)


def _catch(fn, kind):
    try:
        return fn()
    except kind as e:
        return e


def test_moe_experts_stacked_out_of_file_order_are_fetched_once(tiny_model, hub, hf_cache, tmp_path, monkeypatch):
    """Per-expert tensors sit expert by expert in the file but are written role by role: with
    ranges far smaller than a layer, each byte is still fetched once and the output is exact."""
    import ckptkit.sources.readahead as readahead

    src = tiny_model("mixtral")
    hub.add_repo_from_dir("stream/mixtral", src)
    local = tmp_path / "local.gguf"
    convert_to_gguf(str(src), local, outtype="f16")
    monkeypatch.setattr(readahead, "CHUNK", 16 << 10)  # 4 ranges of 16 kB, under a layer's experts
    monkeypatch.setattr(readahead, "GAP", 256)
    hub.reset_stats()
    out = tmp_path / "remote.gguf"
    convert_to_gguf("stream/mixtral", out, outtype="f16", threads=2, connections=1)
    assert out.read_bytes() == local.read_bytes()
    data = fetched = 0
    for shard in _shards(src):
        lo = _data_start(src / shard)
        data += (src / shard).stat().st_size - lo
        fetched += sum(max(0, b - max(a, lo)) for a, b in _spans(hub, shard))
    assert fetched <= 1.02 * data


def test_ranges_group_bytes_needed_together(hub, hf_cache):
    """Experts' tensors A, B, C lie expert by expert (A0 B0 C0 A1 ...) and are read role by role
    (A0 A1 ... B0 B1 ... C0 ...): ranges must not join an A with its neighbouring B, or a small
    buffer drops them and bytes are fetched twice."""
    from ckptkit.sources.hub import HubSource
    from ckptkit.sources.readahead import ReadAhead

    n, size = 16, 4_000
    blob = bytes((i * 13 + i // 101) % 253 for i in range(3 * n * size))
    hub.add_repo("stream/experts", {"e.safetensors": blob})
    src = HubSource("stream/experts", timeout=2, retries=3, backoff=0.01)
    src.files()
    reads = [("e.safetensors", (3 * e + role) * size, size) for role in range(3) for e in range(n)]
    with ReadAhead(src, reads, connections=2, chunk=16 << 10, budget=4 * (16 << 10)) as ra:
        assert [ra.read(*r) for r in reads] == [blob[o:o + k] for _, o, k in reads]
        ra.finish()
        assert ra.refetched == 0
    assert sum(b - a for a, b in _spans(hub, "e.safetensors")) == len(blob)
    assert "e.safetensors" in src.digests.verified
