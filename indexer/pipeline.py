"""Indexing as a pipeline of small steps: passages in, per-passage outcomes out, a summary at the end.

It reads like elasticsearch-py's bulk helpers: :func:`index_chunks` yields what happened to each
chunk, :func:`index_passages` is a thin summary over it. Each chunk is written in one store
transaction (or one bulk request), so an interrupted run keeps whole passages only and a rerun skips
the ids already stored — resumable and idempotent. Input is consumed chunk by chunk (any iterable,
read lazily), so memory is bounded by one chunk, not by the input.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Protocol, Sequence

from .errors import InputError, StoreError
from .records import EncodedPassage, Passage, text_id
from .text import is_blank
from .stores.base import WRITE_CHUNK, Store, WriteOutcome
from .stores.filter_rules import id_problem, passage_problem

log = logging.getLogger(__name__)


class Encoder(Protocol):
    info: object

    def encode(
        self,
        passages: Sequence[Passage],
        *,
        batch_size: int = ...,
        progress: Callable[[int], None] | None = ...,
        windows: Callable[[int, int], None] | None = ...,
    ) -> list[EncodedPassage]: ...


MAX_NAMED = 20  # failures and changed texts a report names


@dataclass
class IndexReport:
    """What an indexing run did; failures are kept as data."""

    passages: int = 0
    created: int = 0
    updated: int = 0
    skipped_existing: int = 0
    failed: int = 0
    spans: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    interrupted_preparing: bool = False  # interrupted after every chunk was stored, preparing the search structures
    skipped_changed: int = 0  # of skipped_existing: stored with another text or metadata than this input's
    changed_ids: list[str] = field(default_factory=list)  # the first MAX_NAMED of those

    def add(self, outcomes: Sequence[WriteOutcome], docs: Sequence[EncodedPassage]) -> None:
        """Count a chunk: ``docs`` are the encoded passages, whose outcomes end ``outcomes``."""
        written = outcomes[len(outcomes) - len(docs):]
        self.spans += sum(len(d.spans) for d, o in zip(docs, written, strict=True) if o.ok and o.action != "skipped")
        for o in outcomes:
            if o.ok:
                self.created += o.action == "created"
                self.updated += o.action == "updated"
                self.skipped_existing += o.action == "skipped"
            else:
                self.failed += 1
                if len(self.errors) < MAX_NAMED:
                    self.errors.append(f"{o.id}: {o.error}")

    def to_dict(self) -> dict[str, object]:
        stored = self.created + self.updated
        return {
            "passages": self.passages,
            "created": self.created,
            "updated": self.updated,
            "skipped_existing": self.skipped_existing,
            "skipped_changed": self.skipped_changed,
            "changed_ids": self.changed_ids,
            "failed": self.failed,
            "spans": self.spans,
            "seconds": round(self.seconds, 3),
            # the passages encoded and stored (a run that skipped everything stored was 11,694/s: an audit)
            "passages_per_second": round(stored / self.seconds, 2) if self.seconds and stored else None,
            "errors": self.errors,
            "interrupted": self.interrupted,
            "interrupted_preparing": self.interrupted_preparing,
        }


def chunked(items: Iterable[Passage], size: int) -> Iterator[Sequence[Passage]]:
    """Lists of up to ``size`` items, taken from ``items`` as they are needed."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def refuse_copies_under_text_ids(passages: Sequence[Passage], store: Store) -> None:
    """Refuse to store a passage again whose text the store already holds under its text-hash id.

    nerindex 0.2.0 made ids from the text unless ``--id-field`` was given; now a key named ``id``
    is the id by default. Indexing the same file again into such a store would add every passage a
    second time under its new id, and every hit would be shown twice. One ``existing_ids`` lookup
    per chunk finds that case exactly, before anything of the chunk is written.
    """
    hashed = {h: p for p in passages if (h := text_id(p.text)) != p.id}
    if not hashed:
        return
    found = store.existing_ids(list(hashed))
    if found:
        first = min(found)
        raise InputError(
            f"{len(found)} passage(s) are stored already under ids made from their text (as "
            f"nerindex 0.2.0 did without --id-field), e.g. {hashed[first].id!r} as "
            f"{first!r}: indexing them under their own ids would store them twice. "
            "Index with --id-field '' (Python: id_field='') to keep text ids, or into a new store"
        )


def refuse_copies_anywhere(
    read: Callable[[], Iterable[Passage]], store: Store, *, chunk_size: int = WRITE_CHUNK
) -> None:
    """:func:`refuse_copies_under_text_ids` over a whole input, chunk by chunk, before any of it
    is written (``nerindex index`` reads its input once more for it, ``read``): run per chunk while
    writing, the refusal came after the chunks before it were stored, and indexing again as it
    advises then stored those twice. An empty store holds no copies: its input is not read."""
    if not store.counts().passages:
        return
    for chunk in chunked(read(), chunk_size):
        refuse_copies_under_text_ids(chunk, store)


def sort_chunk(
    chunk: Sequence[Passage], stored: Collection[str] | None, given: set[str]
) -> tuple[list[Passage], list[Passage], list[WriteOutcome]]:
    """(the passages of a chunk to encode, those skipped, outcomes of those refused).

    ``stored``: the chunk's ids already in the store, or None when stored ids are encoded again;
    those are skipped. ``given``: the ids of the run so far, this chunk's added: an id given again
    is refused, the first passage with it indexed (an audit: the second was counted "already
    stored", or, replacing, "updated" with the first as "created", for one stored passage; the
    readers refuse such a record by line). Refused too, as failed outcomes: passages whose text is
    empty or blank, which no search could find; whose id is not a non-blank string; whose id, text
    or fields hold a lone surrogate or a NUL, which no store holds as text
    (:func:`~.text.unicode_problem`); or whose metadata no filter could tell apart
    (:func:`~.stores.filter_rules.fields_problem`): :func:`~.stores.filter_rules.passage_problem`.
    The JSONL, CSV and Parquet readers refuse such records by line before this."""
    todo: list[Passage] = []
    skipped: list[Passage] = []
    refused: list[WriteOutcome] = []
    for p in chunk:
        problem = passage_problem(p)
        if problem is not None:  # the Python API's passages (the readers refuse such records by line)
            # an id that is no string is reported by its repr: the report stays JSON (b"x" was not)
            refused.append(WriteOutcome(p.id if isinstance(p.id, str) else repr(p.id), False, "failed", problem))
        elif is_blank(p.text):
            refused.append(WriteOutcome(p.id, False, "failed", "empty text: nothing in it could be found"))
        elif p.id in given:
            refused.append(WriteOutcome(p.id, False, "failed", GIVEN_TWICE))
        elif stored is not None and p.id in stored:
            given.add(p.id)
            skipped.append(p)
        else:
            given.add(p.id)
            todo.append(p)
    return todo, skipped, refused


GIVEN_TWICE = "its id was given before in this run: only the first passage with an id is indexed"


def index_chunks(
    passages: Iterable[Passage],
    encoder: Encoder,
    store: Store,
    *,
    batch_size: int = 32,
    chunk_size: int = WRITE_CHUNK,
    skip_existing: bool = True,
    progress: Callable[[int], None] | None = None,
    windows: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[list[Passage], list[str], list[EncodedPassage], list[WriteOutcome]]]:
    """Encode and write chunk by chunk; yields (skipped passages, the ids of those stored with
    another text, encoded docs, outcomes) per chunk: one outcome per passage not skipped
    (:func:`sort_chunk`), the refused ones first.

    A skipped passage is left as stored whatever its text (the first text wins; replacing is
    ``skip_existing=False``), but one stored with another text is named: a file of the same name in
    another folder, or an edited record, was dropped with nothing said but "not compared" (an audit).
    ``progress`` gets passages done; ``windows`` (windows done, windows of the chunk) per batch.
    """
    given: set[str] = set()
    for chunk in chunked(passages, chunk_size):
        # an id no store can hold (not a string, a lone surrogate, a NUL) is never stored: sort_chunk refuses it
        records = store.stored_records([p.id for p in chunk if id_problem(p.id) is None]) if skip_existing else None
        stored = None if records is None else {pid: text for pid, (text, _) in records.items()}
        todo, skipped, refused = sort_chunk(chunk, stored, given)
        changed = stored_otherwise(((p.id, p.text) for p in skipped), stored) if stored is not None else []
        changed += fields_otherwise(skipped, records or {}, set(changed))
        refuse_copies_under_text_ids(todo, store)
        if (skipped or refused) and progress is not None:
            progress(len(skipped) + len(refused))
        docs = encoder.encode(todo, batch_size=batch_size, progress=progress, windows=windows) if todo else []
        # skipping, the store checks again as it writes: another writer may have stored an id since
        outcomes = store.write(docs, replace=not skip_existing) if docs else []
        changed += _changed_meanwhile(store, docs, outcomes)
        yield skipped, changed, docs, refused + outcomes


def _changed_meanwhile(store: Store, docs: Sequence[EncodedPassage], outcomes: Sequence[WriteOutcome]) -> list[str]:
    """The ids the write skipped because another writer stored them since the check, stored with
    another text than this run's: two runs at once said "none whose text was compared differs" of
    passages they dropped with other texts (a store audit)."""
    raced = [o.id for o in outcomes if o.ok and o.action == "skipped"]
    if not raced:
        return []
    try:  # the write is done: a failed look must not make the run say nothing was stored (a review)
        theirs = store.stored_texts(raced)
    except StoreError as exc:
        log.warning("the texts of %d passage(s) another writer stored first could not be compared: %s", len(raced), exc)
        return []
    ours = {d.passage.id: d.passage.text for d in docs}
    return stored_otherwise(((pid, ours[pid]) for pid in raced), theirs)


def fields_otherwise(passages: Iterable[Passage], records: Mapping[str, tuple[str, Any]], named: set[str]) -> list[str]:
    """The ids of these skipped passages (not already ``named``) whose stored metadata is other
    than theirs, compared as JSON, as both stores keep it: a corrected field was left as stored
    and counted "already stored" (an audit). Metadata that is no JSON is refused elsewhere."""
    out = []
    for p in passages:
        if p.id in named or p.id not in records:
            continue
        try:
            ours = json.loads(json.dumps(p.fields, ensure_ascii=False))
        except (TypeError, ValueError):
            continue
        if _booleans_apart(ours) != _booleans_apart(records[p.id][1]):
            out.append(p.id)
    return out


def _booleans_apart(value: Any) -> Any:
    """A JSON value in which a boolean no longer equals a number (Python's ``True == 1``), as to
    filters (``true`` is never 1); 1 and 1.0 stay equal, as there. An audit: ``"flag": true``
    corrected to ``1`` was counted "already stored" and ``--where flag=1`` found nothing."""
    if isinstance(value, bool):
        return (bool, value)
    if isinstance(value, dict):
        return {k: _booleans_apart(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_booleans_apart(v) for v in value]
    return value


def stored_otherwise(passages: Iterable[tuple[str, str]], stored: Mapping[str, str]) -> list[str]:
    """The ids of these (id, text) pairs that ``stored`` holds with another text. An id that is its
    text's hash has that text, and costs no comparison."""
    return [pid for pid, text in passages if pid != text_id(text) and pid in stored and stored[pid] != text]


def index_passages(
    passages: Iterable[Passage],
    encoder: Encoder,
    store: Store,
    *,
    batch_size: int = 32,
    chunk_size: int = WRITE_CHUNK,
    skip_existing: bool = True,
    progress: Callable[[int], None] | None = None,
    windows: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Index passages into a store (guarding the model first) and summarise what happened.

    ``passages`` is read one chunk at a time; ``report.passages`` counts what was read."""
    store.check_model(encoder.info.stamp)
    report = IndexReport()
    began = time.perf_counter()
    try:
        for skipped, changed, docs, outcomes in index_chunks(
            passages,
            encoder,
            store,
            batch_size=batch_size,
            chunk_size=chunk_size,
            skip_existing=skip_existing,
            progress=progress,
            windows=windows,
        ):
            report.passages += len(skipped) + len(outcomes)
            report.skipped_existing += len(skipped)
            report.skipped_changed += len(changed)
            report.changed_ids.extend(changed[: max(0, MAX_NAMED - len(report.changed_ids))])
            report.add(outcomes, docs)
    except KeyboardInterrupt:
        report.interrupted = True
    except StoreError as exc:  # disk full, database locked, cluster gone: what is stored stays whole
        rerun = (
            "running the same command again resumes (passages already stored are skipped)"
            if skip_existing
            else "running the same command again completes it (stored passages are encoded again)"
        )
        stored = report.created + report.updated + exc.stored
        raise StoreError(f"{exc}; {stored} passage(s) of this run are known to be stored, each whole; {rerun}") from exc
    finally:
        report.seconds = time.perf_counter() - began
    return report
