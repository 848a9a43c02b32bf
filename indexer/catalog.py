"""The type catalog: type phrases embedded once, used to tag stored spans with keyword labels.

Labels let Kibana/KQL users filter ``spans.labels: "politician"`` without vectors. They are a
convenience index over the same space that vector search uses, not a separate classifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InputError
from .model_folder import normal_phrase, unread_at
from .stores.base import MAX_PHRASE_CHARS
from .text import unicode_problem

LABEL_BLOCK = 512  # spans labelled per matrix product (Catalog.label)


def read_phrases(path: str | Path, *, new: bool = True) -> list[str]:
    """One phrase per line; blank lines and ``#`` comments ignored; duplicates removed in order.

    A byte-order mark (Notepad writes one) is not part of the first phrase: kept, it would label
    spans with a phrase that looks right and matches no filter and no trained-on type. Elsewhere
    such a character (a BOM of a second file joined on, a soft hyphen, U+200B) is refused at its
    line, and so is a phrase the model reads as an earlier one ("Person" after "person"): both would
    take a span's `labels_per_span` places with one vector (the labels audit, round 29). A model
    folder's own catalog (``new`` False) is read as export wrote it: checked then, and fixed only
    by exporting again (a review: folders exported before the check would be refused whole)."""
    seen: dict[str, None] = {}
    first_line: dict[str, tuple[str, int]] = {}  # normal_phrase → (phrase, line)
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read catalog: {exc.strerror}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"catalog is not valid UTF-8 ({exc.reason})", path=str(path)) from exc
    for lineno, line in enumerate(lines, start=1):
        phrase = line.strip()
        if phrase and not phrase.startswith("#"):
            # what a search refuses as a type phrase, a label cannot be (an audit: a NUL and a
            # 300-character phrase were exported into a model's catalog.txt)
            problem = unicode_problem(phrase)
            if problem is not None:
                raise InputError(f"the phrase holds {problem}", path=str(path), line=lineno)
            if len(phrase) > MAX_PHRASE_CHARS:
                raise InputError(f"the phrase is longer than {MAX_PHRASE_CHARS} characters, the most a search takes",
                                 path=str(path), line=lineno)  # fmt: skip
            if new:
                _check_read_alike(phrase, lineno, first_line, str(path))
            seen.setdefault(phrase, None)
    if not seen:
        raise InputError("catalog has no phrases", path=str(path))
    return list(seen)


def _check_read_alike(phrase: str, lineno: int, first_line: dict[str, tuple[str, int]], path: str) -> None:
    """Refuse an invisible character in ``phrase``, or a phrase the model reads as an earlier line's."""
    at = unread_at(phrase)
    if at is not None:
        raise InputError(f"the phrase holds U+{ord(phrase[at]):04X}, a character the model does not read, at character "
                         f"{at + 1}: a label would keep it, and a filter typed without it matches nothing",
                         path=path, line=lineno)  # fmt: skip
    earlier, line = first_line.setdefault(normal_phrase(phrase), (phrase, lineno))
    if earlier != phrase:
        raise InputError(f"the phrase is {earlier!r} of line {line} to the model (it reads case, accents and spacing "
                         "alike): both would label the same spans, keep one", path=path, line=lineno)  # fmt: skip


@dataclass(frozen=True)
class Catalog:
    """Phrases and their unit type vectors, row for row."""

    phrases: tuple[str, ...]
    vectors: np.ndarray  # float32 [n, dims]

    @classmethod
    def build(cls, phrases: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> "Catalog":
        return cls(tuple(phrases), np.asarray(embed(list(phrases)), dtype=np.float32))

    def source(self, type_template: str) -> str:
        """What identifies the labels this catalog gives (recorded in the store's model stamp).

        The phrases and the template they are embedded with, not the vectors: those differ in the
        last bits between the CPU and CUDA graphs, and the labels are meant to be the same.
        """
        text = "\n".join((type_template, *self.phrases))
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def label(self, vectors: np.ndarray, *, k: int, threshold: float | np.ndarray) -> list[tuple[str, ...]]:
        """For each row vector, up to ``k`` nearest phrases with cosine ≥ ``threshold``, best first
        (``threshold``: one value, or one per phrase, ``ModelInfo.label_thresholds``)."""
        if len(vectors) == 0 or k <= 0:
            return [() for _ in range(len(vectors))]
        vectors = np.asarray(vectors, dtype=np.float32)
        # blocks of rows: a call labels every span of an encode (~7k), and its [spans, phrases]
        # similarities and int64 partition indices (~40 MB at once) cost more in fresh pages than
        # in arithmetic on these VMs (0.03–0.5 s a call); a block's reuse the same memory
        out: list[tuple[str, ...]] = []
        for at in range(0, len(vectors), LABEL_BLOCK):
            out.extend(self._label_block(vectors[at : at + LABEL_BLOCK], k, threshold))
        return out

    def _label_block(self, vectors: np.ndarray, k: int, threshold: float | np.ndarray) -> list[tuple[str, ...]]:
        sims = vectors @ self.vectors.T
        # each phrase's threshold before the k best: a trained phrase under its own (higher) one
        # took a place among the k and left out an unseen phrase over its own (an audit)
        sims = np.where(sims >= (threshold if np.ndim(threshold) == 0 else threshold[None, :]), sims, -np.inf)
        k = min(k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")  # all rows of the block at once
        top, best = np.take_along_axis(top, order, axis=1), np.take_along_axis(best, order, axis=1)
        passed = np.isfinite(best)
        phrases = self.phrases
        return [tuple(phrases[i] for i, ok in zip(idx, oks) if ok) for idx, oks in zip(top.tolist(), passed.tolist())]
