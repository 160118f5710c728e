"""Watermark resolution: each watermark's value for one run, and where it came from.

In order of precedence: an override (``--watermark``, Dagster's ``watermark_overrides``); the
default on a full refresh of an incremental module; else the resolver's answer (its default
when it returns no row or NULL). On a first run a resolver still runs: when it fails because
what it reads does not exist yet (the destination table this run creates), its default applies
and the log says why. A control table that exists gives its real value.
"""

from __future__ import annotations

from collections.abc import Callable

from pipekit_core.errors import WatermarkError
from pipekit_core.models import Module
from pipekit_core.plan import WatermarkValue
from pipekit_core.secrets import redact
from pipekit_core.watermarks import check_value, render_value

QueryValue = Callable[[str, str], object]  # (connection name, sql) -> the first column of the first row
Log = Callable[[str], None]


def resolve_watermarks(
    mod: Module,
    *,
    overrides: dict[str, str],
    full_refresh: bool,
    dest_exists: bool,
    query_value: QueryValue,
    log: Log,
) -> dict[str, WatermarkValue]:
    """Every watermark's value (checked: safe to substitute), or WatermarkError naming it."""
    unknown = sorted(set(overrides) - {w.name for w in mod.watermarks})
    if unknown:
        raise WatermarkError(f"module '{mod.name}': override for unknown watermark(s) {unknown}")
    values: dict[str, WatermarkValue] = {}
    for wm in mod.watermarks:
        wconn = wm.connection or mod.dest
        if wm.name in overrides:
            value = WatermarkValue(wm.name, str(overrides[wm.name]), "override")
        elif full_refresh and mod.strategy == "incremental":
            value = WatermarkValue(wm.name, wm.default, "full-refresh default")
        else:
            try:
                text = render_value(query_value(wconn, wm.sql))
            except Exception as e:
                if dest_exists or wconn != mod.dest or not missing_relation(e):
                    raise
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                log(f"watermark {wm.name}: first run ({mod.dest_table} does not exist yet) and its resolver "
                    f"failed with: {redact(first)}; using its default")
                if wm.default is None:
                    raise WatermarkError(
                        f"module '{mod.name}': watermark '{wm.name}': first run, its resolver cannot run yet "
                        f"({mod.dest_table} does not exist) and it has no default; add default: to the watermark"
                    ) from e
                value = WatermarkValue(wm.name, wm.default, "first-run default")
            else:
                value = (WatermarkValue(wm.name, wm.default, "default") if text is None
                         else WatermarkValue(wm.name, text, "resolved"))
        if value.value is None:
            raise WatermarkError(
                f"module '{mod.name}': watermark '{wm.name}' has no value (the resolver returned no row or NULL) "
                "and no default; add default: to the watermark"
            )
        check_value(mod.name, wm.name, value.value)
        values[wm.name] = value
        log(f"watermark {wm.name} = {value.value} ({value.source})")
    return values


def missing_relation(exc: BaseException) -> bool:
    """The error says a table (or the SQLite file) does not exist: what a first run's resolver meets."""
    code = getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    if code in ("42P01", "42704"):
        return True
    text = str(exc).lower()
    return "no such table" in text or "does not exist" in text or "sql0204" in text
