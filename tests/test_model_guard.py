"""The model guard covers every setting that changes what a store holds, not only the weights.

A model folder with the shipped weights but another detection threshold, span decoding or label
catalog must not index into a store built the other way; query-time settings (similarity
threshold, passage weight) change nothing stored and stay free. Stores written by nerindex 0.2.0
record only the weights: they adopt the settings of the first model that writes to them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from indexer.assets import default_model_dir
from indexer.catalog import read_phrases
from indexer.model_folder import ModelInfo
from indexer.stores.base import STORED_SETTINGS, ModelStamp, check_stamp

from test_cli import run  # `nerindex ARGS` in-process: (exit code, stdout, stderr)


def model_folder(tmp_path: Path, name: str, **changes: object) -> Path:
    """The shipped model's files (linked, not copied) with ``changes`` made to its model.json."""
    source = default_model_dir()
    folder = tmp_path / name
    folder.mkdir()
    for path in source.iterdir():
        if path.name != "model.json":
            (folder / path.name).symlink_to(path)
    card = json.loads((source / "model.json").read_text(encoding="utf-8"))
    card.update(changes)
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    lines = [
        {"id": "a", "text": "Tyrannosaurus rex lived in Montana."},
        {"id": "b", "text": "Angela Merkel met Barack Obama in Berlin."},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def more(tmp_path: Path) -> Path:
    path = tmp_path / "more.jsonl"
    path.write_text('{"id": "c", "text": "The Beatles recorded Abbey Road in London."}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "changes, setting, stored, given",
    [
        ({"detection_threshold": 0.3}, "detection_threshold", "0.08", "0.3"),
        ({"span_decoding": "flat"}, "span_decoding", "'nested'", "'flat'"),
        ({"max_span_width": 4}, "max_span_width", "8", "4"),
        ({"labels_per_span": 1}, "labels_per_span", "3", "1"),
    ],
)
def test_indexing_with_other_stored_settings_is_refused(tmp_path, capsys, corpus, changes, setting, stored, given):
    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    other = model_folder(tmp_path, "other", **changes)
    code, _, err = run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--model", str(other))
    assert code == 4, err
    assert f"{setting} is {stored} in the store but {given} in this model" in err
    assert "index into a new store" in err
    # searching with it is fine: the vectors are the same
    code, out, err = run(capsys, "search", "dinosaur", "--store", str(store), "--model", str(other), "--json", "--threshold", "-1")
    assert code == 0 and '"id": "a"' in out, err


def test_indexing_after_training_types_were_edited_is_refused(tmp_path, capsys, corpus):
    """training.types decides which catalog phrases label under label_threshold and which under
    unseen_label_threshold, and model.json is no file the checksum covers: an edited list wrote
    spans labelled another way into the same store without a word (the labels audit)."""
    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    card = json.loads((default_model_dir() / "model.json").read_text(encoding="utf-8"))
    other = model_folder(tmp_path, "other", training={**card["training"], "types": card["training"]["types"][1:]})
    code, _, err = run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--model", str(other))
    assert code == 4, err
    assert "trained_types is 'sha256:" in err and "model.json's training.types" in err
    # the same phrases in another order, case or spacing are the same list; searching stays free
    same = model_folder(tmp_path, "same", training={**card["training"], "types": [t.upper() for t in reversed(card["training"]["types"])]})
    assert run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--model", str(same))[0] == 0
    code, out, err = run(capsys, "search", "dinosaur", "--store", str(store), "--model", str(other), "--json", "--threshold", "-1")
    assert code == 0 and '"id": "a"' in out, err


def test_trained_types_are_recorded_only_where_they_split_the_labels(tmp_path):
    info = ModelInfo.load(default_model_dir(), verify=False)
    assert info.label_threshold != info.unseen_label_threshold and info.stamp.trained_types.startswith("sha256:")
    one = ModelInfo.load(model_folder(tmp_path, "one", unseen_label_threshold=info.label_threshold), verify=False)
    assert one.stamp.trained_types is None  # one threshold for every phrase: the list labels nothing
    # a stamp written before the setting adopts it from the first writer, and only it
    check = check_stamp(replace(info.stamp, trained_types=None), info.stamp, writing=True)
    assert check.conflict is None and check.adopted == ("trained_types",)


@pytest.mark.parametrize("key", ["unseen_similarity_treshold", "unseen_type_templat", "unseen_passage_weigth", "Passage_weight"])
def test_a_misspelled_model_json_key_is_refused(tmp_path, key):
    """The train audit (round 29): a misspelled key was ignored, and the model ran with the
    default (the unseen threshold dropped: 4 hits of 5 for "dinosaur --all")."""
    from indexer.errors import ModelError

    folder = model_folder(tmp_path, "typo", **{key: 0.3})
    with pytest.raises(ModelError, match=f"model.json: {key!r} is no key nerindex reads; did you mean '"):
        ModelInfo.load(folder)


def test_an_unknown_model_json_key_is_a_warning(tmp_path, caplog):
    folder = model_folder(tmp_path, "notes", notes="built on Tuesday")
    with caplog.at_level(logging.WARNING, logger="indexer"):
        info = ModelInfo.load(folder)
    assert info.similarity_threshold == ModelInfo.load().similarity_threshold
    assert "'notes' is no key nerindex reads (ignored)" in caplog.text


def test_a_card_whose_dims_are_not_the_graphs_is_refused_before_a_store_is_written(tmp_path, capsys, corpus):
    """The train audit (round 29): "dims": 256 on a 384-dim graph loaded, `index` crashed with a
    traceback after writing 384-dim vectors into a store stamped 256."""
    folder = model_folder(tmp_path, "dims", dims=256, catalog=None)  # no catalog.npy to tell first
    store = tmp_path / "store"
    code, out, err = run(capsys, "index", str(corpus), "--store", str(store), "--model", str(folder))
    assert code == 3 and "dims is 256, but the graph encoder.int8.onnx gives span_vectors of 384" in err, err
    assert "Traceback" not in err and not (store / "store.sqlite").exists()


def test_query_time_settings_may_differ(tmp_path, capsys, corpus):
    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    other = model_folder(tmp_path, "tuned", similarity_threshold=0.4, passage_weight=0.0, type_template="a {}")
    code, out, err = run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--model", str(other), "--json")
    assert code == 0 and json.loads(out)["created"] == 1, err


def test_a_user_catalog_is_part_of_the_stamp(tmp_path, capsys, corpus):
    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    catalog = tmp_path / "types.txt"
    catalog.write_text("dinosaur\npolitician\n", encoding="utf-8")
    code, _, err = run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--catalog", str(catalog))
    assert code == 4 and "catalog is 'model' in the store but 'sha256:" in err
    assert "pass the --catalog file the store was written with" in err  # the option that fixes it
    # an audit: it read "built with model m 0.4.0 (checksum a13b…), this run uses m 0.4.0 (checksum a13b…)"
    assert "this run uses other settings: catalog" in err and "model folder and settings the store was built with" in err


def test_an_elasticsearch_refusal_of_a_setting_does_not_send_the_user_to_another_model():
    """An audit: after ``es reindex --catalog``, a plain ``index`` was told to re-index with
    ``es reindex --model <folder>``, which drops the --catalog file, naming one model twice."""
    import dataclasses

    from indexer.stores.base import ModelStamp
    from indexer.stores.elasticsearch.responses import mismatch_message

    stored = ModelStamp("m", "1", 384, "a" * 64, catalog="sha256:" + "5" * 64)
    message = mismatch_message("docs", "docs-000002", stored, dataclasses.replace(stored, catalog="model"),
                               "catalog is 'sha256:…' in the store but 'model' in this model")
    assert "other settings than this run's" in message and "--model" not in message
    other = mismatch_message("docs", "docs-000002", stored, dataclasses.replace(stored, checksum="b" * 64), "checksum …")
    assert "es reindex --model <folder>" in other


def test_a_catalog_phrase_a_search_would_refuse_is_refused_at_its_line(tmp_path):
    """An audit: a phrase with a NUL, or of 300 characters, was exported into a model's catalog."""
    from indexer.errors import InputError

    catalog = tmp_path / "types.txt"
    for text, message in (("person\nci\x00ty\n", "NUL"), ("person\n\n" + "x" * 300 + "\n", "longer than 200")):
        catalog.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=message) as err:
            read_phrases(catalog)
        assert err.value.line == (2 if "\x00" in text else 3)


@pytest.mark.parametrize("text, line, message", [
    ("city\n\ufeffperson\n", 2, r"U\+FEFF"),  # two Notepad files joined with cat
    ("city\nper\u00adson\n", 2, r"U\+00AD"),
    ("city\nriver\nperson\u200b\n", 3, r"U\+200B"),
    ("person\ncity\nPerson\n", 3, "line 1"),
    ("political party\n# two spaces\npolitical  party\n", 3, "'political party'"),
])
def test_a_catalog_phrase_that_would_label_invisibly_is_refused_at_its_line(tmp_path, text, line, message):
    """The labels audit (round 29): an invisible character made labels no typed filter matches
    ("\ufeffperson"), and phrases the uncased model reads alike ("person", "Person") took several of
    a span's `labels_per_span` places with one vector, pushing "politician" out."""
    from indexer.errors import InputError

    catalog = tmp_path / "types.txt"
    catalog.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        read_phrases(catalog)
    assert err.value.line == line and err.value.path == str(catalog)
    assert read_phrases(catalog, new=False)  # a model folder's own catalog: read as it was exported


def test_a_catalog_phrase_spelled_with_a_zero_width_joiner_is_kept(tmp_path):
    """A review: Persian and Indic words are spelled with ZWNJ/ZWJ, and filters typed so hold them."""
    catalog = tmp_path / "types.txt"
    catalog.write_text("person\n\u06a9\u062a\u0627\u0628\u200c\u062e\u0627\u0646\u0647\n\u0915\u094d\u200d\u0937\n", encoding="utf-8")
    assert read_phrases(catalog)[1:] == ["\u06a9\u062a\u0627\u0628\u200c\u062e\u0627\u0646\u0647", "\u0915\u094d\u200d\u0937"]


def test_a_bad_catalog_line_is_named_by_index(tmp_path, capsys, corpus):
    """The labels audit (round 29): `index --catalog` named the file but dropped the line."""
    catalog = tmp_path / "types.txt"
    catalog.write_text("person\n" + "x" * 201 + "\n", encoding="utf-8")
    code, _, err = run(capsys, "index", str(corpus), "--store", str(tmp_path / "s"), "--catalog", str(catalog))
    assert code == 2 and err.startswith(f"error: {catalog}:2: the phrase is longer than 200"), err


def test_the_shipped_catalog_reads_as_it_is():
    from indexer.model_folder import default_model_dir

    path = default_model_dir() / "catalog.txt"
    assert read_phrases(path) == [p for p in path.read_text(encoding="utf-8").splitlines() if p.strip()]


def test_a_catalog_file_with_a_byte_order_mark_labels_with_the_phrase_itself(tmp_path, capsys, corpus):
    # Notepad's UTF-8 starts with a BOM: kept, "\ufeffperson" would look right and match no filter
    catalog = tmp_path / "types.txt"
    catalog.write_bytes(b"\xef\xbb\xbfperson\r\ncity\r\n")
    assert read_phrases(catalog) == ["person", "city"]
    store = tmp_path / "store"
    code, _, err = run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id", "--catalog", str(catalog))
    assert code == 0, err
    code, out, err = run(capsys, "search", "person", "--store", str(store), "--where", "spans.labels=person", "--json")
    assert code == 0 and out.strip(), err


def test_a_store_of_nerindex_0_2_0_adopts_the_settings_once(tmp_path, capsys, caplog, corpus):
    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    conn = sqlite3.connect(store / "store.sqlite")
    (raw,) = conn.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
    old = {k: v for k, v in json.loads(raw).items() if k not in STORED_SETTINGS}
    assert set(old) == {"id", "version", "dims", "checksum", "similarity"}  # what 0.2.0 recorded
    conn.execute("UPDATE meta SET value = ? WHERE key = 'model'", (json.dumps(old),))
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING):
        assert run(capsys, "search", "dinosaur", "--store", str(store))[0] == 0
        assert not caplog.records  # reading records nothing
        assert run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id")[0] == 0
        assert run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id")[0] == 0
    (line,) = [r.getMessage() for r in caplog.records if "recording" in r.getMessage()]  # once
    assert "written by an earlier nerindex" in line and "detection_threshold=0.08" in line
    other = model_folder(tmp_path, "other", detection_threshold=0.3)
    code, _, err = run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--model", str(other))
    assert code == 4 and "detection_threshold is 0.08 in the store but 0.3" in err


def test_stamp_records_every_stored_setting_and_reads_back():
    stamp = ModelInfo.load(default_model_dir(), verify=False).stamp
    assert all(getattr(stamp, name) is not None for name in STORED_SETTINGS)
    assert ModelStamp.from_dict(json.loads(json.dumps(stamp.to_dict()))) == stamp
    old = ModelStamp.from_dict({"id": "m", "version": "1", "dims": 384, "checksum": stamp.checksum})
    assert old.to_dict() == {"id": "m", "version": "1", "dims": 384, "checksum": stamp.checksum, "similarity": "cosine"}
    check = check_stamp(old, stamp, writing=True)
    assert check.conflict is None and check.adopted == STORED_SETTINGS and check.recorded.detection_threshold == 0.08
    assert check_stamp(old, stamp, writing=False).adopted == ()


def test_a_model_without_the_stores_candidate_head_is_refused(tmp_path, capsys, corpus):
    """Removing candidate_threshold from model.json read as "unknown" and let a model without a
    candidate head write into a store whose spans include candidates (audit2-model). A card that
    still says it has the head is now refused before any store is opened (an audit: the head was
    silently off); the stamp comparison itself: the test below."""
    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    other = model_folder(tmp_path, "other")
    card = json.loads((other / "model.json").read_text(encoding="utf-8"))
    del card["candidate_threshold"]
    (other / "model.json").write_text(json.dumps(card), encoding="utf-8")
    code, _, err = run(capsys, "index", str(more(tmp_path)), "--store", str(store), "--id-field", "id", "--model", str(other))
    assert code == 3 and "model.json: heads_config.candidate_head says the model has a candidate head" in err, err


def test_candidate_head_none_is_compared_in_a_complete_stamp_and_adopted_in_an_old_one():
    stamp = ModelInfo.load(default_model_dir(), verify=False).stamp
    headless = replace(stamp, candidate_threshold=None)
    assert "candidate_threshold is None in the store" in (check_stamp(headless, stamp, writing=True).conflict or "")
    assert check_stamp(headless, headless, writing=True).conflict is None
    assert check_stamp(stamp, headless, writing=False).conflict is None  # reading: same vectors
    # a stamp of a 0.3.0 model (the stored settings but not the newer keys) still adopts the head
    old = replace(stamp, candidate_threshold=None, unseen_label_threshold=None)
    check = check_stamp(old, stamp, writing=True)
    assert check.conflict is None and check.adopted == ("candidate_threshold", "unseen_label_threshold")


def test_info_shows_a_store_of_another_model_and_why_it_refuses(tmp_path, capsys, corpus):
    """info refused a store built with another model with the bare error (exit 4), and it is what
    one runs to see why (an audit): it shows the model, then the store's refusal, and exits 4."""
    import hashlib

    store = tmp_path / "store"
    assert run(capsys, "index", str(corpus), "--store", str(store), "--id-field", "id")[0] == 0
    other = model_folder(tmp_path, "other")
    tokenizer = other / "tokenizer.json"
    data = tokenizer.read_bytes() + b"\n"  # another file, so another checksum
    tokenizer.unlink()
    tokenizer.write_bytes(data)
    card = json.loads((other / "model.json").read_text(encoding="utf-8"))
    card["files"]["tokenizer.json"] = hashlib.sha256(data).hexdigest()
    (other / "model.json").write_text(json.dumps(card), encoding="utf-8")
    code, out, err = run(capsys, "info", "--store", str(store), "--model", str(other))
    assert code == 4 and out.startswith("model: ") and "store: refuses this model:" in out and "checksum is" in out
    code, out, err = run(capsys, "info", "--store", str(store), "--model", str(other), "--json")
    report = json.loads(out)
    assert code == 4 and report["store"] is None and "checksum is" in report["mismatch"]
