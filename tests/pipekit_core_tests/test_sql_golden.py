"""Golden SQL for every dialect x strategy x key form (readable ids), quoting, names, types.

Execution of the same SQL on real PostgreSQL and SQLite is in test_sql_exec.py.
"""

from __future__ import annotations

import pytest

from pipekit_core.sql import ColumnDef, MergeBuilder, TableName, get_dialect, map_type, parse_table_name
from pipekit_core.sql.types import TYPE_MAP_DOC

DEST = {
    "postgresql": TableName("public", "orders"),
    "sqlite": TableName(None, "orders"),
    "sqlserver": TableName("dbo", "orders"),
    "db2": TableName("erp", "orders"),
}


def _staging(kind: str) -> TableName:
    return get_dialect(kind).staging_table("orders", "pipekit_staging")


def _plan(
    kind: str, strategy: str, key: list[str], key_not_null: bool, cols: list[str] | None = None
) -> list[str]:
    b = MergeBuilder(get_dialect(kind))
    return b.plan(strategy, DEST[kind], _staging(kind), cols or ["id", "name"], key, key_not_null).statements


PG_INS = 'INSERT INTO "public"."orders" ("id", "name") SELECT "id", "name" FROM "pipekit_staging"."orders"'
LITE_INS = 'INSERT INTO "orders" ("id", "name") SELECT "id", "name" FROM "pipekit_staging__orders"'
MS_INS = "INSERT INTO [dbo].[orders] ([id], [name]) SELECT [id], [name] FROM [pipekit_staging].[orders]"
DB2_INS = 'INSERT INTO "erp"."orders" ("id", "name") SELECT "id", "name" FROM "pipekit_staging"."orders"'

PG_DEL = 'DELETE FROM "public"."orders" WHERE "id" IN (SELECT s."id" FROM "pipekit_staging"."orders" AS s)'
LITE_DEL = 'DELETE FROM "orders" WHERE "id" IN (SELECT s."id" FROM "pipekit_staging__orders" AS s)'
DB2_DEL = 'DELETE FROM "erp"."orders" WHERE "id" IN (SELECT s."id" FROM "pipekit_staging"."orders" AS s)'

# id = dialect-strategy[-key form]; single merge key "id", columns (id, name).
GOLDEN: dict[str, list[str]] = {
    "postgresql-full": ['DELETE FROM "public"."orders"', PG_INS],
    "postgresql-append": [PG_INS],
    "postgresql-incremental-key_not_null": [PG_DEL, PG_INS],
    "postgresql-incremental-key_nullable": [
        PG_DEL,
        'DELETE FROM "public"."orders" WHERE "id" IS NULL AND EXISTS '
        '(SELECT 1 FROM "pipekit_staging"."orders" AS s WHERE s."id" IS NULL)',
        PG_INS,
    ],
    "sqlite-full": ['DELETE FROM "orders"', LITE_INS],
    "sqlite-append": [LITE_INS],
    "sqlite-incremental-key_not_null": [LITE_DEL, LITE_INS],
    "sqlite-incremental-key_nullable": [
        LITE_DEL,
        'DELETE FROM "orders" WHERE "id" IS NULL AND EXISTS '
        '(SELECT 1 FROM "pipekit_staging__orders" AS s WHERE s."id" IS NULL)',
        LITE_INS,
    ],
    "sqlserver-full": ["DELETE FROM [dbo].[orders]", MS_INS],
    "sqlserver-append": [MS_INS],
    "sqlserver-incremental-key_not_null": [
        "DELETE d FROM [dbo].[orders] AS d WHERE EXISTS "
        "(SELECT 1 FROM [pipekit_staging].[orders] AS s WHERE s.[id] = d.[id])",
        MS_INS,
    ],
    "sqlserver-incremental-key_nullable": [
        "DELETE d FROM [dbo].[orders] AS d WHERE EXISTS (SELECT 1 FROM [pipekit_staging].[orders] AS s "
        "WHERE EXISTS (SELECT s.[id] INTERSECT SELECT d.[id]))",
        MS_INS,
    ],
    "db2-full": ['DELETE FROM "erp"."orders"', DB2_INS],
    "db2-append": [DB2_INS],
    "db2-incremental-key_not_null": [DB2_DEL, DB2_INS],
    "db2-incremental-key_nullable": [
        DB2_DEL,
        'DELETE FROM "erp"."orders" WHERE "id" IS NULL AND EXISTS '
        '(SELECT 1 FROM "pipekit_staging"."orders" AS s WHERE s."id" IS NULL)',
        DB2_INS,
    ],
}


@pytest.mark.parametrize("case_id", list(GOLDEN))
def test_merge_golden(case_id: str) -> None:
    kind, strategy, *form = case_id.split("-")
    assert _plan(kind, strategy, ["id"], form == ["key_not_null"]) == GOLDEN[case_id]


PG_S = '"pipekit_staging"."orders"'
COMPOSITE = {
    "postgresql-composite-key_not_null": (
        "postgresql",
        True,
        [f'DELETE FROM "public"."orders" WHERE ("a", "b") IN (SELECT s."a", s."b" FROM {PG_S} AS s)'],
    ),
    "postgresql-composite-key_nullable": (
        "postgresql",
        False,
        [
            f'DELETE FROM "public"."orders" WHERE ("a", "b") IN (SELECT s."a", s."b" FROM {PG_S} AS s)',
            f'DELETE FROM "public"."orders" WHERE "a" IS NULL AND "b" IN (SELECT s."b" FROM {PG_S} AS s WHERE s."a" IS NULL)',
            f'DELETE FROM "public"."orders" WHERE "b" IS NULL AND "a" IN (SELECT s."a" FROM {PG_S} AS s WHERE s."b" IS NULL)',
            'DELETE FROM "public"."orders" WHERE "a" IS NULL AND "b" IS NULL AND EXISTS '
            f'(SELECT 1 FROM {PG_S} AS s WHERE s."a" IS NULL AND s."b" IS NULL)',
        ],
    ),
    "sqlite-composite-key_nullable": (
        "sqlite",
        False,
        [
            'DELETE FROM "orders" WHERE ("a", "b") IN (SELECT s."a", s."b" FROM "pipekit_staging__orders" AS s)',
            'DELETE FROM "orders" WHERE "a" IS NULL AND "b" IN '
            '(SELECT s."b" FROM "pipekit_staging__orders" AS s WHERE s."a" IS NULL)',
            'DELETE FROM "orders" WHERE "b" IS NULL AND "a" IN '
            '(SELECT s."a" FROM "pipekit_staging__orders" AS s WHERE s."b" IS NULL)',
            'DELETE FROM "orders" WHERE "a" IS NULL AND "b" IS NULL AND EXISTS '
            '(SELECT 1 FROM "pipekit_staging__orders" AS s WHERE s."a" IS NULL AND s."b" IS NULL)',
        ],
    ),
    "sqlserver-composite-key_nullable": (
        "sqlserver",
        False,
        [
            "DELETE d FROM [dbo].[orders] AS d WHERE EXISTS (SELECT 1 FROM [pipekit_staging].[orders] AS s "
            "WHERE EXISTS (SELECT s.[a], s.[b] INTERSECT SELECT d.[a], d.[b]))",
        ],
    ),
}


@pytest.mark.parametrize("case_id", list(COMPOSITE))
def test_composite_key_golden(case_id: str) -> None:
    kind, not_null, deletes = COMPOSITE[case_id]
    stmts = _plan(kind, "incremental", ["a", "b"], not_null, cols=["a", "b", "v"])
    assert stmts[:-1] == deletes
    assert stmts[-1].startswith("INSERT INTO ")


def test_three_part_key_has_one_statement_per_null_pattern() -> None:
    stmts = _plan("postgresql", "incremental", ["a", "b", "c"], False, cols=["a", "b", "c"])
    assert len(stmts) == 1 + 7 + 1  # all-non-null, 2**3 - 1 NULL patterns, insert


def test_wide_nullable_key_falls_back_to_one_restricted_statement() -> None:
    stmts = _plan("postgresql", "incremental", ["a", "b", "c", "e"], False, cols=["a", "b", "c", "e"])
    assert len(stmts) == 3
    assert stmts[1] == (
        'DELETE FROM "public"."orders" AS d WHERE (d."a" IS NULL OR d."b" IS NULL OR d."c" IS NULL OR d."e" IS NULL) '
        f'AND EXISTS (SELECT 1 FROM {PG_S} AS s WHERE (s."a" IS NULL OR s."b" IS NULL OR s."c" IS NULL OR s."e" IS NULL) '
        'AND s."a" IS NOT DISTINCT FROM d."a" AND s."b" IS NOT DISTINCT FROM d."b" '
        'AND s."c" IS NOT DISTINCT FROM d."c" AND s."e" IS NOT DISTINCT FROM d."e")'
    )


GUARDS = {
    "postgresql": (
        'SELECT "id", count(*) AS "count" FROM "pipekit_staging"."orders" GROUP BY "id" '
        "HAVING count(*) > 1 ORDER BY 2 DESC, 1 LIMIT 5",
        'SELECT 1 FROM "public"."orders" LIMIT 1',
        'SELECT count(*) FROM "public"."orders"',
    ),
    "sqlite": (
        'SELECT "id", count(*) AS "count" FROM "pipekit_staging__orders" GROUP BY "id" '
        "HAVING count(*) > 1 ORDER BY 2 DESC, 1 LIMIT 5",
        'SELECT 1 FROM "orders" LIMIT 1',
        'SELECT count(*) FROM "orders"',
    ),
    "sqlserver": (
        "SELECT TOP 5 [id], count(*) AS [count] FROM [pipekit_staging].[orders] GROUP BY [id] "
        "HAVING count(*) > 1 ORDER BY 2 DESC, 1",
        "SELECT TOP 1 1 FROM [dbo].[orders]",
        "SELECT COUNT_BIG(*) FROM [dbo].[orders]",
    ),
    "db2": (
        'SELECT "id", count(*) AS "count" FROM "pipekit_staging"."orders" GROUP BY "id" '
        "HAVING count(*) > 1 ORDER BY 2 DESC, 1 FETCH FIRST 5 ROWS ONLY",
        'SELECT 1 FROM "erp"."orders" FETCH FIRST 1 ROWS ONLY',
        'SELECT count(*) FROM "erp"."orders"',
    ),
}


@pytest.mark.parametrize("kind", list(GUARDS))
def test_guards_and_count_golden(kind: str) -> None:
    b = MergeBuilder(get_dialect(kind))
    dup, nonempty, count = GUARDS[kind]
    assert b.duplicate_key_sql(_staging(kind), ["id"]) == dup
    assert b.nonempty_sql(DEST[kind]) == nonempty
    assert b.plan("append", DEST[kind], _staging(kind), ["id"], [], False).count_sql == count


COLS = [ColumnDef("id", "bigint", nullable=False), ColumnDef("Order Id", "text")]
DDL = {
    "postgresql": (
        [
            'CREATE SCHEMA IF NOT EXISTS "pipekit_staging"',
            'DROP TABLE IF EXISTS "pipekit_staging"."orders"',
            'CREATE UNLOGGED TABLE "pipekit_staging"."orders" ("id" bigint, "Order Id" text)',
        ],
        [
            'CREATE SCHEMA IF NOT EXISTS "public"',
            'CREATE TABLE "public"."orders" ("id" bigint NOT NULL, "Order Id" text)',
        ],
        'ANALYZE "pipekit_staging"."orders"',
    ),
    "sqlite": (
        [
            'DROP TABLE IF EXISTS "pipekit_staging__orders"',
            'CREATE TABLE "pipekit_staging__orders" ("id" bigint, "Order Id" text)',
        ],
        ['CREATE TABLE "orders" ("id" bigint NOT NULL, "Order Id" text)'],
        None,
    ),
    "sqlserver": (
        [
            "IF SCHEMA_ID(N'pipekit_staging') IS NULL EXEC(N'CREATE SCHEMA [pipekit_staging]')",
            "DROP TABLE IF EXISTS [pipekit_staging].[orders]",
            "CREATE TABLE [pipekit_staging].[orders] ([id] bigint, [Order Id] text)",
        ],
        [
            "IF SCHEMA_ID(N'dbo') IS NULL EXEC(N'CREATE SCHEMA [dbo]')",
            "CREATE TABLE [dbo].[orders] ([id] bigint NOT NULL, [Order Id] text)",
        ],
        "UPDATE STATISTICS [pipekit_staging].[orders]",
    ),
    "db2": (
        [
            "BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '42710' BEGIN END; "
            "EXECUTE IMMEDIATE 'CREATE SCHEMA \"pipekit_staging\"'; END",
            "BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '42704' BEGIN END; "
            'EXECUTE IMMEDIATE \'DROP TABLE "pipekit_staging"."orders"\'; END',
            'CREATE TABLE "pipekit_staging"."orders" ("id" bigint, "Order Id" text)',
        ],
        [
            "BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '42710' BEGIN END; "
            "EXECUTE IMMEDIATE 'CREATE SCHEMA \"erp\"'; END",
            'CREATE TABLE "erp"."orders" ("id" bigint NOT NULL, "Order Id" text)',
        ],
        None,
    ),
}


@pytest.mark.parametrize("kind", list(DDL))
def test_ddl_golden(kind: str) -> None:
    d = get_dialect(kind)
    staging_ddl, table_ddl, analyze = DDL[kind]
    assert d.create_staging_sql(_staging(kind), COLS, "pipekit_staging") == staging_ddl
    assert d.create_table_sql(DEST[kind], COLS) == table_ddl
    assert d.analyze_sql(_staging(kind)) == analyze


def test_sqlite_staging_name_and_untyped_columns() -> None:
    d = get_dialect("sqlite")
    assert d.staging_table("orders", "pipekit_staging") == TableName(None, "pipekit_staging__orders")
    t = TableName(None, "t")
    assert d.create_table_sql(t, [ColumnDef("a", "")]) == ['CREATE TABLE "t" ("a")']
    with pytest.raises(ValueError, match="no type"):
        get_dialect("postgresql").create_table_sql(t, [ColumnDef("a", "")])


QUOTING = [
    ("select", '"select"', "[select]"),
    ("Order Id", '"Order Id"', "[Order Id]"),
    ('we"ird', '"we""ird"', '[we"ird]'),
    ("a]b", '"a]b"', "[a]]b]"),
    ("MixedCase", '"MixedCase"', "[MixedCase]"),
]


@pytest.mark.parametrize(("ident", "dq", "ms"), QUOTING, ids=[q[0] for q in QUOTING])
def test_quote_identifiers(ident: str, dq: str, ms: str) -> None:
    for kind in ("postgresql", "sqlite", "db2"):
        assert get_dialect(kind).quote(ident) == dq
    assert get_dialect("sqlserver").quote(ident) == ms


def test_quote_rejects_empty_and_nul() -> None:
    for bad in ("", "a\x00b"):
        with pytest.raises(ValueError):
            get_dialect("postgresql").quote(bad)


def test_weird_identifiers_in_merge() -> None:
    b = MergeBuilder(get_dialect("postgresql"))
    dest = parse_table_name('"My Schema"."Odd ""T"" x"')
    stmts = b.incremental(dest, TableName("pipekit_staging", "m"), ["select", 'we"ird'], ['we"ird'], True)
    assert stmts == [
        'DELETE FROM "My Schema"."Odd ""T"" x" WHERE "we""ird" IN (SELECT s."we""ird" FROM "pipekit_staging"."m" AS s)',
        'INSERT INTO "My Schema"."Odd ""T"" x" ("select", "we""ird") SELECT "select", "we""ird" FROM "pipekit_staging"."m"',
    ]


TABLE_NAMES = {
    "schema-dot-table": ("public.orders", TableName("public", "orders")),
    "bare": ("orders", TableName(None, "orders")),
    "unquoted-folds-lower": ("Public.Orders", TableName("public", "orders")),
    "quoted-keeps-case-dots-quotes": ('"My Schema"."Odd ""T"" .x"', TableName("My Schema", 'Odd "T" .x')),
    "quoted-ends-with-quote": ('"My Schema"."Odd ""T"""', TableName("My Schema", 'Odd "T"')),
    "mixed": ('public."Order Lines"', TableName("public", "Order Lines")),
    "spaces-around": ('  public . "x y"  ', TableName("public", "x y")),
}


@pytest.mark.parametrize("case_id", list(TABLE_NAMES))
def test_parse_table_name(case_id: str) -> None:
    text, expected = TABLE_NAMES[case_id]
    assert parse_table_name(text) == expected


BAD_NAMES = {
    "empty": ("", "empty"),
    "blank": ("   ", "empty"),
    "three-parts": ("a.b.c", "3 parts"),
    "empty-part": ("a..b", "empty part"),
    "trailing-dot": ("a.", "ends with a dot"),
    "unterminated": ('"abc', "unterminated"),
    "unquoted-space": ("my table", "double-quote"),
    "empty-quoted": ('""', "empty quoted"),
}


@pytest.mark.parametrize("case_id", list(BAD_NAMES))
def test_parse_table_name_errors(case_id: str) -> None:
    text, msg = BAD_NAMES[case_id]
    with pytest.raises(ValueError, match=msg):
        parse_table_name(text)


WRAP = {
    "plain": ("SELECT 1 AS a", "SELECT * FROM (\nSELECT 1 AS a\n) AS q WHERE 1=0"),
    "semicolons-and-space": ("SELECT 1 AS a ; ;\n  ", "SELECT * FROM (\nSELECT 1 AS a\n) AS q WHERE 1=0"),
    # trailing comments go too (pipekit_core.sql.query.prepare_for_wrapping: one rule for every wrap)
    "trailing-comment": ("SELECT 1 AS a -- why", "SELECT * FROM (\nSELECT 1 AS a\n) AS q WHERE 1=0"),
    "semicolon-then-comment": ("SELECT ';' AS a; -- why", "SELECT * FROM (\nSELECT ';' AS a\n) AS q WHERE 1=0"),
}


@pytest.mark.parametrize("case_id", list(WRAP))
def test_zero_row_wrap(case_id: str) -> None:
    sql, expected = WRAP[case_id]
    for kind in ("postgresql", "sqlite", "sqlserver", "db2"):
        assert get_dialect(kind).zero_row_wrap(sql) == expected


def test_get_dialect_names_and_errors() -> None:
    assert get_dialect("as400").name == get_dialect("db2").name == "db2"
    assert get_dialect("PostgreSQL").name == "postgresql"
    with pytest.raises(ValueError, match="as400, db2, postgresql, sqlite, sqlserver"):
        get_dialect("oracle")


BUILDER_ERRORS = {
    "unknown-strategy": (("upsert", ["id"], ["id"]), "valid strategies: full, incremental, append"),
    "key-not-in-columns": (("incremental", ["name"], ["id"]), "not among the staged columns"),
    "empty-key": (("incremental", ["id"], []), "merge_key is empty"),
    "no-columns": (("full", [], []), "at least one column"),
    "repeated-column": (("append", ["id", "id"], []), "columns repeat: id"),
}


@pytest.mark.parametrize("case_id", list(BUILDER_ERRORS))
def test_builder_errors(case_id: str) -> None:
    (strategy, cols, key), msg = BUILDER_ERRORS[case_id]
    b = MergeBuilder(get_dialect("postgresql"))
    with pytest.raises(ValueError, match=msg):
        b.plan(strategy, DEST["postgresql"], _staging("postgresql"), cols, key, True)


# source kind | destination kind | source type | destination type
TYPES = """
postgresql | postgresql | int4 | integer
postgresql | postgresql | int8 | bigint
postgresql | postgresql | _int4 | integer[]
postgresql | postgresql | numeric(12,2) | numeric(12,2)
postgresql | postgresql | varchar(20) | varchar(20)
postgresql | postgresql | character varying(20)[] | varchar(20)[]
postgresql | postgresql | timestamptz | timestamp with time zone
postgresql | postgresql | timestamp(3) with time zone | timestamp(3) with time zone
postgresql | postgresql | bpchar | bpchar
postgresql | postgresql | jsonb | jsonb
postgresql | postgresql | interval day to second | interval day to second
postgresql | postgresql | my_enum | text
postgresql | sqlite | int4 | INTEGER
postgresql | sqlite | numeric(12,2) | NUMERIC
postgresql | sqlite | float8 | REAL
postgresql | sqlite | bool | INTEGER
postgresql | sqlite | bytea | BLOB
postgresql | sqlite | timestamptz | TEXT
postgresql | sqlite | _int4 | TEXT
sqlite | postgresql | INTEGER | bigint
sqlite | postgresql | REAL | double precision
sqlite | postgresql | TEXT | text
sqlite | postgresql | BLOB | bytea
sqlite | postgresql | varchar(30) | varchar(30)
sqlite | postgresql |  | text
sqlite | postgresql | int | bigint
sqlite | postgresql | NoneType | text
sqlite | postgresql | WHATEVER | text
sqlite | sqlite | DATETIME | DATETIME
sqlite | sqlite |  |
sqlite | sqlite | float | REAL
sqlserver | postgresql | nvarchar(max) | text
sqlserver | postgresql | timestamp | bytea
as400 | postgresql | DECIMAL(11, 2) | numeric(11,2)
as400 | postgresql | CHAR(10) FOR BIT DATA | bytea
db2 | sqlite | INTEGER | INTEGER
"""
TYPE_CASES = [tuple(p.strip() for p in line.split("|")) for line in TYPES.strip().splitlines()]


@pytest.mark.parametrize(
    ("src", "dst", "typ", "expected"), TYPE_CASES, ids=[f"{s}-{d}-{t or 'none'}" for s, d, t, _ in TYPE_CASES]
)
def test_map_type(src: str, dst: str, typ: str, expected: str) -> None:
    assert map_type(src, dst, typ) == expected


def test_map_type_errors_and_doc() -> None:
    with pytest.raises(ValueError, match="destinations: postgresql, sqlite"):
        map_type("postgresql", "sqlserver", "int4")
    with pytest.raises(ValueError, match="source kind 'oracle'"):
        map_type("oracle", "postgresql", "NUMBER")
    assert "| postgresql | `_int4` | `integer[]` | `TEXT` |" in TYPE_MAP_DOC
