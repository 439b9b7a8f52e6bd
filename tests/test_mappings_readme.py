"""mappings/README.md stays true to the data: it names every mapping file and only files that
exist, its `# file:` examples agree with the files they quote, and it lists every tensor op,
generator, expression function and GGUF type the loader accepts."""
from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

from ckptkit import mapdata
from ckptkit.conversion.transforms import GENERATORS, OPS
from ckptkit.expr import _FUNCS
from ckptkit.mapdata.convert import GGUF_TYPES
from ckptkit.mapdata.source import toml_files

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
README = MAPPINGS / "README.md"
# a mapping file named in code style: `roles.toml`, `convert/qwen3.toml`, `mappings/families/x.toml`
_NAMED = re.compile(r"`(?:mappings/)?((?:convert/|families/)?[a-z0-9_]+\.toml)`")
_BLOCK = re.compile(r"```toml\n# file: mappings/(\S+)\n(.*?)```", re.S)


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _named() -> set[str]:
    return set(_NAMED.findall(_text()))


def _existing() -> set[str]:
    return {p.relative_to(MAPPINGS).as_posix() for p in MAPPINGS.rglob("*.toml")}


def test_every_named_mapping_file_exists():
    named = _named()
    assert len(named) > 20      # the pattern still finds the names
    assert named <= _existing(), sorted(named - _existing())


def test_every_mapping_file_is_documented():
    missing = _existing() - _named()
    assert not missing, f"mappings/README.md does not name {sorted(missing)}"


def _contained(part: Any, whole: Any) -> bool:
    """Everything ``part`` says, ``whole`` says too (tables by key; arrays of tables by element)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _contained(v, whole[k]) for k, v in part.items())
    if isinstance(part, list) and part and all(isinstance(x, dict) for x in part):
        return isinstance(whole, list) and all(any(x == y for y in whole) for x in part)
    return part == whole


def test_quoted_examples_agree_with_their_files():
    blocks = _BLOCK.findall(_text())
    quoted = {rel for rel, _ in blocks}
    assert {"convert/qwen3.toml", "families/qwen3.toml", "hf_configs.toml"} <= quoted
    for rel, body in blocks:
        example = tomllib.loads(body)
        real = tomllib.loads((MAPPINGS / rel).read_text(encoding="utf-8"))
        assert example, rel
        assert _contained(example, real), f"the README's example of mappings/{rel} no longer matches it"


def test_quoted_convert_file_is_complete():
    """The walk-through shows the whole qwen3 conversion file, so "one data file" is literal."""
    body = dict(_BLOCK.findall(_text()))["convert/qwen3.toml"]
    assert tomllib.loads(body) == tomllib.loads((MAPPINGS / "convert/qwen3.toml").read_text(encoding="utf-8"))
    assert mapdata.convert_families()["qwen3"].transforms == {}


def test_lists_what_the_loader_accepts():
    text = _text()
    for name in [*OPS, *GENERATORS]:
        assert f"`{name}`" in text, f"tensor op {name} is not documented"
    expr_section = text.split("## The expression language", 1)[1].split("\n## ", 1)[0]
    funcs = re.search(r"`int float[^`]*`", expr_section)
    assert funcs and set(funcs.group(0).strip("`").split()) == set(_FUNCS)
    types = re.search(r"`u32 [^`]*`", text)
    assert types and tuple(types.group(0).strip("`").split()) == GGUF_TYPES


def test_readme_in_the_data_folder_is_not_data(tmp_path):
    """The loader reads .toml files only: a copy of the folder with this README still loads."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert (root / "README.md").exists()
    assert all(rel.endswith(".toml") for rel in toml_files(root))
    data = mapdata.load_all(root)
    assert "qwen3" in data.convert_families and "qwen3" in data.catalogue_families
