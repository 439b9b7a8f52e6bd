"""Validation results as text for a terminal or as GitHub Actions annotations."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from .findings import Validation


def format_text(v: Validation) -> str:
    name = "unknown architecture"
    if v.family:
        name = v.family["model"] or v.family["title"] or name
    lines = [f"{v.source}: {v.format}, {v.files} file(s), {v.tensors:,} tensors; {name}"]
    width = max((len(f.code) for f in v.findings), default=0)
    for f in v.findings:
        lines.append(f"{f.level:7s} {f.code:{width}s}  {f.message}")
    e, w = v.count("error"), v.count("warning")
    lines.append("no findings" if not v.findings else
                 f"{e} error{'s' * (e != 1)}, {w} warning{'s' * (w != 1)}")
    return "\n".join(lines)


def _esc(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return s.replace(":", "%3A").replace(",", "%2C") if prop else s


def format_github(v: Validation) -> str:
    """GitHub Actions workflow commands: one ``::error``/``::warning`` annotation per finding."""
    lines = []
    for f in v.findings:
        props = []
        if f.file and v.root is not None:
            path = v.root if Path(v.root).is_file() else str(PurePosixPath(v.root) / f.file)
            props.append(f"file={_esc(path, True)}")
        props.append(f"title={_esc(f.code, True)}")
        msg = f.message if v.root is not None or not f.file else f"{v.source}/{f.file}: {f.message}"
        lines.append(f"::{f.level} {','.join(props)}::{_esc(msg)}")
    e, w = v.count("error"), v.count("warning")
    lines.append(f"ckptkit validate {v.source}: {e} error(s), {w} warning(s)")
    return "\n".join(lines)
