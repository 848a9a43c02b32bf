"""nerindex: zero-shot typed-entity retrieval (import name ``indexer``)."""

from .api import NerIndex
from .errors import (
    InputError,
    ModelError,
    ModelMismatchError,
    NerindexError,
    SearchError,
    StoreError,
)
from .reading import ReadStats, read_passages
from .records import EncodedPassage, EncodedSpan, GoldSpan, Hit, Passage, SpanMatch

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
    "SpanMatch",
    "StoreError",
    "read_passages",
]
