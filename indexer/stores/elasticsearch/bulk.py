"""Bulk indexing with elasticsearch-py's ``streaming_bulk``: retries on 429, failures kept as data.

Passages in, one :class:`~indexer.stores.base.WriteOutcome` per passage out, in input order.
Rejections with 429 (the cluster is busy) are retried with exponential back-off by the helper;
anything else a document meets (mapping errors, a failed chunk) is reported for that passage and
counted, never swallowed and never fatal to the rest of the batch. A bulk request without an
answer (a timeout, a dropped connection, a gateway's 502/503/504) is sent again here, not by the
transport, so that the passages the unanswered try may have stored are known: their ``create``
refused as "already stored" is told apart from another writer's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError
from elasticsearch.helpers import streaming_bulk

from ...records import EncodedPassage
from ..base import ModelStamp, WriteOutcome
from . import responses as rs
from .client import MAX_RETRIES
from .index_requests import bulk_actions, document_id, may_share_document_id

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
    answers: dict[int, tuple[bool, dict[str, Any]]] | None = None,
) -> list[WriteOutcome]:
    """Index passages into ``index`` (an alias or a concrete index); one outcome per passage;
    ``typed_filters``: the index has ``filter_texts`` (``index_requests.filter_texts``);
    ``replace=False``: stored ids are left as they are (``skipped``, ``Store.write``); ``answers``:
    filled with the server's answer per position as requests are answered, so that a caller whose
    write fails part way knows what was stored (:func:`stored_count`)."""
    if not docs:
        return []
    actions = list(bulk_actions(docs, stamp, index, typed_filters=typed_filters, replace=replace))
    answers = {} if answers is None else answers
    resent: set[int] = set()
    # replacing: which ids were stored before each chunk went out, so that a passage whose first
    # try stored it, unanswered, and whose second try then "updated" it is counted as new (an audit)
    stored_before: set[str] | None = set() if replace else None
    for start in range(0, len(actions), options.chunk_size):
        positions = list(range(start, min(start + options.chunk_size, len(actions))))
        if stored_before is not None:
            stored_before = _stored_ids(client, index, [actions[p]["_id"] for p in positions], stored_before)
        _send(client, actions, positions, options, answers, resent)
    outcomes = [_outcome(doc.passage.id, answers.get(position)) for position, doc in enumerate(docs)]
    if resent and not replace:
        outcomes = _settle_resent_creates(client, index, docs, outcomes, resent)
    if resent and stored_before is not None:
        outcomes = [dataclasses.replace(o, action="created")
                    if p in resent and o.action == "updated" and actions[p]["_id"] not in stored_before else o
                    for p, o in enumerate(outcomes)]  # fmt: skip
    failed = rs.count_failures(outcomes)
    if failed:
        first = next(o for o in outcomes if not o.ok)
        log.warning(
            "%d of %d passages failed to index into %s (first: %s: %s)%s",
            failed, len(outcomes), index, first.id, first.error,
            BLOCKED_HINT if any(WRITE_BLOCK in (o.error or "") for o in outcomes) else "",
        )
    return outcomes


MGET_IDS = 1000  # document ids one _mget request asks for


def stored_sources(client: Elasticsearch, index: str, doc_ids: Sequence[str], *,
                   source: bool | list[str]) -> dict[str, dict[str, Any]]:
    """``_id`` → ``_source`` (only the fields ``source`` names; empty for False) of the documents
    among ``doc_ids`` that ``index`` holds, real-time, ``MGET_IDS`` a request: the one lookup of
    stored documents (the store's stored ids and texts, a write's checks after an unanswered request).
    Client errors are the caller's."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(doc_ids), MGET_IDS):
        chunk = list(doc_ids[start : start + MGET_IDS])
        found |= rs.found_sources(client.mget(index=index, ids=chunk, source=source).body)
    return found


def stored_passages(client: Elasticsearch, index: str, ids: Sequence[str], *,
                    source: bool | list[str]) -> dict[str, dict[str, Any]]:
    """{passage id: ``_source`` (empty for ``source=False``)} of the passages among ``ids`` that
    ``index`` holds (none where it does not exist). A document under a passage's ``_id`` that holds
    another passage (a long id and an id spelling its hash: :func:`id_collisions`) is not that
    passage's. Client errors are the caller's."""
    wanted: dict[str, list[str]] = {}
    for pid in ids:
        wanted.setdefault(document_id(pid), []).append(pid)
    shared = any(may_share_document_id(pid) for pid in ids)
    fields = source if not shared or source is True else [*(source or []), "id"]
    try:
        found = stored_sources(client, index, list(wanted), source=fields)
    except NotFoundError:
        return {}
    return {pid: doc if source is not False else {}
            for doc_id, doc in found.items() for pid in wanted.get(doc_id, ())
            if not shared or doc.get("id", pid) == pid}  # fmt: skip


def id_collisions(client: Elasticsearch, index: str, passage_ids: Sequence[str]) -> dict[str, str]:
    """{passage id: the other passage id that holds its ``_id``}, stored or earlier in
    ``passage_ids``: written, one would overwrite (or with ``replace=False`` "skip") the other (an
    audit; rare: an id over 512 bytes and another spelling its hash, :func:`may_share_document_id`).
    Client errors are the caller's; an index that does not exist holds none."""
    suspects = [pid for pid in passage_ids if may_share_document_id(pid)]
    holders: dict[str, str] = {}
    out: dict[str, str] = {}
    for pid in suspects:
        doc_id = document_id(pid)
        if holders.setdefault(doc_id, pid) != pid:
            out[pid] = holders[doc_id]
    if not holders:
        return out
    try:
        found = stored_sources(client, index, sorted(holders), source=["id"])
    except NotFoundError:
        found = {}
    for pid in suspects:
        other = found.get(document_id(pid), {}).get("id", pid)
        if other != pid:
            out.setdefault(pid, other)
    return out


def _stored_ids(client: Elasticsearch, index: str, ids: list[str], found: set[str]) -> set[str] | None:
    """``found`` with those of ``ids`` the index holds; None where the lookup fails (the write goes
    on; only its count of new against updated passages after an unanswered request is then unknown)."""
    try:
        return found | set(stored_sources(client, index, ids, source=False))
    except (ApiError, TransportError) as exc:
        log.info("could not look up which passages are stored (%s): after a request without an answer, "
                 "new passages may count as updated", exc)
        return None


# answers that say nothing of whether the server applied the request: a proxy's gateway errors
UNKNOWN_OUTCOME = (502, 503, 504)


def _send(
    client: Elasticsearch, actions: list[dict[str, Any]], positions: list[int], options: BulkOptions,
    answers: dict[int, tuple[bool, dict[str, Any]]], resent: set[int],
) -> None:
    """Send the actions at ``positions`` (one bulk request, or a few where they pass
    ``max_chunk_bytes``); their results go into ``answers`` and the positions sent again into
    ``resent``.

    The transport does not retry these requests: after a timeout, a dropped connection or a
    gateway's 502/503/504 it re-sent the whole request, which the server may have applied, and
    every passage the first try had stored came back "already stored" (an audit; the data were
    right, the summary was not). Here only the actions left without an answer are sent again, up
    to ``MAX_RETRIES`` times in a row without progress; 429s are ``streaming_bulk``'s to retry.
    """
    once = client.options(max_retries=0, retry_on_status=())
    pending, tries = positions, 0
    while pending:
        got: list[tuple[bool, dict[str, Any]]] = []
        try:
            for result in streaming_bulk(
                once, [actions[p] for p in pending], chunk_size=len(pending),
                max_chunk_bytes=options.max_chunk_bytes, max_retries=options.max_retries,
                initial_backoff=options.initial_backoff, max_backoff=options.max_backoff,
                raise_on_error=False, raise_on_exception=False, yield_ok=True,
            ):
                got.append(result)
            error: Exception | None = None
        except (ConnectionTimeout, TransportConnectionError) as exc:
            error = exc
        left = _match(actions, pending, got, answers)
        if not left:
            return
        tries = 0 if len(left) < len(pending) else tries + 1
        if tries > MAX_RETRIES:
            refused = _whole_request_refused(left, pending)
            if error is not None or refused is not None:
                # the cluster is not there (a proxy's 503 for the whole request): stop the run, as
                # a timeout does, rather than wait out the back-off for every chunk (a review)
                raise error or refused  # type: ignore[misc]
            # gateway errors to the end: failed, as answered (no answer at all: failed, saying so)
            answers.update((position, result) for position, result in left.items() if result is not None)
            return
        resent.update(left)
        pending = sorted(left)
        log.info("a bulk request got no answer (%s): sending its %d passages again",
                 error or "a gateway error", len(pending))
        if error is None:  # a gateway that said 503 may need a moment, as a 429 gets
            time.sleep(min(options.max_backoff, options.initial_backoff * 2 ** max(0, tries - 1)))


def _whole_request_refused(
    left: dict[int, tuple[bool, dict[str, Any]] | None], pending: list[int]
) -> Exception | None:
    """The gateway's error when every pending action got it (the request itself was refused), or None."""
    if len(left) < len(pending) or any(result is None for result in left.values()):
        return None
    errors = [_item(result).get("exception") for result in left.values() if result]
    return errors[0] if errors and all(isinstance(e, ApiError) for e in errors) else None


def _match(
    actions: list[dict[str, Any]], pending: list[int], got: list[tuple[bool, dict[str, Any]]],
    answers: dict[int, tuple[bool, dict[str, Any]]],
) -> dict[int, tuple[bool, dict[str, Any]] | None]:
    """Record ``got`` (results by ``_id``, in order) for the ``pending`` positions; return the
    positions still without an answer, each with its gateway error (or None: none came)."""
    queues: dict[str, deque[int]] = defaultdict(deque)
    for position in pending:
        queues[actions[position]["_id"]].append(position)
    left: dict[int, tuple[bool, dict[str, Any]] | None] = {}
    for result in got:
        doc_id = rs.parse_bulk_item(result[1])[0]
        queue = queues.get(doc_id)  # type: ignore[arg-type]
        if not queue:
            continue
        position = queue.popleft()
        if _item(result).get("status") in UNKNOWN_OUTCOME:
            left[position] = result
        else:
            answers[position] = result
    for queue in queues.values():
        left.update((position, None) for position in queue)
    return left


def _item(result: tuple[bool, dict[str, Any]]) -> dict[str, Any]:
    """The item of one ``streaming_bulk`` result ``(ok, {op_type: item})``."""
    return next(iter(result[1].values()), {})


def stored_count(answers: Mapping[int, tuple[bool, dict[str, Any]]]) -> int:
    """Passages the answered bulk items stored (created or updated)."""
    return sum(o.ok and o.action in ("created", "updated") for o in (_outcome("", a) for a in answers.values()))


def _outcome(passage_id: str, answer: tuple[bool, dict[str, Any]] | None) -> WriteOutcome:
    """The outcome of one passage from its bulk result (None: the server never answered for it)."""
    if answer is None:
        return WriteOutcome(id=passage_id, ok=False, action="failed", error=rs.NO_RESULT)
    _, ok, action, error = rs.parse_bulk_item(answer[1])
    return WriteOutcome(id=passage_id, ok=ok, action=action, error=error)


def _settle_resent_creates(
    client: Elasticsearch, index: str, docs: Sequence[EncodedPassage], outcomes: list[WriteOutcome],
    resent: set[int],
) -> list[WriteOutcome]:
    """A ``create`` refused after its request was sent again: the passage was stored by the try
    that got no answer (the stored text is this passage's: "created", once per id) or by another
    writer (left as it is: "skipped"). A rival that stored the same text under the same id
    counts as this run. Where the check itself fails, the outcomes stay as answered."""
    doubtful = [p for p in sorted(resent) if outcomes[p].action == "skipped"]
    if not doubtful:
        return outcomes
    ids = sorted({document_id(docs[p].passage.id) for p in doubtful})
    try:
        sources = stored_sources(client, index, ids, source=["text"])
    except (ApiError, TransportError) as exc:
        log.warning("could not read back %d passages sent again after no answer (%s): they count as "
                    "already stored", len(ids), exc)
        return outcomes
    settled = list(outcomes)
    for position in doubtful:
        doc_id = document_id(docs[position].passage.id)
        if doc_id in sources and sources[doc_id].get("text") == docs[position].passage.text:
            settled[position] = dataclasses.replace(outcomes[position], action="created")
            del sources[doc_id]  # one passage stored per id
    return settled


# how the server words a refusal by index.blocks.write, which 'nerindex es reindex' sets while it copies
WRITE_BLOCK = "index write (api)"
BLOCKED_HINT = (
    "; the index refuses writes: an 'es reindex' is copying from it (retry when it is done) or was "
    "stopped ('nerindex es status'; docs/elasticsearch.md says how to lift the block)"
)
