"""§2: every PostgreSQL session pipekit opens speaks one dialect of text, whatever the database's
defaults say. The source database here is hostile (SQL/DMY dates, 6-digit floats, sql_standard
intervals, New York time, escape bytea); a `columns: dest_type` that differs from the source type
forces the text COPY path. The destination must equal the source exactly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from pipekit_core.db import pg_session_options
from pipekit_core.engine import run_module
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import REPO, engine_for, pg_exec, sqlite_rows, write_defs

pytestmark = [pytest.mark.postgres]

STANDIN = str(REPO / "tests" / "jrunner_standin" / "jrunner")
HOSTILE = [
    "datestyle = 'SQL, DMY'",
    "extra_float_digits = 0",
    "intervalstyle = 'sql_standard'",
    "TimeZone = 'America/New_York'",
    "bytea_output = 'escape'",
]
ROWS = [
    "(1, '2024-02-03', '2024-02-03 04:05:06.789', '2024-02-03 23:30:00.5+02', 1.2345679, 0.30000000000000004,"
    " '1 year 2 mons 3 days 04:05:06.789', '\\x00ff5c0a')",
    "(2, '1999-12-31', '2000-01-13 00:00:00', '2000-01-13 00:00:00-05', 3.4028235e38, 1.7976931348623157e308,"
    " '-1 days +02:00:00', '\\x')",
]
COLS = "id, d, ts, tstz, r, dp, iv, b"


def _hostile_source(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    pg_exec(url, *[f'ALTER DATABASE "{name}" SET {h}' for h in HOSTILE])
    pg_exec(
        url,
        "CREATE TABLE src (id integer PRIMARY KEY, d date, ts timestamp, tstz timestamptz, r real,"
        " dp double precision, iv interval, b bytea)",
        "INSERT INTO src VALUES " + ", ".join(ROWS),
    )


def _pinned_rows(url: str, table: str) -> list[tuple]:
    """The rows read under the pinned settings (psycopg parses them into Python values)."""
    with psycopg.connect(url, autocommit=True, options=pg_session_options()) as c:
        return c.execute(f"SELECT {COLS} FROM {table} ORDER BY id").fetchall()


def _defs(tmp: Path, src: str, dest_url: str, transport: str = "native") -> None:
    write_defs(tmp / "defs", f"""
connections:
  s: {{url: "{jdbc_url(src)}", user: pipekit, password: $PK_TEST_PW}}
  d: {{url: "{dest_url}", user: pipekit, password: $PK_TEST_PW}}
modules:
  - name: m
    source: s
    dest: d
    dest_table: t
    transport: {transport}
    query: SELECT {COLS} FROM src
    columns: [{{source_name: id, dest_type: bigint}}]
""")


@pytest.mark.parametrize("transport", ["native", "jrunner"])
def test_pg_to_pg_text_copy_on_hostile_source(
    tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    _hostile_source(pg_db)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(tmp_path, pg_db, jdbc_url(pg_db2), transport)
    eng = engine_for(tmp_path, monkeypatch, {"PIPEKIT_JRUNNER": STANDIN})
    assert run_module(eng, "m").row_count == 2
    got, want = _pinned_rows(pg_db2, "t"), _pinned_rows(pg_db, "src")
    assert got == want
    assert got[0][1] == dt.date(2024, 2, 3)  # day and month not swapped
    assert got[0][4] == pytest.approx(1.2345679, rel=1e-8) and got[0][4] != 1.23457  # real: every digit
    assert got[0][5] == 0.30000000000000004


def test_pg_to_sqlite_on_hostile_source(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _hostile_source(pg_db)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    lite = tmp_path / "d.db"
    _defs(tmp_path, pg_db, f"jdbc:sqlite:{lite}")
    eng = engine_for(tmp_path, monkeypatch)
    assert run_module(eng, "m").row_count == 2
    got = sqlite_rows(lite, f"SELECT {COLS} FROM t ORDER BY id")
    assert got == [
        (1, "2024-02-03", "2024-02-03 04:05:06.789000", "2024-02-03 21:30:00.500000+00:00", 1.2345679,
         0.30000000000000004, "1 year 2 mons 3 days 04:05:06.789", b"\x00\xff\x5c\x0a"),
        (2, "1999-12-31", "2000-01-13 00:00:00", "2000-01-13 05:00:00+00:00", 3.4028235e38,
         1.7976931348623157e308, "-1 days +02:00:00", b""),
    ]


def test_pg_to_pg_type_error_names_column_and_dest_type(
    tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source text a declared dest_type refuses during the text COPY: column, line and hint named."""
    from pipekit_core.errors import PipekitError

    pg_exec(pg_db, "CREATE TABLE src (id integer, qty text)", "INSERT INTO src VALUES (1, '7'), (2, 'seven')")
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
  d: {{url: "{jdbc_url(pg_db2)}", user: pipekit, password: $PK_TEST_PW}}
modules:
  - name: m
    source: s
    dest: d
    dest_table: t
    query: SELECT id, qty FROM src
    columns: [{{source_name: qty, dest_name: amount, dest_type: integer}}]
""")
    with pytest.raises(PipekitError) as ei:
        run_module(engine_for(tmp_path, monkeypatch), "m")
    msg = str(ei.value)
    assert "module 'm'" in msg and "column 'amount' (integer)" in msg and "row 2" in msg and "seven" in msg
    assert "{source_name: qty, dest_type: text}" in msg
