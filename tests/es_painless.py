"""A small interpreter for the subset of Painless that nerindex's score scripts use (test helper).

The fake cluster of ``tests/test_es_store.py`` runs the scripts of the request bodies through this,
so a wrong script gives wrong scores (or an error) in the tests instead of being trusted blindly.
Supported: number literals, ``_score``, ``params.NAME``, ``doc['field'].size()``,
``cosineSimilarity(vector, 'field')``, ``dotProduct(vector, 'field')``, ``Math.max/min/abs/sqrt``,
unary minus, ``* /``, ``+ -``, comparisons and the conditional ``c ? a : b`` (evaluated lazily, as
Painless does). Anything else raises :class:`PainlessError`, as a script Elasticsearch cannot run
would fail the search.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

import numpy as np

Env = Mapping[str, Any]
Node = Callable[[Env], Any]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<string>'[^']*')"
    r"|(?P<op>==|!=|>=|<=|[-+*/()\[\].,?:<>]))"
)


class PainlessError(Exception):
    """The script is outside the supported subset, or fails at run time (e.g. a missing vector)."""


def _tokens(source: str) -> list[tuple[str, str]]:
    out, position = [], 0
    source = source.rstrip().rstrip(";")
    while position < len(source):
        match = _TOKEN.match(source, position)
        if not match or match.end() == position:
            raise PainlessError(f"cannot read the script at {source[position:]!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _vector(env: Env, field: str) -> np.ndarray:
    vectors = env["doc"]
    if field not in vectors:
        raise PainlessError(f"no field [{field}] in this script's document")
    value = vectors[field]
    if value is None:
        raise PainlessError("A document doesn't have a value for a vector field!")
    return np.asarray(value, dtype=np.float64)


def _cosine(query: Any, env: Env, field: str) -> float:
    q, d = np.asarray(query, dtype=np.float64), _vector(env, field)
    return float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d)))


def _dot(query: Any, env: Env, field: str) -> float:
    return float(np.asarray(query, dtype=np.float64) @ _vector(env, field))


_VECTOR_FUNCTIONS = {"cosineSimilarity": _cosine, "dotProduct": _dot}
_MATH = {"max": max, "min": min, "abs": abs, "sqrt": math.sqrt}
_COMPARE = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise PainlessError("unexpected end of script")
        token = self.tokens[self.i]
        if expected is not None and token[1] != expected:
            raise PainlessError(f"expected {expected!r}, found {token[1]!r}")
        self.i += 1
        return token

    def parse(self) -> Node:
        node = self.conditional()
        if self.i != len(self.tokens):
            raise PainlessError(f"unexpected {self.peek()!r}")
        return node

    def conditional(self) -> Node:
        condition = self.comparison()
        if self.peek() != "?":
            return condition
        self.take("?")
        yes = self.conditional()
        self.take(":")
        no = self.conditional()
        return lambda env: yes(env) if condition(env) else no(env)

    def comparison(self) -> Node:
        left = self.additive()
        if self.peek() in _COMPARE:
            op = _COMPARE[self.take()[1]]
            right = self.additive()
            return lambda env: op(left(env), right(env))
        return left

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            left, right = node, self.multiplicative()
            node = (lambda l, r: lambda env: l(env) + r(env))(left, right) if op == "+" else \
                (lambda l, r: lambda env: l(env) - r(env))(left, right)
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()[1]
            left, right = node, self.unary()
            node = (lambda l, r: lambda env: l(env) * r(env))(left, right) if op == "*" else \
                (lambda l, r: lambda env: l(env) / r(env))(left, right)
        return node

    def unary(self) -> Node:
        if self.peek() == "-":
            self.take()
            inner = self.unary()
            return lambda env: -inner(env)
        return self.primary()

    def arguments(self) -> list[Node]:
        self.take("(")
        args: list[Node] = []
        while self.peek() != ")":
            if args:
                self.take(",")
            args.append(self.argument())
        self.take(")")
        return args

    def argument(self) -> Node:
        kind, value = self.tokens[self.i] if self.i < len(self.tokens) else (None, None)
        if kind == "string":
            self.take()
            text = value[1:-1]
            return lambda env: text
        return self.conditional()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            number = float(value)
            return lambda env: number
        if value == "(":
            node = self.conditional()
            self.take(")")
            return node
        if value == "_score":
            return lambda env: env["_score"]
        if value == "params":
            self.take(".")
            name = self.take()[1]

            def param(env: Env) -> Any:
                if name not in env["params"]:
                    raise PainlessError(f"params.{name} is not set")
                return env["params"][name]

            return param
        if value == "doc":
            self.take("[")
            kind, field = self.take()
            if kind != "string":
                raise PainlessError("doc[...] needs a string field name")
            self.take("]")
            self.take(".")
            if self.take()[1] != "size":
                raise PainlessError("only doc['field'].size() is supported")
            self.arguments()
            name = field[1:-1]
            return lambda env: 0 if _vector_or_none(env, name) is None else 1
        if value == "Math":
            self.take(".")
            function = _MATH.get(self.take()[1])
            if function is None:
                raise PainlessError("unsupported Math function")
            args = self.arguments()
            return lambda env: function(*(a(env) for a in args))
        if value in _VECTOR_FUNCTIONS:
            function = _VECTOR_FUNCTIONS[value]
            args = self.arguments()
            if len(args) != 2:
                raise PainlessError(f"{value} takes a query vector and a field name")
            query, field = args
            return lambda env: function(query(env), env, field(env))
        raise PainlessError(f"unsupported token {value!r}")


def _vector_or_none(env: Env, field: str) -> Any:
    if field not in env["doc"]:
        raise PainlessError(f"no field [{field}] in this script's document")
    return env["doc"][field]


def parse(source: str) -> Node:
    """The script as a function of its environment; PainlessError outside the subset."""
    return _Parser(source).parse()


def run(script: Mapping[str, Any], *, score: float, doc: Mapping[str, Any]) -> float:
    """Run ``{"source": ..., "params": ...}`` with ``_score`` and the document's vector fields."""
    if script.get("lang", "painless") != "painless":
        raise PainlessError(f"unsupported script language {script.get('lang')!r}")
    node = parse(script["source"])
    value = node({"_score": float(score), "params": dict(script.get("params") or {}), "doc": doc})
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PainlessError(f"a score script must return a number, got {value!r}")
    return float(value)
