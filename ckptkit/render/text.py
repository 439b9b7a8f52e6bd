"""Terminal rendering of an index (and, when present, inferred facts). rich is imported only to
render: commands that just print a size (convert) do not pay for it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..index import TensorIndex, group_tensors

if TYPE_CHECKING:
    from rich.console import Console


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def human_count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def render_index(index: TensorIndex, console: Console, all_tensors: bool = False) -> None:
    total = index.total_parameters
    console.print(f"[bold]{index.source}[/bold]")
    sizes = [f.size for f in index.files if f.size is not None]
    size_txt = human_bytes(sum(sizes)) if len(sizes) == len(index.files) else "?"
    console.print(f"  format      {index.format}, {len(index.files)} file(s), {size_txt}")
    console.print(f"  tensors     {len(index.tensors):,}")
    # every stored value, copies included; the model's own count is the "parameters" fact below
    console.print(f"  values      {total:,} stored ({human_count(total)})")
    dtypes = ", ".join(f"{d} {100 * n / total:.1f}%" if total else d
                       for d, n in index.parameters_by_dtype().items())
    console.print(f"  dtypes      {dtypes}")
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("tensor" if all_tensors else "tensors (collapsed by pattern)", overflow="fold")
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    if all_tensors:
        for t in index.tensors.values():
            table.add_row(t.name, str(list(t.shape)), t.dtype, "")
    else:
        for g in group_tensors(index.tensors.values()):
            table.add_row(g.pattern, str(list(g.shape)), g.dtype, f"× {g.count}" if g.count > 1 else "")
    console.print(table)
