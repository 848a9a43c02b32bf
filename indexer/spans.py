"""Candidate spans and windows: the pure geometry shared by inference, training and evaluation.

A *word* is what the tokenizer's pre-tokenizer yields (BERT splits on white space and punctuation),
so every candidate span starts and ends on word boundaries and its character offsets come straight
from the tokenizer's offsets into the original text. Training and inference must enumerate spans
the same way; that is why this module exists on its own and does no I/O.
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np


class Word(NamedTuple):
    """A pre-tokenizer word: its token range (inclusive, no special tokens) and character range.
    A named tuple: indexing makes ~150 a passage, and a frozen dataclass took 5× as long to make."""

    first_token: int
    last_token: int
    start: int
    end: int


@dataclass(frozen=True)
class Window:
    """A slice of a passage that fits the encoder: words ``[word_start, word_end)``.

    Neighbouring windows overlap by twice the widest span where they are wide enough, and
    :func:`assign_candidates` gives every candidate span to exactly one window: the one in which
    it sits farthest from a cut edge, so each span is scored with as much context as possible.
    """

    word_start: int
    word_end: int
    token_start: int
    token_end: int


@dataclass(frozen=True)
class Candidate:
    """A candidate span, in words ``[first_word, last_word]`` (inclusive)."""

    first_word: int
    last_word: int


def words_from_encoding(
    word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]], text: str | None = None
) -> list[Word]:
    """Group tokens into words using the tokenizer's word ids and character offsets: a run of
    tokens with one word id (special tokens, id None, left out) is a word, from its first token's
    start to the furthest end among its tokens.

    With ``text`` (the encoded text), a word also takes the combining marks that follow it: an
    uncased tokenizer strips accents, so in decomposed text ("Beyonce" + U+0301) no token covers
    the accent of a word's last letter, and a mark would end before it."""
    ids = np.fromiter((-1 if w is None else w for w in word_ids), dtype=np.int64, count=len(word_ids))
    tokens = np.flatnonzero(ids >= 0)
    if tokens.size == 0:
        return []
    ends = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[tokens]
    first = np.flatnonzero(np.r_[True, ids[tokens][1:] != ids[tokens][:-1]])
    last = np.r_[first[1:] - 1, tokens.size - 1]
    stops = np.maximum.reduceat(ends[:, 1], first).tolist()
    starts = ends[first, 0].tolist()
    if text is not None and not text.isascii():
        # never into the next word: a mark the tokenizer keeps as a word of its own ("#" + U+FE0F +
        # U+20E3, a keycap) made two words overlap, and spans cross (an audit)
        limits = starts[1:] + [len(text)]
        stops = [min(_past_marks(text, stop), limit) for stop, limit in zip(stops, limits)]
    return list(map(Word._make, zip(tokens[first].tolist(), tokens[last].tolist(), starts, stops)))


def _past_marks(text: str, end: int) -> int:
    """``end`` moved past the combining marks (Unicode category M*) that follow it in ``text``."""
    while end < len(text) and unicodedata.category(text[end]).startswith("M"):
        end += 1
    return end


def plan_windows(words: Sequence[Word], *, max_tokens: int, max_span_width: int) -> list[Window]:
    """Cut a passage into overlapping windows of at most ``max_tokens`` tokens at word boundaries.

    Consecutive windows overlap by ``2 * max_span_width`` words where the window is wide enough, so
    no span is cut. A single word longer than ``max_tokens`` gets a window of its own (it is too long
    to be a mention; the window's model input is cut at ``max_tokens``).
    """
    if not words:
        return []
    overlap = 2 * max_span_width
    windows: list[Window] = []
    ws = 0
    n = len(words)
    while True:
        we = ws + 1
        while we < n and words[we].last_token - words[ws].first_token + 1 <= max_tokens:
            we += 1
        token_start = words[ws].first_token
        token_end = min(words[we - 1].last_token + 1, token_start + max_tokens)
        windows.append(Window(ws, we, token_start, token_end))
        if we >= n:
            break
        ws = max(ws + 1, we - overlap)
    return windows


def assign_candidates(
    windows: Sequence[Window], n_words: int, *, max_span_width: int
) -> list[list[Candidate]]:
    """Every span of up to ``max_span_width`` words, each given to exactly one window
    (:func:`owned_pairs` as :class:`Candidate` lists)."""
    return [
        [Candidate(i, j) for i, j in pairs.tolist()]
        for pairs in owned_pairs(windows, n_words, max_span_width=max_span_width)
    ]


def owned_pairs(windows: Sequence[Window], n_words: int, *, max_span_width: int) -> list[np.ndarray]:
    """Per window, the ``[n, 2]`` (first word, last word) pairs of the candidate spans it owns,
    ordered by first word, then last word.

    Every span of up to ``max_span_width`` words goes to exactly one window: the one holding it
    whose nearer *cut* edge (not the passage's own start or end) is farthest away; spans that fit no
    window (wider than a window) are left out. A passage of one window (nearly all) is enumerated
    with numpy: at ~1,000 candidates a passage, a Python loop was a tenth of indexing time.
    """
    if len(windows) == 1:
        w = windows[0]
        first = np.repeat(np.arange(w.word_start, w.word_end, dtype=np.int64), max_span_width)
        last = first + np.tile(np.arange(max_span_width, dtype=np.int64), w.word_end - w.word_start)
        inside = last < w.word_end
        return [np.stack([first[inside], last[inside]], axis=1)]
    out: list[list[tuple[int, int]]] = [[] for _ in windows]
    first = 0
    for i in range(n_words):
        while first < len(windows) and windows[first].word_end <= i:
            first += 1
        for j in range(i, min(i + max_span_width, n_words)):
            best, best_margin = -1, -1
            for k in range(first, len(windows)):
                w = windows[k]
                if w.word_start > i:
                    break
                if j >= w.word_end:
                    continue
                left = i - w.word_start if w.word_start > 0 else n_words
                right = w.word_end - 1 - j if w.word_end < n_words else n_words
                margin = min(left, right)
                if margin > best_margin:
                    best, best_margin = k, margin
            if best >= 0:
                out[best].append((i, j))
    return [np.asarray(pairs, dtype=np.int64).reshape(-1, 2) for pairs in out]


def candidate_token_range(
    cand: Candidate, words: Sequence[Word], window: Window
) -> tuple[int, int] | None:
    """Token indices (inclusive) of a candidate inside the window's model input ([CLS] at 0).

    ``None`` when the span reaches past the window's tokens (only for over-long words).
    """
    first = words[cand.first_word].first_token - window.token_start + 1
    last = words[cand.last_word].last_token - window.token_start + 1
    if last > window.token_end - window.token_start:
        return None
    return first, last


@dataclass(frozen=True, eq=False)
class WindowInput:
    """One window ready for the graph: ``prefix + tokens + suffix`` and its owned candidates.

    Row k of each ``[n, 2]`` int64 array is candidate k: ``pairs`` its first and last word,
    ``spans`` its first and last token index into ``ids`` (inclusive), ``chars`` its character
    offsets in the passage (end exclusive). Candidates whose tokens reach past the window (only
    over-long words) are left out.
    """

    window: Window
    ids: list[int]
    pairs: np.ndarray
    spans: np.ndarray
    chars: np.ndarray

    @property
    def candidates(self) -> list[Candidate]:
        return [Candidate(i, j) for i, j in self.pairs.tolist()]


def window_inputs(
    words: Sequence[Word],
    token_ids: Sequence[int],
    *,
    max_tokens: int,
    max_span_width: int,
    prefix: Sequence[int],
    suffix: Sequence[int],
) -> list[WindowInput]:
    """Windows of a tokenised passage with their model input ids and owned candidate spans.

    The one place inference and training turn span geometry into graph inputs.
    """
    windows = plan_windows(words, max_tokens=max_tokens, max_span_width=max_span_width)
    owned = owned_pairs(windows, len(words), max_span_width=max_span_width)
    # per word: first token, last token, start and end character (candidate_token_range, vectorised)
    geometry = np.asarray([(w.first_token, w.last_token, w.start, w.end) for w in words], dtype=np.int64).reshape(-1, 4)
    out: list[WindowInput] = []
    for window, pairs in zip(windows, owned):
        ids = [*prefix, *token_ids[window.token_start : window.token_end], *suffix]
        first = geometry[pairs[:, 0], 0] - window.token_start + 1
        last = geometry[pairs[:, 1], 1] - window.token_start + 1
        inside = last <= window.token_end - window.token_start
        pairs = pairs[inside]
        spans = np.stack([first[inside], last[inside]], axis=1)
        chars = np.stack([geometry[pairs[:, 0], 2], geometry[pairs[:, 1], 3]], axis=1)
        out.append(WindowInput(window, ids, pairs, spans, chars))
    return out


def resolve_overlaps(spans: Sequence[tuple[int, int, float]], *, nested: bool = False) -> list[int]:
    """Greedy decoding: indices of spans kept, highest score first. Returns indices sorted by start.

    ``spans`` are ``(start, end, score)`` with end exclusive. Flat (default): no two kept spans
    overlap. ``nested`` (GLiNER's ``flat_ner=False``): a span may sit inside another or contain
    it, only crossing boundaries are refused — so a common noun the detector likes ("election")
    does not push out the name around it ("the 1997 general election") and both are stored.
    """
    order = sorted(range(len(spans)), key=lambda i: (-spans[i][2], spans[i][0], spans[i][1]))
    # Kept spans by start: one that overlaps (s, e) starts before e and, being no longer than the
    # longest span, after s - longest; only those are compared. An audit: comparing every kept
    # span made a passage of 11k spans take 60 s to decode, and doubling it four times as long.
    longest = max((e - s for s, e, _ in spans), default=0)
    starts: list[int] = []
    ends: list[int] = []
    kept: list[int] = []
    for i in order:
        s, e, _ = spans[i]
        near = range(bisect.bisect_left(starts, s - longest), bisect.bisect_left(starts, e))
        if any(s < ends[k] and not (nested and (starts[k] <= s and e <= ends[k] or s <= starts[k] and ends[k] <= e))
               for k in near):
            continue
        at = bisect.bisect_right(starts, s)
        starts.insert(at, s)
        ends.insert(at, e)
        kept.append(i)
    return sorted(kept, key=lambda i: (spans[i][0], spans[i][1]))


def decode_spans(
    spans: Sequence[tuple], threshold: float, candidate_threshold: float | None, *, nested: bool
) -> list[tuple[tuple, bool]]:
    """The spans a passage keeps, each with its mention flag, by start. Each span is a tuple
    ``(start, end, score, candidate score or None, ...)`` (the encoder's, the rest carried along).

    The marking head's spans (score ``>= threshold``) are decoded on their scores: the mentions.
    With a candidate head, its spans (candidate score ``>= candidate_threshold``) are decoded apart
    on theirs and those not already kept are added as candidates. Each head's decoding is its own,
    so a candidate never pushes out a mention, nor a mention a candidate that does not repeat it.
    """
    mentions = [sp for sp in spans if sp[2] >= threshold]
    out = [(mentions[k], True) for k in resolve_overlaps([(s, e, sc) for s, e, sc, *_ in mentions], nested=nested)]
    if candidate_threshold is None:
        return out
    taken = {(sp[0], sp[1]) for sp, _ in out}
    wides = [sp for sp in spans if sp[3] is not None and sp[3] >= candidate_threshold]
    for k in resolve_overlaps([(s, e, w) for s, e, _, w, *_ in wides], nested=nested):
        if (wides[k][0], wides[k][1]) not in taken:
            out.append((wides[k], False))
    return sorted(out, key=lambda kept: (kept[0][0], kept[0][1]))
