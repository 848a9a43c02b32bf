"""Rendering an evaluation result: JSON for machines, Markdown tables, PNG charts.

All functions take the JSON-ready dict that :func:`indexer.evaluation.run.run_eval` returns, so a
saved result can be re-rendered without re-running (``nerindex eval --from-json``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError
from ..text import json_value_problem
from ..atomic_files import raise_named, write_bytes, write_file

METHOD_ORDER = ("system", "system_spans", "system_prf", "span_base", "dense", "bm25")
SHORT = {"system": "nerindex", "system_spans": "nerindex, spans only",
         "system_prf": "nerindex + feedback", "span_base": "untrained spans",
         "dense": "dense passage", "bm25": "BM25"}  # fmt: skip
GROUP_ORDER = ("all", "seen", "unseen", "coarse")
COLUMNS = (
    ("r_precision", "R-Prec"),
    ("recall_at_1000", "R@1000"),
    ("p_at_10", "P@10"),
    ("set_precision", "set P"),
    ("set_recall", "set R"),
    ("set_f1", "set F1"),
    ("span_hit_rate", "span hit"),
    ("highlight_precision", "highlight P"),
    ("highlight_precision_1to1", "highlight P 1:1"),
)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _methods(result: Mapping[str, Any]) -> list[str]:
    present = list(result["summary"])
    return [m for m in METHOD_ORDER if m in present] + [m for m in present if m not in METHOD_ORDER]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline_table(result: Mapping[str, Any]) -> str:
    """Macro R-Precision per method: all types, seen, unseen and coarse side by side."""
    fam = result.get("familiarity", {}).get("by_group", {})
    groups = [g for g in GROUP_ORDER if result["summary"][_methods(result)[0]].get(g, {}).get("n")]
    header = ["method"]
    for g in groups:
        n = result["summary"][_methods(result)[0]][g]["n"]
        f = fam.get(g)
        header.append(f"R-Prec {g} ({n} type{'' if n == 1 else 's'}" + (f", Fam {f:.2f})" if f is not None else ")"))
    rows = []
    for m in _methods(result):
        rows.append([SHORT.get(m, m)] + [_fmt(result["summary"][m][g]["r_precision"]) for g in groups])
    return _table(header, rows)


def group_table(result: Mapping[str, Any]) -> str:
    """Every metric, macro over types, per group and method (one row each)."""
    fam = result.get("familiarity", {}).get("by_group", {})
    header = ["types", "method", "threshold"] + [label for _, label in COLUMNS]
    rows = []
    methods = _methods(result)
    for g in GROUP_ORDER:
        n = result["summary"][methods[0]].get(g, {}).get("n", 0)
        if not n:
            continue
        f = fam.get(g)
        first = f"**{g}** ({n}" + (f", Fam {f:.2f})" if f is not None else ")")
        for i, m in enumerate(methods):
            s = result["summary"][m][g]
            rows.append([first if i == 0 else "", SHORT.get(m, m), _group_thresholds(result, m, g)] + [_fmt(s.get(k)) for k, _ in COLUMNS])
    return _table(header, rows)


def _group_thresholds(result: Mapping[str, Any], method: str, group: str) -> str:
    """The thresholds a method applied to a group's types, each named by its group where they
    differ ("0.36 seen, 0.27 unseen": a bare "0.16/0.14" read as seen/unseen when it was the
    reverse, an audit)."""
    by_group = _applied_thresholds(result)
    applied = {g: by_method[method] for g, by_method in by_group.items() if group in ("all", g) and method in by_method}
    if not applied:
        return _fmt(result["methods"].get(method, {}).get("threshold"), 2)  # results saved before per-type thresholds
    every = set().union(*applied.values())
    if len(every) == 1:
        return _fmt(every.pop(), 2)
    order = [g for g in ("seen", "unseen", "coarse") if g in applied] + sorted(set(applied) - {"seen", "unseen", "coarse"})
    info = result["methods"].get(method, {})
    parts = []
    for g in order:
        values, note = threshold_text(applied[g], info)
        parts.append(f"{values} {g}{note}")
    return ", ".join(parts)


def _applied_thresholds(result: Mapping[str, Any]) -> dict[str, dict[str, set[float]]]:
    """group -> method -> the thresholds the method applied to that group's types (per-type rows)."""
    applied: dict[str, dict[str, set[float]]] = {}
    for row in result["per_type"]:
        for method, t in (row.get("thresholds") or {}).items():
            if t is not None:
                applied.setdefault(row["group"], {}).setdefault(method, set()).add(t)
    return applied


def threshold_text(applied: set[float], info: Mapping[str, Any]) -> tuple[str, str]:
    """(the thresholds a method applied within one group, a note): one, or the trained-on phrases'
    first and then the others', said so: ("0.38/0.21", " (trained-on/other phrases)"). Sorted by
    number, a coarse group's "0.21/0.38" read as seen/unseen where it was the reverse (an audit)."""
    seen = info.get("threshold")
    ordered = sorted(applied, key=lambda t: (t != seen, t))
    note = " (trained-on/other phrases)" if len(ordered) == 2 and seen in applied else ""
    return "/".join(_fmt(t, 2) for t in ordered), note


def per_type_table(result: Mapping[str, Any]) -> str:
    """R-Precision per type and method, with the type's group, relevant count and Familiarity."""
    methods = _methods(result)
    header = ["type", "group", "relevant", "Familiarity"] + [SHORT.get(m, m) for m in methods]
    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    rows = []
    for row in sorted(result["per_type"], key=lambda r: (order.get(r["group"], 9), r["type"])):
        best = max((row["scores"][m]["r_precision"] for m in methods), default=None)
        cells = []
        for m in methods:
            v = row["scores"][m]["r_precision"]
            cells.append(f"**{_fmt(v)}**" if v == best and best else _fmt(v))
        rows.append([row["type"], row["group"], str(row["relevant"]), _fmt(row["familiarity"], 2)] + cells)
    return _table(header, rows)


def markdown(result: Mapping[str, Any], *, title: str | None = None) -> str:
    """The full Markdown report of one run."""
    b = result["benchmark"]
    m = result["model"]
    parts = [
        f"### {title or b['name']}",
        "",
        f"{b['passages']} passages, {b['queries_scored']} scored types "
        f"(sources: {', '.join(Path(s).name if '/' not in s else s for s in b['sources'])}); "
        f"model {m['id']} {m['version']} (checksum {m['checksum'][:12]})"
        + (_hybrid_note(m) if {"system", "system_prf"} & set(result["summary"]) else "."),
        "",
        headline_table(result),
        "",
        group_table(result),
        "",
        per_type_table(result),
        "",
    ]
    notes = []
    for key in _methods(result):
        info = result["methods"].get(key, {})
        desc = info.get("description")
        notes.append(
            f"- {SHORT.get(key, key)}: {info.get('label', key)}; threshold: {info.get('threshold_source', '–')}"
            + (f"; {desc}" if desc else "")
        )
    det = result.get("detection", {}).get("by_group", {})
    if det:
        notes.append("- detection recall (gold mentions with a proposed span, IoU ≥ 0.5; any stored span / "
                     "the marking head's mentions): " + ", ".join(
            f"{g} {v['recall']:.2f} / {v.get('mention_recall', v['recall']):.2f} ({v['mentions']})" for g, v in det.items()
        ) + ".")  # fmt: skip
    fam = result.get("familiarity", {})
    notes.append(f"- Familiarity: {fam.get('definition', '')}; embeddings: {fam.get('embedding', '')}; "
                 f"training counts: {result.get('training', {}).get('counts_source', '?')} (gold types only: silver "
                 "types a span side was also trained on, WordNet's, are not counted, so unseen types may sit closer "
                 "to training than this says).")
    if not result.get("training", {}).get("types"):
        notes.append("- no record of the training types: every type not marked coarse is counted as unseen.")
    if result.get("skipped_queries"):
        notes.append(f"- types without a relevant passage here (not scored): {', '.join(result['skipped_queries'])}")
    parts += notes
    cal = result.get("calibration")
    for section, kind in ((cal, "seen"), ((cal or {}).get("unseen"), "unseen")):
        if section and section["methods"]:  # no types of the kind: no table (an audit: "on 0 seen types")
            parts += ["", f"Calibration on {len(section['types'])} {kind} types:", ""]
            rows = []
            for key, c in section["methods"].items():
                ch = c["chosen"]
                rows.append([SHORT.get(key, key), _fmt(ch["threshold"], 2), _fmt(ch["precision"]), _fmt(ch["recall"]), _fmt(ch["f1"])])
            parts.append(_table(["method", "chosen threshold", "macro P", "macro R", "macro F1"], rows))
            if section.get("applied") is False:
                parts += ["", "Not applied: no threshold returns a relevant passage of these types (the system's F1 is 0 "
                          "at every threshold), so every method keeps the model's thresholds for them."]
    return "\n".join(parts) + "\n"


def write_json(result: Mapping[str, Any], path: str | Path) -> Path:
    return write_text(Path(path), json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> Path:
    """Write ``path`` whole or not at all (a temporary file, then a rename): on a full disk the
    last run's file was left truncated (an audit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes(path, text.encode("utf-8"))


RESULT_KEYS = ("benchmark", "model", "methods", "summary", "per_type")


def read_json(path: str | Path) -> dict[str, Any]:
    """A result saved by ``nerindex eval --json``; anything else is an InputError naming the file."""
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise InputError(f"not a result of nerindex eval --json: {exc}", path=str(path), line=line) from exc
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting too deep: a traceback before
        raise InputError(f"not a result of nerindex eval --json: {json_value_problem(exc)}", path=str(path)) from exc
    missing = [k for k in RESULT_KEYS if not isinstance(result, dict) or k not in result]
    if missing:
        raise InputError(f"not a result of nerindex eval --json (no {', '.join(missing)})", path=str(path))
    # the keys' shapes too: right keys with other values were a traceback, or echoed with --json (an audit)
    shapes = {"benchmark": dict, "model": dict, "methods": dict, "summary": dict, "per_type": list}
    wrong = [k for k, kind in shapes.items() if not isinstance(result[k], kind)]
    wrong += [f"summary.{k}" for k, v in result["summary"].items() if not isinstance(v, dict)] if "summary" not in wrong else []
    wrong += ["per_type items"] if "per_type" not in wrong and not all(isinstance(r, dict) for r in result["per_type"]) else []
    if wrong:
        raise InputError(f"not a result of nerindex eval --json ({', '.join(wrong[:3])} of another shape)", path=str(path))
    return result


# ---------------------------------------------------------------- charts


def pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        from ..errors import NerindexError

        raise NerindexError(
            "charts need matplotlib: pip install 'nerindex[eval]' (or pass --no-charts)"
        ) from exc

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


COLORS = {"system": "#1f77b4", "system_spans": "#17becf", "system_prf": "#d62728", "span_base": "#9467bd", "dense": "#2ca02c", "bm25": "#ff7f0e"}


def chart_per_type(result: Mapping[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Horizontal grouped bars: R-Precision per type for the system and each baseline."""
    plt = pyplot()
    methods = _methods(result)
    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    # top to bottom: seen, unseen, coarse, each alphabetical (barh draws from the bottom up)
    rows = sorted(result["per_type"], key=lambda r: (order.get(r["group"], 9), r["type"]))[::-1]
    n = len(rows)
    height = max(3.0, 0.32 * n * (len(methods) / 4 + 0.6) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height))
    bar = 0.8 / len(methods)
    for j, m in enumerate(methods):
        ys = [i + (j - (len(methods) - 1) / 2) * bar for i in range(n)]
        vals = [r["scores"][m]["r_precision"] for r in rows]
        ax.barh(ys, vals, height=bar, label=SHORT.get(m, m), color=COLORS.get(m))
    labels = []
    for r in rows:
        fam = r.get("familiarity")
        labels.append(f"{r['type']} [{r['group']}" + (f", F={fam:.2f}]" if fam is not None else "]"))
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("R-Precision")
    ax.set_title(title or f"R-Precision per type — {result['benchmark']['name']}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG (making its folder) and free it."""
    plt = pyplot()
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:  # whole or not at all, as the JSON and Markdown (write_text)
        write_file(p.parent, p.name, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)
    return p


Panel = tuple[str, Mapping[str, Sequence[Mapping[str, Any]]], Mapping[str, Sequence[float]]]


def chart_threshold(panels: Sequence[Panel], path: str | Path, *, title: str) -> Path:
    """Macro precision, recall and F1 of the returned passage sets against the threshold: one panel
    per (title, curves, thresholds applied) — a group of types, each method's curve over that group
    alone, with a line at each threshold the method applied there (:func:`threshold_panels`)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.8, 4.2), squeeze=False)
    for ax, (name_, curves, chosen) in zip(axes[0], panels):
        for key in [m for m in METHOD_ORDER if m in curves] + [m for m in curves if m not in METHOD_ORDER]:
            pts = curves[key]
            xs = [p["threshold"] for p in pts]
            color = COLORS.get(key)
            name = SHORT.get(key, key)
            if key == "system":
                ax.plot(xs, [p["precision"] for p in pts], color=color, linestyle="--", label=f"{name} precision")
                ax.plot(xs, [p["recall"] for p in pts], color=color, linestyle=":", label=f"{name} recall")
            ax.plot(xs, [p["f1"] for p in pts], color=color, linewidth=2 if key == "system" else 1.2, label=f"{name} F1")
            for t in chosen.get(key, ()):
                ax.axvline(t, color=color, alpha=0.5, linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("similarity threshold (cosine)")
        ax.set_title(name_, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro over types")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def threshold_panels(result: Mapping[str, Any]) -> tuple[list[Panel], str]:
    """(the threshold chart's panels, its title). A calibration run draws its seen types' curve and,
    where it calibrated them, its unseen types'; another run one panel per group of types, each
    method's curve over that group alone with the thresholds it applied there. An audit: one curve
    over every type at one threshold, with a line at the trained-on threshold only, was drawn where
    most types were scored at another. Results saved before the groups' curves keep that one curve,
    titled so."""
    name = result["benchmark"]["name"]
    calibration = result.get("calibration")
    if calibration:
        parts = [("seen types", calibration["methods"])]
        unseen = (calibration.get("unseen") or {}).get("methods")
        if unseen:
            parts.append(("unseen types", unseen))
        panels = [(label, {k: v["curve"] for k, v in methods.items()},
                   {k: [v["chosen"]["threshold"]] for k, v in methods.items()}) for label, methods in parts]
        return panels, f"Calibration — {name}"
    by_group = result.get("sweeps_by_group")
    if not by_group:
        chosen = {k: [v["threshold"]] for k, v in result.get("methods", {}).items() if v.get("threshold") is not None}
        return [("every type at one threshold", result.get("sweeps") or {}, chosen)], f"Threshold curve — {name}"
    applied = _applied_thresholds(result)
    panels = [(f"{group} types", by_group[group], {k: sorted(v) for k, v in applied.get(group, {}).items()})
              for group in GROUP_ORDER if group in by_group]
    return panels, f"Threshold curve by group of types — {name}"


def write_outputs(result: Mapping[str, Any], folder: str | Path, *, stem: str, charts: bool = True) -> list[Path]:
    """JSON, Markdown and (with matplotlib) the two PNG charts of one run, named by ``stem``: made in
    a temporary folder inside ``folder``, then renamed into place one after another, so that a run
    stopped while it draws (seconds) leaves the last run's files as they were (a CLI audit: Ctrl-C
    left the new JSON beside the old Markdown and charts, and said only "aborted")."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=out))
    try:
        made = [write_json(result, staging / f"{stem}.json"), write_text(staging / f"{stem}.md", markdown(result))]
        if charts:
            made.append(chart_per_type(result, staging / f"{stem}-per-type.png"))
            panels, title = threshold_panels(result)
            if any(curves for _, curves, _ in panels):
                made.append(chart_threshold(panels, staging / f"{stem}-threshold.png", title=title))
        written = []
        for path in made:
            os.replace(path, out / path.name)
            written.append(out / path.name)
        return written
    except OSError as exc:  # named by the file it was to be, not the staging folder's (an audit: a full disk)
        raise_named(exc, out / Path(exc.filename or "").name, str(staging))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _hybrid_note(model: dict) -> str:
    """How the run ranked: λ of hybrid scoring, one for every type or one per group (the model's
    rule, ``ModelInfo.passage_weight_for``); only where a method that uses it ran (an audit: a run
    of "spans only", λ 0, was said to use the model's λ)."""
    seen, unseen = model.get("passage_weight") or 0.0, model.get("unseen_passage_weight")
    if unseen is not None and unseen != seen:
        return f"; hybrid scoring, passage weight λ = {seen:g} for trained-on types, {unseen:g} for the others."
    return f"; hybrid scoring, passage weight λ = {seen:g}." if seen else "."
