"""The jrunner transport: the original pipekit's Java JDBC command line, run safely.

- Resolvers and probes run in query mode (``-scu -scn -scp -sq FILE``): CSV with a header on
  stdout; the first field of the first data row is the value ("" or no row = no value).
- Staging runs in migration mode (``... -dcu -dcn -dcp -dt STAGING``), with ``-b`` when the
  destination is PostgreSQL or SQL Server. jrunner loads by position, so the engine creates the
  staging table with the query's columns in the query's order.
- The process is started from an argument list (no shell), in its own process group, with a
  parent-death signal so it cannot outlive a killed pipekit; its process group id is also
  written to a file so the next run ends a survivor before starting. stdout and stderr are
  read line by line as they come; carriage-return progress ticks become progress events.
- Cancel / timeout: SIGTERM to the whole group, SIGKILL after a grace period.
- A non-zero exit, or an exception trace on stderr, raises :class:`JrunnerError` with the exit
  code, the last output lines and the command with passwords masked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pipekit_core.db import Endpoint, NativeDB
from pipekit_core.errors import JrunnerError, RunCancelled, TransportError
from pipekit_core.secrets import redact, register_secret
from pipekit_core.sql.dialects import get_dialect
from pipekit_core.transport.base import ProgressFn, SourceColumn, StageRequest, Transport

GRACE_SECONDS = 5.0
BULK_KINDS = frozenset({"postgresql", "sqlserver"})
TRACE_RE = re.compile(r"(^Exception in thread )|(^\s+at [\w$.<>]+\()|(^[\w$.]+(Exception|Error)(: |$))")
ROWS_RE = re.compile(r"(\d[\d,]*)")
PR_SET_PDEATHSIG = 1


def jdbc_url(ep: Endpoint) -> str:
    """The connection's JDBC URL (postgresql://... becomes jdbc:postgresql://host:port/db)."""
    url = ep.conn.url.strip()
    if url.lower().startswith("jdbc:"):
        return url
    if ep.kind == "postgresql":
        p = ep.pg_params()
        return f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}"
    return "jdbc:" + url


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux: the pgid file covers it
        pass


def mask_command(args: list[str]) -> str:
    """The command line as text with every password argument masked."""
    shown: list[str] = []
    hide_next = False
    for a in args:
        shown.append("***" if hide_next else a)
        hide_next = a in ("-scp", "-dcp")
    return redact(" ".join(shown))


class JrunnerProcess:
    """One jrunner invocation, streamed and stoppable (after dagster-dbt's DbtCliInvocation)."""

    def __init__(
        self,
        args: list[str],
        *,
        log: Callable[[str], None],
        on_tick: Callable[[str], None] | None = None,
        pgid_file: Path | None = None,
    ) -> None:
        self.args = args
        self.command = mask_command(args)
        self.log = log
        self.on_tick = on_tick
        self.pgid_file = pgid_file
        self.stdout_lines: list[str] = []
        self.tail: deque[str] = deque(maxlen=40)
        self.trace_seen = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped_reason: str | None = None

    def start(self) -> None:
        env = dict(os.environ)
        self.proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            env=env,
        )
        if self.pgid_file is not None:
            with contextlib.suppress(OSError):
                self.pgid_file.parent.mkdir(parents=True, exist_ok=True)
                self.pgid_file.write_text(str(self.proc.pid))

    def _read(self, stream: io.BufferedReader, is_err: bool, keep: bool) -> None:
        buf = b""
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                idx_n, idx_r = buf.find(b"\n"), buf.find(b"\r")
                cands = [i for i in (idx_n, idx_r) if i >= 0]
                if not cands:
                    break
                i = min(cands)
                piece, sep = buf[:i], buf[i : i + 1]
                buf = buf[i + 1 :]
                if sep == b"\r" and buf[:1] == b"\n":  # \r\n is a plain line end
                    buf = buf[1:]
                    sep = b"\n"
                self._piece(piece.decode("utf-8", "replace"), sep == b"\r", is_err, keep)
        if buf:
            self._piece(buf.decode("utf-8", "replace"), False, is_err, keep)

    def _piece(self, text: str, is_tick: bool, is_err: bool, keep: bool) -> None:
        if is_tick:
            if text.strip() and self.on_tick is not None:
                self.on_tick(redact(text.strip()))
            return
        if is_err and TRACE_RE.search(text):
            self.trace_seen = True
        if keep and not is_err:
            self.stdout_lines.append(text)
            return
        line = redact(text)
        self.tail.append(line)
        if line.strip():
            self.log(("jrunner stderr: " if is_err else "jrunner: ") + line)

    def stop(self, reason: str) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period."""
        self._stopped_reason = reason
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def run(self, *, keep_stdout: bool = False, cancel_register: Callable | None = None, cancel_unregister: Callable | None = None) -> int:
        """Start, stream until exit, raise on failure. Returns the exit code (0)."""
        self.start()
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        token = cancel_register(lambda: self.stop("cancelled")) if cancel_register else None
        readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, False, keep_stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, True, False), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            while self.proc.poll() is None:
                time.sleep(0.05)
            for t in readers:
                t.join(timeout=10)
        except BaseException:
            self.stop("interrupted")
            raise
        finally:
            if token is not None and cancel_unregister is not None:
                cancel_unregister(token)
            if self.proc.poll() is None:
                self.stop("cleanup")
            # Whatever else the group started must not survive us either.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.pgid_file is not None:
                with contextlib.suppress(OSError):
                    self.pgid_file.unlink()
        code = self.proc.returncode
        if self._stopped_reason == "cancelled":
            raise RunCancelled(f"jrunner stopped ({self.command})")
        if code != 0:
            raise JrunnerError("jrunner failed", exit_code=code, command=self.command, last_lines=list(self.tail))
        if self.trace_seen:
            raise JrunnerError(
                "jrunner printed an exception trace", exit_code=code, command=self.command, last_lines=list(self.tail)
            )
        return code


def end_survivor(pgid_file: Path, log: Callable[[str], None]) -> None:
    """Kill a jrunner process group left by a pipekit process that was killed outright."""
    try:
        pgid = int(pgid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
        log(f"ended jrunner process group {pgid} left by an earlier run")
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(OSError):
        pgid_file.unlink()


class JrunnerTransport(Transport):
    """Rows move through jrunner; the engine keeps destination SQL on the native driver."""

    name = "jrunner"

    def _exe(self) -> str:
        if not self.ctx.jrunner:
            raise TransportError("jrunner was not found; set PIPEKIT_JRUNNER or 'jrunner' in pipekit.yaml")
        return self.ctx.jrunner

    def _source_args(self, ep: Endpoint) -> list[str]:
        if ep.kind == "sqlite":
            raise TransportError(f"connection '{ep.name}': jrunner has no SQLite driver; use the native transport")
        register_secret(ep.password)
        return ["-scu", jdbc_url(ep), "-scn", ep.user or "", "-scp", ep.password or ""]

    def _run(self, args: list[str], sql: str, *, keep_stdout: bool, on_tick: Callable[[str], None] | None = None, pgid_file: Path | None = None) -> JrunnerProcess:
        fd, path = tempfile.mkstemp(prefix="pipekit-", suffix=".sql")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(sql)
            proc = JrunnerProcess([self._exe(), *args, "-sq", path], log=self.ctx.log, on_tick=on_tick, pgid_file=pgid_file)
            proc.run(keep_stdout=keep_stdout, cancel_register=self.ctx.cancel.register, cancel_unregister=self.ctx.cancel.unregister)
            return proc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _query(self, ep: Endpoint, sql: str) -> list[list[str]]:
        proc = self._run(self._source_args(ep), sql, keep_stdout=True)
        text = "\n".join(proc.stdout_lines)
        return list(csv.reader(io.StringIO(text)))

    def query_value(self, ep: Endpoint, sql: str) -> object | None:
        rows = self._query(ep, sql)
        if len(rows) < 2 or not rows[1]:
            return None
        value = rows[1][0]
        return value if value != "" else None

    def describe(self, ep: Endpoint, sql: str) -> list[SourceColumn]:
        try:
            wrapped = get_dialect(ep.kind).zero_row_wrap(sql)
        except ValueError:
            wrapped = f"SELECT * FROM (\n{sql.strip().rstrip(';')}\n) q WHERE 1=0"
        rows = self._query(ep, wrapped)
        if not rows:
            raise TransportError(f"connection '{ep.name}': jrunner returned no header for the source query")
        return [SourceColumn(name, "text") for name in rows[0]]

    def stage(self, req: StageRequest, dest: NativeDB, progress: ProgressFn) -> int | None:
        d = dest.dialect
        args = self._source_args(req.source)
        register_secret(req.dest.password)
        args += ["-dcu", jdbc_url(req.dest), "-dcn", req.dest.user or "", "-dcp", req.dest.password or ""]
        args += ["-dt", d.table(req.staging)]
        if req.dest.kind in BULK_KINDS:
            args.append("-b")
        pgid_file = self._pgid_file(req.module)
        if pgid_file is not None:
            end_survivor(pgid_file, self.ctx.log)

        def tick(text: str) -> None:
            m = ROWS_RE.findall(text)
            if m:
                progress(int(m[-1].replace(",", "")))

        self._run(args, req.sql, keep_stdout=False, on_tick=tick, pgid_file=pgid_file)
        return None  # rows come from the staging table, not from jrunner's words

    def _pgid_file(self, module: str) -> Path | None:
        return None if self.ctx.state_dir is None else self.ctx.state_dir / f"jrunner-{module}.pgid"
