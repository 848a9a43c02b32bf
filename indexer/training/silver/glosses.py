"""Vectors for sense choice: sense glosses (cached on disk) and sentences, embedded in batches.

The vectors come from the model folder's type side (its ``type_vectors`` output, the embedding
the model's type phrases get); texts are embedded in chunks of similar length so that tens of
thousands of sentences cost little padding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ...type_side import embed_texts
from ...runtime import CPU, graph_for, open_session
from ..wordnet import Synset

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> unit vectors [n, dims]
EMBED_CHUNK = 128  # texts embedded in one batch


def gloss_text(s: Synset) -> str:
    """What a sense is embedded as: its lemmas, definition and examples (they read like the
    sentences they are compared with), cut at ~60 words."""
    words = f"{', '.join(s.lemmas[:3])}: {s.gloss}".split()
    return " ".join(words[:60])


class GlossVectors:
    """Gloss embeddings, cached on disk per embedding model (they do not depend on the data)."""

    def __init__(self, embed: Embed, cache_file: Path | None) -> None:
        self.embed = embed
        self.cache_file = cache_file
        self.vectors: dict[str, np.ndarray] = {}
        if cache_file and cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as z:
                    self.vectors = {str(k): v for k, v in zip(z["keys"], z["vectors"])}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # made again
                logging.getLogger(__name__).warning("%s: gloss vectors unreadable, embedded again (%s)", cache_file, exc)
                self.vectors = {}
        self._dirty = False

    def ensure(self, synsets: Iterable[Synset], *, progress: Callable[[int], None] | None = None) -> None:
        missing = {}
        for s in synsets:
            k = f"{s.pos}{s.offset}"
            if k not in self.vectors and k not in missing:
                missing[k] = gloss_text(s)
        if not missing:
            return
        keys = sorted(missing, key=lambda k: len(missing[k]))
        vecs = embed_sorted([missing[k] for k in keys], self.embed, progress=progress)
        for k, v in zip(keys, vecs):
            self.vectors[k] = v
        self._dirty = True

    def get(self, s: Synset) -> np.ndarray:
        return self.vectors[f"{s.pos}{s.offset}"]

    def save(self) -> None:
        """Keep the vectors for the next run; a folder that cannot be written costs that run the
        embedding, never this one's result (it is saved after all the work: a review)."""
        if not (self._dirty and self.cache_file):
            return
        keys = np.array(list(self.vectors))
        vecs = np.stack([self.vectors[k] for k in keys]).astype(np.float32)
        tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, keys=keys, vectors=vecs)
            tmp.replace(self.cache_file)
        except OSError as exc:
            logging.getLogger(__name__).warning("%s: gloss vectors not cached (%s)", self.cache_file, exc)
        finally:  # an interrupted save leaves no file of its own behind
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def embed_sorted(
    texts: Sequence[str],
    embed: Embed,
    *,
    chunk: int = EMBED_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed texts in chunks of similar length (little padding), returned in the input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        vecs = np.asarray(embed([texts[i] for i in idx]), dtype=np.float32)
        if out is None:
            out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
        out[idx] = vecs
        if progress:
            progress(len(idx))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def text_embedder(encoder, *, as_types: bool = False) -> Embed:
    """Unit vectors of raw texts (sentences, glosses) from a model folder's type side.

    The runtime's :func:`indexer.type_side.embed_texts`, one batch per call; not
    ``OnnxEncoder.embed_types``, which applies the type template and caches vectors across calls:
    the int8 graph's vectors depend on the other texts of their batch (dynamic activation
    quantisation), so a cached vector differs from the one this batch gives (the Familiarity
    figures of ``nerindex silver`` moved by up to 0.03 with it). ``as_types`` applies
    the template. Texts are cut at the model's ``max_length`` tokens (the last token kept).
    """
    template = encoder.info.type_template if as_types else "{}"
    # the encoder's CPU session gives each call one thread (its workers run windows side by side);
    # a batch of texts is one call, so it gets a session of all the cores (1.8x faster on 2 cores)
    session = open_session(graph_for(encoder.info, CPU), CPU) if encoder.provider == CPU else encoder.session

    def embed(texts: Sequence[str]) -> np.ndarray:
        # one batch per call, exactly the texts given: the caller's batches fix the vectors
        return embed_texts(
            session, encoder.tokenizer, [template.format(t) for t in texts],
            batch_size=max(1, len(texts)), max_length=encoder.info.max_length,
        )

    return embed
