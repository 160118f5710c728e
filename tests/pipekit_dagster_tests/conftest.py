"""Fixtures for the Dagster tests: a temporary DAGSTER_HOME, a real Dagster instance, and
pipekit definitions folders in tmp_path (the shipped demo, or YAML written by the test).

Definitions are built with ``build_definitions()`` *after* the environment is set (the module
level ``pipekit_dagster.definitions.defs`` was built at import time, with whatever environment
the test process had then).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest
import requests

from pipekit_core.demo import make_demo_data
from pipekit_core.repo import Repository

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
IGNORE_DATA = shutil.ignore_patterns("data", "*.db", "*.db-*")  # the shipped YAML, without generated data


@dataclass
class PipekitEnv:
    """A definitions folder with the demo source data, and the repository beside it."""

    root: Path
    defs: Path
    db: Path

    @property
    def erp(self) -> Path:
        return self.defs / "data" / "demo_erp.db"

    @property
    def dw(self) -> Path:
        return self.defs / "data" / "demo_dw.db"

    def repo(self) -> Repository:
        return Repository(self.db)

    def dw_query(self, sql: str) -> list[tuple]:
        con = sqlite3.connect(self.dw)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def dw_tables(self) -> set[str]:
        if not self.dw.exists():
            return set()
        return {r[0] for r in self.dw_query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def dw_execute(self, sql: str) -> None:
        _execute(self.dw, sql)

    def erp_execute(self, sql: str) -> None:
        _execute(self.erp, sql)

    def write(self, name: str, text: str, *, connections: bool = True) -> Path:
        """Write a YAML file (dedented), by default after the SQLite ``erp`` and ``dw`` connections."""
        path = self.defs / name
        path.write_text((SQLITE_CONNECTIONS if connections else "") + textwrap.dedent(text))
        return path

    def env(self) -> dict[str, str]:
        return {"PIPEKIT_DEFS": str(self.defs), "PIPEKIT_DB": str(self.db)}


def _execute(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute(sql)
    finally:
        con.close()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(dagster_home)) as inst:
        yield inst


def _pipekit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, demo_yaml: bool) -> PipekitEnv:
    root = tmp_path / "pk"
    defs = root / "defs"
    if demo_yaml:
        shutil.copytree(REPO / "module_defs", defs, ignore=IGNORE_DATA)
    else:
        defs.mkdir(parents=True)
    make_demo_data(defs / "data")
    env = PipekitEnv(root=root, defs=defs, db=root / "pipekit.db")
    for k, v in env.env().items():
        monkeypatch.setenv(k, v)
    for k in ("PIPEKIT_CONFIG", "PIPEKIT_FAILPOINT", "PIPEKIT_SECRETS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(root)  # no stray ./pipekit.yaml
    return env


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipekitEnv:
    """The shipped demo definitions, with fresh source data."""
    return _pipekit_env(tmp_path, monkeypatch, demo_yaml=True)


@pytest.fixture
def blank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipekitEnv:
    """An empty definitions folder with the demo source data in data/ (tests write the YAML)."""
    return _pipekit_env(tmp_path, monkeypatch, demo_yaml=False)


SQLITE_CONNECTIONS = """
connections:
  erp:
    url: jdbc:sqlite:data/demo_erp.db
  dw:
    url: jdbc:sqlite:data/demo_dw.db
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Asset name -> materialization metadata (raw values)."""
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.materialization
        out[mat.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def observations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_OBSERVATION":
            obs = ev.asset_observation_data.asset_observation
            out[obs.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in obs.metadata.items()}
    return out


def step_events(result: dg.ExecuteInProcessResult, kind: str) -> list[str]:
    return [ev.step_key for ev in result.all_events if ev.event_type_value == kind and ev.step_key]


def dagster_cmd(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} not found"
    return found


@contextlib.contextmanager
def dagster_dev(root: Path, env: dict[str, str], port: int | None = None, argv: list[str] | None = None,
                log_name: str = "dagster-dev.log", timeout: float = 120) -> Iterator[str]:
    """A development server (default: ``dagster dev`` on the repo's workspace; ``argv`` with
    ``{port}`` for another, e.g. ``dg dev``) run in ``root`` with ``env`` (the whole environment);
    yields its URL once it answers /server_info, and stops its process group after."""
    port = port or free_port()
    cmd = [a.format(port=port) for a in argv] if argv else [
        dagster_cmd("dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    log = open(root / log_name, "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, (root / log_name).read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            assert time.monotonic() < deadline, f"{cmd[0]} {cmd[1]} did not answer /server_info in {timeout:g} s"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


if TYPE_CHECKING:
    from tests.pipekit_dagster_tests import dg_support


@pytest.fixture
def project(tmp_path: Path) -> dg_support.Project:
    """A temp copy of the example dg project with its demo data (tests/pipekit_dagster_tests/dg_support.py)."""
    from tests.pipekit_dagster_tests import dg_support  # it imports this module

    return dg_support.make_project(tmp_path)
