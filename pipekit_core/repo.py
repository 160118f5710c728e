"""The repository: catalog snapshot, run log and module locks, on SQLite or PostgreSQL.

This is the only code that touches the repository. ``PIPEKIT_DB`` (or ``database:``) selects the
backend: a path is a SQLite file (``pipekit.db``, the default), a ``postgresql://`` URL is a
PostgreSQL database (its tables in the schema ``pipekit``). The SQL here runs on both; every
difference between them (placeholders, write transactions, lock statements, migration DDL)
lives in :mod:`pipekit_core.repo_backends`. Several processes, on one host or many, use it at once
(the CLI, the Dagster webserver and daemon, run workers), so:

- SQLite: WAL mode, every connection waits up to 30 s for a busy file, one connection per call;
  PostgreSQL: a small per-process pool of connections (new after a fork);
- every write runs in its own transaction (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL row locks
  and a per-module advisory lock), so read-then-write steps such as taking a lock are atomic
  across processes and hosts.

The schema is built by ordered, named migrations recorded in ``schema_migrations``; they run on
first use and from :meth:`Repository.migrate` (``pipekit init``), once even when several
processes migrate at the same moment. Every text stored passes through
:func:`pipekit_core.secrets.redact`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from pipekit_core.repo_backends import (
    Backend,
    DatabaseURL,
    backend_for,
    host_identity,
)
from pipekit_core.secrets import MASK, is_reference, redact

LOG_CAP = 1_000_000  # characters of run_log.log kept (the tail)
LOG_TRUNCATED = "[... earlier log lines dropped ...]\n"
# committed: the merge committed but the run did not finish (its process died after the commit;
# hooks may not have run). Set when a later run reads the destination's state row.
RUN_STATUSES = frozenset({"running", "success", "dry_run", "error", "cancelled", "committed"})

# (version, name, statements). Append only: never edit a migration that has shipped.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "base_schema", [
        """CREATE TABLE connections (name TEXT PRIMARY KEY, url TEXT NOT NULL, user TEXT,
            password_ref TEXT, updated_at TEXT NOT NULL)""",
        """CREATE TABLE modules (name TEXT PRIMARY KEY, source TEXT NOT NULL, dest TEXT NOT NULL,
            dest_table TEXT NOT NULL, strategy TEXT NOT NULL, merge_key TEXT NOT NULL DEFAULT '[]',
            enabled INTEGER NOT NULL DEFAULT 1, "group" TEXT, definition TEXT NOT NULL,
            source_file TEXT, updated_at TEXT NOT NULL)""",
        """CREATE TABLE watermarks (module TEXT NOT NULL, position INTEGER NOT NULL,
            name TEXT NOT NULL, sql TEXT NOT NULL, connection TEXT, default_value TEXT,
            PRIMARY KEY (module, position))""",
        """CREATE TABLE hooks (module TEXT NOT NULL, position INTEGER NOT NULL, name TEXT,
            sql TEXT NOT NULL, run_on TEXT NOT NULL, connection TEXT,
            PRIMARY KEY (module, position))""",
        """CREATE TABLE "groups" (name TEXT PRIMARY KEY, modules TEXT NOT NULL, schedule TEXT,
            stop_on_failure INTEGER NOT NULL DEFAULT 1, updated_at TEXT NOT NULL)""",
        """CREATE TABLE run_log (id INTEGER PRIMARY KEY AUTOINCREMENT, module TEXT NOT NULL,
            status TEXT NOT NULL, "trigger" TEXT NOT NULL, started_at TEXT NOT NULL,
            finished_at TEXT, duration_s REAL, phase TEXT, phase_timings TEXT,
            rows_read INTEGER, rows_staged INTEGER, rows_deleted INTEGER, rows_inserted INTEGER,
            row_count INTEGER, watermarks TEXT, source_sql TEXT, merge_sql TEXT, error TEXT,
            log TEXT, transport TEXT, dagster_run_id TEXT, host TEXT, pid INTEGER)""",
        "CREATE INDEX run_log_module ON run_log (module, id)",
        """CREATE TABLE module_locks (module TEXT PRIMARY KEY, host TEXT NOT NULL,
            pid INTEGER NOT NULL, run_id INTEGER, acquired_at TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL)""",
    ]),
    (2, "run_log_options_and_columns", [
        "ALTER TABLE run_log ADD COLUMN options TEXT",
        "ALTER TABLE run_log ADD COLUMN source_columns TEXT",
        "CREATE INDEX run_log_status ON run_log (status)",
    ]),
    (3, "fencing_tokens", [
        # The run's commit token: what the destination's pipekit_state row records when its
        # merge commits (pipekit_core.fence), and which lock row is this run's.
        "ALTER TABLE run_log ADD COLUMN commit_token TEXT",
        "CREATE INDEX run_log_commit_token ON run_log (commit_token)",
        "ALTER TABLE module_locks ADD COLUMN token TEXT",
    ]),
    (4, "windows_and_deletes", [
        # A partitioned module's rows in its window after the merge, and what deletes: did.
        "ALTER TABLE run_log ADD COLUMN window_row_count INTEGER",
        "ALTER TABLE run_log ADD COLUMN rows_source_deleted INTEGER",
        "ALTER TABLE run_log ADD COLUMN rows_soft_deleted INTEGER",
        "ALTER TABLE run_log ADD COLUMN rows_undeleted INTEGER",
    ]),
    (5, "run_log_lines", [
        # One row per log line: appending is O(1) (run_log.log was rewritten whole per line).
        # run_log keeps the running counts; run_log.log still holds the text of older runs.
        """CREATE TABLE run_log_lines (run_id INTEGER NOT NULL, n INTEGER NOT NULL, line TEXT NOT NULL,
            PRIMARY KEY (run_id, n))""",
        "ALTER TABLE run_log ADD COLUMN log_lines INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE run_log ADD COLUMN log_chars INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE run_log ADD COLUMN log_dropped INTEGER NOT NULL DEFAULT 0",
        # The hash of the module's definition the run ran with (Dagster's code_version).
        "ALTER TABLE run_log ADD COLUMN code_version TEXT",
    ]),
]
LATEST_VERSION = MIGRATIONS[-1][0]

JSON_COLUMNS = frozenset({"phase_timings", "watermarks", "options", "source_columns"})
RUN_COLUMNS = frozenset({
    "module", "status", "trigger", "started_at", "finished_at", "duration_s", "phase",
    "phase_timings", "rows_read", "rows_staged", "rows_deleted", "rows_inserted", "row_count",
    "watermarks", "source_sql", "merge_sql", "error", "log", "transport", "dagster_run_id",
    "host", "pid", "options", "source_columns", "commit_token",
    "window_row_count", "rows_source_deleted", "rows_soft_deleted", "rows_undeleted", "code_version",
})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _redact_deep(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_deep(v) for v in value]
    return value


def _store(value: Any) -> Any:
    """A Python value as stored: dict/list -> redacted JSON, text -> redacted, else as is."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_redact_deep(value), default=str)
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (int, float)):
        return value
    return redact(str(value))


def _duration(started_at: str | None, end: datetime) -> float | None:
    return None if not started_at else round((end - parse_time(started_at)).total_seconds(), 3)


@dataclass(frozen=True)
class LockOwner:
    """Who holds a module lock: a process on a host, and its run_log id once known."""

    host: str
    pid: int
    run_id: int | None = None
    token: str | None = None  # the run's commit token: tells two runs of one process apart

    @staticmethod
    def current(run_id: int | None = None, token: str | None = None) -> LockOwner:
        """The owner identity of this process."""
        return LockOwner(host_identity(), os.getpid(), run_id, token)

    def __str__(self) -> str:
        run = f" (run {self.run_id})" if self.run_id is not None else ""
        return f"pid {self.pid} on host {self.host}{run}"


@dataclass(frozen=True)
class LockInfo:
    """One row of ``module_locks``."""

    module: str
    owner: LockOwner
    acquired_at: str
    heartbeat_at: str

    def is_stale(self, now: datetime | None = None, stale_after: float = 120.0) -> tuple[bool, str]:
        """(stale?, reason): the owner process is gone (same host) or the heartbeat is too old.

        On the owner's own host (the same :func:`host_identity`: hostname, boot id and PID
        namespace, so not merely a container with the same hostname) the process table is the
        truth: a live owner is never stale, however old its heartbeat (a paused process resumes
        and goes on). Heartbeat age decides for owners anywhere else; the destination's fencing
        token (pipekit_core.fence) keeps a taken-over run that resumes from committing.
        """
        now = now or utcnow()
        age = (now - parse_time(self.heartbeat_at)).total_seconds()
        if self.owner.host == host_identity():
            if not pid_alive(self.owner.pid):
                return True, f"process {self.owner.pid} on host {self.owner.host} is gone"
            return False, f"held by {self.owner} (alive on this host) since {self.acquired_at}, heartbeat {age:.0f}s ago"
        if age > stale_after:
            return True, f"no heartbeat for {age:.0f}s (last {self.heartbeat_at}, limit {stale_after:.0f}s)"
        return False, f"held by {self.owner} since {self.acquired_at}, heartbeat {age:.0f}s ago"


@dataclass(frozen=True)
class LockResult:
    """Outcome of :meth:`Repository.acquire_lock`."""

    acquired: bool
    holder: LockInfo | None = None
    took_over: LockInfo | None = None


class CatalogLike(Protocol):
    connections: Any
    modules: Any
    groups: Any

    def group_of(self, name: str) -> Any: ...


class Repository:
    """Access to the repository; cheap to create, safe to share between threads and processes.

    ``database`` is a file path (SQLite), a :class:`~pipekit_core.repo_backends.DatabaseURL` or
    ``postgresql://`` text (PostgreSQL): what ``settings.database`` holds.
    """

    def __init__(self, database: Path | str | DatabaseURL) -> None:
        self._b: Backend = backend_for(database)
        # the file (SQLite) or the URL without its password (PostgreSQL): what messages name
        self.path: Path | DatabaseURL = self._b.path
        self._ready = False

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._b.kind

    def describe(self) -> str:
        """``sqlite /path/pipekit.db`` or ``postgresql host:port/db`` (never a password)."""
        return self._b.describe()

    def health(self) -> str:
        """The backend, where it is, and its schema version (PostgreSQL: reachable, server version);
        raises RepositoryError when it cannot be read."""
        return self._b.health()

    # -- connections, transactions, migrations -------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        """A ready connection in autocommit mode (each statement is its own transaction)."""
        if not self._ready:
            self.migrate()
        with self._b.connection() as con:
            yield con

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One write transaction: committed on success, rolled back on error."""
        with self._connect() as con, self._b.transaction(con):
            yield con

    def migrate(self, target: int | None = None) -> list[str]:
        """Create or upgrade the schema (up to ``target``, default all); return names applied now.

        Each migration runs in its own transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: under
        an advisory lock) and re-checks that it is still pending inside it, so several processes
        may call this at once.
        """
        target = LATEST_VERSION if target is None else target
        applied = self._b.migrate(MIGRATIONS, target, LATEST_VERSION, lambda: iso(utcnow()))
        self._ready = target >= LATEST_VERSION
        return applied

    def schema_version(self) -> int:
        """The highest migration version applied (0 for a new, empty database)."""
        return self._b.schema_version()

    # -- catalog ------------------------------------------------------------------------

    def sync_catalog(self, catalog: CatalogLike) -> None:
        """Replace the stored catalog (connections, modules, watermarks, hooks, groups) at once.

        Passwords are stored as written when they are ``$VAR`` references, else as ``***``.
        """
        now = iso(utcnow())
        with self._tx() as con:
            for table in ("connections", "modules", "watermarks", "hooks", '"groups"'):
                con.execute(f"DELETE FROM {table}")
            for name, c in catalog.connections.items():
                pw = c.password if c.password is None or is_reference(c.password) else MASK
                con.execute(
                    'INSERT INTO connections (name, url, "user", password_ref, updated_at) VALUES (?,?,?,?,?)',
                    (_store(name), _store(c.url), _store(c.user), pw, now),
                )
            for name, m in catalog.modules.items():
                group = catalog.group_of(name)
                group = getattr(group, "name", group)
                definition = m.model_dump(mode="json")
                definition["sql"] = m.sql
                con.execute(
                    'INSERT INTO modules (name, source, dest, dest_table, strategy, merge_key, enabled, '
                    '"group", definition, source_file, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)',
                    (name, _store(m.source), _store(m.dest), _store(m.dest_table), m.strategy,
                     _store(list(m.merge_key)), int(m.enabled), group, _store(definition),
                     _store(m.source_file), now),
                )
                for i, w in enumerate(m.watermarks):
                    con.execute(
                        "INSERT INTO watermarks (module, position, name, sql, connection, default_value) "
                        "VALUES (?,?,?,?,?,?)",
                        (name, i, w.name, _store(w.sql), w.connection, _store(w.default)),
                    )
                for i, h in enumerate(m.hooks):
                    con.execute(
                        "INSERT INTO hooks (module, position, name, sql, run_on, connection) VALUES (?,?,?,?,?,?)",
                        (name, i, _store(h.name), _store(h.sql), h.run_on, h.connection),
                    )
            for name, g in catalog.groups.items():
                con.execute(
                    'INSERT INTO "groups" (name, modules, schedule, stop_on_failure, updated_at) '
                    "VALUES (?,?,?,?,?)",
                    (name, _store(list(g.modules)), _store(g.schedule), int(g.stop_on_failure), now),
                )

    def _rows(self, sql: str, *params: Any) -> list[Any]:
        with self._connect() as con:
            return con.execute(sql, params).fetchall()

    def catalog_modules(self) -> list[dict]:
        """Stored modules by name; ``merge_key`` and ``definition`` decoded, ``enabled`` a bool."""
        out = []
        for r in self._rows("SELECT * FROM modules ORDER BY name"):
            d = dict(r)
            d["merge_key"] = json.loads(d["merge_key"] or "[]")
            d["definition"] = json.loads(d["definition"] or "{}")
            d["enabled"] = bool(d["enabled"])
            out.append(d)
        return out

    # -- run log ------------------------------------------------------------------------

    def start_run(self, module: str, *, trigger: str, transport: str | None = None,
                  dagster_run_id: str | None = None, options: dict | None = None) -> int:
        """Insert a ``running`` row for this process; return its id."""
        with self._tx() as con:
            cur = con.execute(
                'INSERT INTO run_log (module, status, "trigger", started_at, transport, dagster_run_id, '
                "host, pid, options) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (module, _store(trigger), iso(utcnow()), _store(transport), _store(dagster_run_id),
                 host_identity(), os.getpid(), _store(options) if options is not None else None),
            )
            return int(cur.fetchone()[0])

    def _set(self, con: Any, run_id: int, fields: dict[str, Any]) -> None:
        unknown = set(fields) - RUN_COLUMNS
        if unknown:
            raise ValueError(f"run_log has no column(s) {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"run status {fields['status']!r} is not one of {sorted(RUN_STATUSES)}")
        if not fields:
            return
        cols = ", ".join(f'"{k}" = ?' for k in fields)
        con.execute(f"UPDATE run_log SET {cols} WHERE id = ?", [*map(_store, fields.values()), run_id])

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set run_log columns by name; dict/list values are stored as JSON; text is redacted."""
        with self._tx() as con:
            self._set(con, run_id, fields)

    def append_log(self, run_id: int, line: str) -> None:
        """Append one line to the run's log (one row: O(1)), keeping only the last ~``LOG_CAP``
        characters: when over the cap, the oldest lines go, down to 90% of it."""
        text = redact(line.rstrip("\n")) + "\n"
        with self._tx() as con:
            row = con.execute(
                "UPDATE run_log SET log_lines = log_lines + 1, log_chars = log_chars + ? WHERE id = ? "
                "RETURNING log_lines, log_chars", (len(text), run_id),
            ).fetchone()
            if row is None:
                return
            n, chars = int(row[0]), int(row[1])
            con.execute("INSERT INTO run_log_lines (run_id, n, line) VALUES (?, ?, ?)", (run_id, n, text))
            if chars <= LOG_CAP:
                return
            drop, cut = chars - int(LOG_CAP * 0.9), 0
            for k, size in con.execute("SELECT n, length(line) FROM run_log_lines WHERE run_id = ? AND n < ? "
                                       "ORDER BY n", (run_id, n)):
                drop -= size
                cut = k
                if drop <= 0:
                    break
            gone = con.execute("DELETE FROM run_log_lines WHERE run_id = ? AND n <= ? RETURNING length(line)",
                               (run_id, cut)).fetchall()
            con.execute("UPDATE run_log SET log_chars = log_chars - ?, log_dropped = 1 WHERE id = ?",
                        (sum(g[0] for g in gone), run_id))

    def finish_run(self, run_id: int, status: str, *, error: str | None = None, **fields: Any) -> None:
        """Close a run: status, error, ``finished_at`` and ``duration_s``, plus any other columns."""
        now = utcnow()
        with self._tx() as con:
            row = con.execute("SELECT started_at FROM run_log WHERE id = ?" + self._b.for_update, (run_id,)).fetchone()
            if row is None:
                return
            fields = {**fields, "status": status, "finished_at": iso(now),
                      "duration_s": _duration(row[0], now)}
            if error is not None:
                fields["error"] = error
            self._set(con, run_id, fields)

    @staticmethod
    def _decode(row: Any) -> dict:
        d = dict(row)
        for k in JSON_COLUMNS & d.keys():
            if d[k] is not None:
                try:
                    d[k] = json.loads(d[k])
                except ValueError:
                    pass
        return d

    def _runs(self, where: str, *params: Any) -> list[dict]:
        """run_log rows (decoded), each with ``log`` assembled from its lines."""
        with self._connect() as con:
            rows = [self._decode(r) for r in con.execute(f"SELECT * FROM run_log {where}", params).fetchall()]
            ids = [r["id"] for r in rows if r.get("log_lines")]
            lines: dict[int, list[str]] = {}
            if ids:
                marks = ", ".join("?" * len(ids))
                for rid, text in con.execute(f"SELECT run_id, line FROM run_log_lines WHERE run_id IN ({marks}) "
                                             "ORDER BY run_id, n", ids):
                    lines.setdefault(rid, []).append(text)
        for r in rows:
            if r.get("log_lines"):
                r["log"] = (LOG_TRUNCATED if r.get("log_dropped") else "") + (r.get("log") or "") + "".join(lines.get(r["id"], []))
            for k in ("log_lines", "log_chars", "log_dropped"):
                r.pop(k, None)
        return rows

    def get_run(self, run_id: int) -> dict | None:
        """One run_log row with its JSON columns decoded and its log, or None."""
        rows = self._runs("WHERE id = ?", run_id)
        return rows[0] if rows else None

    def history(self, module: str | None = None, limit: int = 20) -> list[dict]:
        """Recent runs (of one module, or all), newest first."""
        if module is None:
            return self._runs("ORDER BY id DESC LIMIT ?", limit)
        return self._runs("WHERE module = ? ORDER BY id DESC LIMIT ?", module, limit)

    def finished_runs_after(self, run_id: int, limit: int = 1000) -> list[dict]:
        """Runs with an id above ``run_id``, in id order, up to the first one still running (so a
        reader that remembers the last id it saw misses none), without their logs."""
        out = []
        for r in self._rows("SELECT * FROM run_log WHERE id > ? ORDER BY id LIMIT ?", run_id, limit):
            if r["status"] == "running":
                break
            out.append(self._decode(r))
        return out

    def last_run(self, module: str) -> dict | None:
        """The module's newest run, whatever its status."""
        rows = self.history(module, 1)
        return rows[0] if rows else None

    def last_success(self, module: str) -> dict | None:
        """The module's newest run with status ``success``."""
        rows = self._runs("WHERE module = ? AND status = 'success' ORDER BY id DESC LIMIT 1", module)
        return rows[0] if rows else None

    def _fail_run(self, con: Any, run_id: int | None, error: str, now: datetime) -> None:
        """Mark a still-running run as error (inside the caller's transaction)."""
        if run_id is None:
            return
        row = con.execute("SELECT started_at FROM run_log WHERE id = ? AND status = 'running'" + self._b.for_update,
                          (run_id,)).fetchone()
        if row is not None:
            self._set(con, run_id, {"status": "error", "error": error, "finished_at": iso(now),
                                    "duration_s": _duration(row[0], now)})

    # -- module locks -------------------------------------------------------------------

    @staticmethod
    def _lock_info(row: Any) -> LockInfo:
        return LockInfo(row["module"], LockOwner(row["host"], int(row["pid"]), row["run_id"], row["token"]),
                        row["acquired_at"], row["heartbeat_at"])

    def acquire_lock(self, module: str, owner: LockOwner, *, stale_after: float = 120.0) -> LockResult:
        """Take the module's lock atomically; replace a stale one (marking its run as error).

        Returns ``acquired=False`` with the ``holder`` when a live owner has it, including another
        call from this same process.
        """
        now = utcnow()
        with self._tx() as con:
            self._b.lock_module(con, module)
            row = con.execute("SELECT * FROM module_locks WHERE module = ?", (module,)).fetchone()
            old = self._lock_info(row) if row else None
            if old is not None:
                stale, reason = old.is_stale(now, stale_after)
                if not stale:
                    return LockResult(False, old, None)
                self._fail_run(con, old.owner.run_id, f"run died: {reason}; lock taken over by {owner}", now)
            con.execute(
                self._b.upsert_lock,
                (module, owner.host, owner.pid, owner.run_id, iso(now), iso(now), owner.token),
            )
            return LockResult(True, None, old)

    def heartbeat(self, module: str, owner: LockOwner) -> bool:
        """Refresh our lock's heartbeat; False when we no longer own it."""
        with self._tx() as con:
            cur = con.execute(
                f"UPDATE module_locks SET heartbeat_at = ? WHERE module = ? AND {self._b.owned}",
                (iso(utcnow()), module, owner.host, owner.pid, owner.token),
            )
            return cur.rowcount == 1

    def set_lock_run_id(self, module: str, owner: LockOwner, run_id: int) -> None:
        """Record the run_log id in the lock we own (known only after :meth:`start_run`)."""
        with self._tx() as con:
            con.execute(f"UPDATE module_locks SET run_id = ? WHERE module = ? AND {self._b.owned}",
                        (run_id, module, owner.host, owner.pid, owner.token))

    def release_lock(self, module: str, owner: LockOwner) -> bool:
        """Release the lock if we own it; True when it was ours."""
        with self._tx() as con:
            cur = con.execute(f"DELETE FROM module_locks WHERE module = ? AND {self._b.owned}",
                              (module, owner.host, owner.pid, owner.token))
            return cur.rowcount == 1

    def get_lock(self, module: str) -> LockInfo | None:
        """The module's lock, or None when it is free."""
        rows = self._rows("SELECT * FROM module_locks WHERE module = ?", module)
        return self._lock_info(rows[0]) if rows else None

    def locks(self) -> list[LockInfo]:
        """Every lock held, by module name."""
        return [self._lock_info(r) for r in self._rows("SELECT * FROM module_locks ORDER BY module")]

    def force_unlock(self, module: str) -> LockInfo | None:
        """Clear the module's lock whoever holds it (``pipekit unlock``); return what was cleared.

        The holder's run, if still ``running``, is marked ``error``.
        """
        now = utcnow()
        with self._tx() as con:
            self._b.lock_module(con, module)
            row = con.execute("SELECT * FROM module_locks WHERE module = ?", (module,)).fetchone()
            if row is None:
                return None
            info = self._lock_info(row)
            con.execute("DELETE FROM module_locks WHERE module = ?", (module,))
            self._fail_run(con, info.owner.run_id, "lock cleared by pipekit unlock", now)
            return info

    def mark_dead_runs(self) -> int:
        """Mark ``running`` runs of this host whose process is gone as ``error``; return how many.

        Called by every run and by ``pipekit history`` / ``list``, so a run killed outright does not
        stay ``running``. Its stale lock is left for the next run of the module to take over (and say so).
        """
        host, now = host_identity(), utcnow()
        count = 0
        with self._tx() as con:
            runs = con.execute("SELECT id, module, pid, started_at FROM run_log "
                               "WHERE status = 'running' AND host = ?", (host,)).fetchall()
            for r in runs:
                if r["pid"] is None or pid_alive(int(r["pid"])):
                    continue
                self._fail_run(con, r["id"], f"run died without finishing (process {r['pid']} on {host} is gone)", now)
                count += 1
        return count

    def record_commit(self, module: str, token: str | None, committed_at: str | None, by_run: int | None) -> int | None:
        """Correct the record of the run whose merge committed with ``token`` (read from the
        destination's state row by a later run): a run left ``running`` or marked ``error`` /
        ``cancelled`` by a crash becomes ``committed``. Returns its id when it was corrected."""
        if not token:
            return None
        with self._tx() as con:
            row = con.execute("SELECT id, status, error FROM run_log WHERE module = ? AND commit_token = ?"
                              + self._b.for_update, (module, token)).fetchone()
            if row is None or row["status"] in ("success", "committed"):
                return None
            note = (f"the merge committed{' at ' + committed_at if committed_at else ''} (found on the destination "
                    f"by run {by_run}); the run did not finish after it, so its hooks may not have run")
            if row["error"]:
                note += f". Recorded before: {row['error']}"
            fields: dict[str, Any] = {"status": "committed", "error": note}
            if row["status"] == "running":
                fields["finished_at"] = iso(utcnow())
            self._set(con, int(row["id"]), fields)
            return int(row["id"])
