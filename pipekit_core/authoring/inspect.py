"""``pipekit inspect``: a source's schemas, tables (with row estimates) and a table's columns.

The catalog queries are in one class per dialect, and nowhere else:

- :class:`PostgresCatalog`: ``pg_namespace`` / ``pg_class`` / ``pg_attribute`` / ``pg_index``,
  natively (psycopg). Row estimates are ``pg_class.reltuples`` (unknown before the first ANALYZE).
- :class:`SQLiteCatalog`: ``PRAGMA database_list`` / ``sqlite_master`` / ``PRAGMA table_info``,
  natively. Row counts are exact (``count(*)``): SQLite keeps no estimate.
- :class:`Db2iCatalog`: DB2 for i's ``QSYS2`` catalog views (``SYSSCHEMAS``, ``SYSTABLES``,
  ``SYSTABLESTAT.NUMBER_ROWS``, ``SYSCOLUMNS``, ``SYSCST`` + ``SYSKEYCST`` for the primary key),
  through jrunner's query mode.
- :class:`SQLServerCatalog`: ``INFORMATION_SCHEMA`` (``SCHEMATA``, ``TABLES``, ``COLUMNS``,
  ``TABLE_CONSTRAINTS`` + ``KEY_COLUMN_USAGE``) through jrunner's query mode; row estimates from
  ``sys.partitions`` when the login may read it (else unknown).

jrunner takes no bound parameters, so names go into the SQL as literals of the dialect
(:meth:`pipekit_core.sql.dialects.Dialect.literal`, quotes doubled). jrunner returns text: a
column's position in the SELECT list is what is read, never its header (DB2 and SQL Server
report upper-case names, PostgreSQL lower-case).

Each column also shows the type pipekit would create for it on every destination dialect,
from the one type map (:func:`pipekit_core.sql.types.map_type`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipekit_core.config import Settings
from pipekit_core.db import Endpoint, NativeDB
from pipekit_core.defs import Catalog, load_catalog
from pipekit_core.errors import ConfigError, PipekitError
from pipekit_core.secrets import Secrets
from pipekit_core.sql.dialects import get_dialect
from pipekit_core.sql.types import DEST_KINDS, map_type

__all__ = [
    "ColumnInfo",
    "Db2iCatalog",
    "InspectError",
    "InspectResult",
    "PostgresCatalog",
    "SQLServerCatalog",
    "SQLiteCatalog",
    "SourceCatalog",
    "TableInfo",
    "endpoint_for",
    "inspect_target",
    "open_catalog",
    "split_target",
]


class InspectError(PipekitError):
    """A schema or table that is not there, or a connection inspect cannot read."""


@dataclass(frozen=True)
class TableInfo:
    """A table or view of a schema; ``rows`` is an estimate (None when the database has none)."""

    schema: str | None
    name: str
    kind: str  # table | view
    rows: int | None = None


@dataclass(frozen=True)
class ColumnInfo:
    """A column: its source type (as the type map reads it), nullability, primary-key position
    (1-based, None when not part of the key) and the type pipekit creates for it per destination."""

    name: str
    type: str
    nullable: bool
    pk: int | None = None
    dest_types: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable, "primary_key": self.pk,
                "dest_types": dict(self.dest_types)}


@dataclass
class InspectResult:
    """What ``pipekit inspect`` shows: one of schemas, tables (of a schema) or columns (of a table)."""

    connection: str
    kind: str
    via: str
    level: str  # schemas | tables | columns
    schema: str | None = None
    table: str | None = None
    schemas: list[str] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    columns: list[ColumnInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"connection": self.connection, "kind": self.kind, "via": self.via, "level": self.level}
        if self.level == "schemas":
            d["schemas"] = self.schemas
        if self.level in ("tables", "columns"):
            d["schema"] = self.schema
        if self.level == "tables":
            d["tables"] = [{"name": t.name, "kind": t.kind, "rows": t.rows} for t in self.tables]
        if self.level == "columns":
            d["table"] = self.table
            d["primary_key"] = primary_key(self.columns)
            d["columns"] = [c.as_dict() for c in self.columns]
        if self.notes:
            d["notes"] = self.notes
        return d


def primary_key(columns: list[ColumnInfo]) -> list[str]:
    """The primary key's columns in key order."""
    return [c.name for c in sorted((c for c in columns if c.pk), key=lambda c: c.pk or 0)]


# ------------------------------------------------------------------------------------ runners

Rows = list[list[Any]]


class _JrunnerRows:
    """SQL through jrunner's query mode: every value is text, an empty field is NULL."""

    def __init__(self, ep: Endpoint, settings: Settings, log: Callable[[str], None] | None = None) -> None:
        from pipekit_core.transport.base import TransportContext
        from pipekit_core.transport.jrunner import JrunnerTransport

        self.ep = ep
        self.transport = JrunnerTransport(TransportContext(jrunner=settings.jrunner, log=log or (lambda _l: None)))

    def __call__(self, sql: str) -> Rows:
        rows = self.transport.query_rows(self.ep, sql, limit=10**9)
        return [[v if v != "" else None for v in r] for r in rows[1:]]


def _int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------- catalogs

class SourceCatalog(ABC):
    """One dialect's catalog queries. ``kind`` is the type map's source kind."""

    kind: str = ""
    via: str = "native"
    #: the schema a one-part table name is looked up in (None: the user must name one)
    default_schema: str | None = None

    @abstractmethod
    def schemas(self) -> list[str]:
        """Schema names, sorted."""

    @abstractmethod
    def tables(self, schema: str) -> list[TableInfo]:
        """Tables and views of ``schema`` (exact catalog name), sorted by name."""

    @abstractmethod
    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        """Columns of ``schema.table`` (exact catalog names) in table order, without dest types."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection, if any."""

    # -- memoised: one inspect asks each question once (a jrunner call starts a JVM) -------------
    def known_schemas(self) -> list[str]:
        cache = self.__dict__.setdefault("_schemas", [])
        if not cache:
            cache.append(self.schemas())
        return list(cache[0])

    def table_names(self, schema: str) -> list[str]:
        """Names of the tables and views of ``schema`` (what matching a name needs)."""
        return [t.name for t in self.known_tables(schema)]

    def known_tables(self, schema: str) -> list[TableInfo]:
        cache = self.__dict__.setdefault("_tables", {})
        if schema not in cache:
            cache[schema] = self.tables(schema)
        return list(cache[schema])

    # -- name matching: exact first, then case-insensitive when that is unambiguous ------------
    @staticmethod
    def match(wanted: str, names: list[str], what: str, where: str) -> str:
        if wanted in names:
            return wanted
        folded = [n for n in names if n.lower() == wanted.lower()]
        if len(folded) == 1:
            return folded[0]
        if len(folded) > 1:
            raise InspectError(f"{what} '{wanted}' matches {', '.join(folded)} in {where} (they differ only in case); "
                               'quote it with its exact case, e.g. "Orders"')
        import difflib

        close = difflib.get_close_matches(wanted, names, n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise InspectError(f"no {what} '{wanted}' in {where}{hint}")

    def describe_columns(self, schema: str, table: str) -> list[ColumnInfo]:
        """Columns with the type pipekit would create on each destination dialect."""
        out = []
        for c in self.columns(schema, table):
            dest = {}
            for d in DEST_KINDS:
                try:
                    dest[d] = map_type(self.kind, d, c.type)
                except ValueError:
                    dest[d] = "text"
            out.append(ColumnInfo(c.name, c.type, c.nullable, c.pk, dest))
        return out


class PostgresCatalog(SourceCatalog):
    """PostgreSQL, natively."""

    kind = "postgresql"
    default_schema = "public"

    def __init__(self, db: NativeDB) -> None:
        self.db = db

    def schemas(self) -> list[str]:
        rows = self.db.query(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_(toast|temp|catalog)' "
            "AND nspname NOT LIKE 'pg\\_toast\\_temp%%' AND nspname <> 'information_schema' ORDER BY 1"
        )
        return [r[0] for r in rows]

    def tables(self, schema: str) -> list[TableInfo]:
        rows = self.db.query(
            "SELECT c.relname, c.relkind, c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
            (schema,),
        )
        out = []
        for name, relkind, reltuples in rows:
            view = relkind == "v"
            est = int(reltuples) if reltuples is not None and reltuples >= 0 and relkind in ("r", "m", "f") else None
            out.append(TableInfo(schema, name, "view" if view else "table", est))
        return out

    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        rows = self.db.query(
            "WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "           WHERE n.nspname = %s AND c.relname = %s), "
            "pk AS (SELECT k.attnum, k.pos FROM pg_index x JOIN t ON x.indrelid = t.oid "
            "       CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, pos) WHERE x.indisprimary) "
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, pk.pos "
            "FROM pg_attribute a JOIN t ON a.attrelid = t.oid LEFT JOIN pk ON pk.attnum = a.attnum "
            "WHERE a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (schema, table),
        )
        return [ColumnInfo(r[0], r[1], bool(r[2]), int(r[3]) if r[3] is not None else None) for r in rows]

    def close(self) -> None:
        self.db.close()


class SQLiteCatalog(SourceCatalog):
    """SQLite, natively: ``main`` and any attached database are its schemas."""

    kind = "sqlite"
    default_schema = "main"

    def __init__(self, db: NativeDB) -> None:
        self.db = db
        self.q = get_dialect("sqlite").quote

    def schemas(self) -> list[str]:
        return sorted(r[1] for r in self.db.query("PRAGMA database_list") if r[1] != "temp")

    def tables(self, schema: str) -> list[TableInfo]:
        master = f"{self.q(schema)}.sqlite_master"
        rows = self.db.query(
            f"SELECT name, type FROM {master} WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
        )
        out = []
        for name, typ in rows:
            n = None
            if typ == "table":
                row = self.db.query_one(f"SELECT count(*) FROM {self.q(schema)}.{self.q(name)}")
                n = int(row[0]) if row else None
            out.append(TableInfo(schema, name, typ, n))
        return out

    def table_names(self, schema: str) -> list[str]:  # without counting every table's rows
        return [r[0] for r in self.db.query(
            f"SELECT name FROM {self.q(schema)}.sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]

    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        rows = self.db.query(f"PRAGMA {self.q(schema)}.table_info({self.q(table)})")
        # cid, name, type, notnull, dflt, pk (1-based key position, 0 = not in the key)
        keyed = [r for r in rows if r[5]]
        rowid = len(keyed) == 1 and (keyed[0][2] or "").upper() == "INTEGER"
        return [
            ColumnInfo(r[1], r[2] or "", not r[3] and not (rowid and r[5]), int(r[5]) or None)
            for r in rows
        ]

    def close(self) -> None:
        self.db.close()


class Db2iCatalog(SourceCatalog):
    """DB2 for i through jrunner: the ``QSYS2`` catalog views."""

    kind = "as400"
    via = "jrunner"

    # SYSCOLUMNS.DATA_TYPE abbreviations -> the type names the type map reads
    _TYPES = {"TIMESTMP": "TIMESTAMP", "VARG": "VARGRAPHIC", "VARBIN": "VARBINARY"}
    _SIZED = {"CHAR", "VARCHAR", "GRAPHIC", "VARGRAPHIC", "BINARY", "VARBINARY"}

    def __init__(self, run: Callable[[str], Rows]) -> None:
        self.run = run
        self.lit = get_dialect("db2").literal

    def schemas(self) -> list[str]:
        return [r[0] for r in self.run("SELECT SCHEMA_NAME FROM QSYS2.SYSSCHEMAS ORDER BY SCHEMA_NAME") if r[0]]

    def tables(self, schema: str) -> list[TableInfo]:
        s = self.lit(schema)
        rows = self.run(
            "SELECT t.TABLE_NAME, t.TABLE_TYPE, s.NUMBER_ROWS FROM QSYS2.SYSTABLES t "
            "LEFT JOIN QSYS2.SYSTABLESTAT s ON s.TABLE_SCHEMA = t.TABLE_SCHEMA AND s.TABLE_NAME = t.TABLE_NAME "
            f"WHERE t.TABLE_SCHEMA = {s} ORDER BY t.TABLE_NAME"
        )
        # TABLE_TYPE: T table, P physical file, M materialized query table; V view, L logical file, A alias
        return [TableInfo(schema, r[0], "view" if (r[1] or "").strip() in ("V", "L", "A") else "table", _int(r[2]))
                for r in rows]

    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        s, t = self.lit(schema), self.lit(table)
        rows = self.run(
            "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.LENGTH, c.NUMERIC_SCALE, c.IS_NULLABLE, c.CCSID, k.ORDINAL_POSITION "
            "FROM QSYS2.SYSCOLUMNS c LEFT JOIN ("
            "SELECT kc.COLUMN_NAME, kc.ORDINAL_POSITION FROM QSYS2.SYSCST cst JOIN QSYS2.SYSKEYCST kc "
            "ON kc.CONSTRAINT_SCHEMA = cst.CONSTRAINT_SCHEMA AND kc.CONSTRAINT_NAME = cst.CONSTRAINT_NAME "
            f"WHERE cst.CONSTRAINT_TYPE = 'PRIMARY KEY' AND cst.TABLE_SCHEMA = {s} AND cst.TABLE_NAME = {t}"
            ") k ON k.COLUMN_NAME = c.COLUMN_NAME "
            f"WHERE c.TABLE_SCHEMA = {s} AND c.TABLE_NAME = {t} ORDER BY c.ORDINAL_POSITION"
        )
        return [ColumnInfo(r[0], self.type_text(r[1], _int(r[2]), _int(r[3]), _int(r[5])), (r[4] or "Y").strip() == "Y",
                           _int(r[6])) for r in rows]

    @classmethod
    def type_text(cls, data_type: str | None, length: int | None, scale: int | None, ccsid: int | None) -> str:
        """``DECIMAL`` 11 2 -> ``DECIMAL(11,2)``; ``CHAR`` 10 with CCSID 65535 -> ``CHAR(10) FOR BIT DATA``."""
        t = (data_type or "").strip().upper()
        t = cls._TYPES.get(t, t)
        if t == "FLOAT":
            return "REAL" if length == 4 else "DOUBLE"
        if t in ("DECIMAL", "NUMERIC") and length is not None:
            return f"{t}({length},{scale or 0})"
        if t in cls._SIZED and length is not None:
            bits = " FOR BIT DATA" if ccsid == 65535 and t in ("CHAR", "VARCHAR") else ""
            return f"{t}({length}){bits}"
        return t


class SQLServerCatalog(SourceCatalog):
    """SQL Server through jrunner: ``INFORMATION_SCHEMA``; estimates from ``sys.partitions``."""

    kind = "sqlserver"
    via = "jrunner"
    default_schema = "dbo"

    _SIZED = {"char", "varchar", "nchar", "nvarchar", "binary", "varbinary"}

    def __init__(self, run: Callable[[str], Rows]) -> None:
        self.run = run
        self.lit = get_dialect("sqlserver").literal
        self.notes: list[str] = []

    def schemas(self) -> list[str]:
        return [r[0] for r in self.run("SELECT SCHEMA_NAME FROM INFORMATION_SCHEMA.SCHEMATA ORDER BY SCHEMA_NAME")
                if r[0]]

    def tables(self, schema: str) -> list[TableInfo]:
        s = self.lit(schema)
        rows = self.run(
            f"SELECT TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = {s} ORDER BY TABLE_NAME"
        )
        estimates: dict[str, int | None] = {}
        try:
            for r in self.run(
                "SELECT t.name, SUM(p.rows) FROM sys.tables t JOIN sys.schemas sc ON sc.schema_id = t.schema_id "
                f"JOIN sys.partitions p ON p.object_id = t.object_id WHERE p.index_id IN (0, 1) AND sc.name = {s} "
                "GROUP BY t.name"
            ):
                estimates[r[0]] = _int(r[1])
        except PipekitError as e:
            self.notes.append(f"row estimates unavailable (sys.partitions could not be read: {str(e).splitlines()[0]})")
        return [TableInfo(schema, r[0], "view" if (r[1] or "").upper() == "VIEW" else "table", estimates.get(r[0]))
                for r in rows]

    def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        s, t = self.lit(schema), self.lit(table)
        rows = self.run(
            "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.CHARACTER_MAXIMUM_LENGTH, c.NUMERIC_PRECISION, c.NUMERIC_SCALE, "
            "c.IS_NULLABLE, k.ORDINAL_POSITION FROM INFORMATION_SCHEMA.COLUMNS c LEFT JOIN ("
            "SELECT ku.COLUMN_NAME, ku.ORDINAL_POSITION FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS tc "
            "JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE ku ON ku.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA "
            "AND ku.CONSTRAINT_NAME = tc.CONSTRAINT_NAME "
            f"WHERE tc.CONSTRAINT_TYPE = 'PRIMARY KEY' AND tc.TABLE_SCHEMA = {s} AND tc.TABLE_NAME = {t}"
            ") k ON k.COLUMN_NAME = c.COLUMN_NAME "
            f"WHERE c.TABLE_SCHEMA = {s} AND c.TABLE_NAME = {t} ORDER BY c.ORDINAL_POSITION"
        )
        return [ColumnInfo(r[0], self.type_text(r[1], _int(r[2]), _int(r[3]), _int(r[4])),
                           (r[5] or "YES").strip().upper() == "YES", _int(r[6])) for r in rows]

    @classmethod
    def type_text(cls, data_type: str | None, max_length: int | None, precision: int | None, scale: int | None) -> str:
        """``nvarchar`` -1 -> ``nvarchar(max)``; ``decimal`` 12 2 -> ``decimal(12,2)``."""
        t = (data_type or "").strip().lower()
        if t in cls._SIZED and max_length is not None:
            return f"{t}({'max' if max_length == -1 else max_length})"
        if t in ("decimal", "numeric") and precision is not None:
            return f"{t}({precision},{scale or 0})"
        return t


# ----------------------------------------------------------------------------------- opening

def endpoint_for(catalog: Catalog, secrets: Secrets, name: str) -> Endpoint:
    """The connection ``name`` with its ``$VAR`` user and password resolved."""
    conn = catalog.connection(name)
    return Endpoint(
        conn=conn,
        user=secrets.resolve(conn.user, where=f"connection '{name}' user"),
        password=secrets.resolve(conn.password, where=f"connection '{name}' password"),
    )


@contextlib.contextmanager
def open_catalog(ep: Endpoint, settings: Settings, log: Callable[[str], None] | None = None) -> Iterator[SourceCatalog]:
    """The catalog of the connection's dialect: native for PostgreSQL and SQLite, jrunner else."""
    kind = ep.kind
    cat: SourceCatalog
    if kind == "postgresql":
        cat = PostgresCatalog(NativeDB(ep, application="pipekit inspect"))
    elif kind == "sqlite":
        cat = SQLiteCatalog(NativeDB(ep, application="pipekit inspect"))
    elif kind in ("as400", "sqlserver"):
        if not settings.jrunner:
            raise ConfigError(
                f"connection '{ep.name}' ({kind}) is read through jrunner, which was not found "
                f"('{settings.jrunner_setting}'); set PIPEKIT_JRUNNER or 'jrunner' in pipekit.yaml"
            )
        run = _JrunnerRows(ep, settings, log)
        cat = Db2iCatalog(run) if kind == "as400" else SQLServerCatalog(run)
    else:
        raise InspectError(
            f"connection '{ep.name}': pipekit inspect reads PostgreSQL, SQLite, DB2 for i (jdbc:as400:) and "
            f"SQL Server catalogs, not '{kind}'; write the module's columns: by hand"
        )
    try:
        yield cat
    finally:
        cat.close()


def split_target(text: str | None) -> tuple[str | None, str | None, bool, bool]:
    """``SCHEMA[.TABLE]`` -> (schema, table, schema quoted, table quoted); double quotes keep dots."""
    if text is None or not text.strip():
        return None, None, False, False
    parts: list[tuple[str, bool]] = []
    s, i = text.strip(), 0
    while i <= len(s):
        if i < len(s) and s[i] == '"':
            j, buf = i + 1, []
            while True:
                k = s.find('"', j)
                if k < 0:
                    raise InspectError(f"{text!r}: unterminated double quote")
                buf.append(s[j:k])
                if s[k + 1 : k + 2] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append(("".join(buf), True))
        else:
            k = s.find(".", i)
            k = len(s) if k < 0 else k
            parts.append((s[i:k].strip(), False))
            i = k
        if i >= len(s):
            break
        if s[i] != ".":
            raise InspectError(f"{text!r}: expected '.' after a quoted name; write SCHEMA or SCHEMA.TABLE")
        i += 1
    if len(parts) > 2 or any(not p for p, _ in parts):
        raise InspectError(f"{text!r}: write SCHEMA or SCHEMA.TABLE")
    if len(parts) == 1:
        return parts[0][0], None, parts[0][1], False
    return parts[0][0], parts[1][0], parts[0][1], parts[1][1]


def _fold(cat: SourceCatalog, name: str, quoted: bool) -> str:
    """An unquoted name as the database stores it: lower case on PostgreSQL, upper on DB2."""
    if quoted:
        return name
    if cat.kind == "postgresql":
        return name.lower()
    if cat.kind == "as400":
        return name.upper()
    return name


def resolve_table(cat: SourceCatalog, where: str, schema: str | None, table: str,
                  schema_quoted: bool = False, table_quoted: bool = False) -> tuple[str, str]:
    """The exact (schema, table) names of a table, found in the catalog."""
    if schema is None:
        if cat.default_schema is None:
            raise InspectError(f"{where}: name the table's schema (library), e.g. MYLIB.{table}")
        schema, schema_quoted = cat.default_schema, True
    s = cat.match(_fold(cat, schema, schema_quoted), cat.known_schemas(), "schema", where)
    t = cat.match(_fold(cat, table, table_quoted), cat.table_names(s), "table", f"{where} schema {s}")
    return s, t


def inspect_target(cat: SourceCatalog, connection: str, target: str | None) -> InspectResult:
    """What ``pipekit inspect CONNECTION [SCHEMA[.TABLE]]`` shows."""
    res = InspectResult(connection=connection, kind=cat.kind, via=cat.via, level="schemas")
    where = f"connection '{connection}'"
    schema, table, sq, tq = split_target(target)
    if schema is None:
        res.schemas = cat.known_schemas()
    elif table is None:
        schemas = cat.known_schemas()
        try:
            s = cat.match(_fold(cat, schema, sq), schemas, "schema", where)
        except InspectError:
            # SQLite (and any catalog with a default schema): one part may name a table there
            if cat.default_schema is None or cat.default_schema not in schemas:
                raise
            names = cat.table_names(cat.default_schema)
            if _fold(cat, schema, sq).lower() not in (n.lower() for n in names):
                raise
            s, t = resolve_table(cat, where, None, schema, table_quoted=sq)
            res.level, res.schema, res.table = "columns", s, t
            res.columns = cat.describe_columns(s, t)
            return res
        res.level, res.schema = "tables", s
        res.tables = cat.known_tables(s)
    else:
        s, t = resolve_table(cat, where, schema, table, sq, tq)
        res.level, res.schema, res.table = "columns", s, t
        res.columns = cat.describe_columns(s, t)
    res.notes.extend(getattr(cat, "notes", []))
    if cat.kind == "sqlite" and res.level == "tables":
        res.notes.append("SQLite keeps no row estimates: the counts are exact (count(*))")
    return res


def load_for_inspect(settings: Settings) -> tuple[Catalog, Secrets]:
    """The definitions (connections) and secrets, without creating a repository."""
    return load_catalog(settings.defs, settings.local_timezone()), Secrets(settings.secrets)
