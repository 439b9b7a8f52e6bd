"""Shared helpers for the benchmark scripts: measured subprocesses, tables, machine facts."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
GNU_TIME = "/usr/bin/time"
for _p in (TESTS, ROOT):  # the Hub server and generators live in tests/; ckptkit from this checkout
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


@dataclass
class Run:
    wall: float          # seconds from spawn to exit, as the parent saw it
    cpu: float           # user + system seconds of the process
    maxrss: int          # bytes: peak resident set of the process (and its waited-for children)
    rc: int
    stdout: str
    stderr: str


_compiled: list[bool] = []


def _as_installed() -> None:
    """Byte-compile this checkout's ckptkit once, as pip does when it installs the wheel: the
    measured tools' own packages (huggingface_hub, ...) are installed and compiled, and a checkout
    run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile ckptkit's modules on every run."""
    if not _compiled:
        import compileall
        compileall.compile_dir(str(ROOT / "ckptkit"), quiet=1)
        _compiled.append(True)


def run_measured(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800,
                 cwd: str | os.PathLike | None = None) -> Run:
    """Run ``cmd`` to completion and measure its wall time and peak RSS.

    Peak RSS comes from GNU time (``/usr/bin/time``), which forks the command from its own small
    process: Linux carries a process's RSS high-water mark across fork+exec, so measuring a child
    forked straight from this (large) Python process would report our own size."""
    # The children import the ckptkit of this checkout, whatever `pip install -e` points at.
    _as_installed()
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH")) if p)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        timed = os.path.exists(GNU_TIME)
        argv = [GNU_TIME, "-f", "%M %U %S", "-o", rss_file.name, *cmd] if timed else [*cmd]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(argv, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SystemExit(f"{cmd[:3]}... ran longer than {timeout:.0f} s") from e
        wall = time.perf_counter() - t0
        rss, cpu = 0, 0.0
        if timed:
            for line in rss_file.read().splitlines():  # "Command exited with non-zero status" first
                parts = line.split()
                if len(parts) == 3 and parts[0].isdigit():
                    rss, cpu = int(parts[0]) * 1024, float(parts[1]) + float(parts[2])
        else:  # wait4 figures include this process's size at fork: an upper bound only
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            rss, cpu = ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime
    return Run(wall, cpu, rss, p.returncode, p.stdout, p.stderr)


def last_json(text: str) -> dict:
    """The JSON object on the last non-empty line of a child's stdout."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def check(run: Run, what: str) -> Run:
    if run.rc != 0:
        sys.stderr.write(run.stderr[-4000:])
        raise SystemExit(f"{what} failed with exit status {run.rc}")
    return run


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def size(n: float) -> str:
    """Bytes in MB, or in KB below 1 MB (small repos' reads)."""
    return f"{n / 1e3:,.1f} KB" if n < 1e6 else mb(n)


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A GitHub-flavoured Markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"
    lines = ([f"\n{title}\n"] if title else []) + [fmt(cells[0])]
    lines.append("|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|")
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    import numpy
    try:
        import huggingface_hub
        hh = huggingface_hub.__version__
    except ImportError:
        hh = "-"
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), RAM {mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {numpy.__version__}, huggingface_hub {hh}")


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop, best of three: how fast this machine runs Python at
    the moment. On a shared VM it moves by 30 % and more between minutes, and a CPU-bound tool
    measured against a network-bound one moves with it; printed beside the figures to read them by."""
    import time
    best = float("inf")
    for _ in range(3):
        t, x = time.perf_counter(), 0
        for i in range(3_000_000):
            x += i
        best = min(best, time.perf_counter() - t)
    return best


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
