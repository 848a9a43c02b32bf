"""The ONNX runtime path on the shipped model: loading checks, spans, windows, type vectors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from indexer.encoder import CPU, CUDA, OnnxEncoder, choose_provider
from indexer.errors import ModelError, StoreError
from indexer.assets import default_model_dir
from indexer.model_folder import ModelInfo
from indexer.records import Passage


@pytest.fixture(scope="session")
def encoder() -> OnnxEncoder:
    return OnnxEncoder.from_dir(default_model_dir(), device="cpu")


@pytest.mark.parametrize(
    "device,available,expected",
    [
        ("auto", [CUDA, CPU], CUDA),
        ("auto", [CPU], CPU),
        ("cpu", [CUDA, CPU], CPU),
        ("cuda", [CUDA, CPU], CUDA),
    ],
)
def test_choose_provider(device, available, expected):
    assert choose_provider(device, available) == expected


def test_cuda_asked_but_missing_is_clear():
    with pytest.raises(ModelError, match=r"nerindex\[gpu\]"):
        choose_provider("cuda", [CPU])


@pytest.mark.filterwarnings("ignore:Specified provider")
@pytest.mark.parametrize("driver", [True, False], ids=["driver", "no-driver"])
def test_a_cuda_provider_that_cannot_start_is_not_reported_as_running(monkeypatch, caplog, capsys, driver):
    """onnxruntime-gpu without a usable driver lists CUDA, then runs the session on the CPU without a
    word; the encoder reported CUDA and ran the fp16 graph whole on the CPU (audit2-model). Here the
    CPU build stands in: asked for CUDA it falls back the same way. Under auto the fp16 graph is not
    even loaded: without the driver's library nothing is tried, with it a one-node graph tries first."""
    import logging

    import onnxruntime as ort

    from indexer import encoder as encoder_module
    from indexer import runtime

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(runtime, "cuda_driver", lambda: driver)
    # onnxruntime-gpu's preload_dlls print()s each missing CUDA library to stdout (an audit: it broke --json)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: print("Failed to load libcublasLt.so.13"), raising=False)
    severities = []
    monkeypatch.setattr(ort, "set_default_logger_severity", severities.append)
    opened, probes = [], []
    real_open, real_probe = encoder_module.open_session, runtime.cuda_starts

    def open_session(graph, provider, **kwargs):
        session = real_open(graph, provider, **kwargs)
        opened.append((getattr(graph, "name", graph), provider, session.get_providers()[0]))
        return session

    monkeypatch.setattr(encoder_module, "open_session", open_session)
    monkeypatch.setattr(runtime, "open_session", open_session)
    monkeypatch.setattr(runtime, "cuda_starts", lambda: probes.append(real_probe()) or probes[-1])
    with caplog.at_level(logging.WARNING, logger="indexer.encoder"):
        enc = OnnxEncoder.from_dir(default_model_dir(), device="auto")
    assert enc.provider == CPU and enc._load_stages is not None  # the CPU path, staged
    assert probes == ([False] if driver else [])  # the one-node graph ran on the CPU: CUDA did not start
    assert [name for name, _, _ in opened if isinstance(name, str)] == ["encoder.int8.onnx"]  # never the fp16 graph
    assert opened[-1] == ("encoder.int8.onnx", CPU, CPU)
    assert [r.getMessage() for r in caplog.records] == [
        "onnxruntime lists CUDA but could not start it: running the CPU graph on the CPU "
        "(--device cuda shows onnxruntime's reasons; --device cpu or NERINDEX_DEVICE=cpu skips the try)"
    ]
    # onnxruntime's coloured error lines kept back while CUDA starts, then its default
    assert severities == ([4, 2] if driver else [])
    assert capsys.readouterr().out == ""
    with pytest.raises(ModelError, match=r"device 'cuda' asked for, but onnxruntime could not start its CUDA provider"):
        OnnxEncoder.from_dir(default_model_dir(), device="cuda")
    printed = capsys.readouterr()  # asked for CUDA: onnxruntime's reasons, on stderr
    assert printed.out == "" and "libcublasLt" in printed.err and severities == ([4, 2] if driver else [])
    assert opened[-1][0] == "encoder.fp16.onnx"  # asked for CUDA, the real graph is the try


def test_type_vectors_are_unit_and_cached(encoder):
    vecs = encoder.embed_types(["dinosaur", "political party", "dinosaur"])
    assert vecs.shape == (3, encoder.info.dims)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    assert np.array_equal(vecs[0], vecs[2])
    assert float(vecs[0] @ vecs[1]) < 0.99


def test_a_phrase_has_one_vector_whatever_came_with_it_or_before_it():
    """int8 activations are quantised with one scale per graph call: embedded in a batch, "person"
    moved to cosine 0.974 of itself alone, and the cache kept whichever came first."""
    alone = OnnxEncoder.from_dir(default_model_dir(), device="cpu").embed_types(["person"])[0]
    other = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    together = other.embed_types(["artist", "person", "a much longer type phrase than the others"])
    assert np.array_equal(together[1], alone)
    assert np.array_equal(other.embed_types(["person"])[0], alone)


def test_the_query_catalog_holds_what_a_search_for_each_phrase_uses(encoder):
    shown = encoder.query_catalog()
    assert shown.phrases == encoder.catalog.phrases
    row = shown.phrases.index("politician")
    np.testing.assert_array_equal(shown.vectors[row], encoder.embed_types(["politician"])[0])


def test_more_phrases_than_the_cache_holds(encoder, monkeypatch):
    import indexer.encoder as module

    monkeypatch.setattr(module, "TYPE_CACHE_SIZE", 3)
    phrases = [f"type number {i}" for i in range(10)] + ["type number 0"]
    vecs = encoder.embed_types(phrases)
    assert vecs.shape == (11, encoder.info.dims)
    assert np.array_equal(vecs[0], vecs[10])
    assert len(encoder._type_cache) <= 3


def test_spans_are_consistent(encoder):
    text = "Angela Merkel met Barack Obama in Berlin before flying to Paris with Air France."
    (doc,) = encoder.encode([Passage("x", text)], with_base=True)
    assert doc.vector.shape == (encoder.info.dims,)
    assert abs(float(np.linalg.norm(doc.vector)) - 1) < 1e-3
    assert [(s.start, s.end) for s in doc.spans] == sorted((s.start, s.end) for s in doc.spans)
    for kind in (True, False):  # each detector's spans nest at most, never cross
        spans = [s for s in doc.spans if s.mention is kind]
        for a in spans:
            assert all(b.end <= a.start or a.end <= b.start or (a.start <= b.start and b.end <= a.end)
                       or (b.start <= a.start and a.end <= b.end) for b in spans)
    assert any(s.mention for s in doc.spans)
    for span in doc.spans:
        assert text[span.start : span.end] == span.text
        # a mention passed the marking head's threshold, a candidate the candidate head's
        assert span.score >= (encoder.info.detection_threshold if span.mention else encoder.info.candidate_threshold)
        assert abs(float(np.linalg.norm(span.vector)) - 1) < 1e-3
        assert span.base_vector is not None and span.base_vector.shape == span.vector.shape
        assert len(span.labels) <= encoder.info.labels_per_span


def test_a_mark_keeps_the_accent_of_decomposed_text(encoder):
    """NFD text: the uncased tokenizer drops the combining accent, the marked name must not."""
    text = "Beyonce\u0301 sang in Paris with Chloe\u0308."
    (doc,) = encoder.encode([Passage("x", text)])
    names = {s.text for s in doc.spans}
    assert "Beyonce\u0301" in names and "Chloe\u0308" in names
    assert not any(text[s.end : s.end + 1] in ("\u0301", "\u0308") for s in doc.spans)



@pytest.mark.parametrize("brk", ["\x0c", "\x0b", "\x1e", "\x85", "\u200b"])
def test_a_page_break_or_zero_width_space_parts_words_as_a_space_does(encoder, brk):
    """BERT's normaliser deleted these, joining the words either side: "Barack Obama\fAngela" was
    a span and "Barack Obama" none (an audit)."""
    spaced = "He met Barack Obama Angela Merkel in Paris London."
    (plain,) = encoder.encode([Passage("x", spaced)])
    (broken,) = encoder.encode([Passage("x", spaced.replace(" ", brk))])
    assert [(s.start, s.end, s.mention) for s in broken.spans] == [(s.start, s.end, s.mention) for s in plain.spans]
    assert {"Barack Obama", "Paris"} <= {s.text for s in plain.spans}
    assert np.allclose([s.score for s in broken.spans], [s.score for s in plain.spans], atol=1e-6)


def test_a_special_tokens_name_in_a_text_is_text(encoder):
    """"[SEP]" in a passage was the separator token itself, and "Google" next to it scored 0.73
    where "[sep]" gives 0.38 (an audit)."""
    texts = ["BERT puts a [SEP] token between sentences, wrote Jacob Devlin at Google.",
             "BERT puts a [sep] token between sentences, wrote Jacob Devlin at Google."]
    upper, lower = encoder.encode([Passage("u", texts[0]), Passage("l", texts[1])])
    assert [(s.start, s.end) for s in upper.spans] == [(s.start, s.end) for s in lower.spans]
    assert np.allclose([s.score for s in upper.spans], [s.score for s in lower.spans], atol=1e-6)

def test_a_passage_is_encoded_the_same_whatever_is_batched_with_it(encoder):
    """int8 dynamic quantisation scales activations per graph call: batched with others, a
    passage's spans and vectors moved (cosine down to 0.97, spans dropped or kept at the
    detection threshold), so its index depended on its neighbours and on --batch-size. On the CPU
    each window runs alone (``window_calls``): the same spans, scores and vectors every time."""
    texts = ["Paris is in France.", "The Nile flows north through Egypt and Sudan to the sea.", "Hi.",
             "Angela Merkel met Emmanuel Macron in Berlin on Tuesday to discuss the European Union budget."]
    together = encoder.encode([Passage(str(i), t) for i, t in enumerate(texts)], batch_size=3)
    reordered = encoder.encode([Passage(str(i), t) for i, t in reversed(list(enumerate(texts)))], batch_size=2)[::-1]
    for i, t in enumerate(texts):
        (alone,) = encoder.encode([Passage(str(i), t)], batch_size=1)
        for other in (together[i], reordered[i]):
            assert [(s.start, s.end, s.mention) for s in other.spans] == [(s.start, s.end, s.mention) for s in alone.spans]
            assert float(alone.vector @ other.vector) > 0.99999
            for a, b in zip(alone.spans, other.spans):
                assert float(a.vector @ b.vector) > 0.99999 and abs(a.score - b.score) < 1e-5


def test_the_cpu_runs_each_window_alone(encoder):
    """The batching rule itself: on the CPU every window is a graph call of its own."""
    items = [object() for _ in range(5)]
    assert encoder.window_calls and encoder._batches(items, 32) == [[it] for it in items]


def test_long_passage_is_windowed_not_truncated(encoder):
    filler = " ".join(["the weather was mild and the fields were green"] * 120)
    text = f"{filler} In the end Barack Obama visited Paris."
    _, items = encoder._plan(0, Passage("long", text))
    assert len(items) > 1
    assert max(len(it.ids) for it in items) <= encoder.info.max_length
    # candidates reach the very last words of the passage
    assert max(end for it in items for _, end in it.chars) == len(text)
    (doc,) = encoder.encode([Passage("long", text)])
    assert all(text[s.start : s.end] == s.text for s in doc.spans)


def test_windows_progress_moves_within_one_long_passage(encoder):
    """One long passage holds the passage count at 0 for minutes; the windows count moves."""
    text = " ".join(["the weather was mild and the fields were green near Paris"] * 200)
    calls: list[tuple[int, int]] = []
    encoder.encode([Passage("long", text)], batch_size=2, windows=lambda done, total: calls.append((done, total)))
    _, items = encoder._plan(0, Passage("long", text))
    assert len(calls) > 1 and calls[-1] == (len(items), len(items))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and {t for _, t in calls} == {len(items)}


def test_empty_and_symbol_only_passages(encoder):
    docs = encoder.encode([Passage("a", "\u200b"), Passage("b", "!!!")])
    assert len(docs) == 2
    assert all(d.vector.shape == (encoder.info.dims,) for d in docs)


def copy_model(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(default_model_dir(), target)
    return target


def test_corrupt_file_is_refused(tmp_path):
    target = copy_model(tmp_path)
    with open(target / "tokenizer.json", "a", encoding="utf-8") as handle:
        handle.write(" ")
    with pytest.raises(ModelError, match="tokenizer.json: checksum"):
        ModelInfo.load(target)


def test_missing_model_json(tmp_path):
    with pytest.raises(ModelError, match="no model.json"):
        OnnxEncoder.from_dir(tmp_path)


def test_a_max_length_beyond_the_graph_is_one_model_error(tmp_path):
    """A hand-edited model.json asking for windows longer than the backbone's positions: one
    ModelError naming the width, not onnxruntime's traceback (an audit)."""
    target = copy_model(tmp_path)
    meta = json.loads((target / "model.json").read_text())
    meta["max_length"] = 1024  # MiniLM has 512 positions
    (target / "model.json").write_text(json.dumps(meta))
    encoder = OnnxEncoder.from_dir(target, device="cpu")
    with pytest.raises(ModelError, match=r"failed on windows of 1024 tokens \(model.json's max_length, 1024, bounds"):
        encoder.encode([Passage("a", "The Triceratops lived in the Cretaceous. " * 200)])


def test_wrong_graph_names_are_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    target = copy_model(tmp_path)
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, target / "bad.onnx")
    meta = json.loads((target / "model.json").read_text())
    from indexer.model_folder import sha256_file

    meta["graphs"]["cpu"] = "bad.onnx"
    meta["files"]["bad.onnx"] = sha256_file(target / "bad.onnx")
    (target / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"bad.onnx: not a nerindex graph"):
        OnnxEncoder.from_dir(target, device="cpu")


def _span(start: int, end: int, score: float, wide: float | None):
    return (start, end, score, wide, np.zeros(2, dtype=np.float32), None)


def test_each_head_decodes_its_own_spans_and_only_the_marking_heads_are_mentions():
    from indexer.spans import decode_spans

    spans = [
        _span(0, 13, 0.9, 0.2),  # "War and Peace": the marking head's
        _span(0, 3, 0.01, 0.7),  # "War" inside it: a candidate (nested decoding keeps both)
        _span(4, 20, 0.02, 0.6),  # crosses the mention: a candidate, decoded apart, is kept
        _span(25, 30, 0.05, 0.05),  # neither head's
        _span(31, 36, 0.5, 0.9),  # both heads': one mention, not also a candidate
    ]
    kept = decode_spans(spans, 0.08, 0.1, nested=True)
    assert [(sp[0], sp[1], mention) for sp, mention in kept] == [
        (0, 3, False), (0, 13, True), (4, 20, False), (31, 36, True),
    ]
    # without a candidate head, the marking head's decoding alone: every span a mention
    assert [(sp[0], sp[1], m) for sp, m in decode_spans(spans, 0.08, None, nested=True)] == [(0, 13, True), (31, 36, True)]


def test_a_candidate_threshold_needs_a_graph_with_candidate_scores():
    from pathlib import Path
    from types import SimpleNamespace

    from indexer.encoder import check_io
    from indexer.model_folder import INPUT_NAMES, OUTPUT_NAMES

    def named(names):
        return lambda: [SimpleNamespace(name=n) for n in names]

    session = SimpleNamespace(get_inputs=named(INPUT_NAMES), get_outputs=named(OUTPUT_NAMES))
    check_io(session, Path("g.onnx"))  # a graph without the head serves a card without candidate_threshold
    with pytest.raises(ModelError, match="g.onnx: not a nerindex graph.*candidate_scores"):
        check_io(session, Path("g.onnx"), candidate=True)
    # and the reverse: a graph with the head under a card without its threshold ran with it off (an audit)
    headed = SimpleNamespace(get_inputs=named(INPUT_NAMES), get_outputs=named([*OUTPUT_NAMES, "candidate_scores"]))
    check_io(headed, Path("m/g.onnx"), candidate=True)
    with pytest.raises(ModelError, match=r"m/model.json: no candidate_threshold, but the graph g.onnx has a candidate head"):
        check_io(headed, Path("m/g.onnx"), card=Path("m/model.json"))


def test_threads_set_how_many_windows_run_at_once(monkeypatch):
    """--threads / NERINDEX_THREADS reach the encoder: that many window workers on the CPU, each
    call on one onnxruntime thread."""
    from indexer.config import from_env

    assert from_env({"NERINDEX_THREADS": "3"}).threads == 3 and from_env({}).threads is None
    with pytest.raises(StoreError, match="NERINDEX_THREADS"):
        from_env({"NERINDEX_THREADS": "two"})
    assert OnnxEncoder.from_dir(default_model_dir(), device="cpu", threads=3).workers == 3


def test_onnxruntime_and_onnxruntime_gpu_installed_together_are_refused(monkeypatch):
    """``pip install 'nerindex[cpu,gpu]'`` installs both without a word; they are one module on disk."""
    import importlib.metadata

    real = importlib.metadata.version
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}  # whichever of them is really here
    monkeypatch.setattr(importlib.metadata, "version", lambda name: versions[name] if name in versions else real(name))
    with pytest.raises(ModelError, match=r"onnxruntime 1\.32\.0 and onnxruntime-gpu 1\.31\.1 are both installed.*pip uninstall"):
        OnnxEncoder.from_dir(default_model_dir(), device="cpu")


def test_onnxruntime_writes_no_telemetry_under_home(tmp_path):
    """An audit: onnxruntime 1.32 wrote a device id and queued telemetry events under
    ~/.cache/Microsoft/DeveloperTools for every nerindex process; nerindex sets ORT_DISABLE_TELEMETRY."""
    import subprocess
    import sys

    # onnxruntime writes no telemetry where a CI system's variable is set (CI=true in .ci/run): dropped,
    # so that the second half below can fail
    ci = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
          "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER")
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", *ci)}
    code = "from indexer.encoder import OnnxEncoder; OnnxEncoder.from_dir(None, device='cpu').embed_types(['dinosaur'])"
    subprocess.run([sys.executable, "-c", code], env=env | {"HOME": str(tmp_path)}, check=True, timeout=120)
    assert not (tmp_path / ".cache" / "Microsoft").exists()
    # the check can fail: with the variable set to 0 (nerindex leaves a set one alone) onnxruntime writes there
    subprocess.run([sys.executable, "-c", code], env=env | {"HOME": str(tmp_path), "ORT_DISABLE_TELEMETRY": "0"},
                   check=True, timeout=120)
    assert (tmp_path / ".cache" / "Microsoft").exists()


def test_only_the_fp16_graph_on_cuda_batches_windows(tmp_path):
    """A folder with only the int8 graph ran it batched on CUDA: a passage's spans came and went
    with its neighbours (an audit)."""
    from indexer.encoder import batches_windows
    from indexer.model_folder import ModelInfo
    from indexer.runtime import CPU, CUDA, graph_for

    info = ModelInfo.load(default_model_dir())
    assert batches_windows(info, CUDA, graph_for(info, CUDA))
    assert not batches_windows(info, CPU, graph_for(info, CPU))
    assert not batches_windows(info, CUDA, graph_for(info, CPU))
    int8_only = dataclasses.replace(info, graphs={"cpu": info.graphs["cpu"]})
    assert not batches_windows(int8_only, CUDA, graph_for(int8_only, CUDA))


def test_the_staged_runner_is_built_once_however_many_workers_ask_at_once():
    """An audit: every window worker's first call built (or read from the cache) the staged graphs
    itself; 8 workers held 8 copies (836 MB against 206)."""
    import threading
    import time

    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    built = []

    def slow():
        built.append(1)
        time.sleep(0.2)
        return "stages"

    enc._load_stages, enc._stages = slow, None
    threads = [threading.Thread(target=lambda: enc.stages) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and enc.stages == "stages"
