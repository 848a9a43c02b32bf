"""Annotating a data set: find candidates in every sentence, embed what sense choice needs,
choose a sense per candidate, type the spans and merge them with the gold spans.

Three passes so embedding is batched over the whole set rather than run sentence by sentence.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ...records import Passage
from ...spans import words_from_encoding
from ..data import gold_word_ranges
from ..wordnet import Synset
from .annotator import SilverAnnotator, _Match
from .glosses import Embed, GlossVectors, embed_sorted
from .records import SilverSentence, SilverSpan
from .rules import DETERMINERS, SKIP_TYPES, SPAN_LEXNAMES, SUBJECTS

Progress = Callable[[str, int, int], None]  # (stage, done, total)
# per sentence: the gold spans that align with tokenizer words as
# (gold index, char start, char end, phrase, first word)
GoldKept = list[tuple[int, int, int, "str | None", int]]


@dataclass
class _Pending:
    """A match waiting for its sense: candidates (nouns first) and whether nouns alone compete."""

    sentence: int
    match: _Match
    cands: list[tuple[Synset, str]]
    n_noun: int


def annotate(
    passages: Sequence[Passage],
    origins: Sequence[str],
    gold_phrases: Sequence[Sequence[str | None]],
    *,
    annotator: SilverAnnotator,
    tokenizer,
    embed: Embed | None,
    gloss_cache: Path | None = None,
    progress: Progress | None = None,
) -> list[SilverSentence]:
    """Silver sentences for labelled passages (gold spans merged); ``embed`` returns unit vectors."""
    report = progress or (lambda stage, done, total: None)
    sentences: list[SilverSentence] = []
    gold_kept: list[GoldKept] = []
    pending: list[_Pending] = []
    for si, (p, origin, phrases) in enumerate(zip(passages, origins, gold_phrases)):
        sentences.append(SilverSentence(p.id, origin, p.text))
        kept, found = _sentence_candidates(annotator, si, p, phrases, tokenizer)
        gold_kept.append(kept)
        pending += found
        report("candidates", si + 1, len(passages))
    sent_vecs, glosses = _embed_for_choice(annotator, passages, pending, embed, gloss_cache, report)
    chosen = _choose_senses(annotator, pending, sent_vecs, glosses)
    for si, sent in enumerate(sentences):
        _add_spans(annotator, sent, gold_kept[si], chosen.get(si, []))
    annotator.counts["sentences"] = len(sentences)
    return sentences


def _sentence_candidates(
    annotator: SilverAnnotator, si: int, p: Passage, phrases: Sequence[str | None], tokenizer
) -> tuple[GoldKept, list[_Pending]]:
    """Pass 1 for one sentence: words, gold alignment, candidate matches and their senses."""
    enc = tokenizer.encode(p.text, add_special_tokens=False)
    words = words_from_encoding(enc.word_ids, enc.offsets, p.text)
    ranges: list[tuple[int, int]] = []
    kept: GoldKept = []
    aligned = gold_word_ranges(words, p.gold, annotator.cfg.max_span_width, annotator.counts)
    for g, phrase, wr in zip(p.gold, phrases, aligned):
        if wr is not None:
            kept.append((len(ranges), g.start, g.end, phrase, wr[0]))
            ranges.append(wr)
    lower = [p.text[w.start : w.end].lower() for w in words]
    pending: list[_Pending] = []
    for m in annotator.find_matches(p.text, words, ranges):
        cands = m.senses
        if m.gold is not None:
            cands = _gold_compatible(annotator, cands, kept[m.gold][3])
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
        pending.append(_Pending(si, m, cands, n_noun))
    return kept, pending


def _embed_for_choice(
    annotator: SilverAnnotator,
    passages: Sequence[Passage],
    pending: list[_Pending],
    embed: Embed | None,
    gloss_cache: Path | None,
    report: Progress,
) -> tuple[dict[int, np.ndarray], GlossVectors | None]:
    """Pass 2: vectors of the sentences holding an ambiguous match and of their senses' glosses."""
    if not annotator.cfg.disambiguate or embed is None:
        return {}, None
    order = sorted({pd.sentence for pd in pending if len(pd.cands) > 1})
    if not order:
        return {}, None
    done = [0]

    def tick(n: int, stage: str, total: int) -> None:
        done[0] += n
        report(stage, done[0], total)

    vecs = embed_sorted([passages[i].text for i in order], embed,
                        progress=lambda n: tick(n, "sentences", len(order)))  # fmt: skip
    glosses = GlossVectors(embed, gloss_cache)
    wanted = {s.key: s for pd in pending if len(pd.cands) > 1 for s, _ in pd.cands}
    done[0] = 0
    glosses.ensure(wanted.values(), progress=lambda n: tick(n, "glosses", len(wanted)))
    glosses.save()
    return dict(zip(order, vecs)), glosses


def _choose_senses(
    annotator: SilverAnnotator,
    pending: list[_Pending],
    sent_vecs: dict[int, np.ndarray],
    glosses: GlossVectors | None,
) -> dict[int, list[tuple[_Match, Synset]]]:
    """Pass 3: the sense of each match (gloss cosine plus the SemCor prior); verbs drop out."""
    cfg, counts = annotator.cfg, annotator.counts
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
    return chosen


def _add_spans(
    annotator: SilverAnnotator, sent: SilverSentence, kept: GoldKept, chosen: list[tuple[_Match, Synset]]
) -> None:
    """Pass 3, typing: the gold spans (with their sense), then the WordNet spans that qualify."""
    cfg, counts = annotator.cfg, annotator.counts
    by_gold = {m.gold: s for m, s in chosen if m.gold is not None}
    for gi, start, end, phrase, _ in kept:
        span = gold_span(annotator, start, end, phrase, by_gold.get(gi))
        sent.spans.append(span)
        counts["spans_gold"] += 1
        counts["gold_with_wordnet"] += span.synset is not None
    silver = [(m, s) for m, s in chosen if m.gold is None]
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
