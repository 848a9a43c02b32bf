"""The narrow protocol every store satisfies, and the request/outcome records it speaks.

Both backends (embedded SQLite, Elasticsearch) implement the same search semantics, given in full
by :meth:`Store.search` (mentions and candidates; what a top-k search and an ``exhaustive`` one
return): passage score = max over its spans of cos(type vector, span vector); ``filters`` restrict
by metadata (exact match, a list means any of; one rule for keys and values, :class:`Filters`,
checked once where a request is made); ``text`` restricts to passages matching the lexical query;
hits come best first, each with its mentions whose similarity passes the threshold, best first.

Hybrid scoring (``passage_weight`` λ > 0): a matching passage is *ranked* by
best span similarity + λ · cos(type vector, passage vector), which adds what the whole passage says
about the type to the evidence of its best span. Which passages match and which spans are
marked still depend on span similarity alone; ``Hit.score`` is the combined score and each span
keeps its own similarity. λ comes from ``model.json``
(``passage_weight``, calibrated at training time).
The shared conformance suite in ``tests/store_conformance.py`` holds them to it.
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..errors import SearchError
from ..records import EncodedPassage, Hit
from ..text import is_blank, phrase_as_searched, unicode_problem
from .filter_rules import Filters


# Model settings that change what a store holds (which spans are detected, where windows are cut,
# which labels are attached), beyond the weights the checksum covers. Query-time settings
# (similarity_threshold, passage_weight, type_template) are deliberately absent: they change no
# stored byte, so a store serves any of their values.
STORED_SETTINGS = (
    "detection_threshold",
    "candidate_threshold",
    "span_decoding",
    "max_length",
    "max_span_width",
    "label_threshold",
    "unseen_label_threshold",
    "labels_per_span",
    "catalog",
    "trained_types",
)
# What a catalog conflict needs besides the two values: the option that sets it.
CATALOG_HINT = (
    " (the phrase list spans are labelled with, and for a --catalog file the model's type_template its "
    "phrases are embedded with: pass the --catalog file the store was written with, with a model of the "
    "same type_template, or no --catalog if it was written without one)"
)
# What a trained_types conflict needs besides the two digests: where the list lives.
TRAINED_TYPES_HINT = (
    " (model.json's training.types, the phrases labelled under label_threshold rather than "
    "unseen_label_threshold, differ from the list the store was written with, which it records by "
    "digest only: put that list back, or index into a new store)"
)
HINTS = {"catalog": CATALOG_HINT, "trained_types": TRAINED_TYPES_HINT}
# Stored settings whose None in a complete stamp means "the model has none" (see check_stamp).
NONE_MEANS_ABSENT = ("candidate_threshold",)
# What makes two vectors comparable at all: checked for reading as well as for writing.
VECTOR_SPACE = ("dims", "similarity", "checksum")


@dataclass(frozen=True)
class ModelStamp:
    """What a store records about the model its spans and vectors came from; a mismatch is refused.

    The stored settings (:data:`STORED_SETTINGS`) are None when not recorded: stores written by
    nerindex 0.2.0 have only id, version, dims, checksum and similarity (see :func:`check_stamp`).
    ``catalog`` names the label catalog: ``"model"`` (the model folder's own, covered by the
    checksum), ``"none"``, or ``"sha256:<hex>"`` of a catalog given with ``--catalog``.
    ``trained_types`` is ``"sha256:<hex>"`` of the phrases model.json's ``training.types`` names,
    where they decide labels (a label threshold for them, another for the rest), else None: an
    edited list labelled one store's spans two ways, under one checksum (the labels audit).
    """

    id: str
    version: str
    dims: int
    checksum: str
    similarity: str = "cosine"
    detection_threshold: float | None = None
    candidate_threshold: float | None = None  # the candidate head's (None: a model without one)
    span_decoding: str | None = None
    max_length: int | None = None
    max_span_width: int | None = None
    label_threshold: float | None = None
    unseen_label_threshold: float | None = None  # labels of phrases the model was not trained on
    labels_per_span: int | None = None
    catalog: str | None = None
    trained_types: str | None = None

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
        for name in ("detection_threshold", "candidate_threshold", "label_threshold", "unseen_label_threshold"):
            settings[name] = None if settings[name] is None else float(settings[name])
        for name in ("max_length", "max_span_width", "labels_per_span"):
            settings[name] = None if settings[name] is None else int(settings[name])
        for name in ("span_decoding", "catalog", "trained_types"):
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

    ``candidate_threshold`` None means "no candidate head", not "unknown", in a stamp that records
    ``unseen_label_threshold`` (every stamp written since the two thresholds, which also records
    the candidate head when there is one): there a model with a candidate head and one without
    never write to the same store. Older stamps (nerindex 0.2.0, models up to 0.3.0) still adopt it.
    """
    names = VECTOR_SPACE + (STORED_SETTINGS if writing else ())
    complete = recorded.unseen_label_threshold is not None
    for name in names:
        ours, theirs = getattr(recorded, name), getattr(given, name)
        known = (ours is not None and theirs is not None) or (complete and name in NONE_MEANS_ABSENT)
        if known and ours != theirs:
            hint = HINTS.get(name, "")
            return StampCheck(f"{name} is {ours!r} in the store but {theirs!r} in this model{hint}", (), recorded)
    if not writing:
        return StampCheck(None, (), recorded)
    adopted = tuple(n for n in STORED_SETTINGS if getattr(recorded, n) is None and getattr(given, n) is not None)
    completed = replace(recorded, **{n: getattr(given, n) for n in adopted})
    return StampCheck(None, adopted, completed)


def same_model(a: ModelStamp, b: ModelStamp) -> bool:
    """Whether two stamps name one model (id, version, weights), whatever their stored settings:
    a conflict between them is a setting (a --catalog file), which another model would not mend
    (an audit: the refusal named one model twice as if they differed, and said to re-index with
    ``es reindex --model``, which drops the --catalog file)."""
    return (a.id, a.version, a.checksum) == (b.id, b.version, b.checksum)


def adopted_message(where: str, check: StampCheck) -> str:
    """The one line a store logs when it records settings it did not have (a store of nerindex
    0.2.0, or one written before a setting was recorded, such as ``trained_types``)."""
    values = ", ".join(f"{n}={getattr(check.recorded, n)!r}" for n in check.adopted)
    return (
        f"{where}: the store recorded no {', '.join(check.adopted)} (written by an earlier nerindex); "
        f"recording {values} from this model"
    )


# --- search requests ------------------------------------------------------------------------------

WRITE_CHUNK = 256  # passages per write transaction (one Store.write call), for every writer
MAX_PASSAGE_WEIGHT = 10.0  # λ beyond this is passage retrieval in all but name
# The longest type phrase a search takes (API, CLI and web service): a type is a few words, and the
# encoder puts the phrase into its type template, so a page of text is a mistake, not a type.
MAX_PHRASE_CHARS = 200


def check_phrase(type_phrase: str, *, limit: int = MAX_PHRASE_CHARS) -> str:
    """A type phrase as searched and embedded (stripped), or a SearchError: an empty one, or one of
    characters the tokenizer drops (zero-width spaces, soft hyphens), has a vector but means
    nothing, so it is refused rather than answered."""
    if not isinstance(type_phrase, str):
        raise SearchError(f"the entity type is a phrase (a string), not {type(type_phrase).__name__}")
    phrase = phrase_as_searched(type_phrase)
    problem = unicode_problem(phrase)
    if problem is not None:  # the tokenizer's TypeError otherwise (the CLI refuses such arguments itself)
        raise SearchError(f"the entity type holds {problem}")
    if is_blank(phrase):  # a zero-width space alone embeds as the empty phrase does (an audit: it was answered)
        raise SearchError(f"the entity type is {'empty' if not phrase else 'empty (no character the model reads)'}: "
                          "give a phrase such as 'dinosaur'")
    if len(phrase) > limit:  # measured as searched, on every surface (an audit: HTTP measured it before)
        raise SearchError(f"the entity type is {len(phrase)} characters; the limit is {limit}")
    return phrase


# how far from 1 a stored vector's norm may be: the CPU graph's are within 1e-6, fp16 ones within ~1e-3
UNIT_TOLERANCE = 0.01


def vector_problem(vector: Any, dims: int | None) -> str | None:
    """Why a vector cannot be stored (wrong size, not finite, zero, not of unit length), or None
    when it can. Both stores score by dot products of unit vectors (the embedded store's segments,
    Elasticsearch's cosine on normalised copies): a vector of length 2 gave a "similarity" of 1.6
    in one store and 0.8 in the other, and one of the wrong size made every later embedded search
    fail (a store-parity audit)."""
    if vector is None:
        return "missing vector"
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or (dims is not None and array.shape[0] != dims):
        return f"vector has shape {tuple(array.shape)}, the index expects ({dims},)"
    if not np.all(np.isfinite(array)):
        return "vector has non-finite values"
    if not np.any(array):
        return "vector is all zeros"
    if abs(float(np.linalg.norm(array)) - 1.0) > UNIT_TOLERANCE:
        return f"vector has length {float(np.linalg.norm(array)):.4g}, not 1 (normalise it)"
    return None


def document_problem(doc: EncodedPassage, dims: int | None) -> str | None:
    """Why this passage cannot be stored (:func:`vector_problem` of its vectors), or None; every
    backend checks each passage with it before writing (a failed outcome, the rest written)."""
    if doc.vector is not None:
        problem = vector_problem(doc.vector, dims)
        if problem:
            return f"passage {problem}"
    for number, span in enumerate(doc.spans):
        problem = vector_problem(span.vector, dims)
        if problem:
            return f"span {number} ({span.text!r}): {problem}"
    return None


def check_threshold(min_similarity: Any) -> float:
    """A similarity threshold as a float: a cosine, so finite and within [-1, 1]."""
    number = isinstance(min_similarity, numbers.Real) and not isinstance(min_similarity, bool)  # a Fraction too
    value = float(min_similarity) if number else math.nan
    if not -1.0 <= value <= 1.0:  # NaN too
        raise SearchError(f"similarity threshold must be within [-1, 1], not {min_similarity!r}")
    return value


def check_passage_weight(passage_weight: Any) -> float:
    """λ of hybrid scoring as a float: finite and >= 0 (a negative weight could make scores < 0)."""
    try:
        value = float(passage_weight)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SearchError(f"passage_weight must be a finite number >= 0, got {passage_weight!r}")
    return value


def text_words(text: str) -> list[str]:
    """The words of a lexical restriction: each must occur in a matching passage.

    A word is a run of letters, numbers, combining marks and private-use characters: what the
    embedded store's full-text index takes for one (``embedded_schema.FTS_TOKENIZE``), so that
    "every word occurs" means the same to both. ``\\w`` alone split a decomposed "São" into "Sa"
    and "o" (which then matched nothing) and the Hindi "मोदी" at its vowel signs into "म" and "द"
    (which matched passages holding both letters anywhere: an audit); it also took "_" for a word
    character, which the index splits at, and a private-use character for none, which it keeps.

    A run of marks alone is not a word: the variation selector after an emoji ("☀️" is U+2600
    U+FE0F) is a mark, so ``--text ☀️`` asked for that selector and matched every passage with any
    emoji written with one (an audit); such a text has no words and is refused, as "😀" is.
    """
    words: list[str] = []
    word: list[str] = []
    for ch in (*text, " "):
        category = unicodedata.category(ch)
        if _in_word(category):
            word.append(ch)
        elif word:
            if not all(unicodedata.category(c)[0] == "M" for c in word):
                words.append("".join(word))
            word = []
    return words


def written_words(text: str) -> list[str]:
    """The words of a lexical restriction as written (split at white space), each holding a word
    of :func:`text_words`: both stores require the pieces one of them splits into ("U.S.",
    "state-of-the-art") next to each other (an audit: the embedded store required them anywhere)."""
    return [chunk for chunk in text.split() if text_words(chunk)]


def _in_word(category: str) -> bool:
    """Whether a character of this Unicode category is part of a word: letters, numbers, marks and
    private use, as ``embedded_schema.FTS_TOKENIZE`` tokenizes (:func:`text_words`, :func:`match_text`)."""
    return category[0] in "LNM" or category == "Co"


# punctuation that is an emoji (Extended_Pictographic), which Elasticsearch's tokenizer makes a term
PICTOGRAPHIC_PUNCTUATION = frozenset("\u203c\u2049\u3030\u303d")  # ‼ ⁉ 〰 〽
EMOJI_MODIFIERS = frozenset("\ufe0f\u20e3")  # emoji presentation, keycap: "#️⃣" is '#' + these


def match_text(text: str) -> str:
    """``text`` for a store whose analyzer finds the words (Elasticsearch's ``match``), with its
    emoji made spaces: symbols (😀, ©), emoji punctuation (‼) and the base of a keycap or of an
    emoji presentation (the "#" of "#️⃣"). The embedded store's index never takes these for words
    (:func:`text_words`), while Elasticsearch's standard tokenizer makes each emoji a term, so
    ``--text "Messi 😀"`` found the Messi passages in one store and none in the other (an audit)."""
    def emoji(k: int, ch: str) -> bool:
        category = unicodedata.category(ch)
        if category[0] == "S" or ch in PICTOGRAPHIC_PUNCTUATION:
            return True
        return not _in_word(category) and text[k + 1 : k + 2] in EMOJI_MODIFIERS

    return "".join(" " if emoji(k, ch) else ch for k, ch in enumerate(text))


@dataclass(frozen=True)
class SearchRequest:
    """A type query after embedding: the unit type vector plus the restrictions of the search.

    Checked when made (filters, passage weight, a text with words), so every backend gets a
    request it can translate as it is; what depends on the store (the vector's dims) is checked by
    :func:`query_vector` when a store's ``search`` is called, before any hit is read.
    """

    vector: np.ndarray
    min_similarity: float
    filters: Filters = Filters()
    text: str | None = None
    limit: int = 10
    exhaustive: bool = False
    passage_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.filters, Filters):
            raise TypeError(f"SearchRequest.filters is a Filters (Filters.of(...)), not {type(self.filters).__name__}")
        check_threshold(self.min_similarity)
        check_passage_weight(self.passage_weight)
        if self.text and not text_words(self.text):
            raise SearchError(f"text restriction {self.text!r} has no words to match")


def query_vector(request: SearchRequest, dims: int) -> np.ndarray:
    """The request's type vector as float32, checked against a store's ``dims`` (a SearchError when
    it has other dims or values that are not finite): every store calls it first thing in search."""
    vector = np.asarray(request.vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dims:
        raise SearchError(f"query vector has {vector.shape[0]} dims, the store {dims}")
    if not np.all(np.isfinite(vector)):
        raise SearchError("the query vector is empty or not finite")
    return vector


@dataclass(frozen=True)
class WriteOutcome:
    """Per-passage result of a write, kept as data like elasticsearch-py's bulk helpers do."""

    id: str
    ok: bool
    action: str  # "created", "updated", "skipped" (stored already, replace=False) or "failed"
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

    def stored_texts(self, ids: Sequence[str]) -> dict[str, str]:
        """The stored text of each of these ids that is stored: what indexing compares a skipped
        passage's text with, so that one left as stored with another text is said."""

    def stored_records(self, ids: Sequence[str]) -> dict[str, tuple[str, Any]]:
        """The stored (text, metadata) of each of these ids that is stored, in one lookup: what
        indexing compares a skipped passage with (an audit: metadata alone changed was not said)."""

    def write(self, docs: Sequence[EncodedPassage], *, replace: bool = True) -> list[WriteOutcome]:
        """Store passages with their spans; one outcome per passage, failures as data.

        ``replace=False`` leaves a passage whose id is stored by the time of the write as it is
        (outcome ``skipped``). The check is part of the write, so two writers racing for one id
        keep the one written first, whichever process that was: the rule indexing follows
        ("the first text wins"), which a lookup before encoding cannot keep on its own."""

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Remove the passages of these ids with their spans; the ids that were stored, in the
        order given (an id not stored is no error). Searches after it no longer find them: an
        edited corpus whose ids changed (hashes of the text) otherwise kept its old passages."""

    def stored_ids(self) -> Iterator[str]:
        """Every stored passage id, each once (what ``nerindex index --prune`` compares its input with)."""

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Hits best first; at most ``limit`` unless ``exhaustive`` (then every match, paged).

        The semantics, the same in every backend (``tests/store_conformance.py``; spans are
        mentions or candidates, :class:`indexer.records.EncodedSpan`; span filters restrict which
        spans count, for all three rules):

        - **score**: the passage's best span similarity, mentions and candidates alike, + λ ·
          passage similarity (``passage_weight``);
        - **which passages**: a top-k search ranks every passage whose best span, mention or
          candidate, passes ``min_similarity``; an ``exhaustive`` search returns the passages with
          a *mention* that passes it (the calibrated answer set of ``--all``), ranked the same way;
        - **marks** (``Hit.spans``): the mentions that pass ``min_similarity``, best first; a top-k
          hit ranked by a candidate alone has none;
        - **ranked by** (``Hit.ranked_by``): a hit whose best span is a candidate names it (marked
          or not, top-k or ``exhaustive``); None where a mention is the best span (the first mark).
          Where an embedded ``--all`` keeps int8 scores (``embedded.EXACT_ALL_SPANS``), the best
          span is chosen on them too: of two within ~0.004, either may be named.

        Everything that can be wrong with the request is raised when this is called, not when
        the hits are read (:func:`query_vector`, and what the backend cannot do)."""

    def exhaustive_unavailable(self) -> str | None:
        """Why an ``exhaustive`` search cannot run on this store ("it needs …"), or None where it
        can: the CLI's hint then does not offer ``--all`` where it would fail."""

    def passage_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored passage vectors of these passage ids, one row each in the order given
        (ids not stored are left out): what query-time feedback (``indexer.feedback``) reads."""

    def counts(self) -> StoreCounts:
        ...

    def version(self) -> StoreVersion:
        """The store's identity and state, cheaply (one small query); changes after every write."""

    def prepare(self) -> None:
        """Make what searches need after a run of writes now, not in the first search: the end of
        an indexing run calls it (Elasticsearch: a refresh; the embedded store: its int8 segments
        and, above ``ann.MIN_ROWS`` spans, its ANN indexes, minutes at 10M spans)."""

    def close(self) -> None:
        ...
