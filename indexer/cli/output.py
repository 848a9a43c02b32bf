"""What the CLI writes to stdout, whatever the terminal or file it goes to can hold.

Why: ``--json`` lines are read by scripts, and a line break inside a line breaks the reader
(U+2028, U+2029 and U+0085 are line ends to ``str.splitlines``; JSON allows them raw), and a stdout
whose encoding cannot hold every character (a Latin-1 locale, a Windows file) ended a search with
an ``UnicodeEncodeError`` traceback after half its lines (an audit).
"""

from __future__ import annotations

import codecs
import json
import sys
from typing import Any, TextIO

_LINE_ENDS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def holds_unicode(stream: TextIO) -> bool:
    """Whether ``stream`` encodes every character (a UTF encoding)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


def json_out(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON for stdout: escaped to ASCII where stdout cannot hold Unicode, and with the
    line ends that are not JSON's (``str.splitlines``'s U+2028, U+2029, U+0085) always escaped."""
    text = json.dumps(value, indent=indent, ensure_ascii=not holds_unicode(sys.stdout))
    for raw, escaped in _LINE_ENDS.items():
        text = text.replace(raw, escaped)  # only inside strings: JSON has them nowhere else
    return text


def replace_unencodable() -> None:
    """Let text that stdout or stderr cannot encode be written as ``\\xe9``-style escapes rather
    than end the command with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if not holds_unicode(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
