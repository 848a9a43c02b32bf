"""The model folder: its card's runtime settings, verified file checksums, the shipped default.

See ``docs/model-folder.md`` for the contract; ``model.json`` itself is read and written by
:mod:`indexer.model_card`. Loading checks everything once, up front, so a broken or tampered folder
fails with its path in the message instead of producing wrong vectors later.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from .assets import default_model_dir
from .errors import ModelError
from .model_card import CARD_FILE, CARD_KEYS, ModelCard, files_checksum
from .stores.base import MAX_PASSAGE_WEIGHT, ModelStamp

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "span_starts", "span_ends")
OUTPUT_NAMES = ("span_scores", "span_vectors", "span_base_vectors", "passage_vectors", "type_vectors")
# the optional output of a graph with a candidate head (model.json ``candidate_threshold``)
CANDIDATE_OUTPUT = "candidate_scores"
REQUIRED_KEYS = (
    "id",
    "version",
    "dims",
    "max_length",
    "max_span_width",
    "detection_threshold",
    "similarity_threshold",
    "graphs",
    "files",
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (model graphs are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()




@dataclass(frozen=True)
class ModelInfo:
    """A verified model folder: the runtime settings of its card, typed, and the card itself."""

    path: Path
    id: str
    version: str
    dims: int
    max_length: int
    max_span_width: int
    detection_threshold: float
    similarity_threshold: float
    label_threshold: float
    labels_per_span: int
    similarity: str
    type_template: str
    graphs: dict[str, str]
    files: dict[str, str]
    tokenizer: str = "tokenizer.json"
    catalog_phrases: str | None = "catalog.txt"
    catalog_vectors: str | None = "catalog.npy"
    passage_weight: float = 0.0  # λ of hybrid scoring (stores/base.py); 0 = spans only
    nested_spans: bool = False  # span decoding keeps spans nested in others (spans.resolve_overlaps)
    catalog_source: str | None = None  # "sha256:<hex>" of a catalog given instead of the model's (encoder sets it)
    # thresholds for type phrases the model was not trained on (model.json training.types); None:
    # one threshold for every phrase (see threshold_for)
    unseen_similarity_threshold: float | None = None
    unseen_label_threshold: float | None = None
    # λ of hybrid scoring for type phrases the model was not trained on; None: passage_weight for
    # every phrase (see passage_weight_for)
    unseen_passage_weight: float | None = None
    # the text a type phrase the model was not trained on is embedded as; None: type_template for
    # every phrase (see template_for)
    unseen_type_template: str | None = None
    # detection threshold of the candidate head (graph output candidate_scores); None: no such head
    candidate_threshold: float | None = None
    card: ModelCard = field(default_factory=lambda: ModelCard({}), repr=False, compare=False)

    @property
    def checksum(self) -> str:
        return files_checksum(self.files)

    @property
    def stamp(self) -> ModelStamp:
        """What a store records so that vectors, spans and labels made two ways never mix."""
        return ModelStamp(
            id=self.id,
            version=self.version,
            dims=self.dims,
            checksum=self.checksum,
            similarity=self.similarity,
            detection_threshold=self.detection_threshold,
            candidate_threshold=self.candidate_threshold,
            span_decoding="nested" if self.nested_spans else "flat",
            max_length=self.max_length,
            max_span_width=self.max_span_width,
            label_threshold=self.label_threshold,
            # the effective value: labels of phrases outside training.types use it either way
            unseen_label_threshold=self.label_threshold if self.unseen_label_threshold is None else self.unseen_label_threshold,
            labels_per_span=self.labels_per_span,
            catalog=self.catalog_source or ("model" if self.catalog_phrases else "none"),
            trained_types=self.trained_types_digest,
        )

    @property
    def trained_types_digest(self) -> str | None:
        """``"sha256:<hex>"`` of the trained phrases where they split the labels between two
        thresholds (:meth:`label_thresholds`), else None: model.json's ``training.types`` is no
        file the checksum covers, and an edited list labelled one store's spans two ways."""
        if self.unseen_label_threshold is None or self.unseen_label_threshold == self.label_threshold:
            return None
        return "sha256:" + hashlib.sha256("\n".join(sorted(self.trained_phrases)).encode()).hexdigest()

    @property
    def training_types(self) -> list[str]:
        return list(self.card.training.types)

    @property
    def trained_phrases(self) -> frozenset[str]:
        """model.json ``training.types``, each as :func:`normal_phrase` makes it."""
        return _trained(self.card)

    def is_trained_phrase(self, phrase: str) -> bool:
        """Whether ``phrase`` names a type the model was trained on (model.json ``training.types``),
        compared as :func:`trained_type` compares phrases."""
        return self.trained_type(phrase) is not None

    def trained_type(self, phrase: str) -> str | None:
        """The training type ``phrase`` names (:func:`trained_type`), or None."""
        return trained_type(phrase, self.training_types)

    def threshold_for(self, phrase: str) -> float:
        """The similarity threshold a search for ``phrase`` uses: ``similarity_threshold`` for a
        phrase the model was trained on, ``unseen_similarity_threshold`` (when the card has one)
        for any other.

        Why two: a trained span space is more confident on its training types than on types it
        never saw, so the threshold calibrated on seen types drops most mentions of unseen ones
        (EVALUATION.md, "Calibration"). Whether a phrase was trained on is known at query time.
        """
        if self.unseen_similarity_threshold is None or self.is_trained_phrase(phrase):
            return self.similarity_threshold
        return self.unseen_similarity_threshold

    def passage_weight_for(self, phrase: str) -> float:
        """λ of hybrid scoring for a search for ``phrase``: ``passage_weight`` for a phrase the
        model was trained on, ``unseen_passage_weight`` (when the card has one) for any other.

        Why two: on a trained type the span similarity is the better evidence and the untrained
        passage vector adds topic; on a type nobody trained on the passage vector backs an
        uncertain span space (EVALUATION.md, "Model 0.4.0": λ 0 vs 1 on the validation split).
        """
        if self.unseen_passage_weight is None or self.is_trained_phrase(phrase):
            return self.passage_weight
        return self.unseen_passage_weight

    def template_for(self, phrase: str) -> str:
        """The text around ``phrase`` when it is embedded as a query: ``type_template`` for a
        phrase the model was trained on, ``unseen_type_template`` (when the card has one) for any
        other.

        Why two: the span side was trained against the bare phrases' vectors, so trained-on phrases
        stay as they were; for a phrase nobody trained on, "the name of a {}" moves the vector from
        the topic word ("novel", "Book") towards the names of its instances (EVALUATION.md, "Type
        templates"). Span labels keep the catalog's vectors, so no store depends on this.
        """
        if self.unseen_type_template is None or self.is_trained_phrase(phrase):
            return self.type_template
        return self.unseen_type_template

    def query_identity(self) -> str:
        """What decides the text every query phrase is embedded as (:meth:`template_for`): the two
        templates, the phrases trained on and the rule that reads a plural as its trained type
        (:data:`QUERY_RULES`). Stores that keep query vectors (Elasticsearch's types index) record
        it, to know when theirs are stale."""
        return "\n".join((self.type_template, self.unseen_type_template or "", *sorted(self.trained_phrases), QUERY_RULES))

    def label_thresholds(self, phrases: Sequence[str]) -> np.ndarray:
        """Per catalog phrase, the similarity a span needs to be labelled with it: the split of
        :meth:`threshold_for` by the exact trained phrases (a plural in a ``--catalog`` file is a
        label of its own, as its vector is), with ``label_threshold`` and ``unseen_label_threshold``."""
        other = self.label_threshold if self.unseen_label_threshold is None else self.unseen_label_threshold
        trained = self.trained_phrases
        return np.array([self.label_threshold if normal_phrase(p) in trained else other for p in phrases], dtype=np.float32)

    def file(self, name: str) -> Path:
        return self.path / name

    def recorded_sha256(self, path: Path) -> str | None:
        """The sha256 ``files`` records for ``path``, a file of this folder (None: one it does not list)."""
        try:
            return self.files.get(path.relative_to(self.path).as_posix())
        except ValueError:  # a graph given by an absolute path elsewhere: not part of the model
            return None

    @classmethod
    def load(cls, path: str | Path | None = None, *, verify: bool = True, warn_unknown: bool = True) -> "ModelInfo":
        """Read ``model.json`` from a folder and (by default) verify every file's sha256."""
        folder = Path(path) if path is not None else default_model_dir()
        card = ModelCard.load(folder)
        missing = [k for k in REQUIRED_KEYS if k not in card]
        if missing:
            raise ModelError(f"{folder / 'model.json'}: missing keys {', '.join(missing)}")
        _check_known_keys(card, folder / CARD_FILE, warn=warn_unknown)
        files = _checked_files(card, folder / CARD_FILE)
        if verify:
            for name, expected in files.items():
                file_path = folder / name
                if not file_path.is_file():
                    raise ModelError(f"{file_path}: listed in model.json but missing")
                if sha256_file(file_path) != expected:
                    raise ModelError(f"{file_path}: checksum does not match model.json (corrupt or changed)")
        v = _CardValues(card, folder / CARD_FILE)
        if card.get("format") != 1 or isinstance(card.get("format"), bool):
            raise ModelError(f"{folder / CARD_FILE}: format must be 1, not {card.get('format')!r} (a card this nerindex can read)")
        similarity_threshold = v.number("similarity_threshold", -1.0, 1.0)
        catalog = card.get("catalog") or {}
        return cls(
            path=folder,
            id=str(card.get("id")),
            version=str(card.get("version")),
            dims=v.integer("dims", 1),
            max_length=v.integer("max_length", 8),
            max_span_width=v.integer("max_span_width", 1),
            detection_threshold=v.number("detection_threshold", 0.0, 1.0),
            similarity_threshold=similarity_threshold,
            label_threshold=v.number("label_threshold", -1.0, 1.0, default=similarity_threshold),
            labels_per_span=v.integer("labels_per_span", 0, default=3),
            similarity=v.choice("similarity", ("cosine",), default="cosine"),
            type_template=v.template("type_template"),
            graphs=dict(card.get("graphs")),
            files=files,
            tokenizer=str(card.get("tokenizer", "tokenizer.json")),
            catalog_phrases=catalog.get("phrases"),
            catalog_vectors=catalog.get("vectors"),
            passage_weight=v.number("passage_weight", 0.0, MAX_PASSAGE_WEIGHT, default=0.0),
            nested_spans=v.choice("span_decoding", ("nested", "flat"), default="flat") == "nested",
            unseen_similarity_threshold=v.number("unseen_similarity_threshold", -1.0, 1.0, default=None),
            unseen_label_threshold=v.number("unseen_label_threshold", -1.0, 1.0, default=None),
            candidate_threshold=v.number("candidate_threshold", 0.0, 1.0, default=None),
            unseen_passage_weight=v.number("unseen_passage_weight", 0.0, MAX_PASSAGE_WEIGHT, default=None),
            unseen_type_template=v.template("unseen_type_template", default=None),
            card=_checked_candidate_head(v.with_checked_training(), folder / CARD_FILE),
        )


def _checked_candidate_head(card: ModelCard, card_path: Path) -> ModelCard:
    """The card, once it says the same about a candidate head everywhere: ``candidate_threshold``
    given exactly when ``heads_config.candidate_head`` (where the card says) is true and its
    ``outputs`` (where listed) hold ``candidate_scores``.

    Why: the runtime reads the head from ``candidate_threshold`` alone, so a card of a model with
    a candidate head but no threshold loaded with the head silently off (an audit: other spans,
    no error); and a threshold on a card that says there is no head is no better.
    """
    threshold = card.get("candidate_threshold") is not None
    said = card.heads_config.get("candidate_head")
    outputs = card.get("outputs")
    listed = CANDIDATE_OUTPUT in outputs if isinstance(outputs, list) else None
    for key, value in (("heads_config.candidate_head", said), (f"outputs ({CANDIDATE_OUTPUT})", listed)):
        if value is not None and bool(value) != threshold:
            have = "has a candidate head" if value else "has no candidate head"
            raise ModelError(f"{card_path}: {key} says the model {have}, but candidate_threshold is "
                             f"{'given' if threshold else 'missing'}: give both or neither")
    return card


def _checked_files(card: ModelCard, card_path: Path) -> dict[str, str]:
    """The card's ``files``, after checking that they cover every file the card names.

    Why: only files listed in ``files`` are checksummed, and their checksums are the model checksum
    a store records; a graph, tokenizer, heads or catalog file left out of ``files`` (or an empty
    ``files``) could be swapped without any check or stamp noticing, and one outside the folder
    (``../old/encoder.onnx``) is not part of the model at all. Paths are checked as written, not
    resolved, so a folder of symbolic links to the shipped files still loads.
    """
    files = card.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ModelError(f"{card_path}: files must be an object of file name to sha256")
    if not files:
        raise ModelError(f"{card_path}: files is empty: every file of the model must be listed with its sha256")
    for name in files:
        _check_inside(name, "files", card_path)
    for key, name in _named_files(card, card_path):
        _check_inside(name, key, card_path)
        if name not in files:
            raise ModelError(f"{card_path}: {key} names {name!r}, which is not listed in files (so never verified)")
    return dict(files)


def _named_files(card: ModelCard, card_path: Path) -> list[tuple[str, Any]]:
    """(key, file name) of every file the card points the runtime or export at."""
    graphs = card.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise ModelError(f"{card_path}: graphs must be a non-empty object of device to graph file")
    named: list[tuple[str, Any]] = [(f"graphs.{device}", name) for device, name in graphs.items()]
    named.append(("tokenizer", card.get("tokenizer", "tokenizer.json")))
    if "heads" in card:
        named.append(("heads", card.get("heads")))
    catalog = card.get("catalog")
    if catalog is not None and not isinstance(catalog, dict):
        raise ModelError(f"{card_path}: catalog must be an object with phrases and vectors")
    for part in ("phrases", "vectors"):
        if (catalog or {}).get(part) is not None:
            named.append((f"catalog.{part}", catalog[part]))
    return named


def _check_inside(name: Any, key: str, card_path: Path) -> None:
    """A file name of the card must be a relative path inside the model folder."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"{card_path}: {key} must be a file name, not {name!r}")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or Path(name).is_absolute() or ".." in path.parts:
        raise ModelError(f"{card_path}: {key} names {name!r}, outside the model folder")


def _check_known_keys(card: ModelCard, path: Path, *, warn: bool = True) -> None:
    """Refuse a key that looks like a misspelled one of :data:`CARD_KEYS`; say an other unknown key
    is ignored. The train audit (round 29): "unseen_similarity_treshold" was ignored without a word,
    and every unseen type ran at the seen threshold (docs/model-folder.md invites editing these)."""
    for key in card.keys():
        if key in CARD_KEYS:
            continue
        near = difflib.get_close_matches(str(key).lower(), CARD_KEYS, n=1, cutoff=0.8)
        if near:
            raise ModelError(f"{path}: {key!r} is no key nerindex reads; did you mean {near[0]!r}?")
        if warn and (str(path), key) not in _WARNED:  # once a process (info loads a folder twice: a review)
            _WARNED.add((str(path), key))
            log.warning("%s: %r is no key nerindex reads (ignored)", path, key)


_WARNED: set[tuple[str, str]] = set()


def normal_phrase(phrase: str) -> str:
    """A type phrase as compared with the training types: as the uncased tokenizer reads it (format,
    control and private-use characters dropped, lower case, accents stripped), single spaces.
    Phrases the model cannot tell apart ("politi\u00adcian", "Pérson", "person\ue000") must get the
    same threshold, λ and template (found by audits: a soft hyphen, a zero-width space or a
    private-use character made a trained phrase "unseen"). Python's Unicode tables are newer than
    the tokenizer's: a mark added to Unicode since is dropped here and kept there."""
    kept = "".join(ch for ch in phrase if not _unread(ch))
    decomposed = unicodedata.normalize("NFD", kept.lower())
    return " ".join("".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn").split())


def unread_at(phrase: str) -> int | None:
    """The index of the first character of ``phrase`` the tokenizer deletes unseen (a format,
    control or private-use character that is no space: a BOM, a soft hyphen, U+200B), or None.
    The zero-width (non-)joiner is left out: Persian and Indic words are spelled with it, and
    a filter typed as they are written holds it too (a review)."""
    return next((i for i, ch in enumerate(phrase) if _unread(ch) and ch not in "\u200c\u200d"), None)


def _unread(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cf", "Cc", "Co") and not ch.isspace()


# A new value whenever the rule by which a phrase becomes the text embedded changes (trained_type),
# so a types index filled before is filled again (a review: "politicians" kept its old vector)
QUERY_RULES = "a trained type's plural, hyphenated or joined spelling is the type (December 2026)"


def trained_type(phrase: str, types: Iterable[str]) -> str | None:
    """The phrase of ``types`` that ``phrase`` names, compared as :func:`normal_phrase` makes them
    and by letters and digits alone (:func:`_letters`), or its plural ("sports teams", "facilities"): a search embeds it as that phrase, with its
    threshold, λ and template. An audit: "sports teams" and "politicians" were searched as types
    nobody trained on, with the unseen threshold, λ 1 and "the name of a politicians"; searched
    bare as trained ones they score lower than the singular (1 passage of 10 for "politicians")."""
    types = list(types)
    for key in (normal_phrase, lambda t: _letters(normal_phrase(t))):  # as written first, then by letters
        keyed: dict[str, list[str]] = {}
        for t in types:
            keyed.setdefault(key(t), []).append(t)
        found = next((keyed[f] for f in _singular_forms(key(phrase)) if f and f in keyed), None)
        if found is not None and len(found) == 1:  # two types alike by letters ("c++ library", "c library"): neither
            return found[0]
    return None


def _singular_forms(n: str) -> list[str]:
    """``n`` and, if it reads as a plural, the singulars it may be of."""
    forms = [n]
    if n.endswith("s") and not n.endswith("ss"):
        forms += [n[:-1]] + ([n[:-2]] if n.endswith("es") else []) + ([n[:-3] + "y"] if n.endswith("ies") else [])
    return forms


def _letters(phrase: str) -> str:
    """``phrase`` without spaces, hyphens and other punctuation: "sports-team", "sports_team" and
    "sportsteam" name the trained "sports team" (the dogfooding audit: "sports-team" was searched as a
    type nobody trained on and returned 6-8× the `--all` answer of "sports team")."""
    return "".join(ch for ch in phrase if ch.isalnum())


def normal_phrases(phrases: Iterable[str]) -> frozenset[str]:
    """Type phrases as :func:`normal_phrase` makes each: the set a seen/unseen split compares."""
    return frozenset(normal_phrase(t) for t in phrases)


def _trained(card: ModelCard) -> frozenset[str]:
    return normal_phrases(card.training.types)


_REQUIRED = object()


class _CardValues:
    """Typed, range-checked reads of model.json values, each error one line naming the key.

    Why here and nowhere else: a value out of range (a detection threshold of 1.5, a negative span
    width) was used silently, and a value of the wrong JSON type (``"high"``, null) crashed later
    with a traceback; :meth:`ModelInfo.load` is the one reader of the runtime's settings.
    Ranges follow what each value is compared with: similarities are cosines ([-1, 1]), detection
    and candidate scores are sigmoid probabilities ([0, 1]), λ is bounded as a search's is.
    """

    def __init__(self, card: ModelCard, path: Path) -> None:
        self.card, self.path = card, path

    def _value(self, key: str, default: Any) -> Any:
        if key in self.card and self.card.get(key) is not None:
            return self.card.get(key)
        if default is _REQUIRED:
            raise ModelError(f"{self.path}: {key} must be given, not {self.card.get(key)!r}")
        return default

    def number(self, key: str, low: float, high: float, *, default: Any = _REQUIRED) -> Any:
        value = self._value(key, default)
        if value is default and default is not _REQUIRED:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ModelError(f"{self.path}: {key} must be a number within [{low:g}, {high:g}], not {value!r}")
        return float(value)

    def integer(self, key: str, low: int, *, default: Any = _REQUIRED) -> int:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ModelError(f"{self.path}: {key} must be a whole number of at least {low}, not {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], *, default: str) -> str:
        value = self._value(key, default)
        if value not in allowed:
            raise ModelError(f"{self.path}: {key} must be {' or '.join(map(repr, allowed))}, not {value!r}")
        return value

    def template(self, key: str, *, default: str | None = "{}") -> Any:
        """A type template: text with exactly one ``{}``, where the phrase goes (``str.format``)."""
        value = self._value(key, default)
        if value is None:
            return None
        try:
            ok = isinstance(value, str) and value.count("{}") == 1 and isinstance(value.format("x"), str)
        except (IndexError, KeyError, ValueError):  # "{type}", "{0} {1}", "{"
            ok = False
        if not ok:
            raise ModelError(f"{self.path}: {key} must be text with exactly one {{}} for the type phrase, not {value!r}")
        return value

    def with_checked_training(self) -> ModelCard:
        """The card, once its ``training`` section is an object whose ``types`` is a list of text
        (a string there was read character by character as the trained-on types)."""
        training = self.card.get("training")
        if training is not None and not isinstance(training, dict):
            raise ModelError(f"{self.path}: training must be an object, not {training!r}")
        types = (training or {}).get("types")
        if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
            raise ModelError(f"{self.path}: training.types must be a list of type phrases, not {types!r}")
        return self.card
