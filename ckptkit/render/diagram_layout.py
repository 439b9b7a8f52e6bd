"""Layout of an architecture diagram: inferred facts in, positioned shapes out (no SVG here).

One column per model, read top to bottom: embedding, N x decoder layer (norms, attention of
its kind, residual adds, dense FFN or experts), final norm, output head, MTP modules, then a
bar of the parameters by part."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .diagram_params import PARTS
from .diagram_text import attention_boxes, ffn_lines, norm_name, num
from .text import human_count

COL_W = 340.0        # one model's column
MARGIN = 20.0
GAP = 28.0           # between columns
INSET = 14.0         # decoder-layer boxes sit this far inside the layer frame
CHAR_W = 0.6         # average glyph width per font-size unit (DejaVu Sans is wide)
LINE = 1.3           # line height per font-size unit
MAX_EXPERTS = 32     # expert squares drawn before "..."

FILL = {"embedding": "#e8e8e8", "attention": "#fbd9b0", "attention-linear": "#d7c6ef",
        "attention-sliding": "#fde9c8", "norm": "#fff6b3", "ffn": "#c9e3f6", "moe": "#cdebc9",
        "head": "#e3d7f2", "mtp": "#f2f2f2", "layers": "#f7f7f9"}
PART_FILL = {"embedding": "#9e9e9e", "attention": "#f0a04b", "dense_ffn": "#5b9bd5",
             "routed_experts": "#70ad47", "shared_experts": "#2e7d32", "router": "#c5e0b4",
             "norms": "#ffd966", "head": "#8e7cc3", "mtp": "#cccccc", "vision": "#e06666",
             "other": "#555555"}
@dataclass(frozen=True)
class Box:
    """A rounded rectangle with centred lines of text (the first bold)."""
    role: str
    x: float
    y: float
    w: float
    h: float
    fill: str
    lines: tuple[str, ...] = ()
    size: float = 12.0
    dashed: bool = False
    params: int | None = None      # parameters a breakdown segment stands for


@dataclass(frozen=True)
class Label:
    role: str
    x: float
    y: float
    text: str
    size: float = 12.0
    anchor: str = "middle"
    bold: bool = False
    color: str = "#222222"


@dataclass(frozen=True)
class Arrow:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Skip:
    """A residual connection: from the stream at (x1, y1) out to the rail, down to y2 and into
    the addition at x2."""
    x1: float
    y1: float
    rail: float
    y2: float
    x2: float


@dataclass(frozen=True)
class Add:
    """A residual addition (a circled plus)."""
    x: float
    y: float
    r: float = 7.0


Shape = Box | Label | Arrow | Add | Skip


@dataclass(frozen=True)
class Panel:
    """One model: a label, its fact values by key, and parameters by part (or None)."""
    label: str
    facts: Mapping[str, Any]
    breakdown: Mapping[str, int] | None = None
    family: str = ""


@dataclass(frozen=True)
class Figure:
    width: float
    height: float
    shapes: tuple[Shape, ...]
    title: str = ""


def fit(text: str, width: float, size: float) -> float:
    """The font size at which ``text`` fits ``width`` (never larger than ``size``)."""
    need = max(len(text), 1) * CHAR_W * size
    return size if need <= width - 8 else max(7.0, (width - 8) / (max(len(text), 1) * CHAR_W))


class _Col:
    """Shapes of one column, placed from the top."""

    def __init__(self, x: float, y: float, w: float):
        self.x, self.y, self.w = x, y, w
        self.shapes: list[Shape] = []

    def box(self, role: str, lines: tuple[str, ...], fill: str, x: float, w: float,
            dashed: bool = False, size: float = 12.0) -> Box:
        size = min([size] + [fit(t, w, size) for t in lines])
        b = Box(role, x, self.y, w, len(lines) * size * LINE + 10, fill, lines, size, dashed)
        self.shapes.append(b)
        return b

    def row(self, items: list[tuple[str, tuple[str, ...]]], x: float, w: float) -> None:
        """Boxes side by side, equally wide and as tall as the tallest."""
        gap = 8.0
        bw = (w - gap * (len(items) - 1)) / len(items)
        size = min(fit(t, bw, 12.0) for _, lines in items for t in lines)
        h = max(len(lines) for _, lines in items) * size * LINE + 10
        for i, (role, lines) in enumerate(items):
            self.shapes.append(Box(role, x + i * (bw + gap), self.y, bw, h,
                                   FILL.get(role, FILL["attention"]), lines, size))
        self.y += h

    def arrow(self, length: float = 16.0) -> None:
        mid = self.x + self.w / 2
        self.shapes.append(Arrow(mid, self.y, mid, self.y + length))
        self.y += length

    def add(self, split: float) -> None:
        """The residual addition here, fed by the stream as it was at ``split``."""
        mid, r = self.x + self.w / 2, 7.0
        self.shapes.append(Add(mid, self.y + 9, r))
        self.shapes.append(Skip(mid, split + 4, self.x + INSET / 2, self.y + 9, mid - r))
        self.y += 18

    def place(self, role: str, lines: tuple[str, ...], fill: str, inner: bool = False,
              dashed: bool = False) -> None:
        x, w = (self.x + INSET, self.w - 2 * INSET) if inner else (self.x, self.w)
        self.y += self.box(role, lines, fill, x, w, dashed).h


def experts(col: _Col, f: Mapping[str, Any], box: Box) -> float:
    """Squares for the experts under the MoE text: the active ones dark, shared ones apart in
    blue, as many as fit the box. Returns the height used."""
    ne, k, shared = f.get("num_experts") or 0, f.get("num_experts_per_tok") or 0, \
        f.get("num_shared_experts") or 0
    side, gap = 7.0, 2.0
    room = box.w - 20 - shared * (side + gap) - (8 if shared else 0)
    shown = min(ne, MAX_EXPERTS, int(room // (side + gap)))
    if shown < ne:      # leave room for the count of the rest
        shown = min(shown, int((room - 48) // (side + gap)))
    x, y = box.x + 10, box.y + box.h
    for i in range(shown):
        role = "expert-active" if i < k else "expert"
        col.shapes.append(Box(role, x, y, side, side, "#2e7d32" if i < k else "#ffffff"))
        x += side + gap
    if ne > shown:
        col.shapes.append(Label("experts-more", x + 2, y + side, f"... {ne}", 9, "start"))
        x += 40
    x += 8 if shared else 0
    for _ in range(shared):
        col.shapes.append(Box("expert-shared", x, y, side, side, "#1565c0"))
        x += side + gap
    key = "dark: active per token" + (", blue: shared" if shared else "")
    col.shapes.append(Label("experts-key", box.x + 10, y + side + 12, key, 9, "start", color="#555555"))
    return side + 20


def sublayer_in(col: _Col, norm: str, pre: bool) -> float:
    """Where the stream splits into the residual and the sublayer (its pre-norm, if any)."""
    split = col.y
    col.arrow(12)
    if pre:
        col.place("norm", (norm,), FILL["norm"], inner=True)
        col.arrow(10)
    return split


def ffn_block(col: _Col, f: Mapping[str, Any]) -> None:
    moe = bool(f.get("num_experts"))
    box = col.box("moe" if moe else "ffn", ffn_lines(f), FILL["moe" if moe else "ffn"],
                  col.x + INSET, col.w - 2 * INSET)
    if moe:
        extra = experts(col, f, box)
        col.shapes[col.shapes.index(box)] = box = Box(box.role, box.x, box.y, box.w,
                                                      box.h + extra, box.fill, box.lines, box.size)
    col.y += box.h


def layer_stack(col: _Col, f: Mapping[str, Any]) -> None:
    """The repeated decoder layer inside its frame: two residual sublayers."""
    frame_at = len(col.shapes)
    top = col.y
    col.y += 22
    n = f.get("num_layers")
    if not n:
        title = "no decoder layers in the tensors"
    else:
        title = f"{num(n)} x decoder layer"
        norm = norm_name(f)
        place = f.get("norm_placement")
        pre, post = place in ("pre", "sandwich", None), place in ("post", "sandwich")
        for draw in (lambda: col.row(attention_boxes(f), col.x + INSET, col.w - 2 * INSET),
                     lambda: ffn_block(col, f)):
            split = sublayer_in(col, norm, pre)
            draw()
            if post:
                col.arrow(10)
                col.place("norm-post", (norm + " (post)",), FILL["norm"], inner=True)
            col.add(split)
    col.y += 6
    col.shapes.insert(frame_at, Box("layers", col.x, top, col.w, col.y - top, FILL["layers"],
                                    dashed=True))
    col.shapes.insert(frame_at + 1, Label("layers-title", col.x + 8, top + 16, title, 12,
                                          "start", True))


def breakdown_bar(col: _Col, parts: Mapping[str, int]) -> None:
    total = sum(parts.values())
    col.shapes.append(Label("params-title", col.x, col.y + 14,
                            f"Parameters by part ({human_count(total)})", 12, "start", True))
    col.y += 22
    x = col.x
    for key, _ in PARTS:
        n = parts.get(key, 0)
        if n and total:
            w = col.w * n / total
            col.shapes.append(Box(f"param-{key}", x, col.y, w, 18, PART_FILL[key], params=n))
            x += w
    col.y += 26
    shown = [(key, label) for key, label in PARTS if parts.get(key)]
    half = col.w / 2
    for i, (key, label) in enumerate(shown):
        lx, ly = col.x + (i % 2) * half, col.y + (i // 2) * 16
        col.shapes.append(Box("legend-swatch", lx, ly, 10, 10, PART_FILL[key]))
        text = f"{label} {human_count(parts[key])} ({100 * parts[key] / total:.1f}%)"
        col.shapes.append(Label("legend", lx + 14, ly + 9, text, fit(text, half - 10, 10), "start"))
    col.y += ((len(shown) + 1) // 2) * 16


def column(p: Panel, x: float, y: float) -> _Col:
    f = p.facts
    col = _Col(x, y, COL_W)
    col.shapes.append(Label("title", x + COL_W / 2, y + 16, p.label, fit(p.label, COL_W, 15), bold=True))
    raw = f.get("parameters")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    sub = [p.family] if p.family else []
    if params.get("total"):
        sub.append(f"{human_count(params['total'])} total")
    with_emb = params.get("active_with_embedding")
    if params.get("active") and params.get("active") != params.get("total"):
        act = f"{human_count(params['active'])} active"
        if with_emb and with_emb != params["active"]:   # cards count the embedding both ways
            act += f" ({human_count(with_emb)} with embedding)"
        sub.append(act)
    elif with_emb and with_emb != params.get("total"):  # a card that counts only this way
        sub.append(f"{human_count(with_emb)} active with embedding")
    text = ", ".join(sub)
    col.shapes.append(Label("subtitle", x + COL_W / 2, y + 34, text, fit(text, COL_W, 11),
                            color="#555555"))
    col.y += 46
    emb: tuple[str, ...] = ("Token embedding",
                            f"{num(f.get('vocab_size'))} x {num(f.get('hidden_size'))}")
    if f.get("positional") == "learned":
        emb += ("+ learned positions",)
    col.place("embedding", emb, FILL["embedding"])
    col.arrow()
    layer_stack(col, f)
    col.arrow()
    col.place("norm-final", (f"Final {norm_name(f)}",), FILL["norm"])
    col.arrow()
    if f.get("tied_embeddings"):
        col.place("head", ("Output head", "tied to the token embedding"), FILL["head"], dashed=True)
    else:
        col.place("head", ("Linear output head", f"{num(f.get('hidden_size'))} -> "
                                                 f"{num(f.get('vocab_size'))}"), FILL["head"])
    mtp = f.get("mtp_layers")
    if mtp:
        col.y += 10
        col.place("mtp", (f"+ {mtp} multi-token-prediction module{'s' if mtp > 1 else ''}",
                          "predicts further tokens; skipped per token"), FILL["mtp"], dashed=True)
    col.y += 14
    if p.breakdown:
        breakdown_bar(col, p.breakdown)
    else:
        col.shapes.append(Label("params-none", x, col.y + 12, "no tensors: parameter breakdown "
                                "unknown", 10, "start", color="#777777"))
        col.y += 16
    return col


def layout(panels: list[Panel], title: str = "") -> Figure:
    """Columns side by side, in the order given."""
    shapes: list[Shape] = []
    height = 0.0
    top = MARGIN + (28 if title else 0)
    if title:
        shapes.append(Label("figure-title", MARGIN, MARGIN + 16, title, 16, "start", True))
    for i, p in enumerate(panels):
        col = column(p, MARGIN + i * (COL_W + GAP), top)
        shapes += col.shapes
        height = max(height, col.y)
    width = 2 * MARGIN + len(panels) * COL_W + max(len(panels) - 1, 0) * GAP
    return Figure(width, height + MARGIN, tuple(shapes), title)
