"""Dagster resources: ``pipekit`` (settings and the run's module runs) and ``pipekit_run``.

- :class:`PipekitResource` (key ``pipekit``) says where the definitions, the repository and the
  config file are; unset fields fall back to the environment (``PIPEKIT_DEFS``, ``PIPEKIT_DB``,
  ``PIPEKIT_CONFIG``) and ``pipekit.yaml``, as for the CLI. It is also the run-scoped home of the
  :class:`~pipekit_core.engine.ModuleRun` objects: with ``in_process_executor`` its setup and
  teardown bracket the whole Dagster run, so a module's phases (one op each) share one
  ModuleRun, and teardown finishes any run an op left open (the lock is never left behind).
- :class:`PipekitRunOptions` (key ``pipekit_run``) carries the per-run options. It is a resource
  of its own so that run config given at launch (which replaces a resource's bound values)
  never touches the ``pipekit`` settings.

The engine is imported lazily: loading the code location needs only the definitions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from pipekit_core.config import Settings, load_settings
from pipekit_dagster import constants as c

if TYPE_CHECKING:
    from pipekit_core.engine import Engine, Event, ModuleRun, RunOptions
    from pipekit_core.partitions import Window

PROGRESS_EVERY_S = 5.0


class PipekitRunOptions(dg.ConfigurableResource):
    """Options for one run (launchpad ``resources: pipekit_run: config:``, or ``-c run.yaml``).

    The run tags ``pipekit/dry_run=true`` and ``pipekit/full_refresh=true`` set the same flags,
    so schedules and the UI's tag editor can use them too.

    Example run config::

        resources:
          pipekit_run:
            config:
              dry_run: true
              watermark_overrides:
                orders: {since: '2024-01-01 00:00:00+00:00'}
    """

    dry_run: bool = Field(
        default=False,
        description="Plan only: resolve watermarks and build every SQL statement, record them as an "
        "AssetObservation, and write nothing (no materialization, no hooks).",
    )
    full_refresh: bool = Field(
        default=False,
        description="Incremental modules in this run behave as full: the destination is replaced and "
        "watermarks take their defaults.",
    )
    watermark_overrides: dict[str, dict[str, str]] = Field(
        default={},
        description="Watermark values for this run only: module name -> watermark name -> value "
        "(text, as substituted into the query).",
    )

    def for_module(
        self, module: str, tags: Mapping[str, str], dagster_run_id: str | None, window: Window | None = None
    ) -> RunOptions:
        """The engine's RunOptions for ``module`` in this run (config or tags).

        ``window``: a partitioned module's window, from the run's partition or partition range
        (:func:`pipekit_dagster.execution.run_window`); None for a module without partitions.
        """
        from pipekit_core.engine import RunOptions

        return RunOptions(
            dry_run=self.dry_run or c.is_true(tags.get(c.DRY_RUN_TAG, "")),
            full_refresh=self.full_refresh or c.is_true(tags.get(c.FULL_REFRESH_TAG, "")),
            watermark_overrides={str(k): str(v) for k, v in (self.watermark_overrides.get(module) or {}).items()},
            trigger="dagster",
            dagster_run_id=dagster_run_id,
            window=window,
        )


RUN_OPTIONS = PipekitRunOptions()
"""The ``pipekit_run`` resource every pipekit ``Definitions`` binds: one object, because
``Definitions.merge`` (what ``dg`` does with several Components) accepts a key bound twice only
to the same object; one run config then serves every definitions folder."""


class EventLog:
    """Sends a module run's events to the Dagster log of whichever op is running it.

    Progress events are rate-limited (one line every ``PROGRESS_EVERY_S`` seconds per module);
    they may come from a transport's thread, hence the lock.
    """

    def __init__(self, module: str, log: Any) -> None:
        self.module = module
        self.log = log
        self._lock = threading.Lock()
        self._last_progress = 0.0

    def bind(self, log: Any) -> None:
        with self._lock:
            self.log = log

    def __call__(self, event: Event) -> None:
        with self._lock:
            log = self.log
            if event.kind == "progress":
                now = time.monotonic()
                if now - self._last_progress < PROGRESS_EVERY_S:
                    return
                self._last_progress = now
        if log is None:
            return
        line = f"[{self.module}] {event.message}"
        with contextlib.suppress(Exception):  # a log line must never fail the run
            if event.kind in ("warning", "error"):
                log.warning(line)
            elif event.kind == "phase":
                log.debug(line)
            else:
                log.info(line)


class PipekitResource(dg.ConfigurableResource):
    """pipekit's settings, and the module runs of the current Dagster run.

    Fields left unset follow the environment and ``pipekit.yaml`` exactly as the ``pipekit`` CLI
    does; set ones override them.
    """

    defs: str | None = Field(
        default=None,
        description="Module definitions folder. Default: PIPEKIT_DEFS, else 'defs' in pipekit.yaml, "
        "else ./module_defs.",
    )
    database: str | None = Field(
        default=None,
        description="The repository (run log, locks): a SQLite file or a postgresql:// URL. Default: PIPEKIT_DB, else 'database' in "
        "pipekit.yaml, else ./pipekit.db.",
    )
    config: str | None = Field(
        default=None,
        description="Path of a pipekit.yaml. Default: PIPEKIT_CONFIG, else ./pipekit.yaml when present.",
    )

    _engine: Any = PrivateAttr(default=None)
    _runs: dict = PrivateAttr(default_factory=dict)
    _logs: dict = PrivateAttr(default_factory=dict)

    # -- settings ---------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The process environment with this resource's overrides applied."""
        env = dict(os.environ)
        for value, name in ((self.config, "PIPEKIT_CONFIG"), (self.defs, "PIPEKIT_DEFS"), (self.database, "PIPEKIT_DB")):
            if value:
                env[name] = value
        return env

    def load_settings(self) -> Settings:
        """Resolved settings (raises ConfigError for a bad pipekit.yaml)."""
        return load_settings(self.environment())

    def engine(self) -> Engine:
        """The engine for this run (loads the definitions once per resource setup)."""
        if self._engine is None:
            from pipekit_core.engine import Engine

            env = self.environment()
            self._engine = Engine(settings=load_settings(env), env=env)
        return self._engine

    # -- the run's module runs --------------------------------------------------------------
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = None
        self._runs = {}
        self._logs = {}

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Finish every module run an op left open: failure hooks, staging dropped, run log, unlock."""
        open_runs = [r for r in self._runs.values() if not r.finished]
        if not open_runs:
            return
        from pipekit_core.errors import PipekitError, RunCancelled

        terminated = _run_terminated(context)
        for run in open_runs:
            log = self._logs.get(run.module.name)
            if log is not None:
                log.bind(context.log)
            if terminated:
                exc: BaseException = RunCancelled("the Dagster run was terminated")
            else:
                exc = PipekitError(
                    f"module '{run.module.name}': the Dagster run ended after phase '{run.phase}' "
                    "before the module's remaining phases ran"
                )
            with contextlib.suppress(Exception):
                run.cancel.cancel(str(exc))
                run.finish(exc)

    def event_log(self, module: str, log: Any) -> EventLog:
        """The module's event sink, now writing to ``log`` (the running op's ``context.log``)."""
        ev = self._logs.get(module)
        if ev is None:
            ev = self._logs[module] = EventLog(module, log)
        else:
            ev.bind(log)
        return ev

    def current_run(self, module: str) -> ModuleRun | None:
        """The module's run in this Dagster run, if an earlier phase started one."""
        return self._runs.get(module)

    def new_run(self, module: str, options: RunOptions, on_event: Callable[[Event], None]) -> ModuleRun:
        """A fresh ModuleRun for ``module`` (an unfinished earlier one is finished as an error)."""
        old = self._runs.pop(module, None)
        if old is not None and not old.finished:
            from pipekit_core.errors import PipekitError

            old.finish(PipekitError(f"module '{module}': superseded by a new attempt"))
        run = self.engine().new_run(module, options, on_event)
        self._runs[module] = run
        return run


def _run_terminated(context: dg.InitResourceContext) -> bool:
    """True when the Dagster run is being (or was) terminated."""
    try:
        run = context.instance.get_run_by_id(context.run_id) if context.instance and context.run_id else None
    except Exception:  # noqa: BLE001 - an unreadable run record must not block cleanup
        return False
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
