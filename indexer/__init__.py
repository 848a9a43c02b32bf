"""nerindex: zero-shot typed-entity retrieval (import name ``indexer``)."""

from .errors import (
    InputError,
    ModelError,
    ModelMismatchError,
    NerindexError,
    SearchError,
    StoreError,
)
from .records import EncodedPassage, EncodedSpan, GoldSpan, Hit, Passage, SpanMatch

__all__ = [
    "EncodedPassage",
    "EncodedSpan",
    "GoldSpan",
    "Hit",
    "InputError",
    "ModelError",
    "ModelMismatchError",
    "NerindexError",
    "Passage",
    "SearchError",
    "SpanMatch",
    "StoreError",
]
