"""PipekitComponent through the real ``dg`` CLI (subprocesses) on a temp copy of examples/dg_project:
list components, scaffold, check, list defs, launch; two instances in one project; ``{{ env.X }}``
and ``post_processing``; and the webserver path (``dg dev`` + GraphQL launchRun of __ASSET_JOB).

``dg`` in a project folder loads the code location with the interpreter it runs under (the venv
that has pipekit), so no uv and no flag are needed; the project's package is imported from the
project folder (flat layout)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from pipekit_core.demo import make_demo_data
from pipekit_core.repo import Repository
from pipekit_dagster import PipekitComponent
from pipekit_dagster import constants as c
from tests.dagster_graphql import launch_run, run_status
from tests.pipekit_dagster_tests.conftest import REPO, VENV_BIN, dagster_dev

pytestmark = pytest.mark.dagster

EXAMPLE = REPO / "examples" / "dg_project"
PACKAGE = "pipekit_example"
ERP = Path(PACKAGE) / "defs" / "erp_sync"


class Project:
    """A temp copy of the example dg project, its Dagster home and the environment for ``dg``."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
        self.env.update(DAGSTER_HOME=str(home), TERM="dumb", COLUMNS="250", NO_COLOR="1")

    def dg(self, *args: str, ok: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(VENV_BIN / "dg"), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if ok:
            assert proc.returncode == 0, f"dg {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc

    def list_defs(self) -> dict:
        return json.loads(self.dg("list", "defs", "--json").stdout)

    def python(self, code: str) -> object:
        """Run ``code`` with the venv's Python in the project folder (its package importable, as
        dg imports it); ``code`` prints one JSON document, returned parsed."""
        env = {**self.env, "PYTHONPATH": str(self.root)}
        proc = subprocess.run([str(VENV_BIN / "python"), "-W", "ignore", "-c", code], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"python failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def rows(self, db: Path, sql: str) -> list[tuple]:
        con = sqlite3.connect(self.root / db)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    @property
    def erp_dw(self) -> Path:
        return ERP / "module_defs" / "data" / "demo_dw.db"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "dg_project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "*.db", "*.db-*", "__pycache__", ".dagster_home"))
    make_demo_data(root / ERP / "module_defs" / "data")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return Project(root, home)


def _assets(listing: dict) -> dict[str, dict]:
    return {a["asset_key"]: a for a in listing["assets"]}


def _names(listing: dict, section: str) -> set[str]:
    return {item.get("name") or item.get("key") for item in listing.get(section) or []}


def _runs(db: Path) -> list[dict]:
    return Repository(db).history(limit=50)


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


def _second_erp_instance(project: Project, name: str = "crm") -> Path:
    """A copy of erp_sync as defs/<name>_sync, named and key-prefixed ``name``: its module folder
    still defines customers and orders (the modules of erp_sync)."""
    second = project.root / PACKAGE / "defs" / f"{name}_sync"
    shutil.copytree(project.root / ERP, second, ignore=shutil.ignore_patterns("data", "*.db", "*.db-*"))
    make_demo_data(second / "module_defs" / "data")
    yaml_file = second / "defs.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("name: erp\n", f"name: {name}\n")
                         .replace("key_prefix: erp\n", f"key_prefix: {name}\n"))
    return second


REBUILD = """
import json
from pathlib import Path
import dagster as dg
from dagster.components.core.component_tree import ComponentPath, ComponentTree
from pipekit_dagster import PipekitComponent

built = []
build_defs = PipekitComponent.build_defs
PipekitComponent.build_defs = lambda self, context: built.append(context.path.name) or build_defs(self, context)
tree = ComponentTree.for_project(Path.cwd())
tree.build_defs()
# the same instance builds again in the same tree (what a reload with state does) ...
tree.state_tracker.invalidate_loc(ComponentPath.from_path(tree.defs_module_path / "erp_sync", 0))
again = tree.reload_with_state([])
dg.Definitions.validate_loadable(again)
# ... and a second load of the whole code location in the same process
later = dg.load_from_defs_folder(path_within_project=Path.cwd())
print(json.dumps({"built": built, "assets": sorted(k.to_user_string() for k in later.resolve_all_asset_keys())}))
"""


def test_two_instances_defining_one_module_name_are_refused_naming_both(project: Project) -> None:
    """Module names key pipekit's repository (locks, run log, watermarks): two instances of one
    code location that both define 'customers' are refused with a message naming both instances."""
    second = _second_erp_instance(project)
    proc = project.dg("check", "defs", ok=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "pipekit module 'customers' is defined by two PipekitComponent instances" in out, out[-3000:]
    assert str(project.root / ERP / "defs.yaml") in out and str(second / "defs.yaml") in out
    assert "rename the module in one of the two folders" in out and "keys of pipekit's repository" in out
    assert "does not have input" not in out  # not Dagster's graph error any more

    # renamed in one folder: both load, and the same instance building twice in one process is no clash
    mods = second / "module_defs" / "erp.yaml"
    text = mods.read_text()
    for a, b in (("- name: customers\n", "- name: crm_customers\n"), ("- name: orders\n", "- name: crm_orders\n"),
                 ("deps: [customers]", "deps: [crm_customers]"), ("modules: [customers, orders]", "modules: [crm_customers, crm_orders]")):
        assert a in text, a
        text = text.replace(a, b)
    mods.write_text(text)
    project.dg("check", "defs")
    result = project.python(REBUILD)
    assert isinstance(result, dict)
    assert sorted(result["built"]) == ["crm_sync", "crm_sync", "erp_sync", "erp_sync", "erp_sync"]  # erp_sync built 3 times
    assert {"erp/customers", "crm/crm_customers"} <= set(result["assets"])


def test_scaffold_python_format_writes_a_working_component(project: Project) -> None:
    project.dg("scaffold", "defs", "pipekit_dagster.PipekitComponent", "py_sync", "--format", "python")
    target = project.root / PACKAGE / "defs" / "py_sync"
    code = (target / "component.py").read_text()
    assert "@dg.component_instance" in code and "return PipekitComponent(" in code
    assert not (target / "defs.yaml").exists()
    assert (target / "module_defs" / "data" / "example_source.db").exists()
    project.dg("check", "defs")
    listing = project.list_defs()
    assert {"erp/customers", "py_sync_greetings", "py_sync/example_source/main/greetings"} <= set(_assets(listing))
    assert {"py_sync_pipekit_all_job", "py_sync_py_sync_greetings_job"} <= _names(listing, "jobs")
    assert "py_sync_pipekit" in _names(listing, "resources")
    out = project.dg("launch", "--assets", "py_sync_greetings")
    assert "RUN_SUCCESS" in out.stdout + out.stderr
    dw = target / "module_defs" / "data" / "example_dw.db"  # module_defs/ beside component.py
    assert project.rows(dw, "SELECT count(*) FROM greetings") == [(3,)]
    assert ("py_sync_greetings", "success") in {(r["module"], r["status"]) for r in _runs(project.root / "pipekit.db")}


SUBCLASS = """
import dagster as dg
from pipekit_dagster import PipekitComponent


class RawSources(PipekitComponent):
    \"\"\"The source tables as raw/<table>, in group erp_raw.\"\"\"

    def get_source_asset_spec(self, table):
        spec = super().get_source_asset_spec(table)
        return spec.replace_attributes(key=dg.AssetKey(["raw", table.table.parts[-1]]), group_name="erp_raw")
"""


def test_a_subclass_changes_the_source_table_assets(project: Project) -> None:
    (project.root / PACKAGE / "raw_sources.py").write_text(SUBCLASS)
    # dg resolves the type by importing it: the project's package is importable (as when installed)
    project.env["PYTHONPATH"] = str(project.root)
    defs_yaml = project.root / ERP / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text().replace("type: pipekit_dagster.PipekitComponent",
                                                       "type: pipekit_example.raw_sources.RawSources"))
    project.dg("check", "defs")
    assets = _assets(project.list_defs())
    assert assets["raw/customers"]["group_name"] == "erp_raw"
    assert "raw/orders" in assets
    assert "raw/customers" in assets["erp/customers"]["dependency_keys"]  # the module's dep follows the new key
    assert "raw/orders" in assets["erp/orders"]["dependency_keys"]
    # the default keys are gone, and translation: (per module: key_prefix erp) left the source assets alone
    assert not {"erp/erp/main/customers", "erp/raw/customers"} & set(assets)


AUTOMATION = """
import json
from pathlib import Path
import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path.cwd())
job = defs.resolve_job_def("erp_pipekit_all_job")
specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
print(json.dumps({
    "pools": {op.name: op.pool for op in job.graph.iterate_op_defs()},
    "automation": {k: s.automation_condition is not None for k, s in specs.items()},
    "freshness": {k: s.freshness_policy is not None for k, s in specs.items()},
}))
"""


def test_translation_templates_prefixed_pools_and_automation(project: Project) -> None:
    defs_yaml = project.root / ERP / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text().replace(
        "    key_prefix: erp\n", '    key_prefix: erp\n    group_name: "{{ module.source }}_{{ module.strategy }}"\n'))
    mods = project.root / ERP / "module_defs" / "erp.yaml"
    text = mods.read_text()
    anchor, group_schedule = "    deps: [customers]\n", '    schedule: "0 * * * *"\n'
    assert anchor in text and group_schedule in text
    text = text.replace(group_schedule, "")  # automation: and a schedule that runs the module too are refused
    mods.write_text(text.replace(anchor, anchor + "    automation: eager\n    freshness: {fail_after: 2h, warn_after: 1h}\n"))
    project.dg("check", "defs")
    listing = project.list_defs()
    assets = _assets(listing)
    assert assets["erp/customers"]["group_name"] == "erp_full"  # translation: group_name, templated per module
    assert assets["erp/orders"]["group_name"] == "erp_incremental"
    assert "erp_pipekit_automation_sensor" in _names(listing, "sensors")  # the module with automation: gets it

    result = project.python(AUTOMATION)
    assert isinstance(result, dict)
    pools = {name: pool for name, pool in result["pools"].items() if pool}
    assert pools == {"erp_pipekit_stage_erp_pipekit_src_erp": "erp_pipekit_src_erp",
                     "erp_pipekit_merge_erp_pipekit_dest_dw": "erp_pipekit_dest_dw"}
    assert result["automation"]["erp/orders"] and not result["automation"]["erp/customers"]
    assert result["freshness"]["erp/orders"] and not result["freshness"]["erp/customers"]
