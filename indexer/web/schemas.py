"""Request and response models of the HTTP API: validation at the edge, and the OpenAPI description.

Requests forbid unknown keys, so nothing a client sends can reach a store unparsed (there is no
way to pass a raw Elasticsearch query through). Responses are built as plain dicts for speed and
declared here only for the OpenAPI description.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..stores.base import MAX_PASSAGE_WEIGHT
from ..text import unicode_problem

PASSAGE_WEIGHT_DESCRIPTION = (
    "Hybrid ranking weight λ: matches are ranked by best span similarity (a mention or a candidate) "
    "+ λ · similarity of the whole passage to the type (0 = spans only). Which passages match and "
    "which mentions are marked do not change; score is the combined score. null = the model's "
    "calibrated default."
)

Scalar = bool | int | float | str


def invalid_unicode(value: Any, where: str = "") -> str | None:
    """Where in a decoded JSON value a string (or key) is not valid Unicode, and why; or None.

    JSON's ``\\ud800`` escape decodes to a lone surrogate, which no encoder, tokenizer or store
    can take: left in, it fails deep inside as an HTTP 500.
    """
    if isinstance(value, str):
        problem = unicode_problem(value)
        return f"{where or 'body'}: {problem}" if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            shown = str(key).encode("utf-8", "backslashreplace").decode("utf-8")  # never echo a surrogate
            path = f"{where}.{shown}" if where else shown
            found = invalid_unicode(str(key), f"{path} (a key)") or invalid_unicode(item, path)
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = invalid_unicode(item, f"{where}[{i}]")
            if found:
                return found
    return None


class RequestBody(BaseModel):
    """A request body: unknown keys are refused, and so is text that is not valid Unicode."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        problem = invalid_unicode(data)
        if problem:
            raise ValueError(f"{problem}; send text as UTF-8")
        return data


class SearchBody(RequestBody):
    """A search: passages that mention an entity of the given type, best first.

    Strict types: ``"threshold": true`` became 1.0 and ``"all": "off"`` true in lax mode, answers
    to a request the client did not mean (an integer still passes for a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(..., description="The entity type in plain words.", examples=["dinosaur"])
    limit: int = Field(10, ge=1, description="Hits per response (the page size when paging); left out: 10, or the page size limit when lower.")
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, allow_inf_nan=False, description="Minimum cosine similarity: of a passage's best span (mention or candidate) for it to be a top hit, of a mention for it to be marked and, with all, for its passage to be returned; null = the model's calibrated default."
    )
    passage_weight: float | None = Field(
        None, ge=0.0, le=MAX_PASSAGE_WEIGHT, allow_inf_nan=False, description=PASSAGE_WEIGHT_DESCRIPTION
    )
    filters: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="Metadata filters: field -> value (exact match) or list of values (any of).",
        examples=[{"source": "wikipedia"}],
    )
    text: str | None = Field(None, description="Restrict to passages whose text matches this lexical query.")
    all: bool = Field(
        False, description="The calibrated answer set: every passage with a mention at or above the threshold (top hits may also rank passages through candidate spans, which this leaves out), a page a request: follow next_cursor until it is null."
    )
    cursor: str | None = Field(None, min_length=1, description="next_cursor of the previous response, sent with the same query.")
    facets: bool = Field(
        False, description="Also count metadata values over all matches, the answer set of all (and return its total)."
    )


class SpanOut(BaseModel):
    start: int = Field(description="Character offset of the mention in text (inclusive).")
    end: int = Field(description="Character offset of the mention in text (exclusive).")
    text: str
    similarity: float
    labels: list[str]


class HitOut(BaseModel):
    id: str
    score: float = Field(
        description="Best similarity of a span in the passage to the type (a mention, or a candidate, "
        "which ranks but is never marked), plus passage_weight × the passage's similarity to the type."
    )
    text: str
    fields: dict[str, Any]
    spans: list[SpanOut] = Field(description="The mentions that matched, best first.")
    ranked_by: SpanOut | None = Field(
        None, description="The candidate span (never marked) that ranked the hit, where its best span is one, "
        "with marks or without; null where a mention ranked it (its first mark)."
    )


class FacetValue(BaseModel):
    value: Scalar
    count: int


class SearchResponse(BaseModel):
    type: str
    threshold: float | None = Field(description="The similarity threshold applied.")
    passage_weight: float | None = Field(description="The passage weight λ the hits were ranked with.")
    hits: list[HitOut]
    total: int | None = Field(
        description="Number of matches in the answer set that all pages through (passages with a marked mention); "
        "null for a plain top-hits search. With facets and without all, the top hits may be more: a top hit "
        "can rank through a candidate span alone."
    )
    next_cursor: str | None = Field(description="Pass back as cursor for the next page; null at the end.")
    facets: dict[str, list[FacetValue]] | None = None
    took_ms: float


class EmbedBody(RequestBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    phrases: list[str] = Field(..., min_length=1, description="Type phrases to embed.", examples=[["dinosaur"]])


class EmbedResponse(BaseModel):
    model: dict[str, Any] | None = Field(description="The model the vectors come from (id, version, dims).")
    dims: int
    phrases: list[str]
    thresholds: list[float] = Field(description="The similarity threshold a search for each phrase applies.")
    passage_weights: list[float] = Field(description="The passage weight λ a search for each phrase applies.")
    vectors: list[list[float]] = Field(description="Unit vectors, one per phrase, for kNN on spans.vector.")


class TypesResponse(BaseModel):
    types: list[str]
    total: int = Field(description="Size of the whole catalog.")


class HealthResponse(BaseModel):
    status: str


class ServerInfo(BaseModel):
    version: str = Field(description="nerindex's version.")
    threshold: float | None = Field(description="The server's --threshold (null: each phrase's model threshold).")
    limits: dict[str, Any] = Field(description="What one request may ask for (phrase length, page size, filters, "
                                               "values a filter, body bytes, time limit).")


class InfoResponse(BaseModel):
    """``GET /api/v1/info``: what ``nerindex info --json`` shows, and the server's settings (the
    OpenAPI document had no schema for it: an audit)."""

    model: dict[str, Any] = Field(description="The model the service embeds with: id, version, path, dims, checksum, "
                                              "thresholds, passage weights, type templates, execution provider.")
    store: dict[str, Any] = Field(description="The store: where, passages, spans, the model it was written with "
                                              "(same_as_model), disk use.")
    server: ServerInfo


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class SearchUIBody(RequestBody):
    """What Search UI's ApiProxyConnector posts: its request state and query config. Other keys
    are kept, not dropped, so that :func:`.searchui.parse_search` can refuse a request-state key
    sent beside ``state`` (it ignores the rest): dropped here, a filter so placed was lost and the
    search answered unfiltered (an audit)."""

    model_config = ConfigDict(extra="allow")

    state: dict[str, Any] = Field(default_factory=dict)
    queryConfig: dict[str, Any] = Field(default_factory=dict)
