"""Settings read from the environment, in this one place, then passed down explicitly.

| variable | meaning |
|---|---|
| NERINDEX_MODEL | model folder (default: the one shipped in the package, ``indexer/assets/default_model``) |
| NERINDEX_STORE | embedded store folder (default ``./nerindex-data``) |
| NERINDEX_DEVICE | ``auto`` (CUDA when onnxruntime offers it), ``cpu`` or ``cuda`` |
| NERINDEX_ES_URL | Elasticsearch URL; when set, the Elasticsearch backend is used |
| NERINDEX_ES_INDEX | index (alias) name, default ``nerindex`` |
| NERINDEX_ES_API_KEY | API key (base64 ``id:key`` form) |
| NERINDEX_ES_USER / NERINDEX_ES_PASSWORD | basic auth |
| NERINDEX_ES_CA_CERTS | CA certificate file for TLS |
| NERINDEX_KIBANA_URL | Kibana URL for ``nerindex kibana import`` |
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

DEFAULT_STORE = "./nerindex-data"
DEFAULT_ES_INDEX = "nerindex"


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    store: str = DEFAULT_STORE
    device: str = "auto"
    es_url: str | None = None
    es_index: str = DEFAULT_ES_INDEX
    es_api_key: str | None = None
    es_user: str | None = None
    es_password: str | None = None
    es_ca_certs: str | None = None
    kibana_url: str | None = None


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``NERINDEX_*`` variables (empty values count as unset)."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    return Settings(
        model=get("NERINDEX_MODEL"),
        store=get("NERINDEX_STORE") or DEFAULT_STORE,
        device=get("NERINDEX_DEVICE") or "auto",
        es_url=get("NERINDEX_ES_URL"),
        es_index=get("NERINDEX_ES_INDEX") or DEFAULT_ES_INDEX,
        es_api_key=get("NERINDEX_ES_API_KEY"),
        es_user=get("NERINDEX_ES_USER"),
        es_password=get("NERINDEX_ES_PASSWORD"),
        es_ca_certs=get("NERINDEX_ES_CA_CERTS"),
        kibana_url=get("NERINDEX_KIBANA_URL"),
    )


def with_overrides(settings: Settings, **overrides: object) -> Settings:
    """``settings`` with the values given explicitly (options, arguments; None = not given).

    Named beats environment: an explicit embedded store without an explicit Elasticsearch URL
    selects the embedded store even when ``NERINDEX_ES_URL`` is set.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    if "store" in given and "es_url" not in given:
        given["es_url"] = None
    return dataclasses.replace(settings, **given)
