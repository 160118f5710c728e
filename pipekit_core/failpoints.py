"""Deterministic fault points, a testing aid: ``PIPEKIT_FAILPOINT=<point>:<action>``.

Points, in the order a run reaches them:

- ``before_resolve``, ``after_resolve``: at the start and the end of the resolve phase;
- ``after_staging_created``: the staging table exists (committed), no row copied yet; in a
  single-write full refresh (no staging table), where rows start to arrive instead: inside the
  merge transaction, the destination emptied, no row copied yet;
- ``after_rows:<N>``: mid-copy, once N rows have gone into the staging table (the staging
  transaction still open). Fires once per copy, on every native path (PostgreSQL->PostgreSQL
  counts the rows of its COPY pipe) and for jrunner when its progress ticker reports N rows;
  never when the source has fewer than N rows;
- ``after_merge_statement`` (after every statement of the merge) or ``after_merge_statement:<i>``
  (after statement number i, from 0, counting the merge statements then the deletes'
  statements in plan order): inside the merge transaction, e.g. a window's DELETE done and its
  INSERT not yet run;
- ``before_merge_commit``: every merge statement done, the merge transaction not committed;
- ``after_merge_commit``: the merge committed, staging not yet dropped;
- ``before_hook`` (before every hook, failure hooks included) or ``before_hook:<i>`` (before
  hook number i of the module, from 0).

Actions: ``kill`` (SIGKILL this process: no cleanup at all), ``raise`` (a FailpointError) and
``sleep:<seconds>`` (holds the run in place, e.g. to cancel it there). Several items may be
given, separated by commas: ``after_resolve:sleep:2,before_merge_commit:raise``.

Unset (the normal case), every call is a no-op. A malformed value raises FailpointError
naming the item, so a typo never makes a fault test pass by doing nothing. Each firing writes
one line to stderr (``pipekit failpoint: <point> -> <action>``) before acting.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

ENV = "PIPEKIT_FAILPOINT"
POINTS = (
    "before_resolve",
    "after_resolve",
    "after_staging_created",
    "after_rows",
    "after_merge_statement",
    "before_merge_commit",
    "after_merge_commit",
    "before_hook",
)
_NEEDS_ARG = frozenset({"after_rows"})
_TAKES_ARG = frozenset({"after_rows", "before_hook", "after_merge_statement"})


class FailpointError(RuntimeError):
    """Raised by a ``raise`` fault point, and for a malformed PIPEKIT_FAILPOINT."""


@dataclass(frozen=True)
class Failpoint:
    point: str
    arg: int | None
    action: str  # kill | raise | sleep:<seconds>

    @property
    def label(self) -> str:
        return self.point if self.arg is None else f"{self.point}:{self.arg}"


def _bad(item: str, why: str) -> FailpointError:
    return FailpointError(
        f"{ENV}: {item!r}: {why}; expected <point>[:<n>]:<kill|raise|sleep:S> with point one of {', '.join(POINTS)}"
    )


def _parse_action(item: str, action: str) -> str:
    if action in ("kill", "raise"):
        return action
    if action.startswith("sleep:"):
        try:
            if float(action.split(":", 1)[1]) >= 0:
                return action
        except ValueError:
            pass
    raise _bad(item, f"unknown action {action!r}")


def parse(spec: str | None = None) -> list[Failpoint]:
    """The fault points configured in ``spec`` (default: the PIPEKIT_FAILPOINT variable)."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    out: list[Failpoint] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        point = parts[0]
        if point not in POINTS:
            raise _bad(item, f"unknown point {point!r}")
        arg: int | None = None
        rest = parts[1:]
        if point in _TAKES_ARG and rest and rest[0].lstrip("-").isdigit():
            arg, rest = int(rest[0]), rest[1:]
        if point in _NEEDS_ARG and arg is None:
            raise _bad(item, f"{point} needs a row count, e.g. {point}:1000:kill")
        if not rest:
            raise _bad(item, "no action")
        out.append(Failpoint(point, arg, _parse_action(item, ":".join(rest))))
    return out


def _act(fp: Failpoint, detail: str = "") -> None:
    print(f"pipekit failpoint: {fp.label} -> {fp.action}{detail}", file=sys.stderr, flush=True)
    if fp.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # pragma: no cover - the signal arrives first
    elif fp.action == "raise":
        raise FailpointError(f"failpoint {fp.label} raised{detail} ({ENV})")
    else:
        time.sleep(float(fp.action.split(":", 1)[1]))


def hit(point: str, arg: int | None = None) -> None:
    """Fire the actions configured for ``point`` (``arg``: e.g. the hook's index)."""
    if ENV not in os.environ:
        return
    for fp in parse():
        if fp.point == point and (fp.arg is None or fp.arg == arg):
            _act(fp)


class RowWatch:
    """``after_rows:<N>`` for one copy: each configured N fires once, when the count reaches it.

    Transports call the watch with the running row count. ``next_at`` is the smallest count
    still to fire (None: nothing configured), so a hot loop only counts when it must. A reader
    thread that cannot act itself (jrunner's output reader) calls :meth:`note`; the thread that
    runs the copy then calls :meth:`fire_pending`.
    """

    def __init__(self, points: list[Failpoint]) -> None:
        self._pending = sorted((fp for fp in points if fp.point == "after_rows"), key=lambda f: f.arg or 0)
        self._seen = 0
        self._lock = threading.Lock()

    @property
    def next_at(self) -> int | None:
        return (self._pending[0].arg or 0) if self._pending else None

    def note(self, rows: int) -> None:
        """Record a row count (any thread); nothing fires here."""
        with self._lock:
            self._seen = max(self._seen, rows)

    def fire_pending(self) -> None:
        """Fire every point whose count has been reached (on the copying thread)."""
        while True:
            with self._lock:
                if not self._pending or (self._pending[0].arg or 0) > self._seen:
                    return
                fp, seen = self._pending.pop(0), self._seen
            _act(fp, f" at {seen:,} rows copied")

    def __call__(self, rows: int) -> None:
        self.note(rows)
        self.fire_pending()


def row_watch() -> RowWatch:
    """A watch for one copy (inert when PIPEKIT_FAILPOINT has no ``after_rows`` item)."""
    return RowWatch(parse() if ENV in os.environ else [])


def rows_copied(n: int) -> None:
    """Fire ``after_rows:<N>`` for every N <= n (stateless; prefer :func:`row_watch`)."""
    if ENV in os.environ:
        RowWatch(parse())(n)
