"""Which concrete indices an alias points at now.

Another process may move the alias at any time (``nerindex es reindex``), so what was read about
the index behind it goes stale: a re-index reads it before it copies, and a writer before every
chunk (``ElasticsearchStore.write``), one small ``GET _alias`` request each.
"""

from __future__ import annotations

from typing import Any

from elasticsearch import NotFoundError

from . import responses as rs
from .index_requests import is_versioned_index


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


def orphans(store: Any) -> list[str]:
    """The indices made for ``store``'s alias (``<alias>-000001``…) where no alias names them:
    a snapshot restored without its aliases, say (an audit: status said "no index yet", and the
    next index run encoded everything again into a new one)."""
    if indices_behind(store, store.alias):
        return []
    return sorted(n for n in store.versioned_indices() if is_versioned_index(store.alias, n))


def no_passages(store: Any) -> str:
    """Why a command that needs the alias's passages cannot run, where ``store.model()`` is None:
    the advice differs for an index nerindex did not make (indexing into it is refused too: an
    audit followed "run 'nerindex index' first" into that refusal) and for a lost alias."""
    if store.target() is not None:
        return f"index {store.alias!r} was not created by nerindex (its _meta records no model): check --es-index"
    lost = orphans(store)
    if lost:
        return (f"no alias {store.alias!r}, but indices made for it exist: {', '.join(lost)} (point the alias at "
                "the one to search: POST _aliases)")
    return (f"no index or alias {store.alias!r} written by nerindex: check --es-index, or run "
            f"'nerindex index --es-index {store.alias}' first")
