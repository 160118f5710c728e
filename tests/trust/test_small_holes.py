"""Issue 10 §5: smaller holes with the same shape, on real PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipekit_core.engine import run_module
from pipekit_core.sql.dialects import get_dialect
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import engine_for, pg_exec, pg_rows, run_cli, sqlite_exec, sqlite_rows, write_defs

LONG_A = "orders_from_the_enterprise_resource_planning_system_of_the_north_region"
LONG_B = "orders_from_the_enterprise_resource_planning_system_of_the_north_regiox"


# -- staging names ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["postgresql", "sqlite", "sqlserver", "db2"])
def test_staging_names_are_unique_and_within_the_limit(kind: str) -> None:
    d = get_dialect(kind)
    long_1 = "m" * 300 + "_one"
    long_2 = "m" * 300 + "_two"
    names = {d.staging_table(n, "pipekit_staging").name for n in (LONG_A, LONG_B, long_1, long_2, "short")}
    assert len(names) == 5
    assert all(len(n.encode()) <= d.max_identifier for n in names)
    assert d.staging_table("short", "pipekit_staging").name.endswith("short")


def test_postgres_staging_names_of_long_modules_differ() -> None:
    d = get_dialect("postgresql")
    a, b = (d.staging_table(n, "s").name for n in (LONG_A, LONG_B))
    assert a != b and len(a.encode()) <= 63 and len(b.encode()) <= 63
    assert a[:54] == LONG_A[:54]
    # multi-byte names are cut on a character boundary
    u = d.staging_table("ü" * 40, "s").name
    assert len(u.encode()) <= 63 and u.startswith("ü")


@pytest.mark.postgres
def test_two_long_module_names_keep_their_own_rows_on_postgres(
    tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LONG_A[:63] == LONG_B[:63]  # PostgreSQL would truncate both to the same name
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    pg_exec(pg_db, "CREATE TABLE a (id integer, v text)", "INSERT INTO a VALUES (1, 'a1'), (2, 'a2')",
            "CREATE TABLE b (id integer, v text)", "INSERT INTO b VALUES (10, 'b10')")
    write_defs(tmp_path / "defs", f"""
connections:
  pg: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
  pg2: {{url: "{jdbc_url(pg_db2)}", user: pipekit, password: $PK_TEST_PW}}
modules:
  - {{name: {LONG_A}, source: pg, dest: pg2, dest_table: out_a, query: "SELECT id, v FROM a"}}
  - {{name: {LONG_B}, source: pg, dest: pg2, dest_table: out_b, query: "SELECT id, v FROM b"}}
""")
    eng = engine_for(tmp_path, monkeypatch)
    for _ in range(2):
        run_module(eng, LONG_A)
        run_module(eng, LONG_B)
    assert pg_rows(pg_db2, "SELECT id, v FROM out_a ORDER BY id") == [(1, "a1"), (2, "a2")]
    assert pg_rows(pg_db2, "SELECT id, v FROM out_b ORDER BY id") == [(10, "b10")]


def test_sqlite_staging_name_is_prefixed_and_bounded() -> None:
    d = get_dialect("sqlite")
    assert d.staging_table("orders", "ignored").name == "pipekit_staging__orders"
    assert len(d.staging_table("x" * 500, "ignored").name) <= d.max_identifier


# -- --group skips disabled modules -------------------------------------------------------------

def test_group_run_skips_a_disabled_module_and_says_so(tmp_path: Path) -> None:
    src, dst = tmp_path / "s.db", tmp_path / "d.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)")
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "jdbc:sqlite:{dst}"}}
modules:
  - {{name: on_mod, source: s, dest: d, dest_table: on_t, query: "SELECT id FROM t"}}
  - {{name: off_mod, source: s, dest: d, dest_table: off_t, query: "SELECT id FROM t", enabled: false}}
groups:
  g:
    modules: [on_mod, off_mod]
""")
    r = run_cli(["run", "--group", "g"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "off_mod: skipped" in r.stdout and "enabled: false" in r.stdout
    assert sqlite_rows(dst, "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%_t'") == [("on_t",)]


# -- SQLite names compare case-insensitively ----------------------------------------------------

def test_sqlite_destination_table_matches_case_insensitively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "s.db", tmp_path / "d.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER, v TEXT)", "INSERT INTO t VALUES (1, 'x'), (2, 'y')")
    sqlite_exec(dst, 'CREATE TABLE "Orders" (id INTEGER, v TEXT)', "INSERT INTO \"Orders\" VALUES (9, 'old')")
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "jdbc:sqlite:{dst}"}}
modules:
  - {{name: m, source: s, dest: d, dest_table: orders, query: "SELECT id, v FROM t"}}
""")
    plan = run_cli(["plan", "m"], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "does not exist" not in plan.stdout
    res = run_module(engine_for(tmp_path, monkeypatch), "m")
    assert res.row_count == 2
    assert sqlite_rows(dst, 'SELECT id, v FROM "Orders" ORDER BY id') == [(1, "x"), (2, "y")]


# -- plan on bad SQL shows the database's message -----------------------------------------------

@pytest.mark.postgres
def test_plan_on_bad_sql_shows_the_database_message(tmp_path: Path, pg_db: str) -> None:
    src = tmp_path / "s.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER)")
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "jdbc:sqlite:{tmp_path / 'd.db'}"}}
  pg: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
modules:
  - {{name: lite_bad, source: s, dest: d, dest_table: o, query: "SELECT id FORM t"}}
  - {{name: pg_bad, source: pg, dest: d, dest_table: o2, query: "SELECT 1 FORM t"}}
""")
    lite = run_cli(["plan", "lite_bad"], tmp_path)
    pg = run_cli(["plan", "pg_bad"], tmp_path, {"PK_TEST_PW": PG_PASSWORD})
    for r, name, db_msg in ((lite, "lite_bad", 'near "t": syntax error'), (pg, "pg_bad", 'syntax error at or near "t"')):
        assert r.returncode != 0
        assert "unexpected" not in r.stderr
        assert name in r.stderr and db_msg in r.stderr, r.stderr


# -- a locked SQLite destination names the file, the wait and what to do -----------------------

def test_locked_sqlite_destination_says_which_file_and_what_to_do(tmp_path: Path) -> None:
    import sqlite3

    src, dst = tmp_path / "s.db", tmp_path / "d.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)")
    sqlite_exec(dst, "CREATE TABLE other (x INTEGER)")
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "jdbc:sqlite:{dst}"}}
modules:
  - {{name: m, source: s, dest: d, dest_table: out, query: "SELECT id FROM t"}}
""")
    holder = sqlite3.connect(dst, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a long writer
    try:
        r = run_cli(["run", "m"], tmp_path, {"PIPEKIT_SQLITE_BUSY_TIMEOUT": "0.5"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert str(dst) in out and "locked by another connection for 0.5 s" in out, out
    assert "retry" in out
    assert sqlite_rows(dst, "PRAGMA journal_mode") == [("delete",)]


# -- literal braces and unquoted placeholders ---------------------------------------------------

def test_doubled_braces_are_literal_and_placeholders_substitute() -> None:
    from pipekit_core.watermarks import placeholders, substitute

    sql = "SELECT doc #>> '{{a}}', '{{1,2}}'::int[] FROM t WHERE ts > '{since}' AND id > {n}"
    assert [(t.name, t.quoted) for t in placeholders(sql)] == [("since", True), ("n", False)]
    assert substitute(sql, {"since": "2020-01-02 03:04:05", "n": "-12.5e3"}) == (
        "SELECT doc #>> '{a}', '{1,2}'::int[] FROM t WHERE ts > '2020-01-02 03:04:05' AND id > -12.5e3")


@pytest.mark.parametrize("value", ["0 OR true", "1; DROP TABLE t", "abc", "1)", "2020-01-01 OR 1=1"])
def test_unquoted_placeholder_takes_only_a_literal(value: str) -> None:
    from pipekit_core.errors import WatermarkError
    from pipekit_core.watermarks import substitute

    with pytest.raises(WatermarkError, match=r"module 'm'.*watermark 'n'.*not inside quotes.*'\{n\}'"):
        substitute("SELECT * FROM t WHERE id > {n}", {"n": value}, "m")
    assert substitute("SELECT * FROM t WHERE v > '{n}'", {"n": "abc"}, "m") == "SELECT * FROM t WHERE v > 'abc'"


def test_sqlite_query_with_literal_braces_runs_and_lone_brace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "s.db", tmp_path / "d.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER)", "INSERT INTO t VALUES (1)")
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "jdbc:sqlite:{dst}"}}
modules:
  - {{name: m, source: s, dest: d, dest_table: out, query: "SELECT id, '{{{{a}}}}' AS j FROM t"}}
""")
    run_module(engine_for(tmp_path, monkeypatch), "m")
    assert sqlite_rows(dst, "SELECT id, j FROM out") == [(1, "{a}")]
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "jdbc:sqlite:{dst}"}}
modules:
  - {{name: m, source: s, dest: d, dest_table: out, query: "SELECT id, '{{1,2}}' AS j FROM t"}}
""")
    r = run_cli(["validate"], tmp_path)
    assert r.returncode == 1
    assert "lone '{'" in r.stdout + r.stderr and "'{{'" in r.stdout + r.stderr
