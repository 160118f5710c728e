"""Lineage of a module's query: the tables it reads and, where the projection is simple, which
source column feeds each destination column.

The query is read with sqlglot (the dialect chosen from the source connection's kind) after its
``{placeholders}`` are blanked with harmless literals (``'{since}'`` -> ``'0'``, ``{n}`` -> ``0``;
``{{``/``}}`` are braces, as :func:`pipekit_core.watermarks.tokenize` says). Nothing is guessed:

- tables: every real table the query reads, in FROM, JOIN and subqueries alike; CTE names,
  subquery aliases and table functions are not tables. Names are folded as the database folds
  them (unquoted: lower case on PostgreSQL, upper case on DB2; SQLite and SQL Server compare
  names case-insensitively, so lower case), and an unqualified name gets the database's default
  schema where it has a fixed one (``public``, ``main``, ``dbo``; DB2 has none: its library list);
- columns: only projections that are a plain column reference, renamed or not (``a``, ``t.a``,
  ``a AS b``, through CTEs and subqueries that are themselves plain), whose table is certain
  (qualified, or the only table of its SELECT). An expression, ``*``, an unqualified column in a
  join, a UNION: no lineage for that column.

A query sqlglot cannot read gives a :class:`QueryLineage` with ``error`` set (the reason, one line),
never an exception. Parsing is cached by (query text, kind): loading many modules that share a
query shape parses it once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipekit_core.models import Module
from pipekit_core.watermarks import tokenize

__all__ = ["ColumnRef", "QueryLineage", "TableRef", "dest_table_ref", "module_lineage", "query_lineage", "sqlglot_dialect"]

# The default schema of an unqualified table name, where the database has a fixed one.
DEFAULT_SCHEMA = {"postgresql": "public", "sqlite": "main", "sqlserver": "dbo"}
# DB2's one-row dummy table: reading it reads no data.
_DUMMY_TABLES = {("SYSIBM", "SYSDUMMY1")}
_DB2_KINDS = frozenset({"as400", "db2"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# DB2 clauses that end a query and do not change what it reads; sqlglot has no DB2 dialect.
_DB2_TAIL = re.compile(
    r"(\s+(WITH\s+(UR|CS|RS|RR)|FOR\s+(READ|FETCH)\s+ONLY|OPTIMIZE\s+FOR\s+\d+\s+ROWS?))+\s*;?\s*$", re.IGNORECASE
)
# DB2 for i system naming (``naming=system``): LIBRARY/TABLE after FROM or JOIN.
_DB2_SYSTEM_NAME = re.compile(r"\b(FROM|JOIN)(\s+)([A-Za-z_#$@][\w#$@]*)/([A-Za-z_#$@][\w#$@]*)", re.IGNORECASE)


@dataclass(frozen=True)
class TableRef:
    """A table as the database names it: parts folded, default schema filled in (see module doc)."""

    name: str
    schema: str | None = None
    catalog: str | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in (self.catalog, self.schema) if p is not None) + (self.name,)

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ColumnRef:
    """One column of a table the query reads."""

    table: TableRef
    column: str


@dataclass(frozen=True)
class QueryLineage:
    """What a query reads.

    Attributes:
        tables: the tables read, in order of first appearance.
        columns: output column -> the source columns it copies, for the plain columns only.
            :func:`module_lineage` gives destination names (after ``columns:`` renaming).
        error: why the query could not be read (then ``tables`` and ``columns`` are empty).
        dialect: the sqlglot dialect it was read with.
    """

    tables: tuple[TableRef, ...] = ()
    columns: Mapping[str, tuple[ColumnRef, ...]] = field(default_factory=dict)
    error: str | None = None
    dialect: str = ""


def sqlglot_dialect(kind: str) -> Any:
    """The sqlglot dialect for a connection kind (``postgresql``, ``sqlite``, ``sqlserver``, ``as400``, ...)."""
    if kind in _DB2_KINDS:
        return _db2_dialect()
    return {"postgresql": "postgres", "sqlite": "sqlite", "sqlserver": "tsql"}.get(kind, "")


def _dialect_name(kind: str) -> str:
    return "db2" if kind in _DB2_KINDS else (sqlglot_dialect(kind) or "ansi")


@functools.cache
def _db2_dialect() -> Any:
    """sqlglot has no DB2 dialect: its ANSI one (FETCH FIRST n ROWS ONLY, "quoted" names), with
    DB2's upper-case folding of unquoted names and CURRENT DATE / TIME / TIMESTAMP."""
    from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
    from sqlglot.tokens import Tokenizer as AnsiTokenizer
    from sqlglot.tokens import TokenType

    class PipekitDB2(Dialect):
        NORMALIZATION_STRATEGY = NormalizationStrategy.UPPERCASE

        class Tokenizer(AnsiTokenizer):
            KEYWORDS = {
                **AnsiTokenizer.KEYWORDS,
                "CURRENT DATE": TokenType.CURRENT_DATE,
                "CURRENT TIME": TokenType.CURRENT_TIME,
                "CURRENT TIMESTAMP": TokenType.CURRENT_TIMESTAMP,
            }

    return PipekitDB2


def _fold(kind: str, *, identity: bool) -> Callable[[str, bool], str]:
    """How the database names an identifier ``(text, quoted)``: for ``identity`` (is it the same
    table?) case-insensitive databases lower-case everything; otherwise (the name a driver reports
    for a column) they keep it as written."""
    if kind in _DB2_KINDS:
        return lambda text, quoted: text if quoted else text.upper()
    if kind in ("sqlite", "sqlserver"):
        return (lambda text, quoted: text.lower()) if identity else (lambda text, quoted: text)
    return lambda text, quoted: text if quoted else text.lower()


def blank_placeholders(sql: str) -> str:
    """The query template with each ``{name}`` replaced by a literal of no consequence (``0``) and
    ``{{``/``}}`` by braces, so that a SQL parser can read it."""
    return "".join("0" if t.name is not None else t.text for t in tokenize(sql))


def query_lineage(sql: str, kind: str) -> QueryLineage:
    """The tables and plain columns ``sql`` (a query template, placeholders allowed) reads, read
    as the database ``kind`` would; never raises (a problem is ``QueryLineage.error``)."""
    return _query_lineage(sql, kind)


@functools.lru_cache(maxsize=8192)
def _query_lineage(sql: str, kind: str) -> QueryLineage:
    dialect_name = _dialect_name(kind)
    text = blank_placeholders(sql)
    if kind in _DB2_KINDS:
        text = _DB2_SYSTEM_NAME.sub(r"\1\2\3.\4", _DB2_TAIL.sub("", text.rstrip()))
    try:
        return _read(text, kind, dialect_name)
    except Exception as e:  # noqa: BLE001 - any parser failure is a reason, never a crash
        return QueryLineage(error=f"sqlglot ({dialect_name}) cannot read the query: {_reason(e)}", dialect=dialect_name)


def _reason(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if errors:
        first = errors[0]
        near = (first.get("highlight") or "").strip()
        where = f" at line {first.get('line')}" + (f", near {near!r}" if near else "")
        text = f"{first.get('description')}{where}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(_ANSI.sub("", text).split())[:300]


def _read(text: str, kind: str, dialect_name: str) -> QueryLineage:
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.scope import Scope, traverse_scope

    statements = [s for s in sqlglot.parse(text, read=sqlglot_dialect(kind)) if s is not None]
    if len(statements) != 1:
        raise ValueError(f"expected one statement, found {len(statements)}")
    root = statements[0]
    if not isinstance(root, exp.Query):
        raise ValueError(f"not a query: it reads as {root.key.upper()}, not SELECT")
    ident, name_of = _fold(kind, identity=True), _fold(kind, identity=False)

    def table_ref(t: Any) -> TableRef | None:
        if not isinstance(t.this, exp.Identifier):
            return None  # a table function, VALUES, ...
        parts = [t.args.get(k) for k in ("catalog", "db")]
        catalog, schema = (ident(p.name, p.quoted) if isinstance(p, exp.Identifier) else None for p in parts)
        name = ident(t.this.name, t.this.quoted)
        if (schema or "", name) in _DUMMY_TABLES and kind in _DB2_KINDS:
            return None
        return TableRef(name=name, schema=schema or DEFAULT_SCHEMA.get(kind), catalog=catalog)

    scopes = traverse_scope(root)
    tables: dict[TableRef, None] = {}
    for scope in scopes:
        for source in scope.sources.values():
            if isinstance(source, exp.Table) and (ref := table_ref(source)) is not None:
                tables[ref] = None

    def output(projection: Any) -> tuple[str, Any] | None:
        """(output name as the driver reports it, the column it copies) of a plain projection."""
        if isinstance(projection, exp.Alias):
            alias = projection.args.get("alias")
            if not isinstance(alias, exp.Identifier):
                return None
            return name_of(alias.name, alias.quoted), projection.this
        if isinstance(projection, exp.Column):
            return name_of(projection.this.name, projection.this.quoted), projection
        return None

    def trace(scope: Scope, column: Any, depth: int = 0) -> ColumnRef | None:
        if depth > 20 or not isinstance(column, exp.Column) or not isinstance(column.this, exp.Identifier):
            return None  # an expression, or a star
        if column.args.get("db") is not None:
            return None
        qualifier = column.table
        if qualifier:
            source = scope.sources.get(qualifier)
        else:
            selected = list(scope.selected_sources.values())
            source = selected[0][1] if len(selected) == 1 else None
        if isinstance(source, exp.Table):
            ref = table_ref(source)
            return None if ref is None else ColumnRef(ref, name_of(column.this.name, column.this.quoted))
        if isinstance(source, Scope) and isinstance(source.expression, exp.Select):
            wanted = ident(column.this.name, column.this.quoted)
            hits = [o for o in map(output, source.expression.expressions) if o is not None and ident(o[0], True) == wanted]
            return trace(source, hits[0][1], depth + 1) if len(hits) == 1 else None
        return None

    columns: dict[str, tuple[ColumnRef, ...]] = {}
    top = scopes[-1]  # traverse_scope yields the root scope last
    if isinstance(top.expression, exp.Select):
        for projection in top.expression.expressions:
            out = output(projection)
            traced = trace(top, out[1]) if out is not None else None
            if out is not None and traced is not None:
                columns.setdefault(out[0], (traced,))
    return QueryLineage(tables=tuple(tables), columns=columns, dialect=dialect_name)


def module_lineage(module: Module, source_kind: str) -> QueryLineage:
    """:func:`query_lineage` of the module's query, columns named as on the destination
    (``columns:`` renaming applied, :meth:`Module.dest_column_name`)."""
    found = query_lineage(module.sql or module.query or "", source_kind)
    if not found.columns or not module.columns:
        return found
    renamed: dict[str, tuple[ColumnRef, ...]] = {}
    for name, refs in found.columns.items():
        renamed.setdefault(module.dest_column_name(name), refs)
    return QueryLineage(tables=found.tables, columns=renamed, error=found.error, dialect=found.dialect)


def dest_table_ref(dest_table: str, kind: str) -> TableRef | None:
    """The module's ``dest_table`` as a :class:`TableRef` on a ``kind`` database (to compare with
    the tables queries read); None when the name is invalid (the loader reports that)."""
    return _dest_table_ref(dest_table, kind)


@functools.lru_cache(maxsize=8192)
def _dest_table_ref(dest_table: str, kind: str) -> TableRef | None:
    from pipekit_core.sql.dialects import parse_table_name

    try:
        t = parse_table_name(dest_table)
    except ValueError:
        return None
    # parse_table_name already folds unquoted parts as PostgreSQL does; quoted ones keep their case
    ident = _fold(kind, identity=True)
    schema = ident(t.schema, True) if t.schema is not None else DEFAULT_SCHEMA.get(kind)
    return TableRef(name=ident(t.name, True), schema=schema)
