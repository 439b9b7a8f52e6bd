"""Where the mapping data is read from: the ``ckptkit.mappings`` resources installed with the
package (the repository's top-level ``mappings/`` folder), or a folder given explicitly (tests
point the loader at a broken copy)."""
from __future__ import annotations

import tomllib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from .schema import MappingError, Table

Root = Path | Traversable


def default_root() -> Root:
    return files("ckptkit.mappings")


def label(rel: str) -> str:
    """How messages name a mapping file, wherever it is installed."""
    return f"mappings/{rel}"


def read(root: Root, rel: str) -> Table:
    """The top-level table of ``root/rel`` (rel like "convert/llama.toml")."""
    node: Any = root
    for part in rel.split("/"):
        node = node / part
    try:
        data = tomllib.loads(node.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"{label(rel)}: missing") from None
    except tomllib.TOMLDecodeError as e:
        raise MappingError(f"{label(rel)}: not valid TOML: {e}") from None
    return Table(data, label(rel))


def toml_files(root: Root, folder: str = "") -> list[str]:
    """The .toml files of a folder of the data, as paths relative to the root, sorted."""
    node: Any = root
    if folder:
        node = node / folder
        if not node.is_dir():
            return []
    prefix = f"{folder}/" if folder else ""
    return sorted(prefix + f.name for f in node.iterdir() if f.name.endswith(".toml") and f.is_file())
