"""Watermark values: canonical rendering, the refusal rules, and substitution into the query.

Values are text substituted into the source query (the user writes the quotes, as in the
original pipekit). Timestamps render as ISO-8601 in UTC, dates as YYYY-MM-DD, numbers plainly,
booleans true/false. A value containing a quote, ``;``, ``--``, ``/*``, a backslash or a line
break is refused: it is never spliced into SQL.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Token:
    """One piece of a query template: literal ``text``, or a placeholder ``name`` (``quoted``
    when it sits inside a '...' literal), or a ``stray`` lone brace. ``pos`` is its offset."""

    pos: int
    text: str = ""
    name: str | None = None
    quoted: bool = False
    stray: bool = False


def tokenize(sql: str) -> list[Token]:
    """The query template in pieces: ``{{``/``}}`` are literal braces, ``{name}`` a placeholder."""
    out: list[Token] = []
    buf: list[str] = []
    start = 0
    in_quote = False
    i, n = 0, len(sql)

    def flush(at: int) -> None:
        nonlocal start
        if buf:
            out.append(Token(start, "".join(buf)))
            buf.clear()
        start = at

    while i < n:
        c = sql[i]
        if c in "{}" and sql.startswith(c * 2, i):
            buf.append(c)
            i += 2
            continue
        if c == "{":
            m = PLACEHOLDER_RE.match(sql, i)
            flush(i)
            if m:
                out.append(Token(i, m.group(0), name=m.group(1), quoted=in_quote))
                i = m.end()
            else:
                out.append(Token(i, c, stray=True))
                i += 1
            start = i
            continue
        if c == "}":
            flush(i)
            out.append(Token(i, c, stray=True))
            i += 1
            start = i
            continue
        if c == "'":
            in_quote = not in_quote  # '' inside a literal toggles twice: still inside
        buf.append(c)
        i += 1
    flush(n)
    return out


def placeholders(sql: str) -> list[Token]:
    """The placeholder tokens of a query template, in order."""
    return [t for t in tokenize(sql) if t.name is not None]


_UNQUOTED_OK = re.compile(
    r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def _shape(value: str) -> str:
    shape = re.sub(r"[A-Za-z]", "a", re.sub(r"\d", "9", value))
    return shape if len(shape) <= 40 else shape[:40] + f"... ({len(value)} characters)"


def substitute(sql: str, values: dict[str, str], module: str = "") -> str:
    """The query with each watermark ``{name}`` replaced by its value and ``{{``/``}}`` by braces.

    A placeholder outside quotes takes only a number, date or timestamp literal."""
    parts: list[str] = []
    for t in tokenize(sql):
        if t.name is not None and t.name in values:
            value = values[t.name]
            if not t.quoted and not _UNQUOTED_OK.fullmatch(value):
                who = f"module '{module}': " if module else ""
                raise WatermarkError(
                    f"{who}watermark '{t.name}' value refused: {{{t.name}}} is not inside quotes, so it takes "
                    f"only a number, date or timestamp, and the value looks like {_shape(value)!r}; "
                    f"write '{{{t.name}}}' in the query to pass it as a string"
                )
            parts.append(value)
        else:
            parts.append(t.text)
    return "".join(parts)
