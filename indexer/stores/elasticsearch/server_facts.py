"""What an Elasticsearch cluster can do, read from the nodes API: the oldest node's version and the
modules every node has (features are used only where every node supports them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import StoreError

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class ServerFacts:
    """What the cluster can do: the oldest node's version and the modules every node has."""

    version: tuple[int, int, int]
    modules: frozenset[str]


def parse_version(number: Any) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string such as ``8.19.21`` or ``9.2.0-SNAPSHOT``."""
    match = _VERSION.match(str(number or ""))
    if not match:
        raise StoreError(f"cannot read the Elasticsearch version from {number!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def server_facts(response: Mapping[str, Any]) -> ServerFacts:
    """:class:`ServerFacts` from ``GET _nodes/plugins`` (see :func:`~.requests.SERVER_FACTS_FILTER`).

    The nodes API answers on every build, unlike the root endpoint (``GET /``), which a server
    without the ``rest-root`` module refuses. A feature is usable when every node supports it, so
    the version is the lowest and the modules (and plugins) are those all nodes share.
    """
    nodes = [node for node in (response.get("nodes") or {}).values() if isinstance(node, Mapping)]
    if not nodes:
        raise StoreError("cannot read the Elasticsearch version: the nodes API listed no node")
    versions = [parse_version(node.get("version")) for node in nodes]
    shared: set[str] | None = None
    for node in nodes:
        names = {
            str(item.get("name"))
            for key in ("modules", "plugins")
            for item in node.get(key) or []
            if isinstance(item, Mapping)
        }
        shared = names if shared is None else shared & names
    return ServerFacts(version=min(versions), modules=frozenset(shared or ()))
