"""nerindex: zero-shot typed-entity retrieval (import name ``indexer``)."""

import os

# onnxruntime (1.32 at least) writes a device id and queued telemetry events under
# ~/.cache/Microsoft/DeveloperTools, and warns on stderr where HOME cannot be written (an audit);
# nerindex turns that off before anything of it imports onnxruntime, unless the variable is set.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

# name -> the module that defines it, imported on first use: `nerindex --help` and every command
# start without numpy, onnxruntime and the stores (0.6 s before, in which a Ctrl-C was a traceback)
_EXPORTS = {
    "NerIndex": ".api",
    **dict.fromkeys(("InputError", "ModelError", "ModelMismatchError", "NerindexError", "SearchError",
                     "SettingError", "StoreError"), ".errors"),
    **dict.fromkeys(("ReadStats", "read_passages"), ".reading"),
    **dict.fromkeys(("EncodedPassage", "EncodedSpan", "GoldSpan", "Hit", "Passage", "SpanMatch"), ".records"),
}

if TYPE_CHECKING:
    from .api import NerIndex
    from .errors import InputError, ModelError, ModelMismatchError, NerindexError, SearchError, SettingError, StoreError
    from .reading import ReadStats, read_passages
    from .records import EncodedPassage, EncodedSpan, GoldSpan, Hit, Passage, SpanMatch


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = sorted(_EXPORTS)  # the public names, one list
