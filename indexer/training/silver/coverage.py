"""What a silver file covers of a training split, said before training on it (no torch here: the
check runs, and is tested, with the base install)."""

from __future__ import annotations

import logging
from typing import Sequence

from ...errors import ModelError
from ...evaluation.heldout import DEV_EVAL_TYPES

log = logging.getLogger(__name__)


# per split: where a file of it comes from, and what its windows without a silver sentence lose
_SPLITS = {
    "training": ("made from other data?", "the silver adapter trains on none of their spans, gold ones included",
                 "'nerindex silver' without --limit"),
    "dev": ("--silver-dev takes a file of 'nerindex silver --split dev'",
            "the detection threshold is chosen on their gold spans alone, so the silver spans detected there "
            "count as false positives", "'nerindex silver --split dev' without --limit"),
}


def check_split_cover(path: str, without: int, windows: int, split: str) -> None:
    """Refuse a silver file with no sentence of the ``split`` ("training" or "dev"); say how many
    windows it leaves out, and what they lose (an audit: a ``--limit`` file dropped 318 of 358
    training windows, their gold spans with them, without a word; and --silver-dev, the same)."""
    origin, loss, remedy = _SPLITS[split]
    if windows and without == windows:
        raise ModelError(f"{path}: none of its sentences is in the {split} split ({origin})")
    if without:
        log.warning("%s: %d of %d %s windows have no silver sentence; %s (annotate the whole split: %s)",
                    path, without, windows, split, loss, remedy)


def check_silver_cover(path: str, without: int, windows: int, vocab: Sequence[str]) -> None:
    """Say what a silver file of the training split leaves out (:func:`check_split_cover`) or
    brings in that evaluation counts as unseen."""
    check_split_cover(path, without, windows, "training")
    leaked = sorted(set(vocab) & set(DEV_EVAL_TYPES))
    if leaked:
        log.warning("%s: types that 'nerindex eval' counts as unseen are silver types here (%s%s): its "
                    "zero-shot figures will not be zero-shot ('nerindex silver' holds them out by default)",
                    path, ", ".join(leaked[:5]), ", …" if len(leaked) > 5 else "")
