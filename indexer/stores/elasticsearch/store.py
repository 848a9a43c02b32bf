"""The Elasticsearch backend of the :class:`~indexer.stores.base.Store` protocol.

One document per passage with its spans nested inside, in a versioned index
(``<alias>-000001``) behind an alias, so that ``nerindex es reindex`` can build a new index
(e.g. with a new model) and move the alias atomically. The index ``_meta`` records the model; a
different model is refused. Search has the same semantics as the embedded store: top-level nested
kNN with ``similarity`` and inner hits for top-k (rescored with the float vectors from 8.18 on),
and an exact Painless ``script_score`` paged with a point in time for ``exhaustive`` (every match,
past the 10,000 cap of kNN; it needs the lang-painless module). Hybrid scoring
(``SearchRequest.passage_weight`` λ > 0) adds λ · cos(type, passage vector): natively for top-k
(a passage kNN next to the span kNN), in the script for ``exhaustive``; one request per page.
What the server can do (version, modules) is read once from the nodes API.

Constructing the store does no I/O; the client is created on first use.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

from ...config import DEFAULT_ES_INDEX
from ...errors import ModelMismatchError, SearchError, StoreError
from ...records import EncodedPassage, Hit
from ..base import ModelStamp, SearchRequest, StoreCounts, StoreVersion, WriteOutcome, adopted_message, check_stamp
from . import requests as rq
from . import responses as rs
from .bulk import BulkOptions, write_documents
from .client import ConnectionOptions, make_client, translated_errors

log = logging.getLogger(__name__)

MIN_SERVER = (8, 15, 0)  # similarity also filters nested inner hits from 8.15 on
# kNN filters on nested (span) fields from 9.2 on; 8.x accepts them and silently matches nothing.
SPAN_FILTER_SERVER = (9, 2, 0)
RESCORE_SERVER = (8, 18, 0)  # kNN rescore_vector (exact scores on quantized vectors) from 8.18 on
PAINLESS = "lang-painless"  # the module behind the exact search's script_score
MUSTACHE = "lang-mustache"  # the module behind search templates
SEARCH_TEMPLATE_ID = "nerindex-span-knn"


def _version_text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class StoreOptions:
    """Everything an :class:`ElasticsearchStore` needs to know, fixed at ``connect`` time."""

    connection: ConnectionOptions
    index: str = DEFAULT_ES_INDEX
    index_options: str | Mapping[str, Any] = rq.DEFAULT_INDEX_OPTIONS
    hybrid: bool = False
    text_boost: float = 0.1
    num_candidates: int | None = None
    page_size: int = 500
    keep_alive: str = "2m"
    bulk: BulkOptions = BulkOptions()
    # refresh_interval while writing ("30s" rather than "-1": a crashed load still becomes visible)
    bulk_refresh_interval: str | None = "30s"


class ElasticsearchStore:
    """Passages and their span vectors in an Elasticsearch index behind an alias."""

    def __init__(self, options: StoreOptions, *, client: Elasticsearch | None = None) -> None:
        # No I/O here (a test holds us to it): the client is built by the first call that needs it.
        self._options = options
        self._client = client
        self._owns_client = client is None
        self._facts: rs.ServerFacts | None = None
        self._stamp: ModelStamp | None = None
        self._vector_type: str | None = None  # index_options type of spans.vector, once read
        self._relaxed: tuple[str | None] | None = None  # (previous refresh_interval,) while relaxed
        self._dirty = False

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        index: str = DEFAULT_ES_INDEX,
        api_key: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        ca_certs: str | None = None,
        verify_certs: bool = True,
        index_options: str | Mapping[str, Any] = rq.DEFAULT_INDEX_OPTIONS,
        hybrid: bool = False,
        text_boost: float = 0.1,
        num_candidates: int | None = None,
        page_size: int = 500,
        request_timeout: float = 60.0,
        bulk: BulkOptions | None = None,
        bulk_refresh_interval: str | None = "30s",
        client: Elasticsearch | None = None,
    ) -> "ElasticsearchStore":
        """A store for the alias ``index`` on the cluster at ``url`` (comma-separate several nodes).

        ``index_options`` is the dense_vector index type (``int8_hnsw`` by default; ``hnsw`` keeps
        float vectors, ``bbq_hnsw`` quantises harder) or a full ``index_options`` dict.
        ``hybrid`` (BM25 boost mode; not hybrid scoring, which is ``passage_weight`` λ) adds BM25 on
        the ``text`` of a search to the vector score instead of using it as
        a restriction. ``client`` injects a ready client (tests, custom transports).
        With ``hybrid`` and a search that has both a ``text`` and a ``passage_weight`` λ > 0,
        Elasticsearch orders by span + λ · passage + BM25 and that order is kept, but ``Hit.score``
        stays the best span similarity (one returned score cannot be split into its parts).
        """
        rq.check_index_name(index)
        rq.index_options_body(index_options)  # validate early, still without I/O
        if page_size < 1:
            raise StoreError("page_size must be at least 1")
        connection = ConnectionOptions(
            url=url,
            api_key=api_key,
            basic_auth=tuple(basic_auth) if basic_auth else None,  # type: ignore[arg-type]
            ca_certs=ca_certs,
            verify_certs=verify_certs,
            request_timeout=request_timeout,
        )
        connection.hosts()
        options = StoreOptions(
            connection=connection,
            index=index,
            index_options=index_options,
            hybrid=hybrid,
            text_boost=text_boost,
            num_candidates=num_candidates,
            page_size=page_size,
            bulk=bulk or BulkOptions(),
            bulk_refresh_interval=bulk_refresh_interval,
        )
        return cls(options, client=client)

    @property
    def options(self) -> StoreOptions:
        return self._options

    @property
    def alias(self) -> str:
        """The name searches and writes go through (an alias, or a plain index made elsewhere)."""
        return self._options.index

    @property
    def client(self) -> Elasticsearch:
        """The elasticsearch-py client, created on first use."""
        if self._client is None:
            self._client = make_client(self._options.connection)
        return self._client

    def errors(self, what: str, *, search: bool = False):
        """A context that turns client errors into nerindex errors saying what was being done."""
        return translated_errors(what, url=self._options.connection.redacted_url(), search=search)

    # --- server and index facts -----------------------------------------------------------------

    def server_facts(self) -> rs.ServerFacts:
        """The cluster's version and modules (asked once, through the nodes API: ``GET /`` is
        refused by builds without the ``rest-root`` module)."""
        if self._facts is None:
            with self.errors("read the server version"):
                response = self.client.nodes.info(metric="plugins", filter_path=rq.SERVER_FACTS_FILTER)
            self._facts = rs.server_facts(response.body)
        return self._facts

    def server_version(self) -> tuple[int, int, int]:
        """The version of the oldest node of the cluster."""
        return self.server_facts().version

    def has_module(self, name: str) -> bool:
        """Whether every node has this module (or plugin); True when the nodes API lists none."""
        modules = self.server_facts().modules
        return not modules or name in modules

    def require_module(self, name: str, feature: str, *, error=StoreError) -> None:
        if not self.has_module(name):
            raise error(
                f"{feature} needs the {name} module; the server at "
                f"{self._options.connection.redacted_url()} does not have it"
            )

    def require_version(self, minimum: tuple[int, int, int], feature: str, *, error=StoreError) -> None:
        version = self.server_version()
        if version < minimum:
            raise error(
                f"{feature} needs Elasticsearch >= {_version_text(minimum)}; "
                f"the server at {self._options.connection.redacted_url()} is {_version_text(version)}"
            )

    def target(self) -> tuple[str, dict[str, Any]] | None:
        """(concrete index, its mapping) behind the alias, or None when it does not exist yet."""
        with self.errors(f"read the mapping of {self.alias!r}"):
            try:
                response = self.client.indices.get_mapping(index=self.alias)
            except NotFoundError:
                return None
        index, mapping = rs.index_mapping(response.body, target=self.alias)
        self._vector_type = rq.span_vector_index_type(mapping)
        return index, mapping

    def health(self) -> str | None:
        """``green``, ``yellow`` or ``red``: the health of the index behind the alias (None when
        there is none yet)."""
        target = self.target()
        if target is None:
            return None
        with self.errors(f"read the health of {target[0]!r}"):
            response = self.client.cluster.health(index=target[0], filter_path=["status"])
        return str(response.body.get("status"))

    def forget_index(self) -> None:
        """Drop what was read about the index behind the alias (after the alias moved)."""
        self._stamp = None
        self._vector_type = None

    def rescores(self) -> bool:
        """Whether kNN searches rescore with the float vectors (exact scores and threshold):
        the index quantizes them and the server supports ``rescore_vector``."""
        if self._vector_type is None:
            self.target()
        return rq.quantized(self._vector_type) and self.server_version() >= RESCORE_SERVER

    def model(self) -> ModelStamp | None:
        """The model recorded in the index ``_meta``, or None when the index does not exist."""
        if self._stamp is None:
            target = self.target()
            if target is None:
                return None
            self._stamp = rs.stamp_from_meta(target[1].get("_meta"))
        return self._stamp

    def check_model(self, stamp: ModelStamp, *, writing: bool = True) -> None:
        """Create the versioned index and its alias on first use; refuse any other model later
        (``base.check_stamp``); record the settings an index made by nerindex 0.2.0 lacks."""
        target = self.target()
        if target is None:
            if not writing:
                return
            self._create_index(stamp)
            target = self.target()
            if target is None:
                raise StoreError(f"index {self.alias!r} vanished right after it was created")
        index, mapping = target
        stored = rs.stamp_from_meta(mapping.get("_meta"))
        if stored is None:
            raise StoreError(
                f"Elasticsearch index {index!r} was not created by nerindex (its _meta records no "
                f"model); choose another --es-index"
            )
        check = check_stamp(stored, stamp, writing=writing)
        if check.conflict:
            raise ModelMismatchError(rs.mismatch_message(self.alias, index, stored, stamp, check.conflict))
        if check.adopted:
            with self.errors(f"record the model settings in the _meta of {index!r}"):
                self.client.indices.put_mapping(index=index, meta=rq.index_meta(check.recorded))
            log.warning(adopted_message(f"Elasticsearch index {index!r}", check))
        self._stamp = check.recorded

    def versioned_indices(self) -> list[str]:
        with self.errors("list the indices"):
            response = self.client.indices.get(
                index=f"{self.alias}-*", expand_wildcards="all", ignore_unavailable=True,
                allow_no_indices=True,
            )
        return list(response.body)

    def _create_index(self, stamp: ModelStamp) -> None:
        self.require_version(MIN_SERVER, "nerindex's nested span search")
        name = rq.next_index_name(self.alias, self.versioned_indices())
        body = rq.create_index_body(stamp, index_options=self._options.index_options, alias=self.alias)
        log.info("creating Elasticsearch index %s behind alias %s", name, self.alias)
        with self.errors(f"create index {name!r}"):
            try:
                self.client.indices.create(index=name, **body)
            except BadRequestError as exc:
                # Another process created it (with its alias, atomically) first: check_model re-reads.
                if "resource_already_exists_exception" not in str(exc.body):
                    raise
                log.info("index %s already exists; using it", name)

    def ensure_type_index(self, catalog: Any, stamp: ModelStamp) -> list[WriteOutcome] | None:
        """Create ``<alias>-types`` holding the catalog's type vectors, unless it exists (None).

        ``nerindex index`` calls it so that Kibana users can look type vectors up by phrase
        (:mod:`.type_index`).
        """
        from .type_index import TypeIndex, fill_with_catalog

        return fill_with_catalog(TypeIndex(self), catalog, stamp, only_if_new=True)

    def put_search_template(self, template_id: str = SEARCH_TEMPLATE_ID) -> str:
        """Store the search template of ``assets/mappings/`` under ``template_id`` (cluster-wide)."""
        self.require_module(MUSTACHE, "a search template")
        with self.errors(f"store the search template {template_id!r}"):
            self.client.put_script(id=template_id, **rq.search_template_body())
        return template_id

    # --- writing --------------------------------------------------------------------------------

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which passage ids are already stored (real-time: no refresh needed)."""
        wanted = {rq.document_id(pid): pid for pid in ids}
        if not wanted:
            return set()
        found: set[str] = set()
        keys = list(wanted)
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            with self.errors("look up existing passages"):
                try:
                    response = self.client.mget(index=self.alias, ids=chunk, source=False)
                except NotFoundError:
                    return set()
            found |= {wanted[doc_id] for doc_id in rs.found_ids(response.body) if doc_id in wanted}
        return found

    def write(self, docs: Sequence[EncodedPassage]) -> list[WriteOutcome]:
        """Index passages (overwriting the same ids); one outcome per passage, in input order."""
        if not docs:
            return []
        stamp = self.model()
        if stamp is None:
            raise StoreError(
                f"Elasticsearch index {self.alias!r} does not exist yet: call check_model(stamp) "
                f"before writing"
            )
        outcomes: dict[int, WriteOutcome] = {}
        sendable: list[tuple[int, EncodedPassage]] = []
        for position, doc in enumerate(docs):
            problem = rq.document_problem(doc, stamp.dims)
            if problem:
                outcomes[position] = WriteOutcome(doc.passage.id, False, "failed", problem)
            else:
                sendable.append((position, doc))
        if sendable:
            self._relax_refresh()
            with self.errors(f"bulk index into {self.alias!r}"):
                written = write_documents(
                    self.client, [doc for _, doc in sendable], stamp=stamp, index=self.alias,
                    options=self._options.bulk,
                )
            self._dirty = True
            for (position, _), outcome in zip(sendable, written, strict=True):
                outcomes[position] = outcome
        return [outcomes[position] for position in range(len(docs))]

    def _relax_refresh(self) -> None:
        interval = self._options.bulk_refresh_interval
        if self._relaxed is not None or not interval:
            return
        with self.errors("relax the refresh interval for bulk loading"):
            previous = rs.refresh_interval(
                self.client.indices.get_settings(index=self.alias, name="index.refresh_interval").body
            )
            if previous == interval:
                return
            self.client.indices.put_settings(index=self.alias, settings=rq.refresh_settings(interval))
        self._relaxed = (previous,)

    def _restore_refresh(self) -> None:
        if self._relaxed is None:
            return
        (previous,) = self._relaxed
        with self.errors("restore the refresh interval"):
            self.client.indices.put_settings(index=self.alias, settings=rq.refresh_settings(previous))
        self._relaxed = None

    def flush(self) -> None:
        """Make everything written so far searchable: restore the refresh interval and refresh."""
        if not self._dirty and self._relaxed is None:
            return
        self._restore_refresh()
        with self.errors(f"refresh {self.alias!r}"):
            self.client.indices.refresh(index=self.alias)
        self._dirty = False

    # --- reading --------------------------------------------------------------------------------

    def counts(self) -> StoreCounts:
        self.flush()
        with self.errors("count passages and spans"):
            try:
                response = self.client.search(index=self.alias, body=rq.counts_body())
            except NotFoundError:
                return StoreCounts(passages=0, spans=0)
        return rs.parse_counts(response.body)

    def version(self) -> StoreVersion:
        """The concrete index behind the alias and its write counts, in one ``_stats`` request
        (after making this handle's own writes searchable, as counts and search do)."""
        self.flush()
        with self.errors(f"read the stats of {self.alias!r}"):
            try:
                response = self.client.indices.stats(index=self.alias, metric="docs,indexing")
            except NotFoundError:
                return StoreVersion(identity="", state="absent")
        return rs.store_version(response.body, target=self.alias)

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Hits best first: top ``limit`` by kNN, or every match when ``exhaustive``."""
        rq.check_passage_weight(request.passage_weight)
        stamp = self.model()
        if stamp is None:
            return
        if not request.exhaustive and request.limit < 1:
            return
        self.require_version(MIN_SERVER, "nerindex's nested span search")
        self.flush()
        _, span_filters = rq.split_filters(request.filters)
        if request.exhaustive or request.limit > rq.MAX_NUM_CANDIDATES:
            yield from self._exact(request, stamp, None if request.exhaustive else request.limit)
            return
        if span_filters:
            self.require_version(
                SPAN_FILTER_SERVER,
                "filtering kNN search on span fields (spans.labels, spans.text)",
                error=SearchError,
            )
        yield from self._knn(request, stamp)

    def passage_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Passage vectors of these ids, in the order given (unknown ids left out): one search
        with an ``ids`` query, ``_source`` filtered to the passage vector."""
        stamp = self.model()
        dims = stamp.dims if stamp else 0
        wanted = list(dict.fromkeys(ids))
        found: dict[str, list[float]] = {}
        flag = self.server_version() >= rq.SOURCE_VECTORS_SERVER
        self.flush()
        for start in range(0, len(wanted), 1000):
            body = rq.passage_vectors_body(wanted[start : start + 1000], exclude_vectors_flag=flag)
            with self.errors(f"read passage vectors from {self.alias!r}", search=True):
                try:
                    response = self.client.search(index=self.alias, body=body).body
                except NotFoundError:
                    break
            for hit in rs.raw_hits(response):
                source = hit.get("_source") or {}
                vector = source.get(rq.PASSAGE_VECTOR_FIELD)
                if isinstance(vector, list) and len(vector) == dims:
                    found[str(source.get("id", hit.get("_id")))] = vector
        rows = [found[i] for i in ids if i in found]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), dims)

    def _knn(self, request: SearchRequest, stamp: ModelStamp) -> Iterator[Hit]:
        bm25_boost = self._options.hybrid and bool(request.text)  # the public option "hybrid": BM25 on text
        weight = rq.check_passage_weight(request.passage_weight)
        common = dict(
            min_similarity=request.min_similarity,
            metric=stamp.similarity,
            limit=request.limit,
            num_candidates=self._options.num_candidates,
            filters=request.filters,
            passage_weight=weight,
            rescore=self.rescores(),
        )
        if bm25_boost:
            body = rq.bm25_boost_search_body(
                request.vector, text=request.text, boost=self._options.text_boost, **common
            )
        else:
            body = rq.knn_search_body(request.vector, text=request.text, **common)
        with self.errors(f"search {self.alias!r}", search=True):
            try:
                response = self.client.search(
                    index=self.alias, body=body, include_named_queries_score=bool(weight) or None
                )
            except NotFoundError:
                return
        # With BM25 in the score, _score cannot be read back as span + λ · passage: Hit.score
        # stays the best span there, and Elasticsearch's order (vector + BM25) is kept.
        hits = rs.parse_hits(
            response.body, scoring="knn", metric=stamp.similarity,
            min_similarity=request.min_similarity, passage_weight=0.0 if bm25_boost else weight,
        )
        # Otherwise rank by Hit.score: the best span, or span + λ · passage (hybrid scoring).
        ranked = hits if bm25_boost else rs.rank(hits)
        yield from ranked[: request.limit]

    def _exact(self, request: SearchRequest, stamp: ModelStamp, limit: int | None) -> Iterator[Hit]:
        self.require_module(
            PAINLESS, "exhaustive search (--all, or a limit above 10,000), which scores every span "
            "exactly with a Painless script,", error=SearchError,
        )
        keep_alive = self._options.keep_alive
        page = self._options.page_size
        weight = rq.check_passage_weight(request.passage_weight)
        with self.errors(f"open a point in time on {self.alias!r}"):
            try:
                pit = self.client.open_point_in_time(index=self.alias, keep_alive=keep_alive).body["id"]
            except NotFoundError:
                return
        emitted = 0
        after: list[Any] | None = None
        try:
            while True:
                body = rq.exhaustive_search_body(
                    request.vector,
                    min_similarity=request.min_similarity,
                    filters=request.filters,
                    text=request.text,
                    size=page,
                    pit_id=pit,
                    keep_alive=keep_alive,
                    search_after=after,
                    passage_weight=weight,
                )
                with self.errors(f"search {self.alias!r} exhaustively", search=True):
                    response = self.client.search(body=body).body
                pit = response.get("pit_id", pit)
                for hit in rs.parse_hits(
                    response, scoring="script", metric=stamp.similarity,
                    min_similarity=request.min_similarity, passage_weight=weight,
                ):
                    yield hit
                    emitted += 1
                    if limit is not None and emitted >= limit:
                        return
                after = rs.last_sort_values(response)
                if after is None or len(rs.raw_hits(response)) < page:
                    return
        finally:
            with suppress(Exception):
                self.client.close_point_in_time(id=pit)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Restore the refresh interval, make writes visible, and close a client we created."""
        try:
            if self._client is not None:
                self.flush()
        except StoreError as exc:
            # Closing must not fail on a vanished index or a lost connection; the relaxed
            # refresh interval (30s) still makes the writes visible.
            log.warning("could not make the last writes visible on close: %s", exc)
        finally:
            if self._client is not None and self._owns_client:
                with suppress(Exception):
                    self._client.close()
                self._client = None

    def __enter__(self) -> "ElasticsearchStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ElasticsearchStore(url={self._options.connection.redacted_url()!r}, "
            f"index={self.alias!r})"
        )
