"""Two similarity thresholds: one for type phrases the model was trained on, one for the others.

The rule has one owner (``ModelInfo.threshold_for`` / ``label_thresholds``); the API, the web
service, labels and ``nerindex eval`` apply it, and calibration writes both values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from indexer.assets import default_model_dir
from indexer.catalog import Catalog
from indexer.model_card import ModelCard
from indexer.model_folder import ModelInfo

ROOT = Path(__file__).resolve().parents[1]


def _info(**card) -> ModelInfo:
    values = {"training": {"types": ["person", "sports team"]}, **card}
    return ModelInfo(
        path=Path("."), id="m", version="1", dims=2, max_length=8, max_span_width=2, detection_threshold=0.1,
        similarity_threshold=0.36, label_threshold=0.36, labels_per_span=2, similarity="cosine", type_template="{}",
        graphs={}, files={}, unseen_similarity_threshold=card.get("unseen_similarity_threshold"),
        unseen_label_threshold=card.get("unseen_label_threshold"), card=ModelCard(values),
    )  # fmt: skip


def test_a_phrase_the_model_was_trained_on_gets_the_seen_threshold():
    info = _info(unseen_similarity_threshold=0.27)
    assert info.threshold_for("person") == info.threshold_for("  Sports   TEAM ") == 0.36
    assert info.threshold_for("dinosaur") == info.threshold_for("personnel") == 0.27  # "persons": the type (a plural)


def test_one_threshold_when_the_card_has_no_second():
    info = _info()
    assert info.threshold_for("dinosaur") == info.threshold_for("person") == 0.36
    assert info.label_thresholds(["person", "dinosaur"]).tolist() == pytest.approx([0.36, 0.36])
    assert info.stamp.unseen_label_threshold == 0.36  # the effective value is recorded either way


def test_labels_follow_the_same_split():
    info = _info(unseen_similarity_threshold=0.27, unseen_label_threshold=0.27)
    phrases = ("person", "dinosaur")
    cat = Catalog(phrases, np.eye(2, dtype=np.float32))
    vectors = np.array([[0.30, 0.0], [0.0, 0.30], [0.40, 0.30]], dtype=np.float32)
    got = cat.label(vectors, k=2, threshold=info.label_thresholds(phrases))
    assert got == [(), ("dinosaur",), ("person", "dinosaur")]
    assert cat.label(vectors, k=2, threshold=0.36) == [(), (), ("person",)]
    # the k best of those that pass their own threshold: "person" at 0.32 (under its 0.36) took
    # the one place and "dinosaur" at 0.30 (over its 0.27) was left out (an audit)
    assert cat.label(np.array([[0.32, 0.30]], dtype=np.float32), k=1, threshold=info.label_thresholds(phrases)) == [("dinosaur",)]


def test_calibration_writes_both_thresholds_and_labels_follow(tmp_path: Path):
    card = ModelCard({"similarity_threshold": 0.18, "label_threshold": 0.18, "unseen_similarity_threshold": 0.1})
    both = card.calibrated(0.36, {"rule": "r"}, unseen_threshold=0.27).to_dict()
    assert (both["similarity_threshold"], both["unseen_similarity_threshold"]) == (0.36, 0.27)
    assert (both["label_threshold"], both["unseen_label_threshold"]) == (0.36, 0.27)
    one = ModelCard(both).calibrated(0.3, {"rule": "r"}).to_dict()  # no unseen types this time: theirs stay
    assert (one["unseen_similarity_threshold"], one["unseen_label_threshold"]) == (0.27, 0.27)
    assert one["similarity_threshold"] == one["label_threshold"] == 0.3
    # a folder exported from another: thresholds chosen there say so, the unseen ones still after a
    # calibration here that could not choose them (a review: they read as chosen on this folder)
    exported = {**both, "calibration": {"unseen": {"methods": {"system": {"threshold": 0.27}}},
                                        "exported_from": {"id": "m", "version": "0.3.0", "checksum": "c"}}}
    assert ModelCard(exported).calibration.exported_from == "m 0.3.0"
    again = ModelCard(ModelCard(exported).calibrated(0.3, {"rule": "r"}).to_dict())
    assert (again.calibration.exported_from, again.calibration.unseen_exported_from) == (None, "m 0.3.0")
    # exported once more and calibrated again on seen types only: still the first folder's (a review)
    chain = {**again.to_dict(), "calibration": {**again.to_dict()["calibration"],
                                                "exported_from": {"id": "m", "version": "0.4.0", "checksum": "d"}}}
    assert ModelCard(chain).calibrated(0.31, {"rule": "r"}).calibration.unseen_exported_from == "m 0.3.0"


def test_the_shipped_model_and_a_search_use_them(tmp_path: Path):
    from indexer import NerIndex, read_passages

    card = json.loads((default_model_dir() / "model.json").read_text(encoding="utf-8"))
    with NerIndex.open(tmp_path / "store") as ix:
        info = ix.encoder.info
        assert info.similarity_threshold == card["similarity_threshold"]
        assert info.unseen_similarity_threshold == card.get("unseen_similarity_threshold")
        assert ix.request("person").min_similarity == info.similarity_threshold
        assert ix.request("dinosaur").min_similarity == info.threshold_for("dinosaur")
        assert ix.request("dinosaur", min_similarity=0.5).min_similarity == 0.5  # the caller's wins
        ix.index(read_passages(ROOT / "examples" / "corpus.jsonl", id_field="id"))
        for hit in ix.search("dinosaur", limit=5):
            assert all(s.similarity >= info.threshold_for("dinosaur") for s in hit.spans)


def test_a_phrase_not_trained_on_is_embedded_in_the_unseen_template():
    """``ModelInfo.template_for`` is the one rule; trained-on phrases keep the bare phrase the span
    side was trained against, and without a second template every phrase uses ``type_template``."""
    two = dataclasses.replace(_info(), unseen_type_template="the name of a {}")
    assert two.template_for("person") == two.template_for("  Sports   TEAM ") == "{}"
    assert two.template_for("dinosaur") == "the name of a {}"
    one = _info()
    assert one.template_for("dinosaur") == one.template_for("person") == "{}"


def test_the_shipped_encoder_embeds_each_phrase_in_its_template():
    from indexer.encoder import OnnxEncoder
    from indexer.type_side import embed_texts

    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    info = enc.info
    assert info.unseen_type_template is not None  # the shipped card has one (EVALUATION.md, "Type templates")
    got = enc.embed_types(["dinosaur", "person"])
    want = embed_texts(enc.session, enc.tokenizer, [info.unseen_type_template.format("dinosaur"), "person"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    bare = embed_texts(enc.session, enc.tokenizer, ["dinosaur"])[0]
    assert float(got[0] @ bare) < 0.99  # the template moves the vector: not a no-op


def test_labels_from_a_catalog_file_use_bare_phrases_and_keep_their_stamp(tmp_path):
    """The unseen template is for queries: a --catalog file's phrases are embedded bare, as
    catalog.npy's are, so its labels and the store stamp are what they were before the template
    (an audit found such stores refused, naming two identical models)."""
    from indexer.encoder import OnnxEncoder
    from indexer.type_side import embed_texts

    phrases = tmp_path / "types.txt"
    phrases.write_text("dinosaur\nriver\n", encoding="utf-8")
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu", catalog=phrases)
    bare = embed_texts(enc.session, enc.tokenizer, ["dinosaur", "river"])
    np.testing.assert_allclose(enc.catalog.vectors, bare, atol=1e-6)
    assert enc.info.catalog_source == Catalog(("dinosaur", "river"), bare).source("{}")
    assert float(enc.embed_types(["dinosaur"])[0] @ bare[0]) < 0.99  # a search still uses the template


def test_a_trained_types_plural_is_searched_as_the_type():
    """An audit: "sports teams" and "politicians" were types nobody trained on (another threshold,
    λ and template): 66 passages of 200 where "sports team" found 8."""
    info = _info(unseen_similarity_threshold=0.27, training={"types": ["person", "sports team", "facility", "class"]})
    for plural, single in [("Sports Teams", "sports team"), ("persons", "person"), ("facilities", "facility"),
                           ("classes", "class"), ("class", "class")]:
        assert info.trained_type(plural) == single and info.threshold_for(plural) == 0.36
    for other in ["personss", "sport team", "teams", "clas"]:
        assert info.trained_type(other) is None and info.threshold_for(other) == 0.27


def test_a_trained_type_written_with_hyphens_or_joined_is_the_type():
    """The dogfooding audit (round 28): "sports-team" was searched as a type nobody trained on (the
    unseen threshold, λ 1, the template) and returned 6-8× the `--all` answer of "sports team"."""
    info = _info(unseen_similarity_threshold=0.27, training={"types": ["sports team", "art work", "person"]})
    for variant, single in [("sports-team", "sports team"), ("Sports_Teams", "sports team"), ("sportsteam", "sports team"),
                            ("artwork", "art work"), ("art-works", "art work"), ("sports - team", "sports team")]:
        assert info.trained_type(variant) == single and info.threshold_for(variant) == 0.36, variant
    for other in ["sport team", "sports-teamster", "per-son-al", "-", "art"]:
        assert info.trained_type(other) is None and info.threshold_for(other) == 0.27, other
    # two trained types alike by their letters (a review): each as written, neither by letters alone
    alike = _info(unseen_similarity_threshold=0.27, training={"types": ["c++ library", "c library"]})
    assert [alike.trained_type(p) for p in ("C++ Library", "c library", "c-library", "clibrary")] == [
        "c++ library", "c library", None, None]


def test_a_plural_is_embedded_as_its_trained_type():
    from indexer.encoder import OnnxEncoder

    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    plural, single, unseen = enc.embed_types(["politicians", "politician", "dinosaurs"])
    assert np.array_equal(plural, single) and float(unseen @ enc.embed_types(["dinosaur"])[0]) < 0.999


@pytest.mark.parametrize("variant", ["person\u200b", "Pérson", "per\u00adson", " PERSON\t", "person\ue000"])
def test_a_phrase_the_model_reads_as_a_trained_one_is_trained(variant):
    """A zero-width space, a soft hyphen or an accent made a trained phrase "unseen" (another
    threshold, λ and template) although the uncased tokenizer reads it as the same words (audit4)."""
    from indexer.encoder import load_tokenizer

    info = _info(unseen_similarity_threshold=0.27)
    tokenizer = load_tokenizer(default_model_dir() / "tokenizer.json")
    assert tokenizer.encode(variant).ids == tokenizer.encode("person").ids
    assert info.is_trained_phrase(variant) and info.threshold_for(variant) == 0.36
