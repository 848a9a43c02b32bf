"""Shared test setup: the conformance suite module is importable, the stamp fixture is global.

Live Elasticsearch tests carry the ``elasticsearch`` marker. At the end of a run the number of them
that ran is printed; with ``NERINDEX_REQUIRE_ES=1`` (what ``.ci/run`` sets) a live test skipped
because no server was configured fails the run, so CI can never pass without the real server.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from store_conformance import stamp  # noqa: E402,F401  (re-exported fixture)

# The cache folder of this run (indexer.config.cache_dir: cut graphs, gloss vectors), subprocesses
# included: tests never read or write the user's ~/.cache/nerindex, and every run starts cold.
_CACHE = tempfile.mkdtemp(prefix="nerindex-test-cache-")
os.environ["NERINDEX_CACHE"] = _CACHE

NO_SERVER = "NERINDEX_ES_URL is not set"
_live: dict[str, list[tuple[str, str]]] = {"passed": [], "failed": [], "skipped": []}  # (node id, skip reason)


def _is_live(report: pytest.TestReport) -> bool:
    return "elasticsearch" in report.keywords


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the outcome of every live Elasticsearch test (once per test)."""
    if not _is_live(report):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "skipped" if report.skipped else "failed" if report.failed else "passed"
        reason = str(report.longrepr[-1]) if report.skipped and isinstance(report.longrepr, tuple) else ""
        _live[outcome].append((report.nodeid, reason))  # a node id may hold spaces ("…[a b]")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    ran = len(_live["passed"]) + len(_live["failed"])
    if not ran and not _live["skipped"]:
        return
    terminalreporter.write_line(
        f"live Elasticsearch tests: {ran} ran ({len(_live['passed'])} passed, "
        f"{len(_live['failed'])} failed), {len(_live['skipped'])} skipped"
    )
    reasons: dict[str, int] = {}
    for _, reason in _live["skipped"]:
        reason = reason or "no reason given"
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        terminalreporter.write_line(f"  {count} skipped: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under NERINDEX_REQUIRE_ES=1, a live test skipped for want of a server fails the run."""
    shutil.rmtree(_CACHE, ignore_errors=True)
    if os.environ.get("NERINDEX_REQUIRE_ES") != "1":
        return
    missing = [line for line in _live["skipped"] if NO_SERVER in line]
    if missing:
        print(f"\n{len(missing)} live Elasticsearch test(s) skipped for lack of a server "
              "although NERINDEX_REQUIRE_ES=1", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
