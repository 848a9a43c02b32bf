"""Benchmark building from CoNLL, mappings (JSON/TOML), merged files, and the BEIR-style export/import round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.errors import InputError
from indexer.evaluation.beir_folder import export_benchmark, import_benchmark, is_beir_folder
from indexer.evaluation.benchmark_io import (
    PHRASES_FILE,
    benchmark_from_conll,
    build_benchmark,
    detect_dataset,
    query_id,
    read_mapping_file,
    resolve_mapping,
)
from indexer.records import GoldSpan, Passage

CONLL = """\
Alice\tB-person
met\tO
Bob\tB-politician
in\tO
Paris\tB-location
.\tO

The\tO
Green\tB-politicalparty
Party\tI-politicalparty
won\tO

nothing\tO
here\tO

Bob\tB-politician
Smith\tI-politician
and\tO
X\tB-misc
"""


@pytest.fixture()
def conll_file(tmp_path: Path) -> Path:
    folder = tmp_path / "crossner" / "politics"
    folder.mkdir(parents=True)
    path = folder / "dev.txt"
    path.write_text(CONLL, encoding="utf-8")
    return path


def test_queries_qrels_and_gold_from_conll(conll_file: Path):
    bench = benchmark_from_conll([conll_file])
    assert bench.name == "crossner/politics/dev.txt"
    assert len(bench.corpus) == 4
    by_text = {q.text: q for q in bench.queries}
    # misc is mapped to null: no query; the crossner section has 14 phrases
    assert "misc" not in by_text and len(bench.queries) == 14
    pol = by_text["politician"]
    assert pol.id == "q-politician" and pol.labels == ("politician",) and not pol.coarse
    assert by_text["person"].coarse and by_text["country"].coarse
    p0, p1, p2, p3 = bench.corpus
    assert bench.qrels["q-politician"] == {p0.id, p3.id}
    # gold offsets in "Alice met Bob in Paris ." and "Bob Smith and X"
    assert bench.gold["q-politician"] == {p0.id: [(10, 13)], p3.id: [(0, 9)]}
    assert bench.gold["q-political-party"] == {p1.id: [(4, 15)]}
    # scored queries: only types present (person, politician, location, political party)
    assert {q.text for q in bench.scored_queries()} == {"person", "politician", "location", "political party"}


def test_detect_dataset_from_folder_names(tmp_path: Path):
    assert detect_dataset(tmp_path / "wnut17" / "dev.conll", ["crossner", "wnut17"]) == "wnut17"
    assert detect_dataset(tmp_path / "x" / "dev.conll", ["crossner", "wnut17"]) is None


def test_unknown_file_needs_dataset_or_flat_mapping(tmp_path: Path):
    path = tmp_path / "mine.conll"
    path.write_text("Alice\tB-PER\n", encoding="utf-8")
    with pytest.raises(InputError, match="--dataset"):
        benchmark_from_conll([path])
    bench = benchmark_from_conll([path], dataset="wikigold")
    assert [q.text for q in bench.scored_queries()] == ["person"]
    with pytest.raises(InputError, match="--dataset 'nope' is not one of"):  # not "pass --dataset" when it was passed
        benchmark_from_conll([path], dataset="nope")


def test_unmapped_tag_is_an_error(tmp_path: Path):
    path = tmp_path / "x.conll"
    path.write_text("Rex\tB-dinosaur\n", encoding="utf-8")
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"PER": "person"}), encoding="utf-8")
    with pytest.raises(InputError, match="dinosaur"):
        benchmark_from_conll([path], mapping_file=mapping)


def test_flat_toml_mapping_with_false_for_misc(tmp_path: Path):
    path = tmp_path / "x.conll"
    path.write_text("Rex\tB-dino\nand\tO\nfoo\tB-other\n", encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text('dino = "dinosaur"\nother = false\n_coarse = ["dino"]\n', encoding="utf-8")
    bench = benchmark_from_conll([path], mapping_file=mapping)
    assert [(q.text, q.coarse) for q in bench.queries] == [("dinosaur", True)]


def test_sectioned_mapping_is_the_shipped_one():
    data = read_mapping_file(PHRASES_FILE)
    mapping, coarse, name = resolve_mapping(data, "/x/multiconer2_en/en-dev.conll")
    assert name == "multiconer2_en"
    assert mapping["Medication/Vaccine"] == "medication or vaccine"
    assert coarse == frozenset()


def test_a_flat_copy_of_the_crossner_section_keeps_its_coarse_types(tmp_path: Path, monkeypatch):
    """An audit: a flat mapping had no coarse group unless it listed "_coarse", so CrossNER's
    person / location / organisation / country were scored as seen and unseen types."""
    section = {k: v for k, v in read_mapping_file(PHRASES_FILE)["crossner"].items() if not k.startswith("_")}
    _, coarse, _ = resolve_mapping(section, "/x/crossner/politics/dev.txt")
    assert coarse == frozenset({"person", "organisation", "location", "country"})
    assert resolve_mapping(section, "/x/mine/dev.txt", dataset="crossner")[1] == coarse
    assert resolve_mapping(section, "/x/mine/dev.txt")[1] == frozenset()  # no data set named: none known
    assert resolve_mapping(section, "/x/crossner/wnut17/more/dev.conll")[1] == frozenset()  # a far ancestor only
    (tmp_path / "crossner" / "work").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "crossner" / "work")  # a review: the folders were resolved against the cwd
    assert resolve_mapping(section, "/x/mine/dev.txt")[1] == frozenset()
    assert resolve_mapping(section, "dev.txt")[1] == coarse  # it is in crossner/work/: its own two folders
    assert resolve_mapping({**section, "_coarse": []}, "/x/crossner/politics/dev.txt")[1] == frozenset()


def test_a_file_given_twice_counts_its_gold_once(tmp_path: Path):
    """An audit: 'nerindex eval F F' kept each passage once but its gold mentions twice (592 → 1184)."""
    path = tmp_path / "crossner" / "politics" / "dev.txt"
    path.parent.mkdir(parents=True)
    path.write_text("Angela\tB-politician\nMerkel\tI-politician\nspoke\tO\n", encoding="utf-8")
    once, twice = benchmark_from_conll([path]), benchmark_from_conll([path, path])
    assert {q: g for q, g in twice.gold.items() if g} == {q: g for q, g in once.gold.items() if g} != {}
    assert len(twice.corpus) == len(once.corpus) == 1
    assert twice.sources == once.sources


def test_same_phrase_from_two_tags_is_one_query():
    passages = [
        Passage("a", "Acme Corp", gold=(GoldSpan(0, 9, "corporation"),)),
        Passage("b", "Big Co", gold=(GoldSpan(0, 6, "company"),)),
    ]
    bench = build_benchmark(passages, {"corporation": "company", "company": "company"}, name="t")
    assert len(bench.queries) == 1
    q = bench.queries[0]
    assert q.labels == ("company", "corporation") and bench.qrels[q.id] == {"a", "b"}


def test_phrases_with_one_query_id_are_one_query():
    """"sports team" and "Sports  Team" have one id: before, they were two queries that shared their
    qrels, so the type was scored twice and its gold mentions counted twice."""
    passages = [
        Passage("a", "Lakers won", gold=(GoldSpan(0, 6, "team"),)),
        Passage("b", "Celtics lost", gold=(GoldSpan(0, 7, "club"),)),
    ]
    bench = build_benchmark(passages, {"team": "sports team", "club": "Sports  Team"}, name="t")
    assert [(q.id, q.text, q.labels) for q in bench.queries] == [("q-sports-team", "Sports  Team", ("club", "team"))]
    assert bench.qrels["q-sports-team"] == {"a", "b"}
    assert sum(len(v) for v in bench.gold["q-sports-team"].values()) == 2


def _two_datasets(tmp_path: Path, wnut: str, btc: str) -> list[Path]:
    """A WNUT-17 file and a BTC file with these contents."""
    files = [tmp_path / "wnut17" / "dev.conll", tmp_path / "btc" / "h.conll"]
    for path, text in zip(files, (wnut, btc)):
        path.parent.mkdir(parents=True)
        path.write_text(text, encoding="utf-8")
    return files


def test_two_files_merge_queries_by_phrase(tmp_path: Path):
    bench = benchmark_from_conll(_two_datasets(tmp_path, "Alice\tB-person\n", "Bob\tB-PER\n"))
    person = next(q for q in bench.queries if q.text == "person")
    assert person.labels == ("PER", "person")
    assert len(bench.qrels[person.id]) == 2
    assert len(bench.corpus) == 2


def _with_companies(tmp_path: Path) -> list[Path]:
    """WNUT-17 labels "corporation", BTC does not: a BTC sentence naming a company is unjudged."""
    return _two_datasets(tmp_path, "Alice\tB-person\nat\tO\nAcme\tB-corporation\n", "Bob\tB-PER\nat\tO\nGoogle\tO\n")


def test_merged_files_judge_each_type_only_where_it_is_labelled(tmp_path: Path):
    bench = benchmark_from_conll(_with_companies(tmp_path))
    wnut, btc = bench.corpus
    corporation = next(q for q in bench.queries if q.text == "corporation")
    person = next(q for q in bench.queries if q.text == "person")
    assert bench.judged[corporation.id] == {wnut.id}
    assert person.id not in bench.judged  # both files label persons: judged everywhere
    ranking = [Passage(btc.id, ""), Passage(wnut.id, "")]
    assert [p.id for p in bench.judged_only(corporation.id, ranking)] == [wnut.id]
    assert [p.id for p in bench.judged_only(person.id, ranking)] == [btc.id, wnut.id]
    scoped = bench.scope_rankings({"system": {corporation.id: ranking, person.id: ranking}})
    assert [p.id for p in scoped["system"][corporation.id]] == [wnut.id]


def test_export_refuses_files_that_label_different_types(tmp_path: Path):
    bench = benchmark_from_conll(_with_companies(tmp_path))
    with pytest.raises(InputError, match="export each collection"):
        export_benchmark(bench, tmp_path / "beir")
    assert not (tmp_path / "beir").exists()


def _beir(tmp_path: Path, corpus: list[dict], qrels: str) -> Path:
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "dinosaur"}) + "\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text(qrels, encoding="utf-8")
    return tmp_path


def test_import_rejects_a_repeated_passage_id(tmp_path: Path):
    folder = _beir(tmp_path, [{"_id": "d1", "text": "Rex"}, {"_id": "d2", "text": "calm"}, {"_id": "d1", "text": "Rex"}],
                   "q1\td1\t1\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:3: _id 'd1' repeats line 1"):
        import_benchmark(folder)


def test_import_warns_of_judgements_of_passages_or_queries_it_lacks(tmp_path: Path, caplog):
    folder = _beir(tmp_path, [{"_id": "d1", "text": "Rex"}], "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\nq2\td1\t1\n")
    bench = import_benchmark(folder)
    # a missing passage stays relevant (BEIR's tools count it), a missing query is scored nowhere: both said
    assert bench.qrels == {"q1": {"d1", "d9"}}
    assert "1 relevance judgement(s) name passages not in corpus.jsonl (first at line 3)" in caplog.text
    assert "1 relevance judgement(s) name queries not in queries.jsonl (first at line 4)" in caplog.text


def test_import_names_a_qrels_line_that_is_not_utf8_and_reads_a_bom_and_crlf(tmp_path: Path):
    """An audit: a UnicodeDecodeError traceback; a BOM before the header made it a bad score."""
    folder = _beir(tmp_path, [{"_id": "d1", "text": "Rex"}], "")
    (folder / "qrels.tsv").write_bytes(b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")
    assert import_benchmark(folder).qrels == {"q1": {"d1"}}
    (folder / "qrels.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td\xe91\t1\n")
    with pytest.raises(InputError, match=r"qrels.tsv:2: invalid UTF-8 \(byte 0xe9\)"):
        import_benchmark(folder)


def test_phrases_that_differ_beyond_case_and_spacing_stay_two_queries():
    """An audit: ids kept [a-z0-9] alone, so every Cyrillic phrase was "q-" and "C++ programmer"
    was "C programmer": different types merged into one query, without a word."""
    passages = [
        Passage("a", "Moskva is big", gold=(GoldSpan(0, 6, "city"),)),
        Passage("b", "Ivan sleeps", gold=(GoldSpan(0, 4, "per"),)),
        Passage("c", "Bjarne codes", gold=(GoldSpan(0, 6, "cpp"),)),
        Passage("d", "Dennis codes", gold=(GoldSpan(0, 6, "c"),)),
    ]
    mapping = {"city": "город", "per": "человек", "cpp": "C++ programmer", "c": "C programmer"}
    bench = build_benchmark(passages, mapping, name="t")
    assert sorted(q.id for q in bench.queries) == ["q-c++-programmer", "q-c-programmer", "q-город", "q-человек"]
    assert query_id("Sports\u00a0_ team") == "q-sports-team"


def test_a_tag_without_a_phrase_is_named_at_the_first_sentence_using_it():
    passages = [Passage("a", "Lakers won", gold=(GoldSpan(0, 6, "team"),), fields={"line": 1}),
                Passage("b", "Ivan sleeps", gold=(GoldSpan(0, 4, "per"),), fields={"line": 4})]
    with pytest.raises(InputError, match="tags without a query phrase: per") as err:
        build_benchmark(passages, {"team": "sports team"}, name="t", source="x.conll")
    assert (err.value.path, err.value.line) == ("x.conll", 4)


def test_two_files_of_one_name_that_tag_one_sentence_otherwise_are_refused(tmp_path: Path):
    """An audit: a passage's id is its file's name, line and text, so such files were merged into
    one passage and one side's mentions lost without a word. An exact copy still counts once."""
    one, copy, other = (tmp_path / d / "crossner" / "politics" / "dev.txt" for d in "abc")
    for f, tag in ((one, "B-politician"), (copy, "B-politician"), (other, "B-person")):
        f.parent.mkdir(parents=True)
        f.write_text(f"Obama\t{tag}\nspoke\tO\n", encoding="utf-8")
    assert len(benchmark_from_conll([one, copy]).corpus) == 1
    with pytest.raises(InputError, match="is tagged otherwise there") as err:
        benchmark_from_conll([one, other])
    assert (err.value.path, err.value.line) == (str(other), 1)


def test_import_rejects_a_repeated_query_id(tmp_path: Path):
    folder = _beir(tmp_path, [{"_id": "d1", "text": "Rex"}], "q1\td1\t1\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a"}) + "\n" + json.dumps({"_id": "q1", "text": "b"}) + "\n",
                                          encoding="utf-8")
    with pytest.raises(InputError, match=r"queries.jsonl:2: _id 'q1' repeats line 1"):
        import_benchmark(folder)


def test_merged_files_judge_a_type_on_the_files_that_tag_it_not_on_their_data_set(tmp_path: Path):
    """CrossNER's one mapping covers every domain, but politics has no "book" tag (a book there is misc)."""
    politics, literature = tmp_path / "crossner" / "politics" / "dev.txt", tmp_path / "crossner" / "literature" / "dev.txt"
    for path, text in ((politics, "Obama\tB-politician\nwrote\tO\nDreams\tB-misc\n"), (literature, "Dune\tB-book\n")):
        path.parent.mkdir(parents=True)
        path.write_text(text, encoding="utf-8")
    bench = benchmark_from_conll([politics, literature])
    book = next(q for q in bench.queries if q.text == "book")
    politician = next(q for q in bench.queries if q.text == "politician")
    assert bench.judged[book.id] == {bench.corpus[1].id} and bench.judged[politician.id] == {bench.corpus[0].id}


def test_files_of_one_collection_judge_every_type_on_all_of_them(tmp_path: Path):
    """An audit: one data set cut into files (one per document) judged each type only on the files
    with its mentions, so the others' non-relevant passages dropped out and every figure rose
    (R-Precision 0.533 in one file, 0.664 in 12). One folder of one data set is one collection;
    two data sets, or two CrossNER domains, are still judged apart."""
    folder = tmp_path / "wnut17"
    folder.mkdir()
    docs = ["Acme\tB-corporation\nhired\tO\nAlice\tB-person\n", "Bob\tB-person\nsmiled\tO\n"]
    files = [folder / f"doc{i}.conll" for i in range(2)]
    for path, text in zip(files, docs):
        path.write_text(text, encoding="utf-8")
    whole = folder.parent / "whole" / "wnut17" / "all.conll"
    whole.parent.mkdir(parents=True)
    whole.write_text("\n".join(docs), encoding="utf-8")
    split, one = benchmark_from_conll(files), benchmark_from_conll([whole])
    assert split.judged == {} and len(split.corpus) == 2
    assert {q.text: len(split.qrels[q.id]) for q in split.scored_queries()} == {
        q.text: len(one.qrels[q.id]) for q in one.scored_queries()} == {"corporation": 1, "person": 2}
    export_benchmark(split, tmp_path / "beir")  # one collection: a BEIR folder can say it
    other = tmp_path / "btc" / "h.conll"
    other.parent.mkdir()
    other.write_text("Carol\tB-PER\n", encoding="utf-8")
    mixed = benchmark_from_conll([*files, other])
    corporation = next(q for q in mixed.queries if q.text == "corporation")
    assert mixed.judged[corporation.id] == {p.id for p in split.corpus}  # both WNUT files, not BTC's
    # a review: with a flat mapping nothing says two files of one folder are one data set
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"person": "person", "corporation": "corporation", "PER": "person"}), encoding="utf-8")
    other.rename(folder / "h.conll")
    apart = benchmark_from_conll([*files, folder / "h.conll"], mapping_file=flat)
    corporation = next(q for q in apart.queries if q.text == "corporation")
    assert len(apart.judged[corporation.id]) == 1  # the one file with its mentions, as before


def test_a_type_coarse_in_one_merged_file_is_coarse(tmp_path: Path):
    politics, wnut = tmp_path / "crossner" / "politics" / "dev.txt", tmp_path / "wnut17" / "dev.conll"
    for path, text in ((politics, "Obama\tB-person\n"), (wnut, "Alice\tB-person\n")):
        path.parent.mkdir(parents=True)
        path.write_text(text, encoding="utf-8")
    person = next(q for q in benchmark_from_conll([politics, wnut]).queries if q.text == "person")
    assert person.coarse  # CrossNER's person is incomplete (a politician is not tagged person): so merged
    politics.write_text("Obama\tB-politician\n", encoding="utf-8")  # politics judges no person here
    person = next(q for q in benchmark_from_conll([politics, wnut]).queries if q.text == "person")
    assert not person.coarse  # judged on WNUT-17 alone, complete there (a review)


def test_a_key_given_twice_in_a_mapping_file_is_refused(tmp_path: Path):
    """An audit: JSON keeps a repeated key's last value, so {"PER": "person", "PER": "city"} asked for "city"."""
    path = tmp_path / "map.json"
    path.write_text('{"PER": "person", "PER": "city"}', encoding="utf-8")
    with pytest.raises(InputError, match="key 'PER' appears twice"):
        read_mapping_file(path)


def test_beir_round_trip(conll_file: Path, tmp_path: Path):
    bench = benchmark_from_conll([conll_file])
    out = export_benchmark(bench, tmp_path / "beir")
    assert is_beir_folder(out)
    qrels = (out / "qrels.tsv").read_text(encoding="utf-8").splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore"
    assert f"q-politician\t{bench.corpus[0].id}\t1" in qrels
    assert (out / "qrels" / "test.tsv").read_text(encoding="utf-8") == (out / "qrels.tsv").read_text(encoding="utf-8")
    doc = json.loads((out / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert doc["text"] == "Alice met Bob in Paris ."
    assert {"start": 10, "end": 13, "label": "politician", "type": "politician"} in doc["entities"]

    back = import_benchmark(out)
    assert [p.id for p in back.corpus] == [p.id for p in bench.corpus]
    assert [p.gold for p in back.corpus] == [p.gold for p in bench.corpus]
    # only the types with a relevant passage: the mapping's other CrossNER types (book, writer ...),
    # which these files do not tag, were written with no qrels, as if judged absent (an audit)
    assert len(bench.queries) > len(bench.scored_queries()) == json.loads((out / "benchmark.json").read_text())["queries"]
    assert [(q.id, q.text, q.labels, q.coarse) for q in back.queries] == [
        (q.id, q.text, q.labels, q.coarse) for q in bench.scored_queries()
    ]
    assert {k: v for k, v in back.qrels.items() if v} == {k: v for k, v in bench.qrels.items() if v}
    assert {k: v for k, v in back.gold.items() if v} == {k: v for k, v in bench.gold.items() if v}
    assert back.name == bench.name


def test_an_export_refuses_a_folder_of_other_files(conll_file: Path, tmp_path: Path):
    """A CLI audit: --export-benchmark into a store folder put its files beside store.sqlite, and
    into a folder with qrels/dev.tsv left that file mixed in. An export's own folder is replaced."""
    bench = benchmark_from_conll([conll_file])
    export_benchmark(bench, tmp_path / "b")
    export_benchmark(bench, tmp_path / "b")  # again: its own files
    (tmp_path / "b" / ".DS_Store").write_text("x", encoding="utf-8")  # hidden: not counted (the review)
    export_benchmark(bench, tmp_path / "b")
    (tmp_path / "b" / "qrels" / "dev.tsv").write_text("x\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"holds files no benchmark export writes \(qrels/dev.tsv\)"):
        export_benchmark(bench, tmp_path / "b")
    (tmp_path / "f").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="is a file"):
        export_benchmark(bench, tmp_path / "f")


def test_an_export_interrupted_while_writing_leaves_the_old_folder_whole(conll_file: Path, tmp_path: Path, monkeypatch):
    """An audit: Ctrl-C while corpus.jsonl was written left new passages beside the old queries,
    qrels and benchmark.json, and eval took the mix."""
    import indexer.evaluation.beir_folder as beir_folder

    out = export_benchmark(benchmark_from_conll([conll_file]), tmp_path / "beir")
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = benchmark_from_conll([conll_file])
    other.name = "another"
    real = json.dumps

    def interrupted(obj, **kw):
        if isinstance(obj, dict) and obj.get("_id") == other.corpus[1].id:
            raise KeyboardInterrupt
        return real(obj, **kw)

    monkeypatch.setattr(beir_folder.json, "dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_benchmark(other, out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no temporary folder either
    monkeypatch.undo()
    (out / ".export.999999999.tmp").mkdir()  # a SIGKILLed export's (no such process)
    assert import_benchmark(export_benchmark(other, out)).name == "another"
    assert not list(out.glob(".export.*"))


def test_import_rejects_offsets_outside_text(tmp_path: Path):
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d", "text": "abc", "entities": [{"start": 0, "end": 9, "label": "x"}]}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "x"}) + "\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("q\td\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match="outside the text"):
        import_benchmark(tmp_path)


def test_import_plain_beir_without_entities(tmp_path: Path):
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "", "text": "Rex roared"}) + "\n"
        + json.dumps({"_id": "d2", "text": "calm"}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "dinosaur"}) + "\n", encoding="utf-8")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n", encoding="utf-8")
    bench = import_benchmark(tmp_path)
    assert bench.qrels == {"q1": {"d1"}}
    assert bench.gold == {"q1": {}}


def test_query_id_is_readable():
    assert query_id("Medication or Vaccine") == "q-medication-or-vaccine"


def test_an_export_that_meets_a_full_disk_names_its_folder(conll_file: Path, tmp_path: Path, monkeypatch):
    """An audit: a full disk was "error: No space left on device", naming nothing."""
    import errno

    import indexer.evaluation.beir_folder as beir_folder

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(beir_folder.json, "dumps", full)
    with pytest.raises(OSError) as info:
        export_benchmark(benchmark_from_conll([conll_file]), tmp_path / "beir")
    assert info.value.filename == str(tmp_path / "beir") and info.value.errno == errno.ENOSPC
    assert list((tmp_path / "beir").iterdir()) == []


def test_a_folder_exported_from_several_files_before_judging_by_file_is_flagged(conll_file: Path, tmp_path: Path, caplog):
    out = export_benchmark(benchmark_from_conll([conll_file]), tmp_path / "beir")
    meta = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    assert meta["judged"] == "every type on every passage"
    import_benchmark(out)
    assert "exported from" not in caplog.text
    meta = {k: v for k, v in meta.items() if k != "judged"} | {"sources": ["a.conll", "b.conll"]}
    (out / "benchmark.json").write_text(json.dumps(meta), encoding="utf-8")
    import_benchmark(out)
    assert "exported from 2 files before nerindex judged each type only on the files that tag it" in caplog.text
