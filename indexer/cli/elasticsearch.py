"""``nerindex es …`` (index management) and ``nerindex kibana …`` (saved objects) commands.

Connection settings come from ``NERINDEX_ES_*`` / ``NERINDEX_KIBANA_URL`` (see
:mod:`indexer.config`); each option given on the command line overrides its variable
(:mod:`indexer.cli.options`).
Reports go to stdout (``--json`` keeps them machine-readable), progress to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config import Settings, with_overrides
from ..errors import ModelMismatchError, NerindexError, StoreError
from ..stores.factory import open_elasticsearch
from .options import DEVICES, backend_options, batch_size_option
from .output import json_out


def _emit(report: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json_out(report, indent=2))
    else:
        for line in lines:
            click.echo(line)


@click.group("es")
def es_group() -> None:
    """Elasticsearch index management: re-index behind the alias, type vectors, search template, status."""


@es_group.command("reindex")
@backend_options("elasticsearch")
@click.option("--model", "model_path", type=click.Path(file_okay=False),
              help="Model folder for the new index (default: NERINDEX_MODEL or the shipped model).")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Where the encoder runs (default: NERINDEX_DEVICE or auto).")
@click.option("--index-options", default=None,
              help="dense_vector index type of the new index (int8_hnsw, int4_hnsw, hnsw, ...; not bbq_*); default: the old index's.")
@click.option("--catalog", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Own type-catalog file for the new index's span labels, as 'nerindex index --catalog' "
                   "(default: the model's catalog, whatever the old index used).")
@batch_size_option
@click.option("--delete-old", is_flag=True, help="Delete the old index once the alias has moved.")
@click.option("--allow-failures", is_flag=True,
              help="Move the alias even if some passages failed (they are named, the exit code is 1, and "
                   "--delete-old then keeps the old index, which holds their only copy).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reindex_command(model_path, device, index_options, catalog, batch_size, delete_old, allow_failures, as_json,
                    settings: Settings):
    """Build a new index from the passages behind the alias (re-encoded with --model) and swap the alias.

    Searches keep using the old index until the new one is complete; the alias then moves in one
    atomic step. Use it to change the model, or the vector index type.
    """
    from ..api import store_type_vectors
    from ..encoder import OnnxEncoder
    from ..stores.elasticsearch.reindex import reindex

    settings = with_overrides(settings, model=model_path, device=device)
    encoder = OnnxEncoder.from_dir(settings.model, device=settings.device, threads=settings.threads, catalog=catalog)
    stamp = encoder.info.stamp
    store = open_elasticsearch(settings)
    before = store.model()
    if before is not None and before.catalog != stamp.catalog and str(before.catalog).startswith("sha256:"):
        # not silent (found by an audit): the labels change with the catalog
        click.echo(f"note: the old index's span labels came from a --catalog file; the new index's come from "
                   f"{'another file' if catalog else 'the model catalog'} (pass --catalog FILE to keep yours)", err=True)

    live = sys.stderr.isatty()  # a log file got every \r line and a blank one after (an audit)

    def progress(done: int, failed: int) -> None:
        if live:
            click.echo(f"\r{done} passages re-indexed, {failed} failed", err=True, nl=False)

    try:
        report = reindex(
            store, encoder, stamp,
            index_options=index_options, batch_size=batch_size, delete_old=delete_old,
            allow_failures=allow_failures, on_batch=progress,
        )
        stale_types = _stale_types(store, stamp)
        if stale_types is None:  # the same vector space: refill if this model embeds queries otherwise (templates)
            store_type_vectors(store, encoder)
    finally:
        if live:
            click.echo("", err=True)
        store.close()
    kept = delete_old and not report.deleted_old  # passages failed: the old index holds their only copy
    _emit({**report.to_dict(), "types_stale": bool(stale_types)}, as_json, [
        f"alias {report.alias}: {report.old_index} -> {report.new_index} "
        f"({report.passages} passages, {report.failed} failed, model {stamp.id} {stamp.version})",
        *([f"deleted {report.old_index}"] if report.deleted_old else []),
        *([f"kept {report.old_index} (not deleted): it holds the only copy of the {report.failed} passage(s) "
           "that failed; delete it once they are dealt with"] if kept else []),
    ])
    if stale_types:
        click.echo(stale_types, err=True)
    for failure in report.failures:  # named as nerindex index names them (an audit: only --json had them)
        click.echo(f"  failed: {failure['id']}: {failure['error']}", err=True)
    if report.failed:
        sys.exit(1)


def _stale_types(store: Any, stamp: Any) -> str | None:
    """A line saying that the types index holds another model's vectors than ``stamp`` (the passages'),
    or None: Kibana's lookup by type name would search the new index with the old model's vectors."""
    from ..stores.elasticsearch.type_index import TypeIndex

    types = TypeIndex(store)
    try:
        conflict = types.conflict_with(stamp)
    except NerindexError as exc:  # after a reindex has moved the alias, a check must not fail the command
        return f"could not check {types.name}: {exc}"
    return None if conflict is None else (
        f"{types.name} does not hold this model's type vectors ({conflict}): "
        "run 'nerindex es add-types --replace --catalog' to embed them with this one")


@es_group.command("put-template")
@backend_options("elasticsearch")
@click.option("--id", "template_id", default=None, help="Stored script id (default: nerindex-span-knn).")
@click.option("--json", "as_json", is_flag=True, help='Print {"template": id} as JSON.')
def put_template_command(template_id, settings: Settings, as_json: bool):
    """Store the search template of mappings/ so any client can run the span kNN with a vector."""
    from ..stores.elasticsearch import SEARCH_TEMPLATE_ID

    with open_elasticsearch(settings) as store:
        stored = store.put_search_template(template_id or SEARCH_TEMPLATE_ID)
    click.echo(json.dumps({"template": stored}) if as_json else f"stored search template {stored!r}")


@es_group.command("add-types")
@backend_options("elasticsearch")
@click.argument("phrases", nargs=-1)
@click.option("--catalog", "with_catalog", is_flag=True,
              help="Also store the model's catalog phrases, each embedded as a search embeds it.")
@click.option("--replace", is_flag=True,
              help="Delete the types index first (after a model change: 'es reindex --model'); the phrases "
                   "added by hand are embedded again.")
@click.option("--model", "model_path", type=click.Path(file_okay=False),
              help="Model folder (default: NERINDEX_MODEL or the shipped model).")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Where the encoder runs (default: NERINDEX_DEVICE or auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def add_types_command(phrases, with_catalog, replace, model_path, device, as_json, settings: Settings):
    """Store type PHRASES and their vectors in the types index (<alias>-types), by phrase.

    Each phrase is embedded as 'nerindex embed' does and stored under its normalised form (as the
    tokenizer reads it: lower case, single spaces) as document id, so Kibana users can look its
    vector up by id and search with it (docs/elasticsearch.md). The first 'nerindex index' stores the catalog's phrases.
    """
    from ..stores.base import check_phrase
    from ..encoder import OnnxEncoder
    from ..stores.elasticsearch.type_index import ADDED, TypeIndex, fill_with_catalog, unique_phrases

    if not phrases and not with_catalog:
        raise click.UsageError("give type phrases, or --catalog to store the model's catalog")
    # checked as a search checks them (an audit: a 300-character phrase was stored, and refused by search)
    wanted = [phrase for phrase, _ in unique_phrases(check_phrase(p) for p in phrases)]  # before loading the model
    settings = with_overrides(settings, model=model_path, device=device)
    encoder = OnnxEncoder.from_dir(settings.model, device=settings.device, threads=settings.threads)
    stamp = encoder.info.stamp
    with open_elasticsearch(settings) as store:
        _check_passages_space(store, stamp)
        types = TypeIndex(store)
        if with_catalog and encoder.catalog is None:
            raise StoreError(f"model {stamp.id} has no catalog")
        kept = _added_by_hand(types, wanted) if replace else []
        wanted += kept
        vectors = encoder.embed_types(wanted) if wanted else None  # all that can fail, before --replace deletes
        catalog = encoder.query_catalog() if with_catalog else None
        deleted = replace and types.delete()
        outcomes = []
        try:  # the phrases first, the catalog after: a run stopped after the delete lost those added by hand (an audit)
            if wanted:
                types.check_model(stamp)
                outcomes += types.add(wanted, vectors, stamp, origin=ADDED)
            if catalog is not None:  # it embeds the phrases added by hand again: one outcome a phrase below
                outcomes += fill_with_catalog(types, catalog, stamp, queries=encoder.info.query_identity(),
                                              embed=encoder.embed_types) or []
                if wanted:  # a phrase also in the catalog stays one added by hand, as --replace keeps those (a review)
                    outcomes += types.add(wanted, vectors, stamp, origin=ADDED)
        except BaseException:
            if kept:
                click.echo(f"the types index was deleted; if these phrases added by hand are missing from it, add "
                           f"them again: {', '.join(kept)}", err=True)  # fmt: skip
            raise
        total = types.count()
    outcomes = list({o.id: o for o in outcomes}.values())
    failed = [{"phrase": o.id, "error": o.error} for o in outcomes if not o.ok]
    stored = len(outcomes) - len(failed)
    report = {
        "index": types.name, "replaced": bool(deleted), "stored": stored, "failed": failed,
        "phrases": wanted, "kept": kept, "catalog": with_catalog, "total": total, "model": stamp.to_dict(),
    }
    _emit(report, as_json, [
        f"stored {stored} type phrase(s) in {types.name} ({len(failed)} failed; {total} in all)"
        + (f": {', '.join(wanted)}" if wanted and len(wanted) <= 10 else ""),
        *([f"kept {len(kept)} phrase(s) added by hand, embedded again"] if kept else []),
    ])
    for failure in failed:
        click.echo(f"  failed: {failure['phrase']}: {failure['error']}", err=True)
    if failed:
        sys.exit(1)


def _check_passages_space(store, stamp) -> None:
    """Refuse type vectors for an alias without nerindex passages (an audit: a misspelt --es-index
    made "<typo>-types" without a word) or with another model's vector space. Type vectors need the
    passages' vector space (a query embeds like this), not their detection or labels: an index
    written with 'index --catalog' takes type phrases like any other."""
    from ..stores.base import check_stamp
    from ..stores.elasticsearch import responses as rs
    from ..stores.elasticsearch.aliases import no_passages

    passages = store.model()
    if passages is None:
        raise StoreError(f"{no_passages(store)} (a types index belongs to a passages index)")
    conflict = check_stamp(passages, stamp, writing=False).conflict
    if conflict:
        target = store.target()
        raise ModelMismatchError(
            rs.mismatch_message(store.alias, target[0] if target else store.alias, passages, stamp, conflict)
        )


def _added_by_hand(types: Any, wanted: list[str]) -> list[str]:
    """The phrases ``add-types`` stored by hand, but those in ``wanted``: ``--replace`` embeds them
    again with the model, where it used to drop them (an audit)."""
    from ..stores.elasticsearch.type_index import normalise_phrase

    given = {normalise_phrase(w) for w in wanted}
    return [p for p in types.added_phrases() if normalise_phrase(p) not in given]


@es_group.command("status")
@backend_options("elasticsearch")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(as_json, settings: Settings):
    """Show the server version, the index behind the alias, its health, model and counts, and the types index."""
    from ..stores.elasticsearch.aliases import orphans
    from ..stores.elasticsearch.index_requests import FILTER_FORMAT, MARKED_FILTER_FORMAT, is_versioned_index
    from ..stores.elasticsearch.reindex import reindex_lock, write_blocked
    from ..stores.elasticsearch.type_index import TypeIndex

    with open_elasticsearch(settings) as store:
        version = ".".join(map(str, store.server_version()))
        target = store.target()
        report: dict[str, Any] = {"server": version, "alias": store.alias, "index": None}
        lines = [f"Elasticsearch {version}"]
        if target is None:
            report["other_indices"] = lost = orphans(store)
            # an audit: after a restore without aliases "no index yet" sent the user to encode all again
            lines.append(f"{store.alias}: no alias, but indices made for it exist: {', '.join(lost)} (an alias "
                         "lost in a snapshot restore? point it at the one to search: POST _aliases)" if lost else
                         f"{store.alias}: no index yet (created by the first 'nerindex index')")
        else:
            stamp = store.model()
            counts = store.counts()
            health = store.health()
            blocked = write_blocked(store, target[0])
            others = sorted(n for n in store.versioned_indices() if is_versioned_index(store.alias, n) and n != target[0])
            report.update(
                index=target[0], health=health, model=stamp.to_dict() if stamp else None,
                passages=counts.passages, spans=counts.spans, write_blocked=blocked, other_indices=others,
            )
            model = f"{stamp.id} {stamp.version} ({stamp.dims} dims)" if stamp else "not a nerindex index"
            lines.append(
                f"{store.alias} -> {target[0]} ({health}): {counts.passages} passages, "
                f"{counts.spans} spans, model {model}"
            )
            report["filter_format"] = store.typed_filters()
            if stamp and report["filter_format"] < MARKED_FILTER_FORMAT:  # made by an earlier nerindex (docs/elasticsearch.md)
                lines.append(f"{target[0]} filters metadata as an earlier nerindex made it (filter_texts format "
                             f"{report['filter_format']} of {FILTER_FORMAT}): 'nerindex es reindex' brings it up to date")
            elif stamp and report["filter_format"] < FILTER_FORMAT:
                lines.append(f"{target[0]} keeps a number's filter_texts twice, plain and with its type mark (a Kibana "
                             f"aggregation shows both; format 2 of 3): 'nerindex es reindex' brings it up to date")
            if blocked:  # an 'es reindex' is copying from it, or one was killed (docs/elasticsearch.md)
                lines.append(f"{target[0]} refuses writes (index.blocks.write): an 'es reindex' is running or was stopped "
                             f"(if none runs: PUT {target[0]}/_settings {{\"index.blocks.write\": false}})")
            report["reindex_lock"] = lock = reindex_lock(store)
            if lock:
                lines.append(f"{lock} exists: an 'es reindex' of {store.alias} is running, or one was killed "
                             f"(then: DELETE {lock})")
            if others:  # left by a replaced model, a failed or a killed reindex
                lines.append(f"beside it, outside the alias: {', '.join(others)}")
        types = TypeIndex(store)
        stale = _stale_types(store, stamp) if target is not None and stamp else None
        report.update(types_index=types.name, types=types.count(), types_stale=bool(stale))
        lines.append(
            f"{types.name}: {report['types']} type phrases" if report["types"] is not None
            else f"{types.name}: no types index yet ('nerindex es add-types --catalog' makes it)"
        )
        if stale:
            lines.append(stale)
    _emit(report, as_json, lines)


@click.group("kibana")
def kibana_group() -> None:
    """Kibana integration: import the data view, saved search and dashboard."""


@kibana_group.command("import")
@backend_options("kibana")
@click.option("--space", default=None, help="Kibana space id (default space when omitted).")
@click.option("--file", "path", type=click.Path(dir_okay=False, exists=True),
              help="Saved objects NDJSON (default: the one shipped with nerindex).")
@click.option("--no-overwrite", is_flag=True, help="Fail on objects that already exist instead of replacing them.")
@click.option("--json", "as_json", is_flag=True, help="Print Kibana's report as JSON.")
def kibana_import_command(space, path, no_overwrite, as_json, settings: Settings):
    """Post the nerindex saved objects to Kibana's saved-objects import API.

    The data view points at the --es-index alias; Kibana is called with the cluster's credentials.
    """
    from ..stores.elasticsearch.kibana import import_saved_objects

    url = settings.required_kibana_url()
    report = import_saved_objects(
        url,
        alias=settings.es_index,
        path=path,
        api_key=settings.es_api_key,
        basic_auth=settings.basic_auth(),
        ca_certs=settings.es_ca_certs,
        verify_certs=settings.es_verify_certs,
        **({"timeout": settings.es_timeout} if settings.es_timeout is not None else {}),
        space=space,
        overwrite=not no_overwrite,
    )
    _emit(report.to_dict(), as_json, [f"imported {report.success_count} saved objects into {url}"] + [
        f"  {obj['type']}: {obj['title'] or obj['id']}" for obj in report.objects
    ])
