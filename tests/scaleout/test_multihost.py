"""Several "hosts" sharing one PostgreSQL repository: locks, takeovers and fencing across machines.

A host is a ``pipekit`` process in its own UTS namespace with its own hostname (``unshare --uts``,
root): to pipekit it is another machine (its lock owner identity differs), while the test can
still freeze it (SIGSTOP), kill it and read its output. The repository is the PostgreSQL database
of the scenario (schema ``pipekit``), so every host sees the same locks and run log, as runs in
separate containers or pods do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from pipekit_core.repo_backends import machine_id
from tests.helpers import PIPEKIT
from tests.reliability._support import Proc, Scenario, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

# argv: hostname, then the command to exec in the new UTS namespace (no shell)
AS_HOST = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"


def on_host(sc: Scenario, host: str, *args: str, tag: str, failpoint: str | None = None, **env: str) -> Proc:
    """``pipekit <args>`` in the background as if on machine ``host`` (its own session)."""
    out, err = sc.tmp / f"{tag}.out", sc.tmp / f"{tag}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(["unshare", "--uts", "--", sys.executable, "-c", AS_HOST, host, PIPEKIT, *args],
                             cwd=sc.tmp, env=sc.env(failpoint, **env), stdout=fo, stderr=fe, text=True,
                             start_new_session=True)
    return Proc(p, out, err)


def finish(p: Proc, timeout: float = 60) -> int:
    try:
        return p.wait(timeout)
    finally:
        p.kill()


def identity(host: str) -> str:
    """The lock owner identity pipekit gives a process on ``host`` here (same kernel, same PID namespace)."""
    return f"{host}#{machine_id()}"


def append_module(name: str = "m") -> str:
    """An append module whose watermark is the destination's max(ver): two runs overlapping would
    both read the old watermark and append the same rows twice."""
    return textwrap.dedent(f"""
      - name: {name}
        source: src
        dest: dst
        dest_table: m
        strategy: append
        query: SELECT id, v, ver FROM t WHERE ver > {{since}}
        watermarks:
          - name: since
            sql: SELECT coalesce(max(ver), 0) FROM m
        hooks:
          - sql: INSERT INTO hook_log (module) VALUES ('{name}')
            run_on: success
    """).lstrip("\n")


def build(tmp_path: Path, pg_db: str, rows: int, modules: str | None = None) -> Scenario:
    sc = Scenario.build(tmp_path, pg_db, rows=rows, modules=modules)
    # empty, and no primary key: a row appended twice would show, not fail the merge
    sc.dest.exec("DROP TABLE m", "CREATE TABLE m (id integer, v text, ver integer)")
    sc.use_pg_repository(pg_db)
    assert sc.run("init").returncode == 0
    return sc


def test_frozen_host_taken_over_by_another_host_cannot_commit(tmp_path: Path, pg_db: str) -> None:
    """Host A is frozen mid-run (SIGSTOP) past the stale threshold; host B takes the lock over and
    commits; A resumes and its merge is refused by the destination's fencing token."""
    sc = build(tmp_path, pg_db, rows=300, modules=append_module())
    a = on_host(sc, "host-a", "run", "m", tag="a", failpoint="after_staging_created:sleep:1")
    try:
        a.wait_stderr("pipekit failpoint: after_staging_created -> sleep:1")
        lock = sc.repo.get_lock("m")
        assert lock is not None and lock.owner.host == identity("host-a") and lock.owner.pid == a.pid
        a.signal(signal.SIGSTOP)
        time.sleep(2.5)
        b = on_host(sc, "host-b", "run", "m", tag="b", PIPEKIT_LOCK_STALE_AFTER="1.5")
        assert finish(b) == 0, (b.stdout, b.stderr)
        assert f"took over a stale lock from pid {a.pid} on host {identity('host-a')}" in b.stdout + b.stderr
        assert sc.dest.rows("SELECT count(*), count(DISTINCT id) FROM m") == [(300, 300)]
        a.signal(signal.SIGCONT)
        code = finish(a)
    finally:
        a.kill()
    out = a.stdout + a.stderr
    assert code == 1, out
    assert "lost the module lock" in out, out
    assert sc.dest.rows("SELECT count(*), count(DISTINCT id) FROM m") == [(300, 300)]  # B's rows, once
    runs = sc.history()
    assert [(r["status"], r["host"]) for r in runs] == [("error", identity("host-a")), ("success", identity("host-b"))]
    assert "lost the module lock" in runs[0]["error"]
    assert sc.dest.rows("SELECT module FROM hook_log") == [("m",)]
    assert sc.repo.get_lock("m") is None


def test_dead_host_lock_goes_stale_by_heartbeat_only_where_its_pid_cannot_be_checked(
        tmp_path: Path, pg_db: str) -> None:
    """Host A dies holding the lock (SIGKILL). Another host cannot see A's pids: it waits for the
    heartbeat to go stale. A itself, back with the same identity, knows the pid is gone at once."""
    sc = build(tmp_path, pg_db, rows=100, modules=append_module())
    a = on_host(sc, "host-a", "run", "m", tag="a", failpoint="after_resolve:sleep:30")
    a.wait_stderr("pipekit failpoint: after_resolve -> sleep:30")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(10)
    lock = sc.repo.get_lock("m")
    assert lock is not None and lock.owner.pid == a.pid  # left behind by the dead run

    # another host: it cannot check A's pid and the heartbeat is fresh, so the lock still holds
    b = on_host(sc, "host-b", "run", "m", tag="b")
    assert finish(b) == 1, (b.stdout, b.stderr)
    assert f"module 'm' is already running (pid {a.pid} on host {identity('host-a')}" in b.stderr, b.stderr

    # host A again (the same machine: same boot, PID namespace and hostname) sees the pid is gone
    a2 = on_host(sc, "host-a", "run", "m", tag="a2")
    assert finish(a2) == 0, (a2.stdout, a2.stderr)
    error = sc.history()[0]["error"]
    assert f"process {a.pid} on {identity('host-a')} is gone" in error or f"process {a.pid} on host {identity('host-a')} is gone" in error, error
    assert [r["status"] for r in sc.history()] == ["error", "success"]

    # and the heartbeat path: host C takes over host B's dead run once its heartbeat is old
    b2 = on_host(sc, "host-b", "run", "m", tag="b2", failpoint="after_resolve:sleep:30")
    b2.wait_stderr("pipekit failpoint: after_resolve -> sleep:30")
    os.killpg(b2.pid, signal.SIGKILL)
    b2.wait(10)
    time.sleep(1.2)
    c = on_host(sc, "host-c", "run", "m", tag="c", PIPEKIT_LOCK_STALE_AFTER="1")
    assert finish(c) == 0, (c.stdout, c.stderr)
    runs = sc.history()
    assert [r["status"] for r in runs] == ["error", "success", "error", "success"]
    assert runs[2]["host"] == identity("host-b") and "no heartbeat for" in runs[2]["error"]
    assert runs[3]["host"] == identity("host-c")
    assert sc.dest.rows("SELECT count(*), count(DISTINCT id) FROM m WHERE ver = 2") == [(100, 100)]


def test_eight_runs_from_four_hosts_one_commits_at_a_time(tmp_path: Path, pg_db: str) -> None:
    """Eight ``run --wait`` of one append module, two from each of four hosts, started together:
    they run one after another (no two overlap), each once, and no row is appended twice."""
    sc = build(tmp_path, pg_db, rows=200, modules=append_module())
    hosts = [f"host-{i}" for i in range(4)]
    procs = [on_host(sc, hosts[i % 4], "run", "m", "--wait", tag=f"w{i}", failpoint="after_resolve:sleep:0.3")
             for i in range(8)]
    codes = [finish(p, 120) for p in procs]
    assert codes == [0] * 8, [p.stderr for p in procs]
    assert any("waiting for the lock held by" in p.stdout + p.stderr for p in procs)
    runs = sc.history()
    assert [r["status"] for r in runs] == ["success"] * 8
    assert sorted(r["host"] for r in runs) == sorted(identity(h) for h in hosts for _ in range(2))
    spans = sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in runs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"two runs of module m overlapped: {spans}"
    assert sorted(r["rows_inserted"] or 0 for r in runs) == [0] * 7 + [200]
    assert sc.dest.rows("SELECT count(*), count(DISTINCT id) FROM m WHERE ver = 2") == [(200, 200)]
    assert len(sc.dest.rows("SELECT module FROM hook_log")) == 8
    assert sc.repo.get_lock("m") is None
    wait_for(lambda: all(p.popen.poll() is not None for p in procs), 5, "every host's process to exit")
