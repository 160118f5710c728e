"""The merge: staging into the destination table in one transaction, and the truth about its commit.

    fence compare-and-set -> CREATE / ALTER the table -> empty-result guard -> the merge
      statements -> row count -> COMMIT

The transaction's first statement is the fence's compare-and-set (:mod:`pipekit_core.fence`):
a run that lost its module never commits. If the merge does not commit, the destination is
exactly as before. A COMMIT whose outcome is unknown (the connection dropped during it) is
settled by asking the destination, never by guessing: :meth:`Merger.run` returns only when the
merge committed.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipekit_core import failpoints
from pipekit_core.db import Endpoint, NativeDB, execute_ddl
from pipekit_core.errors import CommitUnknownError, DuplicateKeyError, EmptySourceError
from pipekit_core.fence import Claim, Fence, LockLostError
from pipekit_core.models import Module
from pipekit_core.partitions import WindowError
from pipekit_core.plan import DirectLoad, Plan
from pipekit_core.secrets import redact
from pipekit_core.sql.builders import MergeBuilder
from pipekit_core.sql.dialects import TableName
from pipekit_core.transport.base import CancelScope
from pipekit_core.transport.native import sqlite_source_attached

LOCK_WAIT_S = 10  # how long a single-write full refresh waits for TRUNCATE's lock before it DELETEs
_TEXT_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class MergeOutcome:
    deleted: int | None  # None: a single-write full refresh's TRUNCATE (every previous row, not counted)
    inserted: int
    row_count: int
    window_row_count: int | None = None
    source_deleted: int | None = None  # deletes: hard
    soft_deleted: int | None = None  # deletes: soft
    undeleted: int | None = None  # deletes: soft, keys that came back
    partition_counts: list[int] | None = None  # destination rows per partition of the window, in order


class Merger:
    """One merge of one module's staging table."""

    def __init__(
        self,
        module: Module,
        dest: Endpoint,
        plan: Plan,
        *,
        staging: TableName,
        dest_table: TableName,
        fence: Fence,
        keys_staging: TableName | None = None,
        claim: Claim | None,
        lost: Callable[[], str | None],
        cancel: CancelScope,
        warn: Callable[[str], None],
        load: Callable[[NativeDB, DirectLoad], int] | None = None,
        source: Endpoint | None = None,
    ) -> None:
        self.module, self.dest, self.plan = module, dest, plan
        self.staging, self.dest_table = staging, dest_table
        self.keys_staging = keys_staging or staging
        self.fence, self.claim, self.lost = fence, claim, lost
        self.cancel, self.warn = cancel, warn
        self.load = load  # a single-write full refresh: copies the source rows into the table (plan.direct)
        self.source = source  # (SQLite -> SQLite single-write: attached to the merge's connection)

    def run(self) -> MergeOutcome:
        """Merge and commit; raise (destination untouched) unless the merge committed."""
        plan, mod = self.plan, self.module
        b = MergeBuilder(self.dest.dialect)
        state = "open"  # open -> committing (COMMIT sent) -> committed
        deleted = inserted = row_count = 0
        deleted_or_none: int | None = None
        window_rows: int | None = None
        parts: list[int] | None = None
        counts: tuple[int | None, int | None, int | None] = (None, None, None)
        backend: int | None = None
        try:
            attach = plan.direct is not None and self.dest.kind == "sqlite"
            with NativeDB(self.dest, application=f"pipekit merge {mod.name}", create=True) as db, \
                    (sqlite_source_attached(db, self.source) if attach and self.source else contextlib.nullcontext()):
                token = self.cancel.register(db.cancel)
                backend = db.backend_pid()
                try:
                    if plan.strategy == "incremental":
                        self._refuse_duplicate_keys(db, b)
                    if plan.window is not None:
                        self._refuse_text_dates(db)
                    if plan.window_guard_sql:
                        self._refuse_rows_outside_window(db, b)
                    # (the attached source must only be read: a deferred BEGIN; the fence's UPDATE
                    # or the CREATE / DELETE comes first and takes the destination's write lock)
                    with db.transaction(immediate=not attach):
                        if self.claim is not None:
                            self.fence.commit_guard(db, self.claim)  # first: takes the module's row lock
                        for stmt in [*self._create_table_sql(db), *plan.alter_sql]:
                            execute_ddl(db, stmt)
                        if plan.direct is not None:
                            deleted_or_none, inserted = self._load_direct(db, plan.direct)
                        elif plan.strategy in ("full", "window") and not mod.allow_empty and plan.dest_exists:
                            self._refuse_empty(db, self.staging, "the source returned 0 rows", "empty")
                        for i, stmt in enumerate(plan.merge_sql):
                            n = db.execute(stmt)
                            head = stmt.lstrip().split(None, 1)[0].upper()
                            if head == "DELETE":
                                deleted += max(n, 0)
                            elif head == "INSERT":
                                inserted += max(n, 0)
                            failpoints.hit("after_merge_statement", i)
                        counts = self._source_deletes(db)
                        if plan.strategy == "full" and not plan.delete_sql:
                            row_count = inserted  # the table was emptied in this transaction: no count(*) scan
                        else:
                            row_count = int(db.query_one(plan.count_sql)[0])  # type: ignore[index]
                        window_rows = int(db.query_one(plan.window_count_sql)[0]) if plan.window_count_sql else None  # type: ignore[index]
                        if plan.partition_counts_sql:
                            per = dict(db.query(plan.partition_counts_sql))
                            parts = [int(per.get(i, 0)) for i in range(plan.partitions)]
                        self.cancel.check()
                        failpoints.hit("before_merge_commit")
                        lost = self.lost()
                        if lost:
                            raise LockLostError(f"module '{mod.name}': this run {lost}; the merge was rolled back")
                        state = "committing"
                    state = "committed"
                finally:
                    self.cancel.unregister(token)
        except Exception as e:
            if state != "committing":
                raise  # nothing was committed: the transaction rolled back (or never began)
            self._settle_commit(e, backend)
        if plan.direct is None:
            deleted_or_none = deleted
        return MergeOutcome(deleted_or_none, inserted, row_count, window_rows, *counts, partition_counts=parts)

    def _load_direct(self, db: NativeDB, direct: DirectLoad) -> tuple[int | None, int]:
        """A single-write full refresh, inside the merge transaction: empty the table, copy the
        source rows straight into it (one write per row), and refuse an empty result as the staged
        path does. Any failure rolls all of it back. Returns (rows deleted, None after a TRUNCATE,
        which does not count them; rows inserted)."""
        plan, mod = self.plan, self.module
        assert self.load is not None, "plan.direct needs the engine's load callback"
        had_rows = plan.dest_exists and db.query_one(MergeBuilder(self.dest.dialect).nonempty_sql(self.dest_table)) is not None
        deleted: int | None = 0
        if had_rows:
            deleted = self._empty_for_load(db, direct)
        failpoints.hit("after_merge_statement", 0)
        failpoints.hit("after_staging_created")  # (where a staged run's rows would start to arrive)
        inserted = self.load(db, direct)
        failpoints.hit("after_merge_statement", 1)
        if inserted == 0 and had_rows and not mod.allow_empty:
            raise EmptySourceError(
                f"module '{mod.name}': the source returned 0 rows and the merge would empty {mod.dest_table}; refused "
                "(set allow_empty: true to allow it). The destination was not touched."
            )
        return deleted, inserted

    def _empty_for_load(self, db: NativeDB, direct: DirectLoad) -> int | None:
        """TRUNCATE where it is safe and quick, else DELETE (same result, slower, readers never wait).

        DELETE when other tables' foreign keys reference this one (TRUNCATE refuses), when it has
        ON DELETE triggers (TRUNCATE would skip them), or when the ACCESS EXCLUSIVE lock is not
        granted within LOCK_WAIT_S (a long query reads the table: waiting would queue every
        other reader behind it)."""
        import psycopg

        if db.kind != "postgresql":
            return max(db.execute(direct.empty_sql), 0)
        why = self._truncate_refusal(db)
        if why is None:
            try:
                with db.raw.transaction():  # a savepoint: a refused lock rolls back to here
                    db.raw.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")
                    db.raw.execute(direct.empty_sql)
                    db.raw.execute("SET LOCAL lock_timeout TO DEFAULT")
                return None
            except psycopg.errors.LockNotAvailable:
                why = f"its exclusive lock was not granted within {LOCK_WAIT_S} s (queries are reading it)"
        self.warn(f"full refresh of {self.module.dest_table}: deleting its rows instead of TRUNCATE: {why}")
        return max(db.execute(direct.fallback_sql), 0)

    def _truncate_refusal(self, db: NativeDB) -> str | None:
        rel = self.dest.dialect.table(self.dest_table)
        row = db.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass),"
            " EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal AND (tgtype & 8) <> 0)",
            (rel, rel),
        )
        assert row is not None
        if row[0]:
            return "other tables' foreign keys reference it"
        if row[1]:
            return "it has ON DELETE triggers"
        return None

    def _create_table_sql(self, db: NativeDB) -> list[str]:
        """A new destination table: with its primary key on merge_key (the merge then takes its
        single-DELETE path, and the key is unique by construction), unless a staged key has a NULL
        part, which a primary key cannot hold; then without it, and the log says why."""
        plan = self.plan
        if not plan.primary_key:
            return plan.create_table_sql
        d = self.dest.dialect
        nulls = " OR ".join(f"{d.quote(k)} IS NULL" for k in plan.primary_key)
        if db.query_one(d.select_limited("1", f"FROM {d.table(self.staging)} WHERE {nulls}", 1)) is None:
            return plan.create_table_sql
        self.warn(f"{self.module.dest_table} is created without a primary key: a staged merge_key "
                  f"{plan.primary_key} has a NULL part (the merge matches NULL to NULL; a primary key cannot hold it)")
        return plan.create_table_unkeyed_sql

    def _refuse_empty(self, db: NativeDB, staged: TableName, what: str, verb: str) -> None:
        """The ``allow_empty`` guard: nothing staged while the destination (its window) has rows."""
        plan, mod, b = self.plan, self.module, MergeBuilder(self.dest.dialect)
        if db.query_one(b.nonempty_sql(staged)) is not None:
            return
        w = plan.window
        dest_any = db.query_one(b.window_nonempty_sql(self.dest_table, w) if w else b.nonempty_sql(self.dest_table))
        if dest_any is None:
            return
        where = f"the window [{w.start}, {w.end}) of {mod.dest_table}" if w else mod.dest_table
        raise EmptySourceError(
            f"module '{mod.name}': {what} and the merge would {verb} {where}; refused "
            "(set allow_empty: true to allow it). The destination was not touched."
        )

    def _source_deletes(self, db: NativeDB) -> tuple[int | None, int | None, int | None]:
        """``deletes:``: remove / mark destination rows whose key the source no longer has."""
        plan, mod = self.plan, self.module
        if not plan.delete_sql or plan.keys_staging_table is None:
            return None, None, None
        if not mod.allow_empty and plan.dest_exists:
            verb = "delete every row of" if mod.deletes.mode == "hard" else "mark as deleted every row of"  # type: ignore[union-attr]
            self._refuse_empty(db, self.keys_staging, "the keys query returned 0 rows", verb)
        if db.kind == "postgresql":
            # Every deletes statement joins the destination to the keys: always by hash. With the
            # statistics of a table whose soft_column was all NULL when analyzed, the planner took
            # the rows marked deleted by this very transaction for 1 and chose a nested loop over
            # 1M keys for them (212 s instead of 2 s). Only for these statements.
            db.execute("SET LOCAL enable_nestloop = off")
        n = {"removed": 0, "soft_deleted": 0, "undeleted": 0}
        for i, (kind, stmt) in enumerate(plan.delete_sql, start=len(plan.merge_sql)):
            n[kind] += max(db.execute(stmt), 0)
            failpoints.hit("after_merge_statement", i)
        if db.kind == "postgresql":
            db.execute("SET LOCAL enable_nestloop TO DEFAULT")
        if mod.deletes is not None and mod.deletes.mode == "soft":
            return None, n["soft_deleted"], n["undeleted"]
        return n["removed"], None, None

    def _refuse_text_dates(self, db: NativeDB) -> None:
        """A window rendered as timestamps (the query returns its column as text, not a date) over
        values that are dates written as text: the query's ``d >= '2024-01-05 00:00:00+00:00'``
        then misses the window's first day ('2024-01-05' sorts before it) and the run would load
        too few rows, silently. Refused, saying what to declare, unless the staged rows do hold the
        window's first day."""
        w, mod = self.plan.window, self.module
        assert w is not None
        if ":" not in w.start:
            return  # rendered as dates: text dates compare right
        d = self.dest.dialect
        sample = db.query(d.select_limited(d.quote(w.column), f"FROM {d.table(self.staging)}", 100))
        dates = [v for (v,) in sample if isinstance(v, str) and _TEXT_DATE.match(v.strip())]
        first = self.plan.window_first_day
        if dates and first is not None:  # (a query that normalises, date(d) >= date('...'), has the first day)
            has_first = db.query_one(d.select_limited("1", f"FROM {d.table(self.staging)} WHERE {d.quote(w.column)} = "
                                                      f"{d.literal(first)}", 1))
            if has_first is not None:
                return
        if dates:
            raise WindowError(
                f"module '{mod.name}': column {w.column} holds dates written as text (e.g. {dates[0]!r}) but the "
                f"query returns it as text, so the window was rendered as timestamps ({w.start}) and a "
                f"text comparison misses its first day; declare it: columns: [{{source_name: {w.column}, "
                "dest_type: date}]. The destination was not touched."
            )

    def _refuse_rows_outside_window(self, db: NativeDB, b: MergeBuilder) -> None:
        """Strategy window: every staged row must lie in the window, or the merge would delete the
        window's rows and insert rows of another window (a wrong query). Checked before the merge."""
        plan, mod, w = self.plan, self.module, self.plan.window
        assert plan.window_guard_sql is not None and w is not None
        bad = db.query(plan.window_guard_sql)
        if not bad:
            return
        total = int(db.query_one(b.outside_window_count_sql(self.staging, w))[0])  # type: ignore[index]
        shown = ", ".join("NULL" if r[0] is None else repr(str(r[0])) for r in bad)
        raise WindowError(
            f"module '{mod.name}': {total:,} staged row(s) have {w.column} outside the window "
            f"[{w.start}, {w.end}) (e.g. {shown}); the query must return only the window's rows "
            "(filter on {window_start} / {window_end}). The destination was not touched."
        )

    def _refuse_duplicate_keys(self, db: NativeDB, b: MergeBuilder) -> None:
        mod = self.module
        dupes = db.query(b.duplicate_key_sql(self.staging, list(mod.merge_key)))
        if dupes:
            shown = "; ".join(
                ", ".join(f"{k}={v!r}" for k, v in zip(mod.merge_key, r[:-1], strict=False)) + f" ({r[-1]}x)"
                for r in dupes
            )
            raise DuplicateKeyError(
                f"module '{mod.name}': staged rows repeat the merge key {list(mod.merge_key)}: {shown}; "
                "fix the source query or the merge_key. The destination was not touched."
            )

    def _settle_commit(self, exc: Exception, backend: int | None, attempts: int = 5) -> None:
        """COMMIT was sent and failed: ask the destination whether it happened.

        Returns when it did (the run goes on as committed); re-raises ``exc`` when the destination
        shows it did not (a retry is then safe); raises CommitUnknownError when the destination
        cannot be asked. The read locks the state row, so a COMMIT still in flight on the server
        is waited for, not raced; and the merge's own server session, if it is still there (the
        COMMIT never reached it, or the server has not noticed the client left), is ended first,
        so that what is read is final.
        """
        name = self.module.name
        self.warn(f"the connection failed during COMMIT ({redact(str(exc).strip())}); asking the destination whether the merge committed")
        if self.claim is None:
            raise CommitUnknownError(
                f"module '{name}': the merge's COMMIT failed and this run has no fencing token to check it "
                f"with; check {self.module.dest_table} before running the module again"
            ) from exc
        last: BaseException = exc
        for i in range(attempts):
            try:
                with NativeDB(self.dest, application=f"pipekit verify {name}") as db:
                    if backend is not None and db.kind == "postgresql":
                        db.query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND application_name = %s",
                            (backend, f"pipekit merge {name}"),
                        )
                    committed = self.fence.committed(db, self.claim.token)
            except Exception as e:  # noqa: BLE001 - the destination is not back yet
                last = e
                time.sleep(min(0.5 * 2.0**i, 4.0))
                continue
            if committed:
                self.warn("the destination confirms the merge committed")
                return
            self.warn("the destination confirms the merge did not commit (rolled back)")
            raise exc
        raise CommitUnknownError(
            f"module '{name}': the merge's COMMIT failed ({redact(str(exc).strip())}) and the destination "
            f"could not be asked whether it committed ({redact(str(last).strip())}); not retried. The next run of the "
            "module reads the destination's pipekit_state row and records what happened"
        ) from exc
