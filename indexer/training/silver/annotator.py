"""Finding WordNet noun spans in a sentence and typing a chosen sense with its hypernyms' lemmas.

The case rules, held-out phrases and gold-phrase anchors of the package docstring live here; the
passes over a whole data set (and the sense choice between candidates) are in ``annotate``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data import HIERARCHY
from ..wordnet import Synset, WordNet
from .rules import GOLD_SYNSETS, SKIP_TYPES, STOPWORDS, SilverConfig

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
        """Longest WordNet noun n-grams, left to right, with the case rules of the package docstring."""
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
