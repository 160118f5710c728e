"""SQL dialects: identifier quoting, table names and the DDL pipekit runs around a merge.

Every identifier pipekit puts into SQL goes through ``Dialect.quote`` (the one place per
dialect, as sqlite-utils' ``quote_identifier``). Builders here only return text; executing
it is the transports' job.

Only PostgreSQL and SQLite are executed in this project's tests (they are the destinations
with native drivers). The SQL Server and DB2 dialects cover quoting and the zero-row wrap
for sources, and their DDL/merge SQL is checked against golden text only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = [
    "ColumnDef",
    "DB2Dialect",
    "Dialect",
    "PostgresDialect",
    "SQLServerDialect",
    "SQLiteDialect",
    "TableName",
    "get_dialect",
    "parse_table_name",
]


@dataclass(frozen=True)
class TableName:
    """A table name split into its optional schema and its name, both unquoted."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ColumnDef:
    """A destination column: its name, its SQL type text and whether it accepts NULL."""

    name: str
    type: str
    nullable: bool = True


def parse_table_name(text: str) -> TableName:
    """Split ``[schema.]table`` into a :class:`TableName`.

    Double-quoted parts keep their case and may contain dots, spaces and doubled quotes
    (``"My Schema"."Odd ""T"" x"`` -> ``TableName("My Schema", 'Odd "T" x')``). Unquoted parts are
    folded to lower case, as PostgreSQL does with unquoted identifiers, so ``Public.Orders``
    names the same table that ``ANALYZE Public.Orders`` in a hook would.

    Raises:
        ValueError: the text is empty, has more than two parts, an empty part, an unterminated
            quote, or an unquoted part with spaces or quotes in it.
    """
    parts: list[str] = []
    s = text.strip()
    hint = 'write [schema.]table, e.g. public.orders or "My Schema"."My Table"'
    if not s:
        raise ValueError(f"table name is empty; {hint}")
    i, n = 0, len(s)
    while True:
        while i < n and s[i].isspace():
            i += 1
        if i < n and s[i] == '"':
            buf: list[str] = []
            i += 1
            while True:
                j = s.find('"', i)
                if j < 0:
                    raise ValueError(f"table name {text!r} has an unterminated double quote; {hint}")
                buf.append(s[i:j])
                if j + 1 < n and s[j + 1] == '"':
                    buf.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            part = "".join(buf)
            if not part:
                raise ValueError(f'table name {text!r} has an empty quoted part ""; {hint}')
        else:
            j = s.find(".", i)
            j = n if j < 0 else j
            raw = s[i:j].strip()
            if not raw:
                raise ValueError(f"table name {text!r} has an empty part; {hint}")
            if '"' in raw or any(c.isspace() for c in raw):
                raise ValueError(
                    f"table name {text!r}: part {raw!r} has a quote or a space; "
                    f'double-quote such names, e.g. "{raw.replace(chr(34), chr(34) * 2)}"'
                )
            part = raw.lower()
            i = j
        parts.append(part)
        while i < n and s[i].isspace():
            i += 1
        if i == n:
            break
        if s[i] != ".":
            raise ValueError(f"table name {text!r}: unexpected {s[i]!r} at position {i}; {hint}")
        i += 1
        if i == n:
            raise ValueError(f"table name {text!r} ends with a dot; {hint}")
    if len(parts) > 2:
        raise ValueError(f"table name {text!r} has {len(parts)} parts; {hint}")
    return TableName(None, parts[0]) if len(parts) == 1 else TableName(parts[0], parts[1])


class Dialect:
    """SQL text for one kind of database. Subclass per database; override the small steps."""

    name: str = ""
    #: longest identifier (in UTF-8 bytes) the database keeps; longer names are hash-suffixed
    max_identifier: int = 128
    supports_schemas: bool = True
    open_quote: str = '"'
    close_quote: str = '"'
    #: ``(a, b) IN (SELECT ...)`` works (not on SQL Server).
    supports_row_value_in: bool = True

    def quote(self, ident: str) -> str:
        """Quote an identifier; the only place identifiers are quoted for this dialect.

        Raises:
            ValueError: the identifier is empty or contains a NUL character.
        """
        if not ident:
            raise ValueError(f"{self.name}: an identifier must not be empty")
        if "\x00" in ident:
            raise ValueError(f"{self.name}: identifier {ident!r} contains a NUL character")
        doubled = ident.replace(self.close_quote, self.close_quote * 2)
        return f"{self.open_quote}{doubled}{self.close_quote}"

    def literal(self, value: str) -> str:
        """A string literal, for DDL that cannot take bound parameters."""
        return "'" + value.replace("'", "''") + "'"

    def table(self, t: TableName) -> str:
        """The qualified, quoted name of a table."""
        if t.schema is None:
            return self.quote(t.name)
        return f"{self.quote(t.schema)}.{self.quote(t.name)}"

    def staging_table(self, module: str, staging_schema: str) -> TableName:
        """Where a module's rows are staged on this destination (unique per module, within the limit)."""
        return TableName(staging_schema, self.fit_identifier(module))

    def fit_identifier(self, name: str) -> str:
        """``name`` if it fits :attr:`max_identifier` bytes, else a prefix + ``_`` + 8 hex of its sha1."""
        raw = name.encode("utf-8")
        if len(raw) <= self.max_identifier:
            return name
        digest = hashlib.sha1(raw).hexdigest()[:8]
        head = raw[: self.max_identifier - 9].decode("utf-8", errors="ignore")
        return f"{head}_{digest}"

    def column_sql(self, c: ColumnDef, *, force_nullable: bool = False) -> str:
        """One column of a CREATE TABLE."""
        if not c.type.strip():
            raise ValueError(f"{self.name}: column {c.name!r} has no type; set dest_type in columns:")
        null = "" if force_nullable or c.nullable else " NOT NULL"
        return f"{self.quote(c.name)} {c.type.strip()}{null}"

    def create_schema_sql(self, schema: str) -> str | None:
        """Create a schema unless it exists; None where schemas are not created this way."""
        return f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}"

    def create_table_head(self, *, staging: bool) -> str:
        """``CREATE TABLE``, or a cheaper variant for the throw-away staging table."""
        return "CREATE TABLE"

    def _create(self, t: TableName, columns: list[ColumnDef], *, staging: bool, primary_key: list[str] | None = None) -> str:
        if not columns:
            raise ValueError(f"{self.name}: table {t} needs at least one column")
        cols = ", ".join(self.column_sql(c, force_nullable=staging) for c in columns)
        if primary_key:
            cols += f", PRIMARY KEY ({', '.join(self.quote(k) for k in primary_key)})"
        return f"{self.create_table_head(staging=staging)} {self.table(t)} ({cols})"

    def create_staging_sql(
        self, staging: TableName, columns: list[ColumnDef], staging_schema: str
    ) -> list[str]:
        """Statements that (re)create the staging table: columns in the given order, all nullable."""
        out: list[str] = []
        schema = staging.schema or (staging_schema if self.supports_schemas else None)
        if schema is not None and self.supports_schemas:
            ddl = self.create_schema_sql(schema)
            if ddl:
                out.append(ddl)
        out.append(self.drop_table_sql(staging))
        out.append(self._create(staging, columns, staging=True))
        return out

    def drop_table_sql(self, t: TableName) -> str:
        """Drop a table if it exists."""
        return f"DROP TABLE IF EXISTS {self.table(t)}"

    def create_table_sql(
        self, t: TableName, columns: list[ColumnDef], primary_key: list[str] | None = None,
        indexes: list[list[str]] | None = None,
    ) -> list[str]:
        """Statements that create the destination table (and its schema when one is named), with a
        primary key (its columns NOT NULL) and indexes when given."""
        out: list[str] = []
        if t.schema is not None and self.supports_schemas:
            ddl = self.create_schema_sql(t.schema)
            if ddl:
                out.append(ddl)
        if primary_key:  # the key's columns NOT NULL (SQLite's PRIMARY KEY alone would take NULL)
            columns = [ColumnDef(c.name, c.type, nullable=False) if c.name in primary_key else c for c in columns]
        out.append(self._create(t, columns, staging=False, primary_key=primary_key))
        for cols in indexes or []:
            name = self.fit_identifier(f"{t.name}__{'_'.join(cols)}_idx")  # (PostgreSQL: in the table's schema)
            out.append(f"CREATE INDEX {self.quote(name)} ON {self.table(t)} ({', '.join(self.quote(c) for c in cols)})")
        return out

    def add_column_sql(self, t: TableName, column: ColumnDef) -> str:
        """Add a (nullable) column to an existing table (a schema change the module allows)."""
        return f"ALTER TABLE {self.table(t)} ADD COLUMN {self.column_sql(ColumnDef(column.name, column.type))}"

    def alter_column_type_sql(self, t: TableName, column: ColumnDef) -> str | None:
        """Change a column's type (a lossless widening), or None where types are not enforced."""
        return f"ALTER TABLE {self.table(t)} ALTER COLUMN {self.quote(column.name)} TYPE {column.type.strip()}"

    def zero_row_wrap(self, sql: str) -> str:
        """Wrap a query so it returns its columns and no rows (to learn the result's shape).

        The query is prepared by :func:`pipekit_core.sql.query.prepare_for_wrapping` (trailing
        semicolons and comments, one statement); the closing parenthesis goes on its own line.
        """
        from pipekit_core.sql.query import prepare_for_wrapping

        return f"SELECT * FROM (\n{prepare_for_wrapping(sql)}\n) AS q WHERE 1=0"

    def count_sql(self, t: TableName) -> str:
        """Count the rows of a table."""
        return f"SELECT count(*) FROM {self.table(t)}"

    def analyze_sql(self, t: TableName) -> str | None:
        """Refresh planner statistics of a table, or None where not needed."""
        return None

    def select_limited(self, select_list: str, rest: str, n: int) -> str:
        """``SELECT <select_list> <rest>`` returning at most ``n`` rows."""
        return f"SELECT {select_list} {rest} LIMIT {int(n)}"

    def null_safe_eq(self, left: str, right: str) -> str:
        """A comparison that is true when both sides are equal or both are NULL."""
        return f"{left} IS NOT DISTINCT FROM {right}"

    #: type of the ``deletes: soft_column`` pipekit adds when the destination lacks it
    soft_delete_type: str = "timestamp with time zone"

    def now_sql(self) -> str:
        """The current time, as the soft-delete column gets it (the transaction's time)."""
        return "now()"

    def window_value(self, expr: str) -> str:
        """What a window compares for a column (the column as it is; SQLite normalises text)."""
        return expr

    def in_window(self, expr: str, start: str, end: str) -> str:
        """``expr`` lies in the half-open window ``[start, end)`` (rendered window values).

        The one predicate for a window: the window strategy's delete, the out-of-window guard,
        the window's row count and the deletes restricted to a window all use it.
        """
        v = self.window_value(expr)
        return f"{v} >= {self.window_value(self.literal(start))} AND {v} < {self.window_value(self.literal(end))}"

    def keys_match(self, left: list[str], right: list[str], *, null_safe: bool) -> str:
        """AND of pairwise comparisons of (already qualified) key expressions."""
        if null_safe:
            return " AND ".join(self.null_safe_eq(a, b) for a, b in zip(left, right, strict=True))
        return " AND ".join(f"{a} = {b}" for a, b in zip(left, right, strict=True))


class PostgresDialect(Dialect):
    """PostgreSQL: double-quoted identifiers, schemas, UNLOGGED staging, ANALYZE."""

    name = "postgresql"
    max_identifier = 63

    def create_table_head(self, *, staging: bool) -> str:
        # Staging is rebuilt every run: skipping the WAL makes loading it much cheaper.
        return "CREATE UNLOGGED TABLE" if staging else "CREATE TABLE"

    def analyze_sql(self, t: TableName) -> str | None:
        return f"ANALYZE {self.table(t)}"


class SQLiteDialect(Dialect):
    """SQLite: double-quoted identifiers, no schemas (a schema part names an attached database)."""

    name = "sqlite"
    max_identifier = 128  # no real limit; kept sane
    supports_schemas = False

    def staging_table(self, module: str, staging_schema: str) -> TableName:
        return TableName(None, self.fit_identifier(f"pipekit_staging__{module}"))

    def column_sql(self, c: ColumnDef, *, force_nullable: bool = False) -> str:
        # SQLite accepts a column without a declared type (affinity BLOB/none).
        null = "" if force_nullable or c.nullable else " NOT NULL"
        typ = f" {c.type.strip()}" if c.type.strip() else ""
        return f"{self.quote(c.name)}{typ}{null}"

    def create_schema_sql(self, schema: str) -> str | None:
        return None

    def alter_column_type_sql(self, t: TableName, column: ColumnDef) -> str | None:
        return None  # declared types are affinities: a column already holds any value

    def null_safe_eq(self, left: str, right: str) -> str:
        return f"{left} IS {right}"

    soft_delete_type = "TEXT"

    def now_sql(self) -> str:
        return "strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')"

    def window_value(self, expr: str) -> str:
        # Dates and timestamps are text here, written with ' ' or 'T', with or without an offset:
        # compared as UTC text of one shape. A NULL or a value that is no date stays NULL (outside).
        return f"strftime('%Y-%m-%d %H:%M:%f', {expr})"

    # analyze_sql stays None: ANALYZE would add sqlite_stat1 to the user's database file,
    # and SQLite's planner builds automatic indexes for the merge without statistics.


class SQLServerDialect(Dialect):
    """SQL Server: [bracketed] identifiers, TOP n, no CREATE SCHEMA IF NOT EXISTS."""

    name = "sqlserver"
    open_quote = "["
    close_quote = "]"
    supports_row_value_in = False

    def literal(self, value: str) -> str:
        return "N" + super().literal(value)

    def create_schema_sql(self, schema: str) -> str | None:
        create = self.literal(f"CREATE SCHEMA {self.quote(schema)}")
        return f"IF SCHEMA_ID({self.literal(schema)}) IS NULL EXEC({create})"

    def count_sql(self, t: TableName) -> str:
        return f"SELECT COUNT_BIG(*) FROM {self.table(t)}"

    def analyze_sql(self, t: TableName) -> str | None:
        return f"UPDATE STATISTICS {self.table(t)}"

    def select_limited(self, select_list: str, rest: str, n: int) -> str:
        return f"SELECT TOP {int(n)} {select_list} {rest}"

    def null_safe_eq(self, left: str, right: str) -> str:
        return self.keys_match([left], [right], null_safe=True)

    def keys_match(self, left: list[str], right: list[str], *, null_safe: bool) -> str:
        if not null_safe:
            return super().keys_match(left, right, null_safe=False)
        # EXISTS (... INTERSECT ...) is the NULL-safe idiom the optimizer turns into an
        # "IS" comparison usable by hash joins and index seeks (IS NOT DISTINCT FROM is 2022+).
        return f"EXISTS (SELECT {', '.join(left)} INTERSECT SELECT {', '.join(right)})"


class DB2Dialect(Dialect):
    """DB2 (for i and LUW): double-quoted identifiers, FETCH FIRST, no IF [NOT] EXISTS DDL."""

    name = "db2"

    def create_schema_sql(self, schema: str) -> str | None:
        # 42710: the schema already exists.
        stmt = self.literal(f"CREATE SCHEMA {self.quote(schema)}")
        return f"BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '42710' BEGIN END; EXECUTE IMMEDIATE {stmt}; END"

    def drop_table_sql(self, t: TableName) -> str:
        # 42704: the table does not exist.
        stmt = self.literal(f"DROP TABLE {self.table(t)}")
        return f"BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '42704' BEGIN END; EXECUTE IMMEDIATE {stmt}; END"

    def select_limited(self, select_list: str, rest: str, n: int) -> str:
        return f"SELECT {select_list} {rest} FETCH FIRST {int(n)} ROWS ONLY"


_DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PostgresDialect,
    "sqlite": SQLiteDialect,
    "sqlserver": SQLServerDialect,
    "as400": DB2Dialect,
    "db2": DB2Dialect,
}


def get_dialect(kind: str) -> Dialect:
    """The dialect for a connection kind (``Connection.kind``).

    Raises:
        ValueError: the kind is unknown; the message lists the valid kinds.
    """
    cls = _DIALECTS.get(kind.strip().lower())
    if cls is None:
        valid = ", ".join(sorted(_DIALECTS))
        raise ValueError(f"no SQL dialect for database kind {kind!r}; valid kinds: {valid}")
    return cls()
