"""`ckptkit diff` as a terminal table: the tensors that differ (every tensor with ``all_tensors``)
and a summary of what matched."""
from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..tensordiff import DiffResult, TensorDiff

_LABELS = {"exact": "exact", "close": "within tolerance", "differ": "DIFFERS", "shape": "SHAPE",
           "only_a": "only in A", "only_b": "only in B", "dropped": "left out of GGUF"}
_STYLES = {"exact": "green", "close": "yellow", "differ": "bold red", "shape": "bold red",
           "only_a": "red", "only_b": "red", "dropped": "dim"}


def _num(x: float) -> str:
    return "inf" if x == float("inf") else f"{x:.3g}"


def _pair(a: object, b: object) -> str:
    if a is None or b is None or a == b:
        return str(a if a is not None else b)
    return f"{a} → {b}"


def _name(t: TensorDiff) -> str:
    if t.name_a and t.name_b and t.name_a != t.name_b:
        return f"{t.name_a} ~ {t.name_b}"
    return t.name


def tensor_row(t: TensorDiff) -> list[str]:
    s = t.stats
    shape = _pair(list(t.shape_a) if t.shape_a is not None else None,
                  list(t.shape_b) if t.shape_b is not None else None)
    values = ["", "", ""] if s is None else [_num(s.max_abs), _num(s.max_rel), f"{s.differing:,} / {s.numel:,}"]
    return [escape(_name(t)), f"[{_STYLES[t.status]}]{_LABELS[t.status]}[/]", shape,
            _pair(t.dtype_a, t.dtype_b), *values]


def summary(res: DiffResult) -> list[str]:
    c = res.counts()
    compared = c["exact"] + c["close"] + c["differ"]
    lines = [f"{compared} tensors compared: {c['exact']} equal in value"
             + (f", {c['close']} within tolerance" if c["close"] else "")
             + (f", {c['differ']} beyond tolerance" if c["differ"] else "")]
    for key, what in (("shape", "with different shapes"), ("only_a", "only in A"), ("only_b", "only in B"),
                      ("dropped", "on one side only by design (towers and buffers a GGUF leaves out)")):
        if c[key]:
            lines.append(f"{c[key]} tensors {what}")
    renamed = sum(1 for t in res.tensors if t.name_a and t.name_b and t.name_a != t.name_b)
    if renamed:
        lines.append(f"{renamed} tensors matched by canonical role (names differ)")
    ops = Counter(",".join(t.b_ops) for t in res.tensors if t.b_ops)
    if ops:
        lines.append("B brought into A's convention: " + ", ".join(f"{k} ×{n}" for k, n in ops.most_common()))
    dtypes = Counter(f"{t.dtype_a} → {t.dtype_b}" for t in res.tensors
                     if t.dtype_a and t.dtype_b and t.dtype_a != t.dtype_b)
    if dtypes:
        lines.append("stored dtypes differ: " + ", ".join(f"{k} ×{n}" for k, n in dtypes.most_common()))
    tol = "exact" if not res.atol and not res.rtol else f"atol {res.atol:g}, rtol {res.rtol:g}"
    lines.append(("[bold red]DIFFERENT[/]" if res.failed else "[bold green]SAME[/]") + f" ({tol})")
    return lines


def render_diff(res: DiffResult, console: Console, all_tensors: bool = False) -> None:
    console.print(f"A  [bold]{escape(res.a)}[/bold]")
    console.print(f"B  [bold]{escape(res.b)}[/bold]")
    rows = [t for t in res.tensors if all_tensors or t.status != "exact"]
    if rows:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("tensor", overflow="fold")
        table.add_column("status", no_wrap=True)
        table.add_column("shape", no_wrap=True)
        table.add_column("dtype", no_wrap=True)
        table.add_column("max abs", justify="right", no_wrap=True)
        table.add_column("max rel", justify="right", no_wrap=True)
        table.add_column("differing", justify="right", no_wrap=True)
        for t in rows:
            table.add_row(*tensor_row(t))
        console.print(table)
    for line in summary(res):
        console.print(line)
