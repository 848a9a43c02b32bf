"""Research script (issue 13): an unseen type's query vector moved towards its nearest trained types.

The span side was trained to put a mention near its gold type's phrase vector, so a title sits near
"written work" (a training type) more than near "the name of a book": 0.153 of the unseen types'
gold mentions in returned relevant passages are mentions under the threshold ("book" 0.385;
``marking_rules.py --breakdown``). This script measures moving the query of a phrase the model was
not trained on towards the trained types it is closest to, at query time (no store change):
``q' = unit(q + beta * sum_i w_i t_i)`` over the ``k`` nearest training phrases' vectors ``t_i``
(as a search embeds them), ``w`` their softmax at temperature ``T`` over the cosines to ``q``. The
passages are returned and marked by the shipped rule (a mention at the unseen threshold) with
``q'`` in place of ``q``.

The family (``beta``, ``T``, ``k`` 3) is fixed here before any dev figure; the choice is by span F1
of the validation split's unseen types, the wider split (CrossNER's train splits) as the check.

    python docs/eval/type_prototypes.py --data ../shared/data --cache .cache/noun-types.pkl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from indexer.encoder import OnnxEncoder

sys.path.insert(0, str(Path(__file__).parent))
from noun_types import noun_rule, report, script_parser, split_rows, unseen_queries, write  # noqa: E402


def moved(q: np.ndarray, trained: np.ndarray, beta: float, temperature: float, k: int) -> np.ndarray:
    """``q`` moved by ``beta`` towards the softmax-weighted mean of its ``k`` nearest rows of ``trained``."""
    if not beta:
        return q
    sims = trained @ q
    near = np.argsort(-sims)[:k]
    w = np.exp((sims[near] - sims[near].max()) / temperature)
    out = q + beta * (w / w.sum()) @ trained[near]
    return (out / np.linalg.norm(out)).astype(np.float32)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--beta", type=float, nargs="*", default=[0.25, 0.5, 1.0])
    parser.add_argument("--temperature", type=float, nargs="*", default=[0.05, 0.1])
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    enc = OnnxEncoder.from_dir(args.model, device="cpu")
    sets, queries = unseen_queries(args.data, enc, args.cache)
    trained = enc.embed_types(list(enc.info.card.training.types))
    rules = {"shipped": (0.0, 1.0)} | {f"beta {b}, T {t}": (b, t) for b in args.beta for t in args.temperature}
    results: dict = {}
    for label, (beta, temperature) in rules.items():
        vectors = {name: {q.text: moved(v, trained, beta, temperature, args.k) for q, v in qs} for name, qs in queries.items()}
        moved_queries = {name: [(q, vectors[name][q.text]) for q, _ in qs] for name, qs in queries.items()}
        row = split_rows(sets, moved_queries, lambda name, q, _v: noun_rule(enc.info.threshold_for(q.text), False, False))
        row["nearest"] = {f"{name}: {q.text}": [enc.info.card.training.types[i] for i in np.argsort(-(trained @ v))[:args.k]]
                          for name, qs in queries.items() for q, v in qs} if label == "shipped" else None  # fmt: skip
        results[label] = row
        report(label, {k: v for k, v in row.items() if isinstance(v, dict) and "types" in v})
    write(results, args.out)

if __name__ == "__main__":
    main()
