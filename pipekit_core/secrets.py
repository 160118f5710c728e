"""Secrets: ``$VAR`` resolution and the one redaction function.

``$VAR`` / ``${VAR}`` resolve from the process environment first, then from the secrets file
(``KEY=VALUE`` lines, read with python-dotenv). Every value resolved here is remembered, and
:func:`redact` masks it wherever it appears, along with the password forms pipekit itself
builds (``-scp``/``-dcp`` arguments, ``password=`` and ``user:pass@`` in URLs). Everything that
logs, raises or stores text passes it through :func:`redact`.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from pipekit_core.errors import SecretError

MASK = "***"
VAR_RE = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_known: set[str] = set()
_lock = threading.Lock()

_PATTERNS = [
    # jrunner password flags in a logged command line
    (re.compile(r"(-(?:s|d)cp\s+)(\S+)"), r"\1" + MASK),
    # password=... in JDBC / libpq key-value strings
    (re.compile(r"(?i)(password\s*=\s*)('[^']*'|[^\s;&]+)"), r"\1" + MASK),
    # scheme://user:password@host
    # scheme://user:password@host -- the password may hold / : @ ; so it runs to the last @
    (re.compile(r"(://[^/\s:@]*:)(\S*)(@)"), r"\1" + MASK + r"\3"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` masks it from now on."""
    if value and len(value) >= 3:
        with _lock:
            _known.add(value)


def redact(text: object) -> str:
    """Return ``text`` with every known secret value and password pattern masked."""
    s = text if isinstance(text, str) else str(text)
    if not s:
        return s
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in s:
            s = s.replace(value, MASK)
    for pat, repl in _PATTERNS:
        s = pat.sub(repl, s)
    return s


def is_reference(value: str | None) -> bool:
    return bool(value) and VAR_RE.match(value or "") is not None


class Secrets:
    """Resolves ``$VAR`` references; reads and writes the secrets file."""

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.env = os.environ if env is None else env
        self._file: dict[str, str] | None = None

    def file_values(self) -> dict[str, str]:
        if self._file is None:
            if self.path.exists():
                try:
                    raw = dotenv_values(self.path, interpolate=False)  # a value is taken as written
                except OSError as e:
                    raise SecretError(f"cannot read secrets file {self.path}: {e.strerror}") from None
                self._file = {k: v for k, v in raw.items() if v is not None}
                for v in self._file.values():
                    register_secret(v)
            else:
                self._file = {}
        return self._file

    def resolve(self, value: str | None, *, where: str) -> str | None:
        """Resolve a ``$VAR`` reference; other values are returned as they are.

        Args:
            value: the text from the definitions, e.g. ``$DW_PASSWORD``.
            where: what holds it, for the error message (e.g. ``connection 'warehouse' password``).
        Raises:
            SecretError: the variable is in neither the environment nor the secrets file.
        """
        if value is None:
            return None
        m = VAR_RE.match(value)
        if not m:
            return value
        name = m.group(1) or m.group(2)
        if name in self.env:
            resolved = self.env[name]
        elif name in self.file_values():
            resolved = self.file_values()[name]
        else:
            raise SecretError(
                f"{where}: ${name} is not set; export {name}=... or add it with "
                f"'pipekit secrets set {name}' (secrets file: {self.path})"
            )
        register_secret(resolved)
        return resolved

    def keys(self) -> list[str]:
        return sorted(self.file_values())

    def set(self, key: str, value: str) -> None:
        """Add or replace ``key`` in the secrets file, atomically.

        A new file is created with mode 0600; an existing file keeps its permissions.
        """
        if not KEY_RE.match(key):
            raise SecretError(f"secret name {key!r} must be letters, digits and underscores")
        if "\n" in value or "\r" in value:
            raise SecretError(f"secret {key}: the value must be one line")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        mode = 0o600
        if self.path.exists():
            mode = self.path.stat().st_mode & 0o7777
            lines = self.path.read_text().splitlines()
        quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        new_line = f"{key}={quoted}"
        out, replaced = [], False
        for line in lines:
            stripped = line.strip()
            if stripped.startswith(f"{key}=") or stripped.startswith(f"export {key}="):
                if not replaced:
                    out.append(new_line)
                    replaced = True
                continue
            out.append(line)
        if not replaced:
            out.append(new_line)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".secrets.")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(out) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        register_secret(value)
        self._file = None
