"""PipekitComponent instances through the real `dg`: two instances with one module name, the python
scaffold format, a subclass's source-table assets, templated translation, pools and automation.
(A file of its own so that the suite's two workers share the dg tests.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipekit_core.demo import make_demo_data
from tests.pipekit_dagster_tests.dg_support import ERP, PACKAGE, Project, _assets, _names, _runs

pytestmark = pytest.mark.dagster

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
