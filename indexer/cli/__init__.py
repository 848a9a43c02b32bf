"""The `nerindex` command line: index, search, embed, and the commands of the optional parts.

The CLI owns stdout (``--json`` output stays machine-clean); progress and messages go to stderr.
A :class:`~indexer.errors.NerindexError` becomes one line on stderr and its exit code; so does an
``OSError`` (a full disk, a folder it may not write: exit 1; ``NERINDEX_TRACEBACK=1`` shows its
traceback) and a missing optional package (its extra named: exit 1, :func:`missing_extra`), and a
reader of stdout that went away ends the command with 141.
Each command lives in a module of this package, imported only when invoked, so ``nerindex --help``
stays fast and needs no extras: :mod:`.core` (search, embed, info), :mod:`.indexing` (index, delete), :mod:`.elasticsearch`
(es, kibana), :mod:`.training` (train, export), :mod:`.evaluation` (eval), :mod:`.serve`.
:mod:`.options` declares the model and store options they share.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any, Sequence

import click

from ..errors import NerindexError
from ..text import unicode_problem
from .output import json_out, replace_unencodable

# name -> "module:attribute" of a click command defined elsewhere, imported on use.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "index": ("indexer.cli.indexing", "index_command"),
    "search": ("indexer.cli.core", "search_command"),
    "delete": ("indexer.cli.indexing", "delete_command"),
    "embed": ("indexer.cli.core", "embed_command"),
    "info": ("indexer.cli.core", "info_command"),
    "train": ("indexer.cli.training", "train_command"),
    "export": ("indexer.cli.training", "export_command"),
    "silver": ("indexer.cli.silver", "silver_command"),
    "eval": ("indexer.cli.evaluation", "eval_command"),
    "es": ("indexer.cli.elasticsearch", "es_group"),
    "kibana": ("indexer.cli.elasticsearch", "kibana_group"),
    "serve": ("indexer.cli.serve", "serve_command"),
}

SHORT_HELP = {
    "index": "Read passages, tag and embed their spans, and store them.",
    "search": "Find passages that mention an entity of a type given in plain words.",
    "delete": "Delete passages from the store by id.",
    "embed": "Print the vector of a type phrase (for kNN in Kibana Dev Tools or other clients).",
    "info": "Show the model and the store.",
    "train": "Train the span adapter and entity head (backbone frozen) on labelled NER data (needs the [train] extra).",
    "export": "Export a trained model to an ONNX model folder (needs the [train] extra).",
    "silver": "Annotate training sentences with WordNet spans and types (silver data).",
    "eval": "Measure retrieval quality against baselines on labelled data.",
    "es": "Elasticsearch index management (reindex with alias swap).",
    "kibana": "Import the Kibana saved objects.",
    "serve": "Run the HTTP API and search page (needs the [web] extra).",
}


# 128 + SIGPIPE: what a shell reports for a command whose reader went away (`nerindex search | head -1`)
CLOSED_PIPE_EXIT = 141

# The optional packages a command may import, and the extra that installs each (pyproject.toml).
EXTRA_OF_MODULE = {
    "onnxruntime": "cpu", "onnx": "cpu", "faiss": "cpu", "elasticsearch": "elasticsearch", "pyarrow": "parquet",
    "fastapi": "web", "uvicorn": "web", "starlette": "web", "torch": "train", "transformers": "train",
    "safetensors": "train", "bm25s": "eval", "Stemmer": "eval", "matplotlib": "eval",
}  # fmt: skip


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line for an optional package that is not installed, naming the extra that installs it
    (a 20-30 line traceback before: ``nerindex serve`` without [web], ``--es-url`` without
    [elasticsearch], anything without [cpu]); None for any other missing module (a bug: raised)."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    install = "'nerindex[cpu]' (or 'nerindex[gpu]' on a machine with CUDA)" if extra == "cpu" else f"'nerindex[{extra}]'"
    return f"this needs the {module} package, which is not installed: pip install {install}"


class _ClosedPipe(Exception):
    """The reader of standard output went away; raised past click, which exits 1 for it."""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _ClosedPipe() from exc

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """As click's, with ``--help`` and ``--version`` (printed while the arguments are parsed)
        ending with 141 too when the reader goes away (a review: they exited 1)."""
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as exc:
            raise _ClosedPipe() from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or "?"
            if missing.startswith("indexer"):
                raise
            raise click.ClickException(
                f"'nerindex {name}' needs the Python package {missing!r}; "
                f"install the matching extra (see README)"
            ) from exc
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in LAZY_COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nerindex")
def cli() -> None:
    """nerindex: zero-shot typed-entity retrieval.

    Index a corpus once, then ask for any entity type in plain words ("dinosaur",
    "political party") and get every passage that mentions one, with the mentions marked.
    """


def argument_problem(args: Sequence[str]) -> str | None:
    """The first argument that is not UTF-8, as one line; None when all are.

    Python keeps such an argument's bytes as lone surrogates, which fail deep inside (the tokenizer,
    the store) with a traceback; saying which argument it is at the door is all a person needs.
    """
    for position, arg in enumerate(args, start=1):
        if unicode_problem(arg):
            try:
                shown = repr(os.fsencode(arg))  # the bytes the shell passed
            except UnicodeEncodeError:  # a surrogate no byte decodes to: passed from Python
                shown = ascii(arg)
            return f"argument {position} is not valid UTF-8: {shown} (nerindex reads arguments as UTF-8 text)"
    return None


def json_wanted(args: Sequence[str]) -> bool:
    """Whether the command line asks for ``--json`` output, parsed as click parses it: a value that
    reads "--json" (``--where --json``) or a command without the option (``serve --json``) does not
    count, as it did with a plain look for the word. Only errors come here, so the cost of a second
    parse does not matter; where that parse fails, the plain look decides."""
    if "--json" not in args:
        return False
    try:
        ctx = cli.make_context("nerindex", list(args), resilient_parsing=True)
        while isinstance(ctx.command, click.Group):
            with warnings.catch_warnings():  # protected_args: deprecated in click 8.2, gone in 9 (args has all)
                warnings.simplefilter("ignore", DeprecationWarning)
                rest = [*getattr(ctx, "protected_args", []), *ctx.args]
            name, command, rest = ctx.command.resolve_command(ctx, rest) if rest else (None, None, [])
            if command is None:  # no such command: it cannot say it takes no --json (a CLI audit)
                return True
            ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=True)
        if "as_json" in ctx.params and not ctx.params["as_json"]:  # click stops at an unknown option:
            # parse again without the options the command does not know (an audit: "--bogus --json")
            known = {o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts)}
            kept = [a for a in rest if not _unknown_option(a, known)]
            ctx = ctx.command.make_context(ctx.info_name, kept, parent=ctx.parent, resilient_parsing=True)
        return bool(ctx.params.get("as_json"))
    except Exception:  # noqa: BLE001 (any parse failure: a missing extra, a bad command name)
        return True


def _unknown_option(arg: str, known: set[str]) -> bool:
    """Whether ``arg`` is an option (``--bogus``, ``-z``, ``--x=1``) the command does not take;
    "-0.5" is a value, not an option."""
    return arg[:1] == "-" and arg[1:2] not in ("", ".", *"0123456789") and arg.split("=")[0] not in known


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn nerindex errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    replace_unencodable()
    problem = argument_problem(args)
    if problem:
        click.echo(f"error: {problem}", err=True)
        if json_wanted(args):
            click.echo(json_error(click.UsageError(problem)))
        sys.exit(2)
    try:
        cli.main(args=argv, prog_name="nerindex", standalone_mode=False)
    except NerindexError as exc:
        click.echo(f"error: {exc}", err=True)
        if json_wanted(args):
            click.echo(json_error(exc))  # a script reads the failure as it reads the answer (an audit)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        if json_wanted(args):  # a wrong option is exit 2 too, which the README says --json reports (an audit)
            click.echo(json_error(exc))
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None or tracebacks_wanted():
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
    except OSError as exc:  # the machine's, not nerindex's: a full disk, a folder it may not write
        if tracebacks_wanted():  # a bug that raised one shows where (a review)
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except _ClosedPipe:
        # quietly, as `yes | head -1` ends; what is still buffered for stdout goes nowhere (Python
        # would report a second BrokenPipeError when it flushes at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(CLOSED_PIPE_EXIT)


def json_error(exc: NerindexError | click.ClickException) -> str:
    """The error as one JSON object for ``--json`` runs (on stdout, besides the line on stderr):
    ``{"error": {"type", "message", "exit_code", "path"?, "line"?, "unit"?}}``: the path and line
    where the error names them (bad input), ``unit`` "row" where the line is a Parquet row; click's
    usage errors (a wrong option, exit 2) by their message."""
    return json_out({"error": error_detail(exc)})


def error_detail(exc: NerindexError | click.ClickException) -> dict[str, Any]:
    """The inside of :func:`json_error`'s object (``nerindex info`` puts it beside what it shows)."""
    message = exc.format_message() if isinstance(exc, click.ClickException) else getattr(exc, "reason", None) or str(exc)
    detail: dict[str, Any] = {"type": type(exc).__name__, "message": message, "exit_code": exc.exit_code}
    for name in ("path", "line"):
        if getattr(exc, name, None) is not None:
            detail[name] = getattr(exc, name)
    if "line" in detail and getattr(exc, "unit", "line") != "line":
        detail["unit"] = exc.unit
    return detail


def tracebacks_wanted() -> bool:
    """``NERINDEX_TRACEBACK`` asks for tracebacks: set, and not 0, false, no or off (an audit: 0 turned them on)."""
    return os.environ.get("NERINDEX_TRACEBACK", "").strip().lower() not in ("", "0", "false", "no", "off")
