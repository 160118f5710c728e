"""Database faults: unreachable servers, connections dropped mid-copy, errors in the merge.

Each must end in a clear error naming the module and the phase, leave the destination table
row for row as before, and be retried only when it is transient (per the module's ``retries``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PG_PASSWORD
from tests.helpers import pg_exec
from tests.reliability._support import (
    BEFORE,
    Scenario,
    free_port,
    pipekit_backends,
    terminate_pipekit_backends,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

RETRIES = "retries: {max: 2, delay: 0}"


def slow_source(sc: Scenario, rows: int, per_row: float) -> None:
    """Replace the source table t by a view that sleeps per row: the copy is held open."""
    pg_exec(sc.src_url, "DROP TABLE t",
            f"CREATE VIEW t AS SELECT g AS id, 'new'::text AS v, 2 AS ver FROM generate_series(1, {rows}) g "
            f"CROSS JOIN LATERAL pg_sleep({per_row} + g * 0) s")


def assert_failed_cleanly(sc: Scenario, proc_out: str, proc_err: str, code: int, phase: str, runs: int = 1) -> list[dict]:
    assert code == 1, (proc_out, proc_err)
    assert f"module 'm' failed in phase '{phase}'" in proc_err, proc_err
    assert PG_PASSWORD not in proc_out + proc_err
    assert sc.dest.table() == BEFORE
    assert sc.dest.any_staging() == []
    assert sc.repo.get_lock("m") is None
    history = sc.history()
    assert [(r["status"], r["phase"]) for r in history] == [("error", phase)] * runs, history
    assert all(f"failed in phase '{phase}'" in r["error"] and PG_PASSWORD not in r["error"] for r in history)
    return history


def test_source_unreachable(tmp_path: Path, pg_db: str) -> None:
    port = free_port()
    sc = Scenario.build(tmp_path, pg_db, "postgresql", rows=10, src_jdbc=f"jdbc:postgresql://127.0.0.1:{port}/nowhere")
    r = sc.run("run", "m")
    assert_failed_cleanly(sc, r.stdout, r.stderr, r.returncode, "resolve")
    assert "connection 'src'" in r.stderr and f":{port}" in r.stderr and "cannot connect" in r.stderr


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_destination_unreachable_is_retried_then_fails(dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=10)
    if dest_kind == "postgresql":
        port = free_port()
        bad, named = f"jdbc:postgresql://127.0.0.1:{port}/nowhere", f":{port}"
    else:
        bad, named = f"jdbc:sqlite:{tmp_path}/no/such/folder/dst.db", "does not exist"
    sc.write_defs(sc.module_yaml("m", extra=RETRIES), dst_jdbc=bad)
    r = sc.run("run", "m")
    assert "connection 'dst'" in r.stderr and named in r.stderr
    # The destination is first reached right after the lock is taken, when the run claims the
    # module there (the fencing token, pipekit_core.fence): the failure is in phase 'lock'.
    if dest_kind == "postgresql":  # a refused connection is transient: 1 + 2 retries
        assert_failed_cleanly(sc, r.stdout, r.stderr, r.returncode, "lock", runs=3)
        assert "transient failure, retry 1/2" in r.stdout and "retry 2/2" in r.stdout
    else:  # a missing folder is a configuration error, not retried
        assert_failed_cleanly(sc, r.stdout, r.stderr, r.returncode, "lock", runs=1)
        assert "transient failure" not in r.stdout


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_connection_dropped_mid_copy(dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=10)
    slow_source(sc, 3000, 0.01)  # ~30 s of copy
    p = sc.start("run", "m")
    try:
        wait_for(lambda: any(b[1] == "pipekit source m" and b[2] == "active" and b[3].startswith("COPY")
                             for b in pipekit_backends(pg_db)), 30, "the copy to start")
        assert terminate_pipekit_backends(pg_db) >= 1
        code = p.wait(30)
        assert_failed_cleanly(sc, p.stdout, p.stderr, code, "stage")
    finally:
        p.kill()


CONSTRAINT = {
    "postgresql": ("ALTER TABLE m ADD CONSTRAINT v_not_bad CHECK (v <> 'bad')", 'violates check constraint "v_not_bad"'),
    "sqlite": ("CREATE TRIGGER v_not_bad BEFORE INSERT ON m WHEN NEW.v = 'bad' "
               "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: v_not_bad'); END", "CHECK constraint failed: v_not_bad"),
}
TRIGGER = {
    "postgresql": (
        "CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.v = 'bad' THEN RAISE EXCEPTION 'row % refused by the audit trigger', NEW.id; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER audit_refuse BEFORE INSERT ON m FOR EACH ROW EXECUTE FUNCTION audit_refuse()",
    ),
    "sqlite": (
        "CREATE TRIGGER audit_refuse BEFORE INSERT ON m WHEN NEW.v = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'row 7 refused by the audit trigger'); END",
    ),
}


@pytest.mark.parametrize("fault", ["constraint", "trigger"])
@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_merge_error_is_terminal(fault: str, dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    """A constraint violation or a trigger's error fails the merge once (never retried)."""
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=20)
    sc.write_defs(sc.module_yaml("m", extra=RETRIES))
    pg_exec(pg_db, "UPDATE t SET v = 'bad' WHERE id = 7")
    if fault == "constraint":
        ddl, says = CONSTRAINT[dest_kind]
        sc.dest.exec(ddl)
    else:
        sc.dest.exec(*TRIGGER[dest_kind])
        says = "row 7 refused by the audit trigger"
    r = sc.run("run", "m")
    assert_failed_cleanly(sc, r.stdout, r.stderr, r.returncode, "merge", runs=1)
    assert says in r.stderr
    assert "transient failure" not in r.stdout


def test_transient_drop_is_retried_and_succeeds(tmp_path: Path, pg_db: str) -> None:
    """pg_terminate_backend once during the first attempt: the second attempt succeeds."""
    sc = Scenario.build(tmp_path, pg_db, "postgresql", rows=10)
    sc.write_defs(sc.module_yaml("m", extra=RETRIES))
    slow_source(sc, 100, 0.015)  # ~1.5 s of copy per attempt
    p = sc.start("run", "m")
    try:
        wait_for(lambda: any(b[1] == "pipekit source m" and b[2] == "active" and b[3].startswith("COPY")
                             for b in pipekit_backends(pg_db)), 30, "the first copy to start")
        assert terminate_pipekit_backends(pg_db) >= 1
        assert p.wait(60) == 0, (p.stdout, p.stderr)
    finally:
        p.kill()
    assert "transient failure, retry 1/2" in p.stdout
    runs = sc.history()
    assert [(r["status"], r["phase"]) for r in runs] == [("error", "stage"), ("success", "hooks")], runs
    assert "failed in phase 'stage'" in runs[0]["error"]
    assert sc.dest.table() == sorted([(i, "new", 2) for i in range(1, 101)] + [(100_000, "keep", 1)])
    assert sc.dest.any_staging() == [] and sc.repo.get_lock("m") is None
