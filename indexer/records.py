"""Plain data records that flow through nerindex: passages in, encoded spans, search hits out.

They are frozen dataclasses with no behaviour beyond conversion to JSON-ready dicts, so every layer
(readers, encoder, stores, search, CLI, web) can share them without importing each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np


def text_id(text: str) -> str:
    """Stable passage id from the text alone, so re-indexing the same input is idempotent."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class GoldSpan:
    """A labelled mention from annotated data: character offsets (end exclusive) and its tag name."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Passage:
    """One unit of retrieval: a stable id, the text, and user metadata kept as filterable fields.

    ``gold`` carries labelled mentions when the passage comes from annotated data (CoNLL/BIO);
    it is used by training and evaluation and never stored.
    """

    id: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    gold: tuple[GoldSpan, ...] = ()


@dataclass(frozen=True)
class EncodedSpan:
    """A detected span of a passage with its entity-ness score, catalog labels and unit vector.

    ``mention`` False marks a *candidate*: a span only a model's candidate head proposed (wide,
    recall-oriented detection, docs/model-folder.md). A candidate ranks its passage like any span,
    but is never marked and never makes a passage part of an ``--all`` answer (the search semantics
    of :class:`indexer.stores.base.Store`); every span of a model without that head is a mention.
    """

    start: int
    end: int
    text: str
    score: float
    vector: np.ndarray
    labels: tuple[str, ...] = ()
    base_vector: np.ndarray | None = None  # the backbone's span vector before training (eval only)
    mention: bool = True


@dataclass(frozen=True)
class EncodedPassage:
    """A passage after encoding: its kept spans and its own (mean-pooled) unit vector."""

    passage: Passage
    spans: tuple[EncodedSpan, ...]
    vector: np.ndarray


# slots on SpanMatch and Hit: an --all at 10M makes 33k of each, and a __dict__ apiece doubled the
# objects the garbage collector walks (the --all took ~75 ms longer).
@dataclass(frozen=True, slots=True)
class SpanMatch:
    """A span of a hit whose similarity to the query type passed the threshold."""

    start: int
    end: int
    text: str
    similarity: float
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "similarity": round(float(self.similarity), 6),
            "labels": list(self.labels),
        }


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the passage, its score (best span similarity + λ · passage similarity:
    the ranking's, so above 1 where λ > 0) and its matching spans (the marks).

    ``ranked_by``: the candidate span that ranked the hit (its best span, the second detector's,
    never marked; ``Store.search``), marked or not, top-k or ``--all``, so that a user sees what
    was found ("cello" for "musical instrument", the mark there being "Yo-Yo Ma"); None where a
    mention ranked it (its first mark)."""

    id: str
    score: float
    text: str
    fields: dict[str, Any]
    spans: tuple[SpanMatch, ...]
    ranked_by: SpanMatch | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``--json`` output and of the HTTP API."""
        return {
            "id": self.id,
            "score": round(float(self.score), 6),
            "text": self.text,
            "fields": self.fields,
            "spans": [s.to_dict() for s in self.spans],
            "ranked_by": None if self.ranked_by is None else self.ranked_by.to_dict(),
        }


def marked_spans(spans: Iterable[SpanMatch]) -> list[SpanMatch]:
    """The spans to mark in a text: best similarity first, skipping any that overlaps one taken.

    Spans can nest (nested decoding): "Labour Party" (0.41) is marked rather than the wider
    "Labour Party and the Conservative Party" (0.40) around it, and "Conservative Party" too.
    """
    taken: list[SpanMatch] = []
    for span in sorted(spans, key=lambda s: -s.similarity):
        if all(span.end <= t.start or t.end <= span.start for t in taken):
            taken.append(span)
    return taken


class Matches(Iterator[Hit]):
    """Hits best first, lazily, with how many passages match in all where that is known for free.

    ``total`` is the number of passages the search ranks (not just those the limit lets through;
    a top-k search's count includes passages ranked by a candidate span alone, which an exhaustive
    search does not return, so it can be larger than that search's) when the store computes it anyway (the embedded store scores every span); None where it would cost a
    search of its own (Elasticsearch's kNN top hits), so nobody mistakes a page for all matches.
    """

    def __init__(self, hits: Iterable[Hit], *, total: int | None = None) -> None:
        self._hits = iter(hits)
        self.total = total

    def __iter__(self) -> "Matches":
        return self

    def __next__(self) -> Hit:
        return next(self._hits)
