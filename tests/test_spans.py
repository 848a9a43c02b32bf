"""Span geometry: windows cover every candidate exactly once, inside the window; overlaps resolve."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.spans import (
    Word,
    candidate_token_range,
    plan_windows,
    resolve_overlaps,
    assign_candidates,
    words_from_encoding,
)


def make_words(token_counts: list[int]) -> list[Word]:
    words, tok, pos = [], 0, 0
    for n in token_counts:
        words.append(Word(tok, tok + n - 1, pos, pos + 3))
        tok += n
        pos += 4
    return words


def test_words_from_encoding_groups_subwords():
    word_ids = [0, 0, 1, 2, 2, 2]
    offsets = [(0, 3), (3, 5), (6, 7), (8, 10), (10, 12), (12, 13)]
    assert words_from_encoding(word_ids, offsets) == [
        Word(0, 1, 0, 5),
        Word(2, 2, 6, 7),
        Word(3, 5, 8, 13),
    ]


def test_a_word_takes_the_combining_marks_after_it():
    """An uncased tokenizer strips accents: in "Beyonce" + U+0301 no token covers the accent."""
    text = "Beyonce\u0301 sang"
    word_ids, offsets = [0, 0, 1], [(0, 4), (4, 7), (9, 13)]
    assert words_from_encoding(word_ids, offsets) == [Word(0, 1, 0, 7), Word(2, 2, 9, 13)]
    assert words_from_encoding(word_ids, offsets, text) == [Word(0, 1, 0, 8), Word(2, 2, 9, 13)]


def test_short_passage_is_one_window():
    words = make_words([1] * 10)
    (w,) = plan_windows(words, max_tokens=254, max_span_width=3)
    assert (w.word_start, w.word_end) == (0, 10)
    (cands,) = assign_candidates([w], 10, max_span_width=3)
    assert len(cands) == 10 + 9 + 8


@pytest.mark.parametrize("n_words,max_tokens,width", [(300, 50, 4), (1000, 254, 8), (77, 20, 3), (40, 16, 8)])
def test_every_candidate_scored_once_inside_its_window(n_words, max_tokens, width):
    import random

    rnd = random.Random(n_words)
    words = make_words([rnd.choice([1, 1, 2, 3]) for _ in range(n_words)])
    windows = plan_windows(words, max_tokens=max_tokens, max_span_width=width)
    assert len(windows) > 1
    seen: dict[tuple[int, int], int] = {}
    owned = assign_candidates(windows, len(words), max_span_width=width)
    for w, cands in zip(windows, owned):
        assert words[w.word_end - 1].last_token - words[w.word_start].first_token < max_tokens
        for c in cands:
            assert w.word_start <= c.first_word <= c.last_word < w.word_end
            first, last = candidate_token_range(c, words, w)
            assert 1 <= first <= last <= w.token_end - w.token_start
            seen[(c.first_word, c.last_word)] = seen.get((c.first_word, c.last_word), 0) + 1
    # every span that fits in some window (all of them unless windows are narrower than spans)
    fits = lambda i, j: any(w.word_start <= i and j < w.word_end for w in windows)  # noqa: E731
    expected = {(i, j) for i in range(n_words) for j in range(i, min(i + width, n_words)) if fits(i, j)}
    if max_tokens >= 3 * width * 3:
        assert len(expected) == sum(min(width, n_words - i) for i in range(n_words))
    assert set(seen) == expected
    assert set(seen.values()) == {1}


def test_overlong_word_gets_its_own_window():
    words = make_words([1, 500, 1])
    windows = plan_windows(words, max_tokens=100, max_span_width=2)
    covered = [(w.word_start, w.word_end) for w in windows]
    assert (1, 2) in covered or any(ws <= 1 < we for ws, we in covered)
    for w in windows:
        assert w.token_end - w.token_start <= 100


def test_resolve_overlaps_greedy_by_score():
    spans = [(0, 10, 0.6), (0, 4, 0.9), (5, 10, 0.8), (12, 15, 0.1)]
    assert resolve_overlaps(spans) == [1, 2, 3]
    assert resolve_overlaps([]) == []
    # touching spans (end exclusive) do not overlap
    assert resolve_overlaps([(0, 3, 0.5), (3, 6, 0.4)]) == [0, 1]


def _resolve_by_every_pair(spans, nested):
    """The greedy rule compared with every kept span (resolve_overlaps before it looked only near)."""
    order = sorted(range(len(spans)), key=lambda i: (-spans[i][2], spans[i][0], spans[i][1]))
    taken, kept = [], []
    for i in order:
        s, e, _ = spans[i]
        if any(s < te and ts < e and not (nested and (ts <= s and e <= te or s <= ts and te <= e)) for ts, te in taken):
            continue
        taken.append((s, e))
        kept.append(i)
    return sorted(kept, key=lambda i: (spans[i][0], spans[i][1]))


@pytest.mark.parametrize("nested", [False, True])
def test_resolve_overlaps_keeps_what_comparing_every_pair_keeps(nested):
    """It compares a span only with kept spans near it (an audit: a long passage's decoding was
    quadratic); a long span among short ones, ties and touching ends included."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(0, 60))
        starts = rng.integers(0, 80, n)
        lengths = np.where(rng.random(n) < 0.1, rng.integers(1, 70, n), rng.integers(1, 9, n))
        scores = rng.choice([0.1, 0.2, 0.5, 0.9], n) if rng.random() < 0.5 else rng.random(n)
        spans = [(int(a), int(a + b), float(c)) for a, b, c in zip(starts, lengths, scores)]
        assert resolve_overlaps(spans, nested=nested) == _resolve_by_every_pair(spans, nested)


def test_resolve_overlaps_nested_keeps_containment_not_crossings():
    # "the 1997 general election": the noun "election" (0.9) and the name around it (0.6)
    spans = [(4, 25, 0.6), (17, 25, 0.9), (9, 20, 0.7), (0, 3, 0.2)]
    assert resolve_overlaps(spans) == [3, 1]
    # nested: the name is kept around the noun; (9, 20) crosses the noun's boundary and goes
    assert resolve_overlaps(spans, nested=True) == [3, 0, 1]
    # a span inside a kept one is kept too, and identical boundaries count as nesting
    assert resolve_overlaps([(0, 10, 0.9), (2, 5, 0.5)], nested=True) == [0, 1]


def test_marked_spans_prefer_the_most_similar_of_nested_spans():
    from indexer.records import SpanMatch, marked_spans

    text = "The Labour Party and the Conservative Party"
    outer = SpanMatch(4, 43, text[4:43], 0.40, ())
    labour = SpanMatch(4, 16, "Labour Party", 0.41, ())
    tories = SpanMatch(25, 43, "Conservative Party", 0.38, ())
    assert marked_spans([outer, labour, tories]) == [labour, tories]
    # the outer span wins when it is the most similar, and then hides both inner ones
    best_outer = SpanMatch(4, 43, text[4:43], 0.5, ())
    assert marked_spans([labour, best_outer, tories]) == [best_outer]


@pytest.mark.parametrize("token_counts,max_tokens,width", [([1, 2, 1, 3, 1] * 8, 254, 8), ([1, 1, 2, 3] * 60, 40, 4), ([1, 500, 1, 2], 100, 2)])
def test_window_inputs_are_the_candidates_token_ranges(token_counts, max_tokens, width):
    """The vectorised window inputs agree with the per-candidate geometry, one window or many."""
    from indexer.spans import window_inputs

    words = make_words(token_counts)
    token_ids = list(range(1000, 1000 + words[-1].last_token + 1))
    wins = window_inputs(words, token_ids, max_tokens=max_tokens, max_span_width=width, prefix=[101], suffix=[102])
    owned = assign_candidates([w.window for w in wins], len(words), max_span_width=width)
    for win, cands in zip(wins, owned):
        assert win.ids == [101, *token_ids[win.window.token_start : win.window.token_end], 102]
        want = [(c, candidate_token_range(c, words, win.window)) for c in cands]
        want = [(c, r) for c, r in want if r is not None]
        assert win.candidates == [c for c, _ in want]
        assert win.spans.tolist() == [list(r) for _, r in want]
        assert win.chars.tolist() == [[words[c.first_word].start, words[c.last_word].end] for c, _ in want]


def test_a_word_never_reaches_into_the_next_one():
    """A keycap ("#" U+FE0F U+20E3): the tokenizer keeps U+20E3 as a word of its own, and the word
    before was extended over it as a combining mark, so two words overlapped (an audit)."""
    from indexer.assets import default_model_dir
    from indexer.runtime import load_tokenizer

    tokenizer = load_tokenizer(default_model_dir() / "tokenizer.json")
    for text in ("Call #\ufe0f\u20e3 now", "x,\u093e y", "Beyonce\u0301 sang"):
        enc = tokenizer.encode(text, add_special_tokens=False)
        words = words_from_encoding(enc.word_ids, enc.offsets, text)
        assert all(a.end <= b.start for a, b in zip(words, words[1:])), text
    assert words[0].end == len("Beyonce\u0301")
