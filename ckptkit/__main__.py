"""``python -m ckptkit`` and the ``ckptkit`` console script.

A command that has finished has nothing left for the interpreter's teardown to do but free
memory and modules one by one, which costs 0.1-0.3 s after a conversion or a large inspect. So
``run`` flushes the output, runs the exit handlers (``atexit``: temporary folders of libraries
and the like) and ends the process with ``os._exit``. Every file ckptkit writes is complete and
renamed into place before its command returns, so nothing is cut short. Calling ``cli.main``
from Python (tests, click's CliRunner) keeps the ordinary exit.
"""
from __future__ import annotations

import atexit
import os
import sys


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"), as the interpreter would print it
    return 1


def run() -> None:
    from .cli import main

    try:
        main()
        code = 0
    except SystemExit as e:
        code = _status(e.code)
    exit_now(code)


def exit_now(code: int) -> None:
    """Flush, run the exit handlers and end the process without the interpreter's teardown."""
    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BrokenPipeError:  # the reader went away: as an ordinary exit with a closed pipe
        code = code or 1
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
