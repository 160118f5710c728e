"""Tests of pipekit_core.defs: loading module_defs/ YAML and reporting every problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipekit_core.defs import Catalog, Problem, load_catalog
from pipekit_core.errors import UnknownModuleError

CONNS = """
connections:
  warehouse:
    url: jdbc:postgresql://127.0.0.1:5432/dw
    user: etl
    password: $DW_PASSWORD
  erp:
    url: jdbc:as400://erp.example.com;naming=system
    user: reader
  demo_src:
    url: jdbc:sqlite:data/demo_source.db
  lake:
    url: jdbc:sqlserver://lake:1433
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def module(name: str = "orders", extra: str = "", query: str = "SELECT 1", **keys: str) -> str:
    """A valid module as YAML (one list item), with keys replaced or added."""
    fields = {"name": name, "source": "erp", "dest": "warehouse", "dest_table": f"public.{name}",
              "query": query, **keys}
    lines = [f"  - {k}: {v}" if i == 0 else f"    {k}: {v}" for i, (k, v) in enumerate(fields.items())]
    body = "\n".join(lines) + "\n"
    return body + (textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n" if extra else "")


def load(tmp_path: Path, modules: str = "", *, extra_files: dict[str, str] | None = None) -> Catalog:
    write(tmp_path, "conns.yaml", CONNS)
    if modules:
        write(tmp_path, "mods.yaml", "modules:\n" + modules)
    for name, text in (extra_files or {}).items():
        write(tmp_path, name, text)
    return load_catalog(tmp_path)


def only(cat: Catalog) -> Problem:
    assert len(cat.problems) == 1, [str(p) for p in cat.problems]
    return cat.problems[0]


def line_of(path: Path, needle: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if needle in text)


# --------------------------------------------------------------------------- good definitions


def test_good_multi_file_definition_loads_in_order(tmp_path: Path) -> None:
    write(tmp_path, "b/conns.yml", CONNS)
    write(tmp_path, "a_erp.yaml", """
        modules:
          - name: orders
            source: erp
            dest: warehouse
            dest_table: public.orders
            query: |
              SELECT id, amount FROM orders WHERE updated_at > '{since}'
            strategy: incremental
            merge_key: "id, line"
            watermarks:
              - {name: since, sql: SELECT max(updated_at) FROM public.orders, default: 1900-01-01}
            hooks:
              - {sql: ANALYZE public.orders, run_on: always}
            deps: [customers]
            schedule: "15 * * * *"
            transport: jrunner
          - name: customers
            source: erp
            dest: warehouse
            dest_table: public.customers
            query: SELECT * FROM customers
        groups:
          erp_hourly:
            modules: [customers, orders]
            schedule: "0 * * * *"
        """)
    write(tmp_path, "c_demo.yaml", """
        modules:
          - name: demo
            source: demo_src
            dest: warehouse
            dest_table: demo
            query: SELECT 1
            enabled: false
            transport: native
        """)
    cat = load_catalog(tmp_path)
    assert cat.problems == []
    assert [p.name for p in cat.files] == ["a_erp.yaml", "conns.yml", "c_demo.yaml"]
    assert list(cat.modules) == ["orders", "customers", "demo"]
    assert [m.name for m in cat.enabled_modules()] == ["orders", "customers"]
    orders = cat.module("orders")
    assert orders.source_file.endswith("a_erp.yaml")
    assert "{since}" in orders.sql and orders.merge_key == ["id", "line"]
    assert orders.watermarks[0].default == "1900-01-01"
    wh = cat.connection("warehouse")
    assert (wh.name, wh.base_dir) == ("warehouse", str(tmp_path / "b"))
    grp = cat.group("erp_hourly")
    assert (grp.name, grp.modules) == ("erp_hourly", ["customers", "orders"])
    assert grp.source_file.endswith("a_erp.yaml")
    assert cat.group_of("orders") == "erp_hourly" and cat.group_of("demo") is None
    assert cat.in_dependency_order(["orders", "demo", "customers"]) == ["demo", "customers", "orders"]
    assert cat.in_dependency_order(["demo", "orders"]) == ["demo", "orders"]
    assert cat.broken_files() == {}


def test_unknown_names_raise_with_close_matches(tmp_path: Path) -> None:
    cat = load(tmp_path, module("orders"))
    with pytest.raises(UnknownModuleError, match="unknown module 'ordres'.*'orders'"):
        cat.module("ordres")
    with pytest.raises(UnknownModuleError, match="unknown group 'nope'"):
        cat.group("nope")
    with pytest.raises(UnknownModuleError, match="'warehouse'"):
        cat.connection("warehose")


def test_unknown_module_error_explains_a_broken_module(tmp_path: Path) -> None:
    cat = load(tmp_path, module("orders", strategy="fast"))
    with pytest.raises(UnknownModuleError, match="(?s)definition has problems.*strategy"):
        cat.module("orders")


def test_query_file_is_read_relative_to_the_yaml_file(tmp_path: Path) -> None:
    write(tmp_path, "erp/sql/orders.sql", "SELECT * FROM orders WHERE ts > '{since}'\n")
    write(tmp_path, "erp/orders.yaml", "modules:\n" + module(
        "orders", query="null", query_file="sql/orders.sql",
        extra="watermarks:\n  - {name: since, sql: SELECT 1}"))
    cat = load(tmp_path)
    assert cat.problems == []
    assert cat.module("orders").sql == "SELECT * FROM orders WHERE ts > '{since}'\n"


def test_one_broken_module_keeps_the_others(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a") + module("b", strategy="sometimes") + module("c"))
    assert list(cat.modules) == ["a", "c"]
    p = only(cat)
    assert p.module == "b" and p.field == "strategy"
    assert list(cat.broken_files()) == [str(tmp_path / "mods.yaml")]


def test_every_file_is_reported(tmp_path: Path) -> None:
    cat = load(tmp_path, extra_files={
        "x.yaml": "modules:\n" + module("x", strategy="bad"),
        "y.yaml": "modules:\n" + module("y", dest="nowhere"),
        "z.yaml": "modules: [\n",
    })
    assert sorted(Path(f).name for f in cat.broken_files()) == ["x.yaml", "y.yaml", "z.yaml"]


def test_missing_defs_folder_is_one_problem(tmp_path: Path) -> None:
    cat = load_catalog(tmp_path / "nope")
    assert "nope" in str(only(cat)) and "does not exist" in str(only(cat))
    assert cat.modules == {}


def test_problem_str_omits_missing_parts() -> None:
    assert str(Problem("d/f.yaml", 12, "orders", "strategy", "bad")) == \
        "d/f.yaml:12: module 'orders': field 'strategy': bad"
    assert str(Problem("d/f.yaml", None, None, None, "bad")) == "d/f.yaml: bad"


# --------------------------------------------------------------------------- YAML and types


def test_invalid_yaml_syntax_reports_the_parser_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "modules:\n  - name: a\n    query: [unclosed\n    source: x\n")
    p = only(load_catalog(tmp_path))
    assert p.file == str(path) and "invalid YAML" in p.message
    assert p.line in (3, 4, 5) and f"bad.yaml:{p.line}:" in str(p)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", CONNS + "modlues: []\n")
    p = only(load_catalog(tmp_path))
    assert "t.yaml" in str(p) and "'modlues'" in str(p) and p.line == line_of(path, "modlues")


@pytest.mark.parametrize("extra, key, loc", [
    ("stratgey: full", "stratgey", None),
    ("watermarks:\n  - {name: x, sql: s, conection: warehouse}", "conection", "watermarks[0]"),
    ("hooks:\n  - sql: s\n    runon: always", "runon", "hooks[0]"),
    ("retries: {max: 3, delai: 30}", "delai", "retries"),
])
def test_unknown_module_keys(tmp_path: Path, extra: str, key: str, loc: str | None) -> None:
    query = "SELECT '{x}'" if "watermarks" in extra else "SELECT 1"
    cat = load(tmp_path, module("a") + module("orders", extra=extra, query=f'"{query}"'))
    p = only(cat)
    assert f"unknown key '{key}'" in str(p) and "mods.yaml" in str(p) and "module 'orders'" in str(p)
    assert p.field == loc and p.line == line_of(tmp_path / "mods.yaml", key)
    assert list(cat.modules) == ["a"]


def test_unknown_keys_in_connections_and_groups(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a"), extra_files={
        "more.yaml": """
            connections:
              other: {url: "jdbc:postgresql://h/db", usr: me}
            groups:
              g:
                modules: [a]
                stop_on_faliure: false
            """})
    msgs = [str(p) for p in cat.problems]
    assert len(msgs) == 2
    assert "more.yaml:2: field 'connections.other': unknown key 'usr'" in msgs[0]
    assert "more.yaml:6: field 'groups.g': unknown key 'stop_on_faliure'" in msgs[1]
    assert "did you mean 'stop_on_failure'" in msgs[1]


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a", extra="strategy: full\nstrategy: append"))
    p = only(cat)
    assert "duplicate key 'strategy'" in str(p) and p.line == 8 and "mods.yaml" in str(p)
    assert cat.modules == {}


@pytest.mark.parametrize("text, needle", [
    ("modules: {a: 1}\n", "field 'modules': must be a list"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("modules:\n  - just a string\n", "field 'modules[0]': a module must be a mapping"),
    ("connections: [a]\n", "field 'connections': must be a mapping"),
    ("groups:\n  g: [a]\n", "field 'groups.g': a group must be a mapping"),
])
def test_wrong_shapes_are_problems(tmp_path: Path, text: str, needle: str) -> None:
    write(tmp_path, "w.yaml", text)
    assert needle in str(only(load_catalog(tmp_path))) and "w.yaml:" in str(only(load_catalog(tmp_path)))


def test_wrong_value_type(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a", enabled='"maybe"'))
    p = only(cat)
    assert p.field == "enabled" and p.line == 7 and "mods.yaml:7" in str(p) and "boolean" in str(p)


def test_missing_required_key_and_bad_name(tmp_path: Path) -> None:
    cat = load(tmp_path, "  - name: Bad-Name\n    source: erp\n    dest: warehouse\n    query: SELECT 1\n")
    msgs = sorted(str(p) for p in cat.problems)
    assert any("mods.yaml:2: module 'Bad-Name': field 'dest_table': required key 'dest_table' is missing" in m
               for m in msgs)
    assert any("field 'name'" in m and "lower-case" in m for m in msgs)


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("keys, extra, field", [
    ({"source": "erpp"}, "", "source"),
    ({"dest": "wharehouse"}, "", "dest"),
    ({"query": "\"SELECT '{s}'\""}, "watermarks:\n  - {name: s, sql: x, connection: nowhere}",
     "watermarks[0].connection"),
    ({}, "hooks:\n  - {sql: ANALYZE, connection: nowhere}", "hooks[0].connection"),
])
def test_unknown_connection_names(tmp_path: Path, keys: dict[str, str], extra: str, field: str) -> None:
    cat = load(tmp_path, module("a", extra=extra, **keys))
    p = only(cat)
    assert p.field == field and "unknown connection" in str(p) and "mods.yaml" in str(p)
    bad = keys.get("source") or keys.get("dest") or "nowhere"
    assert f"'{bad}'" in str(p) and p.line == line_of(tmp_path / "mods.yaml", bad)
    assert cat.modules == {}


def test_unknown_connection_suggests_close_match(tmp_path: Path) -> None:
    assert "did you mean 'warehouse'" in str(only(load(tmp_path, module("a", dest="wharehouse"))))


def test_module_using_a_broken_connection_points_at_it(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a", dest="other"), extra_files={
        "z.yaml": "connections:\n  other:\n    url: 'jdbc:postgresql://h/db'\n    pasword: x\n"})
    msgs = [str(p) for p in cat.problems]
    assert len(msgs) == 2 and "unknown key 'pasword'" in msgs[1]
    assert "field 'dest': connection 'other' has problems" in msgs[0] and "z.yaml:2" in msgs[0]


def test_duplicate_module_names_across_files_report_both(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a") + module("orders"),
               extra_files={"other.yaml": "modules:\n" + module("orders")})
    assert len(cat.problems) == 2
    for p in cat.problems:
        assert "'orders'" in str(p) and "mods.yaml:" in str(p) and "other.yaml:" in str(p)
    assert {Path(p.file).name for p in cat.problems} == {"mods.yaml", "other.yaml"}
    assert list(cat.modules) == ["a"]


def test_duplicate_connection_names_across_files(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a"), extra_files={
        "z.yaml": "connections:\n  warehouse: {url: 'jdbc:postgresql://other/db'}\n"})
    assert len(cat.problems) == 2
    assert {Path(p.file).name for p in cat.problems} == {"conns.yaml", "z.yaml"}
    assert all("connection 'warehouse'" in str(p) for p in cat.problems)
    assert cat.connection("warehouse").url.endswith("5432/dw")  # the first one stays
    assert list(cat.modules) == ["a"]


# --------------------------------------------------------------------------- module rules


def test_bad_strategy(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("orders", strategy="incrmental")))
    assert str(p).startswith(f"{tmp_path / 'mods.yaml'}:7: module 'orders': field 'strategy': Input should be")
    assert "'incrmental'" in str(p)


def test_incremental_without_merge_key(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("orders", strategy="incremental")))
    assert p.field == "merge_key" and "incremental" in p.message and "mods.yaml:2" in str(p)


def test_merge_key_must_use_destination_column_names(tmp_path: Path) -> None:
    cols = "columns:\n  - {source_name: ID, dest_name: id}\n  - {source_name: amt}"
    p = only(load(tmp_path, module("orders", strategy="incremental", merge_key="ID", extra=cols)))
    assert p.field == "merge_key" and "'ID'" in str(p) and "'id'" in str(p) and "mods.yaml:8:" in str(p)


def test_placeholder_without_watermark_names_the_line(tmp_path: Path) -> None:
    q = "|\n      SELECT *\n      FROM t\n      WHERE ts > '{since}'"
    cat = load(tmp_path, module("orders", query=q))
    p = only(cat)
    assert "{since}" in str(p) and p.field == "query" and "mods.yaml:9:" in str(p)


def test_watermark_never_used(tmp_path: Path) -> None:
    extra = "watermarks:\n  - name: since\n    sql: SELECT 1"
    p = only(load(tmp_path, module("orders", extra=extra)))
    assert p.field == "watermarks[0].name" and "'since'" in str(p) and "never used" in str(p)
    assert p.line == line_of(tmp_path / "mods.yaml", "name: since")


def test_placeholders_checked_against_query_file(tmp_path: Path) -> None:
    write(tmp_path, "q.sql", "SELECT '{until}'")
    extra = "watermarks:\n  - {name: since, sql: SELECT 1}"
    cat = load(tmp_path, module("orders", query="null", query_file="q.sql", extra=extra))
    assert sorted(p.field or "" for p in cat.problems) == ["query_file", "watermarks[0].name"]
    assert any("{until}" in str(p) and "mods.yaml:7:" in str(p) for p in cat.problems)


def test_watermark_name_must_be_a_placeholder_name(tmp_path: Path) -> None:
    extra = "watermarks:\n  - {name: 'my-since', sql: SELECT 1}"
    cat = load(tmp_path, module("orders", query="\"SELECT '{my-since}'\"", extra=extra))
    assert any("'my-since'" in str(p) and p.field == "watermarks[0].name" and "mods.yaml:8:" in str(p)
               for p in cat.problems)


@pytest.mark.parametrize("keys", [{"query_file": "q.sql"}, {"query": "null"}])
def test_query_and_query_file_both_or_neither(tmp_path: Path, keys: dict[str, str]) -> None:
    write(tmp_path, "q.sql", "SELECT 1")
    p = only(load(tmp_path, module("orders", **keys)))
    assert "query / query_file" in str(p) and "module 'orders'" in str(p) and "mods.yaml:6" in str(p)


def test_missing_query_file(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("orders", query="null", query_file="sql/nope.sql")))
    assert p.field == "query_file" and "sql/nope.sql" in str(p) and "mods.yaml:7" in str(p)


def test_bad_cron_in_module_schedule(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("orders", schedule='"61 * * * *"')))
    assert p.field == "schedule" and "61 * * * *" in str(p) and "mods.yaml:7" in str(p)


def test_bad_cron_in_group_schedule(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a"), extra_files={"g.yaml": "groups:\n  g:\n    modules: [a]\n    schedule: every hour\n"})
    p = only(cat)
    assert p.field == "groups.g.schedule" and "'every hour'" in str(p) and "g.yaml:4" in str(p)
    assert cat.groups == {} and cat.group_of("a") is None


def test_unknown_dep(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("a") + module("b", deps="[a, customrs]")))
    assert p.field == "deps[1]" and "'customrs'" in str(p) and "mods.yaml:12" in str(p)


def test_deps_cycle_names_the_cycle(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a", deps="[c]") + module("b", deps="[a]") + module("c", deps="[b]")
               + module("d", deps="[a]"))
    assert len(cat.problems) == 3
    assert all("a -> c -> b -> a" in str(p) and "mods.yaml" in str(p) for p in cat.problems)
    assert {p.module for p in cat.problems} == {"a", "b", "c"}
    assert list(cat.modules) == ["d"]


def test_self_dep_is_a_cycle(tmp_path: Path) -> None:
    assert "a -> a" in str(only(load(tmp_path, module("a", deps="[a]"))))


# --------------------------------------------------------------------------- transports


def test_jrunner_needs_a_native_destination(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("a", dest="lake", transport="jrunner")))
    assert "destination-side SQL needs a native driver" in str(p) and "'lake'" in str(p)
    assert p.field == "dest" and "mods.yaml:4" in str(p)


def test_jrunner_with_sqlite_source(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("a", source="demo_src", transport="jrunner")))
    assert "jrunner has no SQLite driver" in str(p) and "'demo_src'" in str(p)
    assert p.field == "transport" and "mods.yaml:7" in str(p)


def test_native_transport_with_a_non_native_source(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("a", source="erp", transport="native")))
    assert "no native driver for kind as400" in str(p) and "use transport jrunner" in str(p)
    assert p.field == "transport" and "'erp'" in str(p) and "mods.yaml:7:" in str(p)


def test_bad_transport_name(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("a", transport="ftp")))
    assert "mods.yaml:7: module 'a': field 'transport'" in str(p) and "'ftp'" in str(p)


# --------------------------------------------------------------------------- groups


def test_module_in_two_groups(tmp_path: Path) -> None:
    groups = "groups:\n  g1:\n    modules: [a, b]\n  g2:\n    modules: [b]\n"
    cat = load(tmp_path, module("a") + module("b"), extra_files={"g.yaml": groups})
    assert len(cat.problems) == 2
    second = next(p for p in cat.problems if p.field == "groups.g2.modules[0]")
    assert "'b'" in str(second) and "'g1'" in str(second) and "g.yaml:5" in str(second)
    assert list(cat.groups) == ["g1"] and cat.group_of("b") == "g1"


def test_group_naming_an_unknown_module(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a"), extra_files={"g.yaml": "groups:\n  g:\n    modules:\n      - a\n      - ordrs\n"})
    p = only(cat)
    assert p.field == "groups.g.modules[1]" and "'ordrs'" in str(p) and "g.yaml:5" in str(p)
    assert cat.groups == {} and list(cat.modules) == ["a"]


def test_group_keeps_going_without_a_broken_member(tmp_path: Path) -> None:
    cat = load(tmp_path, module("a") + module("b", strategy="bad"),
               extra_files={"g.yaml": "groups:\n  g:\n    modules: [a, b]\n"})
    assert [p.module for p in cat.problems] == ["b"]
    assert cat.group("g").modules == ["a"]


def test_group_name_clashing_with_a_module(tmp_path: Path) -> None:
    p = only(load(tmp_path, module("a"), extra_files={"g.yaml": "groups:\n  a:\n    modules: [a]\n"}))
    assert "group 'a'" in str(p) and "g.yaml:2" in str(p)


def test_a_schema_error_does_not_hide_the_modules_other_problems(tmp_path: Path) -> None:
    """A mistyped key, an unknown connection and a bad cron in one module: all three reported."""
    cat = load(tmp_path, module("orders", dest="nosuch", strategyy="full", schedule="'61 * * * *'")
               + "  - name: bad\n    dest: warehouse\n    dest_table: x\n    query: SELECT 1\n")
    got = [(p.module, p.field, p.message.split(" (")[0]) for p in cat.problems]
    assert ("orders", "dest", "unknown connection 'nosuch'") in got, got
    assert any(m == "orders" and "strategyy" in msg for m, _, msg in got), got
    assert any(m == "orders" and f == "schedule" for m, f, _ in got), got
    assert any(m == "bad" and f == "source" for m, f, _ in got), got
    assert list(cat.modules) == []
    # where a required key is missing the later checks cannot run: its problem says they were skipped
    assert any(m == "bad" and "other checks were skipped" in p.message for p in cat.problems for m in [p.module])
