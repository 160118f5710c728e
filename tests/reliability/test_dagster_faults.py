"""Faults seen from Dagster: a killed run worker, a terminated run, Dagster and CLI runs racing.

- A ``dagster job execute`` whose process dies (SIGKILL, the ``kill`` fault point: the executor
  is in-process, so that process is the run worker) mid-stage or mid-merge on PostgreSQL, and a
  ``dagster dev`` run worker SIGKILLed mid-merge on SQLite: the destination is row for row as
  before, the next run (``pipekit run`` or ``dagster job execute``) takes the stale lock over
  and says so, the dead run is ``error`` in the run log, no staging table is left.
- Terminate from the webserver (GraphQL ``terminateRun``, what the UI's Terminate button sends)
  in every phase, held there by a sleep fault point: the run log says ``cancelled`` in that
  phase, the destination is untouched (as merged, for the hooks phase), the lock is free,
  staging is dropped, the run worker is gone. SIGTERM to a ``dagster job execute`` mid-stage
  does the same.
- Eight runs of one module at once, four ``pipekit run`` and four ``dagster job execute``:
  exactly one runs, the others fail at once naming the module and the holder (in the Dagster
  event log for the Dagster ones); with ``--wait`` the CLI runs queue behind the holder. The
  holder is held by a lock the test takes on the source table rather than by a sleep, so the
  overlap does not depend on how long Dagster takes to start.

Transient failures retried through Dagster's ``RetryPolicy`` and terminal ones not retried are
covered by tests/pipekit_dagster_tests: test_failures.py
(``test_transient_failures_are_retried_and_terminal_ones_are_not``) and test_postgres.py
(``test_transient_failure_mid_stage_is_retried_from_resolve``).

One ``dagster dev`` serves the whole module: each phase has its own code location (a small
file that sets PIPEKIT_FAILPOINT before building the definitions, so its run workers inherit
it) with its own module, so one server holds each phase's runs at a different point.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest
import requests

from pipekit_core.repo import Repository
from tests.dagster_graphql import TERMINATE, gql, launch_run, run_status
from tests.helpers import PIPEKIT
from tests.pipekit_dagster_tests.conftest import dagster_cmd
from tests.reliability._support import (
    BEFORE,
    Dest,
    Proc,
    Scenario,
    after_rows,
    alive,
    free_port,
    pipekit_backends,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.dagster]

DAGSTER = dagster_cmd("dagster")
HOLD_S = 60  # sleep fault points hold a run this long (it is cancelled or killed well before)
PHASE_AT = {"after_resolve": "resolve", "after_staging_created": "stage", "before_merge_commit": "merge",
            "before_hook": "hooks"}  # fault point -> the phase the run log names
RUN_ID = re.compile(r" - ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) - ")


def make_home(path: Path, extra: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + textwrap.dedent(extra))
    return path


def poll(cond: Callable[[], object], timeout: float, what: str, every: float = 0.25) -> object:
    """``wait_for`` at a gentler pace (each poll of the webserver is a GraphQL request)."""
    def slow() -> object:
        got = cond()
        if not got:
            time.sleep(every)
        return got
    return wait_for(slow, timeout, what)


def processes_with(text: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``text`` (a run id: the run worker's log tails)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(text in a for a in p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def start_job(sc: Scenario, home: Path, job: str, *, failpoint: str | None = None, tag: str = "dagster") -> Proc:
    """``dagster job execute -m pipekit_dagster.definitions -j <job>`` in the background, own session."""
    out, err = sc.tmp / f"{tag}.out", sc.tmp / f"{tag}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(
            [DAGSTER, "job", "execute", "-m", "pipekit_dagster.definitions", "-j", job],
            cwd=sc.tmp, env=sc.env(failpoint, DAGSTER_HOME=str(home)), stdout=fo, stderr=fe, text=True,
            start_new_session=True,
        )
    return Proc(p, out, err)


def dagster_run_id(p: Proc) -> str:
    """The Dagster run id of a ``dagster job execute`` (every event line names it)."""
    m = RUN_ID.search(p.stderr + p.stdout)
    assert m, f"no Dagster run id in the output of pid {p.pid}:\n{p.stderr[-3000:]}"
    return m.group(1)


def dagster_failures(home: Path, run_id: str) -> tuple[str, list[str]]:
    """(run status, step failure descriptions) from the Dagster instance in ``home``."""
    with dg.DagsterInstance.from_config(str(home)) as inst:
        run = inst.get_run_by_id(run_id)
        assert run is not None, run_id
        out = []
        for rec in inst.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
            data = rec.dagster_event.step_failure_data  # type: ignore[union-attr]
            out.append(data.user_failure_data.description if data.user_failure_data else data.error.message)
        return run.status.value, out


# ================================================================== 1. a killed Dagster run worker

@pytest.mark.postgres
@pytest.mark.parametrize(
    ("point", "next_by"),
    [("after_staging_created", "dagster"), ("after_staging_created", "cli"),
     ("before_merge_commit", "dagster"), ("before_merge_commit", "cli")],
)
def test_dagster_run_killed_mid_phase_then_next_run_recovers(point: str, next_by: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db)  # PostgreSQL -> PostgreSQL, native, 3,000 rows
    home = make_home(tmp_path / "dagster_home")
    killed = start_job(sc, home, "m_job", failpoint=f"{point}:kill", tag="killed")
    try:
        assert killed.wait(120) == -signal.SIGKILL, (killed.stdout, killed.stderr[-3000:])
    finally:
        killed.kill()
    assert f"pipekit failpoint: {point} -> kill" in killed.stderr
    dead_run = dagster_run_id(killed)
    # What the dead run worker left: the table as before, its lock, a 'running' run, staging.
    assert sc.dest.table() == BEFORE
    assert sc.dest.rows("SELECT count(*) FROM hook_log") == [(0,)]
    lock = sc.repo.get_lock("m")
    assert lock is not None and lock.owner.pid == killed.pid  # in-process executor: the CLI is the worker
    [row] = sc.history()
    assert (row["status"], row["phase"], row["dagster_run_id"]) == ("running", PHASE_AT[point], dead_run)
    assert sc.dest.staging_exists()
    # The database noticed its client die: no session (nor its open merge transaction) is left.
    wait_for(lambda: pipekit_backends(pg_db) == [], 10, "the dead run's database sessions to end")

    if next_by == "cli":
        nxt = sc.run("run", "m")
        out, ok = nxt.stdout + nxt.stderr, nxt.returncode == 0
    else:
        p = start_job(sc, home, "m_job", tag="next")
        ok = p.wait(120) == 0
        out = p.stdout + p.stderr
    assert ok, out[-3000:]
    assert f"took over a stale lock from pid {killed.pid}" in out
    assert sc.dest.table() == sc.after
    assert sc.dest.any_staging() == []
    assert sc.dest.rows("SELECT count(*) FROM hook_log") == [(1,)]
    runs = sc.history()
    assert [r["status"] for r in runs] == ["error", "success"]
    assert f"process {killed.pid}" in runs[0]["error"] and "gone" in runs[0]["error"]
    assert runs[0]["finished_at"] is not None
    assert runs[1]["trigger"] == ("cli" if next_by == "cli" else "dagster")
    assert sc.repo.locks() == []


@pytest.mark.postgres
def test_sigterm_to_dagster_job_execute_mid_stage_cancels_the_run(tmp_path: Path, pg_db: str) -> None:
    """SIGTERM (what a process supervisor sends) to the in-process run: Dagster turns it into an
    interrupt inside the op; pipekit records the run as cancelled and cleans up."""
    sc = Scenario.build(tmp_path, pg_db, "sqlite")
    home = make_home(tmp_path / "dagster_home")
    p = start_job(sc, home, "m_job", failpoint=f"after_staging_created:sleep:{HOLD_S}")
    try:
        p.wait_stderr(f"pipekit failpoint: after_staging_created -> sleep:{HOLD_S}", timeout=120)
        assert sc.dest.staging_exists()
        p.signal(signal.SIGTERM)
        code = p.wait(60)
    finally:
        p.kill()
    assert code == 1, (p.stdout, p.stderr[-3000:])
    status, _ = dagster_failures(home, dagster_run_id(p))
    assert status == "FAILURE"  # Dagster's word for an interrupted in-process run; pipekit's is below
    [row] = sc.history()
    assert (row["status"], row["phase"], row["trigger"]) == ("cancelled", "stage", "dagster"), row
    assert sc.dest.table() == BEFORE
    assert sc.dest.any_staging() == [] and sc.repo.locks() == []
    assert sc.dest.rows("SELECT count(*) FROM hook_log") == [(0,)]


# ================================================================== 2. the webserver: terminate, kill

HOLDS = list(PHASE_AT)  # one code location (and one module) per point
# Runs launched from the webserver are queued; the daemon starts them (1 s, not 5 s, apart here).
QUEUE = """
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""
SOURCE_ROWS = 3_000
KILL_MODULE = "k_merge"  # in the before_merge_commit location: its run worker is SIGKILLed

LOCATION = """\
# A code location whose run workers stop at a fault point (test harness, written by the test).
import os

os.environ["PIPEKIT_FAILPOINT"] = {failpoint!r}

import dagster as dg

from pipekit_dagster import PipekitResource, build_definitions

defs = build_definitions(PipekitResource(defs={defs!r}), sensor_status=dg.DefaultSensorStatus.STOPPED)
"""

MODULE = """\
  - name: {name}
    source: src
    dest: dst
    dest_table: {name}
    strategy: incremental
    merge_key: [id]
    query: SELECT id, v, ver FROM t WHERE ver > {{since}}
    watermarks:
      - {{name: since, sql: SELECT max(ver) FROM {name}, default: '0'}}
    hooks:
      - {{sql: "INSERT INTO hook_log (module) VALUES ('{name}')", run_on: success}}
"""

def module_name(point: str) -> str:
    return f"c_{point}"


@dataclass
class Server:
    """``dagster dev`` with one code location per held point, and pipekit's files beside it."""

    url: str
    root: Path
    log: Path
    dest: Dest

    @property
    def repo(self) -> Repository:
        return Repository(self.root / "pipekit.db")

    def gql(self, query: str, **variables: object) -> dict:
        return gql(self.url, query, **variables)

    def launch(self, location: str, job: str) -> str:
        return launch_run(self.url, {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": job})

    def status(self, run_id: str) -> str:
        return run_status(self.url, run_id)

    def wait_status(self, run_id: str, timeout: float = 60) -> str:
        """Wait for the run to end; its final status."""
        done = {"SUCCESS", "FAILURE", "CANCELED"}
        return str(poll(lambda: (s := self.status(run_id)) in done and s, timeout, f"Dagster run {run_id} to end"))

    def fired(self, point: str) -> int:
        """How many times the fault point's line reached the server's output."""
        return self.log.read_text(errors="replace").count(f"pipekit failpoint: {point} -> sleep:{HOLD_S}")

    def wait_held(self, module: str, point: str, seen_before: int, run_id: str) -> dict:
        """Wait for ``module``'s run to sleep at ``point``; its run log row."""
        def held() -> dict | None:
            status = self.status(run_id)
            assert status in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"), (status, self.tail())
            row = self.repo.last_run(module) if self.repo.path.exists() else None
            if row and row["status"] == "running" and self.fired(point) > seen_before:
                return row
            return None
        return poll(held, 120, f"{module} to be held at {point}")  # type: ignore[return-value]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _write_sqlite_setup(root: Path, modules: list[str]) -> Dest:
    src = root / "src.db"
    con = sqlite3.connect(src)
    with con:
        con.execute("CREATE TABLE t (id integer, v text, ver integer)")
        con.executemany("INSERT INTO t VALUES (?, 'new', 2)", [(i,) for i in range(1, SOURCE_ROWS + 1)])
    con.close()
    dest = Dest("sqlite", path=root / "dst.db")
    dest.exec("CREATE TABLE hook_log (module text)")
    for m in modules:
        dest.exec(f"CREATE TABLE {m} (id INTEGER PRIMARY KEY, v text, ver integer)",
                  *(f"INSERT INTO {m} VALUES ({i}, '{v}', {ver})" for i, v, ver in BEFORE))
    return dest


def _connections(root: Path) -> str:
    return textwrap.dedent(f"""\
        connections:
          src:
            url: jdbc:sqlite:{root / 'src.db'}
          dst:
            url: jdbc:sqlite:{root / 'dst.db'}
        modules:
        """)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dagster_faults")
    modules = {p: [module_name(p)] for p in HOLDS}
    modules["before_merge_commit"].append(KILL_MODULE)
    dest = _write_sqlite_setup(root, [m for ms in modules.values() for m in ms])
    workspace = ["load_from:"]
    for point, names in modules.items():
        defs = root / f"defs_{point}"
        defs.mkdir()
        (defs / "modules.yaml").write_text(_connections(root) + "".join(MODULE.format(name=n) for n in names))
        loc = root / f"loc_{point}.py"
        loc.write_text(LOCATION.format(failpoint=f"{point}:sleep:{HOLD_S}", defs=str(defs)))
        workspace += ["  - python_file:", f"      relative_path: {loc.name}", f"      location_name: hold_{point}",
                      f"      working_directory: {root}"]
    (root / "workspace.yaml").write_text("\n".join(workspace) + "\n")
    home = make_home(root / "dagster_home", QUEUE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
    env.update(DAGSTER_HOME=str(home), PIPEKIT_DB=str(root / "pipekit.db"), PIPEKIT_SECRETS=str(root / "secrets.env"))
    port = free_port()
    log = root / "dagster-dev.log"
    with open(log, "w") as fo:
        proc = subprocess.Popen(
            [DAGSTER, "dev", "-w", str(root / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            env=env, cwd=root, stdout=fo, stderr=subprocess.STDOUT, start_new_session=True,
        )
    srv = Server(f"http://127.0.0.1:{port}", root, log, dest)
    try:
        def ready() -> bool:
            assert proc.poll() is None, srv.tail()
            try:
                return requests.get(f"{srv.url}/server_info", timeout=2).ok and _locations_loaded(srv)
            except requests.RequestException:
                return False
        poll(ready, 180, "dagster dev to serve every code location", every=0.5)
        yield srv
    finally:
        # Its own session holds every process it started (webserver, daemon, code servers, run
        # workers and their log tails): no graceful shutdown is under test here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _locations_loaded(srv: Server) -> bool:
    entries = srv.gql(LOCATIONS)["workspaceOrError"]["locationEntries"]
    for e in entries:
        assert e["locationOrLoadError"] is None or e["locationOrLoadError"]["__typename"] != "PythonError", e
    return len(entries) == len(HOLDS) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


@pytest.mark.parametrize("point", HOLDS)
def test_terminate_from_the_webserver_in_each_phase(point: str, server: Server) -> None:
    module = module_name(point)
    seen = server.fired(point)
    run_id = server.launch(f"hold_{point}", f"{module}_job")
    row = server.wait_held(module, point, seen, run_id)
    worker = int(row["pid"])
    lock = server.repo.get_lock(module)
    assert lock is not None and lock.owner.pid == worker

    res = server.gql(TERMINATE, id=run_id)["terminateRun"]
    assert res["__typename"] == "TerminateRunSuccess", res
    assert server.wait_status(run_id) == "CANCELED", server.tail()

    last = server.repo.last_run(module)
    assert last is not None and last["id"] == row["id"]
    assert (last["status"], last["phase"], last["dagster_run_id"]) == ("cancelled", PHASE_AT[point], run_id), last
    committed = point == "before_hook"  # the merge had committed: the table is as merged
    assert server.dest.table(module) == (after_rows(SOURCE_ROWS) if committed else BEFORE)
    assert server.dest.rows(f"SELECT count(*) FROM hook_log WHERE module = '{module}'") == [(0,)]
    assert server.repo.get_lock(module) is None
    assert not server.dest.staging_exists(module)
    poll(lambda: not alive(worker) and not processes_with(run_id), 30, f"the run worker (pid {worker}) to end")


def test_webserver_run_worker_killed_mid_merge_then_next_run_recovers(server: Server) -> None:
    point, module = "before_merge_commit", KILL_MODULE
    seen = server.fired(point)
    run_id = server.launch(f"hold_{point}", f"{module}_job")
    row = server.wait_held(module, point, seen, run_id)
    worker = int(row["pid"])
    os.kill(worker, signal.SIGKILL)
    poll(lambda: not alive(worker) and not processes_with(run_id), 30, f"pid {worker} and its log tails to end")
    # The code server sees its run worker die and fails the Dagster run.
    assert server.wait_status(run_id) == "FAILURE"
    assert server.dest.table(module) == BEFORE  # the merge transaction died uncommitted
    lock = server.repo.get_lock(module)
    assert lock is not None and lock.owner.pid == worker
    assert server.repo.last_run(module)["status"] == "running"
    assert server.dest.staging_exists(module)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
    env.update(PIPEKIT_DEFS=str(server.root / f"defs_{point}"), PIPEKIT_DB=str(server.repo.path),
               PIPEKIT_SECRETS=str(server.root / "secrets.env"))
    nxt = subprocess.run([PIPEKIT, "run", module], cwd=server.root, env=env, capture_output=True, text=True, timeout=60)
    assert nxt.returncode == 0, (nxt.stdout, nxt.stderr)
    assert f"took over a stale lock from pid {worker}" in nxt.stdout
    runs = list(reversed(server.repo.history(module)))
    assert [r["status"] for r in runs] == ["error", "success"]
    assert runs[0]["dagster_run_id"] == run_id and f"process {worker}" in runs[0]["error"]
    assert server.dest.table(module) == after_rows(SOURCE_ROWS)
    assert server.dest.rows(f"SELECT count(*) FROM hook_log WHERE module = '{module}'") == [(1,)]
    assert not server.dest.staging_exists(module)
    assert server.repo.get_lock(module) is None


# ================================================================== 3. Dagster and CLI runs racing

def _race(sc: Scenario, home: Path, pg_db: str, *, cli_wait: bool) -> tuple[list[Proc], list[Proc], int]:
    """Four ``pipekit run m`` and four ``dagster job execute -j m_job`` started together.

    The first to take the lock is held in resolve by a lock the test takes on the source table
    (deterministic: it resumes only once every other run that must fail has ended); returns
    (cli procs, dagster procs, the holder's pid) once all have ended.
    """
    assert sc.run("init").returncode == 0  # the race is for the module lock alone
    # Four processes creating a new SQLite Dagster instance at once stamp its schema version
    # twice (alembic then refuses to open it): the instance exists before the race, as deployed.
    # Opening the instance is lazy: touch every storage so each SQLite schema is created and
    # stamped here, once.
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.get_runs(limit=1)
        inst.get_run_records(limit=1)
        inst.all_instigator_state()
        inst.get_asset_keys()
    cli_args = ("run", "m", "--wait") if cli_wait else ("run", "m")
    with psycopg.connect(pg_db) as hold:
        hold.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")  # open transaction until rollback
        procs: list[tuple[str, Proc]] = []
        try:
            for i in range(4):
                procs.append(("dagster", start_job(sc, home, "m_job", tag=f"d{i}")))
                procs.append(("cli", sc.start(*cli_args, tag=f"c{i}")))
            dag = [p for kind, p in procs if kind == "dagster"]
            cli = [p for kind, p in procs if kind == "cli"]

            def holder() -> int | None:
                lock = sc.repo.get_lock("m") if sc.repo.path.exists() else None
                return lock.owner.pid if lock else None

            pid = int(wait_for(holder, 120, "a run to take the lock"))
            # Every run that cannot wait must end while the holder still holds the lock.
            must_fail = [p for p in (dag if cli_wait else dag + cli) if p.pid != pid]
            wait_for(lambda: all(p.popen.poll() is not None for p in must_fail), 120,
                     "the runs that cannot get the lock to fail")
            assert holder() == pid and any(p.pid == pid and p.popen.poll() is None for _, p in procs)
            hold.rollback()
            for _, p in procs:
                p.wait(180)
        finally:
            for _, p in procs:
                p.kill()
    return cli, dag, pid


def _assert_lock_error(p: Proc, home: Path, holder: int, *, dagster: bool) -> None:
    holder_text = f"module 'm' is already running (pid {holder} on host"
    assert p.popen.returncode == 1, (p.stdout, p.stderr[-3000:])
    if not dagster:
        assert holder_text in p.stderr and "--wait" in p.stderr, p.stderr
        return
    status, failures = dagster_failures(home, dagster_run_id(p))
    assert status == "FAILURE"
    assert len(failures) == 1 and holder_text in failures[0], failures
    # In Dagster's terms: no CLI flags in what to do
    assert "--wait" not in failures[0] and "materialize it again" in failures[0], failures


@pytest.mark.postgres
def test_eight_cli_and_dagster_runs_of_one_module_exactly_one_runs(tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, rows=200)
    home = make_home(tmp_path / "dagster_home")
    cli, dag, holder = _race(sc, home, pg_db, cli_wait=False)
    everyone = cli + dag
    assert [p.pid for p in everyone if p.popen.returncode == 0] == [holder], [(p.pid, p.popen.returncode) for p in everyone]
    for p in everyone:
        if p.pid != holder:
            _assert_lock_error(p, home, holder, dagster=p in dag)
    [run] = sc.history()
    assert (run["status"], run["pid"]) == ("success", holder)
    assert run["trigger"] == ("dagster" if holder in {p.pid for p in dag} else "cli")
    assert sc.dest.table() == sc.after
    assert sc.dest.any_staging() == [] and sc.repo.locks() == []


@pytest.mark.postgres
def test_dagster_runs_fail_while_waiting_cli_runs_queue(tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, rows=200)
    home = make_home(tmp_path / "dagster_home")
    cli, dag, holder = _race(sc, home, pg_db, cli_wait=True)
    assert [p.popen.returncode for p in cli] == [0] * 4, [p.stderr for p in cli]
    dagster_won = [p for p in dag if p.pid == holder]
    assert [p.pid for p in dag if p.popen.returncode == 0] == [p.pid for p in dagster_won]
    for p in dag:
        if p.pid != holder:
            _assert_lock_error(p, home, holder, dagster=True)
    runs = sc.history()
    assert [r["status"] for r in runs] == ["success"] * (4 + len(dagster_won))
    assert runs[0]["pid"] == holder
    assert {r["pid"] for r in runs} == {p.pid for p in cli + dagster_won}
    for a, b in zip(runs, runs[1:], strict=False):
        assert a["finished_at"] <= b["started_at"], f"two runs of module m overlapped: {runs}"
    assert sc.dest.table() == sc.after
    assert sc.dest.any_staging() == [] and sc.repo.locks() == []
