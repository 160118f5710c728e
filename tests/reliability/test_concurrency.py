"""Concurrent ``pipekit run`` processes: one run per module at a time, many modules at once."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.helpers import pg_rows
from tests.reliability._support import Proc, Scenario, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]


def wait_all(procs: list[Proc], timeout: float = 120) -> dict[int, float]:
    """Wait for every process; return pid -> seconds from its start to its exit."""
    ended: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(procs):
        for p in procs:
            if p.pid not in ended and p.popen.poll() is not None:
                ended[p.pid] = time.monotonic() - p.started
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise AssertionError(f"processes still running after {timeout} s")
        time.sleep(0.02)
    return ended


def intervals(runs: list[dict]) -> list[tuple[datetime, datetime]]:
    return sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in runs)


@pytest.mark.parametrize("repo_kind", ["sqlite", "postgresql"])
def test_eight_runs_of_one_module_exactly_one_runs(repo_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, rows=200)
    if repo_kind == "postgresql":
        sc.use_pg_repository(pg_db)
    assert sc.run("init").returncode == 0  # the repository exists: the race is for the lock alone
    procs = [sc.start("run", "m", failpoint="after_resolve:sleep:5", tag=f"r{i}") for i in range(8)]
    took = wait_all(procs)
    codes = {p.pid: p.popen.returncode for p in procs}
    winners = [p for p in procs if codes[p.pid] == 0]
    assert len(winners) == 1, {p.pid: (codes[p.pid], p.stderr) for p in procs}
    win = winners[0]
    for p in procs:
        if p is win:
            continue
        assert codes[p.pid] == 1, p.stderr
        assert "module 'm' is already running" in p.stderr and f"pid {win.pid} on host" in p.stderr, p.stderr
        assert took[p.pid] < took[win.pid], "a second run must fail at once, not wait for the first"
    runs = sc.history()
    assert [(r["status"], r["pid"]) for r in runs] == [("success", win.pid)]
    assert sc.dest.table() == sc.after
    assert sc.repo.get_lock("m") is None


@pytest.mark.parametrize("repo_kind", ["sqlite", "postgresql"])
def test_eight_runs_with_wait_run_one_after_another(repo_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, rows=200)
    if repo_kind == "postgresql":
        sc.use_pg_repository(pg_db)
    assert sc.run("init").returncode == 0
    procs = [sc.start("run", "m", "--wait", failpoint="after_resolve:sleep:0.3", tag=f"w{i}") for i in range(8)]
    wait_all(procs, timeout=180)
    assert [p.popen.returncode for p in procs] == [0] * 8, [p.stderr for p in procs]
    assert any("waiting for the lock held by" in p.stdout for p in procs)
    runs = sc.history()
    assert [r["status"] for r in runs] == ["success"] * 8
    assert {r["pid"] for r in runs} == {p.pid for p in procs}
    spans = intervals(runs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"two runs of module m overlapped: {spans}"
    assert sc.dest.table() == sc.after
    assert sc.repo.get_lock("m") is None


@pytest.mark.parametrize("repo_kind", ["sqlite", "postgresql"])
def test_six_modules_into_one_destination_in_parallel(repo_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, rows=500)
    if repo_kind == "postgresql":
        sc.use_pg_repository(pg_db)
    names = [f"m{i}" for i in range(1, 7)]
    sc.write_defs("".join(sc.module_yaml(n, table=n) for n in names))  # first runs: tables created
    assert sc.run("init").returncode == 0
    procs = [sc.start("run", n, failpoint="after_resolve:sleep:2", tag=n) for n in names]
    wait_all(procs)
    assert [p.popen.returncode for p in procs] == [0] * 6, [p.stderr for p in procs]
    runs = [r for n in names for r in sc.history(n)]
    assert [r["status"] for r in runs] == ["success"] * 6
    spans = intervals(runs)
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the runs did not overlap: {spans}"
    want = sorted((i, "new", 2) for i in range(1, 501))
    for n in names:
        assert sc.dest.table(n) == want
    assert sorted(sc.dest.rows("SELECT module FROM hook_log")) == [(n,) for n in names]
    assert sc.dest.any_staging() == [] and sc.repo.locks() == []


def test_staging_schema_created_at_the_same_moment_elsewhere(tmp_path: Path, pg_db: str) -> None:
    """Parallel first runs race to CREATE SCHEMA IF NOT EXISTS pipekit_staging (PostgreSQL then
    reports a unique violation in pg_namespace). Made deterministic: another session creates
    the schema and commits only once our run is blocked on it. The run's first statement that
    needs the schema is its claim of the module on the destination (the fencing token's
    pipekit_state table lives in the staging schema)."""
    sc = Scenario.build(tmp_path, pg_db, rows=100)
    with psycopg.connect(pg_db) as other:  # a transaction, left open
        other.execute("CREATE SCHEMA pipekit_staging")
        p = sc.start("run", "m")
        try:
            wait_for(lambda: pg_rows(pg_db, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pipekit claim m' "
                                            "AND wait_event_type = 'Lock'"), 30, "the run to block on the schema")
            other.commit()
            assert p.wait(30) == 0, (p.stdout, p.stderr)
        finally:
            p.kill()
    assert sc.dest.table() == sc.after and sc.dest.any_staging() == []


def test_destination_schema_created_at_the_same_moment_elsewhere(tmp_path: Path, pg_db: str) -> None:
    """The same race for a new destination schema, created in the merge transaction."""
    sc = Scenario.build(tmp_path, pg_db, rows=100)
    sc.write_defs(sc.module_yaml("m", table="fresh.m"))
    with psycopg.connect(pg_db) as other:
        other.execute("CREATE SCHEMA fresh")
        p = sc.start("run", "m")
        try:
            wait_for(lambda: pg_rows(pg_db, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pipekit merge m' "
                                            "AND wait_event_type = 'Lock'"), 30, "the merge to block on the schema")
            other.commit()
            assert p.wait(30) == 0, (p.stdout, p.stderr)
        finally:
            p.kill()
    assert sc.dest.table("fresh.m") == sorted((i, "new", 2) for i in range(1, 101))
    assert [r["status"] for r in sc.history()] == ["success"]
