"""Silver training data: the training sentences annotated with WordNet-typed spans, merged with gold.

Why: ~50 human-labelled types are too few to teach a type space (DESIGN.md). WordNet gives every
noun and named instance in the training sentences a chain of hypernyms, so the same sentences carry
thousands of type phrases ("cello" → bowed stringed instrument, stringed instrument, musical
instrument, device; "Mekong" → river, stream, body of water).

What is annotated (see docs/silver.md for the rules and figures):

* **silver spans**: word n-grams (tokenizer words, as in ``indexer.spans``) that are WordNet noun
  lemmas, compounds first ("ice cream" before "ice"); inflections via morphy. Capitalised n-grams
  match proper lemmas (named instances: rivers, cities, people), lower-case ones common nouns. A
  word's sense is chosen among *all* its senses, nouns, verbs and adjectives alike: the sentence
  embedding against each sense's gloss embedding, with the SemCor tag counts as a prior — so
  "played" or "we play" picks a verb and gets no span. Common nouns keep a span only for concrete
  lexicographer files (artifacts, animals, people, food, places, ...) and specific senses.
* **types** of a span: the lemmas of its hypernyms (instance classes for named instances), nearest
  first, up to ``max_depth`` levels; abstract top synsets (entity, object, whole, group, ...) are
  skipped. The span's own synset is not a type (its lemma is the span's text).
* **gold spans** keep their readable phrase (``indexer/assets/phrases.json``) first, then the lemmas
  and hypernyms of the WordNet class that phrase names (politician → leader, person, ...), plus the
  types of a matching WordNet sense of the span's text when it sits under that class ("pizza",
  labelled food, gets dish and nutriment). Silver spans overlapping a gold span are dropped.
* **held-out types**: the dev evaluation types (CrossNER politics/literature, MultiCoNER medical),
  every lemma of every synset they name, and phrases containing them, never appear as types, so they
  stay unseen for ``nerindex eval``.

Output: JSONL, one sentence a line: ``{"id", "source", "text", "spans": [{"start", "end", "types",
"depths", "source": "gold"|"wordnet", "synset", "label"}]}``, and beside it ``*.hierarchy.json``:
for every type phrase used, its ancestors among the phrases used (descendants are the inverse), so
training can mask hierarchically related types (:class:`TypeHierarchy`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import click
import numpy as np

from ..errors import InputError
from ..records import Passage
from ..spans import words_from_encoding
from .wordnet import Synset, WordNet

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ settings

# lexicographer files whose common nouns become spans: things a retrieval query could name
SPAN_LEXNAMES = frozenset({
    "noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.location", "noun.object",
    "noun.person", "noun.plant", "noun.substance", "noun.group", "noun.event", "noun.communication",
    "noun.phenomenon", "noun.Tops",  # Tops: plant, animal, food (the generic ones fail min depth)
})  # fmt: skip

# abstract synsets that are never type phrases (besides everything within 2 levels of entity.n.01)
SKIP_TYPES = frozenset({
    "whole.n.02", "part.n.01", "part.n.02", "part.n.03", "thing.n.09", "thing.n.12", "unit.n.05",
    "instrumentality.n.03", "living_thing.n.01", "physical_object.n.01", "collection.n.01",
    "state.n.02", "quality.n.01", "trait.n.01", "property.n.02", "subject.n.02", "abstraction.n.06",
    "people.n.01", "social_group.n.01", "content.n.05", "matter.n.03", "material.n.01",
    "being.n.01", "organism.n.01", "relation.n.01", "artifact.n.01",
    "causal_agent.n.01", "communication.n.02", "written_communication.n.01",
})  # fmt: skip

# words that are never silver spans: function words, pronouns, and nouns too generic to be a type
STOPWORDS = frozenset("""
a an the this that these those my your his her its our their some any every each no all both
either neither other another such what which who whom whose whatever whoever i me you he she it we
us they them mine yours hers ours theirs myself yourself himself herself itself ourselves themselves
be am is are was were been being have has had do does did will would shall should can could may
might must ought and or but nor so yet for of in on at by to from with about as into onto upon than
then there here when where why how not too very just also only even still again ever never now
one two three four five six seven eight nine ten first second third last next new old much many
more most less least few lot lots thing things stuff way ways time times day days year years week
man men woman women people person persons someone somebody something anything everything nothing
kind kinds sort type part parts place places side end lol lmao omg rt http https www com co amp
im dont cant wont gonna wanna yeah yes ok okay hey hi thanks thank please good great best bad well
like love hate get got make made go going gone come back out up down over off around through
""".split())  # fmt: skip

DETERMINERS = frozenset(
    "a an the this that these those my your his her its our their some any every each no "
    "another several many few its one two three".split()
)
SUBJECTS = frozenset("i you we they he she it who to will would can could should must may might".split())

# gold phrase -> (WordNet synsets, exact). exact: the phrase names those synsets; otherwise it is a
# narrower class under them (a public corporation is a corporation)
GOLD_SYNSETS: dict[str, tuple[tuple[str, ...], bool]] = {
    "person": (("person.n.01",), True),
    "politician": (("politician.n.01", "politician.n.02"), True),
    "artist": (("artist.n.01",), True),
    "athlete": (("athlete.n.01",), True),
    "scientist": (("scientist.n.01",), True),
    "cleric": (("cleric.n.01",), True),
    "sports manager": (("person.n.01",), False),
    "human settlement": (("geographical_area.n.01",), False),
    "facility": (("facility.n.01",), True),
    "station": (("station.n.01",), True),
    "location": (("location.n.01",), True),
    "written work": (("writing.n.02",), True),
    "musical work": (("musical_composition.n.01",), True),
    "art work": (("work_of_art.n.01",), True),
    "software": (("software.n.01",), True),
    "musical group": (("musical_organization.n.01",), True),
    "public corporation": (("corporation.n.01",), False),
    "private corporation": (("corporation.n.01",), False),
    "aerospace manufacturer": (("manufacturer.n.01",), False),
    "car manufacturer": (("manufacturer.n.01",), False),
    "sports team": (("team.n.01",), False),
    "organization": (("organization.n.01",), True),
    "group": (("group.n.01",), True),
    "corporation": (("corporation.n.01",), True),
    "clothing": (("clothing.n.01",), True),
    "vehicle": (("vehicle.n.01",), True),
    "food": (("food.n.01", "food.n.02"), True),
    "drink": (("beverage.n.01",), True),
    "product": (("merchandise.n.01", "product.n.02"), True),
}

# the dev evaluation types of EVALUATION.md that are not gold training types: held out of the types
CROSSNER_DEV_TYPES = (
    "election", "political party", "country", "event", "book", "writer", "poem", "award",
    "literary genre", "magazine",
)  # fmt: skip
MEDICAL_TYPES = (
    "disease", "symptom", "medical procedure", "anatomical structure", "medication or vaccine",
)  # fmt: skip
DEFAULT_HOLD_OUT = CROSSNER_DEV_TYPES + MEDICAL_TYPES


@dataclass
class SilverConfig:
    """How silver spans are found and typed; recorded in the summary."""

    max_depth: int = 4  # hypernym levels above a span's synset that give type phrases
    max_span_width: int = 8  # words; from the model folder
    prior_weight: float = 0.03  # weight of log SemCor share against gloss cosine (docs/silver.md)
    disambiguate: bool = True  # False: WordNet's first sense (the baseline of the issue)
    hold_out: tuple[str, ...] = DEFAULT_HOLD_OUT
    min_synset_depth: int = 4  # common-noun senses shallower than this are too generic for a span
    drop_modifiers: bool = True  # "football club": no span for "football" before another noun span


# ------------------------------------------------------------------------------------ records


@dataclass
class SilverSpan:
    start: int
    end: int
    types: list[str]
    depths: list[int]  # per type: 0 gold phrase or its synonyms, k = k levels above
    source: str  # "gold" | "wordnet"
    synset: str | None = None
    label: str | None = None  # the gold phrase (gold spans only; None for misc)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SilverSentence:
    id: str
    source: str
    text: str
    spans: list[SilverSpan] = field(default_factory=list)
    # nouns found but not made spans (abstract, generic, modifiers): neither entity nor non-entity
    # for the entity head, since the silver annotation is incomplete there
    ignore: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "text": self.text,
                "spans": [s.to_dict() for s in self.spans],
                "ignore": [list(r) for r in self.ignore]}  # fmt: skip


# ------------------------------------------------------------------------------------ hierarchy


class TypeHierarchy:
    """Ancestors/descendants among the type phrases of a silver set: what training must mask.

    ``related(a, b)`` is true when one phrase is a broader or narrower type of the other or they
    name the same synset; such a pair is neither positive nor negative for each other's spans
    unless a span lists both.
    """

    def __init__(self, ancestors: dict[str, set[str]], synonyms: dict[str, set[str]] | None = None):
        self.ancestors = ancestors
        self.synonyms = synonyms or {}
        desc: dict[str, set[str]] = defaultdict(set)
        for p, anc in ancestors.items():
            for a in anc:
                desc[a].add(p)
        self.descendants = dict(desc)

    def related(self, a: str, b: str) -> bool:
        if a == b:
            return False
        return (
            b in self.ancestors.get(a, ())
            or a in self.ancestors.get(b, ())
            or b in self.synonyms.get(a, ())
        )

    def masked(self, positives: Iterable[str]) -> set[str]:
        """Phrases related to any positive: the ones to leave out of a span's negatives."""
        out: set[str] = set()
        for p in positives:
            out |= self.ancestors.get(p, set())
            out |= self.descendants.get(p, set())
            out |= self.synonyms.get(p, set())
        return out

    @classmethod
    def load(cls, path: str | Path) -> "TypeHierarchy":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        phrases = data["phrases"]
        return cls(
            {p: set(v.get("ancestors", ())) for p, v in phrases.items()},
            {p: set(v.get("synonyms", ())) for p, v in phrases.items()},
        )


def read_silver(path: str | Path) -> Iterator[SilverSentence]:
    """Sentences of a silver JSONL file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            d = json.loads(line)
            spans = [SilverSpan(**s) for s in d["spans"]]
            ignore = [tuple(r) for r in d.get("ignore", ())]
            yield SilverSentence(d["id"], d["source"], d["text"], spans, ignore)


# ------------------------------------------------------------------------------------ annotator

_TOKEN_RE = re.compile(r"[^\W_]+|[^\w\s]|_")


def pretokenize(text: str) -> list[str]:
    """Lower-case words split like BERT's pre-tokenizer (white space and punctuation)."""
    return _TOKEN_RE.findall(text.lower())


@dataclass
class _Match:
    first: int  # word index
    last: int
    start: int  # char
    end: int
    senses: list[tuple[Synset, str]]  # (synset, matched index lemma)
    gold: int | None = None  # index of the gold span it equals


def _phrase_case(synset: Synset, lemma: str) -> bool:
    """True when the matched lemma is spelled with a capital in WordNet (a proper name)."""
    for written in synset.lemmas:
        if written.lower() == lemma:
            return any(c.isupper() for c in written)
    return any(c.isupper() for c in synset.lemmas[0])


class SilverAnnotator:
    """Finds, disambiguates and types WordNet spans in sentences; merges gold spans."""

    def __init__(self, wn: WordNet, *, config: SilverConfig) -> None:
        self.wn = wn
        self.cfg = config
        # noun lookup keys normalised like the text: "mother-in-law" -> "mother - in - law"
        self.noun_keys: dict[str, list[str]] = defaultdict(list)
        self.max_words: dict[str, int] = {}
        for lemma in wn.index["n"]:
            key = " ".join(pretokenize(lemma))
            self.noun_keys[key].append(lemma)
            first, n = key.split(" ", 1)[0], key.count(" ") + 1
            if n > self.max_words.get(first, 0):
                self.max_words[first] = n
        self.held_out = self._held_out_phrases(config.hold_out)
        self._held_out_words = [tuple(pretokenize(p)) for p in config.hold_out for p in _split_or(p)]
        self._types_cache: dict[tuple, tuple[list[str], list[int]]] = {}
        # type phrase -> the synsets it was taken from (what the hierarchy file is built on)
        self.type_sources: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self._anc_cache: dict[tuple[str, int], set[tuple[str, int]]] = {}
        self.gold_anchor = self._gold_anchors()
        self.counts: Counter[str] = Counter()

    # ---------------------------------------------------------------- held-out and gold classes

    def _held_out_phrases(self, phrases: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for phrase in phrases:
            for part in _split_or(phrase):
                out.add(part.lower())
                for s in self.wn.senses(part.lower(), "n"):
                    out.update(x.lower() for x in s.lemmas)
        return out

    def is_held_out(self, phrase: str) -> bool:
        low = phrase.lower()
        if low in self.held_out:
            return True
        words = tuple(pretokenize(low))
        for held in self._held_out_words:
            n = len(held)
            if any(words[i : i + n] == held for i in range(len(words) - n + 1)):
                return True
        return False

    def _gold_anchors(self) -> dict[str, tuple[list[Synset], bool]]:
        from .data import HIERARCHY

        out: dict[str, tuple[list[Synset], bool]] = {}
        for phrase, (names, exact) in GOLD_SYNSETS.items():
            out[phrase] = ([self.wn.by_name(n) for n in names], exact)
        # narrower gold phrases without a WordNet class of their own borrow their parent's
        parents = {c: p for p, cs in HIERARCHY.items() for c in cs}
        for child, parent in parents.items():
            if child not in out and parent in out:
                out[child] = (out[parent][0], False)
        return out

    def ancestors(self, s: Synset) -> set[tuple[str, int]]:
        got = self._anc_cache.get(s.key)
        if got is None:
            got = self.wn.all_ancestors(s)
            self._anc_cache[s.key] = got
        return got

    def skip_type(self, s: Synset) -> bool:
        return s.name in SKIP_TYPES or self.wn.min_depth(s) <= 2

    def synset_types(self, s: Synset, *, include_self: bool = False) -> tuple[list[str], list[int]]:
        """Type phrases of a sense: its hypernyms' lemmas nearest first (held-out ones removed)."""
        key = (s.key, include_self)
        got = self._types_cache.get(key)
        if got is not None:
            return got
        types: list[str] = []
        depths: list[int] = []
        levels = self.wn.ancestor_levels(s, max_levels=self.cfg.max_depth)
        if include_self:
            levels = [[s], *levels[: self.cfg.max_depth - 1]] if self.cfg.max_depth else [[s]]
        for depth, level in enumerate(levels, start=1):
            for q in level:
                if self.skip_type(q):
                    continue
                for lemma in q.lemmas:
                    if self.is_held_out(lemma):
                        continue
                    self.type_sources[lemma].add(q.key)
                    if lemma not in types:
                        types.append(lemma)
                        depths.append(depth)
        self._types_cache[key] = (types, depths)
        return types, depths

    # ---------------------------------------------------------------- candidates

    def _noun_senses(self, key: str) -> list[tuple[Synset, str]]:
        out: list[tuple[Synset, str]] = []
        seen: set[tuple[str, int]] = set()
        lemmas = list(self.noun_keys.get(key, ()))
        for base in self.wn.base_forms(key, "n"):
            for lemma in self.noun_keys.get(" ".join(pretokenize(base)), [base]):
                if lemma not in lemmas:
                    lemmas.append(lemma)
        for lemma in lemmas:
            for s in self.wn.senses(lemma, "n"):
                if s.key not in seen:
                    seen.add(s.key)
                    out.append((s, lemma))
        return out

    def find_matches(self, text: str, words, gold_ranges: list[tuple[int, int]]) -> list[_Match]:
        """Longest WordNet noun n-grams, left to right, with the case rules of the module docstring."""
        lower = [text[w.start : w.end].lower() for w in words]
        sentence_lower = not any(c.isupper() for c in text)
        shouting = sum(c.isupper() for c in text) > 0.5 * max(1, sum(c.isalpha() for c in text))
        in_gold = set()
        for a, b in gold_ranges:
            in_gold.update(range(a, b + 1))
        matches: list[_Match] = []
        # gold spans first: their text may name a WordNet sense that refines the gold type
        for gi, (a, b) in enumerate(gold_ranges):
            key = " ".join(lower[a : b + 1])
            senses = self._noun_senses(key)
            if senses:
                matches.append(_Match(a, b, words[a].start, words[b].end, senses, gold=gi))
        i, n = 0, len(words)
        width = self.cfg.max_span_width
        while i < n:
            w = lower[i]
            if i in in_gold or not w[:1].isalnum() or (i > 0 and lower[i - 1] in ("@", "#")):
                i += 1
                continue
            longest = min(self.max_words.get(w, 1), n - i)
            found = None
            for length in range(longest, 0, -1):
                j = i + length - 1
                if any(k in in_gold for k in range(i, j + 1)):
                    continue
                if length == 1 and (w in STOPWORDS or len(w) < 3 or w.isdigit()):
                    break
                key = " ".join(lower[i : j + 1])
                senses = self._noun_senses(key)
                if not senses:
                    continue
                surface = text[words[i].start : words[j].end]
                cap = surface[:1].isupper()
                initial = i == 0 or lower[i - 1] in (".", "!", "?", ":", "\"", "“", "-")
                keep = []
                for s, lemma in senses:
                    proper = _phrase_case(s, lemma)
                    if proper:
                        ok = cap and not sentence_lower and not shouting
                    else:
                        ok = (not cap) or initial or shouting
                    if ok:
                        keep.append((s, lemma))
                if keep:
                    if length > width:
                        self.counts["spans_too_wide"] += 1
                        continue
                    found = _Match(i, j, words[i].start, words[j].end, keep)
                    break
            if found is None:
                i += 1
                continue
            matches.append(found)
            i = found.last + 1
        return matches

    def other_pos_senses(self, word: str) -> list[tuple[Synset, str]]:
        """Verb/adjective/adverb senses of a single word, competing with its noun senses."""
        out: list[tuple[Synset, str]] = []
        for p in ("v", "a", "r"):
            if p not in self.wn.index:
                continue
            for base in self.wn.base_forms(word, p):
                out.extend((s, base) for s in self.wn.senses(base, p))
        return out

    # ---------------------------------------------------------------- scoring

    def prior(self, cands: list[tuple[Synset, str]]) -> np.ndarray:
        """log share of SemCor tags per candidate sense (smoothed); sense order breaks ties."""
        counts = np.array([self.wn.count(lemma, s) for s, lemma in cands], dtype=np.float64)
        share = (counts + 0.5) / (counts.sum() + 0.5 * len(cands))
        order = np.array([_sense_rank(self.wn, s, lemma) for s, lemma in cands], dtype=np.float64)
        return np.log(share) - 0.01 * order


def _sense_rank(wn: WordNet, s: Synset, lemma: str) -> int:
    offs = wn.index[s.pos].get(lemma, ())
    return offs.index(s.offset) if s.offset in offs else len(offs)


def _split_or(phrase: str) -> list[str]:
    """"medication or vaccine" -> ["medication or vaccine", "medication", "vaccine"]."""
    parts = [p.strip() for p in re.split(r"\s+or\s+", phrase) if p.strip()]
    return [phrase] + (parts if len(parts) > 1 else [])


# ------------------------------------------------------------------------------------ pipeline


@dataclass
class _Pending:
    """A match waiting for its sense: candidates (nouns first) and whether nouns alone compete."""

    sentence: int
    match: _Match
    cands: list[tuple[Synset, str]]
    n_noun: int


def gloss_text(s: Synset) -> str:
    """What a sense is embedded as: its lemmas, definition and examples (they read like the
    sentences they are compared with), cut at ~60 words."""
    words = f"{', '.join(s.lemmas[:3])}: {s.gloss}".split()
    return " ".join(words[:60])


class GlossVectors:
    """Gloss embeddings, cached on disk per embedding model (they do not depend on the data)."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], cache_file: Path | None) -> None:
        self.embed = embed
        self.cache_file = cache_file
        self.vectors: dict[str, np.ndarray] = {}
        if cache_file and cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                for k, v in zip(z["keys"], z["vectors"]):
                    self.vectors[str(k)] = v
        self._dirty = False

    def ensure(self, synsets: Iterable[Synset], *, progress: Callable[[int], None] | None = None) -> None:
        missing = {}
        for s in synsets:
            k = f"{s.pos}{s.offset}"
            if k not in self.vectors and k not in missing:
                missing[k] = gloss_text(s)
        if not missing:
            return
        keys = sorted(missing, key=lambda k: len(missing[k]))
        vecs = embed_sorted([missing[k] for k in keys], self.embed, progress=progress)
        for k, v in zip(keys, vecs):
            self.vectors[k] = v
        self._dirty = True

    def get(self, s: Synset) -> np.ndarray:
        return self.vectors[f"{s.pos}{s.offset}"]

    def save(self) -> None:
        if not (self._dirty and self.cache_file):
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.vectors))
        vecs = np.stack([self.vectors[k] for k in keys]).astype(np.float32)
        tmp = self.cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vecs)
        tmp.replace(self.cache_file)


def embed_sorted(
    texts: Sequence[str],
    embed: Callable[[Sequence[str]], np.ndarray],
    *,
    chunk: int = 128,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed texts in chunks of similar length (little padding), returned in the input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        vecs = np.asarray(embed([texts[i] for i in idx]), dtype=np.float32)
        if out is None:
            out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
        out[idx] = vecs
        if progress:
            progress(len(idx))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def text_embedder(encoder, *, as_types: bool = False) -> Callable[[Sequence[str]], np.ndarray]:
    """Unit vectors of raw texts (sentences, glosses) from a model folder's type side.

    Not ``OnnxEncoder.embed_types``: that applies the model's type template and caches phrases,
    neither of which suits tens of thousands of sentences; ``as_types`` applies the template.
    """
    template = encoder.info.type_template if as_types else "{}"

    def embed(texts: Sequence[str]) -> np.ndarray:
        encs = encoder.tokenizer.encode_batch([template.format(t) for t in texts], add_special_tokens=True)
        limit = encoder.info.max_length
        width = min(max(len(e.ids) for e in encs), limit)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encs):
            toks = e.ids if len(e.ids) <= limit else e.ids[: limit - 1] + e.ids[-1:]
            ids[row, : len(toks)] = toks
            mask[row, : len(toks)] = 1
        dummy = np.zeros((len(encs), 1), dtype=np.int64)
        (vectors,) = encoder.session.run(
            ["type_vectors"],
            {"input_ids": ids, "attention_mask": mask, "span_starts": dummy, "span_ends": dummy},
        )
        return vectors.astype(np.float32)

    return embed


def annotate(
    passages: Sequence[Passage],
    origins: Sequence[str],
    gold_phrases: Sequence[Sequence[str | None]],
    *,
    annotator: SilverAnnotator,
    tokenizer,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
    gloss_cache: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[SilverSentence]:
    """Silver sentences for labelled passages (gold spans merged); ``embed`` returns unit vectors.

    Three passes so embedding is batched: find candidates in every sentence, embed the sentences
    and glosses that a choice needs, then choose senses and type the spans.
    """
    from .data import gold_word_ranges

    cfg = annotator.cfg
    counts = annotator.counts
    sentences: list[SilverSentence] = []
    pending: list[_Pending] = []
    # per sentence: (gold index, char start, char end, phrase, first word)
    gold_kept: list[list[tuple[int, int, int, str | None, int]]] = []
    need_sentence: set[int] = set()
    report = progress or (lambda stage, done, total: None)

    # pass 1: words, gold alignment, candidate matches
    for si, (p, origin, phrases) in enumerate(zip(passages, origins, gold_phrases)):
        enc = tokenizer.encode(p.text, add_special_tokens=False)
        words = words_from_encoding(enc.word_ids, enc.offsets)
        ranges: list[tuple[int, int]] = []
        kept: list[tuple[int, int, int, str | None, int]] = []
        aligned = gold_word_ranges(words, p.gold, cfg.max_span_width, counts)
        for g, phrase, wr in zip(p.gold, phrases, aligned):
            if wr is not None:
                kept.append((len(ranges), g.start, g.end, phrase, wr[0]))
                ranges.append(wr)
        gold_kept.append(kept)
        sentences.append(SilverSentence(p.id, origin, p.text))
        matches = annotator.find_matches(p.text, words, ranges)
        lower = [p.text[w.start : w.end].lower() for w in words]
        for m in matches:
            cands = m.senses
            if m.gold is not None:
                phrase = kept[m.gold][3]
                cands = _gold_compatible(annotator, cands, phrase)
                if not cands:
                    continue
            n_noun = len(cands)
            if m.gold is None and m.first == m.last:
                prev = lower[m.first - 1] if m.first > 0 else ""
                prev2 = lower[m.first - 2] if m.first > 1 else ""
                if prev not in DETERMINERS and prev2 not in DETERMINERS:
                    cands = cands + annotator.other_pos_senses(lower[m.first])
                    if prev in SUBJECTS and len(cands) > n_noun:
                        cands, n_noun = cands[n_noun:], 0  # "we play", "to swim": not a noun
            if len(cands) > 1 and cfg.disambiguate:
                need_sentence.add(si)
            pending.append(_Pending(si, m, cands, n_noun))
        report("candidates", si + 1, len(passages))

    # pass 2: embeddings for the choices that need them
    sent_vecs: dict[int, np.ndarray] = {}
    glosses = None
    if cfg.disambiguate and embed is not None and need_sentence:
        order = sorted(need_sentence)
        done = [0]

        def tick(n: int, stage: str, total: int) -> None:
            done[0] += n
            report(stage, done[0], total)

        vecs = embed_sorted([passages[i].text for i in order], embed,
                            progress=lambda n: tick(n, "sentences", len(order)))  # fmt: skip
        sent_vecs = dict(zip(order, vecs))
        glosses = GlossVectors(embed, gloss_cache)
        wanted = {s.key: s for pd in pending if len(pd.cands) > 1 for s, _ in pd.cands}
        done[0] = 0
        glosses.ensure(wanted.values(), progress=lambda n: tick(n, "glosses", len(wanted)))
        glosses.save()

    # pass 3: choose a sense per match, type the spans, merge with gold
    chosen: dict[int, list[tuple[_Match, Synset]]] = defaultdict(list)
    for pd in pending:
        counts["candidates"] += 1
        if len(pd.cands) == 1 or not cfg.disambiguate or glosses is None:
            # the baseline: WordNet's first sense of the most specific reading
            best = 0 if pd.n_noun == 0 or len(pd.cands) == 1 else _first_sense(annotator, pd)
        else:
            counts["ambiguous"] += 1
            g = np.stack([glosses.get(s) for s, _ in pd.cands])
            score = g @ sent_vecs[pd.sentence] + cfg.prior_weight * annotator.prior(pd.cands)
            best = int(np.argmax(score))
        if best >= pd.n_noun:
            counts["not_a_noun"] += 1
            continue
        chosen[pd.sentence].append((pd.match, pd.cands[best][0]))

    for si, sent in enumerate(sentences):
        kept = gold_kept[si]
        by_gold = {m.gold: s for m, s in chosen.get(si, []) if m.gold is not None}
        for gi, start, end, phrase, _ in kept:
            span = gold_span(annotator, start, end, phrase, by_gold.get(gi))
            sent.spans.append(span)
            counts["spans_gold"] += 1
            counts["gold_with_wordnet"] += span.synset is not None
        silver = [(m, s) for m, s in chosen.get(si, []) if m.gold is None]
        silver.sort(key=lambda x: x[0].first)
        starts = {m.first for m, _ in silver} | {first for *_, first in kept}
        for m, s in silver:
            reason = None
            if not s.is_instance:
                if s.lexname not in SPAN_LEXNAMES:
                    reason = "dropped_lexname"
                elif annotator.wn.min_depth(s) < cfg.min_synset_depth or s.name in SKIP_TYPES:
                    reason = "dropped_generic"
                elif cfg.drop_modifiers and m.first == m.last and (m.last + 1) in starts:
                    reason = "dropped_modifier"
            types, depths = annotator.synset_types(s) if reason is None else ([], [])
            if reason is None and not types:
                reason = "dropped_no_types"
            if reason:
                counts[reason] += 1
                sent.ignore.append((m.start, m.end))
                continue
            sent.spans.append(SilverSpan(m.start, m.end, types, depths, "wordnet", s.name))
            counts["spans_wordnet"] += 1
            counts["spans_wordnet_instance"] += s.is_instance
        sent.spans.sort(key=lambda x: (x.start, x.end))
    counts["sentences"] = len(sentences)
    return sentences


def _first_sense(annotator: SilverAnnotator, pd: _Pending) -> int:
    """Index of the most frequent sense (SemCor counts, then WordNet order) across the candidates."""
    return int(np.argmax(annotator.prior(pd.cands)))


def _gold_compatible(
    annotator: SilverAnnotator, cands: list[tuple[Synset, str]], phrase: str | None
) -> list[tuple[Synset, str]]:
    """Senses of a gold span's text that agree with its gold type (misc: named instances only)."""
    if phrase is None:
        return [(s, lemma) for s, lemma in cands if s.is_instance]
    anchor = annotator.gold_anchor.get(phrase)
    if anchor is None:
        return []
    keys = {a.key for a in anchor[0]}
    return [
        (s, lemma)
        for s, lemma in cands
        if s.key not in keys and keys & annotator.ancestors(s)
    ]


def gold_span(
    annotator: SilverAnnotator, start: int, end: int, phrase: str | None, sense: Synset | None
) -> SilverSpan:
    """A gold span's types: its phrase, the lemmas and hypernyms of its WordNet class, its sense's."""
    types: list[str] = []
    depths: list[int] = []

    def add(ts: Iterable[str], ds: Iterable[int]) -> None:
        for t, d in zip(ts, ds):
            if t not in types:
                types.append(t)
                depths.append(d)

    if phrase:
        add([phrase], [0])
        anchor = annotator.gold_anchor.get(phrase)
        if anchor:
            synsets, exact = anchor
            for s in synsets:
                if exact:
                    add([x for x in s.lemmas if not annotator.is_held_out(x)], [0] * len(s.lemmas))
                    add(*annotator.synset_types(s))
                else:
                    t, d = annotator.synset_types(s, include_self=True)
                    add(t, d)
    if sense is not None:
        add(*annotator.synset_types(sense))
    return SilverSpan(start, end, types, depths, "gold", sense.name if sense else None, phrase)


def build_hierarchy(annotator: SilverAnnotator, sentences: Sequence[SilverSentence]) -> dict:
    """Ancestors and synonyms of every type phrase used, among the phrases used."""
    from .data import HIERARCHY, relevant_phrases

    wn = annotator.wn
    used: set[str] = {t for s in sentences for sp in s.spans for t in sp.types}
    # a phrase names the synsets it was taken from as a type (not every synset it is a lemma of)
    for s in sentences:
        for sp in s.spans:
            if sp.synset:
                annotator.synset_types(wn.by_name(sp.synset))
    for phrase, (synsets, exact) in annotator.gold_anchor.items():
        for q in synsets:
            annotator.synset_types(q)
            annotator.synset_types(q, include_self=True)
            if exact:
                for lemma in (phrase, *q.lemmas):
                    annotator.type_sources[lemma].add(q.key)
    phrase_synsets = {p: keys for p, keys in annotator.type_sources.items() if p in used}
    # No closure at the phrase level: an ambiguous phrase ("instrument": music, tool, law) would
    # chain unrelated branches together. Each phrase gets the WordNet ancestors of its own synsets.
    ancestors: dict[str, set[str]] = defaultdict(set)
    synonyms: dict[str, set[str]] = defaultdict(set)
    under: dict[tuple[str, int], set[str]] = defaultdict(set)  # synset -> phrases naming it
    for phrase, keys in phrase_synsets.items():
        for key in keys:
            s = wn.synsets[key]
            under[key].add(phrase)
            synonyms[phrase].update(x for x in s.lemmas if x in used and x != phrase)
            for a in annotator.ancestors(s):
                ancestors[phrase].update(x for x in wn.synsets[a].lemmas if x in used)
    # gold phrases: equal to (exact) or under their WordNet class
    for phrase, (synsets, exact) in annotator.gold_anchor.items():
        if phrase not in used:
            continue
        for s in synsets:
            names = {x for x in s.lemmas if x in used and x != phrase}
            if exact:
                synonyms[phrase] |= names
                for n in names:
                    synonyms[n].add(phrase)
                # every phrase of a synset under the class is under the gold phrase
                for other, keys in phrase_synsets.items():
                    if any(s.key in annotator.ancestors(wn.synsets[k]) for k in keys):
                        ancestors[other].add(phrase)
            else:
                ancestors[phrase] |= names
            for a in annotator.ancestors(s):
                ancestors[phrase].update(x for x in wn.synsets[a].lemmas if x in used)
    # the hand-made gold hierarchy (politician under person, ...) between gold phrases only: passing
    # it on to every phrase under the child would go through ambiguous phrases ("group")
    for parent in HIERARCHY:
        if parent not in used:
            continue
        for child in relevant_phrases(parent) - {parent}:
            if child in used:
                ancestors[child].add(parent)
    for p in ancestors:
        ancestors[p].discard(p)
    return {
        "format": 1,
        "max_depth": annotator.cfg.max_depth,
        "held_out": sorted(annotator.cfg.hold_out),
        "phrases": {
            p: {
                "ancestors": sorted(ancestors.get(p, ())),
                "synonyms": sorted(synonyms.get(p, ())),
                "synsets": sorted(wn.synsets[k].name for k in phrase_synsets.get(p, ())),
            }
            for p in sorted(used)
        },
    }


# ------------------------------------------------------------------------------------ summary


def type_mentions(sentences: Iterable[SilverSentence], *, gold_only: bool = False) -> Counter[str]:
    """Mentions per type phrase: one per (span, type) pair; ``gold_only``: gold phrases of gold spans."""
    c: Counter[str] = Counter()
    for s in sentences:
        for sp in s.spans:
            if gold_only:
                if sp.source == "gold" and sp.label:
                    c[sp.label] += 1
            else:
                c.update(set(sp.types))
    return c


def dev_eval_types(data_dir: str | Path) -> dict[str, list[str]]:
    """The query phrases of the dev zero-shot sets: CrossNER politics/literature dev, MultiCoNER medical."""
    from ..conll import read_conll
    from .data import load_phrase_map

    table = load_phrase_map()
    d = Path(data_dir)
    out: dict[str, list[str]] = {}
    for name in ("politics", "literature"):
        path = d / "crossner" / name / "dev.txt"
        if path.is_file():
            tags = {g.label for p in read_conll(path) for g in p.gold}
            out[f"crossner_{name}_dev"] = sorted({table["crossner"][t] for t in tags if table["crossner"].get(t)})
    out["multiconer_medical"] = list(MEDICAL_TYPES)
    return out


def familiarity_table(
    test_sets: dict[str, list[str]],
    trainings: dict[str, Counter[str]],
    embed: Callable[[Sequence[str]], np.ndarray],
    *,
    seen: Iterable[str] = (),
) -> dict[str, dict]:
    """Familiarity (indexer.evaluation.familiarity) of each test set against each training set.

    ``seen``: the gold training phrases; the types of a set outside them are its unseen types, the
    ones zero-shot figures are about, so their mean is reported on its own.
    """
    from ..evaluation.familiarity import split_familiarity

    seen = set(seen)
    out: dict[str, dict] = {}
    for set_name, types in test_sets.items():
        unseen = [t for t in types if t not in seen]
        row: dict = {"unseen_types": unseen}
        for train_name, counts in trainings.items():
            per, mean = split_familiarity(types, counts, embed)
            row[train_name] = {
                "mean": round(mean or 0.0, 4),
                "mean_unseen": round(float(np.mean([per[t] for t in unseen])), 4) if unseen else None,
                "per_type": {t: round(v, 4) for t, v in per.items()},
            }
        out[set_name] = row
    return out


def usage_example_check(
    annotator: SilverAnnotator,
    embed: Callable[[Sequence[str]], np.ndarray],
    *,
    n: int = 1200,
    seed: int = 0,
    weights: Sequence[float] = (0.0, 0.02, 0.03, 0.04, 0.08),
) -> dict:
    """Sense-choice accuracy on WordNet's own usage examples of polysemous nouns.

    The only sense-tagged text at hand: each quoted example in a noun gloss uses the lemma in that
    sense. Candidates are chosen as in :func:`annotate` (all senses of the word, any part of
    speech); the example's own sense is embedded without that example (leave one out). Examples
    exist more often for rare senses than text does, so the first-sense baseline is low here and
    the prior is worth more on real text than this check shows.
    """
    import random

    wn = annotator.wn
    items = []
    for s in wn.noun_synsets():
        if s.is_instance:
            continue
        examples = re.findall(r'"([^"]+)"', s.gloss)
        for lemma in s.lemmas:
            low = lemma.lower()
            if " " in low or len(wn.senses(low, "n")) < 2:
                continue
            for ex in examples:
                if re.search(r"\b" + re.escape(low) + r"\b", ex.lower()):
                    items.append((s, low, ex))
    random.Random(seed).shuffle(items)
    items = items[:n]
    cands = [[(x, low) for x in wn.senses(low, "n")] + annotator.other_pos_senses(low) for _, low, _ in items]
    keys = {x.key: x for cs in cands for x, _ in cs}
    order = list(keys)
    gloss_vecs = dict(zip(order, embed_sorted([gloss_text(keys[k]) for k in order], embed)))
    own = embed_sorted([gloss_text(s).replace(f'"{ex}"', "") for s, _, ex in items], embed)
    sent = embed_sorted([ex for _, _, ex in items], embed)
    hits: dict[str, list[bool]] = defaultdict(list)
    for i, ((s, _, _), cs) in enumerate(zip(items, cands)):
        g = np.stack([own[i] if x.key == s.key else gloss_vecs[x.key] for x, _ in cs])
        gold = [x.key for x, _ in cs].index(s.key)
        prior = annotator.prior(cs)
        hits["first_sense"].append(int(np.argmax(prior)) == gold)
        for w in weights:
            hits[f"gloss_prior_{w:g}"].append(int(np.argmax(g @ sent[i] + w * prior)) == gold)
    return {"examples": len(items), "accuracy": {k: round(float(np.mean(v)), 4) for k, v in hits.items()}}


def cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nerindex" / "wordnet"


# ------------------------------------------------------------------------------------ command


@click.command("silver")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="JSONL file to write; the hierarchy goes beside it as *.hierarchy.json.")
@click.option("--data-dir", default="../shared/data", show_default=True,
              type=click.Path(file_okay=False), help="Folder of the labelled sets (shared/data layout).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="Model folder whose tokenizer and type encoder are used (default: NERINDEX_MODEL or the shipped default model).")
@click.option("--wordnet", "wordnet_dir", type=click.Path(file_okay=False),
              help="WordNet dict folder (default: NERINDEX_WORDNET, WNSEARCHDIR or /usr/share/wordnet).")
@click.option("--max-depth", default=4, show_default=True, type=click.IntRange(1, 12),
              help="Hypernym levels above a span's sense that give its type phrases.")
@click.option("--split", type=click.Choice(["train", "dev"]), default="train", show_default=True,
              help="Which split of the shipped model's data to annotate (dev: its validation files, "
              "for choosing the detection threshold of a silver-trained model).")
@click.option("--limit", type=int, help="Only the first N training sentences (quick runs).")
@click.option("--hold-out", "hold_out", default=None,
              help="Comma-separated type phrases never used as types (default: the dev evaluation "
              "types); 'none' keeps all.")
@click.option("--first-sense", is_flag=True, help="No disambiguation: WordNet's most frequent sense.")
@click.option("--familiarity/--no-familiarity", default=True, show_default=True,
              help="Report the Familiarity of the dev evaluation types (gold-only vs silver training).")
@click.option("--wsd-check", type=int, default=None, metavar="N",
              help="Only measure sense choice on N WordNet usage examples and print it (no data written).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def silver_command(out_path, data_dir, model_dir, wordnet_dir, max_depth, split, limit, hold_out,
                   first_sense, familiarity, wsd_check, as_json) -> None:  # fmt: skip
    """Annotate the training sentences with WordNet-typed spans and merge them with the gold spans."""
    from ..config import from_env
    from ..encoder import OnnxEncoder
    from .data import MEDICAL_PHRASES, default_sources, read_sources

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if not out_path and not wsd_check:
        raise click.UsageError("--out is required")
    if not Path(data_dir).is_dir():
        raise InputError("no such data folder", path=data_dir)
    t0 = time.perf_counter()
    wn = WordNet.load(wordnet_dir)
    encoder = OnnxEncoder.from_dir(model_dir or from_env().model, device="cpu")
    held = DEFAULT_HOLD_OUT if hold_out is None else tuple(
        p.strip() for p in hold_out.split(",") if p.strip() and hold_out.strip().lower() != "none"
    )
    cfg = SilverConfig(max_depth=max_depth, max_span_width=encoder.info.max_span_width,
                       disambiguate=not first_sense, hold_out=held)  # fmt: skip
    annotator = SilverAnnotator(wn, config=cfg)
    if wsd_check:
        result = usage_example_check(annotator, text_embedder(encoder), n=wsd_check)
        click.echo(json.dumps(result, indent=1) if as_json else
                   f"{result['examples']} usage examples: " + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items()))  # fmt: skip
        return
    sources = default_sources(data_dir)[split]
    passages, origins, phrases, read_counts = read_sources(sources, exclude_phrases=MEDICAL_PHRASES)
    if limit:
        passages, origins, phrases = passages[:limit], origins[:limit], phrases[:limit]

    bar_state: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bar_state.get(stage)
        if bar is None:
            for old in bar_state.values():
                old.render_finish()  # type: ignore[attr-defined]
            bar_state.clear()
            bar = click.progressbar(length=total, label=f"{stage:>10}", file=sys.stderr)
            bar_state[stage] = bar
        bar.update(done - bar.pos)  # type: ignore[attr-defined]

    checksum = hashlib.sha256(encoder.info.checksum.encode()).hexdigest()[:12]
    sentences = annotate(
        passages, origins, phrases, annotator=annotator, tokenizer=encoder.tokenizer,
        embed=text_embedder(encoder),
        gloss_cache=cache_dir() / f"glosses-{checksum}.npz", progress=progress,
    )  # fmt: skip
    for bar in bar_state.values():
        bar.render_finish()  # type: ignore[attr-defined]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for s in sentences:
            fh.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
    hierarchy = build_hierarchy(annotator, sentences)
    hier_path = out.with_name(out.stem + ".hierarchy.json")
    hier_path.write_text(json.dumps(hierarchy, ensure_ascii=False, indent=0), encoding="utf-8")

    silver_counts = type_mentions(sentences)
    gold_counts = type_mentions(sentences, gold_only=True)
    c = annotator.counts
    summary: dict = {
        "out": str(out),
        "hierarchy": str(hier_path),
        "sources": [s.name for s in sources],
        "excluded_sentences_with_held_out_gold": read_counts["sentences_excluded"],
        "config": dataclasses.asdict(cfg),
        "wordnet": str(wn.folder),
        "embedding_model": f"{encoder.info.id} {encoder.info.version} type encoder (all-MiniLM-L6-v2 phrase embedding)",
        "counts": {
            "sentences": c["sentences"],
            "spans": c["spans_gold"] + c["spans_wordnet"],
            "spans_gold": c["spans_gold"],
            "spans_gold_with_wordnet_sense": c["gold_with_wordnet"],
            "spans_wordnet": c["spans_wordnet"],
            "spans_wordnet_instances": c["spans_wordnet_instance"],
            "type_phrases_distinct": len(silver_counts),
            "type_phrases_distinct_gold_only": len(gold_counts),
            "type_mentions": sum(silver_counts.values()),
            **{k: c[k] for k in ("candidates", "ambiguous", "not_a_noun", "dropped_lexname",
                                 "dropped_generic", "dropped_modifier", "dropped_no_types",
                                 "spans_too_wide", "gold_too_wide", "gold_misaligned")},
        },  # fmt: skip
        "seconds": None,
    }
    if familiarity:
        tests = dev_eval_types(data_dir)
        summary["familiarity"] = familiarity_table(
            tests, {"gold_only": gold_counts, "silver": silver_counts},
            lambda texts: embed_sorted(list(texts), text_embedder(encoder, as_types=True)),
            seen=gold_counts,
        )  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        click.echo(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        click.echo(_summary_text(summary))


def _summary_text(summary: dict) -> str:
    c = summary["counts"]
    lines = [
        f"wrote {summary['out']} and {summary['hierarchy']} in {summary['seconds']} s",
        f"sentences {c['sentences']}; spans {c['spans']} (gold {c['spans_gold']}, of which "
        f"{c['spans_gold_with_wordnet_sense']} with a WordNet sense; WordNet {c['spans_wordnet']}, "
        f"of which {c['spans_wordnet_instances']} named instances)",
        f"distinct type phrases {c['type_phrases_distinct']} (gold only: {c['type_phrases_distinct_gold_only']})",
    ]
    for set_name, row in (summary.get("familiarity") or {}).items():
        parts = ", ".join(
            f"{k} {v['mean']:.3f} (unseen {v['mean_unseen']:.3f})"
            for k, v in row.items() if isinstance(v, dict) and v.get("mean_unseen") is not None
        )  # fmt: skip
        lines.append(f"Familiarity of {set_name}: {parts}")
    return "\n".join(lines)
