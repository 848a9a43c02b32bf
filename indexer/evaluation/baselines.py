"""The baselines every evaluation run scores beside the system, on the same corpus and queries.

- **BM25** over the passage text with the type phrase as the query (the ``bm25s`` library; English
  stop words removed and Snowball stemming when PyStemmer is installed). Passages sharing no term
  with the phrase are not retrieved.
- **Dense passage retrieval**: cosine of the backbone's mean-pooled sentence embedding of each
  passage to the type phrase's vector — ranks every passage, returns no spans.
- **Span vectors** (used for the backbone's untrained span vectors): passage score = max cosine over
  its detected spans, exactly the system's scoring rule but on other vectors.

Every function returns ``{query id: [Ranked, …]}`` best first, ties broken by passage order.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from ..errors import NerindexError
from .metrics import Ranked, ScoredSpan

log = logging.getLogger(__name__)

BM25_SETTINGS: dict[str, Any] = {"method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en"}


def _stemmer() -> Any:
    """PyStemmer's English Snowball stemmer (bm25s calls its ``stemWords``), or None."""
    try:
        import Stemmer  # PyStemmer
    except ModuleNotFoundError:
        log.warning("PyStemmer not installed: BM25 runs without stemming")
        return None
    return Stemmer.Stemmer("english")


def bm25s_module() -> Any:
    try:
        import bm25s
    except ModuleNotFoundError as exc:
        raise NerindexError(
            "the BM25 baseline needs the bm25s package: pip install 'nerindex[eval]' "
            "(or leave bm25 out of --methods)"
        ) from exc
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25_description() -> str:
    """How the BM25 baseline was configured, for reports."""
    bm25s = bm25s_module()

    stem = "Snowball stemming" if _stemmer() is not None else "no stemming"
    s = BM25_SETTINGS
    return f"bm25s {bm25s.__version__} ({s['method']}, k1={s['k1']}, b={s['b']}, English stop words, {stem})"


def bm25_rankings(
    ids: Sequence[str], texts: Sequence[str], queries: Sequence[tuple[str, str]]
) -> dict[str, list[Ranked]]:
    """Rank passages by BM25 of their text against each ``(query id, phrase)``."""
    bm25s = bm25s_module()

    stemmer = _stemmer()
    s = BM25_SETTINGS
    corpus_tokens = bm25s.tokenize(list(texts), stopwords=s["stopwords"], stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25(method=s["method"], k1=s["k1"], b=s["b"])
    retriever.index(corpus_tokens, show_progress=False)
    vocab = corpus_tokens.vocab  # token string -> id
    out: dict[str, list[Ranked]] = {}
    for qid, phrase in queries:
        q_tokens = bm25s.tokenize(
            [phrase], stopwords=s["stopwords"], stemmer=stemmer, return_ids=False, show_progress=False
        )[0]
        known = [t for t in q_tokens if t in vocab]
        if not known:
            out[qid] = []
            continue
        scores = np.asarray(retriever.get_scores(known), dtype=np.float64)
        out[qid] = _rank(ids, scores, keep=scores > 0)
    return out


def _rank(ids: Sequence[str], scores: np.ndarray, *, keep: np.ndarray | None = None) -> list[Ranked]:
    order = np.argsort(-scores, kind="stable")
    if keep is not None:
        order = order[keep[order]]
    return [Ranked(ids[i], float(scores[i])) for i in order]


def dense_rankings(
    ids: Sequence[str], passage_vectors: np.ndarray, queries: Sequence[tuple[str, np.ndarray]]
) -> dict[str, list[Ranked]]:
    """Rank every passage by the cosine of its (unit) vector to each query's (unit) vector."""
    out: dict[str, list[Ranked]] = {}
    for qid, qvec in queries:
        scores = passage_vectors.astype(np.float64) @ np.asarray(qvec, dtype=np.float64)
        out[qid] = _rank(ids, scores)
    return out


def span_rankings(
    ids: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int, np.ndarray] | tuple[int, int, np.ndarray, bool]]],
    queries: Sequence[tuple[str, np.ndarray]],
) -> dict[str, list[Ranked]]:
    """Passage score = max cosine of its spans to the query; its mentions returned with their cosines.

    ``spans[i]`` holds ``(start, end, unit vector)`` or ``(start, end, unit vector, mention)`` for
    passage ``ids[i]`` (without the flag a span is a mention). By the system's rule
    (``Store.search``) every span ranks its passage, but only mentions are marked and gate the
    answer set (``Ranked.match``: the best mention's cosine): a passage ranked through a candidate
    alone is in no answer set. A passage without spans cannot be retrieved, as in the store.
    """
    owner: list[int] = []
    offsets: list[tuple[int, int]] = []
    vectors: list[np.ndarray] = []
    flags: list[bool] = []
    for i, plist in enumerate(spans):
        for start, end, vec, *mention in plist:
            owner.append(i)
            offsets.append((start, end))
            vectors.append(np.asarray(vec, dtype=np.float32))
            flags.append(bool(mention[0]) if mention else True)
    out: dict[str, list[Ranked]] = {}
    if not vectors:
        return {qid: [] for qid, _ in queries}
    matrix = np.stack(vectors)
    owner_arr = np.asarray(owner)
    starts = np.flatnonzero(np.r_[True, owner_arr[1:] != owner_arr[:-1]])
    passages = owner_arr[starts]
    bounds = list(starts) + [len(owner)]
    qmat = np.stack([np.asarray(v, dtype=np.float32) for _, v in queries])
    sims = (matrix @ qmat.T).astype(np.float64)  # [spans, queries]
    every_span_a_mention = all(flags)
    for qi, (qid, _) in enumerate(queries):
        col = sims[:, qi]
        best = np.maximum.reduceat(col, starts)
        order = np.argsort(-best, kind="stable")
        ranked = []
        for j in order:
            lo, hi = bounds[j], bounds[j + 1]
            marks = sorted(
                (ScoredSpan(offsets[k][0], offsets[k][1], float(col[k])) for k in range(lo, hi) if flags[k]),
                key=lambda s: -s.similarity,
            )
            match = None if every_span_a_mention else (marks[0].similarity if marks else float("-inf"))
            ranked.append(Ranked(ids[passages[j]], float(best[j]), tuple(marks), match))
        out[qid] = ranked
    return out
