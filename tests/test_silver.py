"""WordNet silver data: reader, span finding, sense choice, typing, gold merge, hierarchy, command.

Everything but the missing-WordNet message needs WordNet 3.0 (Debian: wordnet-base,
wordnet-sense-index) and is skipped, with that reason, without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.records import GoldSpan, Passage
from indexer.training import wordnet as wordnet_mod
from indexer.training.wordnet import WordNetMissingError, find_wordnet_dir, wordnet_available

needs_wordnet = pytest.mark.skipif(
    not wordnet_available(),
    reason=f"WordNet 3.0 not installed ({wordnet_mod.APT_INSTALL})",
)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_missing_wordnet_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.delenv("NERINDEX_WORDNET", raising=False)
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setattr(wordnet_mod, "SEARCH_DIRS", (str(tmp_path),))
    with pytest.raises(WordNetMissingError) as err:
        find_wordnet_dir()
    assert "wordnet-base" in str(err.value) and "wordnet-sense-index" in str(err.value)


@pytest.fixture(scope="module")
def wn():
    from indexer.training.wordnet import WordNet

    return WordNet.load()


@pytest.fixture(scope="module")
def encoder():
    from indexer.encoder import OnnxEncoder
    from indexer.model_folder import default_model_path

    return OnnxEncoder.from_dir(default_model_path(), device="cpu")


def _annotate(wn, encoder, items, **cfg_kwargs):
    """items: (text, [(start, end, phrase), ...]) -> (sentences, annotator)."""
    from indexer.training.silver import SilverAnnotator, SilverConfig, annotate, text_embedder

    ann = SilverAnnotator(wn, config=SilverConfig(**cfg_kwargs))
    passages = [
        Passage(id=str(i), text=t, fields={}, gold=[GoldSpan(a, b, p or "MISC") for a, b, p in g])
        for i, (t, g) in enumerate(items)
    ]
    phrases = [[p for *_, p in g] for _, g in items]
    out = annotate(
        passages, ["test"] * len(items), phrases, annotator=ann, tokenizer=encoder.tokenizer,
        embed=text_embedder(encoder),
    )  # fmt: skip
    return out, ann


def _by_text(sentence):
    return {sentence.text[s.start : s.end]: s for s in sentence.spans}


@needs_wordnet
def test_reader_matches_wordnet_3_0(wn):
    nouns = list(wn.noun_synsets())
    assert len(nouns) == 82115
    assert sum(s.is_instance for s in nouns) == 7730
    cello = wn.by_name("cello.n.01")
    chain = [[q.name for q in level] for level in wn.ancestor_levels(cello, max_levels=3)]
    assert chain == [["bowed_stringed_instrument.n.01"], ["stringed_instrument.n.01"],
                     ["musical_instrument.n.01"]]  # fmt: skip
    assert wn.base_forms("ice creams", "n") == ["ice cream"]
    assert wn.base_forms("geese", "n") == ["goose"]
    assert wn.base_forms("played", "v") == ["play"]


@needs_wordnet
def test_cello_by_the_mekong(wn, encoder):
    (s,), _ = _annotate(wn, encoder, [("She played the cello by the Mekong.", [])])
    spans = _by_text(s)
    assert set(spans) == {"cello", "Mekong"}  # "played" is a verb, "She"/"the" are no nouns
    assert {"musical instrument", "stringed instrument"} <= set(spans["cello"].types)
    assert spans["Mekong"].types[0] == "river"
    assert spans["Mekong"].synset == "mekong.n.01" and spans["cello"].source == "wordnet"
    # nearest types first, depths ascending
    assert spans["cello"].depths == sorted(spans["cello"].depths)


@needs_wordnet
def test_compounds_before_their_words_and_helium(wn, encoder):
    (a, b), _ = _annotate(wn, encoder, [
        ("We had ice creams after lunch.", []),
        ("The balloon was filled with helium.", []),
    ])  # fmt: skip
    assert "ice creams" in _by_text(a) and "ice" not in _by_text(a)
    assert "ice cream" not in _by_text(a)["ice creams"].types  # its own lemma is no type
    assert "chemical element" in _by_text(b)["helium"].types


@needs_wordnet
def test_sense_choice_beats_the_most_frequent_sense(wn, encoder):
    # the most frequent senses are the animal mouse and the lifting crane; context must overrule
    items = [("He clicked the left button of the mouse to open the file.", []),
             ("The crane waded through the marsh looking for fish.", []),
             ("A crane lifted the steel beams onto the roof.", [])]  # fmt: skip
    (mouse, bird, machine), _ = _annotate(wn, encoder, items)
    assert _by_text(mouse)["mouse"].synset == "mouse.n.04"  # the computer mouse
    assert _by_text(bird)["crane"].synset == "crane.n.05"  # the bird
    assert _by_text(machine)["crane"].synset == "crane.n.04"  # the machine
    (mouse1, bird1, _), _ = _annotate(wn, encoder, items, disambiguate=False)
    assert _by_text(mouse1)["mouse"].synset == "mouse.n.01"
    assert _by_text(bird1)["crane"].synset == "crane.n.04"


@needs_wordnet
def test_offsets_are_tokenizer_word_boundaries(wn, encoder):
    from indexer.spans import words_from_encoding

    text = "Rock'n'roll fans bought guitars, drums and mother-in-law jokes in New York."
    (s,), _ = _annotate(wn, encoder, [(text, [])])
    enc = encoder.tokenizer.encode(text, add_special_tokens=False)
    words = words_from_encoding(enc.word_ids, enc.offsets)
    starts, ends = {w.start for w in words}, {w.end for w in words}
    assert s.spans
    for sp in s.spans:
        assert sp.start in starts and sp.end in ends
    assert "New York" in _by_text(s)


@needs_wordnet
def test_spans_wider_than_max_width_are_dropped_and_counted(wn, encoder):
    (s,), ann = _annotate(wn, encoder, [("We had ice cream.", [])], max_span_width=1)
    assert ann.counts["spans_too_wide"] >= 1
    assert "ice cream" not in _by_text(s)


@needs_wordnet
def test_gold_spans_lead_and_silver_inside_them_is_dropped(wn, encoder):
    text = "Einstein visited the Mekong River Commission offices."
    (s,), _ = _annotate(wn, encoder, [(text, [(0, 8, "person"), (21, 44, "organization")])])
    spans = _by_text(s)
    assert spans["Einstein"].source == "gold" and spans["Einstein"].types[0] == "person"
    assert spans["Einstein"].label == "person"
    assert "physicist" in spans["Einstein"].types  # the WordNet sense refines the gold type
    assert "Mekong River" not in spans  # inside a gold span
    org = spans["Mekong River Commission"]
    assert org.types[0] == "organization" and org.synset is None


@needs_wordnet
def test_gold_text_sense_must_agree_with_the_gold_type(wn, encoder):
    # "Jordan" is a country and a river in WordNet; labelled person it gets neither
    (s,), _ = _annotate(wn, encoder, [("Jordan scored again.", [(0, 6, "person")])])
    span = _by_text(s)["Jordan"]
    assert "river" not in span.types and "country" not in span.types


@needs_wordnet
def test_held_out_types_and_their_synonyms_never_appear(wn, encoder):
    from indexer.training.silver import DEFAULT_HOLD_OUT

    (s,), ann = _annotate(wn, encoder, [("The flu and measles spread through the country.", [])])
    for held in ("disease", "country", "communicable disease", "nation", "medication"):
        assert ann.is_held_out(held), held
    every = {t for sp in s.spans for t in sp.types}
    assert not any(ann.is_held_out(t) for t in every)
    assert "disease" in DEFAULT_HOLD_OUT
    (m,), ann2 = _annotate(wn, encoder, [("She played the cello by the Mekong.", [])],
                           hold_out=("river",))  # fmt: skip
    assert "river" not in _by_text(m)["Mekong"].types and "stream" in _by_text(m)["Mekong"].types


@needs_wordnet
def test_hierarchy_masks_ancestors_descendants_and_synonyms(wn, encoder, tmp_path):
    from indexer.training.silver import TypeHierarchy, build_hierarchy

    sents, ann = _annotate(wn, encoder, [
        ("She played the cello by the Mekong.", []),
        ("Einstein played the violin.", [(0, 8, "person")]),
    ])  # fmt: skip
    data = build_hierarchy(ann, sents)
    path = tmp_path / "h.json"
    path.write_text(json.dumps(data))
    h = TypeHierarchy.load(path)
    assert "musical instrument" in h.ancestors["stringed instrument"]
    assert h.related("musical instrument", "stringed instrument")
    assert h.related("stringed instrument", "musical instrument")
    assert not h.related("river", "musical instrument")
    assert h.related("person", "physicist")  # the gold phrase sits above WordNet's physicist
    assert "instrument" in h.synonyms["musical instrument"]
    assert "stringed instrument" in h.masked(["musical instrument"])


@needs_wordnet
@pytest.mark.skipif(not (DATA / "wnut17" / "train.conll").is_file(), reason="shared/data not beside the repo")
def test_silver_command_writes_jsonl_hierarchy_and_summary(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from indexer.training.silver import read_silver, silver_command

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "silver.jsonl"
    result = CliRunner().invoke(
        silver_command,
        ["--out", str(out), "--data-dir", str(DATA), "--limit", "40", "--no-familiarity", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    sents = list(read_silver(out))
    assert len(sents) == summary["counts"]["sentences"] == 40
    n_gold = sum(sp.source == "gold" for s in sents for sp in s.spans)
    assert n_gold == summary["counts"]["spans_gold"] > 0
    assert summary["counts"]["spans_wordnet"] > 0
    hier = json.loads(Path(summary["hierarchy"]).read_text())
    used = {t for s in sents for sp in s.spans for t in sp.types}
    assert set(hier["phrases"]) == used
    assert (tmp_path / "cache" / "nerindex" / "wordnet").is_dir()  # gloss vectors cached
