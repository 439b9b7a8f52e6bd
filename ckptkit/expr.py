"""A tiny, safe expression language for the mapping data: arithmetic, comparisons, `and`/`or`,
conditionals, subscripts, list comprehensions and a few functions over a config's names.

An unknown name is None, so ``head_dim or hidden_size // num_attention_heads`` reads as
"head_dim when the config has it". Nothing else of Python is reachable: no attributes, no
imports, no calls but the listed functions."""
from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .errors import CkptError

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
        ast.Pow: operator.pow}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
        ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_FUNCS: dict[str, Callable[..., Any]] = {"int": int, "float": float, "bool": bool, "len": len, "min": min, "max": max,
          "range": range, "sum": sum, "any": any, "all": all, "abs": abs, "list": list,
          "str": str}
_MAX_RANGE = 1_000_000


class ExprError(CkptError):
    pass


_CONSTANTS = {"None": None, "True": True, "False": False}
# node kinds that only ever appear inside the ones _Eval runs (operators, contexts, generators)
_PASSIVE = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.comprehension)
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.Not: operator.not_, ast.UAdd: operator.pos}


@dataclass(frozen=True)
class Expr:
    """A parsed, checked expression: parse once when the mapping data is loaded, evaluate often.

    ``where`` says where the text came from (file and key), for error messages."""
    src: str
    node: ast.expr = field(repr=False, compare=False)
    where: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.src

    def eval(self, names: Mapping[str, Any]) -> Any:
        """The value for these names; a failure (a missing value used in arithmetic, a wrong
        type, ...) is an ``ExprError`` naming the expression and where it came from."""
        try:
            return _Eval(names).run(self.node)
        except ExprError as e:
            raise ExprError(f"{self._at()}{self.src!r}: {e.message}") from None
        except (TypeError, KeyError, IndexError, ValueError, ZeroDivisionError, OverflowError) as e:
            raise ExprError(f"{self._at()}{self.src!r} failed: {type(e).__name__}: {e}") from None

    def _at(self) -> str:
        return f"{self.where}: " if self.where else ""


def compile_expr(src: str, where: str = "") -> Expr:
    """Parse and check ``src`` (syntax, allowed constructs, callable names) without evaluating it."""
    try:
        node = ast.parse(src.strip(), mode="eval").body
    except SyntaxError as e:
        raise ExprError(f"{where + ': ' if where else ''}bad expression {src!r}: {e.msg}") from None
    try:
        _check(node)
    except ExprError as e:
        raise ExprError(f"{where + ': ' if where else ''}bad expression {src!r}: {e.message}") from None
    return Expr(src, node, where)


def _check(node: ast.AST) -> None:
    """Refuse at parse time what _Eval would refuse only when it reaches it."""
    for n in ast.walk(node):
        if isinstance(n, _PASSIVE) or n is None:
            continue
        if not hasattr(_Eval, "_" + type(n).__name__):
            raise ExprError(f"{type(n).__name__} is not allowed in mapping expressions")
        if isinstance(n, ast.BinOp) and type(n.op) not in _BIN:
            raise ExprError(f"operator {type(n.op).__name__} is not allowed")
        if isinstance(n, ast.UnaryOp) and type(n.op) not in _UNARY:
            raise ExprError(f"operator {type(n.op).__name__} is not allowed")
        if isinstance(n, ast.Compare) and any(type(o) not in _CMP for o in n.ops):
            raise ExprError("comparison not allowed")
        if isinstance(n, ast.Call) and (not isinstance(n.func, ast.Name) or n.func.id not in _FUNCS
                                        or n.keywords):
            raise ExprError(f"only {', '.join(_FUNCS)} may be called")
        if isinstance(n, ast.ListComp) and (len(n.generators) != 1 or n.generators[0].is_async
                                            or not isinstance(n.generators[0].target, ast.Name)):
            raise ExprError("one simple `for` per list comprehension")
        if isinstance(n, ast.Dict) and any(k is None for k in n.keys):
            raise ExprError("** is not allowed in mapping expressions")
        if isinstance(n, ast.Starred):
            raise ExprError("* is not allowed in mapping expressions")


@lru_cache(maxsize=4096)
def _compiled(src: str) -> Expr:
    return compile_expr(src)


def evaluate(src: str, names: Mapping[str, Any]) -> Any:
    """Evaluate expression text (parsed once per distinct text)."""
    return _compiled(src).eval(names)


class _Eval:
    def __init__(self, names: Mapping[str, Any]):
        self.scopes: list[Mapping[str, Any]] = [names]

    def name(self, n: str) -> Any:
        for scope in reversed(self.scopes):
            if n in scope:
                return scope[n]
        return _CONSTANTS.get(n)

    def run(self, node: ast.AST) -> Any:
        m = getattr(self, "_" + type(node).__name__, None)
        if m is None:
            raise ExprError(f"{type(node).__name__} is not allowed in mapping expressions")
        return m(node)

    def _Constant(self, n):
        return n.value

    def _Name(self, n):
        return self.name(n.id)

    def _List(self, n):
        return [self.run(e) for e in n.elts]

    _Tuple = _List

    def _Dict(self, n):
        return {self.run(k): self.run(v) for k, v in zip(n.keys, n.values, strict=True)}

    def _BinOp(self, n):
        return _BIN[type(n.op)](self.run(n.left), self.run(n.right))

    def _UnaryOp(self, n):
        return _UNARY[type(n.op)](self.run(n.operand))

    def _BoolOp(self, n):
        v: Any
        if isinstance(n.op, ast.And):
            v = True
            for e in n.values:
                v = self.run(e)
                if not v:
                    return v
            return v
        v = None
        for e in n.values:
            v = self.run(e)
            if v:
                return v
        return v

    def _Compare(self, n):
        left = self.run(n.left)
        for op, c in zip(n.ops, n.comparators, strict=True):
            right = self.run(c)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True

    def _IfExp(self, n):
        return self.run(n.body) if self.run(n.test) else self.run(n.orelse)

    def _Subscript(self, n):
        base = self.run(n.value)
        if base is None:
            return None
        key = self.run(n.slice)
        if isinstance(base, dict):
            return base.get(key)
        return base[key]

    def _Slice(self, n):
        return slice(*(None if x is None else self.run(x) for x in (n.lower, n.upper, n.step)))

    def _Call(self, n):
        if not isinstance(n.func, ast.Name) or n.func.id not in _FUNCS or n.keywords:
            raise ExprError("only int, float, bool, len, min, max, range, sum, any, all, abs, list, str may be called")
        args = [self.run(a) for a in n.args]
        if n.func.id == "range" and any(abs(a) > _MAX_RANGE for a in args):
            raise ExprError("range too large")
        return _FUNCS[n.func.id](*args)

    def _ListComp(self, n):
        if len(n.generators) != 1 or not isinstance(n.generators[0].target, ast.Name):
            raise ExprError("one simple `for` per list comprehension")
        g = n.generators[0]
        out = []
        for v in self.run(g.iter):
            self.scopes.append({g.target.id: v})
            try:
                if all(self.run(c) for c in g.ifs):
                    out.append(self.run(n.elt))
            finally:
                self.scopes.pop()
        return out
