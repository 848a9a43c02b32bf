"""Import nerindex's Kibana saved objects (data view, saved KQL search, passages-per-label table, dashboard).

The objects ship in ``indexer/assets/kibana/nerindex.ndjson``; they are posted to Kibana's saved-objects
import API (``POST /api/saved_objects/_import``, multipart form with a ``file`` field and the
``kbn-xsrf`` header). The data view is retargeted to the alias in use, so a non-default
``--es-index`` still gets a working Discover and dashboard. Standard library HTTP only.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ...assets import kibana_objects
from ...config import DEFAULT_ES_INDEX
from ...errors import SettingError, StoreError
from .index_requests import check_index_name
from .urls import one_line, tls_context, url_problem, without_credentials

DATA_VIEW_ID = "nerindex-passages"
SPACE_ID = re.compile(r"[a-z0-9_-]+")  # what Kibana takes as a space id


def parse_ndjson(text: str) -> list[dict[str, Any]]:
    """Saved objects, one JSON object per non-empty line."""
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise StoreError(f"saved objects line {number} is not JSON: {exc}") from exc
    return objects


def retarget(objects: list[dict[str, Any]], alias: str) -> list[dict[str, Any]]:
    """The objects with nerindex's data view pointing at ``alias``.

    For another alias than the default, every object's id (and every reference to one) also ends
    in ``-<alias>`` and its title says the alias: two aliases imported into one Kibana space keep
    two sets of objects (with fixed ids the second import re-pointed the first one's data view).
    """
    suffix = "" if alias == DEFAULT_ES_INDEX else f"-{alias}"
    ids = {obj.get("id") for obj in objects}
    result = []
    for obj in objects:
        attributes = dict(obj.get("attributes", {}))
        if obj.get("type") == "index-pattern" and obj.get("id") == DATA_VIEW_ID:
            attributes["title"] = alias
            if suffix and "name" in attributes:
                attributes["name"] = f"{attributes['name']} ({alias})"
        elif suffix and "title" in attributes:
            attributes["title"] = f"{attributes['title']} ({alias})"
        references = [{**ref, "id": ref["id"] + suffix} if ref.get("id") in ids else ref for ref in obj.get("references", ())]
        obj = {**obj, "id": obj.get("id", "") + suffix, "attributes": attributes}
        if references:
            obj["references"] = references
        result.append(obj)
    return result


def to_ndjson(objects: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(o, separators=(",", ":"), sort_keys=True) + "\n" for o in objects).encode()


def multipart_file(content: bytes, *, filename: str = "nerindex.ndjson", boundary: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request with one ``file`` field."""
    boundary = boundary or f"nerindex-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def import_url(kibana_url: str, *, space: str | None = None, overwrite: bool = True) -> str:
    """The import endpoint, in a Kibana space when one is named."""
    problem = url_problem(kibana_url)
    if problem is None and urllib.parse.urlsplit(kibana_url).username is not None:
        # urllib cannot log in with them: "Name or service not known", the password in the message (an audit)
        problem = "carries a user name: give the user and password as --user/--password (or NERINDEX_ES_USER/_PASSWORD), or an API key"
    if problem is not None:
        raise SettingError(f"Kibana URL {without_credentials(kibana_url)!r} {problem} (--kibana-url, NERINDEX_KIBANA_URL)")
    if space is not None and not SPACE_ID.fullmatch(space):  # "team a" raised, "a?b#c" posted to /s/a?b
        raise SettingError(f"--space {space!r} is not a Kibana space id (lowercase letters, digits, '_' and '-'; "
                         "the id, not the space's name)")
    base = kibana_url.rstrip("/")
    if space and space != "default":
        base += f"/s/{space}"
    return base + "/api/saved_objects/_import" + ("?overwrite=true" if overwrite else "")


def auth_header(*, api_key: str | None = None, basic_auth: tuple[str, str] | None = None) -> dict[str, str]:
    """``Authorization`` for an API key (encoded ``id:key``) or basic auth; empty for neither."""
    if api_key:
        return {"Authorization": f"ApiKey {api_key}"}
    if basic_auth:
        token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}


@dataclass
class ImportReport:
    """What Kibana said: how many objects were imported, and the errors of the others."""

    success: bool
    success_count: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "successCount": self.success_count,
            "errors": self.errors,
            "objects": self.objects,
        }


def parse_import_response(body: Mapping[str, Any]) -> ImportReport:
    """The import API's answer as an :class:`ImportReport`."""
    objects = [
        {"type": str(r.get("type")), "id": str(r.get("destinationId") or r.get("id")),
         "title": str((r.get("meta") or {}).get("title", ""))}
        for r in body.get("successResults") or []
    ]
    return ImportReport(
        success=bool(body.get("success")),
        success_count=int(body.get("successCount") or 0),
        errors=list(body.get("errors") or []),
        objects=objects,
    )


def describe_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:5]:
        kind = (error.get("error") or {}).get("type", "error")
        parts.append(f"{error.get('type')} {error.get('id')}: {kind}")
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return "; ".join(parts) + more


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, not followed: urllib sends the Authorization header on to whatever
    host a redirect names (https to http too) and turns the POST into a GET, which "imported 0
    saved objects" with exit 0 (a security audit)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises the 3xx as an HTTPError


def _open_without_redirects(request: urllib.request.Request, *, timeout: float, context: Any = None) -> Any:
    """``urllib.request.urlopen`` that does not follow redirects (:class:`_NoRedirect`)."""
    handlers: list[Any] = [_NoRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)


def _refusal(exc: urllib.error.HTTPError, shown: str) -> str:
    """The line for an import Kibana answered with an HTTP error or a redirect."""
    if 300 <= exc.code < 400:
        where = without_credentials(exc.headers.get("Location", "") or "") or "another URL"
        return (f"Kibana at {shown} answered the import with a redirect (HTTP {exc.code}) to {where}: nerindex "
                "does not follow one, so that credentials go only to the URL given; pass the URL it names as --kibana-url")
    detail = exc.read().decode("utf-8", "replace")[:500]
    try:
        detail = json.loads(detail).get("message", detail)
    except (ValueError, AttributeError):
        detail = one_line(detail)
    hint = " (check the Kibana user/password or API key)" if exc.code in (401, 403) else ""
    return f"Kibana at {shown} refused the import: HTTP {exc.code}: {detail}{hint}"


def _json_object(body: bytes, kibana_url: str) -> dict[str, Any]:
    """The import API's JSON answer; anything else (a proxy's or a login page's HTML, answered 200)
    is one line naming Kibana (an audit: a JSONDecodeError traceback)."""
    try:
        answer = json.loads(body.decode("utf-8") or "{}")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise StoreError(f"the answer from {kibana_url} is not Kibana's import API's (not a JSON object: "
                         f"{body[:80].decode('utf-8', 'replace')!r}); is --kibana-url Kibana's URL?")
    return answer


def import_saved_objects(
    kibana_url: str,
    *,
    alias: str = DEFAULT_ES_INDEX,
    path: str | Path | None = None,
    api_key: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    ca_certs: str | None = None,
    verify_certs: bool = True,
    space: str | None = None,
    overwrite: bool = True,
    timeout: float = 60.0,
    urlopen: Callable[..., Any] | None = None,
) -> ImportReport:
    """Post the saved objects to Kibana; a StoreError when Kibana refuses any of them."""
    check_index_name(alias)  # a data view of "My Corpus" matched no index, imported without a word (an audit)
    source = Path(path) if path else kibana_objects()
    objects = retarget(parse_ndjson(source.read_text(encoding="utf-8")), alias)
    body, content_type = multipart_file(to_ndjson(objects))
    url = import_url(kibana_url, space=space, overwrite=overwrite)
    headers = {"kbn-xsrf": "true", "Content-Type": content_type, "Accept": "application/json"}
    headers.update(auth_header(api_key=api_key, basic_auth=basic_auth))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urlopen or _open_without_redirects
    kwargs: dict[str, Any] = {"timeout": timeout}
    if url.startswith("https:"):
        kwargs["context"] = tls_context(ca_certs, verify_certs)
    shown = without_credentials(kibana_url)
    try:
        with opener(request, **kwargs) as response:
            answer = _json_object(response.read(), shown)
    except urllib.error.HTTPError as exc:
        raise StoreError(_refusal(exc, shown)) from exc
    except urllib.error.URLError as exc:
        raise StoreError(f"cannot reach Kibana at {shown}: {exc.reason}") from exc
    except OSError as exc:  # a timeout or a dropped connection said only "timed out" (an audit)
        raise StoreError(f"Kibana at {shown} did not answer the import: {exc}") from exc
    report = parse_import_response(answer)
    if not report.success or report.errors:
        raise StoreError(
            f"Kibana imported {report.success_count} of {len(objects)} saved objects: "
            f"{describe_errors(report.errors)}"
        )
    return report
