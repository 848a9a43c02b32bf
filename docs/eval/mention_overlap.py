"""How unseen the unseen types' mentions are: the dev gold mentions of each held-out type whose text
(lower-cased) is also a gold mention in the training files, and under which training labels.

Familiarity (EVALUATION.md) compares type names only; a held-out type can still have many of its dev
mentions in training under a broader label ("magazine" titles as MultiCoNER's "written work"). The
training files are the shipped model's (indexer.training.data.default_sources), with the sentences
that hold the held-out medical types dropped, as training dropped them. An audit (December 2026).

    python docs/eval/mention_overlap.py --data ../shared/data [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's indexer

from indexer.conll import read_conll  # noqa: E402
from indexer.evaluation.heldout import MEDICAL_TYPES  # noqa: E402
from indexer.training.data import default_sources, load_phrase_map, read_sources  # noqa: E402

UNSEEN = {
    ("crossner", "crossner/politics/dev.txt"): ("election", "event", "political party"),
    ("crossner", "crossner/literature/dev.txt"): ("award", "book", "event", "literary genre", "magazine", "poem", "writer"),
    ("multiconer2_en", "multiconer2_en/en-dev.conll"): tuple(sorted(MEDICAL_TYPES)),
}


def overlap(data: Path) -> list[dict]:
    """One row per held-out type and dev file: mentions, those also training gold mentions, and the
    training labels they carry there (most frequent first)."""
    table = load_phrase_map()
    passages, _, phrases, _ = read_sources(default_sources(data)["train"], exclude_phrases=MEDICAL_TYPES)
    trained: dict[str, Counter] = defaultdict(Counter)
    for passage, labels in zip(passages, phrases):
        for gold, label in zip(passage.gold, labels):
            trained[passage.text[gold.start:gold.end].lower()][label or "misc"] += 1
    rows: dict[tuple[str, str], dict] = {}
    for (dataset, name), types in UNSEEN.items():
        for passage in read_conll(data / name):
            for gold in passage.gold:
                phrase = table[dataset].get(gold.label)
                if phrase not in types:
                    continue
                row = rows.setdefault((name, phrase), {"file": name, "type": phrase, "mentions": 0, "in_training": 0,
                                                        "training_labels": Counter()})  # fmt: skip
                row["mentions"] += 1
                mention = passage.text[gold.start:gold.end].lower()
                if mention in trained:
                    row["in_training"] += 1
                    row["training_labels"].update(trained[mention])
    out = []
    for row in rows.values():
        row["training_labels"] = dict(row["training_labels"].most_common(3))
        row["share"] = round(row["in_training"] / row["mentions"], 3)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = overlap(args.data)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| dev file | held-out type | mentions | also training gold mentions | their training labels (count) |")
    print("|---|---|---|---|---|")
    for r in rows:
        labels = ", ".join(f"{k} {v}" for k, v in r["training_labels"].items()) or "–"
        print(f"| {r['file']} | {r['type']} | {r['mentions']} | {r['in_training']} ({r['share']:.0%}) | {labels} |")


if __name__ == "__main__":
    main()
