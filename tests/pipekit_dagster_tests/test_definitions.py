"""Loading the code location: assets, jobs, schedules and sensors from the definitions, with no
database touched; broken files and a missing folder stay visible without taking the rest down."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from pipekit_core.config import load_settings
from pipekit_dagster import PipekitModuleData, PipekitTranslator, build_definitions
from pipekit_dagster import constants as c
from tests.helpers import PIPEKIT
from tests.pipekit_dagster_tests.conftest import IGNORE_DATA, REPO, PipekitEnv, materializations

pytestmark = pytest.mark.dagster


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_definitions_module_loads_the_demo_without_touching_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defs_dir = tmp_path / "defs"
    shutil.copytree(REPO / "module_defs", defs_dir, ignore=IGNORE_DATA)  # no data/: the SQLite source does not exist
    monkeypatch.setenv("PIPEKIT_DEFS", str(defs_dir))
    monkeypatch.setenv("PIPEKIT_DB", str(tmp_path / "state" / "pipekit.db"))
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)

    import pipekit_dagster.definitions as module

    defs = importlib.reload(module).defs
    assert isinstance(defs, dg.Definitions)
    assert _files(tmp_path) == before  # no SQLite file created, no repository
    assert not (tmp_path / "state").exists()

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    # the modules, and the source tables their queries read (lineage: external assets)
    assert keys == {"customers", "orders", "order_events",
                    "demo_erp/main/customers", "demo_erp/main/orders", "demo_erp/main/order_events"}
    orders = graph.get(dg.AssetKey("orders"))
    assert orders.group_name == "demo"
    assert orders.kinds == {"sqlite"}
    assert orders.parent_keys == {dg.AssetKey("customers"), dg.AssetKey(["demo_erp", "main", "orders"])}  # deps: [customers]
    assert graph.get(dg.AssetKey("order_events")).parent_keys == {
        dg.AssetKey("orders"), dg.AssetKey(["demo_erp", "main", "order_events"])}  # group order
    specs = {s.key.to_user_string(): s for a in defs.assets for s in getattr(a, "specs", [])}
    catalog_mod = __import__("pipekit_core.defs", fromlist=["load_catalog"]).load_catalog(defs_dir)
    assert specs["orders"].code_version == catalog_mod.modules["orders"].definition_hash()
    assert specs["orders"].metadata[c.TABLE_NAME].value == "orders"
    schema = specs["customers"].metadata[c.COLUMN_SCHEMA].value
    assert [col.name for col in schema.columns] == ["customer_id", "name", "country", "created_at"]
    assert "Customer master data" in (specs["customers"].description or "")

    repo_def = defs.get_repository_def()
    jobs = {j.name for j in repo_def.get_all_jobs()}
    assert {"customers_job", "orders_job", "order_events_job", "demo_job", "pipekit_all_job"} <= jobs
    schedules = {s.name: s for s in repo_def.schedule_defs}
    assert set(schedules) == {"orders_schedule", "demo_schedule"}
    tz = load_settings().local_timezone()
    assert schedules["orders_schedule"].cron_schedule == "*/15 * * * *"
    assert schedules["orders_schedule"].execution_timezone == tz
    assert schedules["demo_schedule"].job_name == "demo_job"
    sensors = {s.name: s for s in repo_def.sensor_defs}
    assert set(sensors) == {"order_events_sensor", c.RUN_FAILURE_SENSOR, "pipekit_cli_runs_sensor"}
    assert sensors["order_events_sensor"].minimum_interval_seconds == 60
    assert type(defs.executor).__name__ == "ExecutorDefinition" and defs.executor.name == "in_process"


def test_missing_definitions_folder_loads_with_one_visible_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEKIT_DEFS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PIPEKIT_DB", str(tmp_path / "pipekit.db"))
    monkeypatch.chdir(tmp_path)
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = [k.to_user_string() for k in graph.get_all_asset_keys()]
    assert keys == ["pipekit_broken_nowhere"]
    node = graph.get(dg.AssetKey("pipekit_broken_nowhere"))
    assert not node.is_executable
    assert "does not exist" in (node.description or "")
    assert not (tmp_path / "pipekit.db").exists()


def test_broken_file_keeps_the_other_modules_loading(
    blank: PipekitEnv, instance: dg.DagsterInstance, caplog: pytest.LogCaptureFixture
) -> None:
    blank.write("good.yaml", """
        modules:
          - name: customers
            source: erp
            dest: dw
            dest_table: customers
            query: SELECT id, name FROM customers
        """)
    blank.write("sub_bad.yaml", """
        modules:
          - name: broken_one
            source: erp
            dest: dw
            dest_table: x
            strategy: sideways
            query: SELECT 1
        """, connections=False)
    with caplog.at_level("WARNING", logger="pipekit_dagster"):
        defs = build_definitions()
    assert any("sideways" in r.getMessage() or "strategy" in r.getMessage() for r in caplog.records)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"customers", "pipekit_broken_sub_bad", "erp/main/customers"}
    broken = graph.get(dg.AssetKey("pipekit_broken_sub_bad"))
    assert broken.group_name == c.PROBLEMS_GROUP
    assert "broken_one" in (broken.description or "") and "strategy" in (broken.description or "")

    # the check on the broken file fails with the problem text
    check_key = dg.AssetCheckKey(dg.AssetKey("pipekit_broken_sub_bad"), "definition_valid")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection={check_key})
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    evals = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(evals) == 1 and not evals[0].passed
    assert "broken_one" in (evals[0].description or "")

    # and the good module still runs
    ok = defs.resolve_job_def("customers_job").execute_in_process(instance=instance)
    assert ok.success
    assert materializations(ok)["customers"][c.ROW_COUNT] == 200


class PrefixTranslator(PipekitTranslator):
    def get_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(key=spec.key.with_prefix("erp")).merge_attributes(owners=["team:data"])


def test_translator_override_keeps_lineage(demo: PipekitEnv) -> None:
    defs = build_definitions(translator=PrefixTranslator())
    graph = defs.resolve_asset_graph()
    orders = graph.get(dg.AssetKey(["erp", "orders"]))
    assert orders.parent_keys == {dg.AssetKey(["erp", "customers"]), dg.AssetKey(["demo_erp", "main", "orders"])}
    assert orders.owners == ["team:data"]
    assert defs.resolve_job_def("orders_job").asset_layer.executable_asset_keys == {dg.AssetKey(["erp", "orders"])}


def test_group_without_stop_on_failure_has_no_order_deps(blank: PipekitEnv) -> None:
    blank.write("g.yaml", """
modules:
  - {name: a, source: erp, dest: dw, dest_table: a, query: SELECT id FROM customers}
  - {name: b, source: erp, dest: dw, dest_table: b, query: SELECT id FROM customers}
  - {name: c, source: erp, dest: dw, dest_table: c, query: SELECT id FROM customers, deps: [a]}
groups:
  loose: {modules: [a, b, c], stop_on_failure: false}
""")
    graph = build_definitions().resolve_asset_graph()
    assert {k for k in graph.get(dg.AssetKey("b")).parent_keys if not graph.get(k).is_external} == set()
    assert {k for k in graph.get(dg.AssetKey("c")).parent_keys if not graph.get(k).is_external} == {dg.AssetKey("a")}  # real deps stay


def test_the_broken_file_asset_lists_every_problem_of_the_module(blank: PipekitEnv) -> None:
    """A mistyped key, an unknown connection and a bad cron: all three, as `pipekit validate` says them."""
    blank.write("bad.yaml", """
        modules:
          - name: m
            source: nosuch
            dest: dw
            dest_table: m_t
            query: SELECT 1 AS id
            schedual: "0 * * * *"
            schedule: "61 * * * *"
        """)
    validate = subprocess.run([PIPEKIT, "validate"], capture_output=True, text=True, env=blank.env(), timeout=120)
    said = [line for line in (validate.stdout + validate.stderr).splitlines() if "bad.yaml" in line]
    assert validate.returncode == 1 and len(said) >= 3, said
    graph = build_definitions().resolve_asset_graph()
    broken = graph.get(dg.AssetKey("pipekit_broken_bad"))
    text = broken.description or ""
    for problem in ("schedual", "nosuch", "61 * * * *"):
        assert problem in text, (problem, text)
        assert any(problem in line for line in said), (problem, said)
    problems = broken.metadata[c.PROBLEMS].value  # type: ignore[union-attr]
    assert all(p in problems for p in ("schedual", "nosuch", "61 * * * *")), problems
