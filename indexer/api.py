"""The Python API: open a store with a model, index passages, search by entity type.

    from indexer import NerIndex, read_passages
    ix = NerIndex.open("./nerindex-data")
    ix.index(read_passages("examples/corpus.jsonl"))
    for hit in ix.search("dinosaur"):
        print(hit.score, hit.text, [s.text for s in hit.spans])
"""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .config import Settings, count_setting, from_env, store_settings
from .encoder import OnnxEncoder
from .errors import InputError, ModelMismatchError, NerindexError, SearchError, SettingError, StoreError
from .feedback import Feedback, search_with_feedback
from .pipeline import IndexReport, index_passages
from .records import Hit, Matches, Passage
from .stores.base import MAX_PASSAGE_WEIGHT, SearchRequest, Store, StoreVersion, check_phrase, check_threshold
from .stores.filter_rules import Filters, id_problem
from .stores.factory import open_store
from .text import first_named

log = logging.getLogger(__name__)


def model_info(encoder: Any) -> dict[str, Any]:
    """What ``nerindex info`` shows of a model (also with no store: an exported folder inspected)."""
    info = encoder.info
    return {
        "id": info.id,
        "version": info.version,
        "path": str(info.path),
        "dims": info.dims,
        "checksum": info.checksum,
        "similarity_threshold": info.similarity_threshold,
        "unseen_similarity_threshold": info.unseen_similarity_threshold,
        "detection_threshold": info.detection_threshold,
        "candidate_threshold": info.candidate_threshold,
        "passage_weight": info.passage_weight,
        "unseen_passage_weight": info.unseen_passage_weight,
        "type_template": info.type_template,
        "unseen_type_template": info.unseen_type_template,
        "provider": encoder.provider,
    }


def _checked_passage(item: Any) -> Passage:
    """An item of ``index()``'s input, which must be a :class:`Passage` (an audit: a dict, the
    likeliest thing a newcomer passes, was an AttributeError from deep inside)."""
    if not isinstance(item, Passage):
        hint = ": Passage(id, text, fields) or read_passages() makes one" if isinstance(item, (dict, str)) else ""
        raise InputError(f"index() takes Passage objects, not {type(item).__name__}{hint}")
    return item


def _check_opened(backend: Store, encoder: OnnxEncoder, settings: Settings, create: bool | None) -> None:
    """After :meth:`NerIndex.open`: the store's model checked for searching; a store without
    passages refused (``create=False``: a mistyped --es-index read as "no matches", the embedded
    store's folder is refused by ``open_store``) or said on the log (``create=None``: a mistyped
    folder answered [] to every search without a word; audits)."""
    recorded = backend.model()
    if recorded is not None:
        backend.check_model(encoder.info.stamp, writing=False)
        return
    if create is True or (create is False and not settings.es_url):  # made, or refused by open_store if missing
        return
    if settings.es_url:  # the one owner of why an alias holds no passages (a hand-made index, a lost alias)
        from .stores.elasticsearch.aliases import no_passages

        why = no_passages(backend)
    else:
        why = "no passages yet: a search finds nothing until index() writes some"
    if create is None:  # what create=False does, said as it is (a newcomer: "a store without passages" was untrue here)
        refuses = "an alias without passages" if settings.es_url else "a store folder that does not exist"
        log.warning("%s: %s (open(..., create=False) refuses %s, create=True says nothing)",
                    settings.store_description(), why, refuses)
        return
    backend.close()  # create=False on Elasticsearch
    raise StoreError(f"{settings.store_description()}: {why}")


def es_index_options_for(settings: Settings, asked: str | None) -> dict[str, str]:
    """``open_store``'s keyword for a new Elasticsearch index's vector options; asked of an
    embedded store, a refusal (it has no such choice: the option would be dropped without a word).
    ``nerindex index`` asks before it reads its input, :meth:`NerIndex.open` again."""
    if asked is None:
        return {}
    if not settings.es_url:
        raise SettingError("es_index_options (--es-index-options) is for an Elasticsearch store (es_url, --es-url or NERINDEX_ES_URL)")
    from .stores.elasticsearch.index_requests import index_options_body

    index_options_body(asked)  # bbq_* and misspellings, refused here too
    return {"index_options": asked}


def _refuse_other_index_options(backend: Store, asked: str) -> None:
    """Refuse index options that an existing index behind the alias does not have."""
    from .stores.elasticsearch.index_requests import other_index_options

    target = backend.target()  # type: ignore[attr-defined]
    problem = None if target is None else other_index_options(target[0], target[1], asked)
    if problem:
        backend.close()
        raise StoreError(problem)


class NerIndex:
    """A store plus the model that fills and queries it. Build with :meth:`open`."""

    def __init__(self, encoder: OnnxEncoder, store: Store, *, description: str = "") -> None:
        self.encoder = encoder
        self._store: Store | None = store
        self.description = description
        self._checked_for: str | None = None  # the store identity the model was last checked against
        self._read_for: str | None = None  # the store identity whose facts (model, mapping) the store has cached
        self._had_model = False  # a model was seen in the store: its disappearing is an error, not "no hits"

    @property
    def store(self) -> Store:
        """The store; after :meth:`close`, a StoreError (rather than a closed SQLite connection's
        ``ProgrammingError`` from deep inside)."""
        if self._store is None:
            raise StoreError("this index is closed (close() or the end of its with block): open it again")
        return self._store

    def _check_store_model(self) -> None:
        """Check the store's model again when the store behind this handle is another than at the
        last search: an alias moved by ``nerindex es reindex`` (maybe to another model's index), a
        replaced store.sqlite. A long-lived handle (the web service) would otherwise search one
        model's vectors with another's query vectors, without a word."""
        identity = self._forget_if_moved()
        if identity == self._checked_for:
            return
        if self.store.model() is not None:
            self.store.check_model(self.encoder.info.stamp, writing=False)
            self._had_model = True
            # an empty store is checked again at the next search: another process's first write
            # stamps it with its model and keeps its identity (an audit: a service opened on an
            # empty store searched another model's vectors, health "ok")
            self._checked_for = identity
        elif self._had_model:  # an audit: the index behind the alias deleted, and every search a 200 with no hits
            raise StoreError(f"{self.description or 'the store'}: the passages this handle searched are gone "
                             "(the index behind the alias was deleted, or the store emptied): index again, "
                             "then open the store again (restart the service)")

    def _forget_if_moved(self) -> str:
        """The store's identity, after dropping what the store cached of its index (model, mapping
        facts) where that was read for another identity: a failed check had cached the other
        model's facts, and after the alias moved back to the index last checked, info() reported the
        other model for good (an audit)."""
        identity = self.store.version().identity
        if identity != self._read_for:
            forget = getattr(self.store, "forget_index", None)
            if forget is not None:
                forget()
            self._read_for = identity
        return identity

    @classmethod
    def open(
        cls,
        store: str | Path | None = None,
        *,
        model: str | Path | None = None,
        device: str | None = None,
        es_url: str | None = None,
        es_index: str | None = None,
        es_api_key: str | None = None,
        es_user: str | None = None,
        es_password: str | None = None,
        es_ca_certs: str | Path | None = None,
        es_verify_certs: bool | None = None,
        es_timeout: float | None = None,
        threads: int | None = None,
        create: bool | None = None,
        catalog: str | Path | None = None,
        es_index_options: str | None = None,
        settings: Settings | None = None,
    ) -> "NerIndex":
        """Open a store (embedded folder, or Elasticsearch with ``es_url``) with a model folder.

        Arguments are the fields of :class:`~indexer.config.Settings` (``kibana_url`` aside: it
        opens nothing) and override ``settings``, by default the ``NERINDEX_*`` environment (a
        ``store`` without ``es_url`` means the embedded store, even with ``NERINDEX_ES_URL`` set).
        The store's recorded model is checked against this one: here for searching (the same
        vector space), and again before indexing, when every setting that changes what is stored
        must agree as well. ``es_index_options`` (``int8_flat``, ``hnsw`` ...) is the vector index
        type of an Elasticsearch index that indexing creates (default ``int8_hnsw``); an existing
        index with other options is refused, since they cannot change in place.
        """
        settings = store_settings(
            settings or from_env(),
            store=store,
            model=model,
            device=device,
            es_url=es_url,
            es_index=es_index,
            es_api_key=es_api_key,
            es_user=es_user,
            es_password=es_password,
            es_ca_certs=es_ca_certs,
            es_verify_certs=es_verify_certs,
            es_timeout=es_timeout,
            threads=threads,
        )
        if create is not None and not isinstance(create, bool):  # create="no" made a store (an audit)
            raise StoreError(f"create must be True, False or None, not {create!r}")
        encoder = OnnxEncoder.from_dir(settings.model, device=settings.device, catalog=catalog, threads=settings.threads)
        backend = open_store(settings, create=create is not False, model=encoder.info.stamp,
                             **es_index_options_for(settings, es_index_options))
        _check_opened(backend, encoder, settings, create)
        if es_index_options is not None:
            _refuse_other_index_options(backend, es_index_options)
        return cls(encoder, backend, description=settings.store_description())

    # ------------------------------------------------------------------ indexing

    def index(
        self,
        passages: Iterable[Passage],
        *,
        batch_size: int | None = 32,
        skip_existing: bool = True,
        progress: Callable[[int], None] | None = None,
        windows: Callable[[int, int], None] | None = None,
        warn_interrupted: bool = True,
    ) -> IndexReport:
        """Encode and store passages; already stored ids are skipped (resumable, idempotent).

        ``passages`` may be any iterable (a generator such as :func:`read_passages`): it is read
        one chunk (256 passages) at a time and each chunk is written before the next is read, so
        memory does not grow with the input. Bad input found half-way leaves the chunks before
        it stored (the CLI reads a file twice to check it all first).
        ``progress`` is called with the number of passages finished since its last call (tqdm's
        ``update``: add them up for a running total), ``windows`` with (windows done, windows of the
        current chunk): the one that moves while a long passage is encoded. Ctrl-C ends the run with
        what is stored whole and returns the report with ``interrupted`` set (logged as a warning
        unless ``warn_interrupted`` is False, as the CLI, which says it its own way, passes: a script
        that goes on should check it); indexing the same input again resumes, given anew (a generator
        such as :func:`read_passages` made again: the one given has lost the chunk it was in). Passages that were not stored (bad
        metadata, say) are logged the same way, with the first reason (``report.errors`` has them all),
        and so are stored ids given again with another text or metadata, which stay as stored
        (``report.changed_ids``; ``skip_existing=False`` replaces them); False leaves all three to the caller.
        """
        if not isinstance(skip_existing, (bool, np.bool_)):  # "no" is true: the passages were skipped (an audit)
            raise StoreError(f"skip_existing must be True or False, not {skip_existing!r}")
        if not _is_collection(passages):  # an audit: AttributeError
            raise InputError(f"index() takes an iterable of Passage objects, not {type(passages).__name__} "
                             "(read_passages() makes them from files)")
        passages = (_checked_passage(p) for p in passages)
        report = index_passages(
            passages,
            self.encoder,
            self.store,
            batch_size=count_setting("batch_size", 32 if batch_size is None else batch_size),  # None: the default
            skip_existing=bool(skip_existing),
            progress=progress,
            windows=windows,
        )
        if not report.interrupted:
            try:
                store_type_vectors(self.store, self.encoder)
                self.store.prepare()  # the first search after indexing should not build the search structures
            except KeyboardInterrupt:  # every passage is stored: the report, not an abort (an audit); a rerun
                report.interrupted = report.interrupted_preparing = True  # a rerun or the first search finishes
        else:  # Elasticsearch: what was stored searchable now, not at close() (an audit: 1 of 256 for 30 s)
            flush = getattr(self.store, "flush", None)
            if flush is not None:
                flush()
        if warn_interrupted:
            _log_report(report)
        return report

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Remove these passages (and their spans) from the store; the ids that were stored, in
        the order given (ids not stored are no error). The way out for passages a corpus no longer
        holds: an edited passage whose id is a hash of its text is stored under a new id, and the
        old one stays searchable until deleted (``nerindex index --prune`` does it for a whole
        corpus, ``nerindex delete`` for ids)."""
        if not _is_collection(ids):  # a string is none: "p1" would delete "p" and "1"
            raise InputError(f"delete() takes an iterable of passage ids, not {type(ids).__name__}")
        wanted = list(ids)
        bad = next((pid for pid in wanted if not isinstance(pid, str)), None)
        if bad is not None:
            raise InputError(f"a passage id is a string, not {type(bad).__name__} ({bad!r})")
        # an id no store holds (a lone surrogate: SQLite's UnicodeEncodeError, an audit) is not stored
        removed = self.store.delete([pid for pid in wanted if id_problem(pid) is None])
        if removed:
            self.store.prepare()  # searches after it do not see them (Elasticsearch: a refresh)
        return removed

    def stored_ids(self) -> Iterator[str]:
        """Every passage id the store holds, each once."""
        return self.store.stored_ids()

    # ------------------------------------------------------------------ searching

    def request(
        self,
        type_phrase: str,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        text: str | None = None,
        limit: int = 10,
        min_similarity: float | None = None,
        exhaustive: bool = False,
        passage_weight: float | None = None,
    ) -> SearchRequest:
        """Validate a search and embed its type phrase.

        ``filters``: field -> value (exact match), a list of values (any of) or None (absent);
        ``spans.labels`` / ``spans.text`` restrict the matching spans (:class:`Filters` has the
        rule for keys and values, checked here before the phrase is embedded).
        ``passage_weight`` (λ, default the model's for the phrase, ``ModelInfo.passage_weight_for``)
        ranks matches by best span similarity + λ · passage similarity; 0 ranks by the best span alone.
        """
        phrase = check_phrase(type_phrase)
        if not isinstance(exhaustive, (bool, np.bool_)):  # "no" is true: an --all ran (an audit)
            raise SearchError(f"exhaustive must be True or False, not {exhaustive!r}")
        if text is not None and not isinstance(text, str):
            raise SearchError(f"text must be a string, not {type(text).__name__}")
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
            raise SearchError(f"limit must be an integer of at least 1, not {limit!r}")
        for name, value in (("min_similarity", min_similarity), ("passage_weight", passage_weight)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise SearchError(f"{name} must be a number, not {value!r}")  # True was 1.0, "0.3" a TypeError
        threshold = check_threshold(self.encoder.info.threshold_for(phrase) if min_similarity is None else min_similarity)
        weight = self.encoder.info.passage_weight_for(phrase) if passage_weight is None else passage_weight
        if not 0.0 <= weight <= MAX_PASSAGE_WEIGHT:
            raise SearchError(f"passage weight must be within [0, {MAX_PASSAGE_WEIGHT:g}], not {weight}")
        checked = Filters.of(filters)
        vector = self.encoder.embed_types([phrase])[0]
        return SearchRequest(
            vector=vector,
            min_similarity=float(threshold),
            filters=checked,
            text=text.strip() if text and text.strip() else None,
            limit=limit,
            exhaustive=bool(exhaustive),
            passage_weight=float(weight),
        )

    def iter_search(self, type_phrase: str, *, feedback: Feedback | float | None = None, **options: Any) -> Matches:
        """Hits best first, lazily (with ``exhaustive=True``: every match, paged internally);
        ``.total`` counts every match where the store knows it for free (see :class:`Matches`).

        ``feedback`` (off by default) searches twice: the type vector is moved towards the passage
        vectors of the first search's top hits (pseudo-relevance feedback, :mod:`indexer.feedback`);
        a number is the weight, towards the top 10, as the CLI's ``--feedback``.
        """
        if isinstance(feedback, numbers.Real) and not isinstance(feedback, bool):
            feedback = Feedback(weight=float(feedback))
        elif feedback is not None and not isinstance(feedback, Feedback):
            raise SearchError(f"feedback must be a weight (a number) or a Feedback, not {feedback!r}")
        self._check_store_model()
        request = self.request(type_phrase, **options)
        if feedback is not None:
            hits = search_with_feedback(self.store, request, feedback)
        else:
            hits = self.store.search(request)
        return hits if isinstance(hits, Matches) else Matches(hits)

    def search(self, type_phrase: str, **options: Any) -> list[Hit]:
        """Passages that mention an entity of the type, best first, with the matching spans."""
        return list(self.iter_search(type_phrase, **options))

    def absent_fields(self, filters: Filters | Mapping[str, Any]) -> list[str]:
        """The metadata fields of these filters (a mapping, as :meth:`search` takes, or
        :class:`Filters`) that no stored passage has: why a search with them found nothing, the
        CLI's hint; empty where the store cannot tell cheaply (Elasticsearch)."""
        has_field = getattr(self.store, "has_field", None)  # an optional capability of a store
        if has_field is None:
            return []
        return [name for name, _ in Filters.of(filters).metadata if not has_field(name)]

    # ------------------------------------------------------------------ the rest

    def threshold_for(self, phrase: str) -> float:
        """The similarity threshold a search for ``phrase`` uses by default (the model's rule)."""
        return self.encoder.info.threshold_for(check_phrase(phrase))

    def passage_weight_for(self, phrase: str) -> float:
        """The λ a search for ``phrase`` uses by default (the model's rule)."""
        return self.encoder.info.passage_weight_for(check_phrase(phrase))

    def embed(self, phrases: Sequence[str]) -> np.ndarray:
        """Type vectors for phrases (what a kNN query on ``spans.vector`` needs)."""
        if isinstance(phrases, str):  # a string is a sequence too: "dog" gave the vectors of d, o and g
            raise SearchError(f"embed takes a list of phrases, e.g. embed([{phrases!r}]), not one string")
        if not _is_collection(phrases):  # embed(None) was a TypeError about iteration, a dict embedded its keys
            raise SearchError(f"embed takes a list of phrases, not {type(phrases).__name__}")
        return self.encoder.embed_types([check_phrase(p) for p in phrases])

    @property
    def catalog(self) -> list[str]:
        return list(self.encoder.catalog.phrases) if self.encoder.catalog else []

    def version(self) -> StoreVersion:
        """The store's identity and state: what results derived from it are valid for."""
        return self.store.version()

    def check_usable(self) -> None:
        """Raise when this handle's store can no longer be searched: an embedded store whose
        store.sqlite was replaced or removed (a stat, no query); a store now holding another
        model's vectors (ModelMismatchError: an alias moved by ``es reindex --model``, after which
        health said ok while every search was a 409; an audit)."""
        for name in ("check_file", "check_readable"):  # the embedded store's stat; a search of one document on Elasticsearch
            check = getattr(self.store, name, None)
            if check is not None:
                check()
        self._check_store_model()

    def info(self) -> dict[str, Any]:
        """The model this handle embeds with and the store, with the model the store was written
        with (``store.model``; None for an empty store): ``--model`` may name another one, and
        only the store's record says what its vectors are."""
        info = self.encoder.info
        self._forget_if_moved()  # an alias moved since the last search: the model it holds now (an audit)
        counts = self.store.counts()
        stamp = self.store.model()
        return {
            "model": model_info(self.encoder),
            "store": {
                "where": self.description,
                "passages": counts.passages,
                "spans": counts.spans,
                "model": None if stamp is None else {
                    "id": stamp.id, "version": stamp.version, "checksum": stamp.checksum,
                    "same_as_model": (stamp.id, stamp.version, stamp.checksum) == (info.id, info.version, info.checksum),
                    # where span labels come from: "model", "none", "sha256:<hex>" of a --catalog file, None: not recorded
                    "labels": stamp.catalog,
                },
                # bytes of the database and of its derived files (the embedded store; None elsewhere)
                "disk": self.store.disk_usage() if hasattr(self.store, "disk_usage") else None,
            },
        }

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "NerIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_collection(items: object) -> bool:
    """Whether ``items`` is a collection of items: an iterable, but not one text (whose iteration
    gives its characters, or a bytes object's numbers) nor a mapping (whose iteration gives its keys)."""
    return isinstance(items, Iterable) and not isinstance(items, (str, bytes, Mapping))


def _log_report(report: IndexReport) -> None:
    """What a script must not miss of an index() run, on the log (the CLI prints it its own way)."""
    if report.interrupted:  # an audit: a script went on after Ctrl-C without a word
        log.warning("indexing was interrupted (Ctrl-C) after %d passage(s); what is stored is whole, and "
                    "indexing the same input again resumes, from a new iterator: a generator given here has lost "
                    "the chunk it was in (report.interrupted is set)", report.passages)
    if report.skipped_changed:  # the API audit (round 29): the old text stayed without a word
        log.warning("%d passage(s) with an id the store holds were left as stored, %d of them with another text or "
                    "other metadata in this input (%s); skip_existing=False replaces them", report.skipped_existing,
                    report.skipped_changed, first_named([repr(pid) for pid in report.changed_ids], report.skipped_changed))
    if report.failed:  # an audit: 5 of 5 refused (numpy metadata) without a word
        log.warning("%d of %d passage(s) were not stored (report.errors lists them; first: %s)",
                    report.failed, report.passages, report.errors[0] if report.errors else "?")


def store_type_vectors(store: Any, encoder: Any) -> None:
    """Stores that keep type vectors for other clients (Elasticsearch's ``<alias>-types``) get
    the catalog's phrases, with the vectors a search for each uses, where they do not hold them
    already (after ``nerindex index``, and after ``es reindex``, whose model may embed queries in
    other templates: an audit found the old ones kept); a failure there is a warning, the passages
    are stored."""
    ensure = getattr(store, "ensure_type_index", None)
    if ensure is None or encoder.catalog is None:
        return
    try:
        outcomes = ensure(encoder.query_catalog(), encoder.info.stamp,
                          queries=encoder.info.query_identity(), embed=encoder.embed_types)
    except ModelMismatchError as exc:  # its message says how to rebuild the types index
        log.warning("type vectors not stored: %s", exc)
    except NerindexError as exc:
        log.warning("type vectors not stored (retry with 'nerindex es add-types --catalog'): %s", exc)
    else:  # failures kept as data: a partial fill was said only at INFO level (an audit)
        failed = [o for o in outcomes or () if not o.ok]
        if failed:
            log.warning("type vectors: %d of %d phrases not stored (first: %r, %s); the next 'nerindex index' "
                        "or 'nerindex es add-types --catalog' stores them", len(failed), len(outcomes),
                        failed[0].id, failed[0].error)
