"""Which concrete indices an alias points at now.

Another process may move the alias at any time (``nerindex es reindex``), so what was read about
the index behind it goes stale: a re-index reads it before it copies, and a writer before every
chunk (``ElasticsearchStore.write``), one small ``GET _alias`` request each.
"""

from __future__ import annotations

import logging
from typing import Any

from elasticsearch import NotFoundError

from ..base import ModelStamp, WriteOutcome
from . import responses as rs
from .index_requests import is_versioned_index

log = logging.getLogger(__name__)


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


def recheck_target(store: Any, checked: tuple[str, ModelStamp] | None) -> str:
    """Before a write, the concrete index to send it to: the one ``check_model`` checked the
    writer's model against (``checked``), or the alias where none was. If the alias moved since (an
    ``es reindex`` finished meanwhile), the writer's model is checked against the index it points
    at now and its facts read, not written with the old one's (another model's spans past the
    guard: an audit)."""
    if checked is None:
        return store.alias
    index, stamp = checked
    now = index_behind(store, store.alias)
    if now != index:
        log.warning("alias %s moved from %s since this run began: checking the model again", store.alias, index)
        store.forget_index()
        store.check_model(stamp)  # raises unless the writer's model may write into ``now``
    return now


def written_where_checked(store: Any, index: str, written: list[WriteOutcome]) -> list[WriteOutcome]:
    """The outcomes of a bulk request sent to ``index``, the concrete index :func:`recheck_target`
    checked, with the writes counted failed where the alias no longer names it afterwards.

    Writes go to the checked index, not through the alias: an alias moved by ``es reindex``
    between the look and the bulk request sent one model's spans into another model's index
    without a word (an audit). Sent to the old index, they fail (a re-index blocks its writes
    before it copies), unless the re-index deleted it (``--delete-old``) in between: then the bulk
    request made a fresh index of that name, outside the alias, so the alias is looked up again
    after every write that stored or failed something (not one that only skipped), one small request.
    Failures too: the fresh index maps the first span vector as floats and refuses the rest, whose
    error ("cannot be changed from type [dense_vector]") said nothing of the move (an audit)."""
    touched = [not (o.ok and o.action == "skipped") for o in written]
    if index == store.alias or not any(touched) or index_behind(store, store.alias) == index:
        return written
    why = (f"alias {store.alias!r} moved away from {index!r} during this write (an es reindex): not stored "
           f"behind the alias; index these passages again")
    log.warning("%s (%d passages)", why, sum(touched))
    _drop_if_made_by_the_write(store, index)
    return [WriteOutcome(o.id, False, "failed", why) if t else o for o, t in zip(written, touched)]


def _drop_if_made_by_the_write(store: Any, index: str) -> None:
    """Delete ``index`` where the bulk request itself created it, outside the alias (a re-index with
    ``--delete-old`` had deleted it): such an index has no ``_meta``, which every index nerindex
    makes has. Left, it held a version number and showed in ``es status`` beside kept copies."""
    try:
        response = store.client.indices.get_mapping(index=index)
        if rs.index_mapping(response.body, target=index)[1].get("_meta"):
            return
        store.client.indices.delete(index=index)
        log.warning("deleted %s, which this write had created outside the alias", index)
    except Exception as exc:  # best effort: the write's own outcome is what counts
        log.info("could not look at or delete %s (%s)", index, exc)
