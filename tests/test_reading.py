"""Reading user input into passages: every format, every bad-input case, skip mode, the shipped data."""

from __future__ import annotations

import csv
import gzip
import json
import os
import sys
from pathlib import Path

import pytest

from indexer.cli import main
from indexer.conll import iter_sentences
from indexer.errors import InputError, NerindexError
from indexer.reading import ReadStats, read_passages, resolve_format
from indexer.reading import structured
from indexer.reading.detect import looks_like_conll
from indexer.records import text_id

from labelled_data import DATA  # noqa: E402


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(path: Path, *records: object) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def read(path: Path, **kwargs) -> list:
    return list(read_passages(path, **kwargs))


def error_of(path: Path, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        read(path, **kwargs)
    return info.value


def assert_names(err: InputError, path: Path, line: int | None, unit: str = "line") -> None:
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.line == line
    if line is not None:  # a Parquet row is no line of the file: "a.parquet: row 2: …"
        assert (f"{path}:{line}:" if unit == "line" else f"{path}: {unit} {line}:") in str(err)


# ---------------------------------------------------------------------------------------- formats


def test_jsonl_hash_ids_and_fields(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": "Ada Lovelace wrote notes.", "source": "wiki", "meta": {"year": 1843}},
              {"text": "Paris is in France.", "tags": ["geo", 1]})
    stats = ReadStats()
    passages = list(read_passages(f, stats=stats))
    assert stats.id_field is None  # no `id` key: the id is a hash of the text
    assert [p.text for p in passages] == ["Ada Lovelace wrote notes.", "Paris is in France."]
    assert passages[0].id == text_id("Ada Lovelace wrote notes.")
    assert passages[0].fields == {"source": "wiki", "meta": {"year": 1843}}
    assert passages[1].fields == {"tags": ["geo", 1]}
    assert passages[0].gold == ()


def test_jsonl_id_and_text_fields(tmp_path):
    f = jsonl(tmp_path / "a.ndjson", {"doc": 7, "body": "One.", "title": "T"}, {"doc": "x-2", "body": "Two."})
    passages = read(f, id_field="doc", text_field="body")
    assert [(p.id, p.text, p.fields) for p in passages] == [("7", "One.", {"title": "T"}), ("x-2", "Two.", {})]


def test_id_key_is_the_id_by_default(tmp_path):
    """A record's own ``id`` is its id unless told otherwise, so indexing a file with and without
    --id-field id gives the same ids (0.2.0 stored the README's corpus twice)."""
    f = jsonl(tmp_path / "a.jsonl", {"id": "dino-1", "text": "T. rex.", "topic": "science"}, {"id": 7, "text": "Nile."})
    stats = ReadStats()
    passages = list(read_passages(f, stats=stats))
    assert [(p.id, p.fields) for p in passages] == [("dino-1", {"topic": "science"}), ("7", {})]
    assert stats.id_field == "id"
    assert [p.id for p in read(f, id_field="id")] == ["dino-1", "7"]


def test_empty_id_field_hashes_the_text(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"id": "dino-1", "text": "T. rex."})
    stats = ReadStats()
    [p] = read_passages(f, id_field="", stats=stats)
    assert (p.id, p.fields, stats.id_field) == (text_id("T. rex."), {"id": "dino-1"}, None)


def test_id_column_is_the_id_by_default_in_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_file = write(tmp_path / "a.csv", "text,id\nHello,h-1\n")
    parquet_file = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["p-1"], "text": ["Rome is old."]}), parquet_file)
    assert [(p.id, p.fields) for p in read(csv_file)] == [("h-1", {})]
    assert [p.id for p in read(parquet_file)] == ["p-1"]
    assert [p.id for p in read(csv_file, id_field="")] == [text_id("Hello")]


def test_default_id_missing_later_says_how_to_hash_instead(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"id": "a", "text": "x"}, {"text": "y"})
    err = error_of(f)
    assert_names(err, f, 2)
    assert "missing id field 'id'" in err.reason and "--id-field ''" in err.reason


def test_an_id_after_a_first_record_without_one_is_refused_not_kept_as_metadata(tmp_path):
    # hashed ids for the file and "id" as a field would store every passage again when the file is
    # indexed once more with its ids; the explicit hash (--id-field '') keeps the id as metadata
    f = jsonl(tmp_path / "a.jsonl", {"text": "x"}, {"id": "b", "text": "y"})
    err = error_of(f)
    assert_names(err, f, 2)
    assert "has an 'id' field but the first record has none" in err.reason and "--id-field ''" in err.reason
    assert [p.fields for p in read_passages(f, id_field="")] == [{}, {"id": "b"}]


def test_jsonl_blank_lines_bom_crlf_and_text_kept_exactly(tmp_path):
    content = '\n{"text": "  first  "}\r\n\n   \n{"text": "second\\nline"}\n'
    f = write(tmp_path / "a.jsonl", b"\xef\xbb\xbf" + content.encode())
    assert [p.text for p in read(f)] == ["  first  ", "second\nline"]


def test_a_bom_inside_a_jsonl_file_is_named_as_such(tmp_path):
    """An audit: files joined with cat kept the second one's BOM, refused as "Unexpected UTF-8 BOM
    (decode using utf-8-sig)"."""
    f = write(tmp_path / "a.jsonl", b'{"text": "one"}\n\xef\xbb\xbf{"text": "two"}\n')
    err = error_of(f)
    assert_names(err, f, 2)
    assert "byte-order mark (U+FEFF) opens this line" in err.reason and "utf-8-sig" not in err.reason


def test_a_txt_file_of_no_word_is_empty_as_a_blank_one_is(tmp_path):
    """The review: a .txt file of zero-width spaces was stored, then failed (exit 1), where a blank
    one was refused at reading (exit 2)."""
    f = write(tmp_path / "zw.txt", "\u200b\u200b\n")
    err = error_of(f)
    assert err.path == str(f) and "the file is empty (no word in it)" in err.reason


def test_jsonl_gzip(tmp_path):
    f = tmp_path / "a.jsonl.gz"
    f.write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    assert resolve_format(f) == "jsonl"
    assert [p.text for p in read(f)] == ["zipped"]


def test_csv_header_fields_and_quoted_newlines(tmp_path):
    f = write(tmp_path / "a.csv", 'id,text,source\n1,"Hello, ""world""\nsecond line",web\n\n2,Bye,\n')
    passages = read(f, id_field="id")
    assert [(p.id, p.text, p.fields) for p in passages] == [
        ("1", 'Hello, "world"\nsecond line', {"source": "web"}),
        ("2", "Bye", {"source": ""}),
    ]


def test_csv_line_numbers_count_file_lines(tmp_path):
    # the record after a two-line quoted field and a blank line starts on line 5
    f = write(tmp_path / "a.csv", 'text,n\n"a\nb",1\n\n ,2\n')
    err = error_of(f)
    assert_names(err, f, 5)
    assert "empty" in err.reason


def test_csv_bom_and_unnamed_index_column(tmp_path):
    f = write(tmp_path / "a.csv", b"\xef\xbb\xbf,text,lang\n0,Bonjour,fr\n")
    [p] = read(f)
    assert (p.text, p.fields) == ("Bonjour", {"lang": "fr"})


def test_tsv(tmp_path):
    f = write(tmp_path / "a.tsv", "key\ttext\tyear\nk1\tA tab-separated, passage.\t2020\n")
    [p] = read(f, id_field="key")
    assert (p.id, p.text, p.fields) == ("k1", "A tab-separated, passage.", {"year": "2020"})


def test_parquet(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    table = pa.table({
        "doc_id": [10, 11],
        "text": ["Rome is old.", "Oslo is cold."],
        "day": [dt.date(2024, 1, 2), None],
        "score": [0.5, float("nan")],
        "tags": [["a"], []],
    })
    pq.write_table(table, f)
    passages = read(f, id_field="doc_id")
    assert [p.id for p in passages] == ["10", "11"]
    assert passages[0].fields == {"day": "2024-01-02", "score": 0.5, "tags": ["a"]}
    assert passages[1].fields == {"day": None, "score": None, "tags": []}
    json.dumps([p.fields for p in passages])  # fields are JSON-serialisable


def test_a_parquet_index_without_a_name_is_left_out_and_a_named_one_kept(tmp_path):
    """A docs audit: pandas writes a filtered frame's index as ``__index_level_0__``, which was kept
    as metadata where the README says a nameless index column is left out (as in CSV). A named
    index is a column like any other. (The metadata is pandas' own format, written here by hand.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def written(name: str, index: str, extra: dict) -> Path:
        table = pa.table({"id": ["a", "b"], "text": ["Rome is old.", "Oslo is cold."], index: [7, 5], **extra})
        meta = {"index_columns": [index], "columns": [], "pandas_version": "2.2.0"}
        table = table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})
        pq.write_table(table, tmp_path / name)
        return tmp_path / name

    unnamed = read(written("u.parquet", "__index_level_0__", {"__index_level_1__": [1, 2]}))
    assert [p.fields for p in unnamed] == [{"__index_level_1__": 1}, {"__index_level_1__": 2}]  # not listed: kept
    named = read(written("n.parquet", "row", {}))
    assert [p.fields for p in named] == [{"row": 7}, {"row": 5}]


def test_parquet_values_are_stored_as_written(tmp_path):
    """An audit's Parquet cases: float32 as the decimal it holds (a --where f=0.1 matches it),
    nanosecond timestamps as ISO text (they raised), ±inf and decimals a float64 would round
    refused (they became null and a rounded number), a column twice in the schema refused (the
    last one won)."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({
        "id": ["a"], "text": ["Rome is old."], "f32": pa.array([0.1], pa.float32()), "f16": pa.array([0.1], pa.float16()),
        "ts": pa.array([1700000000123456789], pa.timestamp("ns")), "dec": pa.array([decimal.Decimal("12.30")], pa.decimal128(20, 2)),
    }), f)
    (passage,) = read(f)
    assert passage.fields == {"f32": 0.1, "f16": 0.1, "ts": "2023-11-14T22:13:20.123456789", "dec": 12.3}
    # nanosecond timestamps without nanoseconds (pandas' default unit) read as microsecond ones did (a review)
    instants = [1577836800000000000, 1577836800123456000, None]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"],
                             "ns": pa.array(instants, pa.timestamp("ns", "America/New_York")),
                             "us": pa.array([None if v is None else v // 1000 for v in instants], pa.timestamp("us", "America/New_York"))}), f)
    rows = [p.fields for p in read(f)]
    assert [r["ns"] for r in rows] == [r["us"] for r in rows] == ["2019-12-31T19:00:00-05:00", "2019-12-31T19:00:00.123456-05:00", None]
    for name, column in (("inf", pa.array([float("-inf")])), ("big", pa.array([decimal.Decimal("12345678901234567.89")], pa.decimal128(20, 2)))):
        pq.write_table(pa.table({"id": ["a"], "text": ["x"], name: column}), f)
        err = error_of(f)
        assert_names(err, f, 1, unit="row")
        assert ("not finite" if name == "inf" else "more digits than a number keeps") in err.reason
        assert f"column {name!r}: cannot convert a value" in err.reason  # which column (an audit: a wide table)
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["x"]), pa.array([1]), pa.array([2])],
                                        names=["id", "text", "n", "n"]), f)
    assert error_of(f).reason == "column 'n' appears twice in the schema"


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    f = write(tmp_path / "a.parquet", b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(NerindexError, match=r"\[parquet\]"):
        read(f)


def test_a_folder_is_read_as_what_its_files_are(tmp_path):
    """An audit: a folder of CoNLL .txt files (CrossNER's layout) was indexed a whole file a passage,
    tags and all, and .conll files beside a .txt were left out without a word."""
    tagged = "Barack\tB-PER\nObama\tI-PER\nvisited\tO\nParis\tB-LOC\n\n"
    crossner = tmp_path / "crossner"
    write(crossner / "politics" / "dev.txt", tagged)
    write(crossner / "literature" / "dev.txt", tagged.replace("Paris", "Rome"))
    assert [p.text for p in read(crossner)] == ["Barack Obama visited Rome", "Barack Obama visited Paris"]
    only_conll = tmp_path / "conll"
    write(only_conll / "dev.conll", tagged)
    assert [p.text for p in read(only_conll)] == ["Barack Obama visited Paris"]
    write(only_conll / "readme.txt", "How these files were made.")
    err = error_of(only_conll)
    assert "holds both plain text (readme.txt) and CoNLL files (dev.conll)" in err.reason
    assert [p.text for p in read(only_conll, format="txt")] == ["How these files were made."]
    assert [p.text for p in read(only_conll, format="conll")] == ["Barack Obama visited Paris"]  # readme.txt left out
    assert "--format conll" in err.reason and "--format txt" in err.reason


def test_a_conll_txt_file_with_a_bom_or_a_mistyped_tag_is_read_as_conll(tmp_path):
    """An audit: a BOM hid a CoNLL .txt file's first line from the sniff, and one mistyped tag
    among its first lines made it prose: stored a whole file a passage, tags and all, or dropped
    from a folder read with --format conll without a word. Now it is CoNLL, and the typo is named
    at its line; a folder's prose .txt files are named among what it leaves out."""
    tagged = "# id 1\tdomain=en\nParis _ _ B-LOC\nis _ _ O\nnice _ _ O\n\n"
    bom = write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + tagged.encode())
    assert [(p.text, [(g.start, g.end) for g in p.gold]) for p in read(bom)] == [("Paris is nice", [(0, 5)])]
    typo = write(tmp_path / "typo" / "b.txt", "EU\tB-ORG\nrejects\tO\nGerman\tB_MISC\ncall\tO\n")
    assert_names(error_of(typo), typo, 3)
    folder = typo.parent
    write(folder / "a.txt", "Paris\tB-LOC\nis\tO\n")
    assert_names(error_of(folder), typo, 3)
    assert_names(error_of(folder, format="conll"), typo, 3)
    typo.unlink()
    write(folder / "readme.txt", "How these files were made.")
    stats = ReadStats()
    assert [p.text for p in read(folder, format="conll", stats=stats)] == ["Paris is"]
    assert stats.left_out == ["readme.txt"]
    # prose of short lines whose last words are no mistyped tags stays prose (a review)
    for name, prose in (("planes.txt", "Boeing B-52\nRockwell B-1\nNorthrop B-2\nLockheed F-117\n"),
                        ("list.txt", "Shopping list\nMilk O\nEggs O\nBread O\n")):
        assert [p.text for p in read(write(tmp_path / name, prose))] == [prose]


def test_a_refused_first_record_does_not_decide_where_ids_come_from(tmp_path):
    """An audit: with --on-error skip, a first line without a text (an export note) decided that the
    file had no ids, and every later record with one was refused for it."""
    f = jsonl(tmp_path / "a.jsonl", {"note": "exported 2024"}, {"id": "a", "text": "Paris."}, {"id": "b", "text": "Rome."})
    stats = ReadStats()
    assert [p.id for p in read(f, on_error="skip", stats=stats)] == ["a", "b"]
    assert stats.id_field == "id"


def test_txt_folder(tmp_path):
    root = tmp_path / "docs"
    write(root / "b.txt", "Second file.\n")
    write(root / "a.txt", "First file.")
    write(root / "sub" / "c.TXT", b"\xef\xbb\xbfNested.")
    write(root / "notes.md", "not a passage")
    write(root / ".hidden" / "d.txt", "hidden")
    passages = read(root)
    assert [(p.id, p.text, p.fields) for p in passages] == [
        ("a.txt", "First file.", {"path": "a.txt"}),
        ("b.txt", "Second file.\n", {"path": "b.txt"}),
        ("sub/c.TXT", "Nested.", {"path": "sub/c.TXT"}),
    ]


def test_single_prose_txt_file(tmp_path):
    f = write(tmp_path / "essay.txt", "It was a dark and stormy night.\nThe end.\n")
    assert resolve_format(f) == "txt"
    [p] = read(f)
    where = f.resolve().as_posix()
    assert (p.id, p.fields) == (where, {"path": where})


def test_single_txt_files_of_one_name_are_two_passages(tmp_path):
    """The bare file name was the id: b/notes.txt was skipped as "already stored" after a/notes.txt."""
    a = write(tmp_path / "a" / "notes.txt", "Barack Obama visited Berlin.")
    b = write(tmp_path / "b" / "notes.txt", "Angela Merkel met Macron.")
    assert read(a)[0].id != read(b)[0].id


CONLL = "-DOCSTART- O\n\nAngela\tB-PER\nMerkel\tI-PER\nvisited\tO\nParis\tB-LOC\n\nHi\tO\n"


def test_conll_file_with_gold(tmp_path):
    f = write(tmp_path / "a.conll", CONLL)
    passages = read(f)
    assert [p.text for p in passages] == ["Angela Merkel visited Paris", "Hi"]
    assert [(g.start, g.end, g.label) for g in passages[0].gold] == [(0, 13, "PER"), (22, 27, "LOC")]
    assert passages[0].fields == {"source": "a.conll", "line": 3}


def test_conll_bom_and_a_hash_token_opening_a_sentence(tmp_path):
    """A BOM made "-DOCSTART-" a passage; "# O" opening a sentence was read as a header."""
    f = write(tmp_path / "a.conll", b"\xef\xbb\xbf-DOCSTART- O\n\nEU B-ORG\nrejects O\n\n# O\nhashtag O\nBarack B-PER\n\n")
    assert [p.text for p in read(f)] == ["EU rejects", "# hashtag Barack"]


def test_a_hash_token_opening_a_sentence_of_a_four_column_file_is_a_token(tmp_path):
    """A reader audit: in CoNLL-2003's 'token POS chunk tag' lines, "# NN B-NP O" opening a sentence
    was taken for a header and the sentence lost its first token; a comment stays a header."""
    f = write(tmp_path / "a.conll", "-DOCSTART- -X- -X- O\n\n# NN B-NP O\n1 CD I-NP O\nSampras NNP I-NP B-PER\n\n"
                                    "# a comment line\nWon VBD B-VP O\n")
    passages = read(f)
    assert [p.text for p in passages] == ["# 1 Sampras", "Won"]
    assert [(g.start, g.end, g.label) for g in passages[0].gold] == [(4, 11, "PER")]


def test_bilou_tags_are_read_as_their_bioes_twins(tmp_path):
    """A reader audit: spaCy's BILUO tags (U- one token, L- the last) were no tags, so a .txt file
    of them was stored as one prose passage, tags and all, and a .conll file refused."""
    rows = "EU\tU-ORG\nrejects\tO\nPeter\tB-PER\nBlackburn\tL-PER\n"
    for name in ("a.txt", "a.conll"):
        [passage] = read(write(tmp_path / name, rows))
        assert passage.text == "EU rejects Peter Blackburn"
        assert [(g.start, g.end, g.label) for g in passage.gold] == [(0, 2, "ORG"), (11, 26, "PER")]


def test_a_conll_txt_file_with_a_header_row_is_refused_naming_it(tmp_path):
    """A reader audit: a tab-separated header row ("token<TAB>label") made a CoNLL .txt file look like
    prose, stored as one passage, tags and all; the same file as .conll was refused at line 1."""
    f = write(tmp_path / "a.txt", "token\tlabel\nEU\tB-ORG\nrejects\tO\nGerman\tB-MISC\n")
    err = error_of(f)
    assert_names(err, f, 1)
    assert "not a BIO/IO tag: 'label'" in err.reason


def test_a_bom_opening_a_line_inside_a_conll_file_is_no_token(tmp_path):
    """The train audit (round 29): two files joined with cat kept the second's BOM on a token
    ("\ufeffEmpire"), and training lost that gold mention (and trained the span as no entity); a
    line of a lone U+FEFF (a review: tweets hold it) is a blank token, as before."""
    f = write(tmp_path / "a.conll", b"EU B-ORG\nrejects O\n\n\xef\xbb\xbfEmpire B-LOC\nState I-LOC\n"
                                    b"\xef\xbb\xbf\tO\nrises O\n\n")
    passages = read(f)
    assert [p.text for p in passages] == ["EU rejects", "Empire State rises"]
    assert [(g.start, g.end, g.label) for g in passages[1].gold] == [(0, 12, "LOC")]


def test_a_header_after_a_sentence_without_a_blank_line_opens_the_next_sentence(tmp_path):
    """An audit: a MultiCoNER '# id' header right after a sentence was absorbed, and the two
    sentences were read as one passage (the second's gold spans shifted into it)."""
    f = write(tmp_path / "a.conll", "# id 1\tdomain=en\nBarack _ _ B-PER\nObama _ _ I-PER\n"
                                    "# id 2\tdomain=en\nParis _ _ B-LOC\n\n")
    passages = read(f)
    assert [p.text for p in passages] == ["Barack Obama", "Paris"]
    assert [[(g.start, g.end, g.label) for g in p.gold] for p in passages] == [[(0, 12, "PER")], [(0, 5, "LOC")]]
    assert [s.header for s in iter_sentences(f)] == ["id 1\tdomain=en", "id 2\tdomain=en"]


def test_conll_lines_keep_the_files_column_count_and_one_tag(tmp_path):
    """An audit: "New York B-location" in a 'token tag' file became the token "New" ("York" lost),
    and "Obama<TAB>B-politician extra" a tag with a space in it, refused much later with no line."""
    f = write(tmp_path / "a.conll", "Obama\tB-PER\nvisited\tO\n\nNew York B-LOC\nis\tO\n")
    with pytest.raises(InputError, match="3 columns where line 1 has 2") as err:
        list(iter_sentences(f))
    assert err.value.line == 4
    g = write(tmp_path / "b.conll", "Obama\tB-politician extra\n")
    with pytest.raises(InputError, match="not a BIO/IO tag") as err:
        list(iter_sentences(g))
    assert err.value.line == 1
    four = write(tmp_path / "c.conll", "Barack _ _ B-PER\nObama _ _ I-PER\n")  # MultiCoNER's four columns
    assert [s.tokens for s in iter_sentences(four)] == [("Barack", "Obama")]


def test_a_dropped_blank_token_still_ends_an_entity(tmp_path):
    """An audit: a white-space-only token is dropped (tweets), and its tag went with it, so "Paris
    B-city / ' ' O / London I-city" was one gold mention "Paris London"; a blank inside an entity
    (tagged I-) still joins it, and in BIOES a blank that begins one makes the next E- a whole one."""
    f = write(tmp_path / "a.conll", "Paris\tB-city\n \tO\nLondon\tI-city\n\n"
                                    "New\tB-city\n \tI-city\nYork\tI-city\n\n"
                                    "Rome\tS-city\n \tB-city\nOslo\tE-city\n\n")
    spans = [[(p.text[g.start:g.end], g.label) for g in p.gold] for p in read(f)]
    assert spans == [[("Paris", "city"), ("London", "city")], [("New York", "city")],
                     [("Rome", "city"), ("Oslo", "city")]]


def test_txt_file_that_looks_like_conll_is_conll_unless_overridden(tmp_path):
    f = write(tmp_path / "train.txt", CONLL)
    assert looks_like_conll(f)
    assert resolve_format(f) == "conll"
    assert len(read(f)) == 2
    [whole] = read(f, format="txt")
    assert whole.text == CONLL


def test_conll_folder_uses_relative_paths(tmp_path):
    write(tmp_path / "x" / "dev.txt", "Oslo\tB-LOC\n")
    write(tmp_path / "y" / "dev.txt", "Oslo\tB-LOC\n")
    write(tmp_path / "README.md", "# docs\n")
    passages = read(tmp_path, format="conll")
    assert [p.fields["source"] for p in passages] == ["x/dev.txt", "y/dev.txt"]
    assert len({p.id for p in passages}) == 2


@pytest.mark.parametrize("name, fmt", [
    ("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.csv", "csv"), ("a.tsv", "tsv"), ("a.tab", "tsv"),
    ("a.parquet", "parquet"), ("a.pq", "parquet"), ("a.conll", "conll"), ("a.bio", "conll"),
    ("a.iob", "conll"), ("a.csv.gz", "csv"),
])
def test_format_by_extension(tmp_path, name, fmt):
    assert resolve_format(write(tmp_path / name, ""), "auto") == fmt


def test_format_override(tmp_path):
    f = jsonl(tmp_path / "records.json", {"text": "override"})
    assert [p.text for p in read(f, format="jsonl")] == ["override"]


def test_unknown_extension_asks_for_a_format(tmp_path):
    f = jsonl(tmp_path / "records.json", {"text": "x"})
    err = error_of(f)
    assert_names(err, f, None)
    assert "format" in err.reason


def test_folder_with_a_one_file_format(tmp_path):
    err = error_of(tmp_path, format="jsonl")
    assert_names(err, tmp_path, None)
    assert "folder" in err.reason


def test_id_field_does_not_apply_to_txt(tmp_path):
    f = write(tmp_path / "a.txt", "prose")
    with pytest.raises(InputError, match="id_field"):
        read_passages(f, id_field="id")


def test_bad_arguments_raise_value_error(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": "x"})
    with pytest.raises(ValueError):
        read_passages(f, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        read_passages(f, format="xml")  # type: ignore[arg-type]


def test_reading_is_lazy(tmp_path):
    f = write(tmp_path / "a.jsonl", '{"text": "ok"}\nnot json\n')
    it = read_passages(f)
    assert next(it).text == "ok"
    with pytest.raises(InputError):
        next(it)


# ------------------------------------------------------------------------------------- bad input


def test_an_integer_too_long_to_read_is_named_in_our_words(tmp_path):
    """An audit: Python's message told a CLI user to call sys.set_int_max_str_digits()."""
    f = write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"text": "x", "n": ' + "9" * 5000 + "}\n")
    err = error_of(f)
    assert_names(err, f, 2)
    assert "an integer of 5000 digits" in err.reason and "sys." not in err.reason


def test_malformed_json_line(tmp_path):
    f = write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"text": "broken"\n')
    err = error_of(f)
    assert_names(err, f, 2)
    assert "malformed JSON" in err.reason


def test_unclosed_quote_in_csv_names_the_record_not_the_end(tmp_path):
    """The lenient csv reader took the rest of the file into the quoted field: one passage instead
    of three, and no error."""
    f = write(tmp_path / "a.csv", 'id,text\n1,"Barack Obama visited Berlin.\n2,Angela Merkel met Macron.\n3,Tokyo.\n')
    err = error_of(f)
    assert_names(err, f, 2)
    assert "not closed" in err.reason


def test_a_tsv_quote_that_takes_in_the_next_record_is_refused(tmp_path):
    """An audit: a text opening with a quote and a later one ending with one made records 1 and 2
    one passage (record 2's id and text inside record 1's text, record 1's src lost), exit 0."""
    f = write(tmp_path / "m.tsv", 'id\ttext\tsrc\n1\t"Obama said we shall fight.\tweb\n'
                                  '2\tMerkel said we shall not surrender."\tnews\n3\tfine\tx\n')
    err = error_of(f)
    assert_names(err, f, 2)
    assert "holds a line that starts like a record, a value and a tab" in err.reason and "unbalanced quote" in err.reason
    stats = ReadStats()
    assert [p.id for p in read_passages(f, on_error="skip", stats=stats)] == ["3"]
    # a quoted text with a line break and no tab is a text; so is one indented with tabs (a review:
    # pandas' to_csv(sep="\t") quotes it, and it was refused)
    ok = write(tmp_path / "ok.tsv", 'id\ttext\n1\t"two\nlines"\n2\t"A poem:\n\tindented line\n\t\tdeeper"\n')
    assert [p.text for p in read(ok)] == ["two\nlines", "A poem:\n\tindented line\n\t\tdeeper"]


def test_a_tsv_quote_opened_in_the_first_column_that_takes_in_the_next_record_is_refused(tmp_path):
    """A reader audit: with the text first, '"I came.' and 'I saw."' made one passage (record 1's id
    inside its text, record 2's id on it), exit 0: the tab was on the quoted field's first line,
    before its line break, where the check did not look."""
    f = write(tmp_path / "s.tsv", 'text\tid\n"I came.\ts1\nI saw."\ts2\nI conquered.\ts3\n')
    err = error_of(f)
    assert_names(err, f, 2)
    assert "unbalanced quote" in err.reason and "'I came.\\ts1'" in err.reason
    assert [p.id for p in read_passages(f, on_error="skip")] == ["s3"]


def test_a_utf16_csv_without_a_bom_is_named_as_such(tmp_path):
    """A reader audit: "no column 'text' (columns: 'i\\x00d\\x00', ...)" said nothing of UTF-16."""
    f = write(tmp_path / "a.csv", "id,text\n1,a\n".encode("utf-16-le"))
    err = error_of(f)
    assert_names(err, f, 1)
    assert "a UTF-16 file without a byte-order mark? save it as UTF-8" in err.reason


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_bom_inside_a_csv_or_tsv_file_is_named_as_such(tmp_path, suffix):
    """A reader audit: two exports joined with cat (each opened by a BOM, as Excel's "CSV UTF-8"
    writes) gave the second header as a passage, id '\ufeffid', and a row '\ufeff1' that is no
    duplicate of '1'; JSONL refuses the same join."""
    sep = "," if suffix == ".csv" else "\t"
    one = f"id{sep}text\n1{sep}Obama spoke.\n"
    f = write(tmp_path / f"joined{suffix}", b"\xef\xbb\xbf" + one.encode() + b"\xef\xbb\xbf" + one.encode())
    err = error_of(f)
    assert_names(err, f, 3)
    assert "byte-order mark (U+FEFF) opens this line: files joined together" in err.reason


def test_stray_quote_at_a_tsv_field_start_is_refused_not_dropped(tmp_path):
    """`"Dune" is a novel` was read as `Dune is a novel`: the quotes were lost without a word. In a
    file whose header is quoted (a writer that quotes) it is refused; in one whose header has no
    quote (a writer that never quotes) it is the text as written (an audit: refused there too)."""
    f = write(tmp_path / "a.tsv", '"id"\t"text"\n1\tfine\n2\t"Dune" is a novel by Frank Herbert.\n')
    assert_names(error_of(f), f, 3)
    g = write(tmp_path / "b.tsv", 'id\ttext\n1\tfine\n2\t"Dune" is a novel by Frank Herbert.\n')
    assert read(g)[1].text == '"Dune" is a novel by Frank Herbert.'


def test_a_lone_surrogate_escape_is_bad_input_not_a_traceback(tmp_path):
    """JSON may spell a lone surrogate (\\ud800), which UTF-8 cannot hold: storing it raised
    UnicodeEncodeError after earlier chunks were written."""
    f = write(tmp_path / "a.jsonl", '{"text": "fine"}\n{"text": "Barack \\ud800 Obama"}\n')
    err = error_of(f)
    assert_names(err, f, 2)
    assert "surrogate" in err.reason
    g = write(tmp_path / "b.jsonl", '{"text": "ok", "meta": {"tags": ["x", "\\udc80"]}}\n')
    assert "surrogate" in error_of(g).reason


def test_a_metadata_string_starting_with_a_type_mark_is_refused_by_line(tmp_path):
    """Stored numbers and booleans are compared as texts that start with U+FDD0 / U+FDD1: a metadata
    string "\ufdd02020" matched --where year=2020 as if it were the number (the last note's left-alone
    item). Such a record is now bad input, named by line; the mark inside a string or in the text is fine."""
    f = jsonl(tmp_path / "a.jsonl", {"text": "fine", "year": "x\ufdd0"}, {"text": "Dune.", "year": "\ufdd02020"})
    err = error_of(f)
    assert_names(err, f, 2)
    assert "field 'year' starts with U+FDD0, a character nerindex reserves" in err.reason
    g = jsonl(tmp_path / "b.jsonl", {"text": "\ufdd1true story", "tags": ["a", "\ufdd1true"]})
    assert "field 'tags' starts with U+FDD1" in error_of(g).reason
    h = jsonl(tmp_path / "c.jsonl", {"text": "fine", "f": "a\u0000b"})
    assert_names(err := error_of(h), h, 1)
    assert "field 'f' holds a NUL character (U+0000) at character 2" in err.reason


def test_nan_is_not_json(tmp_path):
    f = write(tmp_path / "a.jsonl", '{"text": "ok", "score": NaN}\n')
    assert_names(error_of(f), f, 1)


def test_line_that_is_not_an_object(tmp_path):
    f = write(tmp_path / "a.jsonl", '{"text": "ok"}\n\n["a list"]\n')
    err = error_of(f)
    assert_names(err, f, 3)
    assert "expected a JSON object, got array" in err.reason


def test_missing_text_field(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": "ok"}, {"body": "no text key"})
    err = error_of(f)
    assert_names(err, f, 2)
    assert "missing text field 'text'" in err.reason


def test_text_not_a_string(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": 42})
    err = error_of(f)
    assert_names(err, f, 1)
    assert "not a string" in err.reason


def test_empty_text(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": "ok"}, {"text": " \t\n "})
    err = error_of(f)
    assert_names(err, f, 2)
    assert "empty" in err.reason


def test_missing_id_field(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"id": 1, "text": "a"}, {"text": "b"})
    err = error_of(f, id_field="id")
    assert_names(err, f, 2)
    assert "missing id field 'id'" in err.reason


def test_id_of_the_wrong_type(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"id": [1], "text": "a"})
    err = error_of(f, id_field="id")
    assert_names(err, f, 1)
    assert "not a string or integer" in err.reason


def test_invalid_utf8_jsonl(tmp_path):
    f = write(tmp_path / "a.jsonl", b'{"text": "ok"}\n{"text": "ok2"}\n{"text": "caf\xe9"}\n')
    err = error_of(f)
    assert_names(err, f, 3)
    assert "UTF-8" in err.reason


def test_invalid_utf8_csv(tmp_path):
    f = write(tmp_path / "a.csv", b'text\nfine\n"multi\nline \xff"\n')
    err = error_of(f)
    assert_names(err, f, 4)
    assert "UTF-8" in err.reason


def test_invalid_utf8_txt_file_names_the_line(tmp_path):
    f = write(tmp_path / "d" / "a.txt", b"line one\nline \xff two\n")
    err = error_of(tmp_path / "d")
    assert_names(err, f, 2)


@pytest.mark.parametrize("name, content", [
    ("a.jsonl", ""), ("b.jsonl", "\n  \n\n"), ("c.csv", ""), ("d.csv", "text,id\n"), ("e.tsv", "text\n\n"),
    ("f.conll", "-DOCSTART- O\n\n"),
])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_empty_input_is_an_error_even_when_skipping(tmp_path, name, content, on_error):
    f = write(tmp_path / name, content)
    err = error_of(f, on_error=on_error)
    assert_names(err, f, None)
    assert "no passages" in err.reason


def test_empty_folder(tmp_path):
    write(tmp_path / "notes.md", "x")
    err = error_of(tmp_path)
    assert_names(err, tmp_path, None)


def test_empty_txt_file_in_folder(tmp_path):
    write(tmp_path / "a.txt", "fine")
    f = write(tmp_path / "b.txt", "  \n")
    err = error_of(tmp_path)
    assert_names(err, f, None)
    assert "empty" in err.reason


def test_missing_file(tmp_path):
    f = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as info:
        read_passages(f)  # raised at call time, before iteration
    assert_names(info.value, f, None)
    assert "no such file" in info.value.reason


def test_unreadable_file(tmp_path, monkeypatch):
    f = jsonl(tmp_path / "a.jsonl", {"text": "x"})

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(structured, "open", denied, raising=False)
    err = error_of(f)
    assert_names(err, f, None)
    assert "Permission denied" in err.reason


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_permissions(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": "x"})
    f.chmod(0)
    try:
        assert_names(error_of(f), f, None)
    finally:
        f.chmod(0o644)


def test_duplicate_id_names_both_lines(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"})
    err = error_of(f, id_field="id")
    assert_names(err, f, 3)
    assert "duplicate id 'a'" in err.reason and "line 1" in err.reason


def test_duplicate_text_without_id_field(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"text": "same"}, {"text": "other"}, {"text": "same"})
    err = error_of(f)
    assert_names(err, f, 3)
    assert "same text as line 1" in err.reason


def test_duplicate_id_csv_uses_file_lines(tmp_path):
    f = write(tmp_path / "a.csv", 'id,text\n1,"two\nlines"\n1,again\n')
    err = error_of(f, id_field="id")
    assert_names(err, f, 4)
    assert "line 2" in err.reason


def test_csv_missing_text_column_fails_even_when_skipping(tmp_path):
    f = write(tmp_path / "a.csv", "\nbody,id\nx,1\n")
    err = error_of(f, on_error="skip")
    assert_names(err, f, 2)
    assert "no column 'text'" in err.reason and "'body'" in err.reason


def test_csv_wrong_number_of_columns(tmp_path):
    f = write(tmp_path / "a.csv", "text,lang\nok,en\ntoo,many,cells\n")
    err = error_of(f)
    assert_names(err, f, 3)
    assert "expected 2 columns, got 3" in err.reason


def test_parquet_row_errors_say_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "text": ["x", "", "z"]}), f)
    err = error_of(f, id_field="id")
    assert_names(err, f, 2, unit="row")
    assert err.reason.startswith("row 2:") and "empty" in err.reason
    stats = ReadStats()
    passages = list(read_passages(f, id_field="id", on_error="skip", stats=stats))
    assert [p.id for p in passages] == ["a"]
    assert (stats.read, stats.skipped) == (1, 2)
    assert stats.errors[1].startswith(f"{f}: row 3: duplicate id 'a' (first at row 1)")


def test_parquet_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"]}), f)
    err = error_of(f, on_error="skip")
    assert_names(err, f, None)
    assert "no column 'text'" in err.reason


def test_not_a_parquet_file(tmp_path):
    f = write(tmp_path / "a.parquet", "this is not parquet")
    assert_names(error_of(f), f, None)


def test_malformed_conll_line(tmp_path):
    f = write(tmp_path / "a.conll", "Oslo\tB-LOC\nis\tNOT-A-TAG\n")
    assert_names(error_of(f), f, 2)


# ------------------------------------------------------------------------------------- skip mode


def test_skip_mode_counts_and_keeps_messages(tmp_path):
    f = write(
        tmp_path / "a.jsonl",
        '{"text": "one"}\nnot json\n[1]\n{"text": ""}\n{"text": "one"}\n{"text": "two", "k": 1}\n',
    )
    stats = ReadStats()
    passages = list(read_passages(f, on_error="skip", stats=stats))
    assert [p.text for p in passages] == ["one", "two"]
    assert (stats.read, stats.skipped, stats.format) == (2, 4, "jsonl")
    assert [m.split(": ")[0] for m in stats.errors] == [f"{f}:{n}" for n in (2, 3, 4, 5)]


def test_skip_mode_keeps_only_the_first_messages(tmp_path):
    from indexer.reading import MAX_ERROR_MESSAGES

    f = write(tmp_path / "a.csv", "text\n" + "\n".join(['" "'] * (MAX_ERROR_MESSAGES + 5) + ["fine"]) + "\n")
    stats = ReadStats()
    assert [p.text for p in read_passages(f, on_error="skip", stats=stats)] == ["fine"]
    assert stats.skipped == MAX_ERROR_MESSAGES + 5
    assert len(stats.errors) == MAX_ERROR_MESSAGES


def test_skip_mode_with_nothing_valid_is_an_error(tmp_path):
    f = write(tmp_path / "a.jsonl", "nope\n{}\n")
    stats = ReadStats()
    err = error_of(f, on_error="skip", stats=stats)
    assert_names(err, f, None)
    assert "all 2 records were skipped" in err.reason
    assert stats.skipped == 2


# ----------------------------------------------------------------------------- the shipped data


def data_files() -> list[Path]:
    if not DATA.is_dir():
        return []
    return sorted(p for p in DATA.rglob("*") if p.suffix in (".conll", ".txt"))


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no labelled data at {DATA}")
@pytest.mark.parametrize("path", data_files(), ids=lambda p: str(p.relative_to(DATA)))
def test_shared_data_reads(path):
    stats = ReadStats()
    passages = list(read_passages(path, stats=stats))
    assert stats.format == "conll"
    assert stats.skipped == 0 and len(passages) == stats.read > 0
    assert any(p.gold for p in passages)
    for p in passages[:50]:
        for g in p.gold:
            assert p.text[g.start:g.end].strip() == p.text[g.start:g.end] != ""


# --- input problems an audit (December 2026) found: each refused by line before anything is
# written, or skipped with --on-error skip, instead of a half-written store, a traceback or a wrong line


def skipped(path: Path, **kwargs) -> tuple[list, ReadStats]:
    stats = ReadStats()
    return list(read_passages(path, on_error="skip", stats=stats, **kwargs)), stats


def bad_name(folder: Path, name: bytes, content: bytes) -> Path:
    """A file whose name is not valid UTF-8 (``os.fsdecode`` gives it lone surrogates)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
            fh.write(content)
    except OSError:
        pytest.skip("this file system refuses file names that are not valid UTF-8")
    return folder / os.fsdecode(name)


# F1: 1e400 became inf through json.loads; the store's write failed half-way through the run
@pytest.mark.parametrize("number", ["1e400", "-1e999"])
def test_a_jsonl_number_beyond_a_double_is_refused_by_line(tmp_path, number):
    f = write(tmp_path / "a.jsonl", f'{{"id": "a", "text": "Paris."}}\n{{"id": "b", "text": "Oslo.", "x": {number}}}\n')
    err = error_of(f)
    assert (err.path, err.line) == (str(f), 2)
    assert number in err.reason and "range" in err.reason
    passages, stats = skipped(f)
    assert [p.id for p in passages] == ["a"] and stats.skipped == 1


# F2: a truncated .gz raised EOFError (the CLI said "aborted", exit 130), a corrupt one zlib.error
def test_a_damaged_gzip_file_is_an_input_error(tmp_path, capsys):
    data = gzip.compress(b"".join(b'{"id": "g%d", "text": "Paris %d."}\n' % (i, i) for i in range(2000)))
    truncated = write(tmp_path / "t.jsonl.gz", data[:-20])
    err = error_of(truncated)
    assert err.path == str(truncated) and "truncated" in err.reason
    flipped = bytearray(data)
    flipped[200:260] = bytes(b ^ 0x55 for b in flipped[200:260])
    corrupt = write(tmp_path / "c.jsonl.gz", bytes(flipped))
    assert "damaged compressed data" in error_of(corrupt).reason
    rows = b"".join(b"a%d,Paris %d\n" % (i, i) for i in range(2000))
    csv_gz = write(tmp_path / "t.csv.gz", gzip.compress(b"id,text\n" + rows)[:-20])
    assert error_of(csv_gz).path == str(csv_gz)
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(truncated), "--store", str(tmp_path / "store")])
    assert exit_info.value.code == 2
    assert f"error: {truncated}: cannot read past line" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


# F3: the header's bad bytes were decoded as U+FFFD into a column (field) name without a word
def test_invalid_utf8_in_a_csv_header_is_refused(tmp_path):
    f = write(tmp_path / "a.csv", b"id,text,n\xe9te\nc1,Barack Obama visited Paris.,x\n")
    for on_error in ("raise", "skip"):
        err = error_of(f, on_error=on_error)
        assert (err.path, err.line) == (str(f), 1)
        assert "invalid UTF-8" in err.reason and "header" in err.reason


# F4: the text-mode file decoded 8 KB ahead, so the line named was the one the chunk began on
@pytest.mark.parametrize("before", [2, 3600])
def test_conll_invalid_utf8_names_its_own_line(tmp_path, before):
    lines = [f"w{i}\tO\n".encode() for i in range(before)]
    f = write(tmp_path / "a.conll", b"".join(lines) + b"caf\xe9\tB-LOC\n")
    err = error_of(f)
    assert (err.path, err.line) == (str(f), before + 1)
    assert "invalid UTF-8" in err.reason


def test_conll_nul_is_refused_naming_its_line(tmp_path):
    """An audit: a NUL in a token reached the store, which refused the sentence, and nerindex eval
    ranked it for the baselines only, exit 0."""
    f = write(tmp_path / "a.conll", b"EU\tB-ORG\n\nBar\x00ack\tB-PER\n")
    err = error_of(f)
    assert (err.path, err.line) == (str(f), 3)
    assert "a NUL character (U+0000) at character 4" in err.reason


def test_conll_lines_still_split_at_cr_and_crlf_with_a_bom(tmp_path):
    f = write(tmp_path / "a.conll", b"\xef\xbb\xbfEU\tB-ORG\rrejects\tO\r\rBonn\tB-LOC\r\nis\tO\r\n")
    assert [(s.tokens, s.line) for s in iter_sentences(f)] == [(("EU", "rejects"), 1), (("Bonn", "is"), 4)]


# F7: a .txt folder stored the others and failed that file in the write; a CoNLL folder crashed
def test_a_file_name_that_is_not_utf8_is_refused_up_front(tmp_path):
    folder = tmp_path / "txt"
    write(folder / "ok.txt", "Barack Obama visited Paris.")
    bad = bad_name(folder, b"caf\xe9.txt", b"Angela Merkel lives in Berlin.")
    err = error_of(folder)
    assert err.path == str(folder / "caf\\xe9.txt") and "not valid UTF-8" in err.reason
    assert str(bad) != err.path  # shown with the byte escaped, so the message prints
    passages, stats = skipped(folder)
    assert [p.id for p in passages] == ["ok.txt"] and stats.skipped == 1
    conll = tmp_path / "conll"
    write(conll / "ok.conll", "Paris\tB-LOC\n")
    bad_name(conll, b"caf\xe9.conll", b"Berlin\tB-LOC\n")
    assert "not valid UTF-8" in error_of(conll, format="conll").reason
    passages, stats = skipped(conll, format="conll")
    assert [p.fields["source"] for p in passages] == ["ok.conll"] and stats.skipped == 1
    # a single file too (the Python API: the CLI refuses an argument that is not valid UTF-8 itself)
    for single in (bad, conll / os.fsdecode(b"caf\xe9.conll")):
        assert "not valid UTF-8" in error_of(single).reason


# F8: "-DOCSTART-" was skipped, so without a blank line before it two documents made one sentence
def test_docstart_ends_a_sentence(tmp_path):
    f = write(tmp_path / "a.conll", "-DOCSTART- -X- O O\n\nBarack B-PER\nObama I-PER\n-DOCSTART- -X- O O\n"
                                    "Paris B-LOC\n\nAngela B-PER\n")
    assert [(p.text, p.fields["line"]) for p in read(f)] == [("Barack Obama", 3), ("Paris", 6), ("Angela", 8)]


# F9: ids came from the base name, so x/d.conll's sentences were "already stored" after y/d.conll's
def test_single_conll_files_of_one_name_in_two_folders_get_their_own_ids(tmp_path):
    a = write(tmp_path / "x" / "d.conll", "Paris\tB-LOC\n")
    b = write(tmp_path / "y" / "d.conll", "Paris\tB-LOC\n")
    [pa], [pb] = read(a), read(b)
    assert pa.id != pb.id
    assert pa.fields == pb.fields == {"source": "d.conll", "line": 1}
    assert read(tmp_path / "x" / ".." / "x" / "d.conll")[0].id == pa.id  # the resolved path


# F10: a csv.Error was caught outside the row loop, so --on-error skip stopped at a bad-quote row
def test_a_tsv_row_with_bad_quoting_is_that_rows_error(tmp_path):
    f = write(tmp_path / "q.tsv", '"id"\t"text"\nt0\tBarack Obama visited Paris.\nt1\t"Dune" is a novel.\n'
                                  "t2\tAngela Merkel lives in Berlin.\n")
    err = error_of(f)
    assert (err.line, "malformed TSV") == (3, err.reason[:13])
    passages, stats = skipped(f)
    assert [p.id for p in passages] == ["t0", "t2"] and stats.skipped == 1
    assert stats.errors[0].startswith(f"{f}:3: malformed TSV")


def test_an_unclosed_quote_still_stops_the_read_in_skip_mode(tmp_path):
    f = write(tmp_path / "q.csv", 'id,text\na,"Paris\nb,Oslo\nc,Bonn\n')
    with pytest.raises(InputError, match="not closed"):
        skipped(f)


def test_cr_only_line_endings_are_named(tmp_path):
    j = write(tmp_path / "a.jsonl", '{"id": "a", "text": "Paris."}\r{"id": "b", "text": "Oslo."}\r')
    c = write(tmp_path / "a.csv", "id,text\ra,Paris\r")
    for f in (j, c):
        assert "line endings are CR only" in error_of(f).reason


def test_a_key_twice_in_one_json_object_is_refused_with_its_line(tmp_path):
    """An audit: {"id": "g1", "id": "g9"} was stored as g9 without a word."""
    src = tmp_path / "dup.jsonl"
    src.write_text('{"id": "a", "text": "Fine."}\n{"id": "g1", "text": "Two ids.", "id": "g9"}\n', encoding="utf-8")
    err = error_of(src)
    assert err.line == 2 and "key 'id' appears twice" in str(err)
    passages, stats = skipped(src)
    assert [p.id for p in passages] == ["a"]


# ----------------------------------------------------------------- audit, December 2026 (round 20)


@pytest.mark.parametrize("line", ["I read it as an E-book.", "The bomber was a B-52", "Take the S-Bahn"])
def test_a_line_of_prose_ending_like_a_tag_is_prose(tmp_path, line):
    """A one-line prose file ending in "E-book." was read as CoNLL and stored as its first word."""
    f = write(tmp_path / "note.txt", line + "\n")
    assert not looks_like_conll(f)
    [passage] = read(f)
    assert passage.text == line + "\n"
    wide = write(tmp_path / "wide.txt", "one two three four five six seven O\neight nine ten eleven twelve B-PER\n")
    assert not looks_like_conll(wide)


@pytest.mark.parametrize("odd_one", ["prose", "conll"])
def test_a_folder_is_refused_whatever_file_mixes_it(tmp_path, odd_one):
    """Only the first five .txt files were looked at: a sixth of the other kind was left out, or a
    CoNLL file stored whole with its tags, without a word."""
    tagged, prose = "Paris\tB-LOC\nis\tO\nnice\tO\n", "This is prose about Berlin.\n"
    usual, odd = (tagged, prose) if odd_one == "prose" else (prose, tagged)
    for name in "abcde":
        write(tmp_path / "d" / f"{name}.txt", usual)
    write(tmp_path / "d" / "f.txt", odd)
    assert "holds both plain text" in error_of(tmp_path / "d").reason


def test_a_nul_in_a_text_file_is_refused_by_line_before_anything_is_read(tmp_path):
    """It passed the reader and failed at the write, after the other files were stored, with
    neither file nor line named."""
    write(tmp_path / "d" / "a.txt", "Paris is in France.\n")
    bad = write(tmp_path / "d" / "b.txt", "Berlin\nis\x00 in Germany.\n")
    err = error_of(tmp_path / "d")
    assert_names(err, bad, 2)
    assert "the line holds a NUL character (U+0000) at character 3" in err.reason  # of its line (an audit)


def test_a_tsv_from_a_writer_that_never_quotes_keeps_a_text_that_opens_with_a_quote(tmp_path):
    """An audit: '"Dune" is a novel.' in a TSV whose header has no quote was refused with csv's
    wording ("'\\t' expected after '\"'"), and no option read it."""
    f = write(tmp_path / "a.tsv", 'id\ttext\n1\t"Dune" is a novel.\n2\tHe said "hi".\n')
    assert [(p.id, p.text) for p in read(f)] == [("1", '"Dune" is a novel.'), ("2", 'He said "hi".')]
    # not a lone CR, which stays the line's error (a review: read as part of the text)
    cr = write(tmp_path / "cr.tsv", "id\ttext\n1\tfoo\rbar\n2\tok\n")
    assert "CR line break" in error_of(cr).reason


def test_a_header_of_one_column_says_which_separator_it_holds(tmp_path):
    """An audit: a .csv of tabs or semicolons was told to set --text-field (no column 'text',
    columns: 'id\\ttext'), which could not help; and a JSON array to pass the format, then that
    line 1 was malformed."""
    for name, content, advice in (("tab.csv", "id\ttext\n1\tParis\n", "read it with --format tsv"),
                                  ("semi.csv", "id;text\n1;Paris\n", "save it as CSV or TSV"),
                                  ("comma.tsv", "id,text\n1,Paris\n", "read it with --format csv")):
        err = error_of(write(tmp_path / name, content))
        assert "the header is one column" in err.reason and advice in err.reason and err.line == 1
    array = write(tmp_path / "a.json", '[\n {"id": "a", "text": "Paris."}\n]\n')
    assert "JSON Lines are" in error_of(array).reason
    err = error_of(array, format="jsonl")
    assert "a JSON array, not JSON Lines" in err.reason and err.line == 1
    one_line = write(tmp_path / "b.jsonl", '[{"id": "a", "text": "Paris."}]\n')
    assert "a JSON array, not JSON Lines" in error_of(one_line).reason
    header = write(tmp_path / "c.jsonl", '["id", "text"]\n{"id": "a", "text": "Paris."}\n')  # that line's error (a review)
    assert "expected a JSON object, got array" in error_of(header).reason
    assert [p.id for p in read(header, on_error="skip")] == ["a"]


def test_more_parquet_values_as_written_or_refused_by_row(tmp_path):
    """An audit: a time64[ns] with nanoseconds (or a date past 9999) was a traceback naming no row,
    that --on-error skip did not skip; nanosecond instants before 1970 were read 1 µs late; map
    keys were Python's text (``b'k'``, ``True``); a map's repeated key kept the last value."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "t": pa.array([1000, 1], pa.time64("ns"))}), f)
    err = error_of(f)
    assert_names(err, f, 2, unit="row")
    assert "column 't' (time64[ns])" in err.reason and "pandas" not in err.reason  # an audit: neither named
    assert [p.fields for p in read(f, on_error="skip")] == [{"t": "00:00:00.000001"}]
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "ts": pa.array([-1, -1500], pa.timestamp("ns"))}), f)
    assert [p.fields["ts"] for p in read(f)] == ["1969-12-31T23:59:59.999999999", "1969-12-31T23:59:59.999998500"]
    keys = pa.array([[(b"k", 1)], [(b"a", 1), (b"a", 2)]], pa.map_(pa.binary(), pa.int64()))
    flags = pa.array([[(True, 1)], [(False, 2)]], pa.map_(pa.bool_(), pa.int64()))
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "m": keys, "b": flags}), f)
    assert [p.fields for p in read(f, on_error="skip")] == [{"m": {"k": 1}, "b": {"true": 1}}]
    assert "the key 'a' twice" in error_of(f).reason
    # an empty map was [] (a map is a list of pairs in Python), float32 inside lists, structs and
    # maps kept float32's noise (0.10000000149011612): both now read by the column's Arrow type
    maps = pa.array([[], [("w", 0.1)]], pa.map_(pa.string(), pa.float32()))
    lists = pa.array([[0.1, None], []], pa.list_(pa.float32()))
    structs = pa.array([{"x": 0.1, "m": []}, None], pa.struct([("x", pa.float32()), ("m", pa.map_(pa.string(), pa.int64()))]))
    pairs = pa.array([[{"k": "a", "v": 1}], []], pa.list_(pa.struct([("k", pa.string()), ("v", pa.int64())])))
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "m": maps, "l": lists, "s": structs, "p": pairs}), f)
    assert [p.fields for p in read(f)] == [
        {"m": {}, "l": [0.1, None], "s": {"x": 0.1, "m": {}}, "p": [{"k": "a", "v": 1}]},
        {"m": {"w": 0.1}, "l": [], "s": None, "p": []},
    ]


def test_a_json_number_too_small_for_a_float_is_refused_not_zero(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", {"id": "a", "text": "x"})
    write(f, '{"id": "a", "text": "Paris.", "tiny": 1e-400}\n{"id": "b", "text": "Rome.", "z": 0e5, "y": 0.000}\n')
    err = error_of(f)
    assert_names(err, f, 1)
    assert "too small for a 64-bit float" in err.reason
    assert [p.fields for p in read(f, on_error="skip")] == [{"z": 0.0, "y": 0.0}]


def test_tsv_quotes_around_a_whole_value_are_kept_where_no_quoting_writer_put_them(tmp_path):
    """``"To be, or not to be"`` lost its quotes; a file whose header is quoted (R, QUOTE_ALL) still
    reads its values without them, and a value that needed quoting is read as quoted."""
    f = write(tmp_path / "a.tsv", 'id\ttext\n1\t"To be, or not to be"\n2\t"a ""b"" c"\n3\t"two\nlines"\n')
    assert [p.text for p in read(f)] == ['"To be, or not to be"', 'a "b" c', "two\nlines"]
    quoted = write(tmp_path / "r.tsv", '"id"\t"text"\n"1"\t"To be"\n')
    assert [(p.id, p.text) for p in read(quoted)] == [("1", "To be")]
    # what csv.writer quotes keeps being read without the quotes: a lone CR, an empty value (a review)
    with open(tmp_path / "w.tsv", "w", newline="") as fh:
        csv.writer(fh, delimiter="\t").writerows([["id", "text", "note"], ["1", "para one\rpara two", ""]])
    assert [(p.text, p.fields) for p in read(tmp_path / "w.tsv")] == [("para one\rpara two", {"note": ""})]
    empty = write(tmp_path / "e.tsv", 'id\ttext\tnote\n1\tx\t""\n')
    assert [p.fields for p in read(empty)] == [{"note": ""}]


def test_what_a_folder_leaves_out_is_counted(tmp_path):
    """Files of other kinds and linked folders were left out without a word (an audit)."""
    write(tmp_path / "d" / "a.txt", "Paris is nice.\n")
    write(tmp_path / "d" / "b.jsonl", "{}\n")
    write(tmp_path / "d" / ".hidden" / "c.txt", "hidden.\n")
    write(tmp_path / "other" / "c.txt", "Rome.\n")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "other", target_is_directory=True)
    (tmp_path / "d" / "gone.txt").symlink_to(tmp_path / "nowhere")  # no regular file: left out, and named
    os.mkfifo(tmp_path / "d" / "pipe.txt")
    stats = ReadStats()
    assert [p.id for p in read(tmp_path / "d", stats=stats)] == ["a.txt"]
    assert stats.left_out == ["b.jsonl", "gone.txt", "link/", "pipe.txt"]


def test_a_folder_of_only_other_files_says_what_it_left_out(tmp_path):
    """An audit: a Spark or pyarrow dataset folder (``ds.parquet/part-0.parquet``) was "the input is
    empty", and the files it left out were never named."""
    write(tmp_path / "ds.parquet" / "part-0000.parquet", "not read\n")
    write(tmp_path / "ds.parquet" / "part-0001.parquet", "not read\n")
    with pytest.raises(InputError, match=r"a folder is read as txt files, and it holds only 2 other file\(s\) or "
                                         r"linked folder\(s\) \(part-0000.parquet, part-0001.parquet\): index each"):
        list(read(tmp_path / "ds.parquet"))


def test_a_utf16_file_is_said_to_be_utf16(tmp_path):
    """An audit: Excel's "Unicode text" (UTF-16 with a byte-order mark) read as a plain "invalid UTF-8"."""
    path = tmp_path / "u.csv"
    path.write_bytes("id,text\n1,Rex\n".encode("utf-16"))
    with pytest.raises(InputError, match=r"invalid UTF-8 \(byte 0xff at byte 1 of the line; the file is UTF-16, as its "
                                         r"byte-order mark says: save it as UTF-8\) in the header"):
        list(read(path))


def test_a_gzipped_txt_file_is_said_to_need_decompressing(tmp_path):
    """An audit: "cannot tell the format from the extension '.txt' (known: ..., .txt)"."""
    path = tmp_path / "g.txt.gz"
    path.write_bytes(gzip.compress(b"Paris is nice.\n"))
    with pytest.raises(InputError, match=r"a gzip-compressed .txt file is not read .*decompress it first"):
        list(read(path))


def test_a_csv_with_only_its_header_is_said_to_have_no_records(tmp_path):
    """An audit: a header-only CSV was "the input is empty"."""
    path = tmp_path / "h.csv"
    path.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"no passages found \(no records after the header, if any\)"):
        list(read(path))


@pytest.mark.parametrize("name", ["a.jsonl.gz", "a.csv", "a.tsv", "a.conll"])
def test_a_line_past_the_bound_is_refused_at_its_line_before_it_is_held(tmp_path, monkeypatch, name):
    """A security audit: a 285 KB .jsonl.gz holding one 300 MB line took 1.3 GB before its record
    was refused. Every line reader holds at most the bound (here made 200 bytes) and names the line."""
    from indexer import file_lines

    monkeypatch.setattr(file_lines, "MAX_LINE_BYTES", 200)
    long_text = "word " * 60  # 300 bytes
    rows = {
        "a.jsonl.gz": [json.dumps({"id": "a", "text": "fine"}), json.dumps({"id": "b", "text": long_text})],
        "a.csv": ["id,text", "a,fine", f"b,{long_text}"],
        "a.tsv": ["id\ttext", "a\tfine", f"b\t{long_text}"],
        "a.conll": ["fine O", "", *(["Paris B-LOC " + "x" * 200])],
    }[name]
    body = ("\n".join(rows) + "\n").encode()
    if name == "a.conll":  # lone CRs end lines too: the line is named as the reader counts them (a review)
        body = b"EU B-ORG\rrejects O\r\r" + body
    path = tmp_path / name
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    err = error_of(path)
    line = 6 if name == "a.conll" else len(rows)
    assert_names(err, path, line)
    assert "a line longer than 200 bytes: one record a line is expected" in str(err)


def test_a_text_file_past_the_bound_is_refused_before_it_is_held(tmp_path, monkeypatch):
    """A .txt file is one passage, and was read whole however large (the security audit's bound on
    lines did not cover it): past the bound it is refused by name; one as long as the bound is read."""
    from indexer import file_lines

    monkeypatch.setattr(file_lines, "MAX_LINE_BYTES", 200)
    folder = tmp_path / "notes"
    folder.mkdir()
    write(folder / "a.txt", "x" * 200)
    write(folder / "b.txt", "word " * 60)
    err = error_of(folder)
    assert_names(err, folder / "b.txt", None)
    assert "a text file longer than 200 bytes: a .txt file is one passage" in str(err)
    assert [p.text for p in read(folder / "a.txt")] == ["x" * 200]


def test_a_json_lines_file_past_the_bound_is_refused_at_its_line(tmp_path, monkeypatch):
    from indexer import file_lines
    from indexer.json_lines import json_lines

    monkeypatch.setattr(file_lines, "MAX_LINE_BYTES", 2**20)
    path = write(tmp_path / "queries.jsonl", '{"_id": "q1"}\n' + json.dumps({"_id": "q2", "text": "x" * 2**20}) + "\n")
    with pytest.raises(InputError) as caught:
        list(json_lines(path))
    assert (caught.value.line, str(path) in str(caught.value)) == (2, True) and "longer than 1 MiB" in str(caught.value)


def test_a_line_as_long_as_the_bound_is_read(tmp_path, monkeypatch):
    from indexer import file_lines

    text = "word " * 38 + "end"  # the record's line is exactly 200 bytes with its newline
    line = json.dumps({"id": "a", "text": text}) + "\n"
    monkeypatch.setattr(file_lines, "MAX_LINE_BYTES", len(line.encode()))
    assert [p.text for p in read(write(tmp_path / "a.jsonl", line))] == [text]


def test_a_csv_field_past_the_bound_is_named_as_one_not_as_an_open_quote(tmp_path, monkeypatch):
    """A review: a closed quoted field over csv's field limit (now 64 MiB, not 2^31) that spans lines
    was refused as "a quoted field opened in this record is not closed"."""
    import csv as csv_module

    monkeypatch.setattr(structured, "_CSV_FIELD_LIMIT", 2**20)
    before = csv_module.field_size_limit(2**20)
    try:
        line = "x" * 600_000
        path = write(tmp_path / "a.csv", f'id,text\na,"{line}\n{line}"\nb,fine\n')
        err = error_of(path)
    finally:
        csv_module.field_size_limit(before)
    assert err.line == 2 and "a field longer than 1 MiB" in str(err) and "not closed" not in str(err)
