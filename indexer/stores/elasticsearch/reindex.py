"""Zero-downtime re-index: build a new versioned index (e.g. with a new model), then move the alias.

The passages (id, text, metadata) are read back from the index the alias points at, encoded again
with the given encoder, and bulk-written into ``<alias>-<n+1>``. Only when every passage made it
does one ``_aliases`` request move the alias from the old index to the new one, so searches see
either the old index or the complete new one, never a mix of models.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from elasticsearch import NotFoundError

from ...errors import StoreError
from ...records import EncodedPassage, Passage
from ..base import WRITE_CHUNK, ModelStamp, WriteOutcome
from ..filter_rules import passage_problem
from . import responses as rs
from .aliases import indices_behind
from .bulk import write_documents
from .index_requests import (
    FILTER_FORMAT,
    alias_swap_actions,
    create_index_body,
    is_versioned_index,
    next_index_name,
    refresh_settings,
    span_vector_index_options,
)
from .paged_requests import scan_body
from .store import MIN_SERVER, ElasticsearchStore
from .templates import refresh_interval

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """What re-indexing needs from an encoder (``indexer.encoder.OnnxEncoder`` satisfies it)."""

    def encode(self, passages: Sequence[Passage], *, batch_size: int = 32) -> list[EncodedPassage]:
        ...


@dataclass
class ReindexReport:
    """What a re-index did; ``swapped`` is False when failures kept the alias where it was."""

    alias: str
    old_index: str
    new_index: str
    model: dict[str, Any]
    passages: int = 0
    failed: int = 0
    swapped: bool = False
    deleted_old: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def count(self, outcomes: Sequence[WriteOutcome]) -> None:
        """Add the outcomes of one chunk (the first 100 failures are kept with their errors)."""
        self.passages += len(outcomes)
        for outcome in outcomes:
            if not outcome.ok:
                self.failed += 1
                if len(self.failures) < 100:
                    self.failures.append({"id": outcome.id, "error": outcome.error})


def iter_passages(store: ElasticsearchStore, index: str, *, page_size: int = 500) -> Iterator[Passage]:
    """Every passage stored in ``index``, in id order (:func:`scan_body`: the index must refuse
    writes while it is read, as :func:`reindex` makes it)."""
    after: list[Any] | None = None
    while True:
        with store.errors(f"read passages from {index!r}"):
            response = store.client.search(index=index, body=scan_body(size=page_size, search_after=after)).body
        hits = rs.raw_hits(response)
        for hit in hits:
            source = hit.get("_source") or {}
            yield Passage(id=rs.hit_id(hit), text=str(source.get("text", "")), fields=dict(source.get("fields") or {}))
        after = rs.last_sort_values(response)
        if after is None or len(hits) < page_size:
            return


def _batches(items: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    batch: list[Passage] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def current_index(store: ElasticsearchStore) -> str:
    """The one concrete index the store's alias points at (a plain index cannot be swapped)."""
    client = store.client
    with store.errors(f"read alias {store.alias!r}"):
        if client.indices.exists(index=store.alias) and not client.indices.exists_alias(name=store.alias):
            behind = sorted(client.indices.get_alias(index=store.alias).body.get(store.alias, {}).get("aliases", {}))
            if behind:  # an audit: the advice was to build a new store, where the alias was the answer
                raise StoreError(f"{store.alias!r} is the index behind the alias {behind[0]!r}: re-indexing moves "
                                 f"an alias, so use --es-index {behind[0]}")
            raise StoreError(
                f"{store.alias!r} is an index, not an alias; re-indexing moves an alias, so create "
                f"the index with nerindex (it makes {store.alias}-000001 behind the alias {store.alias})"
            )
    indices = indices_behind(store, store.alias)
    if indices is None:
        raise StoreError(f"alias {store.alias!r} does not exist: nothing to re-index")
    if len(indices) != 1:
        raise StoreError(f"alias {store.alias!r} points at {len(indices)} indices: {indices}")
    return indices[0]


def reindex(
    store: ElasticsearchStore,
    encoder: Encoder,
    stamp: ModelStamp,
    *,
    index_options: str | Mapping[str, Any] | None = None,
    batch_size: int = 32,
    chunk_size: int = WRITE_CHUNK,
    delete_old: bool = False,
    allow_failures: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> ReindexReport:
    """Re-encode every passage behind the alias with ``encoder`` into a new index; swap the alias.

    ``stamp`` is the encoder's model (recorded in the new index). ``index_options`` None gives the
    new index the old one's ``spans.vector.index_options`` (the store's only where the old index
    has none): a store opened with other options does not change them here; pass them.
    With failures the alias stays on the old index and the new one is kept for inspection, unless
    ``allow_failures``. While it runs
    the old index refuses writes (a write there would be missing from the new one): writers get a
    failure they can retry after the swap; after it the old index stays read-only.
    Passages are encoded ``chunk_size`` at a time with ``batch_size`` windows per encoder call,
    as ``nerindex index`` does (the int8 encoder's outputs depend on what shares a batch, so the
    same batching gives the same vectors). ``on_batch(done, failed)`` is called after each chunk
    (progress display).
    """
    store.require_version(MIN_SERVER, "nerindex's nested span search")
    old = current_index(store)
    lock = _lock(store, old)
    try:
        # another run may have moved the alias between the look and the lock (an audit: this run
        # then took the moved-from index for one a killed run had blocked)
        if (now := current_index(store)) != old:
            raise StoreError(f"the alias {store.alias!r} moved from {old!r} to {now!r} while this run started "
                             "(another 'nerindex es reindex' finished): run it again if it is still wanted")
        return _reindex_locked(store, encoder, stamp, old, index_options=index_options, batch_size=batch_size,
                               chunk_size=chunk_size, delete_old=delete_old, allow_failures=allow_failures,
                               on_batch=on_batch)
    finally:  # best effort: a failure here must not hide the run's own outcome (a swap done, say)
        try:
            store.client.indices.delete(index=lock, ignore_unavailable=True)
        except Exception as exc:  # the client raises its own transport and API errors
            log.warning("the lock index %s was not deleted (%s): delete it (DELETE %s) before the next es reindex",
                        lock, exc, lock)


def _reindex_locked(
    store: ElasticsearchStore, encoder: Encoder, stamp: ModelStamp, old: str, *,
    index_options: str | Mapping[str, Any] | None, batch_size: int, chunk_size: int, delete_old: bool,
    allow_failures: bool, on_batch: Callable[[int, int], None] | None,
) -> ReindexReport:
    """:func:`reindex` once this run holds the alias's lock."""
    client = store.client
    new = next_index_name(store.alias, store.versioned_indices())
    report = ReindexReport(alias=store.alias, old_index=old, new_index=new, model=stamp.to_dict())
    log.info("re-indexing %s (%s) into %s with model %s %s", store.alias, old, new, stamp.id, stamp.version)
    # Writes of a load still inside its refresh interval (30 s while relaxed) are invisible to the
    # searches the passages are read through: refresh first, or they would be left behind.
    # A write acknowledged after that would be left behind too, and lost when the alias moves:
    # the old index refuses writes until the alias has moved (or, on failure, again accepts them).
    store.flush()
    # Creating the new index is this run's claim: a second run of the same alias either fails to
    # create the same name, or finds the old index blocked below. Either way it stops before it
    # blocks or unblocks anything; only a block this run placed is lifted.
    options, source = _new_options(store, old, index_options)
    body = _claim(store, new, create_index_body(stamp, index_options=options), source)
    _refuse_a_second_run(store, old, new)
    with store.errors(f"block writes to {old!r}"):
        client.indices.add_block(index=old, block="write")
    try:
        report = _copy_and_swap(store, encoder, stamp, report, template_interval=refresh_interval(body),
                                batch_size=batch_size, chunk_size=chunk_size, delete_old=delete_old,
                                allow_failures=allow_failures, on_batch=on_batch)
    finally:
        if not report.swapped:  # the alias stays: its index takes writes again (best effort: keep the first error)
            try:
                client.indices.put_settings(index=old, settings={"index.blocks.write": False})
            except Exception as exc:  # the client raises its own transport and API errors
                log.warning("%s still refuses writes (%s): PUT %s/_settings {\"index.blocks.write\": false}", old, exc, old)
    return report


def _drop_unfinished(store: ElasticsearchStore, report: ReindexReport) -> None:
    """Delete the new index of a run stopped (Ctrl-C) while it copied, before the swap was sent,
    best effort: it held part of the passages, and nothing removed it later (a CLI audit: one more
    "beside it" index a try). Not where the alias names it (a second look, should one ever)."""
    try:
        if not report.swapped and current_index(store) != report.new_index:
            store.client.indices.delete(index=report.new_index, ignore_unavailable=True)
            log.warning("stopped before the swap: the unfinished index %s was deleted", report.new_index)
    except Exception as exc:  # the client raises its own transport and API errors
        log.warning("stopped before the swap: the unfinished index %s was not deleted (%s): DELETE %s",
                    report.new_index, exc, report.new_index)


LOCK_SUFFIX = "-reindexing"


def lock_name(alias: str) -> str:
    """The index that is an alias's re-index lock (:func:`_lock`)."""
    return f"{alias}{LOCK_SUFFIX}"


def _lock(store: ElasticsearchStore, old: str) -> str:
    """Create ``<alias>-reindexing``, the lock of one run of an alias (a hidden, empty index). An
    index is created once, so of two runs started together one gets it and the other stops before
    it blocks, unblocks or claims anything (an audit: both passed the look at the old index's write
    block before either placed it; the second, stopped, lifted the block the first relied on, and a
    write acknowledged meanwhile was lost at the swap). A create the client sent again after a
    timeout finds the run's own claim."""
    lock, claim = lock_name(store.alias), uuid.uuid4().hex
    try:
        with store.errors(f"create the lock index {lock!r}"):
            store.client.indices.create(
                index=lock, settings={"index.number_of_shards": 1, "index.number_of_replicas": 0, "index.hidden": True},
                mappings={"_meta": {"reindex_claim": claim, "old_index": old}},
            )
    except StoreError as exc:
        if "resource_already_exists" not in str(exc):
            raise
        if _claimed_by(store, lock) == claim:
            return lock
        raise StoreError(
            f"another 'nerindex es reindex' of {store.alias!r} is running ({lock!r} exists). If none is "
            f"running (one was stopped), delete {lock!r}, lift the write block of {old!r} if it has one "
            f"(PUT {old}/_settings {{\"index.blocks.write\": false}}) and delete what it left: "
            f"{_leftovers(store, old)}"
        ) from exc
    return lock


def reindex_lock(store: ElasticsearchStore) -> str | None:
    """The name of the alias's re-index lock where it exists (a run holds it, or a killed one left it)."""
    lock = lock_name(store.alias)
    with store.errors(f"look for {lock!r}"):
        return lock if store.client.indices.exists(index=lock) else None


def _leftovers(store: ElasticsearchStore, old: str) -> str:
    """The versioned indices a stopped run of ``old`` can have left: those numbered after it (a run
    builds the next number after every one in use) that the alias does not point at. Earlier ones
    are the copies kept by finished runs, and the alias's own index is live (an audit: both were
    named as indices to delete). The hint's wildcard ``<alias>-*`` had matched the types index too."""
    behind = set(indices_behind(store, store.alias) or ())
    number = _version_number(store.alias, old)
    names = sorted(n for n in store.versioned_indices() if is_versioned_index(store.alias, n) and n not in behind
                   and n != old and (number is None or (_version_number(store.alias, n) or 0) > number))  # fmt: skip
    return ", ".join(names) if names else "no other index"


def _version_number(alias: str, name: str) -> int | None:
    """``7`` for ``<alias>-000007``; None for another name."""
    return int(name.rsplit("-", 1)[1]) if is_versioned_index(alias, name) else None


def _new_options(store: ElasticsearchStore, old: str, asked: str | Mapping[str, Any] | None) -> tuple[Any, str]:
    """(the new index's vector index options, where they come from): those asked for, else the
    old index's own (not of whatever the alias points at by now; re-indexing for a new model went
    back to the store's default, int8_hnsw after an index made with hnsw: a newcomer check), else
    the store's (an index made before nerindex pinned them)."""
    if asked is not None:
        return asked, "asked for"
    with store.errors(f"read the mapping of {old!r}"):
        response = store.client.indices.get_mapping(index=old)
    kept = span_vector_index_options(rs.index_mapping(response.body, target=old)[1])
    if kept is None:
        return store.options.index_options, "the default"
    return kept, f"those of {old!r}; --index-options gives others"


def _claim(store: ElasticsearchStore, new: str, body: dict[str, Any], source: str) -> dict[str, Any]:
    """Create the new index (``body``; bulk-load refresh interval); another run that took the
    name first is a refusal that names it, not a failure to guess at; options the server refuses
    are named with where they came from."""
    client = store.client
    claim = uuid.uuid4().hex  # in the new index's _meta: a create the client sent again after a timeout
    body = {**body, "mappings": {**body["mappings"], "_meta": {**body["mappings"].get("_meta", {}), "reindex_claim": claim}}}
    try:
        with store.errors(f"create index {new!r}"):
            client.indices.create(index=new, **body)
    except StoreError as exc:
        if "resource_already_exists" in str(exc) and _claimed_by(store, new) == claim:
            log.info("index %s was created by this run's first try (the client tried again after a timeout)", new)
        elif "resource_already_exists" in str(exc):
            raise StoreError(
                f"index {new!r} exists already: another 'nerindex es reindex' of {store.alias!r} is "
                f"running (or one was stopped and left it: delete it if none is running)"
            ) from exc
        else:
            raise StoreError(f"{exc} (spans.vector index_options {span_vector_index_options(body['mappings'])}: "
                             f"{source})") from exc
    if store.options.bulk_refresh_interval:
        with store.errors(f"set the refresh interval of {new!r}"):
            client.indices.put_settings(index=new, settings=refresh_settings(store.options.bulk_refresh_interval))
    return body


def _claimed_by(store: ElasticsearchStore, index: str) -> str | None:
    """The ``reindex_claim`` of ``index``'s _meta: which run created it (an audit: with a short
    --es-timeout the client sent the create again, and the run took its own index for a rival's)."""
    with store.errors(f"read the mapping of {index!r}"):
        response = store.client.indices.get_mapping(index=index)
    meta = rs.index_mapping(response.body, target=index)[1].get("_meta") or {}
    return meta.get("reindex_claim")


def _refuse_a_second_run(store: ElasticsearchStore, old: str, new: str) -> None:
    """Stop (dropping the index this run claimed) when ``old`` already refuses writes: another
    run is copying from it, or one was killed and left the block."""
    if not write_blocked(store, old):
        return
    with suppress(Exception):
        store.client.indices.delete(index=new)
    raise StoreError(
        f"{old!r} already refuses writes: another 'nerindex es reindex' of {store.alias!r} is running, "
        f"or one was stopped before it finished. If none is running, lift the block "
        f"(PUT {old}/_settings {{\"index.blocks.write\": false}}) and delete the indices such a run left "
        f"beside it: {_leftovers(store, old)}"
    )


def write_blocked(store: ElasticsearchStore, index: str) -> bool:
    """Whether ``index`` refuses writes (``index.blocks.write``, which a re-index sets)."""
    with store.errors(f"read the settings of {index!r}"):
        response = store.client.indices.get_settings(index=index, name="index.blocks.write", flat_settings=True)
    settings = (response.body.get(index) or {}).get("settings") or {}
    return str(settings.get("index.blocks.write", "false")).lower() == "true"


def _copy_and_swap(store: ElasticsearchStore, encoder: Encoder, stamp: ModelStamp, report: ReindexReport, *,
                   template_interval: str | None, batch_size: int, chunk_size: int,
                   delete_old: bool, allow_failures: bool, on_batch: Callable[[int, int], None] | None
                   ) -> ReindexReport:
    """The copy of :func:`reindex` into the claimed index, with the old index refusing writes:
    read, encode, write, swap."""
    try:
        _copy(store, encoder, stamp, report, template_interval=template_interval, batch_size=batch_size,
              chunk_size=chunk_size, on_batch=on_batch)
    except KeyboardInterrupt:  # before the swap was sent: the new index is this run's alone
        _drop_unfinished(store, report)
        raise
    if report.failed and not allow_failures:
        raise StoreError(
            f"{report.failed} of {report.passages} passages failed to re-index into {report.new_index!r}; the "
            f"alias {store.alias!r} stays on {report.old_index!r} (inspect or delete {report.new_index!r}, or pass "
            f"--allow-failures). First failure: {report.failures[0]['id']}: {report.failures[0]['error']}"
        )
    _swap(store, report, delete_old=delete_old)
    return report


def _copy(store: ElasticsearchStore, encoder: Encoder, stamp: ModelStamp, report: ReindexReport, *,
          template_interval: str | None, batch_size: int, chunk_size: int,
          on_batch: Callable[[int, int], None] | None) -> None:
    """Every passage of the old index, read, encoded and written into the new one, counted in
    ``report``; then the new index's refresh interval put back and a refresh."""
    client, old, new = store.client, report.old_index, report.new_index
    with store.errors(f"refresh {old!r}"):
        client.indices.refresh(index=old)
    for read in _batches(iter_passages(store, old, page_size=store.options.page_size), chunk_size):
        # what an older version stored and no writer takes now (a review: metadata with a type mark
        # was copied, and then matched a number filter): failed passages, not copies
        checked = [(p, passage_problem(p)) for p in read]
        report.count([WriteOutcome(p.id, False, "failed", problem) for p, problem in checked if problem is not None])
        batch = [p for p, problem in checked if problem is None]
        if batch:
            encoded = encoder.encode(batch, batch_size=batch_size)
            with store.errors(f"bulk index into {new!r}"):
                report.count(write_documents(client, encoded, stamp=stamp, index=new, options=store.options.bulk,
                                             typed_filters=FILTER_FORMAT))  # create_index_body made it so
        if on_batch is not None:
            on_batch(report.passages, report.failed)
    with store.errors(f"refresh {new!r}"):
        client.indices.put_settings(index=new, settings=refresh_settings(template_interval))
        client.indices.refresh(index=new)


def _swap(store: ElasticsearchStore, report: ReindexReport, *, delete_old: bool) -> None:
    """Move the alias to the new index in one request; then delete the old one if asked, unless
    passages failed (``--allow-failures``): the old index holds their only copy (an audit: they were
    deleted with it, and the run exited 0).

    The client resends a request whose answer was lost (a timeout, a gateway's 502–504); a resent
    swap or delete finds its first try done, a 404, and a run that had succeeded was reported failed
    (an audit). So a 404 counts as done where the alias, or the missing index, says it was."""
    with store.errors(f"move alias {store.alias!r} to {report.new_index!r}"):
        try:
            store.client.indices.update_aliases(actions=alias_swap_actions(store.alias, report.old_index, report.new_index))
        except NotFoundError:
            if indices_behind(store, store.alias) != [report.new_index]:
                raise
            log.info("alias %r: a resent swap found it moved by its first try", store.alias)
    report.swapped = True
    if delete_old and not report.failed:
        with store.errors(f"delete the old index {report.old_index!r}"), suppress(NotFoundError):
            store.client.indices.delete(index=report.old_index)
        report.deleted_old = True
    store.forget_index()  # the alias now points at another index, maybe another model
