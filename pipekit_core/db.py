"""Native database connections: JDBC URL parsing and one small wrapper per driver.

Connections are defined with JDBC URLs (as the original pipekit stores them). The native
transport and every destination-side statement (staging DDL, merge, hooks) go through
:class:`NativeDB`, which hides the differences between psycopg 3 and sqlite3 that the engine
cares about: transactions, cancellation and a few catalog questions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pipekit_core.errors import ConfigError, PipekitError, TransientError, TransportError
from pipekit_core.models import Connection
from pipekit_core.secrets import redact
from pipekit_core.sql.dialects import Dialect, TableName, get_dialect

# psycopg logs the errors it ignores while unwinding a failure it already raised (e.g. "error
# ignored terminating <psycopg.Copy ...>: canceling statement" when a timeout cancels a COPY).
# Without a handler Python's last-resort handler prints them to stderr, next to the run's own,
# accurate error. A NullHandler keeps them off stderr; they still propagate to an application's
# own logging configuration.
logging.getLogger("psycopg").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Endpoint:
    """A connection with its secrets resolved. Never log ``password``."""

    conn: Connection
    user: str | None
    password: str | None

    @property
    def name(self) -> str:
        return self.conn.name

    @property
    def kind(self) -> str:
        return self.conn.kind

    @property
    def dialect(self) -> Dialect:
        return get_dialect(self.kind)

    def sqlite_path(self) -> Path:
        url = self.conn.url.strip()
        for prefix in ("jdbc:sqlite:", "sqlite:///", "sqlite:"):
            if url.lower().startswith(prefix):
                raw = url[len(prefix):]
                break
        else:  # pragma: no cover - kind says sqlite
            raise ConfigError(f"connection '{self.name}': not a SQLite URL")
        raw = raw.split("?", 1)[0]
        if raw in ("", ":memory:"):
            raise ConfigError(f"connection '{self.name}': an in-memory SQLite database cannot be shared; give a file path")
        p = Path(raw).expanduser()
        if not p.is_absolute():
            p = Path(self.conn.base_dir or ".") / p
        return p

    def pg_params(self) -> dict[str, Any]:
        """psycopg.connect() keyword arguments from a jdbc:postgresql:// or postgresql:// URL."""
        url = self.conn.url.strip()
        if url.lower().startswith("jdbc:"):
            url = url[5:]
        # user:password@ is cut off first: a password may hold / : ? # which urlsplit would take
        # for the path or port (and its port error would quote the password)
        userinfo = None
        scheme, sep, rest = url.partition("://")
        if sep:
            at = rest.split("?", 1)[0].rfind("@")
            if at >= 0:
                userinfo, rest = rest[:at], rest[at + 1 :]
            url = f"{scheme}://{rest}"
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(
                f"connection {self.conn.name!r}: the port in its URL is not a number; "
                "write host:port with a numeric port (the URL is not shown: it may hold a password)"
            ) from None
        params: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": port or 5432,
            "dbname": unquote(parts.path.lstrip("/")) or "postgres",
        }
        for k, v in parse_qsl(parts.query):
            kl = k.lower()
            if kl in ("user", "password"):
                params[kl] = v
            elif kl in ("sslmode", "connect_timeout", "application_name"):
                params[kl] = v
            elif kl == "currentschema":
                params["options_schema"] = v
        if userinfo is not None:
            user, has_pw, password = userinfo.partition(":")
            if user:
                params["user"] = unquote(user)
            if has_pw and password:
                params["password"] = unquote(password)
        if self.user:
            params["user"] = self.user
        if self.password is not None:
            params["password"] = self.password
        params.setdefault("connect_timeout", 10)
        return params

    def safe_url(self) -> str:
        return redact(self.conn.url)


# Every PostgreSQL session pipekit opens (source and destination, native and jrunner's JDBC URL)
# speaks this one dialect of text, whatever the server's, database's or role's defaults say:
# dates in ISO order, intervals in postgres style, floats with every digit (shortest exact
# form), UTC, UTF-8, hex bytea and plain '...' strings. Sent at connect time (libpq/pgjdbc
# ``options``), so they are in force from the first statement.
PG_SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("TimeZone", "UTC"),
    ("client_encoding", "UTF8"),
    ("bytea_output", "hex"),
    ("standard_conforming_strings", "on"),
)


def pg_session_options() -> str:
    """:data:`PG_SESSION_SETTINGS` as a libpq/pgjdbc ``options`` value: ``-c DateStyle=ISO -c ...``."""
    return " ".join(f"-c {k}={v}" for k, v in PG_SESSION_SETTINGS)


def sqlite_busy_timeout_s() -> float:
    """How long a SQLite statement waits for another connection's lock: 60 s, or
    ``PIPEKIT_SQLITE_BUSY_TIMEOUT`` seconds."""
    try:
        return max(0.0, float(os.environ.get("PIPEKIT_SQLITE_BUSY_TIMEOUT", "60")))
    except ValueError:
        raise ConfigError("PIPEKIT_SQLITE_BUSY_TIMEOUT must be a number of seconds") from None


class NativeDB:
    """An open native connection: psycopg 3 for PostgreSQL, sqlite3 for SQLite.

    Transactions are explicit (:meth:`transaction`); outside them PostgreSQL runs in autocommit.
    Every PostgreSQL session uses :data:`PG_SESSION_SETTINGS`.
    """

    def __init__(self, endpoint: Endpoint, *, application: str = "pipekit", create: bool = False) -> None:
        self.endpoint = endpoint
        self.kind = endpoint.kind
        self.dialect = endpoint.dialect
        self.raw: Any
        if self.kind == "postgresql":
            import psycopg

            params = endpoint.pg_params()
            schema = params.pop("options_schema", None)
            options = pg_session_options()
            if schema:
                options += f" -c search_path={schema}"
            try:
                self.raw = psycopg.connect(autocommit=True, options=options, application_name=application, **params)
            except psycopg.OperationalError as e:
                raise TransientError(
                    f"connection '{endpoint.name}' ({endpoint.safe_url()}): cannot connect: {redact(str(e).strip())}"
                ) from None
        elif self.kind == "sqlite":
            path = endpoint.sqlite_path()
            if not path.parent.exists():
                raise ConfigError(f"connection '{endpoint.name}': folder {path.parent} does not exist")
            if not create and not path.exists():
                # Reading (resolvers, dry runs, probes) must not leave an empty database file behind.
                raise ConfigError(f"connection '{endpoint.name}': SQLite database {path} does not exist")
            self._busy_s = sqlite_busy_timeout_s()
            self._path = path
            self.raw = sqlite3.connect(str(path), isolation_level=None, timeout=self._busy_s, check_same_thread=False)
            self.raw.execute(f"PRAGMA busy_timeout = {int(self._busy_s * 1000)}")
        else:
            raise TransportError(
                f"connection '{endpoint.name}': no native driver for '{self.kind}' databases; "
                "use transport: jrunner for this source"
            )
        self._in_tx = False
        self.attached_source: str | None = None  # SQLite: the source file attached (sqlite_source_attached)

    # -- basics ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _sqlite_locked(self) -> Iterator[None]:
        """A SQLite "database is locked" names the file, the wait and what to do."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if self.kind != "sqlite" or "locked" not in str(e) and "busy" not in str(e):
                raise
            raise PipekitError(
                f"connection '{self.endpoint.name}': SQLite database {self._path} stayed locked by another "
                f"connection for {self._busy_s:g} s (busy timeout, PIPEKIT_SQLITE_BUSY_TIMEOUT); stop or "
                "finish the other reader/writer and retry. pipekit never changes a database's journal mode"
            ) from None

    def execute(self, sql: str, params: Any = None) -> int:
        """Run one statement; returns its row count (-1 when the driver does not know)."""
        with self._sqlite_locked():
            cur = self.raw.execute(sql, params) if params is not None else self.raw.execute(sql)
        rc = cur.rowcount
        return int(rc) if rc is not None else -1

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        with self._sqlite_locked():
            cur = self.raw.execute(sql, params) if params is not None else self.raw.execute(sql)
            return list(cur.fetchall())

    def query_one(self, sql: str, params: Any = None) -> tuple | None:
        with self._sqlite_locked():
            cur = self.raw.execute(sql, params) if params is not None else self.raw.execute(sql)
            return cur.fetchone()

    @contextlib.contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[None]:
        """One transaction; rolled back on any exception, KeyboardInterrupt included.

        SQLite: BEGIN IMMEDIATE (the write lock at once, no deadlock on upgrade), or a deferred
        BEGIN with ``immediate=False`` where an attached file must only be read (IMMEDIATE
        takes the write lock of every attached database); its first statement must then write."""
        if self.kind == "postgresql":
            outer = self._in_tx
            with self.raw.transaction():  # inside another one: a savepoint
                self._in_tx = True
                try:
                    yield
                finally:
                    self._in_tx = outer
        else:
            with self._sqlite_locked():
                self.raw.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self._in_tx = True
            try:
                yield
            except BaseException:
                with contextlib.suppress(Exception):
                    self.raw.execute("ROLLBACK")
                raise
            else:
                try:
                    with self._sqlite_locked():
                        self.raw.execute("COMMIT")
                except BaseException:
                    if self.raw.in_transaction:  # a COMMIT refused as busy leaves it open
                        with contextlib.suppress(Exception):
                            self.raw.execute("ROLLBACK")
                    raise
            finally:
                self._in_tx = False

    def cancel(self) -> None:
        """Stop the statement running now (server-side cancel on PostgreSQL). Thread-safe."""
        with contextlib.suppress(Exception):
            if self.kind == "postgresql":
                self.raw.cancel_safe(timeout=5)
            else:
                self.raw.interrupt()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()

    def __enter__(self) -> NativeDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- catalog questions ----------------------------------------------------------------
    def table_exists(self, t: TableName) -> bool:
        if self.kind == "postgresql":
            row = self.query_one("SELECT to_regclass(%s) IS NOT NULL", (self.dialect.table(t),))
            return bool(row and row[0])
        row = self.query_one("SELECT 1 FROM sqlite_master WHERE type IN ('table','view') "
            # SQLite matches identifiers ASCII-case-insensitively, as NOCASE does
            "AND name = ? COLLATE NOCASE", (t.name,))
        return row is not None

    def table_columns(self, t: TableName) -> list[tuple[str, str, bool]]:
        """(name, type, nullable) of a table's columns in order; [] when it does not exist."""
        if self.kind == "postgresql":
            rows = self.query(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull "
                "FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum",
                (self.dialect.table(t),),
            )
            return [(r[0], r[1], bool(r[2])) for r in rows]
        rows = self.query(f"PRAGMA table_info({self.dialect.quote(t.name)})")
        # cid, name, type, notnull, dflt, pk. A SQLite PRIMARY KEY column may hold NULL (unless
        # declared NOT NULL), except the rowid alias: a lone INTEGER PRIMARY KEY.
        rowid = [r[1] for r in rows if r[5]] if sum(1 for r in rows if r[5]) == 1 else []
        return [(r[1], r[2] or "", not r[3] and not (r[1] in rowid and (r[2] or "").upper() == "INTEGER")) for r in rows]

    def unique_keys(self, t: TableName) -> list[list[str]]:
        """The column sets a primary key or a unique index (without a predicate) of ``t`` covers."""
        if self.kind == "postgresql":
            rows = self.query(
                "SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x "
                "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) "
                "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
                "WHERE x.indrelid = to_regclass(%s) AND x.indisunique AND x.indpred IS NULL GROUP BY x.indexrelid",
                (self.dialect.table(t),),
            )
            return [list(r[0]) for r in rows]
        q = self.dialect.quote
        out = []
        for idx in self.query(f"PRAGMA index_list({q(t.name)})"):  # seq, name, unique, origin, partial
            if idx[2] and not idx[4]:
                out.append([r[2] for r in self.query(f"PRAGMA index_info({q(idx[1])})")])
        pk = [r[1] for r in sorted(self.query(f"PRAGMA table_info({q(t.name)})"), key=lambda r: r[5]) if r[5]]
        if pk and pk not in out:
            out.append(pk)
        return out

    def backend_pid(self) -> int | None:
        if self.kind == "postgresql":
            return int(self.raw.info.backend_pid)
        return None


def is_transient_db_error(exc: BaseException) -> bool:
    """Connection-level faults worth a retry (refused, dropped, admin shutdown)."""
    try:
        import psycopg
        from psycopg import errors as pge
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (pge.AdminShutdown, pge.CannotConnectNow, pge.ConnectionFailure)):
        return True
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, pge.QueryCanceled):
        return True
    return False


def execute_ddl(db: NativeDB, stmt: str) -> None:
    """Run one ``CREATE ... IF NOT EXISTS`` statement inside the caller's transaction.

    Parallel first runs race to create the same schema or table: PostgreSQL fails the loser's
    IF NOT EXISTS with a unique violation on its catalog once the winner commits. That loss is
    not an error (the object exists now): the statement runs in a savepoint and the race is
    swallowed, the transaction goes on.
    """
    if db.kind != "postgresql" or not stmt.lstrip().upper().startswith("CREATE"):
        db.execute(stmt)
        return
    try:
        with db.raw.transaction():  # a savepoint
            db.execute(stmt)
    except Exception as e:
        if getattr(getattr(e, "diag", None), "constraint_name", None) not in (
            "pg_namespace_nspname_index", "pg_type_typname_nsp_index", "pg_class_relname_nsp_index"
        ):
            raise
