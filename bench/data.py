"""Benchmark data: the source tables, the incremental change set, and the resets between runs.

Everything is generated here, deterministically, from ``generate_series`` on the benchmark's
own PostgreSQL databases (``bench_src`` and ``bench_dst``, created when missing) and copied
into SQLite files. Tables are named by row count so a later run reuses them.

Source (bench_src, schema public):
    full_<n>   n rows x 12 columns (the full-load source and the "before" state)
    inc_<n>    full_<n> with 5% of the rows updated and 1% inserted (updated_at moved forward)
    small_100  the first 100 rows (the fixed-cost job)
Destination (bench_dst, schema public):
    inc_base_<n>  a copy of full_<n>: what every incremental contender's table is reset to
SQLite files (work dir): src_<n>.db with tables ``full`` and ``small``.

TPC-H-like lineitem (the composite-key jobs; bench_src):
    li_<n>      n rows in lineitem's shape: key (l_orderkey, l_linenumber) with 1-7 lines per
                order, numeric(15,2), char(1) flags, char(10)/char(25) strings, three dates,
                varchar(44) comment, plus l_updated_at (the incremental cursor; not in TPC-H)
    li_inc_<n>  li_<n> with 0.5% of the rows updated and 0.5% new rows (1% changed)
Destination (bench_dst): li_base_<n>, a copy of li_<n> with its primary key (the incremental reset).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

# (name, PostgreSQL type, SQLite type) in source-query order.
COLUMNS: list[tuple[str, str, str]] = [
    ("id", "bigint", "INTEGER"),
    ("customer_id", "integer", "INTEGER"),
    ("amount", "numeric(14,2)", "NUMERIC"),
    ("name", "text", "TEXT"),
    ("description", "text", "TEXT"),
    ("created_at", "timestamp with time zone", "TEXT"),
    ("updated_at", "timestamp with time zone", "TEXT"),
    ("is_active", "boolean", "INTEGER"),
    ("score", "double precision", "REAL"),
    ("note", "text", "TEXT"),
    ("day", "date", "TEXT"),
    ("category", "character varying(16)", "TEXT"),
]
COLUMN_NAMES = [c[0] for c in COLUMNS]
SELECT_LIST = ", ".join(COLUMN_NAMES)
SMALL_ROWS = 100
DATA_VERSION = 1
# Every row of full_<n> has updated_at before this; changed rows get updated_at after it.
CHANGE_TIME = "2030-01-01 00:00:00+00"

_ROW_EXPR = """
  g::bigint,
  (g * 7919 % 100000)::integer,
  ((g * 104729) % 10000000 / 100.0)::numeric(14,2),
  'customer ' || g || repeat('x', (g % 37)::int),
  repeat(md5(g::text), 1 + (g % 5)::int),
  timestamptz '2020-01-01 00:00:00+00' + g * interval '13 second',
  timestamptz '2020-01-01 00:00:00+00' + g * interval '29 second' + (g % 1000) * interval '1 microsecond',
  g % 3 = 0,
  (g * 2654435761 % 1000003) / 7.0,
  CASE WHEN g % 4 = 0 THEN NULL ELSE 'note ' || (g % 997) END,
  date '2015-01-01' + (g % 3000)::int,
  (ARRAY['red', 'green', 'blue', 'amber'])[1 + (g % 4)::int]
"""


@dataclass(frozen=True)
class PgTarget:
    """The benchmark's PostgreSQL server: admin URL and the two databases."""

    admin_url: str

    @property
    def parts(self) -> tuple[str, int, str, str]:
        u = urlsplit(self.admin_url)
        return u.hostname or "127.0.0.1", u.port or 5432, unquote(u.username or ""), unquote(u.password or "")

    def url(self, dbname: str) -> str:
        u = urlsplit(self.admin_url)
        return urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, ""))

    def url_nopw(self, dbname: str) -> str:
        host, port, user, _ = self.parts
        return f"postgresql://{user}@{host}:{port}/{dbname}"

    def conninfo(self, dbname: str) -> str:
        """libpq key=value string without the password (psql gets PGPASSWORD)."""
        host, port, user, _ = self.parts
        return f"host={host} port={port} user={user} dbname={dbname}"

    def jdbc(self, dbname: str) -> str:
        host, port, _, _ = self.parts
        return f"jdbc:postgresql://{host}:{port}/{dbname}"

    @property
    def src(self) -> str:
        return self.url("bench_src")

    @property
    def dst(self) -> str:
        return self.url("bench_dst")


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")


def ensure_databases(pg: PgTarget) -> None:
    with connect(pg.admin_url) as c:
        have = {r[0] for r in c.execute("SELECT datname FROM pg_database")}
        for db in ("bench_src", "bench_dst"):
            if db not in have:
                c.execute(f'CREATE DATABASE "{db}"')


# -- TPC-H-like lineitem ---------------------------------------------------------------------

LI_COLUMNS: list[tuple[str, str, str]] = [
    ("l_orderkey", "bigint", "INTEGER"),
    ("l_partkey", "integer", "INTEGER"),
    ("l_suppkey", "integer", "INTEGER"),
    ("l_linenumber", "integer", "INTEGER"),
    ("l_quantity", "numeric(15,2)", "NUMERIC"),
    ("l_extendedprice", "numeric(15,2)", "NUMERIC"),
    ("l_discount", "numeric(15,2)", "NUMERIC"),
    ("l_tax", "numeric(15,2)", "NUMERIC"),
    ("l_returnflag", "character(1)", "TEXT"),
    ("l_linestatus", "character(1)", "TEXT"),
    ("l_shipdate", "date", "TEXT"),
    ("l_commitdate", "date", "TEXT"),
    ("l_receiptdate", "date", "TEXT"),
    ("l_shipinstruct", "character(25)", "TEXT"),
    ("l_shipmode", "character(10)", "TEXT"),
    ("l_comment", "character varying(44)", "TEXT"),
    ("l_updated_at", "timestamp with time zone", "TEXT"),
]
LI_KEY = ["l_orderkey", "l_linenumber"]
LI_UPDATED_EVERY = 200  # rows g with g % 200 == 7 are updated: 0.5%; n // 200 rows are new: 0.5%

# Row g (1-based) -> lineitem row. Rows come in blocks of 28 = 7 orders of 1..7 lines (4 on
# average, as in TPC-H): r = (g-1) % 28, order k of its block = floor((sqrt(8r+1)-1)/2), line
# r - k(k+1)/2 + 1. The mapping is one-to-one, so (l_orderkey, l_linenumber) is unique.
_LI_FROM = """(SELECT g, (g - 1) / 28 AS b, ((g - 1) % 28)::int AS r,
        floor((sqrt(8 * ((g - 1) % 28) + 1) - 1) / 2)::int AS k
      FROM generate_series({lo}::bigint, {hi}) g) s"""


def _li_exprs(changed: str | None) -> list[str]:
    """One expression per LI_COLUMNS entry over s.g / s.b / s.r / s.k; ``changed`` (SQL over g)
    marks the rows to write in their updated form (comment + '-u', price + 1, later updated_at)."""

    def upd(new: str, old: str) -> str:
        return old if changed is None else f"CASE WHEN {changed} THEN {new} ELSE {old} END"

    ship = "(date '1992-01-02' + (g * 37 % 2526)::int)"
    price = "((1 + g % 50) * (900 + (g * 7919 % 200000) % 1000 + (g % 100) / 100.0))"
    comment = "left(md5(g::text) || ' ' || md5((g + 1)::text), 10 + (g % 30)::int)"
    return [
        "b * 7 + k + 1",
        "(1 + g * 7919 % 200000)::integer",
        "(1 + g * 104729 % 10000)::integer",
        "r - k * (k + 1) / 2 + 1",
        "(1 + g % 50)::numeric(15,2)",
        upd(f"({price} + 1)::numeric(15,2)", f"{price}::numeric(15,2)"),
        "((g % 11) / 100.0)::numeric(15,2)",
        "((g % 9) / 100.0)::numeric(15,2)",
        "(ARRAY['A', 'N', 'R'])[1 + (g % 3)::int]::character(1)",
        upd("'F'::character(1)", "(CASE WHEN g % 2 = 0 THEN 'F' ELSE 'O' END)::character(1)"),
        ship,
        f"{ship} + ((g % 61) - 30)::int",
        f"{ship} + (1 + g % 30)::int",
        "(ARRAY['DELIVER IN PERSON', 'COLLECT COD', 'NONE', 'TAKE BACK RETURN'])[1 + (g % 4)::int]::character(25)",
        "(ARRAY['REG AIR', 'AIR', 'RAIL', 'SHIP', 'TRUCK', 'MAIL', 'FOB'])[1 + (g % 7)::int]::character(10)",
        upd(f"({comment} || '-u')::varchar(44)", f"{comment}::varchar(44)"),
        upd(
            f"timestamptz '{CHANGE_TIME}' + g * interval '1 millisecond'",
            "timestamptz '2020-01-01 00:00:00+00' + g * interval '7 second'",
        ),
    ]


def li_changes(n: int) -> tuple[int, int]:
    """(updated, inserted) rows of li_inc_<n> against li_<n>."""
    return len(range(7, n + 1, LI_UPDATED_EVERY)), n // LI_UPDATED_EVERY


def _li_ddl(table: str) -> str:
    cols = ",\n  ".join(f"{n} {t} NOT NULL" for n, t, _ in LI_COLUMNS)
    return f"CREATE TABLE {table} (\n  {cols},\n  PRIMARY KEY ({', '.join(LI_KEY)})\n)"


def build_lineitem(pg: PgTarget, n: int, log, rebuild: bool = False, incremental: bool = False) -> None:
    """li_<n> on bench_src; with ``incremental`` also li_inc_<n> there and li_base_<n> on bench_dst."""
    ensure_databases(pg)
    names = ", ".join(c[0] for c in LI_COLUMNS)
    with connect(pg.src) as c:
        if rebuild or not _meta_ok(c, f"li_{n}"):
            t0 = time.monotonic()
            c.execute(f"DROP TABLE IF EXISTS li_{n}")
            c.execute(_li_ddl(f"li_{n}"))
            c.execute(
                f"INSERT INTO li_{n} ({names}) SELECT {', '.join(_li_exprs(None))} "
                f"FROM {_LI_FROM.format(lo=1, hi=int(n))}"
            )
            c.execute(f"VACUUM ANALYZE li_{n}")
            _meta_set(c, f"li_{n}")
            log(f"built bench_src.li_{n} ({n:,} rows, lineitem-like) in {time.monotonic() - t0:.1f} s")
        if not incremental:
            return
        if rebuild or not _meta_ok(c, f"li_inc_{n}"):
            t0 = time.monotonic()
            upd, ins = li_changes(n)
            c.execute(f"DROP TABLE IF EXISTS li_inc_{n}")
            c.execute(_li_ddl(f"li_inc_{n}"))
            changed = f"(g % {LI_UPDATED_EVERY} = 7 OR g > {int(n)})"
            c.execute(
                f"INSERT INTO li_inc_{n} ({names}) SELECT {', '.join(_li_exprs(changed))} "
                f"FROM {_LI_FROM.format(lo=1, hi=int(n) + ins)}"
            )
            c.execute(f"CREATE INDEX ON li_inc_{n} (l_updated_at)")
            c.execute(f"VACUUM ANALYZE li_inc_{n}")
            _meta_set(c, f"li_inc_{n}")
            log(
                f"built bench_src.li_inc_{n} ({upd:,} updated, {ins:,} inserted) in {time.monotonic() - t0:.1f} s"
            )
    with connect(pg.dst) as d:
        if rebuild or not _meta_ok(d, f"li_base_{n}"):
            t0 = time.monotonic()
            d.execute(f"DROP TABLE IF EXISTS li_base_{n}")
            d.execute(_li_ddl(f"li_base_{n}"))
            _copy_table(pg, f"li_{n}", f"li_base_{n}")
            d.execute(f"VACUUM ANALYZE li_base_{n}")
            _meta_set(d, f"li_base_{n}")
            log(f"built bench_dst.li_base_{n} in {time.monotonic() - t0:.1f} s")


def _copy_table(pg: PgTarget, src_table: str, dst_table: str) -> None:
    """Binary COPY of a bench_src table into a bench_dst table with the same columns."""
    with connect(pg.src) as s, connect(pg.dst) as d:
        with (
            s.cursor().copy(f"COPY {src_table} TO STDOUT (FORMAT BINARY)") as cout,
            d.cursor().copy(f"COPY {dst_table} FROM STDIN (FORMAT BINARY)") as cin,
        ):
            for block in cout:
                cin.write(block)


def _meta_ok(c: psycopg.Connection, key: str) -> bool:
    c.execute(
        "CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, version int, built_at timestamptz)"
    )
    row = c.execute("SELECT version FROM bench_meta WHERE key = %s", (key,)).fetchone()
    return row is not None and row[0] == DATA_VERSION


def _meta_set(c: psycopg.Connection, key: str) -> None:
    c.execute(
        "INSERT INTO bench_meta VALUES (%s, %s, now()) ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
        "built_at = excluded.built_at",
        (key, DATA_VERSION),
    )


def _ddl(table: str) -> str:
    cols = ",\n  ".join(f"{n} {t}" + ("" if n == "note" else " NOT NULL") for n, t, _ in COLUMNS)
    return f"CREATE TABLE {table} (\n  {cols},\n  PRIMARY KEY (id)\n)"


def build_source(
    pg: PgTarget, n: int, log, rebuild: bool = False, full_only: bool = False, small_only: bool = False
) -> None:
    """full_<n>, inc_<n> and small_100 on bench_src; inc_base_<n> on bench_dst (``full_only``:
    just full_<n>; ``small_only``: just small_100, for the group job)."""
    ensure_databases(pg)
    with connect(pg.src) as c:
        if not small_only and (rebuild or not _meta_ok(c, f"full_{n}")):
            t0 = time.monotonic()
            c.execute(f"DROP TABLE IF EXISTS full_{n}")
            c.execute(_ddl(f"full_{n}"))
            c.execute(f"INSERT INTO full_{n} SELECT {_ROW_EXPR} FROM generate_series(1::bigint, {int(n)}) g")
            c.execute(f"VACUUM ANALYZE full_{n}")
            _meta_set(c, f"full_{n}")
            log(f"built bench_src.full_{n} ({n:,} rows) in {time.monotonic() - t0:.1f} s")
        if full_only:
            return
        if not small_only and (rebuild or not _meta_ok(c, f"inc_{n}")):
            t0 = time.monotonic()
            changed = "id % 20 = 7"  # 5% of the rows
            exprs = []
            for name, _, _ in COLUMNS:
                if name == "amount":
                    exprs.append(f"CASE WHEN {changed} THEN amount + 1 ELSE amount END")
                elif name == "name":
                    exprs.append(f"CASE WHEN {changed} THEN name || '-u' ELSE name END")
                elif name == "updated_at":
                    exprs.append(
                        f"CASE WHEN {changed} THEN timestamptz '{CHANGE_TIME}' + id * interval '1 millisecond' "
                        "ELSE updated_at END"
                    )
                else:
                    exprs.append(name)
            c.execute(f"DROP TABLE IF EXISTS inc_{n}")
            c.execute(_ddl(f"inc_{n}"))
            c.execute(f"INSERT INTO inc_{n} SELECT {', '.join(exprs)} FROM full_{n}")
            # 1% new rows, named like updated ones so a check can count every changed row.
            ins = [e.strip() for e in _ROW_EXPR.strip().split(",\n")]
            ins[3] = "'customer ' || g || '-u'"
            ins[6] = f"timestamptz '{CHANGE_TIME}' + g * interval '1 millisecond'"
            c.execute(
                f"INSERT INTO inc_{n} SELECT {', '.join(ins)} FROM generate_series({n + 1}::bigint, {n + n // 100}) g"
            )
            c.execute(f"CREATE INDEX ON inc_{n} (updated_at)")
            c.execute(f"VACUUM ANALYZE inc_{n}")
            _meta_set(c, f"inc_{n}")
            log(
                f"built bench_src.inc_{n} ({n // 20:,} updated, {n // 100:,} inserted) in {time.monotonic() - t0:.1f} s"
            )
        if rebuild or not _meta_ok(c, f"small_{SMALL_ROWS}"):
            c.execute(f"DROP TABLE IF EXISTS small_{SMALL_ROWS}")
            c.execute(_ddl(f"small_{SMALL_ROWS}"))
            c.execute(
                f"INSERT INTO small_{SMALL_ROWS} SELECT {_ROW_EXPR} FROM generate_series(1::bigint, {SMALL_ROWS}) g"
            )
            c.execute(f"VACUUM ANALYZE small_{SMALL_ROWS}")
            _meta_set(c, f"small_{SMALL_ROWS}")
    if small_only:
        return
    with connect(pg.dst) as d:
        if rebuild or not _meta_ok(d, f"inc_base_{n}"):
            t0 = time.monotonic()
            d.execute(f"DROP TABLE IF EXISTS inc_base_{n}")
            d.execute(_ddl(f"inc_base_{n}"))
            _copy_table(pg, f"full_{n}", f"inc_base_{n}")
            d.execute(f"VACUUM ANALYZE inc_base_{n}")
            _meta_set(d, f"inc_base_{n}")
            log(f"built bench_dst.inc_base_{n} in {time.monotonic() - t0:.1f} s")


def _sqlite_value(v: object) -> object:
    if v is None or isinstance(v, (int, float, str)):
        return int(v) if isinstance(v, bool) else v
    if hasattr(v, "isoformat"):
        return v.isoformat(sep=" ") if hasattr(v, "hour") else v.isoformat()  # type: ignore[call-arg]
    return str(v)  # Decimal


def build_sqlite(pg: PgTarget, n: int, workdir: Path, log) -> Path:
    """src_<n>.db with ``full`` (n rows) and ``small`` (100 rows), copied from bench_src."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"src_{n}.db"
    marker = workdir / f"src_{n}.db.v{DATA_VERSION}"
    if path.exists() and marker.exists():
        return path
    t0 = time.monotonic()
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{name} {st}" for name, _, st in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        with connect(pg.src) as s:
            for table, srct in (("full", f"full_{n}"), ("small", f"small_{SMALL_ROWS}")):
                con.execute(f"CREATE TABLE {table} ({cols})")
                with s.transaction(), s.cursor(name=f"bench_{table}") as cur:
                    cur.itersize = 10_000
                    cur.execute(f"SELECT {SELECT_LIST} FROM {srct} ORDER BY id")
                    while True:
                        rows = cur.fetchmany(10_000)
                        if not rows:
                            break
                        con.executemany(
                            f"INSERT INTO {table} VALUES ({marks})",
                            [tuple(_sqlite_value(v) for v in r) for r in rows],
                        )
                con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    marker.touch()
    log(f"built {path.name} in {time.monotonic() - t0:.1f} s")
    return path


def reset_pg_table(
    pg: PgTarget,
    table: str,
    *,
    like: str | None = None,
    fill: str | None = None,
    columns: list[str] | None = None,
    add_key: list[str] | None = None,
) -> str:
    """Drop ``table`` on bench_dst; with ``like``, create it again as ``CREATE TABLE ... (LIKE
    <like> INCLUDING ALL)`` (columns, NOT NULL, defaults, primary key, indexes), refill it from
    ``fill`` (the state before the incremental change), add the primary key ``add_key`` when the
    table has none, and VACUUM ANALYZE it. Ends with a CHECKPOINT so each run starts with no
    dirty pages left by the previous one. Returns a note on what was done with ``add_key``."""
    schema = table.split(".", 1)[0]
    note = ""
    with connect(pg.dst) as d:
        d.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        d.execute(f"DROP TABLE IF EXISTS {table}")
        if like:
            d.execute(f"CREATE TABLE {table} (LIKE {like} INCLUDING ALL)")
        if fill:
            cols = ", ".join(columns) if columns else "*"
            target = f"{table} ({cols})" if columns else table
            d.execute(f"INSERT INTO {target} SELECT {cols} FROM {fill}")
        if add_key:
            if has_primary_key(d, table):
                note = "the table pipekit created already has a primary key: nothing added by hand"
            else:
                d.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(add_key)})")
                note = f"primary key ({', '.join(add_key)}) added by hand after the load"
        if fill:
            d.execute(f"VACUUM ANALYZE {table}")
        d.execute("CHECKPOINT")
    return note


def has_primary_key(d: psycopg.Connection, table: str) -> bool:
    row = d.execute(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'", (table,)
    ).fetchone()
    return bool(row and row[0])


def table_exists(pg: PgTarget, table: str) -> bool:
    with connect(pg.dst) as d:
        row = d.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return bool(row and row[0])


def describe_pg_table(pg: PgTarget, table: str) -> str:
    """Columns (type, NOT NULL) and indexes of a bench_dst table, for the report."""
    with connect(pg.dst) as d:
        cols = d.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (table,),
        ).fetchall()
        idx = d.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass ORDER BY indexrelid",
            (table,),
        ).fetchall()
    text = ", ".join(f"{n} {t}{' NOT NULL' if nn else ''}" for n, t, nn in cols)
    return text + "; indexes: " + ("; ".join(r[0].split(" USING ", 1)[-1] for r in idx) or "none")


def drop_schema(pg: PgTarget, schema: str) -> None:
    with connect(pg.dst) as d:
        d.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        d.execute("CHECKPOINT")


def pg_check(pg: PgTarget, table: str, changed: str = "name LIKE '%-u'") -> tuple[int, int]:
    """(rows, changed rows) of a destination table; changed rows carry a name (lineitem: a
    comment) ending '-u'."""
    with connect(pg.dst) as d:
        row = d.execute(f"SELECT count(*), count(*) FILTER (WHERE {changed}) FROM {table}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def pg_count_tables(pg: PgTarget, tables: list[str]) -> int:
    """Rows in all ``tables`` together (the group job's destinations)."""
    with connect(pg.dst) as d:
        row = d.execute("SELECT " + " + ".join(f"(SELECT count(*) FROM {t})" for t in tables)).fetchone()
    assert row is not None
    return int(row[0])


def sqlite_check(path: Path, table: str) -> tuple[int, int]:
    con = sqlite3.connect(path)
    try:
        row = con.execute(f"SELECT count(*), sum(name LIKE '%-u') FROM {table}").fetchone()
    finally:
        con.close()
    return int(row[0]), int(row[1] or 0)
