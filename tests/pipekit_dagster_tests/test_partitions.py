"""Partitioned modules in Dagster: the asset's partitions and single-run backfill policy, a
three-month backfill through the real `dagster` CLI as ONE pipekit run, a one-partition rerun,
the launchpad and a UI backfill through `dagster dev`, the window and deletes metadata, a
partition window in a time zone on PostgreSQL, jobs with differently partitioned members,
schedules and sensors that ask for the latest complete partition, and the module checks of a
partitioned asset."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from pipekit_core.config import load_settings
from pipekit_core.engine import Engine
from pipekit_dagster import PipekitResource, PipekitRunOptions, build_definitions
from pipekit_dagster import constants as c
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.dagster_graphql import gql, run_status
from tests.pipekit_dagster_tests.conftest import (
    REPO,
    PipekitEnv,
    dagster_cmd,
    dagster_dev,
    materializations,
    observations,
)

pytestmark = pytest.mark.dagster

START = dt.date(2024, 1, 1)
PER_DAY = 10

CONNECTIONS = """
connections:
  src:
    url: jdbc:sqlite:data/events.db
  dw:
    url: jdbc:sqlite:data/dw.db
"""

DAILY = """
  - name: m
    source: src
    dest: dw
    dest_table: m_t
    strategy: window
    partitions: {every: day, start: '2024-01-01', column: d}
    query: SELECT id, d, amt FROM orders WHERE d >= '{window_start}' AND d < '{window_end}'
"""

HOURLY = """
  - name: h
    source: src
    dest: dw
    dest_table: h_t
    strategy: window
    partitions: {every: hour, start: '2024-01-01 00:00', column: d}
    query: SELECT id, d, amt FROM orders WHERE d >= '{window_start}' AND d < '{window_end}'
"""

PLAIN = """
  - name: u
    source: src
    dest: dw
    dest_table: u_t
    query: SELECT id, d, amt FROM orders WHERE id <= 5
"""


def _setup(env: PipekitEnv, modules: str, extra: str = "", days: int = 120) -> Path:
    """``orders(id, d DATE, amt)`` in data/events.db: PER_DAY orders a day from 2024-01-01; the YAML."""
    src = env.defs / "data" / "events.db"
    con = sqlite3.connect(src)
    with con:
        con.execute("CREATE TABLE orders (id INTEGER, d DATE, amt INTEGER)")
        con.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            [(i + 1, (START + dt.timedelta(days=i // PER_DAY)).isoformat(), i) for i in range(days * PER_DAY)],
        )
    con.close()
    env.write("p.yaml", CONNECTIONS + "modules:" + modules + extra, connections=False)
    return src


def _src_execute(src: Path, sql: str) -> None:
    con = sqlite3.connect(src)
    with con:
        con.execute(sql)
    con.close()


def _dw(env: PipekitEnv, sql: str) -> list[tuple]:
    con = sqlite3.connect(env.defs / "data" / "dw.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _asset(defs: dg.Definitions, name: str) -> dg.AssetsDefinition:
    return next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and dg.AssetKey(name) in a.keys)


def _spec(name: str) -> Any:
    engine = Engine(settings=load_settings())
    return engine.partition_spec(engine.module(name))


def _resources() -> dict[str, Any]:
    return {"pipekit": PipekitResource(), "pipekit_run": PipekitRunOptions()}


# ----------------------------------------------------------------------------- definitions


def test_partitioned_assets_jobs_and_a_mixed_group_load(blank: PipekitEnv) -> None:
    _setup(blank, DAILY + HOURLY + PLAIN, "groups:\n  g: {modules: [m, h, u]}\n")
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)

    m, h, u = _asset(defs, "m"), _asset(defs, "h"), _asset(defs, "u")
    spec = _spec("m")
    assert m.partitions_def == dg.TimeWindowPartitionsDefinition(
        cron_schedule="0 0 * * *", start="2024-01-01", fmt="%Y-%m-%d", timezone=spec.timezone
    )
    assert m.partitions_def == dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone=spec.timezone)
    assert h.partitions_def == dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00", timezone=spec.timezone)
    assert u.partitions_def is None
    assert m.backfill_policy == dg.BackfillPolicy.single_run() == h.backfill_policy
    assert u.backfill_policy is None
    assert m.specs_by_key[dg.AssetKey("m")].metadata[c.PARTITION_COLUMN] == "d"

    assert defs.resolve_job_def("m_job").partitions_def == m.partitions_def
    assert defs.resolve_job_def("h_job").partitions_def == h.partitions_def
    for name in ("g_job", "pipekit_all_job"):  # the mixed jobs hold the unpartitioned member only
        job = defs.resolve_job_def(name)
        assert job.partitions_def is None
        assert job.asset_layer.executable_asset_keys == {dg.AssetKey("u")}
        assert "Not in this job: the partitioned module(s) m, h" in (job.description or "")


def test_partitions_with_an_end_are_dagster_partitions_with_that_end(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _setup(blank, DAILY.replace("start: '2024-01-01'", "start: '2024-01-01', end: '2024-02-01'"))
    defs = build_definitions()
    m = _asset(defs, "m")
    spec = _spec("m")
    assert spec.end_key == "2024-02-01"
    assert m.partitions_def == dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01",
                                                           timezone=spec.timezone)
    assert m.partitions_def != dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone=spec.timezone)
    keys = m.partitions_def.get_partition_keys()
    assert keys[0] == "2024-01-01" and keys[-1] == "2024-01-31" and len(keys) == 31  # the end is exclusive
    assert defs.resolve_job_def("m_job").partitions_def == m.partitions_def
    result = defs.resolve_job_def("m_job").execute_in_process(instance=instance, partition_key="2024-01-31")
    assert result.success
    assert materializations(result)["m"][c.WINDOW_END].startswith("2024-02-01T00:00:00")


def test_a_group_of_modules_with_the_same_partitions_is_a_partitioned_job(blank: PipekitEnv) -> None:
    _setup(blank, DAILY + DAILY.replace("name: m", "name: m2").replace("m_t", "m2_t"), "groups:\n  g: {modules: [m, m2]}\n")
    defs = build_definitions()
    job = defs.resolve_job_def("g_job")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("m"), dg.AssetKey("m2")}
    assert job.partitions_def == _asset(defs, "m").partitions_def
    assert "Partitioned (Daily" in (job.description or "")
    result = job.execute_in_process(partition_key="2024-01-03", resources=_resources())
    assert result.success
    assert _dw(blank, "SELECT count(*), min(d), max(d) FROM m2_t") == [(PER_DAY, "2024-01-03", "2024-01-03")]


# ----------------------------------------------------------------------------- runs in process


def test_a_partition_and_a_range_in_process_and_the_checks_still_run(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _setup(blank, DAILY + HOURLY + PLAIN, "groups:\n  g: {modules: [m, h, u]}\n")
    defs = build_definitions()

    one = defs.resolve_job_def("m_job").execute_in_process(instance=instance, partition_key="2024-01-05")
    assert one.success
    md = materializations(one)["m"]
    assert md[c.PARTITION_ROW_COUNT] == PER_DAY == md[c.WINDOW_ROW_COUNT]
    assert md[c.PARTITIONS] == 1
    assert md[c.WINDOW_START].startswith("2024-01-05T00:00:00") and md[c.WINDOW_END].startswith("2024-01-06T00:00:00")
    assert "2024-01-05" in md[c.SOURCE_SQL] and "2024-01-06" in md[c.SOURCE_SQL]
    assert c.ROWS_SOURCE_DELETED not in md  # no deletes: on this module
    evals = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
             for e in one.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert evals == {"no_schema_drift": True}  # the module checks ran on the partitioned asset

    tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-10"}
    rng = defs.resolve_job_def("m_job").execute_in_process(instance=instance, tags=tags)
    assert rng.success
    mats = [e.materialization for e in rng.get_asset_materialization_events()]
    assert sorted(m.partition for m in mats) == [f"2024-01-{d:02d}" for d in range(1, 11)]
    md = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()}
    assert md[c.PARTITIONS] == 10 and md[c.WINDOW_ROW_COUNT] == 10 * PER_DAY
    per = {m.partition: m.metadata[c.PARTITION_ROW_COUNT].value for m in mats}  # each partition its own count
    assert per == {f"2024-01-{d:02d}": PER_DAY for d in range(1, 11)}
    runs = [r for r in blank.repo().history("m") if r["dagster_run_id"] == rng.run_id]
    assert len(runs) == 1  # ten partitions, one pipekit run
    assert _dw(blank, "SELECT count(*), min(d), max(d) FROM m_t") == [(10 * PER_DAY, "2024-01-01", "2024-01-10")]

    hourly = defs.resolve_job_def("h_job").execute_in_process(instance=instance, partition_key="2024-01-02-00:00")
    assert hourly.success
    assert materializations(hourly)["h"][c.WINDOW_END].startswith("2024-01-02T01:00:00")
    assert defs.resolve_job_def("g_job").execute_in_process(instance=instance).success  # u only
    assert _dw(blank, "SELECT count(*) FROM u_t") == [(5,)]


def test_a_dry_run_of_a_partition_observes_its_window(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _setup(blank, DAILY)
    defs = build_definitions()
    result = defs.resolve_job_def("m_job").execute_in_process(
        instance=instance, partition_key="2024-02-01", tags={c.DRY_RUN_TAG: "true"}
    )
    assert result.success and materializations(result) == {}
    obs = observations(result)["m"]
    assert obs[c.WINDOW_START].startswith("2024-02-01") and obs[c.PARTITIONS] == 1
    assert "2024-02-02" in obs[c.SOURCE_SQL]
    events = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert events[0].asset_observation_data.asset_observation.partition == "2024-02-01"
    assert "m_t" not in {r[0] for r in _dw(blank, "SELECT name FROM sqlite_master")}


def test_a_run_of_a_partitioned_module_without_a_partition_fails_clearly(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _setup(blank, DAILY)
    defs = build_definitions()
    # Dagster lets a partitioned job run without a partition (as `dagster job execute -j m_job` does)
    result = defs.resolve_job_def("m_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "m.resolve"
    text = failure.step_failure_data.user_failure_data.description
    assert text.startswith("module 'm' is partitioned (every day from 2024-01-01)")
    assert "--partition" in text and "module 'm': module 'm'" not in text
    assert blank.repo().history("m") == []  # no pipekit run was started (none took "the latest partition")
    assert "m_t" not in {r[0] for r in _dw(blank, "SELECT name FROM sqlite_master")}


# ----------------------------------------------------------------------------- schedules, sensors


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, at: dt.datetime) -> Any:
    ctx = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
    )
    return defs.resolve_schedule_def(name).evaluate_tick(ctx)


def test_schedules_ask_for_the_latest_complete_partition(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _setup(
        blank,
        DAILY + '    schedule: "30 2 * * *"\n' + HOURLY + '    schedule: "*/20 * * * *"\n' + PLAIN + '    schedule: "0 3 * * *"\n',
    )
    defs = build_definitions()
    tz = load_settings().local_timezone()
    daily, hourly = _spec("m"), _spec("h")

    # the cron is the daily cadence at 02:30: Dagster's own partitioned schedule
    sched = defs.resolve_schedule_def("m_schedule")
    assert sched.cron_schedule == "30 2 * * *" and sched.execution_timezone == tz == daily.timezone
    at = dt.datetime(2024, 5, 2, 2, 30, tzinfo=daily.tz)
    [req] = _tick(defs, instance, "m_schedule", at).run_requests
    assert req.partition_key == "2024-05-01" == daily.key(daily.latest(at).start)
    # build_schedule_from_partitioned_job's request: run_key = the partition (once per partition)
    assert req.run_key == "2024-05-01"
    assert sched.job_name == "m_job" and "latest complete partition" in (sched.description or "")

    # every 20 minutes is no hourly cadence: a schedule on that cron, each tick the latest complete hour
    sched = defs.resolve_schedule_def("h_schedule")
    assert sched.cron_schedule == "*/20 * * * *"
    at = dt.datetime(2024, 5, 2, 10, 40, tzinfo=hourly.tz)
    [req] = _tick(defs, instance, "h_schedule", at).run_requests
    assert req.partition_key == "2024-05-02-09:00" == hourly.key(hourly.latest(at).start)
    assert req.run_key is None  # each tick reruns the latest hour: no run key to make Dagster skip the next ones
    early = _tick(defs, instance, "h_schedule", dt.datetime(2023, 12, 31, 23, 40, tzinfo=hourly.tz))
    assert not early.run_requests and "no complete partition yet" in (early.skip_message or "")

    [req] = _tick(defs, instance, "u_schedule", dt.datetime(2024, 5, 2, 3, 0, tzinfo=hourly.tz)).run_requests
    assert req.partition_key is None


def test_a_probe_sensor_requests_the_latest_complete_partition(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    src = _setup(blank, DAILY + "    sensor: {probe: SELECT max(id) FROM orders, interval: 30}\n")
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("m_sensor")

    def tick(cursor: str | None) -> Any:
        with dg.build_sensor_context(
            instance=instance, resources={"pipekit": PipekitResource()}, cursor=cursor, repository_def=defs.get_repository_def()
        ) as ctx:
            return sensor.evaluate_tick(ctx)

    first = tick(None)
    assert not first.run_requests
    _src_execute(src, "INSERT INTO orders VALUES (999999, '2024-01-02', 1)")
    changed = tick(first.cursor)
    [req] = changed.run_requests
    spec = _spec("m")
    assert req.partition_key == spec.key(spec.latest().start)
    assert req.tags[c.TRIGGER_TAG] == "sensor"
    assert changed.cursor == json.dumps("999999")


# ----------------------------------------------------------------------------- the dagster CLI


def test_a_three_month_backfill_is_one_run_and_a_partition_rerun_replaces_its_day(
    blank: PipekitEnv, dagster_home: Path
) -> None:
    src = _setup(blank, DAILY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")} | blank.env() | {"DAGSTER_HOME": str(dagster_home)}
    base = [dagster_cmd("dagster"), "asset", "materialize", "-m", "pipekit_dagster.definitions", "--select", "m"]

    def materialize(*args: str) -> None:
        out = subprocess.run([*base, *args], env=env, cwd=blank.root, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    materialize("--partition-range", "2024-01-01...2024-03-31")
    runs = blank.repo().history("m")
    assert len(runs) == 1 and runs[0]["status"] == "success"  # 91 partitions, ONE pipekit run
    window = runs[0]["options"]["window"]
    assert window["start"].startswith("2024-01-01T00:00:00") and window["end"].startswith("2024-04-01T00:00:00")
    assert runs[0]["window_row_count"] == 91 * PER_DAY
    assert _dw(blank, "SELECT count(*), min(d), max(d) FROM m_t") == [(91 * PER_DAY, "2024-01-01", "2024-03-31")]

    days = [(START + dt.timedelta(days=i)).isoformat() for i in range(91)]
    with dg.DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("m")) == set(days)
        assert len(instance.get_runs()) == 1  # and one Dagster run
        record = instance.fetch_materializations(dg.AssetKey("m"), limit=1).records[0]
        md = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
        assert md[c.PARTITIONS] == 91 and md[c.WINDOW_ROW_COUNT] == 91 * PER_DAY
        assert md[c.RUN_ID] == runs[0]["id"]
        # every partition's materialization carries its own row count
        per = {r.asset_materialization.partition: r.asset_materialization.metadata[c.PARTITION_ROW_COUNT].value
               for r in instance.fetch_materializations(dg.AssetKey("m"), limit=200).records}
        assert per == dict.fromkeys(days, PER_DAY)

    # the source changes inside 2024-01-05 and outside it; rerunning that partition takes only its changes
    _src_execute(src, "UPDATE orders SET amt = -1 WHERE d = '2024-01-05'")
    _src_execute(src, "UPDATE orders SET amt = -2 WHERE d = '2024-01-06'")
    _src_execute(src, "DELETE FROM orders WHERE id = 41")  # the first order of 2024-01-05
    materialize("--partition", "2024-01-05")
    runs = blank.repo().history("m")
    assert len(runs) == 2
    last = max(runs, key=lambda r: r["id"])
    assert last["options"]["window"]["start"].startswith("2024-01-05") and last["window_row_count"] == PER_DAY - 1
    assert _dw(blank, "SELECT count(*), min(amt), max(amt) FROM m_t WHERE d = '2024-01-05'") == [(PER_DAY - 1, -1, -1)]
    assert _dw(blank, "SELECT count(*) FROM m_t WHERE amt = -2") == [(0,)]  # 2024-01-06 untouched
    assert _dw(blank, "SELECT count(*) FROM m_t") == [(91 * PER_DAY - 1,)]
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(dg.AssetKey("m"), limit=1).records[0]
        assert record.asset_materialization.partition == "2024-01-05"
        md = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
        assert md[c.PARTITION_ROW_COUNT] == PER_DAY - 1 and md[c.PARTITIONS] == 1


# ----------------------------------------------------------------------------- the webserver

BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}
"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status runs(limit: 10) { runId status } } }
}
"""


def _dagster_dev(env: PipekitEnv, home: Path) -> contextlib.AbstractContextManager[str]:
    """``dagster dev`` on the workspace with this test's pipekit environment; yields its URL."""
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")} | env.env() | {"DAGSTER_HOME": str(home)}
    return dagster_dev(env.root, proc_env)


def _wait(what: str, probe: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not done after {timeout} s"
        time.sleep(1)


def test_the_launchpad_partition_and_a_ui_backfill_are_one_pipekit_run_each(blank: PipekitEnv, dagster_home: Path) -> None:
    _setup(blank, DAILY)
    with _dagster_dev(blank, dagster_home) as url:
        # the launchpad of m_job with a partition picked: the run carries the dagster/partition tag
        selector = {"repositoryLocationName": "pipekit", "repositoryName": "__repository__", "jobName": "m_job"}
        params = {"selector": selector, "runConfigData": {}, "mode": "default",
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2024-01-05"}]}}
        res = gql(url, "mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename "
                       "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }", params=params)
        assert res["launchRun"]["__typename"] == "LaunchRunSuccess", res
        run_id = res["launchRun"]["run"]["runId"]
        assert _wait("launchpad run", lambda: run_status(url, run_id) in ("SUCCESS", "FAILURE", "CANCELED") and
                     run_status(url, run_id)) == "SUCCESS"
        assert _dw(blank, "SELECT count(*), min(d), max(d) FROM m_t") == [(PER_DAY, "2024-01-05", "2024-01-05")]

        # "Materialize selected partitions" on the asset: a backfill the daemon turns into one run
        days = [f"2024-02-{d:02d}" for d in range(1, 11)]
        res = gql(url, BACKFILL, params={"partitionNames": days, "assetSelection": [{"path": ["m"]}], "fromFailure": False})
        assert res["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", res
        backfill = res["launchPartitionBackfill"]["backfillId"]

        def done() -> Any:
            b = gql(url, BACKFILL_STATUS, id=backfill)["partitionBackfillOrError"]
            return b if b["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED") else None

        b = _wait("backfill", done, timeout=240)
        assert b["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), b
        assert len(b["runs"]) == 1 and b["runs"][0]["status"] == "SUCCESS", b  # ten partitions, one Dagster run
    runs = [r for r in blank.repo().history("m") if r["dagster_run_id"] == b["runs"][0]["runId"]]
    assert len(runs) == 1  # ... and one pipekit run over the whole window
    assert runs[0]["options"]["window"]["start"].startswith("2024-02-01")
    assert runs[0]["options"]["window"]["end"].startswith("2024-02-11")
    assert _dw(blank, "SELECT count(*) FROM m_t WHERE d >= '2024-02-01'") == [(10 * PER_DAY,)]
    assert _dw(blank, "SELECT count(*) FROM m_t") == [(11 * PER_DAY,)]


# ----------------------------------------------------------------------------- PostgreSQL, a time zone


@pytest.mark.postgres
def test_a_daily_window_in_a_time_zone_on_postgresql(
    blank: PipekitEnv, pg_db: str, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    """Dagster's partition window (New York days) is the pipekit window: the rows of that local day."""
    monkeypatch.setenv("PK_TEST_PG_PASSWORD", PG_PASSWORD)
    with psycopg.connect(pg_db, autocommit=True) as con:
        con.execute("CREATE TABLE ev AS SELECT g AS id, timestamptz '2024-01-01 00:00:00+00' + g * interval '30 minutes' "
                    "AS ts FROM generate_series(0, 48 * 20 - 1) g")  # every half hour, 20 days (UTC)
    blank.write("pg.yaml", f"""
        connections:
          pg:
            url: {jdbc_url(pg_db)}
            user: pipekit
            password: $PK_TEST_PG_PASSWORD
        modules:
          - name: ny
            source: pg
            dest: pg
            dest_table: public.ny
            strategy: window
            partitions: {{every: day, start: '2024-01-02', timezone: America/New_York, column: ts}}
            query: SELECT id, ts FROM ev WHERE ts >= '{{window_start}}' AND ts < '{{window_end}}'
        """, connections=False)
    defs = build_definitions()
    assert _asset(defs, "ny").partitions_def == dg.DailyPartitionsDefinition(start_date="2024-01-02", timezone="America/New_York")
    result = defs.resolve_job_def("ny_job").execute_in_process(instance=instance, partition_key="2024-01-05")
    assert result.success
    md = materializations(result)["ny"]
    assert md[c.WINDOW_START] == "2024-01-05T00:00:00-05:00" and md[c.WINDOW_END] == "2024-01-06T00:00:00-05:00"
    assert md[c.PARTITION_ROW_COUNT] == 48
    with psycopg.connect(pg_db, autocommit=True) as con:
        lo, hi, n = con.execute("SELECT min(ts), max(ts), count(*) FROM public.ny").fetchone()
    assert n == 48
    assert lo == dt.datetime(2024, 1, 5, 5, 0, tzinfo=dt.timezone.utc)  # New York midnight, in UTC
    assert hi == dt.datetime(2024, 1, 6, 4, 30, tzinfo=dt.timezone.utc)


def test_deletes_counts_are_materialization_metadata(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    src = _setup(blank, """
  - name: inc
    source: src
    dest: dw
    dest_table: inc_t
    strategy: incremental
    merge_key: [id]
    query: SELECT id, d, amt FROM orders WHERE id <= 20
    deletes: {mode: hard, keys_query: SELECT id FROM orders WHERE id <= 20}
""")
    job = build_definitions().resolve_job_def("inc_job")
    first = materializations(job.execute_in_process(instance=instance))["inc"]
    assert first[c.ROWS_SOURCE_DELETED] == 0
    assert c.ROWS_SOFT_DELETED not in first and c.WINDOW_START not in first  # hard deletes; not partitioned
    _src_execute(src, "DELETE FROM orders WHERE id IN (3, 4)")
    md = materializations(job.execute_in_process(instance=instance))["inc"]
    assert md[c.ROWS_SOURCE_DELETED] == 2 and md[c.ROW_COUNT] == 18
    assert _dw(blank, "SELECT count(*) FROM inc_t WHERE id IN (3, 4)") == [(0,)]


def test_soft_deletes_counts_are_materialization_metadata(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    # the query leaves out negative amounts; the keys query does not: a key can be present without its row staged
    src = _setup(blank, """
  - name: inc
    source: src
    dest: dw
    dest_table: inc_t
    strategy: incremental
    merge_key: [id]
    query: SELECT id, d, amt FROM orders WHERE id <= 20 AND amt >= 0
    deletes: {mode: soft, keys_query: SELECT id FROM orders WHERE id <= 20, soft_column: deleted_at}
""")
    job = build_definitions().resolve_job_def("inc_job")
    first = materializations(job.execute_in_process(instance=instance))["inc"]
    assert first[c.ROWS_SOFT_DELETED] == 0 and first[c.ROWS_UNDELETED] == 0
    assert c.ROWS_SOURCE_DELETED not in first  # soft: nothing is deleted
    _src_execute(src, "DELETE FROM orders WHERE id IN (3, 4)")
    md = materializations(job.execute_in_process(instance=instance))["inc"]
    assert md[c.ROWS_SOFT_DELETED] == 2 and md[c.ROWS_UNDELETED] == 0 and c.ROWS_SOURCE_DELETED not in md
    assert md[c.ROW_COUNT] == 20  # the marked rows stay
    assert _dw(blank, "SELECT id FROM inc_t WHERE deleted_at IS NOT NULL ORDER BY id") == [(3,), (4,)]
    _src_execute(src, "INSERT INTO orders VALUES (3, '2024-01-01', -1)")  # key 3 is back (its row is not staged)
    md = materializations(job.execute_in_process(instance=instance))["inc"]
    assert md[c.ROWS_SOFT_DELETED] == 0 and md[c.ROWS_UNDELETED] == 1
    assert _dw(blank, "SELECT id FROM inc_t WHERE deleted_at IS NOT NULL") == [(4,)]
    runs = sorted(blank.repo().history("inc"), key=lambda r: r["id"])
    assert [(r["rows_soft_deleted"], r["rows_undeleted"]) for r in runs] == [(0, 0), (2, 0), (0, 1)]


def test_partitions_that_do_not_resolve_in_the_timezone_setting_are_a_definition_problem(blank: PipekitEnv) -> None:
    # midnight UTC is a day boundary in UTC, not in Paris (the timezone setting, the partitions' default)
    _setup(blank, DAILY.replace("start: '2024-01-01'", "start: '2024-01-01 00:00:00+00:00'") + PLAIN)
    (blank.root / "pipekit.yaml").write_text("timezone: Europe/Paris\n")
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "m" not in keys and "u" in keys  # the other module still loads
    broken = next(k for k in graph.get_all_asset_keys() if k.to_user_string().startswith(c.BROKEN_ASSET_PREFIX))
    text = graph.get(broken).description or ""
    assert "module 'm'" in text and "partitions" in text and "Europe/Paris" in text


def test_dg_launch_runs_a_partition_and_a_range_as_one_pipekit_run_each(blank: PipekitEnv, dagster_home: Path) -> None:
    """`dg launch` (Dagster's project CLI; pyproject.toml's [tool.dg] names the code location)."""
    _setup(blank, DAILY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")} | blank.env() | {
        "DAGSTER_HOME": str(dagster_home), "PIPEKIT_CONFIG": str(blank.root / "pipekit.yaml")}
    (blank.root / "pipekit.yaml").write_text("timezone: UTC\n")
    for args in (["--partition", "2024-01-05"], ["--partition-range", "2024-02-01...2024-02-29"]):
        out = subprocess.run([dagster_cmd("dg"), "launch", "--assets", "m", *args], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = sorted(blank.repo().history("m"), key=lambda r: r["id"])
    assert [r["status"] for r in runs] == ["success", "success"]
    assert [r["window_row_count"] for r in runs] == [PER_DAY, 29 * PER_DAY]
    assert runs[1]["options"]["window"]["start"].startswith("2024-02-01")
    assert runs[1]["options"]["window"]["end"].startswith("2024-03-01")
    assert _dw(blank, "SELECT count(*) FROM m_t") == [(30 * PER_DAY,)]
