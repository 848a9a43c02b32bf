"""Read the JSON templates of ``indexer/assets/mappings/`` (the single source of truth) and fill their placeholders.

A placeholder is a JSON string that is exactly ``"{{name}}"``; it is replaced by the value of
``name``, whatever its type (a number for ``dims``, an object for ``index_options``), so the
template stays valid JSON that people can read and diff.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any, Mapping

from ...assets import mappings_dir

INDEX_TEMPLATE = "passages.json"
SEARCH_TEMPLATE = "search-template.json"

_PLACEHOLDER = re.compile(r"^\{\{(\w+)\}\}$")


@lru_cache(maxsize=None)
def _load(name: str) -> str:
    return (mappings_dir() / name).read_text(encoding="utf-8")


def load_template(name: str) -> dict[str, Any]:
    """A fresh, mutable copy of one template file of the shipped mappings."""
    return copy.deepcopy(json.loads(_load(name)))


def refresh_interval(body: Mapping[str, Any]) -> str | None:
    """The refresh interval an index made from ``body`` (a template, filled or not) has after its
    bulk load."""
    return body.get("settings", {}).get("index", {}).get("refresh_interval")


def placeholders(template: Any) -> set[str]:
    """Names of the placeholders left in a template (empty once it is filled)."""
    found: set[str] = set()
    if isinstance(template, dict):
        for value in template.values():
            found |= placeholders(value)
    elif isinstance(template, list):
        for value in template:
            found |= placeholders(value)
    elif isinstance(template, str):
        match = _PLACEHOLDER.match(template)
        if match:
            found.add(match.group(1))
    return found


def fill(template: Any, params: Mapping[str, Any]) -> Any:
    """Replace every placeholder by its parameter; a missing parameter is a programming error."""
    if isinstance(template, dict):
        return {key: fill(value, params) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, params) for value in template]
    if isinstance(template, str):
        match = _PLACEHOLDER.match(template)
        if match:
            name = match.group(1)
            if name not in params:
                raise KeyError(f"template placeholder {{{{{name}}}}} has no value")
            return copy.deepcopy(params[name])
    return template
