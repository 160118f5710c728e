"""The production stack of deploy/, run here: a gRPC code server (`dagster code-server start -m
pipekit_dagster.definitions`), a webserver and a daemon loading it through deploy/workspace.yaml
(a `grpc_server` entry: the shape of a Kubernetes user deployment), Dagster's storage on
PostgreSQL (deploy/dagster.yaml as deployed, the queue polled every second), pipekit's repository
on the same PostgreSQL server (PIPEKIT_DB=postgresql://...).

Six modules load into one destination `dw` (pool `pipekit_dest_dw`, limit 3): a1..a4 read source
`erp` (pool `pipekit_src_erp`, the default limit 4), b1 and b2 read `erp2` (`pipekit_src_erp2`,
limit 1). Six runs launched through GraphQL in the order b1 b2 a1 a2 a3 a4 are queued; with pool
granularity `run` the daemon starts a run only when its source's and its destination's pools both
have a slot: first b1, a1 and a2 (b2 passed over for erp2), the others wait in the queue. The limits are
checked from the event log's step start/end times."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psutil
import psycopg
import pytest
import requests
import yaml

from pipekit_dagster import build_definitions
from tests.conftest import PG_PASSWORD, _fresh_database, jdbc_url
from tests.dagster_graphql import gql, launch_run, run_status
from tests.pipekit_dagster_tests.conftest import REPO, PipekitEnv, _pipekit_env, dagster_cmd, free_port

pytestmark = [pytest.mark.dagster, pytest.mark.postgres]

SOURCES = {"b1": "erp2", "b2": "erp2", "a1": "erp", "a2": "erp", "a3": "erp", "a4": "erp"}  # launch order
MODULES = list(SOURCES)
ROWS = 2_000
DEST_LIMIT = 3  # pipekit_dest_dw
ERP2_LIMIT = 1  # pipekit_src_erp2; pipekit_src_erp gets deploy/dagster.yaml's default_limit
# Every stage's source query waits on this advisory lock, which the test holds until the first three
# runs are in their stage step and the other three have stayed queued: the limits are reached
# whatever the run workers' start-up times.
GATE = 4242

STACK_DEFS = """
connections:
  erp:
    url: {url}
    user: pipekit
    password: $PK_TEST_PG_PASSWORD
  erp2:
    url: {url}
    user: pipekit
    password: $PK_TEST_PG_PASSWORD
  dw:
    url: {url}
    user: pipekit
    password: $PK_TEST_PG_PASSWORD
modules:
{modules}
"""

LOCATIONS = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""
RELOAD = """
mutation($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) { __typename }
}
"""


@pytest.fixture
def blank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipekitEnv:
    """An empty definitions folder (the tests write the YAML), as in tests/pipekit_dagster_tests."""
    return _pipekit_env(tmp_path, monkeypatch, demo_yaml=False)


@pytest.fixture
def pipekit_pg() -> Iterator[str]:
    """A fresh database for pipekit's own repository, on the same server as Dagster's storage."""
    yield from _fresh_database("pk_")


def test_stage_and_merge_ops_are_in_source_and_destination_pools(
    blank: PipekitEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    blank.write("m.yaml", """
        modules:
          - {name: a, source: erp, dest: dw, dest_table: a, query: SELECT id FROM customers}
          - {name: b, source: dw, dest: erp, dest_table: b, query: SELECT 1 AS id}
        """)
    defs = build_definitions()

    def pools(module: str) -> dict[str, str | None]:
        graph = defs.resolve_job_def(f"{module}_job").graph.node_named(module).definition
        return {node.name: node.definition.pool for node in graph.nodes}  # type: ignore[attr-defined]

    # a reads a table of erp (an upstream source asset, hence ready); b reads no table
    assert pools("a") == {"ready": None, "resolve": None, "stage": "pipekit_src_erp",
                          "merge": "pipekit_dest_dw", "hooks": None}
    assert pools("b") == {"resolve": None, "stage": "pipekit_src_dw", "merge": "pipekit_dest_erp",
                          "hooks": None}


# ----------------------------------------------------------------------------- the stack


def _dagster_yaml(home: Path) -> dict:
    """deploy/dagster.yaml as deployed, with the queue polled every second instead of every 5."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert config["run_coordinator"]["config"]["dequeue_interval_seconds"] == 5
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return config


def _pg_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "DAGSTER_PG_HOST": parts.hostname or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parts.port or 5432),
        "DAGSTER_PG_DB": parts.path.lstrip("/"),
        "DAGSTER_PG_USERNAME": parts.username or "",
        "DAGSTER_PG_PASSWORD": parts.password or "",
    }


def _source_tables(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE SCHEMA src")
        for m in MODULES:
            con.execute(f"CREATE TABLE src.{m} AS SELECT g AS id, 'row ' || g AS name FROM generate_series(1, {ROWS}) g")


class Stack:
    """The three processes, each in its own process group with its own log."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - the child holds it; closed by the OS
        self.procs[name] = subprocess.Popen(argv, env=self.env, cwd=self.root, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {self.log(name)[-3000:]}"

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to each process group, SIGKILL after 20 s; then whatever they started (the code
        server's gRPC server, run workers) that is still there, whatever its process group."""
        children: list[psutil.Process] = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                children += psutil.Process(proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def _wait_location(stack: Stack, url: str, timeout: float = 90) -> None:
    """Until the webserver answers and shows the code server's location loaded."""
    deadline = time.monotonic() + timeout
    last: object = None
    reloaded = False
    while time.monotonic() < deadline:
        stack.check_alive()
        with contextlib.suppress(requests.RequestException):
            entries = gql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
            last = entries
            entry = next(e for e in entries if e["name"] == "pipekit")
            kind = (entry["locationOrLoadError"] or {}).get("__typename")
            if entry["loadStatus"] == "LOADED" and kind == "RepositoryLocation":
                return
            if entry["loadStatus"] == "LOADED" and kind == "PythonError" and not reloaded:
                gql(url, RELOAD, name="pipekit")  # the webserver came up before the code server
                reloaded = True
        time.sleep(0.5)
    raise AssertionError(f"location pipekit not loaded in {timeout:g} s: {last}\n{stack.log('code-server')[-2000:]}")


def _intervals(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key -> (STEP_START, STEP_SUCCESS/FAILURE) timestamps of one run."""
    start: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not entry.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            start[entry.step_key] = entry.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            out[entry.step_key] = (start[entry.step_key], entry.timestamp)
    return out


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    running = most = 0
    for _, delta in points:
        running += delta
        most = max(most, running)
    return most


def _gate_waiters(url: str) -> int:
    """How many sessions wait on the gate (stage steps whose source query has started)."""
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted "
                          "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                          (GATE,)).fetchone()
    return int(row[0]) if row else 0


def _hold_first_wave(stack: Stack, url: str, data_url: str, runs: dict[str, str], timeout: float = 90) -> None:
    """Until b1, a1 and a2 are in their stage step (waiting on the gate) and the other three runs
    have stayed QUEUED for two more dequeue intervals of the daemon."""
    first = {"b1", "a1", "a2"}
    queued = set(MODULES) - first
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        stack.check_alive()
        statuses = {m: run_status(url, r) for m, r in runs.items()}
        assert not {"FAILURE", "CANCELED", "SUCCESS"} & set(statuses.values()), _failures(runs, statuses, stack)
        if _gate_waiters(data_url) == len(first):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"three runs were not in their stage step after {timeout:g} s: {statuses}")
    time.sleep(2.5)
    statuses = {m: run_status(url, r) for m, r in runs.items()}
    assert {m for m, st in statuses.items() if st == "QUEUED"} == queued, statuses
    assert {statuses[m] for m in first} == {"STARTED"}, statuses
    assert _gate_waiters(data_url) == len(first)


def _failures(runs: dict[str, str], statuses: dict[str, str], stack: Stack) -> str:
    """What went wrong, for an assertion message: the failed runs' error events, the daemon's log."""
    lines = [str(statuses)]
    with dg.DagsterInstance.get() as instance:
        for m, run_id in runs.items():
            if statuses.get(m) in ("FAILURE", "CANCELED"):
                for e in instance.all_logs(run_id):
                    if e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE"):
                        error = getattr(e.dagster_event.event_specific_data, "error", None)
                        lines.append(f"{m} {e.step_key} {e.message} {error.to_string() if error else ''}"[:3000])
    return "\n".join(lines) + "\n" + stack.log("daemon")[-2000:]


def _pipekit_history(env: dict[str, str]) -> list[dict]:
    """``pipekit history --json``: the run log as the repository PIPEKIT_DB names has it."""
    out = subprocess.run([sys.executable, "-m", "pipekit_core.cli", "history", "--json", "-n", "50"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(out.stdout)


def test_code_server_webserver_and_daemon_on_postgres_run_six_modules_within_pool_limits(
    blank: PipekitEnv, pg_db: str, pg_db2: str, pipekit_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pg_db: Dagster's storage. pg_db2: the data (schema src, destination tables in public).
    # pipekit_pg: pipekit's repository.
    _source_tables(pg_db2)
    modules = "\n".join(
        f"  - {{name: {m}, source: {src}, dest: dw, dest_table: public.{m}, strategy: incremental, merge_key: [id], "
        f"query: 'SELECT s.id, s.name FROM src.{m} s CROSS JOIN (SELECT pg_advisory_lock_shared({GATE})) g'}}"
        for m, src in SOURCES.items())
    (blank.defs / "stack.yaml").write_text(STACK_DEFS.format(url=jdbc_url(pg_db2), modules=modules))
    home = blank.root / "dagster_home"
    home.mkdir()
    config = _dagster_yaml(home)
    assert config["concurrency"]["pools"]["granularity"] == "run"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= len(MODULES)  # only the pools hold runs back
    code_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        PIPEKIT_DEFS=str(blank.defs),
        PIPEKIT_DB=pipekit_pg,
        PK_TEST_PG_PASSWORD=PG_PASSWORD,
        PIPEKIT_CODE_SERVER_HOST="127.0.0.1",
        PIPEKIT_CODE_SERVER_PORT=str(code_port),
        **_pg_env(pg_db),
    )
    for k, v in env.items():
        if k.startswith(("PIPEKIT_", "DAGSTER_")):
            monkeypatch.setenv(k, v)

    # Dagster's tables exist before three processes open the instance; pool limits are instance
    # state, set the way deploy/README.md says (and once through the API).
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        instance.event_log_storage.set_concurrency_slots("pipekit_src_erp2", ERP2_LIMIT)

    stack = Stack(blank.root, env)
    workspace = str(REPO / "deploy" / "workspace.yaml")
    url = f"http://127.0.0.1:{web_port}"
    try:
        limit = subprocess.Popen([dagster_cmd("dagster"), "instance", "concurrency", "set", "pipekit_dest_dw", str(DEST_LIMIT)],
                                 env=env, cwd=blank.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stack.start("code-server", [dagster_cmd("dagster"), "code-server", "start", "-m", "pipekit_dagster.definitions",
                                    "-h", "127.0.0.1", "-p", str(code_port)])
        stack.start("webserver", [dagster_cmd("dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", workspace])
        stack.start("daemon", [dagster_cmd("dagster-daemon"), "run", "-w", workspace])
        out, _ = limit.communicate(timeout=60)  # meanwhile the three processes start
        assert limit.returncode == 0, out
        _wait_location(stack, url)
        selector = {"repositoryLocationName": "pipekit", "repositoryName": "__repository__"}
        with psycopg.connect(pg_db2, autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
            runs = {m: launch_run(url, {**selector, "jobName": f"{m}_job"}) for m in MODULES}
            _hold_first_wave(stack, url, pg_db2, runs)
        statuses: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stack.check_alive()
            statuses = {m: run_status(url, r) for m, r in runs.items()}
            if all(st in ("SUCCESS", "FAILURE", "CANCELED") for st in statuses.values()):
                break
            time.sleep(1)
        assert set(statuses.values()) == {"SUCCESS"}, _failures(runs, statuses, stack)
        daemon_log = stack.log("daemon")
    finally:
        stack.stop()
    assert f"Run {runs['b2']} is blocked by global concurrency limits" in daemon_log

    with dg.DagsterInstance.get() as instance:
        steps = {m: _intervals(instance, r) for m, r in runs.items()}
        for pool in ("pipekit_src_erp", "pipekit_src_erp2", "pipekit_dest_dw"):  # nothing left claimed
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert (info.claimed_slots, info.pending_steps) == ([], []), pool
        limits = {p: instance.event_log_storage.get_concurrency_info(p).slot_count
                  for p in ("pipekit_src_erp", "pipekit_src_erp2", "pipekit_dest_dw")}
    assert limits == {"pipekit_src_erp": config["concurrency"]["pools"]["default_limit"],
                      "pipekit_src_erp2": ERP2_LIMIT, "pipekit_dest_dw": DEST_LIMIT}

    def loads(mods: list[str]) -> list[tuple[float, float]]:  # the modules' stage and merge steps
        return [steps[m][f"{m}.{phase}"] for m in mods for phase in ("stage", "merge")]

    # never more stage/merge steps on dw than its limit (reached: b1, a1 and a2 held at the gate together),
    # never two of erp2's modules at once
    assert _max_overlap(loads(MODULES)) == DEST_LIMIT
    assert _max_overlap(loads(["b1", "b2"])) == ERP2_LIMIT

    # pipekit's PostgreSQL repository recorded each module's run under its Dagster run id
    history = _pipekit_history(env)
    assert sorted((h["module"], h["status"], h["trigger"], h["dagster_run_id"]) for h in history) == sorted(
        (m, "success", "dagster", r) for m, r in runs.items())
    with psycopg.connect(pg_db2, autocommit=True) as con:
        for m in MODULES:
            assert con.execute(f"SELECT count(*) FROM public.{m}").fetchone() == (ROWS,)
