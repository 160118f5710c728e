"""Cancelling ``pipekit run`` with SIGINT (Ctrl-C) or SIGTERM, in every phase.

A sleep fault point (or a slow source query) holds the run in a phase; the signal must end it
with exit code 130, the run recorded as ``cancelled`` in that phase, the destination untouched
(or as merged, once the merge committed), the lock released, staging dropped, no process and
no database session left behind.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.reliability._support import (
    BEFORE,
    Proc,
    Scenario,
    alive,
    pipekit_backends,
    processes_in_group,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
# point held -> (phase recorded, merge committed before the signal?)
HOLDS = {
    "before_resolve": ("resolve", False),
    "after_staging_created": ("stage", False),
    "after_rows": ("stage", False),
    "before_merge_commit": ("merge", False),
    "after_merge_commit": ("merge", True),
    "before_hook": ("hooks", True),
}
SLOW_VIEW = (
    "CREATE VIEW t AS SELECT g AS id, 'new'::text AS v, 2 AS ver "
    "FROM generate_series(1, 3000) g CROSS JOIN LATERAL pg_sleep(0.01 + g * 0) s"
)


def assert_cancelled_cleanly(sc: Scenario, p: Proc, phase: str, committed: bool) -> None:
    code = p.wait(30)
    assert code == 130, (code, p.stdout, p.stderr)
    assert "cancelled" in p.stderr
    runs = sc.history()
    assert [(r["status"], r["phase"]) for r in runs] == [("cancelled", phase)], runs
    assert sc.dest.table() == (sc.after if committed else BEFORE)
    assert sc.dest.rows("SELECT count(*) FROM hook_log") == [(0,)]
    assert sc.repo.get_lock("m") is None
    assert sc.dest.any_staging() == []
    assert processes_in_group(p.pid) == []  # pipekit ran in its own session: nothing of it is left
    for call in sc.jrunner_calls():
        wait_for(lambda c=call: not alive(c["pid"]), 10, f"jrunner pid {call['pid']} to end")
    wait_for(lambda: pipekit_backends(sc.src_url) == [], 10, "pipekit's database sessions to end")


@pytest.mark.parametrize("sig", list(SIGNALS))
@pytest.mark.parametrize("point", list(HOLDS))
def test_cancel_held_at_point(point: str, sig: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db)
    fp = f"after_rows:{sc.mid_copy}" if point == "after_rows" else point
    p = sc.start("run", "m", failpoint=f"{fp}:sleep:30")
    try:
        p.wait_stderr(f"pipekit failpoint: {fp} -> sleep:30")
        p.signal(SIGNALS[sig])
        phase, committed = HOLDS[point]
        assert_cancelled_cleanly(sc, p, phase, committed)
    finally:
        p.kill()


@pytest.mark.parametrize("sig", list(SIGNALS))
@pytest.mark.parametrize("transport", ["native", "jrunner"])
def test_cancel_during_a_slow_source_query(transport: str, sig: str, tmp_path: Path, pg_db: str) -> None:
    """No fault point: the copy itself is slow (a source view sleeping per row, ~30 s)."""
    sc = Scenario.build(tmp_path, pg_db, "postgresql", transport)
    sc.dest.exec("DROP TABLE t", SLOW_VIEW)
    p = sc.start("run", "m")
    try:
        loader = "jrunner" if transport == "jrunner" else "pipekit source m"
        wait_for(lambda: any(b[1] == loader and b[2] == "active" for b in pipekit_backends(pg_db)),
                 30, f"the {loader} session to run the copy")
        p.signal(SIGNALS[sig])
        assert_cancelled_cleanly(sc, p, "stage", False)
    finally:
        p.kill()


@pytest.mark.parametrize("sig", list(SIGNALS))
def test_cancel_while_waiting_for_the_lock(sig: str, tmp_path: Path, pg_db: str) -> None:
    """A --wait run cancelled in the lock phase leaves the holder's lock alone."""
    sc = Scenario.build(tmp_path, pg_db, rows=100)
    holder = sc.start("run", "m", failpoint="after_resolve:sleep:30", tag="holder")
    waiter: Proc | None = None
    try:
        holder.wait_stderr("pipekit failpoint: after_resolve -> sleep:30")
        waiter = sc.start("run", "m", "--wait", tag="waiter")
        wait_for(lambda: "waiting for the lock held by" in waiter.stdout, 30, "the waiter to wait")
        assert f"pid {holder.pid}" in waiter.stdout
        waiter.signal(SIGNALS[sig])
        assert waiter.wait(30) == 130, (waiter.stdout, waiter.stderr)
        lock = sc.repo.get_lock("m")
        assert lock is not None and lock.owner.pid == holder.pid
        assert [r["status"] for r in sc.history()] == ["running"]  # the waiter never started a run
        assert processes_in_group(waiter.pid) == []
        # the holder is unaffected and cancels cleanly too
        holder.signal(signal.SIGTERM)
        assert_cancelled_cleanly(sc, holder, "resolve", False)
    finally:
        holder.kill()
        if waiter is not None:
            waiter.kill()
