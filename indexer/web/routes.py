"""The routes of the HTTP service: the JSON API (``/api/v1``) and the Elastic Search UI endpoints.

Each route parses and checks its request (the limits the schemas cannot know, the one filter rule
of :class:`~indexer.stores.filter_rules.Filters`) and hands the work to the app's :class:`SearchService`
(``app.state.service``), which runs it in its thread pool under the request time limit.
"""

from __future__ import annotations

import asyncio

import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from types import UnionType
from typing import Any, Callable, Coroutine, Union, get_args, get_origin

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from ..errors import SearchError, StoreError
from ..stores.base import MAX_PHRASE_CHARS, check_phrase
from ..stores.filter_rules import Filters, where_pairs
from ..text import RepeatedKey, json_value_problem, unique_keys
from . import searchui
from .edge import UnreadBody, body_refusal
from .failures import ERROR_RESPONSES
from .schemas import (
    MAX_PASSAGE_WEIGHT,
    PASSAGE_WEIGHT_DESCRIPTION,
    EmbedBody,
    EmbedResponse,
    HealthResponse,
    InfoResponse,
    SearchBody,
    SearchResponse,
    SearchUIBody,
    TypesResponse,
)
from .service import FEWER_PHRASES, Limits, SearchService, service_version


class UniqueKeysRequest(Request):
    """A request whose JSON body may not give a key twice: ``{"type": "dinosaur", "type": "city"}``
    searched "city" (JSON keeps the last), where the GET routes refuse a parameter given twice and
    the file readers a key given twice (a web audit). A 422 names the key."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            refusal = body_refusal(self.headers)
            if refusal:
                raise UnreadBody(refusal)
            try:  # UTF-8 (a BOM skipped) as documented: json.loads of bytes took UTF-16 and -32 too (a web audit)
                text = (await self.body()).decode("utf-8")  # not utf-8-sig: its error positions skip the BOM
                self._json = json.loads(text[1:] if text.startswith("\ufeff") else text,
                                        object_pairs_hook=_unique_keys, parse_constant=_no_constant)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise
            except (ValueError, RecursionError) as exc:  # a 5000-digit number, JSON nested 5000 deep: a 400
                raise json.JSONDecodeError(f"cannot read the body ({json_value_problem(exc)})", "", 0) from exc  # that said nothing
        return self._json


def _no_constant(name: str) -> Any:
    """NaN and Infinity, which Python's JSON reader takes and JSON has not: a 422 naming it (the
    Search UI routes answered 500 for ``"current": Infinity``; a web audit)."""
    raise json.JSONDecodeError(f"{name} is not a JSON number", "", 0)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """:func:`~indexer.text.unique_keys`, its refusal as the JSONDecodeError FastAPI makes a 422 of."""
    try:
        return unique_keys(pairs)
    except RepeatedKey as exc:
        raise json.JSONDecodeError(f"the key {exc.key!r} is given twice", "", 0) from exc


class UniqueKeysRoute(APIRoute):
    """Every route reads its body through :class:`UniqueKeysRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def unique_keys(request: Request) -> Response:
            return await handler(UniqueKeysRequest(request.scope, request.receive))

        return unique_keys


router = APIRouter(route_class=UniqueKeysRoute)


def current_service(request: Request) -> SearchService:
    """The service of the app serving the request (a dependency of every route that searches)."""
    return request.app.state.service


def checked_search(body: SearchBody, limits: Limits) -> SearchBody:
    """The request with the configurable limits the schema cannot know enforced: a ``limit`` left
    out is the default (10) or the page size limit where that is lower (``--max-page-size 3`` made
    every request without a limit a 400)."""
    if "limit" not in body.model_fields_set and body.limit > limits.max_page_size:
        body = body.model_copy(update={"limit": limits.max_page_size})
    # the phrase as searched, checked and measured as the CLI and the API do, and echoed so (an audit:
    # "Person." came back as sent while embed gave "Person", and its cursor was refused for "person")
    body = body.model_copy(update={"type": check_phrase(body.type, limit=limits.max_phrase_chars)})
    if body.limit > limits.max_page_size:
        raise SearchError(f"limit {body.limit} is above the page size limit of {limits.max_page_size}; page with all/cursor")
    if body.text is not None and len(body.text) > limits.max_text_chars:
        raise SearchError(f"text is {len(body.text)} characters; the limit is {limits.max_text_chars}")
    if len(body.filters) > limits.max_filters:
        raise SearchError(f"{len(body.filters)} filters; the limit is {limits.max_filters}")
    for name, value in Filters.of(body.filters).items:  # the one rule for keys and values
        if isinstance(value, tuple):
            searchui.check_value_count(name, len(value), limits.max_filter_values)
    return body


def _repeatable(annotation: Any) -> bool:
    """Whether a query parameter of this type takes several values (``where: list[str]``)."""
    if get_origin(annotation) in (Union, UnionType):
        return any(_repeatable(a) for a in get_args(annotation))
    return get_origin(annotation) in (list, tuple, set, frozenset)


async def known_params_only(request: Request) -> None:
    """Refuse query parameters the route does not take, naming them (422): a misspelt
    ``treshold=0.5`` that is silently ignored gives answers that look right and are not. So is a
    parameter of one value given twice (``type=dinosaur&type=city`` searched for the last one)."""
    route = request.scope.get("route")
    params = {p.alias: p for p in getattr(getattr(route, "dependant", None), "query_params", ())}
    known = sorted(params)
    unknown = [name for name in request.query_params if name not in params]
    if unknown:
        takes = f"known: {', '.join(known)}" if known else "this route takes none"
        raise RequestValidationError(
            [{"loc": ("query", unknown[0]), "msg": f"unknown parameter ({takes})", "type": "extra_forbidden"}]
        )
    for name in dict.fromkeys(request.query_params):
        if len(request.query_params.getlist(name)) > 1 and not _repeatable(params[name].field_info.annotation):
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": "given more than once; it takes one value", "type": "too_long"}]
            )
        number, value = _NUMBERS.get(_scalar(params[name].field_info.annotation)), request.query_params[name]
        if number is not None and _finite(value) and not number.fullmatch(value):
            # Python's int() and float() read "3_0" as 30 and " 3 " as 3 (an audit); a URL's number is
            # written as JSON writes one, as a POST body's is
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": "not a number as JSON writes one", "type": "number_parsing"}]
            )


_NUMBERS = {int: re.compile(r"-?(0|[1-9][0-9]*)"), float: re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")}


def _finite(value: str) -> bool:
    """Whether Python reads ``value`` as a finite number (nan, inf and words are FastAPI's to refuse)."""
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _scalar(annotation: Any) -> Any:
    """``int`` of ``int | None``: the one type a query parameter's value is read as."""
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) in (Union, UnionType) else []
    return args[0] if len(args) == 1 else annotation


# --- the JSON API ------------------------------------------------------------------------------


@router.get(
    "/api/v1/health", response_model=HealthResponse, tags=["service"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def health(service: SearchService = Depends(current_service)) -> dict[str, str]:
    """Liveness: the service is up and its index usable (503 once its store.sqlite was replaced or
    removed, which needs a restart: a review found health saying ok while every search failed; 409
    once the store holds another model's vectors, after ``es reindex --model``). On a thread of its
    own, not the search pool's: a probe must not wait behind searches (a review)."""
    try:  # bounded like any request: a stalled cluster held the probe for minutes, then said ok (an audit)
        await asyncio.wait_for(asyncio.to_thread(service.index.check_usable), timeout=service.limits.request_timeout_s)
    except asyncio.TimeoutError:
        raise StoreError(service.store_silent(f"{service.limits.request_timeout_s:g} s")) from None
    return {"status": "ok"}


@router.get(
    "/api/v1/info", tags=["service"], responses={200: {"model": InfoResponse}, **ERROR_RESPONSES},
    dependencies=[Depends(known_params_only)],
)
async def info(service: SearchService = Depends(current_service)) -> JSONResponse:
    """The model, the store and its counts, and the request limits of this service."""
    data = await service.call(service.info, advice=service.store_silent())
    data = dict(data)
    data["server"] = {"version": service_version(), "threshold": service.threshold, "limits": asdict(service.limits)}
    return JSONResponse(jsonable(data))


@router.get(
    "/api/v1/types", response_model=TypesResponse, tags=["search"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def types(
    q: str = Query("", max_length=MAX_PHRASE_CHARS, description="Part of a type phrase; empty lists the catalog."),
    limit: int = Query(50, ge=1, le=1000),
    service: SearchService = Depends(current_service),
) -> dict[str, Any]:
    """The type catalog (phrases spans are tagged with), filtered by what was typed so far."""
    catalog = await service.call(service.catalog, store=False)
    return {"types": searchui.suggest_types(catalog, q, size=limit), "total": len(catalog)}


@router.post(
    "/api/v1/search", response_model=SearchResponse, tags=["search"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def search(body: SearchBody, service: SearchService = Depends(current_service)) -> JSONResponse:
    """Passages that mention an entity of the type, with the matching mentions.

    Top hits by default; with ``all: true`` every match, one page per request: pass
    ``next_cursor`` back as ``cursor`` (with the same query) until it is null.
    """
    body = checked_search(body, service.limits)
    return JSONResponse(await service.call(service.search, body))


@router.get(
    "/api/v1/search", response_model=SearchResponse, tags=["search"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def search_get(
    type: str = Query(..., description="The entity type in plain words."),
    limit: int | None = Query(None, ge=1, description="Hits per response; 10 when left out (or the page size limit, when lower)."),
    threshold: float | None = Query(None, ge=-1.0, le=1.0, allow_inf_nan=False),
    passage_weight: float | None = Query(
        None, ge=0.0, le=MAX_PASSAGE_WEIGHT, allow_inf_nan=False, description=PASSAGE_WEIGHT_DESCRIPTION
    ),
    text: str | None = Query(None),
    where: list[str] = Query([], description="field=value metadata filter; repeat a field for any of."),
    all: bool = Query(False),
    cursor: str | None = Query(None, min_length=1),
    facets: bool = Query(False),
    service: SearchService = Depends(current_service),
) -> JSONResponse:
    """The same search as POST, from a URL (filter values are strings here)."""
    body = SearchBody(
        type=type, threshold=threshold, passage_weight=passage_weight, text=text,
        filters=where_pairs(where, option="where"),
        all=all, cursor=cursor, facets=facets, **({} if limit is None else {"limit": limit}),
    )
    body = checked_search(body, service.limits)
    return JSONResponse(await service.call(service.search, body))


@router.post(
    "/api/v1/embed", response_model=EmbedResponse, tags=["vectors"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def embed(body: EmbedBody, service: SearchService = Depends(current_service)) -> JSONResponse:
    """Type phrases → unit vectors, for kNN from other clients (e.g. Kibana Dev Tools)."""
    if len(body.phrases) > service.limits.max_embed_phrases:
        raise SearchError(f"{len(body.phrases)} phrases; the limit is {service.limits.max_embed_phrases}")
    # echoed as embedded, as `nerindex embed` does (the review), and measured so (an audit)
    phrases = [check_phrase(p, limit=service.limits.max_phrase_chars) for p in body.phrases]
    return JSONResponse(await service.call(service.embed, phrases, store=False, advice=FEWER_PHRASES))


@router.get(
    "/api/v1/embed", response_model=EmbedResponse, tags=["vectors"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def embed_get(
    type: str = Query(..., description="A type phrase."), service: SearchService = Depends(current_service)
) -> JSONResponse:
    """One type phrase → its unit vector."""
    return await embed(EmbedBody(phrases=[type]), service)

# --- Elastic Search UI (ApiProxyConnector) ----------------------------------------------------


@router.post(
    "/api/search", tags=["search-ui"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def searchui_search(body: SearchUIBody, service: SearchService = Depends(current_service)) -> JSONResponse:
    """Answers Search UI's ApiProxyConnector.onSearch with a ResponseState."""
    plan = searchui.parse_search(
        body.model_dump(), max_page_size=service.limits.max_page_size,
        max_phrase_chars=service.limits.max_phrase_chars, max_filters=service.limits.max_filters,
        max_filter_values=service.limits.max_filter_values,
    )
    return JSONResponse(await service.call(service.searchui_search, plan))


@router.post(
    "/api/autocomplete", tags=["search-ui"], responses=ERROR_RESPONSES,
    dependencies=[Depends(known_params_only)],
)
async def searchui_autocomplete(body: SearchUIBody, service: SearchService = Depends(current_service)) -> JSONResponse:
    """Answers ApiProxyConnector.onAutocomplete: type suggestions from the catalog, top hits."""
    plan = searchui.parse_autocomplete(
        body.model_dump(), max_phrase_chars=service.limits.max_phrase_chars, max_page_size=service.limits.max_page_size
    )
    return JSONResponse(await service.call(service.searchui_autocomplete, plan))


def jsonable(value: Any) -> Any:
    """numpy scalars, tuples and dataclass-like objects from info() → plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if isinstance(value, Path):
        return str(value)
    return value
