"""The package metadata tells the truth: what ckptkit imports is declared, what is declared is
imported, requires-python admits what the code uses, and the package data it names exists."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# standard-library modules newer than some Pythons a requires-python might admit
STDLIB_SINCE = {"tomllib": "3.11"}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def top_level_imports(root: Path) -> dict[str, list[str]]:
    """Absolute top-level module names imported anywhere under ``root`` (function-local imports
    too), each with the files that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(root.parent)))
    return found


def third_party(imports: dict[str, list[str]]) -> dict[str, list[str]]:
    return {m: files for m, files in imports.items()
            if m not in sys.stdlib_module_names and m != "ckptkit" and m != "__future__"}


def declared(requirements: list[str]) -> set[str]:
    return {_norm(Requirement(r).name) for r in requirements}


def test_top_level_imports_sees_local_and_nested_imports(tmp_path):
    (tmp_path / "m.py").write_text("import os\nfrom a.b import c\ndef f():\n    import zz.y\nfrom . import q\n")
    assert set(third_party(top_level_imports(tmp_path))) == {"a", "zz"}


def test_every_third_party_import_is_a_declared_dependency():
    deps = declared(PROJECT["dependencies"])
    dists = packages_distributions()
    missing = []
    for module, files in sorted(third_party(top_level_imports(ROOT / "ckptkit")).items()):
        provided_by = {_norm(d) for d in dists.get(module, [])}
        assert provided_by, f"{module} (imported by {files[0]}) is not installed: no distribution provides it"
        if not provided_by & deps:
            missing.append(f"{module} ({'/'.join(sorted(provided_by))}, imported by {files[0]})")
    assert not missing, "imported by ckptkit but not in [project].dependencies: " + ", ".join(missing)


# Declared for users though ckptkit reads safetensors with its own strict parser: every file it
# writes is safetensors, and the core install promises the library that loads them.
FOR_USERS = {"safetensors"}


def test_every_declared_dependency_is_imported():
    dists = packages_distributions()
    imported = {_norm(d) for m in third_party(top_level_imports(ROOT / "ckptkit")) for d in dists.get(m, [])}
    unused = declared(PROJECT["dependencies"]) - imported - FOR_USERS
    assert not unused, f"declared in [project].dependencies but never imported by ckptkit: {sorted(unused)}"


def test_requires_python_admits_this_interpreter_and_what_the_code_uses():
    spec = SpecifierSet(PROJECT["requires-python"])
    running = ".".join(map(str, sys.version_info[:3]))
    assert spec.contains(running), f"requires-python {spec} excludes the running Python {running}"
    imports = top_level_imports(ROOT / "ckptkit")
    for module, since in STDLIB_SINCE.items():
        if module not in imports:
            continue
        major, minor = map(int, since.split("."))
        older = f"{major}.{minor - 1}.99"
        assert not spec.contains(older), (
            f"requires-python {spec} admits Python {older}, but {imports[module][0]} imports {module} "
            f"(new in {since})")


def test_package_data_files_exist():
    setuptools = PYPROJECT.get("tool", {}).get("setuptools", {})
    package_dir = setuptools.get("package-dir", {})
    for package, patterns in setuptools.get("package-data", {}).items():
        where = ROOT / package_dir.get(package, package.replace(".", "/"))
        for pattern in patterns:
            assert list(where.glob(pattern)), f"package-data {package}: {pattern} matches nothing in {where}"


def test_py_typed_marker_is_shipped():
    # the marker tells type checkers that ckptkit's annotations are meant for its users
    assert (ROOT / "ckptkit" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"].get("ckptkit", [])
