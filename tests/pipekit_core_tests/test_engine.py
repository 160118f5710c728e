"""The engine end to end on real databases: every strategy, first run, failures, cancellation."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from pipekit_core.engine import RunOptions, run_module
from pipekit_core.errors import PhaseError
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import engine_for, env_for, pg_exec, pg_rows, run_cli, sqlite_exec, sqlite_rows, write_defs

pytestmark = pytest.mark.postgres


def _defs(tmp: Path, src_url: str, dst_url: str, module: str) -> None:
    head = textwrap.dedent(
        f"""
        connections:
          src:
            url: {src_url}
            user: pipekit
            password: $PK_TEST_PW
          dst:
            url: {dst_url}
            user: pipekit
            password: $PK_TEST_PW
        modules:
        """
    )
    write_defs(tmp / "defs", head + module)


def _endpoints(kind: str, tmp: Path, pg_db: str, pg_db2: str) -> tuple[str, str, object, object]:
    """(src jdbc url, dst jdbc url, src handle, dst handle) for a kind like 'sqlite->postgresql'."""
    s, d = kind.split("->")
    src = (f"jdbc:sqlite:{tmp}/src.db", tmp / "src.db") if s == "sqlite" else (jdbc_url(pg_db), pg_db)
    dst = (f"jdbc:sqlite:{tmp}/dst.db", tmp / "dst.db") if d == "sqlite" else (jdbc_url(pg_db2), pg_db2)
    return src[0], dst[0], src[1], dst[1]


def _exec(h: object, *stmts: str) -> None:
    (sqlite_exec if isinstance(h, Path) else pg_exec)(h, *stmts)  # type: ignore[arg-type]


def _rows(h: object, sql: str) -> list[tuple]:
    return (sqlite_rows if isinstance(h, Path) else pg_rows)(h, sql)  # type: ignore[arg-type]


PAIRS = ["sqlite->sqlite", "postgresql->postgresql", "sqlite->postgresql", "postgresql->sqlite"]

MODULE_INC = """
  - name: items
    source: src
    dest: dst
    dest_table: items
    strategy: incremental
    merge_key: [k1, k2]
    query: SELECT k1, k2, "Select", note, updated FROM items WHERE updated > {since}
    watermarks:
      - name: since
        sql: SELECT max(updated) FROM items
        default: '0'
    hooks:
      - sql: CREATE TABLE hook_ran (x integer)
        run_on: success
"""


@pytest.mark.parametrize("pair", PAIRS)
def test_incremental_rounds_with_null_keys(pair: str, tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    su, du, src, dst = _endpoints(pair, tmp_path, pg_db, pg_db2)
    _defs(tmp_path, su, du, MODULE_INC)
    _exec(src, 'CREATE TABLE items (k1 integer, k2 text, "Select" text, note text, updated integer)')
    _exec(
        src,
        "INSERT INTO items VALUES (1, 'a', 'x', 'it''s', 1)",
        "INSERT INTO items VALUES (2, NULL, 'y', 'back\\slash', 1)",
        "INSERT INTO items VALUES (NULL, NULL, 'z', 'ünï', 1)",
    )
    eng = engine_for(tmp_path, monkeypatch)
    r1 = run_module(eng, "items")
    assert r1.status == "success" and r1.rows_staged == 3 and r1.row_count == 3
    # Round 2: NULL-keyed rows change; they must replace, not duplicate.
    _exec(src, "UPDATE items SET note = 'v2', updated = 2 WHERE k1 = 2 OR k1 IS NULL")
    _exec(src, "INSERT INTO items VALUES (3, 'c', 'w', '', 2)")
    _exec(dst, "DROP TABLE hook_ran")
    r2 = run_module(eng, "items")
    assert r2.watermarks == {"since": "1"}
    assert r2.rows_staged == 3 and r2.rows_deleted == 2 and r2.rows_inserted == 3
    got = sorted(_rows(dst, 'SELECT k1, k2, "Select", note FROM items'), key=repr)
    want = sorted(
        [(1, "a", "x", "it's"), (2, None, "y", "v2"), (None, None, "z", "v2"), (3, "c", "w", "")], key=repr
    )
    assert got == want
    assert _rows(dst, "SELECT count(*) FROM hook_ran") == [(0,)]
    hist = eng.repo.history("items")
    assert [h["status"] for h in hist] == ["success", "success"]
    assert eng.repo.get_lock("items") is None


@pytest.mark.parametrize("pair", ["sqlite->sqlite", "postgresql->postgresql"])
def test_full_and_append(pair: str, tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    su, du, src, dst = _endpoints(pair, tmp_path, pg_db, pg_db2)
    _defs(
        tmp_path,
        su,
        du,
        """
  - name: snap
    source: src
    dest: dst
    dest_table: snap
    query: SELECT id, v FROM t
    strategy: full
  - name: log
    source: src
    dest: dst
    dest_table: log
    query: SELECT id, v FROM t
    strategy: append
  - name: empty_guard
    source: src
    dest: dst
    dest_table: snap
    query: SELECT id, v FROM t WHERE 1 = 0
    strategy: full
""",
    )
    _exec(src, "CREATE TABLE t (id integer, v text)", "INSERT INTO t VALUES (1, 'a')", "INSERT INTO t VALUES (2, 'b')")
    eng = engine_for(tmp_path, monkeypatch)
    assert run_module(eng, "snap").row_count == 2
    assert run_module(eng, "log").row_count == 2
    _exec(src, "DELETE FROM t WHERE id = 1", "INSERT INTO t VALUES (3, 'c')")
    assert run_module(eng, "snap").row_count == 2
    assert sorted(_rows(dst, "SELECT id, v FROM snap")) == [(2, "b"), (3, "c")]
    assert run_module(eng, "log").row_count == 4
    with pytest.raises(PhaseError, match="allow_empty"):
        run_module(eng, "empty_guard")
    assert sorted(_rows(dst, "SELECT id FROM snap")) == [(2,), (3,)]


FAIL_POINTS = ["before_resolve", "after_resolve", "after_staging_created", "after_rows:1", "before_merge_commit"]


@pytest.mark.parametrize("point", FAIL_POINTS)
@pytest.mark.parametrize("pair", ["sqlite->sqlite", "postgresql->postgresql"])
def test_failure_in_each_phase_leaves_destination(point: str, pair: str, tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    su, du, src, dst = _endpoints(pair, tmp_path, pg_db, pg_db2)
    _defs(
        tmp_path,
        su,
        du,
        """
  - name: m
    source: src
    dest: dst
    dest_table: m
    query: SELECT id, v FROM t
    strategy: full
    hooks:
      - sql: CREATE TABLE failure_hook_ran (x integer)
        run_on: failure
""",
    )
    _exec(src, "CREATE TABLE t (id integer, v text)", "INSERT INTO t VALUES (1, 'new')")
    _exec(dst, "CREATE TABLE m (id integer, v text)", "INSERT INTO m VALUES (9, 'old')")
    eng = engine_for(tmp_path, monkeypatch)
    monkeypatch.setenv("PIPEKIT_FAILPOINT", f"{point}:raise")
    with pytest.raises(PhaseError, match="failpoint"):
        run_module(eng, "m")
    monkeypatch.delenv("PIPEKIT_FAILPOINT")
    assert _rows(dst, "SELECT id, v FROM m") == [(9, "old")]
    assert _rows(dst, "SELECT count(*) FROM failure_hook_ran") == [(0,)]
    last = eng.repo.history("m")[0]
    assert last["status"] == "error" and "failpoint" in last["error"] and "'m'" in last["error"]
    assert eng.repo.get_lock("m") is None
    staging = "pipekit_staging__m" if pair.endswith("sqlite") else "pipekit_staging.m"
    if pair.endswith("sqlite"):
        assert _rows(dst, f"SELECT count(*) FROM sqlite_master WHERE name = '{staging}'") == [(0,)]
    else:
        assert _rows(dst, f"SELECT to_regclass('{staging}') IS NULL") == [(True,)]
    # and the next run succeeds alone
    assert run_module(eng, "m").row_count == 1


def test_constraint_violation_and_duplicate_keys(tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(
        tmp_path,
        jdbc_url(pg_db),
        jdbc_url(pg_db2),
        """
  - name: c
    source: src
    dest: dst
    dest_table: c
    query: SELECT id, v FROM t
    strategy: incremental
    merge_key: id
""",
    )
    pg_exec(pg_db, "CREATE TABLE t (id integer, v text)", "INSERT INTO t VALUES (1, NULL), (2, 'b')")
    pg_exec(pg_db2, "CREATE TABLE c (id integer primary key, v text NOT NULL)", "INSERT INTO c VALUES (1, 'keep')")
    eng = engine_for(tmp_path, monkeypatch)
    with pytest.raises(PhaseError, match="merge"):
        run_module(eng, "c")
    assert pg_rows(pg_db2, "SELECT id, v FROM c") == [(1, "keep")]
    pg_exec(pg_db, "UPDATE t SET v = 'x'", "INSERT INTO t VALUES (2, 'dup')")
    with pytest.raises(PhaseError, match=r"repeat the merge key.*id=2"):
        run_module(eng, "c")
    assert pg_rows(pg_db2, "SELECT id, v FROM c") == [(1, "keep")]


def test_watermark_injection_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    _defs(
        tmp_path,
        f"jdbc:sqlite:{tmp_path}/src.db",
        f"jdbc:sqlite:{tmp_path}/dst.db",
        """
  - name: w
    source: src
    dest: dst
    dest_table: w
    query: SELECT id FROM t WHERE name > '{since}'
    strategy: append
    watermarks:
      - name: since
        sql: SELECT max(name) FROM t
        connection: src
""",
    )
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE t (id integer, name text)", "INSERT INTO t VALUES (1, 'x''; DROP TABLE t; --')")
    eng = engine_for(tmp_path, monkeypatch)
    with pytest.raises(PhaseError, match="watermark 'since' value refused"):
        run_module(eng, "w")
    with pytest.raises(PhaseError, match="refused"):
        run_module(eng, "w", RunOptions(watermark_overrides={"since": "a' OR '1'='1"}))
    assert sqlite_rows(tmp_path / "src.db", "SELECT count(*) FROM t") == [(1,)]
    r = run_module(eng, "w", RunOptions(watermark_overrides={"since": "a"}))
    assert r.status == "success" and r.row_count == 1


def test_cli_sigterm_cancels(tmp_path: Path, pg_db: str, pg_db2: str) -> None:
    _defs(
        tmp_path,
        jdbc_url(pg_db),
        jdbc_url(pg_db2),
        """
  - name: slow
    source: src
    dest: dst
    dest_table: slow
    query: SELECT g AS id FROM generate_series(1, 1000) g
    strategy: full
""",
    )
    pg_exec(pg_db2, "CREATE TABLE slow (id integer)", "INSERT INTO slow VALUES (42)")
    env = dict(os.environ)
    env.update(env_for(tmp_path, {"PK_TEST_PW": PG_PASSWORD, "PIPEKIT_FAILPOINT": "after_staging_created:sleep:30"}))
    from tests.helpers import PIPEKIT

    p = subprocess.Popen([PIPEKIT, "run", "slow"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    seen = []
    for line in p.stderr:  # held at the point where rows start to arrive (a full refresh: in the merge)
        seen.append(line)
        if "pipekit failpoint: after_staging_created" in line:
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    err = "".join(seen) + err
    assert p.returncode == 130, (out, err)
    assert "cancelled" in err
    assert pg_rows(pg_db2, "SELECT id FROM slow") == [(42,)]
    assert pg_rows(pg_db2, "SELECT to_regclass('pipekit_staging.slow') IS NULL") == [(True,)]
    hist = run_cli(["history", "slow"], tmp_path, {"PK_TEST_PW": PG_PASSWORD})
    assert "cancelled" in hist.stdout
    assert PG_PASSWORD not in out + err + hist.stdout


def test_second_run_fails_naming_holder(tmp_path: Path, pg_db: str, pg_db2: str) -> None:
    _defs(
        tmp_path,
        jdbc_url(pg_db),
        jdbc_url(pg_db2),
        """
  - name: one
    source: src
    dest: dst
    dest_table: one
    query: SELECT 1 AS id
    strategy: full
""",
    )
    extra = {"PK_TEST_PW": PG_PASSWORD}
    env = dict(os.environ)
    env.update(env_for(tmp_path, {**extra, "PIPEKIT_FAILPOINT": "after_resolve:sleep:6"}))
    from tests.helpers import PIPEKIT

    first = subprocess.Popen([PIPEKIT, "run", "one"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    second = run_cli(["run", "one"], tmp_path, extra)
    assert second.returncode == 1
    assert "'one' is already running" in second.stderr and f"pid {first.pid}" in second.stderr
    waited = run_cli(["run", "one", "--wait"], tmp_path, extra, timeout=60)
    assert first.wait(timeout=60) == 0
    assert waited.returncode == 0, waited.stderr
