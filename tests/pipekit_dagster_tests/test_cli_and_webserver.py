"""The Dagster entry points as users drive them: the `dagster` CLI in a subprocess, and the
webserver + daemon (`dagster dev`) with runs launched through GraphQL `launchRun` the way the
Materialize button does, one of them terminated mid-stage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.dagster_graphql import TERMINATE, gql, launch_run, run_status
from tests.pipekit_dagster_tests.conftest import (
    IGNORE_DATA,
    REPO,
    PipekitEnv,
    dagster_cmd,
    dagster_dev,
    free_port,
)

pytestmark = pytest.mark.dagster


def _env(pk: PipekitEnv, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
    env.update(pk.env())
    env["DAGSTER_HOME"] = str(home)
    env.update(extra)
    return env


def test_definitions_import_is_light_and_touches_nothing(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    shutil.copytree(REPO / "module_defs", defs, ignore=IGNORE_DATA)
    env = {**os.environ, "PIPEKIT_DEFS": str(defs), "PIPEKIT_DB": str(tmp_path / "pipekit.db")}
    code = (
        "import sys, pipekit_dagster.definitions as d; "
        "print(len(d.defs.resolve_asset_graph().get_all_asset_keys()), "
        "'pipekit_core.engine' in sys.modules, 'psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "False", "False"]  # 3 modules and the 3 source tables they read
    assert not (tmp_path / "pipekit.db").exists() and not (defs / "data").exists()


def test_dagster_cli_job_execute_and_asset_materialize(demo: PipekitEnv, dagster_home: Path) -> None:
    env = _env(demo, dagster_home)
    dagster = dagster_cmd("dagster")
    job = subprocess.run(
        [dagster, "job", "execute", "-m", "pipekit_dagster.definitions", "-j", "customers_job"],
        env=env, cwd=demo.root, capture_output=True, text=True, timeout=180,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert demo.dw_query("SELECT count(*) FROM customers") == [(200,)]
    run = demo.repo().last_run("customers")
    assert run["status"] == "success" and run["trigger"] == "dagster" and run["dagster_run_id"]

    mat = subprocess.run(
        [dagster, "asset", "materialize", "-m", "pipekit_dagster.definitions", "--select", "orders"],
        env=env, cwd=demo.root, capture_output=True, text=True, timeout=180,
    )
    assert mat.returncode == 0, mat.stdout[-3000:] + mat.stderr[-3000:]
    assert demo.dw_query("SELECT count(*) FROM orders") == [(5000,)]
    assert "[orders] merged" in mat.stderr + mat.stdout  # engine log lines reach context.log
    # each module ends with one summary line, as `pipekit run` prints it
    assert "[orders] success: 5,000 staged, " in mat.stderr + mat.stdout and "5,000 rows in orders (run " in mat.stderr + mat.stdout
    assert demo.repo().locks() == []


# ----------------------------------------------------------------------------- webserver

SERVER_DEFS = """
modules:
  - name: customers
    source: erp
    dest: dw
    dest_table: customers
    query: SELECT id, name, country FROM customers
  - name: orders
    source: erp
    dest: dw
    dest_table: orders
    strategy: incremental
    merge_key: [id]
    query: SELECT id, customer_id, status, amount, updated_at FROM orders
"""

class Server:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def gql(self, query: str, **variables: object) -> dict:
        return gql(self.url, query, **variables)

    def materialize(self, *assets: str) -> str:
        """What the Materialize button sends: the implicit asset job with an asset selection."""
        selector = {
            "repositoryLocationName": "pipekit",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [a]} for a in assets],
            "assetCheckSelection": [],
        }
        return launch_run(self.url, selector)

    def status(self, run_id: str) -> str:
        return run_status(self.url, run_id)

    def wait_status(self, run_id: str, wanted: set[str], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status in wanted:
                return status
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} still {status} after {timeout} s (wanted {wanted})")


@pytest.fixture
def server(blank: PipekitEnv, dagster_home: Path) -> Iterator[tuple[Server, PipekitEnv]]:
    blank.write("server.yaml", SERVER_DEFS)
    port = free_port()
    # Holds a run mid-stage: fires once 1,000 rows are copied (orders has 5,000, customers 200).
    env = _env(blank, dagster_home, PIPEKIT_FAILPOINT="after_rows:1000:sleep:60")
    with dagster_dev(blank.root, env, port):
        yield Server(port), blank


def _processes_with(text: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def test_materialize_button_run_and_a_terminated_run(server: tuple[Server, PipekitEnv]) -> None:
    srv, pk = server
    run_id = srv.materialize("customers")
    assert srv.wait_status(run_id, {"SUCCESS", "FAILURE", "CANCELED"}) == "SUCCESS"
    assert pk.dw_query("SELECT count(*) FROM customers") == [(200,)]
    assert pk.repo().last_run("customers")["dagster_run_id"] == run_id

    run_id = srv.materialize("orders")
    deadline = time.monotonic() + 120
    while "pipekit_staging__orders" not in pk.dw_tables():  # held mid-stage by the failpoint
        assert time.monotonic() < deadline, f"orders never reached stage: {srv.status(run_id)}"
        time.sleep(0.3)
    assert pk.repo().get_lock("orders") is not None
    res = srv.gql(TERMINATE, id=run_id)["terminateRun"]
    assert res["__typename"] == "TerminateRunSuccess", res
    assert srv.wait_status(run_id, {"CANCELED", "FAILURE", "SUCCESS"}, timeout=60) == "CANCELED"

    last = pk.repo().last_run("orders")
    assert last["status"] == "cancelled" and last["dagster_run_id"] == run_id
    assert pk.repo().get_lock("orders") is None
    assert "pipekit_staging__orders" not in pk.dw_tables()
    assert "orders" not in pk.dw_tables()  # the merge never ran
    deadline = time.monotonic() + 20
    while _processes_with(run_id):  # the run worker is gone, nothing left behind
        assert time.monotonic() < deadline, [p.info["cmdline"] for p in _processes_with(run_id)]
        time.sleep(0.5)
