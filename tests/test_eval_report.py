"""Markdown and chart rendering of a hand-made result."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.evaluation import report


def _scores(rp: float, f1: float | None = None) -> dict:
    return {"r_precision": rp, "recall_at_1000": 1.0, "p_at_10": 0.5, "set_precision": f1, "set_recall": f1,
            "set_f1": f1, "span_hit_rate": None, "highlight_precision": None}


RESULT = {
    "benchmark": {"name": "toy", "sources": ["/d/toy.conll"], "passages": 10, "queries_scored": 2},
    "model": {"id": "m", "version": "1", "checksum": "abcdef0123456789"},
    "methods": {
        "system": {"label": "nerindex", "threshold": 0.42, "threshold_source": "model.json"},
        "bm25": {"label": "BM25", "threshold": None, "threshold_source": "none", "description": "bm25s"},
    },
    "training": {"types": ["person"], "counts_source": "x"},
    "familiarity": {"definition": "d", "embedding": "e", "by_group": {"all": 0.5, "seen": 0.9, "unseen": 0.1}},
    "summary": {
        "system": {"all": {"n": 2, **_scores(0.75, 0.6)}, "seen": {"n": 1, **_scores(0.9, 0.7)},
                   "unseen": {"n": 1, **_scores(0.6, 0.5)}, "coarse": {"n": 0}},
        "bm25": {"all": {"n": 2, **_scores(0.3)}, "seen": {"n": 1, **_scores(0.2)},
                 "unseen": {"n": 1, **_scores(0.4)}, "coarse": {"n": 0}},
    },
    "per_type": [
        {"type": "person", "group": "seen", "relevant": 3, "familiarity": 0.9,
         "scores": {"system": _scores(0.9), "bm25": _scores(0.2)}},
        {"type": "dinosaur", "group": "unseen", "relevant": 2, "familiarity": 0.1,
         "scores": {"system": _scores(0.6), "bm25": _scores(0.4)}},
    ],
    "sweeps": {"system": [{"threshold": t / 10, "precision": t / 10, "recall": 1 - t / 10, "f1": 0.4} for t in range(11)]},
    "skipped_queries": ["poem"],
}


def test_markdown_puts_methods_and_groups_side_by_side():
    md = report.markdown(RESULT)
    head = md.split("\n\n")[2]
    assert "R-Prec seen (1 type, Fam 0.90)" in head and "R-Prec unseen (1 type, Fam 0.10)" in head
    assert "coarse" not in head  # empty group left out
    assert "| nerindex | 0.750 | 0.900 | 0.600 |" in head
    assert "| BM25 | 0.300 | 0.200 | 0.400 |" in head
    assert "| dinosaur | unseen | 2 | 0.10 | **0.600** | 0.400 |" in md
    assert "not scored): poem" in md


def test_the_hybrid_note_is_said_only_where_a_method_that_uses_it_ran():
    """An eval audit: a run of "spans only" (λ 0) was said to use the model's λ."""
    model = {**RESULT["model"], "passage_weight": 0.0, "unseen_passage_weight": 1.0}
    ran = {**RESULT, "model": model}
    assert "passage weight λ = 0 for trained-on types, 1 for the others" in report.markdown(ran)
    spans_only = {**ran, "summary": {"system_spans": RESULT["summary"]["system"]},
                  "methods": {"system_spans": RESULT["methods"]["system"]},
                  "per_type": [{**row, "scores": {"system_spans": row["scores"]["system"]}} for row in RESULT["per_type"]]}
    assert "passage weight" not in report.markdown(spans_only)


def test_group_rows_name_every_threshold_their_types_used():
    """The "all" row took the method's one threshold although its types used two."""
    result = {**RESULT, "per_type": [{**RESULT["per_type"][0], "thresholds": {"system": 0.36}},
                                     {**RESULT["per_type"][1], "thresholds": {"system": 0.27}}]}
    seen, unseen = (RESULT["per_type"][i]["group"] for i in (0, 1))
    assert report._group_thresholds(result, "system", "all") == f"0.36 {seen}, 0.27 {unseen}"
    assert report._group_thresholds(result, "system", "unseen") == "0.27"
    assert report._group_thresholds(RESULT, "system", "all") == "0.42"  # saved before per-type thresholds
    # a group holding both kinds of phrase (coarse): the trained-on phrases' threshold first, said so; sorted
    # by number, "0.21/0.38" read as seen/unseen where it was the reverse (an audit)
    methods = {**RESULT["methods"], "system": {**RESULT["methods"]["system"], "threshold": 0.38, "threshold_unseen": 0.21}}
    coarse = {**RESULT, "methods": methods,
              "per_type": [{**row, "group": "coarse", "thresholds": {"system": t}} for row, t in zip(RESULT["per_type"], (0.21, 0.38))]}
    assert report._group_thresholds(coarse, "system", "all") == "0.38/0.21 coarse (trained-on/other phrases)"


ROOT = Path(__file__).resolve().parents[1]


def _pool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pool", ROOT / "docs" / "eval" / "pool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pooling_says_how_many_pairs_a_method_scored_and_refuses_mixed_runs():
    """An audit: a run without one baseline pooled that baseline over fewer pairs under the group's
    count (it seemed to beat the system), and reports of other models or settings were mixed."""
    import copy
    import json

    pool = _pool()
    names = [str(ROOT / "docs" / "eval" / f) for f in ("crossner-politics-dev.json", "multiconer-dev.json")]
    reports = [json.loads(Path(n).read_text(encoding="utf-8")) for n in names]
    partial = copy.deepcopy(reports[1])
    for row in partial["per_type"]:
        row["scores"].pop("span_base", None)
    table = pool.markdown(pool.pooled([reports[0], partial]))
    assert "| untrained spans (3 of 8) |" in table and "| nerindex |" in table
    assert pool.mismatch(names, reports) is None
    other = copy.deepcopy(reports[1])
    other["methods"]["system"]["threshold_unseen"] = 0.25
    assert "other methods or thresholds" in pool.mismatch(names, [reports[0], other])
    other["model"]["checksum"] = "0" * 64
    assert "another model or other model settings" in pool.mismatch(names, [reports[0], other])


def test_charts_are_pngs(tmp_path: Path):
    pytest.importorskip("matplotlib")
    written = report.write_outputs(RESULT, tmp_path, stem="toy")
    names = sorted(p.name for p in written)
    assert names == ["toy-per-type.png", "toy-threshold.png", "toy.json", "toy.md"]
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.read_json(tmp_path / "toy.json")["benchmark"]["name"] == "toy"


def test_a_run_stopped_while_it_writes_its_files_leaves_the_last_runs_set(tmp_path: Path, monkeypatch):
    """A CLI audit: Ctrl-C while the charts were drawn left the new JSON beside the last run's
    Markdown and charts."""
    before = {p.name: p.read_bytes() for p in report.write_outputs(RESULT, tmp_path, stem="toy", charts=False)}

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "chart_per_type", stopped)
    changed = {**RESULT, "benchmark": {**RESULT["benchmark"], "name": "other"}}
    with pytest.raises(KeyboardInterrupt):
        report.write_outputs(changed, tmp_path, stem="toy")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary folder either


def test_a_full_disk_names_the_file_the_run_was_writing_not_its_staging_folder(tmp_path: Path, monkeypatch):
    """An audit: "error: full/ev/.crossner-politics-dev-txt.tmp-ghmeiyi7/crossner-politics-dev-txt.json:
    No space left on device" named a folder the run removes."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    monkeypatch.setattr(report, "chart_per_type", full)
    with pytest.raises(OSError) as info:
        report.write_outputs(RESULT, tmp_path, stem="toy")
    assert info.value.filename == str(tmp_path / "toy-per-type.png") and info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, named", [
    ({"benchmark": "str"}, "benchmark"), ({"model": []}, "model"), ({"per_type": 5}, "per_type"),
    ({"summary": {"system": 1}}, "summary.system"), ({"per_type": [1]}, "per_type items"),
])
def test_a_saved_result_of_another_shape_is_refused(tmp_path: Path, change, named):
    """An audit: the right keys with other values were a traceback on re-rendering."""
    import json

    from indexer.errors import InputError

    path = tmp_path / "r.json"
    path.write_text(json.dumps({**RESULT, **change}), encoding="utf-8")
    with pytest.raises(InputError, match=f"\\({named} of another shape"):
        report.read_json(path)


def test_the_threshold_chart_draws_each_group_at_the_thresholds_its_types_were_scored_at(tmp_path: Path):
    """An audit: one curve over every type at one threshold, with a line at the trained-on threshold
    only, where most types were scored at another. Each group now has its own curve and lines."""
    pts = RESULT["sweeps"]["system"]
    result = {**RESULT, "sweeps_by_group": {"seen": {"system": pts}, "unseen": {"system": pts}},
              "per_type": [{**RESULT["per_type"][0], "thresholds": {"system": 0.38, "bm25": None}},
                           {**RESULT["per_type"][1], "thresholds": {"system": 0.21, "bm25": None}}]}
    panels, title = report.threshold_panels(result)
    assert [(name, chosen) for name, _, chosen in panels] == [("seen types", {"system": [0.38]}),
                                                              ("unseen types", {"system": [0.21]})]
    assert "by group" in title
    panels, title = report.threshold_panels(RESULT)  # saved before the groups' curves: said so
    assert [(name, chosen) for name, _, chosen in panels] == [("every type at one threshold", {"system": [0.42]})]
    calibrated = {**RESULT, "calibration": {
        "methods": {"system": {"curve": pts, "chosen": {"threshold": 0.38}}},
        "unseen": {"methods": {"system": {"curve": pts, "chosen": {"threshold": 0.21}}}}}}
    panels, title = report.threshold_panels(calibrated)  # the unseen types' curve was drawn nowhere
    assert [(name, chosen) for name, _, chosen in panels] == [("seen types", {"system": [0.38]}),
                                                              ("unseen types", {"system": [0.21]})]
    if pytest.importorskip("matplotlib"):
        path = report.chart_threshold(panels, tmp_path / "c.png", title=title)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
