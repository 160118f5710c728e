"""SIGKILL at every fault point, for every transport and destination; the next run recovers.

For each point the killed run leaves what a real crash leaves (a stale lock, a ``running`` run,
maybe an orphaned staging table, a half-written SQLite journal, a jrunner child); then a plain
``pipekit run`` must succeed with no manual step: it takes the lock over (and says so), marks
the dead run ``error``, drops the orphaned staging and leaves the destination as one
successful run would.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.reliability._support import BEFORE, Scenario, alive, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

POINTS = [
    "before_resolve",
    "after_resolve",
    "after_staging_created",
    "after_rows",  # :<N>, N from the scenario: mid-copy
    "before_merge_commit",
    "after_merge_commit",
    "before_hook",
]
COMMITTED = {"after_merge_commit", "before_hook"}  # the merge committed before the kill
STAGED = {"after_staging_created", "after_rows", "before_merge_commit", "after_merge_commit", "before_hook"}
COMBOS = ["native->postgresql", "native->sqlite", "jrunner->postgresql"]


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_point_then_next_run_recovers(point: str, combo: str, tmp_path: Path, pg_db: str) -> None:
    kill_then_recover(point, combo, tmp_path, pg_db)


@pytest.mark.parametrize("point", ["after_resolve", "after_rows", "before_merge_commit", "after_merge_commit"])
def test_kill_then_recover_with_the_postgresql_repository(point: str, tmp_path: Path, pg_db: str) -> None:
    """The same with pipekit's repository on PostgreSQL (PIPEKIT_DB=postgresql://...): the stale
    lock, the dead run and the committed-but-unrecorded merge are found the same way."""
    kill_then_recover(point, "native->postgresql", tmp_path, pg_db, pg_repository=True)


def kill_then_recover(point: str, combo: str, tmp_path: Path, pg_db: str, pg_repository: bool = False) -> None:
    transport, dest_kind = combo.split("->")
    # jrunner reports rows every 10,000: only its after_rows case needs the long copy.
    rows = None if point == "after_rows" else 3_000
    sc = Scenario.build(tmp_path, pg_db, dest_kind, transport, rows=rows)
    if pg_repository:
        sc.use_pg_repository(pg_db)
    assert sc.dest.table() == BEFORE
    fp = f"after_rows:{sc.mid_copy}" if point == "after_rows" else point

    killed = sc.run("run", "m", failpoint=f"{fp}:kill")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    assert f"pipekit failpoint: {fp} -> kill" in killed.stderr
    # What the crash left: the destination as before the run (as after it once the merge
    # committed), the lock held by a dead process, the run still 'running', staging orphaned.
    assert sc.dest.table() == (sc.after if point in COMMITTED else BEFORE)
    assert sc.dest.rows("SELECT count(*) FROM hook_log") == [(0,)]
    lock = sc.repo.get_lock("m")
    assert lock is not None and lock.owner.pid == killed_pid(sc)
    dead = sc.history()
    assert [r["status"] for r in dead] == ["running"]
    assert sc.dest.staging_exists() == (point in STAGED)
    if transport == "jrunner":
        for call in sc.jrunner_calls():  # the parent-death signal ends jrunner with pipekit
            wait_for(lambda c=call: not alive(c["pid"]), 10, f"jrunner pid {call['pid']} to end")
        if point == "after_rows":
            assert any(c["mode"] == "migrate" for c in sc.jrunner_calls())

    nxt = sc.run("run", "m")
    assert nxt.returncode == 0, (nxt.stdout, nxt.stderr)
    assert f"took over a stale lock from pid {lock.owner.pid}" in nxt.stdout
    assert sc.dest.table() == sc.after
    assert sc.dest.any_staging() == []
    assert sc.dest.rows("SELECT count(*) FROM hook_log") == [(1,)]
    runs = sc.history()
    # A run killed after its merge committed is recorded as what it was: the destination's
    # pipekit_state row names its commit token, and the next run's claim reads it.
    assert [r["status"] for r in runs] == ["committed" if point in COMMITTED else "error", "success"]
    assert f"process {lock.owner.pid}" in runs[0]["error"] and "gone" in runs[0]["error"]
    if point in COMMITTED:
        assert "the merge committed" in runs[0]["error"] and f"by run {runs[1]['id']}" in runs[0]["error"]
    assert runs[0]["finished_at"] is not None
    assert sc.repo.get_lock("m") is None
    assert sc.repo.locks() == []


def killed_pid(sc: Scenario) -> int:
    """The pid recorded for the (dead) run: the run log and the lock must agree."""
    pids = {r["pid"] for r in sc.history()}
    assert len(pids) == 1
    return int(pids.pop())
