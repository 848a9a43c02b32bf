"""Text hygiene at the edges: strings that are not valid Unicode, and characters a terminal would run.

Arguments and requests arrive as Python strings that can still hold lone surrogates: a JSON
``\\ud800`` escape, or a command-line argument that is not UTF-8 (Python keeps its bytes as
U+DC80–U+DCFF). Such a string cannot be encoded, so the tokenizer or the store would fail deep
inside with a traceback; the CLI and the service refuse it at the edge with one line instead. A
NUL is refused with them: it is encodable, but SQLite's text functions stop at it.
Corpus text printed to a terminal must not carry control characters: ``ESC[2J`` would clear the
screen rather than show.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from typing import Any, Sequence

_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
# CSI (ESC [ … final), OSC (ESC ] … BEL or ESC \; an unterminated one is left to the next rule, which
# drops its ESC ]: matched to the end it took the passage's words with it, an audit), two-character
# escapes, then any other C0/C1 control except tab and newline, and DEL
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
# controls that part words (the tokenizer reads them as spaces: runtime.WORD_BREAKS, and CR) are shown
# as the break they are, not deleted: "Paris\fBerlin" was printed "ParisBerlin" (an audit)
_BREAKS = {"\r": "\n", "\x0c": "\n", "\x85": "\n", "\x1c": "\n", "\x1d": "\n", "\x1e": "\n", "\x0b": " ", "\x1f": " "}


TRAILING_PUNCTUATION = ".,;:!?。．？！"  # what phrase_as_searched drops from a phrase's end


def phrase_as_searched(type_phrase: str) -> str:
    """The words of a type phrase that are searched: stripped, and a closing full stop or question
    mark dropped, which means nothing in a type (an audit: "sports team." was searched as a type
    nobody trained on, with another threshold and λ). Length limits are measured on this, by every
    surface (``stores.base.check_phrase`` refuses what cannot be searched)."""
    return type_phrase.strip().rstrip(TRAILING_PUNCTUATION).rstrip()


def emptiness(text: str) -> str | None:
    """How a reader says a text is blank (:func:`is_blank`), or None: "empty", or "empty (no word
    in it)" where it holds characters, none of them a word's."""
    if not is_blank(text):
        return None
    return "empty" if not text.strip() else "empty (no word in it)"


def is_blank(text: str) -> bool:
    """Whether ``text`` holds no word the tokenizer reads: only spaces, controls, format characters
    (a zero-width space, a BOM, a soft hyphen) and combining marks, which it drops. Such a passage
    can never be found; "   " was refused as empty while "\u200b\u200b" was stored (an audit)."""
    return all(ch.isspace() or ch == "\ufffd" or unicodedata.category(ch) in _NO_WORD for ch in text)


_NO_WORD = frozenset({"Cc", "Cf", "Co", "Mn", "Zs", "Zl", "Zp"})  # private use too, and U+FFFD: the tokenizer drops them


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None: its first lone surrogate (UTF-8 cannot encode it) or
    NUL (SQLite's text functions stop at it: a ``spans.text`` filter missed every span after one,
    an audit), and where."""
    at = unstorable_at(text)
    if at is None:
        return None
    if text[at] == "\x00":
        return f"a NUL character (U+0000) at character {at + 1}"
    return f"a lone surrogate U+{ord(text[at]):04X} at character {at + 1}"


def unstorable_at(text: str) -> int | None:
    """The index of the first character of ``text`` that :func:`unicode_problem` names, or None."""
    found = _UNSTORABLE.search(text)
    return None if found is None else found.start()


def value_problem(value: Any, where: str = "") -> str | None:
    """Where a value's strings (a record's keys and values, nested) hold what UTF-8 cannot encode (a
    lone surrogate), or None: a reader's record, or a passage given to the Python API. ``where``
    names the value ("its text"); without it a mapping's entries are fields (``field 'meta.lang'``)."""
    return _problem(value, where, ())


def _problem(value: Any, where: str, path: tuple[str, ...]) -> str | None:
    name = ".".join(path)
    label = (f"{where}, entry {name!r}" if where else f"field {name!r}") if path else where
    if isinstance(value, str):
        problem = unicode_problem(value)
        return None if problem is None else f"{label or 'a value'} holds {problem}"
    if isinstance(value, dict):
        for key, item in value.items():
            found = _problem(key, f"a key of {label or 'the record'}", ()) if isinstance(key, str) else None
            found = found or _problem(item, where, (*path, str(key)))
            if found is not None:
                return found
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            found = _problem(item, where, path)
            if found is not None:
                return found
    return None


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` less terminal escape sequences, control characters (tab and newline stay; the
    controls that part words become a newline or a space) and explicit bidirectional overrides.
    ``one_line``: tabs and line breaks as spaces too, for text inside one line of output (a span
    in a list).

    Apply it to each piece that is printed, after slicing by offsets, so offsets into the stored
    text stay right.
    """
    shown = _CONTROL.sub(lambda m: _BREAKS.get(m.group(), ""), text.replace("\r\n", "\n"))
    shown = _BIDI_CONTROL.sub("", shown)
    return re.sub(r"[\t\n]", " ", shown) if one_line else shown


# explicit bidirectional embeddings, overrides and isolates: an unclosed U+202E in a passage or an id
# reversed the rest of the terminal line, the next hit's text included (an audit); the marks that
# only say a direction (U+200E, U+200F, U+061C) stay, as right-to-left text uses them
_BIDI_CONTROL = re.compile("[\u202a-\u202e\u2066-\u2069]")


class RepeatedKey(ValueError):
    """A JSON object that gives a key twice (``key``): ``json.loads`` keeps the last value without
    a word, so ``{"id": "a", "id": "b"}`` was stored as "b" (an audit), and a request
    ``{"type": "dinosaur", "type": "city"}`` searched "city"."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key[:60]!r} appears twice in one object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` for input read at the edges (the file readers, the
    service's request bodies): a JSON object, refused with :class:`RepeatedKey` when a key repeats."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def reject_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant`` where NaN and Infinity, which JSON has not, are refused."""
    raise ValueError(f"{name} is not valid JSON")


def strict_json(text: str | bytes, *, constants: bool = False) -> Any:
    """``json.loads`` for files read at the edges besides a corpus (model.json, a mapping file, a
    BEIR folder's JSON Lines, silver files): a key given twice is a :class:`RepeatedKey`, NaN and
    Infinity (unless ``constants``) and nesting too deep for the parser a ValueError, so callers
    catch ValueError alone. ``json.loads`` kept a repeated key's last value without a word (an
    audit: a BEIR ``_id`` given twice named another passage, a model.json threshold given twice
    was used with the same checksum)."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys, **({} if constants else {"parse_constant": reject_constant}))
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # in nerindex's words (json_value_problem), for every caller
        raise ValueError(json_value_problem(exc)) from exc


def json_value_problem(exc: ValueError | RecursionError) -> str:
    """Why a JSON text that parsed as JSON could not be read as values, in a line for the person
    who wrote it: Python's own words for an integer of over 4,300 digits told a CLI user to call
    ``sys.set_int_max_str_digits()`` (an audit)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    found = re.search(r"value has (\d+) digits", str(exc))
    if found and "integer string conversion" in str(exc):
        return f"an integer of {found.group(1)} digits (integers are read up to {sys.get_int_max_str_digits()} digits)"
    return str(exc)


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def invalid_utf8(exc: UnicodeDecodeError, *, of_line: bool = False) -> str:
    """The one wording of input that is not UTF-8, for every reader: the first bad byte and where
    (``of_line``: counted in the line that was decoded), and a hint where the data starts with a
    UTF-16 byte-order mark (Excel's "Unicode text"), which read as a plain "invalid UTF-8" (an audit)."""
    data: bytes = exc.object
    where = f" at byte {exc.start + 1} of the line" if of_line else ""
    hint = "; the file is UTF-16, as its byte-order mark says: save it as UTF-8" if data[:2] in _UTF16_BOMS else ""
    return f"invalid UTF-8 (byte 0x{data[exc.start:exc.start + 1].hex()}{where}{hint})"


def first_named(names: Sequence[str], total: int | None = None, *, shown: int = 3) -> str:
    """The first ``shown`` of ``names`` joined, with ", ..." where there are more (``total`` of
    them, where ``names`` holds only the first few): how a one-line message lists what it counts."""
    more = (len(names) if total is None else total) > shown
    return ", ".join(names[:shown]) + (", ..." if more else "")
