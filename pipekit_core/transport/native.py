"""The native transport: psycopg 3 and sqlite3, streaming with flat memory.

- PostgreSQL -> PostgreSQL: ``COPY (query) TO STDOUT`` piped block by block into
  ``COPY staging FROM STDIN``, binary when the staging types equal the source types, else text.
  Rows are never parsed in Python; progress comes from ``pg_stat_progress_copy``.
- PostgreSQL -> SQLite: ``COPY (query) TO STDOUT`` parsed into Python rows, written in batches.
- SQLite -> PostgreSQL: batches from a sqlite3 cursor, written with ``COPY ... FROM STDIN``.
- SQLite -> SQLite (two files): inside SQLite, the source attaching the destination: one
  ``INSERT ... SELECT`` (:func:`_sqlite_to_sqlite`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from pipekit_core.db import Endpoint, NativeDB
from pipekit_core.errors import TransportError
from pipekit_core.failpoints import row_watch
from pipekit_core.sql.dialects import ColumnDef, SQLiteDialect, TableName
from pipekit_core.sql.query import prepare_for_wrapping, wrap_lines
from pipekit_core.sql.types import InexactValue, sqlite_affinity, value_guard
from pipekit_core.transport.base import ProgressFn, SourceColumn, StageRequest, Transport

BATCH = 10_000
COPY_CHUNK = 64 * 1024  # bytes per write into COPY ... FROM STDIN (PostgreSQL -> PostgreSQL)


class NativeTransport(Transport):
    """Python drivers for both ends."""

    name = "native"

    @contextlib.contextmanager
    def _open(self, ep: Endpoint, purpose: str) -> Iterator[NativeDB]:
        db = NativeDB(ep, application=f"pipekit {purpose}")
        token = self.ctx.cancel.register(db.cancel)
        try:
            yield db
        finally:
            self.ctx.cancel.unregister(token)
            db.close()

    def query_value(self, ep: Endpoint, sql: str) -> object | None:
        with self._open(ep, "resolver") as db:
            row = db.query_one(sql)
        return None if row is None else row[0]

    def describe(self, ep: Endpoint, sql: str) -> list[SourceColumn]:
        with self._open(ep, "describe") as db:
            return describe_native(db, sql)

    def stage(self, req: StageRequest, dest: NativeDB, progress: ProgressFn) -> int | None:
        src_kind, dst_kind = req.source.kind, req.dest.kind
        with self._open(req.source, f"source {req.module}") as src:
            dest_token = self.ctx.cancel.register(dest.cancel)
            try:
                if src_kind == "postgresql" and dst_kind == "postgresql":
                    return _pg_to_pg(src, dest, req, progress)
                if src_kind == "postgresql":
                    return _pg_to_rows(src, dest, req, progress)
                if src_kind == "sqlite" and not sqlite_in_sqlite_reason(req.source, req.dest, req.sql):
                    return _sqlite_to_sqlite(src, dest, req, progress)
                if src_kind == "sqlite":
                    return _sqlite_to_any(src, dest, req, progress)
            finally:
                self.ctx.cancel.unregister(dest_token)
        raise TransportError(f"module '{req.module}': no native path from {src_kind} to {dst_kind}")


def describe_native(db: NativeDB, sql: str) -> list[SourceColumn]:
    """Columns of ``sql``: PostgreSQL types by name (format_type), SQLite types from sample rows."""
    sql = prepare_for_wrapping(sql)
    wrapped = db.dialect.zero_row_wrap(sql)
    if db.kind == "postgresql":
        cur = db.raw.execute(wrapped)
        res = cur.pgresult
        assert res is not None
        names = [res.fname(i).decode() for i in range(res.nfields)]
        oids = [res.ftype(i) for i in range(res.nfields)]
        mods = [res.fmod(i) for i in range(res.nfields)]
        types = [
            r[0]
            for r in db.query(
                "SELECT format_type(o, m) FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS u(o, m, n) ORDER BY n",
                (oids, mods),
            )
        ]
        cols = [SourceColumn(n, t) for n, t in zip(names, types, strict=True)]
    else:
        cur = db.raw.execute(wrapped)
        names = [d[0] for d in cur.description]
        declared = _sqlite_declared_types(db, sql, len(names))
        seen: list[set[str]] = [set() for _ in names]
        if not all(declared):
            # Only columns with no declared type (expressions): infer from a sample of the rows.
            for row in db.raw.execute(wrap_lines("SELECT * FROM (", sql, ") LIMIT 200")):
                for i, v in enumerate(row):
                    if v is not None:
                        seen[i].add(type(v).__name__)
        cols = [
            SourceColumn(n, d or _sqlite_type(s)) for n, d, s in zip(names, declared, seen, strict=True)
        ]
    dupes = sorted({c.name for c in cols if [x.name for x in cols].count(c.name) > 1})
    if dupes:
        raise TransportError(f"the source query returns duplicate column names {dupes}; alias them apart")
    return cols


def _sqlite_declared_types(db: NativeDB, sql: str, width: int) -> list[str]:
    """The declared type of each result column ('' for expressions), in result order.

    sqlite3 exposes no ``sqlite3_column_decltype``; a temporary view over the query carries the
    declared types of direct column references (SQLite propagates them), read with PRAGMA
    table_info. The view lives in the connection's temp schema and is dropped at once.
    """
    import sqlite3

    view = f"pipekit_describe_{uuid.uuid4().hex}"
    try:
        db.raw.execute(f'CREATE TEMP VIEW "{view}" AS\n{sql}\n')
    except sqlite3.Error:  # a query a view cannot hold: every column is sampled instead
        return [""] * width
    try:
        info = db.raw.execute(f'PRAGMA temp.table_info("{view}")').fetchall()
    finally:
        db.raw.execute(f'DROP VIEW temp."{view}"')
    types = [str(r[2] or "").strip() for r in sorted(info, key=lambda r: r[0])]
    return types if len(types) == width else [""] * width


def _sqlite_type(seen: set[str]) -> str:
    if not seen:
        return "TEXT"
    if seen <= {"int"}:
        return "INTEGER"
    if seen <= {"float"}:
        return "REAL"
    if seen <= {"int", "float"}:
        return "NUMERIC"  # integers and reals: a REAL would round integers beyond 2**53
    if seen <= {"bytes"}:
        return "BLOB"
    return "TEXT"


class _CopyProgress:
    """Polls pg_stat_progress_copy of the destination backend from a second connection."""

    def __init__(self, dest: NativeDB, progress: ProgressFn, interval: float = 1.0) -> None:
        self.dest_pid = dest.backend_pid()
        self.endpoint = dest.endpoint
        self.progress = progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipekit-copy-progress", daemon=True)

    def __enter__(self) -> _CopyProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            mon = NativeDB(self.endpoint, application="pipekit progress")
        except Exception:  # noqa: BLE001 - progress is a nicety; the copy goes on without it
            return
        try:
            while not self._stop.wait(self.interval):
                row = mon.query_one(
                    "SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = %s", (self.dest_pid,)
                )
                if row is not None:
                    self.progress(int(row[0]))
        except Exception:  # noqa: BLE001
            pass
        finally:
            mon.close()


_COPY_COLUMN_RE = re.compile(r"COPY [^,]+, line (\d+), column ([^:]+):")


@contextlib.contextmanager
def _named_type_errors(req: StageRequest) -> Iterator[None]:
    """A value the staging column's type refuses (psycopg DataError during COPY into staging, class
    22: invalid text, out of range, too long, bad date) fails naming the column, the line and the
    ``columns: dest_type`` to declare. PostgreSQL's COPY context line carries the column name."""
    import psycopg

    try:
        yield
    except psycopg.errors.DataError as e:
        diag = e.diag
        m = _COPY_COLUMN_RE.search(diag.context or "")
        if m is None:
            raise
        line, col_name = int(m[1]), m[2]
        by_name = {c.name: (i, c) for i, c in enumerate(req.staging_columns)}
        if col_name not in by_name:
            raise
        i, col = by_name[col_name]
        source = req.source_columns[i].name if i < len(req.source_columns) else col_name
        hint = "numeric" if diag.sqlstate == "22003" else "text"
        raise TransportError(
            f"module '{req.module}': column '{col_name}' ({col.type}), source row {line}: "
            f"{(diag.message_primary or str(e)).strip()}. Declare a type that holds it under columns:, "
            f"e.g. {{source_name: {source}, dest_type: {hint}}}"
        ) from e


def _pg_to_pg(src: NativeDB, dest: NativeDB, req: StageRequest, progress: ProgressFn) -> int:
    with _named_type_errors(req):
        return _pg_to_pg_copy(src, dest, req, progress)


def _pg_to_pg_copy(src: NativeDB, dest: NativeDB, req: StageRequest, progress: ProgressFn) -> int:
    d = dest.dialect
    binary = all(
        s.type == c.type for s, c in zip(req.source_columns, req.staging_columns, strict=True)
    )
    fmt = " (FORMAT BINARY)" if binary else ""
    cols = ", ".join(d.quote(c.name) for c in req.staging_columns)
    out_sql = wrap_lines("COPY (", _text_casts(req, src.dialect.quote), f") TO STDOUT{fmt}")
    in_sql = f"COPY {d.table(req.staging)} ({cols}) FROM STDIN{fmt}"
    watch = row_watch()
    limit = watch.next_at
    with dest.transaction(), _CopyProgress(dest, progress):
        scur, dcur = src.raw.cursor(), dest.raw.cursor()
        with scur.copy(out_sql) as cout, dcur.copy(in_sql) as cin:
            seen = 0
            # COPY TO yields one row per block; writing each alone costs a libpq round of
            # Python calls per row (measured ~2-3 s per 1M rows). Send ~64 KiB chunks instead.
            buf = bytearray()
            for block in cout:
                buf += block
                if len(buf) >= COPY_CHUNK:
                    cin.write(buf)
                    buf = bytearray()
                if limit is not None:  # count rows only for the after_rows fault point
                    # COPY TO sends one message per row; binary adds a 2-byte trailer message.
                    seen += (block != b"\xff\xff") if binary else bytes(block).count(b"\n")
                    if seen >= limit:
                        if buf:  # the fault point fires after the rows were sent
                            cin.write(buf)
                            buf = bytearray()
                        watch(seen)
                        limit = watch.next_at
            if buf:
                cin.write(buf)
        rows = int(dcur.rowcount)
    progress(rows)
    return rows


_TEXT_TYPES = re.compile(r"^\s*(text|character varying|varchar|character|char|bpchar)\b", re.I)


def _text_casts(req: StageRequest, q: Callable[[str], str]) -> str:
    """The query, with each column staged as text (``columns: dest_type: text``) cast to it on the
    source: a column's text COPY form is not always its text value (a boolean COPYs as t/f, its
    ``::text`` is true/false, as every other transport renders it)."""
    cast = [
        bool(_TEXT_TYPES.match(c.type)) and s.type != c.type
        for s, c in zip(req.source_columns, req.staging_columns, strict=True)
    ]
    if not any(cast):
        return req.sql
    # ::text, never ::<the column's type>: an explicit cast to varchar(n) / char(n) truncates
    # silently, where COPY's input into that column refuses a value too long.
    items = [f"q.{q(s.name)}::text" if k else f"q.{q(s.name)}"
             for s, c, k in zip(req.source_columns, req.staging_columns, cast, strict=True)]
    return wrap_lines("SELECT " + ", ".join(items) + " FROM (", req.sql, ") AS q")


def _converter(kind: str, type_name: str) -> Callable[[Any], Any] | None:
    """Python value conversion for a SQLite destination (which stores int/float/str/bytes)."""
    if kind != "sqlite":
        return None

    def conv(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return "NaN"  # sqlite3 would store a NaN as NULL
        if v is None or isinstance(v, (int, float, str, bytes)):
            return int(v) if isinstance(v, bool) else v
        if isinstance(v, Decimal):
            return str(v) if not v.is_nan() else "NaN"
        if isinstance(v, dt.datetime):
            return v.isoformat(sep=" ")
        if isinstance(v, (dt.date, dt.time)):
            return v.isoformat()
        if isinstance(v, dt.timedelta):
            return str(v)
        if isinstance(v, (memoryview, bytearray)):
            return bytes(v)
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, (dict, list)):
            return json.dumps(v, ensure_ascii=False, default=str)
        return str(v)

    return conv


def _writer(dest: NativeDB, req: StageRequest) -> tuple[Callable[[list[tuple]], None], Callable[[], None]]:
    """A batch writer into the staging table, and its closer. Called inside a transaction."""
    d = dest.dialect
    if dest.kind == "postgresql":
        cols = ", ".join(d.quote(c.name) for c in req.staging_columns)
        cur = dest.raw.cursor()
        cm = cur.copy(f"COPY {d.table(req.staging)} ({cols}) FROM STDIN")
        copy = cm.__enter__()

        def write(batch: list[tuple]) -> None:
            for row in batch:
                copy.write_row(row)

        def close() -> None:
            cm.__exit__(None, None, None)

        return write, close
    marks = ", ".join("?" for _ in req.staging_columns)
    cols = ", ".join(d.quote(c.name) for c in req.staging_columns)
    stmt = f"INSERT INTO {d.table(req.staging)} ({cols}) VALUES ({marks})"

    def write_sqlite(batch: list[tuple]) -> None:
        dest.raw.executemany(stmt, batch)

    return write_sqlite, lambda: None


def _pump(
    rows: Iterator[tuple], dest: NativeDB, req: StageRequest, progress: ProgressFn, convert: bool = True
) -> int:
    if dest.kind == "postgresql":
        with _named_type_errors(req):
            return _pump_rows(rows, dest, req, progress, convert)
    return _pump_rows(rows, dest, req, progress, convert)


def _pump_rows(
    rows: Iterator[tuple], dest: NativeDB, req: StageRequest, progress: ProgressFn, convert: bool
) -> int:
    convs = [_converter(dest.kind, c.type) for c in req.staging_columns] if convert else []
    guards = [value_guard(dest.kind, t) for t in req.value_types()]
    if any(convs) or any(guards):
        rows = _checked(rows, convs, guards, req, dest.kind)
    total = 0
    last = time.monotonic()
    watch = row_watch()
    limit = watch.next_at  # after_rows fault point: flush a batch exactly when it is reached
    with dest.transaction():
        write, close = _writer(dest, req)
        try:
            batch: list[tuple] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= BATCH or (limit is not None and total + len(batch) >= limit):
                    write(batch)
                    total += len(batch)
                    batch = []
                    if limit is not None and total >= limit:
                        watch(total)
                        limit = watch.next_at
                    now = time.monotonic()
                    if now - last >= 0.5:
                        progress(total)
                        last = now
            if batch:
                write(batch)
                total += len(batch)
        finally:
            close()
    progress(total)
    return total


def _checked(
    rows: Iterator[tuple], convs: list[Callable[[Any], Any] | None], guards: list[Callable[[Any], Any] | None],
    req: StageRequest, dest_kind: str,
) -> Iterator[tuple]:
    """Rows converted for the destination and checked to arrive exactly (:func:`value_guard`)."""
    steps = [
        (i, c, g) for i, (c, g) in enumerate(zip(convs or [None] * len(guards), guards, strict=True)) if c or g
    ]
    for n, row in enumerate(rows, start=1):
        out = list(row)
        for i, c, g in steps:
            v = out[i]
            if v is None:
                continue
            if c is not None:
                v = c(v)
            if g is not None:
                try:
                    v = g(v)
                except InexactValue as e:
                    col = req.staging_columns[i]
                    col = ColumnDef(col.name, req.value_types()[i])
                    source = req.source_columns[i].name if i < len(req.source_columns) else col.name
                    raise TransportError(
                        f"module '{req.module}': column '{col.name}' ({col.type}), source row {n}: {e.reason}; "
                        f"{dest_kind} would not store it exactly. Declare a type that holds it under columns:, "
                        f"e.g. {{source_name: {source}, dest_type: {e.hint}}}"
                    ) from None
            out[i] = v
        yield tuple(out)


def _pg_to_rows(src: NativeDB, dest: NativeDB, req: StageRequest, progress: ProgressFn) -> int:
    out_sql = wrap_lines("COPY (", req.sql, ") TO STDOUT")

    def rows() -> Iterator[tuple]:
        cur = src.raw.cursor()
        _lenient_datetimes(cur)
        with cur.copy(out_sql) as cout:
            cout.set_types([_load_type(c.type) for c in req.source_columns])
            yield from cout.rows()

    return _pump(rows(), dest, req, progress)


# Types parsed into Python values on the way to a row-by-row destination (SQLite). Every other
# type is read as PostgreSQL's own text form, which is exact: numeric digits, json text (JSON
# null stays 'null'), intervals, enums, ranges, ... (docs/fidelity.md).
_PARSED = frozenset({
    "smallint", "integer", "bigint", "oid", "real", "double precision", "boolean", "bytea", "uuid",
    "date", "time without time zone", "time with time zone", "timestamp without time zone",
    "timestamp with time zone",
})
# Array elements parsed into JSON numbers/booleans/strings; other element types become strings.
_PARSED_ELEMENTS = _PARSED - {"bytea", "oid"} | {"text", "character varying", "character", "name"}


def _load_type(type_text: str) -> str:
    """The type to parse a COPY column as: 'timestamp(3) with time zone' -> 'timestamp with time zone',
    'numeric(12,2)' -> 'text', 'integer[]' -> 'integer[]', 'mood[]' -> 'text[]'."""
    t = re.sub(r"\([^()]*\)", "", type_text).strip()
    if t.endswith("[]"):
        elem = t.split("[", 1)[0].strip()
        return elem + "[]" if elem in _PARSED_ELEMENTS else "text[]"
    return t if t in _PARSED else "text"


def _lenient_datetimes(cur: Any) -> None:
    """Dates, times and timestamps Python cannot hold ('infinity', BC, 24:00) arrive as their text.

    Wraps the driver's (C) loaders: about 1 us per value more; subclassing them is not possible.
    """
    import psycopg
    from psycopg.adapt import Loader

    for name in ("date", "time", "timetz", "timestamp", "timestamptz"):
        oid = psycopg.postgres.types[name].oid
        base = cur.adapters.get_loader(oid, psycopg.pq.Format.TEXT)

        class Lenient(Loader):
            inner_class = base

            def __init__(self, oid: int, context: Any = None) -> None:
                super().__init__(oid, context)
                self.inner = self.inner_class(oid, context)

            def load(self, data: Any) -> Any:
                try:
                    return self.inner.load(data)
                except psycopg.DataError:
                    return bytes(data).decode()

        cur.adapters.register_loader(oid, Lenient)


def _sqlite_to_any(src: NativeDB, dest: NativeDB, req: StageRequest, progress: ProgressFn) -> int:
    def rows() -> Iterator[tuple]:
        cur = src.raw.execute(prepare_for_wrapping(req.sql))
        while True:
            chunk = cur.fetchmany(BATCH)
            if not chunk:
                return
            yield from chunk

    # sqlite3 returns only None/int/float/str/bytes (never NaN): nothing to convert for SQLite;
    # every value is still checked to arrive exactly (value_guard).
    return _pump(rows(), dest, req, progress, convert=dest.kind != "sqlite")


SOURCE_SCHEMA = "pipekit_src"  # the source file's schema name on the destination connection
_SQLITE_READ, _SQLITE_OK, _SQLITE_DENY = 20, 0, 1
_EXACT_INT_IN_REAL = 2**53  # every integer up to this is exact as a 64-bit float
_ROWID = re.compile(r"\b(rowid|oid|_rowid_)\b", re.I)


def sqlite_in_sqlite_reason(src: Endpoint, dest: Endpoint, sql: str) -> str:
    """Why a SQLite -> SQLite copy cannot run inside SQLite ('' when it can): the one place this
    is decided, for staging and for single-write full refreshes alike."""
    if src.kind != "sqlite" or dest.kind != "sqlite":
        return "not SQLite on both ends"
    try:
        if src.sqlite_path().resolve() == dest.sqlite_path().resolve():
            return "source and destination are one file"
    except Exception as e:  # noqa: BLE001 - an unusual URL: the row-by-row path decides
        return str(e)
    if _ROWID.search(sql):
        return "the query uses rowid (the source's tables are read through views, which have none)"
    return ""


@contextlib.contextmanager
def sqlite_source_attached(dest: NativeDB, src: Endpoint) -> Iterator[None]:
    """The source file attached to the destination connection (outside any transaction: SQLite
    cannot attach inside one). Names of the destination keep their meaning (main comes first);
    :func:`sqlite_insert_select` makes the query's names mean the source's."""
    q = dest.dialect.quote
    dest.raw.execute(f"ATTACH DATABASE ? AS {q(SOURCE_SCHEMA)}", (str(src.sqlite_path()),))
    dest.attached_source = str(src.sqlite_path())
    try:
        yield
    finally:
        dest.attached_source = None
        with contextlib.suppress(Exception):
            dest.raw.execute(f"DETACH DATABASE {q(SOURCE_SCHEMA)}")


def _sqlite_to_sqlite(src: NativeDB, dest: NativeDB, req: StageRequest, progress: ProgressFn) -> int:
    """SQLite -> SQLite inside SQLite (~3x faster than rows through Python). Staging: the source
    attached, one deferred transaction (the source is only read: a shared lock, never a write
    lock). A single-write full refresh: the merge already attached it and holds its transaction."""
    if dest.attached_source is not None:
        return sqlite_insert_select(dest, req, progress)
    with sqlite_source_attached(dest, req.source), dest.transaction(immediate=False):
        return sqlite_insert_select(dest, req, progress)


def sqlite_insert_select(dest: NativeDB, req: StageRequest, progress: ProgressFn) -> int:
    """``INSERT INTO main.<table> SELECT * FROM (<query>)`` with the source attached, inside the
    caller's transaction; returns the rows inserted.

    - The query's table names mean the source's: for this one statement, a TEMP view per source
      table and view shadows any same-named table of the destination (temp resolves first), and an
      authorizer refuses the statement's own reads of the destination, so a table missing from the
      source fails the run instead of being read from the destination.
    - Values arrive exactly as the row-by-row path's checks require (:func:`_exact_select`).
    - Cancelling interrupts the statement. The ``after_rows`` fault point counts rows with a SQL
      function, only while PIPEKIT_FAILPOINT asks for it.
    """
    d, con = dest.dialect, dest.raw
    q = d.quote
    target = d.table(TableName("main", req.staging.name))
    cols = ", ".join(q(c.name) for c in req.staging_columns)
    watch = row_watch()
    counted = 0
    failed: list[BaseException] = []

    def tick() -> int:
        nonlocal counted
        counted += 1
        if watch.next_at is not None and counted >= watch.next_at:
            try:
                watch(counted)
            except BaseException as e:  # a raise fault point: reported as itself, not as SQLite's wrapper
                failed.append(e)
                raise
        return 1

    where = ""
    if watch.next_at is not None:
        con.create_function("pipekit_row", 0, tick)
        where = " WHERE pipekit_row()"
    denied: list[str] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None) -> int:
        if action == _SQLITE_READ and dbname == "main" and source is None:
            denied.append(arg1 or "?")
            return _SQLITE_DENY
        return _SQLITE_OK

    names = [r[0] for r in con.execute(
        f"SELECT name FROM {q(SOURCE_SCHEMA)}.sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'")]
    try:
        for n in names:
            con.execute(f"CREATE TEMP VIEW {q(n)} AS SELECT * FROM {q(SOURCE_SCHEMA)}.{q(n)}")
        select = _exact_select(dest, req, failed)
        con.set_authorizer(authorize)
        try:
            with dest._sqlite_locked():
                cur = con.execute(wrap_lines(f"INSERT INTO {target} ({cols}) SELECT {select} FROM (", req.sql,
                                             f") AS q{where}"))
        finally:
            con.set_authorizer(None)
    except sqlite3.DatabaseError:
        if failed:
            raise failed[0] from None
        if denied:
            raise TransportError(
                f"module '{req.module}': the source query reads table '{denied[0]}', which the source database "
                f"{req.source.sqlite_path()} does not have"
            ) from None
        raise
    finally:
        for n in names:
            with contextlib.suppress(Exception):
                con.execute(f"DROP VIEW IF EXISTS temp.{q(n)}")
    rows = int(cur.rowcount)
    progress(rows)
    return rows


def _exact_select(dest: NativeDB, req: StageRequest, failed: list[BaseException]) -> str:
    """The SELECT list that makes values arrive as :func:`value_guard` requires on the row-by-row
    path, evaluated per row inside SQLite (before a typed column's affinity converts them): floats
    bound for TEXT get ``repr``'s shortest exact text (SQLite's own conversion keeps 15 digits);
    integers bound for REAL beyond 2**53 must be exact floats, else the run fails naming the column."""
    q = SQLiteDialect().quote

    def real_exact(v: Any, i: int) -> Any:
        typ = req.value_types()[i]
        try:
            return value_guard("sqlite", typ)(v)  # type: ignore[misc]
        except InexactValue as e:
            col = req.staging_columns[i].name
            source = req.source_columns[i].name if i < len(req.source_columns) else col
            failed.append(TransportError(
                f"module '{req.module}': column '{col}' ({typ}): {e.reason}; sqlite would not store it exactly. "
                f"Declare a type that holds it under columns:, e.g. {{source_name: {source}, dest_type: {e.hint}}}"
            ))
            raise

    dest.raw.create_function("pipekit_repr", 1, repr, deterministic=True)
    dest.raw.create_function("pipekit_real_exact", 2, real_exact)
    # A column declared with the same affinity on the source already holds only such values (SQLite
    # converts on storage): TEXT holds no floats, REAL no integers. Its per-row check is left out.
    declared = [sqlite_affinity(t) if t else None  # (through the TEMP views: the source's declarations)
                for t in _sqlite_declared_types(dest, req.sql, len(req.source_columns))]
    items = []
    for i, (sc, typ) in enumerate(zip(req.source_columns, req.value_types(), strict=True)):
        v = f"q.{q(sc.name)}"
        aff = sqlite_affinity(typ)
        if aff in ("TEXT", "REAL") and declared[i] == aff:
            items.append(v)
        elif aff == "TEXT":
            items.append(f"CASE WHEN typeof({v}) = 'real' THEN pipekit_repr({v}) ELSE {v} END")
        elif aff == "REAL":
            items.append(f"CASE WHEN typeof({v}) = 'integer' AND abs({v}) > {_EXACT_INT_IN_REAL} "
                         f"THEN pipekit_real_exact({v}, {i}) ELSE {v} END")
        else:
            items.append(v)
    return ", ".join(items)
