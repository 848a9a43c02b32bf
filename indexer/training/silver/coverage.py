"""What a silver file covers of a training split, said before training on it (no torch here: the
check runs, and is tested, with the base install)."""

from __future__ import annotations

import logging
from typing import Sequence

from ...errors import ModelError
from ...evaluation.heldout import DEV_EVAL_TYPES

log = logging.getLogger(__name__)


def check_silver_cover(path: str, without: int, windows: int, vocab: Sequence[str]) -> None:
    """Say what a silver file leaves out (an audit: a ``--limit`` file dropped 318 of 358 windows,
    their gold spans with them, without a word) or brings in that evaluation counts as unseen."""
    if windows and without == windows:
        raise ModelError(f"{path}: none of its sentences is in the training split (made from other data?)")
    if without:
        log.warning("%s: %d of %d training windows have no silver sentence; the silver adapter trains on "
                    "none of their spans, gold ones included (annotate the whole split: 'nerindex silver' "
                    "without --limit)", path, without, windows)
    leaked = sorted(set(vocab) & set(DEV_EVAL_TYPES))
    if leaked:
        log.warning("%s: types that 'nerindex eval' counts as unseen are silver types here (%s%s): its "
                    "zero-shot figures will not be zero-shot ('nerindex silver' holds them out by default)",
                    path, ", ".join(leaked[:5]), ", …" if len(leaked) > 5 else "")
