"""partitions: and deletes: are validated like every other key (file, line, field), and the
period arithmetic holds for every zone and period (hypothesis)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipekit_core.defs import load_catalog
from pipekit_core.partitions import PartitionSpec, WindowError, spec_for, window_values

HEAD = """
connections:
  src: {url: "sqlite:src.db"}
  dst: {url: "sqlite:dst.db"}
modules:
  - name: m
    source: src
    dest: dst
    dest_table: t
"""


def problems(tmp: Path, body: str) -> list[str]:
    (tmp / "defs").mkdir(exist_ok=True)
    (tmp / "defs" / "m.yaml").write_text(textwrap.dedent(HEAD).lstrip() + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n")
    return [str(p) for p in load_catalog(tmp / "defs").problems]


WINDOW_Q = "query: SELECT id, d FROM o WHERE d >= '{window_start}' AND d < '{window_end}'"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"strategy: window\n{WINDOW_Q}",
         "m.yaml:5: module 'm': field 'partitions': required when strategy is window"),
        (f"strategy: window\npartitions: {{every: fortnight, start: '2024-01-01', column: d}}\n{WINDOW_Q}",
         "m.yaml:10: module 'm': field 'partitions.every': Input should be 'hour', 'day', 'week' or 'month' (got 'fortnight')"),
        (f"strategy: window\npartitions: {{every: month, start: '2024-01-15', column: d}}\n{WINDOW_Q}",
         "m.yaml:10: module 'm': field 'partitions.start': partitions start '2024-01-15' is not the start of a month in UTC "
         "(the month containing it starts at 2024-01-01)"),
        (f"strategy: window\npartitions: {{every: day, start: '2024-01-01', timezone: Mars/Olympus, column: d}}\n{WINDOW_Q}",
         "m.yaml:10: module 'm': field 'partitions.timezone': partitions timezone 'Mars/Olympus' is not a known time zone"),
        # block style: the line of the key itself
        (f"strategy: window\npartitions:\n  every: day\n  start: '2024-01-01'\n  timezone: Mars/Olympus\n  column: d\n{WINDOW_Q}",
         "m.yaml:13: module 'm': field 'partitions.timezone': partitions timezone 'Mars/Olympus' is not a known time zone"),
        (f"strategy: window\npartitions: {{every: day, start: '2024-02-01', end: '2024-01-01', column: d}}\n{WINDOW_Q}",
         "field 'partitions.end': partitions end 2024-01-01 is not after start 2024-02-01"),
        ("strategy: window\npartitions: {every: day, start: '2024-01-01', column: d}\nquery: SELECT id, d FROM o",
         "field 'query': strategy window: the query must select the window's rows with {window_start} and {window_end}"),
        (f"strategy: full\npartitions: {{every: day, start: '2024-01-01', column: d}}\n{WINDOW_Q}",
         "field 'strategy': a full refresh replaces every row, so it cannot be partitioned"),
        (WINDOW_Q, "field 'query': the query uses {window_start} but the module has no partitions:"),
        ("strategy: incremental\nmerge_key: [id]\nquery: SELECT 1\ndeletes: {mode: soft, keys_query: SELECT id FROM o}",
         "m.yaml:12: module 'm': field 'deletes.soft_column': required when mode is soft"),
        ("strategy: incremental\nmerge_key: [id]\nquery: SELECT 1\ndeletes:\n  mode: soft\n  keys_query: SELECT id FROM o",
         "m.yaml:13: module 'm': field 'deletes.soft_column': required when mode is soft"),
        ("strategy: append\nquery: SELECT 1\ndeletes: {mode: hard, keys_query: SELECT id FROM o}",
         "field 'deletes': not for strategy append"),
        ("strategy: incremental\nmerge_key: [id]\nquery: SELECT 1\ndeletes: {mode: hard, keys_query: 'SELECT id FROM o WHERE x > {nope}'}",
         "m.yaml:12: module 'm': field 'deletes.keys_query': the keys query uses {nope} but the module has no watermark named 'nope'"),
        ("strategy: incremental\nmerge_key: [id]\nquery: SELECT 1\ndeletes:\n  mode: hard\n"
         "  keys_query: 'SELECT id FROM o WHERE x > {nope}'",
         "m.yaml:14: module 'm': field 'deletes.keys_query': the keys query uses {nope} but the module has no watermark named 'nope'"),
        (f"strategy: window\nmerge_key: [id]\npartitions: {{every: day, start: '2024-01-01', column: d}}\n{WINDOW_Q}\n"
         "deletes: {mode: soft, keys_query: SELECT id FROM o, soft_column: gone}",
         "strategy window replaces the window's rows, so rows deleted in the source are already gone"),
        ("strategy: incremental\nmerge_key: [id]\nquery: SELECT 1 WHERE x > {window_start}\nwatermarks:\n"
         "  - {name: window_start, sql: SELECT 1}",
         "field 'watermarks[0].name': watermark name 'window_start' is reserved for the window of partitioned modules"),
        (f"strategy: window\npartitions: {{every: day, start: '2024-01-01', column: day}}\n{WINDOW_Q}\n"
         "columns: [{source_name: id}, {source_name: d}]",
         "field 'partitions.column': partitions column 'day' is not in columns (destination names: id, d)"),
        (f"strategy: window\npartitions: {{every: day, start: '2024-01-01', column: d}}\n{WINDOW_Q}\n"
         "hooks:\n  - sql: DELETE FROM x WHERE d = '{windowstart}'",
         "field 'hooks[0].sql': hook #1 uses {windowstart} but the module has no watermark named 'windowstart'"),
    ],
)
def test_definition_problems_name_file_line_and_field(body: str, expected: str, tmp_path: Path) -> None:
    got = problems(tmp_path, body)
    assert any(expected in p for p in got), got


def test_a_valid_partitioned_module_loads(tmp_path: Path) -> None:
    got = problems(tmp_path, f"strategy: window\npartitions: {{every: day, start: 2024-01-01, column: d}}\n{WINDOW_Q}\n"
                             "hooks:\n  - sql: DELETE FROM x WHERE d < '{window_start}'")
    assert got == []
    mod = load_catalog(tmp_path / "defs").module("m")
    assert mod.partitions is not None and mod.partitions.start == "2024-01-01"  # a YAML date, kept as text
    spec = spec_for(mod, "Europe/Paris")
    assert spec is not None and spec.timezone == "Europe/Paris" and spec.start_key == "2024-01-01"
    assert spec.start == dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))


# -- period arithmetic ----------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


def make(every: str, tz: str) -> PartitionSpec:
    return PartitionSpec("m", every, tz, dt.datetime(2000, 1, 3, tzinfo=ZoneInfo(tz)), None, "d")


@settings(max_examples=300, deadline=None)
@given(every=st.sampled_from(["hour", "day", "week", "month"]), tz=st.sampled_from(ZONES),
       t=st.datetimes(min_value=dt.datetime(2001, 1, 1), max_value=dt.datetime(2035, 1, 1)))
def test_every_instant_lies_in_exactly_one_period_and_keys_round_trip(every: str, tz: str, t: dt.datetime) -> None:
    spec = make(every, tz)
    at = t.replace(tzinfo=dt.timezone.utc)
    start = spec.floor(at)
    end = spec.next(start)
    assert start <= at < end
    assert spec.floor(end) == end and spec.is_boundary(start)  # periods tile time
    w = spec.partition(spec.key(start))
    assert (w.start, w.end) == (start, end)
    if every == "hour":
        assert end - start == dt.timedelta(hours=1)  # in real time, DST or not
    else:
        assert start.astimezone(ZoneInfo(tz)).time() == dt.time(0)  # local midnight
        if every == "week":
            assert start.astimezone(ZoneInfo(tz)).weekday() == 0  # Monday
        if every == "month":
            assert start.astimezone(ZoneInfo(tz)).day == 1


def test_window_values_are_utc_timestamps_or_local_dates() -> None:
    spec = make("day", "America/New_York")
    w = spec.window("2024-03-10..2024-03-11")  # the day clocks go forward: 23 hours
    assert window_values(w, date_column=False) == {"window_start": "2024-03-10 05:00:00+00:00",
                                                   "window_end": "2024-03-11 04:00:00+00:00"}
    assert window_values(w, date_column=True) == {"window_start": "2024-03-10", "window_end": "2024-03-11"}
    hourly = make("hour", "UTC").partition("2024-01-05-07:00")
    assert window_values(hourly, date_column=True)["window_start"] == "2024-01-05 07:00:00+00:00"  # hours: timestamps
    assert make("hour", "UTC").keys(make("hour", "UTC").window("2024-01-01..2024-01-02"))[:2] == ["2024-01-01-00:00",
                                                                                               "2024-01-01-01:00"]


def test_latest_is_the_last_complete_period() -> None:
    spec = make("month", "UTC")
    w = spec.latest(dt.datetime(2024, 3, 15, 12, tzinfo=dt.timezone.utc))
    assert (spec.key(w.start), spec.key(w.end)) == ("2024-02-01", "2024-03-01")
    late = PartitionSpec("m", "day", "UTC", dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), None, "d")
    with pytest.raises(WindowError, match="no complete partition yet"):
        late.latest(dt.datetime(2029, 6, 1, tzinfo=dt.timezone.utc))
