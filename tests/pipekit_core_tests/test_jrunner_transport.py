"""The jrunner transport end to end: the stand-in (tests/jrunner_standin/jrunner) against real
PostgreSQL -> PostgreSQL modules with ``transport: jrunner``, through the engine and the CLI.

What each call did is read back from the stand-in's own log (JRUNNER_STANDIN_LOG: mode, bulk,
argv with passwords masked, pid, pgid), so the tests see jrunner's side, not pipekit's words.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from pipekit_core.config import load_settings
from pipekit_core.db import Endpoint
from pipekit_core.engine import Engine, Event, RunOptions, run_module
from pipekit_core.errors import JrunnerError, PhaseError, TransportError, WatermarkError
from pipekit_core.models import Connection
from pipekit_core.sql.dialects import parse_table_name
from pipekit_core.transport import jrunner as jrunner_mod
from pipekit_core.transport.base import StageRequest, TransportContext
from pipekit_core.transport.jrunner import BULK_ENV, JrunnerTransport
from tests.conftest import PG_PASSWORD, REPO, jdbc_url
from tests.helpers import PIPEKIT, engine_for, env_for, pg_exec, pg_rows, run_cli, write_defs

pytestmark = [pytest.mark.postgres, pytest.mark.jrunner]

STANDIN = REPO / "tests" / "jrunner_standin" / "jrunner"


# -- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def jr_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a jrunner run: the stand-in, its log, and a private temp dir for SQL files."""
    sqltmp = tmp_path / "sqltmp"
    sqltmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sqltmp))  # in-process runs
    for k in list(os.environ):
        if k.startswith("JRUNNER_STANDIN_") or k in (BULK_ENV, "PIPEKIT_FAILPOINT"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    return {
        "PIPEKIT_JRUNNER": str(STANDIN),
        "JRUNNER_STANDIN_LOG": str(tmp_path / "jrunner.log"),
        "TMPDIR": str(sqltmp),  # CLI runs
        "PK_TEST_PW": PG_PASSWORD,
    }


def _defs(tmp: Path, src: str, dst: str, modules: str) -> None:
    head = f"""
connections:
  src:
    url: {jdbc_url(src)}
    user: pipekit
    password: $PK_TEST_PW
  dst:
    url: {jdbc_url(dst)}
    user: pipekit
    password: $PK_TEST_PW
modules:
"""
    write_defs(tmp / "defs", head + textwrap.dedent(modules))


def _calls(tmp: Path) -> list[dict]:
    p = tmp / "jrunner.log"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def _wait_for(pred, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _group_gone(pgid: int) -> bool:
    """No live process is left in process group ``pgid`` (a zombie awaiting its reaper counts as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return False
        except (ProcessLookupError, psutil.Error):
            continue
    return True


def _no_secret_anywhere(tmp: Path, *texts: str) -> None:
    """The password is in no given text, no run-log field, not in pipekit.db, not in jrunner's log."""
    for t in texts:
        assert PG_PASSWORD not in t
    for f in tmp.glob("pipekit.db*"):
        assert PG_PASSWORD.encode() not in f.read_bytes(), f
    log = tmp / "jrunner.log"
    if log.exists():
        assert PG_PASSWORD not in log.read_text()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a lazy init to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _staging_gone(url: str, module: str) -> bool:
    return pg_rows(url, f"SELECT to_regclass('pipekit_staging.{module}') IS NULL") == [(True,)]


# -- staging, resolvers, column order ---------------------------------------------------------------

ORDERED = """
  - name: m
    source: src
    dest: dst
    dest_table: m
    transport: jrunner
    strategy: incremental
    merge_key: [id]
    query: SELECT id, note, name AS customer, amount, ts FROM t WHERE id > {since} ORDER BY id
    watermarks:
      - name: since
        sql: SELECT max(id) FROM m
        default: '0'
    columns:
      - {source_name: id}
      - {source_name: note}
      - {source_name: customer, dest_name: client}
      - {source_name: amount}
      - {source_name: ts}
"""

ROWS = [
    (1, "n1", "plain", "1.50", "2024-05-01 10:00:00+00"),
    (2, "", 'it\'s "quoted", with, commas', None, "2024-05-02 00:00:00+00"),
    (3, None, None, "0.00", None),
    (4, "back\\slash \\N", "multi\nline\ttab ünï ☃", "-2.25", "2024-05-03 12:30:00.5+00"),
]


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk-copy", "insert-path"])
def test_staging_by_position_merge_by_name(
    bulk: bool, tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _defs(tmp_path, pg_db, pg_db2, ORDERED)
    pg_exec(pg_db, "CREATE TABLE t (id integer, name text, amount numeric(10,2), note text, ts timestamptz)")
    with psycopg.connect(pg_db, autocommit=True) as c:
        for r in ROWS:
            c.execute("INSERT INTO t (id, note, name, amount, ts) VALUES (%s, %s, %s, %s, %s)", r)
    # The destination's columns are in another order than the query's, and renamed (client).
    pg_exec(pg_db2, "CREATE TABLE m (amount numeric(10,2), ts timestamptz, client text, note text, id integer PRIMARY KEY)")
    if not bulk:
        monkeypatch.setenv(BULK_ENV, "off")
    eng = engine_for(tmp_path, monkeypatch, jr_env)
    events: list[Event] = []
    r1 = run_module(eng, "m", on_event=events.append)
    assert r1.status == "success" and r1.transport == "jrunner"
    assert r1.rows_read is None and r1.rows_staged == 4 and r1.row_count == 4
    assert r1.watermarks == {"since": "0"}  # empty destination: max(id) is NULL -> empty field -> default
    assert r1.plan is not None and [c.name for c in r1.plan.staging_columns] == ["id", "note", "client", "amount", "ts"]
    got = pg_rows(pg_db2, "SELECT id, note, client, amount::text, ts FROM m ORDER BY id")
    assert got == pg_rows(pg_db, "SELECT id, note, name, amount::text, ts FROM t ORDER BY id")
    assert [g[:4] for g in got] == [r[:4] for r in ROWS]  # NULL and '' kept apart, text intact

    # Round 2: the resolver (query mode, on the destination) returns 4.
    pg_exec(pg_db, "INSERT INTO t VALUES (5, 'e', 9.99, 'n5', now())")
    r2 = run_module(eng, "m", on_event=events.append)
    assert r2.watermarks == {"since": "4"} and r2.rows_staged == 1 and r2.row_count == 5

    calls = _calls(tmp_path)
    assert [c["mode"] for c in calls] == ["query", "migrate", "query", "migrate"]
    for c in calls:
        argv = c["argv"]
        assert c["pgid"] == c["pid"] != os.getpgid(0)  # its own process group
        assert argv[argv.index("-scp") + 1] == "***"
        assert not Path(argv[argv.index("-sq") + 1]).exists()  # SQL file removed
        if c["mode"] == "query":  # resolvers: source flags only, on the resolver's connection (dest)
            assert "-dcu" not in argv and "-b" not in argv and not c["bulk"]
            # the session settings ride on the URL (pgjdbc options=), as for every PostgreSQL session
            assert argv[argv.index("-scu") + 1].startswith(jdbc_url(pg_db2) + "?options=")
            assert c["sql"] == "SELECT max(id) FROM m"
        else:
            assert c["bulk"] is bulk and ("-b" in argv) is bulk
            assert argv[argv.index("-scu") + 1].startswith(jdbc_url(pg_db) + "?options=")
            assert argv[argv.index("-dcu") + 1].startswith(jdbc_url(pg_db2) + "?options=")
            assert argv[argv.index("-dt") + 1] == '"pipekit_staging"."m"'
    assert list((tmp_path / "sqltmp").iterdir()) == []
    assert _staging_gone(pg_db2, "m")
    logs = [e.message for e in events if e.kind == "log"]
    assert any(m.startswith("jrunner command: ") and "-dcp ***" in m for m in logs)
    _no_secret_anywhere(tmp_path, *(e.message for e in events))


def test_resolver_values_in_query_mode(tmp_path: Path, pg_db: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    def module(name: str, sql: str, default: str | None = "d0") -> str:
        d = f"\n        default: '{default}'" if default is not None else ""
        return f"""
  - name: {name}
    source: src
    dest: dst
    dest_table: {name}
    transport: jrunner
    strategy: append
    query: SELECT id FROM t WHERE note > '{{w}}'
    watermarks:
      - name: w
        connection: src
        sql: {sql}{d}
"""

    mods = {
        "no_row": 'SELECT note FROM t WHERE false',
        "empty": "SELECT ''::text",
        "null_value": "SELECT NULL::text AS v",
        "first": "SELECT v, w FROM (VALUES ('2024-05-01 10:00:00+00', 'x'), ('zzz', 'y')) q(v, w)",
        "csvish": """'SELECT ''x,y "z"'' AS v'""",
        "quote": "\"SELECT 'a''''b' AS v\"",
        "nodefault": "SELECT NULL::text AS v",
    }
    body = "".join(module(n, s, None if n == "nodefault" else "d0") for n, s in mods.items())
    _defs(tmp_path, pg_db, pg_db, body)
    pg_exec(pg_db, "CREATE TABLE t (id integer, note text)")
    eng = engine_for(tmp_path, monkeypatch, jr_env)

    def plan(name: str):  # noqa: ANN202
        return eng.new_run(name, RunOptions(dry_run=True)).plan_only().watermarks["w"]

    for name in ("no_row", "empty", "null_value"):
        w = plan(name)
        assert (w.value, w.source) == ("d0", "default"), name
    assert plan("first").value == "2024-05-01 10:00:00+00"
    assert plan("csvish").value == 'x,y "z"'
    with pytest.raises(WatermarkError, match=r"watermark 'w' value refused.*\"'\""):
        plan("quote")
    with pytest.raises(WatermarkError, match="has no value"):
        plan("nodefault")
    calls = _calls(tmp_path)
    assert len(calls) == 7 and {c["mode"] for c in calls} == {"query"} and not any(c["bulk"] for c in calls)

    # An exception trace on stderr is a failure even with exit code 0.
    monkeypatch.setenv("JRUNNER_STANDIN_EXIT_ZERO_WITH_TRACE", "1")
    jr = JrunnerTransport(TransportContext(jrunner=str(STANDIN)))
    with pytest.raises(JrunnerError) as ei:
        jr.query_value(eng.endpoint("src"), "SELECT 1")
    assert ei.value.exit_code == 0 and "-scp ***" in ei.value.command and PG_PASSWORD not in str(ei.value)
    assert any("I/O error" in line for line in ei.value.last_lines)
    assert list((tmp_path / "sqltmp").iterdir()) == []


def test_progress_ticks_are_events_not_log_lines(
    tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _defs(
        tmp_path,
        pg_db,
        pg_db2,
        """
  - name: big
    source: src
    dest: dst
    dest_table: big
    transport: jrunner
    strategy: full
    query: SELECT g AS id, repeat('x', 20) AS pad FROM generate_series(1, 25000) g
""",
    )
    eng = engine_for(tmp_path, monkeypatch, jr_env)
    events: list[Event] = []
    r = run_module(eng, "big", on_event=events.append)
    assert r.rows_staged == 25000 and r.row_count == 25000 and r.rows_read is None
    progress = [e.rows for e in events if e.kind == "progress"]
    assert 10000 in progress and 20000 in progress and progress == sorted(progress)
    logs = [e.message for e in events if e.kind == "log"]
    assert not any("rows: " in m for m in logs), logs
    assert any(m.startswith("jrunner: Migrated 25000 rows") for m in logs)
    stored = eng.repo.get_run(r.run_id)["log"]  # type: ignore[index]
    assert "Migrated 25000 rows" in stored and "rows: 10000" not in stored


# -- failures -------------------------------------------------------------------------------------

SIMPLE = """
  - name: m
    source: src
    dest: dst
    dest_table: m
    transport: jrunner
    strategy: full
    query: SELECT g AS id, 'v' || g AS v FROM generate_series(1, 1000) g
"""


@pytest.mark.parametrize("fault", ["fail_after", "exit_zero_with_trace"])
def test_failure_mid_load_leaves_destination(
    fault: str, tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _defs(tmp_path, pg_db, pg_db2, SIMPLE)
    pg_exec(pg_db2, "CREATE TABLE m (id integer, v text)", "INSERT INTO m VALUES (9, 'old')")
    eng = engine_for(tmp_path, monkeypatch, jr_env)
    if fault == "fail_after":
        monkeypatch.setenv("JRUNNER_STANDIN_FAIL_AFTER", "500")
    else:
        monkeypatch.setenv("JRUNNER_STANDIN_EXIT_ZERO_WITH_TRACE", "1")
    events: list[Event] = []
    with pytest.raises(PhaseError) as ei:
        run_module(eng, "m", on_event=events.append)
    err = ei.value
    assert err.phase == "stage"
    jerr = getattr(err.cause, "original", err.cause)
    assert isinstance(jerr, JrunnerError)
    assert jerr.exit_code == (1 if fault == "fail_after" else 0)
    assert "-scp ***" in jerr.command and "-dcp ***" in jerr.command and str(STANDIN) in jerr.command
    marker = "JRUNNER_STANDIN_FAIL_AFTER" if fault == "fail_after" else "I/O error"
    assert any(marker in line for line in jerr.last_lines)
    assert pg_rows(pg_db2, "SELECT id, v FROM m") == [(9, "old")]
    assert _staging_gone(pg_db2, "m") and eng.repo.get_lock("m") is None
    last = eng.repo.history("m")[0]
    assert last["status"] == "error" and last["transport"] == "jrunner"
    assert "-dcp ***" in last["error"] and f"exit code {jerr.exit_code}" in last["error"]
    assert last["rows_read"] is None
    _no_secret_anywhere(tmp_path, str(err), json.dumps(last, default=str), *(e.message for e in events))
    assert list((tmp_path / "sqltmp").iterdir()) == []


@pytest.mark.parametrize("launcher", ["direct", "stubborn-wrapper"])
def test_timeout_stops_the_process_group(
    launcher: str, tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _defs(tmp_path, pg_db, pg_db2, SIMPLE + "    timeout: 2\n")
    pg_exec(pg_db2, "CREATE TABLE m (id integer, v text)", "INSERT INTO m VALUES (9, 'old')")
    if launcher == "stubborn-wrapper":
        # Like a launcher script starting java: it ignores SIGTERM and outlives its child, so only
        # the SIGKILL to the whole group after the grace period ends it.
        wrapper = tmp_path / "jrunner-wrapper"
        wrapper.write_text(f"#!/bin/sh\ntrap '' TERM\n'{STANDIN}' \"$@\"\nsleep 60\n")
        wrapper.chmod(0o755)
        jr_env = {**jr_env, "PIPEKIT_JRUNNER": str(wrapper)}
        monkeypatch.setattr(jrunner_mod, "GRACE_SECONDS", 1.5)
    eng = engine_for(tmp_path, monkeypatch, jr_env)
    monkeypatch.setenv("JRUNNER_STANDIN_HANG", "60")
    t0 = time.monotonic()
    with pytest.raises(PhaseError):
        run_module(eng, "m")
    elapsed = time.monotonic() - t0
    (call,) = _calls(tmp_path)
    assert call["mode"] == "migrate"
    if launcher == "stubborn-wrapper":
        assert call["pgid"] != call["pid"]  # the stand-in is the wrapper's child, in the wrapper's group
        assert 3.5 <= elapsed < 12  # timeout, then SIGTERM ignored for the grace period, then SIGKILL
    else:
        assert call["pgid"] == call["pid"] and elapsed < 10
    assert _group_gone(call["pgid"]) and not _alive(call["pid"]) and not _alive(call["pgid"])
    last = eng.repo.history("m")[0]
    assert last["status"] == "error" and "timed out after 2 s" in last["error"]
    assert pg_rows(pg_db2, "SELECT id, v FROM m") == [(9, "old")]
    assert _staging_gone(pg_db2, "m") and eng.repo.get_lock("m") is None
    assert list((tmp_path / "sqltmp").iterdir()) == []


def test_cancel_mid_load_after_streamed_progress(
    tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _defs(tmp_path, pg_db, pg_db2, SIMPLE.replace("1000)", "25000)"))
    pg_exec(pg_db2, "CREATE TABLE m (id integer, v text)", "INSERT INTO m VALUES (9, 'old')")
    eng = engine_for(tmp_path, monkeypatch, jr_env)
    # The stand-in sleeps JRUNNER_STANDIN_HANG s before connecting, and again after 10,000 rows.
    monkeypatch.setenv("JRUNNER_STANDIN_HANG_AFTER_ROWS", "10000")
    monkeypatch.setenv("JRUNNER_STANDIN_HANG", "5")
    run = eng.new_run("m", RunOptions())
    seen: dict[str, object] = {}

    def on_event(e: Event) -> None:
        if e.kind == "progress" and "pid" not in seen:
            (call,) = _calls(tmp_path)
            seen["pid"], seen["rows"], seen["at"] = call["pid"], e.rows, time.monotonic()
            seen["alive"] = _alive(call["pid"])  # the tick arrived while jrunner still ran
            threading.Thread(target=run.cancel.cancel, args=("cancelled by test",)).start()

    run.on_event = on_event
    with pytest.raises(PhaseError):
        run.execute()
    assert seen["rows"] == 10000 and seen["alive"] is True
    assert time.monotonic() - float(seen["at"]) < 3  # stopped, not left to finish its 5 s sleep  # type: ignore[arg-type]
    assert run.result.status == "cancelled"
    assert _group_gone(int(seen["pid"])) and not _alive(int(seen["pid"]))  # type: ignore[call-overload]
    assert pg_rows(pg_db2, "SELECT id, v FROM m") == [(9, "old")]
    assert _staging_gone(pg_db2, "m") and eng.repo.get_lock("m") is None
    assert eng.repo.history("m")[0]["status"] == "cancelled"


# -- the CLI ---------------------------------------------------------------------------------------


def _popen_run(tmp: Path, extra: dict[str, str]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("PIPEKIT_CONFIG", None)
    env.update(env_for(tmp, extra))
    return subprocess.Popen(
        [PIPEKIT, "run", "m"], cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_copying(tmp: Path, dst: str) -> dict:
    """Wait until jrunner is in the middle of its COPY into staging; return its log record."""
    call = _wait_for(lambda: next((c for c in _calls(tmp) if c["mode"] == "migrate"), None), 30, "jrunner migration")
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jrunner' "
        "AND datname = current_database() AND query LIKE 'COPY %'"
    )
    _wait_for(lambda: pg_rows(dst, sql) == [(1,)], 30, "jrunner's COPY")
    return call


def test_cli_sigterm_and_sigkill_mid_load(tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str]) -> None:
    _defs(tmp_path, pg_db, pg_db2, SIMPLE)
    pg_exec(pg_db2, "CREATE TABLE m (id integer, v text)", "INSERT INTO m VALUES (9, 'old')")
    # The stand-in sleeps 6 s before connecting, then again with its COPY open after the first batch.
    hang = {**jr_env, "JRUNNER_STANDIN_HANG_AFTER_ROWS": "1", "JRUNNER_STANDIN_HANG": "6"}

    # SIGTERM: cancelled, exit 130, the jrunner group is gone, the destination untouched.
    p = _popen_run(tmp_path, hang)
    call = _wait_copying(tmp_path, pg_db2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (out, err)
    assert "cancelled" in err
    assert _wait_for(lambda: _group_gone(call["pgid"]), 3, "jrunner to end")
    assert pg_rows(pg_db2, "SELECT id, v FROM m") == [(9, "old")] and _staging_gone(pg_db2, "m")
    _no_secret_anywhere(tmp_path, out, err)

    # SIGKILL of pipekit itself: the parent-death signal ends jrunner at once.
    (tmp_path / "jrunner.log").unlink()
    p = _popen_run(tmp_path, hang)
    call = _wait_copying(tmp_path, pg_db2)
    p.kill()
    p.communicate(timeout=30)
    assert _wait_for(lambda: _group_gone(call["pgid"]), 3, "jrunner to die with its parent")
    assert not _alive(call["pid"])
    assert pg_rows(pg_db2, "SELECT id, v FROM m") == [(9, "old")]
    assert not _staging_gone(pg_db2, "m")  # orphaned: the next run recreates it
    assert list((tmp_path / "sqltmp").iterdir()) != []  # the killed run could not remove its SQL file

    # The next run succeeds alone: stale lock taken over, staging recreated, leftovers removed.
    ok = run_cli(["run", "m"], tmp_path, jr_env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "took over a stale lock" in ok.stdout
    assert "m: success: 1,000 staged" in ok.stdout
    assert pg_rows(pg_db2, "SELECT count(*), min(id), max(id) FROM m") == [(1000, 1, 1000)]
    assert _staging_gone(pg_db2, "m")
    assert list((tmp_path / "sqltmp").iterdir()) == []
    assert not (tmp_path / ".pipekit-state" / "jrunner-m.json").exists()
    hist = run_cli(["history", "m"], tmp_path, jr_env)
    statuses = [line.split()[2] for line in hist.stdout.splitlines()[1:] if line.strip()]
    assert statuses == ["success", "error", "cancelled"], hist.stdout
    _no_secret_anywhere(tmp_path, ok.stdout, ok.stderr, hist.stdout)


def test_bulk_flag_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """-b: StageRequest.bulk wins, then PIPEKIT_JRUNNER_BULK, then the destination kind."""

    def req(url: str, bulk: bool | None = None) -> StageRequest:
        ep = Endpoint(Connection(url=url, name="d"), None, None)
        return StageRequest("m", ep, ep, "SELECT 1", parse_table_name("s.m"), [], [], bulk=bulk)

    pg, mssql, maria = "jdbc:postgresql://h/db", "jdbc:sqlserver://h;databaseName=x", "jdbc:mariadb://h/db"
    use = JrunnerTransport.use_bulk
    monkeypatch.delenv(BULK_ENV, raising=False)
    assert use(req(pg)) and use(req(mssql)) and not use(req(maria))
    assert not use(req(pg, bulk=False)) and use(req(maria, bulk=True))
    monkeypatch.setenv(BULK_ENV, "off")
    assert not use(req(pg)) and use(req(pg, bulk=True))
    monkeypatch.setenv(BULK_ENV, "on")
    assert use(req(maria)) and not use(req(maria, bulk=False))
    monkeypatch.setenv(BULK_ENV, "auto")
    assert use(req(pg)) and not use(req(maria))
    monkeypatch.setenv(BULK_ENV, "sometimes")
    with pytest.raises(TransportError, match=BULK_ENV):
        use(req(pg))


# -- transport choice and doctor -------------------------------------------------------------------

CHOICE_DEFS = """
connections:
  pg: {url: "jdbc:postgresql://127.0.0.1:1/x", user: u, password: $NOPE}
  erp: {url: "jdbc:as400://erp.example.com;naming=system", user: u, password: $NOPE}
  mssql: {url: "jdbc:sqlserver://db.example.com:1433;databaseName=x", user: u, password: $NOPE}
  lite: {url: "jdbc:sqlite:data/x.db"}
modules:
  - {name: erp_auto, source: erp, dest: pg, dest_table: a, query: SELECT 1 AS x, strategy: append}
  - {name: mssql_auto, source: mssql, dest: pg, dest_table: b, query: SELECT 1 AS x, strategy: append, transport: auto}
  - {name: pg_auto, source: pg, dest: pg, dest_table: c, query: SELECT 1 AS x, strategy: append}
  - {name: pg_jr, source: pg, dest: pg, dest_table: d, query: SELECT 1 AS x, strategy: append, transport: jrunner}
  - {name: pg_native, source: pg, dest: pg, dest_table: e, query: SELECT 1 AS x, strategy: append, transport: native}
"""


def test_choose_transport(tmp_path: Path) -> None:
    write_defs(tmp_path / "defs", CHOICE_DEFS)
    (tmp_path / "bin").mkdir()
    os.symlink(STANDIN, tmp_path / "bin" / "jrunner")

    def engine(extra: dict[str, str], config: str | None = None) -> Engine:
        env = env_for(tmp_path, extra)
        if config is not None:
            (tmp_path / "pipekit.yaml").write_text(config)
            env["PIPEKIT_CONFIG"] = str(tmp_path / "pipekit.yaml")
        env["PATH"] = "/nonexistent"
        eng = Engine(settings=load_settings(env, cwd=tmp_path), env=env)
        assert not eng.catalog.problems, eng.catalog.problems
        return eng

    def choice(eng: Engine, name: str) -> tuple[str, str]:
        return eng.choose_transport(eng.module(name))

    eng = engine({"PIPEKIT_JRUNNER": str(STANDIN)})
    assert choice(eng, "erp_auto") == ("jrunner", "auto: source 'erp' (as400) has no native driver; jrunner is configured")
    assert choice(eng, "mssql_auto")[0] == "jrunner"
    assert choice(eng, "pg_auto") == ("native", "auto: source 'pg' (postgresql) has a native driver")
    assert choice(eng, "pg_jr") == ("jrunner", "transport: jrunner (module setting)")
    assert choice(eng, "pg_native")[0] == "native"

    # jrunner not found (PIPEKIT_JRUNNER points nowhere, nothing on PATH).
    eng = engine({"PIPEKIT_JRUNNER": str(tmp_path / "nowhere" / "jrunner")})
    assert choice(eng, "pg_auto")[0] == "native"
    with pytest.raises(TransportError, match="PIPEKIT_JRUNNER"):
        choice(eng, "erp_auto")
    with pytest.raises(TransportError, match="jrunner was not found"):
        choice(eng, "pg_jr")

    # Global setting in pipekit.yaml, jrunner found through the config file's `jrunner` key.
    eng = engine({}, "transport: jrunner\njrunner: bin/jrunner\n")
    assert eng.settings.jrunner == str(tmp_path / "bin" / "jrunner")
    assert choice(eng, "pg_auto") == ("jrunner", "transport: jrunner (global setting)")
    assert choice(eng, "mssql_auto")[0] == "jrunner"
    assert choice(eng, "pg_native")[0] == "native"  # the module's own setting wins
    eng = engine({}, "transport: native\njrunner: bin/jrunner\n")
    assert choice(eng, "pg_auto")[0] == "native"
    assert choice(eng, "mssql_auto")[0] == "jrunner"  # auto on the module
    with pytest.raises(TransportError, match="source 'erp' \\(as400\\) has no native driver"):
        choice(eng, "erp_auto")  # global native, but the source has no native driver


def test_auto_choice_is_logged_and_recorded(
    tmp_path: Path, pg_db: str, jr_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_defs(
        tmp_path / "defs",
        f"""
        connections:
          erp: {{url: "jdbc:as400://127.0.0.1:1;naming=system", user: reader, password: $PK_TEST_PW}}
          pg: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
        modules:
          - {{name: from_erp, source: erp, dest: pg, dest_table: a, query: SELECT 1 AS x FROM SYSIBM.SYSDUMMY1, strategy: append}}
          - {{name: from_pg, source: pg, dest: pg, dest_table: b, query: SELECT 1 AS x, strategy: append}}
        """,
    )
    eng = engine_for(tmp_path, monkeypatch, jr_env)
    events: list[Event] = []
    # The stand-in has no AS/400 driver: the run gets as far as jrunner, which fails like Java would.
    with pytest.raises(PhaseError, match="No suitable driver found for jdbc:as400"):
        run_module(eng, "from_erp", on_event=events.append)
    erp = eng.repo.history("from_erp")[0]
    assert erp["transport"] == "jrunner" and erp["status"] == "error"
    assert "transport jrunner (auto: source 'erp' (as400) has no native driver; jrunner is configured)" in erp["log"]
    assert any(e.message.startswith("transport jrunner (auto:") for e in events)
    (call,) = _calls(tmp_path)
    assert call["mode"] == "query" and call["argv"][call["argv"].index("-scu") + 1].startswith("jdbc:as400:")
    assert run_module(eng, "from_pg").transport == "native"
    assert eng.repo.history("from_pg")[0]["transport"] == "native"
    _no_secret_anywhere(tmp_path, erp["error"], erp["log"])


def test_doctor_reports_jrunner(tmp_path: Path, pg_db: str, pg_db2: str, jr_env: dict[str, str]) -> None:
    _defs(tmp_path, pg_db, pg_db2, SIMPLE)
    r = run_cli(["doctor"], tmp_path, jr_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok    jrunner: found at {STANDIN} (used by 1 module(s))" in r.stdout
    for conn in ("src", "dst"):
        assert f"ok    connection '{conn}' (postgresql): native SELECT 1 -> 1; jrunner SELECT 1 -> 1" in r.stdout
    assert [c["mode"] for c in _calls(tmp_path)] == ["query", "query"]

    nowhere = {**jr_env, "PIPEKIT_JRUNNER": str(tmp_path / "nowhere" / "jrunner")}
    r = run_cli(["doctor"], tmp_path, nowhere)
    assert r.returncode == 1
    assert f"FAIL  jrunner: '{tmp_path / 'nowhere' / 'jrunner'}' not found" in r.stdout
    assert "FAIL  connection 'src' (postgresql): native SELECT 1 -> 1; jrunner is needed" in r.stdout

    # A connection jrunner cannot open: doctor names it and shows jrunner's first error line.
    write_defs(
        tmp_path / "defs",
        """
        connections:
          erp: {url: "jdbc:as400://127.0.0.1:1;naming=system", user: reader, password: $PK_TEST_PW}
        """,
        name="erp.yaml",
    )
    r = run_cli(["doctor"], tmp_path, jr_env)
    assert r.returncode == 1
    assert (
        "FAIL  connection 'erp' (as400): jrunner SELECT 1 FROM SYSIBM.SYSDUMMY1 failed (exit code 1): "
        'Exception in thread "main" java.sql.SQLException: No suitable driver found' in r.stdout
    ), r.stdout
    _no_secret_anywhere(tmp_path, r.stdout, r.stderr)
