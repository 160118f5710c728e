"""Schedules, the probe sensor, the run-failure sensor and the asset checks, evaluated the way
Dagster's daemon would (build_schedule_context / build_sensor_context) against real data."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pytest

from pipekit_core.config import load_settings
from pipekit_dagster import PipekitResource, build_definitions
from pipekit_dagster.sensors import ModuleFailure, build_run_failure_sensor
from tests.pipekit_dagster_tests.conftest import PipekitEnv
from tests.pipekit_dagster_tests.test_failures import GROUP

pytestmark = pytest.mark.dagster


def test_schedules_request_their_jobs_in_pipekit_timezone(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    tz = load_settings().local_timezone()
    for name, job in (("orders_schedule", "orders_job"), ("demo_schedule", "demo_job")):
        schedule = defs.resolve_schedule_def(name)
        assert schedule.job_name == job
        assert schedule.execution_timezone == tz
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2024, 5, 1, 10, 15, tzinfo=timezone.utc))
        data = schedule.evaluate_tick(ctx)
        assert len(data.run_requests or []) == 1


def test_probe_sensor_records_first_then_requests_a_run_on_change(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("order_events_sensor")
    resources = {"pipekit": PipekitResource()}
    con = sqlite3.connect(demo.erp)
    top = con.execute("SELECT max(id) FROM order_events").fetchone()[0]
    con.close()

    def tick(cursor: str | None = None) -> Any:  # the sensor's resource has a teardown: open it as a context
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
            return sensor.evaluate_tick(ctx)

    first = tick()
    assert not first.run_requests
    assert "first probe" in (first.skip_message or "")
    assert first.cursor == json.dumps(str(top))

    same = tick(first.cursor)
    assert not same.run_requests and "unchanged" in (same.skip_message or "")

    demo.erp_execute("INSERT INTO order_events (order_id, kind, at) VALUES (1, 'probe', '2024-05-01 00:00:00')")
    changed = tick(first.cursor)
    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].tags["pipekit/probe_value"] == str(top + 1)
    assert changed.cursor == json.dumps(str(top + 1))
    assert sensor.job_name == "order_events_job"


def test_run_failure_sensor_reports_each_failed_module(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    blank.write("g.yaml", GROUP.replace("STOP", "false"))
    result = build_definitions().resolve_job_def("g_job").execute_in_process(instance=instance, raise_on_error=False)
    run = instance.get_run_by_id(result.run_id)
    failure_event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="pipekit_run_failure_sensor", dagster_event=failure_event, dagster_instance=instance, dagster_run=run
    ).for_run_failure()
    seen: list[ModuleFailure] = []
    build_run_failure_sensor(notify=seen.extend)(ctx)
    assert [(f.module, f.phase) for f in seen] == [("b", "stage")]
    assert "integer overflow" in seen[0].message and seen[0].dagster_run_id == result.run_id
    assert str(seen[0]).startswith("pipekit: module 'b' failed in phase 'stage'")


def _run_checks(defs: dg.Definitions, instance: dg.DagsterInstance, *keys: dg.AssetCheckKey) -> dict[str, object]:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection=set(keys))
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_asset_checks_find_duplicate_keys_and_schema_drift(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    result = defs.resolve_job_def("orders_job").execute_in_process(instance=instance)  # runs its checks too
    evals = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evals == {"no_duplicate_merge_keys": True, "no_schema_drift": True}

    dup = dg.AssetCheckKey(dg.AssetKey("orders"), "no_duplicate_merge_keys")
    drift = dg.AssetCheckKey(dg.AssetKey("orders"), "no_schema_drift")
    # pipekit created orders with a primary key (no duplicates possible): make it a plain table again
    demo.dw_execute("CREATE TABLE orders_plain AS SELECT * FROM orders")
    demo.dw_execute("DROP TABLE orders")
    demo.dw_execute("ALTER TABLE orders_plain RENAME TO orders")
    demo.dw_execute("INSERT INTO orders SELECT * FROM orders WHERE id = 7")
    demo.dw_execute("ALTER TABLE orders DROP COLUMN status")
    checks = _run_checks(defs, instance, dup, drift)
    d = checks["no_duplicate_merge_keys"]
    assert not d.passed and d.severity == dg.AssetCheckSeverity.ERROR
    assert "id=7 (2x)" in (d.description or "")
    assert d.metadata["pipekit/duplicate_keys"].value == 1  # a count, not only the JSON
    s = checks["no_schema_drift"]
    assert not s.passed and s.severity == dg.AssetCheckSeverity.WARN
    assert s.metadata["pipekit/missing_in_destination"].value == ["status"]
    assert s.metadata["pipekit/drifted_columns"].value == 1
    assert "status" in (s.description or "")
