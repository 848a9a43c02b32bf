"""What every ``bench/`` script shares at its door: argument types that refuse a count below 1 (0
passages divided by zero, 0 rounds timed nothing, 0 candidates failed after an hour of indexing;
an audit) and :func:`run`, which turns a nerindex error (a missing model folder, a data file that
cannot be read) or a missing file into one line instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import Callable


def count(text: str) -> int:
    """A whole number of at least 1, for argparse's ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


def seconds(text: str) -> float:
    """A number of seconds above 0, for argparse's ``type=`` (0 or less timed nothing; an audit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):  # nan and inf too
        raise argparse.ArgumentTypeError(f"{text!r}: give more than 0 seconds")
    return value


def count_list(text: str) -> list[int]:
    """Comma-separated :func:`count` values (an empty text: none)."""
    return [count(part.strip()) for part in text.split(",") if part.strip()]


def run(main: Callable[[], None]) -> None:
    """Run a script's ``main``; a nerindex error, or a file that cannot be read, is one line on
    stderr and an exit code (the error's own, or 1)."""
    from indexer.cli import tracebacks_wanted
    from indexer.errors import NerindexError

    try:
        main()
    except NerindexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if tracebacks_wanted():  # NERINDEX_TRACEBACK=1, as the CLI takes it: a bug's OSError shows where
            raise
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
