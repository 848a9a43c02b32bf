"""Plain-text files (one passage per file) and CoNLL/BIO files (one passage per sentence).

Text files keep their text exactly (offsets index into it) except for a leading BOM; in a folder
the id is the path relative to the folder, so indexing the folder again finds them stored (and
``--reindex-existing`` replaces them) rather than duplicating them; a single file's id is its
absolute path, so two files of one name in different folders are two passages. CoNLL parsing
is :mod:`indexer.conll`'s; in a folder the source field and id use the relative path so that
``politics/dev.txt`` and ``literature/dev.txt`` never collide, and a single file's id its absolute
path (its source field is its name). A file whose name is not valid UTF-8 is refused.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Iterator

from ..conll import read_conll
from ..errors import InputError
from ..file_lines import capped_read
from ..records import Passage, text_id
from ..stores.filter_rules import passage_problem
from ..text import emptiness, invalid_utf8, unicode_problem, unstorable_at
from .detect import folder_files
from .structured import Item, Located


def text_file_item(path: Path, rel: str) -> Item:
    """The passage of one text file, or why it cannot be one."""
    name = str(path)
    try:
        with path.open("rb") as handle:
            data = capped_read(handle, name)
    except OSError as exc:
        return InputError(f"cannot read: {exc.strerror or exc}", path=name)
    except InputError as exc:
        return exc
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return InputError(invalid_utf8(exc), path=name, line=line)
    empty = emptiness(text)
    if empty is not None:
        return InputError(f"the file is {empty}", path=name)
    passage = Passage(id=rel, text=text, fields={"path": rel})
    problem = passage_problem(passage)
    if problem is not None:  # a NUL: refused here, by line, before anything is written (it was at the write)
        at = unstorable_at(text)
        if at is None:
            return InputError(problem, path=name)
        # where in its line (an audit: "line 2 … at character 10" counted from the start of the file)
        return InputError(f"the line holds {unicode_problem(text[text.rfind(chr(10), 0, at) + 1:])}", path=name,
                          line=text.count("\n", 0, at) + 1)
    return Located(passage, name, None)


def txt_items(path: Path) -> Iterator[Item]:
    """One passage per ``.txt`` file of a folder, or the one passage of a single file."""
    if path.is_dir():
        for file, rel in folder_files(path, "txt"):
            yield _name_problem(file, rel) or text_file_item(file, rel)
    else:  # its absolute path: the bare name made a/notes.txt and b/notes.txt one passage ("already stored")
        where = path.resolve().as_posix()
        yield _name_problem(path, where) or text_file_item(path, where)


def conll_items(path: Path) -> Iterator[Item]:
    """Sentences of a CoNLL/BIO file, or of every CoNLL file in a folder: ``.conll`` and the like,
    and the ``.txt`` files that look like CoNLL (a README.txt or LICENSE.txt beside them is left out,
    as the refusal of such a folder under ``auto`` says: a review found the advice failing on it).

    A malformed line raises: a CoNLL file with a broken line is usually broken throughout.
    """
    if not path.is_dir():
        # ids from its absolute path, as for a .txt file: from the bare name, a/dev.conll and
        # b/dev.conll gave their first sentences one id ("already stored"); the source stays the name
        where = _escaped(path.resolve().as_posix())
        bad = _name_problem(path, path.name)  # the source field
        if bad is not None:
            yield bad
            return
        for p in read_conll(path):
            passage = Passage(id=text_id(f"{where}:{p.fields['line']}:{p.text}"), text=p.text, fields=p.fields,
                              gold=p.gold)
            yield Located(passage, str(path), p.fields["line"])
        return
    for file, rel in folder_files(path, "conll"):
        bad = _name_problem(file, rel)
        if bad is not None:
            yield bad
            continue
        for p in read_conll(file):
            line = p.fields["line"]
            fields = {**p.fields, "source": rel}
            passage = Passage(id=text_id(f"{rel}:{line}:{p.text}"), text=p.text, fields=fields, gold=p.gold)
            yield Located(passage, str(file), line)


def _escaped(name: str) -> str:
    """``name`` with the bytes of a file name that is not valid UTF-8 as ``\\xNN`` (valid Unicode)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _name_problem(file: Path, rel: str) -> InputError | None:
    """An error for a file whose name (``rel``, its id or source) is not valid UTF-8, which no store
    holds (in a folder, the write failed after the other files were stored), or None."""
    if unicode_problem(rel) is None:
        return None
    return InputError("its path is not valid UTF-8 (ids or the source field come from it): rename it to index it",
                      path=_escaped(str(file)))
