"""Labelled sentences → model inputs: windows, candidate spans and aligned gold spans.

Spans are enumerated exactly as at inference (``indexer.spans``: tokenizer words, windows, spans of up
to ``max_span_width`` words), so the entity head learns on the candidates it will score later. Gold
spans that do not start and end on a tokenizer word boundary, or are wider than ``max_span_width``
words, cannot be candidates; they are dropped and counted.

The rest of this module holds the type-phrase bookkeeping that training needs: the readable phrase
of each tag (``indexer/assets/phrases.json``), and which phrases are hierarchically related (a
politician is a person), so contrastive training neither rewards nor punishes that pair.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..assets import phrases_file
from ..conll import read_conll
from ..errors import InputError
from ..records import GoldSpan, Passage
from ..spans import Word, candidate_token_range, window_inputs, words_from_encoding
from ..text import first_named

log = logging.getLogger(__name__)

PHRASES_PATH = phrases_file()

# parent phrase -> narrower phrases. Coarse and fine label sets are mixed in training (a politician
# is "person" in one data set and "politician" in another), so such pairs must be neither positive
# nor negative for each other.
HIERARCHY: dict[str, tuple[str, ...]] = {
    "person": ("politician", "artist", "athlete", "writer", "scientist", "cleric", "sports manager"),
    "organization": (
        "corporation", "public corporation", "private corporation", "sports team", "musical group",
        "group", "political party", "car manufacturer", "aerospace manufacturer",
    ),
    "group": ("musical group", "sports team", "political party"),
    "corporation": (
        "public corporation", "private corporation", "car manufacturer", "aerospace manufacturer",
    ),
    "location": ("human settlement", "facility", "station", "country"),
    "facility": ("station",),
    "product": ("vehicle", "clothing", "food", "drink", "software"),
    "creative work": ("visual work", "written work", "musical work", "art work"),
}  # fmt: skip

def related(a: str, b: str) -> bool:
    """True when one phrase is a broader or narrower type of the other (not for a == b)."""
    if a == b:
        return False
    return b in HIERARCHY.get(a, ()) or a in HIERARCHY.get(b, ())


def relevant_phrases(query: str) -> set[str]:
    """Gold phrases that count as a match for ``query``: itself and every narrower type."""
    out = {query}
    stack = [query]
    while stack:
        for child in HIERARCHY.get(stack.pop(), ()):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def load_phrase_map() -> dict[str, dict[str, str | None]]:
    data = json.loads(PHRASES_PATH.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def crossner_only(types: list[str]) -> set[str]:
    """CrossNER's phrases that training never saw: held out because no training set has them."""
    cross = {v for v in load_phrase_map()["crossner"].values() if v}
    return cross - set(types)


@dataclass(frozen=True)
class Source:
    """A labelled file and the phrase table (key of phrases.json) that names its tags."""

    dataset: str
    path: Path

    @property
    def name(self) -> str:
        return f"{self.dataset}:{self.path.name}"


def default_sources(data_dir: str | Path) -> dict[str, list[Source]]:
    """The splits of the shipped model: train, detection dev, and the zero-shot check set.

    ``train`` holds MultiCoNER en-train90, WNUT-17 train, BTC and wikigold; ``dev`` holds
    MultiCoNER en-train10 and WNUT-17 dev (validation); ``zeroshot`` MultiCoNER en-dev (only its
    held-out medical types are reported). CrossNER is not used at all.
    """
    d = Path(data_dir)
    btc = sorted((d / "btc").glob("*.conll"))
    return {
        "train": [Source("multiconer2_en", d / "multiconer2_en" / "en-train90.conll"),
                  Source("wnut17", d / "wnut17" / "train.conll"),
                  *[Source("btc", p) for p in btc],
                  Source("wikigold", d / "wikigold" / "wikigold.conll")],
        "dev": [Source("multiconer2_en", d / "multiconer2_en" / "en-train10.conll"),
                Source("wnut17", d / "wnut17" / "dev.conll")],
        "zeroshot": [Source("multiconer2_en", d / "multiconer2_en" / "en-dev.conll")],
    }  # fmt: skip


def check_sources(data_dir: str | Path) -> None:
    """Refuse a data folder that lacks any file of :func:`default_sources`, naming them."""
    if not str(data_dir):  # TrainConfig has no default folder: it would be read as the working directory
        raise InputError("no data folder given: pass --data or set NERINDEX_DATA")
    missing = [s.path for split in default_sources(data_dir).values() for s in split if not s.path.is_file()]
    if not any(Path(data_dir, "btc").glob("*.conll")):  # default_sources takes whatever BTC files there are
        missing.append(Path(data_dir, "btc", "*.conll"))
    if missing:
        raise InputError(f"the training data lacks {len(missing)} file(s): {first_named([str(m) for m in missing])}",
                         path=str(data_dir))


@dataclass
class Gold:
    """A gold span inside a window: token range (model input indices), char range, its phrase."""

    tok_start: int
    tok_end: int
    start: int
    end: int
    phrase: str | None  # None: misc (an entity, not a query)


@dataclass
class Example:
    """One model input window of a labelled sentence, with its candidates and gold spans."""

    passage_index: int
    source: str
    ids: np.ndarray  # [T] int64, [CLS] ... [SEP]
    cand_tok: np.ndarray  # [S, 2] token start/end (inclusive)
    cand_char: np.ndarray  # [S, 2] char start/end (exclusive)
    gold: list[Gold] = field(default_factory=list)
    cand_label: np.ndarray | None = None  # [S] 1.0 where the candidate is a gold span


@dataclass
class Corpus:
    """Examples of one split plus the passages and counts behind them."""

    examples: list[Example]
    passages: list[Passage]
    passage_phrases: list[set[str]]  # gold phrases per passage (for passage-level calibration)
    counts: dict[str, int]
    # silver training: spans the entity head should find per passage (gold + WordNet) and spans
    # that count neither way; None: the gold spans of ``passages``
    detection_targets: list[set[tuple[int, int]]] | None = None
    detection_ignore: list[set[tuple[int, int]]] | None = None


def read_sources(
    sources: Sequence[Source], *, exclude_phrases: Iterable[str] = ()
) -> tuple[list[Passage], list[str], list[list[str | None]], dict[str, int]]:
    """Passages of the files, with the phrase of each gold span; sentences with excluded types dropped."""
    table = load_phrase_map()
    excluded = set(exclude_phrases)
    passages: list[Passage] = []
    origin: list[str] = []
    phrases: list[list[str | None]] = []
    counts = {"sentences_read": 0, "sentences_excluded": 0}
    for src in sources:
        tags = table[src.dataset]
        for p in read_conll(src.path):
            counts["sentences_read"] += 1
            ph = []
            for g in p.gold:
                if g.label not in tags:  # a one-line error naming the line, not a KeyError traceback (an audit)
                    # the line is the sentence's first (an audit read it as the tag's own)
                    raise InputError(f"the sentence starting here holds tag {g.label!r}, which is not in "
                                     f"phrases.json's {src.dataset!r} section (give it a phrase there, or null "
                                     "for an entity that is no query)",
                                     path=str(src.path), line=p.fields.get("line"))
                ph.append(tags[g.label])
            if excluded.intersection(x for x in ph if x):
                counts["sentences_excluded"] += 1
                continue
            passages.append(p)
            origin.append(src.name)
            phrases.append(ph)
    return passages, origin, phrases, counts


def gold_word_ranges(
    words: Sequence[Word], gold: Sequence[GoldSpan], max_span_width: int, counts: dict[str, int]
) -> list[tuple[int, int] | None]:
    """Each gold span as (first word, last word), or None when it does not start and end on word
    boundaries or is wider than ``max_span_width`` words; counts gold_spans, gold_misaligned and
    gold_too_wide."""
    by_start = {w.start: i for i, w in enumerate(words)}
    by_end = {w.end: i for i, w in enumerate(words)}
    out: list[tuple[int, int] | None] = []
    for g in gold:
        counts["gold_spans"] += 1
        a, b = by_start.get(g.start), by_end.get(g.end)
        if a is None or b is None or b < a:
            counts["gold_misaligned"] += 1
            out.append(None)
        elif b - a + 1 > max_span_width:
            counts["gold_too_wide"] += 1
            out.append(None)
        else:
            out.append((a, b))
    return out


def build_corpus(
    sources: Sequence[Source],
    tokenizer,
    *,
    max_length: int,
    max_span_width: int,
    exclude_phrases: Iterable[str] = (),
) -> Corpus:
    """Tokenise, window and align: the examples of a split (see the module docstring)."""
    passages, origin, phrases, counts = read_sources(sources, exclude_phrases=exclude_phrases)
    cls_id = tokenizer.token_to_id("[CLS]")
    sep_id = tokenizer.token_to_id("[SEP]")
    max_tokens = max_length - 2
    examples: list[Example] = []
    counts.update(
        {"gold_spans": 0, "gold_kept": 0, "gold_too_wide": 0, "gold_misaligned": 0, "windows": 0,
         "candidates": 0}
    )  # fmt: skip
    passage_phrases: list[set[str]] = []
    for pi, (p, src, ph) in enumerate(zip(passages, origin, phrases)):
        passage_phrases.append({x for x in ph if x})
        enc = tokenizer.encode(p.text, add_special_tokens=False)
        words = words_from_encoding(enc.word_ids, enc.offsets, p.text)
        aligned: list[tuple[int, int, int, int, str | None]] = []
        for g, phrase, wr in zip(p.gold, ph, gold_word_ranges(words, p.gold, max_span_width, counts)):
            if wr is not None:
                aligned.append((wr[0], wr[1], g.start, g.end, phrase))
        for win in window_inputs(
            words,
            enc.ids,
            max_tokens=max_tokens,
            max_span_width=max_span_width,
            prefix=[cls_id],
            suffix=[sep_id],
        ):
            window, ids, tok, char = win.window, win.ids, win.spans, win.chars
            mine = {(c.first_word, c.last_word) for c in win.candidates}
            golds = []
            for a, b, cs, ce, phrase in aligned:
                if (a, b) in mine:
                    r = candidate_token_range(_Cand(a, b), words, window)
                    if r is not None:
                        golds.append(Gold(r[0], r[1], cs, ce, phrase))
            cand_tok = np.asarray(tok, dtype=np.int64).reshape(-1, 2)
            cand_char = np.asarray(char, dtype=np.int64).reshape(-1, 2)
            gold_set = {(g.tok_start, g.tok_end) for g in golds}
            label = np.fromiter(
                ((int(s), int(e)) in gold_set for s, e in cand_tok), dtype=np.float32, count=len(cand_tok)
            )
            counts["gold_kept"] += len(golds)
            counts["windows"] += 1
            counts["candidates"] += len(cand_tok)
            examples.append(
                Example(pi, src, np.asarray(ids, dtype=np.int64), cand_tok, cand_char, golds, label)
            )
    counts["sentences"] = len(passages)
    return Corpus(examples, passages, passage_phrases, counts)


def limit_corpus(corpus: Corpus, n: int) -> Corpus:
    """The first ``n`` passages of a corpus (and their examples). Its counts are the limited
    corpus's where the examples tell them, the whole corpus's kept apart (``before_limit``): they
    described the whole corpus as if trained on (an audit)."""
    exs = [ex for ex in corpus.examples if ex.passage_index < n]
    counts = {
        "limited_to": n, "sentences": len(corpus.passages[:n]), "windows": len(exs),
        "gold_kept": sum(len(ex.gold) for ex in exs), "candidates": sum(len(ex.cand_tok) for ex in exs),
        "before_limit": dict(corpus.counts),
    }  # fmt: skip
    return Corpus(exs, corpus.passages[:n], corpus.passage_phrases[:n], counts)


def sentences_per_source(corpus: Corpus, sources: list[Source]) -> dict[str, int]:
    """Sentences of each source file that the corpus holds (a window of them at least), in the
    sources' order; a file with none is logged, since its data name would otherwise look used."""
    seen: dict[str, set[int]] = {s.name: set() for s in sources}
    for ex in corpus.examples:
        seen.setdefault(ex.source, set()).add(ex.passage_index)
    for name, idx in seen.items():
        if not idx:
            log.warning("%s: no sentence of this file is used (empty, excluded or past --limit)", name)
    return {name: len(idx) for name, idx in seen.items()}


@dataclass(frozen=True)
class _Cand:
    first_word: int
    last_word: int


def seen_phrases(corpus: Corpus) -> list[str]:
    """The readable phrases of the gold spans kept in a corpus, sorted (misc left out)."""
    return sorted({g.phrase for ex in corpus.examples for g in ex.gold if g.phrase})
