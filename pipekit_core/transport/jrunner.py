"""The jrunner transport: the original pipekit's Java JDBC command line, run safely.

- Resolvers and probes run in query mode (``-scu -scn -scp -f csv -sq FILE``): CSV with a
  header on stdout; the first field of the first data row is the value (an empty field or no
  row = no value, so the watermark's default applies).
- Staging runs in migration mode (``... -dcu -dcn -dcp -dt STAGING``). jrunner loads by
  position, so the engine creates the staging table with the query's columns in the query's
  order (destination names); the merge then maps staging to the destination by name.
- ``-b`` (bulk: COPY on PostgreSQL, bulk copy on SQL Server) is given when the destination is
  PostgreSQL or SQL Server. Two overrides, for tests and for destinations where COPY is not
  allowed: ``StageRequest.bulk`` (True/False) for one call, and the environment variable
  ``PIPEKIT_JRUNNER_BULK=auto|on|off`` for a whole process (``off`` = jrunner's INSERT path).
- The SQL goes to jrunner in a temporary file (``pipekit-*.sql``, mode 0600), removed in a
  ``finally`` block; a file left by a killed pipekit is removed by the module's next run.
- The process is started from an argument list (no shell), in its own session / process
  group, with a parent-death signal (SIGKILL) so it cannot outlive a pipekit killed outright.
  For tools that fork (a wrapper script starting ``java``), staging also records the group id
  and a random token (put in the child's environment) in ``<state_dir>/jrunner-<module>.json``;
  the module's next run kills processes of that group that carry the token, and nothing else.
- stdout and stderr are read as they come, line by line; carriage-return progress ticks
  (``\\rrows: 10000``) become progress events, not log lines. Every line is redacted.
- Cancel / timeout: SIGTERM to the whole group, SIGKILL after :data:`GRACE_SECONDS`.
- A non-zero exit, or an exception trace on stderr (even with exit 0), raises
  :class:`JrunnerError` with the exit code, the last output lines and the command with
  passwords masked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets as _secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, quote, urlencode

from pipekit_core.db import Endpoint, NativeDB, pg_session_options
from pipekit_core.errors import JrunnerError, RunCancelled, TransportError
from pipekit_core.failpoints import row_watch
from pipekit_core.secrets import redact, register_secret
from pipekit_core.sql.dialects import get_dialect
from pipekit_core.sql.query import prepare_for_wrapping
from pipekit_core.transport.base import CancelScope, ProgressFn, SourceColumn, StageRequest, Transport

GRACE_SECONDS = 5.0
BULK_KINDS = frozenset({"postgresql", "sqlserver"})
BULK_ENV = "PIPEKIT_JRUNNER_BULK"
TOKEN_ENV = "PIPEKIT_JRUNNER_TOKEN"
KEEP_LIMIT = 8 * 1024 * 1024  # query mode: bytes of stdout kept (header + first row is all we use)
TRACE_RE = re.compile(r"(^Exception in thread )|(^\s+at [\w$.<>/]+\()|(^([\w$]+\.)+[\w$]*(Exception|Error)(: |$))|(^Caused by: )")
INT_RE = re.compile(r"\d[\d,]*")
PR_SET_PDEATHSIG = 1


def jdbc_url(ep: Endpoint) -> str:
    """The connection's JDBC URL (postgresql://... becomes jdbc:postgresql://host:port/db).

    A PostgreSQL URL gains pgjdbc's ``options=`` parameter with :data:`PG_SESSION_SETTINGS`
    (put before any ``options`` the user gave, so the user's own ``-c`` settings still win).
    """
    url = ep.conn.url.strip()
    if not url.lower().startswith("jdbc:"):
        if ep.kind != "postgresql":
            return "jdbc:" + url
        p = ep.pg_params()
        url = f"jdbc:postgresql://{p['host']}:{p['port']}/{p['dbname']}"
    if ep.kind != "postgresql":
        return url
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    user_opts = " ".join(v for k, v in pairs if k == "options")
    rest = [(k, v) for k, v in pairs if k != "options"]
    opts = (pg_session_options() + " " + user_opts).strip()
    return base + "?" + urlencode([*rest, ("options", opts)], quote_via=quote)


def bulk_setting(env: Mapping[str, str] | None = None) -> bool | None:
    """``PIPEKIT_JRUNNER_BULK``: True (on), False (off) or None (auto / unset)."""
    raw = (os.environ if env is None else env).get(BULK_ENV, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise TransportError(f"{BULK_ENV}={raw!r} is not understood; use auto, on or off")


def mask_command(args: list[str]) -> str:
    """The command line as text with every password argument masked."""
    shown: list[str] = []
    hide_next = False
    for a in args:
        shown.append("***" if hide_next else a)
        hide_next = a in ("-scp", "-dcp")
    return redact(" ".join(shown))


_prctl: Callable[..., int] | None = None
_prctl_looked_up = False


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGKILL when this process dies (Linux).

    libc's ``prctl`` is looked up here, in the parent: nothing may be imported between fork
    and exec in a process with threads.
    """
    global _prctl, _prctl_looked_up
    if not sys.platform.startswith("linux"):
        return None
    if not _prctl_looked_up:
        _prctl_looked_up = True
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # no libc prctl: the survivor file still covers it
            _prctl = None
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


# -- survivors of a pipekit killed outright ------------------------------------------------------


def _proc_pgid_and_environ(pid: int) -> tuple[int, bytes] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pgid = int(stat.rsplit(")", 1)[1].split()[2])
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pgid, environ


def kill_tagged_group(pgid: int, token: str) -> list[int]:
    """SIGKILL every process of group ``pgid`` whose environment carries our ``token``.

    The token makes a reused process-group id harmless: only processes we started match.
    Returns the pids signalled (Linux /proc; elsewhere nothing is done).
    """
    marker = f"{TOKEN_ENV}={token}".encode()
    killed: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return killed
    for entry in entries:
        if not entry.isdigit():
            continue
        info = _proc_pgid_and_environ(int(entry))
        if info is None or info[0] != pgid or marker not in info[1].split(b"\0"):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
    return killed


def end_survivor(state_file: Path, log: Callable[[str], None]) -> None:
    """Clean up after a pipekit process killed during a jrunner load of this module."""
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    try:
        killed = kill_tagged_group(int(data["pgid"]), str(data["token"]))
        if killed:
            log(f"ended jrunner process(es) {killed} left by an earlier run that was killed")
        sql_file = data.get("sql_file")
        if sql_file and Path(sql_file).name.startswith("pipekit-"):
            with contextlib.suppress(OSError):
                os.unlink(sql_file)
    except (KeyError, TypeError, ValueError):
        pass
    with contextlib.suppress(OSError):
        state_file.unlink()


# -- one invocation ------------------------------------------------------------------------------


class JrunnerProcess:
    """One jrunner invocation, streamed and stoppable."""

    def __init__(
        self,
        args: list[str],
        *,
        log: Callable[[str], None],
        on_tick: Callable[[str], None] | None = None,
        keep_stdout: bool = False,
        state_file: Path | None = None,
        sql_file: str | None = None,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.args = args
        self.command = mask_command(args)
        self.log = log
        self.on_tick = on_tick
        self.on_poll = on_poll  # called on the waiting thread (the after_rows fault point)
        self.keep_stdout = keep_stdout
        self.state_file = state_file
        self.sql_file = sql_file
        self.stdout = bytearray()  # query mode only
        self.stdout_truncated = False
        self.tail: deque[str] = deque(maxlen=40)
        self.trace_seen = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped_reason: str | None = None
        self._stop_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        token = _secrets.token_hex(12)
        env = dict(os.environ)
        env[TOKEN_ENV] = token
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own session and process group (pgid == pid)
                preexec_fn=_parent_death_hook(),  # noqa: PLW1509 - only calls prctl
                env=env,
                close_fds=True,
            )
        except OSError as e:
            raise TransportError(f"cannot start jrunner ({self.args[0]}): {e.strerror or e}") from None
        if self.state_file is not None:
            with contextlib.suppress(OSError):
                self.state_file.parent.mkdir(parents=True, exist_ok=True)
                self.state_file.write_text(
                    json.dumps({"pgid": self.proc.pid, "token": token, "sql_file": self.sql_file})
                )

    # -- output ------------------------------------------------------------------------------
    def _read(self, stream: IO[bytes], is_err: bool) -> None:
        read = getattr(stream, "read1", stream.read)
        if self.keep_stdout and not is_err:
            while chunk := read(65536):
                room = KEEP_LIMIT - len(self.stdout)
                if room > 0:
                    self.stdout += chunk[:room]
                if len(chunk) > room:
                    self.stdout_truncated = True
            return
        buf = b""
        after_cr = False  # the text now in buf follows a carriage return: a progress tick
        shown: str | None = None  # a tick reported before its terminator arrived
        while True:
            chunk = read(65536)
            eof = not chunk
            buf += chunk
            while True:
                i_n, i_r = buf.find(b"\n"), buf.find(b"\r")
                cands = [i for i in (i_n, i_r) if i >= 0]
                if not cands:
                    break
                i = min(cands)
                if i == i_r and i == len(buf) - 1 and not eof:
                    break  # a lone \r at the end: wait, it may be half of \r\n
                piece, sep = buf[:i], buf[i : i + 1]
                buf = buf[i + 1 :]
                if sep == b"\r" and buf[:1] == b"\n":  # \r\n is a plain line end
                    buf = buf[1:]
                    sep = b"\n"
                text = piece.decode("utf-8", "replace")
                is_tick = after_cr or sep == b"\r"
                if not (is_tick and shown is not None and text.strip() == shown):
                    self._piece(text, is_tick, is_err)
                shown = None
                after_cr = sep == b"\r"
            if eof:
                break
            if after_cr and buf:  # a tick flushed without a terminator: report it now
                text = buf.rstrip(b"\r").decode("utf-8", "replace").strip()
                if text and text != shown:
                    self._piece(text, True, is_err)
                    shown = text
        if buf:
            text = buf.decode("utf-8", "replace")
            if not (after_cr and text.strip() == shown):
                self._piece(text, after_cr, is_err)

    def _piece(self, text: str, is_tick: bool, is_err: bool) -> None:
        if is_tick:
            if text.strip() and self.on_tick is not None:
                self.on_tick(redact(text.strip()))
            return
        if is_err and TRACE_RE.search(text):
            self.trace_seen = True
        line = redact(text)
        self.tail.append(line)
        if line.strip():
            self.log(("jrunner stderr: " if is_err else "jrunner: ") + line)

    # -- lifetime ----------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period."""
        with self._stop_lock:
            if self._stopped_reason is None:
                self._stopped_reason = reason
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._kill_group()
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=GRACE_SECONDS)
        self._kill_group()

    def _kill_group(self) -> None:
        """SIGKILL whatever is left in the group (a wrapper's java child, say)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def run(self, cancel: CancelScope | None = None) -> int:
        """Start, stream until exit, raise on failure. Returns the exit code (0)."""
        self.start()
        proc = self.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        token = cancel.register(lambda: self.stop("cancelled")) if cancel is not None else None
        readers = [
            threading.Thread(target=self._read, args=(proc.stdout, False), name="jrunner-stdout", daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, True), name="jrunner-stderr", daemon=True),
        ]
        try:
            for t in readers:
                t.start()
            if cancel is not None and cancel.cancelled:  # cancelled before we registered
                self.stop("cancelled")
            while True:
                if self.on_poll is not None:
                    self.on_poll()
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    continue
            for t in readers:
                t.join(timeout=10)
            if self.on_poll is not None:
                self.on_poll()
        except BaseException:
            self.stop("interrupted")
            raise
        finally:
            if token is not None and cancel is not None:
                cancel.unregister(token)
            if proc.poll() is None:
                self.stop("cleanup")
            self._kill_group()
            for s in (proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    s.close()
            if self.state_file is not None:
                with contextlib.suppress(OSError):
                    self.state_file.unlink()
        code = proc.returncode
        if self._stopped_reason == "cancelled" or (cancel is not None and cancel.cancelled):
            reason = (cancel.reason if cancel is not None else None) or "cancelled"
            raise RunCancelled(f"jrunner stopped: {reason}")
        if code != 0:
            raise JrunnerError("jrunner failed", exit_code=code, command=self.command, last_lines=list(self.tail))
        if self.trace_seen:
            raise JrunnerError(
                "jrunner printed an exception trace", exit_code=code, command=self.command, last_lines=list(self.tail)
            )
        return code


# -- the transport ---------------------------------------------------------------------------------


class JrunnerTransport(Transport):
    """Rows move through jrunner; the engine keeps destination SQL on the native driver."""

    name = "jrunner"

    def _exe(self) -> str:
        if not self.ctx.jrunner:
            raise TransportError("jrunner was not found; set PIPEKIT_JRUNNER or 'jrunner' in pipekit.yaml")
        return self.ctx.jrunner

    @staticmethod
    def _conn_args(ep: Endpoint, role: str) -> list[str]:
        if ep.kind == "sqlite":
            raise TransportError(
                f"connection '{ep.name}': SQLite connections always use the native transport, not jrunner"
            )
        register_secret(ep.password)
        p = "-s" if role == "source" else "-d"
        return [f"{p}cu", jdbc_url(ep), f"{p}cn", ep.user or "", f"{p}cp", ep.password or ""]

    def _run(
        self,
        args: list[str],
        sql: str,
        *,
        keep_stdout: bool,
        on_tick: Callable[[str], None] | None = None,
        state_file: Path | None = None,
        on_poll: Callable[[], None] | None = None,
    ) -> JrunnerProcess:
        exe = self._exe()
        fd, path = tempfile.mkstemp(prefix="pipekit-", suffix=".sql")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(sql)
            proc = JrunnerProcess(
                [exe, *args, "-sq", path],
                log=self.ctx.log,
                on_tick=on_tick,
                keep_stdout=keep_stdout,
                state_file=state_file,
                sql_file=path,
                on_poll=on_poll,
            )
            proc.run(self.ctx.cancel)
            return proc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def query_rows(self, ep: Endpoint, sql: str, limit: int = 1) -> list[list[str]]:
        """Header plus up to ``limit`` data rows of ``sql`` run in query mode."""
        proc = self._run([*self._conn_args(ep, "source"), "-f", "csv"], sql, keep_stdout=True)
        text = proc.stdout.decode("utf-8", "replace")
        rows: list[list[str]] = []
        for rec in csv.reader(io.StringIO(text, newline="")):
            rows.append(rec)
            if len(rows) > limit:
                break
        return rows

    def query_value(self, ep: Endpoint, sql: str) -> object | None:
        rows = self.query_rows(ep, sql)
        if len(rows) < 2 or not rows[1]:
            return None
        value = rows[1][0]
        return value if value != "" else None

    def describe(self, ep: Endpoint, sql: str) -> list[SourceColumn]:
        body = prepare_for_wrapping(sql)
        try:
            wrapped = get_dialect(ep.kind).zero_row_wrap(body)
        except ValueError:  # a source kind without a pipekit dialect
            wrapped = f"SELECT * FROM (\n{body}\n) q WHERE 1=0"
        rows = self.query_rows(ep, wrapped, limit=0)
        if not rows or not rows[0]:
            raise TransportError(f"connection '{ep.name}': jrunner returned no header for the source query")
        return [SourceColumn(name, "text") for name in rows[0]]

    @staticmethod
    def use_bulk(req: StageRequest) -> bool:
        """Whether staging passes ``-b``: the request's choice, else PIPEKIT_JRUNNER_BULK, else the dest kind."""
        if req.bulk is not None:
            return req.bulk
        setting = bulk_setting()
        if setting is not None:
            return setting
        return req.dest.kind in BULK_KINDS

    def stage(self, req: StageRequest, dest: NativeDB, progress: ProgressFn) -> int | None:
        args = [*self._conn_args(req.source, "source"), *self._conn_args(req.dest, "dest")]
        args += ["-dt", dest.dialect.table(req.staging)]
        if self.use_bulk(req):
            args.append("-b")
        state_file = self._state_file(req.module)
        if state_file is not None:
            end_survivor(state_file, self.ctx.log)
        self.ctx.log(f"jrunner command: {mask_command([self._exe(), *args, '-sq', '<sql file>'])}")

        watch = row_watch()  # after_rows fault point: noted by the reader, fired on the waiting thread

        def tick(text: str) -> None:
            m = INT_RE.search(text)
            if m:
                rows = int(m.group(0).replace(",", ""))
                watch.note(rows)
                progress(rows)

        poll = watch.fire_pending if watch.next_at is not None else None
        # jrunner runs the file's text as one statement: no trailing ';' or comment to trip it.
        sql = prepare_for_wrapping(req.sql) + "\n"
        self._run(args, sql, keep_stdout=False, on_tick=tick, state_file=state_file, on_poll=poll)
        return None  # rows come from the staging table, not from jrunner's words

    def _state_file(self, module: str) -> Path | None:
        return None if self.ctx.state_dir is None else self.ctx.state_dir / f"jrunner-{module}.json"
