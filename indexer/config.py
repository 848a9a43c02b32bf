"""Settings: read from the environment and command-line options in this one place, passed down explicitly.

Every caller (CLI options, :meth:`indexer.api.NerIndex.open`, the web service) resolves them with
:func:`resolve`: a ``NERINDEX_*`` variable, overridden by an explicit value. The stores are opened
from the result by :mod:`indexer.stores.factory`.

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
| NERINDEX_ES_TIMEOUT | seconds to wait for one Elasticsearch or Kibana request, default 60 (an Elasticsearch request that times out is sent up to 3 more times) |
| NERINDEX_KIBANA_URL | Kibana URL for ``nerindex kibana import`` |
| NERINDEX_THREADS | CPU cores the encoder's window workers use (default: all) |
| NERINDEX_CACHE | folder for files nerindex can make again (cut graphs, WordNet gloss vectors): default ``$XDG_CACHE_HOME/nerindex``, else ``~/.cache/nerindex``; ``off`` keeps none (``./off`` names a folder); one another user owns is not used |

``--insecure`` (no variable: testing only) turns TLS certificate checks off. Training reads one more,
``NERINDEX_WORDNET`` (or WordNet's own ``WNSEARCHDIR``): where the WordNet files for silver data are
(:mod:`indexer.training.wordnet`), a training input, not a runtime setting.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import SettingError

DEFAULT_STORE = "./nerindex-data"
DEFAULT_ES_INDEX = "nerindex"


@dataclass(frozen=True)
class Settings:
    """Which model, which store and how to reach it; the field names are the CLI option names."""

    model: str | None = None
    store: str = DEFAULT_STORE
    device: str = "auto"
    threads: int | None = None  # CPU cores to encode on (None: all of them)
    es_url: str | None = None
    es_index: str = DEFAULT_ES_INDEX
    es_api_key: str | None = None
    es_user: str | None = None
    es_password: str | None = None
    es_ca_certs: str | None = None
    es_verify_certs: bool = True
    es_timeout: float | None = None  # seconds a request waits (None: the client's 60)
    kibana_url: str | None = None

    def __post_init__(self) -> None:  # from every caller: an option, the environment, NerIndex.open
        if self.es_timeout is not None:
            object.__setattr__(self, "es_timeout", seconds_setting("es_timeout", self.es_timeout))
        if self.threads is not None:
            object.__setattr__(self, "threads", count_setting("threads", self.threads))

    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) for Elasticsearch and Kibana, None without a user; half a pair is refused."""
        if not (self.es_user or self.es_password):
            return None
        if not (self.es_user and self.es_password):
            raise SettingError("basic auth needs both a user and a password (NERINDEX_ES_USER, NERINDEX_ES_PASSWORD)")
        return (self.es_user, self.es_password)

    def required_es_url(self) -> str:
        """The Elasticsearch URL, for the commands that have no embedded store to fall back on."""
        if not self.es_url:
            raise SettingError("no Elasticsearch URL: pass --es-url or set NERINDEX_ES_URL")
        return self.es_url

    def required_kibana_url(self) -> str:
        """The Kibana URL of ``nerindex kibana import``."""
        if not self.kibana_url:
            raise SettingError("no Kibana URL: pass --kibana-url or set NERINDEX_KIBANA_URL")
        return self.kibana_url

    def store_description(self) -> str:
        """Where the store these settings open is, for messages, ``info``, ``/api/v1/info`` and
        the search page: a password in the URL is left out (a security audit: it was shown to
        anyone who could load the page)."""
        if self.es_url:
            return f"{shown_urls(self.es_url)} index {self.es_index}"
        return str(self.store)


def without_credentials(url: str) -> str:
    """``url`` as a message may show it: without a ``user:password@`` part, its scheme kept."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url.rpartition("@")[2]


def shown_urls(urls: str) -> str:
    """A comma-separated list of URLs (``--es-url``) as a message may show it: each one
    :func:`without_credentials`, blanks left out."""
    return ",".join(without_credentials(url.strip()) for url in urls.split(",") if url.strip())


CACHE_OFF = "off"


def cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The folder for files nerindex can make again (the staged runner's cut graphs, the silver
    gloss vectors), or ``None`` with ``NERINDEX_CACHE=off`` or no home folder. Not a
    :class:`Settings` field: it changes how long a command takes to start; the answers only where
    ``onnx`` is missing (with cut graphs in the cache the graph runs staged, without them whole:
    scores within int8 noise, docs/model-folder.md). A relative ``XDG_CACHE_HOME`` is ignored, as
    the XDG spec says."""
    env = os.environ if env is None else env
    value = env.get("NERINDEX_CACHE", "").strip()
    if value.lower() == CACHE_OFF:
        return None
    try:
        if value:
            return Path(value).expanduser().absolute()
        xdg = Path(env.get("XDG_CACHE_HOME", "").strip())
        if xdg.is_absolute():
            return xdg / "nerindex"
        home = Path(env["HOME"].strip()) if env.get("HOME", "").strip() else Path.home()
    except RuntimeError as exc:  # "~user" of no user, or no HOME and no passwd entry
        logging.getLogger(__name__).warning("no cache folder (%s): set NERINDEX_CACHE", exc)
        return None
    return home / ".cache" / "nerindex"


def cache_folder(name: str) -> Path | None:
    """``name`` in :func:`cache_dir` (``stages``, ``wordnet``), or None where there is no cache."""
    root = cache_dir()
    return None if root is None else root / name


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``NERINDEX_*`` variables (empty values count as unset)."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    def path(name: str) -> str | None:
        """A path: ``~`` expanded, as NERINDEX_CACHE's is, since no shell expands it in an .env file,
        compose's ``environment:`` or a unit file (an audit: NERINDEX_STORE=~/x made a folder "~")."""
        value = get(name)
        return None if value is None else os.path.expanduser(value)

    return Settings(
        model=path("NERINDEX_MODEL"),
        store=path("NERINDEX_STORE") or DEFAULT_STORE,
        device=get("NERINDEX_DEVICE") or "auto",
        threads=count_setting("NERINDEX_THREADS", get("NERINDEX_THREADS")),
        es_url=get("NERINDEX_ES_URL"),
        es_index=get("NERINDEX_ES_INDEX") or DEFAULT_ES_INDEX,
        es_api_key=get("NERINDEX_ES_API_KEY"),
        es_user=get("NERINDEX_ES_USER"),
        es_password=get("NERINDEX_ES_PASSWORD"),
        es_ca_certs=path("NERINDEX_ES_CA_CERTS"),
        es_timeout=seconds_setting("NERINDEX_ES_TIMEOUT", get("NERINDEX_ES_TIMEOUT")),
        kibana_url=get("NERINDEX_KIBANA_URL"),
    )


MAX_COUNT = 1024  # the largest --threads and --batch-size


def count_setting(name: str, value: object) -> int | None:
    """A count (of cores, of windows per call): a whole number from 1 to MAX_COUNT, or text
    spelling one, or None when unset: the one rule of the variable, the options and the Python
    arguments (``threads=-1`` was taken by ``NerIndex.open`` while NERINDEX_THREADS=-1 was refused)."""
    if value is None:
        return None
    count = int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value  # not "²"
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 1 <= count <= MAX_COUNT:
        raise SettingError(f"{name} must be a whole number from 1 to {MAX_COUNT}, not {value!r}")
    return int(count)


MAX_TIMEOUT_S = 86_400.0  # a day: past ~1e10 s the HTTP client fails with "timestamp out of range"


def seconds_setting(name: str, value: object) -> float | None:
    """A time in seconds (a number, or text spelling one, above 0 and at most a day), or None
    when unset: the one rule of the variable, the option and the Python argument."""
    if value is None:
        return None
    try:
        seconds = float(value) if isinstance(value, (str, numbers.Real)) and not isinstance(value, bool) else math.nan
    except (ValueError, OverflowError):
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_S:  # NaN too
        raise SettingError(f"{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}, not {value!r}")
    return seconds


def with_overrides(settings: Settings, **overrides: object) -> Settings:
    """``settings`` with the values given explicitly (options, arguments; None = not given).

    Named beats environment: an explicit embedded store without an explicit Elasticsearch URL
    selects the embedded store even when ``NERINDEX_ES_URL`` is set. Both named is refused: one of
    the two stores would be ignored without a word (the URL won, and ``--store`` was dropped).
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in PATH_SETTINGS:  # as NERINDEX_STORE's: NerIndex.open("~/x") made a folder "~" (an audit)
        if key in given:
            given[key] = _given_path(key, given[key])
    if "store" in given and "es_url" in given:
        raise SettingError("store (--store, an embedded store) and es_url (--es-url, Elasticsearch) name two stores: give one")
    if "store" in given:
        given["es_url"] = None
    return dataclasses.replace(settings, **given)


def store_settings(settings: Settings, **overrides: object) -> Settings:
    """:func:`with_overrides` for opening a store: an Elasticsearch setting given explicitly while
    the store is the embedded one (no URL, or ``store`` named) is refused, not dropped (the bench
    audit, round 29: ``nerindex index FILE --es-index ALIAS`` with no URL indexed into
    ./nerindex-data without a word). Kibana's commands read the same settings without a store."""
    resolved = with_overrides(settings, **overrides)
    unused = [key for key in ES_STORE_SETTINGS if overrides.get(key) is not None]
    if unused and not resolved.es_url:
        why = ("store (--store) names the embedded store, which would drop it" if overrides.get("store") is not None
               else "no Elasticsearch URL is given (es_url, --es-url or NERINDEX_ES_URL): the embedded store would be used")
        raise SettingError(f"{unused[0]} ({ES_STORE_SETTINGS[unused[0]]}) is for Elasticsearch, but {why}")
    return resolved


# What only an Elasticsearch store reads, and its command-line option
ES_STORE_SETTINGS = {"es_index": "--es-index", "es_api_key": "--es-api-key", "es_user": "--es-user",
                     "es_password": "--es-password", "es_ca_certs": "--es-ca-certs", "es_timeout": "--es-timeout",
                     "es_verify_certs": "--insecure"}


PATH_SETTINGS = ("model", "store", "es_ca_certs")


def _given_path(key: str, value: object) -> str:
    """A path given explicitly, ``~`` expanded; an empty one, or one that is no path, refused (an
    audit: ``NerIndex.open("")`` made a store in the working folder, ``open(5)`` a folder "5")."""
    if not isinstance(value, (str, os.PathLike)):
        raise SettingError(f"{key} is a path, not {type(value).__name__} ({value!r})")
    text = os.path.expanduser(os.fspath(value))
    if not isinstance(text, str) or not text.strip():
        raise SettingError(f"{key} is an empty path: give a folder (or leave it out for the default)")
    return text


def resolve(**overrides: object) -> Settings:
    """The settings in effect: ``NERINDEX_*`` variables, overridden by the values given explicitly
    (keyword = :class:`Settings` field; None = not given; see :func:`with_overrides`)."""
    return with_overrides(from_env(), **overrides)
