"""The README's main job, its examples and its Python snippet, run as written on the shipped corpus.

The commands and the snippet are parsed out of README.md, so these tests follow the README. They run in a folder holding only ``examples/`` (a link to the
repository's), with the default store ``./nerindex-data``, exactly as a reader would type them.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from indexer.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CORPUS = ROOT / "examples" / "corpus.jsonl"
COMMAND = re.compile(r"^ {4}(nerindex .+?)(?:\s+#\s*(.*))?$")


def section(title: str) -> str:
    """The README text under ``## title``, up to the next second-level heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def commands(text: str) -> list[tuple[list[str], str]]:
    """``(argv after 'nerindex', comment)`` of each indented ``nerindex …`` line."""
    found = []
    for line in text.splitlines():
        match = COMMAND.match(line)
        if match:
            found.append((shlex.split(match.group(1))[1:], match.group(2) or ""))
    return found


def python_snippet(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)


MAIN_JOB = commands(section("The main job"))
INDEX_ARGV = MAIN_JOB[0][0]


def run(*argv: str) -> tuple[int, str, str]:
    """``nerindex ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> Any:
    """The README's sequence in a fresh folder: the main job's index command, then the snippet."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for name in ("NERINDEX_STORE", "NERINDEX_ES_URL", "NERINDEX_MODEL", "NERINDEX_ES_INDEX"):
            mp.delenv(name, raising=False)
        assert INDEX_ARGV == ["index", "examples/corpus.jsonl"], "the main job starts by indexing the example"
        index_result = run(*INDEX_ARGV)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(python_snippet(section("Python")), "README.md", "exec"), {})
        yield {"folder": folder, "index": index_result, "snippet": printed.getvalue()}


def corpus_ids() -> list[str]:
    return [json.loads(line)["id"] for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def test_main_job_announces_where_ids_come_from(readme_run):
    code, out, _ = readme_run["index"]
    assert code == 0
    assert "40 new" in out and "ids from field 'id'" in out


def test_readme_sequence_stores_every_passage_once(readme_run):
    """Main job then snippet, on the same store: 40 passages under the records' own ids."""
    with sqlite3.connect(readme_run["folder"] / "nerindex-data" / "store.sqlite") as conn:
        rows = conn.execute("SELECT id, fields FROM passages").fetchall()
    ids = [pid for pid, _ in rows]
    assert len(ids) == len(set(ids)) == 40
    assert sorted(ids) == sorted(corpus_ids())
    assert not any("id" in json.loads(fields) for _, fields in rows)  # no `id` facet on the page
    printed = readme_run["snippet"].splitlines()
    assert len(printed) == 5 and len({line for line in printed}) == 5  # every hit once
