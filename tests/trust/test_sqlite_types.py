"""§3: a native SQLite source's declared column types come first; sampling only for expressions;
a value the chosen destination type cannot hold exactly fails the run naming module, column,
row and the `columns: dest_type` to declare — never silent precision loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipekit_core.engine import run_module
from pipekit_core.errors import PipekitError
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import engine_for, pg_rows, sqlite_exec, sqlite_rows, write_defs

pytestmark = [pytest.mark.postgres]

BIG = 9007199254740993  # 2**53 + 1: no exact 64-bit float


def _source(tmp: Path) -> Path:
    src = tmp / "s.db"
    sqlite_exec(
        src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, amount DECIMAL(15,2), code CHAR(10), day DATE, label VARCHAR(20))",
        "INSERT INTO t VALUES (1, '-272.60', 'AB', '2024-02-03', 'x')",
        "INSERT INTO t VALUES (2, 10, 'CDEFGHIJKL', '1999-12-31', NULL)",
    )
    return src


def _defs(tmp: Path, src: Path, dest_url: str, query: str, extra: str = "") -> None:
    write_defs(tmp / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{src}"}}
  d: {{url: "{dest_url}", user: pipekit, password: $PK_TEST_PW}}
modules:
  - name: m
    source: s
    dest: d
    dest_table: out
    query: "{query}"
{extra}""")


def test_declared_types_sqlite_to_pg(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(tmp_path, src, jdbc_url(pg_db), "SELECT id, amount, code, day, label, amount * 2 AS twice FROM t")
    assert run_module(engine_for(tmp_path, monkeypatch), "m").row_count == 2
    types = pg_rows(pg_db, "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
                    "JOIN pg_attribute a ON a.attrelid = 'out'::regclass AND a.attname = c.column_name "
                    "WHERE table_name = 'out' ORDER BY ordinal_position")
    assert types == [("id", "bigint"), ("amount", "numeric(15,2)"), ("code", "character(10)"), ("day", "date"),
                     ("label", "character varying(20)"), ("twice", "numeric")]  # sampled: -545.2 and 20
    assert pg_rows(pg_db, "SELECT amount::text, code, day::text FROM out ORDER BY id") == [
        ("-272.60", "AB        ", "2024-02-03"), ("10.00", "CDEFGHIJKL", "1999-12-31")]


def test_declared_types_sqlite_to_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    dest = tmp_path / "d.db"
    _defs(tmp_path, src, f"jdbc:sqlite:{dest}", "SELECT id, amount, code, day FROM t -- the lot;")
    assert run_module(engine_for(tmp_path, monkeypatch), "m").row_count == 2
    ddl = sqlite_rows(dest, "SELECT sql FROM sqlite_master WHERE name = 'out'")[0][0]
    assert '"amount" DECIMAL(15,2)' in ddl and '"code" CHAR(10)' in ddl and '"day" DATE' in ddl
    assert sqlite_rows(dest, "SELECT * FROM out ORDER BY id") == sqlite_rows(src, "SELECT id, amount, code, day FROM t ORDER BY id")


def _mixed(tmp: Path) -> Path:
    src = tmp / "s.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER, v)", "INSERT INTO t VALUES (1, 1.5)", f"INSERT INTO t VALUES (2, {BIG})")
    return src


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_mixed_int_real_column_arrives_exactly(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch, dest_kind: str
) -> None:
    """No declared type, integers and reals: NUMERIC (a REAL would turn 2**53 + 1 into 2**53)."""
    src = _mixed(tmp_path)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    dest = tmp_path / "d.db"
    dest_url = jdbc_url(pg_db) if dest_kind == "postgresql" else f"jdbc:sqlite:{dest}"
    _defs(tmp_path, src, dest_url, "SELECT id, v FROM t;  ")
    assert run_module(engine_for(tmp_path, monkeypatch), "m").row_count == 2
    if dest_kind == "postgresql":
        assert pg_rows(pg_db, "SELECT v::text, pg_typeof(v)::text FROM out ORDER BY id") == [
            ("1.5", "numeric"), (str(BIG), "numeric")]
    else:
        assert sqlite_rows(dest, "SELECT v, typeof(v) FROM out ORDER BY id") == [(1.5, "real"), (BIG, "integer")]


@pytest.mark.parametrize(("dest_type", "bad", "hint"), [
    ("double precision", str(BIG), "numeric"),  # an int beyond 2**53 into a double
    ("bigint", "1.5", "double precision"),  # a real with a fraction into an integer
    ("real", "1.5", None),  # fits a real exactly: no failure
])
def test_declared_type_that_cannot_hold_a_value_fails(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch, dest_type: str, bad: str, hint: str | None
) -> None:
    src = _mixed(tmp_path)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(tmp_path, src, jdbc_url(pg_db), "SELECT id, v FROM t",
          f"    columns: [{{source_name: v, dest_type: {dest_type}}}]\n")
    if dest_type == "real":
        sqlite_exec(src, "DELETE FROM t WHERE id = 2")
        assert run_module(engine_for(tmp_path, monkeypatch), "m").row_count == 1
        assert pg_rows(pg_db, "SELECT v FROM out") == [(1.5,)]
        return
    with pytest.raises(PipekitError) as ei:
        run_module(engine_for(tmp_path, monkeypatch), "m")
    msg = str(ei.value)
    row = "row 2" if bad == str(BIG) else "row 1"
    assert "module 'm'" in msg and "column 'v'" in msg and row in msg and bad in msg
    assert f"{{source_name: v, dest_type: {hint}}}" in msg
    assert pg_rows(pg_db, "SELECT to_regclass('public.out') IS NULL") == [(True,)]


def test_value_beyond_declared_scale_fails(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL would round 1.239 into numeric(15,2) silently: the run fails instead."""
    src = tmp_path / "s.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER, amount DECIMAL(15,2))", "INSERT INTO t VALUES (1, '1.25')",
                "INSERT INTO t VALUES (2, '1.239')")
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(tmp_path, src, jdbc_url(pg_db), "SELECT id, amount FROM t")
    with pytest.raises(PipekitError) as ei:
        run_module(engine_for(tmp_path, monkeypatch), "m")
    msg = str(ei.value)
    assert "column 'amount'" in msg and "row 2" in msg and "1.239" in msg and "dest_type: numeric" in msg


def test_type_error_during_copy_names_column_and_hint(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A text longer than its declared CHAR(3): PostgreSQL refuses it during COPY into staging; the
    message names the column, the line and the dest_type to declare."""
    src = tmp_path / "s.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER, code CHAR(3))", "INSERT INTO t VALUES (1, 'abc')",
                "INSERT INTO t VALUES (2, 'toolong')")
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(tmp_path, src, jdbc_url(pg_db), "SELECT id, code FROM t")
    with pytest.raises(PipekitError) as ei:
        run_module(engine_for(tmp_path, monkeypatch), "m")
    msg = str(ei.value)
    assert "column 'code'" in msg and "row 2" in msg and "too long" in msg
    assert "{source_name: code, dest_type: text}" in msg


@pytest.mark.parametrize("value", ["now", "2024-05-01 10:00:00", "today"])
def test_date_column_refuses_what_postgresql_would_reinterpret(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    src = tmp_path / "s.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER, day DATE)", f"INSERT INTO t VALUES (1, '{value}')")
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(tmp_path, src, jdbc_url(pg_db), "SELECT id, day FROM t")
    with pytest.raises(PipekitError) as ei:
        run_module(engine_for(tmp_path, monkeypatch), "m")
    msg = str(ei.value)
    assert "column 'day'" in msg and "row 1" in msg and value in msg and "{source_name: day, dest_type: text}" in msg
