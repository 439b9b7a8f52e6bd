"""`ckptkit convert`: its options, the plan printed by --dry-run, and the progress bar around
ckptkit.conversion (to GGUF and GGUF -> HF here; the uniform layout in cli_ckpt.py)."""
from __future__ import annotations

import json
import sys
import threading
import time

import click

from .cli_common import guarded
from .errors import CkptError


class ConvertBar:
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


@click.command()
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
            bar["bar"] = ConvertBar(plan.nbytes)

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
            bar["bar"] = ConvertBar(plan.nbytes)

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
