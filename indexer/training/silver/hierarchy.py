"""Which type phrases of a silver set are broader, narrower or synonyms of each other.

``nerindex silver`` writes this beside the JSONL file (``*.hierarchy.json``); training reads it to
mask related types, which are neither positives nor negatives of each other's spans.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from ...errors import InputError
from ...model_folder import sha256_file
from ...text import strict_json
from ..data import HIERARCHY, relevant_phrases
from .annotator import SilverAnnotator
from .records import SilverSentence


def hierarchy_path(silver: str | Path) -> Path:
    """Where ``nerindex silver`` writes the hierarchy of a silver file: ``<stem>.hierarchy.json`` beside it."""
    silver = Path(silver)
    return silver.with_name(silver.stem + ".hierarchy.json")


class TypeHierarchy:
    """Ancestors/descendants among the type phrases of a silver set: what training must mask.

    ``related(a, b)`` is true when one phrase is a broader or narrower type of the other or they
    name the same synset; such a pair is neither positive nor negative for each other's spans
    unless a span lists both.
    """

    def __init__(
        self,
        ancestors: dict[str, set[str]],
        synonyms: dict[str, set[str]] | None = None,
        held_out: Sequence[str] = (),
        silver_sha256: str | None = None,
    ) -> None:
        self.ancestors = ancestors
        self.silver_sha256 = silver_sha256  # of the silver file written with it (None: written before it was recorded)
        self.synonyms = synonyms or {}
        self.held_out = list(held_out)  # the phrases the annotator never used as types
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
    def load(cls, path: str | Path, *, silver: str | Path | None = None) -> "TypeHierarchy":
        """The hierarchy file at ``path``; with ``silver``, checked to be the one written with that
        silver file (where it records the file's sha256): a run stopped between the two files
        leaves a new silver file beside the old hierarchy."""
        try:
            data = strict_json(Path(path).read_text(encoding="utf-8"))
            phrases = data["phrases"]
            hierarchy = cls(
                {p: set(v.get("ancestors", ())) for p, v in phrases.items()},
                {p: set(v.get("synonyms", ())) for p, v in phrases.items()},
                data.get("held_out", []),
                (data.get("silver") or {}).get("sha256"),
            )
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # a hand-edited or truncated file was a JSONDecodeError or KeyError traceback (left alone
            # in round 21's note)
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
            raise InputError(f"not a hierarchy written by nerindex silver ({type(exc).__name__}: {exc}): "
                             "run nerindex silver again", path=str(path), line=line) from exc
        if silver is not None and hierarchy.silver_sha256 not in (None, sha256_file(Path(silver))):
            raise InputError(f"{path} was written with another version of this silver file (a run of nerindex "
                             "silver stopped between its two files?): run nerindex silver again", path=str(silver))
        return hierarchy


def build_hierarchy(annotator: SilverAnnotator, sentences: Sequence[SilverSentence]) -> dict:
    """The ``*.hierarchy.json`` content: ancestors and synonyms of every type phrase used, among
    the phrases used."""
    wn = annotator.wn
    used: set[str] = {t for s in sentences for sp in s.spans for t in sp.types}
    phrase_synsets = _phrase_synsets(annotator, sentences, used)
    ancestors: dict[str, set[str]] = defaultdict(set)
    synonyms: dict[str, set[str]] = defaultdict(set)
    _add_wordnet_relations(annotator, phrase_synsets, used, ancestors, synonyms)
    _add_gold_relations(annotator, phrase_synsets, used, ancestors, synonyms)
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


def _phrase_synsets(
    annotator: SilverAnnotator, sentences: Sequence[SilverSentence], used: set[str]
) -> dict[str, set[tuple[str, int]]]:
    """Per used phrase, the synsets it was taken from as a type (not every synset it is a lemma of)."""
    wn = annotator.wn
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
    return {p: keys for p, keys in annotator.type_sources.items() if p in used}


def _add_wordnet_relations(
    annotator: SilverAnnotator,
    phrase_synsets: dict[str, set[tuple[str, int]]],
    used: set[str],
    ancestors: dict[str, set[str]],
    synonyms: dict[str, set[str]],
) -> None:
    """Each phrase gets the WordNet ancestors and synonyms of its own synsets.

    No closure at the phrase level: an ambiguous phrase ("instrument": music, tool, law) would
    chain unrelated branches together.
    """
    wn = annotator.wn
    for phrase, keys in phrase_synsets.items():
        for key in keys:
            s = wn.synsets[key]
            synonyms[phrase].update(x for x in s.lemmas if x in used and x != phrase)
            for a in annotator.ancestors(s):
                ancestors[phrase].update(x for x in wn.synsets[a].lemmas if x in used)


def _add_gold_relations(
    annotator: SilverAnnotator,
    phrase_synsets: dict[str, set[tuple[str, int]]],
    used: set[str],
    ancestors: dict[str, set[str]],
    synonyms: dict[str, set[str]],
) -> None:
    """Gold phrases: equal to (exact) or under their WordNet class; and the hand-made gold hierarchy."""
    wn = annotator.wn
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
