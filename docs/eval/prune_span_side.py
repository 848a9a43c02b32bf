"""A cheaper span side (issue 13's speed bound): 0.4.0's copied layers, pruned, distilled from themselves.

Model 0.4.0's span side runs its own copy of the backbone's top two layers (BENCHMARKS.md, "Where
0.4.0's encoding time goes"): the first on every token, the second on the tokens of kept spans.
This script makes a smaller copy: each copied layer keeps the ``--ffn`` feed-forward neurons and
the ``--heads`` attention heads that carry most of its output on the training passages (mean
|activation| times the norm of the weights that read it), and the pruned layers are then trained
to give the shipped side's outputs (*distillation*: no labels, the shipped side is the teacher) on
the passages the shipped model was trained on (sentences with the held-out medical types dropped,
as training dropped them). The loss: the last copied layer's token states (mean squared error over
the teacher's variance) plus 1 - cosine between student and teacher span vectors (the adapter
kept as shipped, frozen) on candidate spans of the batch. Held-out passages of the same files give
the figure it stops on: the mean cosine of span vectors to the teacher's.

    # model 0.5.0 was made from 0.4.0's folder: git archive b533d94 indexer/assets/default_model
    python docs/eval/prune_span_side.py --data ../shared/data --model <0.4.0 folder> --ffn 384 --heads 4 \
        --save side/p384h4
    nerindex export <0.4.0 folder> --span-side side/p384h4 --out m-p384h4 --version 0.5.0

Needs the ``[train]`` extra. About 25 minutes on 2 CPU cores with the defaults (the frozen states
about 8 of them; ``--cache`` keeps them for the next run). Pruning the shipped model (0.5.0, already
pruned) to its own sizes changes nothing: the student starts as the teacher (cosine 1).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_backbone import SpanSide, corpora, lower_states, save_side  # noqa: E402
from type_side import config_of  # noqa: E402

from indexer.assets import default_model_dir  # noqa: E402
from indexer.encoder import load_tokenizer  # noqa: E402
from indexer.training.export import backbone_tokenizer_file  # noqa: E402
from indexer.training.model import load_model_from_folder, shrink_layer  # noqa: E402


class Subset:
    """The examples :func:`lower_states` reads, as a corpus."""

    def __init__(self, examples: list) -> None:
        self.examples = examples


def importance(side: SpanSide, states, examples: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per copied layer: (feed-forward neuron scores [I], attention head scores [H]), each the mean
    absolute size of what the neuron or head adds to the layer's output on ``examples``."""
    acts: dict[tuple[int, str], list[torch.Tensor]] = {}
    hooks = []
    for k, layer in enumerate(side.top):
        def grab(name, k=k):
            return lambda mod, args: acts.setdefault((k, name), []).append(args[0].detach().reshape(-1, args[0].shape[-1]))
        hooks.append(layer.output.dense.register_forward_pre_hook(grab("ffn")))
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(grab("ctx")))
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            side.top_states(states, examples[i : i + 64])
    for h in hooks:
        h.remove()
    out = []
    for k, layer in enumerate(side.top):
        ffn = torch.cat(acts[(k, "ffn")]).abs().mean(0) * layer.output.dense.weight.norm(dim=0)
        ctx = torch.cat(acts[(k, "ctx")])  # [N, H*d]: the heads' outputs side by side
        n_heads = layer.attention.self.num_attention_heads
        d = ctx.shape[-1] // n_heads
        w = layer.attention.output.dense.weight  # [D, H*d]
        heads = torch.stack([(ctx[:, h * d : (h + 1) * d] @ w[:, h * d : (h + 1) * d].t()).norm(dim=-1).mean()
                             for h in range(n_heads)])  # fmt: skip
        out.append((ffn, heads))
    return out


def prune(layer, ffn_scores: torch.Tensor, head_scores: torch.Tensor, n_ffn: int, n_heads: int) -> None:
    """Keep the ``n_ffn`` best neurons and ``n_heads`` best heads of one BERT layer, in place."""
    shrink_layer(layer, ffn_scores.argsort(descending=True)[:n_ffn].sort().values,
                 head_scores.argsort(descending=True)[:n_heads].sort().values)  # fmt: skip


def batch_spans(corpus, exs: list[int], per_example: int, rng: random.Random) -> torch.Tensor:
    """Up to ``per_example`` candidate spans of each example, as (row, token start, token end)."""
    rows = []
    for i, e in enumerate(exs):
        cands = corpus.examples[e].cand_tok.tolist()
        for a, z in rng.sample(cands, min(per_example, len(cands))):
            rows.append((i, a, z))
    return torch.tensor(rows, dtype=torch.long)


def agreement(teacher: SpanSide, student: SpanSide, corpus, states, exs: list[int]) -> dict[str, float]:
    """Mean and 1st percentile of the cosine of student to teacher span vectors over every
    candidate span of ``exs``."""
    cos = []
    with torch.no_grad():
        for i in range(0, len(exs), 64):
            chunk = exs[i : i + 64]
            spans = batch_spans(corpus, chunk, 10**6, random.Random(0))
            teacher_hs, _ = teacher.top_states(states, chunk)
            student_hs, _ = student.top_states(states, chunk)
            cos.append((teacher.vectors(teacher_hs, *spans.T) * student.vectors(student_hs, *spans.T)).sum(-1))
    c = torch.cat(cos)
    return {"mean": round(float(c.mean()), 5), "p01": round(float(c.quantile(0.01)), 5), "spans": len(c)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the labelled sets (../shared/data)")
    ap.add_argument("--model", type=Path, default=default_model_dir(), help="the teacher's model folder (default: the shipped model; 0.5.0 was made from 0.4.0's)")
    ap.add_argument("--ffn", type=int, default=384, help="feed-forward neurons kept a copied layer (of 1536)")
    ap.add_argument("--heads", type=int, default=12, help="attention heads kept a copied layer (of 12)")
    ap.add_argument("--passages", type=int, default=12000, help="training passages used (the rest: none)")
    ap.add_argument("--held", type=int, default=500, help="passages held out for the agreement figure")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--spans", type=int, default=16, help="candidate spans a passage in the span loss")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, help="write the best student as a span side under this prefix")
    ap.add_argument("--out", type=Path, help="the figures as JSON")
    ap.add_argument("--cache", type=Path, help="keep the frozen states here between runs (same --passages, --held, --seed)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(2)

    cfg = config_of(args.model, args.data, Path(".cache/train"))
    model = load_model_from_folder(args.model).float()
    if model.span_top is None:
        raise SystemExit(f"{args.model}: its span side has no copied layers to prune")
    tokenizer = load_tokenizer(backbone_tokenizer_file(cfg.backbone))
    corpus = corpora(cfg, tokenizer, args.data)["train"]
    order = list(range(len(corpus.examples)))
    rng.shuffle(order)
    held, train = order[: args.held], order[args.held : args.held + args.passages]
    teacher = SpanSide(model, len(model.span_top), model.config.feature_layers).eval()
    t0 = time.time()
    needed = sorted(set(held) | set(train))
    if args.cache and args.cache.exists():
        states = torch.load(args.cache)
    else:
        lower = lower_states(model.backbone, Subset([corpus.examples[i] for i in needed]), {teacher.k0}, "cpu")
        states = {teacher.k0: {i: lower[teacher.k0][n] for n, i in enumerate(needed)}}
        if args.cache:
            torch.save(states, args.cache)
    print(f"frozen states of {len(needed)} passages: {time.time() - t0:.0f} s", file=sys.stderr)

    student = copy.deepcopy(teacher)
    scores = importance(teacher, states, train[:2000])
    for layer, (ffn, heads) in zip(student.top, scores):
        prune(layer, ffn, heads, args.ffn, args.heads)
    for p in student.adapter.parameters():
        p.requires_grad_(False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = [p for p in student.top.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * max(0.0, 1 - s / args.steps))
    history = [{"step": 0, **agreement(teacher, student, corpus, states, held)}]
    print(json.dumps(history[-1]), file=sys.stderr)
    best = (history[-1]["mean"], copy.deepcopy(student.state_dict()))
    student.train()
    for step in range(1, args.steps + 1):
        exs = rng.sample(train, args.batch)
        spans = batch_spans(corpus, exs, args.spans, rng)
        last = teacher.k0 + len(teacher.top)
        with torch.no_grad():
            teacher_hs, mask = teacher.top_states(states, exs)
            tv = teacher.vectors(teacher_hs, *spans.T)
        student_hs, _ = student.top_states(states, exs)
        th, sh = teacher_hs[last], student_hs[last]
        m = mask.unsqueeze(-1)
        var = ((th - (th * m).sum((0, 1)) / m.sum()) ** 2 * m).sum() / m.sum()
        hidden = (((sh - th) ** 2) * m).sum() / m.sum() / var
        cos = (student.vectors(student_hs, *spans.T) * tv).sum(-1)
        loss = hidden + (1 - cos).mean() * 10
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            student.eval()
            history.append({"step": step, "loss": round(loss.item(), 5), **agreement(teacher, student, corpus, states, held)})
            student.train()
            print(json.dumps(history[-1]), f"{time.time() - t0:.0f} s", file=sys.stderr)
            if history[-1]["mean"] > best[0]:
                best = (history[-1]["mean"], copy.deepcopy(student.state_dict()))
    student.load_state_dict(best[1])
    student.eval()
    report = {"ffn": args.ffn, "heads": args.heads, "passages": len(train), "held": len(held), "steps": args.steps,
              "lr": args.lr, "seed": args.seed, "history": history, "best_mean_cosine": best[0]}  # fmt: skip
    if args.save:
        card = json.loads((args.model / "model.json").read_text(encoding="utf-8"))
        report["files"] = save_side(student, args.save, trained_by=(
            f"docs/eval/prune_span_side.py --ffn {args.ffn} --heads {args.heads} --passages {args.passages} "
            f"--steps {args.steps} --lr {args.lr} --seed {args.seed}: the span side of {card['id']} "
            f"{card['version']}, pruned and distilled from it (held-out mean cosine {best[0]})"))
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
