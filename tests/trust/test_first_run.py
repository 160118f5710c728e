"""First runs: resolvers that can run do run; one that cannot says why.

Before: when the destination table did not exist yet, every resolver on the destination was
skipped, even one reading a control table that exists, and the run then reported "the resolver
returned no row or NULL".
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.reliability._support import Scenario

pytestmark = [pytest.mark.postgres]


def first_run_module(resolver: str, default: str | None) -> str:
    text = f"""
    - name: m
      source: src
      dest: dst
      dest_table: fresh_m
      strategy: incremental
      merge_key: [id]
      query: SELECT id, v, ver FROM t WHERE ver > {{since}}
      watermarks:
        - name: since
          sql: {resolver}
    """
    out = textwrap.dedent(text).lstrip("\n")
    if default is not None:
        out += f"      default: '{default}'\n"
    return out


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_first_run_reads_an_existing_control_table(dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=10, modules="")
    sc.dest.exec("CREATE TABLE ctl (last integer)", "INSERT INTO ctl VALUES (1)")
    sc.write_defs(first_run_module("SELECT last FROM ctl", "100"))
    r = sc.run("run", "m")
    assert r.returncode == 0, (r.stdout, r.stderr)
    run = sc.history()[-1]
    assert run["watermarks"] == {"since": "1"}  # resolved, not the default 100
    assert "since = 1 (resolved)" in r.stdout
    assert sc.dest.rows("SELECT count(*) FROM fresh_m") == [(10,)]  # every row has ver 2 > 1


@pytest.mark.parametrize("dest_kind", ["postgresql", "sqlite"])
def test_first_run_resolver_on_the_missing_table_uses_its_default_and_says_why(dest_kind: str, tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, dest_kind, rows=10, modules="")
    sc.write_defs(first_run_module("SELECT max(ver) FROM fresh_m", "0"))
    r = sc.run("run", "m")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "first run (fresh_m does not exist yet) and its resolver failed with" in r.stdout
    assert "since = 0 (first-run default)" in r.stdout
    assert sc.dest.rows("SELECT count(*) FROM fresh_m") == [(10,)]
    again = sc.run("run", "m")  # the table exists now: resolved from it
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "since = 2 (resolved)" in again.stdout


def test_first_run_without_a_default_names_the_cause(tmp_path: Path, pg_db: str) -> None:
    sc = Scenario.build(tmp_path, pg_db, rows=10, modules="")
    sc.write_defs(first_run_module("SELECT max(ver) FROM fresh_m", None))
    r = sc.run("run", "m")
    assert r.returncode == 1
    assert "first run, its resolver cannot run yet (fresh_m does not exist) and it has no default" in r.stderr
    assert "returned no row or NULL" not in r.stderr
