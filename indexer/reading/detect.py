"""Which reader a path needs: by extension, with an explicit override, and a sniff for ``.txt``.

A ``.txt`` file is ambiguous: CrossNER ships token-TAB-tag files named ``.txt`` while most ``.txt``
files are prose. Looking at the first lines settles it cheaply and keeps ``format="auto"`` right for
both. A folder is read as CoNLL where its files are (``.conll`` and the like, or ``.txt`` files that
look like CoNLL), as text files where they are prose, and refused where it mixes the two (an audit:
CrossNER's folder was indexed as whole files with their tags, and ``.conll`` files beside a
``.txt`` were left out without a word).
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path
from typing import Literal, get_args

from ..conll import TAG
from ..errors import InputError

Format = Literal["auto", "jsonl", "csv", "tsv", "parquet", "txt", "conll"]
FORMATS: tuple[str, ...] = get_args(Format)

EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".conll": "conll",
    ".bio": "conll",
    ".iob": "conll",
    ".iob2": "conll",
}
CONLL_EXTENSIONS = frozenset(ext for ext, fmt in EXTENSIONS.items() if fmt == "conll")
# only line-oriented formats are read through gzip; the CoNLL parser opens files itself
GZIP_FORMATS = frozenset({"jsonl", "csv", "tsv"})
FOLDER_FORMATS = frozenset({"txt", "conll"})
# the files a folder read in each folder format takes (CoNLL: .txt files that look like CoNLL too)
FOLDER_EXTENSIONS = {"txt": frozenset({".txt"}), "conll": CONLL_EXTENSIONS | {".txt"}}

_NEAR_TAG = re.compile(r"^(?:o|[BIESULbiesul][-_][A-Za-z][\w-]*)$")  # a tag mistyped: B_MISC, b-misc, i_per
_SNIFF_BYTES = 65536
_SNIFF_LINES = 20
# a token row has the token, the tag and a few columns between (MultiCoNER: 4); a line of prose
# that happens to end in "E-book." or "B-52" has more words, or is the file's only line (an audit:
# such a file was read as CoNLL and stored as its first word)
_MAX_COLUMNS = 6
_MIN_ROWS = 2


def split_suffix(path: Path) -> tuple[str, bool]:
    """The format-bearing extension (lower case) and whether the file is gzip-compressed."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return (suffixes[-2] if len(suffixes) > 1 else ""), True
    return (suffixes[-1] if suffixes else ""), False


def looks_like_conll(path: Path, *, min_rows: int = _MIN_ROWS) -> bool:
    """True when the first non-blank lines of a file (up to ``_SNIFF_LINES``) are all rows of a few
    columns ending in a BIO/IO tag, at least ``min_rows`` of them (1 where the user said CoNLL), or
    a mistyped one (``B_MISC``, ``b-misc``: :data:`_NEAR_TAG`) among three in four true tags, after
    a header row if there is one (the reader refuses it, naming it): such a
    file was stored as prose, tags and all, or left out of a CoNLL folder without a word, where the
    reader names the line (an audit); not any word (a review: "Lockheed F-117" and "Shopping list"
    made prose files CoNLL). A BOM no longer hides the first line's shape (the audit)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return False  # the reader will report the real problem with the path
    lines = head.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace").splitlines()
    if len(head) == _SNIFF_BYTES and lines:
        lines.pop()  # probably cut in the middle
    rows = tagged = 0
    header = False  # a first row of tab-separated column names ("token\tlabel"), which the reader names
    for line in lines:
        if not line.strip() or line.startswith(("#", "-DOCSTART-")):
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if not 2 <= len(cols) <= _MAX_COLUMNS:
            return False
        last = cols[-1].strip()
        is_tag = bool(TAG.match(last))
        if not is_tag and not _NEAR_TAG.match(last):
            if rows or header or "\t" not in line:  # "Shopping list" over "Milk O" lines is prose (a review)
                return False
            header = True  # a reader audit: such a file was stored as one prose passage, tags and all
            continue
        rows += 1
        tagged += is_tag
        if rows >= _SNIFF_LINES:
            break
    return tagged >= min_rows and 4 * tagged >= 3 * rows


def folder_files(root: Path, fmt: str) -> list[tuple[Path, str]]:
    """Files under ``root`` that a read in folder format ``fmt`` takes, skipping hidden ones, in a
    stable order (for ``conll``: its extensions, and the ``.txt`` files that look like CoNLL)."""
    return _folder_entries(root, FOLDER_EXTENSIONS[fmt], conll=fmt == "conll")[0]


def left_out(root: Path, fmt: str) -> list[str]:
    """What a folder read in ``fmt`` leaves out that is not hidden: files of other kinds or that are
    no regular file, ``.txt`` files of a CoNLL folder that are prose (an audit: dropped without a
    word), and folders behind symbolic links (not followed), as paths in the folder; a folder is
    marked with a trailing ``/`` (an audit: both went without a word)."""
    return _folder_entries(root, FOLDER_EXTENSIONS[fmt], conll=fmt == "conll")[1]


def _folder_entries(
    root: Path, extensions: frozenset[str], *, conll: bool = False
) -> tuple[list[tuple[Path, str]], list[str]]:
    """(the files of ``extensions`` under ``root``, as (path, path in the folder), with ``conll``
    only the ``.txt`` ones that look like CoNLL; what that leaves out, :func:`left_out`), both
    sorted: one walk decides both, so they never disagree. Hidden files and folders are neither
    (and hidden folders are not entered); folders behind symbolic links are not followed."""
    found: list[tuple[Path, str]] = []
    out: list[str] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend((here / d).relative_to(root).as_posix() + "/" for d in dirs if (here / d).is_symlink())
        for name in files:
            if name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            if (path.suffix.lower() in extensions and path.is_file()
                    and not (conll and path.suffix.lower() == ".txt" and not looks_like_conll(path, min_rows=1))):
                found.append((path, rel))
            else:  # of other kinds, or not regular files (a broken link, a FIFO)
                out.append(rel)
    return sorted(found, key=lambda pr: pr[1]), sorted(out)


def folder_format(root: Path) -> str:
    """``conll`` or ``txt`` for a folder (see the module docstring); a mix is an InputError."""
    files = _folder_entries(root, FOLDER_EXTENSIONS["conll"])[0]
    conll = [(p, rel) for p, rel in files if p.suffix.lower() != ".txt"]
    texts = [(p, rel) for p, rel in files if p.suffix.lower() == ".txt"]
    # every .txt file: a folder of five CoNLL files and a prose one read as CoNLL, leaving the
    # prose out without a word, when only the first five were looked at (an audit)
    sniffed = {rel: looks_like_conll(p) for p, rel in texts}
    prose = [rel for rel, tagged in sniffed.items() if not tagged]
    if not prose and (conll or texts):
        return "conll"
    if conll or len(prose) < len(sniffed):
        tagged = conll[0][1] if conll else next(rel for rel, is_conll in sniffed.items() if is_conll)
        raise InputError(f"holds both plain text ({prose[0]}) and CoNLL files ({tagged}): say which to read with "
                         "--format conll (the CoNLL files; .txt files that are prose left out) or --format txt "
                         "(the .txt files, one passage each)", path=str(root))
    return "txt"


def resolve_format(path: str | Path, format: str = "auto") -> str:
    """The concrete format for ``path``: ``format`` itself unless it is ``"auto"``.

    Raises :class:`InputError` for a missing path, a folder given to a one-file format, or an
    extension that names no format (the message says how to pass one).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise InputError("no such file or directory", path=name)
    if p.is_dir():
        if format == "auto":
            return folder_format(p)
        if format not in FOLDER_FORMATS:
            raise InputError(
                f"is a folder; format {format!r} reads one file (folders hold .txt or CoNLL files)",
                path=name,
            )
        return format
    ext, gz = split_suffix(p)
    if format == "auto":
        if ext in EXTENSIONS:
            format = EXTENSIONS[ext]
        elif ext == ".txt" and not gz:
            format = "conll" if looks_like_conll(p) else "txt"
        elif ext == ".txt":  # "cannot tell the format from '.txt' (known: ..., .txt)" before (an audit)
            raise InputError("a gzip-compressed .txt file is not read (gzip is read for jsonl, csv and tsv): "
                             "decompress it first", path=name)
        elif ext == ".json":  # "pass the format" led to "malformed JSON (column 2)" for an array (an audit)
            raise InputError("a .json file is not read: JSON Lines are (one JSON object per line, .jsonl); "
                             "--format jsonl reads it if it is that, and jq -c '.[]' FILE.json > FILE.jsonl "
                             "converts a JSON array", path=name)
        else:
            known = ", ".join(sorted(EXTENSIONS) + [".txt"])
            raise InputError(
                f"cannot tell the format from the extension {ext or '(none)'!r} (known: {known}); "
                f"pass the format explicitly (jsonl, csv, tsv, parquet, txt, conll)",
                path=name,
            )
    if gz and format not in GZIP_FORMATS:
        raise InputError(f"gzip-compressed input is read only for jsonl, csv and tsv, not {format}", path=name)
    return format
