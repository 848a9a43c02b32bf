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

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..records import EncodedPassage, Hit


# Model settings that change what a store holds (which spans are detected, where windows are cut,
# which labels are attached), beyond the weights the checksum covers. Query-time settings
# (similarity_threshold, passage_weight, type_template) are deliberately absent: they change no
# stored byte, so a store serves any of their values.
STORED_SETTINGS = (
    "detection_threshold",
    "span_decoding",
    "max_length",
    "max_span_width",
    "label_threshold",
    "labels_per_span",
    "catalog",
)
# What makes two vectors comparable at all: checked for reading as well as for writing.
VECTOR_SPACE = ("dims", "similarity", "checksum")


@dataclass(frozen=True)
class ModelStamp:
    """What a store records about the model its spans and vectors came from; a mismatch is refused.

    The stored settings (:data:`STORED_SETTINGS`) are None when not recorded: stores written by
    nerindex 0.2.0 have only id, version, dims, checksum and similarity (see :func:`check_stamp`).
    ``catalog`` names the label catalog: ``"model"`` (the model folder's own, covered by the
    checksum), ``"none"``, or ``"sha256:<hex>"`` of a catalog given with ``--catalog``.
    """

    id: str
    version: str
    dims: int
    checksum: str
    similarity: str = "cosine"
    detection_threshold: float | None = None
    span_decoding: str | None = None
    max_length: int | None = None
    max_span_width: int | None = None
    label_threshold: float | None = None
    labels_per_span: int | None = None
    catalog: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recorded form; settings that are not known are left out rather than stored as null."""
        out: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "dims": self.dims,
            "checksum": self.checksum,
            "similarity": self.similarity,
        }
        out.update({name: getattr(self, name) for name in STORED_SETTINGS if getattr(self, name) is not None})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelStamp":
        """Read a recorded stamp (any nerindex version); raises KeyError/TypeError/ValueError if unreadable."""
        settings = {name: data.get(name) for name in STORED_SETTINGS}
        for name in ("detection_threshold", "label_threshold"):
            settings[name] = None if settings[name] is None else float(settings[name])
        for name in ("max_length", "max_span_width", "labels_per_span"):
            settings[name] = None if settings[name] is None else int(settings[name])
        for name in ("span_decoding", "catalog"):
            settings[name] = None if settings[name] is None else str(settings[name])
        return cls(
            id=str(data["id"]),
            version=str(data["version"]),
            dims=int(data["dims"]),
            checksum=str(data["checksum"]),
            similarity=str(data.get("similarity", "cosine")),
            **settings,
        )

    def describe(self) -> str:
        return f"{self.id} {self.version} ({self.dims} dims, {self.similarity}, checksum {self.checksum[:12]})"


@dataclass(frozen=True)
class StampCheck:
    """How a run's model compares with the one a store recorded (see :func:`check_stamp`)."""

    conflict: str | None  # the first difference, as a phrase naming the setting and both values
    adopted: tuple[str, ...]  # settings the store had not recorded and takes from this run
    recorded: ModelStamp  # the stamp to keep: the store's, completed with the adopted settings


def check_stamp(recorded: ModelStamp, given: ModelStamp, *, writing: bool) -> StampCheck:
    """Compare a run's model with a store's: one rule for every backend.

    Reading needs the same vector space (weights, dims, metric); writing also needs every stored
    setting to agree, or one store would hold spans detected, cut and labelled two ways. A setting
    the store has not recorded (a store written by nerindex 0.2.0) is adopted from the first model
    that writes to it; a setting the run does not know (None) is not compared.
    """
    names = VECTOR_SPACE + (STORED_SETTINGS if writing else ())
    for name in names:
        ours, theirs = getattr(recorded, name), getattr(given, name)
        if ours is not None and theirs is not None and ours != theirs:
            return StampCheck(f"{name} is {ours!r} in the store but {theirs!r} in this model", (), recorded)
    if not writing:
        return StampCheck(None, (), recorded)
    adopted = tuple(n for n in STORED_SETTINGS if getattr(recorded, n) is None and getattr(given, n) is not None)
    completed = replace(recorded, **{n: getattr(given, n) for n in adopted})
    return StampCheck(None, adopted, completed)


def adopted_message(where: str, check: StampCheck) -> str:
    """The one line a store logs when it records settings it did not have (a 0.2.0 store)."""
    values = ", ".join(f"{n}={getattr(check.recorded, n)!r}" for n in check.adopted)
    return (
        f"{where}: the store recorded no {', '.join(check.adopted)} (written by nerindex 0.2.0); "
        f"recording {values} from this model"
    )


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


@dataclass(frozen=True)
class StoreVersion:
    """Which store, in which state: anything derived from a store (a vector cache, a cached result
    set, a cursor) is valid only for the version it was made from.

    ``identity`` changes when the store is replaced by another (a new or restored store.sqlite,
    another index behind the alias); ``state`` changes with every write. Equal versions mean
    equal contents; a changed version may (rarely) not mean changed contents, which costs only a
    recomputation.
    """

    identity: str
    state: str

    def __str__(self) -> str:
        return f"{self.identity}/{self.state}"


class Store(Protocol):
    """What the pipeline, search and CLI need from a backend; nothing more."""

    def check_model(self, stamp: ModelStamp, *, writing: bool = True) -> None:
        """Record the model on first use; raise ModelMismatchError if the store has another
        (by :func:`check_stamp`: for ``writing``, stored settings must agree too)."""

    def model(self) -> ModelStamp | None:
        """The model the store was built with, or None when it is still empty."""

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these passage ids are already stored (for idempotent, resumable indexing)."""

    def write(self, docs: Sequence[EncodedPassage]) -> list[WriteOutcome]:
        """Store passages with their spans; one outcome per passage, failures as data."""

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Hits best first; at most ``limit`` unless ``exhaustive`` (then every match, paged)."""

    def passage_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored passage vectors of these passage ids, one row each in the order given
        (ids not stored are left out): what query-time feedback (``indexer.feedback``) reads."""

    def counts(self) -> StoreCounts:
        ...

    def version(self) -> StoreVersion:
        """The store's identity and state, cheaply (one small query); changes after every write."""

    def close(self) -> None:
        ...
