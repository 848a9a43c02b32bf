"""Pure builders of the index, mapping, document and setup requests nerindex sends (golden-file tested).

Nothing here talks to a server: each function maps nerindex records to the dict Elasticsearch
expects, so the bodies can be checked byte for byte without a cluster. The search bodies are in
:mod:`.search_requests` (top-k kNN) and :mod:`.paged_requests` (exhaustive search, scans).

Field layout (``mappings/passages.json``): ``id``, ``text``, ``fields`` (user metadata, kept in
``_source`` only: any value is stored, none refused), ``filter_texts.<key>`` (the metadata as
filters compare it, keyword, keys literal: ``subobjects: false``), ``model``, ``vector`` (passage vector), ``labels`` (copy of every span label, passage level, for
Kibana aggregations) and the nested ``spans`` with ``start``, ``end``, ``text``, ``score``,
``mention``, ``labels`` and ``vector``.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ...errors import SettingError, StoreError
from ...records import EncodedPassage
from ..base import ModelStamp
from ..filter_rules import is_metadata_filter_key
from ..filters import as_stored, stored_text, stored_values
from . import templates
from .similarity import check_metric

META_FORMAT = 1
# Each metadata value also as the text the embedded store's filters compare (filter_texts.<key>),
# so both stores filter by one rule; an index made before has no such field (its _meta says which).
FILTER_TEXTS = "filter_texts"
# 2: numbers and booleans with the type marks of stores.filters (NUMBER_MARK, BOOLEAN_MARK); an
# index made before them (1) keeps filtering as it did until `nerindex es reindex`.
# 3: the marked texts in a field of their own (FILTER_TYPED), what nerindex's filters compare, and
# filter_texts the plain ones alone: format 2 kept a number's text twice there, marked and plain,
# and a Kibana aggregation showed each number twice, "2001" and an invisible mark + "2001" (an audit).
MARKED_FILTER_FORMAT = 2
FILTER_FORMAT = 3
FILTER_TYPED = "filter_typed"
SPANS_PATH = "spans"
SPAN_VECTOR_FIELD = "spans.vector"
# False for a candidate span (``EncodedSpan.mention``); spans written before the field existed
# have none and are mentions, so queries select candidates (``term: false``), never mentions.
MENTION = "mention"
MENTION_FIELD = f"{SPANS_PATH}.{MENTION}"
PASSAGE_VECTOR_FIELD = "vector"
SOURCE_FIELDS = ["id", "text", "fields"]
MAX_DOC_ID_BYTES = 512
DEFAULT_INDEX_OPTIONS = "int8_hnsw"
HNSW_DEFAULTS = {"m": 16, "ef_construction": 100}
# ``GET _nodes/plugins`` trimmed to what the store needs: each node's version and module names.
SERVER_FACTS_FILTER = ["nodes.*.version", "nodes.*.modules.name", "nodes.*.plugins.name"]

_INDEX_NAME_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:A-Z]')


# --- indices and aliases ---------------------------------------------------------------------------


TYPES_SUFFIX = "-types"  # the types index of alias A is A-types (type_index)


def check_index_name(name: str) -> str:
    """The name if Elasticsearch accepts it for an index or alias; a StoreError that says why not."""
    problem = None
    if not name:
        problem = "it is empty"
    elif name in (".", ".."):
        problem = "'.' and '..' are reserved"
    elif name[0] in "-_+":
        problem = "it must not start with '-', '_' or '+'"
    elif _INDEX_NAME_FORBIDDEN.search(name):
        problem = 'it must be lowercase, without spaces or any of \\ / * ? " < > | , # :'
    elif len(name.encode("utf-8")) > 240:
        problem = "it is longer than 240 bytes"
    if problem:
        raise SettingError(f"invalid Elasticsearch index name {name!r}: {problem}")
    return name


def versioned_index_name(alias: str, number: int) -> str:
    """Concrete index behind the alias: ``<alias>-000001``, ``<alias>-000002``, ..."""
    return f"{alias}-{number:06d}"


def _versioned(alias: str) -> re.Pattern[str]:
    return re.compile(re.escape(alias) + r"-(\d{6})")


def is_versioned_index(alias: str, name: str) -> bool:
    """Whether ``name`` is one of the alias's versioned indices (``<alias>-000001`` ...)."""
    return _versioned(alias).fullmatch(name) is not None


def next_index_name(alias: str, existing: Iterable[str]) -> str:
    """The first versioned name after every one already used (leftovers of failed re-indexes too)."""
    used = [int(m.group(1)) for m in map(_versioned(alias).fullmatch, existing) if m]
    return versioned_index_name(alias, max(used, default=0) + 1)


def index_options_body(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """dense_vector ``index_options``, pinned explicitly so a server upgrade never changes them.

    A plain type (``"int8_hnsw"``) gets the HNSW parameters written out; a dict is taken as is.
    """
    if isinstance(spec, Mapping):
        body = dict(spec)
        if not isinstance(body.get("type"), str):
            raise SettingError(f"index_options needs a 'type': {spec!r}")
        if binary_quantized(body["type"]):
            raise SettingError(BINARY_REFUSED.format(kind=body["type"]))
        return body
    if not isinstance(spec, str) or not re.fullmatch(r"[a-z0-9_]+", spec):
        raise SettingError(f"invalid dense_vector index_options type {spec!r}")
    if binary_quantized(spec):
        raise SettingError(BINARY_REFUSED.format(kind=spec))
    body: dict[str, Any] = {"type": spec}
    if spec.endswith("hnsw"):
        body.update(HNSW_DEFAULTS)
    return body


def span_vector_index_options(mapping: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``index_options`` of ``spans.vector`` in an index mapping (None if not there)."""
    spans = ((mapping.get("properties") or {}).get(SPANS_PATH) or {}).get("properties") or {}
    options = (spans.get("vector") or {}).get("index_options")
    return dict(options) if isinstance(options, Mapping) and options.get("type") else None


def span_vector_index_type(mapping: Mapping[str, Any]) -> str | None:
    """The ``index_options.type`` of ``spans.vector`` in an index mapping (None if not there)."""
    options = span_vector_index_options(mapping)
    return None if options is None else str(options["type"])


def other_index_options(index: str, mapping: Mapping[str, Any], asked: str | Mapping[str, Any]) -> str | None:
    """Why ``asked`` index options cannot apply to ``index``, which exists with others (None when they
    agree). Index options are fixed when an index is made: ``nerindex index --es-index-options`` on an
    existing alias would otherwise write into the old options without a word."""
    have, want = span_vector_index_type(mapping), index_options_body(asked)["type"]
    if have == want:
        return None
    return (f"index {index!r} already exists with spans.vector index_options {have}; --es-index-options {want} "
            f"applies only to an index that nerindex index creates: nerindex es reindex --index-options {want} "
            "builds a copy with them")


def mention_mapped(mapping: Mapping[str, Any]) -> bool:
    """Whether an index mapping has ``spans.mention`` (an index made before candidates has not,
    and its ``dynamic: strict`` mapping refuses documents carrying it until it is added)."""
    spans = ((mapping.get("properties") or {}).get(SPANS_PATH) or {}).get("properties") or {}
    return MENTION in spans


def mention_mapping() -> dict[str, Any]:
    """``PUT <index>/_mapping`` body adding ``spans.mention`` to an index made before it, as
    ``mappings/passages.json`` maps it (adding a field to a mapping is always allowed)."""
    spans = templates.load_template(templates.INDEX_TEMPLATE)["mappings"]["properties"][SPANS_PATH]
    return {"properties": {SPANS_PATH: {"type": spans["type"], "properties": {MENTION: spans["properties"][MENTION]}}}}


# An audit (December 2026): on a bbq_hnsw index a top-k search left out passages whose best span
# passed the threshold by up to 0.025, at the calibrated thresholds too, without a word. Binary
# quantization's scores miss by more than the kNN's slack below the threshold (QUANTIZED_MARGIN,
# measured on int8), so the kNN never offered those spans for rescoring. int8 and int4 matched the
# embedded store exactly in the same sweep.
BINARY_REFUSED = (
    "index_options {kind}: binary quantization misses passages whose best span passes the threshold "
    "(an audit: by up to 0.025), which nerindex cannot tell from those it finds: ask for int8_hnsw "
    "(a new index's default), int8_flat, int4_hnsw or hnsw"
)


def binary_quantized(index_type: str | None) -> bool:
    """Whether vectors of this index type are searched through a one-bit copy (``bbq_*``)."""
    return bool(index_type) and index_type.split("_", 1)[0] == "bbq"


def quantized(index_type: str | None) -> bool:
    """Whether vectors of this dense_vector index type are searched through a lossy copy
    (``int8_*``, ``int4_*``, ``bbq_*``), so that rescoring with the float vectors changes scores."""
    return bool(index_type) and index_type.split("_", 1)[0] in ("int8", "int4", "bbq")


def index_meta(stamp: ModelStamp, *, typed_filters: int = 0) -> dict[str, Any]:
    """The index ``_meta``: which model made the vectors (the model guard reads it back), and
    which ``filter_texts`` its passages carry (:func:`filter_texts`; :data:`FILTER_FORMAT` in every
    passage index this nerindex makes; 0 and no key: an index made before, without the field)."""
    meta: dict[str, Any] = {"nerindex_format": META_FORMAT, "model": stamp.to_dict()}
    if typed_filters:
        meta[FILTER_TEXTS] = int(typed_filters)
    return meta


def filter_format(meta: Mapping[str, Any] | None) -> int:
    """The ``filter_texts`` an index's ``_meta`` says its passages carry: 0 none, 1 without the
    type marks (``true`` in indexes made before them), 2 with them beside the plain ones, 3
    (:data:`FILTER_FORMAT`) with them in :data:`FILTER_TYPED`."""
    value = (meta or {}).get(FILTER_TEXTS)
    return int(value) if isinstance(value, (bool, int)) else 0


def filter_texts(fields: Mapping[str, Any], *, marked: bool = True, plain: bool = True) -> dict[str, list[str]]:
    """Each metadata value (each element of a list; an object has none: ``stores.filters.stored_values``)
    as the embedded store's filters compare it (``stores.filters.stored_text``: a number or boolean
    with its type mark) and, for a number or boolean, also as plain text (numbers as SQLite writes
    them, ``true``/``false``): what a Kibana query or the search template names
    (``filter_texts.year: "2001"``). The plain copy changes no answer of nerindex's own filters: a
    filter text equal to it spells that number or boolean, so it matches the marked text as well.
    ``marked`` False: the plain texts alone (an index made before the marks, and format 3's
    ``filter_texts``); ``plain`` False: no plain copy (format 3's ``filter_typed``). Only keys a filter can
    name (``filter_rules.is_metadata_filter_key``): Elasticsearch refuses a passage with a key such as ``""``
    or ``" "``, which the embedded store stores (and no filter can name)."""
    out: dict[str, list[str]] = {}
    for key, value in fields.items():
        texts = []
        for v in stored_values(value):
            texts.append(stored_text(v, marked=marked))
            if marked and plain and not _infinite(v):  # the plain copy (a string's is the same text)
                texts.append(stored_text(v, marked=False))
        if texts and is_metadata_filter_key(key):
            out[key] = list(dict.fromkeys(texts))
    return out


def filter_fields(fields: Mapping[str, Any], typed_filters: int) -> dict[str, dict[str, list[str]]]:
    """The filter fields of a passage in an index of filter format ``typed_filters`` (1 to 3)."""
    if typed_filters >= FILTER_FORMAT:
        return {FILTER_TEXTS: filter_texts(fields, marked=False), FILTER_TYPED: filter_texts(fields, plain=False)}
    return {FILTER_TEXTS: filter_texts(fields, marked=typed_filters >= MARKED_FILTER_FORMAT)}


def _infinite(value: Any) -> bool:
    """A number stored as ±Inf (an integer past a double's range): its plain text "Inf" would let the filter
    text "Inf" find it here and not in the embedded store (a review); its digits find it in both."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isinf(as_stored(value))


def index_body(
    stamp: ModelStamp, *, index_options: str | Mapping[str, Any] = DEFAULT_INDEX_OPTIONS
) -> dict[str, Any]:
    """Settings and mappings of a passage index for this model, from ``mappings/passages.json``."""
    check_metric(stamp.similarity)
    if int(stamp.dims) <= 0:
        raise StoreError(f"model {stamp.id!r} has invalid dims {stamp.dims!r}")
    return templates.fill(
        templates.load_template(templates.INDEX_TEMPLATE),
        {
            "dims": int(stamp.dims),
            "similarity": stamp.similarity,
            "index_options": index_options_body(index_options),
            "meta": index_meta(stamp, typed_filters=FILTER_FORMAT),
        },
    )


def create_index_body(
    stamp: ModelStamp,
    *,
    index_options: str | Mapping[str, Any] = DEFAULT_INDEX_OPTIONS,
    alias: str | None = None,
) -> dict[str, Any]:
    """``PUT <index>`` body; with ``alias`` the alias is created in the same (atomic) request."""
    body = index_body(stamp, index_options=index_options)
    if alias is not None:
        body["aliases"] = {alias: {}}
    return body


def alias_swap_actions(alias: str, old: str | None, new: str) -> list[dict[str, Any]]:
    """``POST _aliases`` actions moving the alias to ``new`` in one atomic step. The removal must
    find the alias on ``old``: if another run moved it meanwhile, the whole request fails instead
    of leaving the alias on two indices (every passage twice for any other client)."""
    actions: list[dict[str, Any]] = []
    if old is not None:
        actions.append({"remove": {"index": old, "alias": alias, "must_exist": True}})
    actions.append({"add": {"index": new, "alias": alias}})
    return actions


def refresh_settings(interval: str | None) -> dict[str, Any]:
    """``PUT _settings`` body for the refresh interval (None resets it to the server default)."""
    return {"index": {"refresh_interval": interval}}


def search_template_body() -> dict[str, Any]:
    """``PUT _scripts/<id>`` body of the stored search template (``mappings/search-template.json``)."""
    return templates.load_template(templates.SEARCH_TEMPLATE)


def counts_body() -> dict[str, Any]:
    """Passages (top-level documents) and spans (nested documents) in one request."""
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {"spans": {"nested": {"path": SPANS_PATH}}},
    }


# --- documents ---------------------------------------------------------------------------------


HASHED_ID_PREFIX = "sha256:"


def document_id(passage_id: str) -> str:
    """Deterministic ``_id``: the passage id itself, hashed only when Elasticsearch would refuse it."""
    raw = passage_id.encode("utf-8")
    if 0 < len(raw) <= MAX_DOC_ID_BYTES:
        return passage_id
    return HASHED_ID_PREFIX + hashlib.sha256(raw).hexdigest()


def may_share_document_id(passage_id: str) -> bool:
    """Whether another passage id can have this one's ``_id``: a hashed id is also a valid literal
    id, so a long id and an id spelling its hash share one document (:meth:`.ElasticsearchStore.write`
    checks these against the stored passage's own id). Rekeying literal ``sha256:`` ids instead
    would orphan every such passage of an existing index."""
    return passage_id.startswith(HASHED_ID_PREFIX) or document_id(passage_id) != passage_id


def vector_values(vector: Any) -> list[float]:
    """A vector as JSON numbers: float32 precision is all Elasticsearch keeps, so 8 decimals do."""
    return np.round(np.asarray(vector, dtype=np.float32).astype(np.float64), 8).tolist()


def passage_document(doc: EncodedPassage, stamp: ModelStamp, *, typed_filters: int = 0) -> dict[str, Any]:
    """The ``_source`` of one passage: text, metadata (and, for an index that has the field, its
    :func:`filter_texts`), model, its mentions' labels, passage vector, nested spans."""
    passage = doc.passage
    source: dict[str, Any] = {
        "id": passage.id,
        "text": passage.text,
        "fields": dict(passage.fields),
        "model": {"id": stamp.id, "version": stamp.version},
        "span_count": len(doc.spans),
        # the labels of the mentions, for a dashboard's count of passages per label: a copy_to of
        # spans.labels counted the candidates' too, which nerindex never marks (an audit)
        "labels": sorted({label for span in doc.spans if span.mention for label in span.labels}),
    }
    if typed_filters:
        source.update(filter_fields(passage.fields, typed_filters))
    if doc.vector is not None:
        source["vector"] = vector_values(doc.vector)
    source["spans"] = [
        {
            "start": int(span.start),
            "end": int(span.end),
            "text": span.text,
            "score": round(float(span.score), 6),
            MENTION: bool(span.mention),
            "labels": list(span.labels),
            "vector": vector_values(span.vector),
        }
        for span in doc.spans
    ]
    return source


def bulk_action(
    doc: EncodedPassage, stamp: ModelStamp, index: str, *, typed_filters: int = 0, replace: bool = True
) -> dict[str, Any]:
    """One ``streaming_bulk`` action under the deterministic _id: ``index`` (create or overwrite),
    or without ``replace`` ``create``, which the server refuses (409) for an id it holds, so the
    check and the write are one step (``Store.write``)."""
    return {
        "_op_type": "index" if replace else "create",
        "_index": index,
        "_id": document_id(doc.passage.id),
        "_source": passage_document(doc, stamp, typed_filters=typed_filters),
    }


def bulk_actions(
    docs: Iterable[EncodedPassage], stamp: ModelStamp, index: str, *, typed_filters: int = 0,
    replace: bool = True,
) -> Iterator[dict[str, Any]]:
    """Bulk actions for passages, lazily, in input order."""
    for doc in docs:
        yield bulk_action(doc, stamp, index, typed_filters=typed_filters, replace=replace)

# Elasticsearch 9.2 leaves dense vectors out of ``_source`` by default (index setting
# ``index.mapping.exclude_source_vectors``); ``exclude_vectors: false`` asks for them back.
SOURCE_VECTORS_SERVER = (9, 2, 0)


def passage_vectors_body(passage_ids: Sequence[str], *, exclude_vectors_flag: bool) -> dict[str, Any]:
    """A search for the stored passage vectors of these ids (``_source`` filtered to id + vector)."""
    fields = ["id", PASSAGE_VECTOR_FIELD]
    source: Any = {"includes": fields, "exclude_vectors": False} if exclude_vectors_flag else fields
    return {
        "size": len(passage_ids),
        "_source": source,
        "query": {"ids": {"values": [document_id(pid) for pid in passage_ids]}},
    }
