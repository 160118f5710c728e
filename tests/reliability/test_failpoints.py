"""Every fault point fires where its name says, on every copy path.

The run sleeps at the point (``<point>:sleep:S``) in a thread while the test looks at the
databases and the run log from outside; then the run goes on and must succeed.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from pipekit_core import failpoints
from pipekit_core.engine import RunResult, run_module
from pipekit_core.failpoints import FailpointError
from tests.conftest import PG_PASSWORD
from tests.helpers import engine_for, sqlite_exec
from tests.reliability._support import BEFORE, STANDIN, Scenario, pipekit_backends, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

HOLD = "sleep:1.5"


class Held:
    """run_module in a thread, held at a sleep fault point; stderr read through capfd."""

    def __init__(self, sc: Scenario, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], spec: str) -> None:
        extra = {"PK_TEST_PW": PG_PASSWORD}
        if sc.transport == "jrunner":
            extra["PIPEKIT_JRUNNER"] = STANDIN
        self.engine = engine_for(sc.tmp, monkeypatch, extra)
        monkeypatch.setenv("PIPEKIT_FAILPOINT", spec)
        self.capfd = capfd
        self.err = ""
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = run_module(self.engine, "m")
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def stderr(self) -> str:
        self.err += self.capfd.readouterr().err
        return self.err

    def wait_fired(self, label: str) -> str:
        """Wait for the failpoint's own line; return it."""
        line = f"pipekit failpoint: {label} -> "
        wait_for(lambda: line in self.stderr() or self.error, 30, f"failpoint {label} to fire")
        assert self.error is None, self.error
        return next(x for x in self.stderr().splitlines() if x.startswith(line))

    def run_row(self) -> dict[str, Any]:
        return self.engine.repo.history("m", 1)[0]

    def finish(self) -> RunResult:
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        assert self.result is not None and self.result.status == "success"
        return self.result


TWO_HOOKS = """
hooks:
  - sql: INSERT INTO hook_log (module) VALUES ('first')
    run_on: success
  - sql: INSERT INTO hook_log (module) VALUES ('second')
    run_on: success
"""


@pytest.mark.parametrize(
    "point",
    ["before_resolve", "after_resolve", "after_staging_created", "before_merge_commit", "after_merge_commit",
     "before_hook:1", "before_hook"],
)
def test_point_fires_where_named(point: str, tmp_path: Path, pg_db: str, monkeypatch, capfd) -> None:
    sc = Scenario.build(tmp_path, pg_db, "postgresql", rows=500)
    sc.write_defs(sc.module_yaml("m", hook=False, extra=TWO_HOOKS))
    held = Held(sc, monkeypatch, capfd, f"{point}:{HOLD}")
    held.wait_fired(point)
    row, dest = held.run_row(), sc.dest
    assert row["status"] == "running"
    hooks_seen = dest.rows("SELECT module FROM hook_log ORDER BY module")
    if point == "before_resolve":
        assert row["phase"] == "resolve" and row["watermarks"] is None and row["source_sql"] is None
        assert not dest.staging_exists()
    elif point == "after_resolve":
        assert row["phase"] == "resolve" and row["watermarks"] == {"since": "1"} and "ver > 1" in row["source_sql"]
        assert not dest.staging_exists()
    elif point == "after_staging_created":
        assert row["phase"] == "stage" and row["rows_staged"] is None
        assert dest.rows("SELECT count(*) FROM pipekit_staging.m") == [(0,)]
    elif point == "before_merge_commit":
        assert row["phase"] == "merge" and row["rows_staged"] == 500
        assert dest.table() == BEFORE  # the merge's changes are not visible: not committed
        states = {app: state for _, app, state, _ in pipekit_backends(sc.src_url)}
        assert states.get("pipekit merge m") == "idle in transaction", states
    elif point == "after_merge_commit":
        assert row["phase"] == "merge" and dest.table() == sc.after
        assert dest.staging_exists() and hooks_seen == []
    else:  # before a hook: the merge committed; the hooks before this one ran
        assert row["phase"] == "hooks" and dest.table() == sc.after
        assert hooks_seen == ([("first",)] if point == "before_hook:1" else [])
    held.finish()
    assert dest.rows("SELECT module FROM hook_log ORDER BY module") == [("first",), ("second",)]
    fired = held.stderr().count(f"pipekit failpoint: {point} -> ")
    assert fired == (2 if point == "before_hook" else 1)  # unnumbered: before every hook


TEXT_COPY = """
columns:
  - {source_name: id, dest_name: id}
  - {source_name: v, dest_name: v, dest_type: varchar(20)}
  - {source_name: ver, dest_name: ver}
"""
PATHS = [
    "postgresql->postgresql",  # COPY pipe, binary
    "postgresql->postgresql/text",  # COPY pipe, text (a staging type differs from the source's)
    "postgresql->sqlite",
    "sqlite->postgresql",
    "sqlite->sqlite",
    "jrunner:postgresql->postgresql",
]


@pytest.mark.parametrize("path", PATHS)
def test_after_rows_fires_mid_copy(path: str, tmp_path: Path, pg_db: str, monkeypatch, capfd) -> None:
    transport = "jrunner" if path.startswith("jrunner:") else "native"
    src_kind, dest_kind = path.split(":")[-1].split("/")[0].split("->")
    src_jdbc = None
    sc = Scenario.build(tmp_path, pg_db, dest_kind, transport)
    if src_kind == "sqlite":
        src = tmp_path / "src.db"
        sqlite_exec(src, "CREATE TABLE t (id integer, v text, ver integer)")
        con = sqlite3.connect(src)
        with con:
            con.executemany("INSERT INTO t VALUES (?, 'new', 2)", [(i,) for i in range(1, sc.rows + 1)])
        con.close()
        src_jdbc = f"jdbc:sqlite:{src}"
    sc.write_defs(sc.module_yaml("m", extra=TEXT_COPY if path.endswith("/text") else ""), src_jdbc=src_jdbc)
    n = sc.mid_copy
    if transport == "jrunner":  # jrunner does not wait for pipekit: the stand-in pauses its copy too
        monkeypatch.setenv("JRUNNER_STANDIN_HANG_AFTER_ROWS", str(n))
        monkeypatch.setenv("JRUNNER_STANDIN_HANG", "1")
    held = Held(sc, monkeypatch, capfd, f"after_rows:{n}:{HOLD}")
    line = held.wait_fired(f"after_rows:{n}")
    copied = int(line.rsplit(" at ", 1)[1].split()[0].replace(",", ""))
    assert n <= copied < sc.rows, line
    if transport == "native":
        assert copied == n, line  # native paths count rows exactly
    # The copy is still open: the staging transaction has not committed.
    assert held.run_row()["phase"] == "stage"
    if dest_kind == "postgresql":
        assert sc.dest.rows("SELECT count(*) FROM pipekit_staging.m") == [(0,)]
        loader = "jrunner" if transport == "jrunner" else "pipekit stage m"
        copying = [b for b in pipekit_backends(sc.dest.url)  # type: ignore[arg-type]
                   if b[1] == loader and b[2] == "active" and b[3].startswith("COPY") and "FROM STDIN" in b[3]]
        assert copying, pipekit_backends(sc.dest.url)  # type: ignore[arg-type]
    else:
        assert sc.dest.rows("SELECT count(*) FROM pipekit_staging__m") == [(0,)]
        con = sqlite3.connect(sc.dest.path, timeout=0)  # type: ignore[arg-type]
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                con.execute("BEGIN IMMEDIATE")
        finally:
            con.close()
    res = held.finish()
    assert res.rows_staged == sc.rows and sc.dest.table() == sc.after
    assert held.stderr().count("pipekit failpoint: after_rows") == 1  # once per copy


def test_after_rows_beyond_the_source_never_fires(tmp_path: Path, pg_db: str, monkeypatch, capfd) -> None:
    sc = Scenario.build(tmp_path, pg_db, "postgresql", rows=50)
    held = Held(sc, monkeypatch, capfd, "after_rows:51:raise")
    held.finish()
    assert "pipekit failpoint" not in held.stderr()


@pytest.mark.parametrize(
    "spec, why",
    [
        ("before_reslove:kill", "unknown point 'before_reslove'"),
        ("after_rows:kill", "needs a row count"),
        ("before_merge_commit:explode", "unknown action 'explode'"),
        ("after_resolve:sleep:soon", "unknown action 'sleep:soon'"),
        ("after_resolve", "no action"),
    ],
)
def test_malformed_spec_is_an_error_not_a_no_op(spec: str, why: str, monkeypatch) -> None:
    monkeypatch.setenv("PIPEKIT_FAILPOINT", spec)
    with pytest.raises(FailpointError, match=why):
        failpoints.hit("before_resolve")


def test_parse_forms() -> None:
    got = failpoints.parse("after_rows:1000:sleep:60, before_hook:2:raise,before_hook:kill,after_resolve:sleep:0.5")
    assert [(f.point, f.arg, f.action) for f in got] == [
        ("after_rows", 1000, "sleep:60"),
        ("before_hook", 2, "raise"),
        ("before_hook", None, "kill"),
        ("after_resolve", None, "sleep:0.5"),
    ]
