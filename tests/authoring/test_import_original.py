"""`pipekit import-original`: an original-shaped pipekit.db becomes YAML that validates and plans.

The original's exact table and column names are not published, so these databases are built
from its documented model (../shared/seeds/pipekit-CLAUDE.md: driver, connection with `$VAR`
passwords, module with `columns_json` and a comma-separated `merge_key`, watermark with resolver
SQL / connection / default, hook with run order and `run_on`, groups with schedules, run_log) in
two spellings: the model's own words, and a variant (plural tables, camelCase and abbreviated
columns, a table and a column of no known meaning) that the importer must map by meaning.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipekit_core.authoring.import_original import import_original, write_import
from pipekit_core.cli import main
from pipekit_core.config import load_settings
from pipekit_core.defs import load_catalog
from pipekit_core.engine import Engine
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import pg_exec

pytestmark = [pytest.mark.postgres]

GOLDEN = Path(__file__).parent / "golden"
LITERAL_PW = "Lit3ral-Secret-99"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PIPEKIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file (PIPEKIT_UPDATE_GOLDEN=1 rewrites it)"


def build_original(path: Path, pg: str) -> None:
    """An original-shaped pipekit.db in the documented model's own words."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE driver (id INTEGER PRIMARY KEY, kind TEXT, jar TEXT, class TEXT, url_template TEXT);
        CREATE TABLE connection (id INTEGER PRIMARY KEY, name TEXT UNIQUE, driver_id INTEGER, jdbc_url TEXT,
                                 username TEXT, password TEXT);
        CREATE TABLE module (id INTEGER PRIMARY KEY, name TEXT UNIQUE, source_connection_id INTEGER,
                             dest_connection_id INTEGER, source_query TEXT, dest_table TEXT, merge_strategy TEXT,
                             merge_key TEXT, enabled INTEGER, running INTEGER DEFAULT 0, columns_json TEXT,
                             created_at TEXT);
        CREATE TABLE watermark (id INTEGER PRIMARY KEY, module_id INTEGER, name TEXT, resolver_sql TEXT,
                                connection_id INTEGER, default_value TEXT);
        CREATE TABLE hook (id INTEGER PRIMARY KEY, module_id INTEGER, sql TEXT, run_order INTEGER, run_on TEXT);
        CREATE TABLE run_log (id INTEGER PRIMARY KEY, module_id INTEGER, status TEXT, started_at TEXT,
                              resolved_sql TEXT, live_log TEXT);
        CREATE TABLE module_group (id INTEGER PRIMARY KEY, name TEXT, stop_on_failure INTEGER);
        CREATE TABLE group_member (group_id INTEGER, module_id INTEGER, position INTEGER);
        CREATE TABLE schedule (id INTEGER PRIMARY KEY, group_id INTEGER, cron TEXT, last_fired_at TEXT);
        """
    )
    con.executemany("INSERT INTO driver VALUES (?,?,?,?,?)", [
        (1, "postgresql", "/usr/share/java/postgresql.jar", "org.postgresql.Driver", "jdbc:postgresql://{host}/{db}"),
        (2, "as400", "/usr/share/java/jt400.jar", "com.ibm.as400.access.AS400JDBCDriver", "jdbc:as400://{host}"),
    ])
    con.executemany("INSERT INTO connection VALUES (?,?,?,?,?,?)", [
        (1, "warehouse", 1, pg, "pipekit", "$PK_TEST_PW"),
        (2, "ERP Prod", 2, "jdbc:as400://erp.example.com;naming=system", "reader", "$ERP_PASSWORD"),
        (3, "pg_src", 1, pg, "pipekit", LITERAL_PW),
    ])
    cols = json.dumps([
        {"source_name": "ID", "source_type": "INTEGER", "dest_name": "id", "dest_type": "bigint"},
        {"source_name": "NAME", "source_type": "VARCHAR(40)", "dest_name": "name", "dest_type": "text"},
    ])
    con.executemany("INSERT INTO module VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [
        (1, "Orders Daily", 3, 1,
         "SELECT id, customer, amount, updated_at, doc #>> '{a}' AS a\nFROM public.src_orders\n"
         "WHERE updated_at > '{since}'", "public.orders", "incremental", "id, customer", 1, 1, None, "2024-01-01"),
        (2, "customers", 2, 1, "SELECT ID, NAME FROM ERPLIB.CUSTOMERS", "public.customers", "full", "", 1, 0, cols,
         "2024-01-02"),
        (3, "old_job", 3, 1, "SELECT 1 AS x", "public.old", "append", None, 0, 0, "[]", "2024-01-03"),
    ])
    con.executemany("INSERT INTO watermark VALUES (?,?,?,?,?,?)", [
        (1, 1, "since", "SELECT max(updated_at) FROM public.orders", 1, "1900-01-01"),
        (2, 1, "unused", "SELECT 1", 1, None),
    ])
    con.executemany("INSERT INTO hook VALUES (?,?,?,?,?)", [
        (1, 1, "ANALYZE public.orders", 2, "success"),
        (2, 1, "DELETE FROM public.orders WHERE amount < 0", 1, "always"),
    ])
    con.execute("INSERT INTO run_log VALUES (1, 1, 'success', '2024-05-01', 'SELECT ...', 'Migrated 5 rows')")
    con.executemany("INSERT INTO module_group VALUES (?,?,?)", [(1, "ERP hourly", 1)])
    con.executemany("INSERT INTO group_member VALUES (?,?,?)", [(1, 1, 2), (1, 2, 1)])
    con.execute("INSERT INTO schedule VALUES (1, 1, '0 * * * *', '2024-05-01 10:00:00')")
    con.commit()
    con.close()


def build_variant(path: Path, pg: str) -> None:
    """The same model spelled differently: plural tables, camelCase, abbreviations, extras."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE connections (conn_id INTEGER PRIMARY KEY, conn_name TEXT, url TEXT, "user" TEXT, pwd TEXT);
        CREATE TABLE modules (id INTEGER PRIMARY KEY, module_name TEXT, srcConnId INTEGER, dstConnId INTEGER,
                              sql TEXT, target_table TEXT, strategy TEXT, key_columns TEXT, isActive INTEGER,
                              columns TEXT, notify_email TEXT);
        CREATE TABLE watermarks (id INTEGER PRIMARY KEY, moduleId INTEGER, placeholder TEXT, query TEXT,
                                 "default" TEXT);
        CREATE TABLE hooks (id INTEGER PRIMARY KEY, module_id INTEGER, hook_sql TEXT, position INTEGER, "when" TEXT);
        CREATE TABLE groups (id INTEGER PRIMARY KEY, name TEXT, cron TEXT);
        CREATE TABLE group_modules (grp_id INTEGER, mod_id INTEGER, sort_order INTEGER);
        CREATE TABLE settings (key TEXT, value TEXT);
        """
    )
    con.execute("INSERT INTO connections VALUES (7, 'dw', ?, 'pipekit', '$PK_TEST_PW')", (pg,))
    con.execute(
        "INSERT INTO modules VALUES (1, 'src_copy', 7, 7, 'SELECT id, amount FROM public.src_orders WHERE id > {lastId}',"
        " 'public.copy', 'incremental', 'id', 1, NULL, 'ops@example.com')"
    )
    con.execute("INSERT INTO watermarks VALUES (1, 1, 'lastId', 'SELECT max(id) FROM public.copy', '0')")
    con.execute("INSERT INTO hooks VALUES (1, 1, 'ANALYZE public.copy', 1, 'success')")
    con.execute("INSERT INTO groups VALUES (1, 'nightly', '30 2 * * *')")
    con.execute("INSERT INTO group_modules VALUES (1, 1, 1)")
    con.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    con.commit()
    con.close()


def _source_table(pg_db: str) -> None:
    pg_exec(pg_db, "CREATE TABLE public.src_orders (id bigint, customer text, amount numeric(12,2), "
                   "updated_at timestamptz, doc jsonb)",
            "INSERT INTO public.src_orders VALUES (1, 'a', 2.5, '2024-05-01 10:00+00', '{\"a\": \"x\"}')")


def _env(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    defs = tmp / "defs"
    defs.mkdir()
    for k, v in {"PIPEKIT_DEFS": str(defs), "PIPEKIT_DB": str(tmp / "pipekit.db"),
                 "PIPEKIT_SECRETS": str(tmp / "secrets.env"), "PK_TEST_PW": PG_PASSWORD,
                 "ERP_PASSWORD": "x", "PG_SRC_PASSWORD": PG_PASSWORD}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp)
    return defs


def test_import_of_the_documented_model_validates_and_plans(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = _env(tmp_path, monkeypatch)
    pg = jdbc_url(pg_db)
    build_original(tmp_path / "pipekit.orig.db", pg)
    _source_table(pg_db)

    r = CliRunner().invoke(main, ["import-original", str(tmp_path / "pipekit.orig.db"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["counts"] == {"connections": 3, "modules": 3, "watermarks": 1, "hooks": 2, "groups": 1}
    assert rep["tables"] == {"connection": "connection", "driver": "driver", "group": "module_group",
                             "group_member": "group_member", "hook": "hook", "module": "module",
                             "run_log": "run_log", "schedule": "schedule", "watermark": "watermark"}
    not_mapped = {f["field"]: f["reason"] for f in rep["not_mapped"]}
    # every column that holds no definition is named, with why
    assert not_mapped["module.running"].startswith("not imported: the run lock")
    assert not_mapped["module.created_at"] == "not imported: bookkeeping"
    assert not_mapped["connection.driver_id"] == "not needed: pipekit reads the database kind from the JDBC URL"
    assert not_mapped["schedule.last_fired_at"].startswith("not imported: scheduler state")
    assert not_mapped["run_log"].startswith("not imported: run history")
    assert not_mapped["driver"].startswith("not imported: the database kind comes from")
    assert "module 'orders_daily' watermark 'unused'" in not_mapped
    assert {"kind": "module", "from": "Orders Daily", "to": "orders_daily"} in rep["renamed"]
    assert {"kind": "connection", "from": "ERP Prod", "to": "erp_prod"} in rep["renamed"]
    assert sorted(rep["secrets_needed"]) == ["ERP_PASSWORD", "PG_SRC_PASSWORD", "PK_TEST_PW"]
    assert rep["problems"] == []

    out = defs / "imported"
    texts = {f: (out / f).read_text() for f in ("connections.yaml", "modules.yaml", "groups.yaml")}
    assert LITERAL_PW not in "".join(texts.values()) + r.output  # a literal password is never copied
    _golden("import_connections.yaml", texts["connections.yaml"].replace(pg, "<PG>"))
    _golden("import_modules.yaml", texts["modules.yaml"])
    _golden("import_groups.yaml", texts["groups.yaml"])

    # pipekit validate's rules, then a plan against the real PostgreSQL database
    cat = load_catalog(defs)
    assert cat.problems == []
    assert list(cat.modules) == ["orders_daily", "customers", "old_job"]
    m = cat.modules["orders_daily"]
    assert m.merge_key == ["id", "customer"] and [h.run_on for h in m.hooks] == ["always", "success"]
    assert "'{{a}}'" in m.sql and "{since}" in m.sql
    assert cat.modules["old_job"].enabled is False
    assert cat.groups["erp_hourly"].modules == ["customers", "orders_daily"]
    assert cat.groups["erp_hourly"].schedule == "0 * * * *"
    plan = Engine(settings=load_settings()).new_run("orders_daily").plan_only()
    assert plan.watermarks["since"].value == "1900-01-01"
    assert "updated_at > '1900-01-01'" in plan.source_sql and "#>> '{a}'" in plan.source_sql
    assert plan.create_table_sql and "PRIMARY KEY" in plan.create_table_sql[-1]

    # a second import into the same folder refuses to overwrite, unless --force
    r = CliRunner().invoke(main, ["import-original", str(tmp_path / "pipekit.orig.db")])
    assert r.exit_code == 1 and "already exist" in r.output and "--force" in r.output
    r = CliRunner().invoke(main, ["import-original", str(tmp_path / "pipekit.orig.db"), "--force"])
    assert r.exit_code == 0, r.output
    assert "OK: the imported definitions validate" in r.output
    assert "fields not mapped" not in r.output and "field(s) not mapped" in r.output


def test_naming_variants_are_mapped_by_meaning(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    defs = _env(tmp_path, monkeypatch)
    build_variant(tmp_path / "orig.db", jdbc_url(pg_db))
    _source_table(pg_db)
    imp = import_original(tmp_path / "orig.db")
    rep = write_import(imp, defs / "imported", defs=defs)
    assert rep.tables["module"] == "modules" and rep.tables["group_member"] == "group_modules"
    not_mapped = dict(rep.unmapped)
    assert not_mapped["modules.notify_email"] == "no field of that meaning"
    assert not_mapped["settings"] == "not recognised as a part of the original's model"
    assert ("watermark", "lastId", "last_id") in rep.renamed
    assert rep.problems == []
    (m,) = imp.modules
    assert m == {
        "name": "src_copy", "source": "dw", "dest": "dw", "dest_table": "public.copy",
        "query": "SELECT id, amount FROM public.src_orders WHERE id > {last_id}\n", "strategy": "incremental",
        "merge_key": ["id"], "watermarks": [{"name": "last_id", "sql": "SELECT max(id) FROM public.copy", "default": "0"}],
        "hooks": [{"sql": "ANALYZE public.copy", "run_on": "success"}],
    }
    assert imp.groups == {"nightly": {"modules": ["src_copy"], "schedule": "30 2 * * *", "stop_on_failure": True}}
    plan = Engine(settings=load_settings()).new_run("src_copy").plan_only()
    assert plan.source_sql.strip().endswith("WHERE id > 0")


def test_not_an_original_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(tmp_path, monkeypatch)
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE t (x)")
    con.close()
    (tmp_path / "junk.db").write_text("not sqlite at all, just text " * 50)
    for f, msg in [("other.db", "no table of modules found (tables: t)"), ("junk.db", "not a SQLite database"),
                   ("missing.db", "does not exist")]:
        r = CliRunner().invoke(main, ["import-original", str(tmp_path / f)])
        assert r.exit_code == 1 and msg in r.output, r.output
        assert "Traceback" not in r.output
