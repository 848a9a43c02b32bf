"""Elasticsearch backend (needs the ``[elasticsearch]`` extra: the 8.x client, for 8.x and 9.x servers).

- :mod:`.index_requests`, :mod:`.search_requests` and :mod:`.paged_requests` build every request
  body (pure; golden-file tested): indices and documents, top-k kNN, exhaustive pages and scans,
- :mod:`.responses` parses responses into nerindex records (pure),
- :mod:`.store` is the :class:`ElasticsearchStore` (the Store protocol; opened from settings by
  :mod:`indexer.stores.factory`), :mod:`.options` what it is fixed to, :mod:`.searching` runs its
  checked searches,
- :mod:`.type_index` keeps type vectors by phrase for clients without the model,
- :mod:`.bulk` indexes with ``streaming_bulk``, :mod:`.reindex` swaps the alias to a new index,
- :mod:`.kibana` imports the saved objects (it and :mod:`.urls` need no client). The index
  mapping and the search template are the JSON files of ``indexer/assets/mappings/``.
"""

from __future__ import annotations

import importlib
from typing import Any

# imported when first asked for: ``.kibana`` and ``.urls`` need no client, and importing this
# package for them made ``nerindex kibana import`` ask for the [elasticsearch] extra (an audit)
_EXPORTS = {
    "BulkOptions": ".bulk",
    "ConnectionOptions": ".client",
    "ElasticsearchStore": ".store",
    "SEARCH_TEMPLATE_ID": ".store",
    "StoreOptions": ".options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
