"""The console script's process-wide settings (ckptkit/__main__.py), checked in fresh processes."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# A thread allocates a 40 MB buffer, writes every page, frees it, and does it twice again: the
# page faults of the later rounds say whether the freed memory was kept for reuse or handed back
# to the kernel and faulted in afresh (40 MB is above glibc's largest automatic mmap threshold,
# so by default every such buffer is a fresh mapping; below a thread heap's 64 MB).
PROBE = r"""
import json, resource, sys, threading
from ckptkit.__main__ import _keep_freed
if sys.argv[1] == "keep":
    _keep_freed()
faults = []
def rounds():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        b = bytearray(40 << 20)
        b[::4096] = b"\1" * len(range(0, len(b), 4096))
        del b
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=rounds)
t.start()
t.join()
print(json.dumps(faults))
"""
PAGES = (40 << 20) // 4096


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's allocator only")
def test_freed_memory_is_kept_for_the_next_chunk():
    default, kept = _faults("default"), _faults("keep")
    assert min(default) > PAGES // 2                 # the probe sees the default hand memory back
    assert max(kept[1:]) < PAGES // 10               # kept: later buffers reuse the first one's pages


FREEZE = r"""
import gc, sys
from ckptkit.index import bulk
if sys.argv[1] == "console":
    from ckptkit.__main__ import prepare
    prepare()
with bulk():
    made = [(str(i), (i, i)) for i in range(50_000)]
print(gc.get_freeze_count(), gc.isenabled())
"""


def test_console_script_freezes_what_a_bulk_block_made():
    """The console script moves a large index out of the collector's walks when it is built;
    a program that imports ckptkit keeps its collector as it was."""
    def run(mode: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", FREEZE, mode], capture_output=True, text=True, check=True)
        return out.stdout.split()
    frozen, enabled = run("console")
    assert int(frozen) >= 50_000 and enabled == "True"
    assert run("library") == ["0", "True"]
