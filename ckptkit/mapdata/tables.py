"""The smaller mapping files: validate.toml, config_keys.toml, params_json.toml and
pretokenizers.toml."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .roles import RoleTable, check_role
from .schema import Table, frozen, str_list_value

# ---- config_keys.toml ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigKeys:
    """The keys that state one fact: config.json spellings (first present wins) and GGUF
    metadata keys without the "<arch>." prefix."""
    fact: str
    config: tuple[str, ...]
    gguf: tuple[str, ...]


def load_config_keys(top: Table) -> Mapping[str, ConfigKeys]:
    out = {}
    for fact in list(top.data):
        ft = top.table(fact)
        out[fact] = ConfigKeys(fact, ft.strs("config"), ft.strs("gguf", ()))
        ft.done()
    top.done()
    return frozen(out)


# ---- validate.toml ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValidateTable:
    limits: Mapping[str, int]                               # fact -> largest believable value
    # layer kind ("attention", "mla", "linear", "dense", "moe") -> roles it must hold, each a
    # tuple of alternatives ("a|b" in the file)
    required: Mapping[str, tuple[tuple[str, ...], ...]]


def load_validate(top: Table, roles: RoleTable, config_keys: Mapping[str, ConfigKeys]) -> ValidateTable:
    lt = top.table("limits")
    limits = {}
    for fact, v in lt.items(lambda k, v: v):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            lt.fail("must be a positive integer", fact)
        if fact not in config_keys:
            lt.fail("no config_keys.toml entry says where this fact is claimed", fact)
        limits[fact] = v
    lt.done()
    rt = top.table("required")
    required = {}
    for kind, entries in rt.items(str_list_value(rt)):
        alts = tuple(tuple(e.split("|")) for e in entries)
        for a in alts:
            for r in a:
                check_role(rt, r, kind, roles)
        required[kind] = alts
    rt.done()
    top.done()
    return ValidateTable(frozen(limits), frozen(required))


# ---- params_json.toml ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParamsJson:
    keys: Mapping[str, tuple[str, ...]]     # config.json key -> path into params.json
    set: Mapping[str, Any]                  # added to the translated config

    def to_config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, path in self.keys.items():
            v: Any = params
            for part in path:
                v = v.get(part) if isinstance(v, dict) else None
            if v is not None:
                out[key] = v
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.set.items()})
        return out


def load_params_json(top: Table) -> ParamsJson:
    kt = top.table("keys", required=True)
    keys = {}
    for k, v in kt.items(lambda k, v: v):
        if not isinstance(v, str) or not v:
            kt.fail("must be a params.json key (dotted for nested tables)", k)
        keys[k] = tuple(v.split("."))
    kt.done()
    st = top.table("set")
    values = {}
    for k, v in st.items(lambda k, v: v):
        if not isinstance(v, (str, int, float, bool, list)):
            st.fail("must be a plain value", k)
        values[k] = tuple(v) if isinstance(v, list) else v
    st.done()
    top.done()
    return ParamsJson(frozen(keys), frozen(values))


# ---- pretokenizers.toml ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PreStep:
    """One pre-tokenizer step as tokenizer.json spells it; unset fields take its defaults."""
    type: str                       # "Split", "ByteLevel", "Digits", "Punctuation"
    regex: str | None = None
    behavior: str = "Isolated"      # Split's and Punctuation's
    invert: bool = False
    use_regex: bool = True
    add_prefix_space: bool = False
    individual_digits: bool = False
    given: frozenset[str] = frozenset()   # the keys the file wrote

    def as_dict(self) -> dict[str, Any]:
        """The step with the keys the file wrote, as tokenizer.json would hold them."""
        return {"type": self.type, **{k: getattr(self, k) for k in sorted(self.given)}}

    def tokenizer_json(self) -> dict[str, Any]:
        """The step as a tokenizer.json pre_tokenizer holds it, every field written."""
        if self.type == "Split":
            return {"type": "Split", "pattern": {"Regex": self.regex}, "behavior": self.behavior,
                    "invert": self.invert}
        if self.type == "ByteLevel":
            return {"type": "ByteLevel", "add_prefix_space": self.add_prefix_space, "trim_offsets": True,
                    "use_regex": self.use_regex}
        if self.type == "Digits":
            return {"type": "Digits", "individual_digits": self.individual_digits}
        return {"type": self.type, "behavior": self.behavior}


_STEP_KEYS: dict[str, dict[str, type]] = {"Split": {"regex": str, "behavior": str, "invert": bool},
              "ByteLevel": {"use_regex": bool, "add_prefix_space": bool},
              "Digits": {"individual_digits": bool}, "Punctuation": {"behavior": str}}


@dataclass(frozen=True)
class PreTokenizer:
    name: str                       # the tokenizer.ggml.pre value
    steps: tuple[PreStep, ...]
    normalizer: str | None          # None: no preference
    hints: frozenset[str]
    code_modules: tuple[str, ...]
    ignore_merges: bool = False     # the BPE model's "ignore_merges" (Llama 3 and others)
    also: tuple[tuple[PreStep, ...], ...] = ()   # other spellings that name this entry too


@dataclass(frozen=True)
class PreTokenizers:
    accepted: frozenset[str]        # every name llama.cpp's vocab loader accepts
    entries: tuple[PreTokenizer, ...]


def load_pretokenizers(top: Table) -> PreTokenizers:
    lt = top.table("llama_cpp", required=True)
    accepted = frozenset(lt.strs("accepted"))
    lt.done()
    entries: list[PreTokenizer] = []
    for e in top.tables("pretokenizer"):
        name = e.text("name")
        if name not in accepted:
            e.fail(f"{name!r} is not a llama.cpp name ([llama_cpp] accepted)", "name")
        if any(x.name == name for x in entries):
            e.fail(f"{name!r} is listed twice", "name")
        like = e.text("like", None)
        if like is not None:
            if e.has("steps"):
                e.fail("give steps or like, not both", "like")
            earlier = next((x for x in entries if x.name == like), None)
            if earlier is None:
                e.fail(f"{like!r} is not an earlier entry", "like")
            steps = earlier.steps
        else:
            raw = e.get("steps", (list,))
            steps = tuple(_step(e, i, s) for i, s in enumerate(raw))
        also = []
        for j, alt in enumerate(e.get("also", (list,), [])):
            if not isinstance(alt, list):
                e.fail("also is a list of step lists", f"also #{j + 1}")
            also.append(tuple(_step(e, i, s, f"also #{j + 1} ") for i, s in enumerate(alt)))
        entries.append(PreTokenizer(name, steps, e.text("normalizer", None), frozenset(e.strs("hints", ())),
                                    e.strs("code_modules", ()), e.flag("ignore_merges", False), tuple(also)))
        e.done()
    top.done()
    return PreTokenizers(accepted, tuple(entries))


def _step(e: Table, i: int, s: Any, where: str = "") -> PreStep:
    key = f"{where}steps #{i + 1}"
    if not isinstance(s, dict) or s.get("type") not in _STEP_KEYS:
        e.fail(f"a step is {{ type = \"{'|'.join(_STEP_KEYS)}\", ... }}", key)
    allowed = _STEP_KEYS[s["type"]]
    for k, v in s.items():
        if k == "type":
            continue
        if k not in allowed:
            e.fail(f"unknown key {k!r} for a {s['type']} step", key)
        if not isinstance(v, allowed[k]):
            e.fail(f"{k} must be {allowed[k].__name__}", key)
    if s["type"] == "Split" and "regex" not in s:
        e.fail("a Split step needs regex", key)
    return PreStep(**s, given=frozenset(k for k in s if k != "type"))
