"""Shared pieces of the reliability suite: a module on real databases, the CLI in a subprocess.

A :class:`Scenario` is one module ``m`` (incremental, a watermark resolved on the destination,
a success hook) copying ``t`` from a PostgreSQL source into ``m`` on a PostgreSQL or SQLite
destination, through the native transport or the jrunner stand-in. It knows the destination's
rows before and after a successful run, so a test can say "row for row as before" exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipekit_core.repo import Repository
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import PIPEKIT, REPO, env_for, pg_exec, pg_rows, sqlite_exec, sqlite_rows, write_defs

STANDIN = str(REPO / "tests" / "jrunner_standin" / "jrunner")
# Source rows per transport, and where after_rows:<N> fires: jrunner's stand-in reports progress
# every 10,000 rows, so its copy must be longer. Either way most rows are still to come.
SOURCE_ROWS = {"native": 3_000, "jrunner": 25_000}
MID_COPY = {"native": 1_000, "jrunner": 10_000}
BEFORE = sorted([(1, "old", 1), (2, "old", 1), (100_000, "keep", 1)])


def after_rows(n: int) -> list[tuple]:
    """Module m's table after a successful run over a source of ``n`` rows."""
    return sorted([(i, "new", 2) for i in range(1, n + 1)] + [(100_000, "keep", 1)])


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dest:
    """The destination database: a PostgreSQL URL or a SQLite file."""

    kind: str
    url: str | None = None
    path: Path | None = None

    @property
    def jdbc(self) -> str:
        return jdbc_url(self.url) if self.kind == "postgresql" else f"jdbc:sqlite:{self.path}"

    def exec(self, *stmts: str) -> None:
        if self.kind == "postgresql":
            pg_exec(self.url, *stmts)  # type: ignore[arg-type]
        else:
            sqlite_exec(self.path, *stmts)  # type: ignore[arg-type]

    def rows(self, sql: str) -> list[tuple]:
        if self.kind == "postgresql":
            return pg_rows(self.url, sql)  # type: ignore[arg-type]
        return sqlite_rows(self.path, sql)  # type: ignore[arg-type]

    def table(self, name: str = "m") -> list[tuple]:
        return sorted(self.rows(f"SELECT id, v, ver FROM {name}"))

    def staging_exists(self, module: str = "m") -> bool:
        if self.kind == "postgresql":
            return self.rows(f"SELECT to_regclass('pipekit_staging.{module}') IS NOT NULL") == [(True,)]
        return self.rows(f"SELECT count(*) FROM sqlite_master WHERE name = 'pipekit_staging__{module}'") == [(1,)]

    def any_staging(self) -> list[str]:
        """Every staging table left on the destination (not the fencing state table, which stays)."""
        if self.kind == "postgresql":
            return [r[0] for r in self.rows("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                            "WHERE n.nspname = 'pipekit_staging' AND relname NOT LIKE 'pipekit_state%'")]
        return [r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE name LIKE 'pipekit_staging%'")]


def pipekit_backends(url: str) -> list[tuple]:
    """(pid, application_name, state, query) of pipekit's and jrunner's sessions on ``url``'s database."""
    return pg_rows(
        url,
        "SELECT pid, application_name, state, left(query, 80) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND (application_name LIKE 'pipekit%%' OR application_name = 'jrunner')",
    )


def terminate_pipekit_backends(url: str) -> int:
    """pg_terminate_backend every pipekit session on ``url``'s database; how many."""
    return len(pg_rows(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name LIKE 'pipekit%%'",
    ))


def processes_in_group(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Scenario:
    """Module ``m`` (and friends) on real databases, with the CLI to run it."""

    tmp: Path
    src_url: str
    dest: Dest
    transport: str = "native"
    rows: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    repo_url: str | None = None  # a PostgreSQL repository (PIPEKIT_DB) instead of tmp/pipekit.db

    def use_pg_repository(self, url: str) -> None:
        """Keep pipekit's repository in PostgreSQL at ``url`` (its schema ``pipekit``)."""
        self.repo_url = url
        self.extra_env["PIPEKIT_DB"] = url

    @property
    def mid_copy(self) -> int:
        return MID_COPY[self.transport]

    @property
    def after(self) -> list[tuple]:
        return after_rows(self.rows)

    @classmethod
    def build(cls, tmp: Path, src_url: str, dest_kind: str = "postgresql", transport: str = "native", *,
              dst_url: str | None = None, rows: int | None = None, modules: str | None = None,
              src_jdbc: str | None = None, dst_jdbc: str | None = None) -> Scenario:
        """Source table t on ``src_url``; table m (and hook_log) on the destination: ``dst_url``
        (default: the source's database, another schema-less table) or a SQLite file."""
        dest = (Dest("postgresql", url=dst_url or src_url) if dest_kind == "postgresql"
                else Dest("sqlite", path=tmp / "dst.db"))
        rows = SOURCE_ROWS[transport] if rows is None else rows
        sc = cls(tmp, src_url, dest, transport, rows)
        if transport == "jrunner":
            sc.extra_env["PIPEKIT_JRUNNER"] = STANDIN
            sc.extra_env["JRUNNER_STANDIN_LOG"] = str(tmp / "jrunner.log")
        pg_exec(src_url, "CREATE TABLE t (id integer, v text, ver integer)",
                f"INSERT INTO t SELECT g, 'new', 2 FROM generate_series(1, {rows}) g")
        pk = "integer PRIMARY KEY" if dest_kind == "postgresql" else "INTEGER PRIMARY KEY"
        dest.exec(f"CREATE TABLE m (id {pk}, v text, ver integer)", "CREATE TABLE hook_log (module text)",
                  *(f"INSERT INTO m VALUES ({i}, '{v}', {ver})" for i, v, ver in BEFORE))
        sc.write_defs(modules if modules is not None else sc.module_yaml("m"), src_jdbc=src_jdbc, dst_jdbc=dst_jdbc)
        return sc

    def module_yaml(self, name: str, *, table: str = "m", extra: str = "", hook: bool = True) -> str:
        """One module item (under ``modules:``); ``extra``: more keys, written unindented."""
        lines = [
            f"  - name: {name}",
            "    source: src",
            "    dest: dst",
            f"    dest_table: {table}",
            f"    transport: {self.transport}",
            "    strategy: incremental",
            "    merge_key: [id]",
            "    query: SELECT id, v, ver FROM t WHERE ver > {since}",
            "    watermarks:",
            "      - name: since",
            f"        sql: SELECT max(ver) FROM {table}",
            "        default: '0'",
        ]
        if hook:
            lines += ["    hooks:", f"      - sql: INSERT INTO hook_log (module) VALUES ('{name}')", "        run_on: success"]
        if extra.strip():
            lines.append(textwrap.indent(textwrap.dedent(extra).strip("\n"), "    "))
        return "\n".join(lines) + "\n"

    def write_defs(self, modules: str, src_jdbc: str | None = None, dst_jdbc: str | None = None) -> None:
        head = textwrap.dedent(f"""
            connections:
              src:
                url: {src_jdbc or jdbc_url(self.src_url)}
                user: pipekit
                password: $PK_TEST_PW
              dst:
                url: {dst_jdbc or self.dest.jdbc}
                user: pipekit
                password: $PK_TEST_PW
            modules:
            """)
        write_defs(self.tmp / "defs", head + modules)

    # -- the CLI ----------------------------------------------------------------------------
    def env(self, failpoint: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "JRUNNER_STANDIN_"))}
        env.update(env_for(self.tmp, {"PK_TEST_PW": PG_PASSWORD, **self.extra_env, **extra}))
        if failpoint:
            env["PIPEKIT_FAILPOINT"] = failpoint
        return env

    def run(self, *args: str, failpoint: str | None = None, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        """``pipekit <args>`` to completion."""
        return subprocess.run([PIPEKIT, *args], cwd=self.tmp, env=self.env(failpoint, **extra),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str, failpoint: str | None = None, tag: str = "run", **extra: str) -> Proc:
        """``pipekit <args>`` in the background, in a new session (its own process group)."""
        out, err = self.tmp / f"{tag}.out", self.tmp / f"{tag}.err"
        with open(out, "w") as fo, open(err, "w") as fe:
            p = subprocess.Popen([PIPEKIT, *args], cwd=self.tmp, env=self.env(failpoint, **extra),
                                 stdout=fo, stderr=fe, text=True, start_new_session=True)
        return Proc(p, out, err)

    # -- the repository ---------------------------------------------------------------------
    @property
    def repo(self) -> Repository:
        return Repository(self.repo_url or self.tmp / "pipekit.db")

    def history(self, module: str = "m") -> list[dict]:
        """Runs of ``module``, oldest first."""
        return list(reversed(self.repo.history(module, 100)))

    def jrunner_calls(self) -> list[dict]:
        log = self.tmp / "jrunner.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@dataclass
class Proc:
    """A background ``pipekit`` process with its output files."""

    popen: subprocess.Popen[str]
    out_path: Path
    err_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_stderr(self, text: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None and text not in self.stderr:
                raise AssertionError(f"pipekit exited ({self.popen.returncode}) before printing {text!r}:\n"
                                     f"{self.stdout}\n{self.stderr}")
            return text in self.stderr
        wait_for(seen, timeout, f"{text!r} on stderr")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Last-resort cleanup of this process's group (it runs in its own session)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=10)
