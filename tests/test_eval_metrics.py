"""Metric code on hand-made rankings whose answers are worked out here."""

from __future__ import annotations

import pytest

from indexer.evaluation.metrics import (
    Ranked,
    ScoredSpan,
    f1,
    macro,
    macro_scores,
    match_spans,
    matched_marks,
    precision_at_k,
    r_precision,
    recall_at_k,
    returned_at,
    score_query,
    span_iou,
    sweep_thresholds,
)


def test_r_precision_counts_relevant_in_top_r():
    # R = 3 relevant {a, c, e}; top 3 = a, b, c -> 2 of 3 relevant -> 2/3
    assert r_precision(["a", "b", "c", "d", "e"], {"a", "c", "e"}) == pytest.approx(2 / 3)


def test_r_precision_short_ranking_counts_missing_ranks_as_misses():
    # R = 4 but only 2 passages retrieved, 1 relevant -> 1/4
    assert r_precision(["x", "a"], {"a", "b", "c", "d"}) == pytest.approx(0.25)


def test_recall_at_r_equals_r_precision():
    ranked, rel = ["b", "a", "q", "c", "z"], {"a", "c", "d"}
    # top 3 = b, a, q -> 1 relevant -> precision 1/3 and recall 1/3 (both divide by R = 3)
    assert r_precision(ranked, rel) == recall_at_k(ranked, rel, 3) == pytest.approx(1 / 3)


def test_precision_at_10_divides_by_10_even_for_short_lists():
    # 2 relevant in a 4-long ranking -> 2/10, not 2/4
    assert precision_at_k(["a", "x", "b", "y"], {"a", "b"}, 10) == pytest.approx(0.2)


def test_recall_at_k_beyond_ranking_length():
    # 2 of 3 relevant anywhere in the ranking -> recall@1000 = 2/3
    assert recall_at_k(["a", "x", "b"], {"a", "b", "c"}, 1000) == pytest.approx(2 / 3)


def test_recall_needs_relevant_passages():
    with pytest.raises(ValueError):
        recall_at_k(["a"], set(), 10)


def test_span_iou():
    assert span_iou((0, 10), (0, 10)) == 1.0
    # [0,10) vs [5,15): intersection 5, union 15 -> 1/3
    assert span_iou((0, 10), (5, 15)) == pytest.approx(1 / 3)
    # [0,4) vs [0,8): 4 / 8 = 0.5 (exactly the bar)
    assert span_iou((0, 4), (0, 8)) == 0.5
    assert span_iou((0, 4), (4, 8)) == 0.0  # touching, end exclusive


def test_match_spans_counts_each_side():
    gold = [(0, 5), (10, 20)]
    # (0,5) exact hit; (10,14): IoU 4/10 < .5 -> no hit for (10,20); (30,35) matches nothing
    pred = [(0, 5), (10, 14), (30, 35)]
    assert match_spans(gold, pred) == (1, 1)
    # (10,16): IoU 6/10 >= .5 -> both gold hit, 2 of 3 predictions correct
    assert match_spans(gold, [(0, 5), (10, 16), (30, 35)]) == (2, 2)


def test_nested_marks_inside_one_mention_count_once_one_to_one():
    """An audit: nested decoding returns "Canadian federal election" and "Canadian federal" for one
    gold mention; highlight precision credited all three marks, the 1:1 figure credits one."""
    gold, nested = [(0, 30)], [(0, 30), (5, 30), (5, 21)]
    assert match_spans(gold, nested) == (1, 3)
    assert matched_marks(gold, nested) == 1
    # two mentions, three marks: the best pairing uses both mentions, whatever the order
    assert matched_marks([(0, 10), (12, 20)], [(0, 9), (0, 10), (12, 20)]) == 2
    # a mark that fits two mentions goes where it leaves the other its own
    assert matched_marks([(0, 4), (0, 6)], [(0, 5), (0, 4)]) == 2
    assert matched_marks([], [(0, 3)]) == matched_marks([(0, 3)], []) == 0
    ranking = [Ranked("p1", 0.9, tuple(ScoredSpan(a, b, 0.9) for a, b in nested))]
    s = score_query(ranking, {"p1"}, threshold=0.5, gold_spans={"p1": gold}, with_spans=True)
    assert (s.span_hit_rate, s.highlight_precision, s.highlight_precision_1to1) == (1.0, 1.0, pytest.approx(1 / 3))


def test_f1():
    assert f1(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1(0.0, 0.0) == 0.0
    assert f1(None, 1.0) is None


def test_returned_at_filters_passages_and_spans():
    ranking = [
        Ranked("a", 0.9, (ScoredSpan(0, 3, 0.9), ScoredSpan(5, 8, 0.4))),
        Ranked("b", 0.45, (ScoredSpan(0, 2, 0.45),)),
    ]
    out = returned_at(ranking, 0.5)
    assert [r.id for r in out] == ["a"]
    assert out[0].spans == (ScoredSpan(0, 3, 0.9),)


def test_score_query_worked_example():
    # relevant: p1 (gold 0..5), p2 (gold 6..11 and 20..25), p4 (gold 0..3); R = 3
    relevant = {"p1", "p2", "p4"}
    gold = {"p1": [(0, 5)], "p2": [(6, 11), (20, 25)], "p4": [(0, 3)]}
    ranking = [
        Ranked("p1", 0.9, (ScoredSpan(0, 5, 0.9),)),
        Ranked("p3", 0.8, (ScoredSpan(0, 4, 0.8),)),  # not relevant
        Ranked("p2", 0.7, (ScoredSpan(6, 11, 0.7), ScoredSpan(30, 33, 0.3))),
        Ranked("p4", 0.2, (ScoredSpan(0, 3, 0.2),)),
    ]
    s = score_query(ranking, relevant, threshold=0.5, gold_spans=gold, with_spans=True)
    # top 3 = p1, p3, p2 -> 2 relevant -> R-Precision 2/3
    assert s.r_precision == pytest.approx(2 / 3)
    assert s.recall_at_1000 == 1.0
    assert s.p_at_10 == pytest.approx(0.3)
    # at 0.5: returned p1, p3, p2 -> set precision 2/3, recall 2/3, F1 2/3
    assert s.retrieved == 3
    assert s.set_precision == pytest.approx(2 / 3)
    assert s.set_recall == pytest.approx(2 / 3)
    assert s.set_f1 == pytest.approx(2 / 3)
    # gold mentions in returned relevant passages: p1 (1) + p2 (2) = 3; hit: (0,5), (6,11) -> 2/3
    assert s.gold_mentions == 3
    assert s.span_hit_rate == pytest.approx(2 / 3)
    # spans returned at 0.5: p1 (0,5), p3 (0,4), p2 (6,11) [the 0.3 span is dropped] -> 3;
    # correct: (0,5) and (6,11); p3's span is in an irrelevant passage -> 2/3
    assert s.returned_spans == 3
    assert s.highlight_precision == pytest.approx(2 / 3)


def test_score_query_empty_answer_is_precision_zero():
    s = score_query([Ranked("a", 0.1)], {"a"}, threshold=0.5)
    assert s.retrieved == 0
    assert s.set_precision == 0.0 and s.set_recall == 0.0 and s.set_f1 == 0.0


def test_score_query_without_threshold_has_no_set_metrics():
    s = score_query([Ranked("a", 0.1)], {"a"})
    assert s.r_precision == 1.0
    assert s.set_precision is None and s.span_hit_rate is None


def test_macro_skips_undefined():
    assert macro([0.5, None, 1.0]) == pytest.approx(0.75)
    assert macro([None]) is None


def test_macro_scores_over_types():
    a = score_query([Ranked("x", 1.0)], {"x"})  # R-Prec 1
    b = score_query([Ranked("y", 1.0)], {"z"})  # R-Prec 0
    m = macro_scores([a, b])
    assert m["n"] == 2
    assert m["r_precision"] == 0.5
    assert m["set_f1"] is None


def test_sweep_thresholds_worked_example():
    rankings = {
        "q1": [Ranked("a", 0.9), Ranked("b", 0.6), Ranked("c", 0.3)],
        "q2": [Ranked("d", 0.4), Ranked("e", 0.2)],
    }
    relevant = {"q1": {"a", "c"}, "q2": {"e"}}
    p0, p5 = sweep_thresholds(rankings, relevant, [0.0, 0.5])
    # t=0: q1 returns a,b,c -> P 2/3 R 1 F1 .8; q2 returns d,e -> P .5 R 1 F1 2/3
    assert p0.precision == pytest.approx((2 / 3 + 0.5) / 2)
    assert p0.recall == 1.0
    assert p0.f1 == pytest.approx((0.8 + 2 / 3) / 2)
    assert p0.micro_precision == pytest.approx(3 / 5)
    # t=.5: q1 returns a,b -> P .5 R .5 F1 .5; q2 returns nothing -> P 0 R 0 F1 0
    assert p5.precision == pytest.approx(0.25)
    assert p5.recall == pytest.approx(0.25)
    assert p5.f1 == pytest.approx(0.25)
    assert p5.micro_precision == pytest.approx(1 / 2)
    assert p5.micro_recall == pytest.approx(1 / 3)
    assert p5.retrieved == 2
