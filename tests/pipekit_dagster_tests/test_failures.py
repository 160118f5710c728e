"""Failures through Dagster: a group stops at the first failure (or not), a failed merge leaves
the destination untouched, transient failures are retried and terminal ones are not."""

from __future__ import annotations

import dagster as dg
import pytest

from pipekit_dagster import build_definitions
from pipekit_dagster import constants as c
from tests.pipekit_dagster_tests.conftest import PipekitEnv, free_port, materializations, step_events

pytestmark = pytest.mark.dagster

# b's query fails only while its rows are copied (after the first 200, which resolve samples to
# learn SQLite types): SQLite's abs() of the smallest integer is an "integer overflow" error.
FAILS_IN_STAGE = "SELECT id, abs(-9223372036854775807 - (id > 1000)) AS x FROM orders"
GROUP = f"""
modules:
  - {{name: a, source: erp, dest: dw, dest_table: a, query: SELECT id FROM customers}}
  - name: b
    source: erp
    dest: dw
    dest_table: b
    query: {FAILS_IN_STAGE}
    hooks:
      - {{name: note failure, sql: "CREATE TABLE b_failed AS SELECT 1 AS x", run_on: failure}}
  - {{name: c, source: erp, dest: dw, dest_table: c, query: SELECT id FROM customers}}
groups:
  g: {{modules: [a, b, c], stop_on_failure: STOP}}
"""


def _failure_descriptions(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    out = {}
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            data = ev.step_failure_data.user_failure_data
            out[ev.step_key] = data.description if data is not None else ev.step_failure_data.error.message
    return out


def test_group_stops_at_the_first_failure(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    blank.write("g.yaml", GROUP.replace("STOP", "true"))
    result = build_definitions().resolve_job_def("g_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert set(materializations(result)) == {"a"}
    failures = _failure_descriptions(result)
    # b is a full refresh: its rows are copied straight into the table in the merge step (single
    # write); the failure is still pipekit's phase 'stage' (the copy), as the run log says
    assert list(failures) == ["b.merge"]
    assert "module 'b' failed in phase 'stage'" in failures["b.merge"] and "integer overflow" in failures["b.merge"]
    assert not [s for s in step_events(result, "STEP_START") if s.startswith("c.c_") and s != "c.ready"]  # c never ran

    repo = blank.repo()
    runs = {r["module"]: r for r in repo.history()}
    assert set(runs) == {"a", "b"}  # c was not run at all
    assert runs["b"]["status"] == "error" and runs["b"]["phase"] == "stage"
    assert "integer overflow" in runs["b"]["error"]
    assert runs["b"]["dagster_run_id"] == result.run_id
    assert repo.locks() == []
    tables = blank.dw_tables()
    assert "b_failed" in tables  # the failure hook ran
    assert not [t for t in tables if "staging" in t]
    assert "b" not in tables and "c" not in tables


def test_group_with_stop_on_failure_false_runs_the_rest(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    blank.write("g.yaml", GROUP.replace("STOP", "false"))
    result = build_definitions().resolve_job_def("g_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert set(materializations(result)) == {"a", "c"}
    started = step_events(result, "STEP_START")
    firsts = [started.index(f"{m}.resolve") for m in "abc"]
    assert firsts == sorted(firsts)  # still in the group's order
    statuses = {r["module"]: r["status"] for r in blank.repo().history()}
    assert statuses == {"a": "success", "b": "error", "c": "success"}
    assert blank.repo().locks() == []


def test_failure_in_the_merge_op_leaves_the_destination_untouched(
    demo: PipekitEnv, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = build_definitions()
    job = defs.resolve_job_def("orders_job")
    assert job.execute_in_process(instance=instance).success
    before = demo.dw_query("SELECT * FROM orders ORDER BY id")
    demo.erp_execute("UPDATE orders SET status = 'changed', updated_at = '2999-01-01 00:00:00' WHERE id <= 50")

    monkeypatch.setenv("PIPEKIT_FAILPOINT", "before_merge_commit:raise")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failures = _failure_descriptions(result)
    assert list(failures) == ["orders.merge"]
    assert "failpoint before_merge_commit" in failures["orders.merge"]
    assert "orders.hooks" in step_events(result, "STEP_SKIPPED") or "orders.hooks" not in step_events(result, "STEP_START")

    assert demo.dw_query("SELECT * FROM orders ORDER BY id") == before  # rolled back
    assert not [t for t in demo.dw_tables() if "staging" in t]
    last = demo.repo().last_run("orders")
    assert last["status"] == "error" and last["phase"] == "merge"
    assert demo.repo().get_lock("orders") is None

    monkeypatch.delenv("PIPEKIT_FAILPOINT")
    md = materializations(job.execute_in_process(instance=instance))["orders"]
    assert md[c.ROWS_STAGED] == 50 and md[c.ROW_COUNT] == 5000


def test_transient_failures_are_retried_and_terminal_ones_are_not(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    port = free_port()  # nothing listens there: "connection refused" is transient
    blank.write("r.yaml", f"""
        modules:
          - name: flaky
            source: gone
            dest: dw
            dest_table: flaky
            query: SELECT 1 AS x
            retries: {{max: 2, delay: 0}}
          - name: broken
            source: erp
            dest: dw
            dest_table: broken
            query: {FAILS_IN_STAGE}
            retries: {{max: 2, delay: 0}}
        """)
    blank.write("gone.yaml", f"""
        connections:
          gone:
            url: jdbc:postgresql://127.0.0.1:{port}/nothing
            user: nobody
        """, connections=False)
    defs = build_definitions()
    result = defs.resolve_job_def("flaky_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == ["flaky.resolve"] * 2
    runs = blank.repo().history("flaky")
    assert [r["status"] for r in runs] == ["error"] * 3  # one run log row per attempt
    assert all("cannot connect" in (r["error"] or "") for r in runs)

    result = defs.resolve_job_def("broken_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    assert len(blank.repo().history("broken")) == 1
    assert blank.repo().locks() == []
