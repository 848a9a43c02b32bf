"""CoNLL / BIO / IO files → passages with gold spans.

One parser covers every variant in the labelled data nerindex is trained and evaluated on:
``token TAB tag``, ``token _ _ tag`` with ``# id …`` header lines (MultiCoNER), ``token tag`` with
spaces and IO tags where ``I-X`` also starts an entity (wikigold), and ``-DOCSTART-`` lines. The
token is the first column and the tag the last; sentences are separated by blank lines. The text of a
sentence is its tokens joined by single spaces, and gold spans are character offsets into that text.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from .errors import InputError
from .file_lines import capped_lines
from .records import GoldSpan, Passage, text_id
from .text import invalid_utf8, unicode_problem

TAG = re.compile(r"^(?:O|[BIESUL]-.+)$")  # BIO, IO, BIOES and BILOU (spaCy's BILUO): U- is S-, L- is E-
_BILOU = {"U-": "S-", "L-": "E-"}


@dataclass(frozen=True)
class Sentence:
    """Tokens and tags of one sentence, with the line its first token is on (for messages)."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    line: int
    header: str | None = None


def bio_spans(tokens: tuple[str, ...], tags: tuple[str, ...]) -> list[GoldSpan]:
    """Character spans of the entities tagged in a sentence (BIO, IOB1/IO and BIOES alike).

    ``I-X`` continues an entity only when the previous tag is of the same type X; otherwise it
    starts one, which is what IO-tagged data (wikigold) needs and what lenient BIO readers do.
    """
    spans: list[GoldSpan] = []
    starts: list[int] = []
    pos = 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    cur_label: str | None = None
    cur_start = cur_end = 0
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        begin = prefix in ("B", "S") or (prefix in ("I", "E") and label != cur_label)
        if prefix == "O" or begin:
            if cur_label is not None:
                spans.append(GoldSpan(cur_start, cur_end, cur_label))
                cur_label = None
        if prefix != "O":
            if cur_label is None:
                cur_label, cur_start = label, starts[i]
            cur_end = starts[i] + len(tokens[i])
            if prefix in ("E", "S"):
                spans.append(GoldSpan(cur_start, cur_end, cur_label))
                cur_label = None
    if cur_label is not None:
        spans.append(GoldSpan(cur_start, cur_end, cur_label))
    return spans


def _is_tag(text: str) -> bool:
    """One BIO/IO tag and nothing else (``O``, ``B-PER``)."""
    return not any(c.isspace() for c in text) and bool(TAG.match(text))


def _lines(handle: IO[bytes], name: str) -> Iterator[str]:
    """The lines of a file, split where ``open(newline="")`` splits them (LF, CRLF, a lone CR), without
    their ends or a BOM that opens one; decoded one by one, so invalid UTF-8 is reported on its own line."""
    lineno = 0
    chunks = capped_lines(handle, name)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except InputError as exc:  # named by this reader's count, which a lone CR ends a line in too (a review)
            raise InputError(exc.reason, path=name, line=lineno + 1) from None
        for raw in chunk.splitlines():  # bytes split at LF, CR and CRLF alone
            lineno += 1
            if raw.startswith(codecs.BOM_UTF8):  # a BOM is no token: at line 1, or where files were joined
                raw = raw[3:]  # (cat; the train audit: "\ufeffEmpire" lost its gold mention without a word)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(invalid_utf8(exc, of_line=True), path=name, line=lineno) from exc


def iter_sentences(path: str | Path) -> Iterator[Sentence]:
    """Parse a CoNLL-style file into sentences; a malformed line raises :class:`InputError`."""
    name = str(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", path=name) from exc
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    header: str | None = None
    width: tuple[int, int] | None = None  # the file's column count and the line that set it
    broken = False  # a dropped blank token ended an entity: the next I-/E- tag starts one
    with handle:
        for lineno, line in enumerate(_lines(handle, name), start=1):
            # a document marker ends a sentence as a blank line does (one may not come before it)
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    yield Sentence(tuple(tokens), tuple(tags), first, header)
                    tokens, tags, header = [], [], None
                broken = False
                continue
            if _is_header(line, opening=not tokens, width=width):
                if tokens:  # the sentence before ends here, as at -DOCSTART- (an audit: it absorbed the next one)
                    yield Sentence(tuple(tokens), tuple(tags), first, header)
                    tokens, tags = [], []
                header, broken = line[2:].strip(), False
                continue
            token, tag, width = _token_row(line, name, lineno, width)
            if not token:
                # a white-space-only token (seen in tweets) cannot be joined into text faithfully;
                # its tag still ends an entity (an audit: "Paris B / ' ' O / London I" made one mention)
                broken = broken or not tag.startswith("I-")
                continue
            if broken and tag[:2] in ("I-", "E-"):
                tag = ("B-" if tag[0] == "I" else "S-") + tag[2:]
            broken = False
            if not tokens:
                first = lineno
            tokens.append(token)
            tags.append(tag)
    if tokens:
        yield Sentence(tuple(tokens), tuple(tags), first, header)


def _is_header(line: str, *, opening: bool, width: tuple[int, int] | None) -> bool:
    """Whether a line is a ``# ...`` header that opens a sentence (MultiCoNER's ``# id ...``, a
    comment) rather than a token row whose token is ``#``: "# O" (tweets), or "# NN B-NP O" where
    the file's rows have four columns (CoNLL-2003; an audit: that sentence lost its first token)."""
    if line.startswith("# id "):
        return True
    if not (opening and line.startswith("# ")) or "\t" in line or " _ _ " in line:
        return False
    cols = line.split()
    return not (_is_tag(cols[-1]) and (width is None or len(cols) == width[0]))


def _token_row(line: str, name: str, lineno: int, width: tuple[int, int] | None) -> tuple[str, str, tuple[int, int]]:
    """(token, tag, the file's column count and the line that set it) of a token line, or the
    InputError that names what is wrong with it."""
    problem = unicode_problem(line)
    if problem is not None:  # no store keeps it (an audit: eval dropped the sentence from the system's ranking only)
        raise InputError(f"the line holds {problem}", path=name, line=lineno)
    cols = line.split("\t") if "\t" in line else line.split()
    if len(cols) < 2:
        raise InputError(f"expected 'token tag' columns, got {line[:60]!r}", path=name, line=lineno)
    # one column count a file (an audit: "New York B-location" in a file of 'token tag' lines
    # read as the token "New" and lost "York"; MultiCoNER's 'token _ _ tag' is four throughout)
    width = width or (len(cols), lineno)
    if len(cols) != width[0]:
        raise InputError(f"{len(cols)} columns where line {width[1]} has {width[0]}: {line[:60]!r} "
                         "(a token with a space in it needs tab-separated columns)", path=name, line=lineno)
    tag = cols[-1].strip()
    if not _is_tag(tag):  # "B-politician extra" (a space inside a tab column) is no tag (an audit)
        raise InputError(f"not a BIO/IO tag: {tag[:40]!r} (expected O, or B-X, I-X, E-X, S-X, U-X or L-X)",
                         path=name, line=lineno)
    return cols[0].strip(), _BILOU.get(tag[:2], tag[:2]) + tag[2:], width


def read_conll(path: str | Path) -> Iterator[Passage]:
    """Passages with gold spans from a CoNLL-style file (see the module docstring for variants)."""
    name = Path(path).name
    for sent in iter_sentences(path):
        text = " ".join(sent.tokens)
        gold = tuple(bio_spans(sent.tokens, sent.tags))
        fields = {"source": name, "line": sent.line}
        yield Passage(id=text_id(f"{name}:{sent.line}:{text}"), text=text, fields=fields, gold=gold)
