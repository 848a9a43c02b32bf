"""The core CLI commands: index, search, embed, info. Output on stdout; progress on stderr."""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import TYPE_CHECKING, Callable, Iterator

import click
from click.core import ParameterSource

from ..api import NerIndex, check_phrase, es_index_options_for, model_info
from ..config import Settings
from ..errors import InputError
from ..feedback import MAX_FEEDBACK_TOP, MAX_FEEDBACK_WEIGHT, Feedback
from ..records import Hit, Passage, marked_spans
from ..text import first_named, printable, unicode_problem
from ..stores.base import MAX_PASSAGE_WEIGHT
from ..stores.filter_rules import Filters, where_pairs
from .options import CountRange, NumberRange, backend_options, batch_size_option
from .output import json_out

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
                   "Passages of other corpora in the same store are deleted too.")
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
    every passage id is added to ``ids`` where given (``--prune``).

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


def _given(name: str) -> bool:
    """Whether the current command's option ``name`` was given (not its default)."""
    return click.get_current_context().get_parameter_source(name) is not ParameterSource.DEFAULT


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


def mark_spans(hit: Hit, *, color: bool) -> str:
    """The passage text with each matching span marked: bold on a terminal, [[…]] otherwise.

    Control characters are dropped piece by piece, after slicing, so the offsets stay right.
    """
    out: list[str] = []
    pos = 0
    for span in sorted(marked_spans(hit.spans), key=lambda s: s.start):
        out.append(printable(hit.text[pos : span.start]))
        mention = printable(hit.text[span.start : span.end])
        out.append(click.style(mention, bold=True, fg="yellow") if color else f"[[{mention}]]")
        pos = span.end
    out.append(printable(hit.text[pos:]))
    return "".join(out)


def format_hit(rank: int, hit: Hit, *, color: bool) -> str:
    """One hit for people; corpus text (id, metadata, passage, spans, labels) cannot drive the terminal."""
    spans = ", ".join(
        f"{s.text} {s.similarity:.2f}" + (f" ({'; '.join(s.labels)})" if s.labels else "") for s in hit.spans
    )
    fields = f"  {json.dumps(hit.fields, ensure_ascii=False)}" if hit.fields else ""
    head = printable(f"{hit.id}{fields}", one_line=True)
    # a hit ranked by a candidate span (a top-k hit, maybe with no mark at all) names it
    by = hit.ranked_by and printable(f"the candidate span “{hit.ranked_by.text}” {hit.ranked_by.similarity:.2f}",
                                     one_line=True)
    if not hit.spans:
        spans = f"none marked (ranked by {by or 'a candidate span'}, which is never marked; not in --all)"
    else:  # one line: a span holding a tab or line break broke the list across lines (an audit)
        spans = printable(spans, one_line=True) + (f"; ranked by {by} (never marked)" if by else "")
    return f"{rank}. {hit.score:.3f}  {head}\n   {mark_spans(hit, color=color)}\n   spans: {spans}"


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


@click.command("search")
@click.argument("entity_type")
@backend_options("store")
@click.option("--where", "where", multiple=True, metavar="FIELD=VALUE", help="Metadata filter; repeat for more (same field twice = either). A value matches the same stored text and the stored number or boolean it spells (year=2001 matches the numbers 2001 and 2001.0, not the text '2001.0').")
@click.option("--text", default=None, help="Lexical restriction: every word must occur in the passage.")
@click.option("--limit", default=10, show_default=True, type=CountRange(1, 10_000), help="Passages to return.")
@click.option("--all", "exhaustive", is_flag=True, help="The calibrated answer set: every passage with a mention at or above the threshold, marked (a top-k search also ranks passages through candidate spans, which --all leaves out).")
@click.option("--threshold", type=NumberRange(-1, 1), default=None, help="Minimum cosine similarity (default: the model's calibrated value for the type: one for types it was trained on, one for the others; 'nerindex info' shows both).")
@click.option("--passage-weight", type=NumberRange(0, MAX_PASSAGE_WEIGHT), default=None,
              help="Hybrid scoring: rank by best span similarity + this × passage similarity "
                   "(default: the model's calibrated value, which 'nerindex info' shows; 0 = spans only). Which passages match is unchanged.")
@click.option("--feedback", "feedback_weight", type=NumberRange(0, MAX_FEEDBACK_WEIGHT), default=None,
              metavar="WEIGHT", help="Query-time feedback (off by default): search, add WEIGHT × the mean passage "
              "vector of the top --feedback-top hits to the type vector, search again (EVALUATION.md).")
@click.option("--feedback-top", type=CountRange(1, MAX_FEEDBACK_TOP), default=10, show_default=True,
              help="With --feedback: how many first-pass passages feed the query.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit per line, best first.")
def search_command(
    entity_type: str,
    settings: Settings,
    where: tuple[str, ...],
    text: str | None,
    limit: int,
    exhaustive: bool,
    threshold: float | None,
    passage_weight: float | None,
    feedback_weight: float | None,
    feedback_top: int,
    as_json: bool,
) -> None:
    """Find passages that mention an entity of ENTITY_TYPE, e.g. "dinosaur" or "political party"."""
    filters = Filters.of(where_pairs(where, option="--where"))  # a bad --where is refused before the model loads
    if exhaustive and _given("limit"):
        click.echo("hint: --limit does not apply to --all, which returns every passage with a marked mention",
                   err=True)  # an audit: it was ignored without a word
    if feedback_weight is None and _given("feedback_top"):
        click.echo("hint: --feedback-top applies with --feedback W, which turns feedback on", err=True)  # an audit
    if text is not None and not text.strip():  # it was taken as no restriction, while "!!!" was refused
        raise click.UsageError("--text is empty: give the words a passage must hold, or leave it out")
    if not has_words(phrase := check_phrase(entity_type)):  # as searched; an empty one is refused here
        click.echo(f"hint: {entity_type!r} has no letters or digits, and types are matched as words "
                   "(e.g. 'dinosaur'): expect no hits or unrelated ones", err=True)  # fmt: skip
    ix = NerIndex.open(settings=settings, create=False)
    # bold on a terminal, unless the user asks for none (no-color.org) or the terminal cannot show it
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    shown = 0
    with ix:
        hits = ix.iter_search(
            entity_type, filters=filters, text=text, limit=limit, min_similarity=threshold,
            exhaustive=exhaustive, passage_weight=passage_weight,
            feedback=None if feedback_weight is None else Feedback(feedback_weight, feedback_top),
        )
        for hit in hits:
            shown += 1
            if as_json:
                click.echo(json_out(hit.to_dict()))
            else:
                click.echo(format_hit(shown, hit, color=color))
        absent = ix.absent_fields(filters) if filters and not shown else []
        no_all = None if exhaustive or as_json else ix.store.exhaustive_unavailable()
        applied = ix.threshold_for(entity_type) if threshold is None else threshold
        trained = ix.encoder.info.is_trained_phrase(phrase)  # as searched ("sports team.": the review)
        empty = not shown and ix.store.counts().passages == 0
    if empty:  # an audit: an empty store (a mistyped --store the API had opened) advised a lower threshold
        click.echo("hint: the store holds no passages: index a corpus into it first (nerindex index FILE, "
                   "with the same --store or --es-url)", err=True)  # fmt: skip
    elif absent:
        names = ", ".join(repr(name) for name in absent)
        click.echo(f"hint: no stored passage has a field named {names}; --where matches stored metadata exactly", err=True)
    elif not shown and (spaced := [p for p in where if p.partition("=")[2] != p.partition("=")[2].strip()]):
        click.echo(f"hint: --where {spaced[0]!r} matches a text with the spaces around it; values match exactly",
                   err=True)  # "topic = science" looked for " science" (an audit: an empty answer, no word why)
    elif not shown and threshold is None and not filters and not text:
        kind = "types it was trained on" if trained else "types it was not trained on"
        click.echo(f"hint: no mention reached the similarity threshold {applied:g} (the model's for {kind}); "
                   "--threshold with a lower value finds looser matches", err=True)  # fmt: skip
    if not as_json:
        # a short page is every match only where the store counted them (an exact search): an
        # approximate one (kNN, the ANN index) can come back short and has no total (an audit)
        click.echo(count_line(entity_type, shown, shown if exhaustive else hits.total, exhaustive=exhaustive,
                              no_all=no_all), err=True)  # fmt: skip


def has_words(phrase: str) -> bool:
    """Whether a type phrase has a letter or digit: an emoji-only phrase embeds as noise."""
    return any(ch.isalnum() for ch in phrase)


def count_line(entity_type: str, shown: int, total: int | None, *, exhaustive: bool = False,
               no_all: str | None = None) -> str:  # fmt: skip
    """How many hits were shown of how many match: a page must never read as all the matches.

    ``total`` None: the store cannot count without a search of its own (Elasticsearch top hits,
    the embedded store's ANN index), even on a short page: an approximate search may miss matches.
    A top-k counts the passages it ranks, candidates' included; ``--all`` gives those with a marked
    mention (``Store.search``), which may be fewer, so the hint says which it gives, or why the
    store cannot run it (``no_all``: ``Store.exhaustive_unavailable``; a review: offered where it failed).
    """
    if exhaustive:
        return f"{shown} shown of {total} matching {entity_type!r}"
    if no_all:
        hint = f"--all, which shows every passage with a marked mention, cannot run on this store: {no_all}"
    else:
        hint = "--all shows " + ("and counts " if total is None else "") + "every passage with a marked mention"
    # a top-k, even one that shows all it ranked: some may be ranked by a candidate, unmarked
    if total is None and not shown:  # "0 shown of at least 0" (a paging audit)
        return f"nothing ranked for {entity_type!r} ({hint})"
    if total == 0:  # --all is a subset of what was ranked: it has nothing to offer (an audit)
        return f"nothing ranked for {entity_type!r}"
    ranked = f"at least {shown}" if total is None else total
    return f"{shown} shown of {ranked} ranked for {entity_type!r} ({hint})"


@click.command("embed")
@click.argument("phrases", nargs=-1, required=True)
@backend_options("model")
@click.option("--json", "as_json", is_flag=True, help="Accepted for scripts that pass it everywhere: the output is JSON lines anyway.")
def embed_command(phrases: tuple[str, ...], settings: Settings, as_json: bool) -> None:
    """Print each type phrase's vector as one JSON object per line ({"phrase", "threshold",
    "passage_weight", "vector"}: the threshold and λ a search for the phrase applies).

    Paste the vector into a kNN query on spans.vector (Kibana Dev Tools) or any other client.
    """
    from ..encoder import OnnxEncoder

    checked = [check_phrase(p) for p in phrases]  # before the model loads
    encoder = OnnxEncoder.from_dir(settings.model, device=settings.device, threads=settings.threads)
    vectors = encoder.embed_types(checked)
    for phrase, vector in zip(checked, vectors):  # the phrase embedded, as the service echoes it
        # with what a search for it applies (an audit: a pasted kNN request had to work them out from model.json)
        click.echo(json_out({"phrase": phrase, "threshold": encoder.info.threshold_for(phrase),
                               "passage_weight": encoder.info.passage_weight_for(phrase),
                               "vector": [round(float(x), 7) for x in vector]}))


@click.command("info")
@backend_options("store")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_command(settings: Settings, as_json: bool) -> None:
    """Show the model (id, checksum, thresholds, provider) and the store (where, counts); with no
    store yet, the model alone (so an exported folder can be looked at with --model)."""
    from ..encoder import OnnxEncoder
    from ..errors import ModelMismatchError, NoStoreError

    mismatch = None
    try:
        with NerIndex.open(settings=settings, create=False) as ix:
            info = ix.info()
    except (NoStoreError, ModelMismatchError) as exc:
        # a store of another model is shown too, then exit 4: info is what one runs to see why (an audit)
        mismatch = exc if isinstance(exc, ModelMismatchError) else None
        encoder = OnnxEncoder.from_dir(settings.model, device=settings.device, threads=settings.threads)
        info = {"model": model_info(encoder), "store": None, "no_store" if mismatch is None else "mismatch": str(exc)}
    if mismatch is not None:  # the error as every command gives it, besides what info shows (an audit)
        from . import error_detail

        info["error"] = error_detail(mismatch)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_info(info)
    if mismatch is not None:
        click.echo(f"error: {mismatch}", err=True)
        raise SystemExit(mismatch.exit_code)


def _print_info(info: dict) -> None:
    """``nerindex info``'s lines."""
    m, s = info["model"], info["store"]
    click.echo(f"model: {m['id']} {m['version']} ({m['path']}), {m['dims']} dims, provider {m['provider']}")
    unseen = m.get("unseen_similarity_threshold")
    threshold = f"{m['similarity_threshold']}" + ("" if unseen is None else f" (types it was not trained on: {unseen})")
    unseen_weight = m.get("unseen_passage_weight")
    weight = f"{m['passage_weight']:g}" + ("" if unseen_weight is None else f" (types it was not trained on: {unseen_weight:g})")
    click.echo(f"       threshold {threshold}, passage weight {weight}, checksum {m['checksum'][:16]}")
    wide = m.get("candidate_threshold")
    detection = f"{m['detection_threshold']:g}" + ("" if wide is None else f", candidate head {wide:g} (spans that rank, never marked)")
    click.echo(f"       detection {detection}")
    if s is None:
        click.echo(f"store: refuses this model: {info['mismatch']}" if "mismatch" in info else f"store: none ({info['no_store']})")
        return
    written = s.get("model")
    with_model = ""
    if written is not None:
        with_model = f"; written with {written['id']} {written['version']} (checksum {written['checksum'][:16]})"
        if not written["same_as_model"]:  # the same files under another name or version are accepted
            with_model += (": the same weights as the model above, under another name or version"
                           if written["checksum"] == m["checksum"] else ": not the model above")
    click.echo(f"store: {s['where']}: {s['passages']} passages, {s['spans']} spans{with_model}")
    labels = (written or {}).get("labels")
    if labels:  # the labels audit: nothing said which labels a spans.labels filter can match
        source = {"model": "the model's catalog", "none": "none"}.get(labels, f"a --catalog file ({labels.replace(':', ' ', 1)[:23]}…)")
        click.echo(f"       span labels: {source}")
    if s.get("disk"):
        click.echo(f"       on disk: {s['disk']['database'] / 1e6:.1f} MB database, {s['disk']['derived'] / 1e6:.1f} MB "
                   "derived in cache/ (made again from the database when stale or removed)")
