"""JSON Lines files nerindex reads besides a corpus (BEIR folders, silver files): one value a line,
blank lines skipped, and a line that is not JSON an :class:`InputError` naming the file and line.

(A corpus in JSONL is read by :mod:`indexer.reading.structured`, with its own rules for records.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


def json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of ``path``."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", path=str(path)) from exc
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not JSON: {exc.msg}", path=str(path), line=lineno) from exc
