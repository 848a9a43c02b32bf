"""JSON Lines files nerindex reads besides a corpus (BEIR folders, silver files): one value a line,
blank lines skipped, and a line that is not JSON (or gives a key twice, or NaN) an :class:`InputError`
naming the file and line.

(A corpus in JSONL is read by :mod:`indexer.reading.structured`, with its own rules for records.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError
from .file_lines import capped_lines
from .text import invalid_utf8, json_value_problem, strict_json


def json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of ``path``."""
    try:
        handle = open(path, "rb")  # lines decoded one by one: invalid UTF-8 is named at its line (a review)
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", path=str(path)) from exc
    with handle:
        for lineno, raw in enumerate(capped_lines(handle, str(path)), start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(invalid_utf8(exc, of_line=True), path=str(path), line=lineno) from exc
            if not line.strip():
                continue
            try:
                value = strict_json(line)
            except ValueError as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else json_value_problem(exc)
                raise InputError(f"not JSON: {reason}", path=str(path), line=lineno) from exc
            yield lineno, value
