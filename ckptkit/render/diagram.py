"""Architecture diagrams as SVG: a laid-out figure (diagram_layout) written as SVG markup with
the standard library only. The same panels always give the same bytes."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ..index import TensorIndex
from ..mapdata import KnownModel
from .diagram_layout import LINE, Arrow, Box, Figure, Label, Panel, Shape, Skip, layout
from .diagram_params import param_breakdown

__all__ = ["Panel", "panel", "panel_from_index", "panel_from_model", "diagram_svg", "svg",
           "save_diagram"]

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
STROKE = "#555555"


def _n(x: float) -> str:
    """Coordinates with at most two decimals and no trailing zeros: stable across runs."""
    return f"{round(x, 2):g}"


def _text(x: float, y: float, text: str, size: float, anchor: str = "middle", bold: bool = False,
          color: str = "#222222") -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" text-anchor="{anchor}" '
            f'fill="{color}"{weight}>{escape(text)}</text>')


def _box(b: Box) -> str:
    attrs = f' data-params="{b.params}"' if b.params is not None else ""
    small = b.h < 20
    rx = 1 if small else 6
    dash = ' stroke-dasharray="5,3"' if b.dashed else ""
    stroke = "none" if b.params is not None else STROKE
    out = [f"<g data-role={quoteattr(b.role)}{attrs}>",
           f'<rect x="{_n(b.x)}" y="{_n(b.y)}" width="{_n(b.w)}" height="{_n(b.h)}" rx="{rx}" '
           f'fill="{b.fill}" stroke="{stroke}" stroke-width="1"{dash}/>']
    step = b.size * LINE
    y = b.y + 5 + b.size
    for i, line in enumerate(b.lines):
        out.append(_text(b.x + b.w / 2, y + i * step, line, b.size, bold=i == 0))
    out.append("</g>")
    return "".join(out)


def _shape(s: Shape) -> str:
    if isinstance(s, Box):
        return _box(s)
    if isinstance(s, Label):
        return (f"<g data-role={quoteattr(s.role)}>"
                + _text(s.x, s.y, s.text, s.size, s.anchor, s.bold, s.color) + "</g>")
    if isinstance(s, Skip):
        return (f'<path data-role="residual" d="M{_n(s.x1)},{_n(s.y1)}H{_n(s.rail)}V{_n(s.y2)}'
                f'H{_n(s.x2 - 1)}" fill="none" stroke="{STROKE}" stroke-width="1" '
                f'marker-end="url(#arrow)"/>')
    if isinstance(s, Arrow):
        return (f'<line x1="{_n(s.x1)}" y1="{_n(s.y1)}" x2="{_n(s.x2)}" y2="{_n(s.y2 - 1)}" '
                f'stroke="{STROKE}" stroke-width="1.5" marker-end="url(#arrow)"/>')
    return (f'<g data-role="add"><circle cx="{_n(s.x)}" cy="{_n(s.y)}" r="{_n(s.r)}" fill="#ffffff" '
            f'stroke="{STROKE}"/><path d="M{_n(s.x - s.r + 2)},{_n(s.y)}H{_n(s.x + s.r - 2)}'
            f'M{_n(s.x)},{_n(s.y - s.r + 2)}V{_n(s.y + s.r - 2)}" stroke="{STROKE}"/></g>')


def svg(fig: Figure) -> str:
    w, h = _n(fig.width), _n(fig.height)
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family={quoteattr(FONT)}>',
            f"<title>{escape(fig.title or 'architecture diagram')}</title>",
            '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
            f'markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z" fill="{STROKE}"/></marker></defs>',
            f'<rect width="{w}" height="{h}" fill="#ffffff"/>']
    return "\n".join(head + [_shape(s) for s in fig.shapes] + ["</svg>", ""])


def panel(label: str, report: Mapping[str, Any], breakdown: Mapping[str, int] | None = None) -> Panel:
    """A panel from an inspect-style report ({"family", "facts": {key: {"value", ...}}})."""
    facts = {k: f.get("value") if isinstance(f, dict) else f
             for k, f in (report.get("facts") or {}).items()}
    fam = report.get("family") or {}
    name = fam.get("model") or fam.get("title") or "" if isinstance(fam, dict) else ""
    return Panel(label, facts, breakdown, name if name != label else "")


def panel_from_index(label: str, report: Mapping[str, Any], index: TensorIndex) -> Panel:
    """A panel from a report and the tensor index it was inferred from (for the breakdown)."""
    tied = (report.get("facts") or {}).get("tied_embeddings") or {}
    return panel(label, report, param_breakdown(index, bool(tied.get("value"))))


def panel_from_model(m: KnownModel) -> Panel:
    """A panel from a catalogue row: published facts, no tensors to break down."""
    facts: dict[str, Any] = {f.name: getattr(m, f.name) for f in fields(m)}
    # a card's active count goes under the key of the way that card counts (see compare)
    active = round(m.params_active * 1e9) if m.params_active else None
    key = "active" if m.params_active_counts_embedding is False else "active_with_embedding"
    facts["parameters"] = {"total": round(m.params_total * 1e9) if m.params_total else None, key: active}
    if isinstance(m.sliding_window, int):
        facts["sliding_window"] = {"window": m.sliding_window, "layers": None}
    return Panel(m.name, facts, None, "published facts")


def diagram_svg(panels: Sequence[Panel], title: str = "") -> str:
    return svg(layout(list(panels), title))


def save_diagram(path: str | os.PathLike, panels: Sequence[Panel], title: str = "") -> None:
    """Write the diagram atomically: a reader never sees half a file."""
    from ..atomic import atomic_file
    with atomic_file(path) as f:
        f.write(diagram_svg(panels, title).encode("utf-8"))
