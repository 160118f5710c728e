"""The module lock as a lease: taken in the repository, kept alive by a heartbeat, given back.

One run of a module at a time, across processes. The lease is only the first line: a process
paused past the stale threshold on another host can be taken over and resume later, so the
destination's fencing token (:mod:`pipekit_core.fence`) is what finally decides whether a merge
may commit. The lease's part is to notice a loss early (the heartbeat finds the lock row is no
longer this run's) and stop the run then, before it copies more rows for nothing.

The owner is this process on this host as :func:`pipekit_core.repo_backends.host_identity` names
it (hostname, boot id, PID namespace): only an owner with the same identity is judged by its pid;
every other one (another machine, container or pod sharing a PostgreSQL repository) by its
heartbeat. ``PIPEKIT_LOCK_STALE_AFTER`` (seconds, default 120) sets when such a lock counts as
stale; the heartbeat runs at a quarter of that (at most every 15 s).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from pipekit_core.errors import ConfigError, LockHeldError
from pipekit_core.repo import LockOwner, LockResult, Repository

STALE_ENV = "PIPEKIT_LOCK_STALE_AFTER"
DEFAULT_STALE_AFTER = 120.0


def stale_after() -> float:
    raw = os.environ.get(STALE_ENV, "").strip()
    if not raw:
        return DEFAULT_STALE_AFTER
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{STALE_ENV}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{STALE_ENV}={raw!r}: must be more than 0 seconds")
    return value


class Lease:
    """This run's hold on its module's lock."""

    def __init__(self, repo: Repository, module: str, token: str, on_lost: Callable[[str], None]) -> None:
        self.repo = repo
        self.module = module
        self.owner = LockOwner.current(token=token)
        self.on_lost = on_lost
        self.stale_after = stale_after()
        self.interval = min(15.0, self.stale_after / 4)
        self.lost: str | None = None
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, *, wait: bool, timeout: float | None, on_wait: Callable[[str], None]) -> LockResult:
        """Take the lock, or raise LockHeldError naming the holder (after waiting, with ``wait``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while True:
            res = self.repo.acquire_lock(self.module, self.owner, stale_after=self.stale_after)
            if res.acquired:
                self.held = True
                return res
            holder = res.holder.owner if res.holder else "?"
            if not wait or (deadline is not None and time.monotonic() > deadline):
                raise LockHeldError(
                    f"module '{self.module}' is already running ({holder}); this run did nothing"
                )
            if not announced:
                on_wait(f"waiting for the lock held by {holder}")
                announced = True
            time.sleep(1.0)

    def bind_run(self, run_id: int) -> None:
        """Record the run log id in the lock row and start the heartbeat."""
        self.repo.set_lock_run_id(self.module, self.owner, run_id)
        self.owner = LockOwner(self.owner.host, self.owner.pid, run_id, self.owner.token)
        self._thread = threading.Thread(target=self._beat, name="pipekit-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ours = self.repo.heartbeat(self.module, self.owner)
            except Exception:  # noqa: BLE001 - a busy repository must not kill the run
                continue
            if not ours:
                self.lost = "lost the module lock (taken over by another run, or cleared by 'pipekit unlock')"
                self.on_lost(self.lost)
                return

    def release(self) -> None:
        self._stop.set()
        if self.held:
            self.held = False
            try:
                self.repo.release_lock(self.module, self.owner)
            except Exception:  # noqa: BLE001 - the next run takes a leftover lock over
                pass
