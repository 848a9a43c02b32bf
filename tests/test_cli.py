"""The command line end to end on the example corpus, in-process, with the shipped model."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.cli import main
from indexer.assets import default_model_dir
from indexer.model_folder import sha256_file
from indexer.text import printable

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus.jsonl"


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Run `nerindex ARGS`; return (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    store = tmp_path_factory.mktemp("cli") / "store"
    try:
        main(["index", str(CORPUS), "--store", str(store), "--id-field", "id", "--json"])
    except SystemExit as exc:
        assert not exc.code
    return store


def test_index_summary_json(tmp_path, capsys):
    store = tmp_path / "s"
    code, out, _ = run(capsys, "index", str(CORPUS), "--store", str(store), "--id-field", "id", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["created"] == 40 and summary["failed"] == 0 and summary["spans"] > 40
    # the same input again: idempotent
    code, out, _ = run(capsys, "index", str(CORPUS), "--store", str(store), "--id-field", "id", "--json")
    again = json.loads(out)
    assert (again["created"], again["skipped_existing"]) == (0, 40)
    code, out, _ = run(capsys, "info", "--store", str(store), "--json")
    assert json.loads(out)["store"]["passages"] == 40
    assert json.loads(out)["store"]["model"]["same_as_model"] is True


def test_info_says_which_model_wrote_the_store(tmp_path, capsys):
    """info --model X showed X alone: nothing said which model the store's vectors came from."""
    store, other = tmp_path / "s", tmp_path / "other-model"
    run(capsys, "index", str(CORPUS), "--store", str(store))
    code, out, _ = run(capsys, "info", "--store", str(store))
    assert code == 0 and "written with nerindex-minilm-l6" in out and "not the model above" not in out
    assert "MB database" in out and "derived in cache/" in out  # the last note: info said nothing of them
    code, out, _ = run(capsys, "info", "--store", str(store), "--json")
    disk = json.loads(out)["store"]["disk"]
    assert disk["database"] > 0 and disk["derived"] > 0  # indexing prepared the search structures
    shutil.copytree(default_model_dir(), other)
    card = json.loads((other / "model.json").read_text())
    card["version"] = "9.9.9"
    (other / "model.json").write_text(json.dumps(card))
    code, out, _ = run(capsys, "info", "--store", str(store), "--model", str(other))
    assert code == 0 and "9.9.9" in out and f"written with nerindex-minilm-l6 {_shipped_card()['version']}" in out
    # the same files under another version (a docs audit: "not the model above", yet it searched and
    # wrote, as a store accepts the same weights): info says which it is
    assert "the same weights as the model above, under another name or version" in out and "not the model" not in out


def test_info_says_where_the_stores_span_labels_come_from(tmp_path, capsys):
    """The labels audit (round 29): nothing showed whether a store's labels came from the model's
    catalog or a --catalog file, so nothing said which labels a spans.labels filter could match."""
    catalog = tmp_path / "types.txt"
    catalog.write_text("dinosaur\nriver\n", encoding="utf-8")
    for store, extra, said in ((tmp_path / "m", (), "span labels: the model's catalog"),
                               (tmp_path / "f", ("--catalog", str(catalog)), "span labels: a --catalog file (sha256 ")):
        run(capsys, "index", str(CORPUS), "--store", str(store), *extra)
        code, out, _ = run(capsys, "info", "--store", str(store))
        assert code == 0 and said in out, out
    code, out, _ = run(capsys, "info", "--store", str(tmp_path / "f"), "--json")
    assert json.loads(out)["store"]["model"]["labels"].startswith("sha256:")


def test_info_without_a_store_shows_the_model(tmp_path, capsys):
    """An exported model folder could not be looked at: info refused to run outside a store (an audit)."""
    code, out, _ = run(capsys, "info", "--store", str(tmp_path / "none"), "--model", str(default_model_dir()))
    assert code == 0 and "model: nerindex-minilm-l6" in out and "store: none" in out and "run 'nerindex index' first" in out
    code, out, _ = run(capsys, "info", "--store", str(tmp_path / "none"), "--json")
    assert code == 0 and json.loads(out)["store"] is None and json.loads(out)["model"]["id"] == "nerindex-minilm-l6"
    assert not (tmp_path / "none").exists()  # nothing created


def test_search_json_lines(indexed, capsys):
    code, out, _ = run(capsys, "search", "person", "--store", str(indexed), "--json", "--threshold", "0.2", "--limit", "3")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert 1 <= len(lines) <= 3
    scores = [h["score"] for h in lines]
    assert scores == sorted(scores, reverse=True)
    for hit in lines:
        assert set(hit) == {"id", "score", "text", "fields", "spans", "ranked_by"}
        for span in hit["spans"]:
            assert hit["text"][span["start"] : span["end"]] == span["text"]
            assert span["similarity"] >= 0.2


def test_search_human_marks_spans(indexed, capsys):
    code, out, err = run(capsys, "search", "person", "--store", str(indexed), "--threshold", "0.2", "--limit", "2")
    assert code == 0
    assert "[[" in out and "]]" in out
    assert "2 shown of" in err and "ranked for 'person'" in err


def test_search_count_says_shown_of_matching(indexed, capsys):
    """--limit 3 of the ranked passages says so; 0.2.0 printed '3 passage(s) matched'. A top-k
    also ranks passages through candidate spans, --all returns those with a marked mention."""
    _, out, _ = run(capsys, "search", "person", "--store", str(indexed), "--threshold", "0.2", "--limit", "100", "--json")
    ranked = len(out.splitlines())
    _, out, _ = run(capsys, "search", "person", "--store", str(indexed), "--threshold", "0.2", "--all", "--json")
    total = len(out.splitlines())
    assert ranked >= total > 3
    _, _, err = run(capsys, "search", "person", "--store", str(indexed), "--threshold", "0.2", "--limit", "3")
    assert err.splitlines()[-1] == f"3 shown of {ranked} ranked for 'person' (--all shows every passage with a marked mention)"
    _, _, err = run(capsys, "search", "person", "--store", str(indexed), "--threshold", "0.2", "--all")
    assert err.splitlines()[-1] == f"{total} shown of {total} matching 'person'"


def test_count_without_a_total_says_at_least():
    from indexer.cli.core import count_line

    assert count_line("river", 10, None) == (
        "10 shown of at least 10 ranked for 'river' (--all shows and counts every passage with a marked mention)")
    assert count_line("river", 0, None).startswith("nothing ranked for 'river' (--all shows")  # not "0 of at least 0"
    assert count_line("river", 3, 3, exhaustive=True) == "3 shown of 3 matching 'river'"
    assert count_line("river", 0, 0) == "nothing ranked for 'river'"  # not "(--all shows ...)": it has nothing (an audit)
    # a top-k that shows all it ranked still counts candidate-ranked passages, which --all leaves out
    assert count_line("river", 3, 3) == "3 shown of 3 ranked for 'river' (--all shows every passage with a marked mention)"
    # a store that cannot run --all (Elasticsearch without lang-painless) is not offered it
    assert count_line("river", 3, None, no_all="it needs the lang-painless module, which this server lacks") == (
        "3 shown of at least 3 ranked for 'river' (--all, which shows every passage with a marked mention, "
        "cannot run on this store: it needs the lang-painless module, which this server lacks)")


def test_index_defaults_to_the_id_key_and_empty_id_field_hashes(tmp_path, capsys):
    code, out, _ = run(capsys, "index", str(CORPUS), "--store", str(tmp_path / "a"))
    assert code == 0 and out.rstrip().endswith("ids from field 'id'")
    code, out, _ = run(capsys, "index", str(CORPUS), "--store", str(tmp_path / "b"), "--id-field", "", "--json")
    assert code == 0 and json.loads(out)["id_field"] is None


def test_all_and_filters(indexed, capsys):
    _, out, _ = run(capsys, "search", "thing", "--store", str(indexed), "--json", "--threshold", "-1", "--all")
    every = [json.loads(line) for line in out.splitlines()]
    # threshold -1: every passage with at least one detected mention matches (a candidate alone ranks, not in --all)
    import sqlite3

    with sqlite3.connect(indexed / "store.sqlite") as conn:
        (with_spans,) = conn.execute("SELECT COUNT(DISTINCT passage) FROM spans WHERE mention").fetchone()
    assert len(every) == with_spans > 30
    assert all(h["spans"] for h in every)
    _, out, _ = run(capsys, "search", "thing", "--store", str(indexed), "--json", "--threshold", "-1", "--all", "--where", "topic=sport")
    sport = [json.loads(line) for line in out.splitlines()]
    assert sport and all(h["fields"]["topic"] == "sport" for h in sport)
    _, out, _ = run(capsys, "search", "thing", "--store", str(indexed), "--json", "--threshold", "-1", "--text", "Danube")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["geo-2"]


def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    store = tmp_path / "s"
    code, out, err = run(capsys, "index", str(bad), "--store", str(store))
    assert code == 2
    assert f"{bad}:2" in err and err.count("\n") == 1
    assert not store.exists()


def test_bad_input_skip(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Paris is nice."}\n{"nope": 1}\n{"text": "Rome too."}\n', encoding="utf-8")
    code, out, err = run(capsys, "index", str(bad), "--store", str(tmp_path / "s"), "--on-error", "skip", "--json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["created"], summary["skipped_input"]) == (2, 1)
    assert "bad.jsonl:2" in err
    assert len(summary["input_errors"]) == 1 and "bad.jsonl:2" in summary["input_errors"][0]  # for scripts too


def test_a_pipe_is_refused_before_a_store_is_made(tmp_path):
    # the input is read twice (checked whole, then indexed): a pipe's second read found nothing,
    # after the store was made
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    # in a process of its own: before the check, opening a pipe nobody writes to waited for ever
    proc = subprocess.run([sys.executable, "-m", "indexer.cli", "index", str(fifo), "--store", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "not a regular file or folder" in proc.stderr and "save it to a file first" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_stdin_and_an_empty_text_field_are_refused_in_one_line_before_a_store_is_made(tmp_path, capsys, monkeypatch):
    """An audit: ``index -`` said "no such file or directory"; ``--text-field ''`` was a ValueError traceback."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "index", "-", "--store", "s")
    assert code == 2 and "-: standard input is not read" in err and "save it to a file first" in err
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "Rex."}\n', encoding="utf-8")
    code, _, err = run(capsys, "index", "a.jsonl", "--store", "s", "--text-field", "")
    assert code == 2 and "Invalid value for '--text-field': must name a key or column" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_passages_already_stored_are_said_to_be_left_as_they_are(tmp_path, capsys):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text('{"id": "1", "text": "Paris is nice."}\n', encoding="utf-8")
    second.write_text('{"id": "1", "text": "Mount Fuji is high."}\n', encoding="utf-8")
    assert run(capsys, "index", str(first), "--store", str(tmp_path / "s"))[0] == 0
    code, out, err = run(capsys, "index", str(second), "--store", str(tmp_path / "s"))
    assert code == 0 and "1 already stored" in out
    # another text under a stored id is named (an audit: "not compared" was all it said)
    assert "left as stored, 1 of them with another text or other metadata in this input ('1')" in err and "--reindex-existing" in err
    code, out, err = run(capsys, "index", str(second), "--store", str(tmp_path / "s"), "--json")
    assert (json.loads(out)["skipped_changed"], json.loads(out)["changed_ids"]) == (1, ["1"])
    code, out, err = run(capsys, "index", str(first), "--store", str(tmp_path / "s"))
    assert "left as stored (none whose text or metadata was compared differs)" in err


def test_with_json_an_error_is_also_one_json_object_on_stdout(tmp_path, capsys):
    """An audit: a script got an empty stdout and had to parse the text line on stderr for the file and line."""
    bad = tmp_path / "a.jsonl"
    bad.write_bytes(b'{"id": "a", "text": "Rex."}\n{"id": "b", "text": "caf\xe9"}\n')
    code, out, err = run(capsys, "index", str(bad), "--store", str(tmp_path / "s"), "--json")
    assert code == 2 and f"error: {bad}:2: invalid UTF-8" in err
    assert json.loads(out) == {"error": {"type": "InputError", "message": "invalid UTF-8 (byte 0xe9 at byte 25 of the line)",
                                         "exit_code": 2, "path": str(bad), "line": 2}}
    code, out, _ = run(capsys, "search", "dinosaur", "--store", str(tmp_path / "none"), "--json")
    assert code == 5 and json.loads(out)["error"]["exit_code"] == 5 and "path" not in json.loads(out)["error"]
    code, out, _ = run(capsys, "index", str(bad), "--store", str(tmp_path / "s"))
    assert code == 2 and out == ""  # without --json, stdout stays empty
    # a wrong option is exit 2 too (an audit: stdout was empty for click's usage errors)
    code, out, err = run(capsys, "search", "dinosaur", "--limit", "0", "--store", str(tmp_path / "s"), "--json")
    assert code == 2 and "Invalid value for '--limit'" in err
    assert json.loads(out)["error"] == {"type": "BadParameter", "exit_code": 2,
                                        "message": "Invalid value for '--limit': 0 is not in the range 1<=x<=10000."}
    code, out, _ = run(capsys, "search", "dinosaur", "--text", "", "--store", str(tmp_path / "s"), "--json")
    assert code == 2 and json.loads(out)["error"]["message"].startswith("--text is empty")
    # "--json" as another option's value, or to a command without the option, asks for no JSON (it did)
    code, out, err = run(capsys, "search", "dinosaur", "--where", "--json", "--store", str(tmp_path / "s"))
    assert code == 6 and "--where expects field=value, got '--json'" in err and out == ""
    code, out, err = run(capsys, "serve", "--json")
    assert code == 2 and "No such option '--json'" in err and out == ""
    # a command or a nerindex option that does not exist cannot say it takes no --json (a CLI audit)
    for args, kind in ((("nosuch", "--json"), "NoSuchCommand"), (("--bogus", "search", "x", "--json"), "NoSuchOption")):
        code, out, _ = run(capsys, *args)
        assert code == 2 and json.loads(out)["error"]["type"] == kind
    # an unknown option before --json (an audit: click's parse stopped there, and stdout was empty)
    for args in (("search", "x", "--bogus", "--json"), ("search", "x", "--threshold", "-0.5", "-z", "--json"),
                 ("index", "f.jsonl", "--id-fiel", "id", "--json")):
        code, out, _ = run(capsys, *args)
        assert code == 2 and json.loads(out)["error"]["type"] == "NoSuchOption"


def test_same_named_files_of_two_folders_are_said_to_share_an_id(tmp_path, capsys):
    """An audit: proj2/notes.txt was left out for proj1/notes.txt (one id) with nothing said but
    "not compared"."""
    for folder, text in (("proj1", "Barack Obama visited Paris."), ("proj2", "Angela Merkel met the Pope.")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_text(text, encoding="utf-8")
    assert run(capsys, "index", str(tmp_path / "proj1"), "--store", str(tmp_path / "s"))[0] == 0
    code, out, err = run(capsys, "index", str(tmp_path / "proj2"), "--store", str(tmp_path / "s"))
    assert code == 0 and "1 of them with another text or other metadata in this input ('notes.txt')" in err


def test_a_filter_on_an_integer_beyond_64_bits_matches_it_without_an_error(tmp_path, capsys):
    corpus = tmp_path / "a.jsonl"
    corpus.write_text('{"id": "u", "text": "Barack Obama visited Paris.", "h": 18446744073709551615}\n'
                      '{"id": "v", "text": "Angela Merkel visited Rome.", "h": 1}\n'
                      f'{{"id": "w", "text": "Emmanuel Macron visited Lyon.", "h": {10**400}}}\n', encoding="utf-8")
    assert run(capsys, "index", str(corpus), "--store", str(tmp_path / "s"))[0] == 0
    for value, ids in (("18446744073709551615", ["u"]), (str(10**400), ["w"])):  # past the float range: Inf
        code, out, err = run(capsys, "search", "person", "--store", str(tmp_path / "s"), "--where", f"h={value}", "--json")
        assert code == 0, err
        assert [json.loads(line)["id"] for line in out.splitlines()] == ids


def test_empty_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code, _, err = run(capsys, "index", str(empty), "--store", str(tmp_path / "s"))
    assert code == 2 and "empty.jsonl" in err


def test_search_without_store(tmp_path, capsys):
    code, _, err = run(capsys, "search", "dinosaur", "--store", str(tmp_path / "none"))
    assert code == 5 and "no nerindex store" in err
    assert not (tmp_path / "none").exists()


def test_bad_where(indexed, capsys):
    code, _, err = run(capsys, "search", "x", "--store", str(indexed), "--where", "novalue")
    assert code == 6 and "field=value" in err


def test_other_model_is_refused(indexed, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(default_model_dir(), other)
    with open(other / "catalog.txt", "a", encoding="utf-8") as handle:
        handle.write("one more phrase\n")
    meta = json.loads((other / "model.json").read_text())
    meta["files"]["catalog.txt"] = sha256_file(other / "catalog.txt")
    meta["catalog"]["vectors"] = None
    meta["files"].pop("catalog.npy", None)
    (other / "model.json").write_text(json.dumps(meta))
    code, _, err = run(capsys, "search", "dinosaur", "--store", str(indexed), "--model", str(other))
    assert code == 4 and "new store" in err
    # info shows the store and says why, as every command does (a CLI audit: nothing on stderr,
    # and no "error" object in --json)
    code, out, err = run(capsys, "info", "--store", str(indexed), "--model", str(other), "--json")
    report = json.loads(out)
    assert code == 4 and report["error"]["exit_code"] == 4 and "new store" in report["error"]["message"]
    assert err.startswith("error: ") and "new store" in err


def test_embed_refuses_an_empty_phrase_as_search_does(capsys):
    """It printed a vector for "" (the same as for "   "), which no search would ever use."""
    code, out, err = run(capsys, "embed", "dinosaur", "   ")
    assert code == 6 and out == "" and "entity type is empty" in err


def _shipped_card() -> dict:
    """The shipped model's card: what a search for a seen or unseen phrase applies."""
    from indexer.assets import default_model_dir

    return json.loads((default_model_dir() / "model.json").read_text(encoding="utf-8"))


def test_embed_prints_unit_vector(capsys):
    code, out, _ = run(capsys, "embed", "dinosaur", "river")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["phrase"] for r in rows] == ["dinosaur", "river"]
    assert abs(sum(x * x for x in rows[0]["vector"]) - 1) < 1e-3
    # what a search for it applies (an ES audit: a pasted kNN request had to work it out)
    code, out, _ = run(capsys, "embed", "person", "political party")
    card = _shipped_card()
    assert [(r["threshold"], r["passage_weight"]) for r in map(json.loads, out.splitlines())] == [
        (card["similarity_threshold"], 0.0), (card["unseen_similarity_threshold"], 1.0)]


def test_a_closing_full_stop_does_not_make_a_trained_type_unseen(capsys):
    """An audit: "sports team." was searched with the unseen threshold, λ and template (66
    passages of 200 against 8 for "sports team"); the phrase is searched without it."""
    code, out, _ = run(capsys, "embed", "sports team.", "sports team", "sports team ?!", "...")
    assert code == 6  # "..." is empty once its punctuation goes
    code, out, _ = run(capsys, "embed", "sports team.", "sports team", "sports team ?!")
    rows = [json.loads(line) for line in out.splitlines()]
    seen = (_shipped_card()["similarity_threshold"], 0.0)
    assert {r["phrase"] for r in rows} == {"sports team"} and {(r["threshold"], r["passage_weight"]) for r in rows} == {seen}
    assert rows[0]["vector"] == rows[1]["vector"]


def test_a_phrase_of_more_tokens_than_the_model_reads_is_refused_in_one_line(capsys, tmp_path):
    """An audit: 199 characters of Hangul are 546 tokens; embed, search and an index --catalog
    ended in onnxruntime's traceback (the service: a 500)."""
    phrase = " ".join(["각" * 33] * 5 + ["각"] * 15)
    code, out, err = run(capsys, "embed", phrase)
    assert code == 6 and out == "" and "546 tokens once tokenised; the model reads at most 256" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    catalog = tmp_path / "types.txt"
    catalog.write_text(f"dinosaur\n{phrase}\n", encoding="utf-8")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "text": "Paris is big."}\n', encoding="utf-8")
    code, _, err = run(capsys, "index", str(corpus), "--store", str(tmp_path / "s"), "--catalog", str(catalog))
    assert code == 2 and err.startswith(f"error: {catalog}: ") and "542 tokens" in err and "Traceback" not in err


def test_json_lines_survive_splitlines_and_a_stdout_that_cannot_hold_unicode(tmp_path):
    """An audit: a passage with U+2028 split its --json line for str.splitlines readers, and a
    Latin-1 stdout ended a search with an UnicodeEncodeError traceback after one line of 28."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "u", "text": "Zoë Saldaña met Emmanuel Macron\u2028in Paris ☀."}) + "\n",
                      encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    cli = [sys.executable, "-m", "indexer.cli"]
    subprocess.run([*cli, "index", str(corpus), "--store", str(tmp_path / "s")], env=env, check=True, capture_output=True)
    for extra in (["--json"], []):
        proc = subprocess.run([*cli, "search", "person", "--store", str(tmp_path / "s"), *extra], env=env,
                              capture_output=True)
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr
    lines = proc.stdout.decode("latin-1").splitlines()  # the human output: ☀ escaped, ë as Latin-1
    assert any("Saldaña" in line and "\\u2600" in line for line in lines)
    proc = subprocess.run([*cli, "search", "person", "--store", str(tmp_path / "s"), "--json"], env=env, capture_output=True)
    (line,) = proc.stdout.decode("ascii").splitlines()
    assert json.loads(line)["text"] == "Zoë Saldaña met Emmanuel Macron\u2028in Paris ☀."


def test_help_explains(capsys):
    code, out, _ = run(capsys, "index", "--help")
    assert code == 0 and "--on-error" in out and "--id-field" in out


def test_the_command_starts_without_numpy_or_the_runtime():
    """`import indexer` imported the API, numpy and the stores (0.6 s before `nerindex --help`
    answered, and a Ctrl-C in it was a traceback); the package names are imported on first use."""
    code = ("import sys, indexer.cli; heavy = sorted(m for m in ('numpy', 'onnxruntime', 'indexer.api') if m in sys.modules); "
            "from indexer import NerIndex, read_passages, SearchError; print(heavy, NerIndex.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "NerIndex"]


def test_search_passage_weight_reranks_only(indexed, capsys):
    """--passage-weight changes the order and the scores, never which passages or spans match."""
    runs = {}
    for weight in ("0", "3"):
        _, out, _ = run(capsys, "search", "river", "--store", str(indexed), "--json", "--all",
                        "--threshold", "0.1", "--passage-weight", weight)  # fmt: skip
        runs[weight] = [json.loads(line) for line in out.splitlines()]
    assert len(runs["0"]) > 3
    assert {h["id"] for h in runs["0"]} == {h["id"] for h in runs["3"]}
    spans0 = {h["id"]: h["spans"] for h in runs["0"]}
    assert all(h["spans"] == spans0[h["id"]] for h in runs["3"])
    for hits in runs.values():
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # λ = 0: the score is the best span (a candidate's, unmarked, may beat the best mention); λ = 3
    # adds a passage term
    assert all(h["score"] >= h["spans"][0]["similarity"] - 1e-6 for h in runs["0"])
    assert sum(h["score"] == pytest.approx(h["spans"][0]["similarity"], abs=1e-6) for h in runs["0"]) > len(runs["0"]) / 2
    assert any(abs(h["score"] - h["spans"][0]["similarity"]) > 0.05 for h in runs["3"])
    code, _, err = run(capsys, "search", "river", "--store", str(indexed), "--passage-weight", "-1")
    assert code == 2 and "--passage-weight" in err


def test_search_feedback_is_the_api_option(indexed, capsys):
    """--feedback WEIGHT gives what NerIndex.search(feedback=Feedback(WEIGHT, top)) gives."""
    from indexer.api import NerIndex
    from indexer.feedback import Feedback

    code, out, _ = run(capsys, "search", "dinosaur", "--store", str(indexed), "--json", "--limit", "5",
                       "--feedback", "0.5", "--feedback-top", "3")  # fmt: skip
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    with NerIndex.open(indexed, create=False) as ix:
        want = ix.search("dinosaur", limit=5, feedback=Feedback(0.5, 3))
        plain = ix.search("dinosaur", limit=5)
    assert [h["id"] for h in got] == [h.id for h in want]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert [h.score for h in want] != pytest.approx([h.score for h in plain], abs=1e-6)  # the query moved
    code, _, err = run(capsys, "search", "dinosaur", "--store", str(indexed), "--feedback", "-1")
    assert code == 2 and "--feedback" in err


def test_non_utf8_argument_is_one_line_and_exit_2(indexed, capsys):
    """What the shell's $'caf\\xe9' gives Python; 0.2.0 printed a traceback from the tokenizer."""
    code, out, err = run(capsys, "search", "caf\udce9", "--store", str(indexed))
    assert code == 2 and out == ""
    assert err == "error: argument 2 is not valid UTF-8: b'caf\\xe9' (nerindex reads arguments as UTF-8 text)\n"


def test_non_utf8_argument_from_a_shell(indexed):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "search", b"caf\xe9", "--store", str(indexed)],
        capture_output=True, env=env, timeout=120,
    )
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert done.stderr.decode().count("\n") == 1 and "argument 2 is not valid UTF-8" in done.stderr.decode()


def test_corpus_control_characters_never_reach_the_terminal(tmp_path, capsys):
    """ESC[2J in a passage cleared the screen; the marked mentions still sit at their offsets."""
    text = "\x1b[2JTyrannosaurus rex \x1b]0;owned\x07lived in North\x9b America\r and Stegosaurus\x07 too."
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "d\x1b[31m1", "text": text, "note": "\x1b[5mblink\x7f"}) + "\n", encoding="utf-8")
    store = str(tmp_path / "s")
    assert run(capsys, "index", str(corpus), "--store", store)[0] == 0
    code, out, _ = run(capsys, "search", "dinosaur", "--store", store, "--threshold", "0.2")
    assert code == 0 and "[[" in out
    assert not any(ch in out for ch in "\x1b\x07\x9b\x7f\r")
    _, raw, _ = run(capsys, "search", "dinosaur", "--store", store, "--threshold", "0.2", "--json")
    [hit] = [json.loads(line) for line in raw.splitlines()]
    assert hit["text"] == text  # --json keeps the text exactly, offsets index into it
    for span in hit["spans"]:
        assert hit["text"][span["start"] : span["end"]] == span["text"]
    best = max(hit["spans"], key=lambda s: s["similarity"])
    assert f"[[{printable(best['text'])}]]" in out


def test_where_on_a_field_no_passage_has_hints(indexed, capsys):
    code, out, err = run(capsys, "search", "person", "--store", str(indexed), "--where", "nosuchfield=x")
    assert code == 0 and out == ""
    assert "hint: no stored passage has a field named 'nosuchfield'" in err
    _, _, err = run(capsys, "search", "person", "--store", str(indexed), "--where", "topic=nosuchtopic")
    assert "hint" not in err  # the field exists: the value just matches nothing
    # "topic = politics" looks for " politics" (an audit: an empty answer, no word why)
    code, out, err = run(capsys, "search", "person", "--store", str(indexed), "--where", "topic = politics")
    assert code == 0 and out == "" and "hint: --where 'topic = politics' matches a text with the spaces" in err
    # "topic=$TOPIC" with TOPIC unset (a parity audit: --text '' is refused for that mistake)
    code, out, err = run(capsys, "search", "person", "--store", str(indexed), "--where", "topic=")
    assert code == 0 and out == "" and "hint: --where 'topic=' matches only an empty text" in err


def test_type_without_letters_or_digits_hints(indexed, capsys):
    _, _, err = run(capsys, "search", "\U0001f996\U0001f995", "--store", str(indexed))
    assert "hint: '\U0001f996\U0001f995' has no letters or digits" in err
    _, _, err = run(capsys, "search", "dinosaur", "--store", str(indexed))
    assert "hint" not in err


def test_an_empty_answer_names_the_threshold_it_used(indexed, capsys):
    """The default threshold depends on the type (trained on or not), so an empty answer says which."""
    # --all: no passage mentions a painting (a top-k ranks one passage through a candidate span)
    code, out, err = run(capsys, "search", "painting", "--store", str(indexed), "--all")
    assert code == 0 and out == ""
    from indexer.model_folder import ModelInfo

    info = ModelInfo.load(default_model_dir(), verify=False)
    assert f"no mention reached the similarity threshold {info.threshold_for('painting'):g}" in err
    assert "not trained on" in err and "--threshold" in err
    _, _, err = run(capsys, "search", "painting", "--store", str(indexed), "--threshold", "0.9")
    assert "hint" not in err  # the user chose the threshold


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws its bar there."""

    def isatty(self) -> bool:
        return True


def test_index_shows_window_progress_on_a_terminal_and_a_summary_always(tmp_path, capsys, monkeypatch):
    text = " ".join(["the weather was mild and the fields were green near Paris"] * 200)
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "index", str(corpus), "--store", str(tmp_path / "a"))
    assert code == 0 and out.startswith("indexed 1 passage(s)") and "windows" not in err  # not a terminal
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, out, _ = run(capsys, "index", str(corpus), "--store", str(tmp_path / "b"))
    assert code == 0 and out.startswith("indexed 1 passage(s)")
    shown = re.findall(r"windows (\d+)/(\d+)", terminal.getvalue())
    assert len(shown) > 1 and shown[-1][0] == shown[-1][1] != "1"


def test_store_option_wins_over_an_environment_es_url(indexed, capsys, monkeypatch):
    """--store names the embedded store; NERINDEX_ES_URL in the environment must not redirect it."""
    from indexer.config import Settings, with_overrides
    from indexer.errors import SettingError

    monkeypatch.setenv("NERINDEX_ES_URL", "http://127.0.0.1:9")  # nothing listens there
    code, out, err = run(capsys, "search", "person", "--store", str(indexed), "--json", "--threshold", "0.2")
    assert code == 0 and out.strip(), err
    env = Settings(es_url="http://es:9200", store="./nerindex-data")
    assert with_overrides(env, store="s").es_url is None
    assert with_overrides(env, store=None, es_index="x").es_url == "http://es:9200"
    with pytest.raises(SettingError, match="name two stores"):  # one of them was dropped unsaid
        with_overrides(env, store="s", es_url="http://other:9200")
    code, out, err = run(capsys, "search", "person", "--store", str(indexed), "--es-url", "http://127.0.0.1:9")
    assert code == 2 and "store (--store, an embedded store) and es_url (--es-url" in err and not out


def test_an_elasticsearch_option_without_a_url_is_refused(tmp_path, capsys, monkeypatch):
    """The bench audit (round 29): `nerindex index FILE --es-index ALIAS` with no URL indexed into
    ./nerindex-data without a word, and `search --es-index ALIAS` searched it."""
    from indexer.api import NerIndex
    from indexer.config import Settings, store_settings, with_overrides
    from indexer.errors import SettingError

    monkeypatch.delenv("NERINDEX_ES_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "index", str(CORPUS), "--es-index", "myalias")
    assert code == 2 and "es_index (--es-index) is for Elasticsearch, but no Elasticsearch URL" in err and not out
    assert not (tmp_path / "nerindex-data").exists()
    code, out, err = run(capsys, "search", "city", "--store", "s", "--es-user", "elastic")
    assert code == 2 and "es_user (--es-user) is for Elasticsearch, but store (--store)" in err
    code, out, err = run(capsys, "search", "city", "--store", "s", "--insecure")
    assert code == 2 and "es_verify_certs (--insecure) is for Elasticsearch" in err
    env = Settings(es_url="http://es:9200")
    assert store_settings(env, es_index="x").es_index == "x"  # the URL from the environment
    assert with_overrides(Settings(), es_api_key="k").es_api_key == "k"  # Kibana's commands read it without a store
    with pytest.raises(SettingError, match="es_api_key"):
        store_settings(Settings(), es_api_key="k")
    with pytest.raises(SettingError, match="es_index"):
        NerIndex.open(tmp_path / "api", es_index="myalias")


def test_es_index_options_on_the_embedded_store_are_refused_before_reading(tmp_path, capsys, monkeypatch):
    """The embedded store has no vector index type to choose: the option is refused, not dropped,
    and before the input is read (nothing made)."""
    monkeypatch.delenv("NERINDEX_ES_URL", raising=False)
    missing = tmp_path / "missing.jsonl"
    code, out, err = run(capsys, "index", str(missing), "--store", str(tmp_path / "s"), "--es-index-options", "int8_flat")
    assert code == 2 and "--es-index-options) is for an Elasticsearch store" in err and not out
    assert not (tmp_path / "s").exists()


def test_settings_resolve_options_over_environment(monkeypatch):
    """One resolution for every command: a variable, overridden by an explicit option."""
    from indexer.config import Settings, resolve
    from indexer.errors import StoreError

    monkeypatch.setenv("NERINDEX_ES_URL", "http://es:9200")
    monkeypatch.setenv("NERINDEX_ES_USER", "elastic")
    monkeypatch.setenv("NERINDEX_ES_PASSWORD", "pw")
    monkeypatch.setenv("NERINDEX_KIBANA_URL", "http://kibana:5601")
    settings = resolve(es_index="corpus", es_verify_certs=False)
    assert (settings.es_url, settings.es_index, settings.es_verify_certs) == ("http://es:9200", "corpus", False)
    assert settings.basic_auth() == ("elastic", "pw") and settings.required_kibana_url() == "http://kibana:5601"
    assert settings.store_description() == "http://es:9200 index corpus"
    assert resolve(store="s").store_description() == "s"  # --store beats NERINDEX_ES_URL
    # a password in the URL is never shown (info, /api/v1/info, the search page: a security audit)
    shown = resolve(es_url="http://elastic:S3cr3t@es:9200, https://u:p%40w@es2:9243", es_index="c").store_description()
    assert shown == "http://es:9200,https://es2:9243 index c" and "S3cr3t" not in shown
    with pytest.raises(StoreError, match="both a user and a password"):
        Settings(es_password="pw").basic_auth()
    with pytest.raises(StoreError, match="--es-url or set NERINDEX_ES_URL"):
        Settings().required_es_url()
    with pytest.raises(StoreError, match="--kibana-url or set NERINDEX_KIBANA_URL"):
        Settings().required_kibana_url()


def test_paths_in_the_environment_have_their_tilde_expanded(monkeypatch):
    """An audit: NERINDEX_STORE=~/x (an .env file, compose, a unit file: no shell expands it) made a
    folder named "~" in the current folder, while the summary read as the home folder."""
    from indexer.config import from_env

    monkeypatch.setenv("HOME", "/home/someone")
    settings = from_env({"NERINDEX_STORE": "~/x", "NERINDEX_MODEL": "~/m", "NERINDEX_ES_CA_CERTS": "~/ca.pem"})
    assert (settings.store, settings.model, settings.es_ca_certs) == ("/home/someone/x", "/home/someone/m",
                                                                      "/home/someone/ca.pem")


def test_nerindex_open_takes_every_store_setting(monkeypatch):
    """NerIndex.open passes every connection setting to the one store factory."""
    import indexer.api
    import indexer.config
    from indexer.api import NerIndex

    opened = []

    class Empty:
        def model(self):
            return None

    monkeypatch.setattr(indexer.api, "open_store", lambda settings, create, model=None: opened.append(settings) or Empty())
    ix = NerIndex.open(es_url="http://es:9200", es_index="corpus", es_api_key="k", es_user="u", es_password="p",
                       es_ca_certs=Path("/ca.pem"), es_verify_certs=False, es_timeout=5, threads=1, device="cpu",
                       create=True)  # create left out asks a real store why it holds no passages
    (settings,) = opened
    assert settings.es_timeout == 5 and settings.threads == 1
    # every Settings field but kibana_url is an argument (the docstring's promise)
    import dataclasses
    import inspect

    fields = {f.name for f in dataclasses.fields(indexer.config.Settings)} - {"kibana_url"}
    assert fields <= set(inspect.signature(NerIndex.open).parameters)
    assert (settings.es_api_key, settings.es_user, settings.es_password) == ("k", "u", "p")
    assert settings.es_ca_certs == "/ca.pem" and not settings.es_verify_certs and settings.device == "cpu"
    assert ix.description == "http://es:9200 index corpus"


WEB_EXTRA = all(importlib.util.find_spec(name) is not None for name in ("fastapi", "uvicorn"))


@pytest.mark.parametrize("command", [
    ["index", "x"], ["search", "x"], ["info"], ["delete", "x"],
    pytest.param(["serve"], marks=pytest.mark.skipif(not WEB_EXTRA, reason="'nerindex serve' needs the [web] extra")),
])
def test_store_commands_share_the_backend_options(command, capsys, monkeypatch):
    """index/search/delete/info/serve get one Settings from the shared options (--insecure included)."""
    from indexer.api import NerIndex

    seen = []

    def refuse(cls, *, settings, **kwargs):
        seen.append(settings)
        raise SystemExit(7)

    monkeypatch.setattr(NerIndex, "open", classmethod(refuse))
    monkeypatch.setattr("indexer.cli.indexing.check_input", lambda source, read, ids=None: (1, None))
    code, _, err = run(capsys, *command, "--es-url", "https://es:9200", "--api-key", "k", "--es-user", "u",
                       "--password", "p", "--insecure", "--device", "cpu")
    assert code == 7, err
    (settings,) = seen
    assert (settings.es_url, settings.es_api_key, settings.es_user, settings.es_password) == ("https://es:9200", "k", "u", "p")
    assert not settings.es_verify_certs and settings.device == "cpu"


def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(indexed):
    """`nerindex search … | head -1`: click exited 1 (the code of failed passages) when the
    reader of stdout went away; now 141, as a shell reports a command ended by SIGPIPE, with
    nothing on stderr. The reader is gone before the first line, so the write surely fails."""
    script = ("from indexer.cli import main; "
              f"main(['search', 'person', '--all', '--json', '--store', {str(indexed)!r}])")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-c", script], stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 141 and "Error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["search", "--help"]])
def test_help_and_version_to_a_reader_that_went_away_end_with_141_too(args):
    """A review: click printed these while parsing the arguments and exited 1 on the broken pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "indexer.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and not proc.stderr, proc.stderr


def test_limit_with_all_says_it_does_not_apply(indexed, capsys):
    """An audit: --all --limit 1 returned every match and ignored --limit without a word."""
    code, out, err = run(capsys, "search", "person", "--all", "--limit", "1", "--json", "--store", str(indexed))
    assert code == 0 and len(out.splitlines()) > 1 and "--limit does not apply to --all" in err
    code, _, err = run(capsys, "search", "person", "--all", "--json", "--store", str(indexed))
    assert code == 0 and "--limit" not in err


def test_a_file_that_cannot_be_written_is_one_line_and_the_report_is_printed_first(tmp_path, capsys):
    """An audit: eval --out on a full disk ended in a traceback, after writing a truncated JSON over
    the last run's and before printing the report, which was lost. The machine's errors are one
    line now, the report comes first, and the files are written whole or not at all."""
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    saved = ROOT / "docs" / "eval" / "wnut17-dev.json"
    code, out, err = run(capsys, "eval", str(saved), "--from-json", "--out", str(blocker / "out"), "--no-charts")
    assert code == 1 and "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "| method |" in out  # the report was printed before the files were tried


def test_ctrl_c_while_preparing_says_every_passage_is_stored(tmp_path, capsys, monkeypatch):
    """A review: after the last chunk the message said the chunk being written "may be stored too"."""
    from indexer.stores.embedded import EmbeddedStore

    def interrupted(self) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(EmbeddedStore, "prepare", interrupted)
    code, out, err = run(capsys, "index", str(CORPUS), "--store", str(tmp_path / "s"))
    assert code == 130 and "every passage above is stored" in err and "may be stored too" not in err


def test_a_missing_optional_package_is_one_line_naming_its_extra(tmp_path, monkeypatch, capsys):
    """A 20-30 line ModuleNotFoundError traceback before (an audit of the wheel installed with [cpu] only)."""
    from indexer.cli import missing_extra

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `serve` imports it when it runs: as if not installed
    code, out, err = run(capsys, "serve", "--port", "0")
    assert (code, err) == (1, "error: this needs the uvicorn package, which is not installed: pip install 'nerindex[web]'\n")
    for name, extra in (("elasticsearch.helpers", "elasticsearch"), ("onnxruntime", "cpu"), ("torch", "train")):
        assert f"pip install 'nerindex[{extra}]'" in missing_extra(ModuleNotFoundError(name=name))
    assert missing_extra(ModuleNotFoundError(name="no_such_module")) is None  # a bug's: raised as it is


@pytest.mark.parametrize("env,bold", [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)])
def test_marks_are_bold_on_a_terminal_unless_no_color_or_a_dumb_terminal(indexed, env, bold, monkeypatch, capsys):
    """An audit: NO_COLOR (no-color.org) and TERM=dumb still got ANSI escapes on a terminal."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "search", "dinosaur", "--store", str(indexed), "--limit", "1")
    assert code == 0 and ("\x1b[" in out) == bold and ("[[" in out) != bold


def test_controls_that_part_words_show_as_breaks_and_the_span_list_stays_one_line():
    """Audits: "Paris\fBerlin" was printed "ParisBerlin" (a span text found nowhere in --json); an
    unterminated ESC ] took the rest of the passage's words with it; a span holding a tab or line
    break split the one-line spans list."""
    from indexer.cli.core import format_hit
    from indexer.records import Hit, SpanMatch

    text = "Spoke.\rParis\fBerlin\x85London. Note \x1b]0;x Obama\tBarack met Merkel."
    cities = SpanMatch(text.index("Paris"), text.index("\x85"), "Paris\fBerlin", 0.40)
    obama = SpanMatch(text.index("Obama"), text.index(" met"), "Obama\tBarack", 0.30)
    out = format_hit(1, Hit("p", 0.4, text, {}, (cities, obama)), color=False)
    body, spans = out.split("\n   spans: ")
    assert "Spoke.\n[[Paris\nBerlin]]\nLondon. Note 0;x [[Obama\tBarack]] met Merkel." in body
    assert spans == "Paris Berlin 0.40, Obama Barack 0.30"


def test_a_bidirectional_override_in_the_corpus_does_not_reverse_the_terminal_line():
    """An audit of the surfaces: a passage or id holding an unclosed U+202E was printed raw, and
    the terminal showed the rest of the line reversed; direction marks (U+200F) stay."""
    from indexer.cli.core import format_hit
    from indexer.records import Hit, SpanMatch

    text = "\u202e[[Triceratops]]\u202c lived \u2067here\u2069 \u200fשלום."
    span = SpanMatch(text.index("Tri"), text.index("]]"), "Triceratops", 0.5)
    out = format_hit(1, Hit("id\u202eevil", 0.5, text, {}, (span,)), color=False)
    assert not set(out) & {"\u202e", "\u202c", "\u2067", "\u2069"} and "\u200f" in out
    assert "1. 0.500  idevil\n   [[[[Triceratops]]]] lived here \u200fשלום." in out


def test_a_hit_ranked_by_a_candidate_names_it():
    """The spans line names the candidate span that ranked a hit (never marked), marks or none."""
    from indexer.cli.core import format_hit
    from indexer.records import Hit, SpanMatch

    text = "Yo-Yo Ma performed the Bach suites on his cello."
    cello, ma = SpanMatch(42, 47, "cello", 0.4, ("musical instrument",)), SpanMatch(0, 8, "Yo-Yo Ma", 0.31)
    out = format_hit(1, Hit("mus-1", 0.66, text, {}, (ma,), ranked_by=cello), color=False)
    assert out.endswith("spans: Yo-Yo Ma 0.31; ranked by the candidate span “cello” 0.40 (never marked)")
    assert "[[Yo-Yo Ma]]" in out and "[[cello]]" not in out
    out = format_hit(1, Hit("mus-1", 0.4, text, {}, (), ranked_by=cello), color=False)
    assert out.endswith("spans: none marked (ranked by the candidate span “cello” 0.40, which is never marked; not in --all)")
    out = format_hit(1, Hit("mus-1", 0.4, "a \x1b[31m b", {}, (), ranked_by=SpanMatch(2, 7, "\x1b[31m", 0.4)), color=False)
    assert "\x1b" not in out  # corpus text cannot drive the terminal


@pytest.mark.parametrize("env, args, named", [
    ({"NERINDEX_THREADS": "abc"}, ("embed", "dinosaur"), "NERINDEX_THREADS"),
    ({"NERINDEX_DEVICE": "gpu"}, ("embed", "dinosaur"), "NERINDEX_DEVICE"),
    ({}, ("search", "x", "--es-url", "https://127.0.0.1:9", "--es-ca-certs", "no-such.pem"), "no-such.pem"),
    ({}, ("kibana", "import", "--kibana-url", "https://127.0.0.1:9", "--ca-certs", "no-such.pem"), "no-such.pem"),
    ({}, ("es", "status"), "--es-url"),
    ({"NERINDEX_ES_URL": "foo"}, ("search", "person"), "needs its scheme"),
    ({}, ("search", "person", "--es-url", "http://127.0.0.1"), "needs its port"),
    ({}, ("search", "person", "--es-url", "http://127.0.0.1:9", "--es-index", "BAD*"), "invalid Elasticsearch index name"),
    ({}, ("kibana", "import", "--kibana-url", "foo"), "needs its scheme"),
])
def test_a_wrong_setting_is_a_wrong_option(capsys, monkeypatch, env, args, named):
    """A bad variable exited 5, the store's code, where the same bad option exited 2; a missing CA
    file named neither itself nor the option, or was blamed on the connection (an audit)."""
    monkeypatch.delenv("NERINDEX_ES_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = run(capsys, *args)
    assert code == 2 and named in err and err.count("\n") == 1, err


def test_options_that_do_nothing_say_so_and_an_empty_text_is_refused(indexed, capsys):
    """An audit: --feedback-top without --feedback and --text "" were taken without a word."""
    code, out, err = run(capsys, "search", "dinosaur", "--store", str(indexed), "--feedback-top", "3", "--json")
    assert code == 0 and "--feedback-top applies with --feedback" in err
    code, out, err = run(capsys, "search", "dinosaur", "--store", str(indexed), "--text", " ")
    assert code == 2 and "--text is empty" in err
    code, out, err = run(capsys, "search", "", "--store", str(indexed))
    assert code == 6 and "hint" not in err  # the refusal alone, not a hint about letters before it
    code, out, err = run(capsys, "embed", "dinosaur", "--json")  # JSON lines anyway; scripts pass --json
    assert code == 0 and json.loads(out)["phrase"] == "dinosaur"
    code, out, err = run(capsys, "embed", "Ärzte")  # as search writes text: not escaped
    assert code == 0 and '"phrase": "Ärzte"' in out
    for option in ("--threshold", "--passage-weight", "--feedback"):  # NaN passed click's range checks
        code, out, err = run(capsys, "search", "dinosaur", "--store", str(indexed), option, "nan")
        assert code == 2 and "'nan' is not a number" in err, (option, err)


def test_a_run_that_stored_nothing_has_no_rate(indexed, capsys):
    """Every passage already stored gave "passages_per_second": 11693.87 (an audit)."""
    code, out, err = run(capsys, "index", str(CORPUS), "--store", str(indexed), "--id-field", "id", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["created"] == 0 and summary["passages_per_second"] is None


@pytest.mark.parametrize("value, shown", [("0", False), ("no", False), ("1", True)])
def test_nerindex_traceback_0_means_off(monkeypatch, value, shown):
    from indexer.cli import tracebacks_wanted

    monkeypatch.setenv("NERINDEX_TRACEBACK", value)
    assert tracebacks_wanted() is shown


def test_an_edited_corpus_indexed_again_with_prune_keeps_no_old_passage(tmp_path, capsys):
    """A lifecycle audit: ids that are hashes of the text change with the text, so the edited
    passage was stored under a new id and the old one stayed searchable (no way to delete it)."""
    corpus, store = tmp_path / "c.jsonl", str(tmp_path / "s")
    lines = ['{"text": "Tyrannosaurus rex lived in North America."}', '{"text": "Angela Merkel visited Paris."}']
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(capsys, "index", str(corpus), "--store", store)[0] == 0
    corpus.write_text("\n".join([lines[0].replace("Tyrannosaurus rex", "Triceratops"), lines[1]]) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "index", str(corpus), "--store", store, "--json")  # without --prune: both versions
    assert code == 0 and "pruned" not in json.loads(out)
    code, out, _ = run(capsys, "search", "dinosaur", "--store", store, "--all", "--json")
    assert sorted(json.loads(line)["text"].split()[0] for line in out.splitlines()) == ["Triceratops", "Tyrannosaurus"]
    code, out, err = run(capsys, "index", str(corpus), "--store", store, "--prune", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["pruned"] == 1 and summary["skipped_existing"] == 2
    code, out, _ = run(capsys, "search", "dinosaur", "--store", store, "--all", "--json")
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["Triceratops lived in North America."]
    code, out, err = run(capsys, "index", str(corpus), "--store", store, "--prune")
    assert code == 0 and "pruned 0 stored passage(s) whose id this input does not hold" in err


def test_prune_is_refused_after_a_skipped_record_and_deletes_nothing(tmp_path, capsys):
    """A parity audit: with --on-error skip, a record skipped as bad (here a NUL in a field) was not
    among the input's ids, so --prune deleted its good stored copy and named it a passage "this
    input does not hold". Now the run is refused before anything is written."""
    corpus, store = tmp_path / "c.jsonl", str(tmp_path / "s")
    good = ['{"id": "d1", "text": "Triceratops lived in North America."}', '{"id": "p1", "text": "Angela Merkel visited Paris."}']
    corpus.write_text("\n".join(good) + "\n", encoding="utf-8")
    assert run(capsys, "index", str(corpus), "--store", store)[0] == 0
    corpus.write_text(good[0].replace('"text"', '"topic": "a\\u0000b", "text"') + "\n" + good[1] + "\n", encoding="utf-8")
    code, out, err = run(capsys, "index", str(corpus), "--store", store, "--on-error", "skip", "--prune", "--json")
    error = json.loads(out)["error"]
    assert code == 2 and "--prune is refused after 1 bad record(s) were skipped" in error["message"]
    assert error["path"] == str(corpus) and f"{corpus}:1: field 'topic' holds a NUL" in error["message"]
    code, out, _ = run(capsys, "search", "dinosaur", "--store", store, "--all", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["d1"]  # still stored
    assert run(capsys, "index", str(corpus), "--store", store, "--on-error", "skip")[0] == 0  # without --prune: as before


def test_delete_removes_passages_by_id(tmp_path, capsys):
    store = str(tmp_path / "s")
    run(capsys, "index", str(CORPUS), "--store", store, "--id-field", "id")
    ids = tmp_path / "ids.txt"
    ids.write_text("dino-2\n\nnot-stored\n", encoding="utf-8")
    code, out, _ = run(capsys, "delete", "dino-1", "--ids-from", str(ids), "--store", store, "--json")
    assert code == 0 and json.loads(out) | {"store": None} == {
        "deleted": 2, "not_stored": 1, "deleted_ids": ["dino-1", "dino-2"], "store": None}
    code, out, _ = run(capsys, "search", "dinosaur", "--store", store, "--limit", "40", "--json")
    assert not {"dino-1", "dino-2"} & {json.loads(line)["id"] for line in out.splitlines()}
    code, out, _ = run(capsys, "info", "--store", store, "--json")
    assert json.loads(out)["store"]["passages"] == 38
    code, _, err = run(capsys, "delete", "--store", store)
    assert code == 2 and "give passage ids, or --ids-from FILE" in err


def test_an_input_that_turns_bad_while_it_is_indexed_says_what_was_stored(tmp_path, capsys, monkeypatch):
    """A lifecycle audit: a line that went bad between the check and the second read stopped the run
    with the message of a refusal that wrote nothing, while the chunks before it were stored."""
    from indexer.cli import indexing as core

    corpus, store = tmp_path / "c.jsonl", str(tmp_path / "s")
    lines = [json.dumps({"id": f"p{i}", "text": f"Angela Merkel visited Paris on day {i}."}) for i in range(300)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    checked = core.check_input

    def check_then_spoil(*args, **kwargs):
        found = checked(*args, **kwargs)
        with corpus.open("a", encoding="utf-8") as f:
            f.write('{"id": "bad", "text":\n')
        return found

    monkeypatch.setattr(core, "check_input", check_then_spoil)
    code, _, err = run(capsys, "index", str(corpus), "--store", store, "--batch-size", "64")
    assert code == 2 and f"{corpus}:301: malformed JSON" in err
    assert "the input changed while it was indexed: 256 new passage(s) before this point are stored" in err
