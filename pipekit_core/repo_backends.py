"""The repository's two backends: a SQLite file (the default) and a PostgreSQL database.

:class:`pipekit_core.repo.Repository` is written once, in SQL that both backends run: ``?``
placeholders, ``ON CONFLICT``, ``RETURNING``. Every difference lives here:

| what                       | SQLite                               | PostgreSQL                                   |
|----------------------------|--------------------------------------|----------------------------------------------|
| placeholders               | ``?``                                | ``%s`` (translated from ``?``)               |
| a write transaction        | ``BEGIN IMMEDIATE`` (whole file)     | ``BEGIN`` plus row locks / advisory locks    |
| one module's lock row      | (the file lock above)                | ``pg_advisory_xact_lock(class, hashtext(m))``|
| re-read a row to update it | plain ``SELECT``                     | ``SELECT ... FOR UPDATE``                    |
| "this owner's row"         | ``token IS ?``                       | ``token IS NOT DISTINCT FROM %s``            |
| migration DDL              | as written in ``MIGRATIONS``         | translated by :func:`pg_ddl`                 |
| migrating under concurrency| ``BEGIN IMMEDIATE`` per migration    | ``pg_advisory_xact_lock`` per migration      |
| where the tables live      | the file                             | the schema ``pipekit`` of the database       |
| connections                | one per call                         | a small per-process pool (fork-safe)         |

The SQLite side is the pipekit.db of before, statement for statement: existing files migrate.

Lock owners are identified by :func:`host_identity`: the hostname plus what makes "the same
machine" true for a process table (the kernel's boot id and the PID namespace), so that the
"its process is gone" shortcut is only taken where the pid really names a process we can see.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from pipekit_core.errors import RepositoryError
from pipekit_core.secrets import VAR_RE, Secrets, redact, register_secret

BUSY_TIMEOUT_S = 30.0
PG_SCHEMA = "pipekit"
PG_APPLICATION = "repo:pipekit"  # not "pipekit...": tests end destination sessions by that prefix
PG_CONNECT_TIMEOUT_S = 10
PG_MIGRATION_LOCK = 7_402_113  # pg_advisory_xact_lock key: "pipekit schema migrations"
PG_MODULE_LOCK_CLASS = 7_402_114  # first key of the per-module advisory lock
POOL_IDLE = 4  # idle PostgreSQL connections kept per process and database
POOL_MAX_IDLE_S = 60.0  # an idle connection older than this is closed, not reused
POOL_PING_AFTER_S = 5.0  # one idle longer than this is checked before it is reused
URL_SCHEMES = ("postgresql://", "postgres://")

MigrationList = Sequence[tuple[int, str, list[str]]]


# -- host identity ------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """What makes two processes "on the same machine" for a pid check, or "" when unknown.

    The kernel's boot id (a reboot or another machine changes it) plus the PID namespace (each
    container has its own: the same pid in another container is another process). Without a boot
    id (not Linux), the Dagster run id (``DAGSTER_RUN_ID``) when there is one.
    """
    boot = _read("/proc/sys/kernel/random/boot_id").replace("-", "")
    if boot:
        try:
            ns = os.readlink("/proc/self/ns/pid")
        except OSError:
            ns = ""
        ns_id = "".join(ch for ch in ns if ch.isdigit())
        return boot[:12] + (f".{ns_id}" if ns_id else "")
    run = os.environ.get("DAGSTER_RUN_ID", "").strip()
    return f"run-{run[:12]}" if run else ""


def host_identity() -> str:
    """The ``host`` of this process's locks and runs: ``hostname#bootid.pidns``.

    Two processes with the same identity see each other's pids (same kernel, same PID
    namespace, same UTS hostname); any other pair can only go by the lock's heartbeat.
    """
    name = socket.gethostname()
    mid = machine_id()
    return f"{name}#{mid}" if mid else name


# -- the database setting ------------------------------------------------------------------------

def is_url(value: str) -> bool:
    return "://" in value


@dataclass(frozen=True, repr=False)
class DatabaseURL:
    """A PostgreSQL repository setting: ``postgresql://user[:password]@host[:port]/db``.

    The password may be a ``$VAR`` reference (``postgresql://etl:$PIPEKIT_DB_PASSWORD@db/pipekit``),
    resolved from the environment, then the secrets file, when a connection is opened. ``str()``
    is the URL without its password: safe to print.
    """

    url: str
    secrets: Path | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(URL_SCHEMES):
            raise RepositoryError(
                f"database setting {redact(self.url)!r}: a repository URL must start with postgresql:// "
                "(a path selects a SQLite file)"
            )
        user, pw, host, db = self._parts()
        if not db:
            raise RepositoryError(f"database setting {self}: name the database (postgresql://user@host:port/DBNAME)")
        if pw and not VAR_RE.match(pw):
            register_secret(unquote(pw))

    def _parts(self) -> tuple[str, str, str, str]:
        """(user, password as written, host[:port], database[?query]) of the URL."""
        rest = self.url.split("://", 1)[1]
        at = rest.rfind("@")  # the password may hold "/" or "@": the user info runs to the last "@"
        userinfo, hostpath = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
        netloc, _, path = hostpath.partition("/")
        user, _, pw = userinfo.partition(":")
        return user, pw, netloc, path

    @property
    def host(self) -> str:
        return self._parts()[2]

    @property
    def dbname(self) -> str:
        return self._parts()[3].split("?", 1)[0]

    @property
    def display(self) -> str:
        """``postgresql://user@host:port/db`` (no password, no query)."""
        user, _, host, _ = self._parts()
        return f"postgresql://{user + '@' if user else ''}{host}/{self.dbname}"

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:  # Settings' repr shows it: never the password
        return f"DatabaseURL({self.display!r})"

    def exists(self) -> bool:
        """A server database is always "there"; its schema is created on first use."""
        return True

    def conninfo(self) -> str:
        """The libpq URL to connect with, its ``$VAR`` password resolved (never print this)."""
        user, pw, host, path = self._parts()
        if pw and VAR_RE.match(pw):
            secrets = Secrets(self.secrets or Path("/etc/pipekit/secrets.env"))
            resolved = secrets.resolve(pw, where=f"the repository password in {self}") or ""
            pw = quote(resolved, safe="")
        scheme = "postgresql://"
        auth = f"{user}{':' + pw if pw else ''}@" if user or pw else ""
        return f"{scheme}{auth}{host}/{path}"


# -- rows ----------------------------------------------------------------------------------------

class Row(tuple):  # type: ignore[type-arg]
    """A PostgreSQL row readable like ``sqlite3.Row``: by position, by column name, and ``dict(row)``."""

    _names: tuple[str, ...] = ()

    def __new__(cls, names: tuple[str, ...], values: Sequence[Any]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no column {key!r}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = tuple(c.name for c in (cursor.description or ()))
    return lambda values: Row(names, values)


# -- SQLite --------------------------------------------------------------------------------------

class SqliteBackend:
    """``pipekit.db``: WAL mode, a connection per call, ``BEGIN IMMEDIATE`` writes."""

    kind = "sqlite"
    owned = "host = ? AND pid = ? AND token IS ?"
    for_update = ""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    upsert_lock = ("INSERT OR REPLACE INTO module_locks (module, host, pid, run_id, acquired_at, heartbeat_at, token) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)")

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        return str(self.path)

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RepositoryError(
                f"cannot create the folder of the repository {self.path}: {e.strerror}; "
                "create it, fix its permissions or set PIPEKIT_DB to another path"
            ) from None
        try:
            # created owner-only (it holds SQL and connection details); an existing file is tightened
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as e:
            raise RepositoryError(
                f"cannot create the repository {self.path}: {e.strerror}; "
                "fix its permissions or set PIPEKIT_DB to another path"
            ) from None
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise self.error("cannot open", e) from None
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA synchronous = NORMAL")
            con.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            con.close()
            raise self.error("cannot open", e) from None
        return con

    def error(self, what: str, e: BaseException) -> RepositoryError:
        msg = redact(str(e))
        if "not a database" in msg or "malformed" in msg:
            hint = "it is not a pipekit SQLite repository; move it away or set PIPEKIT_DB to another path"
        elif "locked" in msg or "busy" in msg:
            hint = f"another process kept it busy for more than {BUSY_TIMEOUT_S:.0f}s; try again"
        else:
            hint = "check the path and its permissions, or set PIPEKIT_DB to another path"
        return RepositoryError(f"{what} the repository {self.path}: {msg}; {hint}")

    @contextmanager
    def connection(self) -> Iterator[Any]:
        con = self.open()
        try:
            yield con
        except sqlite3.Error as e:
            raise self.error("error using", e) from None
        finally:
            con.close()

    @contextmanager
    def transaction(self, con: Any) -> Iterator[None]:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def lock_module(self, con: Any, module: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the whole file."""

    @staticmethod
    def version(con: Any) -> int:
        return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])

    @staticmethod
    def has_migrations_table(con: Any) -> bool:
        return con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone() is not None

    def schema_version(self) -> int:
        con = self.open()
        try:
            return self.version(con) if self.has_migrations_table(con) else 0
        except sqlite3.Error as e:
            raise self.error("cannot read", e) from None
        finally:
            con.close()

    def migrate(self, migrations: MigrationList, target: int, latest: int, now: Callable[[], str]) -> list[str]:
        """Each migration in its own ``BEGIN IMMEDIATE`` transaction, re-checked inside it."""
        applied: list[str] = []
        con = self.open()
        try:
            try:
                mode = self._enable_wal(con)
                if not self.has_migrations_table(con):
                    con.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
                    )
                current = self.version(con)
                _refuse_newer(current, latest, self.where)
                for version, name, statements in migrations:
                    if version > target or version <= current:
                        continue
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        if self.version(con) < version:
                            for stmt in statements:
                                con.execute(stmt)
                            con.execute(
                                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                (version, name, now()),
                            )
                            applied.append(name)
                        con.execute("COMMIT")
                    except BaseException:
                        if con.in_transaction:
                            con.execute("ROLLBACK")
                        raise
            except sqlite3.Error as e:
                raise self.error("cannot create or upgrade", e) from None
        finally:
            con.close()
        if str(mode).lower() != "wal":
            raise RepositoryError(
                f"the repository {self.path} could not be switched to WAL mode (got {mode}); "
                "put it on a local file system (not a network share) or set PIPEKIT_DB"
            )
        return applied

    @staticmethod
    def _enable_wal(con: sqlite3.Connection) -> str:
        """Switch to WAL. The switch ignores busy_timeout (SQLite answers "locked" at once when
        another process is creating the same new file), so it is retried here."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                mode = str(con.execute("PRAGMA journal_mode").fetchone()[0])
                if mode.lower() == "wal":
                    return mode
                return str(con.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def health(self) -> str:
        return f"sqlite {self.path} (schema version {self.schema_version()})"


def _refuse_newer(current: int, latest: int, where: str) -> None:
    if current > latest:
        raise RepositoryError(
            f"the repository {where} has schema version {current}, newer than this "
            f"pipekit knows ({latest}); upgrade pipekit or use another PIPEKIT_DB"
        )


# -- PostgreSQL ----------------------------------------------------------------------------------

_AUTOINCREMENT = re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b")
_INTEGER = re.compile(r"\bINTEGER\b")
_REAL = re.compile(r"\bREAL\b")
_RESERVED_COLUMN = re.compile(r'(?<![\w"])(user)(?= TEXT)')  # a reserved word in PostgreSQL


def pg_ddl(stmt: str) -> str:
    """A migration statement (written for SQLite) as PostgreSQL runs it.

    Row ids become identity columns, INTEGER becomes BIGINT (row counts pass 2^31), REAL becomes
    DOUBLE PRECISION (SQLite's REAL is 8 bytes, PostgreSQL's 4) and the ``user`` column is quoted.
    Text columns stay TEXT (timestamps are stored as ISO-8601 text by both backends).
    """
    s = _AUTOINCREMENT.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", stmt)
    s = _INTEGER.sub("BIGINT", s)
    s = _REAL.sub("DOUBLE PRECISION", s)
    return _RESERVED_COLUMN.sub(r'"\1"', s)


_SQL_CACHE: dict[str, str] = {}


def pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = _SQL_CACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class PgConnection:
    """A psycopg connection that takes the repository's ``?`` SQL (and stores bools as 0/1)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        values = [int(v) if isinstance(v, bool) else v for v in params]
        return self.raw.execute(pg_sql(sql), values)


class _Pool:
    """Idle connections of one process to one database (a fork starts a new pool)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.idle: list[tuple[Any, float]] = []


_pools: dict[str, _Pool] = {}
_pools_lock = threading.Lock()
_orphans: list[Any] = []  # a forked child's copies of its parent's connections: never closed here


class PostgresBackend:
    """A PostgreSQL database: tables in the schema ``pipekit``, pooled connections."""

    kind = "postgresql"
    owned = "host = ? AND pid = ? AND token IS NOT DISTINCT FROM ?"
    for_update = " FOR UPDATE"
    upsert_lock = ("INSERT INTO module_locks (module, host, pid, run_id, acquired_at, heartbeat_at, token) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (module) DO UPDATE SET host = excluded.host, "
                   "pid = excluded.pid, run_id = excluded.run_id, acquired_at = excluded.acquired_at, "
                   "heartbeat_at = excluded.heartbeat_at, token = excluded.token")

    def __init__(self, url: DatabaseURL) -> None:
        import psycopg

        self.url = url
        self.psycopg = psycopg
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._conninfo: str | None = None

    def conninfo(self) -> str:
        """The URL with its password resolved (once per Repository: a changed secret is seen by the next)."""
        if self._conninfo is None:
            self._conninfo = self.url.conninfo()
        return self._conninfo

    @property
    def path(self) -> DatabaseURL:
        return self.url

    @property
    def where(self) -> str:
        return str(self.url)

    def describe(self) -> str:
        return f"postgresql {self.url.host}/{self.url.dbname}"

    def error(self, what: str, e: BaseException) -> RepositoryError:
        msg = redact(str(e)).strip().replace("\n", " ")
        if isinstance(e, self.psycopg.OperationalError):
            hint = ("check that the server is up and reachable, and the user, password and database "
                    "in PIPEKIT_DB (or 'database' in pipekit.yaml)")
        elif isinstance(e, self.psycopg.errors.InsufficientPrivilege):
            hint = f"grant the user CREATE on the database (for the schema {PG_SCHEMA}) or use another PIPEKIT_DB"
        else:
            hint = "check the database in PIPEKIT_DB"
        return RepositoryError(f"{what} the repository {self.url}: {msg}; {hint}")

    # -- connections ----------------------------------------------------------------------------

    def _pool(self) -> _Pool:
        key = self.conninfo()  # the resolved password is part of it: another password, other connections
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None or pool.pid != os.getpid():
                if pool is not None:
                    _orphans.extend(c for c, _ in pool.idle)  # the parent's sockets: leave them be
                pool = _pools[key] = _Pool()
            return pool

    def _new(self) -> Any:
        try:
            raw = self.psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S,
                                       application_name=PG_APPLICATION, row_factory=_row_factory)
        except self.psycopg.Error as e:
            raise self.error("cannot connect to", e) from None
        try:
            raw.execute("SET TimeZone = 'UTC'")
            raw.execute(f'SET search_path = "{PG_SCHEMA}"')
        except self.psycopg.Error as e:
            raw.close()
            raise self.error("cannot open", e) from None
        return raw

    def _get(self) -> Any:
        pool = self._pool()
        now = time.monotonic()
        while True:
            with _pools_lock:
                if not pool.idle:
                    break
                raw, since = pool.idle.pop()
            if now - since < POOL_MAX_IDLE_S and not raw.closed and (now - since < POOL_PING_AFTER_S or self._alive(raw)):
                return raw
            raw.close()
        return self._new()

    def _alive(self, raw: Any) -> bool:
        """A connection idle for a while may have been ended by the server (restart, idle timeout)."""
        try:
            raw.execute("SELECT 1")
            return True
        except self.psycopg.Error:
            return False

    def _put(self, raw: Any) -> None:
        pool = self._pool()
        ok = not raw.closed and raw.info.transaction_status == self.psycopg.pq.TransactionStatus.IDLE
        with _pools_lock:
            if ok and len(pool.idle) < POOL_IDLE and pool.pid == os.getpid():
                pool.idle.append((raw, time.monotonic()))
                return
        raw.close()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        raw = self._get()
        try:
            yield PgConnection(raw)
        except self.psycopg.Error as e:
            raw.close()
            raise self.error("error using", e) from None
        except BaseException:
            self._put(raw)  # kept only when idle: its transaction was rolled back
            raise
        self._put(raw)

    @contextmanager
    def transaction(self, con: Any) -> Iterator[None]:
        with con.raw.transaction():
            yield

    def lock_module(self, con: Any, module: str) -> None:
        """Serialize writers of one module's lock row (the row may not exist yet: no row lock)."""
        con.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (PG_MODULE_LOCK_CLASS, module))

    # -- schema ---------------------------------------------------------------------------------

    @staticmethod
    def version(con: Any) -> int:
        return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])

    @staticmethod
    def has_migrations_table(con: Any) -> bool:
        return con.execute("SELECT to_regclass(?) IS NOT NULL", (f"{PG_SCHEMA}.schema_migrations",)).fetchone()[0]

    def schema_version(self) -> int:
        with self.connection() as con:
            return self.version(con) if self.has_migrations_table(con) else 0

    def migrate(self, migrations: MigrationList, target: int, latest: int, now: Callable[[], str]) -> list[str]:
        """Each migration in its own transaction under one advisory lock, re-checked inside it:
        processes migrating at once wait for each other and end with one schema."""
        applied: list[str] = []
        with self.connection() as con:
            if self.has_migrations_table(con):  # the common case, without a lock or a CREATE privilege
                current = self.version(con)
                _refuse_newer(current, latest, self.where)
                if current >= target:
                    return applied
            with self.transaction(con):
                con.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
                if not con.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (PG_SCHEMA,)).fetchone():
                    con.execute(f'CREATE SCHEMA "{PG_SCHEMA}"')
                if not self.has_migrations_table(con):
                    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
                current = self.version(con)
            _refuse_newer(current, latest, self.where)
            for version, name, statements in migrations:
                if version > target or version <= current:
                    continue
                with self.transaction(con):
                    con.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
                    if self.version(con) < version:
                        for stmt in statements:
                            con.raw.execute(pg_ddl(stmt))
                        con.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                    (version, name, now()))
                        applied.append(name)
        return applied

    def health(self) -> str:
        with self.connection() as con:
            server = con.execute("SHOW server_version").fetchone()[0]
            version = self.version(con) if self.has_migrations_table(con) else 0
        return f"postgresql {self.url.host}/{self.url.dbname} (reachable, server {server}, schema {PG_SCHEMA} version {version})"


Backend = SqliteBackend | PostgresBackend


def backend_for(database: Path | str | DatabaseURL) -> Backend:
    """The backend of a database setting: a :class:`DatabaseURL` (or URL text) or a file path."""
    if isinstance(database, DatabaseURL):
        return PostgresBackend(database)
    if isinstance(database, str) and is_url(database):
        return PostgresBackend(DatabaseURL(database))
    return SqliteBackend(Path(database))
