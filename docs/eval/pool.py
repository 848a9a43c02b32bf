"""Pool several `nerindex eval` results into one macro table per type group (EVALUATION.md).

Usage: python docs/eval/pool.py docs/eval/crossner-politics-dev.json docs/eval/crossner-literature-dev.json \
           docs/eval/multiconer-dev.json docs/eval/wnut17-dev.json

Each (type, set) pair counts once, as in the per-set reports; metrics that a method does not
define (set figures without a threshold, span figures without spans) are left out of its mean.
"""

from __future__ import annotations

import json
import sys
from statistics import mean

METRICS = ("r_precision", "recall_at_1000", "p_at_10", "set_precision", "set_recall", "set_f1",
           "span_hit_rate", "highlight_precision", "highlight_precision_1to1")  # fmt: skip
NAMES = {"system": "nerindex", "system_spans": "nerindex, spans only (λ = 0)",
         "system_prf": "nerindex + feedback", "span_base": "untrained spans",
         "dense": "dense passage", "bm25": "BM25"}  # fmt: skip


def pooled(results: list[dict]) -> dict[str, dict]:
    """group -> {"n", "familiarity", "methods": {method -> {metric -> macro}}, "thresholds"}."""
    out: dict[str, dict] = {}
    for r in results:
        for row in r["per_type"]:
            g = out.setdefault(row["group"], {"rows": [], "thresholds": {}})
            g["rows"].append(row)
            for m, info in r["methods"].items():  # the threshold applied to this type, where recorded
                g["thresholds"].setdefault(m, set()).add(row.get("thresholds", {}).get(m, info.get("threshold")))
    for g in out.values():
        rows = g.pop("rows")
        g["n"] = len(rows)
        fams = [row["familiarity"] for row in rows if row.get("familiarity") is not None]
        g["familiarity"] = mean(fams) if fams else None
        g["methods"] = {}
        for m in NAMES:
            scores = [row["scores"][m] for row in rows if m in row["scores"]]
            if not scores:
                continue
            g["methods"][m] = {
                k: mean(v) if (v := [s[k] for s in scores if s.get(k) is not None]) else None for k in METRICS
            }
    return out


def markdown(pools: dict[str, dict]) -> str:
    lines = []
    for group in ("seen", "unseen", "coarse"):
        if group not in pools:
            continue
        g = pools[group]
        fam = f", Familiarity {g['familiarity']:.2f}" if g["familiarity"] is not None else ""
        lines += [f"**{group}** ({g['n']} type/set pairs{fam})", "",
                  "| method | threshold | R-Prec | R@1000 | P@10 | set P | set R | set F1 | span hit | highlight P | highlight P 1:1 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for m, s in g["methods"].items():
            thr = sorted(t for t in g["thresholds"].get(m, ()) if t is not None)
            cells = ["–" if s[k] is None else f"{s[k]:.3f}" for k in METRICS]
            lines.append(f"| {NAMES[m]} | {'/'.join(f'{t:g}' for t in thr) or '–'} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):  # an audit: --help was opened as a file
        print(f"usage: python {sys.argv[0]} REPORT.json... (the JSON reports of nerindex eval --out)")
        sys.exit(0 if len(sys.argv) > 1 else 2)
    print(markdown(pooled([json.load(open(path, encoding="utf-8")) for path in sys.argv[1:]])))
