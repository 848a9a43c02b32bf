"""Which types the model was trained on (seen, unseen, coarse) and how often it saw each.

The record comes from model.json's ``training`` section or the user's overrides; mention counts
weigh each training type in Familiarity (``familiarity`` module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

from ..model_card import ModelCard
from ..model_folder import trained_type
from ..errors import InputError
from .benchmark_io import Query, detect_dataset, read_mapping_file, resolve_mapping

Group = Literal["seen", "unseen", "coarse"]
GROUPS: tuple[str, ...] = ("seen", "unseen", "coarse")


@dataclass
class Training:
    """What the model was trained on: seen type phrases and mention counts per phrase."""

    types: set[str]
    held_out: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    counts_source: str = "none"
    source: str = "model.json"

    def is_trained(self, phrase: str) -> bool:
        """Whether ``phrase`` is a seen type, as :meth:`ModelInfo.is_trained_phrase` compares (case
        and spacing aside), so a type is grouped with the threshold and λ it is searched with."""
        return trained_type(phrase, self.types) is not None


def group_of(query: Query, training: Training) -> Group:
    """coarse (scored apart, see COARSE_TAGS) · seen (phrase trained on) · unseen."""
    if query.coarse:
        return "coarse"
    return "seen" if training.is_trained(query.text) else "unseen"


def count_training_mentions(
    paths: Sequence[str | Path], *, held_out: Iterable[str] = (), mapping_file: str | Path | None = None
) -> dict[str, int]:
    """Mentions per query phrase in training files, skipping sentences with a held-out type.

    Mirrors how the shipped model was trained (sentences holding a held-out type were dropped), so
    Familiarity weights each training type by how often the model actually saw it. Tags are read
    with the shipped mapping, as ``nerindex train`` reads them, whatever ``--mapping`` says of the
    evaluated files (an audit: a flat --mapping dropped Wikigold's PER/ORG/LOC from the counts, and
    "organization"'s Familiarity fell from 0.995 to 0.251). A file outside the shipped data sets'
    folders (a model trained on other data) is read with ``mapping_file`` where one is given.
    """
    from ..conll import read_conll
    from .benchmark_io import PHRASES_FILE

    data = read_mapping_file(PHRASES_FILE)
    sections = [k for k, v in data.items() if isinstance(v, dict) and not k.startswith("_")]
    held = set(held_out)
    counts: dict[str, int] = {}
    for path in paths:
        if detect_dataset(path, sections) is not None:
            mapping, _, _ = resolve_mapping(data, path, source=str(PHRASES_FILE))
        elif mapping_file is not None:
            mapping, _, _ = resolve_mapping(read_mapping_file(mapping_file), path, source=str(mapping_file))
        else:
            raise InputError(
                "cannot tell which data set this training file is: training data is read by its folder "
                f"names, as nerindex train reads it (a folder named one of {', '.join(sections)}), or with "
                "--mapping where it is elsewhere",
                path=str(path),
            )
        for p in read_conll(path):
            phrases = [mapping.get(g.label) for g in p.gold]
            if any(ph in held or g.label in held for ph, g in zip(phrases, p.gold)):
                continue
            for ph in phrases:
                if ph is not None:
                    counts[ph] = counts.get(ph, 0) + 1
    return counts


def training_entries(card: ModelCard) -> list[Path]:
    """The paths ``model.json``'s ``training.data`` names: paths, or "dataset:file" as the training
    step records them (read as ``dataset/file``)."""
    paths = []
    for entry in card.training.data:
        name = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(name, str):
            paths.append(Path(*name.split(":", 1)) if ":" in name and not Path(name).exists() else Path(name))
    return paths


def training_files(card: ModelCard, data_roots: Sequence[str | Path] = ()) -> list[Path]:
    """The files of ``model.json``'s ``training.data`` that are found: as given, or under one of
    ``data_roots`` (:func:`training_entries`)."""
    files = []
    for rel in training_entries(card):
        candidates = [rel] + [Path(root) / rel for root in data_roots]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            files.append(found)
    return files


def training_from_card(
    card: ModelCard,
    *,
    train_types: Sequence[str] | None = None,
    train_data: Sequence[str | Path] = (),
    data_roots: Sequence[str | Path] = (),
    mapping_file: str | Path | None = None,
) -> Training:
    """Seen types and their counts from ``model.json`` (``training``), or the user's overrides.

    Counts come from, in order: ``--train-data`` files; ``training.type_counts``; the files named in
    ``training.data`` when found (as given, or under one of ``data_roots``); else every seen type
    counts once (and the report says so).
    """
    rec = card.training
    held = set(rec.held_out_types)
    if train_types is not None:
        types, source = {t.strip() for t in train_types if t.strip()}, "--train-types"
    else:
        types, source = set(rec.types), "model.json training.types"
    if train_data:
        counts = count_training_mentions(train_data, held_out=held, mapping_file=mapping_file)
        return Training(types or set(counts), held, counts, "mentions counted in --train-data files", source)
    if rec.type_counts is not None:
        counts = rec.type_counts
        return Training(types or set(counts), held, counts, "model.json training.type_counts", source)
    files = training_files(card, data_roots)
    if files:
        counts = count_training_mentions(files, held_out=held, mapping_file=mapping_file)
        return Training(types or set(counts), held, counts, "mentions counted in training.data files", source)
    # Familiarity weighs the training mentions by frequency: counting each type once is not that
    # figure (an audit: a trained-on type scored 0.53, not 1.00), so without counts none is given
    return Training(types, held, {}, "none available (Familiarity not computed)", source)
