"""Policy files for `ckptkit validate --policy ckptkit.toml`: what a CI job demands of a checkpoint.

Keys (top level, or under a ``[policy]`` table); every violation is a ``policy.*`` finding:

    formats = ["safetensors"]            # allowed checkpoint formats ("safetensors", "gguf")
    allowed_dtypes = ["BF16", "F32"]     # tensor dtypes allowed (safetensors or ggml names)
    max_parameters = "70B"               # ceiling on parameters (int, or "7.5B", "700M", "1.2T")
    require_config = true                # config.json must exist
    forbid_pickle = true                 # no pickle files (.bin/.pt/.pth/.ckpt/.pkl/.pickle) in the repo
    forbid_remote_code = true            # config.json must not need trust_remote_code (auto_map)
    require_files = ["tokenizer.json"]   # files that must exist
    fail_on = "warning"                  # default for --fail-on
    ignore = ["index.stray_shard"]       # codes (or "group.*") to drop
    [levels]                             # raise or lower a code's level
    "catalogue.near_model" = "error"
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..index import TensorIndex
from ..infer import Inference
from ..sources.files import is_pickle
from .findings import CODES, LEVELS, Finding, finding

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBT]?)\s*$", re.I)
_MULT = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass
class Policy:
    path: str = ""
    formats: list[str] | None = None
    allowed_dtypes: list[str] | None = None
    max_parameters: int | None = None
    require_config: bool = False
    forbid_pickle: bool = False
    forbid_remote_code: bool = False
    require_files: list[str] = field(default_factory=list)
    fail_on: str | None = None
    ignore: list[str] = field(default_factory=list)
    levels: dict[str, str] = field(default_factory=dict)

    def adjust(self, findings: list[Finding]) -> list[Finding]:
        """Drop ignored codes and apply level overrides."""
        out = []
        for f in findings:
            if any(f.code == p or (p.endswith(".*") and f.code.startswith(p[:-1]))
                   for p in self.ignore):
                continue
            if f.code in self.levels:
                f = Finding(f.code, self.levels[f.code], f.message, f.tensor, f.key, f.file)
            out.append(f)
        return out


def parse_count(v: Any, where: str) -> int:
    """70000000000, "70B", "7.5e9" or "700M" -> an int."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, float) and v >= 0:
        return int(v)
    if isinstance(v, str):
        m = _SIZE.match(v)
        if m:
            return int(float(m.group(1)) * _MULT[m.group(2).upper()])
        try:
            return int(float(v))
        except ValueError:
            pass
    raise FormatError(f"max_parameters must be a count like 70000000000 or \"70B\", not {v!r}", where)


def _strings(v: Any, key: str, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise FormatError(f"{key} must be a list of strings", where)
    return v


def _bool(v: Any, key: str, where: str) -> bool:
    if not isinstance(v, bool):
        raise FormatError(f"{key} must be true or false", where)
    return v


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file; FormatError names the first bad key."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise FormatError(f"cannot read: {e.strerror}", where) from None
    except tomllib.TOMLDecodeError as e:
        raise FormatError(f"not valid TOML: {e}", where) from None
    if isinstance(data.get("policy"), dict):
        data = data["policy"]
    p = Policy(path=where)
    for key, v in data.items():
        if key == "formats":
            p.formats = _strings(v, key, where)
            bad = [x for x in p.formats if x not in ("safetensors", "gguf")]
            if bad:
                raise FormatError(f"formats: unknown format {bad[0]!r} (safetensors, gguf)", where)
        elif key == "allowed_dtypes":
            p.allowed_dtypes = [x.upper() for x in _strings(v, key, where)]
        elif key == "max_parameters":
            p.max_parameters = parse_count(v, where)
        elif key in ("require_config", "forbid_pickle", "forbid_remote_code"):
            setattr(p, key, _bool(v, key, where))
        elif key == "require_files":
            p.require_files = _strings(v, key, where)
        elif key == "fail_on":
            if v not in LEVELS:
                raise FormatError(f"fail_on must be one of {', '.join(LEVELS)}", where)
            p.fail_on = v
        elif key == "ignore":
            p.ignore = _strings(v, key, where)
        elif key == "levels":
            if not isinstance(v, dict):
                raise FormatError("levels must be a table of code = \"error\"|\"warning\"", where)
            for code, lv in v.items():
                if code not in CODES or lv not in LEVELS:
                    raise FormatError(f"levels: {code!r} = {lv!r} is not a known code and level", where)
            p.levels = dict(v)
        else:
            raise FormatError(f"unknown key {key!r}", where)
    return p


def check_policy(policy: Policy, index: TensorIndex, inf: Inference | None, files: dict[str, int | None] | None
                 ) -> list[Finding]:
    out: list[Finding] = []
    files = files or {}
    src = f"policy {policy.path}" if policy.path else "the policy"
    if policy.formats is not None and index.format not in policy.formats:
        out.append(finding("policy.format", f"the checkpoint is {index.format}; {src} allows "
                           f"only {', '.join(policy.formats)}",
                           file=index.files[0].name if index.files else None))
    if policy.allowed_dtypes is not None:
        for dtype, n in index.parameters_by_dtype().items():
            if dtype.upper() not in policy.allowed_dtypes:
                first = next(t for t in index.tensors.values() if t.dtype == dtype)
                out.append(finding("policy.dtype", f"{n:,} parameters are {dtype} (e.g. "
                                   f"{first.name}); {src} allows {', '.join(policy.allowed_dtypes)}",
                                   tensor=first.name, file=first.file))
    if policy.max_parameters is not None:
        params = inf.value("parameters") if inf is not None else None
        total = params.get("total") if isinstance(params, dict) else None
        if not isinstance(total, int):
            total = index.total_parameters
        if total > policy.max_parameters:
            out.append(finding("policy.max_parameters", f"{total:,} parameters, more than the "
                               f"{policy.max_parameters:,} {src} allows"))
    if policy.require_config and not index.config:
        out.append(finding("policy.config_missing", f"no config.json; {src} requires one"))
    if policy.forbid_pickle:
        for f in sorted(files):
            if is_pickle(f):
                out.append(finding("policy.pickle", f"{f} is a pickle file (it can run code when "
                                   f"loaded); {src} forbids them", file=f))
    if policy.forbid_remote_code and isinstance(index.config, dict) and index.config.get("auto_map"):
        out.append(finding("policy.remote_code", "config.json has auto_map: loading needs "
                           f"trust_remote_code; {src} forbids it", key="config.json:auto_map",
                           file="config.json"))
    for f in policy.require_files:
        if f not in files:
            out.append(finding("policy.missing_file", f"{f} is missing; {src} requires it"))
    return out
