"""The mapping data (``mappings/``, installed as ``ckptkit.mappings``), loaded once, checked
and returned as frozen, typed objects.

Every file is read through a strict schema: unknown sections and keys, wrong value types, bad
expressions and roles that ``roles.toml`` does not know are refused with one line naming the
file and the key. Expressions are parsed when the file is loaded. Each accessor takes an
optional data root (a folder laid out like ``mappings/``) so tests can load a modified copy."""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, cast

from .catalogue import CatalogueFamily, KnownModel, load_family, load_models
from .convert import ConvertFamily, Generate, MetaKey, Op, Split, TensorParallel, TPJoin, load_families
from .hf_configs import ConfigKey, Target, load_targets
from .roles import RoleGroup, RoleTable, load_roles
from .schema import MappingError, frozen
from .source import Root, default_root, read, toml_files
from .tables import (
    ConfigKeys,
    ParamsJson,
    PreStep,
    PreTokenizer,
    PreTokenizers,
    ValidateTable,
    load_config_keys,
    load_params_json,
    load_pretokenizers,
    load_validate,
)

__all__ = ["CatalogueFamily", "ConfigKey", "ConfigKeys", "ConvertFamily", "Generate", "KnownModel",
           "MappingData", "MappingError", "MetaKey", "Op", "ParamsJson", "PreStep", "PreTokenizer",
           "PreTokenizers", "RoleGroup", "RoleTable", "Split", "Target", "TensorParallel", "TPJoin", "ValidateTable",
           "catalogue_families", "config_keys", "convert_families", "hf_targets", "known_models",
           "load_all", "params_json", "pretokenizers", "roles", "validate_table"]

# the files at the top of the data root; plus convert/*.toml and families/*.toml
TOP_FILES = ("roles.toml", "models.toml", "hf_configs.toml", "validate.toml", "config_keys.toml",
             "params_json.toml", "pretokenizers.toml")
COMMON = "convert/_common.toml"
T = TypeVar("T")


_loaded: dict[tuple[str, Hashable], Any] = {}


def _once(kind: str, root: Root | None, load: Callable[[Root], T]) -> T:
    """``load(root)``, run once per data root (the packaged data unless given)."""
    r = _default() if root is None else root
    key = (kind, cast(Hashable, r))
    if key not in _loaded:
        _loaded[key] = load(r)
    return cast(T, _loaded[key])


@lru_cache(maxsize=1)
def _default() -> Root:
    return default_root()


def roles(root: Root | None = None) -> RoleTable:
    return _once("roles", root, lambda r: load_roles(read(r, "roles.toml")))


def convert_families(root: Root | None = None) -> Mapping[str, ConvertFamily]:
    """Conversion family name (file stem of convert/*.toml) -> its tables over _common.toml."""
    def load(r: Root) -> Mapping[str, ConvertFamily]:
        files = {rel.split("/")[1][: -len(".toml")]: read(r, rel)
                 for rel in toml_files(r, "convert") if rel != COMMON}
        return frozen(load_families(read(r, COMMON), files, roles(r)))
    return _once("convert", root, load)


def catalogue_families(root: Root | None = None) -> Mapping[str, CatalogueFamily]:
    def load(r: Root) -> Mapping[str, CatalogueFamily]:
        out = {}
        for rel in toml_files(r, "families"):
            fam = load_family(read(r, rel), rel.split("/")[1][: -len(".toml")])
            out[fam.name] = fam
        return frozen(out)
    return _once("families", root, load)


def known_models(root: Root | None = None) -> tuple[KnownModel, ...]:
    return _once("models", root, lambda r: load_models(read(r, "models.toml"), catalogue_families(r)))


def hf_targets(root: Root | None = None) -> tuple[Target, ...]:
    return _once("hf_configs", root, lambda r: load_targets(read(r, "hf_configs.toml"), roles(r)))


def config_keys(root: Root | None = None) -> Mapping[str, ConfigKeys]:
    """Fact name -> the config.json and GGUF keys that state it (config_keys.toml)."""
    return _once("config_keys", root, lambda r: load_config_keys(read(r, "config_keys.toml")))


def validate_table(root: Root | None = None) -> ValidateTable:
    return _once("validate", root, lambda r: load_validate(read(r, "validate.toml"), roles(r), config_keys(r)))


def params_json(root: Root | None = None) -> ParamsJson:
    return _once("params_json", root, lambda r: load_params_json(read(r, "params_json.toml")))


def pretokenizers(root: Root | None = None) -> PreTokenizers:
    return _once("pretokenizers", root, lambda r: load_pretokenizers(read(r, "pretokenizers.toml")))


@dataclass(frozen=True)
class MappingData:
    roles: RoleTable
    convert_families: Mapping[str, ConvertFamily]
    catalogue_families: Mapping[str, CatalogueFamily]
    known_models: tuple[KnownModel, ...]
    hf_targets: tuple[Target, ...]
    config_keys: Mapping[str, ConfigKeys]
    validate: ValidateTable
    params_json: ParamsJson
    pretokenizers: PreTokenizers


def load_all(root: Root | None = None) -> MappingData:
    """Every mapping file, checked; a .toml file no loader reads is refused too."""
    r = _default() if root is None else root
    known = set(TOP_FILES)
    for rel in toml_files(r) + toml_files(r, "convert") + toml_files(r, "families"):
        if "/" not in rel and rel not in known:
            raise MappingError(f"mappings/{rel}: not a mapping file ckptkit reads")
    return MappingData(roles(r), convert_families(r), catalogue_families(r), known_models(r), hf_targets(r),
                       config_keys(r), validate_table(r), params_json(r), pretokenizers(r))
