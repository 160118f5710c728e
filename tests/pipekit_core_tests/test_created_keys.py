"""Destination tables pipekit creates have the keys a user would create: a primary key on
merge_key (so the incremental merge takes its single-DELETE path), unless a staged key has a NULL
part; `primary_key: false` opts out; `indexes:` adds indexes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.partitions._support import Project, site

pytestmark = [pytest.mark.postgres]


def module(extra: str = "", query: str = "SELECT a, b, v FROM s") -> str:
    text = f"""
    - name: m
      source: src
      dest: dst
      dest_table: m_t
      strategy: incremental
      merge_key: [a, b]
      query: {query}
    """
    out = textwrap.dedent(text).strip("\n") + "\n"
    return out + (textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n" if extra.strip() else "")


def key_columns(p: Project) -> list[str]:
    if p.dst.kind == "postgresql":
        rows = p.dst.rows("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                          "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'm_t'::regclass AND i.indisprimary "
                          "ORDER BY array_position(i.indkey, a.attnum)")
        return [r[0] for r in rows]
    rows = p.dst.rows("SELECT name, pk FROM pragma_table_info('m_t') WHERE pk > 0 ORDER BY pk")
    return [r[0] for r in rows]


def project(tmp: Path, pg_db: str, dst_kind: str, rows: str = "(1, 1, 'x'), (1, 2, 'y'), (2, 1, 'z')") -> Project:
    p = Project(tmp, site("postgresql", tmp, pg_db, "src"), site(dst_kind, tmp, pg_db, "dst"))
    p.src.exec("CREATE TABLE s (a integer, b integer, v text)", f"INSERT INTO s VALUES {rows}")
    return p


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_a_created_table_gets_its_primary_key_and_the_merge_its_single_delete(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, dst_kind)
    p.write(module(extra="indexes: [[v]]"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert key_columns(p) == ["a", "b"]
    if dst_kind == "postgresql":
        assert p.dst.rows("SELECT count(*) FROM pg_indexes WHERE tablename = 'm_t' AND indexdef LIKE '%(v)%'") == [(1,)]
    else:
        assert p.dst.rows("SELECT count(*) FROM pragma_index_list('m_t') WHERE name = 'm_t__v_idx'") == [(1,)]
    plan = p.run("plan", "m")
    merge = plan.stdout.split("-- merge SQL (one transaction)")[1].split("-- hooks")[0]
    assert merge.count("DELETE FROM") == 1  # NOT NULL key columns: no NULL-pattern deletes
    p.src.exec("UPDATE s SET v = 'changed' WHERE a = 1 AND b = 2")
    assert p.run("run", "m").returncode == 0
    assert p.dst.rows("SELECT v FROM m_t WHERE a = 1 AND b = 2") == [("changed",)]


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_a_null_key_part_means_no_primary_key_and_the_log_says_why(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, dst_kind, rows="(1, NULL, 'x'), (2, 1, 'y')")
    p.write(module())
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert key_columns(p) == []
    assert "created without a primary key: a staged merge_key ['a', 'b'] has a NULL part" in r.stdout
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(2,)]


def test_primary_key_false_opts_out(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql")
    p.write(module(extra="primary_key: false"))
    assert p.run("run", "m").returncode == 0
    assert key_columns(p) == []


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_unique_keys_and_nullability_are_read_truthfully(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    """A SQLite PRIMARY KEY column takes NULL unless declared NOT NULL (only a lone INTEGER
    PRIMARY KEY cannot): the merge must not take the NOT NULL shortcut on it."""
    from pipekit_core.db import Endpoint, NativeDB
    from pipekit_core.models import Connection
    from pipekit_core.sql.dialects import TableName

    p = project(tmp_path, pg_db, dst_kind)
    p.dst.exec("CREATE TABLE k1 (a integer, b text, PRIMARY KEY (a, b))", "CREATE TABLE k2 (id INTEGER PRIMARY KEY, v text)",
               "CREATE TABLE k3 (a integer NOT NULL, b integer)", "CREATE UNIQUE INDEX k3_a ON k3 (a)")
    url = f"sqlite:{p.dst.path}" if dst_kind == "sqlite" else p.dst.url
    ep = Endpoint(conn=Connection(url=url, name="dst"), user=None, password=None)
    with NativeDB(ep) as db:
        cols = {t: {n: nul for n, _, nul in db.table_columns(TableName(None, t))} for t in ("k1", "k2", "k3")}
        keys = {t: sorted(map(sorted, db.unique_keys(TableName(None, t)))) for t in ("k1", "k2", "k3")}
    assert cols["k1"] == ({"a": False, "b": False} if dst_kind == "postgresql" else {"a": True, "b": True})
    assert cols["k2"]["id"] is False and cols["k3"] == {"a": False, "b": True}
    assert keys == {"k1": [["a", "b"]], "k2": [["id"]], "k3": [["a"]]}
