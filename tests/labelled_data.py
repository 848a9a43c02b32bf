"""Where the tests find the labelled sets: ``NERINDEX_DATA``, the variable ``nerindex train`` and
``nerindex silver`` read (no default path outside the repository). Tests that need the sets skip
without it, saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ["NERINDEX_DATA"]) if os.environ.get("NERINDEX_DATA") else Path("NERINDEX_DATA is not set")


def needs(relative: str) -> pytest.MarkDecorator:
    """Skip unless ``relative`` (a file or folder of the labelled sets) exists under ``DATA``."""
    return pytest.mark.skipif(not (DATA / relative).exists(), reason=f"no {relative} under NERINDEX_DATA ({DATA})")
