"""Input problems an audit (audit13) found: each is refused by line before anything is written, or
skipped with ``--on-error skip``, instead of a half-written store, a traceback or a wrong line."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from indexer.cli import main
from indexer.conll import iter_sentences
from indexer.errors import InputError
from indexer.reading import ReadStats, read_passages


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read(path: Path, **kwargs) -> list:
    return list(read_passages(path, **kwargs))


def error_of(path: Path, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        read(path, **kwargs)
    return info.value


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
    f = write(tmp_path / "q.tsv", 'id\ttext\nt0\tBarack Obama visited Paris.\nt1\t"Dune" is a novel.\n'
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
