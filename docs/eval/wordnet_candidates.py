"""Research script (issue 13): WordNet nouns as extra candidate spans, against a lower detection threshold.

Issue 13 asks for detection that carries to new genres (common nouns such as "cello", diseases) and
names WordNet nouns as one way in. This script encodes each dev set once with the detection threshold
lowered to 0.001 and then keeps spans under several rules: the entity score alone at a threshold
(``det≥t``), or that *or* the span's text being a WordNet noun (``det≥t | noun``: a lemma or an
inflected form of one, multi-word lemmas included, at least 3 characters, a few pronouns and
generic nouns left out). For each rule it prints spans per passage, detection recall per type group
(gold mentions overlapped by a kept span with IoU ≥ 0.5, as `nerindex eval` counts it) and
R-Precision per group when passages are ranked as the stores rank them (best kept span + λ · passage
similarity).

    python docs/eval/wordnet_candidates.py --data ../shared/data

Needs WordNet (Debian ``wordnet-base``, as ``nerindex silver`` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.assets import default_model_dir
from indexer.encoder import OnnxEncoder
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.metrics import r_precision
from indexer.evaluation.scoring import match_spans
from indexer.evaluation.seen_types import group_of, training_from_card
from indexer.model_card import ModelCard
from indexer.training.wordnet import WordNet

SETS = {
    "crossner-politics-dev": "crossner/politics/dev.txt",
    "crossner-literature-dev": "crossner/literature/dev.txt",
    "multiconer-dev": "multiconer2_en/en-dev.conll",
    "wnut17-dev": "wnut17/dev.conll",
}
GENERIC = {"you", "she", "they", "him", "her", "them", "this", "that", "one", "thing", "things", "something",
           "anything", "time", "way", "people", "man", "part", "year", "years", "day", "days"}  # fmt: skip


def noun_test(wn: WordNet) -> Callable[[str], bool]:
    """Whether a span's text is a WordNet noun (lemma or inflected form)."""

    def is_noun(text: str) -> bool:
        word = text.lower().strip()
        if len(word) < 3 or word in GENERIC or not any(c.isalpha() for c in word):
            return False
        word = word.replace(" ", "_")
        return bool(wn.senses(word, "n")) or any(wn.senses(b, "n") for b in wn.base_forms(word, "n"))

    return is_noun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.08, 0.02])
    args = parser.parse_args()
    folder = default_model_dir()
    enc = OnnxEncoder.from_dir(folder, device="cpu")
    training = training_from_card(ModelCard.load(folder))
    enc.info = dataclasses.replace(enc.info, detection_threshold=0.001)
    is_noun = noun_test(WordNet.load(pos="n"))
    for name, path in SETS.items():
        bench = benchmark_from_conll([args.data / path], name=name)
        docs = enc.encode(bench.corpus, batch_size=32)
        nouns = [[is_noun(d.passage.text[s.start : s.end]) for s in d.spans] for d in docs]
        position = {d.passage.id: i for i, d in enumerate(docs)}
        queries = bench.scored_queries()
        qvecs = enc.embed_types([q.text for q in queries])
        rules = {f"det≥{t:g}": (t, False) for t in args.thresholds} | {f"det≥{t:g} | noun": (t, True) for t in args.thresholds}
        for label, (t, with_nouns) in rules.items():
            kept = [[s for s, n in zip(d.spans, ns) if s.score >= t or (with_nouns and n)] for d, ns in zip(docs, nouns)]
            per: dict[str, list[float]] = {}
            for q, v in zip(queries, qvecs):
                gold = found = 0
                for pid, mentions in bench.gold.get(q.id, {}).items():
                    hit, _ = match_spans(mentions, [(s.start, s.end) for s in kept[position[pid]]])
                    gold, found = gold + len(mentions), found + hit
                best = np.array([max((float(s.vector @ v) for s in k), default=-np.inf) for k in kept])
                total = best + enc.info.passage_weight_for(q.text) * np.array([float(d.vector @ v) for d in docs])
                scope = bench.judged.get(q.id)
                order = [docs[i].passage.id for i in np.argsort(-total, kind="stable")
                         if np.isfinite(best[i]) and (scope is None or docs[i].passage.id in scope)]
                row = per.setdefault(group_of(q, training), [0, 0, 0.0, 0])
                row[0], row[1], row[2], row[3] = row[0] + gold, row[1] + found, row[2] + r_precision(order, bench.qrels[q.id]), row[3] + 1
            spans = sum(len(k) for k in kept) / len(docs)
            cells = " · ".join(f"{g}: recall {f / max(n, 1):.3f}, R-Prec {r / c:.3f} ({c})" for g, (n, f, r, c) in sorted(per.items()))
            print(f"{name:24s} {label:15s} spans/passage {spans:5.2f} · {cells}", flush=True)


if __name__ == "__main__":
    main()
