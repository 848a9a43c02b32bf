"""A store's passages by id: their passage vectors, the list of stored ids, and deleting them.

Functions of an :class:`~.store.ElasticsearchStore` (``store``), kept apart from its class: each
is one request loop over ids or pages. Client errors become StoreErrors through ``store.errors``.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
from elasticsearch import NotFoundError

from ...errors import StoreError
from . import responses as rs
from .aliases import recheck_target
from .bulk import stored_passages
from .index_requests import PASSAGE_VECTOR_FIELD, SOURCE_VECTORS_SERVER, document_id, passage_vectors_body
from .paged_requests import scan_body

DELETE_CHUNK = 1000  # passages a bulk delete request
STORED_IDS_PAGE = 1000  # ids a page of stored_ids
VECTORS_CHUNK = 1000  # ids a passage vectors search


def passage_vectors(store: Any, ids: Sequence[str]) -> np.ndarray:
    """Passage vectors of these ids, in the order given (unknown ids left out): one search
    with an ``ids`` query, ``_source`` filtered to the passage vector."""
    stamp = store.model()
    dims = stamp.dims if stamp else 0
    wanted = list(dict.fromkeys(ids))
    found: dict[str, list[float]] = {}
    flag = store.server_version() >= SOURCE_VECTORS_SERVER
    store.flush()
    index = store.searched_index()  # the index whose model was checked, as the search's (feedback)
    for start in range(0, len(wanted), VECTORS_CHUNK):
        body = passage_vectors_body(wanted[start : start + VECTORS_CHUNK], exclude_vectors_flag=flag)
        with store.errors(f"read passage vectors from {index!r}", search=True):
            try:
                response = store.client.search(index=index, body=body).body
            except NotFoundError:
                break
        for hit in rs.raw_hits(response):
            source = hit.get("_source") or {}
            vector = source.get(PASSAGE_VECTOR_FIELD)
            if isinstance(vector, list) and len(vector) == dims:
                found[rs.hit_id(hit)] = vector
    rows = [found[i] for i in ids if i in found]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dims)


def delete_documents(store: Any, ids: Sequence[str]) -> list[str]:
    """Delete the documents of these passages (``Store.delete``): only ids stored as themselves
    (a long id's hashed ``_id`` holding another passage is left), ``DELETE_CHUNK`` a bulk request,
    sent to the index the writer's model was checked against (:func:`.aliases.recheck_target`); a
    document already gone is no error, any other refusal a StoreError naming how many went before."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    with store.errors("look up the passages to delete"):
        stored = stored_passages(store.client, store.alias, wanted, source=False)
    gone = [pid for pid in wanted if pid in stored]
    index = recheck_target(store, store._checked)
    removed: list[str] = []
    for start in range(0, len(gone), DELETE_CHUNK):
        chunk = gone[start : start + DELETE_CHUNK]
        with store.errors(f"delete passages from {index!r}"):
            response = store.client.bulk(operations=[{"delete": {"_index": index, "_id": document_id(pid)}}
                                                     for pid in chunk]).body  # fmt: skip
        store._dirty = True  # the next flush (a search, counts, prepare) refreshes
        done = [(pid, item.get("delete", {})) for pid, item in zip(chunk, response.get("items", []))]
        refused = [d for _, d in done if d.get("status", 200) not in (200, 404)]
        if refused:
            error = refused[0].get("error") or {}
            raise StoreError(f"Elasticsearch refused to delete {len(refused)} passage(s) from {index!r} after "
                             f"{len(removed)} were deleted: {error.get('type', '')} {error.get('reason', '')}".rstrip())
        # a 404: another process deleted it between the look-up and this request, not this call
        removed += [pid for pid, d in done if d.get("status", 200) == 200]
    return removed


def stored_ids(store: Any) -> Iterator[str]:
    """Every stored passage id, a page at a time in id order (``Store.stored_ids``)."""
    store.flush()
    after: list[Any] | None = None
    while True:
        with store.errors(f"list the passages of {store.alias!r}"):
            try:
                response = store.client.search(index=store.alias, body=scan_body(
                    size=STORED_IDS_PAGE, search_after=after, source=["id"])).body  # fmt: skip
            except NotFoundError:
                return
        hits = rs.raw_hits(response)
        yield from (rs.hit_id(hit) for hit in hits)
        after = rs.last_sort_values(response)
        if after is None or len(hits) < STORED_IDS_PAGE:
            return
