"""The CLI as a person meets it: reading commands never create a repository, unknown modules are
errors, a run's failure is printed once, a cancel says cancelled, history reads like a report."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from pipekit_core.repo import LockOwner, Repository
from tests.helpers import PIPEKIT, env_for, run_cli, sqlite_exec, write_defs

DEFS = """
connections:
  src: {url: "sqlite:SRC"}
  dst: {url: "sqlite:DST"}
modules:
  - {name: m, source: src, dest: dst, dest_table: m_t, query: "SELECT id, v FROM t"}
"""


def setup(tmp: Path, rows: int = 5000) -> None:
    src = tmp / "src.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER, v TEXT)",
                f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {rows}) "
                "INSERT INTO t SELECT i, 'v' || i FROM g")
    write_defs(tmp / "defs", DEFS.replace("SRC", str(src)).replace("DST", str(tmp / "dst.db")))


def test_reading_commands_never_create_a_repository(tmp_path: Path) -> None:
    setup(tmp_path)
    for args in (["history"], ["unlock", "m"]):
        r = run_cli(args, tmp_path)
        assert r.returncode == 1
        assert f"no pipekit repository at {tmp_path / 'pipekit.db'} (PIPEKIT_DB points there)" in r.stderr
        assert not (tmp_path / "pipekit.db").exists()


def test_unlock_of_an_unknown_module_is_an_error(tmp_path: Path) -> None:
    setup(tmp_path)
    assert run_cli(["run", "m"], tmp_path).returncode == 0
    r = run_cli(["unlock", "nosuch"], tmp_path)
    assert r.returncode == 1 and "unknown module 'nosuch'" in r.stderr
    r = run_cli(["unlock", "m"], tmp_path)
    assert r.returncode == 0 and "m was not locked" in r.stdout


def test_a_lock_conflict_is_printed_once(tmp_path: Path) -> None:
    setup(tmp_path)
    assert run_cli(["run", "m"], tmp_path).returncode == 0
    assert Repository(tmp_path / "pipekit.db").acquire_lock("m", LockOwner(host="elsewhere", pid=1, run_id=None)).acquired
    r = run_cli(["run", "m"], tmp_path)
    assert r.returncode == 1
    assert (r.stdout + r.stderr).count("is already running (pid 1 on host elsewhere)") == 1
    assert "--wait" in r.stderr and "pipekit unlock" in r.stderr  # the CLI's own hint, once


def test_history_reads_like_a_report_and_has_json(tmp_path: Path) -> None:
    setup(tmp_path)
    r = run_cli(["run", "m"], tmp_path)
    assert r.returncode == 0 and "5,000 inserted, 5,000 rows in m_t" in r.stdout  # counts one way
    full = run_cli(["history", "--run-id", "1"], tmp_path)
    assert full.returncode == 0
    assert "None" not in full.stdout and "error:" not in full.stdout  # empty fields are left out
    assert "rows_inserted: 5,000" in full.stdout and "\nlog:\n  [" in full.stdout
    data = json.loads(run_cli(["history", "--json"], tmp_path).stdout)
    assert data[0]["rows_inserted"] == 5000 and data[0]["status"] == "success"


def test_ctrl_c_is_recorded_as_cancelled(tmp_path: Path) -> None:
    setup(tmp_path, rows=200_000)
    import os

    env = dict(os.environ) | env_for(tmp_path, {"PIPEKIT_FAILPOINT": "after_rows:1000:sleep:30"})
    p = subprocess.Popen([PIPEKIT, "run", "m"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = Repository(tmp_path / "pipekit.db").history("m", 1) if (tmp_path / "pipekit.db").exists() else []
        if runs and runs[0].get("phase") == "stage":
            break
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130
    run = Repository(tmp_path / "pipekit.db").history("m", 1)[0]
    assert run["status"] == "cancelled"
    assert run["error"].startswith("module 'm' cancelled in phase 'stage'") and "failed" not in run["error"]


def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    text = "modules:\n" + "".join(f"  - name: m{i}\n    source: s\n" for i in range(3)) + "  - name: 'broken\n" + "    x: 1\n" * 5
    write_defs(tmp_path / "defs", text)
    r = run_cli(["validate"], tmp_path)
    assert r.returncode == 1
    assert "defs.yaml:8: invalid YAML: while scanning a quoted scalar" in r.stderr + r.stdout


def test_a_module_scheduled_twice_at_the_same_moment_is_a_warning(tmp_path: Path) -> None:
    setup(tmp_path)
    base = (tmp_path / "defs" / "defs.yaml").read_text()
    twice = base.replace('query: "SELECT id, v FROM t"}', 'query: "SELECT id, v FROM t", schedule: "0 20 * * *"}')
    write_defs(tmp_path / "defs", twice + 'groups:\n  g: {modules: [m], schedule: "0 * * * *"}\n')
    r = run_cli(["validate"], tmp_path)
    assert r.returncode == 0  # valid: a warning, not a problem
    assert "warning: " in r.stdout and "module 'm' is scheduled twice: its schedule '0 20 * * *' and group 'g''s" in r.stdout
    apart = twice.replace('schedule: "0 20 * * *"', 'schedule: "30 20 * * *"')
    write_defs(tmp_path / "defs", apart + 'groups:\n  g: {modules: [m], schedule: "0 * * * *"}\n')
    assert "scheduled twice" not in run_cli(["validate"], tmp_path).stdout  # never at the same moment
