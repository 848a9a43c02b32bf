"""The service's edge: what every request must pass before a route sees it, and the error shape.

These are ASGI middlewares rather than route code because what they guard is out of a route's
sight: the Host header (a loopback service without authentication is open to DNS rebinding unless
it answers only to its own names), the bytes of a body as they arrive (a chunked body has no
Content-Length to check), and the raw query string (Starlette turns invalid UTF-8 into U+FFFD
silently, so a mangled type phrase would be searched as if it were meant).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote_to_bytes

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from ..text import unicode_problem

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one error shape of the service: ``{"error": {"status", "code", "message"}}``, never
    kept by a cache (the errors of the checks that run before the header middleware, a bad Host
    or query string, had no Cache-Control; a web audit)."""
    body = {"error": {"status": status, "code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


# ----------------------------------------------------------------------------------- body size


class BodyTooLarge(HTTPException):
    """A request body past the limit, noticed while it arrives (raised from ``receive``).

    Its response closes the connection: otherwise the server would go on reading, and dropping,
    the rest of the body to keep the connection for a next request.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body over {max_bytes} bytes", headers={"Connection": "close"})

    def response(self) -> JSONResponse:
        return error_response(413, "too_large", self.detail, self.headers)


class BodyLimit:
    """Refuse a request body over ``max_bytes`` by the bytes actually received, chunked or not.

    A declared Content-Length over the limit is answered before anything is read; otherwise
    ``receive`` counts the bytes and raises :class:`BodyTooLarge` once past the limit, so the rest
    is never read (the route's error handler answers 413 and the server closes the connection).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await BodyTooLarge(self.max_bytes).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no route handler could answer it
            if started:
                raise
            await exc.response()(scope, receive, send)


# ------------------------------------------------------------------------- checks on the scope


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (latin-1, as HTTP has it), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def host_name(value: str) -> str:
    """The name in a Host header or an --allow-host value: no port, no IPv6 brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end != -1 else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def allowed_names(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(host_name(h) for h in hosts if h.strip())


def host_problem(scope: Scope, allowed: frozenset[str]) -> str | None:
    """Why the request's Host is not one this service answers to, or None.

    Answering only to its own names defeats DNS rebinding: a page on another site whose name
    was re-pointed at 127.0.0.1 still sends its own name as Host.
    """
    if ANY_HOST in allowed:
        return None
    value = header(scope, b"host")
    if value is None:
        return "the request has no Host header"
    if host_name(value) in allowed:
        return None
    return f"Host {value!r} is not served here (start the service with --allow-host {host_name(value)} to allow it)"


class UnreadBody(ValueError):
    """A request body nerindex does not read as sent: compressed (``Content-Encoding: gzip`` read as
    "not valid UTF-8 at byte 2", a web audit), or not declared as JSON (curl's default form type,
    which FastAPI leaves unparsed, read as "body: Input should be a valid dictionary")."""


def body_refusal(headers: Mapping[str, str]) -> str | None:
    """Why a JSON body with these headers is not read (a 415), or None."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        return f"Content-Encoding {encoding} is not read: send the body uncompressed"
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):  # FastAPI parses no other body, none untyped
        came = f"it came as {kind}" if kind else "it came without one"
        return f"the body is read as JSON: send it with Content-Type: application/json ({came})"
    return None


def not_utf8(exc: UnicodeDecodeError) -> str:
    """A decoding error as words a client can act on."""
    return f"not valid UTF-8 ({exc.reason} at byte {exc.start + 1})"


def query_problem(scope: Scope) -> str | None:
    """Why the query string is not text a store takes (naming the parameter), or None: not UTF-8,
    or holding what no store holds (a NUL: :func:`~indexer.text.unicode_problem`; it reached the
    routes, which answered 500, a review)."""
    for pair in scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        for part, what in ((name, "name"), (value, "value")):
            shown = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", errors="replace")
            try:
                text = unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"query parameter {shown!r}: the {what} is {not_utf8(exc)}"
            problem = unicode_problem(text)
            if problem is not None:
                return f"query parameter {shown!r}: the {what} holds {problem}"
    return None


ScopeCheck = Callable[[Scope], tuple[int, str, str] | None]


class ScopeChecks:
    """Answer with the error of the first failing check before the app sees the request.

    A check takes the ASGI scope and returns ``(status, code, message)`` or None.
    """

    def __init__(self, app: ASGIApp, *, checks: Sequence[ScopeCheck]) -> None:
        self.app = app
        self.checks = tuple(checks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for check in self.checks:
                failed = check(scope)
                if failed is not None:
                    await error_response(*failed)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def host_check(hosts: Iterable[str]) -> ScopeCheck:
    """A scope check allowing only ``hosts`` (``*``: any) as the Host header: 400 otherwise."""
    allowed = allowed_names(hosts)

    def check(scope: Scope) -> tuple[int, str, str] | None:
        problem = host_problem(scope, allowed)
        return None if problem is None else (400, "bad_host", problem)

    return check


def cross_site_problem(scope: Scope, origins: frozenset[str]) -> str | None:
    """Why a request a browser sent from another site's page is not served, or None.

    A page elsewhere can make the visitor's browser send a simple GET or POST to a loopback
    service: it cannot read the answer, but the service does the work, and one ``all=true``
    search holds every matching passage in memory (a security audit: three such requests took a
    100k-passage service from 177 MB to 977 MB). Browsers say where a request comes from in
    ``Sec-Fetch-Site``; a link followed to the search page (a navigation) and the origins given
    with ``--cors-origin`` are served, as is every client that is no browser (no such header).
    A navigation is one of the page's own, top-level (``Sec-Fetch-Dest: document``) and outside
    ``/api/``: an API URL in another site's iframe or window is a navigation too (a review).
    Browsers send these headers to secure origins (https, localhost, 127.0.0.1) only: a service
    reached over plain http by another name is not covered (docs/web.md)."""
    site = (header(scope, b"sec-fetch-site") or "").strip().lower()
    if site in ("", "same-origin", "none"):
        return None
    mode, dest = ((header(scope, name) or "").strip().lower() for name in (b"sec-fetch-mode", b"sec-fetch-dest"))
    if mode == "navigate" and dest == "document" and not str(scope.get("path", "")).startswith("/api/"):
        return None
    origin = header(scope, b"origin")
    if ANY_HOST in origins or (origin is not None and origin.strip() in origins):
        return None
    return (f"a request from a page of another site ({origin or 'Sec-Fetch-Site: ' + site}) is not served: "
            "start the service with --cors-origin ORIGIN to let that page call it")


def cross_site_check(origins: Iterable[str]) -> ScopeCheck:
    """A scope check refusing what :func:`cross_site_problem` refuses: 403."""
    allowed = frozenset(o.strip() for o in origins if o.strip())

    def check(scope: Scope) -> tuple[int, str, str] | None:
        problem = cross_site_problem(scope, allowed)
        return None if problem is None else (403, "cross_site", problem)

    return check


def query_check(scope: Scope) -> tuple[int, str, str] | None:
    """A scope check refusing a query string that is not UTF-8: 422 naming the parameter."""
    problem = query_problem(scope)
    return None if problem is None else (422, "invalid_request", problem)


class HeadAsGet:
    """HEAD wherever GET is served (RFC 9110 §9.3.2): the GET's status and headers without its body.
    FastAPI's routes answered HEAD with 405 (an audit: ``curl -I`` and uptime probes saw
    ``/api/v1/health`` down)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict[str, Any]) -> None:
            await send({**message, "body": b""} if message["type"] == "http.response.body" else message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
