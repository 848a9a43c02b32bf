"""The rules of a search's restrictions, checked once where a request is made: which metadata
fields a filter may name, which values it takes, and what no stored metadata may hold.

Every surface builds its filters here (:meth:`Filters.of`, :func:`where_pairs`), and every writer
checks a passage's metadata with :func:`fields_problem`, so a value a filter could not tell apart
from another never reaches a store. The stores translate :class:`Filters` (``stores.filters`` for
SQL, ``elasticsearch.search_requests`` for the query DSL). :class:`~.base.SearchRequest` holds one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from ..errors import SearchError
from ..text import unicode_problem, value_problem

if TYPE_CHECKING:
    from ..records import Passage

FilterScalar = str | int | float | bool
# One value (exact match), a tuple (any of them) or None (the field is absent: metadata only).
FilterValue = FilterScalar | tuple[FilterScalar, ...] | None

# The text of a stored number or boolean starts with a mark (Unicode noncharacters), so that a filter
# text that spells a number matches stored numbers of that value and that same string, not other
# strings that spell it (stores.filters, the Elasticsearch filter_texts). No metadata string and no
# filter string may start with one: "\ufdd02020" would otherwise match the number 2020.
NUMBER_MARK = "\ufdd0"
BOOLEAN_MARK = "\ufdd1"


def mark_problem(value: Any, label: str) -> str | None:
    """Why a metadata or filter value cannot be stored or asked for, or None: a string that starts
    with a type mark, or that no store holds as text (:func:`~indexer.text.unicode_problem`: a NUL,
    at which the embedded store's SQL stopped reading, so "a\x00b" matched a filter "a" and not
    itself, an audit)."""
    if not isinstance(value, str):
        return None
    if value[:1] in (NUMBER_MARK, BOOLEAN_MARK):
        return f"{label} starts with U+{ord(value[0]):04X}, a character nerindex reserves to mark stored numbers and booleans"
    problem = unicode_problem(value)
    return None if problem is None else f"{label} holds {problem}"


def fields_problem(fields: Mapping[str, Any]) -> str | None:
    """Why a passage's metadata cannot be stored, or None: :func:`mark_problem` of each field or
    each element of a list (what filters compare), or anywhere in it a number that is not finite
    (no JSON holds NaN or Infinity: the embedded store refused the whole chunk, an audit) or a value
    JSON has no type for (a numpy int or array, a Decimal: a TypeError lost the whole chunk, a review)."""
    for key, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            problem = mark_problem(item, f"field {key!r}")
            if problem is not None:
                return problem
    for key, leaf in _leaves(fields):
        if isinstance(leaf, _Key):  # JSON writes 1, True and None as strings: {1: "a", "1": "b"} would be
            # two keys of one name (a review), and a field name must be a string for a filter to name it
            where = f"field {key!r}" if key else "the metadata"
            return f"{where} has a key of type {type(leaf.key).__qualname__} ({leaf.key!r}); keys are strings"
        if not isinstance(leaf, JSON_SCALARS):
            kind = type(leaf).__qualname__ if type(leaf).__module__ == "builtins" else f"{type(leaf).__module__}.{type(leaf).__qualname__}"
            return (f"field {key!r} holds a {kind}, which is not a JSON value (a string, number, boolean, null, "
                    "list or object; numpy's .item() and .tolist() give one, and for a float32 float(str(x)) the "
                    "decimal a filter compares, 0.1 and not .item()'s 0.10000000149011612)")
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return f"field {key!r} holds {leaf!r}, which is not a finite number"
    return None


def id_problem(pid: Any) -> str | None:
    """Why a passage id cannot be stored, or None: it is not a string (the embedded store kept 5 as
    "5", so a later passage "5" was skipped as stored, and b"x" as a blob that broke ``--json``: an
    audit), it is blank (the readers refuse it by line), or no store holds it as text."""
    if not isinstance(pid, str):
        return f"its id is {type(pid).__qualname__}, not a string"
    if not pid.strip():
        return "its id is empty"
    return value_problem(pid, "its id")


def passage_problem(passage: Passage) -> str | None:
    """Why no store may hold this passage, or None: an id of :func:`id_problem`, a text that is no
    string, metadata that is not a dict, or text or metadata holding what no store holds as text
    (:func:`~indexer.text.value_problem`), or metadata no filter could tell apart
    (:func:`fields_problem`). Every writer asks: ``nerindex index`` and the Python API
    (``pipeline.sort_chunk``), and ``es reindex`` for what an older version stored."""
    shape = id_problem(passage.id)
    if shape is None and not isinstance(passage.text, str):
        shape = f"its text is {type(passage.text).__qualname__}, not a string"
    if shape is None and not isinstance(passage.fields, dict):
        shape = f"its metadata is {type(passage.fields).__qualname__}, not a dict"
    if shape is not None:
        return f"cannot be stored: {shape}"
    try:
        unstorable = value_problem(passage.text, "its text") or value_problem(passage.fields)
        return f"cannot be stored: {unstorable}" if unstorable is not None else fields_problem(passage.fields)
    except RecursionError:  # no store's JSON writer goes deeper either (a review: it left sort_chunk)
        return "cannot be stored: its metadata is nested too deeply"


JSON_SCALARS = (str, int, float, bool, type(None))  # what json.dumps writes of a store's metadata


@dataclass(frozen=True)
class _Key:
    """An object's key that is not a string (a tuple, a number, None), as :func:`_leaves` yields it."""

    key: Any


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every value in metadata that is not a list or an object, each with its field's dotted path;
    an object's key that JSON cannot write as a :class:`_Key`. Only a ``dict`` is an object (json
    cannot write another mapping: a review)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                yield key, _Key(k)
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v, key)
    else:
        yield key, value


SPAN_FILTERS = ("spans.labels", "spans.text")  # the span fields a filter may name
MAX_FILTER_KEY_CHARS = 64
_FILTER_KEY = re.compile(r"(?!-)[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*", re.ASCII)


def filter_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot name a filter field, or None: the one rule of every backend and entry point.

    A key is 1 to 64 ASCII letters, digits, ``_``, ``-`` and ``.``; it does not start with ``-``;
    its dots separate non-empty names (no leading, trailing or doubled dot). That is a field name
    both backends read the same way: SQLite's JSON path quotes it whole, Elasticsearch reads
    ``fields.<key>`` with dots as object paths (so an empty name between dots names no field), and
    the web service's facets are offered for exactly these names. Keys starting with ``spans.``
    are reserved for the span filters (:data:`SPAN_FILTERS`).

    Before this rule each backend had its own (nerindex 0.3 and earlier); keys now refused that one
    of them used to accept:

    - embedded store: keys starting with ``.`` or ``-``, ending with ``.`` or holding ``..``, and
      keys over 64 characters;
    - Elasticsearch: keys with any character outside ASCII letters, digits, ``_``, ``-`` and
      ``.`` (spaces, ``über``, ``a/b``, ``a:b``, quotes), keys starting with ``-``, keys holding
      ``..``, and keys over 64 characters;
    - web service: keys ending with ``.`` or holding ``..`` (the stores refused most of them).
    """
    if not isinstance(key, str):
        return f"filter field {key!r}: a field name is a string"
    if key.startswith("spans.") and key not in SPAN_FILTERS:
        return f"cannot filter on span field {key!r} (span filters: {', '.join(SPAN_FILTERS)})"
    if len(key) > MAX_FILTER_KEY_CHARS or not _FILTER_KEY.fullmatch(key):
        return (
            f"filter field {key!r}: use ASCII letters, digits, '_', '.' or '-' (at most {MAX_FILTER_KEY_CHARS}), "
            "with names between the dots"
        )
    return None


def is_metadata_filter_key(name: str) -> bool:
    """Whether ``name`` is a metadata field a search can filter on (what facets offer)."""
    return not name.startswith("spans.") and filter_key_problem(name) is None


def python_scalar(value: np.generic) -> Any:
    """A numpy scalar as the Python value it stands for: a float32 or float16 as the shortest
    decimal that reads back as it (0.1, not 0.10000000149011612), as the Parquet reader stores
    such columns; ``item()`` otherwise. Why: a filter given ``np.float32(0.1)`` (or a list from
    ``tolist()``'s float32) matched nothing that ``--where w=0.1`` found (an audit)."""
    if isinstance(value, (np.float32, np.float16)):
        return float(str(value))
    return value.item()


def _filter_scalar(key: str, value: Any) -> FilterScalar:
    if isinstance(value, np.generic):
        value = python_scalar(value)
    if not isinstance(value, (str, int, float, bool)):
        raise SearchError(f"filter on {key!r}: values are strings, numbers or booleans, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchError(f"filter on {key!r}: {value!r} is not a finite number")
    if not isinstance(value, str) and key in SPAN_FILTERS:  # the embedded store compared True as "1", Elasticsearch
        # as true; a number matched nothing here and its digits there (an audit)
        raise SearchError(f"filter on {key!r}: a span's labels and text are strings, not {value!r}")
    problem = mark_problem(value, f"filter on {key!r}: {value!r}")
    if problem is not None:
        raise SearchError(problem)
    return value


def _filter_value(key: str, value: Any) -> FilterValue:
    """A filter value in its one checked form (see :class:`Filters`)."""
    if value is None:
        if key in SPAN_FILTERS:
            raise SearchError(f"filter on {key!r}: a span filter needs a value")
        return None
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)  # a deterministic order, so equal filters send equal requests
    if isinstance(value, (list, tuple)):
        if not value:
            raise SearchError(f"filter on {key!r}: empty list of values")
        if any(v is None or isinstance(v, (Mapping, list, tuple, set, frozenset)) for v in value):
            raise SearchError(f"filter on {key!r}: a list may hold plain values only")
        return tuple(_filter_scalar(key, v) for v in value)
    if isinstance(value, Mapping):
        raise SearchError(f"filter on {key!r}: only exact values or lists of values are supported, got {value!r}")
    return _filter_scalar(key, value)


@dataclass(frozen=True)
class Filters:
    """The metadata and span restrictions of a search, checked once: what every backend translates.

    Each (key, value) pair restricts by exact match: a plain value must equal the field's value
    (or one element, where the field holds a list; an object holds none); a tuple means any of its
    values; None means the field is absent: it holds no value a filter compares (missing, null,
    ``[]``, a list of nulls, an object). Keys ``spans.labels`` and ``spans.text`` restrict which spans may match
    instead. Keys follow :func:`filter_key_problem`; values are strings, numbers or booleans
    (numpy scalars become Python ones, sets become tuples in a fixed order). Pairs are kept sorted
    by key. Build one with :meth:`of`; a SearchError says what is wrong.
    """

    items: tuple[tuple[str, FilterValue], ...] = ()

    def __post_init__(self) -> None:
        checked: dict[str, FilterValue] = {}
        for key, value in self.items:
            problem = filter_key_problem(key)
            if problem:
                raise SearchError(problem)
            if key in checked:
                raise SearchError(f"filter field {key!r} is given twice")
            checked[key] = _filter_value(key, value)
        object.__setattr__(self, "items", tuple(sorted(checked.items(), key=lambda item: item[0])))

    @classmethod
    def of(cls, raw: "Filters | Mapping[str, Any] | None") -> "Filters":
        """Filters from a mapping of field -> value(s) (None: no filters); a Filters is kept as is."""
        if isinstance(raw, Filters):
            return raw
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise SearchError(f"filters are a mapping of field -> value(s), not {type(raw).__name__}")
        return cls(tuple(raw.items()))

    @property
    def metadata(self) -> tuple[tuple[str, FilterValue], ...]:
        """The pairs restricting passages by their metadata."""
        return tuple(item for item in self.items if item[0] not in SPAN_FILTERS)

    @property
    def spans(self) -> tuple[tuple[str, FilterValue], ...]:
        """The pairs restricting which spans may match (``spans.labels``, ``spans.text``)."""
        return tuple(item for item in self.items if item[0] in SPAN_FILTERS)

    def __bool__(self) -> bool:
        return bool(self.items)


def where_pairs(pairs: Iterable[str], *, option: str) -> dict[str, str | list[str]]:
    """``field=value`` strings (the CLI's ``--where``, the HTTP ``where`` parameter) as a filter
    mapping for :meth:`Filters.of`; a field given twice means any of its values."""
    filters: dict[str, str | list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SearchError(f"{option} expects field=value, got {pair!r}")
        if key in filters:
            prior = filters[key]
            filters[key] = (prior if isinstance(prior, list) else [prior]) + [value]
        else:
            filters[key] = value
    return filters
