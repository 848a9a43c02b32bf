"""The files nerindex ships inside its package, and the one place that finds them.

| asset | what it is |
|---|---|
| ``default_model/`` | the default model folder (contract: ``docs/model-folder.md``) |
| ``mappings/`` | Elasticsearch index mappings and the stored search template |
| ``kibana/nerindex.ndjson`` | Kibana saved objects (data view, saved search, dashboard) |
| ``phrases.json`` | readable type phrase of each tag of the labelled data sets |

They are package data, so a wheel, an editable install and a source checkout all find them the
same way (``importlib.resources``), and nothing depends on the repository layout. The runtime
needs real files (onnxruntime opens graphs by path), so a zipped install is refused with a clear
message instead of failing later.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import NerindexError


def _asset(name: str) -> Path:
    """The file or folder ``name`` of this package; an error naming it when the install lacks it."""
    resource = files(__name__) / name
    if not isinstance(resource, Path) or not resource.exists():
        raise NerindexError(f"this nerindex install is incomplete: {resource} is missing (reinstall nerindex)")
    return resource


def default_model_dir() -> Path:
    """The shipped default model folder (used when no model is named)."""
    return _asset("default_model")


def mappings_dir() -> Path:
    """The folder of Elasticsearch templates (``passages.json``, ``types.json``, ``search-template.json``)."""
    return _asset("mappings")


def kibana_objects() -> Path:
    """The Kibana saved objects NDJSON that ``nerindex kibana import`` posts by default."""
    return _asset("kibana/nerindex.ndjson")


def phrases_file() -> Path:
    """The tag-to-phrase tables of the labelled data sets (training and evaluation)."""
    return _asset("phrases.json")
