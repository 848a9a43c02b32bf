"""int8 vector segments against exact float32 search: same answers, same scores.

The reference below is the search README's "How search works" done the slow, obvious way: every
span's float32 cosine from the vectors as written, a passage matches when its best span reaches the
threshold, ranked by best span + λ · passage cosine, ties by insertion order. Vectors are
clustered so that many spans sit within the quantisation error of the threshold and of one
another: the case the re-scoring rule (``segments.EPSILON``) exists for.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest

from indexer import int8_kernel
from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores import ann, derived, int8_scan, segment_rows, segments
from indexer.stores.base import ModelStamp, SearchRequest, StoreVersion
from indexer.stores.filter_rules import Filters
from indexer.stores.embedded import CACHE_DIR, DB_NAME, EmbeddedStore

DIMS = 64
STAMP = ModelStamp("synthetic", "1", DIMS, "q" * 64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_docs(rng: np.random.Generator, ids: range, centre: np.ndarray, candidates: float = 0.0
              ) -> list[EncodedPassage]:
    """Passages of 0 to 4 spans; about ``candidates`` of the spans are candidates (``mention=False``)."""
    docs = []
    for i in ids:
        n = int(rng.integers(0, 5))
        # cosines with the centre spread evenly around 0.5: many within 0.01 of any threshold there
        vecs = unit_rows(centre + rng.standard_normal((max(n, 1), DIMS)) * rng.uniform(0.02, 0.12))
        text = f"Passage {i} names W{i}a W{i}b W{i}c W{i}d W{i}e here."
        mentions = rng.random(n) >= candidates if candidates else np.ones(n, dtype=bool)
        words = [f"W{i}{letter}" for letter in "abcd"[:n]]  # a span a word: offsets tell them apart
        spans = tuple(EncodedSpan(text.index(w), text.index(w) + len(w), w, 0.9, vecs[k], (f"l{k % 2}",),
                                  mention=bool(mentions[k])) for k, w in enumerate(words))
        docs.append(EncodedPassage(Passage(f"d{i}", text, {"part": str(i % 3)}), spans, vecs[0]))
    return docs


def reference(docs: dict[str, EncodedPassage], request: SearchRequest) -> tuple[list, int]:
    """(hits as (id, score, (marked sims, ascending), the ranking candidate's (sim, start) or None), total)
    computed exactly: every span passing the threshold ranks its passage, the mentions among them
    are marked, a hit whose best span is a candidate names it, and an --all keeps the passages with
    a passing mention (``Store.search``)."""
    q = np.asarray(request.vector, dtype=np.float32)
    rows = []
    for order, d in enumerate(docs.values()):
        sims = [(float(np.float32(s.vector @ q)), s.mention, s.start) for s in d.spans]
        if dict(request.filters.items).get("part") not in (None, d.passage.fields["part"]):
            continue
        matching = [(s, mention, start) for s, mention, start in sims if s >= request.min_similarity]
        marked = tuple(sorted(s for s, mention, _ in matching if mention))
        if not matching or (request.exhaustive and not marked):
            continue
        best, by_mention, start = max(matching)
        score = best + (request.passage_weight or 0) * float(d.vector @ q)
        rows.append((-score, order, d.passage.id, score, marked, None if by_mention else (best, start)))
    rows.sort()
    total = len(rows)
    if not request.exhaustive:
        rows = rows[: request.limit]
    return [r[2:] for r in rows], total


def answer(store: EmbeddedStore, request: SearchRequest) -> tuple[list, int]:
    matches = store.search(request)
    hits = [(h.id, h.score, tuple(sorted(s.similarity for s in h.spans)), ranker(h)) for h in matches]
    return hits, getattr(matches, "total", len(hits))


def ranker(hit) -> tuple[float, int] | None:
    """(similarity, start) of the candidate that ranked a hit, or None (``Hit.ranked_by``)."""
    return None if hit.ranked_by is None else (hit.ranked_by.similarity, hit.ranked_by.start)


def same_ranker(got: tuple[float, int] | None, want: tuple[float, int] | None) -> None:
    assert (got is None) == (want is None)
    if got is not None:
        assert got[1] == want[1] and got[0] == pytest.approx(want[0], abs=1e-5)


def same(got: tuple[list, int], want: tuple[list, int]) -> None:
    assert got[1] == want[1]
    assert [h[0] for h in got[0]] == [h[0] for h in want[0]]
    for g, w in zip(got[0], want[0]):
        assert g[1] == pytest.approx(w[1], abs=1e-5)
        assert g[2] == pytest.approx(w[2], abs=1e-5)
        same_ranker(g[3], w[3])


def requests(centre: np.ndarray, rng: np.random.Generator) -> list[SearchRequest]:
    out = []
    for threshold in (0.3, 0.5, 0.62, 0.7):
        q = unit_rows((centre + rng.standard_normal(DIMS) * 0.05)[None])[0]
        for weight in (0.0, 0.5):
            out.append(SearchRequest(q, threshold, limit=5, passage_weight=weight))
            out.append(SearchRequest(q, threshold, limit=1, passage_weight=weight))
            out.append(SearchRequest(q, threshold, exhaustive=True, passage_weight=weight))
            out.append(SearchRequest(q, threshold, limit=3, passage_weight=weight, filters=Filters.of({"part": "1"})))
    return out


def test_quantisation_error_is_far_below_epsilon():
    """The encoder's own vectors err by at most 0.0031 (2,105 spans of crossner politics dev × 8
    type queries); isotropic ones by less; vectors with one component 20 times the others (the
    worst case for a per-vector scale, which the encoder does not make) still stay below ε."""
    rng = np.random.default_rng(1)
    for spread, bound in ((np.ones(384), segments.EPSILON / 3), (np.r_[20.0, np.ones(383)], segments.EPSILON)):
        m = unit_rows(rng.standard_normal((5000, 384)) * spread)
        q = unit_rows(rng.standard_normal((20, 384)) * spread)
        qm, scales = int8_scan.quantise(m)
        for query in q:
            (qq,), (qs,) = int8_scan.quantise(query[None])
            approx = int8_scan.int8_dots(np.ascontiguousarray(qm.T), qm.sum(axis=1, dtype=np.int32), qq) * scales * qs
            assert np.abs(approx - m @ query).max() < bound


def _dots_every_way(matrix: np.ndarray, query: np.ndarray, monkeypatch) -> list[np.ndarray]:
    """int8_dots of rows ``matrix``: onnxruntime's kernel as this CPU runs it, in two passes (as
    where it saturates), and the numpy fallback (as without onnxruntime)."""
    args = (np.ascontiguousarray(matrix.T), matrix.sum(axis=1, dtype=np.int32), query)
    got = [int8_scan.int8_dots(*args)]
    with monkeypatch.context() as patch:
        patch.setattr(int8_kernel, "_saturates", True)
        got.append(int8_scan.int8_dots(*args))
    with monkeypatch.context() as patch:
        patch.setattr(int8_kernel, "_session", False)
        got.append(int8_scan.int8_dots(*args))
    return got


def test_int8_dots_are_exact(monkeypatch):
    """onnxruntime's kernel, its two-pass use and the numpy fallback all give the exact int32 dot products."""
    rng = np.random.default_rng(0)
    m = rng.integers(-127, 128, (1000, 384)).astype(np.int8)
    q = rng.integers(-127, 128, 384).astype(np.int8)
    want = m.astype(np.int64) @ q.astype(np.int64)
    for got in _dots_every_way(m, q, monkeypatch):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("sign", [1, -1])
def test_int8_dots_are_exact_at_the_largest_levels(sign, monkeypatch):
    """Rows and query at their largest levels, where a pair of uint8 · int8 products overflows int16
    in the kernel of a CPU without VNNI (AVX2 alone): there a row equal to the query scored about
    a quarter of its dot product, and rows went missing from answers (an audit, an AMD EPYC)."""
    m = np.full((64, 384), 127 * sign, dtype=np.int8)
    q = np.full(384, 127, dtype=np.int8)
    want = m.astype(np.int64) @ q.astype(np.int64)
    for got in _dots_every_way(m, q, monkeypatch):
        assert np.array_equal(got, want)


def test_the_probe_says_whether_one_pass_saturates_on_this_cpu():
    session = int8_kernel.dots_session()
    if session is False:
        pytest.skip("no onnxruntime: the numpy fallback never saturates")
    one_pass = session.run(None, {"query": np.full((1, 384), 255, np.uint8), "matrix": np.full((384, 16), 127, np.int8)})
    assert int8_kernel.saturates() == (int(one_pass[0][0, 0]) != 384 * 255 * 127)


def test_int8_dots_model_is_one_matmulinteger():
    onnx = pytest.importorskip("onnx")
    model = onnx.load_model_from_string(int8_kernel.U8S8_DOTS_GRAPH)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMulInteger"]
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.UINT8, onnx.TensorProto.INT8]


@pytest.fixture
def world(tmp_path):
    rng = np.random.default_rng(7)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    store = EmbeddedStore.open(tmp_path / "s")
    store.check_model(STAMP)
    yield store, rng, centre
    store.close()


def test_exact_and_quantised_give_the_same_answers(world):
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(600), centre)}
    store.write(list(docs.values()))
    for request in requests(centre, rng):
        same(answer(store, request), reference(docs, request))


def test_candidates_rank_and_mentions_mark_exactly_through_tails_and_a_new_process(world, monkeypatch):
    """Half the spans are candidates, packed around the thresholds like the rest: every span ranks
    its passage, only mentions are marked and make an --all answer, exactly (a mention's decision
    at the threshold is re-scored), in the base, in tails, merged tails and a new process's load."""
    monkeypatch.setattr(segments, "MAX_TAILS", 2)
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(400), centre, candidates=0.5)}
    store.write(list(docs.values()))
    asked = requests(centre, rng)
    for request in asked:
        same(answer(store, request), reference(docs, request))
    assert store._load_vectors().candidates
    for step in range(4):  # new passages and replacements, each a tail (merged past MAX_TAILS)
        new = make_docs(rng, list(range(400 + 5 * step, 405 + 5 * step)) + [int(rng.integers(0, 400))], centre, 0.5)
        store.write(new)
        docs.update({d.passage.id: d for d in new})
        for request in asked[step::4]:
            same(answer(store, request), reference(docs, request))
    with EmbeddedStore.open(store.path, create=False) as again:
        for request in asked:
            same(answer(again, request), reference(docs, request))


def test_a_store_without_candidates_skips_the_mention_rules(world):
    store, rng, centre = world
    store.write(make_docs(rng, range(50), centre))
    vec = store._load_vectors()
    assert not vec.candidates and vec.mention.all() and vec.mention.size == store.counts().spans


def as_written_before_mention_flags(cache: Path) -> None:
    """Turn a saved base segment into what nerindex wrote before spans had a mention flag: state
    ``seg3``, no ``mentions.npy``, the other arrays as they are."""
    manifest = json.loads((cache / derived.MANIFEST).read_text())
    state = manifest["store"]["state"].replace("seg4:", "seg3:", 1)
    arrays = {name: np.load(cache / name) for name in segments.FILES if name != "mentions.npy"}
    (cache / "mentions.npy").unlink()
    assert derived.save_arrays(cache, StoreVersion(manifest["store"]["identity"], state), arrays)
    (cache / segments.LIST).write_text(json.dumps({"base": state, "tails": []}))


def test_a_cache_made_before_mention_flags_is_rebuilt_not_read_as_all_mentions(world, monkeypatch):
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(200), centre, candidates=0.5)}
    store.write(list(docs.values()))
    asked = requests(centre, rng)
    same(answer(store, asked[2]), reference(docs, asked[2]))  # the base segment is saved
    store.close()
    cache = store.path / CACHE_DIR
    as_written_before_mention_flags(cache)
    rebuilds = []
    real = segment_rows.read_base
    monkeypatch.setattr(segment_rows, "read_base", lambda *a: rebuilds.append(1) or real(*a))
    with EmbeddedStore.open(store.path, create=False) as again:
        for request in asked:
            same(answer(again, request), reference(docs, request))
    assert rebuilds == [1]
    assert derived.manifest_state(cache).startswith("seg4:") and (cache / "mentions.npy").is_file()


def test_writes_extend_segments_and_replacements_are_never_answered_stale(world, monkeypatch):
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(300), centre)}
    store.write(list(docs.values()))
    asked = requests(centre, rng)
    same(answer(store, asked[0]), reference(docs, asked[0]))
    rebuilds = []
    real = segment_rows.read_base
    monkeypatch.setattr(segment_rows, "read_base", lambda *a: rebuilds.append(1) or real(*a))
    for step in range(20):  # new passages, and replacements of old ones (same id, new vectors)
        ids = list(range(300 + 5 * step, 305 + 5 * step)) + [int(i) for i in rng.integers(0, 300, 3)]
        new = make_docs(rng, ids, centre)
        store.write(new)
        docs.update({d.passage.id: d for d in new})
        for request in asked[step % 4 :: 4]:
            same(answer(store, request), reference(docs, request))
    assert rebuilds == []  # every write was added as a tail, nothing was rebuilt
    tails = sorted(p.name for p in (store.path / CACHE_DIR).glob("tail-*"))
    listed = json.loads((store.path / CACHE_DIR / segments.LIST).read_text())["tails"]
    assert tails == sorted(t["name"] for t in listed) and 0 < len(tails) <= segments.MAX_TAILS
    # a new process loads base + tails from disk and gives the same answers without a rebuild
    with EmbeddedStore.open(store.path, create=False) as again:
        for request in asked:
            same(answer(again, request), reference(docs, request))
    assert rebuilds == []


def test_a_reused_rowid_leads_to_a_rebuild_not_a_stale_answer(world):
    """nerindex 0.2.0 lets SQLite pick rowids: after the last passage is deleted, the next one
    gets its rowid again. The counts no longer add up, and the segments are rebuilt."""
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(50), centre)}
    store.write(list(docs.values()))
    asked = requests(centre, rng)
    same(answer(store, asked[2]), reference(docs, asked[2]))
    conn = sqlite3.connect(store.path / DB_NAME)
    conn.execute("PRAGMA foreign_keys=ON")
    last = list(docs)[-1]
    (rowid,) = conn.execute("SELECT rowid FROM passages WHERE id = ?", (last,)).fetchone()
    conn.execute("DELETE FROM passages WHERE rowid = ?", (rowid,))
    (new,) = make_docs(rng, [49], centre)
    conn.execute("INSERT INTO passages(id, text, fields) VALUES (?, ?, ?)",
                 (new.passage.id, new.passage.text, json.dumps(new.passage.fields)))
    (reused,) = conn.execute("SELECT rowid FROM passages WHERE id = ?", (last,)).fetchone()
    assert reused == rowid
    conn.execute("INSERT INTO passage_vectors(rowid, vector) VALUES (?, ?)", (reused, new.vector.tobytes()))
    span_row = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM spans").fetchone()[0]
    for s in new.spans:  # what 0.2.0 did: spans get the lowest free rowids above the max
        cur = conn.execute("INSERT INTO spans(passage, start, end, score, labels) VALUES (?, ?, ?, ?, ?)",
                           (reused, s.start, s.end, s.score, json.dumps(list(s.labels))))
        conn.execute("INSERT INTO span_vectors(rowid, vector) VALUES (?, ?)", (cur.lastrowid, s.vector.tobytes()))
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    conn.commit()
    conn.close()
    assert span_row >= 0
    docs[last] = new
    for request in asked:
        same(answer(store, request), reference(docs, request))


def test_a_passage_deleted_without_foreign_keys_takes_its_spans_with_it(world):
    """A store audit: the sqlite3 shell's default (foreign keys off) skipped the cascade, and the
    deleted passage's spans still ranked (a top-5 search gave 3 hits, and a wrong total)."""
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(50), centre)}
    store.write(list(docs.values()))
    asked = requests(centre, rng)
    same(answer(store, asked[2]), reference(docs, asked[2]))
    conn = sqlite3.connect(store.path / DB_NAME)  # foreign keys off, as the shell has them
    for pid in list(docs)[:10]:
        conn.execute("DELETE FROM passages WHERE id = ?", (pid,))
        del docs[pid]
    conn.commit()
    assert conn.execute("SELECT COUNT(*) FROM spans WHERE passage NOT IN (SELECT rowid FROM passages)").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(*) FROM span_vectors WHERE rowid NOT IN (SELECT rowid FROM spans)").fetchone() == (0,)
    conn.close()
    for request in asked:
        same(answer(store, request), reference(docs, request))


def test_a_passage_updated_by_hand_is_refused_with_the_way_to_change_it(world):
    """A store audit: an UPDATE of a passage's fields or text in the sqlite3 shell left its filter
    rows, words and spans' offsets as they were: a filter on the new value found nothing, the old
    one found the passage, and marks fell inside words. nerindex never updates a passage row."""
    store, rng, centre = world
    store.write(make_docs(rng, range(3), centre))
    conn = sqlite3.connect(store.path / DB_NAME)
    for change in ("text = 'Other words.'", "fields = '{}'", "id = 'renamed'"):
        with pytest.raises(sqlite3.IntegrityError, match="--reindex-existing"):
            conn.execute(f"UPDATE passages SET {change}")
    # nor a span or a vector (the stale-answer audit, round 30): a span's labels changed by hand
    # showed once the segments were made anew, while the filters kept the old ones
    for table, change in (("spans", "labels = '[\"river\"]'"), ("spans", "start = start + 1"), ("spans", "mention = 0"),
                          ("span_vectors", "vector = x'00'"), ("passage_vectors", "vector = x'00'")):
        with pytest.raises(sqlite3.IntegrityError, match="--reindex-existing"):
            conn.execute(f"UPDATE {table} SET {change}")
    conn.close()
    assert store.counts().passages == 3


@pytest.mark.parametrize("candidates", [0.0, 0.5])
def test_a_large_all_is_the_exact_set_with_scores_within_epsilon(world, monkeypatch, candidates):
    """Past EXACT_ALL_SPANS matching spans on a big store, --all re-scores only the spans within ε
    of the threshold: the passages, their marked spans and the total are the exact ones; a span far
    above the threshold keeps its int8 score, within ε of the exact one (and ~0.003 in practice).
    With candidates among the spans, which passages have a mention past the threshold is exact too."""
    from indexer.stores import embedded

    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(600), centre, candidates)}
    store.write(list(docs.values()))
    monkeypatch.setattr(embedded, "EXACT_ALL_SPANS", 10)
    exhaustive = [r for r in requests(centre, rng) if r.exhaustive]
    for request in exhaustive:  # a small store: every score still exact
        same(answer(store, request), reference(docs, request))
    monkeypatch.setattr(embedded.ann, "MIN_ROWS", 100)  # a big store, as far as --all is concerned
    checked, estimated = 0, 0
    for request in exhaustive:
        got, want = answer(store, request), reference(docs, request)
        assert got[1] == want[1] and sorted(h[0] for h in got[0]) == sorted(h[0] for h in want[0])
        exact = {h[0]: h for h in want[0]}
        for pid, score, sims, by in got[0]:
            assert len(sims) == len(exact[pid][2])  # the same spans marked
            want_by = exact[pid][3]
            if (by is None) != (want_by is None) or (by is not None and by[1] != want_by[1]):
                # another best span, chosen on int8 scores: within their error of the exact best (base.Store.search)
                exact_sims = sorted((float(sp.vector @ request.vector) for sp in docs[pid].spans), reverse=True)
                assert exact_sims[0] - exact_sims[1] < 0.004
            elif by is not None:
                assert by[0] == pytest.approx(want_by[0], abs=0.004)  # an int8 score, as the hit's own
            assert score == pytest.approx(exact[pid][1], abs=segments.EPSILON)
            for got_sim, want_sim in zip(sims, exact[pid][2]):
                # re-scored where the int8 score is within ε of the threshold: sure to be where the
                # exact one is within ε less the int8 error (under 0.004, as asserted here)
                near = abs(want_sim - request.min_similarity) < segments.EPSILON - 0.004
                assert got_sim == pytest.approx(want_sim, abs=1e-5 if near else 0.004)
                estimated += abs(got_sim - want_sim) > 1e-5
        assert [h[1] for h in got[0]] == sorted((h[1] for h in got[0]), reverse=True)
        checked += len(got[0]) > 10
    assert checked >= 4 and estimated > 100  # the int8 scores were kept, not read again


def test_marked_spans_come_right_from_the_segments_through_tails_merges_and_reopening(tmp_path, monkeypatch):
    """Hits take each span's start, end and labels from the segments (not SQLite): check them
    against what was written, through many tails (merged past MAX_TAILS) and a new process's load."""
    monkeypatch.setattr(segments, "MAX_TAILS", 3)
    rng = np.random.default_rng(5)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    written: dict[str, set] = {}

    def batch(ids):
        docs = []
        for i in ids:
            text = f"w{i} alpha{i} beta{i} gamma{i} delta{i}"
            words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
            vecs = unit_rows(centre + rng.standard_normal((4, DIMS)) * 0.08)
            spans = tuple(EncodedSpan(*words[k], text[slice(*words[k])], 0.9, vecs[k], (f"l{k}", f"m{i % 7}"))
                          for k in range(4))
            docs.append(EncodedPassage(Passage(f"d{i}", text, {}), spans, vecs[0]))
            written[f"d{i}"] = {(s.start, s.end, s.text, s.labels, round(float(s.vector @ centre), 4)) for s in spans}
        return docs

    def check(store):
        hits = list(store.search(SearchRequest(centre, 0.3, exhaustive=True)))
        assert len(hits) == len(written)
        for h in hits:
            got = {(s.start, s.end, s.text, s.labels) for s in h.spans}
            assert got == {w[:4] for w in written[h.id] if w[4] >= 0.3}
        for min_rows in (ann.MIN_ROWS, 0):  # top-k by the scan, then through the ANN index
            monkeypatch.setattr(ann, "MIN_ROWS", min_rows)
            top = list(store.search(SearchRequest(centre, 0.3, limit=3)))
            assert len(top) == 3
            for h in top:
                assert {(s.start, s.end, s.text, s.labels) for s in h.spans} == {w[:4] for w in written[h.id] if w[4] >= 0.3}
        assert "spans" in store._ann._indexes  # the second search did go through the ANN index
        monkeypatch.undo()
        monkeypatch.setattr(segments, "MAX_TAILS", 3)

    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        for k in range(8):  # each write and search adds a tail: merged when there are more than 3
            store.write(batch(range(k * 10, k * 10 + 10)))
            check(store)
        store.write(batch(range(5)))  # replaced passages: new rows, same ids
        check(store)
    with EmbeddedStore.open(tmp_path / "s") as store:
        check(store)


@pytest.mark.parametrize("size", [0, 1, derived.CHUNK - 1, derived.CHUNK, 64 * derived.CHUNK + 5])
def test_file_crc_reads_the_whole_file_through_its_mapping(tmp_path, size):
    """The manifest's checksum is read through a mapping (so the file enters the page cache in 2 MB
    folios) and the mapping's pages are dropped every 64 chunks: every byte still counts, once."""
    data = np.random.default_rng(size).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    path = tmp_path / "f.npy"
    path.write_bytes(data)
    assert derived.file_crc(path)[0] == zlib.crc32(data)


def backup(store: EmbeddedStore, to: Path) -> None:
    """A consistent copy of store.sqlite (SQLite's online backup)."""
    src, dst = sqlite3.connect(store.path / DB_NAME), sqlite3.connect(to)
    src.backup(dst)
    src.close()
    dst.close()


def restore(folder: Path, copy: Path) -> None:
    """Put the copy back as store.sqlite, as a user restoring a backup would (the cache stays)."""
    for stale in folder.glob(DB_NAME + "*"):
        stale.unlink()
    shutil.copy(copy, folder / DB_NAME)


def lost_history_then_restore(store: EmbeddedStore, rng: np.random.Generator, centre: np.ndarray,
                              docs: dict[str, EncodedPassage], copy: Path) -> EncodedPassage:
    """Back up the store, replace one passage (a tail on disk), restore the backup and write one
    new passage with as many spans: it gets the rowids the lost tail holds other rows for, and the
    live rows add up to the store's counts either way. Returns the new passage."""
    backup(store, copy)
    replaced = next(d for d in docs.values() if len(d.spans) == 3)
    (again,) = make_docs(rng, [int(replaced.passage.id[1:])], centre)
    again = EncodedPassage(again.passage, tuple(EncodedSpan(0, 7, "Passage", 0.9, v, ("l0",))
                                                for v in unit_rows(rng.standard_normal((3, DIMS)))), again.vector)
    store.write([again])
    store.prepare()  # saves the tail (and the ANN index, where there is one) made in the history to be lost
    store.close()
    restore(store.path, copy)
    fresh = unit_rows(rng.standard_normal((3, DIMS)))
    new = EncodedPassage(Passage("restored-new", "Passage after the restore.", {"part": "1"}),
                         tuple(EncodedSpan(0, 7, "Passage", 0.9, v, ("l1",)) for v in fresh), fresh[0])
    with EmbeddedStore.open(store.path, create=False) as restored:
        restored.write([new])
    return new


def test_a_store_restored_from_a_backup_and_written_again_is_not_answered_from_the_lost_history(world, tmp_path):
    """The segments saved after the backup was taken hold other rows under the rowids the restored
    store gives its next write (found by an audit: the new passage was missing from its answers)."""
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(80), centre)}
    store.write(list(docs.values()))
    every = SearchRequest(centre, 0.5, exhaustive=True)
    same(answer(store, every), reference(docs, every))  # the base segment is saved
    new = lost_history_then_restore(store, rng, centre, docs, tmp_path / "backup.sqlite")
    docs[new.passage.id] = new
    with EmbeddedStore.open(store.path, create=False) as restored:
        for vector in [s.vector for s in new.spans] + [centre]:
            for request in (SearchRequest(vector, 0.5, limit=5), SearchRequest(vector, 0.3, exhaustive=True)):
                same(answer(restored, request), reference(docs, request))


def test_a_tail_of_the_lost_history_is_delisted_so_that_later_tails_are_saved(world, tmp_path, caplog):
    """The stale-answer audit (round 30): after a restore the lost history's tail stayed listed, so
    no process saw its own chain on disk and none saved a tail again: every search warned of it,
    and every process read every row written since the backup from SQLite."""
    import logging

    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(80), centre)}
    store.write(list(docs.values()))
    every = SearchRequest(centre, 0.5, exhaustive=True)
    answer(store, every)  # the base segment is saved
    cache = store.path / CACHE_DIR
    new = lost_history_then_restore(store, rng, centre, docs, tmp_path / "backup.sqlite")
    docs[new.passage.id] = new
    (lost,) = [e["name"] for e in json.loads((cache / segments.LIST).read_text())["tails"]]
    with EmbeddedStore.open(store.path, create=False) as restored:
        answer(restored, every)  # loads the base, refuses the lost tail, saves its own
    listed = [e["name"] for e in json.loads((cache / segments.LIST).read_text())["tails"]]
    assert lost not in listed and listed  # the restored store's write has a tail of its own
    more = {d.passage.id: d for d in make_docs(rng, range(200, 205), centre)}
    docs.update(more)
    caplog.clear()
    with caplog.at_level(logging.INFO), EmbeddedStore.open(store.path, create=False) as restored:
        restored.write(list(more.values()))
        same(answer(restored, every), reference(docs, every))
    assert "made after a write" not in caplog.text
    assert len(json.loads((cache / segments.LIST).read_text())["tails"]) == len(listed) + 1


def test_an_orphan_tail_folder_is_removed_at_the_next_tail_save(tmp_path):
    """A process that lost the race to save its tail, or was killed saving it, left a tail folder
    no list names; it stayed until the next base rebuild (2.1 MB in a 10 MB cache in the audit).
    The next tail save removes such folders once they are older than a save could be."""
    import os
    import time

    rng = np.random.default_rng(3)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    request = SearchRequest(centre, 0.3)
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write(make_docs(rng, range(0, 50), centre))
        answer(store, request)  # the base segment
        cache = tmp_path / "s" / CACHE_DIR
        old, young = cache / "tail-0123456789ab", cache / "tail-ba9876543210"
        for folder in (old, young):
            folder.mkdir()
            (folder / "spans.npy").write_bytes(b"left over")
        hour_ago = time.time() - 3600
        os.utime(old, (hour_ago, hour_ago))
        store.write(make_docs(rng, range(50, 60), centre))
        answer(store, request)  # a tail, saved
    listed = {e["name"] for e in json.loads((cache / segments.LIST).read_text())["tails"]}
    assert listed and not old.exists() and young.exists()


def test_tails_are_saved_again_after_they_are_merged(world, monkeypatch):
    """An audit: once the tails were merged (past MAX_TAILS), no tail was ever saved again (the
    list on disk was compared with the merged, empty chain), so every new process read what was
    written since from SQLite. Now a new process finds every write on disk."""
    monkeypatch.setattr(segments, "MAX_TAILS", 3)
    store, rng, centre = world
    docs = {d.passage.id: d for d in make_docs(rng, range(100), centre)}
    store.write(list(docs.values()))
    asked = requests(centre, rng)
    same(answer(store, asked[0]), reference(docs, asked[0]))  # the base segment is saved
    for step in range(8):  # each write a tail, merged twice over
        new = make_docs(rng, range(100 + 5 * step, 105 + 5 * step), centre)
        store.write(new)
        docs.update({d.passage.id: d for d in new})
        same(answer(store, asked[step % 4]), reference(docs, asked[step % 4]))
    deltas = []
    real = segment_rows.read_delta
    monkeypatch.setattr(segment_rows, "read_delta", lambda *a: deltas.append(real(*a)[0]) or real(*a))
    with EmbeddedStore.open(store.path, create=False) as again:
        for request in asked:
            same(answer(again, request), reference(docs, request))
    assert deltas and all(tail is None for tail in deltas)  # nothing written since the saved chain


def test_a_file_saved_again_between_its_check_and_its_load_is_not_used(tmp_path, monkeypatch, caplog):
    """A store audit: a file was checked through one open and loaded through another; a process
    saving the folder in between renamed a new file in, which was loaded unchecked (and two bases
    of equal counts paired one's rows with the other's vectors). It is now a rebuild."""
    version = StoreVersion("store-1", "g1")
    assert derived.save_arrays(tmp_path, version, {"a.npy": np.arange(4.0), "b.npy": np.ones(4)})
    real_load = np.load
    swapped = []

    def load_after_a_save(path, *args, **kwargs):
        if not swapped:  # another process renames its own a.npy in, after the check
            other = tmp_path / ".a.other.npy"
            np.save(other, np.arange(4.0)[::-1].copy())
            other.replace(tmp_path / "a.npy")
            swapped.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(derived.np, "load", load_after_a_save)
    caplog.set_level(logging.INFO, logger="indexer.stores.derived")
    assert derived.load_arrays(tmp_path, version, ("a.npy", "b.npy")) is None
    assert swapped and "saved again while it was read" in caplog.text
    monkeypatch.setattr(derived.np, "load", real_load)
    assert derived.load_arrays(tmp_path, version, ("a.npy", "b.npy")) is None  # the new a.npy fails its checksum
    assert derived.save_arrays(tmp_path, version, {"a.npy": np.arange(4.0), "b.npy": np.ones(4)})
    assert derived.load_arrays(tmp_path, version, ("a.npy", "b.npy"))["a.npy"].tolist() == [0.0, 1.0, 2.0, 3.0]
