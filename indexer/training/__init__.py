"""Training and export of nerindex models (the optional ``[train]`` extra: torch, transformers, onnx).

Nothing here is imported by the runtime; the runtime reads the model folders this package writes.
"""

from __future__ import annotations

__all__ = ["build_model", "load_model_from_folder", "write_model_folder", "HeadConfig"]


def __getattr__(name: str):
    # lazy: importing indexer.training must not import torch until something is used
    if name in ("build_model", "load_model_from_folder", "HeadConfig"):
        from . import model

        return getattr(model, name)
    if name == "write_model_folder":
        from . import export

        return export.write_model_folder
    raise AttributeError(name)
