"""PipekitComponent through the real ``dg`` CLI (subprocesses) on a temp copy of examples/dg_project:
list components, scaffold, check, list defs, launch; two instances in one project; ``{{ env.X }}``
and ``post_processing``; and the webserver path (``dg dev`` + GraphQL launchRun of __ASSET_JOB).

``dg`` in a project folder loads the code location with the interpreter it runs under (the venv
that has pipekit), so no uv and no flag are needed; the project's package is imported from the
project folder (flat layout)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from pipekit_core.demo import make_demo_data
from pipekit_dagster import PipekitComponent
from pipekit_dagster import constants as c
from tests.dagster_graphql import launch_run, run_status
from tests.pipekit_dagster_tests.conftest import VENV_BIN, dagster_dev
from tests.pipekit_dagster_tests.dg_support import ERP, PACKAGE, Project, _assets, _names, _runs

pytestmark = pytest.mark.dagster

def test_dg_list_components_shows_the_component(project: Project) -> None:
    listing = json.loads(project.dg("list", "components", "--json").stdout)
    keys = {entry["key"] for entry in listing["items"]}
    assert "pipekit_dagster.PipekitComponent" in keys


def test_example_project_checks_lists_and_launches(project: Project) -> None:
    project.dg("check", "defs")
    listing = project.list_defs()
    assets = _assets(listing)
    customers = assets["erp/customers"]  # translation: key_prefix
    assert customers["description"] == "Customer master data, replaced on every run. (full, from erp)"
    assert {"key": "source_system", "value": "erp"} in customers["tags"]
    assert {"team": "data"} in customers["owners"]  # post_processing in defs.yaml
    assert "erp/customers" in assets["erp/orders"]["dependency_keys"]  # deps follow the prefixed key
    assert {"erp_customers_job", "erp_orders_job", "erp_erp_hourly_job", "erp_pipekit_all_job"} <= _names(listing, "jobs")
    assert "erp_pipekit_run_failure_sensor" in _names(listing, "sensors")
    assert "erp_erp_hourly_schedule" in _names(listing, "schedules")

    out = project.dg("launch", "--assets", "erp/customers")
    assert "RUN_SUCCESS" in out.stdout + out.stderr
    assert "SupersessionWarning" not in out.stdout + out.stderr  # no superseded Dagster API on the way
    assert project.rows(project.erp_dw, "SELECT count(*) FROM customers") == [(200,)]
    runs = _runs(project.root / "pipekit.db")  # database: "{{ context.project_root }}/pipekit.db"
    assert [(r["module"], r["status"]) for r in runs] == [("customers", "success")]
    assert runs[0]["dagster_run_id"]
    with dg.DagsterInstance.from_config(str(project.home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["erp", "customers"]))
        assert event is not None and event.run_id == runs[0]["dagster_run_id"]
        assert event.asset_materialization.metadata[c.ROW_COUNT].value == 200


def test_scaffold_a_second_instance_both_load_and_launch(project: Project) -> None:
    project.dg("scaffold", "defs", "pipekit_dagster.PipekitComponent", "my_sync")
    target = project.root / PACKAGE / "defs" / "my_sync"
    assert (target / "defs.yaml").read_text().startswith("type: pipekit_dagster.PipekitComponent")
    assert (target / "module_defs" / "example.yaml").exists()
    assert (target / "module_defs" / "data" / "example_source.db").exists()
    project.dg("check", "defs")

    listing = project.list_defs()
    assets = _assets(listing)
    assert {"erp/customers", "erp/orders", "my_sync_greetings"} <= set(assets)
    jobs = _names(listing, "jobs")
    assert {"erp_pipekit_all_job", "my_sync_pipekit_all_job", "my_sync_my_sync_greetings_job"} <= jobs
    assert {"erp_pipekit_run_failure_sensor", "my_sync_pipekit_run_failure_sensor"} <= _names(listing, "sensors")
    assert {"erp_pipekit", "my_sync_pipekit", "pipekit_run"} <= _names(listing, "resources")

    # one run with an asset of each instance: each op finds its own resource, bound to its own folder
    out = project.dg("launch", "--assets", "erp/customers,my_sync_greetings")
    assert "RUN_SUCCESS" in out.stdout + out.stderr
    greetings = target / "module_defs" / "data" / "example_dw.db"
    assert project.rows(greetings, "SELECT id, message FROM greetings ORDER BY id") == [(1, "hello"), (2, "bonjour"), (3, "hallo")]
    assert project.rows(project.erp_dw, "SELECT count(*) FROM customers") == [(200,)]
    runs = {(r["module"], r["status"]) for r in _runs(project.root / "pipekit.db")}
    assert runs == {("customers", "success"), ("my_sync_greetings", "success")}


def test_env_templating_and_post_processing_take_effect(project: Project, tmp_path: Path) -> None:
    defs_yaml = project.root / ERP / "defs.yaml"
    text = defs_yaml.read_text()
    text = text.replace('database: "{{ context.project_root }}/pipekit.db"', 'database: "{{ env.PK_EXAMPLE_REPO }}"')
    text = text.replace('owners: ["team:data"]', 'owners: ["team:data"]\n        group_name: erp_sync\n'
                        '        tags: {from_post_processing: "yes"}')
    text = text.replace("name: erp\n", "name: \"{{ env.PK_EXAMPLE_NAME }}\"\n")
    defs_yaml.write_text(text)
    repo = tmp_path / "elsewhere" / "repo.db"
    repo.parent.mkdir()
    project.env.update(PK_EXAMPLE_REPO=str(repo), PK_EXAMPLE_NAME="sales")

    listing = project.list_defs()
    customers = _assets(listing)["erp/customers"]
    assert customers["group_name"] == "erp_sync"
    assert {"key": "from_post_processing", "value": "yes"} in customers["tags"]
    assert "sales_customers_job" in _names(listing, "jobs")  # name from {{ env.PK_EXAMPLE_NAME }}
    assert "erp_customers_job" not in _names(listing, "jobs")

    project.dg("launch", "--assets", "erp/customers")
    assert [(r["module"], r["status"]) for r in _runs(repo)] == [("customers", "success")]
    assert not (project.root / "pipekit.db").exists()


def test_a_bad_name_is_refused_naming_the_attribute(project: Project) -> None:
    defs_yaml = project.root / ERP / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text().replace("name: erp\n", "name: 'erp sync'\n"))
    proc = project.dg("check", "defs", ok=False)
    assert proc.returncode != 0
    assert "attribute 'name'" in proc.stdout + proc.stderr


def test_component_in_python_keeps_build_definitions_names() -> None:
    """The default names stay build_definitions' (the classic location); a component prefixes them."""
    naming = c.Naming("erp")
    assert (c.DEFAULT_NAMING.resource_key, c.DEFAULT_NAMING.all_job, c.DEFAULT_NAMING.dest_pool("dw")) == (
        "pipekit", "pipekit_all_job", "pipekit_dest_dw")
    assert (naming.resource_key, naming.all_job, naming.module_job("orders"), naming.dest_pool("dw")) == (
        "erp_pipekit", "erp_pipekit_all_job", "erp_orders_job", "erp_pipekit_dest_dw")
    model = PipekitComponent.get_model_cls()
    assert model is not None and {"defs", "database", "config", "name", "translation"} <= set(model.model_fields)


def _dg_dev(project: Project) -> contextlib.AbstractContextManager[str]:
    """``dg dev`` in the project (webserver + daemon); yields its URL once it answers."""
    argv = [str(VENV_BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", "{port}"]
    return dagster_dev(project.root, project.env, argv=argv, log_name="dg-dev.log", timeout=150)


def test_dg_dev_materializes_a_component_asset_through_the_webserver(project: Project) -> None:
    with _dg_dev(project) as url:
        selector = {
            "repositoryLocationName": PACKAGE,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["erp", "customers"]}],
        }
        deadline = time.monotonic() + 60
        while True:  # the code location may still be loading right after /server_info answers
            try:
                run_id = launch_run(url, selector)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the code location did not accept the launch in 60 s"
                time.sleep(1)
        deadline = time.monotonic() + 180
        status = run_status(url, run_id)
        while status not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline, f"run {run_id} still {status} after 180 s"
            time.sleep(1)
            status = run_status(url, run_id)
        assert status == "SUCCESS", (project.root / "dg-dev.log").read_text()[-3000:]
    assert project.rows(project.erp_dw, "SELECT count(*) FROM customers") == [(200,)]
    runs = _runs(project.root / "pipekit.db")
    assert [(r["module"], r["status"], r["dagster_run_id"]) for r in runs] == [("customers", "success", run_id)]


FAILING = """
modules:
  - name: broken_one
    source: erp
    dest: dw
    dest_table: broken_one
    strategy: full
    query: SELECT id FROM no_such_table
"""


def test_prefixed_run_failure_sensor_reports_only_its_own_modules(blank, instance: dg.DagsterInstance) -> None:
    """Two instances in one location: each run-failure sensor reports the failures of its own modules."""
    from pipekit_dagster import ModuleFailure, build_definitions, build_run_failure_sensor

    blank.write("f.yaml", FAILING)
    mine: list[ModuleFailure] = []
    defs = build_definitions(notify_failures=mine.extend, naming=c.Naming("a"))
    result = defs.resolve_job_def("a_broken_one_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure_event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)

    def evaluate(sensor: dg.SensorDefinition) -> None:
        ctx = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=failure_event, dagster_instance=instance, dagster_run=run
        ).for_run_failure()
        sensor(ctx)

    evaluate(defs.resolve_sensor_def("a_pipekit_run_failure_sensor"))
    assert [f.module for f in mine] == ["broken_one"]
    theirs: list[ModuleFailure] = []
    evaluate(build_run_failure_sensor(theirs.extend, naming=c.Naming("b"), modules={"other"}, jobs={"b_other_job"}))
    assert theirs == []


def test_two_instances_reading_the_same_table_each_key_their_source_assets(project: Project) -> None:
    """A copy of erp_sync as a second instance: both read erp's main.customers. The source assets
    are keyed under each instance's name (dg adds each instance's origin to its specs, so one key
    with two specs would not load; and another folder's 'erp' may be another database)."""
    second = project.root / PACKAGE / "defs" / "erp_copy"
    shutil.copytree(project.root / ERP, second, ignore=shutil.ignore_patterns("data", "*.db", "*.db-*"))
    make_demo_data(second / "module_defs" / "data")
    yaml_file = second / "defs.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("name: erp\n", "name: erp2\n").replace("key_prefix: erp\n", "key_prefix: erp2\n"))
    mods = second / "module_defs" / "erp.yaml"  # module names are one namespace per code location
    text = mods.read_text()
    for a, b in (("- name: customers\n", "- name: customers_2\n"), ("- name: orders\n", "- name: orders_2\n"),
                 ("deps: [customers]", "deps: [customers_2]"), ("modules: [customers, orders]", "modules: [customers_2, orders_2]"),
                 ("dest_table: customers\n", "dest_table: customers2\n"), ("dest_table: orders\n", "dest_table: orders2\n")):
        assert a in text, a
        text = text.replace(a, b)
    mods.write_text(text)
    project.dg("check", "defs")
    assets = set(_assets(project.list_defs()))
    assert {"erp/erp/main/customers", "erp2/erp/main/customers", "erp/customers", "erp2/customers_2"} <= assets
    assert "erp/main/customers" not in assets  # no dep on an unprefixed key left behind
