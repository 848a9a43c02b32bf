"""Research script (issue 13): ask for an unseen type with several templates at once (prompt ensembles).

CLIP-style prompt ensembling: a phrase's query vector is the normalised mean of its embeddings in
several templates ("the name of a {}", "a {} called", ...) instead of one template's. Each scheme
gets its own unseen threshold by the calibration rule of ``nerindex eval --calibrate`` (best macro
set F1 of the validation split's unseen types, :func:`indexer.evaluation.calibration.calibrate`),
and is scored with ``nerindex eval``'s metrics (:func:`indexer.evaluation.metrics.score_query`)
over the shipped model's stored spans: ranked by best span + λ · passage similarity (λ of unseen
phrases), returned when a mention passes the threshold, marked where one does; dense passage
retrieval with the same query vector beside it. The "shipped" scheme reproduces EVALUATION.md's
figures for the shipped template, which checks the script.

The rule to choose by is the template rule (``choose_type_template.py``): the best span F1 of the
validation split's unseen types; ``--wide-validation`` adds, as a check, the validation split and
CrossNER's train splits as one corpus at the validation threshold (as ``marking_rules.py
--wide-validation`` scores marking rules).

    python docs/eval/template_ensembles.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.assets import default_model_dir
from indexer.encoder import OnnxEncoder
from indexer.type_side import embed_texts
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.calibration import calibrate
from indexer.evaluation.metrics import Ranked, ScoredSpan, macro, score_query
from indexer.evaluation.seen_types import group_of, training_from_card

sys.path.insert(0, str(Path(__file__).parent))
from marking_rules import WIDE_VALIDATION  # noqa: E402
from two_tier import DEV, SETS  # noqa: E402

SCHEMES = {
    "shipped: the name of a {}": ["the name of a {}"],
    "bare {}": ["{}"],
    "the name of a / the {}": ["the name of a {}", "the name of the {}"],
    "bare and the name of a {}": ["{}", "the name of a {}"],
    "the six best on validation": ["the name of a {}", "a {} called", "a named {}", "a {}", "a specific {}", "the name of the {}"],
    "all eleven templates": ["a {}", "the name of a {}", "the name of the {}", "a named {}", "{} name", "an example of a {}",
                             "a specific {}", "this is a {}", "a {} called", "names of {}", "an entity of type {}"],
}  # fmt: skip


def encode(files: list[Path], name: str, enc: OnnxEncoder) -> dict:
    """The benchmark, the passages' vectors and, per passage, its stored spans."""
    bench = benchmark_from_conll(files, name=name)
    docs = enc.encode(bench.corpus, batch_size=32)
    return {"bench": bench, "docs": docs, "passages": np.stack([d.vector for d in docs]),
            "spans": [np.stack([s.vector for s in d.spans]) if d.spans else None for d in docs]}  # fmt: skip


def query_vector(enc: OnnxEncoder, phrase: str, templates: list[str]) -> np.ndarray:
    """The normalised mean of the phrase's embeddings in ``templates``."""
    mean = embed_texts(enc.session, enc.tokenizer, [t.format(phrase) for t in templates]).mean(axis=0)
    return mean / np.linalg.norm(mean)


def rankings(data: dict, q: np.ndarray, weight: float) -> tuple[list[Ranked], list[Ranked]]:
    """(the system's ranking, dense passage retrieval's) for one query vector."""
    system, passage_sims = [], data["passages"] @ q
    for doc, vectors, p in zip(data["docs"], data["spans"], passage_sims):
        if vectors is None:
            continue
        sims = vectors @ q
        marks = tuple(ScoredSpan(s.start, s.end, float(x)) for s, x in zip(doc.spans, sims) if s.mention)
        best = max((m.similarity for m in marks), default=float("-inf"))
        system.append(Ranked(doc.passage.id, float(sims.max()) + weight * float(p), marks, best))
    dense = [Ranked(data["docs"][k].passage.id, float(passage_sims[k])) for k in np.argsort(-passage_sims)]
    return sorted(system, key=lambda r: -r.score), dense


def evaluate(enc: OnnxEncoder, sets: dict, names: tuple[str, ...], vector_of: Callable[[str], np.ndarray], training,
             threshold: float | None = None, group: str = "unseen") -> dict:  # fmt: skip
    """Macro figures over ``group``'s types of ``names`` at ``threshold`` (None: calibrate it here),
    each query asked for as ``vector_of(its phrase)``; ``span_negatives.py`` scores through it too."""
    runs = []
    for name in names:
        bench = sets[name]["bench"]
        for query in bench.scored_queries():
            if group_of(query, training) == group:
                v = vector_of(query.text)
                system, dense = rankings(sets[name], v, enc.info.passage_weight_for(query.text))
                runs.append((bench, query, bench.judged_only(query.id, system), bench.judged_only(query.id, dense)))
    if threshold is None:
        threshold = calibrate({f"{b.name}/{q.id}": s for b, q, s, _ in runs},
                              {f"{b.name}/{q.id}": b.qrels[q.id] for b, q, _, _ in runs})[0].threshold  # fmt: skip
    scores = [score_query(s, b.qrels[q.id], threshold=threshold, gold_spans=b.gold.get(q.id, {}), with_spans=True)
              for b, q, s, _ in runs]  # fmt: skip
    dense = [score_query(d, b.qrels[q.id]) for b, q, _, d in runs]
    out = {"threshold": round(float(threshold), 3), "types": len(runs),
           "r_precision": macro(s.r_precision for s in scores), "dense_r_precision": macro(s.r_precision for s in dense)}
    for key in ("set_f1", "span_hit_rate", "highlight_precision"):
        out[key] = macro(getattr(s, key) for s in scores)
    hit, precision = out["span_hit_rate"], out["highlight_precision"]
    out["span_f1"] = 2 * hit * precision / (hit + precision) if hit + precision else 0.0
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--wide-validation", action="store_true",
                        help="also score the validation split and CrossNER's train splits as one corpus (a check)")
    args = parser.parse_args()
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    training = training_from_card(enc.info.card)
    files = {**SETS, **({"wide": [*SETS["validation"], *WIDE_VALIDATION]} if args.wide_validation else {})}
    sets = {name: encode([args.data / f for f in fs], name, enc) for name, fs in files.items()}
    results = {}
    for label, templates in SCHEMES.items():
        def vector_of(phrase: str, templates: list[str] = templates) -> np.ndarray:
            return query_vector(enc, phrase, templates)

        row = {"validation": evaluate(enc, sets, ("validation",), vector_of, training)}
        t = row["validation"]["threshold"]
        if args.wide_validation:
            row["wide validation"] = evaluate(enc, sets, ("wide",), vector_of, training, t)
        row["dev"] = evaluate(enc, sets, DEV, vector_of, training, t)
        results[label] = {"templates": templates, **row}
        print(f"{label:28s} " + " | ".join(f"{k}: t {r['threshold']} R-Prec {r['r_precision']:.3f} (dense {r['dense_r_precision']:.3f}) "
                                           f"set F1 {r['set_f1']:.3f} hit {r['span_hit_rate']:.3f} hlP {r['highlight_precision']:.3f} "
                                           f"span F1 {r['span_f1']:.3f}" for k, r in row.items()), file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
