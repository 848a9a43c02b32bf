"""The options that say which model and store a command uses, declared once for every command.

:func:`backend_options` adds them and hands the command one resolved
:class:`~indexer.config.Settings` (``settings=``): each option given overrides its ``NERINDEX_*``
variable (:func:`indexer.config.resolve`), so ``--es-user`` means the same to ``nerindex search``,
``nerindex es status`` and ``nerindex kibana import``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import click

from ..config import MAX_COUNT, from_env, resolve, seconds_setting, store_settings
from ..errors import StoreError

DEVICES = ("auto", "cpu", "cuda")


def _no_underscore(kind: click.ParamType, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> None:
    """Python reads "1_0" as 10, so a typo changed a setting without a word; the HTTP API refuses
    it (not a number as JSON writes one), and so does the CLI (an audit)."""
    if isinstance(value, str) and "_" in value:
        kind.fail(f"{value!r} is not a number (no underscores)", param, ctx)


class NumberRange(click.FloatRange):
    """click's FloatRange, refusing NaN, which passes every range check (an audit: ``--threshold
    nan`` exited 6 from deep inside the search, where ``--threshold 2`` is a wrong option, 2), and
    digits grouped with underscores."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _no_underscore(self, value, param, ctx)
        number = super().convert(value, param, ctx)
        if number is not None and math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


class CountRange(click.IntRange):
    """click's IntRange, refusing digits grouped with underscores ("1_0" read as 10)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _no_underscore(self, value, param, ctx)
        return super().convert(value, param, ctx)

# Settings field (the keyword click passes) -> its option. The credentials keep both spellings
# in use: --es-* (index, search, es ...) and the short one of ``nerindex kibana import``.
OPTIONS: dict[str, Callable[[Any], Any]] = {
    "store": click.option("--store", default=None, help="Embedded store folder (default ./nerindex-data, or NERINDEX_STORE)."),
    "model": click.option("--model", default=None, help="Model folder (default: the shipped model, or NERINDEX_MODEL)."),
    "device": click.option("--device", type=click.Choice(DEVICES), default=None,
                           help="Execution provider: CUDA when available (auto, the default, or NERINDEX_DEVICE), or force one."),
    "threads": click.option("--threads", type=CountRange(1, MAX_COUNT), default=None,
                            help="CPU cores to encode on (default: all, or NERINDEX_THREADS); on the CPU that many windows run at once."),
    "kibana_url": click.option("--kibana-url", default=None, help="Kibana URL (default: NERINDEX_KIBANA_URL)."),
    "es_url": click.option("--es-url", default=None,
                           help="Elasticsearch URL (or NERINDEX_ES_URL). The es commands need one; "
                                "the others use the embedded store (--store) without it, and refuse both."),
    "es_index": click.option("--es-index", default=None,
                             help="Elasticsearch index/alias name (or NERINDEX_ES_INDEX; default nerindex)."),
    "es_api_key": click.option("--es-api-key", "--api-key", "es_api_key", default=None,
                               help="Elasticsearch API key, base64 'id:key' (or NERINDEX_ES_API_KEY)."),
    "es_user": click.option("--es-user", "--user", "es_user", default=None,
                            help="Elasticsearch basic-auth user (or NERINDEX_ES_USER)."),
    "es_password": click.option("--es-password", "--password", "es_password", default=None,
                                help="Elasticsearch basic-auth password (or NERINDEX_ES_PASSWORD)."),
    "es_ca_certs": click.option("--es-ca-certs", "--ca-certs", "es_ca_certs", default=None,
                                type=click.Path(dir_okay=False), help="CA certificate file (or NERINDEX_ES_CA_CERTS)."),
    "es_timeout": click.option("--es-timeout", type=float, default=None, callback=lambda ctx, param, value: _seconds(value, param),
                               metavar="SECONDS", help="Seconds to wait for one request to Elasticsearch or Kibana "
                               "(or NERINDEX_ES_TIMEOUT; default 60); an Elasticsearch request that times out is sent up to 3 more times."),
    "insecure": click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (testing only)."),
}


def _seconds(value: float | None, param: click.Parameter) -> float | None:
    """A time option checked by the settings' rule (``config.seconds_setting``), a usage error."""
    try:
        return seconds_setting("the value", value)
    except StoreError as exc:
        raise click.BadParameter(str(exc), param=param) from exc


ES_ACCESS = ("es_index", "es_api_key", "es_user", "es_password", "es_ca_certs", "es_timeout", "insecure")

# Which options a kind of command takes, in help order.
OPTION_SETS: dict[str, tuple[str, ...]] = {
    "store": ("store", "model", "device", "threads", "es_url", *ES_ACCESS),  # index, search, info, serve
    "model": ("model", "device", "threads"),  # embed: no store
    "elasticsearch": ("es_url", *ES_ACCESS),  # nerindex es ...
    "kibana": ("kibana_url", *ES_ACCESS),  # nerindex kibana import: Kibana, with the cluster's credentials
}


def backend_options(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of ``kind`` (a key of :data:`OPTION_SETS`); the command gets ``settings``."""
    names = OPTION_SETS[kind]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            insecure = given.pop("insecure", False)
            given["es_verify_certs"] = False if insecure else None
            settings = store_settings(from_env(), **given) if kind == "store" else resolve(**given)
            return func(*args, settings=settings, **kwargs)

        for name in reversed(names):
            wrapper = OPTIONS[name](wrapper)
        return wrapper

    return decorate


# index, es reindex and eval encode passages: one option, one help
batch_size_option = click.option(
    "--batch-size", type=CountRange(1, MAX_COUNT), default=32, show_default=True,
    help="Windows per graph call on CUDA. On the CPU each window runs alone: its int8 graph scales "
         "activations per call, so batching would make a passage's spans depend on its neighbours.",
)  # fmt: skip


def refuse_unused(mode: str, used: frozenset[str]) -> None:
    """A usage error naming the options given on the command line that ``mode`` (a command's way of
    running, such as ``eval --from-json``) does not read: they were dropped without a word (an audit)."""
    ctx = click.get_current_context()
    given = [_as_typed(p, ctx.params.get(p.name)) for p in ctx.command.params
             if isinstance(p, click.Option) and p.name not in used
             and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]  # fmt: skip
    if given:
        raise click.UsageError(f"{mode} does not use {', '.join(given)}: drop {'it' if len(given) == 1 else 'them'}")


def _as_typed(option: click.Option, value: object) -> str:
    """The option's name as given: ``--no-familiarity`` for an on/off flag turned off (a review:
    the message named --familiarity, which was never typed)."""
    return option.secondary_opts[0] if option.secondary_opts and value is False else option.opts[0]
