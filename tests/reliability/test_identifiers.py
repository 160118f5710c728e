"""Identifiers with quotes, spaces, mixed case and reserved words, end to end.

dest_table ``"My Schema"."Order Items"``, merge_key and column names ``"Order Id"``, ``"select"``,
``we"ird`` and ``MixedCase`` go through first run (table created), a second incremental run
(delete + insert by key) and the run log, on PostgreSQL and SQLite destinations. Names that
cannot work are refused by ``pipekit validate`` naming the file, the module and the field.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipekit_core.cli import main
from pipekit_core.engine import run_module
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import engine_for, env_for, pg_exec, pg_rows, sqlite_exec, sqlite_rows, write_defs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

# Source table: every column name is awkward. "Updated At" drives the watermark.
SRC_DDL = 'CREATE TABLE {t} ("Order Id" integer, "select" text, "we""ird" text, "MixedCase" text, "Updated At" integer)'
ROUND1 = [
    (1, "a", "x", "first", 1),
    (1, "b", "x", "second", 1),  # same "Order Id", other "select": a different key
    (2, None, 'q"uote', "null key part", 1),
]
ROUND2 = [
    (1, "b", "x", "second v2", 2),  # replaces (1, b, x)
    (2, None, 'q"uote', "null key v2", 2),  # NULL-safe key match replaces, not duplicates
    (3, "select", "from", "reserved words as values", 2),
]

MODULE = """
modules:
  - name: odd
    source: src
    dest: dst
    dest_table: '{dest_table}'
    strategy: incremental
    merge_key: ["Order Id", select, 'we"ird']
    query: |
      SELECT "Order Id", "select", "we""ird", "MixedCase", "Updated At"
      FROM {src_table} WHERE "Updated At" > {{since}}
    watermarks:
      - name: since
        sql: SELECT max("Updated At") FROM {dest_sql}
        default: '0'
"""

CASES = {
    # pair: (source table as written in SQL, dest_table as written in YAML, dest table in SQL)
    "postgresql->postgresql": ('"Src Schema"."Source Items"', '"My Schema"."Order Items"', '"My Schema"."Order Items"'),
    "sqlite->sqlite": ('"Source Items"', '"Order Items"', '"Order Items"'),
    "postgresql->sqlite": ('"Src Schema"."Source Items"', 'main."Order Items"', '"Order Items"'),
}


def _insert(t: str, rows: list[tuple]) -> list[str]:
    out = []
    for r in rows:
        vals = ", ".join("NULL" if v is None else (str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'") for v in r)
        out.append(f"INSERT INTO {t} VALUES ({vals})")
    return out


@pytest.mark.parametrize("pair", list(CASES))
def test_awkward_identifiers_incremental_twice(pair: str, tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    src_table, dest_table, dest_sql = CASES[pair]
    s, d = pair.split("->")
    src_url = jdbc_url(pg_db) if s == "postgresql" else f"jdbc:sqlite:{tmp_path}/src.db"
    dst_url = jdbc_url(pg_db2) if d == "postgresql" else f"jdbc:sqlite:{tmp_path}/dst.db"

    def src_exec(*stmts: str) -> None:
        (pg_exec(pg_db, *stmts) if s == "postgresql" else sqlite_exec(tmp_path / "src.db", *stmts))

    def dst_rows(sql: str) -> list[tuple]:
        return pg_rows(pg_db2, sql) if d == "postgresql" else sqlite_rows(tmp_path / "dst.db", sql)

    write_defs(
        tmp_path / "defs",
        textwrap.dedent(
            f"""
            connections:
              src: {{url: "{src_url}", user: pipekit, password: $PK_TEST_PW}}
              dst: {{url: "{dst_url}", user: pipekit, password: $PK_TEST_PW}}
            """
        )
        + MODULE.format(dest_table=dest_table.replace("'", "''"), src_table=src_table, dest_sql=dest_sql),
    )
    if s == "postgresql":
        src_exec('CREATE SCHEMA "Src Schema"')
    src_exec(SRC_DDL.format(t=src_table), *_insert(src_table, ROUND1))

    eng = engine_for(tmp_path, monkeypatch)
    assert eng.catalog.problems == []
    r1 = run_module(eng, "odd")
    assert (r1.status, r1.rows_staged, r1.row_count) == ("success", 3, 3)
    assert r1.watermarks == {"since": "0"}

    src_exec(*_insert(src_table, ROUND2))
    r2 = run_module(eng, "odd")
    assert r2.watermarks == {"since": "1"}
    assert (r2.rows_staged, r2.rows_deleted, r2.rows_inserted, r2.row_count) == (3, 2, 3, 4)

    got = sorted(dst_rows(f'SELECT "Order Id", "select", "we""ird", "MixedCase", "Updated At" FROM {dest_sql}'), key=repr)
    want = sorted([ROUND1[0], *ROUND2], key=repr)
    assert got == want
    # The destination has exactly the awkward names, case and quotes kept.
    if d == "postgresql":
        cols = pg_rows(pg_db2, "SELECT attname FROM pg_attribute WHERE attrelid = '\"My Schema\".\"Order Items\"'::regclass "
                               "AND attnum > 0 ORDER BY attnum")
        # staging lives in pipekit_staging and is gone after the run
        assert pg_rows(pg_db2, "SELECT to_regclass('pipekit_staging.odd') IS NULL") == [(True,)]
    else:
        cols = sqlite_rows(tmp_path / "dst.db", "SELECT name FROM pragma_table_info('Order Items')")
        assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM sqlite_master WHERE name LIKE 'pipekit_staging%'") == [(0,)]
    assert [c[0] for c in cols] == ["Order Id", "select", 'we"ird', "MixedCase", "Updated At"]
    hist = eng.repo.history("odd")
    assert [h["status"] for h in hist] == ["success", "success"]
    assert '"we""ird"' in (hist[0].get("merge_sql") or eng.repo.get_run(hist[0]["id"])["merge_sql"])


def test_renamed_columns_with_awkward_names(tmp_path: Path, monkeypatch) -> None:
    """columns: renames to names with quotes/spaces; merge_key uses the destination names."""
    write_defs(
        tmp_path / "defs",
        f"""
        connections:
          src: {{url: "jdbc:sqlite:{tmp_path}/src.db"}}
          dst: {{url: "jdbc:sqlite:{tmp_path}/dst.db"}}
        modules:
          - name: ren
            source: src
            dest: dst
            dest_table: '"Table"'
            strategy: incremental
            merge_key: ['Key "K"']
            query: SELECT id, v FROM t
            columns:
              - {{source_name: id, dest_name: 'Key "K"', dest_type: INTEGER}}
              - {{source_name: v, dest_name: 'Value; DROP TABLE t --', dest_type: TEXT}}
        """,
    )
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE t (id integer, v text)", "INSERT INTO t VALUES (1, 'one')")
    eng = engine_for(tmp_path, monkeypatch)
    assert run_module(eng, "ren").row_count == 1
    sqlite_exec(tmp_path / "src.db", "UPDATE t SET v = 'uno'", "INSERT INTO t VALUES (2, 'two')")
    r = run_module(eng, "ren")
    assert (r.rows_deleted, r.rows_inserted, r.row_count) == (1, 2, 2)
    assert sorted(sqlite_rows(tmp_path / "dst.db", 'SELECT "Key ""K""", "Value; DROP TABLE t --" FROM "Table"')) == [
        (1, "uno"),
        (2, "two"),
    ]
    assert sqlite_rows(tmp_path / "src.db", "SELECT count(*) FROM t") == [(2,)]


REFUSED = [
    # (dest kind, dest_table, merge_key yaml, field, words in the message)
    ("sqlite", '"My Schema"."Order Items"', '[id]', "dest_table", "SQLite has no schemas"),
    ("postgresql", '"My Schema.Order Items', '[id]', "dest_table", "unterminated double quote"),
    ("postgresql", "My Table", '[id]', "dest_table", "has a quote or a space"),
    ("postgresql", "a.b.c", '[id]', "dest_table", "3 parts"),
    ("postgresql", "public.", '[id]', "dest_table", "ends with a dot"),
    ("postgresql", '""', '[id]', "dest_table", "empty quoted part"),
    ("postgresql", "orders", '["", id]', "merge_key[0]", "empty"),
]


@pytest.mark.parametrize(("kind", "table", "key", "field", "words"), REFUSED, ids=[r[1] + "|" + r[2] for r in REFUSED])
def test_bad_identifiers_are_refused_at_validation(kind: str, table: str, key: str, field: str, words: str, tmp_path: Path) -> None:
    dst = "jdbc:sqlite:d.db" if kind == "sqlite" else "jdbc:postgresql://127.0.0.1:1/x"
    p = write_defs(
        tmp_path / "defs",
        f"""
        connections:
          src: {{url: "jdbc:sqlite:s.db"}}
          dst: {{url: "{dst}"}}
        modules:
          - name: bad
            source: src
            dest: dst
            dest_table: '{table.replace("'", "''")}'
            strategy: incremental
            merge_key: {key}
            query: SELECT id FROM t
        """,
        name="bad ident.yaml",
    )
    res = CliRunner().invoke(main, ["validate"], env=env_for(tmp_path))
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith(str(p)))
    assert "module 'bad'" in line and f"field '{field}'" in line and words in line, line
