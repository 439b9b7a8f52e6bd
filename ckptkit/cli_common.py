"""What every command of the command line shares: one-line errors with an exit status
(``guarded``), and the progress bar of header reads."""
from __future__ import annotations

import sys
from functools import wraps

import click

from .errors import CkptError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"ckptkit: {message}", err=True)
    sys.exit(code)


def guarded(fn):
    """Turn every error into one line on stderr and an exit status; --debug shows tracebacks."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except CkptError as e:
            if debug:
                raise
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            sys.exit(1)
        except MemoryError:
            _fail("out of memory", 2)
        except Exception as e:  # a bug in ckptkit: still one line unless asked for more
            if debug:
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (run with --debug for a traceback)", 3)

    return wrapper


def progress_bar(enabled: bool):
    """A tqdm bar on stderr, shown only when there are more than a few files."""
    if not enabled:
        return None, lambda: None
    state: dict = {}

    def progress(done: int, total: int) -> None:
        if total <= 4:
            return
        if "bar" not in state:
            from tqdm import tqdm
            tqdm.monitor_interval = 0  # no monitor thread: redrawn here; forked.py forks only without threads
            state["bar"] = tqdm(total=total, unit="file", desc="headers", file=sys.stderr, leave=False)
        state["bar"].n = done
        state["bar"].refresh()

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close
