"""What a silver run reports: counts, type mentions, the Familiarity of the dev evaluation types
with gold-only against silver training, and a sense-choice check on WordNet's usage examples."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ...conll import read_conll
from ...evaluation.familiarity import split_familiarity
from ...evaluation.heldout import MEDICAL_TYPES
from ..data import load_phrase_map
from .annotator import SilverAnnotator
from .glosses import Embed, embed_sorted, gloss_text
from .records import SilverSentence

# the annotator's counts that the summary reports as they are
REPORTED_COUNTS = (
    "candidates", "ambiguous", "not_a_noun", "dropped_lexname", "dropped_generic", "dropped_modifier",
    "dropped_no_types", "spans_too_wide", "gold_too_wide", "gold_misaligned",
)  # fmt: skip


def type_mentions(sentences: Iterable[SilverSentence], *, gold_only: bool = False) -> Counter[str]:
    """Mentions per type phrase: one per (span, type) pair; ``gold_only``: gold phrases of gold spans."""
    c: Counter[str] = Counter()
    for s in sentences:
        for sp in s.spans:
            if gold_only:
                if sp.source == "gold" and sp.label:
                    c[sp.label] += 1
            else:
                c.update(set(sp.types))
    return c


def dev_eval_types(data_dir: str | Path) -> dict[str, list[str]]:
    """The query phrases of the dev zero-shot sets: CrossNER politics/literature dev, MultiCoNER medical."""
    table = load_phrase_map()
    d = Path(data_dir)
    out: dict[str, list[str]] = {}
    for name in ("politics", "literature"):
        path = d / "crossner" / name / "dev.txt"
        if path.is_file():
            tags = {g.label for p in read_conll(path) for g in p.gold}
            out[f"crossner_{name}_dev"] = sorted({table["crossner"][t] for t in tags if table["crossner"].get(t)})
    out["multiconer_medical"] = list(MEDICAL_TYPES)
    return out


def familiarity_table(
    test_sets: dict[str, list[str]],
    trainings: dict[str, Counter[str]],
    embed: Embed,
    *,
    seen: Iterable[str] = (),
) -> dict[str, dict]:
    """Familiarity (indexer.evaluation.familiarity) of each test set against each training set.

    ``seen``: the gold training phrases; the types of a set outside them are its unseen types, the
    ones zero-shot figures are about, so their mean is reported on its own.
    """
    seen = set(seen)
    out: dict[str, dict] = {}
    for set_name, types in test_sets.items():
        unseen = [t for t in types if t not in seen]
        row: dict = {"unseen_types": unseen}
        for train_name, counts in trainings.items():
            per, mean = split_familiarity(types, counts, embed)
            row[train_name] = {
                "mean": round(mean or 0.0, 4),
                "mean_unseen": round(float(np.mean([per[t] for t in unseen])), 4) if unseen else None,
                "per_type": {t: round(v, 4) for t, v in per.items()},
            }
        out[set_name] = row
    return out


def usage_example_check(
    annotator: SilverAnnotator,
    embed: Embed,
    *,
    n: int = 1200,
    seed: int = 0,
    weights: Sequence[float] = (0.0, 0.02, 0.03, 0.04, 0.08),
) -> dict:
    """Sense-choice accuracy on WordNet's own usage examples of polysemous nouns.

    The only sense-tagged text at hand: each quoted example in a noun gloss uses the lemma in that
    sense. Candidates are chosen as in :func:`annotate` (all senses of the word, any part of
    speech); the example's own sense is embedded without that example (leave one out). Examples
    exist more often for rare senses than text does, so the first-sense baseline is low here and
    the prior is worth more on real text than this check shows.
    """
    wn = annotator.wn
    items = []
    for s in wn.noun_synsets():
        if s.is_instance:
            continue
        examples = re.findall(r'"([^"]+)"', s.gloss)
        for lemma in s.lemmas:
            low = lemma.lower()
            if " " in low or len(wn.senses(low, "n")) < 2:
                continue
            for ex in examples:
                if re.search(r"\b" + re.escape(low) + r"\b", ex.lower()):
                    items.append((s, low, ex))
    random.Random(seed).shuffle(items)
    items = items[:n]
    cands = [[(x, low) for x in wn.senses(low, "n")] + annotator.other_pos_senses(low) for _, low, _ in items]
    keys = {x.key: x for cs in cands for x, _ in cs}
    order = list(keys)
    gloss_vecs = dict(zip(order, embed_sorted([gloss_text(keys[k]) for k in order], embed)))
    own = embed_sorted([gloss_text(s).replace(f'"{ex}"', "") for s, _, ex in items], embed)
    sent = embed_sorted([ex for _, _, ex in items], embed)
    hits: dict[str, list[bool]] = defaultdict(list)
    for i, ((s, _, _), cs) in enumerate(zip(items, cands)):
        g = np.stack([own[i] if x.key == s.key else gloss_vecs[x.key] for x, _ in cs])
        gold = [x.key for x, _ in cs].index(s.key)
        prior = annotator.prior(cs)
        hits["first_sense"].append(int(np.argmax(prior)) == gold)
        for w in weights:
            hits[f"gloss_prior_{w:g}"].append(int(np.argmax(g @ sent[i] + w * prior)) == gold)
    return {"examples": len(items), "accuracy": {k: round(float(np.mean(v)), 4) for k, v in hits.items()}}


def summary(
    annotator: SilverAnnotator,
    sentences: Sequence[SilverSentence],
    *,
    out: Path,
    hierarchy: Path,
    sources: Sequence[str],
    excluded_sentences: int,
    wordnet: Path,
    embedding_model: str,
) -> dict[str, Any]:
    """The run's summary (``nerindex silver --json``); ``seconds`` is filled in by the caller."""
    silver_counts = type_mentions(sentences)
    gold_counts = type_mentions(sentences, gold_only=True)
    c = annotator.counts
    return {
        "out": str(out),
        "hierarchy": str(hierarchy),
        "sources": list(sources),
        "excluded_sentences_with_held_out_gold": excluded_sentences,
        "config": dataclasses.asdict(annotator.cfg),
        "wordnet": str(wordnet),
        "embedding_model": embedding_model,
        "counts": {
            "sentences": c["sentences"],
            "spans": c["spans_gold"] + c["spans_wordnet"],
            "spans_gold": c["spans_gold"],
            "spans_gold_with_wordnet_sense": c["gold_with_wordnet"],
            "spans_wordnet": c["spans_wordnet"],
            "spans_wordnet_instances": c["spans_wordnet_instance"],
            "type_phrases_distinct": len(silver_counts),
            "type_phrases_distinct_gold_only": len(gold_counts),
            "type_mentions": sum(silver_counts.values()),
            **{k: c[k] for k in REPORTED_COUNTS},
        },
        "seconds": None,
    }


def familiarity_report(data_dir: str | Path, sentences: Sequence[SilverSentence], embed: Embed) -> dict[str, dict]:
    """Familiarity of the dev evaluation types with gold-only and with silver training."""
    gold_counts = type_mentions(sentences, gold_only=True)
    trainings = {"gold_only": gold_counts, "silver": type_mentions(sentences)}
    return familiarity_table(dev_eval_types(data_dir), trainings, embed, seen=gold_counts)


def summary_text(summary: dict) -> str:
    """The summary as a few lines for a terminal."""
    c = summary["counts"]
    lines = [
        f"wrote {summary['out']} and {summary['hierarchy']} in {summary['seconds']} s",
        f"sentences {c['sentences']}; spans {c['spans']} (gold {c['spans_gold']}, of which "
        f"{c['spans_gold_with_wordnet_sense']} with a WordNet sense; WordNet {c['spans_wordnet']}, "
        f"of which {c['spans_wordnet_instances']} named instances)",
        f"distinct type phrases {c['type_phrases_distinct']} (gold only: {c['type_phrases_distinct_gold_only']})",
    ]
    for set_name, row in (summary.get("familiarity") or {}).items():
        parts = ", ".join(
            f"{k} {v['mean']:.3f} (unseen {v['mean_unseen']:.3f})"
            for k, v in row.items() if isinstance(v, dict) and v.get("mean_unseen") is not None
        )  # fmt: skip
        lines.append(f"Familiarity of {set_name}: {parts}")
    return "\n".join(lines)
