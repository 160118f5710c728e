"""SQLite -> SQLite inside SQLite (ATTACH + one INSERT ... SELECT): as exact and as safe as the
row-by-row path it replaces. The query's table names mean the source's tables, values arrive as
the per-value checks require, and the source file is only read."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pipekit_core.engine import run_module
from pipekit_core.errors import PipekitError
from tests.helpers import engine_for, sqlite_exec, sqlite_rows, write_defs


def setup(tmp: Path, query: str, *, dest_table: str = "t", columns: str = "", strategy: str = "full") -> None:
    write_defs(tmp / "defs", f"""
connections:
  src: {{url: "sqlite:{tmp / 'src.db'}"}}
  dst: {{url: "sqlite:{tmp / 'dst.db'}"}}
modules:
  - name: m
    source: src
    dest: dst
    dest_table: {dest_table}
    strategy: {strategy}
    query: {query}
{columns}""")


def test_same_table_name_on_both_sides_reads_the_source(tmp_path: Path, monkeypatch) -> None:
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE t (id INTEGER, v TEXT)", "INSERT INTO t VALUES (1, 'source'), (2, 'source')")
    sqlite_exec(tmp_path / "dst.db", "CREATE TABLE t (id INTEGER, v TEXT)", "INSERT INTO t VALUES (9, 'dest')")
    setup(tmp_path, "SELECT id, v FROM t")
    res = run_module(engine_for(tmp_path, monkeypatch), "m")
    assert res.rows_staged == 2
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, v FROM t ORDER BY id") == [(1, "source"), (2, "source")]
    # the attach is gone: the source file lists only its own database afterwards
    assert sqlite_rows(tmp_path / "src.db", "SELECT id FROM t ORDER BY id") == [(1,), (2,)]


def test_a_table_only_the_destination_has_is_never_read(tmp_path: Path, monkeypatch) -> None:
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE other (id INTEGER)")
    sqlite_exec(tmp_path / "dst.db", "CREATE TABLE only_here (id INTEGER)", "INSERT INTO only_here VALUES (1)")
    setup(tmp_path, "SELECT id FROM only_here", dest_table="copy")
    with pytest.raises(PipekitError, match="only_here"):
        run_module(engine_for(tmp_path, monkeypatch), "m")
    assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM sqlite_master WHERE name = 'copy'") == [(0,)]


def test_floats_into_text_keep_their_shortest_exact_form(tmp_path: Path, monkeypatch) -> None:
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE t (id INTEGER, x REAL)", "INSERT INTO t VALUES (1, 1.0 / 3), (2, 0.1), (3, NULL)")
    setup(tmp_path, "SELECT id, x FROM t", dest_table="c",
          columns="    columns: [{source_name: id}, {source_name: x, dest_type: TEXT}]\n")
    run_module(engine_for(tmp_path, monkeypatch), "m")
    got = sqlite_rows(tmp_path / "dst.db", "SELECT id, x, typeof(x) FROM c ORDER BY id")
    # SQLite's own REAL -> TEXT conversion would give '0.333333333333333' (15 digits)
    assert got == [(1, repr(1.0 / 3), "text"), (2, "0.1", "text"), (3, None, "null")]


def test_an_integer_a_real_column_cannot_hold_fails_naming_it(tmp_path: Path, monkeypatch) -> None:
    big = 2**53 + 1
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE t (id INTEGER, n INTEGER)", f"INSERT INTO t VALUES (1, 5), (2, {big})")
    sqlite_exec(tmp_path / "dst.db", "CREATE TABLE c (id INTEGER, n REAL)", "INSERT INTO c VALUES (7, 7.0)")
    setup(tmp_path, "SELECT id, n FROM t", dest_table="c")
    with pytest.raises(PipekitError, match=rf"column 'n' \(REAL\): the integer {big}"):
        run_module(engine_for(tmp_path, monkeypatch), "m")
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, n FROM c") == [(7, 7.0)]


def test_the_source_stays_writable_while_it_is_copied(tmp_path: Path, monkeypatch, capfd) -> None:
    src = tmp_path / "src.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER)")
    con = sqlite3.connect(src)
    with con:
        con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
    con.close()
    setup(tmp_path, "SELECT id FROM t")
    eng = engine_for(tmp_path, monkeypatch)
    monkeypatch.setenv("PIPEKIT_FAILPOINT", "after_rows:1000:sleep:2")
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(run_module(eng, "m")), daemon=True)
    t.start()
    deadline = time.time() + 30
    while "pipekit failpoint: after_rows:1000" not in capfd.readouterr().err and time.time() < deadline:
        time.sleep(0.05)
    writer = sqlite3.connect(src, timeout=0)
    try:  # mid-copy: another process may still write to the source (the copy holds a shared lock only)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (-1)")
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    t.join(60)
    assert out and out[0].rows_staged == 5000  # type: ignore[attr-defined]
    assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM t") == [(5000,)]


def test_a_source_view_reads_the_source_tables_and_full_refresh_writes_once(tmp_path: Path, monkeypatch) -> None:
    sqlite_exec(tmp_path / "src.db", "CREATE TABLE t (id INTEGER, v TEXT)", "INSERT INTO t VALUES (1, 'source')",
                "CREATE VIEW vt AS SELECT id, v FROM t")
    sqlite_exec(tmp_path / "dst.db", "CREATE TABLE t (id INTEGER, v TEXT)", "INSERT INTO t VALUES (9, 'dest')",
                "CREATE TABLE copy (id INTEGER, v TEXT)", "INSERT INTO copy VALUES (5, 'old')")
    setup(tmp_path, "SELECT id, v FROM vt", dest_table="copy")
    eng = engine_for(tmp_path, monkeypatch)
    res = run_module(eng, "m")
    assert res.plan is not None and res.plan.direct is not None  # no staging table: one INSERT ... SELECT
    assert res.rows_deleted == 1 and res.rows_inserted == 1
    assert sqlite_rows(tmp_path / "dst.db", "SELECT id, v FROM copy") == [(1, "source")]
    assert sqlite_rows(tmp_path / "dst.db", "SELECT count(*) FROM sqlite_master WHERE name LIKE 'pipekit_staging%'") == [(0,)]
    log = "\n".join(line for r in eng.repo.history("m", 1) for line in [r.get("log") or ""])
    assert "without staging" in log
