"""`pipekit new`: a module from a table or a query, written (or appended, keeping the file's comments
and order), validated, with the DDL of its first run; the output is compared with golden YAML."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipekit_core import cli_authoring
from pipekit_core.cli import main
from pipekit_core.config import load_settings
from pipekit_core.defs import load_catalog
from pipekit_core.engine import Engine, run_module
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import pg_exec, pg_rows, run_cli, write_defs

pytestmark = [pytest.mark.postgres]
GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PIPEKIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file (PIPEKIT_UPDATE_GOLDEN=1 rewrites it)"


CONNECTIONS = """\
# Connections of the ERP sync. Keep this comment.
connections:
  src: {{url: "{src}", user: pipekit, password: $PK_TEST_PW}}
  dw:  {{url: "{dw}", user: pipekit, password: $PK_TEST_PW}}   # the warehouse
  lite: {{url: "jdbc:sqlite:{lite}"}}

modules:
  # the first module, written by hand
  - name: hand
    source: src
    dest: dw
    dest_table: public.hand
    query: SELECT 1 AS x
  # - name: parked   (commented out, stays where it is)

groups:
  g: {{modules: [hand]}}   # a group after the modules
"""


@pytest.fixture
def env(tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    pg_exec(pg_db,
            "CREATE SCHEMA sales",
            'CREATE TABLE sales.orders (id bigint PRIMARY KEY, customer varchar(40) NOT NULL, amount numeric(12,2), '
            '"Order Date" date, updated_at timestamptz)',
            "INSERT INTO sales.orders VALUES (1, 'a', 1.50, '2024-05-01', '2024-05-01 10:00+00'), "
            "(2, 'b', 2.25, '2024-05-02', '2024-05-02 10:00+00')",
            "CREATE TABLE sales.nokey (a int, b text)")
    lite = tmp_path / "lite.db"
    con = sqlite3.connect(lite)
    con.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(30), price DECIMAL(10,2));"
                      "INSERT INTO items VALUES (1, 'x', 9.5);")
    con.commit()
    con.close()
    defs = tmp_path / "defs"
    defs.mkdir()
    src, dw = jdbc_url(pg_db), jdbc_url(pg_db2)
    (defs / "erp.yaml").write_text(CONNECTIONS.format(src=src, dw=dw, lite=lite))
    for k, v in {"PIPEKIT_DEFS": str(defs), "PIPEKIT_DB": str(tmp_path / "pipekit.db"),
                 "PIPEKIT_SECRETS": str(tmp_path / "secrets.env"), "PK_TEST_PW": PG_PASSWORD}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return {"src": src, "dw": dw, "lite": str(lite), "defs": str(defs), "pg_db": pg_db, "pg_db2": pg_db2}


def _new(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["new", *args])
    return r.exit_code, r.output


def test_from_a_table_incremental_validates_runs_and_matches_golden(env: dict[str, str]) -> None:
    code, out = _new("orders", "--source", "src", "--table", "sales.orders", "--dest", "dw",
                     "--incremental-by", "updated_at")
    assert code == 0, out
    path = Path(env["defs"]) / "orders.yaml"
    _golden("new_orders.yaml", path.read_text())
    assert f"wrote {path}: module 'orders' (5 columns, strategy incremental); it validates" in out
    assert "note: merge_key from the primary key of sales.orders" in out
    ddl = out.split("-- the first run creates sales.orders on 'dw':\n")[1].split("\n\n")[0]
    assert ddl == (
        'CREATE SCHEMA IF NOT EXISTS "sales";\n'
        'CREATE TABLE "sales"."orders" ("id" bigint NOT NULL, "customer" varchar(40), "amount" numeric(12,2), '
        '"Order Date" date, "updated_at" timestamp with time zone, PRIMARY KEY ("id"));'
    ), ddl

    # what was written runs: the first run uses the default, the second reads only rows above the max
    eng = Engine(settings=load_settings())
    plan = eng.new_run("orders").plan_only()
    assert plan.create_table_sql[-1] == ddl.splitlines()[-1].rstrip(";")
    assert run_module(eng, "orders").rows_inserted == 2
    pg_exec(env["pg_db"], "INSERT INTO sales.orders VALUES (3, 'c', 3, NULL, '2024-05-03 10:00+00')",
            "UPDATE sales.orders SET amount = 9 WHERE id = 1")  # not newer: stays as it was
    res = run_module(Engine(settings=load_settings()), "orders")
    assert (res.rows_staged, res.row_count) == (1, 3)
    assert pg_rows(env["pg_db2"], 'SELECT id, amount, "Order Date" FROM sales.orders ORDER BY id')[0][1] == 1.5


def test_appends_to_an_existing_file_keeping_comments_and_order(env: dict[str, str]) -> None:
    path = Path(env["defs"]) / "erp.yaml"
    before = path.read_text()
    code, out = _new("items", "--source", "lite", "--table", "items", "--dest", "dw", "--file", str(path))
    assert code == 0, out
    after = path.read_text()
    assert f"appended to {path}: module 'items'" in out
    assert after.startswith(before.split("  # - name: parked")[0])  # everything before is untouched
    _golden("new_appended.yaml", after.replace(env["src"], "<SRC>").replace(env["dw"], "<DW>")
            .replace(env["lite"], "<LITE>"))
    cat = load_catalog(Path(env["defs"]))
    assert cat.problems == [] and list(cat.modules) == ["hand", "items"]
    assert cat.groups["g"].modules == ["hand"]
    m = cat.modules["items"]
    assert (m.dest_table, m.strategy, m.merge_key) == ("public.items", "full", ["id"])
    assert [(c.source_name, c.source_type, c.dest_type) for c in m.columns or []] == [
        ("id", "INTEGER", "bigint"), ("name", "VARCHAR(30)", "varchar(30)"), ("price", "DECIMAL(10,2)", "numeric(10,2)")]


def test_from_a_query_json_and_dry_run(env: dict[str, str]) -> None:
    r = CliRunner().invoke(main, ["new", "totals", "--source", "src", "--dest", "lite", "--query",
                                  "SELECT customer, sum(amount) AS total, count(*) AS n FROM sales.orders GROUP BY 1",
                                  "--key", "customer", "--strategy", "incremental", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["written"] is False and not (Path(env["defs"]) / "totals.yaml").exists()
    assert d["definition"]["merge_key"] == ["customer"] and d["definition"]["dest_table"] == "totals"
    assert [(c["source_name"], c["source_type"], c["dest_type"]) for c in d["definition"]["columns"]] == [
        ("customer", "character varying(40)", "TEXT"), ("total", "numeric", "TEXT"), ("n", "bigint", "INTEGER")]
    assert d["ddl"] == ['CREATE TABLE "totals" ("customer" TEXT NOT NULL, "total" TEXT, "n" INTEGER, '
                        'PRIMARY KEY ("customer"))']
    # a query file, incremental by a number: the file wrapped with the watermark condition, unquoted
    (Path(env["defs"]) / "q.sql").write_text("SELECT id, amount FROM sales.orders\n")
    code, out = _new("amounts", "--source", "src", "--dest", "dw", "--query-file", str(Path(env["defs"]) / "q.sql"),
                     "--key", "id", "--incremental-by", "id")
    assert code == 0, out
    m = load_catalog(Path(env["defs"])).modules["amounts"]
    assert m.sql == "SELECT * FROM (\nSELECT id, amount FROM sales.orders\n) q\nWHERE id > {last_id}\n"
    assert (m.watermarks[0].sql, m.watermarks[0].default) == ("SELECT max(id) FROM public.amounts", "0")


def test_refusals_name_what_to_give(env: dict[str, str]) -> None:
    cases = [
        (["hand", "--source", "src", "--table", "sales.orders"], "module 'hand' already exists"),
        (["x", "--source", "src", "--table", "sales.nokey", "--dest", "dw", "--strategy", "incremental"],
         "the source has no primary key; give --key COLS"),
        (["x", "--source", "src", "--table", "sales.orders", "--dest", "dw", "--incremental-by", "nope"],
         "--incremental-by nope: no such column (columns: id, customer, amount, Order Date, updated_at)"),
        (["x", "--source", "src", "--table", "sales.ordrs", "--dest", "dw"], "did you mean 'orders'"),
        (["x", "--source", "src", "--table", "sales.orders"], "give --dest CONNECTION (one of dw, lite)"),
        (["x", "--source", "src", "--query", "SELECT 1 WHERE 1 > {v}", "--dest", "dw"], "the query has {placeholders}"),
        (["Bad-Name", "--source", "src", "--table", "sales.orders", "--dest", "dw"], "module name 'Bad-Name'"),
    ]
    for args, msg in cases:
        code, out = _new(*args)
        assert code != 0 and msg in out, (args, out)
        assert "Traceback" not in out
    # a file whose other modules do not validate is left exactly as it was
    broken = Path(env["defs"]) / "broken.yaml"
    broken.write_text("modules:\n  - name: bad\n    source: src\n    dest: dw\n    dest_table: t\n    query: x\n"
                      "    strategy: incremental\n")
    code, out = _new("y", "--source", "src", "--table", "sales.orders", "--dest", "dw", "--file", str(broken))
    assert code == 1 and "did not validate, so" in out and "merge_key" in out, out
    assert broken.read_text().endswith("strategy: incremental\n") and "name: y" not in broken.read_text()


def test_prompts_on_a_terminal_never_when_piped(env: dict[str, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # piped (a real subprocess, stdin not a terminal): no prompt, a usage error naming the options
    r = run_cli(["new", "x"], tmp_path, {"PIPEKIT_DEFS": env["defs"], "PK_TEST_PW": PG_PASSWORD}, stdin=open(os.devnull))
    assert r.returncode == 2 and "give --source CONNECTION" in r.stderr, r.stderr
    # on a terminal with no options it asks (answers: source, table, name, dest, dest table, incremental, key)
    monkeypatch.setattr(cli_authoring, "_interactive", lambda: True)
    r = CliRunner().invoke(main, ["new", "asked"], input="src\ntable\nsales.orders\ndw\n\n\n\n")
    assert r.exit_code == 0, r.output
    m = load_catalog(Path(env["defs"])).modules["asked"]
    assert (m.source, m.dest, m.dest_table, m.strategy, m.merge_key) == ("src", "dw", "sales.orders", "full", ["id"])


def test_from_a_db2_for_i_table_through_jrunner(env: dict[str, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A DB2 for i source: its QSYS2 catalog is read through jrunner (the stand-in, against the PostgreSQL
    views of test_inspect.py that mimic QSYS2's shape; the connection is pointed at that database)."""
    from pipekit_core.authoring import inspect as insp
    from tests.authoring.test_inspect import QSYS2_MIMIC, STANDIN, _jr_endpoint

    pg_exec(env["pg_db"], *QSYS2_MIMIC)
    path = Path(env["defs"]) / "erp_conn.yaml"
    write_defs(Path(env["defs"]), """
        connections:
          erp: {url: "jdbc:as400://erp.example.com;naming=system", user: reader, password: $PK_TEST_PW}
        """, name="erp_conn.yaml")
    monkeypatch.setenv("PIPEKIT_JRUNNER", STANDIN)

    @contextlib.contextmanager
    def open_mimic(ep: object, settings: Any, log: object = None) -> Iterator[insp.SourceCatalog]:
        yield insp.Db2iCatalog(insp._JrunnerRows(_jr_endpoint(env["pg_db"], "erp"), settings))

    monkeypatch.setattr(insp, "open_catalog", open_mimic)
    code, out = _new("erp_orders", "--source", "erp", "--table", "erplib.orders", "--dest", "dw",
                     "--incremental-by", "changed")
    assert code == 0, out
    _golden("new_erp_orders.yaml", (Path(env["defs"]) / "erp_orders.yaml").read_text())
    assert 'CREATE TABLE "erplib"."orders" ("ordno" numeric(9,0) NOT NULL, "custno" char(10) NOT NULL,' in out
    assert 'PRIMARY KEY ("ordno", "custno"));' in out
    assert path.exists()
