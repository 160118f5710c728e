"""The jrunner stand-in (tests/jrunner_standin/jrunner) against the real test PostgreSQL.

It is run as a subprocess, with argument lists and no shell, exactly as pipekit's jrunner
transport runs the real tool.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import REPO, jdbc_url

pytestmark = [pytest.mark.postgres, pytest.mark.jrunner]

STANDIN = REPO / "tests" / "jrunner_standin" / "jrunner"
PYTHON = sys.executable

TRICKY = [
    (1, "plain", 1.5, True),
    (2, 'it\'s "quoted", with, commas', -2.25, False),
    (3, "multi\nline\r\nvalue\tand tab", 0, None),
    (4, "unicode: żółw ☃ 日本語 🐢", None, True),
    (5, "", 3, False),  # empty string, not NULL
    (6, None, None, None),  # NULL
    (7, "back\\slash \\N and \\. end", 1e10, True),
    (8, "%s {0} $1 ;", 7, False),
]


def _user_pw(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.username or "", parts.password or ""


def src_args(url: str) -> list[str]:
    user, pw = _user_pw(url)
    return ["-scu", jdbc_url(url), "-scn", user, "-scp", pw]


def dst_args(url: str) -> list[str]:
    user, pw = _user_pw(url)
    return ["-dcu", jdbc_url(url), "-dcn", user, "-dcp", pw]


def sql_file(tmp_path: Path, sql: str, name: str = "q.sql") -> str:
    p = tmp_path / name
    p.write_text(sql, encoding="utf-8")
    return str(p)


def run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the stand-in; stdout/stderr decoded as UTF-8 with no newline translation (keeps \r)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JRUNNER_STANDIN_")}
    full_env.update(env or {})
    r = subprocess.run([PYTHON, str(STANDIN), *args], capture_output=True, env=full_env, timeout=timeout)
    r.stdout = r.stdout.decode("utf-8")
    r.stderr = r.stderr.decode("utf-8")
    return r


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql)


def fetch(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql).fetchall()


def make_source(url: str, rows: list[tuple] = TRICKY) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE src (id int, txt text, num double precision, flag boolean)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO src VALUES (%s, %s, %s, %s)", rows)


def assert_trace(stderr: str) -> None:
    assert 'Exception in thread "main" ' in stderr
    assert "\n\tat " in stderr


# ----------------------------------------------------------------------------------------------
# query mode


def test_query_mode_csv_header_and_null_as_empty(pg_db: str, tmp_path: Path) -> None:
    make_source(pg_db)
    sq = sql_file(
        tmp_path,
        "SELECT id, txt, flag, TIMESTAMPTZ '2024-05-01 10:00:00.123456+00' AS ts FROM src ORDER BY id;\n",
    )
    r = run([*src_args(pg_db), "-sq", sq], env={"PGTZ": "UTC"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.split("\n")
    assert lines[0] == "id,txt,flag,ts"
    assert lines[1] == "1,plain,true,2024-05-01 10:00:00.123456+00"
    rows = list(csv.reader(io.StringIO(r.stdout, newline="")))
    assert rows[0] == ["id", "txt", "flag", "ts"]
    by_id = {int(row[0]): row for row in rows[1:]}
    assert len(by_id) == len(TRICKY)
    for id_, txt, _num, flag in TRICKY:
        assert by_id[id_][1] == (txt or "")  # NULL and '' both print as an empty field
        assert by_id[id_][2] == ("" if flag is None else str(flag).lower())


def test_query_mode_tsv_and_empty_result_has_header(pg_db: str, tmp_path: Path) -> None:
    sq = sql_file(tmp_path, "SELECT 1 AS a, 'x' AS b, NULL::int AS c")
    r = run([*src_args(pg_db), "-sq", sq, "-f", "tsv"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a\tb\tc\n1\tx\t\n"
    sq2 = sql_file(tmp_path, "SELECT 1 AS only_col WHERE false", "empty.sql")
    r2 = run([*src_args(pg_db), "-sq", sq2])
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == "only_col\n"


def test_query_mode_single_null_resolver(pg_db: str, tmp_path: Path) -> None:
    sq = sql_file(tmp_path, "SELECT max(x) AS wm FROM (VALUES (NULL::timestamp)) v(x)")
    r = run([*src_args(pg_db), "-sq", sq])
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout, newline="")))
    assert rows == [["wm"], [""]]


def test_bad_sql_is_a_trace_and_exit_1(pg_db: str, tmp_path: Path) -> None:
    sq = sql_file(tmp_path, "SELECT * FROM no_such_table")
    r = run([*src_args(pg_db), "-sq", sq])
    assert r.returncode == 1
    assert r.stdout == ""
    assert_trace(r.stderr)
    assert 'org.postgresql.util.PSQLException: ERROR: relation "no_such_table" does not exist' in r.stderr
    assert _user_pw(pg_db)[1] not in r.stderr


def test_bad_password_never_printed(pg_db: str, tmp_path: Path) -> None:
    sq = sql_file(tmp_path, "SELECT 1")
    args = [*src_args(pg_db), "-sq", sq]
    args[args.index("-scp") + 1] = "Wrong_Pass_998877"
    r = run(args)
    assert r.returncode == 1
    assert_trace(r.stderr)
    assert "password authentication failed" in r.stderr
    assert "Wrong_Pass_998877" not in r.stderr + r.stdout


def test_unknown_jdbc_url_no_suitable_driver(tmp_path: Path) -> None:
    sq = sql_file(tmp_path, "SELECT 1")
    url = "jdbc:as400://ibmi.example;naming=system"
    r = run(["-scu", url, "-scn", "u", "-scp", "p", "-sq", sq])
    assert r.returncode == 1
    assert_trace(r.stderr)
    assert f"java.sql.SQLException: No suitable driver found for {url}" in r.stderr


def test_missing_sql_file_and_usage_errors(pg_db: str, tmp_path: Path) -> None:
    r = run([*src_args(pg_db), "-sq", str(tmp_path / "nope.sql")])
    assert r.returncode == 1
    assert_trace(r.stderr)
    assert "NoSuchFileException" in r.stderr
    r2 = run([*src_args(pg_db), "-sq"])
    assert r2.returncode == 1
    assert "usage" in r2.stderr
    r3 = run([*src_args(pg_db), "-sq", "x.sql", "-dcu", jdbc_url(pg_db)])  # migration without -dt
    assert r3.returncode == 1
    assert "-dt" in r3.stderr


# ----------------------------------------------------------------------------------------------
# migration mode


@pytest.mark.parametrize("bulk", [False, True], ids=["insert", "copy"])
def test_migration_positional_roundtrip(pg_db: str, pg_db2: str, tmp_path: Path, bulk: bool) -> None:
    make_source(pg_db)
    # Destination columns have other names: loading is by position (no column list).
    execute(pg_db2, "CREATE SCHEMA imp; CREATE TABLE imp.dest (k int, t text, n double precision, b boolean)")
    sq = sql_file(tmp_path, "SELECT id, txt, num, flag FROM src ORDER BY id")
    args = [*src_args(pg_db), "-sq", sq, *dst_args(pg_db2), "-dt", "imp.dest"] + (["-b"] if bulk else [])
    r = run(args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith(f"Migrated {len(TRICKY)} rows in ")
    assert r.stdout.endswith(" s\n")
    got = fetch(pg_db2, "SELECT k, t, n, b FROM imp.dest ORDER BY k")
    assert got == [
        tuple(float(x) if i == 2 and x is not None else x for i, x in enumerate(row)) for row in TRICKY
    ]
    # NULL and '' stay apart on both paths
    assert fetch(pg_db2, "SELECT k FROM imp.dest WHERE t IS NULL") == [(6,)]
    assert fetch(pg_db2, "SELECT k FROM imp.dest WHERE t = ''") == [(5,)]


@pytest.mark.parametrize("bulk", [False, True], ids=["insert", "copy"])
def test_migration_types_by_position(pg_db: str, tmp_path: Path, bulk: bool) -> None:
    execute(
        pg_db,
        "CREATE TABLE dest (d date, ts timestamp, tz timestamptz, n numeric(12,4), big bigint, s varchar(20))",
    )
    sq = sql_file(
        tmp_path,
        "SELECT DATE '2024-02-29', TIMESTAMP '2024-05-01 10:00:00.5', "
        "TIMESTAMPTZ '2024-05-01 10:00:00+02', 12345678.1234::numeric, 9007199254740993::bigint, 'O''Brien'",
    )
    r = run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest"] + (["-b"] if bulk else []))
    assert r.returncode == 0, r.stderr
    got = fetch(
        pg_db, "SELECT d::text, ts::text, tz = TIMESTAMPTZ '2024-05-01 08:00:00Z', n::text, big, s FROM dest"
    )
    assert got == [
        ("2024-02-29", "2024-05-01 10:00:00.5", True, "12345678.1234", 9007199254740993, "O'Brien")
    ]


def test_bytea_insert_path_unsupported_copy_path_works(pg_db: str, tmp_path: Path) -> None:
    execute(pg_db, "CREATE TABLE dest (id int, data bytea)")
    sq = sql_file(tmp_path, "SELECT 1, '\\x00ff10'::bytea")
    r = run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest"])
    assert r.returncode == 1
    assert_trace(r.stderr)
    assert "bytea" in r.stderr
    assert fetch(pg_db, "SELECT count(*) FROM dest") == [(0,)]
    r2 = run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest", "-b"])
    assert r2.returncode == 0, r2.stderr
    assert fetch(pg_db, "SELECT data FROM dest") == [(b"\x00\xff\x10",)]


@pytest.mark.parametrize("bulk", [False, True], ids=["insert", "copy"])
def test_clear_flag_empties_destination_first(pg_db: str, tmp_path: Path, bulk: bool) -> None:
    make_source(pg_db)
    execute(
        pg_db,
        "CREATE TABLE dest (k int, t text, n double precision, b boolean); INSERT INTO dest VALUES (99, 'old', 0, true)",
    )
    sq = sql_file(tmp_path, "SELECT id, txt, num, flag FROM src")
    base = [*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest"] + (["-b"] if bulk else [])
    r = run(base)  # without -c: appends
    assert r.returncode == 0, r.stderr
    assert fetch(pg_db, "SELECT count(*) FROM dest") == [(len(TRICKY) + 1,)]
    r = run([*base, "-c"])
    assert r.returncode == 0, r.stderr
    assert fetch(pg_db, "SELECT count(*), count(*) FILTER (WHERE k = 99) FROM dest") == [(len(TRICKY), 0)]


@pytest.mark.parametrize("bulk", [False, True], ids=["insert", "copy"])
def test_progress_ticker_and_count(pg_db: str, tmp_path: Path, bulk: bool) -> None:
    execute(pg_db, "CREATE TABLE dest (id int, v text)")
    sq = sql_file(tmp_path, "SELECT g, 'row ' || g FROM generate_series(1, 25003) g")
    r = run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest"] + (["-b"] if bulk else []))
    assert r.returncode == 0, r.stderr
    first, final, rest = r.stdout.split("\n")
    assert first == "\rrows: 10000\rrows: 20000"
    assert final.startswith("Migrated 25003 rows in ") and final.endswith(" s")
    assert rest == ""
    assert fetch(pg_db, "SELECT count(*), count(DISTINCT id), max(id) FROM dest") == [(25003, 25003, 25003)]


@pytest.mark.parametrize("bulk", [False, True], ids=["insert", "copy"])
def test_fail_after_commits_nothing(pg_db: str, tmp_path: Path, bulk: bool) -> None:
    execute(pg_db, "CREATE TABLE dest (id int, v text); INSERT INTO dest VALUES (-1, 'before')")
    sq = sql_file(tmp_path, "SELECT g, 'r' || g FROM generate_series(1, 12000) g")
    args = [*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest", "-c"] + (["-b"] if bulk else [])
    r = run(args, env={"JRUNNER_STANDIN_FAIL_AFTER": "10500"})
    assert r.returncode == 1
    assert_trace(r.stderr)
    assert "JRUNNER_STANDIN_FAIL_AFTER" in r.stderr
    assert "Migrated" not in r.stdout
    assert fetch(pg_db, "SELECT id, v FROM dest") == [(-1, "before")]


def test_destination_error_is_a_trace_and_rolls_back(pg_db: str, tmp_path: Path) -> None:
    execute(pg_db, "CREATE TABLE dest (id int NOT NULL)")
    sq = sql_file(tmp_path, "SELECT g FROM generate_series(1, 300) g UNION ALL SELECT NULL")
    for extra in ([], ["-b"]):
        r = run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest", *extra])
        assert r.returncode == 1, extra
        assert_trace(r.stderr)
        assert 'PSQLException: ERROR: null value in column "id"' in r.stderr
        assert fetch(pg_db, "SELECT count(*) FROM dest") == [(0,)]


def test_exit_zero_with_trace(pg_db: str, tmp_path: Path) -> None:
    execute(pg_db, "CREATE TABLE dest (id int)")
    sq = sql_file(tmp_path, "SELECT g FROM generate_series(1, 10) g")
    env = {"JRUNNER_STANDIN_EXIT_ZERO_WITH_TRACE": "1"}
    r = run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest", "-b"], env=env)
    assert r.returncode == 0
    assert_trace(r.stderr)
    assert fetch(pg_db, "SELECT count(*) FROM dest") == [(0,)]
    rq = run([*src_args(pg_db), "-sq", sq], env=env)
    assert rq.returncode == 0
    assert_trace(rq.stderr)


def test_invocation_log(pg_db: str, tmp_path: Path) -> None:
    execute(pg_db, "CREATE TABLE dest (id int)")
    log = tmp_path / "calls.jsonl"
    sq = sql_file(tmp_path, "SELECT 1")
    env = {"JRUNNER_STANDIN_LOG": str(log)}
    assert run([*src_args(pg_db), "-sq", sq], env=env).returncode == 0
    assert (
        run([*src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest", "-b", "-c"], env=env).returncode
        == 0
    )
    pw = _user_pw(pg_db)[1]
    text = log.read_text()
    assert pw not in text
    q, m = [json.loads(line) for line in text.splitlines()]
    assert q["mode"] == "query" and q["bulk"] is False
    assert m["mode"] == "migrate" and m["bulk"] is True and m["clear"] is True
    assert m["argv"][m["argv"].index("-scp") + 1] == "***"
    assert m["argv"][m["argv"].index("-dcp") + 1] == "***"
    assert m["dest_table"] == "dest" and m["sql"] == "SELECT 1"
    assert isinstance(m["pid"], int) and isinstance(m["pgid"], int)


def test_log_records_own_process_group(pg_db: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    sq = sql_file(tmp_path, "SELECT 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JRUNNER_STANDIN_")}
    env["JRUNNER_STANDIN_LOG"] = str(log)
    p = subprocess.Popen(
        [PYTHON, str(STANDIN), *src_args(pg_db), "-sq", sq],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    p.communicate(timeout=60)
    assert p.returncode == 0
    rec = json.loads(log.read_text())
    assert rec["pid"] == p.pid and rec["pgid"] == p.pid


def test_runs_directly_via_shebang(pg_db: str, tmp_path: Path) -> None:
    assert os.access(STANDIN, os.X_OK)
    assert STANDIN.read_text().startswith("#!/usr/bin/env python3\n")
    sq = sql_file(tmp_path, "SELECT 'ok' AS status")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JRUNNER_STANDIN_")}
    env["JRUNNER_STANDIN_PYTHON"] = PYTHON  # used only if the shebang's python lacks psycopg
    r = subprocess.run(
        [str(STANDIN), *src_args(pg_db), "-sq", sq], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "status\nok\n"


# ----------------------------------------------------------------------------------------------
# hangs and SIGTERM


def _wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sigterm_during_hang_exits_143_promptly(pg_db: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    sq = sql_file(tmp_path, "SELECT 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JRUNNER_STANDIN_")}
    env.update({"JRUNNER_STANDIN_HANG": "60", "JRUNNER_STANDIN_LOG": str(log)})
    p = subprocess.Popen(
        [PYTHON, str(STANDIN), *src_args(pg_db), "-sq", sq],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: log.exists() and log.read_text().endswith("\n"))
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert p.returncode == 143
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("bulk", [False, True], ids=["insert", "copy"])
def test_sigterm_mid_load_commits_nothing(pg_db: str, tmp_path: Path, bulk: bool) -> None:
    execute(pg_db, "CREATE TABLE dest (id int); INSERT INTO dest VALUES (-1)")
    sq = sql_file(tmp_path, "SELECT g FROM generate_series(1, 30000) g")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JRUNNER_STANDIN_")}
    # HANG delays the start too (4 s), then hangs again once 10,000 rows are loaded.
    env.update({"JRUNNER_STANDIN_HANG_AFTER_ROWS": "10000", "JRUNNER_STANDIN_HANG": "4"})
    p = subprocess.Popen(
        [PYTHON, str(STANDIN), *src_args(pg_db), "-sq", sq, *dst_args(pg_db), "-dt", "dest", "-c"]
        + (["-b"] if bulk else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert p.stdout is not None
        got = b""
        while b"rows: 10000" not in got:  # the ticker is flushed as it is printed
            chunk = os.read(p.stdout.fileno(), 100)
            assert chunk, "stand-in ended before the first tick"
            got += chunk
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
        assert p.returncode == 143
    finally:
        if p.poll() is None:
            p.kill()
    assert fetch(pg_db, "SELECT id FROM dest") == [(-1,)]
    # the destination table is not left locked by a half-finished transaction
    _wait_for(
        lambda: (
            not fetch(
                pg_db,
                "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'dest' AND l.mode = 'RowExclusiveLock'",
            )
        )
    )
