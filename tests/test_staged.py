"""The staged CPU runner gives the whole graph's answers: same kept spans, same vectors (within
quantisation noise), same passage vectors; and a graph it cannot cut runs whole."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from indexer.assets import default_model_dir  # noqa: E402
from indexer.encoder import CPU, OnnxEncoder, _token_arrays, graph_for, open_session  # noqa: E402
from indexer.errors import ModelError  # noqa: E402
from indexer.records import Passage  # noqa: E402
from indexer.stage_loading import load_stages  # noqa: E402
from indexer.covered_rows import covered_rows  # noqa: E402
from indexer.staged import SpanBatch, find_cuts  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "corpus.jsonl"
# Tolerances. Dynamic int8 quantisation scales activations over a whole tensor: the staged graphs
# see the batch's real spans (the whole graph also its padding spans) and, for vectors, the kept
# spans only. Measured on the 128 benchmark passages: scores identical, vectors cos >= 0.99999.
SCORE_TOL = 1e-3
COS_MIN = 0.9999
# Span vectors of a span side with its own top layers: its last layer runs on the kept spans' tokens
# alone (indexer/covered_rows.py), so quantisation scales those activations over them. Measured:
# cos >= 0.9985 to the whole graph on 48 benchmark passages (window by window, as the CPU runs them;
# both as close to the float32 graph, mean 1 - cos 0.0041 against 0.0042), >= 0.9975 on a batch of
# six padded windows with every candidate kept.
SPAN_COS_MIN = 0.997


@pytest.fixture(scope="module")
def staged() -> OnnxEncoder:
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    assert enc.stages is not None, "the shipped CPU graph must run staged"
    return enc


@pytest.fixture(scope="module")
def whole(staged) -> OnnxEncoder:
    return OnnxEncoder(staged.info, staged.session, staged.tokenizer, provider=CPU, catalog=staged.catalog)


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    texts = [json.loads(line)["text"] for line in EXAMPLES.open(encoding="utf-8")]
    joined = [" ".join(texts[i : i + 4]) for i in range(0, len(texts), 4)]  # ~100-word passages, several windows long
    return [Passage(str(i), t) for i, t in enumerate(joined + texts[:20])]


def test_kept_spans_scores_and_vectors_match_the_whole_graph(staged, whole, passages):
    got = staged.encode(passages, with_base=True, batch_size=8)
    want = whole.encode(passages, with_base=True, batch_size=8)
    threshold = staged.info.detection_threshold
    compared = 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.vector, b.vector)  # passage vectors: the very same nodes
        sa = {(s.start, s.end): s for s in a.spans}
        sb = {(s.start, s.end): s for s in b.spans}
        for key in set(sa) ^ set(sb):  # only spans at the threshold may come or go
            span = sa.get(key) or sb[key]
            assert abs(span.score - threshold) < SCORE_TOL, (a.passage.text[key[0] : key[1]], span.score)
        for key in set(sa) & set(sb):
            assert abs(sa[key].score - sb[key].score) <= SCORE_TOL
            assert float(sa[key].vector @ sb[key].vector) >= SPAN_COS_MIN
            assert float(sa[key].base_vector @ sb[key].base_vector) >= COS_MIN
            compared += 1
    assert compared > 100


def test_every_candidate_score_matches(staged, whole, passages):
    """All candidates, not only the kept: the scores graph is the whole graph's entity head."""
    items = [it for i, p in enumerate(passages[:12]) for it in staged._plan(i, p)[1]]
    batch = items[:6]
    ids, mask = _token_arrays(batch)
    rows = np.concatenate([np.full(len(it.spans), r) for r, it in enumerate(batch)]).astype(np.int64)
    pairs = np.asarray([p for it in batch for p in it.spans], dtype=np.int64)
    result = staged.stages.run(ids, mask, SpanBatch(rows, pairs[:, 0], pairs[:, 1]), 0.0)
    width = max(len(it.spans) for it in batch)
    starts = np.zeros((len(batch), width), dtype=np.int64)
    ends = np.zeros_like(starts)
    offset = 0
    for r, it in enumerate(batch):
        starts[r, : len(it.spans)] = pairs[offset : offset + len(it.spans), 0]
        ends[r, : len(it.spans)] = pairs[offset : offset + len(it.spans), 1]
        offset += len(it.spans)
    scores, vectors = whole.session.run(
        ["span_scores", "span_vectors"], {"input_ids": ids, "attention_mask": mask, "span_starts": starts, "span_ends": ends}
    )
    want = np.concatenate([scores[r, : len(it.spans)] for r, it in enumerate(batch)])
    want_vec = np.concatenate([vectors[r, : len(it.spans)] for r, it in enumerate(batch)])
    assert result.kept.size == len(want)  # threshold 0: every span embedded
    assert np.abs(result.scores - want).max() <= SCORE_TOL
    assert (result.vectors * want_vec).sum(-1).min() >= SPAN_COS_MIN


def test_cut_points_are_found_by_structure():
    graph = onnx.load(str(graph_for(OnnxEncoder.from_dir(default_model_dir(), device="cpu").info, CPU)))
    cuts = find_cuts(graph)
    # the shipped model has a candidate head: the scores graph takes both heads' first layers (384 =
    # 2 × 192) and adds their biases itself
    assert cuts.adapter_hidden == 384 and cuts.width_buckets == 16 and cuts.candidate
    assert cuts.entity_bias.shape == (384,) and not cuts.entity_bias.any()
    renamed = onnx.load(str(default_model_dir() / "encoder.int8.onnx"))
    for node in renamed.graph.node:
        if node.op_type == "CumSum":
            node.op_type = "Identity"  # no span means: not a graph this runner knows
            del node.input[1:]
    with pytest.raises(ModelError, match="CumSum"):
        find_cuts(renamed)


def test_a_graph_that_cannot_be_cut_runs_whole(tmp_path, caplog):
    graph = onnx.load(str(default_model_dir() / "encoder.int8.onnx"))
    for init in graph.graph.initializer:
        if init.name == "entity.start_proj.bias":
            init.name = "renamed.bias"
    for node in graph.graph.node:
        node.input[:] = ["renamed.bias" if n == "entity.start_proj.bias" else n for n in node.input]
    path = tmp_path / "g.onnx"
    onnx.save(graph, str(path))
    with caplog.at_level(logging.INFO, logger="indexer.stage_loading"):
        assert load_stages(path, lambda data: open_session(data, CPU)) is None
    assert "runs whole" in caplog.text


def test_without_onnx_the_graph_runs_whole(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with caplog.at_level(logging.WARNING, logger="indexer.stage_loading"):
        assert load_stages(default_model_dir() / "encoder.int8.onnx", lambda data: open_session(data, CPU)) is None
    assert "nerindex[cpu]" in caplog.text


def test_covered_rows_are_the_positions_inside_any_span():
    starts, ends = np.array([2, 3, 9, 0]), np.array([4, 3, 9, 0])
    assert covered_rows(starts, ends, 12).tolist() == [0, 2, 3, 4, 9]
    assert covered_rows(np.zeros(0, np.int64), np.zeros(0, np.int64), 5).tolist() == []


def test_the_span_sides_last_layer_runs_on_kept_tokens_and_without_its_cut_on_all(staged, passages, tmp_path, caplog):
    """The shipped graph gets the fourth graph; a graph where it is not found (here the fused
    projection is no longer a Concat of Slices) keeps three and gives the same spans and scores."""
    assert staged.stages.row_cuts is not None and staged.stages.rows is not None
    graph = onnx.load(str(default_model_dir() / "encoder.int8.onnx"))
    proj = find_cuts(graph).proj
    concat = next(n for n in graph.graph.node if proj in n.output)
    first = concat.input[0]
    graph.graph.node.append(onnx.helper.make_node("Identity", [first], [first + "__id"]))
    concat.input[0] = first + "__id"
    path = tmp_path / "g.onnx"
    onnx.save(graph, str(path))
    with caplog.at_level(logging.INFO, logger="indexer.stage_loading"):
        plain = load_stages(path, lambda data: open_session(data, CPU))
    assert plain is not None and plain.row_cuts is None
    assert "runs on every token" in caplog.text
    items = [it for i, p in enumerate(passages[:8]) for it in staged._plan(i, p)[1]][:4]
    for item in items:
        ids, mask = _token_arrays([item])
        spans = SpanBatch(np.zeros(len(item.spans), np.int64), item.spans[:, 0], item.spans[:, 1])
        a = staged.stages.run(ids, mask, spans, staged.info.detection_threshold, candidate_threshold=staged.info.candidate_threshold)
        b = plain.run(ids, mask, spans, staged.info.detection_threshold, candidate_threshold=staged.info.candidate_threshold)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.kept, b.kept)
        np.testing.assert_array_equal(a.passage_vectors, b.passage_vectors)
        assert a.kept.size and (a.vectors * b.vectors).sum(-1).min() >= SPAN_COS_MIN
        # the three graphs still give the whole graph's span vectors within the old bound
        starts, ends = item.spans[None, :, 0], item.spans[None, :, 1]
        want = staged.session.run(["span_vectors"], {"input_ids": ids, "attention_mask": mask, "span_starts": starts,
                                                     "span_ends": ends})[0][0][b.kept]  # fmt: skip
        assert (b.vectors * want).sum(-1).min() >= COS_MIN


def test_an_adapter_reading_the_span_layers_input_keeps_the_copy_on_every_token(tmp_path, caplog):
    """A review: with feature layers (5, 6) and one copied layer the adapter's projection reads the
    copy's own input, which the rows graph takes already (onnxruntime refused the graph and encoding
    failed). Here the shipped graph's adapter is made to read it: the span side runs on every token."""
    from indexer.covered_rows import find_row_cuts

    graph = onnx.load(str(default_model_dir() / "encoder.int8.onnx"))
    cuts = find_cuts(graph)
    rc = find_row_cuts(graph, cuts.proj, cuts.span_last)
    concat = next(n for n in graph.graph.node if n.op_type == "Concat" and cuts.span_last in n.input)
    concat.input[list(concat.input).index(rc.adapter_inputs[0])] = rc.layer_in
    path = tmp_path / "g.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ModelError, match="span layer's input"):
        find_row_cuts(graph, cuts.proj, cuts.span_last)
    with caplog.at_level(logging.INFO, logger="indexer.stage_loading"):
        plain = load_stages(path, lambda data: open_session(data, CPU))
    assert plain is not None and plain.row_cuts is None and "runs on every token" in caplog.text
