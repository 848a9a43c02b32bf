"""The embedded store's model guard: the model that wrote a store, recorded once in its ``meta``
table, and the refusal of another (``base.check_stamp`` decides, as for every backend).

Both the first record and the adoption of settings a 0.2.0 store lacks are compare-and-set, so two
processes starting on one store cannot record two models.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Callable, ContextManager

from ..errors import ModelMismatchError
from .base import ModelStamp, StampCheck, adopted_message, check_stamp, same_model

log = logging.getLogger(__name__)

Connection = Callable[[], ContextManager[sqlite3.Connection]]


def _recorded(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
    return row[0] if row else None


def recorded_model(conn: sqlite3.Connection) -> ModelStamp | None:
    """The model the store records, or None while it is empty."""
    raw = _recorded(conn)
    return ModelStamp.from_dict(json.loads(raw)) if raw else None


def recorded_dims(conn: sqlite3.Connection) -> int | None:
    """The vector size of the store's model (None while no model is recorded)."""
    stamp = recorded_model(conn)
    return stamp.dims if stamp else None


def check_model(connection: Connection, path: Path, stamp: ModelStamp, *, writing: bool) -> None:
    """Record ``stamp`` on the first write; refuse another model (:func:`refuse_other`); adopt the
    settings an older stamp lacks, once."""
    with connection() as conn:
        raw = _recorded(conn)
    if raw is None:
        if not writing:
            return
        with connection() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('model', ?)", (json.dumps(stamp.to_dict()),))
            raw = _recorded(conn)
        assert raw is not None
    check = refuse_other(path, ModelStamp.from_dict(json.loads(raw)), stamp, writing=writing)
    if check.adopted:
        with connection() as conn:
            changed = conn.execute("UPDATE meta SET value = ? WHERE key = 'model' AND value = ?",
                                   (json.dumps(check.recorded.to_dict()), raw)).rowcount
        if changed == 0:  # another process recorded first: compare with what it recorded
            return check_model(connection, path, stamp, writing=writing)
        log.warning(adopted_message(str(path), check))


def refuse_other(path: Path, recorded: ModelStamp, stamp: ModelStamp, *, writing: bool) -> StampCheck:
    """``check_stamp``, a conflict raised as the store's ModelMismatchError."""
    check = check_stamp(recorded, stamp, writing=writing)
    if check.conflict:  # the same model and another setting (a --catalog file) is no other model (an audit)
        uses, its = ("other settings", "model folder and settings") if same_model(recorded, stamp) else (stamp.describe(), "model folder")
        raise ModelMismatchError(f"{path}: store was built with model {recorded.describe()}, this run uses {uses}: "
                                 f"{check.conflict}; index into a new store (another --store folder) or use the {its} the store was built with")
    return check
