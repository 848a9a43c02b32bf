"""The graph's type side: the text a type phrase is embedded as, the one runner of ``type_vectors``,
and the catalog a model folder or a ``--catalog`` file gives (split from :mod:`.encoder`, which runs
passages; export and the silver annotator use these without an encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .catalog import Catalog, read_phrases
from .errors import InputError, ModelError, NerindexError
from .model_folder import ModelInfo


def check_fits(tokenizer: object, phrases: Sequence[str], texts: Sequence[str], max_length: int,
               error: type[NerindexError]) -> None:
    """Refuse a phrase whose text is more tokens than the model reads of a passage (``max_length``),
    a page rather than a type: 200 characters of Hangul are ~540 tokens, past the graph's 512
    positions, and onnxruntime's shape error was a traceback (an HTTP 500; an audit)."""
    for phrase, enc in zip(phrases, tokenizer.encode_batch(list(texts), add_special_tokens=True)):
        if len(enc.ids) > max_length:
            raise error(f"the type phrase {phrase[:40]!r}{'…' if len(phrase) > 40 else ''} is {len(enc.ids)} "
                        f"tokens once tokenised; the model reads at most {max_length}")


def type_text(template: str, phrase: str) -> str:
    """The text a type phrase is embedded as (a template of model.json around it:
    ``ModelInfo.template_for``)."""
    return template.format(phrase.strip())


def embed_texts(
    session: object, tokenizer: object, texts: Sequence[str], *, batch_size: int = 1, max_length: int | None = None
) -> np.ndarray:
    """``type_vectors`` ``[n, dims]`` (float32) of texts, ``batch_size`` at a time (default: one).

    The one runner of the graph's type side: the runtime's :meth:`OnnxEncoder.embed_types`,
    export's precomputed catalog and the silver annotator's glosses all use it. The int8 graph
    quantises its activations with one scale per call (dynamic quantisation), so a text's vector
    depends on the texts run with it: cosine 0.974–1.0, median 0.989, between the 46 dev-set
    phrases embedded alone and all together. One text per call gives every phrase one vector,
    wherever it is embedded; only the silver glosses, where the caller's batches are the unit,
    pass a larger ``batch_size``. Each text is read with one dummy span ``(0, 0)``;
    ``max_length`` cuts longer texts to that many tokens (the last, closing token kept). No
    texts give an empty ``(0, 0)`` array.
    """
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        encs = tokenizer.encode_batch(list(texts[start : start + batch_size]), add_special_tokens=True)
        rows = [e.ids if max_length is None or len(e.ids) <= max_length else e.ids[: max_length - 1] + e.ids[-1:]
                for e in encs]
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        dummy = np.zeros((len(encs), 1), dtype=np.int64)
        (vectors,) = session.run(
            ["type_vectors"],
            {"input_ids": ids, "attention_mask": mask, "span_starts": dummy, "span_ends": dummy},
        )
        out.append(vectors.astype(np.float32))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), dtype=np.float32)


def load_catalog(
    info: ModelInfo, embed: Callable[[list[str]], np.ndarray], override: str | Path | None
) -> Catalog | None:
    """The model's precomputed catalog, or a user's phrase file embedded now."""
    if override is not None:
        try:
            return Catalog.build(read_phrases(override), embed)
        except InputError as exc:  # a phrase too long to embed: named with its file
            if exc.path is not None:  # read_phrases names the file and line itself (an audit: the line was dropped)
                raise
            raise InputError(exc.reason, path=str(override)) from exc
    if not info.catalog_phrases:
        return None
    phrases = read_phrases(info.file(info.catalog_phrases), new=False)
    vec_file = info.file(info.catalog_vectors) if info.catalog_vectors else None
    if vec_file is not None and vec_file.is_file():
        vectors = np.load(vec_file).astype(np.float32)
        if vectors.shape != (len(phrases), info.dims):
            raise ModelError(
                f"{vec_file}: shape {vectors.shape} does not match "
                f"{len(phrases)} catalog phrases × {info.dims} dims"
            )
        return Catalog(tuple(phrases), vectors)
    return Catalog.build(phrases, embed)
