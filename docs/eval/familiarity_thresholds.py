"""Research script (issue 13): an unseen phrase's threshold that follows how familiar it is.

The shipped model uses 0.38 for the 31 trained-on phrases and 0.21 for any other. Here the unseen
phrase's threshold follows a per-query familiarity score f, computed at query time (no store change):

  f_train = max cosine of the query's type vector as searched (unseen template "the name of a {}",
            enc.embed_types) to the 31 training-type vectors (bare phrases, enc.embed_types of the
            phrases in model.json training.types, which the model embeds bare);
  f_cat   = max cosine of the same query vector to the model's catalog vectors (catalog.npy, bare
            phrases), the catalog's own copy of the queried phrase left out (case-insensitive).

Variant A: only the marking threshold follows f (returned --all sets at the shipped threshold).
Variant B: the same threshold returns passages too (set P/R/F1 of the --all sets change).
Seen and coarse-but-seen phrases keep 0.38 in every rule; coarse unseen ("country") gets the rule too,
exactly as the shipped model treats any phrase not in training.types (reported under "coarse").

Metrics are those of docs/eval/marking_rules.py / nerindex eval: macro over type/set pairs, span hit
(None without gold in returned relevant passages, left out), highlight P (None without marks, left
out), span F1 = harmonic mean of the two macro figures; set P = found / returned (0 when nothing is
returned), set R, set F1 per type, then macro.

The family of rules was fixed on the narrow validation split before any dev figure was computed;
the rule to choose by is marking_rules.py's (span F1 of the validation split's unseen types, the
wider split as a check). EVALUATION.md, "A threshold that follows familiarity", has the figures.

    python docs/eval/familiarity_thresholds.py --data ../shared/data --cache .cache/familiarity.pkl --out familiarity.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from indexer.assets import default_model_dir  # noqa: E402
from indexer.encoder import OnnxEncoder  # noqa: E402
from indexer.evaluation.metrics import f1, match_spans  # noqa: E402
from indexer.evaluation.seen_types import group_of, training_from_card  # noqa: E402
from marking_rules import WIDE_VALIDATION, encode  # noqa: E402
from two_tier import DEV, SETS  # noqa: E402

SEEN_T, UNSEEN_T = 0.38, 0.21


def query_stats(data: dict, q: np.ndarray, query, t_return: float, t_mark: float) -> dict:
    """Set and span counts of one query: returned = judged passages with a mention >= t_return;
    marked = mentions >= t_mark in returned passages."""
    bench = data["bench"]
    relevant, gold = bench.qrels[query.id], bench.gold.get(query.id, {})
    scope = bench.judged.get(query.id)
    n_ret = n_found = n_gold = n_hit = n_pred = n_correct = 0
    for pid, spans, mention, vectors in zip(data["ids"], data["spans"], data["mention"], data["vectors"]):
        if not mention.any() or (scope is not None and pid not in scope):
            continue
        sims = vectors @ q
        if sims[mention].max() < t_return:
            continue
        n_ret += 1
        n_found += pid in relevant
        pred = [sp for sp, m, s in zip(spans, mention, sims) if m and s >= t_mark]
        g = gold.get(pid, ()) if pid in relevant else ()
        hit, correct = match_spans(g, pred)
        n_gold, n_hit, n_pred, n_correct = n_gold + len(g), n_hit + hit, n_pred + len(pred), n_correct + correct
    p = n_found / n_ret if n_ret else 0.0
    r = n_found / len(relevant)
    return {"set_p": p, "set_r": r, "set_f1": f1(p, r),
            "hit": n_hit / n_gold if n_gold else None, "hlp": n_correct / n_pred if n_pred else None}


def pool(rows: list[dict]) -> dict:
    def m(k):
        v = [r[k] for r in rows if r[k] is not None]
        return float(np.mean(v)) if v else None
    out = {k: m(k) for k in ("set_p", "set_r", "set_f1", "hit", "hlp")}
    h, p = out["hit"], out["hlp"]
    out["span_f1"] = (2 * h * p / (h + p) if h + p else 0.0) if h is not None and p is not None else None
    out["n"] = len(rows)
    return out


def rule_family(f0: dict[str, float]) -> dict[str, dict]:
    """The fixed family (written before any dev figure was computed). Each: (f name, t(f))."""
    fam: dict[str, dict] = {"shipped (0.21)": {"f": "train", "t": lambda f: UNSEEN_T}}
    for fname in ("train", "cat"):
        a = f0[fname]  # mean f of the narrow validation split's 5 unseen (medical) types
        # linear: t = clip(0.21 + b (f - f0), 0.10, 0.38)
        for b in (-1.0, -0.5, 0.5, 1.0):
            fam[f"{fname}: linear b {b:+}"] = {"f": fname, "t": (lambda b, a: lambda f: float(np.clip(UNSEEN_T + b * (f - a), 0.10, SEEN_T)))(b, a)}
        # interpolation between the unseen threshold at f0 and the seen threshold at f = 1 (a seen phrase's own f)
        fam[f"{fname}: interp 0.21@f0 -> 0.38@1"] = {"f": fname, "t": (lambda a: lambda f: float(UNSEEN_T + (SEEN_T - UNSEEN_T) * np.clip((f - a) / (1 - a), 0, 1)))(a)}
        # two buckets: a higher or a lower threshold for the phrases more familiar than f0
        fam[f"{fname}: bucket f>=f0 -> 0.25 else 0.21"] = {"f": fname, "t": (lambda a: lambda f: 0.25 if f >= a else UNSEEN_T)(a)}
        fam[f"{fname}: bucket f>=f0 -> 0.17 else 0.21"] = {"f": fname, "t": (lambda a: lambda f: 0.17 if f >= a else UNSEEN_T)(a)}
    return fam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    ap.add_argument("--cache", type=Path, help="keep the encoded sets here between runs (pickle)")
    ap.add_argument("--out", type=Path, default=Path("docs/eval/familiarity-thresholds.json"),
                    help="the JSON of every row (default: the committed file's name, from the repository root)")
    ap.add_argument("--uniform", type=float, nargs="*", default=None,
                    help="reference rows only: one uniform unseen threshold (not part of the familiarity family)")
    ap.add_argument("--no-dev", action="store_true", help="validation splits only (to fix the family first)")
    args = ap.parse_args()
    t0 = time.time()
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    training = training_from_card(enc.info.card)
    chosen = {**SETS, "wide-validation": [*SETS["validation"], *WIDE_VALIDATION]}
    if args.cache and args.cache.exists():
        sets = pickle.loads(args.cache.read_bytes())
    else:
        sets = {n: encode([args.data / f for f in files], n, enc) for n, files in chosen.items()}
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            args.cache.write_bytes(pickle.dumps(sets))
    print(f"encoded/loaded in {time.time() - t0:.0f}s", file=sys.stderr)

    train_types = sorted(training.types)
    train_vecs = enc.embed_types(train_types)  # trained-on phrases: bare, as the model embeds them
    assert all(enc.info.template_for(p) == "{}" for p in train_types)
    cat_phrases = [p.lower() for p in enc.catalog.phrases]
    cat_vecs = enc.catalog.vectors

    def fam(text: str, v: np.ndarray) -> dict[str, float]:
        keep = np.array([p != text.lower() for p in cat_phrases])
        return {"train": float((train_vecs @ v).max()), "cat": float((cat_vecs[keep] @ v).max())}

    queries = {}
    for name, data in sets.items():
        qs = data["bench"].scored_queries()
        vs = enc.embed_types([q.text for q in qs])
        queries[name] = [(q, v, group_of(q, training), fam(q.text, v)) for q, v in zip(qs, vs)]
    for q, v, g, f in queries["validation"]:
        assert (g == "seen") == (enc.info.threshold_for(q.text) == SEEN_T)
    val_unseen = [f for q, v, g, f in queries["validation"] if g == "unseen"]
    f0 = {k: float(np.mean([f[k] for f in val_unseen])) for k in ("train", "cat")}
    fvals = {name: {q.text: {k: round(x, 4) for k, x in f.items()} for q, v, g, f in qs if g != "seen"}
             for name, qs in queries.items()}
    print("f0 (narrow validation unseen mean):", f0, file=sys.stderr)
    for name in ("validation", "wide-validation"):
        print(name, fvals[name], file=sys.stderr)

    splits = {"validation": ("validation",), "wide-validation": ("wide-validation",)}
    if not args.no_dev:
        splits["dev"] = DEV
    results = {"f0": f0, "familiarity": fvals if not args.no_dev else {k: fvals[k] for k in splits}, "rules": {}}
    family = rule_family(f0)
    if args.uniform is not None:
        family = {"shipped (0.21)": family["shipped (0.21)"],
                  **{f"uniform {u}": {"f": "train", "t": (lambda u: lambda f: u)(u)} for u in args.uniform}}
    for label, spec in family.items():
        for variant in ("A", "B"):
            if label.startswith("shipped") and variant == "B":
                continue
            row, thresholds = {}, {}
            for split, names in splits.items():
                per = defaultdict(list)
                for name in names:
                    for q, v, g, f in queries[name]:
                        shipped = enc.info.threshold_for(q.text)
                        t = shipped if shipped == SEEN_T else spec["t"](f[spec["f"]])
                        if g != "seen":
                            thresholds[f"{split}: {name}: {q.text}"] = round(t, 4)
                        t_ret = shipped if variant == "A" else t
                        per[g].append(query_stats(sets[name], v, q, t_ret, t))
                for g, rows in per.items():
                    row[f"{split} {g}"] = pool(rows)
            results["rules"][f"{variant}: {label}"] = {"figures": row, "thresholds": {k: v for k, v in thresholds.items()}}
            def fmt(k):
                r = row.get(k)
                if r is None:
                    return f"{k}: -"
                return (f"{k}: hit {r['hit']:.3f} hlP {r['hlp']:.3f} sF1 {r['span_f1']:.3f} setF1 {r['set_f1']:.3f}")
            print(f"{variant}: {label:40s} | " + " | ".join(fmt(k) for k in ("validation unseen", "wide-validation unseen", "dev unseen", "dev seen")), file=sys.stderr)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"done in {time.time() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
