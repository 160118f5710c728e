"""The built SQL executed on real PostgreSQL (psycopg 3) and SQLite files; resulting rows asserted."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipekit_core.sql import ColumnDef, Dialect, MergeBuilder, TableName, get_dialect, parse_table_name

Row = tuple[Any, ...]


class _DB:
    """A destination connection: DDL in autocommit, merge statements in one transaction."""

    dialect: Dialect
    param: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def rows(self, sql: str) -> list[Row]:
        raise NotImplementedError

    def in_transaction(self, statements: list[str]) -> None:
        raise NotImplementedError

    def insert(self, t: TableName, cols: list[str], rows: list[Row]) -> None:
        names = ", ".join(self.dialect.quote(c) for c in cols)
        marks = ", ".join([self.param] * len(cols))
        for r in rows:
            self.execute(f"INSERT INTO {self.dialect.table(t)} ({names}) VALUES ({marks})", r)


class _PG(_DB):
    param = "%s"

    def __init__(self, url: str) -> None:
        self.dialect = get_dialect("postgresql")
        self.conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params or None)  # type: ignore[arg-type]

    def rows(self, sql: str) -> list[Row]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]  # type: ignore[arg-type]

    def in_transaction(self, statements: list[str]) -> None:
        with self.conn.transaction():
            for s in statements:
                self.conn.execute(s)  # type: ignore[arg-type]


class _Lite(_DB):
    param = "?"

    def __init__(self, path: Path) -> None:
        self.dialect = get_dialect("sqlite")
        self.conn = sqlite3.connect(path, isolation_level=None)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    def rows(self, sql: str) -> list[Row]:
        return self.conn.execute(sql).fetchall()

    def in_transaction(self, statements: list[str]) -> None:
        self.conn.execute("BEGIN")
        try:
            for s in statements:
                self.conn.execute(s)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_DB]:
    if request.param == "postgresql":
        conn: _DB = _PG(request.getfixturevalue("pg_db"))
    else:
        conn = _Lite(tmp_path / "dest.db")
    yield conn
    conn.conn.close()  # type: ignore[attr-defined]


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: tuple((v is None, "" if v is None else str(v)) for v in r))


def _setup(
    db: _DB, cols: list[ColumnDef], dest_rows: list[Row], staged: list[Row], dest: TableName | None = None
) -> tuple[TableName, TableName]:
    d = db.dialect
    dest = dest or (TableName("public", "orders") if d.supports_schemas else TableName(None, "orders"))
    staging = d.staging_table("orders", "pipekit_staging")
    # Like the engine: SQLite staging columns carry no declared type.
    stage_cols = [ColumnDef(c.name, "" if d.name == "sqlite" else c.type) for c in cols]
    for s in d.create_table_sql(dest, cols) + d.create_staging_sql(staging, stage_cols, "pipekit_staging"):
        db.execute(s)
    names = [c.name for c in cols]
    db.insert(dest, names, dest_rows)
    db.insert(staging, names, staged)
    analyze = d.analyze_sql(staging)
    if analyze:
        db.execute(analyze)
    return dest, staging


def _merge(
    db: _DB,
    strategy: str,
    dest: TableName,
    staging: TableName,
    cols: list[str],
    key: list[str],
    key_not_null: bool,
) -> list[Row]:
    plan = MergeBuilder(db.dialect).plan(strategy, dest, staging, cols, key, key_not_null)
    db.in_transaction(plan.statements)
    assert db.rows(plan.count_sql)[0][0] == len(db.rows(f"SELECT * FROM {db.dialect.table(dest)}"))
    return _sorted(
        db.rows(f"SELECT {', '.join(db.dialect.quote(c) for c in cols)} FROM {db.dialect.table(dest)}")
    )


KV = [ColumnDef("id", "integer"), ColumnDef("v", "text")]


def test_full_replaces_every_row(db: _DB) -> None:
    dest, stg = _setup(db, KV, [(1, "old"), (2, "old")], [(3, "new"), (None, "new")])
    assert _merge(db, "full", dest, stg, ["id", "v"], [], False) == [(3, "new"), (None, "new")]


def test_append_keeps_existing_rows(db: _DB) -> None:
    dest, stg = _setup(db, KV, [(1, "old")], [(1, "new"), (2, "new")])
    assert _merge(db, "append", dest, stg, ["id", "v"], [], False) == [(1, "new"), (1, "old"), (2, "new")]


@pytest.mark.parametrize("key_not_null", [True, False], ids=["key_not_null", "key_nullable"])
def test_incremental_single_key(db: _DB, key_not_null: bool) -> None:
    dest_rows: list[Row] = [(1, "old"), (2, "keep")] + ([] if key_not_null else [(None, "old")])
    staged: list[Row] = [(1, "new"), (3, "new")] + ([] if key_not_null else [(None, "new")])
    dest, stg = _setup(db, KV, dest_rows, staged)
    expected = [(1, "new"), (2, "keep"), (3, "new")] + ([] if key_not_null else [(None, "new")])
    assert _merge(db, "incremental", dest, stg, ["id", "v"], ["id"], key_not_null) == expected


COMPOSITE = [ColumnDef("k1", "integer"), ColumnDef("k2", "text"), ColumnDef("v", "text")]


def test_incremental_composite_key_null_parts_match_null(db: _DB) -> None:
    dest_rows: list[Row] = [
        (1, "a", "old"),
        (1, None, "old"),
        (None, "b", "old"),
        (None, None, "old"),
        (2, "x", "keep"),
        (None, "c", "keep"),
        (3, None, "keep"),
        (1, "b", "keep"),
    ]
    staged: list[Row] = [
        (1, "a", "new"),
        (1, None, "new"),
        (None, "b", "new"),
        (None, None, "new"),
        (4, "z", "new"),
    ]
    dest, stg = _setup(db, COMPOSITE, dest_rows, staged)
    got = _merge(db, "incremental", dest, stg, ["k1", "k2", "v"], ["k1", "k2"], False)
    assert got == _sorted([r for r in dest_rows if r[2] == "keep"] + staged)


def test_incremental_composite_key_not_null(db: _DB) -> None:
    cols = [ColumnDef("k1", "integer", False), ColumnDef("k2", "text", False), ColumnDef("v", "text")]
    dest, stg = _setup(db, cols, [(1, "a", "old"), (1, "b", "keep")], [(1, "a", "new"), (2, "a", "new")])
    got = _merge(db, "incremental", dest, stg, ["k1", "k2", "v"], ["k1", "k2"], True)
    assert got == [(1, "a", "new"), (1, "b", "keep"), (2, "a", "new")]


def test_duplicate_key_sql_finds_duplicates_including_null_keys(db: _DB) -> None:
    staged: list[Row] = [
        (1, "a", "x"),
        (1, "a", "y"),
        (1, None, "x"),
        (1, None, "y"),
        (1, None, "z"),
        (2, "b", "x"),
    ]
    _, stg = _setup(db, COMPOSITE, [], staged)
    b = MergeBuilder(db.dialect)
    assert db.rows(b.duplicate_key_sql(stg, ["k1", "k2"])) == [(1, None, 3), (1, "a", 2)]
    assert db.rows(b.duplicate_key_sql(stg, ["k1", "k2"], limit=1)) == [(1, None, 3)]
    assert db.rows(b.duplicate_key_sql(stg, ["k1", "k2", "v"])) == []


def test_nonempty_sql(db: _DB) -> None:
    dest, stg = _setup(db, KV, [(1, "old")], [])
    b = MergeBuilder(db.dialect)
    assert db.rows(b.nonempty_sql(dest)) == [(1,)]
    assert db.rows(b.nonempty_sql(stg)) == []


@pytest.mark.parametrize("strategy", ["full", "incremental", "append"])
def test_failed_merge_leaves_destination_as_before(db: _DB, strategy: str) -> None:
    cols = [ColumnDef("id", "integer"), ColumnDef("v", "text", nullable=False)]
    before: list[Row] = [(1, "old"), (2, "old"), (None, "old")]
    dest, stg = _setup(db, cols, before, [(1, "new"), (None, None)])  # v NULL violates NOT NULL
    plan = MergeBuilder(db.dialect).plan(strategy, dest, stg, ["id", "v"], ["id"], False)
    with pytest.raises((psycopg.errors.NotNullViolation, sqlite3.IntegrityError)):
        db.in_transaction(plan.statements)
    assert _sorted(db.rows(f"SELECT id, v FROM {db.dialect.table(dest)}")) == _sorted(before)


def test_weird_identifiers_end_to_end(db: _DB) -> None:
    text = '"My Schema"."Odd ""T"" x"' if db.dialect.supports_schemas else '"Odd ""T"" x"'
    cols = [ColumnDef("select", "integer"), ColumnDef("Order Id", "integer"), ColumnDef('we"ird', "text")]
    names = [c.name for c in cols]
    dest, stg = _setup(
        db,
        cols,
        [(1, 10, "a"), (2, None, "b"), (3, 30, None)],
        [(9, None, "b"), (8, 40, "d")],
        dest=parse_table_name(text),
    )
    got = _merge(db, "incremental", dest, stg, names, ["Order Id", 'we"ird'], False)
    assert got == [(1, 10, "a"), (3, 30, None), (8, 40, "d"), (9, None, "b")]
    got = _merge(db, "full", dest, stg, names, [], False)
    assert got == [(8, 40, "d"), (9, None, "b")]


def test_staging_ddl_is_rerunnable_and_zero_row_wrap_runs(db: _DB) -> None:
    d = db.dialect
    stg = d.staging_table("orders", "pipekit_staging")
    for _ in range(2):  # schema exists, table exists: still fine
        for s in d.create_staging_sql(stg, KV, "pipekit_staging"):
            db.execute(s)
    db.execute(d.drop_table_sql(stg))
    db.execute(d.drop_table_sql(stg))
    wrapped = d.zero_row_wrap("SELECT 1 AS a, 'x' AS b -- note\n;\n")
    assert db.rows(wrapped) == []


# -- PostgreSQL plans on a 1M-row destination ------------------------------------------------


def _node_types(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"]] + [t for p in plan.get("Plans", []) for t in _node_types(p)]


@pytest.mark.postgres
def test_nullable_key_merge_plans_have_no_nested_loop_on_1m_rows(pg_db: str) -> None:
    t0 = time.monotonic()
    pg = _PG(pg_db)
    dest, stg = TableName("public", "big"), TableName("pipekit_staging", "big")
    pg.execute("CREATE TABLE public.big (k1 integer, k2 integer, v text)")
    # Every NULL pattern on both sides: (NULL, x) when g % 20 = 3, (x, NULL) when g % 10 = 0,
    # (NULL, NULL) when g % 1000 = 10.
    pg.execute(
        "INSERT INTO public.big SELECT CASE WHEN g % 20 = 3 OR g % 1000 = 10 THEN NULL ELSE g END, "
        "CASE WHEN g % 10 = 0 THEN NULL ELSE g % 7 END, 'old' FROM generate_series(1, 1000000) g"
    )
    cols = [ColumnDef("k1", "integer"), ColumnDef("k2", "integer"), ColumnDef("v", "text")]
    for s in pg.dialect.create_staging_sql(stg, cols, "pipekit_staging"):
        pg.execute(s)
    # ~20,000 distinct existing keys of every pattern, plus 10 new ones.
    pg.execute(
        "INSERT INTO pipekit_staging.big SELECT DISTINCT k1, k2, 'new' FROM public.big "
        "WHERE k1 IS NULL OR k1 % 100 IN (0, 1)"
    )
    pg.execute(
        "INSERT INTO pipekit_staging.big SELECT 2000000 + g, g % 7, 'new' FROM generate_series(1, 10) g"
    )
    pg.execute("ANALYZE public.big")
    pg.execute("ANALYZE pipekit_staging.big")
    patterns = pg.rows("SELECT DISTINCT k1 IS NULL, k2 IS NULL FROM pipekit_staging.big")
    assert len(patterns) == 4
    # Test-only NULL-safe join: the test knows the keys are >= 0, so -1 is a safe sentinel.
    ((matched, staged),) = pg.rows(
        "SELECT (SELECT count(*) FROM public.big d JOIN pipekit_staging.big s "
        "ON coalesce(d.k1, -1) = coalesce(s.k1, -1) AND coalesce(d.k2, -1) = coalesce(s.k2, -1)), "
        "(SELECT count(*) FROM pipekit_staging.big)"
    )

    b = MergeBuilder(pg.dialect)
    for key in (["k1", "k2"], ["k1"]):
        stmts = b.incremental(dest, stg, ["k1", "k2", "v"], key, False)
        for s in stmts[:-1]:
            (plan_json,) = pg.rows("EXPLAIN (FORMAT JSON) " + s)[0]
            nodes = _node_types(
                (json.loads(plan_json) if isinstance(plan_json, str) else plan_json)[0]["Plan"]
            )
            assert "Nested Loop" not in nodes, (s, nodes)
    # The naive form is a nested loop over the destination (why the split exists).
    naive = (
        "DELETE FROM public.big d WHERE EXISTS (SELECT 1 FROM pipekit_staging.big s "
        "WHERE s.k1 IS NOT DISTINCT FROM d.k1 AND s.k2 IS NOT DISTINCT FROM d.k2)"
    )
    assert "Nested Loop" in "\n".join(r[0] for r in pg.rows("EXPLAIN " + naive))

    t1 = time.monotonic()
    stmts = b.incremental(dest, stg, ["k1", "k2", "v"], ["k1", "k2"], False)
    pg.in_transaction(stmts)
    merge_s = time.monotonic() - t1
    assert pg.rows("SELECT count(*), count(*) FILTER (WHERE v = 'new') FROM public.big") == [
        (1_000_000 - matched + staged, staged)
    ]
    assert merge_s < 15, f"merge took {merge_s:.1f}s"
    assert time.monotonic() - t0 < 60
    pg.conn.close()
