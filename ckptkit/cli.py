"""Command line: parse arguments, call the API, render. No logic of its own."""
from __future__ import annotations

import json
import sys
from functools import wraps

import click
from rich.console import Console

from . import __version__, api
from .errors import CkptError
from .report import index_report


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


def _progress_bar(enabled: bool):
    """A tqdm bar on stderr, shown only when there are more than a few files."""
    if not enabled:
        return None, lambda: None
    state: dict = {}

    def progress(done: int, total: int) -> None:
        if total <= 4:
            return
        if "bar" not in state:
            from tqdm import tqdm
            state["bar"] = tqdm(total=total, unit="file", desc="headers", file=sys.stderr, leave=False)
        state["bar"].n = done
        state["bar"].refresh()

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ckptkit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Inspect, validate and convert LLM checkpoints (safetensors, GGUF, Hub repos)."""


@main.command()
@click.argument("src")
@click.option("--revision", help="Hub revision (branch, tag or commit); also SRC@rev.")
@click.option("--tensors", "all_tensors", is_flag=True, help="List every tensor, not patterns.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@guarded
def inspect(src: str, revision: str | None, all_tensors: bool, as_json: bool, no_progress: bool) -> None:
    """Read only the headers of SRC (file, folder, GGUF or Hub repo) and tell what it holds."""
    progress, close = _progress_bar(not no_progress and sys.stderr.isatty())
    try:
        index = api.inspect(src, revision, progress)
    finally:
        close()
    report = index_report(index)
    _add_inference(report, index)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    from .render.text import render_index
    console = Console()
    render_index(index, console, all_tensors)
    _render_facts(report, console)


def _add_inference(report: dict, index) -> None:
    try:
        from .infer import infer
    except ImportError:
        return
    report.update(infer(index).to_json())


def _render_facts(report: dict, console: Console) -> None:
    try:
        from .render.facts import render_facts
    except ImportError:
        return
    render_facts(report, console)


if __name__ == "__main__":  # pragma: no cover
    main()
