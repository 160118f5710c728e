"""The fencing token: a per-module state row on the destination, the truth about who may commit.

The repository lock (:mod:`pipekit_core.lease`) keeps two runs of a module apart while both
processes behave. It cannot stop a run whose process was paused past the stale threshold (a
SIGSTOP, a frozen VM) and then resumes after another run took the lock over. The destination
can: it is where the merge commits.

Each destination keeps one row per module in ``pipekit_state`` (in the staging schema on
PostgreSQL, a plain table on SQLite)::

    module | epoch | owner | commit_token | committed_at

- :meth:`Fence.claim`, right after a run takes the lock: ``epoch = epoch + 1`` in its own
  committed transaction. From then on every older run is fenced off.
- :meth:`Fence.commit_guard`, the first statement of the merge transaction:
  ``UPDATE ... SET commit_token = <this run's token> WHERE module = ? AND epoch = <claimed>``.
  It commits with the merge or not at all. No row updated: another run claimed the module since
  this one started, and the merge is rolled back (:class:`LockLostError`). On PostgreSQL the
  UPDATE also takes the row lock, so two merges of one module are serialized on the destination
  whatever the repository says.
- :meth:`Fence.committed`: whether the destination's row carries a token, i.e. whether that
  run's merge committed. A merge whose COMMIT outcome is unknown (the connection dropped during
  or just after it) asks this instead of guessing; the next run's claim uses it to correct the
  record of an earlier run that died after its commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipekit_core.db import NativeDB, execute_ddl
from pipekit_core.errors import PipekitError
from pipekit_core.sql.dialects import TableName

STATE_TABLE = "pipekit_state"
CLAIM_LOCK_TIMEOUT_S = 30


class LockLostError(PipekitError):
    """Another run claimed the module on the destination after this run started: not committed."""


@dataclass(frozen=True)
class Claim:
    """What a run learnt when it claimed its module on the destination."""

    epoch: int
    token: str
    previous_token: str | None  # the commit token of the last merge that committed
    previous_committed_at: str | None


class Fence:
    """The state row of one module on one destination."""

    def __init__(self, module: str, staging_schema: str) -> None:
        self.module = module
        self.staging_schema = staging_schema

    def table(self, db: NativeDB) -> TableName:
        return TableName(self.staging_schema if db.dialect.supports_schemas else None, STATE_TABLE)

    def _ensure(self, db: NativeDB) -> str:
        d, t = db.dialect, self.table(db)
        stmts: list[str] = []
        if t.schema is not None:
            ddl = d.create_schema_sql(t.schema)
            if ddl:
                stmts.append(ddl)
        ts = "timestamptz" if db.kind == "postgresql" else "TEXT"
        stmts.append(
            f"CREATE TABLE IF NOT EXISTS {d.table(t)} (module TEXT PRIMARY KEY, epoch BIGINT NOT NULL, "
            f"owner TEXT, commit_token TEXT, committed_at {ts})"
        )
        for s in stmts:
            execute_ddl(db, s)
        return d.table(t)

    def claim(self, db: NativeDB, token: str, owner: str) -> Claim:
        """Raise the module's epoch (committed at once); every older run can no longer commit."""
        p = "%s" if db.kind == "postgresql" else "?"
        with db.transaction():
            if db.kind == "postgresql":
                # A paused run may hold the row inside its merge transaction: wait for it a while,
                # never forever.
                db.execute(f"SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT_S}s'")
            table = self._ensure(db)
            db.execute(
                f"INSERT INTO {table} (module, epoch) VALUES ({p}, 0) ON CONFLICT (module) DO NOTHING",
                (self.module,),
            )
            db.execute(f"UPDATE {table} SET epoch = epoch + 1, owner = {p} WHERE module = {p}", (owner, self.module))
            row = db.query_one(f"SELECT epoch, commit_token, committed_at FROM {table} WHERE module = {p}", (self.module,))
        assert row is not None
        return Claim(int(row[0]), token, row[1], None if row[2] is None else str(row[2]))

    def commit_guard(self, db: NativeDB, claim: Claim) -> None:
        """Inside the merge transaction: mark this run's commit, or fail when it lost the module."""
        p = "%s" if db.kind == "postgresql" else "?"
        now = "now()" if db.kind == "postgresql" else "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
        table = db.dialect.table(self.table(db))
        n = db.execute(
            f"UPDATE {table} SET commit_token = {p}, committed_at = {now} WHERE module = {p} AND epoch = {p}",
            (claim.token, self.module, claim.epoch),
        )
        if n != 1:
            row = db.query_one(f"SELECT epoch, owner FROM {table} WHERE module = {p}", (self.module,))
            holder = f"epoch {row[0]}, claimed by {row[1]}" if row else "its state row is gone"
            raise LockLostError(
                f"module '{self.module}': this run lost the module lock before its merge committed "
                f"(this run claimed epoch {claim.epoch}; the destination now says {holder}); "
                "the merge was rolled back, the destination is as the other run left it"
            )

    def committed(self, db: NativeDB, token: str) -> bool:
        """True when the destination records ``token`` as the module's last commit.

        Reads under the row's lock, so a COMMIT still in flight on the server (the client lost
        its connection, the server goes on) is waited for and its outcome is the one read.
        """
        p = "%s" if db.kind == "postgresql" else "?"
        if not db.table_exists(self.table(db)):
            return False
        lock = " FOR UPDATE" if db.kind == "postgresql" else ""
        with db.transaction():
            if db.kind == "postgresql":
                db.execute(f"SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT_S}s'")
            row = db.query_one(
                f"SELECT commit_token FROM {db.dialect.table(self.table(db))} WHERE module = {p}{lock}", (self.module,)
            )
        return row is not None and row[0] == token
