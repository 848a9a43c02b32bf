"""The bench/ scripts refuse bad input in one line (an audit found tracebacks, a 120 s wait for a
server that had died, and a recall of 1.0 measured on an empty store) and document their options.
Each test runs a script as a subprocess or imports it; none encodes text or needs Elasticsearch."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DEAD_URL = "http://127.0.0.1:9"  # nothing listens on the discard port


def script(path: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """``python PATH ARGS`` without an Elasticsearch URL unless one is given."""
    environ = {k: v for k, v in os.environ.items() if k != "NERINDEX_ES_URL"}
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout,
                          env={**environ, **env})


def load(name: str) -> ModuleType:
    """A bench script as a module, with its sibling bench_args importable as `python bench/...` finds it."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The run failed with one ``error:`` line and no traceback; that line."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1, done.stderr
    return lines[0]


# bench_es_recall.py


def test_es_recall_without_a_url_is_refused_before_indexing(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "Rome is a city."}\n', encoding="utf-8")
    done = script(BENCH / "bench_es_recall.py", str(corpus))
    assert done.returncode == 2 and "NERINDEX_ES_URL" in one_error_line(done)


def test_es_recall_shows_the_real_error_not_the_cleanups(tmp_path):
    done = script(BENCH / "bench_es_recall.py", str(tmp_path / "missing.jsonl"), NERINDEX_ES_URL=DEAD_URL)
    assert "missing.jsonl" in one_error_line(done) and len(done.stderr.splitlines()) <= 2, done.stderr


# bench_scan_pages.py


@pytest.mark.parametrize("kind", ["float32", "text"])
def test_scan_pages_refuses_a_file_that_is_no_int8_matrix(tmp_path, kind):
    path = tmp_path / "vectors.npy"
    if kind == "float32":
        np.save(path, np.zeros((384, 10), dtype=np.float32))
    else:
        path.write_text("hello\n", encoding="utf-8")
    line = one_error_line(script(BENCH / "bench_scan_pages.py", "--file", str(path), "--rounds", "1", "--scans", "1"))
    assert str(path) in line


def test_scan_pages_shows_a_failed_childs_error(tmp_path):
    scan = load("bench_scan_pages")
    with pytest.raises(SystemExit) as exc:
        scan.child(tmp_path / "gone.npy", "warm", 1)
    message = str(exc.value)
    assert message.startswith("error:") and "gone.npy" in message and "\n" not in message


def test_scan_pages_rounds_the_load_average(tmp_path):
    path = tmp_path / "vectors.npy"
    np.save(path, np.zeros((384, 64), dtype=np.int8))
    done = script(BENCH / "bench_scan_pages.py", "--file", str(path), "--rounds", "1", "--scans", "1")
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert all(value == round(value, 2) for value in json.loads(line)["load_1min"])


# bench_serve.py


@pytest.mark.parametrize("option", [["--duration", "0"], ["--duration", "-5"], ["--warmup", "-1"]])
def test_serve_refuses_a_duration_that_is_not_positive(option):
    done = script(BENCH / "bench_serve.py", "--url", DEAD_URL, *option, timeout=20)
    assert done.returncode == 2 and option[0] in one_error_line(done)


class RefusingSearch(BaseHTTPRequestHandler):
    """A stand-in for `nerindex serve` that is healthy but refuses every search with a 422."""

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.endswith("/info"):
            self.answer(200, {"store": {"passages": 1, "spans": 1}, "model": {"id": "m", "version": "1"}})
        else:
            self.answer(200, {"status": "ok"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(422, {"error": {"status": 422, "code": "invalid_request", "message": "threshold: at most 1"}})

    def log_message(self, *args) -> None:
        pass


def test_serve_shows_the_servers_error():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingSearch)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = script(BENCH / "bench_serve.py", "--url", url, "--threshold", "5", "--duration", "0.1",
                      "--warmup", "0.1", "--concurrency", "1", timeout=30)
    finally:
        server.shutdown()
    line = one_error_line(done)
    assert "422" in line and "threshold: at most 1" in line


def test_serve_reports_a_server_that_died_at_start(tmp_path):
    # the server is nerindex serve: with the README's test set-up alone (.[cpu,dev]) it cannot start
    # at all, and the line names the missing extra instead (a newcomer check)
    pytest.importorskip("uvicorn", reason="the [web] extra is not installed: nerindex serve needs it")
    store = tmp_path / "store"
    search = load("bench_search")
    search.build(store, search.SPANS_PER_PASSAGE, 0.5)  # one passage, stamped with a model that is not the shipped one
    done = script(BENCH / "bench_serve.py", "--store", str(store), "--passages", "1", timeout=40)  # not 120 s
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.splitlines()[-1]  # the server's own error is relayed above it
    assert line.startswith("error: nerindex serve exited with code") and "store was built with model bench" in line


def test_serve_reads_a_folder_of_txt_conll_files(tmp_path):
    (tmp_path / "politics").mkdir()
    (tmp_path / "politics" / "dev.txt").write_text("Rome\tB-location\nfell\tO\n\nParis\tB-location\n", encoding="utf-8")
    serve = load("bench_serve")
    texts = [passage.text for _, _, passage in serve.corpus_passages(tmp_path, 3)]
    assert texts == ["Rome fell", "Paris", "Rome fell"]


# bench_search.py


def test_search_refuses_fewer_spans_than_one_passage(tmp_path):
    done = script(BENCH / "bench_search.py", "--spans", "3", "--queries", "1", "--store", str(tmp_path / "s"))
    assert done.returncode == 2 and "--spans" in one_error_line(done)
    assert not (tmp_path / "s").exists()


# --help of the scripts


def parser_of(name: str) -> argparse.ArgumentParser:
    """The parser a script's ``main`` builds, caught at ``parse_args``."""
    module = load(name)

    class Caught(Exception):
        pass

    def catch(self, *args, **kwargs):
        raise Caught(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        module.main()
    except Caught as caught:
        return caught.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{name}.main() parsed no arguments")


@pytest.mark.parametrize("name", ["bench_indexing", "bench_search", "bench_serve", "bench_es_recall", "bench_int8_kernel"])
def test_every_option_has_help_and_shows_its_default(name):
    parser = parser_of(name)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        if action.default not in (None, False):
            assert "%(default)" in action.help or "default" in action.help, f"{name}: {action.option_strings} hides its default"


@pytest.mark.parametrize("name", ["bench_indexing", "bench_search", "bench_serve", "bench_es_recall", "bench_int8_kernel"])
def test_importing_a_script_and_reading_its_options_leaves_the_environment_alone(name):
    """bench_int8_kernel set NERINDEX_CACHE=off on import: every test after this file's ran
    without a cache, and the gloss cache test failed in the order of a full run."""
    before = dict(os.environ)
    parser_of(name)
    assert dict(os.environ) == before


def test_indexing_help_describes_the_engines():
    done = script(BENCH / "bench_indexing.py", "--help", timeout=30)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "encode-batched" in text and "before batch-invariant encoding" in text  # the docstring's engine list
    options = text[text.index("options:"):]
    baseline = options[options.index("--baseline-model"):options.index("--json")]  # its help: every engine it adds
    assert "baseline-index" in baseline and "baseline-whole-index" in baseline


def test_template_word_candidates_help_exits_0():
    done = script(ROOT / "docs" / "eval" / "template_word_candidates.py", "--help", timeout=30)
    assert done.returncode == 0 and "drop" in done.stdout and "keep" in done.stdout
