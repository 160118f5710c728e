"""The UI and the history tell the truth: a hook failing after the commit still records the
materialization of the committed rows; a run says when its YAML changed since the code location
loaded; `pipekit history` shows the Dagster run id."""

from __future__ import annotations

import logging
import subprocess

import dagster as dg
import pytest

from pipekit_dagster import PipekitResource, build_definitions
from pipekit_dagster import constants as c
from tests.helpers import PIPEKIT
from tests.pipekit_dagster_tests.conftest import PipekitEnv

pytestmark = pytest.mark.dagster

HOOK_FAILS = """
modules:
  - name: m
    source: erp
    dest: dw
    dest_table: m_t
    query: SELECT id FROM customers
    hooks:
      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}
"""


def _customers(env: PipekitEnv, n: int = 5) -> None:
    """The demo's customers, cut to ids 1..n."""
    env.erp_execute(f"DELETE FROM customers WHERE id > {n}")


def test_a_hook_failing_after_the_commit_still_records_the_materialization(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _customers(blank)
    blank.write("m.yaml", HOOK_FAILS)
    result = build_definitions().resolve_job_def("m_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success  # the run fails (the hook failed) ...
    assert blank.dw_query("SELECT count(*) FROM m_t") == [(5,)]  # ... after the merge committed
    record = instance.fetch_materializations(dg.AssetKey("m"), limit=5).records
    assert len(record) == 1  # ... and the asset says the table changed
    md = {k: getattr(v, "value", v) for k, v in record[0].asset_materialization.metadata.items()}
    assert md[c.ROW_COUNT] == 5 and md[c.PHASE] == "hooks"
    assert "refresh report failed" in md[c.ERROR] and "no_such_table" in md[c.ERROR]
    assert "merge had committed" in md[c.ERROR]
    run = blank.repo().last_run("m")
    assert run is not None and run["status"] == "error" and run["rows_inserted"] == 5


def test_a_merge_that_fails_records_no_materialization(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _customers(blank)
    blank.write("m.yaml", HOOK_FAILS.replace("SELECT id FROM customers", "SELECT id, 1/0 AS x FROM customers WHERE nope"))
    result = build_definitions().resolve_job_def("m_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert instance.fetch_materializations(dg.AssetKey("m"), limit=5).records == []


def test_a_run_says_when_its_yaml_changed_since_the_code_location_loaded(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _customers(blank)
    blank.write("m.yaml", HOOK_FAILS.replace("    hooks:\n      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}\n", ""))
    defs = build_definitions()  # the code location loads ...
    loaded = defs.resolve_assets_def(dg.AssetKey("m")).code_versions_by_key[dg.AssetKey("m")]
    blank.write("m.yaml", HOOK_FAILS.replace("    hooks:\n      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}\n", "")
                .replace("SELECT id FROM customers", "SELECT id FROM customers WHERE id > 2"))  # ... the YAML changes
    result = defs.resolve_job_def("m_job").execute_in_process(instance=instance)
    assert result.success
    run = blank.repo().last_run("m")
    assert run is not None and run["code_version"] != loaded
    changed = f"definition changed since the code location loaded (code_version {loaded} -> {run['code_version']})"
    assert changed in run["log"]
    # ... and in the Dagster run's event log (read back from the instance), as a warning
    warned = [e for e in instance.all_logs(result.run_id) if changed in (e.user_message or "")]
    assert warned and all(e.level == logging.WARNING for e in warned)
    assert blank.dw_query("SELECT count(*) FROM m_t") == [(3,)]  # the YAML as it is now
    again = build_definitions().resolve_job_def("m_job").execute_in_process(instance=instance)  # reloaded
    assert again.success and "definition changed" not in (blank.repo().last_run("m") or {}).get("log", "")


def test_history_shows_the_dagster_run_id(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _customers(blank)
    blank.write("m.yaml", HOOK_FAILS.replace("    hooks:\n      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}\n", ""))
    result = build_definitions().resolve_job_def("m_job").execute_in_process(instance=instance)
    env = {"PIPEKIT_DEFS": str(blank.defs), "PIPEKIT_DB": str(blank.db), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([PIPEKIT, "history"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dagster run" in out.stdout and result.run_id[:8] in out.stdout
    run_id = blank.repo().last_run("m")["id"]  # type: ignore[index]
    full = subprocess.run([PIPEKIT, "history", "--run-id", str(run_id)], env=env, capture_output=True, text=True, timeout=60)
    assert f"dagster_run_id: {result.run_id}" in full.stdout


def test_the_duplicate_key_check_is_constant_time_on_a_unique_key(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _customers(blank)
    blank.write("m.yaml", """
modules:
  - {name: m, source: erp, dest: dw, dest_table: m_t, query: SELECT id FROM customers, strategy: incremental, merge_key: [id]}
  - {name: n, source: erp, dest: dw, dest_table: n_t, query: SELECT id FROM customers, strategy: incremental, merge_key: [id],
     primary_key: false}
""")
    result = build_definitions().resolve_job_def("pipekit_all_job").execute_in_process(instance=instance)
    evals = {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
             e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    keyed, scanned = evals[("m", "no_duplicate_merge_keys")], evals[("n", "no_duplicate_merge_keys")]
    assert keyed.passed and scanned.passed
    assert keyed.metadata["pipekit/guaranteed_by"].value == "unique key"  # created with its primary key: no scan
    assert "pipekit/guaranteed_by" not in scanned.metadata  # no key: the table was scanned


def test_cli_runs_become_materializations_in_dagster(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    """`pipekit run` outside Dagster: the CLI-runs sensor reports it as the asset's materialization."""
    _customers(blank)
    blank.write("m.yaml", HOOK_FAILS.replace("    hooks:\n      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}\n", ""))
    env = {"PIPEKIT_DEFS": str(blank.defs), "PIPEKIT_DB": str(blank.db), "PATH": "/usr/bin:/bin"}
    assert subprocess.run([PIPEKIT, "run", "m"], env=env, capture_output=True, text=True, timeout=60).returncode == 0
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("pipekit_cli_runs_sensor")
    with dg.build_sensor_context(instance=instance, resources={"pipekit": PipekitResource()}) as ctx:
        first = sensor.evaluate_tick(ctx)
    events = first.asset_events
    assert [e.asset_key for e in events] == [dg.AssetKey("m")]
    md = {k: getattr(v, "value", v) for k, v in events[0].metadata.items()}
    assert md[c.ROW_COUNT] == 5 and md[c.RUN_ID] == blank.repo().last_run("m")["id"]  # type: ignore[index]
    # a Dagster run is not reported again; a second CLI run is, once
    defs.resolve_job_def("m_job").execute_in_process(instance=instance)
    assert subprocess.run([PIPEKIT, "run", "m"], env=env, capture_output=True, text=True, timeout=60).returncode == 0
    with dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"pipekit": PipekitResource()}) as ctx:
        second = sensor.evaluate_tick(ctx)
    assert len(second.asset_events) == 1
    with dg.build_sensor_context(instance=instance, cursor=second.cursor, resources={"pipekit": PipekitResource()}) as ctx:
        third = sensor.evaluate_tick(ctx)
    assert not third.asset_events and third.cursor == second.cursor  # nothing new


def test_the_materialization_metadata_is_shown_once(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _customers(blank)
    blank.write("m.yaml", HOOK_FAILS.replace("    hooks:\n      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}\n", ""))
    result = build_definitions().resolve_job_def("m_job").execute_in_process(instance=instance)
    outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == "m.hooks"]
    assert len(outputs) == 1 and c.ROW_COUNT not in (outputs[0].event_specific_data.metadata or {})
    [mat] = result.get_asset_materialization_events()
    assert mat.materialization.metadata[c.ROW_COUNT].value == 5  # on the materialization, once


def test_schedules_and_sensors_default_status_is_a_pipekit_yaml_setting(blank: PipekitEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    blank.write("m.yaml", HOOK_FAILS.replace("    hooks:\n      - {name: refresh report, sql: INSERT INTO no_such_table VALUES (1)}\n",
                                            '    schedule: "0 3 * * *"\n'))
    running = build_definitions()
    assert running.resolve_schedule_def("m_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    config = blank.root / "pipekit.yaml"
    config.write_text("schedule_status: stopped\nsensor_status: stopped\n")
    monkeypatch.setenv("PIPEKIT_CONFIG", str(config))
    stopped = build_definitions()
    assert stopped.resolve_schedule_def("m_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
    assert stopped.resolve_sensor_def("pipekit_cli_runs_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    # an explicit argument still wins
    again = build_definitions(schedule_status=dg.DefaultScheduleStatus.RUNNING)
    assert again.resolve_schedule_def("m_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
