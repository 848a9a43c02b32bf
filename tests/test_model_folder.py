"""ModelInfo.load is the one gate of a model folder: what model.json may say and point at.

Every file the card names must be checksummed (listed in ``files``) and inside the folder, else it
could change without the checksum, and so the store's model stamp, noticing (audit2-model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from indexer.assets import default_model_dir
from indexer.errors import ModelError
from indexer.model_folder import ModelInfo

DELETE = object()


def folder_with(tmp_path: Path, edit: Any = None, **changes: Any) -> Path:
    """The shipped model's files (linked) with ``changes`` made to its model.json (DELETE removes a
    key) and ``edit(card)`` applied after them."""
    source = default_model_dir()
    folder = tmp_path / "model"
    folder.mkdir()
    for path in source.iterdir():
        if path.name != "model.json":
            (folder / path.name).symlink_to(path)
    card = json.loads((source / "model.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is DELETE:
            card.pop(key, None)
        else:
            card[key] = value
    if edit is not None:
        edit(card)
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


def test_the_shipped_model_and_a_linked_copy_load():
    assert ModelInfo.load(default_model_dir()).graphs["cpu"] == "encoder.int8.onnx"


def test_a_linked_copy_loads(tmp_path):
    assert ModelInfo.load(folder_with(tmp_path)).checksum == ModelInfo.load(default_model_dir()).checksum


def _unlist_cpu_graph(card: dict) -> None:
    card["files"].pop("encoder.int8.onnx")


def _unlist_tokenizer(card: dict) -> None:
    card["files"].pop("tokenizer.json")


def _unlist_catalog(card: dict) -> None:
    card["files"].pop("catalog.npy")


def _unlist_heads(card: dict) -> None:
    card["files"].pop("heads.safetensors")


@pytest.mark.parametrize(
    "edit, key",
    [
        (_unlist_cpu_graph, "graphs.cpu"),
        (_unlist_tokenizer, "tokenizer"),
        (_unlist_catalog, "catalog.vectors"),
        (_unlist_heads, "heads"),
    ],
)
def test_a_named_file_missing_from_files_is_refused(tmp_path, edit, key):
    with pytest.raises(ModelError, match=rf"model.json: {key} names .* not listed in files"):
        ModelInfo.load(folder_with(tmp_path, edit))


@pytest.mark.parametrize("name", ["../../old/encoder.int8.onnx", "/tmp/encoder.int8.onnx", "sub/../../x.onnx"])
def test_a_graph_outside_the_folder_is_refused_even_if_listed(tmp_path, name):
    def edit(card: dict) -> None:
        card["graphs"]["cpu"] = name
        card["files"][name] = card["files"]["encoder.int8.onnx"]

    with pytest.raises(ModelError, match="outside the model folder"):
        ModelInfo.load(folder_with(tmp_path, edit), verify=False)


def test_empty_files_is_refused(tmp_path):
    with pytest.raises(ModelError, match="model.json: files is empty"):
        ModelInfo.load(folder_with(tmp_path, files={}), verify=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": 99}, "format must be 1, not 99"),
        ({"format": DELETE}, "format must be 1, not None"),
        ({"detection_threshold": 1.5}, r"detection_threshold must be a number within \[0, 1\], not 1.5"),
        ({"detection_threshold": -0.5}, r"detection_threshold must be a number within \[0, 1\]"),
        ({"candidate_threshold": -1}, r"candidate_threshold must be a number within \[0, 1\]"),
        ({"similarity_threshold": 2.0}, r"similarity_threshold must be a number within \[-1, 1\], not 2.0"),
        ({"similarity_threshold": "high"}, "similarity_threshold must be a number .*'high'"),
        ({"similarity_threshold": None}, "similarity_threshold must be given, not None"),
        ({"similarity_threshold": True}, "similarity_threshold must be a number"),
        ({"unseen_similarity_threshold": 5}, "unseen_similarity_threshold must be a number"),
        ({"label_threshold": -3}, "label_threshold must be a number"),
        ({"unseen_label_threshold": "0.3"}, "unseen_label_threshold must be a number"),
        ({"passage_weight": 1000.0}, r"passage_weight must be a number within \[0, 10\]"),
        ({"passage_weight": -5.0}, "passage_weight must be a number"),
        ({"unseen_passage_weight": 11}, "unseen_passage_weight must be a number"),
        ({"dims": "384x"}, "dims must be a whole number of at least 1, not '384x'"),
        ({"dims": 0}, "dims must be a whole number"),
        ({"max_length": 3}, "max_length must be a whole number of at least 8, not 3"),
        ({"max_span_width": 0}, "max_span_width must be a whole number of at least 1"),
        ({"max_span_width": 2.5}, "max_span_width must be a whole number"),
        ({"labels_per_span": -1}, "labels_per_span must be a whole number of at least 0"),
        ({"span_decoding": "Nested"}, "span_decoding must be 'nested' or 'flat', not 'Nested'"),
        ({"similarity": "dot"}, "similarity must be 'cosine', not 'dot'"),
        ({"type_template": "entity type"}, "type_template must be text with exactly one {}"),
        ({"type_template": "{} {}"}, "type_template must be text with exactly one {}"),
        ({"type_template": "{type}"}, "type_template must be text with exactly one {}"),
        ({"type_template": "{} {0}"}, "type_template must be text with exactly one {}"),
        ({"type_template": 3}, "type_template must be text"),
        ({"unseen_type_template": "name"}, "unseen_type_template must be text with exactly one {}"),
        ({"training": {"types": "person, location"}}, "training.types must be a list of type phrases"),
        ({"training": {"types": ["person", 3]}}, "training.types must be a list of type phrases"),
        ({"training": []}, "training must be an object"),
        ({"graphs": "encoder.int8.onnx"}, "graphs must be a non-empty object"),
        ({"graphs": {}}, "graphs must be a non-empty object"),
        ({"graphs": {"cpu": 3}}, "graphs.cpu must be a file name, not 3"),
        ({"files": ["encoder.int8.onnx"]}, "files must be an object of file name to sha256"),
        ({"catalog": "catalog.txt"}, "catalog must be an object"),
    ],
)
def test_a_bad_model_json_value_is_one_model_error_naming_the_key(tmp_path, changes, message):
    """Out-of-range values were used silently; values of the wrong JSON type crashed with a
    TypeError/ValueError traceback (audit2-model)."""
    with pytest.raises(ModelError, match=rf"model.json: {message}"):
        ModelInfo.load(folder_with(tmp_path, **changes), verify=False)


def test_a_key_given_twice_in_model_json_is_refused(tmp_path):
    """An audit: JSON keeps a repeated key's last value, so a threshold given twice was used silently,
    under the same checksum (the files' sha256s do not cover model.json)."""
    folder = folder_with(tmp_path)
    card = folder / "model.json"
    text = card.read_text(encoding="utf-8")
    card.write_text(text.replace('"similarity_threshold": ', '"similarity_threshold": 0.9, "similarity_threshold": ', 1),
                    encoding="utf-8")
    with pytest.raises(ModelError, match="model.json: cannot read model.json: key 'similarity_threshold' appears twice"):
        ModelInfo.load(folder, verify=False)


def _no_candidate_head(card: dict) -> None:
    card["heads_config"]["candidate_head"] = False
    card["outputs"].remove("candidate_scores")


@pytest.mark.parametrize("changes, edit, message", [
    ({"candidate_threshold": DELETE}, None, "heads_config.candidate_head says the model has a candidate head, "
                                            "but candidate_threshold is missing"),
    ({"candidate_threshold": None, "heads_config": DELETE}, None, r"outputs \(candidate_scores\) says the model has a "
                                                                  "candidate head, but candidate_threshold is missing"),
    ({}, _no_candidate_head, "heads_config.candidate_head says the model has no candidate head, but candidate_threshold "
                             "is given"),
])
def test_a_candidate_head_without_its_threshold_or_the_reverse_is_refused(tmp_path, changes, edit, message):
    """An audit: a card with heads_config.candidate_head true and no candidate_threshold loaded with
    the candidate head silently off (other spans, no error)."""
    with pytest.raises(ModelError, match=rf"model.json: {message}: give both or neither"):
        ModelInfo.load(folder_with(tmp_path, edit, **changes), verify=False)


def test_optional_values_may_be_absent_or_null(tmp_path):
    info = ModelInfo.load(
        folder_with(tmp_path, label_threshold=DELETE, labels_per_span=DELETE, passage_weight=None,
                    span_decoding=DELETE, similarity=DELETE, type_template="a {} entity", candidate_threshold=None,
                    unseen_type_template=None, edit=_no_candidate_head),
        verify=False,
    )  # fmt: skip
    assert info.label_threshold == info.similarity_threshold and info.labels_per_span == 3
    assert info.passage_weight == 0.0 and not info.nested_spans and info.candidate_threshold is None
    assert info.type_template == "a {} entity" and info.unseen_type_template is None


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    """train.json and heads.safetensors were written in place: a run killed while writing left half
    a file (an audit); they, and model.json, go through write_file."""
    from indexer.atomic_files import write_file

    target = tmp_path / "train.json"
    target.write_text("old")

    def half_then_fail(handle):
        handle.write(b"new, half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file(tmp_path, "train.json", half_then_fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["train.json"]
    write_file(tmp_path, "train.json", lambda handle: handle.write(b"new"), mode=0o644)
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o644


def test_a_write_that_fails_names_the_file_it_was_for(tmp_path):
    """A CLI audit: a full disk was "error: No space left on device", naming no file, and a folder
    that may not be written named the temporary file ("….tmp: Read-only file system")."""
    import errno

    from indexer.atomic_files import write_file

    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        write_file(tmp_path, "train.json", full)
    assert info.value.filename == str(tmp_path / "train.json") and info.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as info:
        write_file(tmp_path / "missing", "train.json", lambda handle: None)
    assert info.value.filename == str(tmp_path / "missing" / "train.json")
    assert list(tmp_path.iterdir()) == []
