"""deletes: an incremental module propagates rows deleted in the source (hard or soft), NULL key
parts matching NULL, on hash joins at a million rows; a keys query that returns nothing is refused."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from pipekit_core.config import load_settings
from pipekit_core.engine import Engine, RunOptions
from tests.helpers import env_for
from tests.partitions._support import Project, Site, site

pytestmark = [pytest.mark.postgres]

# (a, b) is the key; b may be NULL, and (NULL, NULL) is a key too.
ROWS = [(1, 1), (1, None), (2, None), (None, None), (3, 3), (None, 4), (5, 5)]


def lit(v: object) -> str:
    return "NULL" if v is None else str(v)


def seed(src: Site) -> None:
    src.exec("CREATE TABLE s (a integer, b integer, v text, ver integer)")
    src.exec("INSERT INTO s VALUES " + ", ".join(f"({lit(a)}, {lit(b)}, 'v{i}', 1)" for i, (a, b) in enumerate(ROWS)))


def module(mode: str = "hard", *, keys_query: str = "SELECT a, b FROM s", extra: str = "", name: str = "m") -> str:
    soft = "\n    soft_column: deleted_at" if mode == "soft" else ""  # (indented as after dedent)
    text = f"""
    - name: {name}
      source: src
      dest: dst
      dest_table: {name}_t
      strategy: incremental
      merge_key: [a, b]
      query: SELECT a, b, v, ver FROM s WHERE ver > {{since}}
      watermarks:
        - name: since
          sql: SELECT coalesce(max(ver), 0) FROM {name}_t
          default: '0'
      deletes:
        mode: {mode}
        keys_query: {keys_query}
    """
    out = textwrap.dedent(text).strip("\n") + soft + "\n"
    return out + (textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n" if extra.strip() else "")


def keys_of(dst: Site, table: str = "m_t", where: str = "") -> set[tuple]:
    return {(a, b) for a, b in dst.rows(f"SELECT a, b FROM {table} {where}")}


def project(tmp: Path, pg_db: str, dst_kind: str) -> Project:
    src, dst = site("postgresql", tmp, pg_db, "src"), site(dst_kind, tmp, pg_db, "dst")
    seed(src)
    return Project(tmp, src, dst)


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_hard_deletes_remove_rows_whose_key_left_the_source(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, dst_kind)
    p.write(module("hard"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert keys_of(p.dst) == set(ROWS)
    assert p.history("m")[-1]["rows_source_deleted"] == 0
    p.src.exec("DELETE FROM s WHERE a = 1 AND b IS NULL", "DELETE FROM s WHERE a = 3",
               "DELETE FROM s WHERE a IS NULL AND b IS NULL")
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert keys_of(p.dst) == set(ROWS) - {(1, None), (3, 3), (None, None)}
    last = p.history("m")[-1]
    assert last["rows_source_deleted"] == 3 and last["rows_soft_deleted"] is None
    assert "deletes (hard): 3 rows whose key left the source were deleted" in r.stdout
    assert "3 deleted, 0 soft-deleted" in r.stdout


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_soft_deletes_mark_rows_and_a_key_that_comes_back_clears_the_mark(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, dst_kind)
    p.write(module("soft"))
    assert p.run("run", "m").returncode == 0  # the destination is created with deleted_at
    assert p.dst.rows("SELECT count(*) FROM m_t WHERE deleted_at IS NULL") == [(len(ROWS),)]
    p.src.exec("DELETE FROM s WHERE a = 2 AND b IS NULL", "DELETE FROM s WHERE a IS NULL AND b = 4")
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    marked = p.dst.rows("SELECT a, b, deleted_at FROM m_t WHERE deleted_at IS NOT NULL ORDER BY b")
    assert sorted(((a, b) for a, b, _ in marked), key=repr) == sorted([(None, 4), (2, None)], key=repr)
    for *_, when in marked:
        at = when if isinstance(when, dt.datetime) else dt.datetime.fromisoformat(when)
        assert at >= before
    assert keys_of(p.dst) == set(ROWS)  # soft: every row is still there
    assert p.history("m")[-1]["rows_soft_deleted"] == 2
    # The key (2, NULL) comes back in the source, with an old version the watermark does not stage.
    p.src.exec("INSERT INTO s VALUES (2, NULL, 'back', 0)")
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT a, b FROM m_t WHERE deleted_at IS NOT NULL") == [(None, 4)]
    last = p.history("m")[-1]
    assert last["rows_undeleted"] == 1 and last["rows_soft_deleted"] == 0


def test_soft_column_is_added_to_an_existing_destination(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql")
    p.dst.exec("CREATE TABLE m_t (a integer, b integer, v text, ver integer)",
               "INSERT INTO m_t VALUES (9, 9, 'gone', 1)")
    p.write(module("soft", extra="schema_change: strict"))  # pipekit's own column is not a schema change
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT a, b FROM m_t WHERE deleted_at IS NOT NULL") == [(9, 9)]


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_a_keys_query_returning_nothing_is_refused(mode: str, dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, dst_kind)
    p.write(module(mode))
    assert p.run("run", "m").returncode == 0
    p.src.exec("UPDATE s SET v = 'new', ver = 2 WHERE a = 5")  # a row to merge: the whole merge must roll back
    before = sorted(p.dst.rows("SELECT * FROM m_t"), key=repr)
    p.write(module(mode, keys_query="SELECT a, b FROM s WHERE false"))
    r = p.run("run", "m")
    assert r.returncode == 1
    verb = "delete every row of" if mode == "hard" else "mark as deleted every row of"
    assert f"the keys query returned 0 rows and the merge would {verb} m_t; refused" in r.stderr
    assert "allow_empty: true" in r.stderr
    assert sorted(p.dst.rows("SELECT * FROM m_t"), key=repr) == before
    assert p.history("m")[-1]["status"] != "success"
    p.write(module(mode, keys_query="SELECT a, b FROM s WHERE false", extra="allow_empty: true"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    if mode == "hard":
        assert keys_of(p.dst) == set()
    else:  # every row is kept, every row is marked
        assert keys_of(p.dst) == set(ROWS)
        assert p.dst.rows("SELECT count(*) FROM m_t WHERE deleted_at IS NULL") == [(0,)]
        assert p.history("m")[-1]["rows_soft_deleted"] == len(ROWS)
        assert p.dst.rows("SELECT v FROM m_t WHERE a = 5") == [("new",)]


@pytest.mark.parametrize(("keys_query", "returned"), [
    ("SELECT a, b, v FROM s", "['a', 'b', 'v']"),  # one column too many
    ("SELECT a, b AS c FROM s", "['a', 'c']"),  # a key part renamed
    ("SELECT a FROM s", "['a']"),  # a key part missing
])
def test_a_keys_query_must_return_exactly_the_merge_key(keys_query: str, returned: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql")
    p.write(module("hard", keys_query=keys_query))
    r = p.run("run", "m")
    assert r.returncode == 1
    assert "deletes keys_query must return exactly the merge_key columns ['a', 'b']" in r.stderr
    assert f"it returns {returned}" in r.stderr
    assert p.dst.rows("SELECT to_regclass('m_t')") == [(None,)]


def test_a_keys_query_may_return_the_key_columns_in_another_order(tmp_path: Path, pg_db: str) -> None:
    """Matched by name: (b, a) is the key (a, b), and the deletes match each part to its own column."""
    p = project(tmp_path, pg_db, "postgresql")
    p.write(module("hard", keys_query="SELECT b, a FROM s"))
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    p.src.exec("DELETE FROM s WHERE a = 3", "DELETE FROM s WHERE a IS NULL AND b = 4")
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert keys_of(p.dst) == set(ROWS) - {(3, 3), (None, 4)}  # (a swap of a and b would have deleted others)
    assert p.history("m")[-1]["rows_source_deleted"] == 2


@pytest.mark.jrunner
def test_the_keys_query_is_staged_through_jrunner_like_the_rows(tmp_path: Path, pg_db: str) -> None:
    from tests.reliability._support import STANDIN

    p = project(tmp_path, pg_db, "postgresql")
    p.env = {"PIPEKIT_JRUNNER": STANDIN, "JRUNNER_STANDIN_LOG": str(tmp_path / "jrunner.log")}
    p.write(module("hard", extra="transport: jrunner"))
    assert p.run("run", "m").returncode == 0
    p.src.exec("DELETE FROM s WHERE a = 5", "DELETE FROM s WHERE a IS NULL AND b IS NULL")
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert keys_of(p.dst) == set(ROWS) - {(5, 5), (None, None)}
    calls = (tmp_path / "jrunner.log").read_text()
    assert "SELECT a, b FROM s" in calls and "__keys" in calls  # the keys went through jrunner, into their table


def _plan(tmp: Path, monkeypatch: pytest.MonkeyPatch, name: str = "m", **opts: object) -> object:
    eng = _engine(tmp, monkeypatch)
    if "partition" in opts:
        opts = {"window": eng.window(name, partition=opts.pop("partition"))}
    return eng.new_run(name, RunOptions(dry_run=True, **opts)).plan_only()  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_killed_during_the_deletes_leaves_the_destination_untouched(
    mode: str, dst_kind: str, tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = project(tmp_path, pg_db, dst_kind)
    p.write(module(mode))
    assert p.run("run", "m").returncode == 0
    p.src.exec("DELETE FROM s WHERE a = 5")
    if mode == "soft":
        # (5, 5) is marked by a run, then comes back (an old version: its key only, not its row), and
        # (3, 3) leaves: the next run both marks and un-marks.
        assert p.run("run", "m").returncode == 0
        assert p.dst.rows("SELECT a, b FROM m_t WHERE deleted_at IS NOT NULL") == [(5, 5)]
        p.src.exec("INSERT INTO s VALUES (5, 5, 'back', 0)", "DELETE FROM s WHERE a = 3")
    p.src.exec("UPDATE s SET v = 'changed', ver = 2 WHERE a = 1 AND b = 1")
    cols = "a, b, v, deleted_at" if mode == "soft" else "a, b, v"
    before = sorted(p.dst.rows(f"SELECT {cols} FROM m_t"), key=repr)

    # The incremental merge's statements come first (its NULL-pattern deletes and the insert), then
    # the deletes' (hard: four DELETEs, one per NULL pattern; soft: four marking UPDATEs, then four
    # un-marking ones). Kill after the first of each kind, and just before the commit.
    plan = _plan(tmp_path, monkeypatch)
    n = len(plan.merge_sql)  # type: ignore[attr-defined]
    kinds = [k for k, _ in plan.delete_sql]  # type: ignore[attr-defined]
    assert n == 5 and kinds == (["removed"] * 4 if mode == "hard" else ["soft_deleted"] * 4 + ["undeleted"] * 4)
    # (the first statement of each kind is the one for keys without a NULL part: (5, 5), (3, 3))
    points = [f"after_merge_statement:{n}:kill"]
    if mode == "soft":
        points.append(f"after_merge_statement:{n + 4}:kill")
    points.append("before_merge_commit:kill")
    for point in points:
        r = p.run("run", "m", failpoint=point)
        assert r.returncode != 0 and f"pipekit failpoint: {point.rsplit(':', 1)[0]}" in r.stderr, (point, r.stderr)
        assert sorted(p.dst.rows(f"SELECT {cols} FROM m_t"), key=repr) == before, point

    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT v FROM m_t WHERE a = 1 AND b = 1") == [("changed",)]
    if mode == "hard":
        assert (5, 5) not in keys_of(p.dst)
        assert p.history("m")[-1]["rows_source_deleted"] == 1
    else:
        assert keys_of(p.dst) == set(ROWS)
        assert p.dst.rows("SELECT a, b FROM m_t WHERE deleted_at IS NOT NULL") == [(3, 3)]
        last = p.history("m")[-1]
        assert last["rows_soft_deleted"] == 1 and last["rows_undeleted"] == 1


EVENTS = """
- name: e
  source: src
  dest: dst
  dest_table: e_t
  strategy: incremental
  merge_key: [id]
  partitions: {every: day, start: '2024-01-01', column: d}
  query: SELECT id, d, v FROM ev WHERE d >= '{window_start}' AND d < '{window_end}'
  deletes:
    mode: hard
    keys_query: SELECT id FROM ev WHERE d >= '{window_start}' AND d < '{window_end}'
"""


def window_project(tmp: Path, pg_db: str, dst_kind: str) -> Project:
    """``ev(id, d, v)`` on PostgreSQL: 100 events, 10 a day on 2024-01-01 .. 01-10 (id 10, 20, ... on
    01-01; 1, 11, ... on 01-02); ``e`` loaded over all ten days."""
    p = Project(tmp, site("postgresql", tmp, pg_db, "src"), site(dst_kind, tmp, pg_db, "dst"))
    p.src.exec("CREATE TABLE ev (id integer, d date, v text)",
               "INSERT INTO ev SELECT g, date '2024-01-01' + (g % 10), 'x' FROM generate_series(1, 100) g")
    p.write(EVENTS)
    r = p.run("run", "e", "--window", "2024-01-01..2024-01-11")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM e_t") == [(100,)]
    return p


def staging_tables(dst: Site) -> list[str]:
    """pipekit's staging tables in the destination (not its state table, which lives beside them)."""
    if dst.kind == "postgresql":
        return [n for (n,) in dst.rows("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                                       "WHERE table_schema LIKE 'pipekit_staging%' AND table_name <> 'pipekit_state'")]
    return [n for (n,) in dst.rows("SELECT name FROM sqlite_master WHERE name LIKE 'pipekit_staging%'")]


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_deletes_with_a_window_touch_only_the_window(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = window_project(tmp_path, pg_db, dst_kind)
    assert staging_tables(p.dst) == []
    p.src.exec("DELETE FROM ev WHERE id IN (10, 20, 11)")  # 10, 20 on 2024-01-01; 11 on 2024-01-02
    r = p.run("run", "e", "--partition", "2024-01-01")
    assert r.returncode == 0, r.stderr
    ids = {i for (i,) in p.dst.rows("SELECT id FROM e_t")}
    assert 10 not in ids and 20 not in ids and 11 in ids  # the keys query of 01-01 does not know 11
    assert len(ids) == 98
    assert p.history("e")[-1]["rows_source_deleted"] == 2
    assert "staging the keys query into" in r.stdout and "__keys" in r.stdout  # the keys were staged ...
    assert staging_tables(p.dst) == []  # ... and their table (and the rows') is gone after the run


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_killed_during_the_deletes_of_a_window_leaves_the_destination_untouched(
    dst_kind: str, tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = window_project(tmp_path, pg_db, dst_kind)
    p.src.exec("DELETE FROM ev WHERE id IN (10, 20)", "UPDATE ev SET v = 'y' WHERE id = 30")  # all on 2024-01-01
    before = sorted(p.dst.rows("SELECT id, d, v FROM e_t"), key=repr)
    plan = _plan(tmp_path, monkeypatch, "e", partition="2024-01-01")
    n = len(plan.merge_sql)  # type: ignore[attr-defined]
    assert [k for k, _ in plan.delete_sql] == ["removed"]  # type: ignore[attr-defined]
    for point in (f"after_merge_statement:{n}:kill", "before_merge_commit:kill"):
        r = p.run("run", "e", "--partition", "2024-01-01", failpoint=point)
        assert r.returncode != 0 and f"pipekit failpoint: {point.rsplit(':', 1)[0]}" in r.stderr, (point, r.stderr)
        assert sorted(p.dst.rows("SELECT id, d, v FROM e_t"), key=repr) == before, point
    r = p.run("run", "e", "--partition", "2024-01-01")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM e_t WHERE id IN (10, 20)") == [(0,)]
    assert p.dst.rows("SELECT v FROM e_t WHERE id = 30") == [("y",)]
    assert p.dst.rows("SELECT count(*) FROM e_t") == [(98,)]
    assert staging_tables(p.dst) == []  # the killed runs' staging tables were cleaned up


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_a_keys_query_returning_nothing_inside_a_window_is_refused(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = window_project(tmp_path, pg_db, dst_kind)
    p.src.exec("DELETE FROM ev WHERE d = '2024-01-03'")  # that day is gone from the source
    r = p.run("run", "e", "--partition", "2024-01-03")
    assert r.returncode == 1
    assert ("the keys query returned 0 rows and the merge would delete every row of the window "
            "[2024-01-03, 2024-01-04) of e_t; refused") in r.stderr
    assert p.dst.rows("SELECT count(*) FROM e_t") == [(100,)]
    # a window with no row in the destination has nothing to lose: allowed
    r = p.run("run", "e", "--partition", "2024-01-20")
    assert r.returncode == 0, r.stderr
    # other windows are not what the guard looks at: 2024-01-04's keys are there, its rows stay
    r = p.run("run", "e", "--partition", "2024-01-04")
    assert r.returncode == 0, r.stderr
    p.write(EVENTS + "  allow_empty: true\n")
    r = p.run("run", "e", "--partition", "2024-01-03")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM e_t") == [(90,)]  # that day's rows only
    assert p.history("e")[-1]["rows_source_deleted"] == 10


@pytest.mark.parametrize("partitioned", [False, True])
def test_plan_shows_the_keys_query_and_the_deletes_statements(partitioned: bool, tmp_path: Path, pg_db: str) -> None:
    if partitioned:
        p = window_project(tmp_path, pg_db, "postgresql")
        r = p.run("plan", "e", "--partition", "2024-01-05")
    else:
        p = project(tmp_path, pg_db, "postgresql")
        p.write(module("soft"))
        assert p.run("run", "m").returncode == 0
        r = p.run("plan", "m")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    name = "e" if partitioned else "m"
    head = f'-- deletes: the keys query, staged into "pipekit_staging"."{name}__keys"\n'
    assert head in out
    keys_sql = out.split(head, 1)[1].splitlines()[0]
    lines = [ln for ln in out.splitlines() if ln.endswith(("-- removed", "-- soft deleted", "-- undeleted"))]
    if partitioned:
        assert keys_sql == "SELECT id FROM ev WHERE d >= '2024-01-05' AND d < '2024-01-06'"  # rendered
        assert lines == ['DELETE FROM "e_t" AS d WHERE NOT EXISTS (SELECT 1 FROM "pipekit_staging"."e__keys" AS s '
                         'WHERE s."id" = d."id") AND d."d" >= \'2024-01-05\' AND d."d" < \'2024-01-06\';  -- removed']
        assert 'rows of "e_t" in the window: WHERE "d" >= \'2024-01-05\' AND "d" < \'2024-01-06\'' in out
        assert len(p.history("e")) == 1  # the plan ran nothing
    else:
        assert keys_sql == "SELECT a, b FROM s"
        assert len(lines) == 8
        assert lines[0] == ('UPDATE "m_t" AS d SET "deleted_at" = now() WHERE d."deleted_at" IS NULL AND d."a" IS NOT NULL '
                            'AND d."b" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "pipekit_staging"."m__keys" AS s '
                            'WHERE s."a" = d."a" AND s."b" = d."b");  -- soft deleted')
        assert all("NOT EXISTS" in ln and ln.endswith("-- soft deleted") for ln in lines[:4])
        assert all('SET "deleted_at" = NULL' in ln and ln.endswith("-- undeleted") for ln in lines[4:])
        assert len(p.history("m")) == 1
    # the deletes follow the merge and are part of its transaction
    assert out.index("-- merge SQL (one transaction)") < out.index(head) < out.index("-- hooks")
    assert "-- then, in the merge transaction (rows whose key the keys query lacks):" in out


# -- a million rows ----------------------------------------------------------------------------

MILLION = 1_000_000


def _engine(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    from tests.conftest import PG_PASSWORD

    for k, v in env_for(tmp, {"PK_TEST_PW": PG_PASSWORD}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp)
    return Engine(settings=load_settings())


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_million_rows_with_a_null_key_part_on_hash_joins(mode: str, tmp_path: Path, pg_db: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    p = Project(tmp_path, site("postgresql", tmp_path, pg_db, "src"), site("postgresql", tmp_path, pg_db, "dst"))
    # Every NULL pattern of the key (a, b), each key once: (x, NULL) when g % 10 = 0, (NULL, g) when
    # g % 20 = 3, (NULL, NULL) for g = 10 only. The source is schema src, the destination public.
    p.src.exec("CREATE SCHEMA src",
               "CREATE TABLE src.s (g integer, a integer, b integer, v text, ver integer)",
               "INSERT INTO src.s SELECT g, CASE WHEN g % 20 = 3 OR g = 10 THEN NULL ELSE g END, "
               "CASE WHEN g % 10 = 0 THEN NULL WHEN g % 20 = 3 THEN g ELSE g % 7 END, 'v', 1 "
               f"FROM generate_series(1, {MILLION}) g")
    p.write(module(mode, keys_query="SELECT a, b FROM src.s").replace("FROM s WHERE", "FROM src.s WHERE"))
    r = p.run("run", "m", timeout=600)
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(MILLION,)]
    # 3,001 deleted in the source: 1,000 of each NULL pattern but (NULL, NULL), and that one key.
    gone_where = "(b IS NULL AND a % 1000 = 0) OR (a IS NULL AND b % 1000 = 3) OR a % 1000 = 5 OR (a IS NULL AND b IS NULL)"
    p.src.exec("DELETE FROM src.s WHERE g % 1000 IN (0, 3, 5) OR g = 10")
    # Statistics taken while deleted_at is all NULL (autovacuum does this at its own moment): the
    # planner once took a nested loop over 1M keys for the rows this run marks deleted (212 s).
    p.dst.exec("ANALYZE m_t")
    r = p.run("run", "m", timeout=600)
    assert r.returncode == 0, r.stderr
    last = p.history("m")[-1]
    gone = p.dst.rows(f"SELECT count(*) FROM m_t WHERE {gone_where}")[0][0]
    if mode == "hard":
        assert last["rows_source_deleted"] == 3001 and gone == 0
        assert p.dst.rows("SELECT count(*) FROM m_t") == [(MILLION - 3001,)]
    else:
        assert last["rows_soft_deleted"] == 3001 and gone == 3001
        assert p.dst.rows("SELECT count(*) FROM m_t WHERE deleted_at IS NOT NULL") == [(3001,)]
        assert p.dst.rows(f"SELECT count(*) FROM m_t WHERE deleted_at IS NOT NULL AND ({gone_where})") == [(3001,)]

    # The deletes' plans: every statement that joins the keys is a hash (anti / semi) join, never a
    # nested loop over the destination.
    eng = _engine(tmp_path, monkeypatch)
    plan = eng.new_run("m", RunOptions(dry_run=True)).plan_only()
    assert len(plan.delete_sql) == (4 if mode == "hard" else 8)
    p.dst.exec(f"CREATE TABLE {plan.keys_staging_table} AS SELECT a, b FROM src.s",
               f"ANALYZE {plan.keys_staging_table}", "ANALYZE m_t")
    for kind, stmt in plan.delete_sql:
        text = "\n".join(r[0] for r in p.dst.rows("EXPLAIN " + stmt))
        if "NOT EXISTS" in stmt and "= d." in stmt:  # correlated on the key: an anti join
            assert "Hash Anti Join" in text or "Hash Right Anti Join" in text, (kind, stmt, text)
        elif "IN (SELECT" in stmt:  # a key that is present: a hashed semi join
            assert "Hash" in text, (kind, stmt, text)
        assert "Nested Loop" not in text, (kind, stmt, text)
