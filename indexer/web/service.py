"""The index behind the HTTP service: request limits, time-limited calls in a thread pool, result sets.

Everything here is plain Python over a NerIndex (or anything with its search/embed/info/catalog/
version); the routes (:mod:`.routes`) only parse, check and hand over.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

from ..errors import NerindexError, UnsupportedSearchError
from ..records import Hit
from ..runtime import usable_cores
from ..stores.base import MAX_PHRASE_CHARS
from ..stores.filter_rules import is_metadata_filter_key
from ..text import is_blank
from . import searchui
from .resultsets import (
    IndexChanged,
    ResultSetCache,
    SearchQuery,
    decode_cursor,
    encode_cursor,
    facet_counts,
    version_key,
)
from .schemas import SearchBody

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; over a limit is a 400 (or 413/504) with a clear message."""

    max_phrase_chars: int = MAX_PHRASE_CHARS
    max_text_chars: int = 500
    max_page_size: int = 1000
    max_filters: int = 16
    max_filter_values: int = 100
    max_embed_phrases: int = 64
    max_body_bytes: int = 256 * 1024
    request_timeout_s: float = 10.0


class RequestTimeout(NerindexError):
    """A request ran past the service's time limit."""


NARROW_IT = "narrow it (filters, text, a higher threshold), page with a smaller limit, or try again"
FEWER_PHRASES = "send fewer phrases at a time, or try again"
VERSION_TRIES = 2  # a request whose reads a write interleaved is answered again, at the new version


def model_summary(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model part of NerIndex.info(), whatever its exact layout, as a small dict."""
    model = info.get("model")
    if isinstance(model, dict):
        keys = ("id", "version", "dims", "checksum", "similarity_threshold", "unseen_similarity_threshold",
                "passage_weight", "unseen_passage_weight")
        return {k: model[k] for k in keys if k in model} or dict(model)
    if model is not None:
        return {"id": str(model)}
    return None


class SearchService:
    """The index behind the routes: time-limited calls in a thread pool and a result-set cache."""

    def __init__(self, index: Any, limits: Limits, *, workers: int, threshold: float | None = None) -> None:
        self.index = index
        self.limits = limits
        self.threshold = threshold  # the server's default; None: the model's calibrated one
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nerindex-web")
        self.cache = ResultSetCache()
        self._catalog: list[str] | None = None
        self._info: dict[str, Any] | None = None

    async def call(self, fn: Callable[..., T], *args: Any, store: bool = True, advice: str = NARROW_IT,
                   **kwargs: Any) -> T:  # fmt: skip
        """Run blocking work and give up waiting after the request time limit, saying ``advice``.
        Work on the store runs in the search pool; work that needs none (``store=False``: the
        catalog, a phrase's vector) on a thread of its own, so that it does not queue behind
        searches a slow store holds (an audit: /api/v1/types and /api/v1/embed answered 504
        "narrow it (filters, ...)" while Elasticsearch hung)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor if store else None, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, timeout=self.limits.request_timeout_s)
        except asyncio.TimeoutError as exc:
            # the wait for a free worker counts too: a busy service times out quick requests (an audit)
            raise RequestTimeout(f"the request took longer than {self.limits.request_timeout_s:g} s, its wait for a "
                                 f"free worker included; {advice}") from exc

    def store_silent(self, within: str = "it") -> str:
        """What a timed-out call that only reads the store says (info, health): nothing to narrow."""
        return f"the store ({self.index.description or 'its backend'}) did not answer within {within}"

    # --- blocking helpers, run in the pool ---

    def catalog(self) -> list[str]:
        if self._catalog is None:
            self._catalog = list(self.index.catalog)
        return self._catalog

    def info(self) -> dict[str, Any]:
        info = dict(self.index.info())
        self._info = info
        return info

    def default_threshold(self, phrase: str | None = None) -> float | None:
        """The threshold a search for ``phrase`` applies when the request gives none: the server's,
        else the model's for that phrase (trained-on or not, ``ModelInfo.threshold_for``)."""
        if self.threshold is not None:
            return self.threshold
        threshold_for = getattr(self.index, "threshold_for", None)  # an index may not know phrases
        if phrase is not None and threshold_for is not None:
            return float(threshold_for(phrase))
        if self._info is None:
            self.info()
        assert self._info is not None
        model = self._info.get("model")
        for source in (self._info, model if isinstance(model, dict) else {}):
            value = source.get("similarity_threshold")
            if isinstance(value, (int, float)):
                return float(value)
        return None

    def default_passage_weight(self, phrase: str | None = None) -> float | None:
        """The λ a search for ``phrase`` applies when the request gives none: the model's for that
        phrase (``ModelInfo.passage_weight_for``), else as info() reports it (None when the index
        does not say)."""
        weight_for = getattr(self.index, "passage_weight_for", None)  # an index may not know phrases
        if phrase is not None and weight_for is not None:
            return float(weight_for(phrase))
        if self._info is None:
            self.info()
        assert self._info is not None
        model = self._info.get("model")
        value = model.get("passage_weight") if isinstance(model, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    def applied(self, query: SearchQuery) -> SearchQuery:
        """The query with the threshold and λ it is answered with, not the ones sent (None: the
        defaults): a cursor's query key and a cached result set are then the same whether a client
        leaves them out or sends back what a response said was applied."""
        return replace(
            query,
            threshold=query.threshold if query.threshold is not None else self.default_threshold(query.type),
            passage_weight=(
                query.passage_weight if query.passage_weight is not None else self.default_passage_weight(query.type)
            ),
        )

    def vector_digest(self, phrase: str) -> str | None:
        """A digest of the type vector ``phrase`` is searched with (the encoder's cache serves the
        search after it), or None for an index that does not embed phrases."""
        embed = getattr(self.index, "embed", None)
        if embed is None or not phrase:
            return None
        return hashlib.sha256(np.ascontiguousarray(embed([phrase]), dtype=np.float32).tobytes()).hexdigest()[:16]

    def top(self, query: SearchQuery, limit: int) -> list[Hit]:
        return list(
            self.index.search(
                query.type,
                filters=query.filter_dict() or None,
                text=query.text,
                limit=limit,
                min_similarity=query.threshold,
                passage_weight=query.passage_weight,  # None: the model's λ
            )
        )

    def store_key(self) -> str:
        """The store's version now, hashed: read on every request that uses result sets, so that
        indexing while the service runs is seen at once (one cheap query, see Store.version)."""
        return version_key(self.index.version())

    def result_set(self, query: SearchQuery, store_key: str, *, strict: bool = True) -> list[Hit]:
        """Every match of the query, best first; cached for cursor paging and facets while the
        store stays at the version ``store_key`` was read from. The search reads its own snapshot,
        later than ``store_key``: one that a write reached first is not cached under that version
        (:class:`IndexChanged`), since a cursor of the old version would page it (an audit).
        ``strict`` False: the store is being written to all the time; computed, not cached, not checked."""

        def compute() -> list[Hit]:
            try:
                hits = list(
                    self.index.search(
                        query.type,
                        filters=query.filter_dict() or None,
                        text=query.text,
                        min_similarity=query.threshold,
                        exhaustive=True,
                        passage_weight=query.passage_weight,  # None: the model's λ
                    )
                )
            except UnsupportedSearchError as exc:  # said in the service's words, not the CLI's --all (an audit)
                raise UnsupportedSearchError(
                    f"this request reads every matching passage (all: true, facets, Elastic Search UI), which "
                    f"this store cannot: {exc}. Top-k searches (no all, no facets) work") from exc
            if strict and self.store_key() != store_key:
                raise IndexChanged("the index changed while the search ran")
            return hits

        return self.cache.get(store_key, query.key(), compute) if strict else compute()

    def at_one_version(self, answer: Callable[[str, bool], T]) -> T:
        """``answer(store_key, strict)`` with every read it makes from that one store version: a
        top-k search, a result set and a facet's second result set each read their own snapshot,
        and a write between them mixed two states in one response (hits fewer than their total,
        facets of the newer state: an audit). Answered again at the new version when a write
        landed, up to :data:`VERSION_TRIES` times; a cursor of the old version is then stale (409).
        A store written to all the time (an index being loaded) moves under every try: then the
        answer is given from the latest reads, ``strict`` False (a 503 there made facets and Search
        UI unusable while indexing, a review), and a cursor is refused as stale."""
        for _ in range(VERSION_TRIES):
            key = self.store_key()
            try:
                result = answer(key, True)
            except IndexChanged:
                continue
            if self.store_key() == key:
                return result
        return answer(self.store_key(), False)

    def search(self, body: SearchBody) -> dict[str, Any]:
        started = time.perf_counter()
        query = self.applied(SearchQuery.build(
            body.type, threshold=body.threshold, filters=body.filters, text=body.text, passage_weight=body.passage_weight
        ))  # fmt: skip
        paged = body.all or body.cursor is not None
        if paged or body.facets:
            answer = self.at_one_version(lambda store_key, strict: self._paged(query, body, store_key, strict))
        else:  # one top-k search: one snapshot
            answer = {"hits": self.top(query, body.limit), "total": None, "next_cursor": None, "facets": None}
        return {
            "type": query.type,
            "threshold": query.threshold,
            "passage_weight": query.passage_weight,
            **answer,
            "hits": [h.to_dict() for h in answer["hits"]],
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    def _paged(self, query: SearchQuery, body: SearchBody, store_key: str, strict: bool) -> dict[str, Any]:
        """The hits, total, cursor and facets of a request that reads the result set (``all``, a
        cursor, or facets), at the store version ``store_key`` (``strict``: see :meth:`at_one_version`)."""
        next_cursor: str | None = None
        # Facets only add counts: without "all" or a cursor the hits are the top-k search's, which also
        # ranks passages through candidate spans alone (not in the result set: see Store.search).
        paged = body.all or body.cursor is not None
        page = [] if paged else self.top(query, body.limit)
        # not strict: the store moves under every read, so no page can be told to follow the cursor's (409)
        vector = self.vector_digest(query.type) if paged else None  # what a cursor is bound to besides the key
        offset = decode_cursor(body.cursor, query.key(), store_key if strict else "", vector) if body.cursor else 0
        hits = self.result_set(query, store_key, strict=strict)
        if paged:
            page = hits[offset : offset + body.limit]
            if offset + body.limit < len(hits):
                next_cursor = encode_cursor(query.key(), offset + body.limit, store_key, vector)
        facets = facet_counts(hits, keep=is_metadata_filter_key) if body.facets else None  # those a client can filter on
        return {"hits": page, "total": len(hits), "next_cursor": next_cursor, "facets": facets}

    def embed(self, phrases: list[str]) -> dict[str, Any]:
        """Phrase vectors, with the model that made them: the encoder's, read without the store
        (the route runs off the search pool, and a hung store held it: an audit)."""
        from ..api import model_info

        vectors = np.asarray(self.index.embed(phrases), dtype=np.float32)
        return {
            "model": model_summary({"model": model_info(self.index.encoder)}),
            "dims": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "phrases": phrases,
            # what a search for each applies (this service's --threshold, else the model's rule)
            "thresholds": [self.default_threshold(p) for p in phrases],
            "passage_weights": [self.default_passage_weight(p) for p in phrases],
            "vectors": [[round(float(x), 7) for x in row] for row in vectors],
        }

    def searchui_search(self, plan: searchui.SearchPlan) -> dict[str, Any]:
        if not plan.search_term:
            return searchui.response_state(plan, [], facets={})
        return self.at_one_version(lambda store_key, strict: self._searchui_answer(plan, store_key, strict))

    def _searchui_answer(self, plan: searchui.SearchPlan, store_key: str, strict: bool) -> dict[str, Any]:
        """A Search UI response at the store version ``store_key``: the hits and each disjunctive
        facet's counts (a result set of its own) from that one version."""
        query, post = plan.split(threshold=self.threshold)
        hits = searchui.apply_filters(self.result_set(self.applied(query), store_key, strict=strict), post)
        facets = {}
        for spec in plan.facets:
            base = hits
            if spec.field in plan.disjunctive and any(f.field == spec.field for f in plan.filters):
                other_query, other_post = plan.split(excluding=spec.field, threshold=self.threshold)
                base = searchui.apply_filters(
                    self.result_set(self.applied(other_query), store_key, strict=strict), other_post)
            facets[spec.field] = searchui.facet_state(spec, base)
        return searchui.response_state(plan, hits, facets=facets)

    def searchui_autocomplete(self, plan: searchui.AutocompletePlan) -> dict[str, Any]:
        suggestions = searchui.suggest_types(self.catalog(), plan.search_term, size=plan.size)
        hits: list[Hit] = []
        wants_hits = plan.results_size is not None or plan.result_types
        if wants_hits and not is_blank(plan.search_term):  # "..." or a zero-width space while typing: no 400
            query = SearchQuery.build(plan.search_term, threshold=self.threshold)
            hits = self._marked_top(query, max(plan.results_size or 0, plan.size))
        return searchui.autocomplete_state(plan, suggestions=suggestions, hits=hits)

    def _marked_top(self, query: SearchQuery, wanted: int) -> list[Hit]:
        """The first ``wanted`` hits with a marked mention, in the search's order (what Search UI's
        search returns first): hits ranked by a candidate alone are left out, so where twice as many
        top hits hold too few marked ones (an audit: 1 result of 5 for an unseen type), the ``--all``
        set is read, the one Search UI's search then pages (the same cached set; a review: widening
        the top hits step by step cost up to nine searches a keystroke)."""
        size = min(2 * wanted, self.limits.max_page_size)
        hits = self.top(query, size)
        marked = [h for h in hits if h.spans]
        if len(marked) >= wanted or len(hits) < size:
            return marked[:wanted]
        applied = self.applied(query)
        return self.at_one_version(lambda key, strict: self.result_set(applied, key, strict=strict))[:wanted]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def default_workers() -> int:
    """Search threads: as many as cores. Embedded search is a numpy product that already uses every
    core, so more threads only thrash (on 2 cores, 4 threads served ~40% fewer requests/s than 2);
    an Elasticsearch backend waits on the network and gains from ``--workers`` above this. Cores
    this process may use (``runtime.usable_cores``, its CPU affinity), not the machine's."""
    return max(2, min(8, usable_cores()))


@functools.lru_cache(maxsize=1)
def service_version() -> str:
    """The installed nerindex version (what /api/v1/info and the OpenAPI description report)."""
    try:
        from importlib.metadata import version

        return version("nerindex")
    except Exception:  # not installed (running from a checkout): say so rather than name a release
        return "0+unknown"
