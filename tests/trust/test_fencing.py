"""Lock ownership is a fencing token: paused processes, takeovers and commits of unknown outcome.

Real processes (the ``pipekit`` CLI), real PostgreSQL and SQLite destinations. A second "host"
is a process in its own UTS namespace with another hostname (``unshare --uts``, root).
Each of these ran to "success" over wrong rows before the destination's ``pipekit_state`` row
(pipekit_core.fence) decided who may commit.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import jdbc_url
from tests.helpers import PIPEKIT
from tests.reliability._support import Scenario
from tests.trust._pgproxy import PgProxy

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

ROWS = 300


def module(strategy: str, *, extra: str = "") -> str:
    text = f"""
      - name: m
        source: src
        dest: dst
        dest_table: m
        strategy: {strategy}
        allow_empty: true
        query: SELECT id, v, ver FROM t
    """
    return textwrap.dedent(text).lstrip("\n") + textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n"


def on_other_host(sc: Scenario, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``pipekit <args>`` as if from another machine: its own UTS namespace, hostname other-host."""
    return subprocess.run(
        ["unshare", "--uts", "sh", "-c", 'hostname other-host && exec "$@"', "sh", PIPEKIT, *args],
        cwd=sc.tmp, env=sc.env(None, **env), capture_output=True, text=True, timeout=timeout,
    )


def count(sc: Scenario) -> list[tuple]:
    return sc.dest.rows("SELECT count(*), count(DISTINCT id) FROM m")


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("strategy", ["full", "append"])
def test_paused_run_taken_over_never_commits(strategy: str, dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    """A run SIGSTOPped past the stale threshold, taken over by another host's run, then resumed.

    Before the fence it resumed and committed too: a full module had every row twice and both
    runs said success. Now the resumed run's merge is refused on the destination.
    """
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=ROWS, modules="")
    sc.dest.exec("DELETE FROM m")
    sc.write_defs(module(strategy))
    # A keeps the default stale threshold (so its heartbeat beats every 15 s, too late to notice:
    # the fence alone must stop it); B, on the other host, counts A's lock stale after 2 s.
    a = sc.start("run", "m", failpoint="after_staging_created:sleep:1", tag="a")
    try:
        a.wait_stderr("pipekit failpoint: after_staging_created -> sleep:1")
        a.signal(signal.SIGSTOP)
        time.sleep(3.0)
        b = on_other_host(sc, "run", "m", PIPEKIT_LOCK_STALE_AFTER="2")
        assert b.returncode == 0, (b.stdout, b.stderr)
        assert "took over a stale lock" in b.stdout + b.stderr
        assert count(sc) == [(ROWS, ROWS)]
        a.signal(signal.SIGCONT)
        code = a.wait(60)
    finally:
        a.kill()
    out = a.stdout + a.stderr
    assert code == 1, out
    assert "lost the module lock" in out, out
    assert count(sc) == [(ROWS, ROWS)]  # once: B's rows, A's merge rolled back
    runs = sc.history()
    assert [r["status"] for r in runs] == ["error", "success"], runs
    assert "lost the module lock" in runs[0]["error"]
    assert sc.repo.get_lock("m") is None


def test_paused_live_process_on_this_host_is_not_taken_over(tmp_path: Path, pg_db: str) -> None:
    """Heartbeat age alone never makes a lock stale when its owner is alive on this host."""
    sc = Scenario.build(tmp_path, pg_db, rows=ROWS, modules="")
    sc.dest.exec("DELETE FROM m")
    sc.write_defs(module("full"))
    a = sc.start("run", "m", failpoint="after_staging_created:sleep:1", tag="a")
    try:
        a.wait_stderr("pipekit failpoint: after_staging_created -> sleep:1")
        a.signal(signal.SIGSTOP)
        time.sleep(2.5)
        b = sc.run("run", "m", PIPEKIT_LOCK_STALE_AFTER="1")
        assert b.returncode == 1, (b.stdout, b.stderr)
        assert "already running" in b.stdout + b.stderr
        a.signal(signal.SIGCONT)
        assert a.wait(60) == 0, (a.stdout, a.stderr)
    finally:
        a.kill()
    assert count(sc) == [(ROWS, ROWS)]
    assert [r["status"] for r in sc.history()] == ["success"]  # B never started: no run of its own


def proxied(sc: Scenario, proxy: PgProxy, strategy: str = "append") -> None:
    """Module m with its destination reached through the proxy (sslmode=disable: plain framing)."""
    dst = jdbc_url(sc.dest.url).replace(f":{upstream_port(sc)}/", f":{proxy.port}/") + "?sslmode=disable"
    sc.write_defs(module(strategy, extra="retries: {max: 2, delay: 0}"), dst_jdbc=dst)


def upstream_port(sc: Scenario) -> int:
    return int(sc.dest.url.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.mark.parametrize("mode", ["after_commit", "before_commit"])
def test_commit_of_unknown_outcome_is_settled_on_the_destination(mode: str, tmp_path: Path, pg_db: str) -> None:
    """The destination connection is lost around the merge's COMMIT of an append module with retries.

    Before: every connection fault was "transient", so the run was retried from the start and the
    rows were appended a second time (after_commit). Now the engine asks the destination: committed
    -> success, no retry; not committed -> the retry runs, and the rows are there once.
    """
    sc = Scenario.build(tmp_path, pg_db, rows=ROWS, modules="")
    sc.dest.exec("DELETE FROM m")
    proxy = PgProxy(upstream_port(sc), mode)
    try:
        proxied(sc, proxy)
        r = sc.run("run", "m", timeout=120)
    finally:
        proxy.close()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert proxy.broken.is_set()
    assert count(sc) == [(ROWS, ROWS)]
    statuses = [x["status"] for x in sc.history()]
    if mode == "after_commit":
        assert "confirms the merge committed" in out, out
        assert statuses == ["success"]
    else:
        assert "did not commit" in out, out
        assert statuses == ["error", "success"]


def test_unreachable_destination_after_commit_is_not_retried_and_is_corrected_later(tmp_path: Path, pg_db: str) -> None:
    """COMMIT reached the server, and then the destination stays unreachable: the outcome is unknown.

    The run fails without a retry (a blind retry could append twice); the next run reads the
    destination's state row and records the first run as 'committed'.
    """
    sc = Scenario.build(tmp_path, pg_db, rows=ROWS, modules="")
    sc.dest.exec("DELETE FROM m")
    proxy = PgProxy(upstream_port(sc), "after_commit", refuse_after=True)
    try:
        proxied(sc, proxy)
        r = sc.run("run", "m", timeout=180)
    finally:
        proxy.close()
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "could not be asked whether it committed" in out, out
    assert count(sc) == [(ROWS, ROWS)]  # it did commit, once
    first = sc.history()
    assert [x["status"] for x in first] == ["error"]

    sc.write_defs(module("full"))  # the destination is reachable again
    nxt = sc.run("run", "m")
    assert nxt.returncode == 0, (nxt.stdout, nxt.stderr)
    runs = sc.history()
    assert [x["status"] for x in runs] == ["committed", "success"], runs
    assert f"by run {runs[1]['id']}" in runs[0]["error"]
    assert count(sc) == [(ROWS, ROWS)]
