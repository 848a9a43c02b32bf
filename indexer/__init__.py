"""nerindex: zero-shot typed-entity retrieval (import name ``indexer``)."""

import os

# onnxruntime (1.32 at least) writes a device id and queued telemetry events under
# ~/.cache/Microsoft/DeveloperTools, and warns on stderr where HOME cannot be written (an audit);
# nerindex turns that off before anything of it imports onnxruntime, unless the variable is set.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .api import NerIndex  # noqa: E402
from .errors import (  # noqa: E402
    InputError,
    ModelError,
    ModelMismatchError,
    NerindexError,
    SearchError,
    SettingError,
    StoreError,
)
from .reading import ReadStats, read_passages  # noqa: E402
from .records import EncodedPassage, EncodedSpan, GoldSpan, Hit, Passage, SpanMatch  # noqa: E402

__all__ = [
    "EncodedPassage",
    "EncodedSpan",
    "GoldSpan",
    "Hit",
    "InputError",
    "ModelError",
    "ModelMismatchError",
    "NerIndex",
    "NerindexError",
    "Passage",
    "ReadStats",
    "SearchError",
    "SettingError",
    "SpanMatch",
    "StoreError",
    "read_passages",
]
