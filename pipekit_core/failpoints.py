"""Deterministic fault points, a testing aid: ``PIPEKIT_FAILPOINT=<point>:<action>``.

Points: ``before_resolve``, ``after_resolve``, ``after_staging_created``, ``after_rows:<N>``
(once N rows have been copied), ``before_merge_commit``, ``after_merge_commit``,
``before_hook`` (before every hook) or ``before_hook:<i>`` (before hook number i, from 0).
Actions: ``kill`` (SIGKILL this process), ``raise`` (a RuntimeError) and ``sleep:<seconds>``.
Several may be given, separated by commas. Unset (the normal case), every call is a no-op.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = (
    "before_resolve",
    "after_resolve",
    "after_staging_created",
    "after_rows",
    "before_merge_commit",
    "after_merge_commit",
    "before_hook",
)


class FailpointError(RuntimeError):
    """Raised by a ``raise`` fault point."""


def _parse() -> list[tuple[str, str | None, str]]:
    spec = os.environ.get("PIPEKIT_FAILPOINT", "").strip()
    out: list[tuple[str, str | None, str]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if parts[0] in ("after_rows", "before_hook") and len(parts) >= 3 and parts[1].isdigit():
            out.append((parts[0], parts[1], ":".join(parts[2:])))
        elif len(parts) >= 2:
            out.append((parts[0], None, ":".join(parts[1:])))
    return out


def _act(point: str, action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover
    if action == "raise":
        raise FailpointError(f"failpoint {point} raised (PIPEKIT_FAILPOINT)")
    if action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))


def hit(point: str, arg: int | None = None) -> None:
    """Fire the action configured for ``point`` (with its argument, e.g. a hook index)."""
    if "PIPEKIT_FAILPOINT" not in os.environ:
        return
    for name, want, action in _parse():
        if name != point:
            continue
        if want is not None and (arg is None or int(want) != arg):
            continue
        _act(f"{point}:{want}" if want else point, action)


def rows_copied(n: int) -> None:
    """Called by transports as rows are copied: fires ``after_rows:<N>`` once n >= N."""
    if "PIPEKIT_FAILPOINT" not in os.environ:
        return
    for name, want, action in _parse():
        if name == "after_rows" and want is not None and n >= int(want):
            _act(f"after_rows:{want}", action)
