"""Reading an input file line by line with a bound on how long one line may be.

Python's ``for line in file`` holds a whole line in memory however long it is: a 285 KB
``.jsonl.gz`` holding one 300 MB line took 1.3 GB before its record was refused (a security
audit). A line here is at most :data:`MAX_LINE_BYTES`; a longer one is an :class:`InputError`
naming the file and the line, before more of it is read. Every reader of line-based input
(JSONL, CSV/TSV, CoNLL, BEIR and silver files) reads through :func:`capped_lines`, and a plain
``.txt`` file, which is one passage whole, through :func:`capped_read`, with the same bound.
"""

from __future__ import annotations

from typing import IO, Iterator

from .errors import InputError

MAX_LINE_BYTES = 64 * 2**20  # one passage or record a line: a whole novel is a few MB


def _size() -> str:
    return f"{MAX_LINE_BYTES // 2**20} MiB" if MAX_LINE_BYTES % 2**20 == 0 else f"{MAX_LINE_BYTES} bytes"


def capped_read(handle: IO[bytes], name: str) -> bytes:
    """The whole of a file that is one passage, with at most :data:`MAX_LINE_BYTES` + 1 bytes held
    (a text file of gigabytes was read whole before it could be refused: the same audit)."""
    data = handle.read(MAX_LINE_BYTES + 1)
    if len(data) > MAX_LINE_BYTES:
        raise InputError(f"a text file longer than {_size()}: a .txt file is one passage (split it into "
                         "files, or into the lines of a JSONL file)", path=name)
    return data


def capped_lines(handle: IO[bytes], name: str) -> Iterator[bytes]:
    """The lines of ``handle`` as ``for line in handle`` gives them (each with its ``\\n``), each
    read with at most :data:`MAX_LINE_BYTES` + 1 bytes held."""
    lineno = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES:
            raise InputError(f"a line longer than {_size()}: one record a line is expected "
                             "(is this a file of the format its name says?)", path=name, line=lineno)
        yield raw
