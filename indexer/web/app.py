"""The HTTP service: JSON API, Search UI endpoints and the search page, over one NerIndex.

Built by :func:`create_app` so tests and embedders pass an index they built themselves. Search is
synchronous CPU work (type embedding, vector scoring): it runs in a bounded thread pool, and each
request has a time limit (504 when exceeded; the worker finishes in the background). Errors are
JSON ``{"error": {"status", "code", "message"}}``. CORS is off unless origins are given.
The parts: :mod:`.service` (the index, the pool, result sets), :mod:`.routes` (the API),
:mod:`.failures` (errors as JSON), :mod:`.edge` (checks before any route).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from ..errors import SearchError
from .edge import (LOOPBACK_HOSTS, BodyLimit, HeadAsGet, ScopeChecks, cross_site_check, error_response, host_check,
                   query_check)
from .failures import InternalErrors, add_error_handlers
from .routes import router
from .service import Limits, SearchService, default_workers, service_version

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Content-Security-Policy of the page: scripts and styles only from this server, no inline code,
# so even a rendering bug could not run script taken from corpus text.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # kept, but revalidated by ETag: an upgrade's app.js is not run with an old page
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

    app = FastAPI(
        title="nerindex",
        summary="Zero-shot typed-entity retrieval: find passages that mention an entity of any type named in plain words.",
        version=service_version(),
        docs_url=None,  # the Swagger page loads its assets from a CDN; the description is at /openapi.json
        redoc_url=None,
        lifespan=_lifespan(service, close_index=close_index),
    )
    app.state.service = service
    # added first, so innermost: a middleware between it and the routes could wrap its 413 into
    # another error (Starlette's BaseHTTPMiddleware reads the body in a task group)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(InternalErrors)  # inside CORS and the headers: its 500 carries both

    if cors_origins:
        app.add_middleware(
            JSONCORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )

    add_error_handlers(app)
    app.include_router(router)

    _add_page(app)
    _add_headers(app)
    # added last, so run first: the Host and the query string are checked before anything else
    app.add_middleware(ScopeChecks, checks=[host_check(allowed_hosts), cross_site_check(cors_origins), query_check])
    app.add_middleware(HeadAsGet)
    return app


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflight (an origin, method or header not
    allowed) is the service's JSON error, not text/plain: every error of the service is JSON (a web
    audit). The browser refuses the call either way; the body says what to allow."""

    def preflight_response(self, request_headers: Any) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        text = bytes(response.body).decode()  # "Disallowed CORS origin, method, headers"
        hint = " (serve --cors-origin)" if "origin" in text else ""  # methods and headers are the service's own
        kept = {k: v for k, v in response.headers.items() if k.lower().startswith(("access-control-", "vary"))}
        return error_response(400, "cors_refused", text + hint, kept)


def _lifespan(service: SearchService, *, close_index: bool) -> Callable[[FastAPI], Any]:
    """The app's lifespan: on shutdown stop the pool, and close the index when the app owns it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            service.close()
            if close_index and hasattr(service.index, "close"):
                service.index.close()

    return lifespan


def _add_page(app: FastAPI) -> None:
    """The search page at ``/`` and its static files, all served with :data:`PAGE_HEADERS`, and
    answered 304 when the browser's ETag is current (as the static files are; an audit: ``/``
    was sent whole every time, and ``HEAD /`` was a 405)."""
    static = StaticFiles(directory=STATIC_DIR)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page(request: Request) -> Response:
        index = STATIC_DIR / "index.html"
        response = static.file_response(index, index.stat(), request.scope)
        response.headers.update(PAGE_HEADERS)
        return response

    app.mount("/static", static, name="static")


def _add_headers(app: FastAPI) -> None:
    """Headers by path, in one place: :data:`PAGE_HEADERS` on the page's static files, and
    ``Cache-Control: no-store`` on every API answer, which is of one store version, so a browser
    or proxy must not keep it past the next write (without the header a heuristic cache may; an
    audit). The page itself says ``no-cache`` (revalidated by its ETag)."""

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(PAGE_HEADERS)
        elif request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response
