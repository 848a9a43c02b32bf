"""Writing a file whole or not at all: what a reader, or the next run after a kill -9, finds is the
old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def replace_atomically(path: Path, write: Callable[[Path], None], *, mode: int | None = None) -> Path:
    """Write ``path`` by ``write(tmp)`` into a temporary file beside it, fsynced, then renamed over
    it (``mode``: its permissions; else ``mkstemp``'s 0600). The temporary file is removed if
    anything fails on the way."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
