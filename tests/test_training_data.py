"""Reading labelled training files (no torch needed): bad input is a one-line error naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.errors import InputError
from indexer.training.data import Source, read_sources


def test_a_tag_without_a_phrase_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "train.conll"
    path.write_text("Alice\tB-person\n\nThe\tO\nAcme\tB-spaceship\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"train.conll:3: the sentence starting here holds tag 'spaceship', which is not in phrases.json's 'wnut17' section"):
        read_sources([Source("wnut17", path)])  # a KeyError traceback before (an audit)
    path.write_text("Alice\tB-person\n", encoding="utf-8")
    passages, origin, phrases, counts = read_sources([Source("wnut17", path)])
    assert phrases == [["person"]] and counts["sentences_read"] == 1
