"""A small interpreter for the Painless that nerindex's exhaustive-search scripts use (test helper).

Top-k search is native (no scripts); only the exact exhaustive search scores spans (and, with a
passage weight, passages) with ``script_score``. The CI server has no Painless module, so the fake
cluster of ``tests/test_es_store.py`` runs those scripts through this, and a wrong script gives
wrong scores (or an error) instead of being trusted. Supported: number literals, ``_score``,
``params.NAME``, ``doc['field'].size()``, ``cosineSimilarity(vector, 'field')``, ``+``, ``*``,
``==`` and the conditional ``c ? a : b`` (evaluated lazily, as Painless does), with parentheses.
Anything else raises :class:`PainlessError`, as a script Elasticsearch cannot run fails the search.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np

Env = Mapping[str, Any]
Node = Callable[[Env], Any]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<string>'[^']*')"
    r"|(?P<op>==|[+*()\[\].,?:]))"
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
        out.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return out


def _field(env: Env, field: str) -> Any:
    if field not in env["doc"]:
        raise PainlessError(f"no field [{field}] in this script's document")
    return env["doc"][field]


def _cosine(query: Any, env: Env, field: str) -> float:
    value = _field(env, field)
    if value is None:
        raise PainlessError("A document doesn't have a value for a vector field!")
    q, d = np.asarray(query, dtype=np.float64), np.asarray(value, dtype=np.float64)
    return float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d)))


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
        condition = self.equality()
        if self.peek() != "?":
            return condition
        self.take("?")
        yes = self.conditional()
        self.take(":")
        no = self.conditional()
        return lambda env: yes(env) if condition(env) else no(env)

    def equality(self) -> Node:
        left = self.binary(("+",), lambda a, b: a + b, self.product)
        if self.peek() != "==":
            return left
        self.take("==")
        right = self.binary(("+",), lambda a, b: a + b, self.product)
        return lambda env: left(env) == right(env)

    def product(self) -> Node:
        return self.binary(("*",), lambda a, b: a * b, self.primary)

    def binary(self, ops: tuple[str, ...], apply: Callable[[Any, Any], Any], operand: Callable[[], Node]) -> Node:
        node = operand()
        while self.peek() in ops:
            self.take()
            node = (lambda l, r: lambda env: apply(l(env), r(env)))(node, operand())
        return node

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            number = float(value)
            return lambda env: number
        if kind == "string":
            text = value[1:-1]
            return lambda env: text
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
        if value == "doc":  # doc['field'].size()
            self.take("[")
            kind, field = self.take()
            if kind != "string":
                raise PainlessError("doc[...] needs a string field name")
            for expected in ("]", ".", "size", "(", ")"):
                self.take(expected)
            return lambda env: 0 if _field(env, field[1:-1]) is None else 1
        if value == "cosineSimilarity":
            self.take("(")
            query = self.conditional()
            self.take(",")
            field = self.conditional()
            self.take(")")
            return lambda env: _cosine(query(env), env, field(env))
        raise PainlessError(f"unsupported token {value!r}")


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
