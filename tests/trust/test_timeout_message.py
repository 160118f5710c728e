"""A `timeout:` stop says "timed out after N s" everywhere: run log, progress line and the final error.

Before: the native path's final error was PostgreSQL's "canceling statement due to user request".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability._support import Scenario
from tests.reliability.test_db_faults import slow_source

pytestmark = [pytest.mark.postgres]


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_timeout_says_timed_out(dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=10)
    slow_source(sc, 3000, 0.01)  # ~30 s of copy
    sc.write_defs(sc.module_yaml("m", extra="timeout: 2"))
    r = sc.run("run", "m", timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    final = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert final and "timed out after 2 s" in final[-1], r.stderr
    assert "canceling statement" not in r.stdout + r.stderr, r.stderr
    run = sc.history()[-1]
    assert run["status"] == "error" and "timed out after 2 s" in run["error"]
    assert "canceling statement" not in run["error"]


def test_psycopg_ignored_errors_stay_off_stderr() -> None:
    """psycopg logs what it ignores while unwinding (a cancelled COPY's terminate): not to stderr.

    That warning ("error ignored terminating <psycopg.Copy ...>: canceling statement ...") is what
    put PostgreSQL's cancel text next to the accurate "timed out" error, depending on timing.
    """
    import subprocess
    import sys

    code = ("import logging, pipekit_core.db; "
            "logging.getLogger('psycopg').warning('error ignored terminating <Copy>: canceling statement')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "canceling statement" not in r.stderr, r.stderr
