"""``automation:`` and ``freshness:`` in Dagster: the specs carry the conditions and policies, the
automation sensor is there (once), the conditions evaluated on a real instance request the module
(eager: after its upstream module materializes; on_cron: at the tick; partitioned: the latest
partition) and the requested run loads the rows; through ``dagster dev`` the daemon's own sensor
tick starts the run, and the webserver shows the freshness policy and the condition."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time

import dagster as dg
import pytest

from pipekit_dagster import build_definitions
from pipekit_dagster import constants as c
from pipekit_dagster.definitions import AUTOMATION_SENSOR
from tests.dagster_graphql import gql, launch_run, run_status
from tests.pipekit_dagster_tests.conftest import PipekitEnv, dagster_dev

pytestmark = pytest.mark.dagster

MODULES = """
modules:
  - name: up
    source: erp
    dest: dw
    dest_table: up_t
    query: SELECT id, name FROM customers WHERE id <= 20
    freshness: {fail_after: 2h, warn_after: 1h}
  - name: down
    source: erp
    dest: dw
    dest_table: down_t
    query: SELECT id, name FROM customers WHERE id <= 5
    deps: [up]
    automation: eager
    freshness: {deadline: "0 9 * * *", window: 2h}
  - name: hourly
    source: erp
    dest: dw
    dest_table: hourly_t
    query: SELECT id FROM customers WHERE id <= 7
    automation: {on_cron: "0 * * * *"}
  - name: member
    source: erp
    dest: dw
    dest_table: member_t
    query: SELECT id FROM customers WHERE id <= 3
  - name: own
    source: erp
    dest: dw
    dest_table: own_t
    query: SELECT id FROM customers WHERE id <= 4
    automation: on_missing
groups:
  nightly:
    modules: [member, own]
    automation: {on_cron: "30 2 * * *"}
    stop_on_failure: false
"""

KEYS = ("up", "down", "hourly", "member", "own")


def _node(defs: dg.Definitions, name: str):  # noqa: ANN202 - Dagster's internal asset node type
    return defs.get_repository_def().asset_graph.get(dg.AssetKey(name))


def _requested(result, names=KEYS) -> dict[str, set]:  # noqa: ANN001
    return {n: set(result.get_requested_partitions(dg.AssetKey(n))) for n in names if result.get_num_requested(dg.AssetKey(n))}


def _run_requested(defs: dg.Definitions, instance: dg.DagsterInstance, names: list[str],
                   partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    """Run what the automation sensor would launch: the asset job for the requested assets, with its run tags."""
    sensor = defs.get_sensor_def(AUTOMATION_SENSOR)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(n) for n in names],
                                  partition_key=partition_key, tags=dict(sensor.run_tags))


def test_specs_carry_conditions_policies_and_one_sensor(blank: PipekitEnv) -> None:
    (blank.root / "pipekit.yaml").write_text("timezone: Europe/Berlin\n")
    blank.write("mods.yaml", MODULES)
    defs = build_definitions()
    labels = {n: (_node(defs, n).automation_condition.get_label() if _node(defs, n).automation_condition else None)
              for n in KEYS}
    assert labels == {"up": None, "down": "eager", "hourly": "on_cron(0 * * * *, Europe/Berlin)",
                      "member": "on_cron(30 2 * * *, Europe/Berlin)",  # the group's, in the timezone setting
                      "own": "on_missing"}  # a member's own automation replaces its group's
    up, down = _node(defs, "up").freshness_policy, _node(defs, "down").freshness_policy
    assert isinstance(up, dg._core.definitions.freshness.TimeWindowFreshnessPolicy)  # noqa: SLF001
    assert (up.fail_window.to_timedelta(), up.warn_window.to_timedelta()) == (dt.timedelta(hours=2), dt.timedelta(hours=1))
    assert isinstance(down, dg._core.definitions.freshness.CronFreshnessPolicy)  # noqa: SLF001
    assert (down.deadline_cron, down.lower_bound_delta, down.timezone) == ("0 9 * * *", dt.timedelta(hours=2), "Europe/Berlin")
    assert _node(defs, "hourly").freshness_policy is None
    sensors = {s.name: s for s in defs.get_repository_def().sensor_defs}
    automation = [s for s in sensors.values() if isinstance(s, dg.AutomationConditionSensorDefinition)]
    # one automation sensor, pipekit's (RUNNING like pipekit's other sensors); Dagster adds no default one
    assert [s.name for s in automation] == [AUTOMATION_SENSOR]
    assert "default_automation_condition_sensor" not in sensors
    assert automation[0].default_status == dg.DefaultSensorStatus.RUNNING
    assert automation[0].run_tags == {c.TRIGGER_TAG: "automation"}
    targeted = automation[0].asset_selection.resolve(defs.get_repository_def().asset_graph)
    assert targeted == {dg.AssetKey(n) for n in ("down", "hourly", "member", "own")}
    # the cron deadline's default window is the whole time between two ticks
    blank.write("mods.yaml", MODULES.replace(", window: 2h", ""))
    policy = _node(build_definitions(), "down").freshness_policy
    assert policy.lower_bound_delta == dt.timedelta(days=1)


def test_no_automation_no_sensor(blank: PipekitEnv) -> None:
    blank.write("mods.yaml", """
    modules:
      - name: plain
        source: erp
        dest: dw
        dest_table: plain_t
        query: SELECT id FROM customers
        schedule: "0 * * * *"
    """)
    defs = build_definitions()
    assert not [s for s in defs.get_repository_def().sensor_defs if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert _node(defs, "plain").automation_condition is None


def test_eager_and_on_cron_request_the_module_and_the_run_loads_it(blank: PipekitEnv,
                                                                   instance: dg.DagsterInstance) -> None:
    blank.write("mods.yaml", MODULES)
    defs = build_definitions()
    TRIO = ("up", "down", "hourly")  # noqa: N806 - the group's nightly cron may tick in between: not looked at here
    # evaluation times from the next full hour on: after every materialization, as on a real daemon
    hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    t0 = hour + dt.timedelta(minutes=20)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=t0)
    assert _requested(result, TRIO) == {}  # nothing has happened yet: up is missing, no cron tick passed
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=t0 + dt.timedelta(minutes=10))
    assert _requested(result, TRIO) == {}

    # up materializes (a run of its own job): eager requests down on the next evaluation, once
    assert defs.resolve_job_def("up_job").execute_in_process(instance=instance).success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=t0 + dt.timedelta(minutes=15))
    assert _requested(result, TRIO) == {"down": {None}}
    assert "down_t" not in blank.dw_tables()
    run = _run_requested(defs, instance, ["down"])
    assert run.success and run.dagster_run.tags[c.TRIGGER_TAG] == "automation"
    assert blank.dw_query("SELECT count(*) FROM down_t") == [(5,)]
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=t0 + dt.timedelta(minutes=20))
    assert _requested(result, TRIO) == {}  # handled: down is not requested again

    # the next full hour passes: on_cron requests hourly (and only then), whose source table is an
    # external asset that never materializes (ignored by the condition)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=hour + dt.timedelta(hours=1, minutes=1))
    assert _requested(result, TRIO) == {"hourly": {None}}
    assert _run_requested(defs, instance, ["hourly"]).success
    assert blank.dw_query("SELECT count(*) FROM hourly_t") == [(7,)]
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=hour + dt.timedelta(hours=1, minutes=30))
    assert _requested(result, TRIO) == {}


def test_partitioned_module_gets_its_latest_partition(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    """eager / on_missing / on_cron on a daily-partitioned module request the latest complete day
    (Dagster's in_latest_time_window), when it closes or at the cron tick; the run loads that day only."""
    now = dt.datetime.now(dt.timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)  # past: its day is a partition now
    day = (midnight - dt.timedelta(days=1)).date()  # the day that closes at `midnight`
    src = blank.defs / "data" / "events.db"
    con = sqlite3.connect(src)
    with con:
        con.execute("CREATE TABLE ev (id INTEGER, d TEXT)")
        con.executemany("INSERT INTO ev VALUES (?, ?)",
                        [(i, str(day - dt.timedelta(days=i % 3))) for i in range(1, 31)])  # 10 rows a day, 3 days
    con.close()
    module = """
      - name: {name}
        source: ev
        dest: dw
        dest_table: {name}_t
        strategy: window
        partitions: {{every: day, start: '2024-01-01', timezone: UTC, column: d}}
        query: SELECT id, d FROM ev WHERE d >= date('{{window_start}}') AND d < date('{{window_end}}')
        automation: {automation}
    """
    blank.write("mods.yaml", "  ev:\n    url: jdbc:sqlite:data/events.db\nmodules:\n" + "".join(
        module.format(name=n, automation=a)
        for n, a in (("p_eager", "eager"), ("p_missing", "on_missing"), ("p_cron", "{on_cron: '0 1 * * *'}"))))
    defs = build_definitions()
    names = ("p_eager", "p_missing", "p_cron")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=midnight - dt.timedelta(minutes=30))
    assert _requested(result, names) == {}
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=midnight + dt.timedelta(minutes=10))
    assert _requested(result, names) == {"p_eager": {str(day)}, "p_missing": {str(day)}}  # the new day, no older one
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                               evaluation_time=midnight + dt.timedelta(hours=1, minutes=5))
    assert _requested(result, names) == {"p_cron": {str(day)}}
    run = _run_requested(defs, instance, ["p_cron"], partition_key=str(day))
    assert run.success
    assert blank.dw_query("SELECT count(*), min(d), max(d) FROM p_cron_t") == [(10, str(day), str(day))]


def test_the_daemon_starts_the_module_and_the_ui_shows_freshness(blank: PipekitEnv) -> None:
    """Through ``dagster dev``: pipekit's automation sensor, ticking in the daemon on its own, starts
    ``down`` after ``up`` (launched as the Materialize button does) materializes; the webserver's
    GraphQL shows the freshness policies and the automation condition on the asset nodes."""
    blank.write("mods.yaml", MODULES)
    env = {**os.environ, **blank.env()}
    sensor_ticks = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename
        ... on Sensor { sensorState { status ticks(limit: 5) { status } } } } }"""
    nodes = """{ assetNodes { assetKey { path } automationCondition { label }
        internalFreshnessPolicy { __typename
          ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
          ... on CronFreshnessPolicy { deadlineCron lowerBoundDeltaSeconds timezone } } } }"""
    runs = """{ runsOrError { ... on Runs { results { runId status tags { key value } assetSelection { path } } } } }"""
    with dagster_dev(blank.root, env) as url:
        location = next(e["name"] for e in gql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
                        ["workspaceOrError"]["locationEntries"])
        by_key = {tuple(n["assetKey"]["path"]): n for n in gql(url, nodes)["assetNodes"]}
        assert by_key[("up",)]["internalFreshnessPolicy"] == {
            "__typename": "TimeWindowFreshnessPolicy", "failWindowSeconds": 7200, "warnWindowSeconds": 3600}
        assert by_key[("down",)]["internalFreshnessPolicy"]["deadlineCron"] == "0 9 * * *"
        assert by_key[("down",)]["internalFreshnessPolicy"]["lowerBoundDeltaSeconds"] == 7200
        assert by_key[("down",)]["automationCondition"]["label"] == "eager"
        assert by_key[("up",)]["automationCondition"] is None

        selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "sensorName": AUTOMATION_SENSOR}
        deadline = time.monotonic() + 150
        while True:  # the first tick records the state (eager starts counting from there)
            state = gql(url, sensor_ticks, s=selector)["sensorOrError"]["sensorState"]
            assert state["status"] == "RUNNING"
            if state["ticks"]:
                break
            assert time.monotonic() < deadline, "the automation sensor never ticked"
            time.sleep(2)
        up_run = launch_run(url, {"repositoryLocationName": location, "repositoryName": "__repository__",
                                  "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["up"]}]})
        down_run = None
        while down_run is None or down_run["status"] not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline + 120, f"no automation run of down finished; runs: {gql(url, runs)}"
            time.sleep(2)
            for r in gql(url, runs)["runsOrError"]["results"]:
                if [a["path"] for a in r["assetSelection"] or []] == [["down"]]:
                    down_run = r
        assert run_status(url, up_run) == "SUCCESS"
        assert down_run["status"] == "SUCCESS", down_run
        assert {"key": c.TRIGGER_TAG, "value": "automation"} in down_run["tags"]
    assert blank.dw_query("SELECT count(*) FROM down_t") == [(5,)]
    assert [r["dagster_run_id"] for r in blank.repo().history("down")] == [down_run["runId"]]
