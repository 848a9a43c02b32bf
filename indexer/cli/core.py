"""The core CLI commands: search, embed, info (index and delete: :mod:`.indexing`). Output on stdout;
progress on stderr."""

from __future__ import annotations

import json
import os
import sys

import click
from click.core import ParameterSource

from ..api import NerIndex, model_info
from ..config import Settings
from ..feedback import MAX_FEEDBACK_TOP, MAX_FEEDBACK_WEIGHT, Feedback
from ..records import Hit, marked_spans
from ..text import printable
from ..stores.base import MAX_PASSAGE_WEIGHT, check_phrase
from ..stores.filter_rules import Filters, where_pairs
from .options import CountRange, NumberRange, backend_options
from .output import json_out


def _given(name: str) -> bool:
    """Whether the current command's option ``name`` was given (not its default)."""
    return click.get_current_context().get_parameter_source(name) is not ParameterSource.DEFAULT


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
        hint = None if shown else empty_answer_hint(ix, entity_type, phrase, filters=filters, where=where, text=text,
                                                    threshold=threshold)  # fmt: skip
        no_all = None if exhaustive or as_json else ix.store.exhaustive_unavailable()
    if hint:
        click.echo(f"hint: {hint}", err=True)
    if not as_json:
        # a short page is every match only where the store counted them (an exact search): an
        # approximate one (kNN, the ANN index) can come back short and has no total (an audit)
        click.echo(count_line(entity_type, shown, shown if exhaustive else hits.total, exhaustive=exhaustive,
                              no_all=no_all), err=True)  # fmt: skip


def empty_answer_hint(ix: NerIndex, entity_type: str, phrase: str, *, filters: Filters, where: tuple[str, ...],
                      text: str | None, threshold: float | None) -> str | None:  # fmt: skip
    """Why a search found nothing, where the CLI can tell, or None (audits: each empty answer came
    with no word why, or with advice that could not help)."""
    if ix.store.counts().passages == 0:  # a mistyped --store the API had opened advised a lower threshold
        return "the store holds no passages: index a corpus into it first (nerindex index FILE, with the same --store or --es-url)"
    absent = ix.absent_fields(filters) if filters else []
    if absent:
        return f"no stored passage has a field named {', '.join(repr(name) for name in absent)}; --where matches stored metadata exactly"
    empty = [p for p in where if not p.partition("=")[2]]
    if empty:  # "year=$YEAR" with YEAR unset (a parity audit: --text '' is refused for the same mistake)
        return f"--where {empty[0]!r} matches only an empty text (a shell variable left unset?)"
    spaced = [p for p in where if p.partition("=")[2] != p.partition("=")[2].strip()]
    if spaced:  # "topic = science" looked for " science"
        return f"--where {spaced[0]!r} matches a text with the spaces around it; values match exactly"
    if threshold is None and not filters and not text:
        kind = "types it was trained on" if ix.encoder.info.is_trained_phrase(phrase) else "types it was not trained on"
        return (f"no mention reached the similarity threshold {ix.threshold_for(entity_type):g} (the model's for {kind}); "
                "--threshold with a lower value finds looser matches")  # fmt: skip
    return None


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
