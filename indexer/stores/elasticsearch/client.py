"""Building the elasticsearch-py client, and turning its exceptions into nerindex errors.

The 8.x client is used on purpose: it talks to 8.x and 9.x servers (a 9.x client is refused by
8.x servers). Building a client does no network I/O; the first request does.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import elastic_transport
import elasticsearch
from elasticsearch import Elasticsearch

from ...errors import NerindexError, SearchError, SettingError, StoreError
from .responses import api_error_reason
from .urls import one_line, tls_context, url_problem, without_credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionOptions:
    """Where the cluster is and how to authenticate (API key preferred over basic auth)."""

    url: str
    api_key: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: float = 60.0

    def hosts(self) -> list[str]:
        hosts = [part.strip() for part in self.url.split(",") if part.strip()]
        if not hosts:
            raise SettingError("no Elasticsearch URL given (--es-url or NERINDEX_ES_URL)")
        for host in hosts:  # the client raised a ValueError, a traceback at the command line
            problem = url_problem(host, port_required=True)
            if problem is not None:
                raise SettingError(f"Elasticsearch URL {without_credentials(host)!r} {problem} (--es-url, NERINDEX_ES_URL)")
        return hosts

    def redacted_url(self) -> str:
        """The URL for messages, without any user:password part (a URL that is no URL refused)."""
        return ",".join(without_credentials(host) for host in self.hosts())


MAX_RETRIES = 3  # a request that times out is sent again this many times


def make_client(options: ConnectionOptions) -> Elasticsearch:
    """An Elasticsearch client for these options (no request is made here)."""
    kwargs: dict = {
        "request_timeout": options.request_timeout,
        "retry_on_timeout": True,
        "max_retries": MAX_RETRIES,
    }
    if options.api_key:
        kwargs["api_key"] = options.api_key
        if options.basic_auth:
            log.info("both an API key and a user are configured; using the API key")
    elif options.basic_auth:
        kwargs["basic_auth"] = tuple(options.basic_auth)
    if options.ca_certs and all(h.lower().startswith("https:") for h in options.hosts()):
        tls_context(options.ca_certs, options.verify_certs)  # a file missing or not PEM: named now, not at the first request
        kwargs["ca_certs"] = options.ca_certs
    elif options.ca_certs:  # the client raised "TLS options require scheme to be 'https'" (an audit)
        log.warning("the CA certificates (--es-ca-certs, NERINDEX_ES_CA_CERTS) are not used: %s is not https",
                    options.redacted_url())
    if not options.verify_certs:
        kwargs["verify_certs"] = False
        kwargs["ssl_show_warn"] = False
    return Elasticsearch(options.hosts(), **kwargs)


@contextmanager
def translated_errors(
    what: str, *, url: str = "Elasticsearch", search: bool = False
) -> Iterator[None]:
    """Re-raise client errors as one-line nerindex errors that say what was being done.

    A bad request during a search is the user's query (SearchError); anything else is the
    store's (StoreError). ``raise ... from`` keeps the client's exception as the cause.
    """
    try:
        yield
    except NerindexError:
        raise
    except elasticsearch.AuthenticationException as exc:
        raise StoreError(
            f"{url} refused the credentials while trying to {what}: set NERINDEX_ES_API_KEY "
            f"(or NERINDEX_ES_USER and NERINDEX_ES_PASSWORD)"
        ) from exc
    except elasticsearch.AuthorizationException as exc:
        reason = api_error_reason(exc.body, str(exc.message))
        raise StoreError(f"not allowed to {what} on {url}: {reason}") from exc
    except elasticsearch.BadRequestError as exc:
        reason = api_error_reason(exc.body, str(exc.message))
        error_class = SearchError if search else StoreError
        raise error_class(f"Elasticsearch rejected the request to {what}: {reason}") from exc
    except elasticsearch.ApiError as exc:
        if isinstance(exc.body, Mapping):
            reason = api_error_reason(exc.body, str(exc.message))
        else:  # no Elasticsearch error: another server answered (an HTML page)
            reason = f"{one_line(str(exc.body or exc.message))} (not Elasticsearch's answer: is {url} the cluster?)"
        raise StoreError(f"failed to {what} (HTTP {exc.meta.status}): {reason}") from exc
    except elastic_transport.ConnectionTimeout as exc:  # the message named one timeout of the four waited (an audit)
        raise StoreError(f"{url} did not answer the request to {what}: {MAX_RETRIES + 1} tries timed out "
                         f"({exc.message}); is it overloaded, paused or unreachable?") from exc
    except elastic_transport.ConnectionError as exc:
        raise StoreError(f"cannot reach {url} to {what}: {exc.message}") from exc
    except elastic_transport.TransportError as exc:
        raise StoreError(f"failed to {what} on {url}: {exc}") from exc
