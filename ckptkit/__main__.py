"""``python -m ckptkit`` and the ``ckptkit`` console script.

A command that has finished has nothing left for the interpreter's teardown to do but free
memory and modules one by one, which costs 0.1-0.3 s after a conversion or a large inspect. So
``run`` flushes the output, runs the exit handlers (``atexit``: temporary folders of libraries
and the like) and ends the process with ``os._exit``. Every file ckptkit writes is complete and
renamed into place before its command returns, so nothing is cut short.

The index cache (index_cache.py) is not part of a command's answer: its stores are held back
until the output is out, then made by a child process that has let go of the terminal and the
output pipes, so the command ends 0.2-0.3 s sooner after a cold inspect of a large repo; a
store is atomic (temporary name, rename), so a command that starts meanwhile finds the old
entry or none. Where fork is missing, or other threads still run, they are made before exiting.
Calling ``cli.main`` from Python (tests, click's CliRunner) keeps the ordinary behaviour.

The console script also asks glibc's allocator to keep freed memory for reuse (``_keep_freed``):
by default it hands freed blocks back to the kernel, and a conversion, which allocates and frees
a few MB per chunk on several threads, then faults fresh zeroed pages in again for every chunk.
"""
from __future__ import annotations

import atexit
import os
import sys
import warnings
from collections.abc import Callable


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"), as the interpreter would print it
    return 1


def run() -> None:
    from .cli import main

    prepare()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = _status(e.code)
    finish(code)


def finish(code: int) -> None:
    """The end of a command whose cache stores were held back (index_cache.hold_writes): the
    output flushed, the stores handed to a detached child, the process ended (exit_now)."""
    from . import index_cache

    _flush()
    _in_background(index_cache.held_writes())
    exit_now(code)


def _flush() -> bool:
    """Flush stdout and stderr; False when the reader of one went away (a closed pipe)."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            ok = False
        except (OSError, ValueError):
            pass
    return ok


def _in_background(tasks: list[Callable[[], None]]) -> None:
    """Run ``tasks`` in a detached child when this process can fork safely, else here."""
    if not tasks:
        return
    from .forked import fork_safe

    if not fork_safe():
        _run_quietly(tasks)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            pid = os.fork()
        except OSError:
            _run_quietly(tasks)
            return
    if pid:
        return
    try:  # the child: no terminal, no pipes kept open for whoever reads the output
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _run_quietly(tasks)
    finally:
        os._exit(0)


def _run_quietly(tasks: list[Callable[[], None]]) -> None:
    for task in tasks:
        try:
            task()
        except Exception:  # noqa: BLE001 - a cache that could not be stored is only a later miss
            pass


def prepare() -> None:
    """What the console script sets up before a command: cache stores held back to ``finish``,
    forked helpers allowed (forked.py), freed memory kept for reuse, large indexes frozen out
    of the garbage collector's walks (index.freeze_after_bulk)."""
    from . import forked, index_cache
    from .index import freeze_after_bulk

    index_cache.hold_writes()
    forked.allow()
    freeze_after_bulk()
    _keep_freed()


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2


def _keep_freed() -> None:
    """Freed memory stays in the process for the next allocation instead of being handed back
    to the kernel (a thread's heap trimmed with madvise) and faulted in afresh: HF -> GGUF f16 of
    1 GB made ~100k minor page faults and 0.8-1.8 s of system time before, ~16k and 0.6 s after.
    The heap keeps up to 1 GB free before trimming; what a command holds at once is unchanged
    (GGUF -> GGUF, which holds the most, peaks 10-30 MB higher), and it all goes at exit."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc-like: nothing to tune
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    mallopt(_M_TOP_PAD, 64 << 20)


def exit_now(code: int) -> None:
    """Flush, run the exit handlers and end the process without the interpreter's teardown."""
    try:
        atexit._run_exitfuncs()
    except Exception:  # noqa: BLE001 - as the interpreter, which reports and goes on exiting
        pass
    if not _flush():  # the reader went away: as an ordinary exit with a closed pipe
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    run()
