"""Writing a file whole or not at all: what a reader, or the next run after a kill -9, finds is the
old file or the new one, never half of one. The store's derived files, eval reports, model.json and
a training run's files all go through :func:`write_file` (:func:`write_bytes` for data in hand)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, NoReturn, TypeVar

T = TypeVar("T")


def named_for(exc: OSError, target: Path, temporary: str) -> OSError:
    """``exc`` named by ``target`` where it names no file or a temporary one (a path starting with
    ``temporary``), else ``exc`` itself: a full disk said "No space left on device" naming no
    file, a folder that may not be written the temporary file (a CLI audit)."""
    if exc.errno is None or (exc.filename is not None and not str(exc.filename).startswith(temporary)):
        return exc
    return OSError(exc.errno, exc.strerror, str(target))


def raise_named(exc: OSError, target: Path, temporary: str) -> NoReturn:
    """Raise ``exc`` as :func:`named_for` names it (chained to it), or ``exc`` itself: what every
    writer through a temporary file or folder does with an OSError, after its own clean-up."""
    named = named_for(exc, target, temporary)
    if named is exc:
        raise exc
    raise named from exc


def write_file(folder: Path, name: str, write: Callable[[BinaryIO], T], *, mode: int | None = None) -> T:
    """Write ``folder/name`` all or nothing: a temporary file ``.<name>.<token>.<pid>.tmp`` (whose
    writer can be told: ``stores.derived`` removes those of processes gone; the token keeps two
    writers of one process apart: two store handles on one folder truncated each other's file, an
    audit), fsync, rename; returns what ``write`` returns; ``mode``: the file's permissions (else
    the umask's). Raises OSError, and then leaves no temporary file behind."""
    tmp = folder / f".{name}.{secrets.token_hex(4)}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, folder / name)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise_named(exc, folder / name, str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` all or nothing (:func:`write_file`); returns ``path``."""
    write_file(path.parent, path.name, lambda handle: handle.write(data), mode=mode)
    return path
