"""Data fidelity: every common PostgreSQL type through each transport and destination pair.

One source table holds smallint .. text[] with extreme values (NaN, +/-Infinity, -0, 40-digit
numerics, unicode/control characters, the COPY null marker ``\\N`` as text, empty vs NULL,
'infinity' dates, 24:00, BC dates, odd array bounds). Each pair copies it once (module-scoped)
and each column is then its own test, so docs/fidelity.md can name the test behind every row:

- native PostgreSQL -> PostgreSQL and jrunner (stand-in, ``-b``) PostgreSQL -> PostgreSQL: the
  exact value arrives (PostgreSQL's text form of every cell is equal) and the column type is the
  source's type;
- native PostgreSQL -> SQLite: the exact value or the documented conversion, with its storage
  class;
- native SQLite -> PostgreSQL: what SQLite can hold, exactly; and the clear refusals.
"""

from __future__ import annotations

import json
import math
import sqlite3
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipekit_core.config import load_settings
from pipekit_core.engine import Engine, run_module
from pipekit_core.errors import PhaseError
from tests.conftest import PG_ADMIN_URL, PG_PASSWORD, _url_for, jdbc_url
from tests.helpers import REPO, pg_exec, pg_rows, sqlite_exec, sqlite_rows, write_defs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

STANDIN = str(REPO / "tests" / "jrunner_standin" / "jrunner")
N = None  # NULL

# (column, PostgreSQL type, SQL literals of rows 1..5; row 3 is all NULL)
PG_COLUMNS: list[tuple[str, str, list[str | None]]] = [
    ("si", "smallint", ["-32768", "32767", N, "0", "1"]),
    ("i", "integer", ["-2147483648", "2147483647", N, "0", "1"]),
    ("bi", "bigint", ["-9223372036854775808", "9223372036854775807", N, "0", "9007199254740993"]),
    ("n38", "numeric(38,18)", ["12345678901234567890.123456789012345678", "-0.000000000000000001", N, "0", "'NaN'"]),
    ("nu", "numeric", ["1234567890123456789012345678901234567890", "'NaN'", N, "-1.50", "'-Infinity'"]),
    ("n12", "numeric(12,2)", ["1234567890.12", "-0.50", N, "100.00", "0.01"]),
    ("r", "real", ["'NaN'", "'-Infinity'", N, "'-0'", "3.14"]),
    ("d", "double precision", ["'Infinity'", "'-0'", N, "1.7976931348623157e308", "5e-324"]),
    ("tx", "text", ["E'uni \u00fc \U0001f600\\nline2 ''q'' \"dq\" \\\\ back\\ttab\\r end'", "''", N, "'NULL'", "E'\\\\N'"]),
    ("b", "bytea", ["'\\x00ff10'", "'\\x'", N, "'\\x5c4e'", "'\\x0a0d09'"]),
    ("bo", "boolean", ["true", "false", N, "false", "true"]),
    ("dt", "date", ["'2024-02-29'", "'0001-01-01'", N, "'infinity'", "'0044-03-15 BC'"]),
    ("tm", "time", ["'23:59:59.999999'", "'00:00:00'", N, "'24:00:00'", "'12:00:00.5'"]),
    ("ts", "timestamp", ["'2024-05-01 10:00:00.123456'", "'1970-01-01 00:00:00'", N, "'infinity'", "'-infinity'"]),
    ("tstz", "timestamptz", ["'2024-05-01 10:00:00.123456+02'", "'1970-01-01 00:00:00+00'", N, "'-infinity'",
                             "'2000-01-01 00:00:00-05:30'"]),
    ("iv", "interval", ["'1 year 2 mons 3 days 04:05:06.789'", "'-1 days'", N, "'00:00:00'", "'-178000000 years'"]),
    ("u", "uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'", N,
                   "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'", "'12345678-1234-5678-1234-567812345678'"]),
    ("j", "json", ["'{\"a\": [1, 2.50, null], \"b\": \"x\"}'", "'null'", N, "'\"str\"'", "'{\"b\":1,\"a\":2,\"a\":3}'"]),
    ("jb", "jsonb", ["'{\"b\": 1, \"a\": [1.0]}'", "'[]'", N, "'null'", "'{\"a\":2,\"a\":3}'"]),
    ("ai", "integer[]", ["'{1,NULL,3}'", "'{}'", N, "'{{1,2},{3,4}}'", "'[0:1]={7,8}'"]),
    ("at", "text[]", ["ARRAY['a b', 'c,d', NULL, 'e\"f', '\u00fc', E'back\\\\slash']", "'{}'", N, "ARRAY['']",
                      "ARRAY['NULL', E'\\\\N', E'new\\nline']"]),
]
NAMES = [c[0] for c in PG_COLUMNS]

# PostgreSQL -> SQLite: (SQLite declared type, the Python values sqlite3 returns for rows 1..5).
# The Python type is part of the expectation: int = INTEGER, float = REAL, str = TEXT, bytes = BLOB.
TO_SQLITE: dict[str, tuple[str, list[Any]]] = {
    "si": ("INTEGER", [-32768, 32767, N, 0, 1]),
    "i": ("INTEGER", [-2147483648, 2147483647, N, 0, 1]),
    "bi": ("INTEGER", [-9223372036854775808, 9223372036854775807, N, 0, 9007199254740993]),
    # wider than 15 digits or unconstrained: TEXT with PostgreSQL's exact digits (scale kept)
    "n38": ("TEXT", ["12345678901234567890.123456789012345678", "-0.000000000000000001", N, "0.000000000000000000", "NaN"]),
    "nu": ("TEXT", ["1234567890123456789012345678901234567890", "NaN", N, "-1.50", "-Infinity"]),
    # numeric(p<=15, s): NUMERIC affinity, a number (REAL or INTEGER); the value is exact, the scale is not kept
    "n12": ("NUMERIC", [1234567890.12, -0.5, N, 100, 0.01]),
    # NaN: SQLite stores a NaN REAL as NULL, so it arrives as the text 'NaN'; -0 loses its sign
    "r": ("REAL", ["NaN", -math.inf, N, 0.0, 3.14]),
    "d": ("REAL", [math.inf, 0.0, N, 1.7976931348623157e308, 5e-324]),
    "tx": ("TEXT", ["uni \u00fc \U0001f600\nline2 'q' \"dq\" \\ back\ttab\r end", "", N, "NULL", "\\N"]),
    "b": ("BLOB", [b"\x00\xff\x10", b"", N, b"\\N", b"\n\r\t"]),
    "bo": ("INTEGER", [1, 0, N, 0, 1]),
    # dates/times: ISO text; values Python cannot hold keep PostgreSQL's text ('infinity', BC, 24:00)
    "dt": ("TEXT", ["2024-02-29", "0001-01-01", N, "infinity", "0044-03-15 BC"]),
    "tm": ("TEXT", ["23:59:59.999999", "00:00:00", N, "24:00:00", "12:00:00.500000"]),
    "ts": ("TEXT", ["2024-05-01 10:00:00.123456", "1970-01-01 00:00:00", N, "infinity", "-infinity"]),
    "tstz": ("TEXT", ["2024-05-01 08:00:00.123456+00:00", "1970-01-01 00:00:00+00:00", N, "-infinity",
                      "2000-01-01 05:30:00+00:00"]),
    # interval: PostgreSQL's own text form (months and days stay apart), which PostgreSQL reads back
    "iv": ("TEXT", ["1 year 2 mons 3 days 04:05:06.789", "-1 days", N, "00:00:00", "-178000000 years"]),
    "u": ("TEXT", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000", N,
                   "ffffffff-ffff-ffff-ffff-ffffffffffff", "12345678-1234-5678-1234-567812345678"]),
    # json: the exact text (JSON null stays the text 'null', not SQL NULL); jsonb: its canonical text
    "j": ("TEXT", ['{"a": [1, 2.50, null], "b": "x"}', "null", N, '"str"', '{"b":1,"a":2,"a":3}']),
    "jb": ("TEXT", ['{"a": [1.0], "b": 1}', "[]", N, "null", '{"a": 3}']),
    # arrays: JSON text; nested arrays nest; a non-default lower bound ([0:1]) is not kept
    "ai": ("TEXT", ["[1, null, 3]", "[]", N, "[[1, 2], [3, 4]]", "[7, 8]"]),
    "at": ("TEXT", [json.dumps(["a b", "c,d", None, 'e"f', "\u00fc", "back\\slash"], ensure_ascii=False), "[]", N,
                    '[""]', json.dumps(["NULL", "\\N", "new\nline"])]),
}
assert list(TO_SQLITE) == NAMES

# SQLite source: (column, declared type, values rows 1..5) and the PostgreSQL type it arrives as.
LITE_COLUMNS: list[tuple[str, str, list[Any], str]] = [
    ("i", "INTEGER", [-9223372036854775808, 9223372036854775807, N, 0, 9007199254740993], "bigint"),
    ("r", "REAL", [1.5, math.inf, N, -math.inf, 5e-324], "double precision"),
    ("t", "TEXT", ["uni \u00fc \U0001f600\nq' \"dq\" \\ \ttab\r", "", N, "NULL", "\\N"], "text"),
    ("b", "BLOB", [b"\x00\xff\x10", b"", N, b"\\N", b"\n"], "bytea"),
    ("flag", "BOOLEAN", [1, 0, N, 0, 1], "boolean"),  # declared BOOLEAN: the 0/1 integers become booleans
    ("at", "DATETIME", ["2024-05-01 10:00:00", "1970-01-01", N, "2024-05-01T10:00:00Z", "now"], "text"),
    ("num", "NUMERIC", [12.5, 100, N, 0.1, -7], "numeric"),  # declared NUMERIC: exact numeric
    ("mixed", "", [1, "a", N, 2.5, b"\x01"], "text"),  # several storage classes: their text
]
MIXED_AS_TEXT = ["1", "a", N, "2.5", "\\x01"]


def _row_literals() -> list[str]:
    rows = []
    for r in range(5):
        vals = [str(r + 1)] + [
            f"CAST({lits[r]} AS {typ})" if lits[r] is not None else f"CAST(NULL AS {typ})" for _, typ, lits in PG_COLUMNS
        ]
        rows.append("(" + ", ".join(vals) + ")")
    return rows


@dataclass
class Copies:
    src: str  # PostgreSQL source URL
    pg_native: str  # PostgreSQL destination of the native copy
    pg_jrunner: str  # PostgreSQL destination of the jrunner copy
    lite: Path  # SQLite destination of PostgreSQL -> SQLite
    lite_src: Path  # SQLite source
    pg_from_lite: str  # PostgreSQL destination of SQLite -> PostgreSQL
    engine: Engine


def _new_db(tag: str) -> str:
    name = f"fid_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Copies]:
    tmp = tmp_path_factory.mktemp("fidelity")
    dbs = [_new_db(t) for t in ("src", "native", "jr", "lite")]
    try:
        src, pg_native, pg_jr, pg_lite = (_url_for(d) for d in dbs)
        cols = ", ".join(f"{n} {t}" for n, t, _ in PG_COLUMNS)
        pg_exec(src, f"CREATE TABLE fid (id integer PRIMARY KEY, {cols})", "INSERT INTO fid VALUES " + ", ".join(_row_literals()))
        lite_src = tmp / "lite_src.db"
        lcols = ", ".join(f"{n} {t}" for n, t, _, _ in LITE_COLUMNS)
        con = sqlite3.connect(lite_src)
        with con:
            con.execute(f"CREATE TABLE fid (id INTEGER, {lcols})")
            for r in range(5):
                con.execute(f"INSERT INTO fid VALUES ({', '.join('?' * (len(LITE_COLUMNS) + 1))})",
                            [r + 1] + [c[2][r] for c in LITE_COLUMNS])
        con.close()
        conn = "{{url: \"{u}\", user: pipekit, password: $PK_TEST_PW}}"
        write_defs(tmp / "defs", textwrap.dedent(f"""
            connections:
              src: {conn.format(u=jdbc_url(src))}
              pg_native: {conn.format(u=jdbc_url(pg_native))}
              pg_jr: {conn.format(u=jdbc_url(pg_jr))}
              pg_lite: {conn.format(u=jdbc_url(pg_lite))}
              lite: {{url: "jdbc:sqlite:{tmp}/lite_dest.db"}}
              lite_src: {{url: "jdbc:sqlite:{lite_src}"}}
            modules:
              - {{name: pg_pg, source: src, dest: pg_native, dest_table: fid, query: SELECT * FROM fid, transport: native}}
              - {{name: pg_pg_jr, source: src, dest: pg_jr, dest_table: fid, query: SELECT * FROM fid, transport: jrunner}}
              - {{name: pg_lite, source: src, dest: lite, dest_table: fid, query: SELECT * FROM fid, transport: native}}
              - {{name: lite_pg, source: lite_src, dest: pg_lite, dest_table: fid, query: SELECT * FROM fid}}
        """))
        env = {"PIPEKIT_DEFS": str(tmp / "defs"), "PIPEKIT_DB": str(tmp / "pipekit.db"),
               "PIPEKIT_SECRETS": str(tmp / "secrets.env"), "PIPEKIT_JRUNNER": STANDIN, "PK_TEST_PW": PG_PASSWORD}
        eng = Engine(settings=load_settings(env, cwd=tmp), env=env)
        assert eng.catalog.problems == []
        for m in ("pg_pg", "pg_pg_jr", "pg_lite", "lite_pg"):
            res = run_module(eng, m)
            assert (res.status, res.rows_staged, res.row_count) == ("success", 5, 5), m
        yield Copies(src, pg_native, pg_jr, tmp / "lite_dest.db", lite_src, pg_lite, eng)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            for d in dbs:
                c.execute(f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)')


def _pg_texts(url: str, col: str) -> list[str | None]:
    return [r[0] for r in pg_rows(url, f"SELECT {col}::text FROM fid ORDER BY id")]


def _pg_type(url: str, col: str) -> str:
    return pg_rows(url, f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'fid'::regclass "
                        f"AND attname = '{col}'")[0][0]


# --------------------------------------------------------------------------- PostgreSQL -> PostgreSQL

# Spot checks in PostgreSQL's text form, for the values people worry about.
PG_TEXT_SPOTS = {
    "n38": ["12345678901234567890.123456789012345678", "-0.000000000000000001", N, "0.000000000000000000", "NaN"],
    "nu": ["1234567890123456789012345678901234567890", "NaN", N, "-1.50", "-Infinity"],
    "r": ["NaN", "-Infinity", N, "-0", "3.14"],
    "d": ["Infinity", "-0", N, "1.7976931348623157e+308", "5e-324"],
    "tx": ["uni \u00fc \U0001f600\nline2 'q' \"dq\" \\ back\ttab\r end", "", N, "NULL", "\\N"],
    "b": ["\\x00ff10", "\\x", N, "\\x5c4e", "\\x0a0d09"],
    "j": ['{"a": [1, 2.50, null], "b": "x"}', "null", N, '"str"', '{"b":1,"a":2,"a":3}'],
    "ai": ["{1,NULL,3}", "{}", N, "{{1,2},{3,4}}", "[0:1]={7,8}"],
    "tstz": ["2024-05-01 08:00:00.123456+00", "1970-01-01 00:00:00+00", N, "-infinity", "2000-01-01 05:30:00+00"],
    "dt": ["2024-02-29", "0001-01-01", N, "infinity", "0044-03-15 BC"],
}


def _check_pg_exact(src: str, dst: str, col: str) -> None:
    got, want = _pg_texts(dst, col), _pg_texts(src, col)
    assert got == want
    assert _pg_type(dst, col) == _pg_type(src, col)
    if col in PG_TEXT_SPOTS:
        assert got == PG_TEXT_SPOTS[col]
    # NULL stays NULL and '' stays '' (row 3 is all NULL)
    assert pg_rows(dst, f"SELECT {col} IS NULL FROM fid ORDER BY id") == [(x is None,) for x in want]


@pytest.mark.parametrize("col", NAMES)
def test_pg_to_pg_native(copies: Copies, col: str) -> None:
    _check_pg_exact(copies.src, copies.pg_native, col)


@pytest.mark.parametrize("col", NAMES)
def test_pg_to_pg_jrunner(copies: Copies, col: str) -> None:
    _check_pg_exact(copies.src, copies.pg_jrunner, col)


def test_pg_to_pg_paths_used(copies: Copies) -> None:
    """The copies went the way they claim: native COPY in binary, jrunner with -b."""
    runs = {r["module"]: r for r in copies.engine.repo.history(None, 20)}
    assert runs["pg_pg"]["transport"] == "native" and runs["pg_pg_jr"]["transport"] == "jrunner"
    log = copies.engine.repo.get_run(runs["pg_pg_jr"]["id"])["log"] or ""
    assert "Migrated 5 rows" in log


# --------------------------------------------------------------------------- PostgreSQL -> SQLite


@pytest.mark.parametrize("col", NAMES)
def test_pg_to_sqlite_native(copies: Copies, col: str) -> None:
    decl, want = TO_SQLITE[col]
    got = [r[0] for r in sqlite_rows(copies.lite, f'SELECT "{col}" FROM fid ORDER BY id')]
    assert [(type(v), v) for v in got] == [(type(v), v) for v in want]
    info = {r[1]: r[2] for r in sqlite_rows(copies.lite, "PRAGMA table_info(fid)")}
    assert info[col] == decl


# --------------------------------------------------------------------------- SQLite -> PostgreSQL


@pytest.mark.parametrize("col", [c[0] for c in LITE_COLUMNS])
def test_sqlite_to_pg_native(copies: Copies, col: str) -> None:
    _, _, values, pg_type = next(c for c in LITE_COLUMNS if c[0] == col)
    got = [r[0] for r in pg_rows(copies.pg_from_lite, f"SELECT {col} FROM fid ORDER BY id")]
    if col == "mixed":
        want: list[Any] = MIXED_AS_TEXT
    elif col == "num":
        want = [Decimal(str(v)) if v is not None else None for v in values]
    elif col == "flag":
        want = [bool(v) if v is not None else None for v in values]
    else:
        want = values
    assert [(type(v), v) for v in got] == [(type(v), v) for v in want]
    assert _pg_type(copies.pg_from_lite, col) == pg_type


def test_sqlite_to_pg_refuses_nul_in_text(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL text cannot hold NUL: the run fails in stage naming the module; nothing is merged."""
    eng = _lite_module(tmp_path, pg_db, monkeypatch, ["CREATE TABLE t (id INTEGER, v TEXT)",
                                                      "INSERT INTO t VALUES (1, 'ok'), (2, 'nul' || char(0) || 'inside')"])
    with pytest.raises(PhaseError) as ei:
        run_module(eng, "m")
    msg = str(ei.value)
    assert "module 'm'" in msg and "'stage'" in msg and "0x00" in msg
    assert pg_rows(pg_db, "SELECT to_regclass('public.t') IS NULL") == [(True,)]


def test_sqlite_to_pg_refuses_a_type_change_after_the_sample(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Types come from the first 200 rows; a later value of another kind is refused by PostgreSQL with
    the value named, not silently converted. columns: dest_type text accepts it."""
    stmts = ["CREATE TABLE t (id INTEGER, v)"] + [f"INSERT INTO t VALUES ({i}, {i})" for i in range(1, 251)]
    stmts.append("INSERT INTO t VALUES (251, 'not a number')")
    eng = _lite_module(tmp_path, pg_db, monkeypatch, stmts)
    with pytest.raises(PhaseError) as ei:
        run_module(eng, "m")
    msg = str(ei.value)
    assert "module 'm'" in msg and "bigint" in msg and "not a number" in msg
    write_defs(tmp_path / "defs", (tmp_path / "defs" / "defs.yaml").read_text().replace(
        "query: SELECT id, v FROM t", "query: SELECT id, v FROM t\n    columns: [{source_name: v, dest_type: text}]"))
    eng = Engine(settings=load_settings())
    assert run_module(eng, "m").row_count == 251
    assert pg_rows(pg_db, "SELECT v FROM t WHERE id IN (250, 251) ORDER BY id") == [("250",), ("not a number",)]


def _lite_module(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch, stmts: list[str]) -> Engine:
    from tests.helpers import engine_for

    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    sqlite_exec(tmp_path / "s.db", *stmts)
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "jdbc:sqlite:{tmp_path}/s.db"}}
  d: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
modules:
  - name: m
    source: s
    dest: d
    dest_table: t
    query: SELECT id, v FROM t
""")
    return engine_for(tmp_path, monkeypatch)


OTHER_TYPES = [
    # (column, type, literal, PG->PG destination type, PG->PG text, SQLite value)
    ("mood", "mood", "'sad'", "text", "sad", "sad"),
    ("moods", "mood[]", "'{ok,sad}'", "text[]", "{ok,sad}", '["ok", "sad"]'),
    ("tz3", "timestamp(3) with time zone", "'2024-05-01 10:00:00.123+02'", "timestamp(3) with time zone",
     "2024-05-01 08:00:00.123+00", "2024-05-01 08:00:00.123000+00:00"),
    ("vc", "varchar(5)", "'ab  '", "character varying(5)", "ab  ", "ab  "),
    ("ch", "char(3)", "'a'", "character(3)", "a", "a  "),  # ::text drops char padding; SQLite keeps it
    ("nums", "numeric[]", "'{1.50,NaN}'", "numeric[]", "{1.50,NaN}", '["1.50", "NaN"]'),
    ("rng", "int4range", "'[1,5)'", "int4range", "[1,5)", "[1,5)"),
    ("money_", "money", "'12.34'", "money", "$12.34", "$12.34"),
    ("fl", "float8[]", "'{1.5,NaN,-Infinity}'", "double precision[]", "{1.5,NaN,-Infinity}", "[1.5, NaN, -Infinity]"),
    ("bys", "bytea[]", "ARRAY['\\x0102'::bytea]", "bytea[]", '{"\\\\x0102"}', '["\\\\x0102"]'),
]


def test_other_types_enum_typmod_range(tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enums and other types pipekit does not map: text on both destinations, value exact; a
    typmod on timestamptz is kept and the value is parsed as a timestamp *with* time zone."""
    from tests.helpers import engine_for

    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    cols = ", ".join(f"{c} {t}" for c, t, *_ in OTHER_TYPES)
    vals = ", ".join(f"CAST({lit} AS {t})" for _, t, lit, *_ in OTHER_TYPES)
    pg_exec(pg_db, "SET lc_monetary = 'C'", "CREATE TYPE mood AS ENUM ('ok', 'sad')", f"CREATE TABLE o ({cols})",
            f"INSERT INTO o VALUES ({vals})")
    write_defs(tmp_path / "defs", f"""
connections:
  s: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
  d: {{url: "{jdbc_url(pg_db2)}", user: pipekit, password: $PK_TEST_PW}}
  l: {{url: "jdbc:sqlite:{tmp_path}/l.db"}}
modules:
  - {{name: to_pg, source: s, dest: d, dest_table: o, query: SELECT * FROM o}}
  - {{name: to_lite, source: s, dest: l, dest_table: o, query: SELECT * FROM o}}
  - {{name: to_enum, source: s, dest: d, dest_table: o_enum, query: "SELECT mood, moods FROM o"}}
""")
    # a destination that has the enum too: staged as the destination column's type
    pg_exec(pg_db2, "CREATE TYPE mood AS ENUM ('ok', 'sad')", "CREATE TABLE o_enum (mood mood, moods mood[])")
    eng = engine_for(tmp_path, monkeypatch)
    assert run_module(eng, "to_enum").row_count == 1
    assert pg_rows(pg_db2, "SELECT mood::text, moods::text, pg_typeof(mood)::text FROM o_enum") == [("sad", "{ok,sad}", "mood")]
    assert run_module(eng, "to_pg").row_count == 1
    assert run_module(eng, "to_lite").row_count == 1
    for c, _, _, pg_type, pg_text, lite in OTHER_TYPES:
        assert pg_rows(pg_db2, f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'o'::regclass "
                               f"AND attname = '{c}'") == [(pg_type,)], c
        assert pg_rows(pg_db2, f"SELECT {c}::text FROM o") == [(pg_text,)], c
        assert sqlite_rows(tmp_path / "l.db", f"SELECT {c} FROM o") == [(lite,)], c
