"""Adapter for Elastic Search UI's ``ApiProxyConnector``: its requests in, its response state out.

``@elastic/search-ui-elasticsearch-connector`` ships ``ApiProxyConnector``, which POSTs
``{"state": RequestState, "queryConfig": QueryConfig}`` to ``<basePath>/search`` and
``<basePath>/autocomplete`` and expects the connector's *output* back: a Search UI
``ResponseState`` (``results``, ``totalResults``, ``facets``, paging numbers) and an
``AutocompleteResponseState``. Everything here is a pure function of those JSON bodies, so the
mapping is tested table-driven without a model or a server.

Mapping (documented in docs/web.md):

- ``searchTerm`` is the entity type phrase; an empty term answers an empty result.
- Filters ``{field, type: any|all|none, values}`` on metadata fields. The first ``any`` (or
  one-value ``all``) filter on a field is pushed down to the store; every other filter is
  applied to the exhaustive result set in Python, so all three types are honoured exactly.
  Range values are refused (400).
- ``current``/``resultsPerPage`` page through *all* matches; ``totalResults`` is exact.
- Value facets count metadata values over the matches (disjunctive facets ignore their own
  filters); range facets are not supported and are left out.
- Each result carries ``id``, ``text`` (raw, and ``snippet``: the escaped passage with the
  matching mentions in ``<em>``), ``score``, ``mentions``, ``spans`` and every metadata field.
  Search UI renders ``snippet`` as HTML, so the passage text is always escaped first.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import SearchError
from ..records import Hit, SpanMatch, marked_spans
from ..stores.filter_rules import Filters, filter_key_problem, is_metadata_filter_key
from ..stores.filters import field_matches
from ..text import phrase_as_searched
from .resultsets import Scalar, SearchQuery, facet_counts, value_order

FILTER_TYPES = ("any", "all", "none")
DEFAULT_PAGE_SIZE = 20
DEFAULT_FACET_SIZE = 20
DEFAULT_SUGGESTIONS = 5


@dataclass(frozen=True)
class FieldFilter:
    """One Search UI filter on a metadata field."""

    field: str
    type: str
    values: tuple[Scalar, ...]

    @property
    def pushable(self) -> bool:
        """Whether the store can apply it (``any``, or ``all`` with one value); the others are
        applied to the hits' metadata here."""
        return self.type == "any" or (self.type == "all" and len(self.values) == 1)

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """Whether a passage's metadata passes this filter (a list-valued field holds each value),
        by the store's own rule (``stores.filters.field_matches``): a filter sent to the store and
        one applied here never disagree."""
        stored = fields.get(self.field)
        held = stored if isinstance(stored, list) else [stored] if stored is not None else []

        def has(value: Scalar) -> bool:
            return any(field_matches(value, h) for h in held)

        if self.type == "any":
            return any(has(v) for v in self.values)
        if self.type == "all":
            return all(has(v) for v in self.values)
        return not any(has(v) for v in self.values)


@dataclass(frozen=True)
class FacetSpec:
    field: str
    size: int
    sort: str  # "count" or "value"


@dataclass(frozen=True)
class SearchPlan:
    """A parsed Search UI search request."""

    search_term: str
    filters: tuple[FieldFilter, ...]
    page: int
    size: int
    facets: tuple[FacetSpec, ...]
    disjunctive: frozenset[str]
    result_fields: frozenset[str] | None

    def split(
        self, *, excluding: str | None = None, threshold: float | None = None
    ) -> tuple[SearchQuery, tuple[FieldFilter, ...]]:
        """The store query (filters pushed down) and the filters left to apply in Python.

        ``excluding`` drops every filter on that field (disjunctive facet counts). Search UI has no
        notion of a threshold: ``threshold`` is the server's default (None: the model's).
        """
        pushed: dict[str, list[Scalar]] = {}
        post: list[FieldFilter] = []
        for f in self.filters:
            if f.field == excluding:
                continue
            if f.pushable and f.field not in pushed:
                pushed[f.field] = list(f.values)
            else:
                post.append(f)
        query = SearchQuery.build(self.search_term, threshold=threshold, filters=pushed)
        return query, tuple(post)


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SearchError(f"{what} must be a JSON object")
    return value


# Search UI's RequestState keys: ApiProxyConnector sends them inside "state", never beside it
STATE_KEYS = ("searchTerm", "filters", "current", "resultsPerPage", "sortField", "sortDirection", "sortList")


def _request_state(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body's ``state``. Unknown keys are ignored for Search UI's sake, but a request-state key
    beside ``state`` is refused: ignored, ``{"searchTerm": "river"}`` was answered as an empty search
    (``wasSearched`` false), which reads as "no matches" to a hand-written client."""
    misplaced = [k for k in STATE_KEYS if k in body]
    if misplaced:
        raise SearchError(f"{', '.join(misplaced)} belongs inside \"state\" "
                          '(the body is {"state": {"searchTerm": ...}, "queryConfig": {...}})')
    return _as_dict(body.get("state"), "state")


def _positive_int(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1 or value != int(value):
        raise SearchError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_value_count(field: str, count: int, limit: int) -> None:
    """A filter of more than ``limit`` values is refused, on both search endpoints (/api/v1/search
    and Search UI's /api/search, which took any number: an audit)."""
    if count > limit:
        raise SearchError(f"filter on {field!r}: {count} values; the limit is {limit}")


def parse_filters(raw: Any, *, max_values: int = 100) -> list[FieldFilter]:
    """Search UI filters → FieldFilters; refuses shapes nerindex cannot answer exactly, and more
    than ``max_values`` values in one filter (the JSON API's limit: a ``none`` filter is applied
    here to every hit, and two requests of 27,000 values held the service's workers for 40 s, the
    other searches timed out meanwhile: an audit)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SearchError("filters must be a list of {field, type, values}")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("field"), str) or not item["field"]:
            raise SearchError("each filter needs a 'field' name")
        ftype = item.get("type") or "all"
        if ftype not in FILTER_TYPES:
            raise SearchError(f"filter type {ftype!r} on {item['field']!r}: use any, all or none")
        values = item.get("values")
        if not isinstance(values, list):
            raise SearchError(f"filter on {item['field']!r}: 'values' must be a list")
        check_value_count(item["field"], len(values), max_values)
        for v in values:
            if isinstance(v, dict):
                raise SearchError(
                    f"filter on {item['field']!r}: range filters are not supported by nerindex; "
                    "filter by exact metadata values"
                )
        # one rule for every filter type: a "none" or many-valued "all" filter is applied here to
        # the hits' metadata, where a field no store would take (or a span field) silently matched
        # nothing and so filtered nothing out, and a value none would take (a string starting with
        # a type mark) matched a stored number
        problem = filter_key_problem(item["field"])
        if problem:
            raise SearchError(problem)
        # the values, by the stores' rule; no values is refused there, as the JSON API does (an
        # audit: "any of no values" was no filter, every passage)
        Filters.of({item["field"]: values})
        flt = FieldFilter(item["field"], ftype, tuple(values))
        if flt.field.startswith("spans.") and not flt.pushable:
            raise SearchError(f"filter on {flt.field!r}: a span filter takes type any, or all with one value")
        out.append(flt)
    return out


RELEVANCE = ("", "score", "_score")  # Search UI's names for the one order nerindex answers in


def _check_sort(state: Mapping[str, Any]) -> None:
    """Refuse a sort other than by relevance, best first (a 400, as range filters): Search UI's
    Sorting component was answered in relevance order as if it had been applied (an audit)."""
    orders = [(state.get("sortField") or "", state.get("sortDirection") or "")]
    sort_list = state.get("sortList") or []
    if not isinstance(sort_list, list) or not all(isinstance(s, dict) for s in sort_list):
        raise SearchError("sortList must be a list of {field, direction}")
    orders += [(s.get("field") or "", s.get("direction") or "") for s in sort_list]
    for field, direction in orders:
        if field not in RELEVANCE or direction not in ("", "desc"):
            raise SearchError(
                f"sorting by {field or 'score'!s} {direction or 'desc'} is not supported: nerindex returns matches "
                "by relevance, best first (sortField score, sortDirection desc)")


def parse_search(
    body: Mapping[str, Any],
    *,
    max_page_size: int,
    max_phrase_chars: int,
    max_filters: int = 32,
    max_filter_values: int = 100,
) -> SearchPlan:
    """The body ApiProxyConnector posts to /search → a SearchPlan (SearchError when malformed).
    Facets are at most ``max_filters`` fields, as filters are: each is counted over every match."""
    state = _request_state(body)
    config = _as_dict(body.get("queryConfig"), "queryConfig")
    term = _search_term(state, max_phrase_chars)
    filters = (parse_filters(config.get("filters"), max_values=max_filter_values)
               + parse_filters(state.get("filters"), max_values=max_filter_values))
    if len(filters) > max_filters:
        raise SearchError(f"{len(filters)} filters; the limit is {max_filters}")
    span_fields = [f.field for f in filters if f.field.startswith("spans.")]
    if len(span_fields) != len(set(span_fields)):  # a second one would be applied to the metadata
        raise SearchError("one filter per span field (list the values of one any filter instead)")
    per_page = state.get("resultsPerPage")
    if per_page is None:
        per_page = config.get("resultsPerPage")
    # left out: the default, or the page size limit where that is lower (as /api/v1/search)
    size = _positive_int(per_page, "resultsPerPage", min(DEFAULT_PAGE_SIZE, max_page_size))
    if size > max_page_size:
        raise SearchError(f"resultsPerPage {size} is above the limit of {max_page_size}")
    page = _positive_int(state.get("current"), "current", 1)
    _check_sort(state)
    facets = []
    asked = _as_dict(config.get("facets"), "queryConfig.facets")
    if len(asked) > max_filters:  # 18,000 facet names took 2.5 s of a worker (an audit)
        raise SearchError(f"{len(asked)} facets; the limit is {max_filters}")
    for name, spec in asked.items():
        spec = _as_dict(spec, f"facet {name!r}")
        if spec.get("type", "value") != "value":
            continue  # range and geo facets have no nerindex equivalent
        sort = spec.get("sort") or "count"
        if sort not in ("count", "value"):  # was answered by count as if asked for (an audit)
            raise SearchError(f"facet {name!r}: sort {sort!r} is not supported; use count or value")
        if not is_metadata_filter_key(name):
            continue  # no filter takes it, so no facet is offered for it (as the JSON API leaves it out)
        facets.append(FacetSpec(name, _positive_int(spec.get("size"), "facet size", DEFAULT_FACET_SIZE), sort))
    disjunctive = config.get("disjunctiveFacets") or []
    if not isinstance(disjunctive, list):
        raise SearchError("disjunctiveFacets must be a list of field names")
    result_fields = config.get("result_fields")
    return SearchPlan(
        search_term=term,
        filters=tuple(filters),
        page=page,
        size=size,
        facets=tuple(facets),
        disjunctive=frozenset(str(d) for d in disjunctive),
        result_fields=frozenset(result_fields) if isinstance(result_fields, dict) and result_fields else None,
    )


def apply_filters(hits: Iterable[Hit], filters: Sequence[FieldFilter]) -> list[Hit]:
    """The hits whose metadata passes every filter, order kept."""
    if not filters:
        return list(hits)
    return [h for h in hits if all(f.matches(h.fields) for f in filters)]


def highlight_html(text: str, spans: Sequence[SpanMatch], *, tag: str = "em") -> str:
    """The passage as escaped HTML with each matching mention wrapped in ``<tag>``.

    Offsets are characters of the original text; out-of-range spans are skipped, and of spans that
    overlap (nested decoding) the most similar is marked (``records.marked_spans``).
    """
    out, pos = [], 0
    for span in sorted(marked_spans(spans), key=lambda s: s.start):
        if span.end > len(text) or span.start >= span.end:
            continue
        out.append(html.escape(text[pos : span.start]))
        out.append(f"<{tag}>{html.escape(text[span.start : span.end])}</{tag}>")
        pos = span.end
    out.append(html.escape(text[pos:]))
    return "".join(out)


# a result's own fields; a metadata field of one of these names is given as ``fields.<name>``
HIT_FIELDS = frozenset({"id", "_meta", "text", "score", "mentions", "spans", "ranked_by"})


def search_result(hit: Hit, *, result_fields: frozenset[str] | None = None) -> dict[str, Any]:
    """One hit as a Search UI result: ``{field: {raw, snippet?}}`` plus ``id`` and ``_meta``.

    Every metadata field is there, under its own name or, where a result field has that name, as
    ``fields.<name>`` (they used to overwrite each other: an audit); so is one whose name begins
    with ``fields.``, which keeps the renaming one to one (a metadata ``fields.score`` beside a
    ``score`` was lost: an audit)."""
    source: dict[str, Any] = {(f"fields.{k}" if k in HIT_FIELDS or k.startswith("fields.") else k): v
                              for k, v in hit.fields.items()}
    source.update(
        {
            "text": hit.text,
            "score": round(float(hit.score), 6),
            "mentions": [s.text for s in hit.spans],
            "spans": [s.to_dict() for s in hit.spans],
            "ranked_by": None if hit.ranked_by is None else hit.ranked_by.to_dict(),
        }
    )
    result: dict[str, Any] = {}
    for name, value in source.items():
        if result_fields is None or name in result_fields:
            result[name] = {"raw": value}
    if "text" in result:
        result["text"]["snippet"] = highlight_html(hit.text, hit.spans)
    result["id"] = {"raw": hit.id}
    result["_meta"] = {"id": hit.id, "rawHit": {"_id": hit.id, "_score": source["score"], "_source": source}}
    return result


def facet_state(spec: FacetSpec, hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """A value facet in Search UI's shape: ``[{field, type: "value", data: [{value, count}]}]``."""
    counts = facet_counts(hits, fields=[spec.field], size=10**9)[spec.field]
    if spec.sort == "value":
        counts.sort(key=lambda d: value_order(d["value"]))
    return [{"field": spec.field, "type": "value", "data": counts[: spec.size]}]


def response_state(
    plan: SearchPlan,
    hits: Sequence[Hit],
    *,
    facets: Mapping[str, list[dict[str, Any]]] | None = None,
    request_id: str = "",
) -> dict[str, Any]:
    """Search UI's ResponseState for one page of an exhaustive, filtered result set."""
    total = len(hits)
    start = (plan.page - 1) * plan.size
    page_hits = hits[start : start + plan.size]
    return {
        "requestId": request_id,
        "resultSearchTerm": plan.search_term,
        "totalResults": total,
        "totalPages": math.ceil(total / plan.size) if total else 0,
        "pagingStart": start + 1 if total and page_hits else 0,
        "pagingEnd": start + len(page_hits) if page_hits else 0,  # past the last page: nothing shown
        "wasSearched": False,
        "results": [search_result(h, result_fields=plan.result_fields) for h in page_hits],
        "facets": dict(facets or {}),
        "rawResponse": None,
    }


@dataclass(frozen=True)
class AutocompletePlan:
    """A parsed autocomplete request: what to suggest and how many."""

    search_term: str
    results_size: int | None  # None: no result autocomplete asked for
    results_fields: frozenset[str] | None
    suggestion_types: tuple[str, ...]  # names of catalog suggestion sections
    result_types: tuple[tuple[str, frozenset[str] | None], ...]  # names of result sections
    size: int


def _search_term(state: Mapping[str, Any], max_phrase_chars: int) -> str:
    """The ``searchTerm`` of a Search UI state as searched (:func:`~indexer.text.phrase_as_searched`),
    checked for type and length."""
    term = state.get("searchTerm")
    term = "" if term is None else term
    if not isinstance(term, str):  # 0 and false were read as an empty term (an audit)
        raise SearchError("searchTerm must be a string")
    term = phrase_as_searched(term)  # measured as searched, as every surface measures it (an audit)
    if len(term) > max_phrase_chars:
        raise SearchError(f"searchTerm is {len(term)} characters; the limit is {max_phrase_chars}")
    return term


def parse_autocomplete(body: Mapping[str, Any], *, max_phrase_chars: int, max_page_size: int) -> AutocompletePlan:
    """The body ApiProxyConnector posts to /autocomplete → an AutocompletePlan."""
    state = _request_state(body)
    config = _as_dict(body.get("queryConfig"), "queryConfig")
    term = _search_term(state, max_phrase_chars)
    suggestions = _as_dict(config.get("suggestions"), "queryConfig.suggestions")
    size = min(_positive_int(suggestions.get("size"), "suggestions.size", DEFAULT_SUGGESTIONS), max_page_size)
    results_size, results_fields = None, None
    if config.get("results") is not None:
        results = _as_dict(config.get("results"), "queryConfig.results")
        results_size = _positive_int(results.get("resultsPerPage"), "resultsPerPage", min(size, max_page_size))
        if results_size > max_page_size:  # refused as /api/search refuses it, not cut (an audit)
            raise SearchError(f"resultsPerPage {results_size} is above the limit of {max_page_size}")
        rf = results.get("result_fields")
        results_fields = frozenset(rf) if isinstance(rf, dict) and rf else None
    catalog_types, result_types = [], []
    for name, spec in _as_dict(suggestions.get("types"), "suggestions.types").items():
        spec = _as_dict(spec, f"suggestion type {name!r}")
        if spec.get("queryType") == "results":
            rf = spec.get("result_fields")
            result_types.append((name, frozenset(rf) if isinstance(rf, dict) and rf else None))
        else:
            catalog_types.append(name)
    return AutocompletePlan(term, results_size, results_fields, tuple(catalog_types), tuple(result_types), size)


def suggest_types(catalog: Sequence[str], term: str, *, size: int) -> list[str]:
    """Catalog phrases for a partly typed type: prefix matches first, then word and substring matches."""
    needle = term.strip().lower()
    if not needle:
        return list(catalog[:size])
    prefix, word, inner = [], [], []
    for phrase in catalog:
        low = phrase.lower()
        if low.startswith(needle):
            prefix.append(phrase)
        elif any(w.startswith(needle) for w in low.split()):
            word.append(phrase)
        elif needle in low:
            inner.append(phrase)
    return (prefix + word + inner)[:size]


def autocomplete_state(
    plan: AutocompletePlan,
    *,
    suggestions: Sequence[str],
    hits: Sequence[Hit] = (),
) -> dict[str, Any]:
    """Search UI's AutocompleteResponseState from catalog suggestions and (optional) top hits.

    Only hits with a marked mention are results: the passages Search UI's search returns for the
    term (the ``--all`` set), so a result offered here is on the results page too. A top-k hit
    ranked by a candidate span alone had been offered here and then missing there (an audit)."""
    hits = [h for h in hits if h.spans]
    sections: dict[str, list[dict[str, Any]]] = {}
    for name in plan.suggestion_types:
        # No "highlight": Search UI renders it as HTML; the plain suggestion is rendered as text.
        sections[name] = [{"suggestion": s} for s in suggestions]
    for name, fields in plan.result_types:
        sections[name] = [
            {"queryType": "results", "result": search_result(h, result_fields=fields)}
            for h in hits[: plan.size]
        ]
    results = []
    if plan.results_size is not None:
        results = [search_result(h, result_fields=plan.results_fields) for h in hits[: plan.results_size]]
    return {
        "autocompletedResults": results,
        "autocompletedResultsRequestId": "",
        "autocompletedSuggestions": sections,
        "autocompletedSuggestionsRequestId": "",
    }
