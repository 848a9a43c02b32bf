"""The HTTP service: JSON API, Search UI endpoints and the search page, over one NerIndex.

Built by :func:`create_app` so tests and embedders pass an index they built themselves. Search is
synchronous CPU work (type embedding, vector scoring): it runs in a bounded thread pool, and each
request has a time limit (504 when exceeded; the worker finishes in the background). Errors are
JSON ``{"error": {"status", "code", "message"}}``. CORS is off unless origins are given.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    InputError,
    ModelError,
    ModelMismatchError,
    NerindexError,
    SearchError,
    StaleCursorError,
    StoreError,
)
from ..records import Hit
from . import searchui
from .edge import LOOPBACK_HOSTS, BodyLimit, ScopeChecks, error_response, host_check, not_utf8, query_check
from .resultsets import ResultSetCache, SearchQuery, decode_cursor, encode_cursor, facet_counts, version_key
from .schemas import (
    MAX_PASSAGE_WEIGHT,
    PASSAGE_WEIGHT_DESCRIPTION,
    EmbedBody,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    SearchBody,
    SearchResponse,
    SearchUIBody,
    TypesResponse,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
T = TypeVar("T")

# Content-Security-Policy of the page: scripts and styles only from this server, no inline code,
# so even a rendering bug could not run script taken from corpus text.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; over a limit is a 400 (or 413/504) with a clear message."""

    max_phrase_chars: int = 200
    max_text_chars: int = 500
    max_page_size: int = 1000
    max_filters: int = 16
    max_filter_values: int = 100
    max_embed_phrases: int = 64
    max_body_bytes: int = 256 * 1024
    request_timeout_s: float = 10.0


class RequestTimeout(NerindexError):
    """A request ran past the service's time limit."""


STATUS_OF: tuple[tuple[type[BaseException], int, str], ...] = (
    (RequestTimeout, 504, "timeout"),
    (StaleCursorError, 409, "stale_cursor"),
    (SearchError, 400, "bad_request"),
    (InputError, 400, "bad_request"),
    (ModelMismatchError, 409, "model_mismatch"),
    (StoreError, 503, "store_unavailable"),
    (ModelError, 500, "model_error"),
    (NerindexError, 500, "error"),
)


def validation_message(exc: RequestValidationError) -> str:
    """Pydantic's error list as one readable line: ``body.limit: Input should be ...``."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def model_summary(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model part of NerIndex.info(), whatever its exact layout, as a small dict."""
    model = info.get("model")
    if isinstance(model, dict):
        keys = ("id", "version", "dims", "checksum", "similarity_threshold", "passage_weight")
        return {k: model[k] for k in keys if k in model} or dict(model)
    if model is not None:
        return {"id": str(model)}
    return None


class SearchService:
    """The index behind the routes: time-limited calls in a thread pool and a result-set cache."""

    def __init__(self, index: Any, limits: Limits, *, workers: int, threshold: float | None = None) -> None:
        self.index = index
        self.limits = limits
        self.threshold = threshold  # the server's default; None: the model's calibrated one
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nerindex-web")
        self.cache = ResultSetCache()
        self._catalog: list[str] | None = None
        self._info: dict[str, Any] | None = None

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work in the pool; give up waiting after the request time limit."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, timeout=self.limits.request_timeout_s)
        except asyncio.TimeoutError as exc:
            raise RequestTimeout(
                f"the request took longer than {self.limits.request_timeout_s:g} s; "
                "narrow it (filters, text, a higher threshold) or page with a smaller limit"
            ) from exc

    # --- blocking helpers, run in the pool ---

    def catalog(self) -> list[str]:
        if self._catalog is None:
            self._catalog = list(self.index.catalog)
        return self._catalog

    def info(self) -> dict[str, Any]:
        info = dict(self.index.info())
        self._info = info
        return info

    def default_threshold(self) -> float | None:
        if self._info is None:
            self.info()
        assert self._info is not None
        model = self._info.get("model")
        for source in (self._info, model if isinstance(model, dict) else {}):
            value = source.get("similarity_threshold")
            if isinstance(value, (int, float)):
                return float(value)
        return None

    def default_passage_weight(self) -> float | None:
        """The model's λ, as info() reports it (None when the index does not say)."""
        if self._info is None:
            self.info()
        assert self._info is not None
        model = self._info.get("model")
        value = model.get("passage_weight") if isinstance(model, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    def top(self, query: SearchQuery, limit: int) -> list[Hit]:
        return list(
            self.index.search(
                query.type,
                filters=query.filter_dict() or None,
                text=query.text,
                limit=limit,
                min_similarity=query.threshold,
                passage_weight=query.passage_weight,  # None: the model's λ
            )
        )

    def store_key(self) -> str:
        """The store's version now, hashed: read on every request that uses result sets, so that
        indexing while the service runs is seen at once (one cheap query, see Store.version)."""
        return version_key(self.index.version())

    def result_set(self, query: SearchQuery, store_key: str) -> list[Hit]:
        """Every match of the query, best first; cached for cursor paging and facets while the
        store stays at the version ``store_key`` was read from."""

        def compute() -> list[Hit]:
            return list(
                self.index.search(
                    query.type,
                    filters=query.filter_dict() or None,
                    text=query.text,
                    min_similarity=query.threshold,
                    exhaustive=True,
                    passage_weight=query.passage_weight,  # None: the model's λ
                )
            )

        return self.cache.get(store_key, query.key(), compute)

    def search(self, body: SearchBody) -> dict[str, Any]:
        started = time.perf_counter()
        threshold = body.threshold if body.threshold is not None else self.threshold
        query = SearchQuery.build(
            body.type, threshold=threshold, filters=body.filters, text=body.text, passage_weight=body.passage_weight
        )
        paged = body.all or body.cursor is not None
        total: int | None = None
        next_cursor: str | None = None
        facets = None
        if paged or body.facets:
            store_key = self.store_key()
            offset = decode_cursor(body.cursor, query.key(), store_key) if body.cursor else 0
            hits = self.result_set(query, store_key)
            total = len(hits)
            page = hits[offset : offset + body.limit]
            if paged and offset + body.limit < total:
                next_cursor = encode_cursor(query.key(), offset + body.limit, store_key)
            if body.facets:
                facets = facet_counts(hits, keep=filterable)  # offer only facets a client can filter on
        else:
            page = self.top(query, body.limit)
        return {
            "type": query.type,
            "threshold": query.threshold if query.threshold is not None else self.default_threshold(),
            "passage_weight": (
                query.passage_weight if query.passage_weight is not None else self.default_passage_weight()
            ),
            "hits": [h.to_dict() for h in page],
            "total": total,
            "next_cursor": next_cursor,
            "facets": facets,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    def embed(self, phrases: list[str]) -> dict[str, Any]:
        vectors = np.asarray(self.index.embed(phrases), dtype=np.float32)
        if self._info is None:
            self.info()
        assert self._info is not None
        return {
            "model": model_summary(self._info),
            "dims": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "phrases": phrases,
            "vectors": [[round(float(x), 7) for x in row] for row in vectors],
        }

    def searchui_search(self, plan: searchui.SearchPlan) -> dict[str, Any]:
        if not plan.search_term:
            return searchui.response_state(plan, [], facets={})
        store_key = self.store_key()
        query, post = plan.split(threshold=self.threshold)
        hits = searchui.apply_filters(self.result_set(query, store_key), post)
        facets = {}
        for spec in plan.facets:
            base = hits
            if spec.field in plan.disjunctive and any(f.field == spec.field for f in plan.filters):
                other_query, other_post = plan.split(excluding=spec.field, threshold=self.threshold)
                base = searchui.apply_filters(self.result_set(other_query, store_key), other_post)
            facets[spec.field] = searchui.facet_state(spec, base)
        return searchui.response_state(plan, hits, facets=facets)

    def searchui_autocomplete(self, plan: searchui.AutocompletePlan) -> dict[str, Any]:
        suggestions = searchui.suggest_types(self.catalog(), plan.search_term, size=plan.size)
        hits: list[Hit] = []
        wants_hits = plan.results_size is not None or plan.result_types
        if wants_hits and plan.search_term:
            size = max(plan.results_size or 0, plan.size)
            hits = self.top(SearchQuery.build(plan.search_term, threshold=self.threshold), size)
        return searchui.autocomplete_state(plan, suggestions=suggestions, hits=hits)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def filterable(name: str) -> bool:
    """Whether the API takes ``name`` as a filter field: the one rule for requests and facets."""
    return bool(FIELD_NAME.match(name))


def check_search(body: SearchBody, limits: Limits) -> None:
    """Enforce the configurable limits that the schema cannot know."""
    phrase = body.type.strip()
    if not phrase:
        raise SearchError("type is empty: give an entity type in plain words, e.g. 'dinosaur'")
    if len(phrase) > limits.max_phrase_chars:
        raise SearchError(f"type is {len(phrase)} characters; the limit is {limits.max_phrase_chars}")
    if body.limit > limits.max_page_size:
        raise SearchError(f"limit {body.limit} is above the page size limit of {limits.max_page_size}; page with all/cursor")
    if body.text is not None and len(body.text) > limits.max_text_chars:
        raise SearchError(f"text is {len(body.text)} characters; the limit is {limits.max_text_chars}")
    if len(body.filters) > limits.max_filters:
        raise SearchError(f"{len(body.filters)} filters; the limit is {limits.max_filters}")
    for name, value in body.filters.items():
        if not filterable(name):
            raise SearchError(f"filter field {name!r}: use letters, digits, '_', '.' or '-' (at most 64)")
        if isinstance(value, list) and not value:
            raise SearchError(f"filter on {name!r}: empty list of values")
        if isinstance(value, list) and len(value) > limits.max_filter_values:
            raise SearchError(f"filter on {name!r}: {len(value)} values; the limit is {limits.max_filter_values}")


def parse_where(items: Sequence[str]) -> dict[str, str | list[str]]:
    """``field=value`` query parameters → filters; a repeated field means any of its values."""
    filters: dict[str, str | list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SearchError(f"where={item!r}: use field=value")
        if name in filters:
            prior = filters[name]
            filters[name] = (prior if isinstance(prior, list) else [prior]) + [value]
        else:
            filters[name] = value
    return filters


async def known_params_only(request: Request) -> None:
    """Refuse query parameters the route does not take, naming them (422): a misspelt
    ``treshold=0.5`` that is silently ignored gives answers that look right and are not."""
    route = request.scope.get("route")
    known = sorted(p.alias for p in getattr(getattr(route, "dependant", None), "query_params", ()))
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        takes = f"known: {', '.join(known)}" if known else "this route takes none"
        raise RequestValidationError(
            [{"loc": ("query", unknown[0]), "msg": f"unknown parameter ({takes})", "type": "extra_forbidden"}]
        )


def default_workers() -> int:
    """Search threads: as many as cores. Embedded search is a numpy product that already uses every
    core, so more threads only thrash (on 2 cores, 4 threads served ~40% fewer requests/s than 2);
    an Elasticsearch backend waits on the network and gains from ``--workers`` above this."""
    return max(2, min(8, os.cpu_count() or 2))


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad request (limits, filters, cursor)"},
    409: {"model": ErrorResponse, "description": "Cursor from before the index changed: search again without it"},
    422: {"model": ErrorResponse, "description": "Malformed body or parameters"},
    503: {"model": ErrorResponse, "description": "Store unavailable"},
    504: {"model": ErrorResponse, "description": "Request time limit exceeded"},
}


def create_app(
    index: Any,
    *,
    cors_origins: Sequence[str] = (),
    limits: Limits | None = None,
    workers: int | None = None,
    threshold: float | None = None,
    close_index: bool = False,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The ASGI app over ``index`` (a NerIndex, or anything with its search/embed/info/catalog/version).

    ``cors_origins``: browser origins allowed to call the API (empty: CORS off; ``"*"``: any).
    ``allowed_hosts``: names the service answers to in the Host header (``"*"``: any); others get
    a 400, which keeps a loopback service without authentication out of reach of DNS rebinding.
    ``threshold``: similarity threshold for requests that give none (Search UI never does);
    None uses the model's calibrated default.
    ``close_index``: close the index when the app shuts down (the CLI's case).
    """
    limits = limits or Limits()
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise SearchError(f"threshold must be within [-1, 1], not {threshold}")
    service = SearchService(index, limits, workers=workers or default_workers(), threshold=threshold)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            service.close()
            if close_index and hasattr(index, "close"):
                index.close()

    app = FastAPI(
        title="nerindex",
        summary="Zero-shot typed-entity retrieval: find passages that mention an entity of any type named in plain words.",
        version=_version(),
        docs_url=None,  # the Swagger page loads its assets from a CDN; the description is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    # added first, so innermost: a middleware between it and the routes could wrap its 413 into
    # another error (Starlette's BaseHTTPMiddleware reads the body in a task group)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )

    @app.exception_handler(NerindexError)
    async def nerindex_error(request: Request, exc: NerindexError) -> JSONResponse:
        for cls, status, code in STATUS_OF:
            if isinstance(exc, cls):
                if status >= 500:
                    log.warning("%s %s: %s", request.method, request.url.path, exc)
                return error_response(status, code, str(exc))
        return error_response(500, "error", str(exc))  # pragma: no cover - STATUS_OF ends with the base

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body", made specific
            return error_response(422, "invalid_request", f"the body is {not_utf8(exc.__cause__)}")
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the server log")

    # --- the JSON API ---

    @app.get("/api/v1/health", response_model=HealthResponse, tags=["service"], dependencies=[Depends(known_params_only)])
    async def health() -> dict[str, str]:
        """Liveness: the service is up and has an index open."""
        return {"status": "ok"}

    @app.get("/api/v1/info", tags=["service"], responses=ERROR_RESPONSES, dependencies=[Depends(known_params_only)])
    async def info() -> JSONResponse:
        """The model, the store and its counts, and the request limits of this service."""
        data = await service.call(service.info)
        data = dict(data)
        data["server"] = {"version": _version(), "threshold": service.threshold, "limits": asdict(limits)}
        return JSONResponse(_jsonable(data))

    @app.get("/api/v1/types", response_model=TypesResponse, tags=["search"], dependencies=[Depends(known_params_only)])
    async def types(
        q: str = Query("", max_length=200, description="Part of a type phrase; empty lists the catalog."),
        limit: int = Query(50, ge=1, le=1000),
    ) -> dict[str, Any]:
        """The type catalog (phrases spans are tagged with), filtered by what was typed so far."""
        catalog = await service.call(service.catalog)
        return {"types": searchui.suggest_types(catalog, q, size=limit), "total": len(catalog)}

    @app.post("/api/v1/search", response_model=SearchResponse, tags=["search"], responses=ERROR_RESPONSES)
    async def search(body: SearchBody) -> JSONResponse:
        """Passages that mention an entity of the type, with the matching mentions.

        Top hits by default; with ``all: true`` every match, one page per request: pass
        ``next_cursor`` back as ``cursor`` (with the same query) until it is null.
        """
        check_search(body, limits)
        return JSONResponse(await service.call(service.search, body))

    @app.get(
        "/api/v1/search", response_model=SearchResponse, tags=["search"], responses=ERROR_RESPONSES,
        dependencies=[Depends(known_params_only)],
    )
    async def search_get(
        type: str = Query(..., description="The entity type in plain words."),
        limit: int = Query(10, ge=1),
        threshold: float | None = Query(None, ge=-1.0, le=1.0),
        passage_weight: float | None = Query(None, ge=0.0, le=MAX_PASSAGE_WEIGHT, description=PASSAGE_WEIGHT_DESCRIPTION),
        text: str | None = Query(None),
        where: list[str] = Query([], description="field=value metadata filter; repeat a field for any of."),
        all: bool = Query(False),
        cursor: str | None = Query(None),
        facets: bool = Query(False),
    ) -> JSONResponse:
        """The same search as POST, from a URL (filter values are strings here)."""
        body = SearchBody(
            type=type, limit=limit, threshold=threshold, passage_weight=passage_weight, text=text,
            filters=parse_where(where),
            all=all, cursor=cursor, facets=facets,
        )
        check_search(body, limits)
        return JSONResponse(await service.call(service.search, body))

    @app.post("/api/v1/embed", response_model=EmbedResponse, tags=["vectors"], responses=ERROR_RESPONSES)
    async def embed(body: EmbedBody) -> JSONResponse:
        """Type phrases → unit vectors, for kNN from other clients (e.g. Kibana Dev Tools)."""
        phrases = [p.strip() for p in body.phrases]
        if len(phrases) > limits.max_embed_phrases:
            raise SearchError(f"{len(phrases)} phrases; the limit is {limits.max_embed_phrases}")
        for p in phrases:
            if not p or len(p) > limits.max_phrase_chars:
                raise SearchError(f"each phrase needs 1 to {limits.max_phrase_chars} characters")
        return JSONResponse(await service.call(service.embed, phrases))

    @app.get(
        "/api/v1/embed", response_model=EmbedResponse, tags=["vectors"], responses=ERROR_RESPONSES,
        dependencies=[Depends(known_params_only)],
    )
    async def embed_get(type: str = Query(..., description="A type phrase.")) -> JSONResponse:
        """One type phrase → its unit vector."""
        return await embed(EmbedBody(phrases=[type]))

    # --- Elastic Search UI (ApiProxyConnector) ---

    @app.post("/api/search", tags=["search-ui"], responses=ERROR_RESPONSES)
    async def searchui_search(body: SearchUIBody) -> JSONResponse:
        """Answers Search UI's ApiProxyConnector.onSearch with a ResponseState."""
        plan = searchui.parse_search(
            body.model_dump(), max_page_size=limits.max_page_size,
            max_phrase_chars=limits.max_phrase_chars, max_filters=limits.max_filters,
        )
        return JSONResponse(await service.call(service.searchui_search, plan))

    @app.post("/api/autocomplete", tags=["search-ui"], responses=ERROR_RESPONSES)
    async def searchui_autocomplete(body: SearchUIBody) -> JSONResponse:
        """Answers ApiProxyConnector.onAutocomplete: type suggestions from the catalog, top hits."""
        plan = searchui.parse_autocomplete(
            body.model_dump(), max_phrase_chars=limits.max_phrase_chars, max_page_size=limits.max_page_size
        )
        return JSONResponse(await service.call(service.searchui_autocomplete, plan))

    # --- the page ---

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def static_headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(PAGE_HEADERS)
        return response

    # added last, so run first: the Host and the query string are checked before anything else
    app.add_middleware(ScopeChecks, checks=[host_check(allowed_hosts), query_check])
    return app


def _jsonable(value: Any) -> Any:
    """numpy scalars, tuples and dataclass-like objects from info() → plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, Path):
        return str(value)
    return value


@functools.lru_cache(maxsize=1)
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nerindex")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"
