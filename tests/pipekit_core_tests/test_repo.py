"""The repository on both backends: migrations, catalog, run log, locks across processes.

Every test taking the ``repo`` fixture runs twice: on a SQLite file and on a fresh PostgreSQL
database (``pg_db``). ``raw(repo)`` reads and writes the tables behind the repository's back.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pipekit_core.config import load_settings
from pipekit_core.errors import ConfigError, RepositoryError, SecretError
from pipekit_core.models import Connection, Group, Hook, Module, Watermark
from pipekit_core.repo import (
    LATEST_VERSION,
    LOG_CAP,
    MIGRATIONS,
    LockOwner,
    Repository,
    iso,
    utcnow,
)
from pipekit_core.repo_backends import PG_SCHEMA, DatabaseURL, Row, host_identity, machine_id, pg_sql
from pipekit_core.secrets import redact, register_secret
from tests.conftest import PG_PASSWORD

TABLES = {"schema_migrations", "connections", "modules", "watermarks", "hooks", "groups",
          "run_log", "module_locks"}


class Raw:
    """Plain SQL on the repository's tables (``?`` placeholders), bypassing the Repository."""

    def __init__(self, repo: Repository) -> None:
        self.pg = repo.backend == "postgresql"
        if self.pg:
            url = repo.path
            assert isinstance(url, DatabaseURL)
            self.con: object = psycopg.connect(url.conninfo(), autocommit=True,
                                               row_factory=lambda c: (lambda v: Row(tuple(d.name for d in c.description), v)))
            self.con.execute(f"SET search_path = {PG_SCHEMA}")  # type: ignore[attr-defined]
        else:
            self.con = sqlite3.connect(repo.path, isolation_level=None)
            self.con.row_factory = sqlite3.Row  # type: ignore[attr-defined]

    def execute(self, sql: str, params: Sequence[object] = ()) -> list:
        cur = self.con.execute(pg_sql(sql) if self.pg else sql, params)  # type: ignore[attr-defined]
        return cur.fetchall() if cur.description else []

    def tables(self) -> set[str]:
        if self.pg:
            return {r[0] for r in self.execute("SELECT tablename FROM pg_tables WHERE schemaname = ?", (PG_SCHEMA,))}
        return {r[0] for r in self.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}

    def columns(self, table: str) -> set[str]:
        if self.pg:
            return {r[0] for r in self.execute("SELECT column_name FROM information_schema.columns "
                                               "WHERE table_schema = ? AND table_name = ?", (PG_SCHEMA, table))}
        return {r["name"] for r in self.execute(f"PRAGMA table_info({table})")}

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()  # type: ignore[attr-defined]


def raw(repo: Repository) -> Raw:
    return Raw(repo)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def set_heartbeat(repo: Repository, module: str, seconds_ago: float) -> None:
    with raw(repo) as con:
        con.execute("UPDATE module_locks SET heartbeat_at = ? WHERE module = ?",
                    (iso(utcnow() - timedelta(seconds=seconds_ago)), module))
    con.close()


def new_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """A place for a new repository: a file under tmp_path, or a fresh PostgreSQL database URL."""
    return tmp_path / "sub" / "dir" / "pipekit.db" if kind == "sqlite" else request.getfixturevalue("pg_db")


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    return Repository(new_database(request.param, tmp_path, request))


@pytest.fixture
def sqlite_repo(tmp_path: Path) -> Repository:
    return Repository(tmp_path / "sub" / "dir" / "pipekit.db")


# -- migrations -----------------------------------------------------------------------------

def test_fresh_migrate_creates_everything(repo: Repository) -> None:
    if repo.backend == "sqlite":
        assert not repo.path.parent.exists()
    assert repo.schema_version() == 0
    applied = repo.migrate()
    assert applied == [name for _, name, _ in MIGRATIONS]
    assert repo.schema_version() == LATEST_VERSION == 5
    with raw(repo) as con:
        assert TABLES | {"run_log_lines"} == con.tables()
        versions = con.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        assert [(v, n) for v, n, _ in versions] == [(1, "base_schema"), (2, "run_log_options_and_columns"),
                                                 (3, "fencing_tokens"), (4, "windows_and_deletes"),
                                                 (5, "run_log_lines")]
        assert all(a for _, _, a in versions)


def test_sqlite_file_is_in_wal_mode_and_owner_only(sqlite_repo: Repository) -> None:
    sqlite_repo.migrate()
    assert isinstance(sqlite_repo.path, Path) and sqlite_repo.path.stat().st_mode & 0o777 == 0o600
    with raw(sqlite_repo) as con:
        assert con.execute("PRAGMA journal_mode")[0][0] == "wal"


def test_migrate_twice_is_noop(repo: Repository) -> None:
    repo.migrate()
    assert repo.migrate() == []
    assert Repository(repo.path).migrate() == []
    assert repo.schema_version() == LATEST_VERSION


def test_upgrade_from_version_1_keeps_rows(repo: Repository) -> None:
    assert repo.migrate(target=1) == ["base_schema"]
    assert repo.schema_version() == 1
    with raw(repo) as con:
        cols = con.columns("run_log")
        assert "module" in cols and "options" not in cols and "source_columns" not in cols
        con.execute("""INSERT INTO run_log (module, status, "trigger", started_at, rows_staged)
                       VALUES ('orders', 'success', 'cli', '2024-01-01T00:00:00.000+00:00', 42)""")
    fresh = Repository(repo.path)
    assert fresh.migrate() == ["run_log_options_and_columns", "fencing_tokens", "windows_and_deletes", "run_log_lines"]
    assert fresh.schema_version() == 5
    run = fresh.last_run("orders")
    assert run is not None and run["rows_staged"] == 42 and run["options"] is None
    fresh.update_run(run["id"], source_columns=[["id", "INTEGER"]])
    assert fresh.get_run(run["id"])["source_columns"] == [["id", "INTEGER"]]  # type: ignore[index]


def test_first_use_migrates(repo: Repository) -> None:
    run_id = repo.start_run("m", trigger="cli")
    assert repo.get_run(run_id) is not None
    assert repo.schema_version() == LATEST_VERSION


def test_wal_mode_on(sqlite_repo: Repository) -> None:
    sqlite_repo.history()
    with raw(sqlite_repo) as con:
        assert con.execute("PRAGMA journal_mode")[0][0] == "wal"


def test_not_a_database_is_repository_error(tmp_path: Path) -> None:
    bad = tmp_path / "pipekit.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(RepositoryError) as e:
        Repository(bad).migrate()
    assert str(bad) in str(e.value) and "PIPEKIT_DB" in str(e.value)


def test_unwritable_folder_is_repository_error(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(RepositoryError) as e:
        Repository(blocker / "pipekit.db").migrate()
    assert "PIPEKIT_DB" in str(e.value)


def test_newer_schema_is_refused(repo: Repository) -> None:
    repo.migrate()
    with raw(repo) as con:
        con.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'x')")
    with pytest.raises(RepositoryError, match="newer"):
        Repository(repo.path).migrate()


# -- catalog --------------------------------------------------------------------------------

@dataclass
class FakeCatalog:
    connections: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)

    def group_of(self, name: str) -> str | None:
        return next((g for g, grp in self.groups.items() if name in grp.modules), None)


def test_sync_catalog(repo: Repository) -> None:
    register_secret("lit3ral-Pw")
    cat = FakeCatalog(
        connections={
            "dw": Connection(url="postgresql://h/db", user="u", password="$DW_PASSWORD", name="dw"),
            "src": Connection(url="jdbc:as400://x", user="u", password="lit3ral-Pw", name="src"),
            "lite": Connection(url="sqlite:///x.db", name="lite"),
        },
        modules={
            "orders": Module(name="orders", source="src", dest="dw", dest_table="public.orders",
                             query="select * from o where ts > '{since}'", strategy="incremental",
                             merge_key="id, line", sql="select * from o where ts > '{since}'",
                             watermarks=[Watermark(name="since", sql="select max(ts) from public.orders",
                                                   default="1900-01-01")],
                             hooks=[Hook(sql="analyze public.orders"), Hook(sql="x", run_on="failure")],
                             source_file="module_defs/orders.yaml"),
            "items": Module(name="items", source="src", dest="dw", dest_table="items", query="select 1",
                            enabled=False),
        },
        groups={"nightly": Group(modules=["orders"], schedule="0 2 * * *")},
    )
    repo.sync_catalog(cat)
    with raw(repo) as con:
        conns = {r["name"]: dict(r) for r in con.execute("SELECT * FROM connections")}
        assert conns["dw"]["password_ref"] == "$DW_PASSWORD"
        assert conns["src"]["password_ref"] == "***"
        assert conns["lite"]["password_ref"] is None
        dump = "\n".join(str(tuple(r)) for t in TABLES for r in con.execute(f'SELECT * FROM "{t}"'))
        assert "lit3ral-Pw" not in dump
        wms = con.execute("SELECT * FROM watermarks")
        assert [(w["module"], w["name"], w["default_value"]) for w in wms] == [("orders", "since", "1900-01-01")]
        hooks = con.execute("SELECT run_on FROM hooks ORDER BY position")
        assert [h[0] for h in hooks] == ["success", "failure"]
        grp = con.execute('SELECT * FROM "groups"')[0]
        assert json.loads(grp["modules"]) == ["orders"] and grp["stop_on_failure"] == 1
    mods = {m["name"]: m for m in repo.catalog_modules()}
    assert mods["orders"]["merge_key"] == ["id", "line"]
    assert mods["orders"]["group"] == "nightly" and mods["items"]["group"] is None
    assert mods["items"]["enabled"] is False and mods["orders"]["enabled"] is True
    assert mods["orders"]["definition"]["sql"].startswith("select * from o")
    # a second sync replaces the contents
    repo.sync_catalog(FakeCatalog(modules={"items": cat.modules["items"]}))
    assert [m["name"] for m in repo.catalog_modules()] == ["items"]
    with raw(repo) as con:
        assert con.execute("SELECT count(*) FROM watermarks")[0][0] == 0
        assert con.execute("SELECT count(*) FROM connections")[0][0] == 0


# -- run log --------------------------------------------------------------------------------

def test_run_log_round_trip_and_redaction(repo: Repository) -> None:
    secret = "S3cr3t-Pa55word"
    register_secret(secret)
    rid = repo.start_run("orders", trigger="dagster", transport="native", dagster_run_id="abc-123",
                         options={"full_refresh": True, "note": f"pw {secret}"})
    run = repo.get_run(rid)
    assert run is not None
    assert run["status"] == "running" and run["trigger"] == "dagster" and run["transport"] == "native"
    assert run["host"] == host_identity() and run["pid"] == os.getpid()
    assert run["options"] == {"full_refresh": True, "note": "pw ***"}
    repo.update_run(rid, phase="stage", watermarks={"since": "2024-01-01"},
                    phase_timings={"watermarks": 0.5}, source_sql=f"select '{secret}'",
                    source_columns=[["id", "INTEGER"], ["name", "TEXT"]])
    repo.append_log(rid, "starting\n")
    repo.append_log(rid, f"connecting with -scp {secret} and password=hunter22")
    repo.finish_run(rid, "error", error=f"boom: login failed for {secret}", rows_staged=10, row_count=None,
                    phase_timings={"watermarks": 0.5, "stage": 1.25})
    run = repo.get_run(rid)
    assert run is not None
    assert run["status"] == "error" and run["phase"] == "stage" and run["rows_staged"] == 10
    assert run["watermarks"] == {"since": "2024-01-01"}
    assert run["phase_timings"] == {"watermarks": 0.5, "stage": 1.25}
    assert run["source_columns"] == [["id", "INTEGER"], ["name", "TEXT"]]
    assert run["error"] == "boom: login failed for ***"
    assert run["source_sql"] == "select '***'"
    assert run["log"] == "starting\nconnecting with -scp *** and password=***\n"
    assert run["finished_at"] >= run["started_at"] and run["duration_s"] >= 0
    with raw(repo) as con:
        dump = "\n".join(str(tuple(r)) for r in con.execute("SELECT * FROM run_log"))
    assert secret not in dump and "hunter22" not in dump


def test_update_run_rejects_unknown_column_and_status(repo: Repository) -> None:
    rid = repo.start_run("m", trigger="cli")
    with pytest.raises(ValueError, match="no column"):
        repo.update_run(rid, bogus=1)
    with pytest.raises(ValueError, match="status"):
        repo.finish_run(rid, "weird")
    assert repo.get_run(rid)["status"] == "running"  # type: ignore[index]


def test_log_appends_cost_the_same_at_the_end_as_at_the_start(repo: Repository) -> None:
    """One row per line: the 4,000th append writes no more than the 1st (the old log column
    was rewritten whole on every line: 68 s for 4,500 lines)."""
    rid = repo.start_run("m", trigger="cli")
    line = "y" * 200
    for i in range(4000):
        repo.append_log(rid, f"{i:05d}{line}")
    with raw(repo) as con:
        assert con.execute("SELECT log FROM run_log WHERE id = ?", (rid,))[0][0] is None  # nothing rewritten
        assert tuple(con.execute("SELECT count(*), max(n) FROM run_log_lines WHERE run_id = ?", (rid,))[0]) == (4000, 4000)
    log = repo.get_run(rid)["log"]  # type: ignore[index]
    assert log.splitlines()[0] == f"00000{line}" and log.splitlines()[-1] == f"03999{line}"
    assert repo.history("m")[0]["log"] == log


def test_log_is_capped_keeping_the_tail(repo: Repository) -> None:
    rid = repo.start_run("m", trigger="cli")
    line = "x" * 9_999
    for i in range(120):
        repo.append_log(rid, f"{i:04d}{line}")
    log = repo.get_run(rid)["log"]  # type: ignore[index]
    assert len(log) <= LOG_CAP
    assert log.startswith("[... earlier log lines dropped ...]\n")
    assert log.endswith(f"0119{line}\n")
    assert "0000" + "x" not in log
    lines = log.splitlines()[1:]
    assert all(len(ln) == 10_003 for ln in lines)  # cut at a line boundary


def test_history_last_run_last_success(repo: Repository) -> None:
    assert repo.history() == [] and repo.last_run("a") is None and repo.last_success("a") is None
    ids = []
    for module, status in [("a", "success"), ("b", "success"), ("a", "error"), ("a", "dry_run")]:
        rid = repo.start_run(module, trigger="cli")
        repo.finish_run(rid, status)
        ids.append(rid)
    assert [r["id"] for r in repo.history()] == ids[::-1]
    assert [r["id"] for r in repo.history("a", limit=2)] == [ids[3], ids[2]]
    assert repo.last_run("a")["id"] == ids[3]  # type: ignore[index]
    assert repo.last_success("a")["id"] == ids[0]  # type: ignore[index]
    assert repo.get_run(9999) is None


# -- locks ----------------------------------------------------------------------------------

def test_lock_acquire_release_only_by_owner(repo: Repository) -> None:
    me = LockOwner.current()
    other = LockOwner("elsewhere", 4242, 9)
    assert str(other) == "pid 4242 on host elsewhere (run 9)"
    assert repo.acquire_lock("m", me).acquired
    again = repo.acquire_lock("m", LockOwner.current())  # same process: still held
    assert not again.acquired and again.holder is not None and again.holder.owner.pid == os.getpid()
    res = repo.acquire_lock("m", other)
    assert not res.acquired and res.holder is not None and res.holder.owner.host == host_identity()
    assert not repo.release_lock("m", other)
    assert not repo.heartbeat("m", other)
    assert repo.heartbeat("m", me)
    rid = repo.start_run("m", trigger="cli")
    repo.set_lock_run_id("m", me, rid)
    lock = repo.get_lock("m")
    assert lock is not None and lock.owner.run_id == rid
    assert [lk.module for lk in repo.locks()] == ["m"]
    assert repo.release_lock("m", me)
    assert repo.get_lock("m") is None and repo.locks() == []
    assert not repo.release_lock("m", me)
    assert repo.acquire_lock("m", other).acquired


def test_stale_takeover_dead_pid(repo: Repository) -> None:
    pid = dead_pid()
    rid = repo.start_run("m", trigger="cli")
    repo.update_run(rid, pid=pid, phase="stage")
    dead = LockOwner(host_identity(), pid, rid)
    assert repo.acquire_lock("m", dead).acquired
    lock = repo.get_lock("m")
    assert lock is not None and lock.is_stale()[0]
    me = LockOwner.current()
    res = repo.acquire_lock("m", me)
    assert res.acquired and res.took_over is not None and res.took_over.owner.pid == pid
    assert repo.get_lock("m").owner.pid == os.getpid()  # type: ignore[union-attr]
    run = repo.get_run(rid)
    assert run is not None and run["status"] == "error" and run["finished_at"]
    assert run["error"].startswith(f"run died: process {pid} on host")
    assert f"lock taken over by {me}" in run["error"]
    assert run["phase"] == "stage"


def test_stale_takeover_old_heartbeat(repo: Repository) -> None:
    rid = repo.start_run("m", trigger="dagster")
    remote = LockOwner("other-host", 1, rid)  # cannot check its pid: only the heartbeat counts
    assert repo.acquire_lock("m", remote).acquired
    set_heartbeat(repo, "m", 60)
    assert not repo.acquire_lock("m", LockOwner.current()).acquired
    set_heartbeat(repo, "m", 600)
    res = repo.acquire_lock("m", LockOwner.current())
    assert res.acquired and res.took_over is not None and res.took_over.owner.host == "other-host"
    run = repo.get_run(rid)
    assert run["status"] == "error" and "no heartbeat for 600s" in run["error"]  # type: ignore[index]
    # the remote owner has lost it
    assert not repo.heartbeat("m", remote) and not repo.release_lock("m", remote)


def test_live_owner_on_this_host_is_never_stale_by_heartbeat_age(repo: Repository) -> None:
    """A paused process (SIGSTOP, a frozen VM) resumes and goes on: its age alone proves nothing."""
    rid = repo.start_run("m", trigger="cli")
    paused = LockOwner(host_identity(), os.getppid(), rid, "tok-a")  # a live process, not us
    assert repo.acquire_lock("m", paused).acquired
    set_heartbeat(repo, "m", 3600)
    lock = repo.get_lock("m")
    assert lock is not None and not lock.is_stale(stale_after=1.0)[0]
    res = repo.acquire_lock("m", LockOwner.current(token="tok-b"), stale_after=1.0)
    assert not res.acquired and res.holder is not None and res.holder.owner.token == "tok-a"
    assert repo.get_run(rid)["status"] == "running"  # type: ignore[index]


def test_lock_rows_are_told_apart_by_token_within_one_process(repo: Repository) -> None:
    a, b = LockOwner.current(token="a"), LockOwner.current(token="b")
    assert repo.acquire_lock("m", a).acquired
    assert repo.heartbeat("m", a) and not repo.heartbeat("m", b)
    assert not repo.release_lock("m", b) and repo.release_lock("m", a)


def test_record_commit_corrects_a_run_that_died_after_its_commit(repo: Repository) -> None:
    rid = repo.start_run("m", trigger="cli")
    repo.update_run(rid, commit_token="tok-1")
    repo.finish_run(rid, "error", error="run died without finishing")
    assert repo.record_commit("m", "tok-1", "2024-01-01 00:00:00+00", by_run=99) == rid
    run = repo.get_run(rid)
    assert run is not None and run["status"] == "committed"
    assert "found on the destination by run 99" in run["error"] and "run died without finishing" in run["error"]
    assert repo.record_commit("m", "tok-1", None, by_run=100) is None  # once
    assert repo.record_commit("m", "unknown", None, by_run=100) is None


def test_takeover_leaves_finished_runs_alone(repo: Repository) -> None:
    rid = repo.start_run("m", trigger="cli")
    repo.finish_run(rid, "success")
    assert repo.acquire_lock("m", LockOwner(host_identity(), dead_pid(), rid)).acquired
    assert repo.acquire_lock("m", LockOwner.current()).took_over is not None
    assert repo.get_run(rid)["status"] == "success"  # type: ignore[index]


def test_force_unlock(repo: Repository) -> None:
    assert repo.force_unlock("m") is None
    rid = repo.start_run("m", trigger="cli")
    owner = LockOwner("h2", 77, rid)
    repo.acquire_lock("m", owner)
    info = repo.force_unlock("m")
    assert info is not None and info.owner == owner
    assert repo.get_lock("m") is None
    run = repo.get_run(rid)
    assert run["status"] == "error" and run["error"] == "lock cleared by pipekit unlock"  # type: ignore[index]


def test_mark_dead_runs(repo: Repository) -> None:
    host = host_identity()
    pid = dead_pid()
    # dead, lock gone, started long ago -> error
    r1 = repo.start_run("a", trigger="cli")
    repo.update_run(r1, pid=pid, started_at=iso(utcnow() - timedelta(minutes=10)))
    # dead, lock gone, just started -> error too (a dead pid is dead)
    r2 = repo.start_run("b", trigger="cli")
    repo.update_run(r2, pid=pid)
    # dead, lock held by someone else -> error
    r3 = repo.start_run("c", trigger="cli")
    repo.update_run(r3, pid=pid)
    repo.acquire_lock("c", LockOwner("other", 5, None))
    # dead, still owns its lock -> error now; the lock is left for the next run to take over
    r4 = repo.start_run("d", trigger="cli")
    repo.update_run(r4, pid=pid, started_at=iso(utcnow() - timedelta(minutes=10)))
    repo.acquire_lock("d", LockOwner(host, pid, r4))
    # alive (this process) -> untouched; other host -> untouched
    r5 = repo.start_run("e", trigger="cli")
    r6 = repo.start_run("f", trigger="cli")
    repo.update_run(r6, host="far-away", pid=pid, started_at=iso(utcnow() - timedelta(minutes=10)))
    assert repo.mark_dead_runs() == 4
    status = {r: repo.get_run(r)["status"] for r in (r1, r2, r3, r4, r5, r6)}  # type: ignore[index]
    assert status == {r1: "error", r2: "error", r3: "error", r4: "error", r5: "running", r6: "running"}
    assert repo.get_lock("d") is not None
    assert repo.get_run(r1)["error"] == f"run died without finishing (process {pid} on {host} is gone)"  # type: ignore[index]
    assert repo.mark_dead_runs() == 0


def _contend(path: Path | DatabaseURL, rounds: int, barrier, results) -> None:  # runs in a child process
    repo = Repository(path)
    me = LockOwner.current()
    for i in range(rounds):
        barrier.wait()
        res = repo.acquire_lock(f"m{i}", me)
        results.put((i, os.getpid(), res.acquired))


def test_two_processes_race_for_the_lock(repo: Repository) -> None:
    repo.migrate()
    rounds = 40
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(repo.path, rounds, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(2 * rounds)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners: dict[int, list[int]] = {}
    for i, pid, acquired in got:
        winners.setdefault(i, [])
        if acquired:
            winners[i].append(pid)
    assert len(winners) == rounds
    assert all(len(w) == 1 for w in winners.values()), winners
    # both processes won some rounds or not: either way each lock names its single winner
    for i, w in winners.items():
        assert repo.get_lock(f"m{i}").owner.pid == w[0]  # type: ignore[union-attr]


def _first_use(path: Path | DatabaseURL, barrier, results) -> None:  # runs in a child process
    barrier.wait()
    try:
        repo = Repository(path)
        repo.start_run("m", trigger="cli")
        results.put(("ok", repo.schema_version()))
    except Exception as e:  # reported to the parent
        results.put(("error", repr(e)))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_several_processes_create_the_same_new_repository(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Four processes using one new repository at the same moment: each migration runs once."""
    ctx = mp.get_context("spawn")
    for attempt in range(2 if kind == "sqlite" else 1):
        where = tmp_path / f"try{attempt}" / "pipekit.db" if kind == "sqlite" else request.getfixturevalue("pg_db")
        path = Repository(where).path
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_first_use, args=(path, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == [("ok", LATEST_VERSION)] * 4
        repo = Repository(path)
        assert len(repo.history()) == 4
        with raw(repo) as con:
            assert con.execute("SELECT count(*) FROM schema_migrations")[0][0] == len(MIGRATIONS)


# -- the backends: settings, URLs, errors, host identity ------------------------------------

def test_database_url_never_shows_its_password_and_resolves_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 pg_db: str) -> None:
    host_db = pg_db.split("@", 1)[1]
    url = DatabaseURL(pg_db)
    assert str(url) == f"postgresql://pipekit@{host_db}" and PG_PASSWORD not in repr(Repository(url).describe())
    assert redact(f"failed: {pg_db}") == f"failed: postgresql://pipekit:***@{host_db}"
    # the password as a $VAR: from the environment, else the secrets file; missing names the variable
    ref = DatabaseURL(f"postgresql://pipekit:$PK_REPO_PW@{host_db}", tmp_path / "secrets.env")
    monkeypatch.delenv("PK_REPO_PW", raising=False)
    with pytest.raises(SecretError, match=r"\$PK_REPO_PW is not set"):
        Repository(ref).migrate()
    (tmp_path / "secrets.env").write_text(f"PK_REPO_PW={PG_PASSWORD}\n")
    repo = Repository(ref)
    assert repo.migrate()[0] == "base_schema" and repo.schema_version() == LATEST_VERSION
    monkeypatch.setenv("PK_REPO_PW", "not-the-password")  # the environment wins
    with pytest.raises(RepositoryError) as e:
        Repository(DatabaseURL(ref.url, tmp_path / "secrets.env")).history()
    assert "password authentication failed" in str(e.value) and "not-the-password" not in str(e.value)
    with pytest.raises(RepositoryError, match="must start with postgresql://"):
        DatabaseURL("mysql://u@h/db")
    with pytest.raises(RepositoryError, match="name the database"):
        DatabaseURL("postgresql://u@h:5432/")


def test_settings_pick_the_backend(tmp_path: Path, pg_db: str) -> None:
    base = {"PIPEKIT_SECRETS": str(tmp_path / "secrets.env")}
    s = load_settings({**base, "PIPEKIT_DB": "state/pk.db"}, cwd=tmp_path)
    assert s.database == tmp_path / "state" / "pk.db" and s.state_dir == tmp_path / "state" / ".pipekit-state"
    s = load_settings({**base, "PIPEKIT_DB": pg_db}, cwd=tmp_path)
    assert isinstance(s.database, DatabaseURL) and s.database.url == pg_db
    assert PG_PASSWORD not in str(s.database) and PG_PASSWORD not in repr(s)
    assert s.database.exists() and s.state_dir == Path.cwd() / ".pipekit-state"
    assert Repository(s.database).backend == "postgresql"
    # the whole value a $VAR; and 'database:' in pipekit.yaml
    s = load_settings({**base, "PIPEKIT_DB": "$PK_DB_URL", "PK_DB_URL": pg_db}, cwd=tmp_path)
    assert isinstance(s.database, DatabaseURL) and s.database.url == pg_db
    (tmp_path / "pipekit.yaml").write_text(f"database: {pg_db}\n")
    s = load_settings(base, cwd=tmp_path)
    assert isinstance(s.database, DatabaseURL) and s.database.dbname == pg_db.rsplit("/", 1)[1]
    assert s.state_dir == tmp_path / ".pipekit-state"
    with pytest.raises(ConfigError, match="PIPEKIT_DB: database setting 'mysql://u:\\*\\*\\*@h/d'"):
        load_settings({**base, "PIPEKIT_DB": "mysql://u:pw1234@h/d"}, cwd=tmp_path)
    with pytest.raises(SecretError, match=r"PIPEKIT_DB: \$NOT_SET_ANYWHERE is not set"):
        load_settings({**base, "PIPEKIT_DB": "$NOT_SET_ANYWHERE"}, cwd=tmp_path)


def test_unreachable_server_is_repository_error_naming_it(tmp_path: Path) -> None:
    with socket_port() as port:
        repo = Repository(f"postgresql://pipekit:{PG_PASSWORD}@127.0.0.1:{port}/nowhere")
        with pytest.raises(RepositoryError) as e:
            repo.history()
    msg = str(e.value)
    assert f"cannot connect to the repository postgresql://pipekit@127.0.0.1:{port}/nowhere" in msg
    assert "PIPEKIT_DB" in msg and PG_PASSWORD not in msg


class socket_port:
    """A local TCP port with nothing listening, for the duration of the block."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def test_host_identity_is_hostname_boot_and_pid_namespace() -> None:
    import socket

    ident = host_identity()
    assert ident.split("#")[0] == socket.gethostname()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    pidns = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    assert machine_id() == f"{boot[:12]}.{pidns}" and ident == f"{socket.gethostname()}#{machine_id()}"
    assert LockOwner.current().host == ident


def test_same_hostname_on_another_machine_goes_by_heartbeat_only(repo: Repository) -> None:
    """A container with our hostname (or this host before a reboot) is another machine: its pid
    means nothing here, so a dead-looking pid is not a takeover; an old heartbeat is."""
    import socket

    twin = LockOwner(f"{socket.gethostname()}#0123456789ab.4026531999", dead_pid(), None)
    legacy = LockOwner(socket.gethostname(), dead_pid(), None)  # a lock row of an older pipekit
    for owner in (twin, legacy):
        assert repo.acquire_lock("m", owner).acquired
        lock = repo.get_lock("m")
        assert lock is not None and not lock.is_stale()[0]
        assert not repo.acquire_lock("m", LockOwner.current()).acquired
        set_heartbeat(repo, "m", 600)
        res = repo.acquire_lock("m", LockOwner.current())
        assert res.acquired and res.took_over is not None and res.took_over.owner == owner
        assert repo.release_lock("m", LockOwner.current())


def test_sqlite_keeps_its_ddl_and_postgresql_gets_translated_ddl(sqlite_repo: Repository, pg_db: str) -> None:
    from pipekit_core.repo_backends import pg_ddl

    sqlite_repo.migrate()
    with raw(sqlite_repo) as con:
        stored = {r[0]: r[1] for r in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")}
    assert stored["connections"] == MIGRATIONS[0][2][0]  # byte for byte what the migration says
    assert "id INTEGER PRIMARY KEY AUTOINCREMENT" in stored["run_log"]
    pg = pg_ddl(MIGRATIONS[0][2][5])
    assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in pg and "duration_s DOUBLE PRECISION" in pg
    assert "pid BIGINT" in pg and "INTEGER" not in pg and " REAL" not in pg
    assert '"user" TEXT' in pg_ddl(MIGRATIONS[0][2][0])
    repo = Repository(pg_db)
    repo.migrate()
    with raw(repo) as con:
        types = {r[0]: r[1] for r in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            (PG_SCHEMA, "run_log"))}
    assert types["id"] == "bigint" and types["duration_s"] == "double precision" and types["started_at"] == "text"
    rid = repo.start_run("m", trigger="cli")
    repo.update_run(rid, rows_read=5_000_000_000, duration_s=0.123456789)
    run = repo.get_run(rid)
    assert run is not None and run["rows_read"] == 5_000_000_000 and run["duration_s"] == 0.123456789


def _child_start_run(path: DatabaseURL, results) -> None:  # runs in a forked child
    results.put(Repository(path).start_run("child", trigger="cli"))


def test_postgresql_pool_survives_a_fork(pg_db: str) -> None:
    """A forked child (Dagster's multiprocess executor, a daemon's worker) opens its own
    connections; the parent's pooled ones go on working."""
    repo = Repository(pg_db)
    parent_run = repo.start_run("parent", trigger="cli")
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    p = ctx.Process(target=_child_start_run, args=(repo.path, results))
    p.start()
    child_run = results.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    repo.append_log(parent_run, "still here")
    assert [r["module"] for r in repo.history()] == ["child", "parent"] and child_run > parent_run
    assert repo.get_run(parent_run)["log"] == "still here\n"  # type: ignore[index]


def test_doctor_reports_the_postgresql_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_db: str) -> None:
    from pipekit_core.doctor import run_doctor

    (tmp_path / "defs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.setenv("PIPEKIT_DEFS", str(tmp_path / "defs"))
    monkeypatch.setenv("PIPEKIT_SECRETS", str(tmp_path / "secrets.env"))
    monkeypatch.setenv("PK_DOCTOR_PW", PG_PASSWORD)
    monkeypatch.setenv("PIPEKIT_DB", pg_db.replace(PG_PASSWORD, "$PK_DOCTOR_PW"))
    lines: list[str] = []
    run_doctor(lines.append)
    host_db = pg_db.split("@", 1)[1]
    repo_line = next(line for line in lines if "repository" in line)
    assert repo_line.startswith(f"ok    repository: postgresql {host_db} (reachable, server ")
    assert repo_line.endswith(f"schema {PG_SCHEMA} version {LATEST_VERSION})")
    assert all(PG_PASSWORD not in line for line in lines)
    monkeypatch.setenv("PIPEKIT_DB", str(tmp_path / "pk.db"))
    lines.clear()
    run_doctor(lines.append)
    assert f"ok    repository: sqlite {tmp_path / 'pk.db'} (schema version {LATEST_VERSION})" in lines
