"""What an Elasticsearch store is fixed to when it is made: where, which alias, how it indexes and searches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...config import DEFAULT_ES_INDEX
from ...errors import StoreError
from .bulk import BulkOptions
from .client import ConnectionOptions
from .index_requests import DEFAULT_INDEX_OPTIONS, check_index_name, index_options_body

# The refresh interval during a bulk load: 30 s ("-1" would leave a crashed load invisible), written
# as 30,001 ms. The odd millisecond marks the value as nerindex's own, so that the next load tells
# one left by a load killed while relaxed (put back to the default) from an operator's "30s" (kept:
# an audit found it reset to 1 s).
BULK_REFRESH_INTERVAL = "30001ms"


@dataclass(frozen=True)
class StoreOptions:
    """Everything an :class:`~.store.ElasticsearchStore` needs to know, fixed at ``connect`` time."""

    connection: ConnectionOptions
    index: str = DEFAULT_ES_INDEX
    index_options: str | Mapping[str, Any] = DEFAULT_INDEX_OPTIONS
    hybrid: bool = False
    text_boost: float = 0.1
    num_candidates: int | None = None
    page_size: int = 500
    keep_alive: str = "2m"
    bulk: BulkOptions = BulkOptions()
    # refresh_interval while writing (BULK_REFRESH_INTERVAL; None: left as it is)
    bulk_refresh_interval: str | None = BULK_REFRESH_INTERVAL


def store_options(
    url: str,
    *,
    index: str = DEFAULT_ES_INDEX,
    api_key: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    ca_certs: str | None = None,
    verify_certs: bool = True,
    index_options: str | Mapping[str, Any] = DEFAULT_INDEX_OPTIONS,
    hybrid: bool = False,
    text_boost: float = 0.1,
    num_candidates: int | None = None,
    page_size: int = 500,
    request_timeout: float = 60.0,
    bulk: BulkOptions | None = None,
    bulk_refresh_interval: str | None = BULK_REFRESH_INTERVAL,
) -> StoreOptions:
    """The options of a store for the alias ``index`` on the cluster at ``url`` (comma-separate
    several nodes), checked without I/O.

    ``index_options`` is the dense_vector index type (``int8_hnsw`` by default; ``hnsw`` keeps
    float vectors; ``bbq_*`` is refused: ``index_requests.BINARY_REFUSED``) or a full ``index_options`` dict.
    ``hybrid`` (BM25 boost mode; not hybrid scoring, which is ``passage_weight`` λ) adds BM25 on
    the ``text`` of a search to the vector score instead of using it as
    a restriction.
    With ``hybrid`` and a search that has both a ``text`` and a ``passage_weight`` λ > 0,
    Elasticsearch orders by span + λ · passage + BM25 and that order is kept, but ``Hit.score``
    stays the best span similarity (one returned score cannot be split into its parts).
    """
    check_index_name(index)
    index_options_body(index_options)  # validate early, still without I/O
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
    return StoreOptions(
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
