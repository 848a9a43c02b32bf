"""Checking and showing an Elasticsearch or Kibana URL: the standard library only, so that
``nerindex kibana import`` (plain HTTP) runs without the ``[elasticsearch]`` extra."""

from __future__ import annotations

import ssl
import urllib.parse

from ...config import without_credentials
from ...errors import SettingError


def url_problem(url: str, *, port_required: bool = False) -> str | None:
    """Why ``url`` is no ``http://`` or ``https://`` URL with a host and a numeric port (given, for
    an ``http://`` one, where ``port_required``: the Elasticsearch client's rule), or None: the
    client and Kibana's import raised ValueErrors on such URLs (tracebacks at the command line:
    ``:92OO``, ``:99999``, a space in the host; an audit)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        shown = without_credentials(url)
        return f"needs its scheme: http://{shown} or https://{shown}"
    if scheme.lower() not in ("http", "https"):
        return f"is not http:// or https:// ({scheme}://)"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "holds a space or a control character"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:  # its text may hold part of a password with '#', '/' or '?' in it (a review)
        return ("cannot be read: its port is not a number from 0 to 65535, or a password holds a "
                "character to %-encode ('#', '/', '?', '@')")
    if not parts.hostname:
        return "has no host"
    if port is None and port_required and scheme.lower() == "http":  # the client: "URL must include ... 'port'"
        return f"needs its port: {without_credentials(url).rstrip('/')}:9200, say"
    return None


def tls_context(ca_certs: str | None, verify_certs: bool = True) -> ssl.SSLContext:
    """The TLS context of a connection, its CA certificates read now: a file missing or not PEM
    was an error that named neither the file nor the option, or was blamed on the connection (an
    audit), and it is a SettingError naming both."""
    try:  # not read where certificates are not checked (--insecure): a stale path there stays harmless
        context = ssl.create_default_context(cafile=ca_certs if verify_certs else None)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingError(f"the CA certificates {ca_certs!r} (--es-ca-certs, NERINDEX_ES_CA_CERTS) "
                           f"cannot be read: {reason}") from exc
    if not verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def one_line(text: str, limit: int = 160) -> str:
    """``text`` for a one-line message: whitespace runs as one space, cut at ``limit`` characters
    (a web server's HTML error page took fifteen lines of stderr: an audit)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
