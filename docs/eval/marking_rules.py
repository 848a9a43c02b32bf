"""Research script (issue 13): why unseen types' mentions go unmarked, and what marking rules would give.

The shipped rule marks a returned passage's *mentions* (the marking head's spans) whose similarity
to the type passes the threshold, the same threshold that returns the passage. On types held out of
training the span hit rate is 0.580 (EVALUATION.md), the issue asks for 0.70. This script, with
the shipped model and the ``--all`` sets left as they are (a passage is returned when a mention
passes the threshold), measures

- where each gold mention of a returned relevant passage stands (``--breakdown``): marked; a
  mention covers it (IoU >= 0.5) but below the threshold; only a candidate covers it, above or below
  the threshold; a stored span overlaps it with IoU < 0.5; nothing overlaps it;
- the span hit rate and highlight precision of other rules for which mentions are marked:
  a lower marking threshold, a margin under the passage's best mention, and *span-level feedback*
  (mark by similarity to ``unit(q + w · unit(mean of the N best mentions' vectors))``, the first
  search's best mentions standing for the type's instances), with the threshold or the threshold +
  a margin; the shipped marks plus the passage's best candidate when it outscores every mention;
  and *competing types*: a mention is marked only when the queried type is among its ``R`` nearest
  phrases of the model's catalog (the catalog's own copy of the phrase left out, and with
  ``--compete-tau`` also every catalog phrase whose type vector has cosine >= tau with the query's,
  its near-synonyms), with the threshold or a lower marking threshold;
- *score normalisation* (Z-norm, ``--znorm``): a per-query marking threshold ``mu + z * sigma``, the
  mean and standard deviation of the query's similarity to a reference set of mentions (the
  validation split's, shipped-model style: fixed, whatever corpus is searched; or the searched
  corpus's own), so that one z serves types whose similarities sit at different heights;
- *topic words* (``--topic-tau``): a mention is not marked when its own text, embedded out of
  context as a phrase, has cosine >= tau with the bare type phrase ("novel", "Book" for "book"),
  with the threshold or a lower marking threshold.

Figures are macro over types, every type/set pair once as ``docs/eval/pool.py`` pools them, for the
dev sets' unseen and seen types and the validation split's (MultiCoNER en-train10 + WNUT-17 dev, where
the thresholds were chosen). The validation split's unseen types are the ones to choose by.

    python docs/eval/marking_rules.py --data ../shared/data --breakdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.assets import default_model_dir
from indexer.catalog import Catalog
from indexer.encoder import OnnxEncoder
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.metrics import match_spans, span_iou
from indexer.evaluation.seen_types import group_of, training_from_card

sys.path.insert(0, str(Path(__file__).parent))
from two_tier import DEV, SETS  # noqa: E402  (the same five sets: four dev sets and the validation split)

WIDE_VALIDATION = ["crossner/politics/train.txt", "crossner/literature/train.txt"]
KINDS = ("marked", "mention below", "candidate above", "candidate below", "overlap < 0.5", "none")


@dataclass(frozen=True)
class Scores:
    """One returned passage's spans as a rule sees them."""

    sims: np.ndarray  # similarity to the query vector
    marking: np.ndarray  # similarity to the marking vector (span-level feedback; else = sims)
    mention: np.ndarray  # the marking head's spans
    t: float  # the threshold that returned the passage
    best: float  # the passage's best mention
    others: np.ndarray  # [spans, competing catalog phrases] similarities
    topic: np.ndarray  # the span text's cosine with the bare type phrase (0 without --topic-tau)
    znorm: tuple[float, float]  # (mean, sd) of the query's similarity to the reference mentions


# A rule: a returned passage's Scores -> which spans are marked.
Rule = Callable[[Scores], np.ndarray]


def encode(files: list[Path], name: str, enc: OnnxEncoder, *, span_texts: bool = False) -> dict:
    """The benchmark and, per passage, its stored spans: (start, end) pairs, mention flags, vectors
    (and with ``span_texts`` each span's text embedded alone as a bare phrase)."""
    bench = benchmark_from_conll(files, name=name)
    docs = enc.encode(bench.corpus, batch_size=32)
    dims = docs[0].vector.shape[0]
    empty = np.zeros((0, dims), np.float32)
    out = {"bench": bench, "ids": [d.passage.id for d in docs],
           "spans": [[(s.start, s.end) for s in d.spans] for d in docs],
           "mention": [np.array([s.mention for s in d.spans], dtype=bool) for d in docs],
           "vectors": [np.stack([s.vector for s in d.spans]) if d.spans else empty for d in docs]}  # fmt: skip
    if span_texts:
        texts = [[d.passage.text[s.start:s.end] for s in d.spans] for d in docs]
        unique = sorted({t for ts in texts for t in ts})
        embedded = dict(zip(unique, enc.embed_phrases(unique)))
        out["text_vectors"] = [np.stack([embedded[t] for t in ts]) if ts else empty for ts in texts]
    return out


def reference_stats(reference: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the query's similarity to the reference mentions (Z-norm)."""
    sims = reference @ q
    return float(sims.mean()), float(sims.std())


def mentions_of(data: dict) -> np.ndarray:
    """Every mention vector of an encoded set (a Z-norm reference)."""
    return np.concatenate([v[m] for v, m in zip(data["vectors"], data["mention"]) if m.any()])


def marking_vector(data: dict, q: np.ndarray, t: float, weight: float, top: int) -> np.ndarray:
    """Span-level feedback: q moved towards the mean of the ``top`` best mentions that pass ``t``."""
    if not weight:
        return q
    sims = [(float(s), i, j) for i, (v, m) in enumerate(zip(data["vectors"], data["mention"]))
            for j, s in enumerate(v @ q) if m[j] and s >= t]  # fmt: skip
    best = sorted(sims, reverse=True)[:top]
    if not best:
        return q
    centre = np.mean([data["vectors"][i][j] for _, i, j in best], axis=0)
    moved = q + weight * centre / np.linalg.norm(centre)
    return moved / np.linalg.norm(moved)


def competitors(catalog: Catalog, q: np.ndarray, phrase: str, tau: float | None) -> np.ndarray:
    """The catalog's type vectors that compete with the query's: all but the phrase itself and,
    with ``tau``, those of cosine >= tau with the query (near-synonyms that should not compete)."""
    keep = np.array([p.lower() != phrase.lower() for p in catalog.phrases])
    if tau is not None:
        keep &= catalog.vectors @ q < tau
    return catalog.vectors[keep]


def score(data: dict, q: np.ndarray, query, t: float, rule: Rule, mark_q: np.ndarray, others: np.ndarray,
          bare_q: np.ndarray | None, znorm: tuple[float, float]) -> tuple[float | None, float | None]:  # fmt: skip
    """Span hit rate and highlight precision of one query: returned = passages with a mention >= t."""
    relevant, gold = data["bench"].qrels[query.id], data["bench"].gold.get(query.id, {})
    scope = data["bench"].judged.get(query.id)  # passages of files that do not label the type: not judged
    n_gold = n_hit = n_pred = n_correct = 0
    for k, (pid, spans, mention, vectors) in enumerate(zip(data["ids"], data["spans"], data["mention"], data["vectors"])):
        sims = vectors @ q
        if not mention.any() or sims[mention].max() < t or (scope is not None and pid not in scope):
            continue
        topic = data["text_vectors"][k] @ bare_q if bare_q is not None else np.zeros(len(spans))
        marked = rule(Scores(sims, vectors @ mark_q, mention, t, float(sims[mention].max()), vectors @ others.T,
                             topic, znorm))  # fmt: skip
        pred = [sp for sp, m in zip(spans, marked) if m]
        g = gold.get(pid, ()) if pid in relevant else ()
        hit, correct = match_spans(g, pred)
        n_gold, n_hit, n_pred, n_correct = n_gold + len(g), n_hit + hit, n_pred + len(pred), n_correct + correct
    return (n_hit / n_gold if n_gold else None), (n_correct / n_pred if n_pred else None)


def breakdown(data: dict, q: np.ndarray, query, t: float) -> Counter:
    """Where each gold mention of a returned relevant passage stands (shares of :data:`KINDS`)."""
    relevant, gold = data["bench"].qrels[query.id], data["bench"].gold.get(query.id, {})
    out: Counter = Counter()
    for pid, spans, mention, vectors in zip(data["ids"], data["spans"], data["mention"], data["vectors"]):
        sims = vectors @ q
        if pid not in relevant or not mention.any() or sims[mention].max() < t:
            continue
        for g in gold.get(pid, ()):
            cover = [k for k, sp in enumerate(spans) if span_iou(g, sp) >= 0.5]
            if any(mention[k] and sims[k] >= t for k in cover):
                out["marked"] += 1
            elif any(mention[k] for k in cover):
                out["mention below"] += 1
            elif cover:
                out["candidate above" if max(sims[k] for k in cover) >= t else "candidate below"] += 1
            else:
                out["overlap < 0.5" if any(s < g[1] and g[0] < e for s, e in spans) else "none"] += 1
    n = sum(out.values())
    return Counter({k: v / n for k, v in out.items()}) if n else Counter()


def boundaries(data: dict, q: np.ndarray, query, t: float) -> list[tuple[str, str, str]]:
    """The gold mentions of a returned relevant passage that stored spans overlap only with IoU < 0.5:
    (how the best-overlapping span sits: inside the mention, containing it, or across its edge;
    the mention's text; that span's text)."""
    relevant, gold = data["bench"].qrels[query.id], data["bench"].gold.get(query.id, {})
    texts = {p.id: p.text for p in data["bench"].corpus}
    out = []
    for pid, spans, mention, vectors in zip(data["ids"], data["spans"], data["mention"], data["vectors"]):
        if pid not in relevant or not mention.any() or (vectors @ q)[mention].max() < t:
            continue
        for g in gold.get(pid, ()):
            near = [sp for sp in spans if sp[0] < g[1] and g[0] < sp[1]]
            if not near or any(span_iou(g, sp) >= 0.5 for sp in spans):
                continue
            s, e = max(near, key=lambda sp: span_iou(g, sp))
            kind = "inside" if g[0] <= s and e <= g[1] else "contains" if s <= g[0] and g[1] <= e else "across"
            out.append((kind, texts[pid][g[0]:g[1]], texts[pid][s:e]))
    return out


def rules(args: argparse.Namespace) -> dict[str, tuple[Rule, float, int]]:
    """Label -> (rule, feedback weight, feedback passages)."""
    out: dict[str, tuple[Rule, float, int]] = {"threshold (shipped)": (lambda p: p.mention & (p.sims >= p.t), 0.0, 0)}
    for v in args.mark_at:
        out[f"marking threshold {v}"] = ((lambda v: lambda p: p.mention & (p.sims >= v))(v), 0.0, 0)
    for d in args.below_best:
        out[f"best mention less {d}"] = ((lambda d: lambda p: p.mention & (p.sims >= p.best - d))(d), 0.0, 0)
    for w in args.feedback:
        for n in args.feedback_top:
            for d in args.feedback_margin:
                out[f"span feedback w {w} N {n}, threshold + {d}"] = ((lambda d: lambda p: p.mention & (p.marking >= p.t + d))(d), w, n)
    out["every mention"] = (lambda p: p.mention.copy(), 0.0, 0)
    out["threshold + the best candidate above every mention"] = (_best_candidate, 0.0, 0)
    for d in args.candidate_margin:
        out[f"threshold + candidates at threshold + {d}"] = (
            (lambda d: lambda p: p.mention & (p.sims >= p.t) | ~p.mention & (p.sims >= p.t + d))(d), 0.0, 0)  # fmt: skip
    for at in (None, *args.compete_at):
        for r in args.compete_ranks:
            where = "threshold" if at is None else f"marking threshold {at}"
            out[f"{where}, the type among the catalog's best {r}"] = ((lambda at, r: lambda p: (
                p.mention & (p.sims >= (p.t if at is None else at)) & ((p.others > p.sims[:, None]).sum(axis=1) < r)))(at, r), 0.0, 0)  # fmt: skip
    for z in args.znorm:
        out[f"Z-norm ({args.znorm_reference} mentions), mu + {z} sd"] = (
            (lambda z: lambda p: p.mention & (p.sims >= p.znorm[0] + z * p.znorm[1]))(z), 0.0, 0)  # fmt: skip
    for at in (None, *args.compete_at):
        for tau in args.topic_tau:
            where = "threshold" if at is None else f"marking threshold {at}"
            out[f"{where}, no topic words (text cosine >= {tau})"] = ((lambda at, tau: lambda p: (
                p.mention & (p.sims >= (p.t if at is None else at)) & (p.topic < tau)))(at, tau), 0.0, 0)  # fmt: skip
    return out


def _best_candidate(p: Scores) -> np.ndarray:
    """The shipped marks, plus the passage's best candidate when it passes the threshold and
    outscores every mention (common-noun types such as "literary genre" are candidates)."""
    marked = p.mention & (p.sims >= p.t)
    if (~p.mention).any():
        k = np.flatnonzero(~p.mention)[np.argmax(p.sims[~p.mention])]
        marked[k] = p.sims[k] >= p.t and p.sims[k] > p.best
    return marked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--breakdown", action="store_true", help="also where the gold mentions stand, per unseen type")
    parser.add_argument("--boundaries", action="store_true",
                        help="also the gold mentions stored spans overlap only with IoU < 0.5: how, per unseen type")
    parser.add_argument("--mark-at", type=float, nargs="*", default=[0.22, 0.2, 0.18, 0.15, 0.1])
    parser.add_argument("--below-best", type=float, nargs="*", default=[0.05, 0.1, 0.15])
    parser.add_argument("--feedback", type=float, nargs="*", default=[0.5, 1.0, 2.0])
    parser.add_argument("--feedback-top", type=int, nargs="*", default=[5, 10, 20])
    parser.add_argument("--feedback-margin", type=float, nargs="*", default=[0.0, 0.05])
    parser.add_argument("--candidate-margin", type=float, nargs="*", default=[],
                        help="also mark candidates whose similarity passes the threshold plus this margin")
    parser.add_argument("--compete-ranks", type=int, nargs="*", default=[1, 10, 30, 60],
                        help="competing types: the queried type must be among a mention's R nearest catalog phrases")
    parser.add_argument("--compete-at", type=float, nargs="*", default=[0.18],
                        help="competing types: also with these marking thresholds (besides the threshold)")
    parser.add_argument("--compete-tau", type=float, default=None,
                        help="competing types: leave out catalog phrases this close to the query (cosine)")
    parser.add_argument("--znorm", type=float, nargs="*", default=[1.5, 2.0, 2.5, 3.0],
                        help="Z-norm: mark mentions at mu + z * sd of the query's similarity to reference mentions")
    parser.add_argument("--znorm-reference", choices=("validation", "own"), default="validation",
                        help="Z-norm's reference mentions: the validation split's (fixed; with --wide-validation the "
                             "wider split's) or the searched set's own")
    parser.add_argument("--topic-tau", type=float, nargs="*", default=[],
                        help="topic words: do not mark a mention whose text alone has cosine >= tau with the bare "
                             "phrase (embeds every span text: about a minute more)")
    parser.add_argument("--wide-validation", action="store_true",
                        help="add CrossNER's train splits (never trained on, not dev) to the validation split: "
                             "its unseen types become 14 instead of the 5 medical ones")
    args = parser.parse_args()
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    training = training_from_card(enc.info.card)
    chosen = dict(SETS)
    if args.wide_validation:
        chosen["validation"] = [*SETS["validation"], *WIDE_VALIDATION]
    sets = {name: encode([args.data / f for f in files], name, enc, span_texts=bool(args.topic_tau))
            for name, files in chosen.items()}  # fmt: skip
    validation_mentions = mentions_of(sets["validation"])
    queries = {}
    for name, data in sets.items():
        qs = data["bench"].scored_queries()
        bare = enc.embed_phrases([q.text for q in qs])
        queries[name] = [(q, v, group_of(q, training), b) for q, v, b in zip(qs, enc.embed_types([q.text for q in qs]), bare)]
    results: dict[str, dict] = {}
    if args.boundaries:
        cut = {f"{name}: {q.text}": boundaries(sets[name], v, q, enc.info.threshold_for(q.text))
               for name in DEV for q, v, g, _ in queries[name] if g == "unseen"}  # fmt: skip
        kinds = Counter(kind for found in cut.values() for kind, _, _ in found)
        results["boundaries"] = {"kinds": dict(kinds), "per type": {k: len(v) for k, v in cut.items() if v},
                                 "examples": {k: [f"{m!r} as {sp!r} ({kind})" for kind, m, sp in v[:5]] for k, v in cut.items() if v}}  # fmt: skip
        print(f"unseen gold mentions overlapped only with IoU < 0.5: {dict(kinds)}; per type: "
              + ", ".join(f"{k} {len(v)}" for k, v in sorted(cut.items(), key=lambda kv: -len(kv[1])) if v), file=sys.stderr)  # fmt: skip
    if args.breakdown:
        per_type = {f"{name}: {q.text}": breakdown(sets[name], v, q, enc.info.threshold_for(q.text))
                    for name in DEV for q, v, g, _ in queries[name] if g == "unseen"}  # fmt: skip
        pooled = {k: round(float(np.mean([c.get(k, 0.0) for c in per_type.values() if c])), 3) for k in KINDS}
        results["breakdown"] = {"pooled unseen": pooled, **{k: {kk: round(v, 3) for kk, v in c.items()} for k, c in per_type.items()}}
        print("unseen gold mentions in returned relevant passages, macro over types: "
              + ", ".join(f"{k} {v:.3f}" for k, v in pooled.items()), file=sys.stderr)  # fmt: skip
    if args.znorm:
        results["znorm reference"] = {
            f"{name}: {q.text}": [round(x, 3) for x in reference_stats(
                validation_mentions if args.znorm_reference == "validation" else mentions_of(sets[name]), v)]
            for name in DEV for q, v, g, _ in queries[name] if g == "unseen"}  # fmt: skip
    for label, (rule, weight, top) in rules(args).items():
        row: dict[str, dict] = {}
        for where, names in (("dev", DEV), ("validation", ("validation",))):
            per: dict[str, list] = defaultdict(list)
            for name in names:
                reference = validation_mentions if args.znorm_reference == "validation" else mentions_of(sets[name])
                for q, v, g, bare in queries[name]:
                    t = enc.info.threshold_for(q.text)
                    others = competitors(enc.catalog, v, q.text, args.compete_tau)
                    per[g].append(score(sets[name], v, q, t, rule, marking_vector(sets[name], v, t, weight, top), others,
                                        bare if args.topic_tau else None, reference_stats(reference, v)))  # fmt: skip
            for g, pairs in per.items():
                hit = float(np.mean([h for h, _ in pairs if h is not None]))
                precision = float(np.mean([p for _, p in pairs if p is not None]))
                row[f"{where} {g}"] = {"span_hit_rate": round(hit, 4), "highlight_precision": round(precision, 4),
                                       "span_f1": round(2 * hit * precision / (hit + precision), 4) if hit + precision else 0.0,
                                       "n": len(pairs)}  # fmt: skip
        results[label] = row
        print(f"{label:44s} " + " | ".join(f"{k} hit {r['span_hit_rate']:.3f} hlP {r['highlight_precision']:.3f} F1 {r['span_f1']:.3f}"
                                           for k, r in row.items() if k != "validation seen"), file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
