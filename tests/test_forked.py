"""Forked helpers (ckptkit/forked.py) change how fast a result comes, never what it is: checked in
fresh processes, as the console script runs (pytest's own process has threads, so ckptkit never
forks in it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptkit.header_reads import SPLIT_MIN_FILES

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="fork only")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Claims: Linux only")

PROBE = r"""
import os, sys, threading, time
from ckptkit import forked
case = sys.argv[1]
if case != "not-allowed":
    forked.allow()
if case == "bytes":
    c = forked.start(lambda: bytes(range(256)) * 40000)
    print(c is not None and c.result() == bytes(range(256)) * 40000)
elif case == "raises":
    def bad():
        raise ValueError("no")
    c = forked.start(bad)
    print(c is not None and c.result() is None)
elif case == "killed":
    def die():
        os.kill(os.getpid(), 9)
        return b"never"
    c = forked.start(die)
    print(c is not None and c.result() is None)
elif case == "helper":    # a helper thread is waited for, then the fork is made
    t = threading.Thread(target=time.sleep, args=(0.3,))
    t.start()
    forked.helper(t)
    c = forked.start(lambda: b"x")
    print(c is not None and not t.is_alive() and c.result() == b"x")
elif case == "thread":
    t = threading.Thread(target=time.sleep, args=(1,))
    t.start()
    print(forked.start(lambda: b"x") is None)
elif case == "frames":    # frames come one by one, in order, and the end is seen
    c = forked.start_stream(lambda emit: [emit(str(i).encode() * i) for i in range(1, 200)])
    got = list(c.frames())
    print(got == [str(i).encode() * i for i in range(1, 200)] and c.complete)
elif case == "cut-short":  # frames written before a crash arrive whole, in order; the stream is not complete
    def crash(emit):
        emit(b"one")
        emit(b"two" * 100000)
        time.sleep(0.2)   # the child's writer thread has written them by now
        os.kill(os.getpid(), 9)
    c = forked.start_stream(crash)
    print(list(c.frames()) == [b"one", b"two" * 100000] and not c.complete and c.result() is None)
elif case == "fails-late":  # work that raises after its frames: they arrive, but no end mark
    def late(emit):
        emit(b"one")
        raise ValueError("no")
    c = forked.start_stream(late)
    print(list(c.frames()) == [b"one"] and not c.complete)
elif case == "stopped":   # the parent stops reading: the child ends then, not after all its work
    def endless(emit):
        for _ in range(600):    # 60 s, were it not stopped
            emit(b"x" * 100000)
            time.sleep(0.1)
    c = forked.start_stream(endless)
    t0 = time.monotonic()
    frames = c.frames()
    next(frames)
    frames.close()          # stops reading: closes the pipe and waits for the child
    print(not c.complete and time.monotonic() - t0 < 20)
elif case == "claims":    # every number once, to threads of two processes
    from concurrent.futures import ThreadPoolExecutor
    n = 3000
    claims = forked.Claims.make(n)
    def take(_):
        got = []
        while (i := claims.next()) is not None:
            got.append(i)
        return got
    def work(emit):
        with ThreadPoolExecutor(4) as pool:
            for got in pool.map(take, range(4)):
                emit(" ".join(map(str, got)).encode())
    c = forked.start_stream(work)
    with ThreadPoolExecutor(4) as pool:
        mine = [i for got in pool.map(take, range(4)) for i in got]
    theirs = [int(x) for frame in c.frames() for x in frame.split()]
    claims.close()
    print(c.complete and sorted(mine + theirs) == list(range(n)))
elif case == "drain":     # after a drain nothing is left to claim, in either process
    claims = forked.Claims.make(5000)
    first = [claims.next() for _ in range(3)]
    c = forked.start_stream(lambda emit: (claims.drain(), emit(repr(claims.next()).encode())))
    print(first == [0, 1, 2] and c.result() == b"None" and claims.next() is None)
elif case == "claims-too-many":  # more records than a pipe holds: none, and no pipe left open
    before = len(os.listdir("/proc/self/fd"))
    print(forked.Claims.make(1 << 20) is None and len(os.listdir("/proc/self/fd")) == before)
else:   # "not-allowed", "env": no child
    print(forked.start(lambda: b"x") is None)
"""


@pytest.mark.parametrize("case", ["bytes", "raises", "killed", "helper", "thread", "not-allowed", "env", "frames", "cut-short", "fails-late",
                                  "stopped",
                                  pytest.param("claims", marks=LINUX), pytest.param("drain", marks=LINUX),
                                  pytest.param("claims-too-many", marks=LINUX)])
def test_child(case):
    env = {**os.environ, **({"CKPTKIT_NO_FORK": "1"} if case == "env" else {})}
    out = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True", out.stderr


def _sharded(d: Path, n: int) -> Path:
    """A checkpoint of ``n`` shards (two tensors each, one with a name JSON must escape) and its index."""
    d.mkdir()
    rng = np.random.default_rng(0)
    weight_map = {}
    for i in range(n):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        ts = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((4, 3)).astype(np.float32),
              f"model.layers.{i}.odd\u00e9\"name": rng.standard_normal((2,)).astype(np.float16)}
        save_file(ts, str(d / name), metadata={"format": "pt", "shard": str(i)})
        weight_map.update(dict.fromkeys(ts, name))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    return d


# the console script, with every fork it makes logged
RUN = r"""
import os, sys
real = os.fork
def fork():
    pid = real()
    if pid:
        with open(os.environ["FORK_LOG"], "a") as f:
            f.write("fork\n")
    return pid
os.fork = fork
sys.argv = ["ckptkit", *sys.argv[1:]]
from ckptkit.__main__ import run
run()
"""


# the child's headers spoiled on their way to the parent (index_codec.encode_headers in the child)
SPOIL = r"""
import os
from ckptkit import index_codec
parent, real, how = os.getpid(), index_codec.encode_headers, os.environ["SPOIL"]
def encode(headers):
    if os.getpid() == parent:
        return real(headers)
    if how == "garbage":
        return b"[[not json"
    if how == "same-position":     # each header claimed as file 0's
        return real({0: h for h in headers.values()})
    return b"[]"                   # "nothing": the child's files never arrive
index_codec.encode_headers = encode
"""


def _inspect(d: Path, tmp: Path, fork: bool) -> tuple[subprocess.CompletedProcess, int]:
    return _inspect_spec(str(d), tmp, fork, {"HF_HOME": str(tmp / "hf")})


def _inspect_spec(spec: str, tmp: Path, fork: bool, extra: dict[str, str],
                  args: tuple[str, ...] = ("--json",), before: str = "") -> tuple[subprocess.CompletedProcess, int]:
    """``ckptkit inspect SPEC --json`` and the number of children it forked."""
    log = tmp / f"forks-{fork}.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, **extra, "NO_COLOR": "1", "FORK_LOG": str(log)}
    env.pop("CKPTKIT_NO_FORK", None)
    if not fork:
        env["CKPTKIT_NO_FORK"] = "1"
    out = subprocess.run([sys.executable, "-c", before + RUN, "inspect", spec, *args, "--no-progress", "--no-cache"],
                         capture_output=True, text=True, env=env, timeout=120)
    return out, len(log.read_text().splitlines()) if log.exists() else 0


def test_forked_inspect_report_is_the_same(tmp_path):
    d = _sharded(tmp_path / "ckpt", SPLIT_MIN_FILES + 3)
    (forked, forks), (single, none) = _inspect(d, tmp_path, True), _inspect(d, tmp_path, False)
    assert (forks, none) == (1, 0)    # the headers, shared (the report's tensor list is made as they are read)
    assert forked.returncode == single.returncode == 0, forked.stderr + single.stderr
    assert forked.stdout == single.stdout
    report = json.loads(forked.stdout)
    assert len(report["tensors"]) == 2 * (SPLIT_MIN_FILES + 3)
    assert [t["file"] for t in report["tensors"][:4:2]] == ["model-00001-of-00019.safetensors",
                                                           "model-00002-of-00019.safetensors"]


def test_forked_inspect_text_is_the_same(tmp_path):
    d = _sharded(tmp_path / "ckpt", SPLIT_MIN_FILES)
    env = {"HF_HOME": str(tmp_path / "hf"), "COLUMNS": "200"}
    (forked, forks), (single, none) = (_inspect_spec(str(d), tmp_path, f, env, ("--tensors",)) for f in (True, False))
    assert (forks, none) == (1, 0)    # the headers (the text report is made here)
    assert forked.returncode == single.returncode == 0, forked.stderr + single.stderr
    assert forked.stdout == single.stdout and "up_proj" in forked.stdout


SWITCHES = r"""
import atexit, os, sys
real_set = sys.setswitchinterval
def logged(v):
    with open(os.environ["SWITCH_LOG"], "a") as f:
        f.write(f"{os.getpid()} {v}\n")
    real_set(v)
sys.setswitchinterval = logged
atexit.register(lambda: sys.stderr.write(f"interval at exit {sys.getswitchinterval()}\n"))
"""


def test_forked_reads_take_longer_turns_and_give_the_interval_back(tmp_path):
    """Both processes read with header_reads.SWITCH_INTERVAL; this one restores its own after."""
    from ckptkit.header_reads import SWITCH_INTERVAL
    d = _sharded(tmp_path / "ckpt", SPLIT_MIN_FILES + 1)
    log = tmp_path / "switches.log"
    out, forks = _inspect_spec(str(d), tmp_path, True, {"HF_HOME": str(tmp_path / "hf"), "SWITCH_LOG": str(log)},
                               before=SWITCHES)
    assert out.returncode == 0 and forks == 1, out.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    by_pid: dict[str, list[float]] = {}
    for pid, v in calls:
        by_pid.setdefault(pid, []).append(float(v))
    assert sorted(by_pid.values()) == sorted([[SWITCH_INTERVAL], [SWITCH_INTERVAL, sys.getswitchinterval()]])
    assert f"interval at exit {sys.getswitchinterval()}" in out.stderr


PROGRESS = r"""
import json, sys
from ckptkit import api, forked
forked.allow()
seen = []
index = api.load_index(api.open_source(sys.argv[1]), progress=lambda done, total: seen.append((done, total)),
                       split=True)
print(json.dumps({"seen": seen, "tensors": len(index.tensors)}))
"""


def test_progress_counts_the_headers_of_both_processes(tmp_path):
    n = SPLIT_MIN_FILES + 5
    d = _sharded(tmp_path / "ckpt", n)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "CKPTKIT_NO_CACHE": "1"}
    env.pop("CKPTKIT_NO_FORK", None)
    out = subprocess.run([sys.executable, "-c", PROGRESS, str(d)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    done = [k for k, total in got["seen"] if total == n]
    assert got["tensors"] == 2 * n and done[-1] == n and max(done) == n
    assert len(done) >= n    # one step per header, wherever it was read


@pytest.mark.parametrize("spoil", ["garbage", "same-position", "nothing"])
def test_forked_headers_that_arrive_wrong_are_read_here(tmp_path, spoil):
    """A child's headers that do not decode, name a file twice or never come: all are read here."""
    d = _sharded(tmp_path / "ckpt", SPLIT_MIN_FILES + 9)
    env = {"HF_HOME": str(tmp_path / "hf"), "SPOIL": spoil}
    (forked, forks), (single, none) = (_inspect_spec(str(d), tmp_path, f, env, before=SPOIL) for f in (True, False))
    assert (forks, none) == (2, 0)    # the headers, then the report's tensor list (none came with them)
    assert forked.returncode == single.returncode == 0, forked.stderr + single.stderr
    assert forked.stdout == single.stdout and len(json.loads(forked.stdout)["tensors"]) == 2 * (SPLIT_MIN_FILES + 9)


@pytest.mark.parametrize("bad", [0, 4, 5, 17])  # files taken early or late, by either process
def test_forked_inspect_error_is_the_same(tmp_path, bad):
    n = SPLIT_MIN_FILES + 3
    d = _sharded(tmp_path / "ckpt", n)
    shard = d / f"model-{bad + 1:05d}-of-{n:05d}.safetensors"
    shard.write_bytes(shard.read_bytes()[:-3])   # truncated: its header says more than is there
    later = d / f"model-{n:05d}-of-{n:05d}.safetensors"
    later.write_bytes(b"\xff" * 8 + later.read_bytes()[8:])   # a second bad file, later in the order
    (forked, forks), (single, none) = _inspect(d, tmp_path, True), _inspect(d, tmp_path, False)
    assert (forks, none) == (1, 0)
    assert forked.returncode == single.returncode != 0
    assert forked.stderr == single.stderr
    assert shard.name in forked.stderr and "Traceback" not in forked.stderr


def test_forked_inspect_over_the_hub(tmp_path, hub, hf_cache):
    """The same report from the Hub both ways, with the same requests: the child reads its half
    of the headers once each, on connections of its own."""
    n = SPLIT_MIN_FILES + 3
    hub.add_repo_from_dir("fork/sharded", _sharded(tmp_path / "ckpt", n))
    runs = []
    for fork in (True, False):
        hub.reset_stats()
        out, forks = _inspect_spec("fork/sharded", tmp_path, fork, {"HF_HUB_CACHE": str(hf_cache)})
        assert out.returncode == 0, out.stderr
        runs.append((out.stdout, forks, sorted((r.path, r.range) for r in hub.requests)))
    (forked_out, forks, forked_reqs), (single_out, none, single_reqs) = runs
    assert (forks, none) == (1, 0)
    assert forked_out == single_out and json.loads(forked_out)["tensors"]
    assert forked_reqs == single_reqs and len(forked_reqs) == n + 3
