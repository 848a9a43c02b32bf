"""Research script (issue 13): does training the type side help types nobody trained on?

Type vectors are the backbone's frozen phrase embedding. This script keeps the shipped model's span
side as it is (its adapter, frozen) and trains a residual linear map on the type side,
``t' = unit(t + W t + b)`` (W, b start at zero, so step 0 is the shipped model), with the training
loss of the span adapter (``adapter.infonce_loss``: type-balanced batches of gold spans, related
types left out of the softmax). As ``nerindex train`` does for the adapter, run 1 holds the
validation types out of training and early-stops on their span R-Precision; run 2 trains on all
types for run 1's best number of steps. Printed: span R-Precision of gold spans (the training
report's figure) for the validation types, the seen dev types and the held-out medical types.

    python docs/eval/type_side.py --data ../shared/data --cache-dir .cache/train

Needs the ``[train]`` extra; the backbone states are computed once (~3 min on 2 cores) and kept
in ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from indexer.assets import default_model_dir
from indexer.training.adapter import infonce_loss, optimiser_step, run_protocol
from indexer.training.data import related
from indexer.training.features import adapter_vectors
from indexer.training.figures import macro_r_precision, span_r_precision
from indexer.training.model import HeadConfig, load_model_from_folder
from indexer.training.train import prepare_data
from indexer.training.train_config import TrainConfig


def config_of(folder: Path, data: Path, cache: Path) -> TrainConfig:
    """The shipped model's training configuration, with this machine's data and cache folders."""
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    recorded = dict(card["training"]["config"], data_dir=str(data), cache_dir=str(cache))
    recorded["heads"] = HeadConfig.from_dict(recorded["heads"])
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})


class TypeSide(torch.nn.Module):
    """``unit(t + W t + b)``, the identity at the start."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dims, dims)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return F.normalize(t + self.linear(t), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/train"))
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-4, 1e-3])
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = args.model or default_model_dir()
    cfg = config_of(folder, args.data, args.cache_dir)
    model = load_model_from_folder(folder)
    if model.config.span_layers:  # its span vectors are not the adapter over the frozen states cached here
        sys.exit(f"{folder}: its span side has its own top layers; pass --model with a model without them (0.2.0's folder)")
    data = prepare_data(cfg, model)
    with torch.no_grad():
        spans = {name: adapter_vectors(model, sf) for name, sf in (("train", data.train_sf), ("dev", data.dev_sf), ("zs", data.zs_sf))}
    dev_phrases = set(data.dev_sf.phrases)
    groups = {
        "validation": ("dev", data.dev_sf, [q for q in cfg.validation_types if q in dev_phrases]),
        "seen": ("dev", data.dev_sf, [q for q in data.types if q in dev_phrases]),
        "held-out medical": ("zs", data.zs_sf, list(data.held)),
    }

    def figures(side: TypeSide) -> dict[str, float]:
        with torch.no_grad():
            tv = {p: side(v) for p, v in data.type_vecs.items()}
        return {g: round(macro_r_precision(span_r_precision(spans[s], sf.phrases, q, tv)), 4) for g, (s, sf, q) in groups.items()}

    def train(lr: float, exclude: set[str], steps: int, early: bool) -> tuple[TypeSide, int, list]:
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        keep = [i for i, p in enumerate(data.train_sf.phrases) if p and p not in exclude]
        phrases = sorted({data.train_sf.phrases[i] for i in keep})
        index = {p: k for k, p in enumerate(phrases)}
        by_type: dict[int, list[int]] = {}
        for i in keep:
            by_type.setdefault(index[data.train_sf.phrases[i]], []).append(i)
        base = torch.stack([data.type_vecs[p] for p in phrases])
        rel = torch.tensor([[related(a, b) for b in phrases] for a in phrases])
        side = TypeSide(base.shape[1])
        opt = torch.optim.AdamW(side.parameters(), lr=lr, weight_decay=0.01)

        def step() -> float:
            batch = [rng.choice(by_type[rng.choice(list(by_type))]) for _ in range(cfg.adapter_batch)]
            idx = torch.tensor([index[data.train_sf.phrases[i]] for i in batch])
            return optimiser_step(opt, infonce_loss(spans["train"][torch.tensor(batch)], side(base), idx, rel, cfg.tau))

        run = run_protocol(side, step, lambda: figures(side)["validation"], fixed_steps=None if early else steps,
                           every=cfg.adapter_eval_every, patience=cfg.adapter_patience, max_steps=steps,
                           label=f"type side, lr {lr:g}")  # fmt: skip
        return side, run["best_step"], run["history"]

    out: dict = {"shipped (step 0)": figures(TypeSide(model.dims))}
    print(f"shipped: {out['shipped (step 0)']}")
    for lr in args.lr:
        side, step, history = train(lr, set(cfg.validation_types), args.max_steps, early=True)
        run1 = figures(side)
        side, _, _ = train(lr, set(), step, early=False)
        out[f"lr {lr:g}"] = {"best_step": step, "run1": run1, "run2": figures(side), "validation_history": history}
        print(f"lr {lr:g}: best step {step}; run 1 {run1}; (step, loss, validation R-Precision) {history}")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
