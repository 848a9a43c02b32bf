"""Research script (issue 13, item 3): does fine-tuning the backbone's upper layers help unseen types?

The shipped model keeps the backbone frozen: only the span adapter and the entity head are trained,
on cached token states. Here the span side gets its own copy of the backbone's top N transformer
layers, trained at a low learning rate together with the span adapter (which starts from the
shipped weights), with the adapter's loss (``adapter.infonce_loss``: type-balanced batches of gold
spans, related types left out of the softmax) against the frozen type vectors. The type side and the
passage vectors keep the frozen backbone, so a model built this way would run the top N layers
twice per passage (N/6 of MiniLM-L6's layers more). N = 0 trains the adapter alone under the same
protocol: the control that separates "more adapter training" from "a moving backbone".

Protocol as ``nerindex train`` and ``type_side.py``: run 1 holds the validation types out of
training and early-stops on their span R-Precision. Figures are span R-Precision of gold spans
(the training report's figure; ranking gold spans, not passages, so detection plays no part), macro
over types, for: the validation types (held out in run 1), the seen MultiCoNER dev types, the
held-out medical types (MultiCoNER en-dev), and CrossNER politics and literature dev, split as
`nerindex eval` splits them: coarse tags apart, the other types by whether the training data has
them ("seen") or not ("unseen"). Step 0 is the shipped model; the script checks that its span
vectors equal the frozen pipeline's before training. ``--silver FILE`` trains on gold + WordNet
silver spans instead, as ``nerindex train --silver`` does (half the batch each, the loss over the
whole silver vocabulary with the hierarchy's relatives masked).

    # model 0.2.0 (`git archive 82f578a indexer/assets/default_model`): the shipped model's span side
    # has its own top layers already; pass --model <0.2.0 folder> to each command
    python docs/eval/finetune_backbone.py --data ../shared/data --out ft.json            # the grid
    python docs/eval/finetune_backbone.py --data ../shared/data --layers 6 --lr 1e-4 \
        --eval-every 5 --patience 10 --save side                                          # keep run 2
    python docs/eval/span_score_rules.py --data ../shared/data --span-side side/top6-lr0.0001-step5

The last line ranks the dev sets' passages with a saved span side, as `nerindex eval` scores them
(EVALUATION.md, "Fine-tuning the backbone's upper layers"). Needs the ``[train]`` extra. Meant for
a GPU (the default grid took 281 s on one H200); on 2 CPU cores use ``--max-steps 4`` as a smoke
test only (about 11 minutes, most of it the frozen states).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from type_side import config_of  # noqa: E402

from indexer.assets import default_model_dir  # noqa: E402
from indexer.encoder import load_tokenizer  # noqa: E402
from indexer.training.adapter import infonce_loss, optimiser_step, run_protocol  # noqa: E402
from indexer.evaluation.benchmark_io import COARSE_TAGS  # noqa: E402
from indexer.training.data import (  # noqa: E402
    Corpus, Source, build_corpus, default_sources, load_phrase_map, related, seen_phrases,
)
from indexer.training.export import backbone_tokenizer_file  # noqa: E402
from indexer.training.features import embed_phrases, gold_spans, pad_ids  # noqa: E402
from indexer.training.figures import macro_r_precision, span_r_precision  # noqa: E402
from indexer.training.model import load_model_from_folder  # noqa: E402
from indexer.training.span_side import read_span_side  # noqa: E402
from indexer.training.silver_train import BatchSampler, _held_out, _silver_loss  # noqa: E402
from indexer.training.data import limit_corpus  # noqa: E402
from indexer.training.train import load_silver  # noqa: E402


def corpora(cfg, tokenizer, data: Path) -> dict[str, Corpus]:
    """The training splits of the shipped model, plus CrossNER politics and literature dev."""
    sources = default_sources(data)
    kw = dict(max_length=cfg.max_length, max_span_width=cfg.max_span_width)
    held = tuple(cfg.held_out_types)
    out = {
        "train": build_corpus(sources["train"], tokenizer, exclude_phrases=held, **kw),
        "dev": build_corpus(sources["dev"], tokenizer, exclude_phrases=held, **kw),
        "medical": build_corpus(sources["zeroshot"], tokenizer, **kw),
    }
    for name in ("politics", "literature"):
        out[name] = build_corpus([Source("crossner", data / "crossner" / name / "dev.txt")], tokenizer, **kw)
    return out


@torch.no_grad()
def lower_states(backbone, corpus: Corpus, layers: set[int], device: str, batch: int = 256) -> dict[int, list[torch.Tensor]]:
    """Frozen hidden states (float16, on ``device``) of the given layer indices, per example."""
    out: dict[int, list[torch.Tensor]] = {j: [] for j in layers}
    exs = corpus.examples
    for i in range(0, len(exs), batch):
        chunk = exs[i : i + batch]
        ids, mask = pad_ids([e.ids for e in chunk])
        hs = backbone(
            input_ids=ids.to(device), attention_mask=mask.to(device), token_type_ids=torch.zeros_like(ids).to(device),
            output_hidden_states=True, return_dict=True,
        ).hidden_states  # fmt: skip
        for j in layers:
            for r, e in enumerate(chunk):
                out[j].append(hs[j][r, : len(e.ids)].half().clone())
    return out


class SpanSide(torch.nn.Module):
    """The span side: a trainable copy of the backbone's top N layers and of the span adapter."""

    def __init__(self, model, n_top: int, feature_layers: tuple[int, ...]) -> None:
        super().__init__()
        n_layers = int(model.backbone.config.num_hidden_layers)
        self.k0 = n_layers - n_top  # the frozen layer whose states enter the trainable copy
        own = model.span_top  # a model whose span side has its own layers (0.3.0) starts from them
        if own is not None and len(own) != n_top:
            raise SystemExit(f"this model's span side has its own {len(own)} top layers: train {len(own)}, "
                             "or pass --model with a model without them (0.2.0's folder)")  # fmt: skip
        self.top = copy.deepcopy(own if own is not None else model.backbone.encoder.layer[self.k0 :])
        self.adapter = copy.deepcopy(model.adapter)
        self.feature_layers = feature_layers
        for p in self.parameters():
            p.requires_grad_(True)

    @staticmethod
    def layers_needed(k0: int, feature_layers: tuple[int, ...]) -> set[int]:
        """Frozen layers a side reads: the copy's input and every feature layer below it."""
        return {k0} | {j for j in feature_layers if j < k0}

    def needed(self) -> set[int]:
        return self.layers_needed(self.k0, self.feature_layers)

    def forward(self, states: dict[int, list[torch.Tensor]], spans: list[tuple[int, int, int]]) -> torch.Tensor:
        """Unit span vectors of ``(example, tok_start, tok_end)`` spans, as the exported graph makes them."""
        exs = sorted({e for e, _, _ in spans})
        row = {e: i for i, e in enumerate(exs)}
        hs, _ = self.top_states(states, exs)
        dev = hs[self.k0].device
        b = torch.tensor([row[e] for e, _, _ in spans], device=dev)
        a = torch.tensor([s for _, s, _ in spans], device=dev)
        z = torch.tensor([x for _, _, x in spans], device=dev)
        return self.vectors(hs, b, a, z)

    def top_states(self, states, exs: list[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """({layer: states [B,T,D]} of the frozen layers the side reads and of each copied layer, mask
        [B,T]) of examples ``exs``, padded to the longest (``states[j][e]``: example e's layer j)."""
        first = states[self.k0][exs[0]]
        t = max(states[self.k0][e].shape[0] for e in exs)
        dev, d = first.device, first.shape[-1]
        mask = torch.zeros(len(exs), t, device=dev)
        padded = {j: torch.zeros(len(exs), t, d, device=dev) for j in self.needed()}
        for i, e in enumerate(exs):
            n = states[self.k0][e].shape[0]
            mask[i, :n] = 1
            for j in padded:
                padded[j][i, :n] = states[j][e].float()
        ext = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
        hs = dict(padded)
        h = padded[self.k0]
        for k, layer in enumerate(self.top):
            out = layer(h, attention_mask=ext)
            h = out[0] if isinstance(out, tuple) else out
            hs[self.k0 + 1 + k] = h
        return hs, mask

    def vectors(self, hs: dict[int, torch.Tensor], b: torch.Tensor, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Unit span vectors of the spans (row ``b``, tokens ``a``..``z``) of :meth:`top_states`' states."""
        feats = torch.cat([hs[j] for j in self.feature_layers], dim=-1)
        csum = torch.cat([torch.zeros(feats.shape[0], 1, feats.shape[-1], device=feats.device), feats.cumsum(1)], dim=1)
        mean = (csum[b, z + 1] - csum[b, a]) / (z - a + 1).unsqueeze(-1).float()
        start, end = feats[b, a], feats[b, z]
        base = mean[:, -hs[self.k0].shape[-1] :]  # the last layer is the last feature layer
        return F.normalize(base + self.adapter.residual_from_features(start, end, mean), dim=-1)


SHARD_BYTES = 15 * 2**20  # files that come back from the GPU machine: 16 MiB each at most


def save_side(side: SpanSide, prefix: Path, *, trained_by: str | None = None) -> list[str]:
    """The span side's weights as float16 safetensors shards ``<prefix>-<i>.safetensors``;
    ``trained_by`` (metadata) is what ``nerindex export --span-side`` records of where it came from."""
    from safetensors.torch import save_file

    prefix.parent.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in side.state_dict().items():
        t = v.detach().to("cpu", torch.float16).contiguous()
        if size and size + t.numel() * 2 > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += t.numel() * 2
    names = []
    for i, shard in enumerate(shards):
        path = prefix.parent / f"{prefix.name}-{i}.safetensors"
        meta = {"top_layers": str(len(side.top)), **({"trained_by": trained_by} if trained_by else {})}
        save_file(shard, str(path), metadata=meta)
        names.append(path.name)
    return names


def load_side(model, prefix: Path, feature_layers: tuple[int, ...]) -> SpanSide:
    """A span side saved by :func:`save_side` (float32 again)."""
    n_top, state = read_span_side(prefix)
    side = SpanSide(model, n_top, feature_layers)
    side.load_state_dict(state)
    return side.eval()


@torch.no_grad()
def char_span_vectors(model, side: SpanSide, tokenizer, texts: list[str], spans: list[tuple[int, int, int]],
                      *, max_length: int, chunk: int = 64) -> tuple[torch.Tensor, list[bool]]:
    """Span-side vectors of ``(passage, char start, char end)`` spans of plain texts, and whether each
    could be placed (a span past the first ``max_length`` tokens is not: its entry is zero)."""
    out = torch.zeros(len(spans), model.dims)
    placed = [False] * len(spans)
    by_passage: dict[int, list[int]] = {}
    for k, (p, _, _) in enumerate(spans):
        by_passage.setdefault(p, []).append(k)
    order = sorted(by_passage)
    n_layers = int(model.backbone.config.num_hidden_layers)
    layers = sorted(SpanSide.layers_needed(n_layers - len(side.top), side.feature_layers))
    for i in range(0, len(order), chunk):
        group = order[i : i + chunk]
        encs = [tokenizer.encode(texts[p]) for p in group]
        encs = [(e.ids[:max_length], e.offsets[:max_length]) for e in encs]
        ids, mask = pad_ids([e for e, _ in encs])
        hs = model.backbone(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                            output_hidden_states=True, return_dict=True).hidden_states  # fmt: skip
        states = {j: [hs[j][r, : len(encs[r][0])] for r in range(len(group))] for j in layers}
        todo, where = [], []
        for r, p in enumerate(group):
            offs = encs[r][1]
            for k in by_passage[p]:
                _, a, b = spans[k]
                toks = [x for x, (s, e) in enumerate(offs) if e > s and s < b and e > a]
                if toks:
                    todo.append((r, toks[0], toks[-1]))
                    where.append(k)
        if todo:
            vecs = side(states, todo)
            for k, v in zip(where, vecs):
                out[k] = v
                placed[k] = True
    return out, placed


def replace_span_vectors(sets: dict[str, tuple], side_prefix: str, folder: Path, max_length: int) -> dict[str, int]:
    """Give ``span_score_rules.py``'s encoded sets the span vectors of a saved span side (in place);
    ``side_prefix`` "shipped" is the shipped adapter on the frozen backbone, computed the same way
    (float32 PyTorch instead of the int8 graph: the baseline of the same run). Returns the number of
    spans per set left with their graph vectors (past ``max_length`` tokens)."""
    import numpy as np

    model = load_model_from_folder(folder).float()
    layers = model.config.feature_layers
    shipped = SpanSide(model, model.config.span_layers, layers).eval() if side_prefix == "shipped" else None
    side = shipped or load_side(model, Path(side_prefix), layers)
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    torch.set_num_threads(2)
    left = {}
    for name, (_, encoded, *_) in sets.items():
        spans = [(int(p), int(a), int(b)) for p, (a, b) in zip(encoded["passage"], encoded["offsets"])]
        vecs, placed = char_span_vectors(model, side, tokenizer, encoded["texts"], spans, max_length=max_length)
        ok = np.array(placed, dtype=bool)
        encoded["vectors"] = np.where(ok[:, None], vecs.numpy(), encoded["vectors"]).astype(np.float32)
        left[name] = int((~ok).sum())
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--model", type=Path, default=None, help="the model to start from (default: the shipped one)")
    parser.add_argument("--backbone", default=None, help="backbone folder (default: the model card's)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 2, 6, 1], help="top layers trained (0: adapter only)")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4], help="learning rates of the layers")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--patience", type=int, default=8, help="evaluations without improvement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=None, help="start no run after this many seconds")
    parser.add_argument("--limit", type=int, default=None, help="first N passages of each set (smoke tests)")
    parser.add_argument("--silver", type=Path, default=None,
                        help="a `nerindex silver` file: batches half gold, half WordNet spans, loss over its vocabulary")
    parser.add_argument("--save", type=Path, default=None, help="folder for each run 2's span side (float16 shards)")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every run (written after each)")
    args = parser.parse_args()
    t_start = time.time()
    dev = args.device
    folder = args.model or default_model_dir()
    cfg = config_of(folder, args.data, Path(".cache/train"))
    model = load_model_from_folder(folder, backbone=args.backbone).float()  # a float16 copy loads as float16
    tokenizer = load_tokenizer(backbone_tokenizer_file(args.backbone or cfg.backbone))
    data = corpora(cfg, tokenizer, args.data)
    if args.limit:
        data = {k: limit_corpus(c, args.limit) for k, c in data.items()}
    train_types = seen_phrases(data["train"])
    phrases_of = {k: seen_phrases(c) for k, c in data.items()}
    queries = sorted(set().union(*phrases_of.values()) | set(cfg.held_out_types) | set(cfg.validation_types))
    type_vecs = embed_phrases(model, tokenizer, queries)  # frozen type side (CPU, float32)
    silver = None
    if args.silver:  # as `nerindex train --silver` reads it (hierarchy masking on, every type a negative)
        silver = load_silver(dataclasses.replace(cfg, silver=str(args.silver), silver_dev=None), data["train"], data["dev"])
        vocab_vecs = embed_phrases(model, tokenizer, silver["spans"].vocab)
        silver["matrix"] = torch.stack([vocab_vecs[t] for t in silver["spans"].vocab])
        print(f"silver: {silver['counts']}, vocabulary {len(silver['spans'].vocab)}", flush=True)
    model.to(dev)
    gold = {k: [g for g in gold_spans(c) if g[3]] for k, c in data.items()}
    groups = {
        "validation (held out)": ("dev", [q for q in cfg.validation_types if q in phrases_of["dev"]]),
        "seen dev": ("dev", [q for q in train_types if q in phrases_of["dev"]]),
        "medical (held out)": ("medical", [q for q in cfg.held_out_types if q in phrases_of["medical"]]),
    }
    # CrossNER's coarse tags are scored apart, as nerindex eval does (benchmark_io.COARSE_TAGS)
    coarse = {load_phrase_map()["crossner"].get(t) for t in COARSE_TAGS["crossner"]}
    for name in ("politics", "literature"):
        fine = [q for q in phrases_of[name] if q not in coarse]
        groups[f"{name} unseen"] = (name, [q for q in fine if q not in train_types])
        groups[f"{name} seen"] = (name, [q for q in fine if q in train_types])
        groups[f"{name} coarse"] = (name, [q for q in phrases_of[name] if q in coarse])
    groups = {g: (c, q) for g, (c, q) in groups.items() if q}  # literature has no seen fine type
    print(json.dumps({g: q for g, (_, q) in groups.items()}), flush=True)

    # frozen states of every layer any requested span side reads, computed once
    n_layers = int(model.backbone.config.num_hidden_layers)
    needed = set().union(*(SpanSide.layers_needed(n_layers - n, cfg.heads.feature_layers) for n in {0, 2, *args.layers}))
    t0 = time.time()
    states = {k: lower_states(model.backbone, c, needed, dev) for k, c in data.items()}
    print(f"frozen states of layers {sorted(needed)}: {time.time() - t0:.0f} s", flush=True)

    @torch.no_grad()
    def vectors(side: SpanSide, corpus: str, chunk: int = 512) -> torch.Tensor:
        side.eval()
        spans = [(e, a, b) for e, a, b, _ in gold[corpus]]
        return torch.cat([side(states[corpus], spans[i : i + chunk]).cpu() for i in range(0, len(spans), chunk)])

    def figures(side: SpanSide) -> dict[str, float]:
        vecs = {c: vectors(side, c) for c in {c for c, _ in groups.values()}}
        return {
            g: round(macro_r_precision(span_r_precision(vecs[c], [p for *_, p in gold[c]], q, type_vecs)), 4)
            for g, (c, q) in groups.items()
        }

    def step_loss(exclude: set[str]):
        """The loss of one training step of a span side, batches drawn as ``nerindex train`` draws
        them (``--silver``: half gold, half silver); ``exclude``: types held out of training."""
        rng = random.Random(cfg.seed)
        if silver is not None:
            ss = silver["spans"]
            held_cols, keep = _held_out(ss, silver["related"], exclude)
            sampler = BatchSampler(ss, keep=keep, silver_share=cfg.silver_share, seed=cfg.seed)
            loss = _silver_loss(ss, silver["matrix"], silver["related"], torch.from_numpy(held_cols), cfg)

            def silver_step(side: SpanSide) -> torch.Tensor:
                batch = sampler.sample(cfg.adapter_batch)
                # the loss runs on the CPU (masks over the whole vocabulary); gradients flow back
                return loss(side(states["train"], [ss.spans[i][:3] for i in batch]).cpu(), batch, None)

            return silver_step
        keep = [i for i, g in enumerate(gold["train"]) if g[3] not in exclude]
        phrases = sorted({gold["train"][i][3] for i in keep})
        index = {p: k for k, p in enumerate(phrases)}
        by_type: dict[int, list[int]] = {}
        for i in keep:
            by_type.setdefault(index[gold["train"][i][3]], []).append(i)
        tv = torch.stack([type_vecs[p] for p in phrases]).to(dev)
        rel = torch.tensor([[related(a, b) for b in phrases] for a in phrases], device=dev)

        def gold_step(side: SpanSide) -> torch.Tensor:
            batch = [rng.choice(by_type[rng.choice(list(by_type))]) for _ in range(cfg.adapter_batch)]
            idx = torch.tensor([index[gold["train"][i][3]] for i in batch], device=dev)
            return infonce_loss(side(states["train"], [gold["train"][i][:3] for i in batch]), tv, idx, rel, cfg.tau)

        return gold_step

    def train(n_top: int, lr: float, exclude: set[str], steps: int, early: bool):
        """A span side trained for ``steps`` steps, or (``early``) stopped early on the validation
        types as ``nerindex train`` stops the adapter: (side, its step, history, step-0 figures)."""
        torch.manual_seed(cfg.seed)
        side = SpanSide(model, n_top, cfg.heads.feature_layers).to(dev)
        loss_of = step_loss(exclude)
        groups_ = [{"params": list(side.adapter.parameters()), "lr": cfg.adapter_lr}]
        if n_top:
            groups_.append({"params": list(side.top.parameters()), "lr": lr})
        opt = torch.optim.AdamW(groups_, weight_decay=0.01)

        def step() -> float:
            side.train()
            return optimiser_step(opt, loss_of(side))

        seen: list[dict[str, float]] = []  # every evaluation's figures; the first is step 0's (run 1 only)

        def evaluate() -> float:
            seen.append(figures(side))
            return seen[-1]["validation (held out)"]

        run = run_protocol(side, step, evaluate, fixed_steps=None if early else steps, every=args.eval_every,
                           patience=args.patience, max_steps=steps, label=f"top {n_top}, lr {lr:g}")  # fmt: skip
        return side, run["best_step"], run["history"], seen[0] if seen else None

    # step 0 must be the shipped model: the copy's span vectors equal the frozen pipeline's
    side0 = SpanSide(model, 0, cfg.heads.feature_layers).to(dev)
    side2 = SpanSide(model, 2, cfg.heads.feature_layers).to(dev)
    v0 = vectors(side0, "medical")
    v2 = vectors(side2, "medical")
    agree = float((v0 * v2).sum(-1).min())
    print(f"step-0 check: min cosine between frozen and copied-layer span vectors {agree:.5f}", flush=True)
    if agree < 0.999:
        raise SystemExit("the copied layers do not reproduce the frozen span vectors")

    results: dict = {"device": dev, "silver": str(args.silver) if args.silver else None, "groups": {g: q for g, (_, q) in groups.items()}, "runs": []}
    for n_top in args.layers:
        for lr in (args.lr if n_top else [0.0]):
            if args.budget_s is not None and time.time() - t_start > args.budget_s:
                print(f"budget spent: top {n_top}, lr {lr:g} not run", flush=True)
                continue
            t0 = time.time()
            side, step, history, first = train(n_top, lr, set(cfg.validation_types), args.max_steps, early=True)
            run1 = figures(side)
            side, _, _, _ = train(n_top, lr, set(), step, early=False)
            run = {
                "top_layers": n_top, "lr": lr, "best_step": step, "step0": first, "run1": run1,
                "run2": figures(side), "validation_history": history, "seconds": round(time.time() - t0, 1),
            }  # fmt: skip
            if args.save:
                tag = "silver-" if silver is not None else ""
                run["saved"] = save_side(side, args.save / f"{tag}top{n_top}-lr{lr:g}-step{step}")
            results["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "validation_history"}), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
    print(f"total {time.time() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
