"""Choose λ of hybrid scoring per group (trained-on types, the others) on a calibration run.

A `nerindex eval` run ranks every type twice: with the model's λ (``system``) and by the best span
alone (``system_spans``, λ = 0). This reads such a run on the validation split (reproduce.sh's
``docs/eval/calibration.json``, run with one λ for every phrase) and keeps, per group, whichever
ranks better by macro R-Precision; ``--write-model`` stores them as ``passage_weight`` (trained-on
phrases) and ``unseen_passage_weight`` (the others) through ``ModelCard`` (EVALUATION.md, "Model
0.4.0"). Run on a card that already has two λ's, the rows it compares are no longer λ vs 0 for both
groups: it refuses.

    python docs/eval/choose_passage_weights.py /tmp/calibration-lambda1.json [--write-model DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from indexer.model_card import ModelCard


def choose(run: dict) -> dict[str, float]:
    """{"seen": λ, "unseen": λ} from one run's summary (system vs system_spans per group)."""
    model = run["model"]
    if model.get("unseen_passage_weight") is not None:
        raise SystemExit("this run already used two λ's: run the calibration with one λ for every phrase")
    weight = float(model["passage_weight"])
    summary = run["summary"]
    chosen = {}
    for group in ("seen", "unseen"):
        hybrid = summary["system"][group]["r_precision"]
        spans = summary["system_spans"][group]["r_precision"]
        chosen[group] = weight if hybrid > spans else 0.0
        print(f"{group}: λ {weight:g} R-Prec {hybrid:.4f}, λ 0 R-Prec {spans:.4f} -> λ {chosen[group]:g}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a nerindex eval --out JSON of the calibration data")
    parser.add_argument("--write-model", type=Path, default=None, help="a model folder to store the λ's in")
    args = parser.parse_args()
    chosen = choose(json.loads(args.run.read_text(encoding="utf-8")))
    if args.write_model:
        card = ModelCard.load(args.write_model).with_passage_weights(chosen["seen"], chosen["unseen"])
        print(f"wrote {card.save(args.write_model)}")


if __name__ == "__main__":
    main()
