"""Choose the template of type phrases the model was not trained on, on the validation split.

A type phrase is embedded as a query inside a template (model.json ``type_template``, "{}": the
bare phrase). The span side was trained against the bare phrases, so trained-on phrases keep it;
``unseen_type_template`` is the one for every other phrase (``ModelInfo.template_for``). For each
candidate this script makes a copy of the model folder (files hard-linked, the card changed through
``ModelCard``), runs ``nerindex eval`` on the validation split with ``--calibrate`` (so each
template gets its own unseen threshold, chosen as the shipped one was), and reads the unseen
types' R-Precision, set F1, span hit rate and highlight precision at that threshold. The choice:
the best span F1 (harmonic mean of span hit rate and highlight precision) of the unseen types,
since marking the right mention is what the template is for; ``--write-model DIR`` stores it. The
dev sets play no part (EVALUATION.md, "Type templates"). About 5 minutes on 2 cores.

    python docs/eval/choose_type_template.py --data ../shared/data [--write-model indexer/assets/default_model]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from indexer.assets import default_model_dir
from indexer.model_card import CARD_FILE, ModelCard

VALIDATION = ["multiconer2_en/en-train10.conll", "wnut17/dev.conll"]  # reproduce.sh's calibration data
# --wide-validation: CrossNER's train splits too (never trained on, not the dev sets): 14 unseen types
WIDE_VALIDATION = ["crossner/politics/train.txt", "crossner/literature/train.txt"]
CANDIDATES = [
    "{}", "a {}", "the name of a {}", "the name of the {}", "a named {}", "{} name", "an example of a {}",
    "a specific {}", "this is a {}", "a {} called", "names of {}", "an entity of type {}",
]  # fmt: skip


def model_copy(model: Path, template: str, folder: Path) -> Path:
    """``model`` with ``unseen_type_template`` = ``template`` ("{}": none), files hard-linked."""
    shutil.copytree(model, folder, copy_function=os.link, ignore=shutil.ignore_patterns(CARD_FILE))
    shutil.copy2(model / CARD_FILE, folder / CARD_FILE)
    ModelCard.load(folder).with_unseen_type_template(None if template == "{}" else template).save(folder)
    return folder


def measure(model: Path, data: Path, out: Path, files: list[str]) -> dict:
    """The validation split's unseen-type figures of one model folder, at its calibrated thresholds."""
    command = [sys.executable, "-m", "indexer.cli", "eval", *[str(data / f) for f in files],
               "--model", str(model), "--calibrate", "--methods", "system", "--out", str(out), "--stem", "run"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    unseen = run["summary"]["system"]["unseen"]
    hit, precision = unseen["span_hit_rate"], unseen["highlight_precision"]
    return {
        "threshold": run["calibration"]["unseen"]["methods"]["system"]["chosen"]["threshold"],
        "r_precision": unseen["r_precision"], "set_f1": unseen["set_f1"], "span_hit_rate": hit,
        "highlight_precision": precision,
        "span_f1": round(2 * hit * precision / (hit + precision), 4) if hit + precision else 0.0,
        "n": unseen["n"], "seen_r_precision": run["summary"]["system"]["seen"]["r_precision"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--templates", nargs="*", default=CANDIDATES)
    parser.add_argument("--write-model", type=Path, default=None, help="a model folder to store the chosen template in")
    parser.add_argument("--wide-validation", action="store_true", help="add CrossNER's train splits (a check)")
    args = parser.parse_args()
    files = [*VALIDATION, *WIDE_VALIDATION] if args.wide_validation else VALIDATION
    rows = {}
    with tempfile.TemporaryDirectory(prefix="nerindex-templates-") as tmp:
        for k, template in enumerate(args.templates):
            folder = model_copy(args.model, template, Path(tmp) / f"model-{k}")
            rows[template] = measure(folder, args.data, Path(tmp) / f"out-{k}", files)
            r = rows[template]
            print(f"{template!r:26} threshold {r['threshold']:.2f}  R-Prec {r['r_precision']:.3f}  set F1 {r['set_f1']:.3f}  "
                  f"span hit {r['span_hit_rate']:.3f}  highlight P {r['highlight_precision']:.3f}  span F1 {r['span_f1']:.3f}",
                  file=sys.stderr)  # fmt: skip
    chosen = max(rows, key=lambda t: rows[t]["span_f1"])
    print(f"chosen: {chosen!r}", file=sys.stderr)
    print(json.dumps({"validation": files, "chosen": chosen, "rows": rows}, indent=1))
    if args.write_model:
        card = ModelCard.load(args.write_model).with_unseen_type_template(None if chosen == "{}" else chosen)
        print(f"wrote {card.save(args.write_model)}", file=sys.stderr)


if __name__ == "__main__":
    main()
