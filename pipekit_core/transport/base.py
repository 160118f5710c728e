"""The transport protocol: how rows move from a source query into a staging table.

Two implementations: ``native`` (Python drivers) and ``jrunner`` (the external Java CLI).
Destination-side SQL never goes through a transport: the engine runs it on the destination's
native driver. :func:`get_transport` is the registry.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipekit_core.db import Endpoint, NativeDB
from pipekit_core.errors import RunCancelled
from pipekit_core.sql.dialects import ColumnDef, TableName

LogFn = Callable[[str], None]
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SourceColumn:
    """A column of the source query's result: its name and the source's type name."""

    name: str
    type: str


@dataclass
class StageRequest:
    """Everything a transport needs to fill a staging table."""

    module: str
    source: Endpoint
    dest: Endpoint
    sql: str
    staging: TableName
    staging_columns: list[ColumnDef]
    source_columns: list[SourceColumn]
    timeout: float | None = None
    # jrunner only: pass -b (bulk load)? None = decide (PIPEKIT_JRUNNER_BULK, else the dest kind).
    bulk: bool | None = None
    # The type each staged value finally lands in (the destination column's), by staging position,
    # for the per-value exactness check (sql.types.value_guard). None: the staging types (on a
    # SQLite destination staging is untyped, so only dest_types lets the check see the column's type).
    dest_types: list[str] | None = None

    def value_types(self) -> list[str]:
        """The destination type of each staged column (see ``dest_types``)."""
        if self.dest_types is not None and len(self.dest_types) == len(self.staging_columns):
            return list(self.dest_types)
        return [c.type for c in self.staging_columns]


class CancelScope:
    """Cancellation shared by the engine and whatever is running (queries, processes).

    ``cancel()`` may be called from any thread or a signal handler; it calls every registered
    callback (a server-side cancel, a process-group SIGTERM) once.
    """

    def __init__(self) -> None:
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def register(self, fn: Callable[[], None]) -> int:
        with self._lock:
            self._next += 1
            self._callbacks[self._next] = fn
            return self._next

    def unregister(self, token: int) -> None:
        with self._lock:
            self._callbacks.pop(token, None)

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self.event.is_set():
                return
            self.reason = reason
            self.event.set()
            callbacks = list(self._callbacks.values())
        for fn in callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort: every callback gets its chance
                pass

    def check(self) -> None:
        if self.event.is_set():
            raise RunCancelled(self.reason or "cancelled")


@dataclass
class TransportContext:
    """What the engine lends a transport for one run."""

    cancel: CancelScope = field(default_factory=CancelScope)
    log: LogFn = lambda line: None
    jrunner: str | None = None
    timeout: float | None = None
    state_dir: Path | None = None  # where jrunner's process-group files live (beside pipekit.db)


class Transport(ABC):
    """Moves rows and answers small queries on a source."""

    name: str = ""

    def __init__(self, ctx: TransportContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def query_value(self, ep: Endpoint, sql: str) -> object | None:
        """First column of the first row of ``sql`` on ``ep``; None for no row or NULL."""

    @abstractmethod
    def describe(self, ep: Endpoint, sql: str) -> list[SourceColumn]:
        """The result columns of ``sql`` without reading its rows (a zero-row wrap)."""

    @abstractmethod
    def stage(self, req: StageRequest, dest: NativeDB, progress: ProgressFn) -> int | None:
        """Copy the rows of ``req.sql`` into ``req.staging`` (already created, empty).

        Returns the rows read when the transport knows it; the engine counts the staging table.
        """


TRANSPORTS = ("native", "jrunner")


def get_transport(name: str, ctx: TransportContext) -> Transport:
    """The transport called ``name``; ValueError listing the valid names otherwise."""
    if name == "native":
        from pipekit_core.transport.native import NativeTransport

        return NativeTransport(ctx)
    if name == "jrunner":
        from pipekit_core.transport.jrunner import JrunnerTransport

        return JrunnerTransport(ctx)
    raise ValueError(f"unknown transport {name!r}; valid: {', '.join(TRANSPORTS)}")
