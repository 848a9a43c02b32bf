"""The README's main job, its examples and its Python snippet, run as written on the shipped corpus.

The commands and the snippet are parsed out of README.md, so these tests follow the README: an
example whose result no longer matches its comment fails here, and a new example needs a check
below (the test says so). They run in a folder holding only ``examples/`` (a link to the
repository's), with the default store ``./nerindex-data``, exactly as a reader would type them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any, Callable

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
EXAMPLES = MAIN_JOB[1:]


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


# --------------------------------------------------------------------------- the examples


def json_hits(argv: list[str]) -> list[dict[str, Any]]:
    """The hits of a search command, as ``--json`` prints them."""
    code, out, err = run(*argv, *([] if "--json" in argv else ["--json"]))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def without(argv: list[str], option: str) -> list[str]:
    """argv less an option and its value: the same search with the default."""
    i = argv.index(option)
    return argv[:i] + argv[i + 2 :]


def without_flag(argv: list[str], flag: str) -> list[str]:
    return [a for a in argv if a != flag]


def marked(argv: list[str], out: str, err: str) -> None:
    hits = [line for line in out.splitlines() if re.match(r"^\d+\. ", line)]
    texts = [line for line in out.splitlines() if line.startswith("   ") and not line.startswith("   spans:")]
    assert hits and len(texts) == len(hits) and all("[[" in t and "]]" in t for t in texts)
    assert f"{len(hits)} shown of" in err


def json_lines(argv: list[str], out: str, err: str) -> None:
    hits = [json.loads(line) for line in out.splitlines()]
    assert hits and all(set(h) == {"id", "score", "text", "fields", "spans", "ranked_by"} for h in hits)


def every_match(argv: list[str], out: str, err: str) -> None:
    hits = json_hits(argv)
    assert hits and f"{len(hits)} shown of {len(hits)} matching" in err
    assert all(h["spans"] for h in hits)  # each with a marked mention
    # every one of them is ranked by a top-k too, which may also rank passages through candidate spans
    ranked = json_hits([*without_flag(argv, "--all"), "--limit", "100"])
    assert {h["id"] for h in hits} <= {h["id"] for h in ranked}


def filtered(argv: list[str], out: str, err: str) -> None:
    hits = json_hits(argv)
    assert hits and all(h["fields"]["topic"] == "health" and "pain" in h["text"] for h in hits)


def lower_threshold(argv: list[str], out: str, err: str) -> None:
    hits = json_hits(argv)
    threshold = float(argv[argv.index("--threshold") + 1])
    assert hits and all(s["similarity"] >= threshold for h in hits for s in h["spans"])
    assert len(hits) > len(json_hits(without(argv, "--threshold")))  # more than the calibrated one finds
    mentions = {s["text"] for h in hits for s in h["spans"]}
    assert {"Microsoft", "Apple"} <= mentions


def best_span_ranking(argv: list[str], out: str, err: str) -> None:
    hits = json_hits(argv)
    # the score is the best span's similarity: the best marked mention's, or an unmarked candidate's above it
    assert hits and all(h["score"] >= h["spans"][0]["similarity"] - 1e-6 for h in hits if h["spans"])
    assert any(math.isclose(h["score"], h["spans"][0]["similarity"], abs_tol=1e-6) for h in hits if h["spans"])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    default = json_hits(without(argv, "--passage-weight"))
    assert [h["id"] for h in hits] != [h["id"] for h in default]  # the option visibly changes the order


def type_vector(argv: list[str], out: str, err: str) -> None:
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["phrase"] == argv[1] and math.isclose(sum(x * x for x in row["vector"]), 1, abs_tol=1e-3)


def store_info(argv: list[str], out: str, err: str) -> None:
    assert "threshold" in out and "40 passages" in out


CHECKS: dict[str, Callable[[list[str], str, str], None]] = {
    "search dinosaur": marked,
    "search 'political party' --json": json_lines,
    "search river --all": every_match,
    "search drug --where topic=health --text pain": filtered,
    "search company --all --threshold 0.15": lower_threshold,
    "search city --passage-weight 0": best_span_ranking,
    "embed dinosaur": type_vector,
    "info": store_info,
}


@pytest.mark.parametrize("argv, comment", EXAMPLES, ids=[shlex.join(argv) for argv, _ in EXAMPLES])
def test_readme_example_does_what_its_comment_says(readme_run, argv, comment):
    code, out, err = run(*argv)
    assert code == 0, err
    assert out.strip(), f"'nerindex {shlex.join(argv)}' printed nothing"
    check = CHECKS.get(shlex.join(argv))
    assert check is not None, f"README example 'nerindex {shlex.join(argv)}' ({comment}) has no check in {__file__}"
    check(argv, out, err)


def test_ci_runs_the_readme_test_command_as_written():
    """CI must run the very test command the README gives; they had drifted (``-q`` in CI only)."""
    readme = [ln.strip() for ln in section("Tests").splitlines() if ln.strip().startswith("python -m pytest")]
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if ln.strip().startswith("python -m pytest")]  # fmt: skip
    assert readme[0] == "python -m pytest" and ci == [readme[0]]
