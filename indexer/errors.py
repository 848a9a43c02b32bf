"""The one small exception hierarchy of nerindex.

Every error a user can cause or meet derives from :class:`NerindexError`; the CLI turns it into one
line on stderr and a non-zero exit code, so messages must read well on their own.
"""

from __future__ import annotations


class NerindexError(Exception):
    """Base class: a problem a person can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(NerindexError):
    """Bad input data: names the file and, where known, the 1-based line (or row).

    ``unit``: what ``line`` counts. A file line reads ``path:line: …``; a Parquet row is no line
    of the file, so it reads ``path: row N: …`` (an audit: "f.parquet:2: row 2" read as a line of
    a binary file), and ``reason`` starts with "row N"."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, unit: str = "line") -> None:
        self.path = path
        self.line = line
        self.unit = unit
        where = path or "<input>"
        if line is not None and unit == "line":
            where = f"{where}:{line}"
        elif line is not None:
            message = f"{unit} {line}: {message}"
        self.reason = message
        super().__init__(f"{where}: {message}")


class ModelError(NerindexError):
    """A model folder that is missing, incomplete, corrupt or does not match the expected graph."""

    exit_code = 3


class ModelMismatchError(NerindexError):
    """A store built with one model was opened with another: vectors from two spaces never mix."""

    exit_code = 4


class StoreError(NerindexError):
    """The store (SQLite folder or Elasticsearch index) cannot do what was asked.

    ``stored``: passages of a failed write that the store holds all the same. The embedded store
    writes a chunk in one transaction (0); Elasticsearch sends one in bulk requests of 200, and those
    answered before the failure stay (an audit: a lost connection said "0 stored" of 200 stored)."""

    exit_code = 5
    stored: int = 0


class SettingError(StoreError):
    """A setting out of its range, or missing where a command needs it (an option, a ``NERINDEX_*``
    variable, a Python argument): a wrong option, exit 2 as click's own refusals. A StoreError
    still, for the Python callers that caught these as one before (an audit: a bad
    NERINDEX_THREADS exited 5, the store's code, where --threads 0 exited 2)."""

    exit_code = 2


class StoreBusyError(StoreError):
    """A store written to so often that a search could not fix one version of it in time: passing,
    so search again (the service answers 503 ``store_busy`` with ``Retry-After``)."""


class NoStoreError(StoreError):
    """No store where one was to be opened, not created (``nerindex info`` then shows the model alone)."""


class SearchError(NerindexError):
    """A search request that cannot be answered as asked (bad filter, unsupported option)."""

    exit_code = 6


class UnsupportedSearchError(SearchError):
    """A well-formed search that this server cannot run (an Elasticsearch build without the Painless
    module, or too old for a filter): the service's 501, not a 400 blaming the request (a web audit)."""


class StaleCursorError(SearchError):
    """A paging cursor issued before the store changed: its offsets no longer point at the same hits."""
