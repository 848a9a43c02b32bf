"""Pure parsers of Elasticsearch responses into nerindex records (tested on documented shapes).

Search hits become :class:`~indexer.records.Hit` scored by the ``inner_hits`` named ``best_span``
and marked with those named ``spans`` (the matching mentions); bulk items become
:class:`~indexer.stores.base.WriteOutcome` (failures stay data, as in elasticsearch-py's helpers);
index ``_meta`` becomes the :class:`~indexer.stores.base.ModelStamp` the model guard compares.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from typing import Any, Iterable, Literal, Mapping, Sequence

from ...errors import SearchError, StoreError
from ...records import Hit, SpanMatch
from ..base import ModelStamp, StoreCounts, StoreVersion, WriteOutcome, same_model
from .index_requests import TYPES_SUFFIX, is_versioned_index
from .search_requests import BEST_SPAN_INNER_HITS, INNER_HITS_NAME, PASSAGE_MISSING_QUERY, PASSAGE_QUERY
from .similarity import (
    combined_from_hybrid_score,
    combined_from_knn_scores,
    cosine_from_knn_score,
    cosine_from_script_score,
)

Scoring = Literal["knn", "script"]
# Scores travel as float32; a span exactly at the threshold must not be lost to rounding.
THRESHOLD_TOLERANCE = 1e-6


# --- search -------------------------------------------------------------------------------------


def _first(values: Any, default: Any = None) -> Any:
    if isinstance(values, list):
        return values[0] if values else default
    return default if values is None else values


def span_fields(inner_hit: Mapping[str, Any]) -> dict[str, Any]:
    """start/end/text/labels/mention of one inner hit, from the fields API or from ``_source``.

    The fields API (what nerindex asks for) returns ``{"spans": [{"start": [3], ...}]}``;
    a client asking for ``_source`` instead gets the nested object, with or without its path.
    """
    fields = inner_hit.get("fields") or {}
    nested = fields.get("spans")
    if isinstance(nested, list) and nested:
        obj = nested[0]
        return {
            "start": _first(obj.get("start")),
            "end": _first(obj.get("end")),
            "text": _first(obj.get("text"), ""),
            "labels": list(obj.get("labels") or []),
            "mention": _first(obj.get("mention")),
        }
    source = inner_hit.get("_source") or {}
    if isinstance(source.get("spans"), Mapping):
        source = source["spans"]
    labels = source.get("labels") or []
    return {
        "start": source.get("start"),
        "end": source.get("end"),
        "text": source.get("text", ""),
        "labels": [labels] if isinstance(labels, str) else list(labels),
        "mention": source.get("mention"),
    }


def _cosine(score: float, scoring: Scoring, metric: str) -> float:
    if scoring == "script":
        return cosine_from_script_score(score)
    return cosine_from_knn_score(score, metric)


def span_matches(
    hit: Mapping[str, Any], *, scoring: Scoring, metric: str, min_similarity: float
) -> list[SpanMatch]:
    """The marks of one hit (its ``spans`` inner hits that pass the threshold), best first."""
    spans = []
    for inner_hit in _inner_hits(hit, INNER_HITS_NAME) or []:
        if inner_hit.get("_score") is None:
            continue
        similarity = _cosine(inner_hit["_score"], scoring, metric)
        match = _span_match(span_fields(inner_hit), similarity)
        if similarity >= min_similarity - THRESHOLD_TOLERANCE and match is not None:
            spans.append(match)
    spans.sort(key=lambda s: (-s.similarity, s.start, s.end))
    return spans


def ranking_candidate(hit: Mapping[str, Any], *, scoring: Scoring, metric: str) -> SpanMatch | None:
    """The candidate that ranked a hit (``Hit.ranked_by``): its ``best_span`` inner hit, where
    that span's ``mention`` flag is false (a span written before the flag existed is a mention);
    None where a mention ranked it, or the inner hit came without its fields."""
    scored = [h for h in _inner_hits(hit, BEST_SPAN_INNER_HITS) or [] if h.get("_score") is not None]
    data = span_fields(scored[0]) if scored else None
    if data is None or data["mention"] is not False:
        return None
    return _span_match(data, _cosine(scored[0]["_score"], scoring, metric))


def _span_match(data: Mapping[str, Any], similarity: float) -> SpanMatch | None:
    if data["start"] is None or data["end"] is None:
        return None
    return SpanMatch(start=int(data["start"]), end=int(data["end"]), text=str(data["text"]), similarity=similarity,
                     labels=tuple(str(label) for label in data["labels"]))


def _inner_hits(hit: Mapping[str, Any], name: str) -> list[Mapping[str, Any]] | None:
    inner = (hit.get("inner_hits") or {}).get(name)
    if inner is None:
        return None
    return list((inner.get("hits") or {}).get("hits") or [])


def best_span_score(hit: Mapping[str, Any]) -> float | None:
    """The raw score of a hit's best span, mention or candidate: its best ``best_span`` inner
    hit; a response without those (a top-level kNN with one set of inner hits, as the Dev Tools
    requests of docs/elasticsearch.md) has every matching span in ``spans``. None without either."""
    inner = _inner_hits(hit, BEST_SPAN_INNER_HITS)
    if inner is None:
        inner = _inner_hits(hit, INNER_HITS_NAME)
    if inner is None:
        return None
    scores = [float(h["_score"]) for h in inner if h.get("_score") is not None]
    return max(scores) if scores else None


def combined_score(hit: Mapping[str, Any], passage_weight: float, *, scoring: Scoring, metric: str) -> float:
    """Best span cos + λ · passage cos of a hit scored with hybrid scoring.

    Exact search (``script``): the script's shifted sum. Top-k (``knn``): the span part is the
    best inner hit's score; the passage part (λ · passage kNN score) is the named passage clause's
    score in ``matched_queries`` (``include_named_queries_score``). Without it, it is ``_score``
    minus the span part, which is off where rescoring (int8) changed which span is a passage's
    best: the nested score stays that of the span the quantized search picked.
    """
    score = hit.get("_score")
    if score is None:
        raise SearchError(
            f"Elasticsearch returned hit {hit.get('_id')!r} without a _score; hybrid scoring "
            "(passage_weight) needs it"
        )
    if scoring == "script":
        return combined_from_hybrid_score(score, passage_weight)
    span_score = best_span_score(hit)
    if span_score is None:
        raise SearchError(
            f"Elasticsearch returned hit {hit.get('_id')!r} without scored spans; hybrid scoring "
            "(passage_weight) reads the best span from the inner hits"
        )
    named = hit.get("matched_queries")
    if isinstance(named, Mapping):
        for name in (PASSAGE_QUERY, PASSAGE_MISSING_QUERY):
            if isinstance(named.get(name), (int, float)):
                return combined_from_knn_scores(span_score + named[name], span_score, passage_weight, metric)
    return combined_from_knn_scores(score, span_score, passage_weight, metric)


def parse_hit(
    hit: Mapping[str, Any],
    *,
    scoring: Scoring,
    metric: str,
    min_similarity: float,
    passage_weight: float = 0.0,
) -> Hit | None:
    """One search hit as a :class:`Hit`, or None when its best span does not pass the threshold.

    The passage score is its best span's similarity, mention or candidate (the same definition as
    the embedded store; :func:`best_span_score`); only when inner hits were not requested does the
    hit's own ``_score`` stand in. With hybrid scoring (``passage_weight`` λ > 0, the request built
    with the same λ) the score is best span cos + λ · passage cos, read back from ``_score`` and
    the inner hits (:func:`combined_score`). The marks are the mentions that pass the threshold
    (:func:`span_matches`), with their own similarities: none for a hit ranked by a candidate alone;
    a hit ranked by a candidate, marked or not, names it (:func:`ranking_candidate`).
    """
    source = hit.get("_source") or {}
    best = best_span_score(hit)
    if best is None and not passage_weight:
        best = hit.get("_score")
    if best is not None and _cosine(best, scoring, metric) < min_similarity - THRESHOLD_TOLERANCE:
        return None
    if passage_weight:
        score = combined_score(hit, passage_weight, scoring=scoring, metric=metric)
    elif best is None:
        return None
    else:
        score = _cosine(best, scoring, metric)
    return Hit(
        id=hit_id(hit),
        score=score,
        text=str(source.get("text", "")),
        fields=dict(source.get("fields") or {}),
        spans=tuple(span_matches(hit, scoring=scoring, metric=metric, min_similarity=min_similarity)),
        ranked_by=ranking_candidate(hit, scoring=scoring, metric=metric),
    )


def parse_hits(
    response: Mapping[str, Any],
    *,
    scoring: Scoring,
    metric: str,
    min_similarity: float,
    passage_weight: float = 0.0,
) -> list[Hit]:
    """Every hit of a search response that passes the threshold, in response order."""
    hits = []
    for raw in (response.get("hits") or {}).get("hits") or []:
        hit = parse_hit(
            raw, scoring=scoring, metric=metric, min_similarity=min_similarity,
            passage_weight=passage_weight,
        )
        if hit is not None:
            hits.append(hit)
    return hits


def hit_id(hit: Mapping[str, Any]) -> str:
    """The passage id of a raw hit: its ``_source`` id (the ``_id`` may be a hash of it)."""
    return str((hit.get("_source") or {}).get("id", hit.get("_id")))


def hit_versions(response: Mapping[str, Any]) -> dict[str, tuple[Any, Any, Any]]:
    """Passage id -> which version of it each hit is (its index, ``_seq_no`` and ``_primary_term``;
    a search asked with ``seq_no_primary_term``): a passage indexed again, or an alias moved to
    another index, between two requests gives another triple."""
    return {hit_id(h): (h.get("_index"), h.get("_seq_no"), h.get("_primary_term")) for h in raw_hits(response)}


def cut_marks(response: Mapping[str, Any]) -> dict[str, int]:
    """Passage id -> how many marks it has, for each hit of a response that carries fewer (its
    ``spans`` inner hits' ``total`` over the hits they hold: the inner hits' ``size``)."""
    out = {}
    for hit in raw_hits(response):
        inner = ((hit.get("inner_hits") or {}).get(INNER_HITS_NAME) or {}).get("hits") or {}
        total = (inner.get("total") or {}).get("value")
        if isinstance(total, int) and total > len(inner.get("hits") or []):
            out[hit_id(hit)] = total
    return out


def inner_hits_window(error: Any) -> int | None:
    """The ``index.max_inner_result_window`` an Elasticsearch refusal names ("... must be less than
    or equal to: [100] but was [150] ..."), or None for any other error."""
    found = re.search(r"less than or equal to: \[(\d+)\].*?max_inner_result_window", str(error), re.S)
    return int(found.group(1)) if found else None


def rank(hits: Sequence[Hit]) -> list[Hit]:
    """Best first by passage score (the best span, or the combined score under hybrid scoring),
    ties in Elasticsearch's order: its stable document order, the one in which it cut the fetched
    window, so a larger limit extends a smaller one's answer. Ties by id (before an audit) kept the
    window's tied passages but not the ones cut at its edge: ``limit`` 2 and 3 began with different
    passages, and a client paging by a growing limit saw two passages five times. The order of
    writing in an index written once, as the embedded store's (insertion); after Lucene merges
    segments, or an ``es reindex`` (which copies in id order), another (a review)."""
    return sorted(hits, key=lambda h: -h.score)


def raw_hits(response: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((response.get("hits") or {}).get("hits") or [])


def msearch_hits(response: Mapping[str, Any], what: str = "search") -> list[list[Mapping[str, Any]]]:
    """The raw hits of each search of an ``msearch``, in order. A search that failed answers with
    an error object where its hits would be, inside a 200 response; read as no hits, a failed
    bound search passed as "the pool holds every match" (a review), so it raises instead."""
    found = []
    for item in response.get("responses") or []:
        if "error" in item:  # as translated_errors: a bad request is the query's, the rest the store's
            error = SearchError if item.get("status") == 400 else StoreError
            raise error(f"Elasticsearch failed one search of a multi-search to {what}: "
                        f"{error_message(item['error'], item.get('status'))}")
        found.append(raw_hits(item))
    return found


def msearch_totals(response: Mapping[str, Any]) -> list[int | None]:
    """The hit count of each search of an ``msearch`` that tracked it (None where it did not)."""
    return [((item.get("hits") or {}).get("total") or {}).get("value") for item in response.get("responses") or []]


def last_sort_values(response: Mapping[str, Any]) -> list[Any] | None:
    """``search_after`` for the next page: the sort values of the last hit (None when empty)."""
    hits = raw_hits(response)
    return list(hits[-1]["sort"]) if hits and "sort" in hits[-1] else None


# --- bulk ---------------------------------------------------------------------------------------


def error_message(error: Any, status: int | None = None) -> str:
    """A one-line reason from an Elasticsearch error object (or the string the helpers put there)."""
    if isinstance(error, Mapping):
        kind = error.get("type", "error")
        reason = error.get("reason") or ""
        text = f"{kind}: {reason}" if reason else str(kind)
        cause = error.get("caused_by")
        if isinstance(cause, Mapping) and cause.get("reason"):
            text += f" (caused by {cause.get('type', 'error')}: {cause['reason']})"
    else:
        text = str(error) if error is not None else "unknown error"
    return f"HTTP {status}: {text}" if status is not None else text


def parse_bulk_item(info: Mapping[str, Any]) -> tuple[str | None, bool, str, str | None]:
    """(``_id``, ok, action, error) of one ``streaming_bulk`` result ``{op_type: item}``."""
    if not info:
        return None, False, "failed", "empty bulk item"
    op_type, item = next(iter(info.items()))
    status = item.get("status")
    ok = status is not None and 200 <= int(status) < 300 and "error" not in item
    doc_id = item.get("_id")
    if op_type == "create" and status == 409:  # the id is stored already: left as it is
        return doc_id, True, "skipped", None
    if ok:
        result = item.get("result", "created")
        action = "updated" if result in ("updated", "noop") else "created"
        return doc_id, True, action, None
    return doc_id, False, "failed", error_message(item.get("error"), status)


NO_RESULT = "Elasticsearch returned no result for this document"


def bulk_outcomes(
    doc_ids: Sequence[str],
    passage_ids: Sequence[str],
    results: Iterable[tuple[bool, Mapping[str, Any]]],
) -> list[WriteOutcome]:
    """One outcome per passage, in input order, from bulk results that may come in any order.

    ``streaming_bulk`` yields retried documents (429) after the others, so results are matched
    by ``_id``; a passage the server never answered for is reported failed, not dropped.
    """
    by_id: dict[str | None, deque[tuple[bool, str, str | None]]] = defaultdict(deque)
    for _ok, info in results:
        doc_id, ok, action, error = parse_bulk_item(info)
        by_id[doc_id].append((ok, action, error))
    outcomes = []
    for doc_id, passage_id in zip(doc_ids, passage_ids, strict=True):
        queue = by_id.get(doc_id)
        ok, action, error = queue.popleft() if queue else (False, "failed", NO_RESULT)
        outcomes.append(WriteOutcome(id=passage_id, ok=ok, action=action, error=error))
    return outcomes


def count_failures(outcomes: Iterable[WriteOutcome]) -> int:
    return sum(1 for outcome in outcomes if not outcome.ok)


# --- index metadata -----------------------------------------------------------------------------


def index_mapping(response: Mapping[str, Any], *, target: str) -> tuple[str, dict[str, Any]]:
    """(concrete index, its mapping) from ``GET <alias>/_mapping``; one index behind the alias."""
    indices = list(response.items())
    if not indices:
        raise StoreError(f"no index behind {target!r}")
    if len(indices) > 1:
        names = sorted(name for name, _ in indices)
        advice = ""  # with the way out (an audit: even 'es status' stopped at this line)
        if all(is_versioned_index(target, n) for n in names):  # nerindex's own, numbered:
            keep = names[-1]  # the newest is the last re-index's (another name, a types index say, is no guess)
            removes = ", ".join(f'{{"remove": {{"index": "{n}", "alias": "{target}"}}}}' for n in names[:-1])
            advice = f". To keep {keep!r}: POST _aliases {{\"actions\": [{removes}]}}"
        raise StoreError(f"{target!r} points at several indices ({', '.join(names)}); nerindex keeps its alias "
                         f"on one index{advice or ': remove it from the others (POST _aliases)'}")
    name, body = indices[0]
    return name, dict((body or {}).get("mappings") or {})


def stamp_from_meta(meta: Mapping[str, Any] | None) -> ModelStamp | None:
    """The model recorded in an index ``_meta`` by nerindex, or None when there is none."""
    model = (meta or {}).get("model")
    if not isinstance(model, Mapping):
        return None
    try:
        return ModelStamp.from_dict(model)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"index _meta has an unreadable model record: {dict(model)!r}") from exc


def mismatch_message(alias: str, index: str, stored: ModelStamp, wanted: ModelStamp, conflict: str = "") -> str:
    """What the model guard says when a run's model (or one of its stored settings) differs from
    the index's; ``conflict`` names the setting and both values (``base.check_stamp``)."""
    if conflict and same_model(stored, wanted):
        return (f"Elasticsearch index {index!r} (alias {alias!r}) was written with model {stored.describe()} and "
                f"other settings than this run's: {conflict}; spans made two ways never mix. Run with the "
                f"index's settings, or re-index it with 'nerindex es reindex' and the new ones (the alias moves "
                f"atomically), or choose another --es-index.")
    return (
        f"Elasticsearch index {index!r} (alias {alias!r}) holds vectors of model {stored.describe()}, "
        f"but this run uses {wanted.describe()}{': ' + conflict if conflict else ''}; spans made two "
        f"ways never mix. Re-index into a new index with 'nerindex es reindex --model <folder>' "
        f"(the alias moves atomically), or choose another --es-index."
    )


def not_passages(alias: str, mapping: Mapping[str, Any]) -> str | None:
    """Why the index behind ``alias`` is not one nerindex keeps passages in, or None. The types
    index (``<alias>-types``) records the same model ``_meta`` as the passages' index, so without
    this it was taken for a store: 486 "passages" and 0 spans, searches failing inside
    Elasticsearch, and an index run writing a ``-types-types`` index beside it."""
    properties = mapping.get("properties") or {}
    if "spans" in properties or stamp_from_meta(mapping.get("_meta")) is None:
        return None  # a passage index, or one nerindex did not make (refused where a model is needed)
    if "phrase" in properties and alias.endswith(TYPES_SUFFIX):
        return (f"{alias!r} is the types index of {alias[: -len(TYPES_SUFFIX)]!r} (type phrases and their vectors), "
                f"not passages: use --es-index {alias[: -len(TYPES_SUFFIX)]}")  # fmt: skip
    return f"{alias!r} records a nerindex model but holds no passages (no nested spans): choose another --es-index"


def store_version(response: Mapping[str, Any], *, target: str) -> StoreVersion:
    """The store version from ``GET <alias>/_stats/refresh?level=shards``: the concrete index's
    UUID (another index behind the alias is another store), its primaries' count of external
    refreshes, and each primary shard's Lucene commit generation and node.

    ``refresh.external_total`` moves when a refresh makes writes visible to search, which is when
    what search sees changes, and only then. It is a counter a shard keeps in memory, so it starts
    again when the index is closed and opened, its node restarts or the shard moves, and a later
    state could come back to an earlier state's number (reviews). The commit generation persists
    and grows with each of those (opening a shard commits anew) and with each flush, so the pair is
    never an earlier state's; a flush moves it with the same passages, which costs one
    recomputation. (The primary term that ``retention_leases`` reports lags up to ~30 s behind a
    reopen, a review found.) Not read: ``docs``, which a real-time GET (``existing_ids``' mget)
    moves while search still sees the old documents, and ``indexing.index_total``, which moves with
    every write, visible or not: during a load with the refresh relaxed to 30 s it moved every
    ~100 ms, so the service recomputed and refused cursors all the while (read until a review,
    December 2026)."""
    indices = dict(response.get("indices") or {})
    if len(indices) != 1:
        raise StoreError(f"{target!r} points at {len(indices)} indices; nerindex keeps its alias on one index")
    ((name, body),) = indices.items()
    refresh = (body.get("primaries") or {}).get("refresh") or {}
    primaries = sorted(
        f"{shard}:{(copy.get('commit') or {}).get('generation', '')}@{(copy.get('routing') or {}).get('node', '')}"
        for shard, copies in (body.get("shards") or {}).items()
        for copy in copies
        if (copy.get("routing") or {}).get("primary")
    )
    return StoreVersion(identity=f"{name}:{body.get('uuid', '')}", state="-".join([str(refresh.get("external_total", 0)), *primaries]))


def refresh_interval(response: Mapping[str, Any]) -> str | None:
    """The explicitly set ``index.refresh_interval`` from ``GET <index>/_settings`` (None if default)."""
    for body in response.values():
        settings = (body or {}).get("settings") or {}
        value = (settings.get("index") or {}).get("refresh_interval")
        if value is None:
            value = settings.get("index.refresh_interval")
        if value is not None:
            return str(value)
    return None


def alias_indices(response: Mapping[str, Any], alias: str) -> list[str]:
    """Concrete indices an alias points at, from ``GET _alias/<alias>``."""
    return sorted(
        name for name, body in response.items() if alias in ((body or {}).get("aliases") or {})
    )


def parse_counts(response: Mapping[str, Any]) -> StoreCounts:
    """Passages and spans from the response to :func:`~.requests.counts_body`."""
    total = (response.get("hits") or {}).get("total") or {}
    passages = total.get("value", 0) if isinstance(total, Mapping) else int(total)
    spans = ((response.get("aggregations") or {}).get("spans") or {}).get("doc_count", 0)
    return StoreCounts(passages=int(passages), spans=int(spans))


def found_sources(response: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``_id`` → ``_source`` (empty if not asked for) of the documents found, from an ``_mget``."""
    return {doc["_id"]: doc.get("_source") or {} for doc in response.get("docs") or [] if doc.get("found")}


def api_error_reason(body: Any, fallback: str = "") -> str:
    """The most specific reason in an Elasticsearch error response body."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            causes = error.get("root_cause") or []
            if causes and isinstance(causes[0], Mapping) and causes[0].get("reason"):
                cause = causes[0]
                if cause.get("reason") != error.get("reason") and error.get("reason"):
                    return f"{error.get('type')}: {error.get('reason')} ({cause.get('type')}: {cause['reason']})"
                return f"{cause.get('type')}: {cause['reason']}"
            return error_message(error)
        if isinstance(error, str):
            return error
    return fallback
