"""The commands that change a store: index (with --prune) and delete. Output on stdout;
progress and messages on stderr."""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import TYPE_CHECKING, Callable, Iterator

import click

from ..api import NerIndex, es_index_options_for
from ..config import Settings
from ..errors import InputError
from ..records import Passage
from ..text import first_named, unicode_problem
from .options import backend_options, batch_size_option

if TYPE_CHECKING:
    from ..pipeline import IndexReport
    from ..reading import ReadStats


@click.command("index")
@click.argument("source", type=click.Path(path_type=str))
@backend_options("store")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "tsv", "parquet", "txt", "conll"]),
    default="auto",
    show_default=True,
    help="Input format; auto decides by extension, a .txt file or a folder by what it holds (prose: one "
         "passage a file; CoNLL: one a sentence).",
)
@click.option(
    "--id-field",
    default=None,
    help="Key/column holding a stable passage id (default: 'id' when the input has one; '' for a hash of the text).",
)
@click.option("--text-field", default="text", show_default=True, help="Key/column holding the passage text.",
              callback=lambda ctx, param, value: _named_column(param, value))
@click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="On a bad record: stop before writing anything, or skip it and count it.",
)
@batch_size_option
@click.option("--catalog", default=None, type=click.Path(exists=True, dir_okay=False), help="Own type-catalog file (one phrase per line, # comments) for span labels.")
@click.option("--reindex-existing", is_flag=True, help="Re-encode passages whose id is already stored (default: skip them).")
@click.option("--prune", is_flag=True,
              help="After indexing, delete every stored passage whose id this input does not hold: for a store "
                   "that holds this one corpus, edited since (an edited passage whose id is a hash of its text, or "
                   "CoNLL's file-line-text id, is stored under a new id; the old one stays searchable otherwise). "
                   "Passages of other corpora in the same store are deleted too. Refused with --on-error skip "
                   "when a record is skipped (its stored copy would be deleted).")
@click.option("--es-index-options", default=None, metavar="TYPE",
              help="Elasticsearch only: the vector index type of the index this run creates (int8_hnsw, the default; "
                   "int8_flat, exact and slower at scale; hnsw; not bbq_*). An existing index keeps its own: "
                   "asking for others is refused (nerindex es reindex --index-options changes them).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def index_command(
    source: str,
    settings: Settings,
    fmt: str,
    id_field: str | None,
    text_field: str,
    on_error: str,
    batch_size: int,
    catalog: str | None,
    reindex_existing: bool,
    prune: bool,
    es_index_options: str | None,
    as_json: bool,
) -> None:
    """Index SOURCE (JSONL, CSV/TSV, Parquet, a folder of .txt files, or CoNLL/BIO files).

    The whole input is read and checked first, so bad input stops the run before anything is
    written. Passages already in the store (same id) are skipped: rerunning an interrupted or
    finished run resumes it without duplicates.
    """
    from ..pipeline import refuse_copies_anywhere
    from ..reading import ReadStats, read_passages

    def read(stats: ReadStats) -> Iterator[Passage]:
        return read_passages(source, format=fmt, id_field=id_field, text_field=text_field, on_error=on_error,
                             stats=stats)

    # read twice rather than hold the input in memory: once to check all of it, once to index it
    # chunk by chunk (a file changed in between is read as it is then, and checked again)
    es_index_options_for(settings, es_index_options)  # a refusal before the input is read
    input_ids: set[str] | None = set() if prune else None
    count, stats = check_input(source, read, ids=input_ids)
    with NerIndex.open(settings=settings, create=True, catalog=catalog, es_index_options=es_index_options) as ix:
        try:  # the copies check of every chunk, before the first is written
            refuse_copies_anywhere(lambda: read(ReadStats()), ix.store)
        except InputError as exc:
            raise InputError(exc.reason, path=source) from None
        stored_before = ix.store.counts().passages
        try:
            report = index_with_progress(ix, read(ReadStats()), count, batch_size=batch_size,
                                         skip_existing=not reindex_existing)
        except InputError as exc:  # the input changed after its check (a lifecycle audit: it read as "nothing written")
            stored = ix.store.counts().passages - stored_before
            raise InputError(f"{exc.reason} (the input changed while it was indexed: {stored} new passage(s) before "
                             "this point are stored; fix it and run the same command again to finish)",
                             path=exc.path, line=exc.line, unit=exc.unit) from None  # fmt: skip
        pruned: list[str] | None = None
        if input_ids is not None and not report.interrupted:  # an interrupted run has not read all of it
            pruned = ix.delete([pid for pid in ix.stored_ids() if pid not in input_ids])
    print_index_summary(report, stats, source=source, where=ix.description, as_json=as_json, pruned=pruned)
    if report.interrupted:
        click.echo(
            # after the last chunk (a review), or while one was written, which may be stored uncounted
            "interrupted while preparing the search structures: every passage above is stored; rerun the same "
            "command to finish them (searches work meanwhile, the first one slower)" if report.interrupted_preparing
            else "interrupted: the counts above are of the chunks confirmed before it (the one being written may "
            "be stored too); rerun the same command to resume", err=True)  # fmt: skip
        sys.exit(130)
    if report.failed:
        sys.exit(1)


def check_input(source: str, read: Callable[[ReadStats], Iterator[Passage]], *,
                ids: set[str] | None = None) -> tuple[int, ReadStats]:  # fmt: skip
    """Read the whole input once, before anything is written: (passages, what reading found);
    every passage id is added to ``ids`` where given (``--prune``, refused when a record was skipped).

    Bad input raises here (or, with ``--on-error skip``, is counted and the first problem shown).
    """
    from tqdm import tqdm

    from ..reading import ReadStats

    refuse_stream(source)
    stats = ReadStats()
    # a bar on a terminal: 200k records took 13 s here with nothing shown before the indexing bar (an audit)
    with tqdm(unit="passage", file=sys.stderr, disable=None, desc="checking", leave=False) as bar:
        count = 0
        for passage in read(stats):
            count += 1
            if ids is not None:
                ids.add(passage.id)
            bar.update()  # a disabled bar (not a terminal) counts nothing
    if not count:
        raise InputError("no passages to index", path=source)
    if stats.skipped and ids is not None:  # a parity audit: a skipped record's stored copy was pruned
        raise InputError(f"--prune is refused after {stats.skipped} bad record(s) were skipped: a skipped record's "
                         f"stored copy would be deleted as a passage this input does not hold; nothing was written "
                         f"(fix them and run again; first: {stats.errors[0]})", path=source)
    if stats.skipped:
        click.echo(f"skipped {stats.skipped} bad record(s); first: {stats.errors[0]}", err=True)
    if stats.left_out:
        click.echo(f"left out {len(stats.left_out)} file(s) or linked folder(s) that a {stats.format} folder does not "
                   f"read ({stats.left_out_text()}): index them on their own", err=True)
    return count, stats


def refuse_stream(source: str) -> None:
    """Refuse a pipe or device (``/dev/stdin``, ``<(...)``): ``nerindex index`` reads its input
    twice, to check all of it before writing, and a stream gives its data once, so the second
    read would find nothing after a store was made."""
    why = ("nerindex index reads its input twice, to check all of it before writing anything, so save it to a "
           "file first")
    if source == "-" and not os.path.exists(source):  # the usual spelling of stdin: "no such file" before (an audit)
        raise InputError(f"standard input is not read: {why}", path=source)
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return  # reading says what is wrong with the path
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"not a regular file or folder (a pipe or device?): {why}", path=source)


def index_with_progress(
    ix: NerIndex, passages: Iterator[Passage], count: int, *, batch_size: int, skip_existing: bool
) -> IndexReport:
    """Index with a progress bar of passages and of the current chunk's windows on stderr."""
    from tqdm import tqdm

    # the bar shows only on a terminal (disable=None); the summary line is printed always
    with tqdm(total=count, unit="passage", file=sys.stderr, disable=None, desc="indexing") as bar:
        return ix.index(
            passages, batch_size=batch_size, skip_existing=skip_existing, progress=bar.update,
            windows=lambda done, total: bar.set_postfix_str(f"windows {done}/{total}"),
            warn_interrupted=False,  # print_index_summary says it, with the rerun
        )


LEFT_OUT_SHOWN = 100  # paths a --json summary lists of what a folder's format leaves out (all are counted)


def _named_column(param: click.Parameter, value: str) -> str:
    """``--text-field ''`` ended in a ValueError traceback from the reader (an audit): a usage error."""
    if not value:
        raise click.BadParameter("must name a key or column, not ''", param=param)
    return value


def print_index_summary(report: IndexReport, stats: ReadStats, *, source: str, where: str, as_json: bool,
                        pruned: list[str] | None = None) -> None:  # fmt: skip
    """The summary of ``nerindex index``: one JSON object, or one line (and failures on stderr);
    ``pruned``: the ids ``--prune`` deleted (None: not asked)."""
    if as_json:
        summary = {
            **report.to_dict(), "source": source, "format": stats.format, "id_field": stats.id_field,
            "skipped_input": stats.skipped, "input_errors": stats.errors, "left_out": stats.left_out[:LEFT_OUT_SHOWN],
            "left_out_count": len(stats.left_out), "store": where,
            **({} if pruned is None else {"pruned": len(pruned), "pruned_ids": pruned[:LEFT_OUT_SHOWN]}),
        }
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"indexed {report.created + report.updated} passage(s) "
        f"({report.created} new, {report.updated} updated, {report.skipped_existing} already stored, "
        f"{report.failed} failed, {stats.skipped} bad input skipped) with {report.spans} spans "
        f"into {where} in {report.seconds:.1f}s; {ids_phrase(stats)}"
    )
    if report.skipped_changed:  # a same-named file of another folder, an edited record (an audit: not said)
        shown = first_named([repr(pid) for pid in report.changed_ids], report.skipped_changed)
        click.echo(f"  {report.skipped_existing} passage(s) with an id the store holds were left as stored, "
                   f"{report.skipped_changed} of them with another text or other metadata in this input ({shown}); "
                   "--reindex-existing replaces them", err=True)
    elif report.skipped_existing:
        click.echo(f"  {report.skipped_existing} passage(s) with an id the store holds were left as stored (none whose "
                   "text or metadata was compared differs); --reindex-existing replaces them", err=True)
    for error in report.errors:
        click.echo(f"  failed: {error}", err=True)
    if pruned is not None:
        listed = f" ({first_named([repr(pid) for pid in pruned], len(pruned))})" if pruned else ""
        click.echo(f"  pruned {len(pruned)} stored passage(s) whose id this input does not hold{listed}", err=True)


def ids_phrase(stats: ReadStats) -> str:
    """Where the passage ids came from, for the index summary: the one thing that decides whether
    indexing the same input another way adds every passage twice."""
    if stats.id_field:
        return f"ids from field {stats.id_field!r}"
    if stats.format == "txt":
        return "ids from file paths"
    if stats.format == "conll":
        return "ids from file, line and text"
    return "ids are hashes of the text"


@click.command("delete")
@click.argument("ids", nargs=-1)
@backend_options("store")
@click.option("--ids-from", type=click.File("r", encoding="utf-8"), default=None, metavar="FILE",
              help="Also the passage ids in FILE, one a line ('-': standard input); blank lines are skipped.")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
def delete_command(ids: tuple[str, ...], settings: Settings, ids_from, as_json: bool) -> None:
    """Delete passages (with their spans) from the store by id; ids not stored are counted, not an error.

    An edited corpus indexed again whose ids changed (ids that are hashes of the text) leaves the
    old passages searchable: delete them by id, or index the corpus again with --prune."""
    wanted = list(ids)
    if ids_from is not None:
        wanted += [line.rstrip("\r\n") for line in ids_from if line.strip()]
    if not wanted:
        raise click.UsageError("give passage ids, or --ids-from FILE")
    for pid in wanted:
        if (problem := unicode_problem(pid)) is not None:
            raise InputError(f"passage id {pid[:80]!r} holds {problem}")
    with NerIndex.open(settings=settings, create=False) as ix:
        removed = ix.delete(wanted)
        where = ix.description
    missing = len(dict.fromkeys(wanted)) - len(removed)
    if as_json:
        click.echo(json.dumps({"deleted": len(removed), "not_stored": missing, "deleted_ids": removed[:LEFT_OUT_SHOWN],
                               "store": where}))  # fmt: skip
    else:
        click.echo(f"deleted {len(removed)} passage(s) from {where}; {missing} of the ids given were not stored")
