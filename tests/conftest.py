"""Shared test setup: the conformance suite module is importable, the stamp fixture is global."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from store_conformance import stamp  # noqa: E402,F401  (re-exported fixture)
