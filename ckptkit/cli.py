"""Command line: parse arguments, call the API, render. No logic of its own."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from . import __version__, api, index_cache
from .cli_common import guarded, progress_bar
from .cli_convert import convert
from .report import PER_FILE, inspect_report, inspect_report_parts

if TYPE_CHECKING:
    from rich.console import Console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ckptkit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Inspect, validate and convert LLM checkpoints (safetensors, GGUF, Hub repos)."""


main.add_command(convert)


@main.command()
@click.argument("src")
@click.option("--revision", help="Hub revision (branch, tag or commit); also SRC@rev.")
@click.option("--tensors", "all_tensors", is_flag=True, help="List every tensor, not patterns.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--ctx", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also report memory: weights plus the cache at N tokens of context.")
@click.option("--kv-type", type=click.Choice(["f16", "bf16", "q8_0", "f32"]), default="f16",
              show_default=True, help="KV-cache type for --ctx (linear-attention state is F32).")
@click.option("--diagram", type=click.Path(dir_okay=False), metavar="PATH",
              help="Also draw the architecture (blocks and parameters by part) as SVG at PATH.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write ckptkit's index cache "
              "(also CKPTKIT_NO_CACHE=1).")
@guarded
def inspect(src: str, revision: str | None, all_tensors: bool, as_json: bool, no_progress: bool,
            ctx: int | None, kv_type: str, diagram: str | None, no_cache: bool) -> None:
    """Read only the headers of SRC (file, folder, GGUF or Hub repo) and tell what it holds.

    \b
    Examples:
      ckptkit inspect examples/tiny-llama
      ckptkit inspect deepseek-ai/DeepSeek-V3 --ctx 32768 --kv-type q8_0
      ckptkit inspect hf://unsloth/Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M.gguf --json
      ckptkit inspect meta-llama/Llama-3.1-8B --diagram llama.svg"""
    with index_cache.bypass(no_cache):
        _inspect(src, revision, all_tensors, as_json, no_progress, ctx, kv_type, diagram)


def _inspect(src: str, revision: str | None, all_tensors: bool, as_json: bool, no_progress: bool,
             ctx: int | None, kv_type: str, diagram: str | None) -> None:
    progress, close = progress_bar(not no_progress and sys.stderr.isatty())
    report_only = as_json and ctx is None and not diagram  # then the whole text is cached
    try:
        if report_only:
            parts = api.inspect_json(src, revision, progress, inspect_report_parts, PER_FILE)
        else:
            index = api.inspect(src, revision, progress)
    finally:
        close()
    if report_only:
        _echo_json_parts(parts)
        return
    report = inspect_report(index)
    if ctx is not None:
        _add_memory(report, index.total_bytes, ctx, kv_type)
    if diagram:
        from .render.diagram import panel_from_index, save_diagram
        save_diagram(diagram, [panel_from_index(src, report, index)])
        click.echo(f"wrote {diagram}", err=True)
    if as_json:
        # compact: with indent json falls back to its pure-Python encoder, 3x slower on 90k tensors
        _echo_json(json.dumps(report))
        return
    from rich.console import Console

    from .render.text import render_index
    console = Console()
    render_index(index, console, all_tensors)
    _render_facts(report, console)


def _echo_json(text: str) -> None:
    """A JSON report on stdout. Not through click.echo, which runs a regex over the whole text to
    strip terminal colour codes when stdout is not a terminal (17 MB for DeepSeek-V3); JSON text
    holds none: json.dumps writes control characters as escapes."""
    sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _echo_json_parts(parts: list[bytes]) -> None:
    """``_echo_json`` of the UTF-8 text made of ``parts``, written as they are where stdout takes
    bytes (no 17 MB decoded, joined and encoded again)."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None or (sys.stdout.encoding or "").lower().replace("-", "") not in ("utf8", "ascii"):
        _echo_json(b"".join(parts).decode())
        return
    sys.stdout.flush()
    for part in parts:
        out.write(part)
    out.flush()
    sys.stdout.write("\n")   # as the text layer ends a line here
    sys.stdout.flush()


def _add_memory(report: dict, weights_bytes: int, ctx: int, kv_type: str) -> None:
    from .infer.memory import estimate_memory, fact_values
    values = fact_values(report.get("facts") or {})
    report["memory"] = estimate_memory(values, weights_bytes, ctx, kv_type).to_json()


def _render_facts(report: dict, console: Console) -> None:
    try:
        from .render.facts import render_facts
    except ImportError:
        return
    render_facts(report, console)


# ---- validate, compare, catalogue --------------------------------------------------------------

@main.command("validate")
@click.argument("src")
@click.option("--revision", help="Hub revision (branch, tag or commit); also SRC@rev.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="github: GitHub Actions ::error/::warning annotations.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default=None,
              help="Exit 1 when a finding of this level or above exists [default: error, or the "
                   "policy's fail_on].")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Policy file (TOML): allowed formats/dtypes, parameter ceiling, ...")
@click.option("--no-cache", is_flag=True, help="Neither read nor write ckptkit's index cache "
              "(also CKPTKIT_NO_CACHE=1).")
@guarded
def validate_cmd(src, revision, as_json, fmt, fail_on, policy_path, no_cache) -> None:
    """Audit SRC: config.json vs tensors, layer structure, shard index, catalogue, policy.

    Exit status: 0 clean, 1 findings at or above --fail-on, 2 unreadable input.

    \b
    Examples:
      ckptkit validate examples/tiny-llama
      ckptkit validate org/model --format github --policy ckptkit.toml
      ckptkit validate model.gguf --json --fail-on warning"""
    from .validate import format_github, format_text, validate
    policy = None
    if policy_path:
        from .validate.policy import load_policy
        policy = load_policy(policy_path)
    with index_cache.bypass(no_cache):
        result = validate(src, revision, policy)
    if as_json or fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=1))
    elif fmt == "github":
        click.echo(format_github(result))
    else:
        click.echo(format_text(result))
    if result.failed(fail_on or result.fail_on or "error"):
        sys.exit(1)


def _table_console() -> Console:
    """Terminal width on a terminal; wide when piped, so tables are not folded into slivers."""
    from rich.console import Console
    return Console() if sys.stdout.isatty() else Console(width=240)


def _compare_column(spec: str, revision: str | None, panels: list | None = None) -> dict:
    """A table column for ``spec``; with ``panels``, also appends its diagram panel."""
    from pathlib import Path

    from .infer import infer
    from .render.compare import column_from_model, column_from_report, find_model
    model = None if Path(spec).exists() else find_model(spec)
    if model is not None:
        if panels is not None:
            from .render.diagram import panel_from_model
            panels.append(panel_from_model(model))
        return column_from_model(model)
    index = api.inspect(spec, revision)
    meta = index.metadata if index.format == "gguf" else None
    report = infer(index).to_json()
    if panels is not None:
        from .render.diagram import panel_from_index
        panels.append(panel_from_index(spec, report, index))
    return column_from_report(spec, report, index.config, meta)


@main.command()
@click.argument("specs", nargs=-1, required=True, metavar="SRC...")
@click.option("--revision", help="Hub revision for every Hub SRC.")
@click.option("--markdown", is_flag=True, help="A Markdown table instead of a terminal table.")
@click.option("--diagram", type=click.Path(dir_okay=False), metavar="PATH",
              help="Also draw the architectures side by side as SVG at PATH.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write ckptkit's index cache "
              "(also CKPTKIT_NO_CACHE=1).")
@guarded
def compare(specs, revision, markdown, diagram, no_cache) -> None:
    """Side-by-side architecture facts of checkpoints (folders, files, Hub repos) and catalogue
    models (by name, e.g. "Llama 3 8B"; see `ckptkit catalogue`).

    \b
    Examples:
      ckptkit compare examples/tiny-llama "Llama 3 8B"
      ckptkit compare deepseek-ai/DeepSeek-V3 moonshotai/Kimi-K2-Instruct --markdown
      ckptkit compare "gpt-oss-20b" "Qwen3 30B-A3B" --diagram side-by-side.svg"""
    from .render.compare import compare_table, render
    panels: list | None = [] if diagram else None
    with index_cache.bypass(no_cache):
        headers, rows = compare_table([_compare_column(s, revision, panels) for s in specs])
    render(headers, rows, _table_console(), markdown)
    if diagram and panels is not None:
        from .render.diagram import save_diagram
        save_diagram(diagram, panels)
        click.echo(f"wrote {diagram}", err=True)


@main.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--atol", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Absolute tolerance: |a - b| <= atol + rtol * |a| passes.")
@click.option("--rtol", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Relative tolerance (to A's value).")
@click.option("--all", "all_tensors", is_flag=True, help="List every tensor, not only those that differ.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@guarded
def diff_cmd(a, b, atol, rtol, all_tensors, as_json, no_progress) -> None:
    """Compare the weights of checkpoints A and B (HF safetensors or GGUF: file, folder or Hub
    repo) tensor by tensor, each side's format transforms undone, streamed.

    Exit status: 0 equal (within --atol/--rtol; default exact), 1 differences, 2 unreadable input.

    \b
    Examples:
      ckptkit diff examples/tiny-llama tiny.gguf
      ckptkit diff examples/tiny-llama tiny-q8.gguf --atol 1e-3 --json"""
    from .tensordiff import diff
    bar: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in bar:
            from tqdm import tqdm
            bar["bar"] = tqdm(total=total, unit="tensor", desc="diff", file=sys.stderr, leave=False)
        bar["bar"].update(done - bar["bar"].n)

    try:
        res = diff(a, b, atol, rtol, progress=progress if not no_progress and sys.stderr.isatty() else None)
    finally:
        if "bar" in bar:
            bar["bar"].close()
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=1))
    else:
        from .render.diff import render_diff
        render_diff(res, _table_console(), all_tensors)
    if res.failed:
        sys.exit(1)


@main.command()
@click.option("--family", help="Only this family (a name from mappings/families, e.g. deepseek_v3).")
@click.option("--markdown", is_flag=True, help="A Markdown table instead of a terminal table.")
@guarded
def catalogue(family, markdown) -> None:
    """The known models and their published facts.

    \b
    Examples:
      ckptkit catalogue
      ckptkit catalogue --family deepseek_v3 --markdown"""
    from .catalogue import families
    from .errors import SourceError
    from .render.compare import catalogue_table, render
    if family and family not in families():
        raise SourceError(f"unknown family; known: {', '.join(sorted(families()))}", family)
    headers, rows = catalogue_table(family)
    render(headers, rows, _table_console(), markdown)


if __name__ == "__main__":  # pragma: no cover
    main()
