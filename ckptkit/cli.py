"""Command line: parse arguments, call the API, render. No logic of its own."""
from __future__ import annotations

import json
import sys
import threading
import time
from functools import wraps
from typing import TYPE_CHECKING

import click

from . import __version__, api, index_cache
from .errors import CkptError
from .report import PER_FILE, inspect_report, inspect_report_parts

if TYPE_CHECKING:
    from rich.console import Console


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
            tqdm.monitor_interval = 0  # no monitor thread: redrawn here; forked.py forks only without threads
            state["bar"] = tqdm(total=total, unit="file", desc="headers", file=sys.stderr, leave=False)
        state["bar"].n = done
        state["bar"].refresh()

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


class _ConvertBar:
    """A tqdm bar of bytes written (its own rate is the write throughput), with the bytes fetched
    from the source and their throughput as the postfix, refreshed at most every ``interval``."""

    def __init__(self, total: int, interval: float = 0.25):
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                        desc="convert", file=sys.stderr, smoothing=0.1)
        self.fetched = 0
        self.interval = interval
        self._start = self._shown = time.monotonic()
        self._lock = threading.Lock()

    def on_fetched(self, n: int) -> None:  # from reading threads: count only, the writer draws
        with self._lock:
            self.fetched += n

    def on_bytes(self, n: int) -> None:
        self.bar.update(n)
        now = time.monotonic()
        if now - self._shown >= self.interval:
            self._shown = now
            self._postfix(now, refresh=False)  # update() redraws on its own schedule

    def _postfix(self, now: float, refresh: bool) -> None:
        from tqdm import tqdm
        rate = self.fetched / max(now - self._start, 1e-9)
        size = tqdm.format_sizeof
        self.bar.set_postfix_str(f"fetched {size(self.fetched, 'B', 1024)} "
                                 f"at {size(rate, 'B/s', 1024)}", refresh=refresh)

    def close(self) -> None:
        self._postfix(time.monotonic(), refresh=True)  # the final figures stay on screen
        self.bar.close()


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
    progress, close = _progress_bar(not no_progress and sys.stderr.isatty())
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


@main.command()
@click.argument("src")
@click.argument("out", type=click.Path())
@click.option("--to", "to", type=click.Choice(["gguf", "hf", "ckpt"]), default=None,
              help="Output: gguf (a file), hf (a Hugging Face folder) or ckpt (the uniform layout: "
              "canonical names + manifest.json). Default: gguf for a .gguf OUT or an HF source, else hf.")
@click.option("--outtype", type=click.Choice(["auto", "f32", "f16", "bf16", "q8_0"]), default="auto",
              show_default=True, help="auto keeps 16-bit as it is and F32 where llama.cpp wants F32 "
              "(GGUF -> HF: auto is bf16).")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option("--split-max-size", help="Split the output into files of at most this size (e.g. 50G).")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Jobs reading, transforming and encoding chunks at once.")
@click.option("--no-mtp", is_flag=True, help="Drop multi-token-prediction layers.")
@click.option("--keep-mxfp4", is_flag=True, help="GGUF -> HF: MXFP4 experts (gpt-oss) written as the published "
              "HF MXFP4 blocks and scales, bit for bit, instead of dequantised to --outtype.")
@click.option("--no-vocab", is_flag=True, help="Do not convert the tokenizer.")
@click.option("--vocab-only", is_flag=True, help="HF -> GGUF: only the tokenizer and the architecture's "
              "metadata, no tensors (llama.cpp loads it with vocab_only); SRC may hold just tokenizer files.")
@click.option("--pre", help="Force the BPE pre-tokenizer name (tokenizer.ggml.pre).")
@click.option("--family", help="Force the conversion family (a file stem in mappings/convert).")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--dequantize", is_flag=True, help="--to ckpt or hf from safetensors: FP8 weights times their "
              "scales and MXFP4 experts as transformers dequantises them, as --outtype (auto: bf16); by "
              "default both are kept as stored.")
@click.option("--experts", type=click.Choice(["split", "stacked"]), default="split", show_default=True,
              help="--to ckpt: per-expert tensors as the source has them, or each layer's experts of a role "
              "stacked into one tensor.")
@click.option("--shard-size", default="5GB", show_default=True,
              help="--to hf or ckpt: largest safetensors shard (e.g. 5GB, 500MB).")
@click.option("--read-timeout", type=click.FloatRange(0.05, None, min_open=False), default=None,
              help="From the Hub: seconds a read may receive nothing before it is resumed "
              "(default 10, or HF_HUB_DOWNLOAD_TIMEOUT).")
@click.option("--connections", type=click.IntRange(1, 64), default=None,
              help="From the Hub: ranged requests in flight at once, each up to 8 MB (default 4, "
              "up to 16 when the ranges are small).")
@click.option("--resume", is_flag=True,
              help="HF -> GGUF: keep a journal next to the temporary output, and continue from the "
              "tensors an interrupted --resume run of the same conversion completed.")
@guarded
def convert(src, out, to, outtype, revision, split_max_size, threads, no_mtp, no_vocab, pre, family,
            dry_run, no_progress, shard_size, read_timeout, connections, resume, vocab_only=False,
            dequantize=False, experts="split", keep_mxfp4=False) -> None:
    """Convert SRC (HF safetensors: folder, file or Hub repo; a GGUF; or a ckpt folder) to GGUF
    at OUT, to a Hugging Face folder OUT (sharded safetensors, config.json, tokenizer) or to the
    uniform layout (--to ckpt), streamed.

    \b
    Examples:
      ckptkit convert examples/tiny-llama tiny.gguf --outtype q8_0
      ckptkit convert Qwen/Qwen3-0.6B qwen3.gguf --resume
      ckptkit convert tiny.gguf tiny-hf --outtype f32
      ckptkit convert examples/tiny-llama tokenizer.gguf --vocab-only
      ckptkit convert examples/tiny-llama tiny.gguf --dry-run
      ckptkit convert examples/tiny-llama tiny-ckpt --to ckpt"""
    from .conversion import check_target, convert_to_gguf, default_target, source_kind
    if vocab_only and no_vocab:
        raise CkptError("--vocab-only and --no-vocab exclude each other")
    kind = "hf" if vocab_only else source_kind(src, revision)   # a tokenizer-only folder has no weights
    target = to or default_target(kind, out)
    check_target(kind, target, out, outtype)
    if target == "ckpt" or (target == "hf" and kind != "gguf"):
        if vocab_only:
            raise CkptError(f"--vocab-only writes a GGUF of the tokenizer; --to {target} writes the weights")
        from .cli_ckpt import convert_ckpt
        return convert_ckpt(src, out, target, outtype, revision, shard_size, no_vocab, dry_run, no_progress,
                            dequantize, experts)
    if target == "hf":
        return _convert_to_hf(src, out, outtype, revision, shard_size, no_vocab, dry_run, no_progress,
                              keep_mtp=not no_mtp, keep_mxfp4=keep_mxfp4)
    from .render.text import human_bytes
    bar: dict = {}

    def on_plan(plan) -> None:
        if dry_run:
            _print_plan(plan)
        elif not no_progress and sys.stderr.isatty():
            bar["bar"] = _ConvertBar(plan.nbytes)

    def on_bytes(n: int) -> None:
        if "bar" in bar:
            bar["bar"].on_bytes(n)

    def on_fetched(n: int) -> None:
        if "bar" in bar:
            bar["bar"].on_fetched(n)

    try:
        res = convert_to_gguf(src, out, outtype=outtype, revision=revision, threads=threads,
                              split_max_size=split_max_size, keep_mtp=not no_mtp, family=family,
                              vocab=not no_vocab, pre=pre, dry_run=dry_run, on_bytes=on_bytes,
                              on_plan=on_plan, read_timeout=read_timeout, connections=connections,
                              resume=resume, on_fetched=on_fetched, vocab_only=vocab_only)
    finally:
        if "bar" in bar:
            bar["bar"].close()
    if not dry_run:
        for p in res.outputs:
            click.echo(f"wrote {p} ({human_bytes(p.stat().st_size)}, {len(res.plan.tensors)} tensors, "
                       f"arch {res.plan.arch})", err=True)


def _convert_to_hf(src, out, outtype, revision, shard_size, no_vocab, dry_run, no_progress,
                   keep_mtp=True, keep_mxfp4=False) -> None:
    from .conversion import convert_to_hf, parse_size
    from .render.text import human_bytes
    if outtype == "q8_0":
        raise CkptError("GGUF -> HF writes bf16, f16 or f32 (--outtype)")
    bar: dict = {}

    def on_plan(plan) -> None:
        if dry_run:
            click.echo(f"GGUF arch {plan.family.arch} -> {plan.target.architectures[0]}; "
                       f"{len(plan.tensors)} tensors, {human_bytes(plan.nbytes)}")
            click.echo(json.dumps(plan.config, indent=1))
            for t in plan.tensors:
                ops = ",".join(o[0] for o in t.ops)
                click.echo(f"  {t.entry.name:60s} {str(list(t.entry.shape)):18s} {t.entry.dtype} <- {t.src.name}"
                           + (f" [{ops}]" if ops else ""))
        elif not no_progress and sys.stderr.isatty():
            bar["bar"] = _ConvertBar(plan.nbytes)

    try:
        res = convert_to_hf(src, out, "bf16" if outtype == "auto" else outtype, revision=revision,
                            shard_size=parse_size(shard_size), vocab=not no_vocab, dry_run=dry_run,
                            on_bytes=lambda n: bar["bar"].on_bytes(n) if "bar" in bar else None,
                            on_fetched=lambda n: bar["bar"].on_fetched(n) if "bar" in bar else None,
                            on_plan=on_plan, keep_mtp=keep_mtp, keep_mxfp4=keep_mxfp4)
    finally:
        if "bar" in bar:
            bar["bar"].close()
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    if not dry_run and res.plan is None:
        click.echo(f"wrote {res.out_dir} (tokenizer only: {', '.join(res.files)})", err=True)
    elif not dry_run and res.plan is not None:
        click.echo(f"wrote {res.out_dir} ({human_bytes(res.plan.nbytes)} in {len(res.files)} files, "
                   f"{res.plan.target.architectures[0]})", err=True)


def _print_plan(plan) -> None:
    from .dtypes import GGML_TYPES
    from .render.text import human_bytes
    click.echo(f"family {plan.family} -> GGUF arch {plan.arch}; {len(plan.tensors)} tensors, "
               f"{human_bytes(plan.nbytes)} of tensor data")
    for k in plan.kvs:
        if k.key.startswith("tokenizer.ggml.") and isinstance(k.value, list):
            click.echo(f"  {k.key} = [{len(k.value)} items]")
        else:
            v = k.value if not isinstance(k.value, str) or len(k.value) < 80 else k.value[:77] + "..."
            click.echo(f"  {k.key} = {v}")
    for t in plan.tensors:
        src = t.pieces[0].src.name + (f" (+{len(t.pieces) - 1})" if len(t.pieces) > 1 else "")
        ops = ",".join(o[0] for o in t.pieces[0].ops)
        click.echo(f"  {t.slot.name:40s} {str(list(t.slot.shape)):22s} {GGML_TYPES[t.slot.ggml_type][0]:5s} <- {src}"
                   + (f" [{ops}]" if ops else ""))
    for name, why in plan.dropped:
        click.echo(f"  dropped {name}: {why}")


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
