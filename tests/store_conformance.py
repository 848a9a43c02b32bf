"""One conformance suite for every store backend (Haystack's pattern).

A backend's test module subclasses :class:`StoreConformance` and supplies a ``store`` fixture: an
empty store for the ``stamp`` fixture's model. Vectors are synthetic 8-dimensional unit vectors
chosen so every expected answer can be worked out by hand from the table below.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from indexer.errors import ModelMismatchError, SearchError
from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores.base import ModelStamp, SearchRequest
from indexer.stores.filter_rules import Filters

DIMS = 8


def unit(*weights: float) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


# Axis 0 = "dinosaur", axis 1 = "politician", axis 2 = "river"; the rest is noise.
DINO = unit(1)
POL = unit(0, 1)
RIVER = unit(0, 0, 1)


def span(text: str, word: str, vector: np.ndarray, labels: tuple[str, ...] = ()) -> EncodedSpan:
    start = text.index(word)
    return EncodedSpan(start, start + len(word), word, 0.9, vector, labels)


def doc(pid: str, text: str, spans: list[tuple[str, np.ndarray]], **fields: object) -> EncodedPassage:
    passage = Passage(pid, text, dict(fields))
    return EncodedPassage(
        passage,
        tuple(span(text, w, v, ("label-" + w.lower(),)) for w, v in spans),
        unit(1, 1, 1),
    )


def corpus() -> list[EncodedPassage]:
    return [
        # best span cos with DINO: 1.0
        doc("p1", "Tyrannosaurus hunted in Montana.", [("Tyrannosaurus", DINO), ("Montana", unit(0.2, 0, 1))], lang="en", year=2020),
        # cos(DINO, unit(0.8, 0.6)) = 0.8
        doc("p2", "Stegosaurus and Obama walked along the Nile.", [("Stegosaurus", unit(0.8, 0.6)), ("Obama", POL), ("Nile", RIVER)], lang="en", year=2021),
        # cos(DINO, unit(0.6, 0.8)) = 0.6
        doc("p3", "Merkel met Triceratops fans.", [("Merkel", POL), ("Triceratops", unit(0.6, 0.8))], lang="de", year=2020),
        doc("p4", "The Danube flows east.", [("Danube", RIVER)], lang="de", year=2019),
        doc("p5", "Nothing to see here.", [], lang="en", year=2019),
    ]


def hybrid_corpus() -> list[EncodedPassage]:
    """Passages whose span and passage similarities to DINO pull the ranking in opposite ways."""
    out = []
    for pid, text, span_vec, passage_vec in (
        # best span cos 0.9, passage cos 0.0
        ("h1", "Velociraptor tracks near a quarry.", unit(0.9, 0, 0.4359), unit(0, 0, 0, 1)),
        # best span cos 0.8, passage cos 1.0
        ("h2", "Allosaurus bones in a dinosaur museum.", unit(0.8, 0.6), DINO),
        # no span near DINO (cos 0.0), passage cos 1.0: never a hit, whatever λ
        ("h3", "Palaeontologists met Merkel.", POL, DINO),
    ):
        word = text.split()[0] if pid != "h3" else "Merkel"
        out.append(EncodedPassage(Passage(pid, text, {"lang": "en"}), (span(text, word, span_vec),), passage_vec))
    return out


def candidate_corpus() -> list[EncodedPassage]:
    """Mentions and candidates (``mention=False``, spans only a candidate head proposed) whose
    top-k and ``--all`` answers differ (the search semantics of ``indexer.stores.base.Store``)."""
    rows = (
        # a candidate at cos 1.0, a mention at 0.5
        ("c1", "Triceratops skulls and fossils.", [("Triceratops", DINO, False), ("fossils", unit(0.5, 0.866), True)]),
        # a candidate at 0.95 and nothing else
        ("c2", "A Velociraptor claw.", [("Velociraptor", unit(0.95, 0.3122), False)]),
        # a mention at 0.9; its passage vector is DINO's (hybrid scoring lifts it)
        ("c3", "Allosaurus was found.", [("Allosaurus", unit(0.9, 0.4359), True)]),
        # a candidate at 0.7, a mention at 0.2
        ("c4", "Dinosaur books by Smith.", [("Dinosaur", unit(0.7, 0.7141), False), ("Smith", unit(0.2, 0.9798), True)]),
    )
    return [
        EncodedPassage(
            Passage(pid, text, {"lang": "en"}),
            tuple(replace(span(text, w, v, ("label-" + w.lower(),)), mention=m) for w, v, m in spans),
            DINO if pid == "c3" else unit(0, 0, 0, 1),
        )
        for pid, text, spans in rows
    ]


CROWD = 250  # mentions in one passage: more than one Elasticsearch response carries per hit (100), even half of them


def crowded_passage() -> EncodedPassage:
    """One passage naming ``CROWD`` dinosaurs, each a mention closer to DINO than the next (cos from
    0.999998 down to 0.895), every other one labelled ``label-even``, and one candidate closest of
    all (DINO itself: strictly closer, so a search that drops candidates after picking each
    passage's best span loses the passage, as Elasticsearch's follow-up for the marks did)."""
    words = [f"Saurus{i}" for i in range(CROWD)]
    text = ", ".join(words) + " and Raptor."
    spans = []
    for i, word in enumerate(words):
        start = text.index(word + ",") if i < CROWD - 1 else text.index(word + " ")
        labels = ("label-even",) if i % 2 == 0 else ()
        spans.append(EncodedSpan(start, start + len(word), word, 0.9, unit(1, 0.002 * (i + 1)), labels))
    raptor = text.index("Raptor")
    spans.append(EncodedSpan(raptor, raptor + 6, "Raptor", 0.9, DINO, ("label-even",), mention=False))
    return EncodedPassage(Passage("crowd", text, {"lang": "en"}), tuple(spans), unit(1, 1, 1))


@pytest.fixture
def stamp() -> ModelStamp:
    return ModelStamp(id="test-model", version="1", dims=DIMS, checksum="c" * 64)


class StoreConformance:
    """Behaviours every backend must share (the search semantics of indexer.stores.base)."""

    @pytest.fixture
    def loaded(self, store, stamp):
        store.check_model(stamp)
        outcomes = store.write(corpus())
        assert [o.ok for o in outcomes] == [True] * 5
        return store

    def search(self, store, vector, threshold=0.5, filters=None, **kw):
        if kw.get("exhaustive"):
            self.require_exhaustive(store)
        request = SearchRequest(vector=vector, min_similarity=threshold, filters=Filters.of(filters), **kw)
        return list(store.search(request))

    def require_exhaustive(self, store) -> None:
        """Skip (saying why) where this backend cannot run the exhaustive search; a no-op here."""

    def test_empty_store_counts_zero(self, store, stamp):
        store.check_model(stamp)
        assert store.counts().passages == 0

    def test_write_counts(self, loaded):
        counts = loaded.counts()
        assert (counts.passages, counts.spans) == (5, 8)

    def test_ranked_by_best_span_above_threshold(self, loaded):
        hits = self.search(loaded, DINO, threshold=0.5)
        assert [h.id for h in hits] == ["p1", "p2", "p3"]
        assert [round(h.score, 4) for h in hits] == [1.0, 0.8, 0.6]

    def test_threshold_excludes(self, loaded):
        hits = self.search(loaded, DINO, threshold=0.7)
        assert [h.id for h in hits] == ["p1", "p2"]

    def test_matching_spans_only_and_best_first(self, loaded):
        hits = self.search(loaded, unit(1, 0, 1), threshold=0.5)
        # p1: Tyrannosaurus cos=0.7071, Montana cos=(0.2+1)/(sqrt(1.04)*sqrt(2))=0.8321
        p1 = next(h for h in hits if h.id == "p1")
        assert [s.text for s in p1.spans] == ["Montana", "Tyrannosaurus"]
        assert p1.score == pytest.approx(0.8321, abs=1e-3)
        for s in p1.spans:
            assert p1.text[s.start : s.end] == s.text

    def test_hit_shape(self, loaded):
        hit = self.search(loaded, DINO)[0]
        d = hit.to_dict()
        assert set(d) == {"id", "score", "text", "fields", "spans", "ranked_by"}
        assert d["fields"]["lang"] == "en"
        assert set(d["spans"][0]) == {"start", "end", "text", "similarity", "labels"}
        assert d["spans"][0]["labels"] == ["label-tyrannosaurus"]

    def test_limit(self, loaded):
        assert [h.id for h in self.search(loaded, DINO, limit=2)] == ["p1", "p2"]

    @pytest.mark.parametrize("weight", [0.0, 1.0])
    def test_tied_passages_keep_one_order_whatever_the_limit(self, store, stamp, weight):
        """A paging audit: Elasticsearch ranked ties by id among the passages it had fetched, so a
        top-2 and a top-3 began with different passages (and the embedded store, by insertion,
        with others again); a client paging by a growing limit saw two passages five times. Written
        in one request, the order of writing in both stores (Elasticsearch's merges may change it)."""
        names = self.write_ties(store, stamp)
        for limit in (1, 2, 3, 5, 12):
            assert [h.id for h in self.search(store, DINO, limit=limit, passage_weight=weight)] == names[:limit]

    def test_tied_passages_of_an_exhaustive_search_come_in_the_order_they_were_written(self, store, stamp):
        names = self.write_ties(store, stamp)
        assert [h.id for h in self.search(store, DINO, exhaustive=True)] == names

    @staticmethod
    def write_ties(store, stamp) -> list[str]:
        """Twelve passages of one text (equal scores), written in reverse order of their ids."""
        store.check_model(stamp)
        names = [f"{chr(ord('z') - i)}-{i}" for i in range(12)]
        store.write([doc(pid, "Triceratops grazed.", [("Triceratops", DINO)]) for pid in names])
        return names

    def test_exhaustive_returns_all_matches(self, loaded):
        hits = self.search(loaded, DINO, threshold=0.5, limit=1, exhaustive=True)
        assert [h.id for h in hits] == ["p1", "p2", "p3"]

    def test_metadata_filter(self, loaded):
        assert [h.id for h in self.search(loaded, DINO, filters={"lang": "de"})] == ["p3"]

    def test_metadata_filter_any_of_and_number_as_text(self, loaded):
        hits = self.search(loaded, POL, filters={"year": ["2021", "2019"]})
        assert [h.id for h in hits] == ["p2"]

    def test_span_label_filter_restricts_spans(self, loaded):
        # only spans labelled "label-nile" may match: p2 through the Nile, not p1 through Montana
        hits = self.search(loaded, RIVER, filters={"spans.labels": "label-nile"}, exhaustive=True)
        assert [h.id for h in hits] == ["p2"]
        assert [s.text for s in hits[0].spans] == ["Nile"]

    @pytest.mark.parametrize("exhaustive", [False, True])
    def test_every_mention_is_marked_however_many(self, store, stamp, exhaustive):
        """A passage with more mentions above the threshold than one Elasticsearch response
        carries per hit (100) is marked with all of them, best first (an audit: Elasticsearch
        kept the best 100 and said nothing)."""
        store.check_model(stamp)
        store.write([crowded_passage(), *corpus()])
        hits = self.search(store, DINO, threshold=0.5, limit=2, exhaustive=exhaustive)
        assert [h.id for h in hits][:2] == ["crowd", "p1"]
        marks = hits[0].spans
        assert [s.text for s in marks] == [f"Saurus{i}" for i in range(CROWD)]  # best first; the candidate is not marked
        assert all(hits[0].text[s.start : s.end] == s.text for s in marks)
        assert [s.text for s in hits[1].spans] == ["Tyrannosaurus"]

    def test_every_mention_a_span_filter_keeps_is_marked(self, store, stamp):
        store.check_model(stamp)
        store.write([crowded_passage()])
        hits = self.search(store, DINO, threshold=0.5, filters={"spans.labels": "label-even"}, exhaustive=True)
        assert [s.text for s in hits[0].spans] == [f"Saurus{i}" for i in range(0, CROWD, 2)]

    def test_span_text_filter(self, loaded):
        hits = self.search(loaded, RIVER, filters={"spans.text": ["Danube", "Montana"]}, exhaustive=True)
        assert [h.id for h in hits] == ["p4", "p1"]

    def test_unknown_span_filter_is_refused(self, loaded):
        with pytest.raises(SearchError, match="spans.vector"):
            self.search(loaded, RIVER, filters={"spans.vector": "x"})

    def test_none_means_the_field_is_absent(self, loaded):
        assert [h.id for h in self.search(loaded, DINO, filters={"nowhere": None})] == ["p1", "p2", "p3"]
        assert self.search(loaded, DINO, filters={"lang": None}) == []

    # --- one rule for requests (indexer.stores.filter_rules.Filters), refused when search is called ------

    @pytest.mark.parametrize("key", ["lang", "a-b", "_a", "A9", "meta.lang", "x" * 64])
    def test_filter_keys_every_backend_takes(self, loaded, key):
        expected = ["p3"] if key == "lang" else []
        assert [h.id for h in self.search(loaded, DINO, filters={key: "de"})] == expected

    @pytest.mark.parametrize("key", ["a b", ".a", "über", "a.", "a..b", "-a", "a*", "a'b", "", "x" * 65, "spans.score"])
    def test_filter_keys_every_backend_refuses(self, loaded, key):
        with pytest.raises(SearchError, match="filter field|span field"):
            loaded.search(SearchRequest(vector=DINO, min_similarity=0.5, filters=Filters.of({key: "x"})))

    @pytest.mark.parametrize("value", [[], {"gte": 2020}, [None], [["en"]], float("nan"), object()])
    def test_filter_values_every_backend_refuses(self, loaded, value):
        with pytest.raises(SearchError, match="'lang'"):
            loaded.search(SearchRequest(vector=DINO, min_similarity=0.5, filters=Filters.of({"lang": value})))

    def test_a_store_gets_checked_filters_only(self, loaded):
        with pytest.raises(TypeError, match="Filters"):
            SearchRequest(vector=DINO, min_similarity=0.5, filters={"lang": "de"})

    def test_a_text_without_words_is_refused(self, loaded):
        with pytest.raises(SearchError, match="no words"):
            loaded.search(SearchRequest(vector=DINO, min_similarity=0.5, text="?!"))

    @pytest.mark.parametrize("exhaustive", [False, True])
    @pytest.mark.parametrize("vector", [np.ones(3, dtype=np.float32), np.full(DIMS, np.nan, dtype=np.float32)])
    def test_a_bad_vector_raises_when_search_is_called_not_when_iterated(self, loaded, vector, exhaustive):
        with pytest.raises(SearchError, match="dims|not finite"):
            loaded.search(SearchRequest(vector=vector, min_similarity=0.5, exhaustive=exhaustive))

    @pytest.mark.parametrize("weight", [-0.5, float("nan")])
    def test_a_bad_passage_weight_is_refused(self, loaded, weight):
        with pytest.raises(SearchError, match="passage_weight"):
            loaded.search(SearchRequest(vector=DINO, min_similarity=0.5, passage_weight=weight))

    def test_text_restriction(self, loaded):
        hits = self.search(loaded, RIVER, text="Nile")
        assert [h.id for h in hits] == ["p2"]

    def test_text_restriction_all_words(self, loaded):
        assert self.search(loaded, RIVER, text="Danube west") == []
        assert [h.id for h in self.search(loaded, RIVER, text="danube EAST")] == ["p4"]

    def test_text_restriction_keeps_combining_marks_in_words(self, store, stamp):
        """An audit: the embedded store split a word at its combining marks, so a decomposed "São"
        found nothing and "मोदी" found a passage holding "म" and "द" in other words ("मेदा")."""
        store.check_model(stamp)
        store.write([doc("h1", "मोदी दिल्ली में हैं।", [("मोदी", RIVER)]), doc("h2", "वह दिल्ली में है, मेदा लो।", [("वह", RIVER)]),
                     doc("s1", "Sa\u0303o Paulo is big.", [("Paulo", RIVER)])])  # fmt: skip
        assert [h.id for h in self.search(store, RIVER, text="मोदी")] == ["h1"]
        assert [h.id for h in self.search(store, RIVER, text="Sa\u0303o")] == ["s1"]

    def test_the_pieces_of_one_written_word_are_found_next_to_each_other(self, store, stamp):
        """An audit: the embedded store split "U.S." and "don't" into words required anywhere, so
        "U.S." found "A U-boat s sank" and "S.S.R." passages holding no such word; Elasticsearch's
        analyzer keeps "U.S." whole and split "state-of-the-art" into terms found anywhere."""
        store.check_model(stamp)
        store.write([doc("us", "The U.S. Navy sailed west.", [("Navy", RIVER)]),
                     doc("boat", "A U-boat s sank near the Nile.", [("Nile", RIVER)]),
                     doc("art", "A state of the art boat.", [("boat", RIVER)]),
                     doc("hyphen", "Their state-of-the-art methods.", [("methods", RIVER)]),
                     doc("apart", "The art of the state is old.", [("state", RIVER)])])  # fmt: skip
        assert [h.id for h in self.search(store, RIVER, text="U.S.", limit=10)] == ["us"]
        assert {h.id for h in self.search(store, RIVER, text="state-of-the-art", limit=10)} == {"art", "hyphen"}
        assert {h.id for h in self.search(store, RIVER, text="state art", limit=10)} == {"art", "hyphen", "apart"}

    def test_emoji_are_no_words_in_either_store(self, store, stamp):
        """An audit: the embedded store took an emoji's variation selector (U+FE0F, a mark) for a
        word, so ``☀️`` matched any passage with an emoji written with one, while Elasticsearch
        made each emoji a required term, so "Messi 😀" found nothing there and Messi here."""
        store.check_model(stamp)
        store.write([doc("a", "Lionel Messi scored in Barcelona \u2764\ufe0f tonight.", [("Messi", RIVER)]),
                     doc("b", "Lionel Messi scored in Paris tonight.", [("Messi", RIVER)]),
                     doc("c", "Serena Williams won in London \U0001f600.", [("Serena", RIVER)])])  # fmt: skip
        for emoji in ("\U0001f600", "#\ufe0f\u20e3", "\u203c\ufe0f", "\u2049"):  # a symbol, a keycap, emoji punctuation
            assert {h.id for h in self.search(store, RIVER, text=f"Messi {emoji}")} == {"a", "b"}, emoji
        assert {h.id for h in self.search(store, RIVER, text="Messi \u2600\ufe0f Paris")} == {"b"}
        with pytest.raises(SearchError, match="no words"):
            self.search(store, RIVER, text="\u2600\ufe0f")

    def test_no_match(self, loaded):
        assert self.search(loaded, unit(0, 0, 0, 1)) == []

    def test_rewrite_is_idempotent(self, loaded):
        loaded.write(corpus()[:2])
        assert loaded.counts().passages == 5
        assert loaded.counts().spans == 8
        assert [h.id for h in self.search(loaded, DINO)] == ["p1", "p2", "p3"]

    def test_update_replaces_spans(self, loaded):
        loaded.write([doc("p4", "The Danube is no dinosaur.", [("Danube", DINO)], lang="de")])
        # Nile (cos 1.0) and Montana (cos 0.98) still match the river axis; the Danube no longer does
        assert [h.id for h in self.search(loaded, RIVER)] == ["p2", "p1"]
        assert [h.id for h in self.search(loaded, DINO, limit=1)][0] in {"p1", "p4"}
        assert loaded.counts().passages == 5

    def test_without_replace_a_stored_id_is_left_as_it_is(self, loaded):
        """``replace=False`` decides in the write itself: another writer may have stored the id
        after the pipeline looked it up (``Store.write``)."""
        outcomes = loaded.write(
            [doc("p4", "The Danube is no dinosaur.", [("Danube", DINO)]), doc("p6", "Nile crocodiles.", [("Nile", RIVER)])],
            replace=False,
        )
        assert [(o.id, o.ok, o.action) for o in outcomes] == [("p4", True, "skipped"), ("p6", True, "created")]
        hits = self.search(loaded, RIVER)
        assert {h.id for h in hits[:3]} == {"p2", "p4", "p6"} and hits[3].id == "p1"  # three at cos 1.0
        before = loaded.version()
        assert [o.action for o in loaded.write([doc("p4", "Other.", [])], replace=False)] == ["skipped"]
        assert loaded.version() == before  # nothing stored: the version, and so every cache, stays
        assert "p4" not in [h.id for h in self.search(loaded, DINO)]
        assert loaded.counts().passages == 6

    def test_delete_removes_passages_and_their_spans(self, loaded):
        before = loaded.version()
        assert loaded.delete(["p2", "zz", "p1", "p2"]) == ["p2", "p1"]  # stored ones, in the order given, once
        assert loaded.version() != before
        assert loaded.counts().passages == 3 and loaded.counts().spans == 3
        assert [h.id for h in self.search(loaded, DINO)] == ["p3"]
        assert [h.id for h in self.search(loaded, RIVER)] == ["p4"]  # Nile and Montana went with their passages
        assert loaded.existing_ids(["p1", "p2", "p3"]) == {"p3"}
        after = loaded.version()
        assert loaded.delete(["p1", "zz"]) == [] and loaded.version() == after  # nothing removed: no new version
        loaded.write(corpus()[:1])  # an id deleted can be written again
        assert [h.id for h in self.search(loaded, DINO)] == ["p1", "p3"]

    def test_stored_ids_lists_every_passage_once(self, loaded):
        assert sorted(loaded.stored_ids()) == ["p1", "p2", "p3", "p4", "p5"]
        loaded.delete(["p3"])
        loaded.write([doc("p6", "Nile crocodiles.", [("Nile", RIVER)])])
        assert sorted(loaded.stored_ids()) == ["p1", "p2", "p4", "p5", "p6"]

    def test_a_passage_whose_vectors_no_search_could_score_is_a_failed_outcome(self, loaded):
        """A store-parity audit: the embedded store took a span vector of length 2 (scored 1.6
        where Elasticsearch said 0.8) and one of the wrong size, after which every search failed."""
        text = "Rex here."
        bad = {"long": unit(1) * 2, "short": unit(1)[:4], "nan": np.full(DIMS, np.nan, np.float32)}
        docs = [EncodedPassage(Passage(k, text, {}), (EncodedSpan(0, 3, "Rex", 0.9, v, ()),), unit(1)) for k, v in bad.items()]
        docs.append(EncodedPassage(Passage("zero", text, {}), (EncodedSpan(0, 3, "Rex", 0.9, DINO, ()),), np.zeros(DIMS, np.float32)))
        docs.append(doc("fine", "Rex roamed.", [("Rex", DINO)]))
        outcomes = loaded.write(docs)
        assert [(o.id, o.ok) for o in outcomes] == [("long", False), ("short", False), ("nan", False), ("zero", False), ("fine", True)]
        assert "length 2, not 1" in outcomes[0].error and "passage vector is all zeros" in outcomes[3].error
        hits = self.search(loaded, DINO)  # searches go on; "fine" ties with p1 at 1.0
        assert {h.id for h in hits[:2]} == {"p1", "fine"} and [h.id for h in hits[2:]] == ["p2", "p3"]
        assert loaded.counts().passages == 6

    def test_an_empty_store_deletes_and_lists_nothing(self, store, stamp):
        assert store.delete(["p1"]) == [] and list(store.stored_ids()) == []

    def test_stored_records_give_the_text_and_the_metadata_as_written(self, store, stamp):
        store.check_model(stamp)
        store.write([doc("m1", "Nile crocodiles.", [("Nile", RIVER)], year=2001, big=2**64 + 1, tags=("a", "b"), meta={"x": 1.5})])
        assert store.stored_records(["m1", "zz"]) == {
            "m1": ("Nile crocodiles.", {"year": 2001, "big": 2**64 + 1, "tags": ["a", "b"], "meta": {"x": 1.5}})}

    def test_existing_ids(self, loaded):
        assert loaded.existing_ids(["p1", "zz", "p5"]) == {"p1", "p5"}

    def test_stored_texts(self, loaded):
        texts = {d.passage.id: d.passage.text for d in corpus()}
        assert loaded.stored_texts(["p1", "zz", "p5"]) == {"p1": texts["p1"], "p5": texts["p5"]}

    def test_model_guard(self, loaded, stamp):
        loaded.check_model(stamp)  # same model: fine
        other = ModelStamp(id="other", version="2", dims=DIMS, checksum="d" * 64)
        with pytest.raises(ModelMismatchError, match="other"):
            loaded.check_model(other)
        assert loaded.model().checksum == stamp.checksum

    def test_stored_settings_guard_writing_not_reading(self, store, stamp):
        tuned = replace(stamp, detection_threshold=0.08, span_decoding="nested", catalog="model")
        store.check_model(tuned)
        store.check_model(tuned)  # the same settings: fine
        other = replace(tuned, detection_threshold=0.2)
        with pytest.raises(ModelMismatchError, match=r"detection_threshold is 0\.08 in the store but 0\.2"):
            store.check_model(other)
        store.check_model(other, writing=False)  # searching is fine: same vector space
        assert store.model() == tuned

    def test_settings_missing_from_an_old_stamp_are_adopted_once(self, store, stamp, caplog):
        store.check_model(stamp)  # a 0.2.0 stamp: no stored settings
        tuned = replace(stamp, detection_threshold=0.08, max_span_width=8)
        with caplog.at_level(logging.WARNING):
            store.check_model(tuned)
            store.check_model(tuned)
        adopted = [r for r in caplog.records if "recording detection_threshold=0.08" in r.getMessage()]
        assert len(adopted) == 1 and "earlier nerindex" in adopted[0].getMessage()
        assert store.model().detection_threshold == 0.08 and store.model().max_span_width == 8
        with pytest.raises(ModelMismatchError, match="max_span_width is 8 in the store but 12"):
            store.check_model(replace(stamp, max_span_width=12))

    def test_version_changes_with_every_write_only(self, store, stamp):
        store.check_model(stamp)
        empty = store.version()
        assert store.version() == empty
        store.write(corpus()[:2])
        first = store.version()
        assert first != empty and first.identity == empty.identity
        self.search(store, DINO, exhaustive=True)
        assert store.counts().passages == 2 and store.version() == first  # reading changes nothing
        store.write(corpus()[:1])  # rewriting a stored passage is a change too
        assert store.version() not in (empty, first)

    # --- hybrid scoring: best span similarity + λ · passage similarity ---------------------------

    @pytest.fixture
    def hybrid(self, store, stamp):
        store.check_model(stamp)
        assert all(o.ok for o in store.write(hybrid_corpus()))
        return store

    def test_passage_weight_zero_ranks_by_span(self, hybrid):
        hits = self.search(hybrid, DINO, threshold=0.5, passage_weight=0.0)
        assert [h.id for h in hits] == ["h1", "h2"]
        assert [round(h.score, 3) for h in hits] == [0.9, 0.8]

    def test_passage_weight_reranks_and_adds_scores(self, hybrid):
        hits = self.search(hybrid, DINO, threshold=0.5, passage_weight=0.5)
        # h2: 0.8 + 0.5 · 1.0 = 1.3; h1: 0.9 + 0.5 · 0.0 = 0.9; h3 has no span over the threshold
        assert [h.id for h in hits] == ["h2", "h1"]
        assert [round(h.score, 3) for h in hits] == [1.3, 0.9]
        # spans keep their own similarity
        assert [round(s.similarity, 3) for s in hits[0].spans] == [0.8]

    def test_passage_weight_with_limit(self, hybrid):
        assert [h.id for h in self.search(hybrid, DINO, passage_weight=0.5, limit=1)] == ["h2"]

    def test_passage_weight_exhaustive(self, hybrid):
        hits = self.search(hybrid, DINO, passage_weight=0.5, limit=1, exhaustive=True)
        assert [h.id for h in hits] == ["h2", "h1"]

    def test_passage_weight_keeps_filters_and_threshold(self, hybrid):
        assert [h.id for h in self.search(hybrid, DINO, threshold=0.85, passage_weight=2.0)] == ["h1"]
        assert self.search(hybrid, DINO, passage_weight=2.0, filters={"lang": "de"}) == []
        assert [h.id for h in self.search(hybrid, DINO, passage_weight=2.0, text="quarry")] == ["h1"]

    def test_passage_weight_finds_a_passage_far_down_by_its_best_span(self, store, stamp):
        """Hybrid scoring ranks all passages, not only those with the best spans: 150 passages
        whose spans are close to DINO and passage vectors far, and one whose span is the weakest
        but whose passage vector is DINO itself (found by an audit: Elasticsearch ranked only
        the 100 passages with the best spans, so the last one was missing from the top 5)."""
        store.check_model(stamp)
        rng = np.random.default_rng(1)
        docs = []
        for i in range(150):
            near = 0.95 - 0.004 * i  # best-span cosines 0.95 down to 0.35; passages all but orthogonal to DINO
            docs.append(self._hybrid_doc(f"n{i:03d}", unit(near, (1 - near**2) ** 0.5), unit(0, *rng.uniform(0.1, 1, 7))))
        docs.append(self._hybrid_doc("far", unit(0.3, (1 - 0.09) ** 0.5), DINO))  # 0.3 + 2 · 1.0
        assert all(o.ok for o in store.write(docs))
        hits = self.search(store, DINO, threshold=0.2, passage_weight=2.0, limit=5)
        assert [h.id for h in hits] == ["far", "n000", "n001", "n002", "n003"]
        assert hits[0].score == pytest.approx(2.3, abs=0.01)

    @staticmethod
    def _hybrid_doc(pid: str, span_vec: np.ndarray, passage_vec: np.ndarray) -> EncodedPassage:
        text = f"Passage {pid} names a creature."
        return EncodedPassage(Passage(pid, text, {}), (span(text, "creature", span_vec, ()),), passage_vec)

    MIXED = [("y1", {"year": 2001}), ("y2", {"year": 2001.5}), ("y3", {"year": "2001"}), ("y4", {"year": 2001.0}),
             ("f1", {"flag": True}), ("n1", {"n": 1}), ("r1", {"r": 0.5}), ("r2", {"r": 1700000001})]

    @pytest.mark.parametrize("where, expected", [
        ({"year": 2001}, ["y1", "y3", "y4"]), ({"year": "2001"}, ["y1", "y3", "y4"]), ({"year": 2001.5}, ["y2"]),
        ({"flag": True}, ["f1"]), ({"flag": "true"}, ["f1"]), ({"flag": 1}, []), ({"n": True}, []), ({"n": 1}, ["n1"]),
        ({"r": 1700000001}, ["r2"]), ({"r": 1700000000}, []),
    ])
    def test_metadata_filters_follow_one_rule_whatever_types_a_field_holds(self, store, stamp, where, expected):
        """A field whose values have several types (found by an audit: Elasticsearch filtered by
        the type it guessed from the first passage, so 2001.5 matched year=2001 and large
        integers merged in a float field): every backend answers by the embedded store's rule."""
        store.check_model(stamp)
        docs = [doc(pid, "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields) for pid, fields in self.MIXED]
        assert all(o.ok for o in store.write(docs))
        hits = self.search(store, DINO, threshold=0.5, limit=50, filters=where)
        assert sorted(h.id for h in hits) == expected

    SPELLED = [("c007", {"code": "007"}), ("c7", {"code": "7"}), ("c70", {"code": "7.0"}), ("cn", {"code": 7}),
               ("v110", {"version": "1.10"}), ("v11", {"version": "1.1"}), ("vn", {"version": 1.1}),
               ("bT", {"flag": "True"}), ("bt", {"flag": "true"}), ("bb", {"flag": True})]

    @pytest.mark.parametrize("where, expected", [
        ({"code": "007"}, ["c007", "cn"]), ({"code": "7"}, ["c7", "cn"]), ({"code": "7.0"}, ["c70", "cn"]),
        ({"code": 7}, ["c7", "cn"]), ({"version": "1.10"}, ["v110", "vn"]), ({"version": "1.1"}, ["v11", "vn"]),
        ({"flag": "True"}, ["bT", "bb"]), ({"flag": "true"}, ["bb", "bt"]), ({"flag": True}, ["bb"]),
    ])
    def test_a_text_matches_the_same_string_and_the_number_or_boolean_it_spells(self, store, stamp, where, expected):
        """An audit: a filter text that spells a number matched other *strings* that spell it
        ("007" found "7" and "7.0", "1.10" found "1.1", "True" found "true"), one way only."""
        store.check_model(stamp)
        docs = [doc(pid, "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields) for pid, fields in self.SPELLED]
        assert all(o.ok for o in store.write(docs))
        assert sorted(h.id for h in self.search(store, DINO, threshold=0.5, limit=50, filters=where)) == expected

    WHOLE = [("i1", {"f": 1}), ("r1", {"f": 1.0}), ("near", {"f": 1.0000000000000002}), ("i2001", {"y": 2001}),
             ("r2001", {"y": 2001.0}), ("b992", {"n": 2**53}), ("b993", {"n": 2**53 + 1}), ("rb992", {"n": float(2**53)}),
             ("i63", {"m": 2**63 - 1}), ("r63", {"m": 2**63})]

    @pytest.mark.parametrize("where, expected", [
        ({"f": 1}, ["i1", "near", "r1"]), ({"f": 1.0000000000000002}, ["i1", "near", "r1"]),
        ({"f": "0.9999999999999999"}, ["i1", "near", "r1"]), ({"y": "2000.9999999999998"}, ["i2001", "r2001"]),
        ({"y": 2001}, ["i2001", "r2001"]),
        # the review: an integer filter is exact, as SQLite keeps 64-bit integers (2**53 + 1 found 2**53)
        ({"n": 2**53 + 1}, ["b993"]), ({"n": 2**53}, ["b992"]), ({"n": str(2**53 + 1)}, ["b993"]),
        # a parity audit: an integer found a real whose 15 digits spell another integer, one way only
        # (2**53 found the real 2**53, which SQLite writes 9.00719925474099e15; the real found no 2**53)
        ({"n": float(2**53)}, ["rb992"]), ({"n": 9007199254740990}, ["rb992"]), ({"n": "9007199254740992.0"}, ["rb992"]),
        ({"m": 2**63 - 1}, ["i63"]), ({"m": 2**63}, ["r63"]), ({"m": float(2**63)}, ["r63"]),
    ])
    def test_a_real_sqlite_writes_as_a_whole_number_finds_the_stored_integer(self, store, stamp, where, expected):
        """1 and 1.0000000000000002 are one value to a filter (SQLite writes the real "1.0"); an
        audit: the filter 1.0000000000000002 found the stored reals and not the integer 1."""
        store.check_model(stamp)
        docs = [doc(pid, "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields) for pid, fields in self.WHOLE]
        assert all(o.ok for o in store.write(docs))
        assert sorted(h.id for h in self.search(store, DINO, threshold=0.5, limit=50, filters=where)) == expected

    @pytest.mark.parametrize("where, expected", [
        ({"meta": "en"}, []), ({"meta": 1}, []), ({"deep": 1}, []), ({"deep": "[1,2]"}, []), ({"deep": 3}, ["o1"]),
        ({"objs": "a"}, []), ({"lang": "en"}, ["o1", "o2"]),
    ])
    def test_an_object_value_matches_no_filter_value(self, store, stamp, where, expected):
        """Objects (and lists inside lists) hold no value a filter compares (an audit: the
        embedded store matched an object's member values, Elasticsearch nothing)."""
        store.check_model(stamp)
        rows = [("o1", {"meta": {"lang": "en", "n": 1}, "deep": [[1, 2], 3], "objs": [{"k": "a"}], "lang": "en"}),
                ("o2", {"lang": "en"})]
        docs = [doc(pid, "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields) for pid, fields in rows]
        assert all(o.ok for o in store.write(docs))
        assert sorted(h.id for h in self.search(store, DINO, threshold=0.5, limit=50, filters=where)) == expected

    def test_a_field_is_absent_when_it_holds_no_value_a_filter_compares(self, store, stamp):
        """Missing, null, [], [null] and an object are absent; "" and [null, "a"] are not (an
        audit: Elasticsearch took [] and [null] for absent, the embedded store missing and null only)."""
        store.check_model(stamp)
        rows = [("missing", {}), ("null", {"tags": None}), ("empty", {"tags": []}), ("nulls", {"tags": [None]}),
                ("blank", {"tags": ""}), ("some", {"tags": [None, "a"]}), ("obj", {"meta": {"k": "a"}})]
        docs = [doc(pid, "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields) for pid, fields in rows]
        assert all(o.ok for o in store.write(docs))
        absent = [h.id for h in self.search(store, DINO, threshold=0.5, limit=50, filters={"tags": None})]
        assert sorted(absent) == ["empty", "missing", "null", "nulls", "obj"]
        absent = [h.id for h in self.search(store, DINO, threshold=0.5, limit=50, filters={"meta": None})]
        assert sorted(absent) == ["blank", "empty", "missing", "null", "nulls", "obj", "some"]

    ODD = [("m1", {"mixed": [1, "1", True, 1.0]}), ("b1", {"flag": True}), ("b2", {"flag": 1}), ("s1", {"x": "s"}),
           ("s2", {"x": {"k": 1}}), ("d1", {"meta.lang": "en"}), ("d2", {"meta": "de", "meta.lang": "fr"}),
           ("d3", {"src.name": "a"})]
    EVERY_ODD = sorted(pid for pid, _ in ODD)

    @pytest.mark.parametrize("where, expected", [
        ({"mixed": 1}, ["m1"]), ({"mixed": True}, ["m1"]), ({"flag": True}, ["b1"]), ({"flag": 1}, ["b2"]),
        ({"x": "s"}, ["s1"]), ({"x": None}, ["b1", "b2", "d1", "d2", "d3", "m1", "s2"]), ({"meta.lang": "en"}, ["d1"]),
        ({"meta": "de"}, ["d2"]), ({"meta.lang": ["en", "fr"]}, ["d1", "d2"]),
        ({"src": None}, EVERY_ODD), ({"src.name": None}, [p for p in EVERY_ODD if p != "d3"]),
    ])
    def test_any_metadata_is_stored_and_filtered(self, store, stamp, where, expected):
        """Values of several types under one key, a key holding an object in one passage and a
        string in another, dotted keys (an audit: Elasticsearch refused such passages, whose
        metadata conflicted with the field types it had guessed, or held a dotted key)."""
        store.check_model(stamp)
        docs = [doc(pid, "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields) for pid, fields in self.ODD]
        outcomes = store.write(docs)
        assert [o.ok for o in outcomes] == [True] * len(docs), [o.error for o in outcomes if not o.ok]
        hits = self.search(store, DINO, threshold=0.5, limit=50, filters=where)
        assert sorted(h.id for h in hits) == expected
        assert {h.id: h.fields for h in self.search(store, DINO, threshold=0.5, limit=50)} == dict(self.ODD)

    def test_metadata_keys_no_filter_can_name_are_stored(self, store, stamp):
        """Elasticsearch refused a passage with a key "" or " " (found while fixing the audit)."""
        store.check_model(stamp)
        fields = {"": "e", " ": "w", "a b": 1, "lang": "en"}
        outcomes = store.write([doc("k1", "Tyrannosaurus was here.", [("Tyrannosaurus", DINO)], **fields)])
        assert [o.ok for o in outcomes] == [True], [o.error for o in outcomes]
        hits = self.search(store, DINO, threshold=0.5, filters={"lang": "en"})
        assert [(h.id, h.fields) for h in hits] == [("k1", fields)]

    # --- query-time feedback: the stored passage vectors of given ids ----------------------------

    def test_passage_vectors_in_the_order_given(self, hybrid):
        rows = hybrid.passage_vectors(["h2", "missing", "h1", "h2"])
        assert rows.shape == (3, DIMS) and rows.dtype == np.float32
        assert rows[0] == pytest.approx(DINO) and rows[2] == pytest.approx(DINO)
        assert rows[1] == pytest.approx(unit(0, 0, 0, 1))
        assert hybrid.passage_vectors([]).shape == (0, DIMS)

    def test_feedback_search_is_a_search_with_the_moved_vector(self, loaded):
        from indexer.feedback import Feedback, feedback_vector, search_with_feedback

        # the top 2 for DINO are p1 and p2, both with passage vector unit(1, 1, 1)
        moved = feedback_vector(DINO, np.stack([unit(1, 1, 1)] * 2), 1.0)
        request = SearchRequest(vector=DINO, min_similarity=0.5)
        hits = list(search_with_feedback(loaded, request, Feedback(weight=1.0, top=2)))
        want = self.search(loaded, moved, threshold=0.5)
        # moved towards (1, 1, 1), Stegosaurus (0.8, 0.6) now beats Tyrannosaurus (1, 0): 0.905 vs 0.888
        assert [h.id for h in hits] == [h.id for h in want] == ["p2", "p1", "p3"]
        assert [h.score for h in hits] == pytest.approx([h.score for h in want], abs=1e-5)
        assert [round(h.score, 3) for h in hits] == [0.905, 0.888, 0.793]
        assert [h.id for h in self.search(loaded, DINO, threshold=0.5)] == ["p1", "p2", "p3"]

    # --- candidates rank, mentions are marked and make the --all answer ----------------------------

    @pytest.fixture
    def candidates(self, store, stamp):
        store.check_model(stamp)
        assert all(o.ok for o in store.write(candidate_corpus()))
        return store

    @staticmethod
    def marks(hits):
        return {h.id: [s.text for s in h.spans] for h in hits}

    @staticmethod
    def rankers(hits):
        """The candidate that ranked each hit (``Hit.ranked_by``), None where a mention did."""
        for h in hits:
            if h.ranked_by is not None:
                assert h.text[h.ranked_by.start : h.ranked_by.end] == h.ranked_by.text
                assert h.ranked_by.labels == ("label-" + h.ranked_by.text.lower(),)
        return {h.id: h.ranked_by and (h.ranked_by.text, round(h.ranked_by.similarity, 3)) for h in hits}

    def test_candidates_are_stored_spans(self, candidates):
        assert (candidates.counts().passages, candidates.counts().spans) == (4, 6)

    def test_top_k_ranks_by_every_span_and_marks_mentions_only(self, candidates):
        hits = self.search(candidates, DINO, threshold=0.4)
        assert [h.id for h in hits] == ["c1", "c2", "c3", "c4"]
        assert [round(h.score, 3) for h in hits] == [1.0, 0.95, 0.9, 0.7]
        assert self.marks(hits) == {"c1": ["fossils"], "c2": [], "c3": ["Allosaurus"], "c4": []}

    def test_a_hit_ranked_by_a_candidate_names_it(self, candidates):
        """Marked or not, a hit whose best span is a candidate names it (``Hit.ranked_by``); a hit
        ranked by a mention has it as its first mark instead."""
        ranked = {"c1": ("Triceratops", 1.0), "c2": ("Velociraptor", 0.95), "c3": None, "c4": ("Dinosaur", 0.7)}
        assert self.rankers(self.search(candidates, DINO, threshold=0.4)) == ranked
        assert self.rankers(self.search(candidates, DINO, threshold=-1.0, limit=10)) == ranked
        assert self.rankers(self.search(candidates, DINO, threshold=0.4, passage_weight=1.0, limit=2)) == {
            "c3": None, "c1": ("Triceratops", 1.0)}
        assert self.search(candidates, DINO, threshold=0.4)[0].to_dict()["ranked_by"] == {
            "start": 0, "end": 11, "text": "Triceratops", "similarity": 1.0, "labels": ["label-triceratops"]}

    def test_an_all_names_the_candidate_that_ranked_a_hit(self, candidates):
        """In the ``--all`` answer too (every hit there has a mark, and may be ranked by a candidate)."""
        hits = self.search(candidates, DINO, threshold=0.4, exhaustive=True)
        assert self.rankers(hits) == {"c1": ("Triceratops", 1.0), "c3": None}
        hits = self.search(candidates, DINO, threshold=-1.0, exhaustive=True)
        assert self.rankers(hits) == {"c1": ("Triceratops", 1.0), "c3": None, "c4": ("Dinosaur", 0.7)}
        assert self.marks(hits)["c4"] == ["Smith"]  # the candidate is named, never marked

    def test_exhaustive_returns_passages_with_a_mention_over_the_threshold(self, candidates):
        hits = self.search(candidates, DINO, threshold=0.4, exhaustive=True)
        assert [h.id for h in hits] == ["c1", "c3"]
        assert [round(h.score, 3) for h in hits] == [1.0, 0.9]  # scored by the candidate too
        assert self.marks(hits) == {"c1": ["fossils"], "c3": ["Allosaurus"]}

    def test_without_a_threshold_every_mention_is_marked(self, candidates):
        hits = self.search(candidates, DINO, threshold=-1.0, limit=10)
        assert [h.id for h in hits] == ["c1", "c2", "c3", "c4"]
        assert self.marks(hits) == {"c1": ["fossils"], "c2": [], "c3": ["Allosaurus"], "c4": ["Smith"]}
        hits = self.search(candidates, DINO, threshold=-1.0, exhaustive=True)
        assert [h.id for h in hits] == ["c1", "c3", "c4"]  # c2 has no mention at all

    def test_a_candidate_over_a_threshold_no_mention_passes(self, candidates):
        hits = self.search(candidates, DINO, threshold=0.96)
        assert [h.id for h in hits] == ["c1"] and hits[0].spans == ()
        assert self.search(candidates, DINO, threshold=0.96, exhaustive=True) == []

    def test_candidates_with_limit_and_passage_weight(self, candidates):
        assert [h.id for h in self.search(candidates, DINO, threshold=0.4, limit=2)] == ["c1", "c2"]
        hits = self.search(candidates, DINO, threshold=0.4, passage_weight=1.0, limit=2)
        assert [h.id for h in hits] == ["c3", "c1"]  # 0.9 + 1.0 beats 1.0 + 0.0
        assert [round(h.score, 3) for h in hits] == [1.9, 1.0]
        hits = self.search(candidates, DINO, threshold=0.4, passage_weight=1.0, exhaustive=True)
        assert [h.id for h in hits] == ["c3", "c1"]

    def test_a_limit_past_the_knn_cap_is_still_top_k(self, candidates):
        """A limit above Elasticsearch's kNN cap (10,000) is answered exactly there, and was the
        ``--all`` answer (an audit): a passage ranked by a candidate alone dropped out."""
        self.require_exhaustive(candidates)  # Elasticsearch answers it with the exact (Painless) search
        hits = self.search(candidates, DINO, threshold=0.4, limit=10_001)
        assert [h.id for h in hits] == ["c1", "c2", "c3", "c4"]
        assert [round(h.score, 3) for h in hits] == [1.0, 0.95, 0.9, 0.7]
        assert self.marks(hits) == {"c1": ["fossils"], "c2": [], "c3": ["Allosaurus"], "c4": []}
        assert self.rankers(hits) == {"c1": ("Triceratops", 1.0), "c2": ("Velociraptor", 0.95), "c3": None,
                                      "c4": ("Dinosaur", 0.7)}
        hits = self.search(candidates, DINO, threshold=0.4, limit=10_001, passage_weight=1.0, filters={"lang": "en"})
        assert [h.id for h in hits] == ["c3", "c1", "c2", "c4"]

    def test_span_filters_restrict_candidates_too(self, candidates):
        only = {"spans.labels": "label-triceratops"}  # c1's candidate: it ranks c1, marks nothing
        hits = self.search(candidates, DINO, threshold=0.4, filters=only)
        assert [h.id for h in hits] == ["c1"] and hits[0].spans == () and hits[0].ranked_by.text == "Triceratops"
        assert self.search(candidates, DINO, threshold=0.4, filters=only, exhaustive=True) == []
        hits = self.search(candidates, DINO, threshold=0.4, filters={"spans.labels": "label-fossils"})
        assert [h.id for h in hits] == ["c1"] and [round(h.score, 3) for h in hits] == [0.5]
        assert hits[0].ranked_by is None  # the mention is the best span the filter leaves
