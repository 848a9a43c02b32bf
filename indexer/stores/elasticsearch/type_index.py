"""The types index: type phrases and their vectors, by phrase, for clients that cannot run the model.

A Kibana user has no encoder, so nerindex stores type vectors next to the passages: the index
``<alias>-types`` (``assets/mappings/types.json``) holds one document per type phrase whose ``_id`` is the
normalised phrase (:func:`normalise_phrase`: as the tokenizer reads it, lower case, single spaces), with the ``vector`` the
model gives that phrase. The first ``nerindex index`` into Elasticsearch creates it with the
model's catalog (the phrases that label spans, each with the vector a search for it uses:
``OnnxEncoder.query_catalog``, which embeds each phrase as a query);
``nerindex es add-types`` adds phrases. A kNN search on ``spans.vector`` then takes its query vector
from there: in one request with ``query_vector_builder.lookup`` on Elasticsearch >= 9.4
(:func:`lookup_knn_body`), by reading the vector first and sending it on older servers.

The index ``_meta`` records the model, as the passage index does; another model is refused.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError
from elasticsearch.helpers import streaming_bulk

from ...errors import ModelMismatchError, StoreError
from ..base import ModelStamp, WriteOutcome, check_stamp, vector_problem
from . import responses as rs
from . import templates
from .index_requests import MAX_DOC_ID_BYTES, TYPES_SUFFIX, check_index_name, index_meta, vector_values
from .options import StoreOptions
from .search_requests import knn_search_body
from .similarity import check_metric

if TYPE_CHECKING:
    from ...catalog import Catalog

log = logging.getLogger(__name__)

CATALOG_FINGERPRINT = "catalog_fingerprint"  # _meta key: which query vectors the index holds
ADDED_PAGE = 5_000  # phrases added by hand listed a page at a time

TYPES_TEMPLATE = "types.json"
TYPE_VECTOR_FIELD = "vector"
LOOKUP_SERVER = (9, 4, 0)  # query_vector_builder.lookup (a vector read from a stored document)
CATALOG, ADDED = "catalog", "added"  # the origin of a type document


def types_index_name(alias: str) -> str:
    """The types index of a passage alias: ``<alias>-types``."""
    return check_index_name(f"{alias}{TYPES_SUFFIX}")


def normalise_phrase(phrase: str) -> str:
    """The ``_id`` of a type phrase: NFC, lower case, whitespace runs as one space.

    As the shipped tokenizer's normaliser (BERT's) reads it, so that phrases that normalise alike
    have the same tokens and so the same vector: a character at a time (``str.lower`` made a final
    Σ a ς, where the tokenizer reads σ: "ΟΔΟΣ" was stored with the vector of other tokens, an
    audit), control, format and private-use characters dropped, not read as spaces ("sea\x1fcreature"
    is "seacreature" to it). Empty phrases and ids Elasticsearch would refuse are errors.
    """
    kept = (ch for ch in unicodedata.normalize("NFC", str(phrase))
            if ch in "\t\n\r" or not (unicodedata.category(ch).startswith("C") or ch == "\ufffd"))
    text = " ".join("".join(ch.lower() for ch in kept).split())
    if not text:
        raise StoreError(f"cannot store the type phrase {phrase!r}: it is empty")
    if len(text.encode("utf-8")) > MAX_DOC_ID_BYTES:
        raise StoreError(
            f"cannot store the type phrase {text[:40]!r}...: it is longer than "
            f"{MAX_DOC_ID_BYTES} bytes, the most a document id may have"
        )
    return text


def unique_phrases(phrases: Iterable[str], vectors: Sequence[Any] | None = None) -> list[tuple[str, Any]]:
    """(normalised phrase, its row of ``vectors`` or None), first occurrence of each phrase kept."""
    rows = list(vectors) if vectors is not None else None
    seen: dict[str, Any] = {}
    for position, phrase in enumerate(phrases):
        seen.setdefault(normalise_phrase(phrase), rows[position] if rows is not None else None)
    return list(seen.items())


# --- request bodies (pure) ------------------------------------------------------------------------


def types_index_body(stamp: ModelStamp) -> dict[str, Any]:
    """Settings and mappings of the types index for this model, from ``assets/mappings/types.json``."""
    check_metric(stamp.similarity)
    if int(stamp.dims) <= 0:
        raise StoreError(f"model {stamp.id!r} has invalid dims {stamp.dims!r}")
    return templates.fill(
        templates.load_template(TYPES_TEMPLATE),
        {"dims": int(stamp.dims), "similarity": stamp.similarity, "meta": index_meta(stamp)},
    )


def type_document(phrase: str, vector: Any, stamp: ModelStamp, origin: str) -> dict[str, Any]:
    """The ``_source`` of one type: the normalised phrase, where it came from, the model, the vector."""
    return {
        "phrase": normalise_phrase(phrase),
        "origin": origin,
        "model": {"id": stamp.id, "version": stamp.version},
        TYPE_VECTOR_FIELD: vector_values(vector),
    }


def type_actions(
    index: str, types: Sequence[tuple[str, Any]], stamp: ModelStamp, origin: str
) -> list[dict[str, Any]]:
    """``streaming_bulk`` actions: each (normalised phrase, vector) under its phrase as ``_id``."""
    return [
        {"_op_type": "index", "_index": index, "_id": phrase,
         "_source": type_document(phrase, vector, stamp, origin)}
        for phrase, vector in types
    ]


def type_vector_body(phrase: str) -> dict[str, Any]:
    """Read one stored type vector: an ids query returning the vector as doc values.

    The ``lookup`` query vector builder reads it the same way; unlike ``_source`` (which 9.2+
    leaves vectors out of by default) it answers alike on every version nerindex supports.
    """
    return {
        "size": 1,
        "query": {"ids": {"values": [normalise_phrase(phrase)]}},
        "_source": False,
        "docvalue_fields": [TYPE_VECTOR_FIELD],
    }


def vector_lookup(phrase: str, *, types_index: str) -> dict[str, Any]:
    """``query_vector_builder`` that reads the vector of ``phrase`` from the types index (9.4+)."""
    return {"lookup": {"index": types_index, "id": normalise_phrase(phrase), "path": TYPE_VECTOR_FIELD}}


def with_vector_lookup(body: Mapping[str, Any], builder: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with the ``query_vector`` of every kNN clause replaced by ``builder``.

    Any other use of the query vector (a script parameter) cannot be looked up: an error.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            if "field" in node and "query_vector" in node:
                return {
                    **{key: walk(value) for key, value in node.items() if key != "query_vector"},
                    "query_vector_builder": dict(builder),
                }
            if "query_vector" in node:
                raise StoreError("this search uses the type vector outside kNN; it cannot be looked up")
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(body)


def lookup_knn_body(phrase: str, *, types_index: str, **knn_options: Any) -> dict[str, Any]:
    """The span kNN search of :func:`~.requests.knn_search_body`, its vector looked up by phrase.

    One request, no vector in it: Elasticsearch >= 9.4 reads ``vector`` of the document
    ``phrase`` in ``types_index``. ``knn_options`` are those of ``knn_search_body``.
    """
    body = knn_search_body([1.0], **knn_options)  # a stand-in vector, replaced below
    return with_vector_lookup(body, vector_lookup(phrase, types_index=types_index))


def type_vector_from(response: Mapping[str, Any]) -> np.ndarray | None:
    """The vector of a :func:`type_vector_body` response, or None when the phrase is not stored."""
    for hit in rs.raw_hits(response):
        values = (hit.get("fields") or {}).get(TYPE_VECTOR_FIELD)
        if values:
            vector = values[0] if isinstance(values[0], list) else values
            return np.asarray(vector, dtype=np.float32)
    return None


def type_mismatch_message(index: str, stored: ModelStamp, wanted: ModelStamp, conflict: str) -> str:
    return (
        f"the types index {index!r} holds vectors of model {stored.id} {stored.version} "
        f"(checksum {stored.checksum[:12]}), but this run uses {wanted.id} {wanted.version} "
        f"(checksum {wanted.checksum[:12]}): {conflict}; rebuild it with 'nerindex es add-types --replace --catalog'"
    )


# --- the index on a cluster -----------------------------------------------------------------------


class PassageStore(Protocol):
    """What the types index uses of the passage store it belongs to (an
    :class:`~.store.ElasticsearchStore`): its alias, client, options and error translation."""

    @property
    def alias(self) -> str: ...

    @property
    def client(self) -> Elasticsearch: ...

    @property
    def options(self) -> StoreOptions: ...

    def errors(self, what: str, *, search: bool = False) -> AbstractContextManager[Any]: ...


class TypeIndex:
    """The types index of a passage store's alias."""

    def __init__(self, store: PassageStore) -> None:
        self.store = store
        self.name = types_index_name(store.alias)

    def meta(self) -> dict[str, Any] | None:
        """The types index ``_meta``; None when the index does not exist."""
        with self.store.errors(f"read the mapping of {self.name!r}"):
            try:
                response = self.store.client.indices.get_mapping(index=self.name)
            except NotFoundError:
                return None
        _, mapping = rs.index_mapping(response.body, target=self.name)
        return dict(mapping.get("_meta") or {})

    def record_catalog(self, fingerprint: str, meta: Mapping[str, Any]) -> None:
        """Record in ``_meta`` (the index's, as read: ``meta``) which query vectors the index holds
        (:func:`catalog_fingerprint`)."""
        with self.store.errors(f"record the catalog in the _meta of {self.name!r}"):
            self.store.client.indices.put_mapping(index=self.name, meta={**meta, CATALOG_FINGERPRINT: fingerprint})

    def model(self) -> ModelStamp | None:
        """The model in the types index ``_meta``; None when the index does not exist."""
        meta = self.meta()
        if meta is None:
            return None
        stored = rs.stamp_from_meta(meta)
        if stored is None:
            raise StoreError(f"index {self.name!r} was not created by nerindex (its _meta records no model)")
        return stored

    def check_model(self, stamp: ModelStamp) -> bool:
        """Create the index for ``stamp`` when missing (True), refuse one of another model."""
        stored = self.model()
        if stored is None:
            body = types_index_body(stamp)
            log.info("creating the types index %s", self.name)
            with self.store.errors(f"create index {self.name!r}"):
                try:
                    self.store.client.indices.create(index=self.name, **body)
                except BadRequestError as exc:
                    if "resource_already_exists_exception" not in str(exc.body):
                        raise
                    self.check_model(stamp)  # another process made it meanwhile: same model?
                    return False
            return True
        # a type vector depends on the model's vector space only, not on how its spans were
        # detected or labelled (a store written with --catalog has type vectors like any other)
        conflict = check_stamp(stored, stamp, writing=False).conflict
        if conflict:
            raise ModelMismatchError(type_mismatch_message(self.name, stored, stamp, conflict))
        return False

    def conflict_with(self, stamp: ModelStamp) -> str | None:
        """What makes this index's vectors another model's than ``stamp``'s (None: the same, or no
        index): after ``es reindex --model`` a lookup by type name would get the old model's vectors."""
        try:
            stored = self.model()
        except StoreError:
            return "its _meta records no model: not made by nerindex"
        return None if stored is None else check_stamp(stored, stamp, writing=False).conflict

    def add(
        self, phrases: Sequence[str], vectors: Sequence[Any], stamp: ModelStamp, *, origin: str = ADDED
    ) -> list[WriteOutcome]:
        """Store phrases with their vectors (overwriting the same phrase); one outcome per phrase.

        Call :meth:`check_model` first. Documents are searchable when this returns.
        """
        types = unique_phrases(phrases, vectors)
        outcomes: dict[str, WriteOutcome] = {}
        sendable = []
        for phrase, vector in types:
            problem = vector_problem(vector, stamp.dims)
            if problem:
                outcomes[phrase] = WriteOutcome(phrase, False, "failed", problem)
            else:
                sendable.append((phrase, vector))
        if sendable:
            options = self.store.options.bulk
            with self.store.errors(f"bulk index into {self.name!r}"):
                results = streaming_bulk(
                    self.store.client, type_actions(self.name, sendable, stamp, origin),
                    chunk_size=options.chunk_size, max_chunk_bytes=options.max_chunk_bytes,
                    max_retries=options.max_retries, initial_backoff=options.initial_backoff,
                    max_backoff=options.max_backoff, raise_on_error=False, raise_on_exception=False,
                )
                ids = [phrase for phrase, _ in sendable]
                for outcome in rs.bulk_outcomes(ids, ids, results):
                    outcomes[outcome.id] = outcome
                self.store.client.indices.refresh(index=self.name)
        return [outcomes[phrase] for phrase, _ in types]

    def vector(self, phrase: str) -> np.ndarray | None:
        """The stored vector of ``phrase`` (the first step of a two-step lookup), or None."""
        with self.store.errors(f"read the vector of {phrase!r} from {self.name!r}"):
            try:
                response = self.store.client.search(index=self.name, body=type_vector_body(phrase))
            except NotFoundError:
                return None
        return type_vector_from(response.body)

    def added_phrases(self, *, page: int = ADDED_PAGE) -> list[str]:
        """The phrases stored by ``add-types`` (origin ``added``), as stored (normalised): all of
        them, page after page in phrase order (one page of 10,000 left the rest out, and
        ``add-types --replace`` then deleted them without a word: an audit)."""
        phrases: list[str] = []
        after: list[Any] | None = None
        while True:
            body = {"query": {"term": {"origin": ADDED}}, "_source": ["phrase"], "size": page,
                    "sort": [{"phrase": "asc"}], **({"search_after": after} if after else {})}
            with self.store.errors(f"list the added phrases of {self.name!r}"):
                try:
                    response = self.store.client.search(index=self.name, body=body)
                except NotFoundError:
                    return phrases
            hits = rs.raw_hits(response.body)
            phrases += [str((hit.get("_source") or {}).get("phrase", "")) for hit in hits]
            after = rs.last_sort_values(response.body)
            if after is None or len(hits) < page:
                return phrases

    def count(self) -> int | None:
        """How many phrases are stored; None when the index does not exist."""
        with self.store.errors(f"count {self.name!r}"):
            try:
                return int(self.store.client.count(index=self.name).body["count"])
            except NotFoundError:
                return None

    def delete(self) -> bool:
        """Delete the types index; False when there was none."""
        with self.store.errors(f"delete {self.name!r}"):
            try:
                self.store.client.indices.delete(index=self.name)
            except NotFoundError:
                return False
        return True


def catalog_fingerprint(catalog: "Catalog", queries: str) -> str:
    """What identifies the vectors a types index should hold: the catalog's phrases and how the
    model embeds a query (``queries``: ``ModelInfo.query_identity``, its type templates and
    trained-on phrases), not the vectors themselves, whose last bits differ between graphs."""
    return hashlib.sha256("\n".join((queries, *catalog.phrases)).encode("utf-8")).hexdigest()[:32]


def fill_with_catalog(
    types: TypeIndex, catalog: "Catalog", stamp: ModelStamp, *, queries: str,
    embed: Callable[[list[str]], np.ndarray], only_if_stale: bool = False,
) -> list[WriteOutcome] | None:
    """Store the catalog's phrases with the vectors it holds (callers pass
    ``OnnxEncoder.query_catalog()``, whose vectors are the ones a search for each phrase uses), and
    embed the phrases added by hand again with ``embed`` (``OnnxEncoder.embed_types``).

    With ``only_if_stale`` an index whose recorded :func:`catalog_fingerprint` is this one is left
    as it is (None): what ``nerindex index`` does, so the catalog is stored with the first passages,
    and again when what the index holds is not what a search uses now: a fill that was killed
    half-way, or vectors from before a change of the query templates, added phrases included (found
    by audits: a partial fill stayed partial; added phrases kept their old vectors). The
    fingerprint is recorded only after a fill without failures.
    """
    created = types.check_model(stamp)
    fingerprint = catalog_fingerprint(catalog, queries)
    meta = types.meta() or {}
    if only_if_stale and not created and meta.get(CATALOG_FINGERPRINT) == fingerprint:
        return None
    outcomes = types.add(catalog.phrases, catalog.vectors, stamp, origin=CATALOG)
    added = [] if created else types.added_phrases()
    if added:
        outcomes += types.add(added, embed(added), stamp, origin=ADDED)
    failed = rs.count_failures(outcomes)
    log.info("stored %d type phrases in %s (%d failed)", len(outcomes) - failed, types.name, failed)
    if not failed:
        types.record_catalog(fingerprint, meta)
    return outcomes
