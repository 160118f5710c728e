"""Time-window partitions: periods, partition keys, windows, and how a window is rendered.

A module's ``partitions:`` (``every: hour | day | week | month``, ``start``, optional ``end`` and
``timezone``, ``column``) splits time into periods in its timezone. A **window** is a half-open
range ``[start, end)`` of whole periods: one partition, or a range of them (a backfill is one run
over its whole window). Keys are the period's start written with :data:`FMT`, the same format
Dagster's partitions use, so ``pipekit run --partition 2024-01-05`` and Dagster's partition
``2024-01-05`` are the same window. Weeks start on Monday (ISO 8601).

``{window_start}`` / ``{window_end}`` render as timestamp watermarks do (ISO-8601 in UTC,
``2024-01-01 00:00:00+00:00``), or as the local calendar dates (``2024-01-01``) when the period
is a day or longer and the module's ``column`` is a date (:func:`window_values`).

Everything here is pure: no database, no Dagster.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipekit_core.errors import PipekitError
from pipekit_core.watermarks import render_value

__all__ = ["CRON", "EVERY", "FMT", "WINDOW_NAMES", "PartitionSpec", "Window", "WindowError", "is_date_type",
           "render_point", "spec_for", "window_values"]

EVERY = ("hour", "day", "week", "month")
#: The cron schedule whose ticks are the period boundaries (Dagster's TimeWindowPartitionsDefinition).
CRON = {"hour": "0 * * * *", "day": "0 0 * * *", "week": "0 0 * * 1", "month": "0 0 1 * *"}
#: The partition key format (Dagster's defaults for hourly / daily / weekly / monthly partitions).
FMT = {"hour": "%Y-%m-%d-%H:%M", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m-%d"}
#: The placeholders a partitioned module's query, keys query and hooks may use.
WINDOW_NAMES = ("window_start", "window_end")


class WindowError(PipekitError):
    """A window or partition key that the module's partitions do not have."""


@dataclass(frozen=True)
class Window:
    """``[start, end)``: whole periods of ``every``, as aware datetimes in the partitions' timezone."""

    start: dt.datetime
    end: dt.datetime
    every: str

    def __str__(self) -> str:
        return f"[{self.start.isoformat(sep=' ')}, {self.end.isoformat(sep=' ')})"


def is_date_type(type_name: str | None) -> bool:
    """True for a plain ``date`` column type (any dialect's spelling)."""
    return (type_name or "").strip().lower() == "date"


def window_values(window: Window, date_column: bool) -> dict[str, str]:
    """``{window_start}`` and ``{window_end}`` for ``window``: local dates when the period is a day
    or longer and ``date_column``, else UTC timestamps rendered as timestamp watermarks are."""
    if date_column and window.every != "hour":
        return {"window_start": window.start.date().isoformat(), "window_end": window.end.date().isoformat()}
    return {"window_start": render_value(window.start) or "", "window_end": render_value(window.end) or ""}


def render_point(t: dt.datetime, every: str, date_column: bool) -> str:
    """One period boundary rendered as :func:`window_values` renders a window's ends."""
    return window_values(Window(t, t, every), date_column)["window_start"]


def _parse_point(text: str, tz: ZoneInfo) -> dt.datetime:
    """'2024-01-01', '2024-01-01 06:00', '2024-01-01-06:00' (an hourly key) or with an offset."""
    t = text.strip()
    if len(t) == 16 and t[10] == "-" and t[13] == ":":  # the hourly key format
        t = t[:10] + " " + t[11:]
    value = dt.datetime.fromisoformat(t)
    if value.tzinfo is None:
        return value.replace(tzinfo=tz)
    return value.astimezone(tz)


@dataclass(frozen=True)
class PartitionSpec:
    """A module's partitions, resolved: the period, the timezone and the first / last boundaries."""

    module: str
    every: str
    timezone: str
    start: dt.datetime
    end: dt.datetime | None  # exclusive; None = up to the last complete period
    column: str

    @property
    def cron(self) -> str:
        return CRON[self.every]

    @property
    def fmt(self) -> str:
        return FMT[self.every]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def start_key(self) -> str:
        return self.key(self.start)

    @property
    def end_key(self) -> str | None:
        return None if self.end is None else self.key(self.end)

    # -- calendar arithmetic in the partitions' timezone --------------------------------------
    def floor(self, t: dt.datetime) -> dt.datetime:
        """The start of the period that contains ``t``."""
        local = t.astimezone(self.tz).replace(tzinfo=None)
        if self.every == "hour":
            base = local.replace(minute=0, second=0, microsecond=0)
        else:
            base = local.replace(hour=0, minute=0, second=0, microsecond=0)
            if self.every == "week":
                base -= dt.timedelta(days=base.weekday())
            elif self.every == "month":
                base = base.replace(day=1)
        return base.replace(tzinfo=self.tz)

    def next(self, t: dt.datetime) -> dt.datetime:
        """The start of the period after the one starting at ``t``."""
        if self.every == "hour":  # whole hours in UTC: a DST change neither skips nor repeats one
            return (t.astimezone(dt.timezone.utc) + dt.timedelta(hours=1)).astimezone(self.tz)
        local = t.astimezone(self.tz).replace(tzinfo=None)
        if self.every == "day":
            local += dt.timedelta(days=1)
        elif self.every == "week":
            local += dt.timedelta(days=7)
        else:
            local = local.replace(year=local.year + local.month // 12, month=local.month % 12 + 1)
        return local.replace(tzinfo=self.tz)

    def is_boundary(self, t: dt.datetime) -> bool:
        return self.floor(t) == t.astimezone(self.tz)

    def key(self, t: dt.datetime) -> str:
        """The partition key of the period starting at ``t``."""
        return t.astimezone(self.tz).strftime(self.fmt)

    # -- windows ------------------------------------------------------------------------------
    def _boundary(self, text: str, what: str) -> dt.datetime:
        try:
            t = _parse_point(text, self.tz)
        except ValueError:
            raise WindowError(
                f"module '{self.module}': {what} {text!r} is not a date or timestamp "
                f"(partition keys look like {self.key(self.start)!r})"
            ) from None
        if not self.is_boundary(t):
            raise WindowError(
                f"module '{self.module}': {what} {text!r} is not the start of a{'n' if self.every == 'hour' else ''} "
                f"{self.every} in {self.timezone} (the {self.every} containing it starts at {self.key(self.floor(t))})"
                + ("; weeks start on Monday" if self.every == "week" else "")
            )
        return t

    def _in_range(self, w: Window, what: str) -> Window:
        if w.start < self.start:
            raise WindowError(f"module '{self.module}': {what} starts before the partitions' start {self.start_key}")
        if self.end is not None and w.end > self.end:
            raise WindowError(f"module '{self.module}': {what} ends after the partitions' end {self.end_key}")
        return w

    def partition(self, key: str) -> Window:
        """The window of one partition key (``--partition``, a Dagster partition)."""
        start = self._boundary(key, "partition")
        return self._in_range(Window(start, self.next(start), self.every), f"partition {key}")

    def window(self, text: str) -> Window:
        """``A..B`` (half-open: B is excluded) in period boundaries, as ``--window`` takes it."""
        a, sep, b = text.partition("..")
        if not sep or not a.strip() or not b.strip():
            raise WindowError(f"module '{self.module}': window {text!r} is not START..END (e.g. 2024-01-01..2024-04-01)")
        start, end = self._boundary(a, "window start"), self._boundary(b, "window end")
        if end <= start:
            raise WindowError(f"module '{self.module}': window {text!r} is empty (the end must be after the start)")
        return self._in_range(Window(start, end, self.every), f"window {text}")

    def between(self, start: dt.datetime, end: dt.datetime) -> Window:
        """The window ``[start, end)`` given as datetimes (Dagster's partition time window)."""
        w = Window(start.astimezone(self.tz), end.astimezone(self.tz), self.every)
        for t, what in ((w.start, "window start"), (w.end, "window end")):
            if not self.is_boundary(t):
                raise WindowError(f"module '{self.module}': {what} {t.isoformat()} is not a {self.every} boundary in {self.timezone}")
        if w.end <= w.start:
            raise WindowError(f"module '{self.module}': window {w} is empty")
        return self._in_range(w, f"window {w}")

    def latest(self, now: dt.datetime | None = None) -> Window:
        """The last complete partition at ``now`` (what a run without a window, or a schedule, takes)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        end = self.floor(now)
        if self.end is not None and end > self.end:
            end = self.end
        if end <= self.start:
            raise WindowError(
                f"module '{self.module}': no complete partition yet (the first, {self.start_key}, ends at "
                f"{self.key(self.next(self.start))}); give --partition or --window"
            )
        prev = self.floor(end - dt.timedelta(microseconds=1))
        return Window(prev, end, self.every)

    def starts(self, w: Window) -> list[dt.datetime]:
        """The start of every partition a window covers, in order."""
        out, t = [], w.start
        while t < w.end:
            out.append(t)
            t = self.next(t)
        return out

    def keys(self, w: Window) -> list[str]:
        """The partition keys a window covers, in order."""
        return [self.key(t) for t in self.starts(w)]


def spec_for(module: object, default_timezone: str) -> PartitionSpec | None:
    """The module's :class:`PartitionSpec` (None when it has no ``partitions:``).

    ``module`` is a :class:`pipekit_core.models.Module`; ``default_timezone`` the ``timezone``
    setting (``Settings.local_timezone()``). Raises WindowError for an unknown timezone or a start /
    end that is not a period boundary (the loader reports these as definition problems).
    """
    p = getattr(module, "partitions", None)
    if p is None:
        return None
    name = getattr(module, "name", "?")
    tzname = p.timezone or default_timezone
    try:
        tz = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"module '{name}': partitions timezone {tzname!r} is not a known time zone "
                          "(use an IANA name such as UTC or Europe/Paris)") from None
    probe = PartitionSpec(name, p.every, tzname, dt.datetime(2000, 1, 3, tzinfo=tz), None, p.column)
    start = probe._boundary(p.start, "partitions start")
    end = probe._boundary(p.end, "partitions end") if p.end else None
    if end is not None and end <= start:
        raise WindowError(f"module '{name}': partitions end {p.end} is not after start {p.start}")
    return PartitionSpec(name, p.every, tzname, start, end, p.column)
