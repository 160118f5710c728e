"""`pipekit inspect`: schemas, tables with row estimates, columns with types, nullability, primary
key and the type pipekit would create on each destination.

PostgreSQL and SQLite are real databases read natively. DB2 for i and SQL Server cannot run here:
their catalog queries (the exact SQL of pipekit_core/authoring/inspect.py) go through jrunner's
query mode, run by the jrunner stand-in (tests/jrunner_standin) against **PostgreSQL views that
mimic those catalogs' shape**: a `qsys2` schema with SYSSCHEMAS, SYSTABLES, SYSTABLESTAT,
SYSCOLUMNS, SYSCST and SYSKEYCST holding DB2-style rows (TIMESTMP, VARG, CCSID 65535 ...), and,
for SQL Server, a test database whose own `information_schema` is replaced by views of SQL
Server's INFORMATION_SCHEMA shape and type names, plus `sys.tables` / `sys.schemas` /
`sys.partitions` for the row estimates. What this proves: the queries, the jrunner path and the
reading of their output; not that a real IBM i or SQL Server accepts every detail of the SQL.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipekit_core.authoring.inspect import (
    Db2iCatalog,
    InspectError,
    SQLServerCatalog,
    _JrunnerRows,
    inspect_target,
    primary_key,
)
from pipekit_core.cli import main
from pipekit_core.config import load_settings
from pipekit_core.db import Endpoint
from pipekit_core.models import Connection
from tests.conftest import PG_PASSWORD, REPO, jdbc_url
from tests.helpers import pg_exec, write_defs

pytestmark = [pytest.mark.postgres]
STANDIN = str(REPO / "tests" / "jrunner_standin" / "jrunner")

QSYS2_MIMIC = [
    "CREATE SCHEMA qsys2",
    "CREATE VIEW qsys2.sysschemas (schema_name) AS VALUES ('ERPLIB'), ('QGPL')",
    "CREATE VIEW qsys2.systables (table_schema, table_name, table_type) AS VALUES "
    "('ERPLIB', 'ORDERS', 'P'), ('ERPLIB', 'ORDERS_BY_DAY', 'V'), ('ERPLIB', 'CUSTOMERS', 'T'), ('QGPL', 'X', 'T')",
    "CREATE VIEW qsys2.systablestat (table_schema, table_name, number_rows) AS VALUES "
    "('ERPLIB', 'ORDERS', 120000::bigint), ('ERPLIB', 'CUSTOMERS', 35::bigint)",
    "CREATE VIEW qsys2.syscolumns (table_schema, table_name, column_name, ordinal_position, data_type, length, "
    "numeric_scale, is_nullable, ccsid) AS VALUES "
    "('ERPLIB', 'ORDERS', 'ORDNO', 1, 'DECIMAL', 9, 0, 'N', NULL::int), "
    "('ERPLIB', 'ORDERS', 'CUSTNO', 2, 'CHAR', 10, NULL, 'N', 37), "
    "('ERPLIB', 'ORDERS', 'AMOUNT', 3, 'DECIMAL', 11, 2, 'Y', NULL), "
    "('ERPLIB', 'ORDERS', 'CHANGED', 4, 'TIMESTMP', 26, 6, 'Y', NULL), "
    "('ERPLIB', 'ORDERS', 'NOTE', 5, 'VARG', 200, NULL, 'Y', 1200), "
    "('ERPLIB', 'ORDERS', 'RAWKEY', 6, 'CHAR', 8, NULL, 'Y', 65535), "
    "('ERPLIB', 'ORDERS', 'RATE', 7, 'FLOAT', 4, NULL, 'Y', NULL), "
    "('ERPLIB', 'CUSTOMERS', 'CUSTNO', 1, 'CHAR', 10, NULL, 'N', 37)",
    "CREATE VIEW qsys2.syscst (constraint_schema, constraint_name, constraint_type, table_schema, table_name) AS "
    "VALUES ('ERPLIB', 'ORDERS_PK', 'PRIMARY KEY', 'ERPLIB', 'ORDERS'), ('ERPLIB', 'ORDERS_U', 'UNIQUE', 'ERPLIB', 'ORDERS')",
    "CREATE VIEW qsys2.syskeycst (constraint_schema, constraint_name, column_name, ordinal_position) AS VALUES "
    "('ERPLIB', 'ORDERS_PK', 'CUSTNO', 2), ('ERPLIB', 'ORDERS_PK', 'ORDNO', 1), ('ERPLIB', 'ORDERS_U', 'NOTE', 1)",
]

INFORMATION_SCHEMA_MIMIC = [
    "DROP SCHEMA information_schema CASCADE",  # this test database only: SQL Server's shape takes its place
    "CREATE SCHEMA information_schema",
    "CREATE VIEW information_schema.schemata (catalog_name, schema_name) AS VALUES ('erp', 'dbo'), ('erp', 'sales')",
    "CREATE VIEW information_schema.tables (table_catalog, table_schema, table_name, table_type) AS VALUES "
    "('erp', 'sales', 'Orders', 'BASE TABLE'), ('erp', 'sales', 'OrderTotals', 'VIEW'), ('erp', 'dbo', 'x', 'BASE TABLE')",
    "CREATE VIEW information_schema.columns (table_schema, table_name, column_name, ordinal_position, data_type, "
    "character_maximum_length, numeric_precision, numeric_scale, is_nullable) AS VALUES "
    "('sales', 'Orders', 'OrderID', 1, 'int', NULL::int, 10, 0, 'NO'), "
    "('sales', 'Orders', 'Customer', 2, 'nvarchar', 50, NULL, NULL, 'NO'), "
    "('sales', 'Orders', 'Notes', 3, 'nvarchar', -1, NULL, NULL, 'YES'), "
    "('sales', 'Orders', 'Amount', 4, 'decimal', NULL, 12, 2, 'YES'), "
    "('sales', 'Orders', 'Changed', 5, 'datetime2', NULL, NULL, NULL, 'YES'), "
    "('sales', 'Orders', 'Flag', 6, 'bit', NULL, NULL, NULL, 'YES'), "
    "('sales', 'Orders', 'Guid', 7, 'uniqueidentifier', NULL, NULL, NULL, 'YES')",
    "CREATE VIEW information_schema.table_constraints (constraint_schema, constraint_name, constraint_type, "
    "table_schema, table_name) AS VALUES ('sales', 'PK_Orders', 'PRIMARY KEY', 'sales', 'Orders')",
    "CREATE VIEW information_schema.key_column_usage (constraint_schema, constraint_name, column_name, "
    "ordinal_position) AS VALUES ('sales', 'PK_Orders', 'OrderID', 1)",
    "CREATE SCHEMA sys",
    "CREATE VIEW sys.schemas (schema_id, name) AS VALUES (1, 'dbo'), (5, 'sales')",
    "CREATE VIEW sys.tables (object_id, schema_id, name) AS VALUES (101, 5, 'Orders'), (102, 1, 'x')",
    "CREATE VIEW sys.partitions (object_id, index_id, rows) AS VALUES (101, 1, 700::bigint), (101, 1, 42::bigint), "
    "(101, 2, 742::bigint), (102, 0, 3::bigint)",
]


def _jr_endpoint(pg_db: str, name: str) -> Endpoint:
    return Endpoint(Connection(url=jdbc_url(pg_db), user="pipekit", password=PG_PASSWORD, name=name), "pipekit",
                    PG_PASSWORD)


def _jr_settings(tmp: Path) -> object:
    return load_settings(env={"PIPEKIT_JRUNNER": STANDIN, "PIPEKIT_DEFS": str(tmp)}, cwd=tmp)


def test_db2_for_i_through_jrunner(tmp_path: Path, pg_db: str) -> None:
    pg_exec(pg_db, *QSYS2_MIMIC)
    cat = Db2iCatalog(_JrunnerRows(_jr_endpoint(pg_db, "erp"), _jr_settings(tmp_path)))  # type: ignore[arg-type]
    assert inspect_target(cat, "erp", None).schemas == ["ERPLIB", "QGPL"]
    res = inspect_target(cat, "erp", "erplib")  # unquoted names fold to upper case, as on DB2
    assert res.level == "tables" and res.schema == "ERPLIB"
    assert [(t.name, t.kind, t.rows) for t in res.tables] == [
        ("CUSTOMERS", "table", 35), ("ORDERS", "table", 120000), ("ORDERS_BY_DAY", "view", None)]
    res = inspect_target(cat, "erp", "erplib.orders")
    assert [(c.name, c.type, c.nullable, c.pk) for c in res.columns] == [
        ("ORDNO", "DECIMAL(9,0)", False, 1),
        ("CUSTNO", "CHAR(10)", False, 2),
        ("AMOUNT", "DECIMAL(11,2)", True, None),
        ("CHANGED", "TIMESTAMP", True, None),
        ("NOTE", "VARGRAPHIC(200)", True, None),
        ("RAWKEY", "CHAR(8) FOR BIT DATA", True, None),
        ("RATE", "REAL", True, None),
    ]
    assert primary_key(res.columns) == ["ORDNO", "CUSTNO"]
    assert [c.dest_types["postgresql"] for c in res.columns] == [
        "numeric(9,0)", "char(10)", "numeric(11,2)", "timestamp", "varchar(200)", "bytea", "real"]
    assert [c.dest_types["sqlite"] for c in res.columns] == ["NUMERIC", "TEXT", "NUMERIC", "TEXT", "TEXT", "BLOB", "REAL"]
    with pytest.raises(InspectError, match="no table 'ORDRS' in connection 'erp' schema ERPLIB \\(did you mean 'ORDERS'"):
        inspect_target(cat, "erp", "ERPLIB.ORDRS")
    with pytest.raises(InspectError, match="no schema 'NOPE'"):
        inspect_target(cat, "erp", "nope")


def test_sql_server_through_jrunner(tmp_path: Path, pg_db: str) -> None:
    pg_exec(pg_db, *INFORMATION_SCHEMA_MIMIC)
    cat = SQLServerCatalog(_JrunnerRows(_jr_endpoint(pg_db, "mssql"), _jr_settings(tmp_path)))  # type: ignore[arg-type]
    assert inspect_target(cat, "mssql", None).schemas == ["dbo", "sales"]
    res = inspect_target(cat, "mssql", "sales")
    assert [(t.name, t.kind, t.rows) for t in res.tables] == [("OrderTotals", "view", None), ("Orders", "table", 742)]
    res = inspect_target(cat, "mssql", "sales.orders")  # SQL Server compares names case-insensitively
    assert res.table == "Orders"
    assert [(c.name, c.type, c.nullable, c.pk, c.dest_types["postgresql"]) for c in res.columns] == [
        ("OrderID", "int", False, 1, "integer"),
        ("Customer", "nvarchar(50)", False, None, "varchar(50)"),
        ("Notes", "nvarchar(max)", True, None, "text"),
        ("Amount", "decimal(12,2)", True, None, "numeric(12,2)"),
        ("Changed", "datetime2", True, None, "timestamp"),
        ("Flag", "bit", True, None, "boolean"),
        ("Guid", "uniqueidentifier", True, None, "uuid"),
    ]
    # a login that may not read sys.partitions: the tables still show, the estimates say why they are missing
    pg_exec(pg_db, "DROP SCHEMA sys CASCADE")
    cat = SQLServerCatalog(_JrunnerRows(_jr_endpoint(pg_db, "mssql"), _jr_settings(tmp_path)))  # type: ignore[arg-type]
    res = inspect_target(cat, "mssql", "sales")
    assert [t.rows for t in res.tables] == [None, None]
    assert res.notes and res.notes[0].startswith("row estimates unavailable (sys.partitions could not be read")


def test_postgresql_and_sqlite_natively(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pg_exec(pg_db,
            "CREATE SCHEMA sales",
            'CREATE TABLE sales.orders (region text, id bigint, amount numeric(12,2) NOT NULL, "Note Text" varchar(20), '
            "changed timestamptz, tags int[], PRIMARY KEY (id, region))",
            "INSERT INTO sales.orders SELECT 'eu', g, g, NULL, now(), NULL FROM generate_series(1, 50) g",
            "ANALYZE sales.orders",
            "CREATE VIEW sales.v AS SELECT id FROM sales.orders",
            "CREATE TABLE sales.never_analyzed (x int)")
    lite = tmp_path / "src.db"
    con = sqlite3.connect(lite)
    con.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(30) NOT NULL, price DECIMAL(10,2), "
                      "seen DATETIME); INSERT INTO items VALUES (1, 'a', 1.5, NULL), (2, 'b', 2, NULL);"
                      "CREATE VIEW cheap AS SELECT * FROM items WHERE price < 2;")
    con.commit()
    con.close()
    write_defs(tmp_path / "defs", f"""
        connections:
          pg: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
          lite: {{url: "jdbc:sqlite:{lite}"}}
        """)
    monkeypatch.setenv("PIPEKIT_DEFS", str(tmp_path / "defs"))
    monkeypatch.setenv("PIPEKIT_SECRETS", str(tmp_path / "secrets.env"))
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def inspect(*args: str) -> dict:
        r = CliRunner().invoke(main, ["inspect", *args, "--json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    assert inspect("pg")["schemas"] == ["public", "sales"]
    tables = inspect("pg", "sales")["tables"]
    assert tables == [{"name": "never_analyzed", "kind": "table", "rows": None},
                      {"name": "orders", "kind": "table", "rows": 50}, {"name": "v", "kind": "view", "rows": None}]
    res = inspect("pg", "Sales.Orders")
    assert res["primary_key"] == ["id", "region"]
    assert [(c["name"], c["type"], c["nullable"], c["primary_key"], c["dest_types"]["postgresql"],
             c["dest_types"]["sqlite"]) for c in res["columns"]] == [
        ("region", "text", False, 2, "text", "TEXT"),
        ("id", "bigint", False, 1, "bigint", "INTEGER"),
        ("amount", "numeric(12,2)", False, None, "numeric(12,2)", "NUMERIC"),
        ("Note Text", "character varying(20)", True, None, "varchar(20)", "TEXT"),
        ("changed", "timestamp with time zone", True, None, "timestamp with time zone", "TEXT"),
        ("tags", "integer[]", True, None, "integer[]", "TEXT"),
    ]

    assert inspect("lite")["schemas"] == ["main"]
    res = inspect("lite", "main")
    assert res["tables"] == [{"name": "cheap", "kind": "view", "rows": None}, {"name": "items", "kind": "table", "rows": 2}]
    assert res["notes"] == ["SQLite keeps no row estimates: the counts are exact (count(*))"]
    res = inspect("lite", "items")  # one part that is no schema: a table of main
    assert [(c["name"], c["type"], c["nullable"], c["primary_key"], c["dest_types"]["postgresql"])
            for c in res["columns"]] == [
        ("id", "INTEGER", False, 1, "bigint"), ("name", "VARCHAR(30)", False, None, "varchar(30)"),
        ("price", "DECIMAL(10,2)", True, None, "numeric(10,2)"), ("seen", "DATETIME", True, None, "text")]

    # the table as a person reads it (plain columns when piped), and errors as one line
    r = CliRunner().invoke(main, ["inspect", "pg", "sales.orders"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "connection 'pg' (postgresql, read natively): sales.orders, 6 column(s)"
    assert lines[1].split() == ["column", "type", "null", "pk", "->", "postgresql", "->", "sqlite"]
    assert lines[2].split() == ["region", "text", "no", "2", "text", "TEXT"]
    assert lines[-1] == "next: pipekit new MODULE --source pg --table sales.orders"
    r = CliRunner().invoke(main, ["inspect", "pg", "sales.ordrs"])
    assert r.exit_code == 1 and "error: no table 'ordrs' in connection 'pg' schema sales (did you mean 'orders'?)" in r.output
    r = CliRunner().invoke(main, ["inspect", "nope"])
    assert r.exit_code == 1 and "unknown connection 'nope'" in r.output


def test_jrunner_connection_from_the_cli_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in has no AS/400 driver: the CLI reaches jrunner (query mode) and reports its failure in one
    line, with the password masked; without jrunner it says how to configure it."""
    write_defs(tmp_path / "defs", """
        connections:
          erp: {url: "jdbc:as400://127.0.0.1:1;naming=system", user: reader, password: $ERP_PW}
        """)
    for k, v in {"PIPEKIT_DEFS": str(tmp_path / "defs"), "PIPEKIT_SECRETS": str(tmp_path / "s.env"),
                 "ERP_PW": "Erp-Secret-123", "PIPEKIT_JRUNNER": STANDIN}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["inspect", "erp", "ERPLIB"])
    assert r.exit_code == 1
    assert "jrunner failed" in r.output and "No suitable driver found for jdbc:as400" in r.output, r.output
    assert "Erp-Secret-123" not in r.output and "Traceback" not in r.output
    monkeypatch.setenv("PIPEKIT_JRUNNER", str(tmp_path / "nowhere"))
    r = CliRunner().invoke(main, ["inspect", "erp"])
    assert r.exit_code == 1 and "read through jrunner, which was not found" in r.output, r.output
