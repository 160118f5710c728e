"""The engine: one run of one module, phase by phase.

    lock -> resolve watermarks -> render the source query -> learn its columns
      -> stage (create staging, copy rows) -> merge (one transaction) -> hooks -> run log -> unlock

:class:`ModuleRun` exposes each phase as a method (``start``, ``resolve``, ``stage``, ``merge``,
``run_hooks``, ``finish``) so that Dagster ops can call them one by one; :meth:`ModuleRun.execute`
and :func:`run_module` chain them for the CLI. Whatever fails, ``finish`` runs the failure
hooks, drops staging, writes the run log and releases the lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipekit_core import failpoints
from pipekit_core.config import Settings, load_settings
from pipekit_core.db import Endpoint, NativeDB, execute_ddl
from pipekit_core.defs import Catalog, load_catalog
from pipekit_core.errors import (
    DefinitionError,
    HookError,
    LockHeldError,
    PhaseError,
    PipekitError,
    RunCancelled,
    TransportError,
    is_retryable,
)
from pipekit_core.fence import Claim, Fence
from pipekit_core.lease import Lease
from pipekit_core.merge import Merger
from pipekit_core.models import Hook, Module
from pipekit_core.partitions import (
    PartitionSpec,
    Window,
    WindowError,
    is_date_type,
    render_point,
    spec_for,
    window_values,
)
from pipekit_core.plan import DirectLoad, Plan, build_plan
from pipekit_core.repo import Repository
from pipekit_core.resolver import resolve_watermarks
from pipekit_core.secrets import Secrets, redact
from pipekit_core.sql.builders import WindowBounds
from pipekit_core.sql.dialects import ColumnDef, TableName, get_dialect, parse_table_name
from pipekit_core.transport.base import (
    CancelScope,
    SourceColumn,
    StageRequest,
    Transport,
    TransportContext,
    get_transport,
)
from pipekit_core.watermarks import substitute

# Reasons the engine stops its own run with (CancelScope.cancel): recorded as 'error'.
FORCED_STOPS = ("timed out", "lost the module lock")
PHASES = ("lock", "resolve", "stage", "merge", "hooks")
# A window of more partitions than this gets its total row count only, not one per partition
# (the per-partition count is one scan with a comparison tree of that many leaves).
MAX_PARTITION_COUNTS = 2000


@dataclass
class RunOptions:
    """Options for one run (CLI flags, Dagster's ``pipekit_run`` resource and tags)."""

    dry_run: bool = False
    full_refresh: bool = False
    watermark_overrides: dict[str, str] = field(default_factory=dict)
    trigger: str = "cli"
    dagster_run_id: str | None = None
    wait: bool = False
    wait_timeout: float | None = None
    # The window of a partitioned module's run (one partition or a range: one run); None = the
    # latest complete partition. Ignored (an error) for a module without partitions:.
    window: Window | None = None
    # The module's code_version when the caller loaded its definitions (Dagster: the asset's):
    # a run whose YAML has changed since says so.
    code_version: str | None = None


@dataclass(frozen=True)
class Event:
    """Something to show the user: a phase change, progress, a log line or a warning."""

    module: str
    kind: str  # phase | progress | log | warning | error (the run's final failure, once)
    message: str
    phase: str | None = None
    rows: int | None = None
    rate: float | None = None


EventFn = Callable[[Event], None]


@dataclass
class RunResult:
    """The outcome of one run, as written to the run log."""

    module: str
    run_id: int | None
    status: str
    dest_table: str
    transport: str | None = None
    rows_read: int | None = None
    rows_staged: int | None = None
    rows_deleted: int | None = None
    rows_inserted: int | None = None
    row_count: int | None = None
    watermarks: dict[str, str | None] = field(default_factory=dict)
    source_sql: str | None = None
    merge_sql: str | None = None
    phase_timings: dict[str, float] = field(default_factory=dict)
    source_columns: list[tuple[str, str]] = field(default_factory=list)
    dest_columns: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    failed_phase: str | None = None
    committed: bool = False  # the merge committed (whatever happened after it)
    window: Window | None = None  # a partitioned module's window
    window_row_count: int | None = None  # destination rows in the window after the merge
    # destination rows per partition key of the window after the merge (windows of at most
    # MAX_PARTITION_COUNTS partitions)
    partition_row_counts: dict[str, int] | None = None
    rows_source_deleted: int | None = None  # deletes: rows removed because their key left the source
    rows_soft_deleted: int | None = None  # deletes: soft: rows marked deleted by this run
    rows_undeleted: int | None = None  # deletes: soft: marked rows whose key came back
    plan: Plan | None = None

    def timings(self) -> str:
        """The phase timings in phase order, ``lock 0.35s, resolve 0.05s, ...``."""
        return ", ".join(f"{k} {v:.2f}s" for k, v in self.phase_timings.items())

    def summary(self) -> list[str]:
        """The run in a line (or three: a window, deletes), as the CLI and Dagster's log end a module."""
        n = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
        removed = ("all previous rows replaced" if self.rows_deleted is None and self.status == "success"
                   and self.rows_inserted is not None else f"{self.rows_deleted or 0:,} deleted")
        timing = self.timings()
        lines = [f"{self.status}: {self.rows_staged or 0:,} staged, {removed}, {self.rows_inserted or 0:,} inserted, "
                 f"{n(self.row_count)} rows in {self.dest_table} (run {self.run_id}; {timing})"]
        if self.window is not None:
            lines.append(f"window {self.window}: {n(self.window_row_count)} rows in it")
        if self.rows_source_deleted is not None or self.rows_soft_deleted is not None:
            lines.append(f"deletes: {self.rows_source_deleted or 0:,} deleted, {self.rows_soft_deleted or 0:,} "
                         f"soft-deleted, {self.rows_undeleted or 0:,} restored")
        return lines

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("plan", None)
        w = d.pop("window", None)
        d["window"] = None if w is None else {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()}  # type: ignore[union-attr]
        return d


class Engine:
    """Settings, definitions, repository and secrets: what every run needs."""

    def __init__(
        self,
        settings: Settings | None = None,
        catalog: Catalog | None = None,
        repo: Repository | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings or load_settings(env)
        self.catalog = catalog or load_catalog(self.settings.defs, self.settings.local_timezone())
        self.repo = repo or Repository(self.settings.database)
        self.secrets = Secrets(self.settings.secrets, env)

    def module(self, name: str) -> Module:
        mod = self.catalog.module(name)  # UnknownModuleError names close matches
        return mod

    def endpoint(self, conn_name: str) -> Endpoint:
        conn = self.catalog.connection(conn_name)
        return Endpoint(
            conn=conn,
            user=self.secrets.resolve(conn.user, where=f"connection '{conn_name}' user"),
            password=self.secrets.resolve(conn.password, where=f"connection '{conn_name}' password"),
        )

    def choose_transport(self, module: Module) -> tuple[str, str]:
        """(transport name, why) for a module: its setting, else the global one."""
        src = self.catalog.connection(module.source)
        dst_kind = self.catalog.connection(module.dest).kind
        wanted = module.transport or self.settings.transport
        where = "module setting" if module.transport else "global setting"
        if wanted == "native":
            if not src.has_native_driver:
                raise TransportError(
                    f"module '{module.name}': source '{src.name}' ({src.kind}) has no native driver; "
                    "set transport: jrunner (or auto) and configure jrunner"
                )
            return "native", f"transport: native ({where})"
        if wanted == "jrunner" and not module.transport and "sqlite" in (src.kind, dst_kind):
            return "native", "global transport jrunner, but SQLite connections always use native"
        if wanted == "jrunner":
            if src.kind == "sqlite":
                raise TransportError(f"module '{module.name}': jrunner has no SQLite driver; use transport: native")
            if not self.settings.jrunner:
                raise TransportError(
                    f"module '{module.name}': transport jrunner, but jrunner was not found "
                    f"('{self.settings.jrunner_setting}'); set PIPEKIT_JRUNNER or 'jrunner' in pipekit.yaml"
                )
            return "jrunner", f"transport: jrunner ({where})"
        if src.has_native_driver:
            return "native", f"auto: source '{src.name}' ({src.kind}) has a native driver"
        if self.settings.jrunner:
            return "jrunner", f"auto: source '{src.name}' ({src.kind}) has no native driver; jrunner is configured"
        raise TransportError(
            f"module '{module.name}': source '{src.name}' ({src.kind}) has no native driver and jrunner was "
            f"not found ('{self.settings.jrunner_setting}'); set PIPEKIT_JRUNNER"
        )

    def partition_spec(self, module: Module) -> PartitionSpec | None:
        """The module's partitions, in its timezone (else the ``timezone`` setting)."""
        return spec_for(module, self.settings.local_timezone())

    def window(self, module: str, *, window: str | None = None, partition: str | None = None) -> Window | None:
        """The window of ``--window A..B`` or ``--partition P`` for ``module`` (None when neither is given).

        Raises WindowError naming the module when it has no partitions or the text is not a window of them.
        """
        if window is None and partition is None:
            return None
        mod = self.module(module)
        spec = self.partition_spec(mod)
        if spec is None:
            raise WindowError(f"module '{mod.name}' has no partitions:, so it takes no --window / --partition")
        if window is not None and partition is not None:
            raise WindowError(f"module '{mod.name}': give --window or --partition, not both")
        return spec.window(window) if window is not None else spec.partition(partition or "")

    def new_run(self, module: str, options: RunOptions | None = None, on_event: EventFn | None = None) -> ModuleRun:
        return ModuleRun(self, module, options or RunOptions(), on_event)


class ModuleRun:
    """One run of one module. Call the phases in order, then ``finish`` (always)."""

    def __init__(self, engine: Engine, module: str, options: RunOptions, on_event: EventFn | None = None) -> None:
        self.engine = engine
        self.module = engine.module(module)
        self.options = options
        self.on_event = on_event or (lambda e: None)
        self.cancel = CancelScope()
        self.run_id: int | None = None
        self.token = uuid.uuid4().hex  # this run's commit token (pipekit_core.fence)
        self.lease: Lease | None = None
        self.claim: Claim | None = None
        self.fence = Fence(self.module.name, engine.settings.staging_schema)
        self.plan_: Plan | None = None
        self.result = RunResult(module=self.module.name, run_id=None, status="running", dest_table=self.module.dest_table)
        self.phase = "lock"
        self.finished = False
        self._timer: threading.Timer | None = None
        self._transport: Transport | None = None
        self._staging_created = False
        self._copy_s = 0.0  # seconds of a single-write full refresh's copy, inside the merge
        self._hooks_done: set[int] = set()
        self._dest_ep: Endpoint | None = None
        self.dest_table = parse_table_name(self.module.dest_table)
        dialect = get_dialect(engine.catalog.connection(self.module.dest).kind)
        self.staging = dialect.staging_table(self.module.name, engine.settings.staging_schema)
        self.keys_staging = dialect.staging_table(self.module.name + "__keys", engine.settings.staging_schema)
        self._window: Window | None = None
        self._template_values: dict[str, str] = {}  # watermarks and window: what hooks substitute

    @property
    def window(self) -> Window | None:
        """This run's window: the one asked for, else the latest complete partition (None when the
        module has no partitions)."""
        if self._window is None:
            spec = self.engine.partition_spec(self.module)
            if spec is None:
                if self.options.window is not None:
                    raise WindowError(f"module '{self.module.name}' has no partitions:, so its runs take no window")
                return None
            self._window = self.options.window or spec.latest()
            self.result.window = self._window
        return self._window

    @property
    def dest_ep(self) -> Endpoint:
        """The destination with secrets resolved (lazily: a missing secret fails inside the run)."""
        if self._dest_ep is None:
            self._dest_ep = self.engine.endpoint(self.module.dest)
        return self._dest_ep

    # -- events -----------------------------------------------------------------------------
    def emit(self, kind: str, message: str, **kw: Any) -> None:
        msg = redact(message)
        if kind in ("log", "warning", "error", "phase") and self.run_id is not None:
            with contextlib.suppress(Exception):
                self.engine.repo.append_log(self.run_id, f"[{kind}] {msg}")
        self.on_event(Event(self.module.name, kind, msg, phase=self.phase, **kw))

    def _enter(self, phase: str) -> float:
        self.phase = phase
        self.emit("phase", f"{phase} ...")
        if self.run_id is not None:
            self.engine.repo.update_run(self.run_id, phase=phase)
        return time.monotonic()

    def _leave(self, phase: str, t0: float) -> None:
        self.result.phase_timings[phase] = round(time.monotonic() - t0, 3)
        if self.run_id is not None:
            self.engine.repo.update_run(self.run_id, phase_timings=self.result.phase_timings)

    # -- phases -----------------------------------------------------------------------------
    def start(self) -> None:
        """Take the module lock (or fail naming the holder), open the run log, start the heartbeat."""
        t0 = self._enter("lock")
        _ = self.window  # a bad or not-yet-complete window fails before anything is taken
        repo = self.engine.repo
        transport, reason = self.engine.choose_transport(self.module)
        self.result.transport = transport
        with contextlib.suppress(Exception):
            repo.mark_dead_runs()
        took_over = None
        if not self.options.dry_run:
            self.lease = Lease(repo, self.module.name, self.token, on_lost=self._lost_lock)
            took_over = self.lease.acquire(
                wait=self.options.wait, timeout=self.options.wait_timeout, on_wait=lambda m: self.emit("log", m)
            ).took_over
        self.run_id = repo.start_run(
            self.module.name,
            trigger=self.options.trigger,
            transport=transport,
            dagster_run_id=self.options.dagster_run_id,
            options={
                "dry_run": self.options.dry_run,
                "full_refresh": self.options.full_refresh,
                "watermark_overrides": self.options.watermark_overrides,
                **({"window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat(),
                               "every": self.window.every}} if self.window is not None else {}),
            },
        )
        if self.window is not None:
            self.emit("log", f"window {self.window} ({len(self._spec_keys())} partition(s))")
        self.result.run_id = self.run_id
        version = self.module.definition_hash()
        repo.update_run(self.run_id, code_version=version)
        if self.options.code_version and self.options.code_version != version:
            self.emit("warning", f"module '{self.module.name}': its definition changed since the code location loaded "
                                 f"(code_version {self.options.code_version} -> {version}); this run uses the YAML as it is "
                                 f"now ({self.module.source_file or 'its file'}). Reload the code location to show it")
        if self.lease is not None:
            repo.update_run(self.run_id, commit_token=self.token)
            self.lease.bind_run(self.run_id)
            if took_over is not None:
                self.emit("warning", f"took over a stale lock from {took_over.owner}")
            self._claim_destination(took_over is not None)
        self.emit("log", f"transport {transport} ({reason})")
        if self.module.timeout:
            self._timer = threading.Timer(self.module.timeout, self.cancel.cancel, args=(f"timed out after {self.module.timeout:g} s",))
            self._timer.daemon = True
            self._timer.start()
        self._leave("lock", t0)

    def _spec_keys(self) -> list[str]:
        spec = self.engine.partition_spec(self.module)
        return spec.keys(self.window) if spec is not None and self.window is not None else []

    def _lost_lock(self, why: str) -> None:
        """The heartbeat found the lock is no longer ours: stop now (the fence would refuse the merge)."""
        self.emit("warning", f"module '{self.module.name}': {why}; stopping this run")
        self.cancel.cancel(why)

    def _lost_to(self) -> str | None:
        """Why this run no longer owns its module's lock, or None while it does (or never took it)."""
        if self.lease is None or not self.lease.held:
            return None
        if self.lease.lost:
            return self.lease.lost
        try:
            lock = self.engine.repo.get_lock(self.module.name)
        except Exception:  # noqa: BLE001 - the repository is busy: assume nothing
            return None
        if lock is None or lock.owner.token != self.token:
            holder = f"now held by {lock.owner}" if lock else "cleared"
            self.lease.lost = f"lost the module lock ({holder})"
            return self.lease.lost
        return None

    def _claim_destination(self, took_over: bool = False) -> None:
        """Raise the module's epoch on the destination, and record the truth about the last commit.

        A run that died after its merge committed is corrected from ``error`` / ``running`` to
        ``committed`` here: the destination's state row names its commit token.

        After taking over a stale lock, the stale run's merge sessions on the destination are
        ended first: a frozen run inside its merge transaction (a single-write full refresh copies
        there) holds the state row and the table, and would block this run for as long as it is
        frozen. Its merge could never commit anyway (the fence); ending it rolls it back.
        """
        with NativeDB(self.dest_ep, application=f"pipekit claim {self.module.name}", create=True) as dest:
            if took_over and dest.kind == "postgresql":
                ended = dest.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = %s AND pid <> pg_backend_pid()",
                    (_application(f"pipekit merge {self.module.name}"),),
                )
                if ended:
                    self.emit("warning", f"ended {len(ended)} merge session(s) of the stale run on {self.dest_ep.name} "
                                         "(they held the destination; their merge was rolled back)")
            self.claim = self.fence.claim(dest, self.token, owner=f"run {self.run_id} ({self.lease.owner if self.lease else '?'})")
        fixed = self.engine.repo.record_commit(
            self.module.name, self.claim.previous_token, self.claim.previous_committed_at, self.run_id
        )
        if fixed is not None:
            self.emit("warning", f"run {fixed}'s merge had committed (the destination says so): recorded as 'committed'")

    def plan_only(self) -> Plan:
        """Choose the transport and build the plan: no lock, no run log, nothing written."""
        self.result.transport, _ = self.engine.choose_transport(self.module)
        try:
            return self.resolve()
        except PipekitError:
            raise  # pipekit's own errors name the module already
        except Exception as e:  # a database's own message, naming the module and the phase
            raise PhaseError(self.module.name, self.phase, _Redacted(e)) from e

    def transport(self) -> Transport:
        if self._transport is None:
            ctx = TransportContext(
                cancel=self.cancel,
                log=lambda line: self.emit("log", line),
                jrunner=self.engine.settings.jrunner,
                timeout=self.module.timeout,
                state_dir=self.engine.settings.state_dir,
            )
            self._transport = get_transport(self.result.transport or "native", ctx)
        return self._transport

    def transport_for(self, ep: Endpoint, purpose: str) -> Transport:
        """The one place that decides which transport runs what, once the module's transport is
        chosen (:meth:`Engine.choose_transport`): staging uses it; a resolver follows it where
        it can (jrunner has no SQLite driver); describing the query is native wherever the
        source has a native driver (it learns real types), else the module's jrunner."""
        if purpose == "stage" or (purpose == "resolve" and self.result.transport == "jrunner" and ep.kind != "sqlite"):
            return self.transport()
        if ep.conn.has_native_driver:
            return get_transport("native", TransportContext(cancel=self.cancel))
        if self.result.transport == "jrunner":
            return self.transport()
        if self.engine.settings.jrunner:
            return get_transport(
                "jrunner",
                TransportContext(cancel=self.cancel, log=lambda line: self.emit("log", line), jrunner=self.engine.settings.jrunner),
            )
        raise TransportError(f"connection '{ep.name}' ({ep.kind}) has no native driver and jrunner is not configured")

    def resolve(self) -> Plan:
        """Resolve watermarks, render the query, learn its columns and build every statement."""
        t0 = self._enter("resolve")
        failpoints.hit("before_resolve")
        mod = self.module
        window = self.window
        if self.options.full_refresh and window is not None and mod.strategy == "incremental":
            raise WindowError(f"module '{mod.name}' is partitioned: a full refresh would replace every row with one "
                              "window's; rerun the whole range with --window instead")
        strategy = "full" if (self.options.full_refresh and mod.strategy == "incremental") else mod.strategy
        if self.dest_ep.kind == "sqlite" and not self.dest_ep.sqlite_path().exists():
            dest_exists, dest_cols = False, []  # a new SQLite file: created by the merge, not by planning
        else:
            with NativeDB(self.dest_ep, application=f"pipekit plan {mod.name}") as dest:
                dest_exists = dest.table_exists(self.dest_table)
                dest_cols = dest.table_columns(self.dest_table) if dest_exists else []
        def query_value(conn: str, sql: str) -> object:
            ep = self.engine.endpoint(conn)
            return self.transport_for(ep, "resolve").query_value(ep, sql)

        values = resolve_watermarks(
            mod,
            overrides=dict(self.options.watermark_overrides),
            full_refresh=self.options.full_refresh,
            dest_exists=dest_exists,
            query_value=query_value,
            log=lambda m: self.emit("log", m),
        )
        wm_values = {k: v.value or "" for k, v in values.items()}
        src_ep = self.engine.endpoint(mod.source)
        declared = self._declared_window_type()
        date_window = is_date_type(declared)
        template = {**wm_values, **(window_values(window, date_window) if window else {})}
        source_sql = substitute(mod.sql, template, mod.name)
        source_columns = self._describe(src_ep, source_sql, dest_cols)
        if window is not None and declared is None:  # the query's own type for the column decides
            src_type = self._source_type_of(mod.partitions.column, source_columns)  # type: ignore[union-attr]
            if is_date_type(src_type):
                date_window = True
                template = {**wm_values, **window_values(window, True)}
                source_sql = substitute(mod.sql, template, mod.name)
        self._template_values = template
        bounds = (WindowBounds(mod.partitions.column, template["window_start"], template["window_end"])  # type: ignore[union-attr]
                  if window is not None else None)
        starts = None
        spec = self.engine.partition_spec(mod)
        if window is not None and spec is not None:
            points = spec.starts(window)[1:]
            if len(points) < MAX_PARTITION_COUNTS:  # per-partition row counts (Dagster's partition_row_count)
                starts = [render_point(t, window.every, date_window) for t in points]
        keys = None
        if mod.deletes is not None and strategy != "full":
            keys_sql = substitute(mod.deletes.keys_query, template, mod.name)
            keys = (self.keys_staging, keys_sql, self._describe(src_ep, keys_sql, dest_cols))
        plan = build_plan(
            module=mod,
            catalog=self.engine.catalog,
            dest=self.dest_ep,
            dest_table=self.dest_table,
            staging=self.staging,
            staging_schema=self.engine.settings.staging_schema,
            transport=self.result.transport or "native",
            strategy=strategy,
            values=values,
            source_sql=source_sql,
            source_columns=source_columns,
            dest_exists=dest_exists,
            dest_cols=dest_cols,
            window=bounds,
            keys=keys,
            partition_starts=starts,
        )
        plan.hook_sql = [self.hook_sql(h) for h in mod.hooks]
        plan.window_first_day = window.start.date().isoformat() if window is not None else None
        self.plan_ = plan
        self.result.watermarks = plan.watermark_values()
        self.result.source_sql = source_sql
        self.result.merge_sql = plan.merge_sql_text()
        self.result.source_columns = [(c.name, c.type) for c in source_columns]
        self.result.plan = plan
        if self.run_id is not None:
            self.engine.repo.update_run(
                self.run_id,
                watermarks=self.result.watermarks,
                source_sql=source_sql,
                merge_sql=self.result.merge_sql,
                source_columns=self.result.source_columns,
            )
        for d in plan.drift:
            self.emit("warning", f"source column {d!r} has no column in {mod.dest_table}; it is not merged")
        sch = plan.schema
        for c in sch.added:
            self.emit("log", f"schema change: column {c.name!r} ({c.type}) is added to {mod.dest_table} in the merge")
        for name, old, new in sch.widened:
            self.emit("log", f"schema change: column {name!r} is widened {old} -> {new} in the merge")
        for name in sch.filled:
            self.emit("warning", f"schema change: the query no longer feeds column {name!r}; it gets NULL / its default (missing_column: fill)")
        failpoints.hit("after_resolve")
        self._leave("resolve", t0)
        return plan

    def _declared_window_type(self) -> str | None:
        """The partitions column's type when ``columns:`` declares it (else the query's decides:
        dates render as dates only for a date column, see :func:`pipekit_core.partitions.window_values`)."""
        p = self.module.partitions
        for c in self.module.columns or [] if p is not None else []:
            if c.target_name == p.column and c.dest_type:  # type: ignore[union-attr]
                return c.dest_type
        return None

    def _source_type_of(self, column: str, source_columns: list[SourceColumn]) -> str | None:
        """The type the query gives the destination column ``column`` (after columns: renaming)."""
        rename = {c.source_name: c.target_name for c in self.module.columns or []}
        for sc in source_columns:
            if rename.get(sc.name, sc.name) == column:
                return sc.type
        return None

    def _describe(self, src: Endpoint, sql: str, dest_cols: list[tuple[str, str, bool]]) -> list[SourceColumn]:
        tr = self.transport_for(src, "describe")
        if tr.name == "native":
            return tr.describe(src, sql)
        cols = tr.describe(src, sql)  # jrunner: names only
        known = {c.source_name: c.dest_type for c in (self.module.columns or []) if c.dest_type}
        dest_types = {n: t for n, t, _ in dest_cols}
        return [SourceColumn(c.name, known.get(c.name) or dest_types.get(c.name) or c.type) for c in cols]

    def stage(self) -> int:
        """Create the staging table and copy the source rows into it (and, with ``deletes:``, the
        source's current keys into the keys staging table); returns rows staged."""
        assert self.plan_ is not None, "resolve() first"
        t0 = self._enter("stage")
        plan = self.plan_
        if plan.direct is not None:
            self.emit("log", f"full refresh without staging: the rows are copied straight into {plan.dest_table} "
                             "inside the merge transaction (one write per row)")
            self._leave("stage", t0)
            return 0
        with NativeDB(self.dest_ep, application=f"pipekit stage {self.module.name}", create=True) as dest:
            token = self.cancel.register(dest.cancel)
            try:
                rows_read, staged = self._stage_one(
                    dest, self.staging, plan.staging_ddl, plan.source_sql, plan.staging_columns, plan.source_columns,
                    plan.dest_types, analyze_keys=plan.strategy == "incremental",
                )
                if plan.keys_sql is not None:
                    self.emit("log", f"staged {staged:,} rows into {plan.staging_table}; staging the keys query "
                                     f"into {plan.keys_staging_table}")
                    _, keys = self._stage_one(
                        dest, self.keys_staging, plan.keys_staging_ddl, plan.keys_sql, plan.keys_staging_columns,
                        plan.keys_source_columns, plan.keys_dest_types, analyze_keys=True,
                    )
                    self.emit("log", f"staged {keys:,} current source keys")
            finally:
                self.cancel.unregister(token)
        self.result.rows_read = rows_read
        self.result.rows_staged = staged
        if self.run_id is not None:
            self.engine.repo.update_run(self.run_id, rows_read=rows_read, rows_staged=staged)
        if plan.keys_sql is None:
            self.emit("log", f"staged {staged:,} rows into {plan.staging_table}")
        self._leave("stage", t0)
        return staged

    def _stage_one(
        self,
        dest: NativeDB,
        table: TableName,
        ddl: list[str],
        sql: str,
        staging_columns: list[ColumnDef],
        source_columns: list[SourceColumn],
        dest_types: list[str],
        *,
        analyze_keys: bool,
    ) -> tuple[int | None, int]:
        """(Re)create one staging table and stream a query's rows into it: (rows read, rows staged)."""
        with dest.transaction():
            for stmt in ddl:
                execute_ddl(dest, stmt)
        self._staging_created = True
        if table == self.staging:
            failpoints.hit("after_staging_created")
        self.cancel.check()
        started = time.monotonic()

        def progress(rows: int) -> None:
            el = max(time.monotonic() - started, 1e-6)
            self.emit("progress", f"{rows:,} rows ({rows / el:,.0f} rows/s)", rows=rows, rate=rows / el)

        src_ep = self.engine.endpoint(self.module.source)
        req = StageRequest(
            module=self.module.name,
            source=src_ep,
            dest=self.dest_ep,
            sql=sql,
            staging=table,
            staging_columns=staging_columns,
            source_columns=source_columns,
            timeout=self.module.timeout,
            dest_types=dest_types,
        )
        rows_read = self.transport_for(src_ep, "stage").stage(req, dest, progress)
        self.cancel.check()
        if rows_read is not None and self.result.transport == "native":
            staged = rows_read  # the native transport counts exactly what it wrote to the new table
        else:
            staged = int(dest.query_one(dest.dialect.count_sql(table))[0])  # type: ignore[index]
        # Statistics matter only where the merge joins staging to the destination (the
        # incremental delete, the deletes' anti join); a full or append merge reads staging once.
        # ANALYZE of a 1M-row staging table took 1-2 s here.
        analyze = dest.dialect.analyze_sql(table) if analyze_keys else None
        if analyze and dest.kind == "postgresql":
            # The join's plan needs the row count (always gathered) and the key's statistics
            # only: 0.06-0.12 s instead of 0.5 s for 60k staged rows x 12 columns.
            analyze += " (" + ", ".join(dest.dialect.quote(k) for k in self.module.merge_key) + ")"
        if analyze:
            dest.execute(analyze)
        return rows_read, staged

    def _load_direct(self, db: NativeDB, direct: DirectLoad) -> int:
        """A single-write full refresh's copy, on the merge's connection inside its transaction
        (:meth:`pipekit_core.merge.Merger._load_direct`): the transport loads the destination table
        itself instead of a staging table. Returns the rows copied.

        While the rows move the run is in phase 'stage' again (its log, its errors, its timing:
        a source that fails mid-copy fails "in phase 'stage'" as on the staged path); then back
        in 'merge' for the guards and the commit."""
        t0 = started = self._enter("stage")

        def progress(rows: int) -> None:
            el = max(time.monotonic() - started, 1e-6)
            self.emit("progress", f"{rows:,} rows ({rows / el:,.0f} rows/s)", rows=rows, rate=rows / el)

        src_ep = self.engine.endpoint(self.module.source)
        req = StageRequest(
            module=self.module.name, source=src_ep, dest=self.dest_ep, sql=direct.sql, staging=self.dest_table,
            staging_columns=direct.columns, source_columns=direct.source_columns, timeout=self.module.timeout,
            dest_types=[c.type for c in direct.columns],
        )
        rows = self.transport_for(src_ep, "stage").stage(req, db, progress)
        self.cancel.check()
        self._leave("stage", t0)
        self._copy_s = time.monotonic() - t0
        self._enter("merge")
        if rows is None:  # (native transports count what they write)
            raise TransportError(f"module '{self.module.name}': the transport did not report the rows it copied")
        self.result.rows_read = self.result.rows_staged = rows
        if self.run_id is not None:
            self.engine.repo.update_run(self.run_id, rows_read=rows, rows_staged=rows)
        self.emit("log", f"copied {rows:,} rows into {self.plan_.dest_table if self.plan_ else self.module.dest_table}")
        return rows

    def merge(self) -> RunResult:
        """Merge staging into the destination in one transaction (:class:`~pipekit_core.merge.Merger`)."""
        assert self.plan_ is not None, "resolve() first"
        t0 = self._enter("merge")
        self._copy_s = 0.0  # a single-write full refresh's copy: timed as 'stage' (_load_direct)
        plan, mod, r = self.plan_, self.module, self.result
        out = Merger(
            mod, self.dest_ep, plan,
            staging=self.staging, dest_table=self.dest_table, fence=self.fence, claim=self.claim, keys_staging=self.keys_staging,
            lost=self._lost_to, cancel=self.cancel, warn=lambda m: self.emit("warning", m),
            load=self._load_direct, source=self.engine.endpoint(mod.source),
        ).run()
        r.committed = True
        r.rows_deleted, r.rows_inserted, r.row_count = out.deleted, out.inserted, out.row_count
        r.window_row_count = out.window_row_count
        spec = self.engine.partition_spec(mod)
        if spec is not None and self.window is not None:
            keys = spec.keys(self.window)
            if out.partition_counts is not None:
                r.partition_row_counts = dict(zip(keys, out.partition_counts, strict=True))
            elif len(keys) == 1 and out.window_row_count is not None:
                r.partition_row_counts = {keys[0]: out.window_row_count}
        r.rows_source_deleted, r.rows_soft_deleted, r.rows_undeleted = out.source_deleted, out.soft_deleted, out.undeleted
        if self.run_id is not None:
            self.engine.repo.update_run(
                self.run_id, rows_deleted=out.deleted, rows_inserted=out.inserted, row_count=out.row_count,
                window_row_count=out.window_row_count, rows_source_deleted=out.source_deleted,
                rows_soft_deleted=out.soft_deleted, rows_undeleted=out.undeleted,
            )
        removed = "every previous row replaced" if out.deleted is None else f"{out.deleted:,} deleted"
        self.emit("log", f"merged ({plan.strategy}): {removed}, {out.inserted:,} inserted; "
                         f"{out.row_count:,} rows in {mod.dest_table}"
                         + (f" ({out.window_row_count:,} in the window)" if out.window_row_count is not None else ""))
        if out.source_deleted is not None:
            self.emit("log", f"deletes (hard): {out.source_deleted:,} rows whose key left the source were deleted")
        if out.soft_deleted is not None:
            self.emit("log", f"deletes (soft): {out.soft_deleted:,} rows marked deleted, {out.undeleted or 0:,} "
                             "marked rows came back")
        failpoints.hit("after_merge_commit")
        # After the commit nothing may fail the merge: a lost connection here is not a failed merge.
        try:
            with NativeDB(self.dest_ep, application=f"pipekit merge {mod.name}") as dest:
                r.dest_columns = [(n, t) for n, t, _ in dest.table_columns(self.dest_table)]
        except Exception as e:  # noqa: BLE001
            r.dest_columns = [(c.name, c.type) for c in plan.staging_columns if c.name in plan.merge_columns]
            self.emit("warning", f"the merge committed; reading {mod.dest_table}'s columns afterwards failed: {redact(str(e))}")
        self._leave("merge", t0 + self._copy_s)
        return r

    def hook_sql(self, hook: Hook) -> str:
        """A hook's SQL: a partitioned module's hooks are templates ({window_start}, watermarks)."""
        if self.module.partitions is None:
            return hook.sql
        values = self._template_values
        if not values and self.window is not None:  # (a failure hook before resolve rendered them)
            values = window_values(self.window, is_date_type(self._declared_window_type()))
        return substitute(hook.sql, values, self.module.name)

    def _run_hook(self, i: int, hook: Hook) -> None:
        self._hooks_done.add(i)
        label = hook.name or f"hook #{i + 1}"
        ep = self.dest_ep if not hook.connection or hook.connection == self.module.dest else self.engine.endpoint(hook.connection)
        failpoints.hit("before_hook", i)
        self.emit("log", f"{label} ({hook.run_on}): {hook.sql.strip().splitlines()[0][:120]}")
        try:
            sql = self.hook_sql(hook)
            with NativeDB(ep, application=f"pipekit hook {self.module.name}", create=True) as db:
                token = self.cancel.register(db.cancel)
                try:
                    if db.kind == "sqlite":  # sqlite3's execute() takes one statement only
                        try:
                            db.raw.executescript(f"BEGIN;\n{sql}\n;COMMIT;")
                        except BaseException:
                            with contextlib.suppress(Exception):
                                db.raw.execute("ROLLBACK")
                            raise
                    else:
                        with db.transaction():
                            db.execute(sql)
                finally:
                    self.cancel.unregister(token)
        except Exception as e:  # noqa: BLE001
            raise HookError(f"module '{self.module.name}': {label} failed: {redact(str(e).strip())}") from e

    def run_hooks(self) -> None:
        """Run success and always hooks in file order; a failing hook fails the run."""
        t0 = self._enter("hooks")
        for i, hook in enumerate(self.module.hooks):
            if hook.run_on in ("success", "always"):
                self.cancel.check()
                self._run_hook(i, hook)
        self._leave("hooks", t0)

    def finish(self, exc: BaseException | None = None) -> RunResult:
        """End the run: on failure run failure/always hooks; drop staging; run log; unlock."""
        if self.finished:
            return self.result
        self.finished = True
        r = self.result
        try:
            if exc is not None:
                # A stop the engine itself asked for (timeout, lost lock) is a failure, not a cancel.
                forced = self.cancel.reason if (self.cancel.reason or "").startswith(FORCED_STOPS) else None
                self.cancel.cancel("run ended")  # stop anything still running (jrunner, queries)
                r.status = "cancelled" if _is_cancel(exc) and not forced else "error"
                r.failed_phase = self.phase
                msg = forced or (str(exc) or type(exc).__name__)
                if isinstance(exc, PhaseError):
                    msg = str(exc)
                elif r.status == "cancelled":
                    msg = f"module '{self.module.name}' cancelled in phase '{self.phase}' ({msg})"
                elif not isinstance(exc, (LockHeldError,)):
                    msg = f"module '{self.module.name}' failed in phase '{self.phase}': {msg}"
                lost = self._lost_to()
                if lost and "lost the module lock" not in msg:
                    msg = f"module '{self.module.name}': this run {lost}; it stopped with: {msg}"
                if r.committed:
                    msg += (f" (the merge had committed: {r.row_count:,} rows in {self.module.dest_table}; "
                            "not retried, and the next run starts from there)")
                r.error = redact(msg)
                self.emit("error", r.error)
                if self.run_id is not None and not self.options.dry_run:
                    for i, hook in enumerate(self.module.hooks):
                        if hook.run_on in ("failure", "always") and i not in self._hooks_done:
                            try:
                                self._run_hook(i, hook)
                            except BaseException as he:  # noqa: BLE001 - the first error is the one reported
                                self.emit("warning", f"failure hook error: {he}")
            elif self.options.dry_run:
                r.status = "dry_run"
            else:
                r.status = "success"
            if self._staging_created and not self._lost_to():
                self._drop_staging()  # (a run that lost its module leaves staging to the new owner)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self.run_id is not None:
                try:
                    self.engine.repo.finish_run(
                        self.run_id,
                        r.status,
                        error=r.error,
                        phase=r.failed_phase or self.phase,
                        phase_timings=r.phase_timings,
                    )
                except Exception as e:  # noqa: BLE001
                    self.emit("warning", f"could not write the run log: {e}")
            if self.lease is not None:
                self.lease.release()
            self.emit("phase", f"{r.status}")
        return r

    def _drop_staging(self) -> None:
        try:
            with NativeDB(self.dest_ep, application=f"pipekit cleanup {self.module.name}") as dest:
                dest.execute(self.dest_ep.dialect.drop_table_sql(self.staging))
                if self.module.deletes is not None:
                    dest.execute(self.dest_ep.dialect.drop_table_sql(self.keys_staging))
        except Exception as e:  # noqa: BLE001
            self.emit("warning", f"could not drop staging {self.staging}: {e}; the next run drops it")

    def execute(self) -> RunResult:
        """Run every phase in order; always finishes. Raises the failure after recording it."""
        try:
            self.start()
            plan = self.resolve()
            if self.options.dry_run:
                self.result.plan = plan
                return self.finish()
            self.stage()
            self.merge()
            self.run_hooks()
        except BaseException as e:
            self.finish(e)
            if isinstance(e, Exception) and not isinstance(e, PhaseError):
                err = PhaseError(self.module.name, self.result.failed_phase or self.phase, _Redacted(e))
                err.committed = self.result.committed
                if self.result.error:
                    err.args = (self.result.error,)  # what the run log says (e.g. "timed out after N s")
                raise err from e
            raise
        return self.finish()


def _application(name: str) -> str:
    """A PostgreSQL application_name as the server stores it (at most 63 bytes)."""
    return name.encode()[:63].decode(errors="ignore")


class _Redacted(Exception):
    """A failure's text with secrets masked, keeping whether it is transient."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(redact(str(cause) or type(cause).__name__))
        self.transient = is_retryable(cause)
        self.original = cause


def _is_cancel(exc: BaseException) -> bool:
    if isinstance(exc, (KeyboardInterrupt, RunCancelled, SystemExit)):
        return True
    name = type(exc).__name__
    if name in ("DagsterExecutionInterruptedError", "QueryCanceled"):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and type(cause).__name__ in ("QueryCanceled",)


def run_module(
    engine: Engine, module: str, options: RunOptions | None = None, on_event: EventFn | None = None
) -> RunResult:
    """Run one module from start to finish, retrying transient failures per its ``retries``.

    Raises PhaseError (or KeyboardInterrupt) after the failure has been recorded.
    """
    options = options or RunOptions()
    mod = engine.module(module)
    attempts = 1 + (mod.retries.max if mod.retries else 0)
    for attempt in range(1, attempts + 1):
        run = engine.new_run(module, options, on_event)
        try:
            return run.execute()
        except Exception as e:
            if attempt < attempts and run.result.status == "error" and is_retryable(e):
                delay = mod.retries.delay if mod.retries else 0
                run.emit("warning", f"transient failure, retry {attempt}/{attempts - 1} in {delay:g} s")
                time.sleep(delay)
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def check_definitions(catalog: Catalog) -> None:
    """Raise DefinitionError when the catalog has problems."""
    if catalog.problems:
        raise DefinitionError(catalog.problems)
