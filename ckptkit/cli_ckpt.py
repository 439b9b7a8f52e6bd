"""`ckptkit convert --to ckpt` (any source -> the uniform layout) and ckpt -> HF: the command's
printing and progress around ckptkit.conversion.to_ckpt / write_hf."""
from __future__ import annotations

import sys
from typing import Any

import click


def _bar(total: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="convert", file=sys.stderr,
                smoothing=0.1)


def convert_ckpt(src: str, out: str, target: str, outtype: str, revision: str | None, shard_size: str,
                 no_vocab: bool, dry_run: bool, no_progress: bool, dequantize: bool = False,
                 experts: str = "split") -> None:
    """``target`` "ckpt" (from any source) or "hf" (from a ckpt folder)."""
    from .conversion import convert_ckpt_to_hf, convert_to_ckpt, parse_size
    from .render.text import human_bytes
    state: dict[str, Any] = {}

    def on_plan(plan: Any) -> None:
        if dry_run:
            _print(plan, target)
        else:
            state["bar"] = _bar(plan.nbytes, not no_progress)

    def on_bytes(n: int) -> None:
        if state.get("bar") is not None:
            state["bar"].update(n)

    run: Any = convert_to_ckpt if target == "ckpt" else convert_ckpt_to_hf
    extra = {"experts": experts} if target == "ckpt" else {}
    try:
        res: Any = run(src, out, outtype, revision=revision, shard_size=parse_size(shard_size), vocab=not no_vocab,
                       dry_run=dry_run, on_bytes=on_bytes, on_plan=on_plan, dequantize=dequantize, **extra)
    finally:
        if state.get("bar") is not None:
            state["bar"].close()
    notes = getattr(res.plan, "notes", [])
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if not dry_run:
        cfg = res.plan.stream.config if target == "ckpt" else res.plan.config
        what = "uniform layout" if target == "ckpt" else (cfg.get("architectures") or ["HF"])[0]
        click.echo(f"wrote {res.out_dir} ({human_bytes(res.plan.nbytes)} in {len(res.files)} files, {what})",
                   err=True)


def _print(plan: Any, target: str) -> None:
    from .render.text import human_bytes
    if target == "ckpt":
        s = plan.stream
        click.echo(f"{s.format} -> uniform layout (family {s.family or 'unknown'}); {len(plan.tensors)} tensors, "
                   f"{human_bytes(plan.nbytes)}")
        for t in plan.tensors:
            st = t.tensor
            click.echo(f"  {t.canonical.name:44s} {str(list(st.shape)):18s} {st.dtype:8s} <- {', '.join(st.source)}")
        return
    click.echo(f"uniform layout -> HF {(plan.config.get('architectures') or ['?'])[0]}; {len(plan.tensors)} tensors, "
               f"{human_bytes(plan.nbytes)}")
    for st in plan.tensors:
        click.echo(f"  {st.name:60s} {str(list(st.shape)):18s} {st.dtype:8s} <- {', '.join(st.source)}")
