"""``nerindex serve``: the HTTP API, the Search UI endpoints and the search page (the [web] extra)."""

from __future__ import annotations

import copy
import logging
import socket

import click

from ..api import NerIndex
from ..config import Settings
from ..errors import SettingError
from .options import CountRange, NumberRange, backend_options


@click.command("serve")
@backend_options("store")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all interfaces).")
@click.option("--port", default=8000, show_default=True, type=CountRange(0, 65535), help="TCP port to listen on.")
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Browser origin allowed to call the API (repeatable; '*' for any). Default: CORS off.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Another name clients reach the service by, allowed in the Host header (repeatable; '*' for any). "
    "Always allowed: the --host address, localhost, 127.0.0.1 and [::1].",
)
@click.option(
    "--threshold",
    default=None,
    type=NumberRange(-1.0, 1.0),
    help="Similarity threshold for requests that give none (Search UI never does). Default: the model's.",
)
@click.option("--timeout", default=10.0, show_default=True, type=NumberRange(0.1, 600), help="Time limit of one request, seconds.")
@click.option("--max-page-size", default=1000, show_default=True, type=CountRange(1, 100_000), help="Most hits one response may carry.")
@click.option("--workers", default=None, type=CountRange(1, 64), help="Search threads (default: one per core, 2 to 8; more helps an Elasticsearch backend).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="How much the server logs (uvicorn's access lines at info; the Elasticsearch client's line for each request at debug).",
)
def serve_command(
    settings: Settings,
    host: str,
    port: int,
    cors_origins: tuple[str, ...],
    allow_hosts: tuple[str, ...],
    threshold: float | None,
    timeout: float,
    max_page_size: int,
    workers: int | None,
    log_level: str,
) -> None:
    """Serve the search page at / and the JSON API at /api/v1 (OpenAPI at /openapi.json).

    Elastic Search UI apps can point their ApiProxyConnector at /api.
    """
    import uvicorn
    import uvicorn.config

    from ..web.app import Limits, create_app
    from ..web.edge import LOOPBACK_HOSTS

    check_listen(host, port)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if log_level != "debug":  # its INFO line for every Elasticsearch request (six a search) is debugging detail
        logging.getLogger("elastic_transport").setLevel(max(logging.WARNING, getattr(logging, log_level.upper())))
    index = NerIndex.open(settings=settings, create=False)
    app = create_app(
        index,
        cors_origins=cors_origins,
        limits=Limits(request_timeout_s=timeout, max_page_size=max_page_size),
        workers=workers,
        threshold=threshold,
        close_index=True,
        allowed_hosts=(*LOOPBACK_HOSTS, host, *allow_hosts),
    )
    where = f"http://{host}:{port}/" if port else f"http://{host} on a free port (uvicorn's line below names it)"
    click.echo(f"nerindex: serving {index.description} at {where}", err=True)
    # uvicorn's access log goes to stdout by default; here stdout is the CLI's, logs go to stderr
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    # Ctrl-C lets requests under way finish (each is bounded by --timeout), then closes what is left:
    # a client that stalls mid-request held the service open until it went away (a web audit).
    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config,
                timeout_graceful_shutdown=timeout + SHUTDOWN_GRACE_S)


SHUTDOWN_GRACE_S = 5.0  # past --timeout: for the answers of requests that finished at their time limit


def check_listen(host: str, port: int) -> None:
    """Refuse, as a wrong setting (exit 2), an address this process cannot listen on. Why: uvicorn
    exits 3 for it, the code of an unusable model, after the model and store are loaded."""
    if not port:  # 0: a free port, whatever is in use
        return
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except OSError as exc:
        # one line, exit 2, without click's usage banner: the options are well formed, the address is taken
        raise SettingError(f"cannot listen on {host}:{port} (--host, --port): {exc.strerror or exc}") from exc
