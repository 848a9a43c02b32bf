"""The narrow protocol every store satisfies, and the request/outcome records it speaks.

Both backends (embedded SQLite, Elasticsearch) implement the same search semantics (DESIGN.md):
passage score = max over its spans of cos(type vector, span vector); a passage matches when that
score ≥ ``min_similarity``; ``filters`` restrict by metadata (exact match, a list means any of);
``text`` restricts to passages matching the lexical query; hits come best first, each with its
spans whose similarity passes the threshold, best first; ``exhaustive`` returns every match.

Hybrid scoring (``passage_weight`` λ > 0): a matching passage is *ranked* by
best span similarity + λ · cos(type vector, passage vector), which adds what the whole passage says
about the type to the evidence of its best mention. Which passages match and which spans are
marked still depend on span similarity alone, so every hit keeps a marked mention; ``Hit.score`` is
the combined score and each span keeps its own similarity. λ comes from ``model.json``
(``passage_weight``, calibrated at training time).
The shared conformance suite in ``tests/store_conformance.py`` holds them to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from ..records import EncodedPassage, Hit


@dataclass(frozen=True)
class ModelStamp:
    """What a store records about the model its vectors came from; a mismatch is refused."""

    id: str
    version: str
    dims: int
    checksum: str
    similarity: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "dims": self.dims,
            "checksum": self.checksum,
            "similarity": self.similarity,
        }


MAX_PASSAGE_WEIGHT = 10.0  # λ beyond this is passage retrieval in all but name


@dataclass(frozen=True)
class SearchRequest:
    """A type query after embedding: the unit type vector plus the restrictions of the search."""

    vector: np.ndarray
    min_similarity: float
    filters: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    limit: int = 10
    exhaustive: bool = False
    passage_weight: float = 0.0


@dataclass(frozen=True)
class WriteOutcome:
    """Per-passage result of a write, kept as data like elasticsearch-py's bulk helpers do."""

    id: str
    ok: bool
    action: str  # "created", "updated", "skipped" or "failed"
    error: str | None = None


@dataclass(frozen=True)
class StoreCounts:
    passages: int
    spans: int


class Store(Protocol):
    """What the pipeline, search and CLI need from a backend; nothing more."""

    def check_model(self, stamp: ModelStamp) -> None:
        """Record the model on first use; raise ModelMismatchError if the store has another."""

    def model(self) -> ModelStamp | None:
        """The model the store was built with, or None when it is still empty."""

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these passage ids are already stored (for idempotent, resumable indexing)."""

    def write(self, docs: Sequence[EncodedPassage]) -> list[WriteOutcome]:
        """Store passages with their spans; one outcome per passage, failures as data."""

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Hits best first; at most ``limit`` unless ``exhaustive`` (then every match, paged)."""

    def counts(self) -> StoreCounts:
        ...

    def close(self) -> None:
        ...
