"""Bulk indexing with elasticsearch-py's ``streaming_bulk``: retries on 429, failures kept as data.

Passages in, one :class:`~indexer.stores.base.WriteOutcome` per passage out, in input order.
Rejections with 429 (the cluster is busy) are retried with exponential back-off by the helper;
anything else a document meets (mapping errors, a failed chunk) is reported for that passage and
counted, never swallowed and never fatal to the rest of the batch. A bulk request that times out
is sent again here, not by the transport, so that the passages the try that timed out may have
stored are known: their ``create`` refused as "already stored" is told apart from another writer's.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from elastic_transport import ConnectionTimeout
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from ...records import EncodedPassage
from ..base import ModelStamp, WriteOutcome
from . import responses as rs
from .client import MAX_RETRIES
from .index_requests import bulk_actions, document_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkOptions:
    """How documents are sent: chunk size and the 429 back-off (seconds, doubling per retry)."""

    chunk_size: int = 200
    max_chunk_bytes: int = 50 * 1024 * 1024
    max_retries: int = 5
    initial_backoff: float = 2.0
    max_backoff: float = 60.0


def write_documents(
    client: Elasticsearch,
    docs: Sequence[EncodedPassage],
    *,
    stamp: ModelStamp,
    index: str,
    options: BulkOptions = BulkOptions(),
    typed_filters: int = 0,
    replace: bool = True,
) -> list[WriteOutcome]:
    """Index passages into ``index`` (an alias or a concrete index); one outcome per passage;
    ``typed_filters``: the index has ``filter_texts`` (``index_requests.filter_texts``);
    ``replace=False``: stored ids are left as they are (``skipped``, ``Store.write``)."""
    if not docs:
        return []
    actions = list(bulk_actions(docs, stamp, index, typed_filters=typed_filters, replace=replace))
    results, resent = _send(client, actions, options)
    outcomes = rs.bulk_outcomes([action["_id"] for action in actions], [doc.passage.id for doc in docs], results)
    if resent and not replace:
        outcomes = _settle_resent_creates(client, index, docs, outcomes, resent)
    failed = rs.count_failures(outcomes)
    if failed:
        first = next(o for o in outcomes if not o.ok)
        log.warning(
            "%d of %d passages failed to index into %s (first: %s: %s)%s",
            failed, len(outcomes), index, first.id, first.error,
            BLOCKED_HINT if any(WRITE_BLOCK in (o.error or "") for o in outcomes) else "",
        )
    return outcomes


def _send(
    client: Elasticsearch, actions: list[dict[str, Any]], options: BulkOptions
) -> tuple[list[tuple[bool, dict[str, Any]]], set[str]]:
    """The bulk results of ``actions`` and the ``_id``s sent again after a timeout.

    The transport's retry on timeout is off for these requests: it re-sent a whole request the
    server may have applied, and every passage the first try had stored came back as "already
    stored" (an audit; the data were right, the summary was not). Here only the actions left
    unanswered are sent again, as often as the transport would have (``MAX_RETRIES``).
    """
    once = client.options(retry_on_timeout=False)
    results: list[tuple[bool, dict[str, Any]]] = []
    resent: set[str] = set()
    pending = actions
    for attempt in range(MAX_RETRIES + 1):
        try:
            for result in streaming_bulk(
                once, pending, chunk_size=options.chunk_size, max_chunk_bytes=options.max_chunk_bytes,
                max_retries=options.max_retries, initial_backoff=options.initial_backoff,
                max_backoff=options.max_backoff, raise_on_error=False, raise_on_exception=False,
                yield_ok=True,
            ):
                results.append(result)
            break
        except ConnectionTimeout:
            if attempt == MAX_RETRIES:
                raise
            answered = {rs.parse_bulk_item(info)[0] for _, info in results}
            pending = [action for action in pending if action["_id"] not in answered]
            resent |= {action["_id"] for action in pending}
            log.info("a bulk request timed out: sending its %d unanswered passages again", len(pending))
    return results, resent


def _settle_resent_creates(
    client: Elasticsearch, index: str, docs: Sequence[EncodedPassage], outcomes: list[WriteOutcome],
    resent: set[str],
) -> list[WriteOutcome]:
    """A ``create`` refused after its request was sent again: the passage was stored by the try
    that timed out (the stored text is this passage's: "created") or by another writer (left as
    it is: "skipped"). A rival that stored the same text under the same id counts as this run."""
    doubtful = {
        document_id(doc.passage.id): position
        for position, (doc, outcome) in enumerate(zip(docs, outcomes, strict=True))
        if outcome.action == "skipped" and document_id(doc.passage.id) in resent
    }
    if not doubtful:
        return outcomes
    response = client.mget(index=index, ids=list(doubtful), source=["text"])
    sources = rs.found_sources(response.body)
    settled = list(outcomes)
    for doc_id, position in doubtful.items():
        if sources.get(doc_id, {}).get("text") == docs[position].passage.text:
            settled[position] = dataclasses.replace(outcomes[position], action="created")
    return settled


# how the server words a refusal by index.blocks.write, which 'nerindex es reindex' sets while it copies
WRITE_BLOCK = "index write (api)"
BLOCKED_HINT = (
    "; the index refuses writes: an 'es reindex' is copying from it (retry when it is done) or was "
    "stopped ('nerindex es status'; docs/elasticsearch.md says how to lift the block)"
)
