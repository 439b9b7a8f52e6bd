"""A strict reader for the TOML tables of ``mappings/``: every key a table holds must be taken
by the loader, so a misspelled section or key is an error naming the file and the key path
instead of data that is silently ignored."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from ..errors import CkptError
from ..expr import Expr, ExprError, compile_expr

T = TypeVar("T")
_MISSING: Any = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


class MappingError(CkptError):
    """The mapping data itself is wrong: a broken file under mappings/."""


def frozen(d: Mapping[str, T]) -> Mapping[str, T]:
    return MappingProxyType(dict(d))


class Table:
    """One TOML table being read. Take keys with the typed getters, then call ``done()``: any
    key not taken is refused ("unknown section" for tables, "unknown key" otherwise)."""

    def __init__(self, data: Mapping[str, Any], file: str, path: str = ""):
        self.data, self.file, self.path = data, file, path
        self._taken: set[str] = set()

    # ---- messages ---------------------------------------------------------------------------
    def where(self, key: str | None = None) -> str:
        if key is None:
            return f"{self.file}: {self.path or '(top level)'}"
        return f"{self.file}: {self.path + ' ' if self.path else ''}{key}"

    def fail(self, what: str, key: str | None = None) -> NoReturn:
        raise MappingError(f"{self.where(key)}: {what}")

    # ---- getters ----------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, types: tuple[type, ...], default: Any = _MISSING) -> Any:
        self._taken.add(key)
        if key not in self.data:
            if default is _MISSING:
                self.fail("missing", key)
            return default
        v = self.data[key]
        if not _is(v, types):
            self.fail(f"must be {' or '.join(_TYPE_NAMES.get(t, t.__name__) for t in types)}, "
                      f"not {_show(v)}", key)
        return v

    def text(self, key: str, default: Any = _MISSING) -> Any:
        return self.get(key, (str,), default)

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        return self.get(key, (bool,), default)

    def strs(self, key: str, default: tuple[str, ...] | Any = _MISSING) -> tuple[str, ...]:
        v = self.get(key, (list,), _MISSING if default is _MISSING else None)
        if v is None:
            return default
        for i, x in enumerate(v):
            if not isinstance(x, str):
                self.fail(f"entry {i + 1} must be a string, not {_show(x)}", key)
        return tuple(v)

    def expr(self, key: str, default: Any = _MISSING) -> Any:
        """An expression: a string (or a plain number, written as one) parsed now."""
        v = self.get(key, (str, int, float), _MISSING if default is _MISSING else None)
        if v is None:
            return default
        return self.compile(str(v), key)

    def compile(self, src: str, key: str) -> Expr:
        where = self.where(repr(key) if _needs_quotes(key) else key)
        try:
            return compile_expr(src, where)
        except ExprError as e:
            raise MappingError(e.message) from None

    def table(self, key: str, required: bool = False) -> Table:
        v = self.get(key, (dict,), _MISSING if required else {})
        return Table(v, self.file, f"{self.path} [{key}]".lstrip())

    def tables(self, key: str) -> list[Table]:
        """An array of tables ([[key]])."""
        v = self.get(key, (list,), [])
        out = []
        for i, x in enumerate(v):
            if not isinstance(x, dict):
                self.fail(f"entry {i + 1} must be a table", key)
            out.append(Table(x, self.file, f"{self.path} [[{key}]] #{i + 1}".lstrip()))
        return out

    def items(self, check: Callable[[str, Any], T]) -> Iterator[tuple[str, T]]:
        """Every key of a free-form table (GGUF key -> expression, ...), each value checked."""
        for k, v in self.data.items():
            self._taken.add(k)
            yield k, check(k, v)

    def done(self) -> None:
        for k, v in self.data.items():
            if k not in self._taken:
                kind = "section" if isinstance(v, dict) or (isinstance(v, list) and v and
                                                            all(isinstance(x, dict) for x in v)) else "key"
                shown = f"[{k}]" if kind == "section" else (repr(k) if _needs_quotes(k) else k)
                self.fail(f"unknown {kind}", shown)


def _is(v: Any, types: tuple[type, ...]) -> bool:
    if isinstance(v, bool):          # TOML true/false is not a number here
        return bool in types
    if isinstance(v, int) and float in types:
        return True
    return isinstance(v, types)


def _show(v: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__) + (
        f" ({v!r})" if isinstance(v, (str, int, float)) and len(repr(v)) < 40 else "")


def _needs_quotes(key: str) -> bool:
    return not key.replace("_", "").replace("-", "").isalnum()


def str_value(t: Table, what: str = "a string") -> Callable[[str, Any], str]:
    def check(k: str, v: Any) -> str:
        if not isinstance(v, str):
            t.fail(f"must be {what}, not {_show(v)}", repr(k) if _needs_quotes(k) else k)
        return v
    return check


def str_list_value(t: Table) -> Callable[[str, Any], tuple[str, ...]]:
    def check(k: str, v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            t.fail(f"must be a list of strings, not {_show(v)}", repr(k) if _needs_quotes(k) else k)
        return tuple(v)
    return check
