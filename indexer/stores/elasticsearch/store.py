"""The Elasticsearch backend of the :class:`~indexer.stores.base.Store` protocol.

One document per passage with its spans nested inside, in a versioned index
(``<alias>-000001``) behind an alias, so that ``nerindex es reindex`` can build a new index
(e.g. with a new model) and move the alias atomically. The index ``_meta`` records the model; a
different model is refused. Search has the same semantics as the embedded store (``Store.search``:
every span ranks, mentions alone are marked and make an ``exhaustive`` answer): a nested span kNN
query with ``similarity`` for top-k (rescored with the float vectors from 8.18 on), its marks the
inner hits of a second nested clause over the mentions, and an exact Painless ``script_score``
paged with a point in time for ``exhaustive`` (past the 10,000 cap of kNN; it needs the
lang-painless module), gated on a mention by the same script over the mentions (a top-k limit
above that cap runs the same search ungated, marks only). Hybrid scoring
(``SearchRequest.passage_weight`` λ > 0) adds λ · cos(type, passage vector): natively for top-k
(a passage kNN next to the span kNN), in the script for ``exhaustive``; one request per page.
What the server can do (version, modules) is read once from the nodes API.

Constructing the store does no I/O; the client is created on first use.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

from ...errors import ModelMismatchError, StoreError, UnsupportedSearchError
from ...records import EncodedPassage, Hit
from ..base import (ModelStamp, SearchRequest, StoreCounts, StoreVersion, WriteOutcome, adopted_message, check_stamp,
                    document_problem, query_vector)
from . import by_id
from . import responses as rs
from .aliases import orphans, recheck_target, written_where_checked
from .bulk import id_collisions, stored_count, stored_passages, write_documents
from .bulk_refresh import RelaxedRefresh
from .client import make_client, translated_errors
from .index_requests import (
    filter_format, SERVER_FACTS_FILTER, counts_body, create_index_body,
    document_id, index_meta, mention_mapped, mention_mapping, next_index_name,
    binary_quantized, quantized, search_template_body, span_vector_index_type,
)
from .options import StoreOptions, store_options
from .search_requests import MAX_NUM_CANDIDATES
from .searching import exact_hits, knn_hits, say_once
from .server_facts import ServerFacts, server_facts
from .type_index import TypeIndex, fill_with_catalog


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


class ElasticsearchStore:
    """Passages and their span vectors in an Elasticsearch index behind an alias."""

    def __init__(self, options: StoreOptions, *, client: Elasticsearch | None = None) -> None:
        # No I/O here (a test holds us to it): the client is built by the first call that needs it.
        self._options = options
        self._client = client
        self._owns_client = client is None
        self._closed = False
        self._facts: ServerFacts | None = None
        self._stamp: ModelStamp | None = None
        # the concrete index ``_stamp`` was read from: searches go there, not through the alias,
        # so an alias moved by 'es reindex' after the model check cannot answer with another
        # model's spans (an audit saw one such answer, a 200 with other hits, no error)
        self._stamp_index: str | None = None
        self._vector_type: str | None = None  # index_options type of spans.vector, once read
        self._typed_filters: int | None = None  # which filter_texts the index keeps (once read)
        self._mention_mapped: bool | None = None  # the mapping has spans.mention (once read)
        self._refresh = RelaxedRefresh(self)  # the refresh interval while a load writes
        self._dirty = False
        # (concrete index, the writer's model) of the last check_model for writing: a write checks
        # that the alias still points there (an 'es reindex' may have moved it since)
        self._checked: tuple[str, ModelStamp] | None = None

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, client: Elasticsearch | None = None, **options: Any) -> "ElasticsearchStore":
        """A store for the alias ``index`` on the cluster at ``url`` (comma-separate several nodes).

        ``options`` are the keyword arguments of :func:`.options.store_options` (checked here,
        still without I/O). ``client`` injects a ready client (tests, custom transports).
        """
        return cls(store_options(url, **options), client=client)

    @property
    def options(self) -> StoreOptions:
        return self._options

    @property
    def alias(self) -> str:
        """The name searches and writes go through (an alias, or a plain index made elsewhere)."""
        return self._options.index

    @property
    def client(self) -> Elasticsearch:
        """The elasticsearch-py client, created on first use; after :meth:`close` of a store that made
        its own, a StoreError (a review: a search under way made a new client nothing closed)."""
        if self._client is None:
            if self._closed:
                raise StoreError(f"{self.alias}: this store was closed (close()): open it again")
            self._client = make_client(self._options.connection)
        return self._client

    def errors(self, what: str, *, search: bool = False):
        """A context that turns client errors into nerindex errors saying what was being done."""
        return translated_errors(what, url=self._options.connection.redacted_url(), search=search)

    # --- server and index facts -----------------------------------------------------------------

    def server_facts(self) -> ServerFacts:
        """The cluster's version and modules (asked once, through the nodes API: ``GET /`` is
        refused by builds without the ``rest-root`` module)."""
        if self._facts is None:
            with self.errors("read the server version"):
                response = self.client.nodes.info(metric="plugins", filter_path=SERVER_FACTS_FILTER)
            self._facts = server_facts(response.body)
        return self._facts

    def server_version(self) -> tuple[int, int, int]:
        """The version of the oldest node of the cluster."""
        return self.server_facts().version

    def has_module(self, name: str) -> bool:
        """Whether every node has this module (or plugin); True when the nodes API lists none."""
        modules = self.server_facts().modules
        return not modules or name in modules

    def exhaustive_unavailable(self) -> str | None:
        """Why an exhaustive search cannot run here, or None: it needs the Painless module."""
        return None if self.has_module(PAINLESS) else f"it needs the {PAINLESS} module, which this server lacks"

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
        problem = rs.not_passages(self.alias, mapping)
        if problem:
            raise StoreError(problem)
        self._vector_type = span_vector_index_type(mapping)
        if binary_quantized(self._vector_type):  # made before they were refused, or elsewhere
            say_once(f"{index} bbq", f"{index}: spans.vector is {self._vector_type}, whose top-k searches miss "
                     "passages over the threshold; nerindex es reindex --index-options int8_hnsw")
        self._typed_filters = filter_format(mapping.get("_meta"))
        self._mention_mapped = mention_mapped(mapping)
        return index, mapping

    def typed_filters(self) -> int:
        """Which ``filter_texts`` the index behind the alias keeps (``index_requests.filter_format``):
        with them (made by this nerindex or re-indexed since) metadata filters follow the embedded
        store's rule; an older index filters on the field types Elasticsearch guessed, and one made
        before the type marks matches a number's texts with strings too (docs/elasticsearch.md)."""
        if self._typed_filters is None:
            self.target()
        return int(self._typed_filters or 0)

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
        self._stamp_index = None
        self._vector_type = None
        self._typed_filters = None
        self._mention_mapped = None

    def rescores(self) -> bool:
        """Whether kNN searches rescore with the float vectors (exact scores and threshold):
        the index quantizes them and the server supports ``rescore_vector``."""
        if self._vector_type is None:
            self.target()
        return quantized(self._vector_type) and self.server_version() >= RESCORE_SERVER

    def model(self) -> ModelStamp | None:
        """The model recorded in the index ``_meta``, or None when the index does not exist."""
        if self._stamp is None:
            target = self.target()
            if target is None:
                return None
            self._stamp, self._stamp_index = rs.stamp_from_meta(target[1].get("_meta")), target[0]
        return self._stamp

    def searched_index(self) -> str:
        """Where a search sends its requests: the concrete index whose model :meth:`model` read (the
        one a handle checked its model against), or the alias before any was read. If the alias
        moves meanwhile, the search still answers from the index checked; the next check sees
        the move (``NerIndex`` re-checks the model when the store's identity changed)."""
        return self._stamp_index or self.alias

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
                self.client.indices.put_mapping(index=index, meta=index_meta(check.recorded, typed_filters=self.typed_filters()))
            log.warning(adopted_message(f"Elasticsearch index {index!r}", check))
        self._stamp, self._stamp_index = check.recorded, index
        if writing:
            self._checked = (index, stamp)

    def versioned_indices(self) -> list[str]:
        with self.errors("list the indices"):
            response = self.client.indices.get(
                index=f"{self.alias}-*", expand_wildcards="all", ignore_unavailable=True,
                allow_no_indices=True,
            )
        return list(response.body)

    def _create_index(self, stamp: ModelStamp) -> None:
        self.require_version(MIN_SERVER, "nerindex's nested span search")
        name = next_index_name(self.alias, self.versioned_indices())
        lost = orphans(self)
        if lost:  # an alias lost in a restore, say
            log.warning("no alias %s, but indices made for it exist (%s): creating %s; to search one of them "
                        "instead, point the alias at it (POST _aliases)", self.alias, ", ".join(lost), name)
        body = create_index_body(stamp, index_options=self._options.index_options, alias=self.alias)
        log.info("creating Elasticsearch index %s behind alias %s", name, self.alias)
        with self.errors(f"create index {name!r}"):
            try:
                self.client.indices.create(index=name, **body)
            except BadRequestError as exc:
                # Another process created it (with its alias, atomically) first: check_model re-reads.
                if "resource_already_exists_exception" not in str(exc.body):
                    raise
                log.info("index %s already exists; using it", name)

    def ensure_type_index(
        self, catalog: Any, stamp: ModelStamp, *, queries: str, embed: Callable[[list[str]], np.ndarray]
    ) -> list[WriteOutcome] | None:
        """Create ``<alias>-types`` holding the catalog's type vectors, unless it holds them already
        (None; ``type_index.fill_with_catalog``, ``queries`` and ``embed`` as there).

        ``nerindex index`` calls it so that Kibana users can look type vectors up by phrase
        (:mod:`.type_index`).
        """
        return fill_with_catalog(TypeIndex(self), catalog, stamp, queries=queries, embed=embed, only_if_stale=True)

    def put_search_template(self, template_id: str = SEARCH_TEMPLATE_ID) -> str:
        """Store the search template of ``assets/mappings/`` under ``template_id`` (cluster-wide)."""
        self.require_module(MUSTACHE, "a search template")
        with self.errors(f"store the search template {template_id!r}"):
            self.client.put_script(id=template_id, **search_template_body())
        return template_id

    # --- writing --------------------------------------------------------------------------------

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which passage ids are already stored (real-time: no refresh needed)."""
        return set(self._stored(ids, source=False))

    def stored_texts(self, ids: Sequence[str]) -> dict[str, str]:
        return {pid: source.get("text", "") for pid, source in self._stored(ids, source=["text"]).items()}

    def stored_records(self, ids: Sequence[str]) -> dict[str, tuple[str, Any]]:
        return {pid: (src.get("text", ""), src.get("fields", {})) for pid, src in self._stored(ids, source=["text", "fields"]).items()}

    def _stored(self, ids: Sequence[str], *, source: bool | list[str]) -> dict[str, dict[str, Any]]:
        """{passage id: ``_source`` (empty for ``source=False``)} of the stored passages among ``ids``."""
        with self.errors("look up existing passages"):
            return stored_passages(self.client, self.alias, ids, source=source)

    def write(self, docs: Sequence[EncodedPassage], *, replace: bool = True) -> list[WriteOutcome]:
        """Index passages (overwriting the same ids, or with ``replace=False`` leaving them:
        ``Store.write``); one outcome per passage, in input order."""
        if not docs:
            return []
        index = recheck_target(self, self._checked)  # the concrete index checked, not the alias (an audit)
        stamp = self.model()
        if stamp is None:
            raise StoreError(
                f"Elasticsearch index {self.alias!r} does not exist yet: call check_model(stamp) "
                f"before writing"
            )
        outcomes: dict[int, WriteOutcome] = {}
        sendable: list[tuple[int, EncodedPassage]] = []
        with self.errors("look up existing passages"):
            collisions = id_collisions(self.client, self.alias, [doc.passage.id for doc in docs])
        for position, doc in enumerate(docs):
            problem = document_problem(doc, stamp.dims)
            if doc.passage.id in collisions:
                other = collisions[doc.passage.id]
                problem = (f"its Elasticsearch _id {document_id(doc.passage.id)!r} is that of passage "
                           f"{other[:80]!r}{'...' if len(other) > 80 else ''} (an id over 512 bytes is stored "
                           "under its SHA-256): rename one of them")  # fmt: skip
            if problem:
                outcomes[position] = WriteOutcome(doc.passage.id, False, "failed", problem)
            else:
                sendable.append((position, doc))
        if sendable:
            self._map_mentions()
            self._refresh.relax()
            answers: dict[int, Any] = {}
            try:
                with self.errors(f"bulk index into {index!r}"):
                    written = write_documents(
                        self.client, [doc for _, doc in sendable], stamp=stamp, index=index,
                        options=self._options.bulk, typed_filters=self.typed_filters(), replace=replace,
                        answers=answers,
                    )
            except StoreError as exc:  # the bulk requests answered before it stay stored
                exc.stored = stored_count(answers)
                self._dirty = self._dirty or exc.stored > 0
                raise
            written = written_where_checked(self, index, written)
            # a write that only skipped stored ids needs no refresh: one more would move the store
            # version (refresh.external_total) and drop every cached result; a failed item may have
            # been applied all the same (a timeout), so it still counts
            self._dirty = self._dirty or any(o.action != "skipped" for o in written)
            for (position, _), outcome in zip(sendable, written, strict=True):
                outcomes[position] = outcome
        return [outcomes[position] for position in range(len(docs))]

    def delete(self, ids: Sequence[str]) -> list[str]:
        return by_id.delete_documents(self, ids)

    def stored_ids(self) -> Iterator[str]:
        return by_id.stored_ids(self)

    def _map_mentions(self) -> None:
        """Add ``spans.mention`` to an index made before it, once, before the first write: its
        strict mapping would refuse every span (searches need nothing: a span without the field
        is a mention)."""
        if self._mention_mapped is None:
            self.target()
        if self._mention_mapped is False:
            with self.errors(f"add spans.mention to the mapping of {self.alias!r}"):
                self.client.indices.put_mapping(index=self.alias, **mention_mapping())
            log.info("added spans.mention to the mapping of %s (made before candidate spans)", self.alias)
        self._mention_mapped = True

    def prepare(self) -> None:
        """Make the run's writes searchable (the protocol's end-of-indexing step), and a killed
        run's too where it left the refresh interval relaxed (:meth:`RelaxedRefresh.heal`)."""
        self._dirty = self._refresh.heal() or self._dirty
        self.flush()

    def flush(self) -> None:
        """Make everything written so far searchable: restore the refresh interval and refresh
        (when this handle stored anything: see ``write``)."""
        self._refresh.restore()  # a no-op unless this handle relaxed it
        if not self._dirty:
            return
        with self.errors(f"refresh {self.alias!r}"):
            self.client.indices.refresh(index=self.alias)
        self._dirty = False

    # --- reading --------------------------------------------------------------------------------

    def counts(self) -> StoreCounts:
        self.flush()
        with self.errors("count passages and spans"):
            try:
                response = self.client.search(index=self.alias, body=counts_body())
            except NotFoundError:
                return StoreCounts(passages=0, spans=0)
        return rs.parse_counts(response.body)

    def check_readable(self) -> None:
        """Search for one document, health's proof that searches run (a read block let it say ok; an audit)."""
        with self.errors("search"), suppress(NotFoundError):  # a deleted index: the model check says so
            self.client.search(index=self.alias, size=0, terminate_after=1, track_total_hits=False)

    def version(self) -> StoreVersion:
        """The concrete index behind the alias and its refresh counts, in one ``_stats`` request
        (after making this handle's own writes searchable, as counts and search do)."""
        self.flush()
        with self.errors(f"read the stats of {self.alias!r}"):
            try:
                response = self.client.indices.stats(index=self.alias, metric="refresh", level="shards")
            except NotFoundError:
                return StoreVersion(identity="", state="absent")
        return rs.store_version(response.body, target=self.alias)

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Hits best first: top ``limit`` by kNN, or every match when ``exhaustive``.

        The request and what the server must support for it are checked here, when called
        (reading the index mapping and the server facts); requests go out as hits are read.
        """
        stamp = self.model()
        if stamp is None:
            return iter(())
        query_vector(request, stamp.dims)
        if not request.exhaustive and request.limit < 1:
            return iter(())
        self.require_version(MIN_SERVER, "nerindex's nested span search")
        exact = request.exhaustive or request.limit > MAX_NUM_CANDIDATES
        if exact:
            self.require_module(
                PAINLESS, "exhaustive search (--all, or a limit above 10,000), which scores every span "
                "exactly with a Painless script,", error=UnsupportedSearchError,
            )
        elif request.filters.spans:
            self.require_version(
                SPAN_FILTER_SERVER,
                "filtering kNN search on span fields (spans.labels, spans.text)",
                error=UnsupportedSearchError,
            )
        self.flush()
        common = dict(index=self.searched_index(), options=self._options, errors=self.errors, typed_filters=self.typed_filters())
        if exact:
            return exact_hits(
                self.client, request, stamp, limit=None if request.exhaustive else request.limit, **common
            )
        return knn_hits(self.client, request, stamp, rescore=self.rescores(), **common)

    def passage_vectors(self, ids: Sequence[str]) -> np.ndarray:
        return by_id.passage_vectors(self, ids)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Restore the refresh interval, make writes visible, and close a client we created."""
        self._closed = True
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
