"""The dev evaluation's unseen type phrases: what training must hold out so they stay unseen.

Zero-shot figures are only honest when the types they are measured on were never trained on.
``nerindex eval`` measures the shipped model on MultiCoNER's medical group and on CrossNER's
politics and literature dev sets (EVALUATION.md); training drops sentences holding a medical type,
and the silver annotator never uses any of these phrases (nor their WordNet synonyms) as a type.
"""

from __future__ import annotations

# MultiCoNER's medical group: held out of the shipped model for zero-shot evaluation
MEDICAL_TYPES: tuple[str, ...] = (
    "disease", "symptom", "medical procedure", "anatomical structure", "medication or vaccine",
)  # fmt: skip

# the CrossNER politics/literature dev types that are not gold training types
CROSSNER_DEV_TYPES: tuple[str, ...] = (
    "election", "political party", "country", "event", "book", "writer", "poem", "award",
    "literary genre", "magazine",
)  # fmt: skip

# every dev evaluation type that is not a gold training type
DEV_EVAL_TYPES: tuple[str, ...] = CROSSNER_DEV_TYPES + MEDICAL_TYPES
