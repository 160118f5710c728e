"""Watermark values: canonical rendering, the refusal rules, and substitution into the query.

Values are text substituted into the source query (the user writes the quotes, as in the
original pipekit). Timestamps render as ISO-8601 in UTC, dates as YYYY-MM-DD, numbers plainly,
booleans true/false. A value containing a quote, ``;``, ``--``, ``/*``, a backslash or a line
break is refused: it is never spliced into SQL.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pipekit_core.errors import WatermarkError
from pipekit_core.models import PLACEHOLDER_RE

FORBIDDEN = ("'", ";", "--", "/*", "\\", "\n", "\r", "\x00")


def render_value(value: object) -> str | None:
    """The canonical text of a resolved value; None for no value (NULL or empty)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise WatermarkError("a binary value cannot be a watermark")
    text = str(value)
    return text if text != "" else None


def check_value(module: str, name: str, value: str) -> str:
    """Return ``value`` if it is safe to substitute; raise WatermarkError otherwise."""
    bad = [f for f in FORBIDDEN if f in value]
    if bad:
        shown = ", ".join(repr(b) for b in bad)
        raise WatermarkError(
            f"module '{module}': watermark '{name}' value refused: it contains {shown}; watermark values "
            "are spliced into SQL as text, so quotes, ';', '--', '/*', backslashes and line breaks are not allowed"
        )
    return value


def substitute(sql: str, values: dict[str, str]) -> str:
    """Replace each ``{name}`` with its value (only names that are watermarks)."""
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), sql)
