"""Which concrete indices an alias points at now.

Another process may move the alias at any time (``nerindex es reindex``), so what was read about
the index behind it goes stale: a re-index reads it before it copies, and a writer before every
chunk (``ElasticsearchStore.write``), one small ``GET _alias`` request each.
"""

from __future__ import annotations

from typing import Any

from elasticsearch import NotFoundError

from . import responses as rs


def indices_behind(store: Any, alias: str) -> list[str] | None:
    """The concrete indices ``alias`` points at; None when no alias has that name (it may name a
    plain index, or nothing). ``store``: an ``ElasticsearchStore`` (its client and error context)."""
    with store.errors(f"read alias {alias!r}"):
        try:
            response = store.client.indices.get_alias(name=alias)
        except NotFoundError:
            return None
    return rs.alias_indices(response.body, alias)


def index_behind(store: Any, alias: str) -> str:
    """The one index writes to ``alias`` reach, as :meth:`ElasticsearchStore.target` names it: the
    alias itself when it names a plain index; several joined with commas (writes then fail)."""
    indices = indices_behind(store, alias)
    return alias if indices is None else ",".join(indices)
