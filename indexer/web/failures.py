"""How the HTTP service answers failures: nerindex errors, invalid requests and HTTP errors as JSON.

Every error is ``{"error": {"status", "code", "message"}}`` (:func:`.edge.error_response`);
:data:`STATUS_OF` maps the nerindex error classes to their HTTP status and code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..errors import (
    InputError,
    ModelError,
    ModelMismatchError,
    NerindexError,
    SearchError,
    SettingError,
    StaleCursorError,
    StoreBusyError,
    StoreError,
    UnsupportedSearchError,
)
from .edge import UnreadBody, body_refusal, error_response, not_utf8
from .schemas import ErrorResponse
from .service import RequestTimeout

log = logging.getLogger(__name__)

RETRY_AFTER = {"Retry-After": "1"}  # seconds: a store busy with writes takes a search again within one
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}

STATUS_OF: tuple[tuple[type[BaseException], int, str], ...] = (
    (RequestTimeout, 504, "timeout"),
    (StaleCursorError, 409, "stale_cursor"),
    (UnsupportedSearchError, 501, "not_supported"),  # the server lacks a module: not the request's fault
    (SearchError, 400, "bad_request"),
    (InputError, 400, "bad_request"),
    (ModelMismatchError, 409, "model_mismatch"),
    (SettingError, 500, "setting"),  # the service's own configuration (a StoreError too: before it)
    (StoreBusyError, 503, "store_busy"),  # passing: answered with Retry-After (a web audit: it read as an outage)
    (StoreError, 503, "store_unavailable"),
    (ModelError, 500, "model_error"),
    (NerindexError, 500, "error"),
)

# the store's remedy (re-index, another --es-index) is the command line's; the service's is the
# model the store holds (an audit: following the message re-encoded a whole corpus for nothing)
SERVE_THAT_MODEL = " This service: restart 'nerindex serve' with --model naming the folder of the model the store holds."

# The error answers of the routes, for the OpenAPI description.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad request (limits, filters, cursor; a Host header not allowed)"},
    403: {"model": ErrorResponse, "description": "A cross-site request to a route that searches or embeds (cross_site)"},
    405: {"model": ErrorResponse, "description": "Method not allowed on this route (the Allow header names the ones that are)"},
    409: {"model": ErrorResponse, "description": "Cursor from before the index changed: search again without it"},
    413: {"model": ErrorResponse, "description": "Request body over the size limit"},
    415: {"model": ErrorResponse, "description": "Body not sent as JSON (Content-Type) or compressed (Content-Encoding)"},
    422: {"model": ErrorResponse, "description": "Malformed body or parameters (an unknown parameter included)"},
    500: {"model": ErrorResponse, "description": "Unexpected server error (nothing of it is disclosed)"},
    501: {"model": ErrorResponse, "description": "A search this Elasticsearch cannot run (no Painless module, or too old)"},
    503: {"model": ErrorResponse, "description": "Store unavailable, or busy with writes (store_busy, Retry-After: search again)"},
    504: {"model": ErrorResponse, "description": "Request time limit exceeded"},
}


def validation_message(exc: RequestValidationError) -> str:
    """Pydantic's error list as one readable line: ``body.limit: Input should be ...``."""
    parts: list[str] = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":  # its loc is a character position; say what is wrong
            error = str((err.get("ctx") or {}).get("error", "invalid"))
            parts.append(f"body: {error}" if error.endswith("given twice") else f"body: not valid JSON: {error}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if len(loc) > 2 and loc[0] == "filters":  # one line a filter, not one per branch of its union (a page audit)
            line = f"filters.{loc[1]}: {FILTER_VALUE}"
            if line not in parts:
                parts.append(line)
            continue
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


FILTER_VALUE = "a value must be a string, a number, a boolean or a list of them"


def add_error_handlers(app: FastAPI) -> None:
    """Answer every failure as a JSON error; unexpected ones as a 500 that leaks nothing."""

    @app.exception_handler(NerindexError)
    async def nerindex_error(request: Request, exc: NerindexError) -> JSONResponse:
        for cls, status, code in STATUS_OF:
            if isinstance(exc, cls):
                if status >= 500:
                    log.warning("%s %s: %s", request.method, request.url.path, exc)
                message = str(exc) + (SERVE_THAT_MODEL if isinstance(exc, ModelMismatchError) else "")
                return error_response(status, code, message, RETRY_AFTER if isinstance(exc, StoreBusyError) else None)
        return error_response(500, "error", str(exc))  # pragma: no cover - STATUS_OF ends with the base

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = body_refusal(request.headers) if request.method == "POST" else None
        if refusal:  # FastAPI leaves a body of another type unparsed; say so, not "body: Input should be..."
            return error_response(415, "unsupported_media_type", refusal)
        return error_response(422, "invalid_request", validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body", made specific
            return error_response(422, "invalid_request", f"the body is {not_utf8(exc.__cause__)}")
        if isinstance(exc.__cause__, UnreadBody):
            return error_response(415, "unsupported_media_type", str(exc.__cause__))
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        allow = allowed_methods(request) if exc.status_code == 405 else ""
        headers = {"Allow": allow} if allow else exc.headers  # a mounted app (static files) says its own (the review)
        return error_response(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error()


def internal_error() -> JSONResponse:
    """The 500 of an unexpected error: it leaks nothing; the traceback is in the server log."""
    return error_response(500, "internal_error", "internal error; see the server log")


class InternalErrors:
    """Unexpected errors of the routes answered here, inside the CORS and header middleware, as the
    JSON 500. Starlette answers them outside every middleware, so the 500 had no CORS header and a
    page on an allowed origin saw a network error instead (a web audit). An error after the
    answer began is raised on, to Starlette's own handler."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await internal_error()(scope, receive, send)


def allowed_methods(request: Request) -> str:
    """Every method the request's path is served with (RFC 9110's Allow), HEAD wherever GET is
    (:class:`.edge.HeadAsGet`): Starlette named only the first route of the path (an audit:
    ``DELETE /api/v1/search`` said "allow: POST" though GET is served too)."""
    methods: set[str] = set()
    for route in _flat(request.app.router.routes):
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _flat(routes: list[Any]) -> list[Any]:
    """Routes with an included router's own in its place (FastAPI 0.165 keeps them behind one)."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        out += _flat(inner) if inner is not None else [route]
    return out
