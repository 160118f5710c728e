"""Lineage in Dagster: source tables as external assets, automatic deps on the modules whose
tables a query reads, column lineage and code references, read back from real definitions and a
real materialization."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from pipekit_dagster import (
    PipekitModuleData,
    PipekitResource,
    PipekitRunOptions,
    PipekitTranslator,
    build_definitions,
)
from pipekit_dagster.translator import (
    CODE_REFERENCES,
    COLUMN_LINEAGE,
    LINEAGE_ERROR,
    SOURCES_GROUP,
    PipekitSourceTable,
)
from tests.pipekit_dagster_tests.conftest import PipekitEnv, step_events

pytestmark = pytest.mark.dagster

K = dg.AssetKey

# customer_orders comes first in the file: the automatic deps, not the file order, put it last.
MODULES = """
modules:
  - name: customer_orders
    source: dw
    dest: dw
    dest_table: customer_orders
    query: |
      SELECT o.id, c.name AS customer, o.cents
      FROM orders o JOIN main.customers c ON c.customer_id = o.customer_id

  - name: customers
    source: erp
    dest: dw
    dest_table: customers
    query: SELECT c.id AS customer_id, c.name, c.country FROM customers c

  - name: orders
    source: erp
    dest: dw
    dest_table: orders
    query: |
      SELECT o.id, o.customer_id, o.amount * 100 AS cents
      FROM orders o JOIN customers c ON c.id = o.customer_id
      WHERE o.updated_at > '{since}'
    watermarks:
      - {name: since, sql: SELECT max(id) FROM orders, default: '1900-01-01'}
"""

MORE = """
modules:
  - name: selfish          # reads its own table (and orders): no self-dependency
    source: dw
    dest: dw
    dest_table: selfish
    query: SELECT a.id FROM orders a LEFT JOIN selfish s ON s.id = a.id WHERE s.id IS NULL

  - name: summary          # reads feeder's table, but its group runs feeder after it
    source: dw
    dest: dw
    dest_table: summary
    query: SELECT f.id FROM feeder_t f

  - name: feeder
    source: erp
    dest: dw
    dest_table: feeder_t
    query: SELECT id FROM customers

  - name: odd              # sqlglot cannot read it: still an asset
    source: erp
    dest: dw
    dest_table: odd
    query: SELECT id FROM customers WHERE id IN (

groups:
  ordered:
    modules: [summary, feeder]
"""


def _priority(defs: dg.Definitions, name: str) -> int:
    assets = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and K(name) in a.keys)
    node = next(iter(assets.node_def.node_dict.values()))  # type: ignore[union-attr]
    return int(node.tags["dagster/priority"])


def test_source_tables_are_external_assets_and_module_tables_are_deps(
    blank: PipekitEnv, caplog: pytest.LogCaptureFixture
) -> None:
    yaml_path = blank.write("m.yaml", MODULES)
    blank.write("more.yaml", MORE, connections=False)
    with caplog.at_level(logging.WARNING, logger="pipekit_dagster"):
        defs = build_definitions()
    graph = defs.get_repository_def().asset_graph

    externals = {k for k in graph.get_all_asset_keys() if graph.get(k).is_external}
    assert externals == {K(["erp", "main", "customers"]), K(["erp", "main", "orders"])}
    src = graph.get(K(["erp", "main", "orders"]))
    assert not src.is_materializable and src.group_name == SOURCES_GROUP and src.kinds == {"sqlite"}

    parents = {name: graph.get(K(name)).parent_keys for name in ("customers", "orders", "customer_orders", "selfish", "summary", "feeder", "odd")}
    assert parents["customers"] == {K(["erp", "main", "customers"])}
    assert parents["orders"] == {K(["erp", "main", "orders"]), K(["erp", "main", "customers"])}
    # same connection (dw) as those modules' dest, same table (main is SQLite's schema): the modules
    assert parents["customer_orders"] == {K("orders"), K("customers")}
    assert parents["selfish"] == {K("orders")}  # not itself
    # summary reads feeder_t, but the group runs feeder after summary: that edge would be a cycle
    assert parents["summary"] == set()
    assert parents["feeder"] == {K("summary"), K(["erp", "main", "customers"])}
    assert parents["odd"] == set()
    log = caplog.text
    assert "module 'summary' reads the table of module 'feeder'" in log and "left out" in log
    assert "module 'odd'" in log and "cannot read the query" in log

    # ready steps run in an order that follows the automatic deps too
    assert _priority(defs, "customer_orders") < min(_priority(defs, "orders"), _priority(defs, "customers"))

    odd = graph.get(K("odd"))
    assert "sqlglot (sqlite) cannot read the query" in odd.metadata[LINEAGE_ERROR].value
    assert COLUMN_LINEAGE not in odd.metadata

    co = graph.get(K("customer_orders")).metadata[COLUMN_LINEAGE]
    assert co.deps_by_column == {
        "id": [dg.TableColumnDep(asset_key=K("orders"), column_name="id")],
        "customer": [dg.TableColumnDep(asset_key=K("customers"), column_name="name")],
        "cents": [dg.TableColumnDep(asset_key=K("orders"), column_name="cents")],
    }
    orders = graph.get(K("orders")).metadata[COLUMN_LINEAGE]
    assert orders.deps_by_column == {  # o.amount * 100 is an expression: no lineage for cents
        "id": [dg.TableColumnDep(asset_key=K(["erp", "main", "orders"]), column_name="id")],
        "customer_id": [dg.TableColumnDep(asset_key=K(["erp", "main", "orders"]), column_name="customer_id")],
    }

    refs = graph.get(K("customers")).metadata[CODE_REFERENCES].code_references
    assert len(refs) == 1
    assert refs[0].file_path == str(yaml_path.resolve())
    assert yaml_path.read_text().splitlines()[refs[0].line_number - 1].strip() == "- name: customers"
    assert graph.get(K("customers")).metadata["pipekit/definition_file"] == str(yaml_path)  # kept


def test_query_file_is_a_code_reference(blank: PipekitEnv) -> None:
    (blank.defs / "sql").mkdir()
    (blank.defs / "sql" / "c.sql").write_text("SELECT id, name FROM customers\n")
    path = blank.write("q.yaml", """
modules:
  - {name: c, source: erp, dest: dw, dest_table: c, query_file: sql/c.sql}
""")
    node = build_definitions().resolve_asset_graph().get(K("c"))
    refs = node.metadata[CODE_REFERENCES].code_references
    assert [(r.file_path, r.label) for r in refs] == [
        (str(path.resolve()), "module c"), (str((blank.defs / "sql" / "c.sql").resolve()), "query_file")]
    assert refs[0].line_number == path.read_text().splitlines().index("  - {name: c, source: erp, dest: dw, dest_table: c, query_file: sql/c.sql}") + 1
    assert node.parent_keys == {K(["erp", "main", "customers"])}


class Prefixes(PipekitTranslator):
    """Module keys under wh/, source tables under src/."""

    def get_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(key=spec.key.with_prefix("wh"))

    def get_source_asset_spec(self, table: PipekitSourceTable) -> dg.AssetSpec:
        spec = super().get_source_asset_spec(table)
        return spec.replace_attributes(key=spec.key.with_prefix("src"))


def test_translator_keys_carry_over_to_deps_and_column_lineage(blank: PipekitEnv) -> None:
    blank.write("m.yaml", MODULES)
    graph = build_definitions(translator=Prefixes()).resolve_asset_graph()
    assert graph.get(K(["src", "erp", "main", "orders"])).is_external
    assert graph.get(K(["wh", "orders"])).parent_keys == {K(["src", "erp", "main", "orders"]), K(["src", "erp", "main", "customers"])}
    assert graph.get(K(["wh", "customer_orders"])).parent_keys == {K(["wh", "orders"]), K(["wh", "customers"])}
    lineage = graph.get(K(["wh", "customer_orders"])).metadata[COLUMN_LINEAGE]
    assert lineage.deps_by_column["customer"] == [dg.TableColumnDep(asset_key=K(["wh", "customers"]), column_name="name")]
    assert lineage.deps_by_column["id"] == [dg.TableColumnDep(asset_key=K(["wh", "orders"]), column_name="id")]


def test_materializing_follows_the_automatic_deps(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    blank.write("m.yaml", MODULES)
    defs = build_definitions()
    # customer_orders first in the selection as in the file; the deps put it last
    selected = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.keys & {K("customer_orders"), K("orders"), K("customers")}]
    result = dg.materialize(selected, instance=instance,
                            resources={"pipekit": PipekitResource(), "pipekit_run": PipekitRunOptions()})
    assert result.success
    started = step_events(result, "STEP_START")
    first_reader = started.index("customer_orders.resolve")
    assert started.index("orders.hooks") < first_reader and started.index("customers.hooks") < first_reader
    assert blank.dw_query("SELECT count(*) FROM customer_orders") == blank.dw_query("SELECT count(*) FROM orders")
    event = instance.get_latest_materialization_event(K("customer_orders"))
    assert event is not None and event.asset_materialization.metadata["dagster/row_count"].value == blank.dw_query(
        "SELECT count(*) FROM orders")[0][0]
    # the definitions the run used carry the lineage
    node = defs.get_repository_def().asset_graph.get(K("customer_orders"))
    assert set(node.metadata[COLUMN_LINEAGE].deps_by_column) == {"id", "customer", "cents"}
    assert node.parent_keys == {K("orders"), K("customers")}


def test_two_folders_reading_one_table_share_its_external_asset(blank: PipekitEnv) -> None:
    blank.write("m.yaml", MODULES)
    one, two = build_definitions(), build_definitions()
    # identical external specs merge (two Components over one source system)
    merged = dg.Definitions.merge(
        dg.Definitions(assets=[s for s in one.assets if isinstance(s, dg.AssetSpec)]),
        dg.Definitions(assets=[s for s in two.assets if isinstance(s, dg.AssetSpec)]),
    )
    assert K(["erp", "main", "orders"]) in merged.resolve_asset_graph().get_all_asset_keys()


def test_eager_module_with_external_sources_still_runs_after_its_upstream(
    blank: PipekitEnv, instance: dg.DagsterInstance
) -> None:
    # report reads an ERP table (external, never materialized) and the customers module's table
    blank.write("m.yaml", """
modules:
  - name: customers
    source: erp
    dest: dw
    dest_table: customers
    query: SELECT c.id AS customer_id, c.name FROM customers c
  - name: report
    source: dw
    dest: dw
    dest_table: report
    query: SELECT c.customer_id, c.name FROM customers c WHERE c.customer_id NOT IN (SELECT id FROM main.blocked)
    automation: eager
""")
    blank.dw_execute("CREATE TABLE blocked (id INTEGER)")
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    assert graph.get(K("report")).parent_keys == {K("customers"), K(["dw", "main", "blocked"])}
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.get_num_requested(K("report")) == 0
    assert defs.resolve_job_def("customers_job").execute_in_process(instance=instance).success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(K("report")) == 1  # the never-materialized dw/main/blocked does not block it
