"""Pool several `nerindex eval` results into one macro table per type group (EVALUATION.md).

Usage: python docs/eval/pool.py docs/eval/crossner-politics-dev.json docs/eval/crossner-literature-dev.json \
           docs/eval/multiconer-dev.json docs/eval/wnut17-dev.json

Each (type, set) pair counts once, as in the per-set reports; metrics that a method does not
define (set figures without a threshold, span figures without spans) are left out of its mean. A
method that scored fewer of a group's pairs says how many ("(10 of 15)"), and reports of another
model, other model settings, other methods and thresholds, another seen/unseen split, or one data
set twice are refused: each had been pooled without a word (audits: a run without one baseline made
it seem to beat the system; a report given twice counted its pairs twice).
"""

from __future__ import annotations

import json
import sys
from statistics import mean

from indexer.evaluation.report import threshold_text

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
    methods = results[0]["methods"] if results else {}
    for g in out.values():
        rows = g.pop("rows")
        g["n"] = len(rows)
        g["info"] = methods
        g["scored"] = {m: sum(1 for row in rows if m in row["scores"]) for m in NAMES}
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
            applied = {t for t in g["thresholds"].get(m, ()) if t is not None}
            values, note = threshold_text(applied, g["info"].get(m, {})) if applied else ("–", "")
            cells = ["–" if s[k] is None else f"{s[k]:.3f}" for k in METRICS]
            name = NAMES[m] + (f" ({g['scored'][m]} of {g['n']})" if g["scored"][m] != g["n"] else "")
            lines.append(f"| {name} | {values}{note} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def mismatch(names: list[str], results: list[dict]) -> str | None:
    """Why these reports cannot be pooled (None where they can): another model or other model
    settings, other methods or thresholds, or another seen/unseen split (``--train-types``) than
    the first report's, or one data set twice (an audit: its pairs counted twice, and a report
    with another split put one type in both groups)."""
    def setting(r: dict) -> tuple[dict, dict, tuple]:
        training = r.get("training") or {}
        return ({k: v for k, v in r["model"].items() if k != "path"},
                {m: (i.get("threshold"), i.get("threshold_unseen")) for m, i in r["methods"].items()},
                (training.get("types"), training.get("held_out_types"), training.get("counts_source")))
    seen: dict[str, str] = {}
    for name, r in zip(names, results):
        set_name = r["benchmark"]["name"]
        if set_name in seen:
            return f"{name}: the same data set ({set_name}) as {seen[set_name]}"
        seen[set_name] = name
    for name, r in zip(names[1:], results[1:]):
        (model, methods, split), (first_model, first_methods, first_split) = setting(r), setting(results[0])
        if model != first_model:
            return f"{name}: another model or other model settings than {names[0]}"
        if methods != first_methods:
            return f"{name}: other methods or thresholds than {names[0]}"
        if split != first_split:
            return f"{name}: another split into seen and unseen types (training types, or their counts) than {names[0]}"
    return None


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):  # an audit: --help was opened as a file
        print(f"usage: python {sys.argv[0]} REPORT.json... (the JSON reports of nerindex eval --out)")
        sys.exit(0 if len(sys.argv) > 1 else 2)
    reports = [json.load(open(path, encoding="utf-8")) for path in sys.argv[1:]]
    problem = mismatch(sys.argv[1:], reports)
    if problem:
        sys.exit(f"pool.py: {problem}: pool the reports of one model and one setting")
    print(markdown(pooled(reports)))
