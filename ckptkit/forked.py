"""CPU-bound work on the second core: a forked child computes bytes while this process goes on.

Python runs one thread at a time, so the parsing and text building of a large inspect (91,991
DeepSeek-V3 tensors: ~0.5 s of headers, ~0.15 s of report text) cannot share a machine's cores
through threads. A forked child can: it starts with this process's memory as it is (no copy, no
pickling), computes, and sends plain bytes back through a pipe. Anything that goes wrong in it
(an exception, a crash, a kill) comes back as ``None``, and the caller then does the work itself,
so a child changes how fast a result comes, never what it is, nor which error is reported.

Only the console script allows it (``allow``): a program that imports ckptkit may hold state a
forked copy must not touch. Even then a child is made only where fork is safe: a POSIX system
other than macOS, and no other thread running. ``CKPTKIT_NO_FORK=1`` turns it off.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

ENV_NO_FORK = "CKPTKIT_NO_FORK"
_allowed = False


def allow() -> None:
    """Let this process fork helpers (called by the console script, ckptkit/__main__.py)."""
    global _allowed
    _allowed = True


def fork_safe() -> bool:
    """Whether this process can fork safely: a POSIX system other than macOS (whose system
    libraries may not survive a fork), and no other thread (one could hold a lock forever)."""
    return hasattr(os, "fork") and sys.platform != "darwin" and threading.active_count() == 1


def possible() -> bool:
    return _allowed and fork_safe() and not os.environ.get(ENV_NO_FORK)


class Child:
    """``work()`` run in a forked child; ``result()`` is its bytes, or None if it failed."""

    def __init__(self, pid: int, fd: int):
        self._pid, self._fd = pid, fd

    def result(self) -> bytes | None:
        try:
            with os.fdopen(self._fd, "rb") as f:
                data = f.read()
        finally:
            _, status = os.waitpid(self._pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or len(data) < 1 or data[-1:] != b"\n":
            return None
        return data[:-1]    # the child's closing newline says it wrote everything


def start(work: Callable[[], bytes]) -> Child | None:
    """``work`` in a forked child, or None where no child can be made (the caller works here)."""
    if not possible():
        return None
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the child: compute, write, leave without running anything of the parent's
        code = 1
        try:
            os.close(r)
            data = work()
            with os.fdopen(w, "wb") as out:
                out.write(data)
                out.write(b"\n")
            code = 0
        except BaseException:  # noqa: BLE001 - the parent does the work itself
            pass
        finally:
            os._exit(code)
    os.close(w)
    return Child(pid, r)
