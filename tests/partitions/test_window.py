"""Strategy window on real databases: a range is one run, a rerun replaces only its window, a
wrong query never deletes the wrong rows, and a kill inside the merge leaves the destination as it was."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.partitions._support import Project, options, seed_orders, site, window_module

pytestmark = [pytest.mark.postgres]

KINDS = [("postgresql", "postgresql"), ("sqlite", "sqlite"), ("postgresql", "sqlite")]


def project(tmp: Path, pg_db: str, src_kind: str, dst_kind: str, **seed: object) -> Project:
    src, dst = site(src_kind, tmp, pg_db, "src"), site(dst_kind, tmp, pg_db, "dst")
    seed_orders(src, **seed)  # type: ignore[arg-type]
    return Project(tmp, src, dst)


@pytest.mark.parametrize(("src_kind", "dst_kind"), KINDS)
def test_a_three_month_window_is_one_run_and_a_rerun_replaces_only_its_window(
    src_kind: str, dst_kind: str, tmp_path: Path, pg_db: str
) -> None:
    p = project(tmp_path, pg_db, src_kind, dst_kind)
    p.write(window_module())
    r = p.run("run", "m", "--window", "2024-01-01..2024-04-01")
    assert r.returncode == 0, (r.stdout, r.stderr)
    runs = p.history("m")
    assert len(runs) == 1 and runs[0]["status"] == "success"
    assert options(runs[0])["window"]["start"].startswith("2024-01-01")
    assert runs[0]["window_row_count"] == 910 == runs[0]["rows_inserted"]  # Jan 1 .. Mar 31: 91 days x 10
    assert p.dst.rows("SELECT count(*), min(d), max(d) FROM m_t") in (
        [(910, dt.date(2024, 1, 1), dt.date(2024, 3, 31))], [(910, "2024-01-01", "2024-03-31")])

    # The source changes inside and outside 2024-01-05; a rerun of that partition takes in only its changes.
    p.src.exec("UPDATE orders SET amt = -1 WHERE d >= '2024-01-05' AND d < '2024-01-06' AND id % 2 = 0",
               "DELETE FROM orders WHERE id = 41",  # 2024-01-05: gone from the source
               "UPDATE orders SET amt = -2 WHERE d >= '2024-01-02' AND d < '2024-01-03'",  # outside: not picked up
               "INSERT INTO orders VALUES (99999, '2024-01-05', 7)")
    r = p.run("run", "m", "--partition", "2024-01-05")
    assert r.returncode == 0, (r.stdout, r.stderr)
    last = p.history("m")[-1]
    assert last["rows_deleted"] == 10 and last["rows_inserted"] == 10 and last["window_row_count"] == 10
    day5 = p.dst.rows("SELECT id, amt FROM m_t WHERE id BETWEEN 41 AND 50 OR id = 99999 ORDER BY id")
    assert day5 == [(i, -1 if i % 2 == 0 else i - 1) for i in range(42, 51)] + [(99999, 7)]
    assert p.dst.rows("SELECT count(*) FROM m_t WHERE amt = -2") == [(0,)]  # 2024-01-02 untouched
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(910,)]


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_staged_rows_outside_the_window_fail_the_run_before_the_merge(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", dst_kind)
    # A wrong query: it names the window but selects a whole month.
    p.write(window_module(query="SELECT id, d, amt FROM orders WHERE d >= date_trunc('month', '{window_start}'::date) "
                                "AND d < '{window_end}'"))
    assert p.run("run", "m", "--window", "2024-01-01..2024-02-01").returncode == 0
    before = p.dst.rows("SELECT * FROM m_t ORDER BY id")
    assert len(before) == 310
    r = p.run("run", "m", "--partition", "2024-01-20")
    assert r.returncode == 1
    assert "190 staged row(s) have d outside the window [2024-01-20, 2024-01-21)" in r.stderr
    assert "'2024-01-01'" in r.stderr and "The destination was not touched" in r.stderr
    assert p.dst.rows("SELECT * FROM m_t ORDER BY id") == before
    assert p.history("m")[-1]["status"] != "success"


@pytest.mark.parametrize(("src_kind", "dst_kind"), KINDS)
def test_a_staged_null_in_the_partition_column_fails_the_run_before_the_merge(
    src_kind: str, dst_kind: str, tmp_path: Path, pg_db: str
) -> None:
    """A NULL lies in no window: a query that lets one through (``OR d IS NULL``) would otherwise
    delete the window's rows and insert a row no window ever replaces."""
    p = project(tmp_path, pg_db, src_kind, dst_kind)
    p.write(window_module())
    assert p.run("run", "m", "--window", "2024-01-01..2024-01-11").returncode == 0
    before = p.dst.rows("SELECT * FROM m_t ORDER BY id")
    assert len(before) == 100
    p.src.exec("INSERT INTO orders VALUES (9000, NULL, 1)", "UPDATE orders SET amt = -5 WHERE d = '2024-01-05'")
    p.write(window_module(query="SELECT id, d, amt FROM orders WHERE (d >= '{window_start}' AND d < '{window_end}') "
                                "OR d IS NULL"))
    r = p.run("run", "m", "--partition", "2024-01-05")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "1 staged row(s) have d outside the window [2024-01-05, 2024-01-06) (e.g. NULL)" in r.stderr
    assert "The destination was not touched" in r.stderr
    assert p.dst.rows("SELECT * FROM m_t ORDER BY id") == before
    assert p.dst.rows("SELECT count(*) FROM m_t WHERE d IS NULL") == [(0,)]
    # without the NULL row the same window merges
    p.write(window_module())
    assert p.run("run", "m", "--partition", "2024-01-05").returncode == 0
    assert p.dst.rows("SELECT count(*) FROM m_t WHERE amt = -5") == [(10,)]


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_an_empty_window_is_refused_unless_allow_empty(dst_kind: str, tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", dst_kind)
    p.write(window_module())
    assert p.run("run", "m", "--window", "2024-01-01..2024-01-11").returncode == 0
    p.src.exec("DELETE FROM orders WHERE d = '2024-01-03'")
    r = p.run("run", "m", "--partition", "2024-01-03")
    assert r.returncode == 1
    assert "the source returned 0 rows and the merge would empty the window [2024-01-03, 2024-01-04)" in r.stderr
    assert "allow_empty: true" in r.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(100,)]
    p.write(window_module(extra="allow_empty: true"))
    r = p.run("run", "m", "--partition", "2024-01-03")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(90,)]  # that day only
    # A window that was empty before stays allowed without allow_empty (nothing to lose).
    p.write(window_module())
    assert p.run("run", "m", "--partition", "2024-06-01").returncode == 0


def test_timestamps_render_in_utc_for_a_zone_with_an_offset(tmp_path: Path, pg_db: str) -> None:
    """Days in Europe/Paris on a timestamptz column: the window is [23:00 UTC, 23:00 UTC)."""
    p = project(tmp_path, pg_db, "postgresql", "postgresql", ts=True)
    p.src.exec("INSERT INTO orders VALUES (5000, '2024-01-04 23:30:00+00:00', 1), (5001, '2024-01-04 22:30:00+00:00', 1)")
    p.write(window_module(query="SELECT id, d, amt FROM orders WHERE d >= '{window_start}' AND d < '{window_end}'",
                          partitions="{every: day, start: '2024-01-01', timezone: Europe/Paris, column: d}"))
    r = p.run("plan", "m", "--partition", "2024-01-05")
    assert r.returncode == 0, r.stderr
    assert "d >= '2024-01-04 23:00:00+00:00' AND d < '2024-01-05 23:00:00+00:00'" in r.stdout
    r = p.run("run", "m", "--partition", "2024-01-05")
    assert r.returncode == 0, r.stderr
    ids = [i for (i,) in p.dst.rows("SELECT id FROM m_t ORDER BY id")]
    assert ids == list(range(41, 51)) + [5000]  # 5001 is on the 4th in Paris


def test_watermarks_and_hooks_work_alongside_the_window(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", "postgresql")
    p.dst.exec("CREATE TABLE loads (ws text, we text, floor integer)")
    p.write(window_module(
        query="SELECT id, d, amt FROM orders WHERE d >= '{window_start}' AND d < '{window_end}' AND amt >= {floor}",
        extra="""
        watermarks:
          - name: floor
            sql: SELECT 5
        hooks:
          - sql: INSERT INTO loads VALUES ('{window_start}', '{window_end}', {floor})
        """))
    r = p.run("plan", "m", "--partition", "2024-01-01")
    assert "#1 (success): INSERT INTO loads VALUES ('2024-01-01', '2024-01-02', 5)" in r.stdout  # rendered
    r = p.run("run", "m", "--partition", "2024-01-01")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT min(amt), count(*) FROM m_t") == [(5, 5)]
    assert p.dst.rows("SELECT * FROM loads") == [("2024-01-01", "2024-01-02", 5)]


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("point", ["after_merge_statement:0:kill", "before_merge_commit:kill"])
def test_killed_inside_the_window_merge_leaves_the_destination_untouched(
    dst_kind: str, point: str, tmp_path: Path, pg_db: str
) -> None:
    p = project(tmp_path, pg_db, "postgresql", dst_kind)
    p.write(window_module())
    assert p.run("run", "m", "--window", "2024-01-01..2024-01-11").returncode == 0
    before = p.dst.rows("SELECT * FROM m_t ORDER BY id")
    p.src.exec("UPDATE orders SET amt = 0")
    r = p.run("run", "m", "--window", "2024-01-01..2024-01-06", failpoint=point)
    assert r.returncode != 0 and f"pipekit failpoint: {point.rsplit(':', 1)[0]}" in r.stderr
    assert p.dst.rows("SELECT * FROM m_t ORDER BY id") == before  # the DELETE of the window rolled back
    again = p.run("run", "m", "--window", "2024-01-01..2024-01-06")  # the next run cleans up and merges
    assert again.returncode == 0, again.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t WHERE amt = 0") == [(50,)]
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(100,)]


def test_windows_that_are_not_period_boundaries_are_refused(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", "postgresql")
    p.write(window_module(partitions="{every: week, start: '2024-01-01', column: d}"))
    r = p.run("run", "m", "--window", "2024-01-03..2024-01-15")
    assert r.returncode == 1
    assert "window start '2024-01-03' is not the start of a week in UTC (the week containing it starts at 2024-01-01); " \
           "weeks start on Monday" in r.stderr
    r = p.run("run", "m", "--partition", "2023-12-25")
    assert r.returncode == 1 and "starts before the partitions' start 2024-01-01" in r.stderr
    r = p.run("run", "m", "--window", "2024-01-15..2024-01-01")
    assert r.returncode == 1 and "is empty" in r.stderr
    assert p.history("m") == []  # refused before anything ran
    r = p.run("run", "m", "--window", "2024-01-01..2024-01-15")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(140,)]


def test_a_run_without_a_window_takes_the_latest_complete_partition(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", "postgresql")
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    p.src.exec(f"INSERT INTO orders VALUES (7000, '{yesterday.isoformat()}', 1)")
    p.write(window_module())
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert f"window [{yesterday.isoformat()} 00:00:00+00:00" in r.stdout
    assert p.dst.rows("SELECT id FROM m_t") == [(7000,)]


def test_plan_shows_the_window_and_its_delete_predicate(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", "postgresql")
    p.write(window_module())
    r = p.run("plan", "m", "--window", "2024-02-01..2024-03-01")
    assert r.returncode == 0, r.stderr
    assert "window_start = 2024-02-01   window_end = 2024-03-01" in r.stdout
    assert "WHERE d >= '2024-02-01' AND d < '2024-03-01'" in r.stdout  # the rendered query
    assert 'DELETE FROM "m_t" WHERE "d" >= \'2024-02-01\' AND "d" < \'2024-03-01\'' in r.stdout
    assert p.history("m") == []


def test_the_timezone_setting_is_the_default_zone_of_partitions(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", "postgresql", ts=True)
    p.write(window_module(query="SELECT id, d, amt FROM orders WHERE d >= '{window_start}' AND d < '{window_end}'",
                          partitions="{every: hour, start: '2024-01-01', column: d}"),
            settings="timezone: Asia/Kolkata\n")
    r = p.run("plan", "m", "--partition", "2024-01-05-18:00")  # 18:00 in Kolkata is 12:30 UTC
    assert r.returncode == 0, r.stderr
    assert "d >= '2024-01-05 12:30:00+00:00' AND d < '2024-01-05 13:30:00+00:00'" in r.stdout
    r = p.run("plan", "m", "--partition", "2024-01-05-18:30")
    assert r.returncode == 1 and "is not the start of an hour in Asia/Kolkata" in r.stderr


@pytest.mark.parametrize("dst_kind", ["postgresql", "sqlite"])
def test_a_range_run_counts_the_rows_of_each_partition(dst_kind: str, tmp_path: Path, pg_db: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-partition counts place rows at the partitions' real boundaries (Paris days, UTC values)."""
    from pipekit_core.config import load_settings
    from pipekit_core.engine import Engine, RunOptions, run_module
    from tests.conftest import PG_PASSWORD
    from tests.helpers import env_for

    p = project(tmp_path, pg_db, "postgresql", dst_kind, ts=True, days=4)
    # 23:30 UTC on Jan 1 is Jan 2 in Paris; 22:30 UTC on Jan 2 is still Jan 2 there
    p.src.exec("INSERT INTO orders VALUES (900, '2024-01-01 23:30:00+00:00', 1), (901, '2024-01-02 22:30:00+00:00', 1)")
    p.write(window_module(partitions="{every: day, start: '2024-01-01', timezone: Europe/Paris, column: d}"))
    for k, v in env_for(tmp_path, {"PK_TEST_PW": PG_PASSWORD}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    eng = Engine(settings=load_settings())
    res = run_module(eng, "m", RunOptions(window=eng.window("m", window="2024-01-01..2024-01-05")))
    assert res.partition_row_counts == {"2024-01-01": 10, "2024-01-02": 12, "2024-01-03": 10, "2024-01-04": 10}
    assert res.window_row_count == 42
    one = run_module(eng, "m", RunOptions(window=eng.window("m", partition="2024-01-02")))
    assert one.partition_row_counts == {"2024-01-02": 12}


def test_text_dates_under_a_timestamp_window_are_refused_not_loaded_short(tmp_path: Path, pg_db: str) -> None:
    """A SQLite source whose date column is declared TEXT: the window renders as timestamps and
    `d >= '2024-01-01 00:00:00+00:00'` misses the first day. The run refuses instead of loading too few
    rows; declaring the column a date fixes it."""
    p = project(tmp_path, pg_db, "sqlite", "sqlite")
    p.src.exec("CREATE TABLE o2 (id INTEGER, d TEXT, amt INTEGER)", "INSERT INTO o2 SELECT id, d, amt FROM orders")
    p.write(window_module(query="SELECT id, d, amt FROM o2 WHERE d >= '{window_start}' AND d < '{window_end}'"))
    r = p.run("run", "m", "--window", "2024-01-01..2024-01-04")
    assert r.returncode == 1
    assert "holds dates written as text (e.g. '2024-01-02')" in r.stderr and "dest_type: date" in r.stderr
    p.write(window_module(query="SELECT id, d, amt FROM o2 WHERE d >= '{window_start}' AND d < '{window_end}'",
                          extra="columns: [{source_name: id}, {source_name: d, dest_type: date}, {source_name: amt}]"))
    r = p.run("run", "m", "--window", "2024-01-01..2024-01-04")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*), min(d) FROM m_t") == [(30, "2024-01-01")]


def test_a_window_past_the_partitions_end_is_refused(tmp_path: Path, pg_db: str) -> None:
    p = project(tmp_path, pg_db, "postgresql", "postgresql")
    p.write(window_module(partitions="{every: day, start: '2024-01-01', end: '2024-02-01', column: d}"))
    r = p.run("run", "m", "--window", "2024-01-20..2024-02-05")
    assert r.returncode == 1
    assert "module 'm': window 2024-01-20..2024-02-05 ends after the partitions' end 2024-02-01" in r.stderr
    r = p.run("run", "m", "--partition", "2024-02-01")  # the end is exclusive: its day is no partition
    assert r.returncode == 1 and "ends after the partitions' end 2024-02-01" in r.stderr
    r = p.run("plan", "m", "--window", "2024-01-01..2024-03-01")
    assert r.returncode == 1 and "ends after the partitions' end 2024-02-01" in r.stderr
    assert p.history("m") == []  # refused before anything ran
    assert p.dst.rows("SELECT to_regclass('m_t')") == [(None,)]
    # up to the end is fine, and a run without a window takes the last partition before the end
    r = p.run("run", "m", "--window", "2024-01-20..2024-02-01")
    assert r.returncode == 0, r.stderr
    assert p.dst.rows("SELECT count(*) FROM m_t") == [(120,)]
    r = p.run("run", "m")
    assert r.returncode == 0, r.stderr
    assert "window [2024-01-31 00:00:00+00:00, 2024-02-01 00:00:00+00:00)" in r.stdout
    assert p.history("m")[-1]["window_row_count"] == 10
