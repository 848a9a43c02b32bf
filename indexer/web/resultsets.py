"""Result sets of "all matches" searches: query keys, opaque cursors, a small cache, facet counts.

The HTTP API pages through every match of a query (the NERetrieve setting) with an opaque cursor.
The simple correct implementation: run the exhaustive search once, keep the ordered hits in a
bounded LRU cache keyed by the store version and a hash of the query, and let a cursor carry
(query hash, store version, offset). A cursor presented with a different query is refused; a
cursor whose result set was evicted is answered by running the search again (results are
deterministic for an unchanged store). A cursor from an older store version is refused with 409:
its offsets index a result set that no longer exists, and paging on through the new one would
skip or repeat hits; the client starts again without a cursor. The service reads the store
version on every request (one cheap query), so indexing while it runs never leaves it answering
from a stale result set. Everything here is pure or self-contained, so it is tested without a model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from ..errors import NerindexError, SearchError, StaleCursorError
from ..records import Hit
from ..stores.base import StoreVersion
from ..stores.filters import field_texts, stored_text, stored_values, value_class

Scalar = str | int | float | bool
FilterValue = Scalar | list[Scalar]

CURSOR_VERSION = 3  # 2: cursors carry the store version; 3: and the type vector's digest
MAX_FACET_CHARS = 100


@dataclass(frozen=True)
class SearchQuery:
    """What identifies a result set: the type phrase and every restriction, normalised.

    ``filters`` is kept as a sorted tuple of (field, values) pairs so that equal queries hash
    equal whatever order the client sent them in. ``passage_weight`` (λ; None: the model's) changes
    the order of a result set, so it is part of the key: a cursor from one λ is refused for another.
    A cursor also carries a digest of the type vector the phrase is searched with, beside the key
    (:func:`encode_cursor`); the key leaves it out, since one process searches a phrase with one
    vector.
    """

    type: str
    threshold: float | None = None
    filters: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()
    text: str | None = None
    passage_weight: float | None = None

    @classmethod
    def build(
        cls,
        type_phrase: str,
        *,
        threshold: float | None = None,
        filters: Mapping[str, FilterValue] | None = None,
        text: str | None = None,
        passage_weight: float | None = None,
    ) -> "SearchQuery":
        pairs = []
        for name, value in (filters or {}).items():
            values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            pairs.append((name, values))
        return cls(
            type=type_phrase.strip(),
            threshold=None if threshold is None else float(threshold),
            filters=tuple(sorted(pairs, key=lambda p: p[0])),
            text=(text or "").strip() or None,
            passage_weight=None if passage_weight is None else float(passage_weight),
        )

    def filter_dict(self) -> dict[str, Scalar | list[Scalar]]:
        """Filters in the shape ``NerIndex.search`` takes: one value, or a list meaning any of."""
        return {name: values[0] if len(values) == 1 else list(values) for name, values in self.filters}

    def without_filter(self, name: str) -> "SearchQuery":
        """The same query less one field's filter (for disjunctive facet counts)."""
        return replace(self, filters=tuple(p for p in self.filters if p[0] != name))

    def key(self) -> str:
        """A short stable hash of the query: cache key and cursor binding."""
        canonical = json.dumps(
            {
                "type": self.type,
                "threshold": self.threshold,
                "filters": [[n, list(v)] for n, v in self.filters],
                "text": self.text,
                "passage_weight": self.passage_weight,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


def version_key(version: StoreVersion) -> str:
    """A short hash of a store version: what cursors and cached result sets are bound to."""
    return hashlib.sha256(str(version).encode("utf-8")).hexdigest()[:16]


def encode_cursor(query_key: str, offset: int, store_key: str, vector: str | None = None) -> str:
    """An opaque, URL-safe cursor for the page of a result set that starts at ``offset``, bound to
    the query, the store version and the type vector (a digest: ``SearchService.vector_digest``)."""
    raw = json.dumps({"v": CURSOR_VERSION, "k": query_key, "s": store_key, "m": vector, "o": offset},
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, query_key: str, store_key: str, vector: str | None = None) -> int:
    """The offset a cursor points at; refuses cursors that are malformed, from another query, or
    from an older state of the store or a server that searches the type with another vector
    (:class:`StaleCursorError`: a server whose model folder was edited, or one running another
    graph, fp16 on a GPU and int8 on a CPU, took another's cursor and repeated and skipped
    passages; the stale-answer audit, round 30)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        version, key, store, offset = data["v"], data["k"], data["s"], data["o"]
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error) as exc:
        raise SearchError("invalid cursor: pass back the next_cursor of a previous response") from exc
    if version != CURSOR_VERSION or not isinstance(offset, int) or offset < 0:
        raise SearchError("invalid cursor: pass back the next_cursor of a previous response")
    if key != query_key:
        raise SearchError(
            "cursor belongs to a different query: send the same type, threshold, passage_weight, "
            "filters and text as the request that returned it"
        )
    if data.get("m") != vector:
        raise StaleCursorError(
            "this server searches the type with another vector than the one that issued this cursor "
            "(its model folder changed, or another server with another model or graph issued it): send the "
            "search again without a cursor"
        )
    if store != store_key:
        raise StaleCursorError(
            "the index changed since this cursor was issued (passages were added, updated or the store "
            "was replaced): send the search again without a cursor to page through the current results "
            "(while passages are being indexed the results change under every page: page once that is "
            "done, or ask for more hits per page)"
        )
    return offset


MAX_CACHED_BYTES = 256 * 2**20  # all cached result sets together, as :func:`hit_bytes` counts them


def hit_bytes(hit: Hit) -> int:
    """About how many bytes a cached hit holds: its text, id and fields, and an object a mark (a
    CPython str of ASCII is ~49 bytes and one a character; a dataclass with its dict and a float
    some 300). A bound in hits let 200,000 passages of a few KB (~720 MB) stay cached (an audit)."""
    return (400 + sys.getsizeof(hit.id) + sys.getsizeof(hit.text) + len(repr(hit.fields).encode())
            + sum(300 + sys.getsizeof(m.text) for m in hit.spans))


@dataclass
class _Entry:
    hits: list[Hit]
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    size: int = 0  # hit_bytes of its hits, once computed


class IndexChanged(NerindexError):
    """The store's version moved while a result set was computed (caught by the service's
    ``at_one_version``, which answers again at the new version); never cached."""


class ResultSetCache:
    """A thread-safe LRU of exhaustive result sets, bounded by entries and by their bytes
    (:func:`hit_bytes`): the one just computed stays whatever its size, since the request that made
    it pages through it (one result set is as large as the matches of its query), and so do those
    still being computed.

    Entries are keyed by (store version, query): asking with a new store version drops every
    entry of the others, which no request can use again (only one that raced a write may, and it
    recomputes). Concurrent requests for the same key share one search: the first computes, the
    others wait for it. A failed search is not cached.
    """

    def __init__(self, *, max_entries: int = 16, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store_key: str, query_key: str, compute: Callable[[], list[Hit]]) -> list[Hit]:
        key = (store_key, query_key)
        with self._lock:
            for old in [k for k in self._entries if k[0] != store_key]:
                del self._entries[old]
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = _Entry(hits=[])
                self._entries[key] = entry
            else:
                self._entries.move_to_end(key)
        assert entry is not None
        if not owner:
            entry.ready.wait()
            if entry.error is None:
                return entry.hits
            if isinstance(entry.error, IndexChanged):  # the version asked for is gone: no search can give it
                raise entry.error
            return self.get(store_key, query_key, compute)  # the owner failed: try once more ourselves
        try:
            entry.hits = list(compute())
            entry.size = sum(map(hit_bytes, entry.hits))
        except BaseException as exc:
            entry.error = exc
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            raise
        finally:
            entry.ready.set()
        self._evict(keep=key)
        return entry.hits

    def _evict(self, keep: tuple[str, str]) -> None:
        """Least recently used first, never ``keep`` (the result set just computed, which its
        client pages through) nor one still being computed (it counts 0 bytes yet, and sat after
        ``keep``: a review found a large set evicted as soon as it was made, and searched again for
        every page)."""
        with self._lock:
            total = sum(e.size for e in self._entries.values())
            for key in list(self._entries):
                if len(self._entries) <= self.max_entries and total <= self.max_bytes:
                    break
                entry = self._entries[key]
                if key == keep or not entry.ready.is_set():
                    continue
                del self._entries[key]
                total -= entry.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _facet_value(value: Any) -> list[Scalar]:
    """The countable values of one metadata field: those a filter compares (``stores.filters.
    stored_values``: scalars, or each scalar of a list; not a string that starts with a type mark,
    which an old store may hold: it merged with the boolean's row, an upgrade audit)."""
    return stored_values(value)


JS_EXACT_INT = 2**53 - 1  # the largest integer a JavaScript number holds exactly


def facet_json(value: Any) -> Any:
    """A facet value as the search page can send it back as a filter: an integer beyond
    JavaScript's exact range as its digits (a filter matches them as the number), since the page
    would round 1234567890123456789 to ...800 and filter on another value."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JS_EXACT_INT:
        return str(value)
    return value


def facet_counts(
    hits: Sequence[Hit],
    *,
    fields: Sequence[str] | None = None,
    size: int = 10,
    max_fields: int = 12,
    max_distinct: int | None = None,
    keep: Callable[[str], bool] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Value counts of metadata fields over a result set, most frequent first.

    ``fields=None`` counts every field that holds scalars (or lists of scalars), skipping fields
    with more distinct values than ``max_distinct`` (default: half the hits, at least 20) or with
    long strings: ids and free text make useless facets. ``keep`` leaves out fields whose name
    fails it (the service: names it cannot filter on, so it never offers a facet it would refuse).
    """
    found: dict[str, dict[tuple[bool, Any], list[int]]] = {}  # field -> value -> hits holding it
    for i, hit in enumerate(hits):
        for name, value in hit.fields.items():
            if (fields is not None and name not in fields) or (keep is not None and not keep(name)):
                continue
            for v in _facet_value(value):  # keyed with its booleanness: Python hashes True and 1 alike
                held = found.setdefault(name, {}).setdefault((isinstance(v, bool), v), [])
                if not held or held[-1] != i:
                    held.append(i)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in list(fields) if fields is not None else sorted(found):
        values = found.get(name)
        if values is None:
            if fields is not None:
                out[name] = []
            continue
        if fields is None:  # decided before classifying: a field of ids has as many values as hits
            limit = max_distinct if max_distinct is not None else max(20, len(hits) // 2)
            if len(values) > limit or any(isinstance(v, str) and len(v) > MAX_FACET_CHARS for _, v in values):
                continue
        out[name] = _ranked_values(values, size)
        if fields is None and len(out) >= max_fields:
            break
    return out


def _ranked_values(values: dict[tuple[bool, Any], list[int]], size: int) -> list[dict[str, Any]]:
    """One row per value a filter cannot tell apart (``stores.filters.value_class``: 1 and 1.0 are
    one, true is not 1), shown as first seen, with the count clicking it returns: the passages a
    filter on the shown value finds (each once; "7" finds the number 7 as well as the string, a
    review), most first."""
    shown: dict[frozenset[str], Any] = {}
    holders: dict[str | None, set[int]] = {}  # stored text -> hits holding it
    for (_, v), held in values.items():
        shown.setdefault(value_class(v), v)
        holders.setdefault(stored_text(v), set()).update(held)
    # a row per value as the page shows it: an integer past 2**53 is shown as its digits, which the
    # same digits stored as text are too (two rows of one label, ticked together: an audit)
    rows: dict[str, Any] = {}
    for v in shown.values():
        rows.setdefault(json.dumps(facet_json(v)), v)
    counts = [(v, len(set().union(*(holders.get(t, ()) for t in field_texts(facet_json(v)))))) for v in rows.values()]
    ranked = sorted(counts, key=lambda vc: (-vc[1], value_order(facet_json(vc[0]))))  # ties: 2 before 10 (an audit)
    return [{"value": facet_json(v), "count": c} for v, c in ranked[:size]]


def value_order(value: Any) -> tuple[int, Any]:
    """Search UI's ``sort: "value"``, and a facet's ties: numbers by size (an audit: as text, 10 came before 2 and a
    ``size`` cut dropped 2 and 9), then everything else as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str) and _BIG_INT.fullmatch(value) and abs(int(value)) > JS_EXACT_INT:  # facet_json's digits
        return (0, int(value))
    return (1, str(value))


_BIG_INT = re.compile(r"-?[1-9][0-9]{15,}")
