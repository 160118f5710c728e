"""Preparing a source query for wrapping: the one place a query's trailing parts are removed.

Every transport wraps the module's query in something (``COPY (...) TO STDOUT``, a zero-row
``SELECT * FROM (...) WHERE 1=0``, a ``LIMIT`` sample, jrunner's query file). A query may end in
``;``, ``; -- comment``, a ``-- comment`` on its last line or a ``/* block */``; a naive
``rstrip(';')`` leaves such a query broken once wrapped. :func:`prepare_for_wrapping` scans the
query the way SQL lexers do (string literals, ``E'...'`` escapes, ``$tag$`` dollar quotes,
``"quoted"``/``[bracketed]``/```backticked``` identifiers, nested block comments), removes what
follows the last meaningful token (comments, semicolons, whitespace) and refuses a text that holds
more than one statement. Callers still put a newline before their closing parenthesis.
"""

from __future__ import annotations

import re

from pipekit_core.errors import ConfigError

__all__ = ["prepare_for_wrapping", "wrap_lines"]

_DOLLAR_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _scan(sql: str) -> tuple[int, list[int]]:
    """(end of the last meaningful character, offsets of statement-separating semicolons)."""
    i, n = 0, len(sql)
    last_end = 0
    semis: list[int] = []
    while i < n:
        c = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        if c == "-" and nxt == "-":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise ConfigError("the source query has a /* comment that is never closed with */")
            i = j
            continue
        if c.isspace():
            i += 1
            continue
        if c == ";":
            semis.append(i)
            i += 1
            continue
        start = i
        if c == "'" or (c in "eE" and nxt == "'" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_"))):
            backslash = c in "eE"
            j = i + (2 if backslash else 1)
            while True:
                if j >= n:
                    raise ConfigError("the source query has a string literal that is never closed (a lone ')")
                if backslash and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif c in '"`[':
            close = {'"': '"', "`": "`", "[": "]"}[c]
            j = i + 1
            while True:
                k = sql.find(close, j)
                if k < 0:
                    if c == "[":  # an array subscript or a bare bracket: not an identifier quote
                        k = i
                        break
                    raise ConfigError(f"the source query has a quoted identifier that is never closed (a lone {c})")
                if close != "]" and k + 1 < n and sql[k + 1] == close:
                    j = k + 2
                    continue
                break
            i = k + 1
        elif c == "$" and (m := _DOLLAR_RE.match(sql, i)) and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            tag = m.group(0)
            k = sql.find(tag, m.end())
            if k < 0:
                raise ConfigError(f"the source query has a {tag} quoted string that is never closed")
            i = k + len(tag)
        else:
            i += 1
        last_end = i
        if semis and semis[-1] < start:
            raise ConfigError(
                "the source query holds more than one statement (a ';' before line "
                f"{sql.count(chr(10), 0, start) + 1}); a module's query must be one SELECT"
            )
    return last_end, semis


def prepare_for_wrapping(sql: str) -> str:
    """The query without trailing semicolons, comments and whitespace, ready to be wrapped.

    Semicolons, ``--`` and ``/*`` inside string literals, dollar quotes and quoted identifiers
    are left alone; comments inside the query are kept.

    Raises:
        ConfigError: the query is empty, holds more than one statement, or has an unclosed
            literal, quoted identifier or block comment.

    Example:
        >>> prepare_for_wrapping("SELECT ';' AS s; -- done\\n")
        "SELECT ';' AS s"
    """
    end, _ = _scan(sql)
    body = sql[:end].strip()
    if not body:
        raise ConfigError("the source query is empty (only comments, semicolons or whitespace)")
    return body


def wrap_lines(head: str, sql: str, tail: str) -> str:
    """``head`` + the prepared query + ``tail``, each on its own line, so nothing can swallow ``tail``."""
    return f"{head}\n{prepare_for_wrapping(sql)}\n{tail}"
