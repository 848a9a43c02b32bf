"""Research script (issue 13): mark candidates for types the corpus says are made of common nouns.

Where the unseen types' gold mentions stand (``marking_rules.py --breakdown``, model 0.5.0): 0.098
of them are covered by a *candidate* (the silver head's span, never marked) that passes the
threshold, 71 % of "literary genre"'s ("novel", "short story"). Marking every candidate that passes
marks topic words for the other types ("novel" for "book"), so highlight precision falls
(EVALUATION.md). This script measures a query-time rule that asks the searched corpus which kind of
span a type matches: among the query's ``N`` most similar stored spans of the corpus (mentions and
candidates, what a kNN over span vectors returns), the share ``c`` that are candidates. A type whose
best matches are mostly candidates is one whose instances are common nouns ("literary genre",
"disease"), and its candidates that pass the threshold are marked too; for every other type only
mentions are marked, as shipped. The ``--all`` sets stay gated by mentions (set F1 and R-Precision do
not move), except in the *gate* variant, where a noun type's candidates also return passages.

The rule's family (``N`` and the share ``s``) is fixed here before any dev figure; it is chosen by
span F1 of the validation split's unseen types (``marking_rules.py``'s rule), the wider split
(CrossNER's train splits) as a check, and only then scored on the dev sets.

    python docs/eval/noun_types.py --data ../shared/data --cache .cache/noun-types.pkl
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.assets import default_model_dir
from indexer.encoder import OnnxEncoder
from indexer.evaluation.metrics import match_spans
from indexer.evaluation.seen_types import group_of, training_from_card

sys.path.insert(0, str(Path(__file__).parent))
from marking_rules import WIDE_VALIDATION, encode  # noqa: E402
from two_tier import DEV, SETS  # noqa: E402

SPLITS = {"validation": SETS["validation"], "wide validation": WIDE_VALIDATION}


def unseen_queries(data_dir: Path, enc: OnnxEncoder, cache: Path | None) -> tuple[dict, dict]:
    """The dev sets and both validation splits encoded (read from ``cache`` when it exists, written
    to it otherwise), and per set its unseen queries with their vectors."""
    if cache and cache.exists():
        sets = pickle.loads(cache.read_bytes())
    else:
        chosen = {**{k: v for k, v in SETS.items() if k != "validation"}, **SPLITS}
        sets = {name: encode([data_dir / f for f in files], name, enc) for name, files in chosen.items()}
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps(sets))
    training = training_from_card(enc.info.card)
    queries = {}
    for name, data in sets.items():
        qs = [q for q in data["bench"].scored_queries() if group_of(q, training) == "unseen"]
        queries[name] = list(zip(qs, enc.embed_types([q.text for q in qs])))
    return sets, queries


def candidate_share(data: dict, q: np.ndarray, top: int) -> float:
    """The share of candidates among the corpus's ``top`` spans most similar to ``q``."""
    sims = np.concatenate([v @ q for v in data["vectors"] if len(v)])
    mention = np.concatenate([m for v, m in zip(data["vectors"], data["mention"]) if len(v)])
    best = np.argsort(-sims)[:top]
    return float((~mention[best]).mean())


# A marking rule: (passage index, its spans' similarities, its mention flags) -> (the spans marked,
# whether the passage is returned)
Rule = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, bool]]


def score(data: dict, q: np.ndarray, query, rule: Rule) -> dict:
    """Span hit rate, highlight precision and set F1 of one query whose returned passages and marks
    ``rule`` decides, each type judged on the files that label it (as ``nerindex eval``)."""
    bench = data["bench"]
    relevant, gold = bench.qrels[query.id], bench.gold.get(query.id, {})
    scope = bench.judged.get(query.id)
    n_rel = len(relevant if scope is None else relevant & scope)
    n_gold = n_hit = n_pred = n_correct = returned = returned_rel = 0
    for k, (pid, spans, mention, vectors) in enumerate(zip(data["ids"], data["spans"], data["mention"], data["vectors"])):
        if scope is not None and pid not in scope or not len(spans):
            continue
        marked, kept = rule(k, vectors @ q, mention)
        if not kept:
            continue
        returned += 1
        returned_rel += pid in relevant
        pred = [sp for sp, m in zip(spans, marked) if m]
        g = gold.get(pid, ()) if pid in relevant else ()
        hit, correct = match_spans(g, pred)
        n_gold, n_hit, n_pred, n_correct = n_gold + len(g), n_hit + hit, n_pred + len(pred), n_correct + correct
    p = returned_rel / returned if returned else 0.0
    r = returned_rel / n_rel if n_rel else 0.0
    return {"hit": n_hit / n_gold if n_gold else None, "hlp": n_correct / n_pred if n_pred else None,
            "set_f1": 2 * p * r / (p + r) if p + r else 0.0}  # fmt: skip


def noun_rule(t: float, noun: bool, gate: bool) -> Rule:
    """A passage is returned when a mention (or, for a noun type with ``gate``, any span) passes
    ``t``; mentions that pass are marked, and candidates that pass too when ``noun``."""
    def rule(_k: int, sims: np.ndarray, mention: np.ndarray) -> tuple[np.ndarray, bool]:
        passing = sims >= t
        return passing & (mention | noun), bool((passing if noun and gate else mention & passing).any())
    return rule


def split_rows(sets: dict, queries: dict, rule_for: Callable[[str, object, np.ndarray], Rule]) -> dict:
    """One rule's pooled figures on each split (``rule_for(set name, query, its vector)`` makes the
    rule of one query), with the dev sets' per-type figures under "dev per type"."""
    row: dict = {}
    for where, names in (("validation", ("validation",)), ("wide validation", ("wide validation",)), ("dev", DEV)):
        per = {f"{name}: {q.text}": score(sets[name], v, q, rule_for(name, q, v)) for name in names for q, v in queries[name]}
        row[where] = pooled_row(list(per.values()))
        if where == "dev":
            row["dev per type"] = per
    return row


def pooled_row(per: list[dict]) -> dict:
    """Macro figures over a group's queries."""
    hit, hlp = mean([p["hit"] for p in per]), mean([p["hlp"] for p in per])
    return {"span_hit": round(hit, 4), "highlight_p": round(hlp, 4), "span_f1": round(2 * hit * hlp / (hit + hlp), 4),
            "set_f1": round(mean([p["set_f1"] for p in per]), 4), "types": len(per)}  # fmt: skip


def report(label: str, row: dict) -> None:
    """One rule's figures on stderr, a split a column."""
    print(f"{label:34s} " + " | ".join(f"{w}: hit {r['span_hit']:.3f} hlP {r['highlight_p']:.3f} F1 {r['span_f1']:.3f} "
                                       f"setF1 {r['set_f1']:.3f}" for w, r in row.items() if "types" in r), file=sys.stderr)  # fmt: skip


def write(results: dict, out: Path | None) -> None:
    text = json.dumps(results, indent=1)
    if out:
        out.write_text(text + "\n")
    else:
        print(text)


def mean(xs: list) -> float:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The options these marking-rule scripts share: the data, the model, the cache of the encoded
    sets (this script's, made once) and the JSON to write."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--cache", type=Path, default=None, help="a pickle of the encoded sets, made once (noun_types.py's)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    return parser


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--top", type=int, nargs="*", default=[20, 50, 100])
    parser.add_argument("--share", type=float, nargs="*", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    args = parser.parse_args()
    enc = OnnxEncoder.from_dir(args.model, device="cpu")
    sets, queries = unseen_queries(args.data, enc, args.cache)
    shares = {name: {q.text: {n: candidate_share(sets[name], v, n) for n in args.top} for q, v in qs}
              for name, qs in queries.items()}  # fmt: skip
    rules: dict[str, tuple[int, float, bool]] = {"shipped (mentions only)": (0, 2.0, False),
                                                  "every candidate that passes": (0, -1.0, False)}  # fmt: skip
    for n in args.top:
        for s in args.share:
            rules[f"N {n}, share >= {s}"] = (n, s, False)
            rules[f"N {n}, share >= {s}, gate"] = (n, s, True)
    results: dict = {"candidate share": {k: {q: {str(n): round(c, 3) for n, c in v.items()} for q, v in d.items()}
                                          for k, d in shares.items()}}  # fmt: skip
    for label, (n, s, gate) in rules.items():
        row = split_rows(sets, queries, lambda name, q, _v, n=n, s=s, gate=gate: noun_rule(
            enc.info.threshold_for(q.text), s < 0 or (n > 0 and shares[name][q.text][n] >= s), gate))
        results[label] = row
        report(label, row)
    write(results, args.out)

if __name__ == "__main__":
    main()
