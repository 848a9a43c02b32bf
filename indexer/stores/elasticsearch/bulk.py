"""Bulk indexing with elasticsearch-py's ``streaming_bulk``: retries on 429, failures kept as data.

Passages in, one :class:`~indexer.stores.base.WriteOutcome` per passage out, in input order.
Rejections with 429 (the cluster is busy) are retried with exponential back-off by the helper;
anything else a document meets (mapping errors, a failed chunk) is reported for that passage and
counted, never swallowed and never fatal to the rest of the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from ...records import EncodedPassage
from ..base import ModelStamp, WriteOutcome
from .index_requests import bulk_actions, document_id
from .responses import bulk_outcomes, count_failures

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
    results = streaming_bulk(
        client,
        bulk_actions(docs, stamp, index, typed_filters=typed_filters, replace=replace),
        chunk_size=options.chunk_size,
        max_chunk_bytes=options.max_chunk_bytes,
        max_retries=options.max_retries,
        initial_backoff=options.initial_backoff,
        max_backoff=options.max_backoff,
        raise_on_error=False,
        raise_on_exception=False,
        yield_ok=True,
    )
    outcomes = bulk_outcomes(
        [document_id(doc.passage.id) for doc in docs],
        [doc.passage.id for doc in docs],
        results,
    )
    failed = count_failures(outcomes)
    if failed:
        first = next(o for o in outcomes if not o.ok)
        log.warning(
            "%d of %d passages failed to index into %s (first: %s: %s)%s",
            failed, len(outcomes), index, first.id, first.error,
            BLOCKED_HINT if any(WRITE_BLOCK in (o.error or "") for o in outcomes) else "",
        )
    return outcomes


# how the server words a refusal by index.blocks.write, which 'nerindex es reindex' sets while it copies
WRITE_BLOCK = "index write (api)"
BLOCKED_HINT = (
    "; the index refuses writes: an 'es reindex' is copying from it (retry when it is done) or was "
    "stopped ('nerindex es status'; docs/elasticsearch.md says how to lift the block)"
)
