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
