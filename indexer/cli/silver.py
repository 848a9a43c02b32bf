"""``nerindex silver``: annotate a split of the training data with WordNet-typed spans (docs/silver.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..atomic_files import write_bytes
from ..config import cache_folder, resolve
from ..encoder import OnnxEncoder
from ..errors import InputError
from ..evaluation.heldout import DEV_EVAL_TYPES, MEDICAL_TYPES
from ..stage_cache import usable
from ..training.data import default_sources, read_sources
from ..training.silver.annotate import Progress, annotate
from ..training.silver.annotator import SilverAnnotator
from ..training.silver.glosses import embed_sorted, text_embedder
from ..training.silver.hierarchy import build_hierarchy, hierarchy_path
from ..training.silver.records import write_silver
from ..training.silver.report import familiarity_report, summary, summary_text, usage_example_check
from ..training.silver.rules import SilverConfig
from ..training.wordnet import WordNet
from .options import CountRange, refuse_unused
from .output import json_out


def gloss_cache_file(model_checksum: str, wordnet_folder: Path) -> Path | None:
    """Where the gloss vectors of this model and this WordNet are cached. Keyed by the model alone,
    the cache gave another or a changed WordNet the old glosses' vectors (the entries are keyed by
    synset offset, which another WordNet reuses for other senses): the nouns' data file is hashed in."""
    digest = hashlib.sha256(model_checksum.encode())
    data = Path(wordnet_folder) / "data.noun"
    if data.is_file():
        digest.update(data.read_bytes())
    folder = cache_folder("wordnet")  # None: NERINDEX_CACHE=off, the vectors are made each run
    return folder / f"glosses-{digest.hexdigest()[:12]}.npz" if usable(folder) else None


@click.command("silver")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="JSONL file to write (required, unless --wsd-check); the hierarchy goes beside it as *.hierarchy.json.")
@click.option("--data-dir", envvar="NERINDEX_DATA", show_envvar=True, type=click.Path(file_okay=False),
              help="Folder of the labelled sets (one folder per set: multiconer2_en/, wnut17/, btc/, wikigold/, crossner/<domain>/, their CoNLL files named as in EVALUATION.md's commands); required unless --wsd-check.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="Model folder whose tokenizer and type encoder are used (default: NERINDEX_MODEL or the shipped default model).")
@click.option("--wordnet", "wordnet_dir", type=click.Path(file_okay=False),
              help="WordNet dict folder (default: NERINDEX_WORDNET, WNSEARCHDIR or /usr/share/wordnet).")
@click.option("--max-depth", default=4, show_default=True, type=CountRange(1, 12),
              help="Hypernym levels above a span's sense that give its type phrases.")
@click.option("--split", type=click.Choice(["train", "dev"]), default="train", show_default=True,
              help="Which split of the shipped model's data to annotate (dev: its validation files, "
              "for choosing the detection threshold of a silver-trained model).")
@click.option("--limit", type=CountRange(min=1), help="Only the first N sentences of the split (quick runs).")
@click.option("--hold-out", "hold_out", default=None,
              help="Comma-separated type phrases WordNet never gives a span (default: the dev evaluation "
              "types); 'none' keeps all. A gold span keeps its own gold phrase, which gold training "
              "teaches anyway.")
@click.option("--first-sense", is_flag=True, help="No disambiguation: WordNet's most frequent sense.")
@click.option("--familiarity/--no-familiarity", default=True, show_default=True,
              help="Report the Familiarity of the dev evaluation types (gold-only vs silver training).")
@click.option("--wsd-check", type=CountRange(min=1), default=None, metavar="N",
              help="Only measure sense choice on N WordNet usage examples and print it (no data written).")
@click.option("--force", is_flag=True, help="Replace an existing --out file and its hierarchy (as train and export ask).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def silver_command(out_path, data_dir, model_dir, wordnet_dir, max_depth, split, limit, hold_out,
                   first_sense, familiarity, wsd_check, force, as_json) -> None:  # fmt: skip
    """Annotate the training sentences with WordNet-typed spans and merge them with the gold spans."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if wsd_check:  # an audit: --out and --limit were taken and nothing was written, exit 0
        refuse_unused("--wsd-check (measure sense choice only)", WSD_CHECK_OPTIONS)
    elif not out_path:
        raise click.UsageError("--out is required")
    elif not data_dir:  # no default: the labelled sets live outside the package
        raise click.UsageError("--data-dir is required (or NERINDEX_DATA): the folder of the labelled sets")
    held = _hold_out(hold_out)
    if not wsd_check and not Path(data_dir).is_dir():  # --wsd-check reads WordNet's examples only (an audit)
        raise InputError("no such data folder", path=data_dir)
    if not wsd_check:  # before minutes of annotation (a CLI audit: a read-only --out was found at the end)
        _check_out(Path(out_path), force=force)
    t0 = time.perf_counter()
    wn = WordNet.load(wordnet_dir)
    encoder = OnnxEncoder.from_dir(resolve(model=model_dir).model, device="cpu")
    embed = text_embedder(encoder)
    cfg = SilverConfig(max_depth=max_depth, max_span_width=encoder.info.max_span_width,
                       disambiguate=not first_sense, hold_out=held)  # fmt: skip
    annotator = SilverAnnotator(wn, config=cfg)
    if wsd_check:
        result = usage_example_check(annotator, embed, n=wsd_check)
        click.echo(json.dumps(result, indent=1) if as_json else
                   f"{result['examples']} usage examples: " + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items()))  # fmt: skip
        return
    sources = default_sources(data_dir)[split]
    passages, origins, phrases, read_counts = read_sources(sources, exclude_phrases=MEDICAL_TYPES)
    if limit:
        passages, origins, phrases = passages[:limit], origins[:limit], phrases[:limit]
    with _ProgressBars() as progress:
        sentences = annotate(
            passages, origins, phrases, annotator=annotator, tokenizer=encoder.tokenizer, embed=embed,
            gloss_cache=gloss_cache_file(encoder.info.checksum, wn.folder), progress=progress,
        )  # fmt: skip
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # each file whole or not at all; the hierarchy, written last, names the silver file's sha256, so
    # a kill between the two (a new file beside the old hierarchy) is refused by training
    hierarchy = {**build_hierarchy(annotator, sentences), "silver": {"file": out.name, "sha256": write_silver(out, sentences)}}
    hier_path = hierarchy_path(out)
    write_bytes(hier_path, json.dumps(hierarchy, ensure_ascii=False, indent=0).encode("utf-8"))
    read_from = set(origins)  # --limit: only the files its sentences came from (an audit listed every one)
    result = summary(
        annotator, sentences, out=out, hierarchy=hier_path, sources=[s.name for s in sources if s.name in read_from],
        excluded_sentences=read_counts["sentences_excluded"], wordnet=wn.folder,
        embedding_model=f"{encoder.info.id} {encoder.info.version} type encoder (all-MiniLM-L6-v2 phrase embedding)",
    )  # fmt: skip
    if familiarity:
        as_types = text_embedder(encoder, as_types=True)
        result["familiarity"] = familiarity_report(data_dir, sentences, lambda texts: embed_sorted(list(texts), as_types))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    click.echo(json_out(result, indent=1) if as_json else summary_text(result))


# what --wsd-check reads: WordNet, the model that embeds glosses and the annotator's settings
WSD_CHECK_OPTIONS = frozenset({"wsd_check", "wordnet_dir", "model_dir", "max_depth", "hold_out", "first_sense", "as_json"})


def _hold_out(option: str | None) -> tuple[str, ...]:
    """The --hold-out phrases: the dev evaluation types by default, none for 'none'."""
    if option is None:
        return DEV_EVAL_TYPES
    if option.strip().lower() == "none":
        return ()
    phrases = tuple(p.strip() for p in option.split(",") if p.strip())
    if not phrases:  # an audit: an empty shell variable held nothing out, without a word
        raise click.BadParameter("no phrase given: name the types to hold out, or 'none' to hold none out",
                                 param_hint="--hold-out")
    return phrases


class _ProgressBars:
    """One click progress bar per annotation stage on stderr, the previous one closed when the next starts."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}  # stage -> click's ProgressBar

    def __enter__(self) -> Progress:
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            self.close()
            bar = click.progressbar(length=total, label=f"{stage:>10}", file=sys.stderr)
            self.bars[stage] = bar
        bar.update(done - bar.pos)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.render_finish()
        self.bars.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_out(out: Path, *, force: bool = False) -> None:
    """Refuse an ``--out`` that cannot be written, before the annotation (exit 2): a folder, a
    folder to write in that cannot be made or written, or a file there already without ``force``
    (a silver file and its hierarchy were replaced without a word: an audit)."""
    if out.is_dir():
        raise InputError("is a folder: --out names the silver JSON Lines file", path=str(out))
    if out.exists() and not force:
        raise InputError("exists: --force replaces it and its hierarchy", path=str(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot make its folder ({exc.strerror})", path=str(out)) from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError("its folder may not be written", path=str(out))
