"""Opening the store that :class:`~indexer.config.Settings` name: the one place that does it.

The CLI, :meth:`indexer.api.NerIndex.open`, the web service (through ``NerIndex.open``) and the
``nerindex es`` commands all come here, so a connection setting means the same everywhere.
The Elasticsearch client is imported only when an Elasticsearch store is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Settings
from .base import ModelStamp, Store

if TYPE_CHECKING:
    from .elasticsearch import ElasticsearchStore


def open_store(settings: Settings, *, create: bool = True, model: ModelStamp | None = None, **es_options: Any) -> Store:
    """Elasticsearch when the settings have a URL, else the embedded folder (made when ``create``).

    ``es_options`` go to :func:`open_elasticsearch` and are ignored by the embedded store;
    ``model`` (the run's) lets the embedded store refuse another model's store before it upgrades
    an older layout (:meth:`EmbeddedStore.open`).
    """
    if settings.es_url:
        return open_elasticsearch(settings, **es_options)
    from .embedded import EmbeddedStore

    return EmbeddedStore.open(settings.store, create=create, model=model)


def open_elasticsearch(settings: Settings, **options: Any) -> ElasticsearchStore:
    """The Elasticsearch store of the settings (URL, alias, credentials, TLS); makes no request.

    ``options`` are the other keyword arguments of :meth:`ElasticsearchStore.connect` (``hybrid``,
    ``num_candidates``, ``index_options``, ``client`` ...; ``request_timeout`` is the settings'
    ``es_timeout`` unless given here). Without a URL this
    is a :class:`~indexer.errors.StoreError`: there is no embedded store to fall back on.
    """
    from .elasticsearch import ElasticsearchStore

    return ElasticsearchStore.connect(
        settings.required_es_url(),
        index=settings.es_index,
        api_key=settings.es_api_key,
        basic_auth=settings.basic_auth(),
        ca_certs=settings.es_ca_certs,
        verify_certs=settings.es_verify_certs,
        **({"request_timeout": settings.es_timeout} if settings.es_timeout is not None else {}),
        **options,
    )
