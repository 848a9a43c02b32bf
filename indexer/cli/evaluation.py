"""``nerindex eval``: measure retrieval quality against baselines on labelled data.

Prints one Markdown report (system and baselines side by side, seen/unseen/coarse types apart, with
the Familiarity of each group) on stdout, or the JSON with ``--json``; ``--out DIR`` also writes the
JSON, the Markdown and the PNG charts. Progress goes to stderr.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import click

from ..errors import InputError
from ..feedback import MAX_FEEDBACK_TOP, MAX_FEEDBACK_WEIGHT, Feedback
from ..stores.base import MAX_PASSAGE_WEIGHT
from ..evaluation.beir_folder import export_benchmark, import_benchmark, is_beir_folder
from ..evaluation.benchmark_io import benchmark_from_conll
from ..evaluation.methods import DEFAULT_METHODS, METHODS
from .options import CountRange, NumberRange, batch_size_option, refuse_unused
from .output import json_out

if TYPE_CHECKING:
    from ..evaluation.calibration import Thresholds
    from ..model_folder import ModelInfo

log = logging.getLogger(__name__)


def _load_benchmark(data: tuple[str, ...], mapping: str | None, dataset: str | None, name: str | None):
    if len(data) == 1 and is_beir_folder(data[0]):
        bench = import_benchmark(data[0])
        if name:
            bench.name = name
        return bench
    for d in data:
        if Path(d).is_dir():
            raise InputError("a folder must be a BEIR-style benchmark (corpus.jsonl, queries.jsonl, qrels.tsv)", path=d)
    return benchmark_from_conll(list(data), mapping_file=mapping, dataset=dataset, name=name)


def _train_types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from exc
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [t.strip() for t in value.split(",") if t.strip()]


def _data_roots(data: Sequence[str]) -> list[Path]:
    """Folders under which ``model.json``'s ``training.data`` entries may be found: the ancestors
    of the evaluated files (e.g. ``../shared/data`` for ``../shared/data/wnut17/dev.conll``), then
    ``NERINDEX_DATA`` (the folder ``nerindex train --data`` reads by default): a file copied out of
    the data tree had left the training files unfound, and the check of trained-on sentences
    passed (an audit calibrated on 150 training sentences so)."""
    roots: list[Path] = []
    for d in data:
        for parent in Path(d).resolve().parents:
            if parent not in roots:
                roots.append(parent)
    env = os.environ.get("NERINDEX_DATA")
    if env and Path(env).is_dir() and Path(env).resolve() not in roots:
        roots.append(Path(env).resolve())
    return roots


@click.command("eval")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False),
              help="Tag → query phrase file (JSON or TOML; flat, or sectioned by data set). Tags scored apart as "
              "coarse go in a \"_coarse\" list (default: CrossNER's, for a file in crossner/ or crossner/<domain>/). "
              "Default: the shipped mapping (indexer/assets/phrases.json) for the labelled sets nerindex is evaluated on. --train-data is read with the shipped "
              "mapping, as nerindex train reads it, and with this one only where a file is outside its data sets.")
@click.option("--dataset", help="Section of the mapping to use for the evaluated files (default: from the file's "
              "folder names).")
@click.option("--name", help="Name of the benchmark in reports.")
@click.option("--export-benchmark", "export_dir", type=click.Path(file_okay=False),
              help="Write the benchmark as a BEIR-style folder (corpus.jsonl, queries.jsonl, qrels.tsv) and stop.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="Model folder (default: NERINDEX_MODEL or the shipped default model).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False),
              help="Index into this embedded store folder instead of a temporary one.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Execution device (default: NERINDEX_DEVICE or auto).")
@click.option("--methods", default=",".join(DEFAULT_METHODS), show_default=True,
              help="Comma-separated methods to score: " + ", ".join(METHODS) + " (system_prf: query-time feedback, not scored by default).")
@click.option("--threshold", type=NumberRange(-1, 1), help="Operating threshold of the system (default: the model's).")
@click.option("--passage-weight", type=NumberRange(0, MAX_PASSAGE_WEIGHT), default=None,
              help="λ of the system's hybrid scoring (span + λ · passage similarity; default: the model's). "
              "The method system_spans scores the spans-only ranking beside it.")
@click.option("--feedback-weight", type=NumberRange(0, MAX_FEEDBACK_WEIGHT), default=0.5, show_default=True,
              help="Method system_prf: weight of the mean first-pass passage vector added to the type vector.")
@click.option("--feedback-top", type=CountRange(1, MAX_FEEDBACK_TOP), default=10, show_default=True,
              help="Method system_prf: how many first-pass passages feed the query.")
@click.option("--train-types", help="Seen type phrases for the report's groups, comma-separated or @FILE (default: "
              "model.json training.types). Searches keep the model's thresholds and λ, which follow its own training.types, "
              "so --calibrate --write-model refuses other types.")
@click.option("--train-data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training files to count mentions per type for Familiarity (repeatable).")
@click.option("--calibrate", is_flag=True,
              help="Also choose each method's thresholds (max macro F1 of returned passage sets) on DATA: one on the "
                   "types the model was trained on, and one on the others.")
@click.option("--write-model", is_flag=True,
              help="Record this run in the model folder's model.json: a summary under 'evaluation', "
              "and with --calibrate the chosen thresholds.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write JSON, Markdown and PNG charts here.")
@click.option("--stem", help="File name stem for --out (default: from the benchmark name).")
@click.option("--no-charts", is_flag=True, help="Skip the PNG charts (no matplotlib needed).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of Markdown.")
@click.option("--from-json", "from_json", is_flag=True,
              help="DATA is a saved result JSON: re-render it (Markdown/--out) without running.")
@batch_size_option
# Long because it takes one parameter per option (23); the body is three short modes: re-render
# (--from-json), export the benchmark, run the evaluation.
def eval_command(
    data: tuple[str, ...],
    mapping: str | None,
    dataset: str | None,
    name: str | None,
    export_dir: str | None,
    model_dir: str | None,
    store_dir: str | None,
    device: str | None,
    methods: str,
    threshold: float | None,
    passage_weight: float | None,
    feedback_weight: float,
    feedback_top: int,
    train_types: str | None,
    train_data: tuple[str, ...],
    calibrate: bool,
    write_model: bool,
    out_dir: str | None,
    stem: str | None,
    no_charts: bool,
    as_json: bool,
    from_json: bool,
    batch_size: int,
) -> None:
    """Score retrieval of every labelled type in DATA: the model and its baselines side by side.

    DATA: CoNLL/BIO files (a token and its tag per line, tab- or space-separated, BIO, IO or BIOES
    tags, blank lines between sentences, -DOCSTART- lines skipped) or one BEIR-style folder. Each type with
    a query phrase becomes a query; relevant passages hold a gold mention of it. Scores: R-Precision
    (primary), Recall@R, Recall@1000, P@10 on full rankings; precision/recall/F1 of the returned
    passage set, span hit rate and highlight precision (IoU ≥ 0.5) at each method's threshold.
    """
    _log_progress()
    _check_stem(stem)
    if from_json:
        _rerender(data, model_dir, write_model, out_dir, stem, no_charts, as_json)
        return
    if export_dir:
        refuse_unused("--export-benchmark (write the benchmark and stop)", EXPORT_OPTIONS)
    else:
        _check_run(_methods(methods), threshold, calibrate, write_model, charts=bool(out_dir) and not no_charts)
    bench = _load_benchmark(data, mapping, dataset, name)
    if not bench.scored_queries():  # an audit: a traceback, or exit 0 with empty tables
        raise InputError("no type to score: no passage holds a mention of a tag that maps to a query phrase "
                         "(every tag O, or mapped to null)", path=", ".join(data))
    if export_dir:
        _export(bench, export_dir)
        return
    result, model_path = _evaluate(
        bench, data, _methods(methods), model_dir=model_dir, store_dir=store_dir, device=device,
        threshold=threshold, train_types=train_types, train_data=train_data, mapping=mapping,
        calibrate=calibrate, batch_size=batch_size, passage_weight=passage_weight,
        feedback=Feedback(feedback_weight, feedback_top), write_model=write_model,
        write_calibration=calibrate and write_model,
    )  # fmt: skip
    _emit(result, out_dir, stem, no_charts, as_json)  # first: a model folder that cannot be written loses no report
    if write_model:
        _store_results(result, model_path, calibrate=calibrate)


# What each mode reads besides DATA. Any other option given is refused, naming it: they were dropped
# without a word (an audit: --from-json --calibrate --threshold 0.9 re-rendered the old thresholds;
# --export-benchmark --json printed nothing, --write-model wrote nothing, exit 0).
RERENDER_OPTIONS = frozenset({"from_json", "model_dir", "write_model", "out_dir", "stem", "no_charts", "as_json"})
EXPORT_OPTIONS = frozenset({"export_dir", "mapping", "dataset", "name"})


def _check_stem(stem: str | None) -> None:
    """--stem names files in --out: no folders (an audit: ../x wrote beside --out)."""
    if stem is not None and (Path(stem).name != stem or stem in (".", "..")):
        raise click.BadParameter("a file name stem, without folders (they go in --out)", param_hint="--stem")


def _check_run(methods: list[str], threshold: float | None, calibrate: bool, write_model: bool, *, charts: bool) -> None:
    """Refuse, before the passages are encoded, what a run would refuse or drop after it; import the
    [eval] extra's packages it will need (NerindexError naming the extra)."""
    from ..evaluation import baselines, report

    if calibrate and threshold is not None:  # an audit: --threshold was dropped without a word
        raise click.BadParameter("--calibrate chooses the thresholds; give --threshold or --calibrate, not both",
                                 param_hint="--threshold")
    if calibrate and write_model and "system" not in methods:  # an audit: refused after the run
        raise click.BadParameter("--calibrate --write-model chooses the system's thresholds: keep 'system' in "
                                 "--methods", param_hint="--methods")
    if "bm25" in methods:
        baselines.bm25s_module()
    if charts:
        report.pyplot()


def _log_progress() -> None:
    """Our progress on stderr; third-party chatter (bm25s, matplotlib) only when it matters."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
        logging.getLogger("indexer").setLevel(logging.INFO)
        logging.getLogger("bm25s").setLevel(logging.WARNING)


def _rerender(data: tuple[str, ...], model_dir: str | None, write_model: bool, out_dir: str | None,
              stem: str | None, no_charts: bool, as_json: bool) -> None:  # fmt: skip
    """--from-json: render a saved result again (and record it in its model's card if asked)."""
    from ..evaluation import report
    from ..model_card import ModelCard
    from ..model_folder import normal_phrases

    refuse_unused("--from-json (re-render a saved result)", RERENDER_OPTIONS)
    if model_dir and not write_model:  # it names the model to record the result in, nothing else
        raise click.UsageError("--from-json uses --model only with --write-model (the model to record in): drop it")
    if len(data) != 1:
        raise click.BadParameter("--from-json renders one saved result: give one file", param_hint="DATA")
    result = report.read_json(data[0])
    _emit(result, out_dir, stem, no_charts, as_json)
    if write_model:
        model_path = Path(model_dir or result["model"]["path"])
        card = ModelCard.load(model_path)
        training = result.get("training") or {}  # a --train-types split other than the model's (as a run refuses)
        if training.get("types_source") == "--train-types" and normal_phrases(training.get("types", ())) != normal_phrases(
                card.training.types):
            raise InputError("this result groups types by --train-types, not by model.json training.types as a "
                             "search does: it is not recorded in the model", path=data[0])
        trained_on = _trained_sources(card, result.get("benchmark", {}).get("sources") or ())
        if trained_on:  # as a run refuses (an audit: a re-render recorded a trained-on file's figures)
            raise InputError(f"this result is of {trained_on[0]}, which the model was trained on (model.json "
                             "training.data): its figures are not held out and are not recorded", path=data[0])
        _check_saved_trained_passages(result, data[0])
        _store_results(result, model_path, calibrate=False)


def _check_saved_trained_passages(result: Mapping[str, Any], path: str) -> None:
    """A saved result names files, not sentences: its run counted the training sentences among its
    passages (``trained_passages``), and a re-render records it only where a run would have (an
    audit: a renamed copy of training sentences, evaluated and then recorded with --from-json)."""
    trained, passages = result.get("trained_passages"), result.get("benchmark", {}).get("passages") or 0
    if trained is None:
        log.warning("%s does not say whether its passages were sentences the model was trained on (saved before "
                    "nerindex counted them, or no training file was found): run the evaluation again to check", path)
    elif passages and trained >= TRAINED_SHARE * passages:
        raise InputError(f"{trained} of its {passages} passages were sentences the model was trained on: its figures "
                         "are not held out and are not recorded", path=path)


def _trained_sources(card: Any, sources: Sequence[str]) -> list[str]:
    """The evaluated files (DATA, or a saved result's sources) that are among the model's training
    files (model.json ``training.data``): found on disk from here, or, where a saved result's path
    no longer resolves (another working folder), named alike: its folder and file against
    training.data's "dataset:file" entries."""
    from ..evaluation.seen_types import training_entries, training_files

    present = tuple(s for s in sources if Path(s).is_file())
    trained = {path.resolve() for path in training_files(card, _data_roots(present))}
    named = {path.parts[-2:] for path in training_entries(card)}
    return [s for s in sources if (Path(s).resolve() in trained if s in present else Path(s).parts[-2:] in named)]


def _export(bench, export_dir: str) -> None:
    folder = export_benchmark(bench, export_dir)
    click.echo(
        f"wrote {folder}: {len(bench.corpus)} passages, {len(bench.scored_queries())} queries (the types with "
        f"a relevant passage here), {sum(len(v) for v in bench.qrels.values())} relevance judgements",
        err=True,
    )


def _methods(value: str) -> list[str]:
    chosen = [m.strip() for m in value.split(",") if m.strip()]
    if not chosen:
        raise click.BadParameter("no method given", param_hint="--methods")
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown)}", param_hint="--methods")
    return chosen


def _evaluate(bench, data: tuple[str, ...], methods: list[str], *, model_dir: str | None, store_dir: str | None,
              device: str | None, threshold: float | None, train_types: str | None, train_data: tuple[str, ...],
              mapping: str | None, calibrate: bool, batch_size: int, passage_weight: float | None,
              feedback: Feedback, write_model: bool = False, write_calibration: bool = False,
              ) -> tuple[dict, Path]:  # fmt: skip
    """Run the evaluation with the model of --model (or the settings'); (result, model folder)."""
    from ..config import resolve
    from ..encoder import OnnxEncoder
    from ..evaluation.run import run_eval

    settings = resolve(model=model_dir, device=device)
    encoder = OnnxEncoder.from_dir(settings.model, device=settings.device, threads=settings.threads)
    trained_on = _trained_sources(encoder.info.card, data)
    if write_model:
        _check_write_model(encoder.info, _train_types(train_types), trained_on)
    trained = _check_trained_sentences(encoder.info.card, data, bench, refuse=write_model, warn=not trained_on)
    if trained_on and not write_model:
        log.warning("%s: the model was trained on %s (model.json training.data), so its figures there are "
                    "not held out", ", ".join(trained_on), "it" if len(trained_on) == 1 else "them")
    if write_calibration:
        _check_calibration_split(encoder.info, train_data, bench)
    log.info("evaluating %s: %d passages, %d types, model %s %s",
             bench.name, len(bench.corpus), len(bench.scored_queries()), encoder.info.id, encoder.info.version)
    result = run_eval(
        bench, encoder=encoder, store_dir=store_dir, methods=methods, threshold=threshold,
        train_types=_train_types(train_types), train_data=train_data, data_roots=_data_roots(data),
        mapping_file=mapping, calibrate_on=("seen",) if calibrate else None, batch_size=batch_size,
        passage_weight=passage_weight, feedback=feedback,
    )  # fmt: skip
    result["trained_passages"] = trained  # what --from-json --write-model checks (None: not checkable)
    return result, encoder.info.path


TRAINED_SHARE = 0.05  # the share of DATA's passages that may be training sentences (official splits: 0.2 %, 1.3 %)


def _check_trained_sentences(card: Any, data: Sequence[str], bench: Any, *, refuse: bool = True,
                             warn: bool = True) -> int | None:
    """How many of DATA's passages are sentences the model was trained on (None: no training file
    was found to compare with). With ``refuse`` (recording figures or thresholds), a share of
    them is an error, whatever the file's name: a model audit calibrated on the first 150
    sentences of the training file, copied under another name, and its thresholds were recorded
    as held out; otherwise a warning. The training files are found as :func:`_trained_sources`
    finds them (from DATA's folders and NERINDEX_DATA)."""
    from ..conll import read_conll
    from ..evaluation.seen_types import training_entries, training_files

    found, named = training_files(card, _data_roots(data)), len(training_entries(card))
    if len(found) < named and refuse:  # the check covers the files found: say so, rather than pass without a word (an audit)
        log.warning("%d of the model's %d training files (model.json training.data) were not found beside DATA or "
                    "under NERINDEX_DATA, so whether DATA holds their sentences was not checked: set NERINDEX_DATA "
                    "to the folder the model was trained from", named - len(found), named)
    texts = {p.text for path in found for p in read_conll(path)}
    trained = sum(1 for p in bench.corpus if p.text in texts)
    if bench.corpus and trained >= TRAINED_SHARE * len(bench.corpus):
        message = (f"{trained} of its {len(bench.corpus)} passages are sentences the model was trained on "
                   "(model.json training.data)")
        if refuse:
            raise InputError(message + ": its figures are not held out and are not recorded", path=", ".join(data))
        if warn:  # not where the file itself was named as a training file (said already)
            log.warning("%s: %s, so its figures are not held out", ", ".join(data), message)
    return trained if found else None


def _check_write_model(info: ModelInfo, train_types: list[str] | None, trained_on: list[str]) -> None:
    """Refuse to record in model.json a run whose figures do not describe the model as searched.

    Why: the record (and a calibration's thresholds) is grouped by the seen/unseen split of
    model.json ``training.types``, the one a search forms (``ModelInfo.threshold_for``): a split from
    ``--train-types`` was recorded under the model's name (an audit). Figures and thresholds from
    the model's own training sentences are not held out, and were recorded without a word (an
    audit: thresholds calibrated on them). Checked before the run, which can take long.
    """
    from ..model_folder import normal_phrases

    if train_types is not None and normal_phrases(train_types) != info.trained_phrases:
        raise click.BadParameter(
            "--write-model records the run (and --calibrate its thresholds) by the seen/unseen split of "
            "model.json training.types; drop --train-types or --write-model", param_hint="--train-types",
        )  # fmt: skip
    if trained_on:
        raise InputError("the model was trained on this file (model.json training.data), so figures and "
                         "thresholds from it are not held out: evaluate it without --write-model",
                         path=trained_on[0])


def _check_calibration_split(info: ModelInfo, train_data: tuple[str, ...], bench: Any) -> None:
    """Refuse to write thresholds chosen on other seen/unseen groups than a search uses, or on none.

    Why: a search picks ``similarity_threshold`` or ``unseen_similarity_threshold`` by model.json
    ``training.types`` (``ModelInfo.threshold_for``); for a card without training types,
    thresholds calibrated on ``--train-data``'s types would be stored for groups the runtime never
    forms. Checked before the run, which can take long.
    """
    card_types = info.trained_phrases
    if train_data and not card_types:
        raise click.BadParameter(
            "model.json has no training.types, so --train-data would make the seen/unseen split "
            "--calibrate --write-model stores; drop --train-data or --write-model", param_hint="--train-data",
        )  # fmt: skip
    if card_types and not any(not q.coarse and info.is_trained_phrase(q.text) for q in bench.scored_queries()):
        # an audit: refused only after the whole run ("no seen types with relevant passages")
        raise InputError("--calibrate --write-model chooses the threshold on the types the model was trained on, "
                         "and none of them has a relevant passage here: give data that holds some (a validation "
                         "split), or drop --write-model", path=bench.name)


def _store_results(result: dict, model_path: Path, *, calibrate: bool) -> None:
    """Record the run in model.json and, with --calibrate, its thresholds: all or nothing, and only
    while the folder holds the model evaluated (``write_evaluation``: one check, one save)."""
    from ..evaluation.calibration import evaluation_summary, write_evaluation
    from ..model_card import ModelCard

    thresholds, also = _chosen_thresholds(result, model_path) if calibrate else (None, "")
    name = result["benchmark"]["name"]
    before = ModelCard.load(model_path).evaluation.get(name) or {}
    if before.get("passages") not in (None, result["benchmark"]["passages"]):  # a slice named as its set (an audit)
        click.echo(f"note: evaluation[{name!r}] was of {before['passages']} passages; this run's, of "
                   f"{result['benchmark']['passages']}, replaces it", err=True)
    path = write_evaluation(model_path, name, evaluation_summary(result), checksum=result["model"]["checksum"],
                            thresholds=thresholds)  # fmt: skip
    if thresholds is not None:
        result["calibration"]["written"] = str(path)
        click.echo(f"stored similarity_threshold={thresholds.threshold}{also} in {path}", err=True)
    click.echo(f"recorded evaluation[{name!r}] in {path}", err=True)


def _chosen_thresholds(result: dict, model_path: Path) -> tuple[Thresholds, str]:
    """(the thresholds --calibrate --write-model stores, what the message adds about the unseen one)."""
    from ..evaluation.calibration import Thresholds, calibration_record, unseen_applied

    methods = (result.get("calibration") or {}).get("methods", {})
    if "system" not in methods:
        raise InputError("no seen types with relevant passages to calibrate on", path=str(model_path))
    chosen = methods["system"]["chosen"]["threshold"]
    # an audit: a flat zero curve (no threshold returns a relevant passage) stored 1.0, and searches found nothing
    if not methods["system"]["chosen"]["f1"]:
        raise InputError("no threshold returns a relevant passage of the seen types here (F1 0 at every "
                         "threshold): nothing to calibrate on, model.json left as it was", path=str(model_path))
    record = calibration_record(result, date=_dt.date.today().isoformat())  # without a flat unseen group
    applied = unseen_applied(result["calibration"])
    # flat: the seen threshold stands; the unseen ones of the card are kept, as without unseen types
    flat = "unseen" in result["calibration"] and not applied
    unseen = result["calibration"]["unseen"]["methods"].get("system") if applied else None
    other = unseen["chosen"]["threshold"] if unseen else None
    also = (f", unseen_similarity_threshold={other}" if other is not None
            else " (no threshold returns a relevant passage of the unseen types here: the model's "
                 "unseen_similarity_threshold is kept)" if flat
            else " (no unseen types to calibrate on: the model's unseen_similarity_threshold is kept)")
    return Thresholds(chosen, record, other), also


def _emit(result: dict, out_dir: str | None, stem: str | None, no_charts: bool, as_json: bool) -> None:
    from ..evaluation import report

    # the report first: a run whose files cannot be written (a full disk) is not lost (an audit)
    if as_json:
        click.echo(json_out(result, indent=1))
    else:
        click.echo(report.markdown(result))
    if out_dir:
        name = stem or _slug(result["benchmark"]["name"])
        for p in report.write_outputs(result, out_dir, stem=name, charts=not no_charts):
            click.echo(f"wrote {p}", err=True)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "eval"
