"""Elasticsearch backend (needs the ``[elasticsearch]`` extra: the 8.x client, for 8.x and 9.x servers).

- :mod:`.index_requests`, :mod:`.search_requests` and :mod:`.paged_requests` build every request
  body (pure; golden-file tested): indices and documents, top-k kNN, exhaustive pages and scans,
- :mod:`.responses` parses responses into nerindex records (pure),
- :mod:`.store` is the :class:`ElasticsearchStore` (the Store protocol; opened from settings by
  :mod:`indexer.stores.factory`), :mod:`.options` what it is fixed to, :mod:`.searching` runs its
  checked searches,
- :mod:`.type_index` keeps type vectors by phrase for clients without the model,
- :mod:`.bulk` indexes with ``streaming_bulk``, :mod:`.reindex` swaps the alias to a new index,
- :mod:`.kibana` imports the saved objects. The index mapping and the search template are the JSON
  files of ``indexer/assets/mappings/``.
"""

from .bulk import BulkOptions
from .client import ConnectionOptions
from .options import StoreOptions
from .store import SEARCH_TEMPLATE_ID, ElasticsearchStore

__all__ = [
    "BulkOptions",
    "ConnectionOptions",
    "ElasticsearchStore",
    "SEARCH_TEMPLATE_ID",
    "StoreOptions",
]
