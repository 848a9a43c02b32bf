"""Candidate spans and windows: the pure geometry shared by inference, training and evaluation.

A *word* is what the tokenizer's pre-tokenizer yields (BERT splits on white space and punctuation),
so every candidate span starts and ends on word boundaries and its character offsets come straight
from the tokenizer's offsets into the original text. Training and inference must enumerate spans
the same way; that is why this module exists on its own and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Word:
    """A pre-tokenizer word: its token range (inclusive, no special tokens) and character range."""

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
    word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]
) -> list[Word]:
    """Group tokens into words using the tokenizer's word ids and character offsets."""
    words: list[Word] = []
    current: int | None = None
    for tok, wid in enumerate(word_ids):
        if wid is None:
            continue
        start, end = offsets[tok]
        if wid == current and words:
            last = words[-1]
            words[-1] = Word(last.first_token, tok, last.start, max(last.end, end))
        else:
            words.append(Word(tok, tok, start, end))
            current = wid
    return words


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
    """Every span of up to ``max_span_width`` words, each given to exactly one window.

    The owner is the window holding the span whose nearer *cut* edge (not the passage's own start
    or end) is farthest away; spans that fit no window (wider than a window) are left out.
    """
    out: list[list[Candidate]] = [[] for _ in windows]
    if len(windows) == 1:
        w = windows[0]
        for i in range(w.word_start, w.word_end):
            for j in range(i, min(i + max_span_width, w.word_end)):
                out[0].append(Candidate(i, j))
        return out
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
                out[best].append(Candidate(i, j))
    return out


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


@dataclass(frozen=True)
class WindowInput:
    """One window ready for the graph: ``prefix + tokens + suffix`` and its owned candidates.

    ``spans`` are token index pairs into ``ids``; ``chars`` the candidates' character offsets.
    Candidates whose tokens reach past the window (only over-long words) are left out.
    """

    window: Window
    ids: list[int]
    candidates: list[Candidate]
    spans: list[tuple[int, int]]
    chars: list[tuple[int, int]]


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
    owned = assign_candidates(windows, len(words), max_span_width=max_span_width)
    out: list[WindowInput] = []
    for window, cands in zip(windows, owned):
        ids = [*prefix, *token_ids[window.token_start : window.token_end], *suffix]
        kept: list[Candidate] = []
        spans: list[tuple[int, int]] = []
        chars: list[tuple[int, int]] = []
        for cand in cands:
            tokens = candidate_token_range(cand, words, window)
            if tokens is None:
                continue
            kept.append(cand)
            spans.append(tokens)
            chars.append((words[cand.first_word].start, words[cand.last_word].end))
        out.append(WindowInput(window, ids, kept, spans, chars))
    return out


def resolve_overlaps(spans: Sequence[tuple[int, int, float]], *, nested: bool = False) -> list[int]:
    """Greedy decoding: indices of spans kept, highest score first. Returns indices sorted by start.

    ``spans`` are ``(start, end, score)`` with end exclusive. Flat (default): no two kept spans
    overlap. ``nested`` (GLiNER's ``flat_ner=False``): a span may sit inside another or contain
    it, only crossing boundaries are refused — so a common noun the detector likes ("election")
    does not push out the name around it ("the 1997 general election") and both are stored.
    """
    order = sorted(range(len(spans)), key=lambda i: (-spans[i][2], spans[i][0], spans[i][1]))
    taken: list[tuple[int, int]] = []
    kept: list[int] = []
    for i in order:
        s, e, _ = spans[i]
        if any(s < te and ts < e and not (nested and (ts <= s and e <= te or s <= ts and te <= e)) for ts, te in taken):
            continue
        taken.append((s, e))
        kept.append(i)
    return sorted(kept, key=lambda i: (spans[i][0], spans[i][1]))
