"""What ``nerindex train --out`` may write into: a new or empty folder, or a finished run it is
told to replace. One check, before the backbone loads, so that a wrong ``--out`` costs nothing."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..model_card import CARD_FILE

RUN_FILES = ("train.json", "heads.safetensors")  # what a run writes (train.write_train_json, the heads)


def check_run_folder(out_dir: Path, *, force: bool) -> None:
    """Refuse an ``out_dir`` a run must not write into (a wrong --out: exit 2, not a model's 3).

    - a model folder: its heads would be overwritten and its checksums then fail (an audit);
    - a finished run, unless ``force``: it was trained over without a word (an audit), where
      ``nerindex export`` asks for ``--force``;
    - any other folder holding files (a data folder, say): it is no run folder at all.
    """
    if (out_dir / CARD_FILE).is_file():
        raise InputError(f"is a model folder ({CARD_FILE}); train into a run folder, then 'nerindex export' it",
                         path=str(out_dir))
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not any((out_dir / name).is_file() for name in RUN_FILES):
        raise InputError("holds files and no run (train.json): train into a new or empty folder", path=str(out_dir))
    if not force:
        raise InputError("holds a finished run (train.json); pass --force to replace it", path=str(out_dir))
