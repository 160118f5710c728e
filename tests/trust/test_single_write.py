"""Single-write full refreshes: a native full refresh into PostgreSQL copies the source rows
straight into the destination inside the merge transaction (TRUNCATE, then COPY; no staging
table), and keeps every guarantee of the staged path: the destination untouched on any failure
or kill, the empty-result guard, readers never seeing it empty, and DELETE instead of TRUNCATE
where TRUNCATE would change what happens (foreign keys onto the table, ON DELETE triggers, a
reader holding the table)."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pipekit_core import merge as merge_mod
from pipekit_core.engine import run_module
from tests.conftest import PG_PASSWORD
from tests.helpers import engine_for
from tests.partitions._support import Project, site

pytestmark = [pytest.mark.postgres]

OLD = [(1, "old"), (2, "old")]


def full_module(extra: str = "", query: str = "SELECT id, v FROM s") -> str:
    out = f"""
    - name: m
      source: src
      dest: dst
      dest_table: m_t
      strategy: full
      query: {query}
    """
    out = textwrap.dedent(out).strip("\n") + "\n"
    return out + "".join(f"  {line}\n" for line in extra.strip("\n").splitlines())


def project(tmp: Path, pg_db: str, src_kind: str = "postgresql", rows: int = 500) -> Project:
    p = Project(tmp, site(src_kind, tmp, pg_db, "src"), site("postgresql", tmp, pg_db, "dst"))
    p.src.exec("CREATE TABLE s (id integer, v text)")
    if rows:
        p.src.exec("INSERT INTO s VALUES " + ", ".join(f"({i}, 'new')" for i in range(1, rows + 1)))
    p.dst.exec("CREATE TABLE m_t (id integer, v text)", "INSERT INTO m_t VALUES (1, 'old'), (2, 'old')")
    return p


def dest_rows(p: Project) -> list[tuple]:
    return p.dst.rows("SELECT id, v FROM m_t ORDER BY id")


def staging_tables(p: Project) -> list[tuple]:
    return p.dst.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'pipekit_staging' "
                      "AND table_name <> 'pipekit_state'")


@pytest.mark.parametrize("src_kind", ["postgresql", "sqlite"])
def test_full_refresh_loads_straight_into_the_table(src_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, src_kind)
    p.write(full_module())
    plan = p.run("plan", "m")
    assert plan.returncode == 0, plan.stderr
    assert "no staging: a full refresh copies the rows straight into" in plan.stdout
    merge = plan.stdout.split("-- merge SQL (one transaction)")[1]
    assert 'TRUNCATE TABLE "m_t"' in merge and 'COPY "m_t" ("id", "v") FROM STDIN' in merge
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert "every previous row replaced, 500 inserted; 500 rows in m_t" in r.stdout, r.stdout
    assert dest_rows(p) == [(i, "new") for i in range(1, 501)]
    assert staging_tables(p) == []  # no staging table was ever made
    run = p.history("m")[-1]
    assert run["rows_staged"] == 500 and run["rows_inserted"] == 500 and run["row_count"] == 500
    assert run["rows_deleted"] is None and "TRUNCATE" in run["merge_sql"]


@pytest.mark.parametrize("point", ["after_staging_created:raise", "after_rows:200:raise", "after_rows:200:kill",
                                   "before_merge_commit:kill"])
def test_a_failure_or_kill_mid_load_leaves_the_old_rows(point: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db)
    p.write(full_module())
    r = p.run("run", "m", failpoint=point)
    assert r.returncode != 0 and f"pipekit failpoint: {point.rsplit(':', 1)[0]}" in r.stderr, r.stderr
    assert dest_rows(p) == OLD
    assert p.dst.rows("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name LIKE 'pipekit%'") == [(0,)]
    ok = p.run("run", "m")  # (a killed run's lock is taken over as its pid is gone)
    assert ok.returncode == 0, ok.stderr
    assert len(dest_rows(p)) == 500


def test_an_empty_source_is_refused_unless_allowed(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, rows=0)
    p.write(full_module())
    r = p.run("run", "m")
    assert r.returncode == 1 and "the source returned 0 rows" in r.stderr and "allow_empty" in r.stderr, r.stderr
    assert dest_rows(p) == OLD
    p.write(full_module("allow_empty: true"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert dest_rows(p) == []


def test_readers_wait_for_the_commit_and_never_see_it_empty(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db)
    p.write(full_module())
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(p.dst.url, autocommit=True) as c:
            while not stop.is_set():
                seen.append(int(c.execute("SELECT count(*) FROM m_t").fetchone()[0]))  # type: ignore[index]
                time.sleep(0.02)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        r = p.run("run", "m", failpoint="before_merge_commit:sleep:1.5")
    finally:
        stop.set()
        t.join(10)
    assert r.returncode == 0, r.stderr
    assert seen and set(seen) <= {2, 500}, sorted(set(seen))  # the old rows, then the new: never 0, never partial
    assert seen[0] == 2 and seen[-1] == 500


def test_foreign_keys_onto_the_table_mean_delete_not_truncate(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db)
    p.dst.exec("ALTER TABLE m_t ADD PRIMARY KEY (id)",
               "CREATE TABLE child (id integer REFERENCES m_t (id))")
    p.write(full_module())
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert "deleting its rows instead of TRUNCATE: other tables' foreign keys reference it" in r.stdout, r.stdout
    assert p.history("m")[-1]["rows_deleted"] == 2 and len(dest_rows(p)) == 500
    # A referenced row the refresh would remove: the DELETE fails, nothing changes.
    p.dst.exec("INSERT INTO child VALUES (7)")
    p.src.exec("DELETE FROM s WHERE id = 7")
    r = p.run("run", "m")
    assert r.returncode == 1 and "child" in r.stderr, r.stderr
    assert len(dest_rows(p)) == 500 and p.dst.rows("SELECT count(*) FROM m_t WHERE id = 7") == [(1,)]


def test_on_delete_triggers_still_fire(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db)
    p.dst.exec(
        "CREATE TABLE audit (id integer)",
        "CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
        "CREATE TRIGGER m_t_audit AFTER DELETE ON m_t FOR EACH ROW EXECUTE FUNCTION log_delete()",
    )
    p.write(full_module())
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert "it has ON DELETE triggers" in r.stdout
    assert p.dst.rows("SELECT id FROM audit ORDER BY id") == [(1,), (2,)]


def test_a_reader_holding_the_table_gets_delete_after_the_lock_wait(tmp_path: Path, pg_db: str, monkeypatch) -> None:
    p = project(tmp_path, pg_db, rows=50)
    p.write(full_module())
    monkeypatch.setattr(merge_mod, "LOCK_WAIT_S", 1)
    eng = engine_for(tmp_path, monkeypatch, {"PK_TEST_PW": PG_PASSWORD})
    with psycopg.connect(p.dst.url) as holder:  # a long report: an open transaction that read the table
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM m_t").fetchone()
        t0 = time.monotonic()
        res = run_module(eng, "m")
        waited = time.monotonic() - t0
        # It did not wait for the reader to finish, and the reader still sees its snapshot's rows.
        assert holder.execute("SELECT count(*) FROM m_t").fetchone() == (2,)
    assert res.status == "success" and res.rows_deleted == 2 and res.rows_inserted == 50
    assert 1 <= waited < 20
    assert len(dest_rows(p)) == 50


def test_ignored_and_added_columns_and_a_new_table(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, rows=3)
    p.src.exec("ALTER TABLE s ADD COLUMN extra integer DEFAULT 5", "ALTER TABLE s ADD COLUMN n numeric(8,2) DEFAULT 1.5")
    p.write(full_module("schema_change: {new_column: ignore}", query="SELECT id, extra, v FROM s"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert dest_rows(p) == [(1, "new"), (2, "new"), (3, "new")]
    p.write(full_module("schema_change: {new_column: add}", query="SELECT id, v, n FROM s"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT id, v, n::text FROM m_t ORDER BY id") == [(i, "new", "1.50") for i in (1, 2, 3)]
    p.dst.exec("DROP TABLE m_t")
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(3,)] and staging_tables(p) == []


@pytest.mark.parametrize("strategy", ["full", "incremental"])
def test_a_value_the_column_refuses_names_the_column(strategy: str, tmp_path: Path, pg_db: str) -> None:
    """Also the staged path: a declared varchar(2) once cast the source's text to it, which
    truncates silently ('new' -> 'ne'); now the value is refused, naming the column."""
    p = project(tmp_path, pg_db, rows=3)
    p.dst.exec("UPDATE m_t SET v = 'ol'", "ALTER TABLE m_t ALTER COLUMN v TYPE varchar(2)")
    extra = "columns: [{source_name: id}, {source_name: v, dest_type: varchar(2)}]"
    if strategy == "incremental":
        extra += "\nmerge_key: [id]"
    p.write(full_module(extra).replace("strategy: full", f"strategy: {strategy}"))
    r = p.run("run", "m")
    assert r.returncode == 1, r.stderr
    assert "column 'v' (" in r.stderr and "varying(2)" in r.stderr and "too long" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert dest_rows(p) == [(1, "ol"), (2, "ol")]
