"""The mapping data (``mappings/``, installed as ``ckptkit.mappings``), loaded once, checked
and returned as frozen, typed objects.

Every file is read through a strict schema: unknown sections and keys, wrong value types, bad
expressions and roles that ``roles.toml`` does not know are refused with one line naming the
file and the key. Expressions are parsed when the file is loaded. Each accessor takes an
optional data root (a folder laid out like ``mappings/``) so tests can load a modified copy."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from .catalogue import CatalogueFamily, KnownModel, load_family, load_models
from .convert import ConvertFamily, Generate, MetaKey, Op, Split, load_families
from .hf_configs import ConfigKey, Target, load_targets
from .roles import RoleGroup, RoleTable, load_roles
from .schema import MappingError
from .source import Root, default_root, read, toml_files
from .tables import (ConfigKeys, ParamsJson, PreStep, PreTokenizer, PreTokenizers, ValidateTable,
                     load_config_keys, load_params_json, load_pretokenizers, load_validate)

__all__ = ["CatalogueFamily", "ConfigKey", "ConfigKeys", "ConvertFamily", "Generate", "KnownModel",
           "MappingData", "MappingError", "MetaKey", "Op", "ParamsJson", "PreStep", "PreTokenizer",
           "PreTokenizers", "RoleGroup", "RoleTable", "Split", "Target", "ValidateTable",
           "catalogue_families", "config_keys", "convert_families", "hf_targets", "known_models",
           "load_all", "params_json", "pretokenizers", "roles", "validate_table"]

# the files at the top of the data root; plus convert/*.toml and families/*.toml
TOP_FILES = ("roles.toml", "models.toml", "hf_configs.toml", "validate.toml", "config_keys.toml",
             "params_json.toml", "pretokenizers.toml")
COMMON = "convert/_common.toml"


def _root(root: Root | None) -> Root:
    return _default() if root is None else root


@lru_cache(maxsize=1)
def _default() -> Root:
    return default_root()


@lru_cache(maxsize=None)
def roles(root: Root | None = None) -> RoleTable:
    return load_roles(read(_root(root), "roles.toml"))


@lru_cache(maxsize=None)
def convert_families(root: Root | None = None) -> Mapping[str, ConvertFamily]:
    """Conversion family name (file stem of convert/*.toml) -> its tables over _common.toml."""
    r = _root(root)
    files = {rel.split("/")[1][: -len(".toml")]: read(r, rel)
             for rel in toml_files(r, "convert") if rel != COMMON}
    return load_families(read(r, COMMON), files, roles(root))


@lru_cache(maxsize=None)
def catalogue_families(root: Root | None = None) -> Mapping[str, CatalogueFamily]:
    r = _root(root)
    out = {}
    for rel in toml_files(r, "families"):
        fam = load_family(read(r, rel), rel.split("/")[1][: -len(".toml")])
        out[fam.name] = fam
    return out


@lru_cache(maxsize=None)
def known_models(root: Root | None = None) -> tuple[KnownModel, ...]:
    return load_models(read(_root(root), "models.toml"), catalogue_families(root))


@lru_cache(maxsize=None)
def hf_targets(root: Root | None = None) -> tuple[Target, ...]:
    return load_targets(read(_root(root), "hf_configs.toml"), roles(root))


@lru_cache(maxsize=None)
def config_keys(root: Root | None = None) -> Mapping[str, ConfigKeys]:
    """Fact name -> the config.json and GGUF keys that state it (config_keys.toml)."""
    return load_config_keys(read(_root(root), "config_keys.toml"))


@lru_cache(maxsize=None)
def validate_table(root: Root | None = None) -> ValidateTable:
    return load_validate(read(_root(root), "validate.toml"), roles(root), config_keys(root))


@lru_cache(maxsize=None)
def params_json(root: Root | None = None) -> ParamsJson:
    return load_params_json(read(_root(root), "params_json.toml"))


@lru_cache(maxsize=None)
def pretokenizers(root: Root | None = None) -> PreTokenizers:
    return load_pretokenizers(read(_root(root), "pretokenizers.toml"))


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
    r = _root(root)
    known = set(TOP_FILES)
    for rel in toml_files(r) + toml_files(r, "convert") + toml_files(r, "families"):
        if "/" not in rel and rel not in known:
            raise MappingError(f"mappings/{rel}: not a mapping file ckptkit reads")
    return MappingData(roles(root), convert_families(root), catalogue_families(root), known_models(root),
                       hf_targets(root), config_keys(root), validate_table(root), params_json(root),
                       pretokenizers(root))
