"""The ANN path of the embedded store against the exact scan: same answers, same scores.

``ann.MIN_ROWS`` is lowered so that a store of a few thousand spans searches through the faiss
index. Stated tolerance: the same passages in the same order and scores within 1e-5 (both paths
score from the same float32 blobs) for top-k searches, plain, hybrid (λ > 0), metadata- and
span-label-filtered; the threshold-algorithm bound makes that exact unless the probed inverted
lists miss a row, which these data (spans clustered around one centre, many near-ties) would show.
"""

from __future__ import annotations

import numpy as np
import pytest

from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores import ann, ann_search
from indexer.stores.base import SearchRequest
from indexer.stores.filter_rules import Filters
from indexer.stores.embedded import CACHE_DIR, EmbeddedStore

from test_segments import STAMP, make_docs, ranker, reference, same_ranker, unit_rows, DIMS

pytest.importorskip("faiss")


def hits(store: EmbeddedStore, request: SearchRequest) -> list[tuple[str, float, tuple[float, ...], tuple | None]]:
    """(id, score, marks' similarities ascending, the ranking candidate's (similarity, start) or None) a hit."""
    return [(h.id, h.score, tuple(sorted(s.similarity for s in h.spans)), ranker(h)) for h in store.search(request)]


def agree(got: list, want: list) -> None:
    assert [h[0] for h in got] == [h[0] for h in want]
    for g, w in zip(got, want):
        assert g[1] == pytest.approx(w[1], abs=1e-5)
        assert g[2] == pytest.approx(w[2], abs=1e-5)
        same_ranker(g[3], w[3])


def ann_agrees_with_exact(store: EmbeddedStore, request: SearchRequest, docs: dict | None = None) -> None:
    """The ANN path gives the exact scan's answer (and, unfiltered, the float32 reference's)."""
    store.use_ann = False
    want, want_total = hits(store, request), store.search(request).total
    store.use_ann = True
    agree(hits(store, request), want)
    if len(want) < request.limit:  # a short answer checked every list: its count is known, and said
        assert store.search(request).total == want_total == len(want)
    if docs is not None and not request.filters:
        agree(hits(store, request), reference(docs, request)[0])


def asked(centre: np.ndarray, rng: np.random.Generator) -> list[SearchRequest]:
    out = []
    for threshold in (0.3, 0.5, 0.62):
        for _ in range(3):
            q = unit_rows((centre + rng.standard_normal(DIMS) * 0.05)[None])[0]
            for weight in (0.0, 1.0):
                out.append(SearchRequest(q, threshold, limit=10, passage_weight=weight))
                out.append(SearchRequest(q, threshold, limit=1, passage_weight=weight))
                out.append(SearchRequest(q, threshold, limit=10, passage_weight=weight,
                                         filters=Filters.of({"part": "1"})))
                out.append(SearchRequest(q, threshold, limit=5, passage_weight=weight,
                                         filters=Filters.of({"spans.labels": "l1"})))
    return out


@pytest.fixture
def big(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "MIN_ROWS", 0)
    monkeypatch.setattr("indexer.stores.embedded_filtering.SMALL_SELECTION", 50)  # filters through the index too
    rng = np.random.default_rng(3)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    store = EmbeddedStore.open(tmp_path / "s")
    store.check_model(STAMP)
    docs = {d.passage.id: d for d in make_docs(rng, range(3000), centre)}
    store.write(list(docs.values()))
    yield store, rng, centre, docs
    store.close()


def test_ann_and_exact_scan_give_the_same_answers(big):
    store, rng, centre, docs = big
    requests = asked(centre, rng)
    for request in requests:
        ann_agrees_with_exact(store, request, docs)
    assert set(store._ann.built_s) == {"spans", "passages"}  # the index was used, not skipped


def test_fewer_passages_or_filtered_spans_than_an_index_pays_for_are_scanned(big, monkeypatch):
    """An audit (400k synthetic spans, queries off the clusters): the passage index's bound, over
    the lists it probed, missed the first passage of hybrid searches, and a span-label filter that
    allowed few spans came back short or empty. Below ``MIN_ROWS`` passages a hybrid search scores
    every passage vector (int8) for its passage side, and a span filter allowing fewer than
    ``MIN_ROWS`` spans is answered by the exact scan (with its total)."""
    store, rng, centre, docs = big
    spans = store.counts().spans
    monkeypatch.setattr(ann, "MIN_ROWS", len(docs) + 1)  # the spans still go through the index, the passages not
    assert spans >= ann.MIN_ROWS
    for request in asked(centre, rng):
        ann_agrees_with_exact(store, request, docs)
    assert set(store._ann.built_s) == {"spans"}  # no passage index was built or used
    labelled = SearchRequest(centre, 0.3, limit=5, filters=Filters.of({"spans.labels": "l1"}))
    assert store.search(labelled).total is not None  # the exact scan's answer, counted


def test_writes_extend_the_index_and_dead_rows_are_never_answered(big, monkeypatch):
    store, rng, centre, docs = big
    requests = asked(centre, rng)[::5]
    for request in requests:
        if not request.filters:
            agree(hits(store, request), reference(docs, request)[0])
    built = dict(store._ann.built_s)
    rebuilt = []
    monkeypatch.setattr(ann, "build", lambda *a, **k: rebuilt.append(1))
    for step in range(5):  # new passages, and replacements (same id, new vectors) of old ones
        ids = list(range(3000 + 20 * step, 3020 + 20 * step)) + [int(i) for i in rng.integers(0, 3000, 20)]
        new = make_docs(rng, ids, centre)
        store.write(new)
        docs.update({d.passage.id: d for d in new})
        for request in requests:
            ann_agrees_with_exact(store, request, docs)
    assert rebuilt == [] and store._ann.built_s == built  # extended, never rebuilt
    index = store._ann._indexes["spans"]
    assert index.row_hi == int(store._vectors.span[-1])


def test_a_new_process_loads_the_index_and_a_damaged_one_is_rebuilt(big):
    store, rng, centre, docs = big
    request = asked(centre, rng)[0]
    want = hits(store, request)
    folder = store.path / CACHE_DIR / "ann-spans"
    assert (folder / ann.FILE).is_file()
    with EmbeddedStore.open(store.path, create=False) as again:
        agree(hits(again, request), want)
        assert again._ann.built_s == {}  # loaded, not built
    # one byte flipped in place (a bad block): the file keeps its size, as a mapped file must (a
    # mapped file cut short under a running process is a SIGBUS, as with any memory-mapped data)
    with open(folder / ann.FILE, "r+b") as handle:
        handle.seek(handle.seek(0, 2) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with EmbeddedStore.open(store.path, create=False) as again:
        agree(hits(again, request), want)
        assert "spans" in again._ann.built_s  # the checksum failed: rebuilt


def test_small_stores_scan_exactly(tmp_path):
    rng = np.random.default_rng(0)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write(make_docs(rng, range(200), centre))
        list(store.search(SearchRequest(centre, 0.3, limit=5)))
        assert store._ann.built_s == {} and not (store.path / CACHE_DIR / "ann-spans").exists()


def test_spans_of_finds_every_span_of_a_passage(big):
    store, rng, centre, docs = big
    list(store.search(SearchRequest(centre, 0.3, limit=5)))
    vec = store._vectors
    picks = np.unique(rng.choice(vec.passage, 50))
    want = np.sort(vec.span[np.isin(vec.passage, picks)])
    assert np.array_equal(np.sort(vec.spans_of(picks)), want)
    vec.passage_sorted = False  # the slow way gives the same
    assert np.array_equal(np.sort(vec.spans_of(picks)), want)
    assert ann_search.CHUNK > 0


def test_a_filter_allowing_few_passages_scores_just_those(big, monkeypatch):
    """Below ``SMALL_SELECTION`` allowed passages the filter's own list is scored exactly (with
    the number of matches known); above it the ANN candidates are checked against the filter."""
    store, rng, centre, docs = big
    monkeypatch.setattr("indexer.stores.embedded_filtering.SMALL_SELECTION", 5000)
    for request in [r for r in asked(centre, rng) if r.filters.metadata]:
        store.use_ann = False
        want = list(store.search(request))
        store.use_ann = True
        got = store.search(request)
        assert got.total is not None
        agree([(h.id, h.score, tuple(sorted(s.similarity for s in h.spans)), ranker(h)) for h in got],
              [(h.id, h.score, tuple(sorted(s.similarity for s in h.spans)), ranker(h)) for h in want])


def test_a_candidate_ranks_but_is_not_marked_through_the_ann_path(tmp_path, monkeypatch):
    """Candidates (``mention=False``) rank their passages through the ANN path as in the scan, and
    are never marked, whether the candidates are scored from the index or from a small filter."""
    monkeypatch.setattr(ann, "MIN_ROWS", 0)
    monkeypatch.setattr("indexer.stores.embedded_filtering.SMALL_SELECTION", 50)
    rng = np.random.default_rng(8)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    docs = {d.passage.id: d for d in make_docs(rng, range(1500), centre, candidates=0.5)}
    text = "A candidate and a mention."
    mention = unit_rows((centre + rng.standard_normal(DIMS) * 0.1)[None])[0]
    docs["ranked-by-a-candidate"] = EncodedPassage(
        Passage("ranked-by-a-candidate", text, {"part": "1"}),
        (EncodedSpan(2, 11, "candidate", 0.9, centre, ("l0",), mention=False),
         EncodedSpan(18, 25, "mention", 0.9, mention, ("l1",))), centre)
    near = unit_rows((centre + rng.standard_normal(DIMS) * 0.005)[None])[0]  # cos ≈ 0.999: second
    docs["a-candidate-alone"] = EncodedPassage(
        Passage("a-candidate-alone", "Only a candidate.", {"part": "1"}),
        (EncodedSpan(7, 16, "candidate", 0.9, near, ("l0",), mention=False),), near)
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write(list(docs.values()))
        for filters in ({}, {"part": "1"}):
            for small in (50, 5000):  # the filter checked on the ANN candidates, or its passages scored
                monkeypatch.setattr("indexer.stores.embedded_filtering.SMALL_SELECTION", small)
                top = list(store.search(SearchRequest(centre, 0.5, limit=3, filters=Filters.of(filters))))
                assert [h.id for h in top[:2]] == ["ranked-by-a-candidate", "a-candidate-alone"]
                assert top[0].score == pytest.approx(1.0, abs=1e-5)
                assert [s.text for s in top[0].spans] == ["mention"] and top[1].spans == ()
                assert [(h.ranked_by.start, h.ranked_by.text) for h in top[:2]] == [(2, "candidate"), (7, "candidate")]
        assert "spans" in store._ann._indexes
        for request in asked(centre, rng):
            ann_agrees_with_exact(store, request, docs)


def test_prepare_builds_the_indexes_so_the_first_search_after_indexing_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "MIN_ROWS", 0)
    rng = np.random.default_rng(5)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write(make_docs(rng, range(800), centre))
        store.prepare()
        assert set(store._ann.built_s) == {"spans", "passages"}
    request = asked(centre, rng)[1]  # limit 1, λ = 0: through the span index
    with EmbeddedStore.open(tmp_path / "s", create=False) as again:
        got = hits(again, request)
        assert again._ann.built_s == {}  # loaded from what prepare() saved, not built in the search
        again.use_ann = False
        agree(got, hits(again, request))


def test_indexing_ends_by_preparing_the_store(tmp_path, monkeypatch):
    from indexer.api import NerIndex
    from indexer.assets import default_model_dir
    from indexer.encoder import OnnxEncoder
    from indexer.records import Passage

    prepared = []
    monkeypatch.setattr(EmbeddedStore, "prepare", lambda self: prepared.append(self.path))
    store = EmbeddedStore.open(tmp_path / "s")
    ix = NerIndex(OnnxEncoder.from_dir(default_model_dir(), device="cpu"), store)
    ix.index([Passage("p1", "Angela Merkel met Barack Obama in Berlin.")])
    assert prepared == [store.path]
    store.close()


def test_a_saved_index_is_mapped_and_its_delta_is_merged_into_the_file_when_resaved(big, monkeypatch):
    """A saved index is a read-only mapping: rows written later go to an in-memory delta that is
    searched beside it, and merged into a new file once ``RESAVE_ROWS`` rows have gathered."""
    store, rng, centre, docs = big
    requests = [r for r in asked(centre, rng) if not r.filters][::3]
    list(store.search(requests[0]))
    index = store._ann._indexes["spans"]
    assert index.mapped and index.delta is None  # saved after the build, then mapped
    monkeypatch.setattr(ann, "RESAVE_ROWS", 10**9)
    new = make_docs(rng, range(3000, 3040), centre)
    store.write(new)
    docs.update({d.passage.id: d for d in new})
    for request in requests:
        ann_agrees_with_exact(store, request, docs)
    assert index.delta is not None and index.delta.ntotal == sum(len(d.spans) for d in new)
    monkeypatch.setattr(ann, "RESAVE_ROWS", 1)
    new = make_docs(rng, range(3040, 3041), centre)
    store.write(new)
    docs.update({d.passage.id: d for d in new})
    ann_agrees_with_exact(store, requests[0], docs)
    assert index.delta is not None  # a search never merges: that would read the whole index into memory
    store.prepare()  # the end of an indexing run does
    assert index.mapped and index.delta is None and index.saved_hi == int(store._vectors.span[-1])
    with EmbeddedStore.open(store.path, create=False) as again:
        for request in requests:
            agree(hits(again, request), hits(store, request))
        assert again._ann._indexes["spans"].delta is None  # every row came from the merged file


def test_a_save_maps_its_own_file_not_one_another_process_renamed_in(big, monkeypatch):
    """A review: a rival's index file renamed in just after this save was mapped as this save's
    rows (3,000 rows believed, 1,000 mapped). The index now stays in memory, whole."""
    import faiss

    store, rng, centre, docs = big
    requests = [r for r in asked(centre, rng) if not r.filters][::3]
    list(store.search(requests[0]))
    index = store._ann._indexes["spans"]
    monkeypatch.setattr(ann, "RESAVE_ROWS", 1)
    new = make_docs(rng, range(3000, 3040), centre)
    store.write(new)
    docs.update({d.passage.id: d for d in new})
    ann_agrees_with_exact(store, requests[0], docs)
    real_map = ann._map

    def rival_first(folder):  # the file just saved, as another process's with 10 rows
        rival = faiss.read_index(str(folder / ann.FILE))
        rival.reset()
        rival.add_with_ids(np.eye(10, rival.d, dtype=np.float32), np.arange(10, dtype=np.int64))
        faiss.write_index(rival, str(folder / ann.FILE))
        return real_map(folder)

    monkeypatch.setattr(ann, "_map", rival_first)
    store.prepare()  # merges the delta into a new file, saves it, maps it
    assert not index.mapped and index.delta is None and index.faiss_index.ntotal > 10
    for request in requests:
        ann_agrees_with_exact(store, request, docs)
    monkeypatch.setattr(ann, "_map", real_map)
    # a fuller file another process saves later is mapped, not written over (a review)
    with EmbeddedStore.open(store.path, create=False) as writer:
        new = make_docs(rng, range(3040, 3080), centre)
        writer.write(new)
        writer.prepare()
    docs.update({d.passage.id: d for d in new})
    real_save, saves = ann.save, []
    monkeypatch.setattr(ann, "save", lambda *args, **kw: saves.append(args) or real_save(*args, **kw))
    ann_agrees_with_exact(store, requests[0], docs)
    assert store._ann._indexes["spans"].mapped and saves == []  # it had saved its own over the writer's


def test_candidates_are_checked_against_filters_and_text_on_their_indexes(big):
    """A filter or text restriction that allows many passages is checked on the ANN candidates,
    through the filter tables and FTS (not the passage rows): the same answers as the exact scan,
    also after passages are replaced (their old filter and FTS rows are gone)."""
    store, rng, centre, docs = big
    store.write(make_docs(rng, range(0, 300, 7), centre))  # replaced: new vectors, same texts
    for request in asked(centre, rng)[::4]:
        for text in ("names", "W21a OR W42b OR names"):
            for filters in (Filters(), Filters.of({"part": ["1", "2"]})):
                ann_agrees_with_exact(store, SearchRequest(request.vector, request.min_similarity, filters=filters,
                                                           text=text, limit=request.limit,
                                                           passage_weight=request.passage_weight))


def test_a_searching_process_maps_the_file_a_writer_merged(big, monkeypatch):
    """Another process's writes reach a searcher's delta; once the writer's ``prepare()`` has
    merged them into a new file, the searcher maps that file and its delta is gone."""
    store, rng, centre, docs = big
    request = [r for r in asked(centre, rng) if not r.filters][0]
    list(store.search(request))
    with EmbeddedStore.open(store.path, create=False) as writer:
        new = make_docs(rng, range(3000, 3030), centre)
        writer.write(new)
        docs.update({d.passage.id: d for d in new})
        ann_agrees_with_exact(store, request, docs)
        searcher = store._ann._indexes["spans"]
        assert searcher.delta is not None and searcher.delta.ntotal
        monkeypatch.setattr(ann, "RESAVE_ROWS", 1)
        writer.prepare()
    ann_agrees_with_exact(store, request, docs)
    mapped = store._ann._indexes["spans"]
    assert mapped is not searcher and mapped.mapped and mapped.delta is None
    assert mapped.saved_hi == int(store._vectors.span[-1])


def test_an_index_made_in_a_history_the_restored_store_lost_is_rebuilt(big, tmp_path, monkeypatch):
    """The ANN file saved after a backup holds the rows of a write the restored store never saw,
    under the rowids its next write reuses: it is rebuilt, and the ANN path answers as the scan."""
    from test_segments import lost_history_then_restore

    store, rng, centre, docs = big
    monkeypatch.setattr(ann, "RESAVE_ROWS", 1)  # every prepare() saves the rows added
    ann_agrees_with_exact(store, SearchRequest(centre, 0.5, limit=10), docs)
    new = lost_history_then_restore(store, rng, centre, docs, tmp_path / "backup.sqlite")
    docs[new.passage.id] = new
    with EmbeddedStore.open(store.path, create=False) as restored:
        for vector in [s.vector for s in new.spans] + [centre]:
            ann_agrees_with_exact(restored, SearchRequest(vector, 0.5, limit=10), docs)
        assert "spans" in restored._ann.built_s  # the saved index was not trusted


def test_a_scanned_passage_side_finds_the_passage_an_index_bound_misses():
    """``ann_ranking.top_k`` with a passage index whose probed lists miss the best passage (its list
    is the 64th, past the 16 and the 32 probes of the confirmation), against the same passages
    scanned whole (:class:`ann_ranking.Scanned`): the audit's miss, deterministic, no faiss needed."""
    from indexer.stores import ann_ranking
    from indexer.stores.span_ranking import Scored

    rng = np.random.default_rng(0)
    n = 2000
    span_sim = rng.uniform(0.3, 0.35, n)
    span_sim[:20] = 0.5
    passage_sim = rng.uniform(0.0, 0.1, n)
    passage_sim[:20] = 0.4
    lists = rng.integers(0, 64, n)
    lists[:20] = rng.integers(0, 16, 20)
    span_sim[1234], passage_sim[1234], lists[1234] = 0.31, 0.95, 63  # the best total, 1.26

    class Exact:  # the span side: every span, exact (one passage a span)
        lists, max_error = 1, 0.0

        def search(self, q, k, probes, bits=None):
            order = np.argsort(-span_sim)[:k]
            return order.astype(np.int64), span_sim[order]

    class Probed:  # an IVF index's passage side: lists probed in order, list 63 only at 64 probes
        lists, max_error = 64, 0.01

        def search(self, q, k, probes, bits=None):
            ok = np.flatnonzero(lists < probes)
            order = ok[np.argsort(-passage_sim[ok])][:k]
            return order.astype(np.int64), passage_sim[order]

    def first(passages) -> int:
        top, _ = ann_ranking.top_k(np.zeros(4), k=10, threshold=0.3, weight=1.0, spans=Exact(), passages=passages,
                                   span_passages=lambda ids: ids,
                                   score=lambda ps: [Scored(int(p), float(span_sim[p] + passage_sim[p]), ()) for p in ps])
        return top[0].passage

    assert first(Probed()) != 1234  # the bound over the probed lists closed without it
    scans = []
    scanned = ann_ranking.Scanned(lambda: scans.append(1) or (np.arange(n), passage_sim.astype(np.float32)), 0.01)
    assert first(scanned) == 1234 and scans == [1]  # scanned once, however deep the search read it
    # from ann.MIN_ROWS passages the index is kept, with every list probed (an audit at 320k passages),
    # searched once however many rounds read it
    asked = []

    class Counted(Probed):
        def search(self, q, k, probes, bits=None):
            asked.append((k, probes))
            return super().search(q, k, probes, bits)

    assert first(ann_ranking.AllLists(Counted())) == 1234 and asked == [(1024, 64)]


class _ProbedSpans:
    """An IVF span index: lists probed in order; ``bits`` (a span filter) keeps the allowed rows."""

    def __init__(self, sims: np.ndarray, lists: np.ndarray) -> None:
        self.sims, self.where, self.lists, self.max_error = sims, lists, 64, 0.01

    def search(self, q, k, probes, bits=None):
        ok = np.flatnonzero((self.where < probes) & (True if bits is None else bits))
        order = ok[np.argsort(-self.sims[ok])][:k]
        return order.astype(np.int64), self.sims[order]


def _top_spans(spans, *, k: int, threshold: float, bits=None) -> list[int]:
    from indexer.stores import ann_ranking
    from indexer.stores.span_ranking import Scored

    def score(ps):  # one passage a span, kept when its span passes the threshold (and the filter)
        return [Scored(int(p), float(spans.sims[p]), ()) for p in ps
                if spans.sims[p] >= threshold and (bits is None or bits[p])]

    top, _ = ann_ranking.top_k(np.zeros(4), k=k, threshold=threshold, weight=0.0, spans=spans, passages=None,
                               span_passages=lambda ids: ids, score=score, span_bits=bits)
    return [s.passage for s in top]


def test_a_short_page_is_confirmed_over_every_list():
    """A label filter: the allowed spans near the query are under the threshold, the one that
    passes is in the 64th list. Over the probed lists "nothing passes" held, and the answer was
    empty where the exact scan had a passage (an audit at 640k spans)."""
    rng = np.random.default_rng(3)
    n = 3000
    sims, where = rng.uniform(0.0, 0.2, n), rng.integers(0, 16, n)
    bits = np.zeros(n, dtype=bool)
    bits[:500] = True
    sims[2999], where[2999], bits[2999] = 0.26, 63, True  # the one allowed span that passes 0.25
    spans = _ProbedSpans(sims, where)
    assert _top_spans(spans, k=10, threshold=0.25, bits=bits) == [2999]  # a short page: every list checked


def test_all_lists_searches_again_only_when_a_round_reads_past_what_came_back():
    from indexer.stores import ann_ranking

    class Index:
        lists, max_error = 8, 0.01

        def __init__(self, n: int) -> None:
            self.scores, self.asked = np.linspace(1, 0, n).astype(np.float32), []

        def search(self, q, k, probes, bits=None):
            self.asked.append((k, probes))
            return np.arange(min(k, len(self.scores))), self.scores[:k]

    big = Index(5000)
    proposer = ann_ranking.AllLists(big)
    for k in (64, 256, 1024, 2000, 3000, 5000):
        ids, scores = proposer.search(np.zeros(4), k, 16)
        assert list(ids) == list(range(k)) and len(scores) == k
    assert big.asked == [(1024, 8), (4096, 8), (16384, 8)]  # every list each time
    small = Index(100)
    proposer = ann_ranking.AllLists(small)
    assert len(proposer.search(np.zeros(4), 64, 16)[0]) == 64 and len(proposer.search(np.zeros(4), 500, 16)[0]) == 100
    assert small.asked == [(1024, 8)]  # fewer came back than asked: there are no more


def test_scanned_gives_the_best_rows_first_however_deep_it_is_read():
    from indexer.stores import ann_ranking

    scores = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    ids = np.arange(1000, 2000)
    want = ids[np.argsort(-scores, kind="stable")]
    scanned = ann_ranking.Scanned(lambda: (ids, scores), 0.01)
    for k in (1, 5, 3, 64, 300, 999, 1000, 5000):
        got, got_scores = scanned.search(np.zeros(4), k, 16)
        assert list(got) == list(want[:k]) and list(got_scores) == sorted(got_scores, reverse=True)


def test_a_short_answer_from_the_index_says_how_many_matched(big):
    """A top-k the index answers with fewer than ``limit`` passages has checked every list, so
    nothing else passes: its count is known. The CLI said "3 shown of at least 3" (an audit)."""
    store, rng, centre, docs = big
    q = unit_rows((centre + rng.standard_normal(DIMS) * 0.05)[None])[0]
    store.use_ann = False
    counts = {t: store.search(SearchRequest(q, float(t), limit=10)).total for t in np.arange(0.9, 1.0, 0.002)}
    threshold = next(t for t, n in counts.items() if 0 < n < 10)
    store.use_ann = True
    answer = store.search(SearchRequest(q, threshold, limit=10))
    assert answer.total == len(list(answer)) == counts[threshold]
    assert "spans" in store._ann.built_s  # the index answered
