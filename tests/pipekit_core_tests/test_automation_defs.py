"""``automation:`` and ``freshness:`` in the definitions: the forms that load, and every problem
(bad durations, warn_after >= fail_after, bad crons, triggers that would start a module twice)
reported by the loader and by ``pipekit validate`` with file, line and field."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from pipekit_core.defs import Catalog, cron_problem, load_catalog, smallest_cron_interval
from pipekit_core.models import Automation, parse_duration
from tests.helpers import run_cli

CONNS = """\
connections:
  src: {url: "jdbc:sqlite:src.db"}
  dw: {url: "jdbc:sqlite:dw.db"}
"""


def mod(name: str, extra: str = "") -> str:
    body = f"  - name: {name}\n    source: src\n    dest: dw\n    dest_table: {name}_t\n    query: SELECT 1 AS x\n"
    return body + textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n" if extra else body


def load(tmp_path: Path, modules: str, groups: str = "") -> tuple[Catalog, Path]:
    defs = tmp_path / "defs"
    defs.mkdir(parents=True, exist_ok=True)
    path = defs / "mods.yaml"
    path.write_text(CONNS + "modules:\n" + modules + ("groups:\n" + textwrap.indent(textwrap.dedent(groups), "  ")
                                                       if groups else ""))
    return load_catalog(defs), path


def line_of(path: Path, needle: str, after: str = "") -> int:
    lines = path.read_text().splitlines()
    start = next(i for i, t in enumerate(lines) if after in t) if after else 0
    return next(i for i, t in enumerate(lines[start:], start + 1) if needle in t)


def problems(cat: Catalog) -> list[str]:
    return [str(p) for p in cat.problems]


# -- the forms that load -----------------------------------------------------------------------


def test_automation_and_freshness_forms_load(tmp_path: Path) -> None:
    cat, _ = load(tmp_path, mod("a", "automation: eager\nfreshness: {fail_after: 1h30m, warn_after: 30m}")
                  + mod("b", "automation: on_missing\nfreshness: {fail_after: 1d}")
                  + mod("c", "automation: {on_cron: '0 * * * *'}\nfreshness: {deadline: '0 9 * * *', window: 2h}")
                  + mod("d", "freshness: {deadline: '0 9 * * 1-5'}")
                  + mod("e") + mod("f", "automation: eager"),
                  groups="""
                  hourly:
                    modules: [e, f]
                    automation: {on_cron: '15 * * * *'}
                  """)
    assert problems(cat) == []
    a, b, c, d = (cat.module(n) for n in "abcd")
    assert (a.automation.kind, a.freshness.fail_after, a.freshness.warn_after) == (
        "eager", dt.timedelta(hours=1, minutes=30), dt.timedelta(minutes=30))
    assert (b.automation.kind, b.freshness.fail_after, b.freshness.warn_after) == ("on_missing", dt.timedelta(days=1), None)
    assert (c.automation.kind, c.automation.cron) == ("on_cron", "0 * * * *")
    assert (c.freshness.deadline, c.freshness.window) == ("0 9 * * *", dt.timedelta(hours=2))
    assert (d.automation, d.freshness.deadline, d.freshness.window) == (None, "0 9 * * 1-5", None)
    # a group's automation applies to members without their own; a member's own replaces it
    assert cat.automation_of("e") == Automation(kind="on_cron", cron="15 * * * *")
    assert cat.automation_of("f") == Automation(kind="eager")
    assert cat.automation_of("d") is None
    # when a module runs is not what it does: its code_version is that of the same module without them
    plain, _ = load(tmp_path / "plain", mod("a"))
    assert a.definition_hash() == plain.module("a").definition_hash()
    changed, _ = load(tmp_path / "changed", mod("a").replace("SELECT 1 AS x", "SELECT 2 AS x"))
    assert changed.module("a").definition_hash() != a.definition_hash()


@pytest.mark.parametrize("text, expected", [
    ("30m", dt.timedelta(minutes=30)), ("2h", dt.timedelta(hours=2)), ("1d", dt.timedelta(days=1)),
    ("1h30m", dt.timedelta(hours=1, minutes=30)), ("1d 6h", dt.timedelta(days=1, hours=6)),
    ("90s", dt.timedelta(seconds=90)),
])
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "2 hours", "h", "30m1h", "-1h", "1.5h", 7200])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="is not a duration; write e.g. 30m, 2h"):
        parse_duration(text)


def test_cron_rules_are_dagsters() -> None:
    assert cron_problem("0 * * * *") is None and cron_problem("@daily") is None
    assert "6 fields" in (cron_problem("0 0 * * * *") or "")  # croniter's seconds field: Dagster refuses it
    assert "never fires" in (cron_problem("0 0 30 2 *") or "")
    assert "not a valid cron" in (cron_problem("61 * * * *") or "")
    assert smallest_cron_interval("0 9 * * *") == dt.timedelta(days=1)
    assert smallest_cron_interval("0 9 * * 1,2") == dt.timedelta(days=1)
    assert smallest_cron_interval("*/20 * * * *") == dt.timedelta(minutes=20)


# -- problems: file, line, field ---------------------------------------------------------------


def test_bad_values_are_reported_at_their_line(tmp_path: Path) -> None:
    cat, path = load(tmp_path, mod("a", "automation: eagr")
                     + mod("b", "automation: {on_cron: '0 0 * * * *'}")
                     + mod("c", "freshness:\n  fail_after: 2 hours")
                     + mod("d", "freshness:\n  fail_after: 1h\n  warn_after: 1h")
                     + mod("e", "freshness:\n  deadline: '0 9 * * *'\n  window: 2d")
                     + mod("f", "freshness:\n  deadline: 'every day'")
                     + mod("g", "freshness:\n  warn_after: 1h")
                     + mod("h", "freshness:\n  fail_after: 2h\n  deadline: '0 9 * * *'")
                     + mod("i", "automation: on_cron")
                     + mod("j", "automation: {on_cron: '0 * * * *', tz: UTC}")
                     + mod("k", "freshness: {fail_after: 30s}")
                     + mod("ok"))
    f = str(path)
    assert problems(cat) == [
        f"{f}:{line_of(path, 'automation: eagr')}: module 'a': field 'automation': 'eagr' is not a known "
        "automation; use eager, on_missing or {on_cron: '<cron>'}",
        f"{f}:{line_of(path, 'on_cron: ')}: module 'b': field 'automation.on_cron': '0 0 * * * *' has 6 fields; "
        "write the 5-field form (minute hour day-of-month month day-of-week), the only one Dagster accepts",
        f"{f}:{line_of(path, '2 hours')}: module 'c': field 'freshness.fail_after': '2 hours' is not a duration; "
        "write e.g. 30m, 2h, 1d or 1h30m (units d, h, m, s)",
        f"{f}:{line_of(path, 'warn_after: 1h')}: module 'd': field 'freshness.warn_after': must be shorter than "
        "fail_after (1h >= 1h): the warning comes before the failure",
        f"{f}:{line_of(path, 'window: 2d')}: module 'e': field 'freshness.window': window 2d is longer than the "
        "time between two deadline ticks (1d); shorten it or leave it out (the default is that whole time)",
        f"{f}:{line_of(path, 'every day')}: module 'f': field 'freshness.deadline': 'every day' is not a valid "
        "cron expression",
        f"{f}:{line_of(path, 'warn_after', after='name: g')}: module 'g': field 'freshness.fail_after': required "
        "(or a deadline: cron), e.g. {fail_after: 2h, warn_after: 1h}",
        f"{f}:{line_of(path, 'deadline:', after='name: h')}: module 'h': field 'freshness.deadline': give either "
        "fail_after / warn_after (a time window) or deadline / window (a cron deadline), not both",
        f"{f}:{line_of(path, 'automation: on_cron')}: module 'i': field 'automation': on_cron needs its cron "
        "expression: write {on_cron: '0 * * * *'}",
        f"{f}:{line_of(path, 'tz: UTC')}: module 'j': field 'automation': unknown key 'tz'; use eager, on_missing "
        "or {on_cron: '<cron>'}",
        f"{f}:{line_of(path, '30s')}: module 'k': field 'freshness.fail_after': must be at least 1m (Dagster "
        "evaluates freshness by the minute)",
    ]
    assert list(cat.modules) == ["ok"]  # the faulty modules are left out, the rest load


def test_a_six_field_schedule_is_a_problem(tmp_path: Path) -> None:
    """croniter takes a seconds field that Dagster's ScheduleDefinition refuses (the whole code
    location would fail to load): the loader reports it like any bad cron."""
    cat, path = load(tmp_path, mod("a", "schedule: '0 0 * * * *'") + mod("b"),
                     groups="g:\n  modules: [b]\n  schedule: '0 0 30 2 *'\n")
    assert problems(cat) == [
        f"{path}:{line_of(path, 'schedule: ')}: module 'a': field 'schedule': '0 0 * * * *' has 6 fields; write "
        "the 5-field form (minute hour day-of-month month day-of-week), the only one Dagster accepts",
        f"{path}:{line_of(path, 'schedule: ', after='groups:')}: field 'groups.g.schedule': '0 0 30 2 *' never "
        "fires (February has no day 30)",
    ]


def test_triggers_that_would_start_a_module_twice(tmp_path: Path) -> None:
    cat, path = load(
        tmp_path,
        mod("own_schedule", "automation: eager\nschedule: '0 * * * *'")
        + mod("own_sensor", "automation: {on_cron: '0 * * * *'}\nsensor: {probe: SELECT 1}")
        + mod("in_auto_group", "schedule: '5 * * * *'")
        + mod("sensed_in_auto_group", "sensor: {probe: SELECT 1}")
        + mod("auto_in_scheduled_group", "automation: on_missing")
        + mod("plain_in_scheduled_group")
        + mod("own_beats_group", "automation: on_missing")
        + mod("sched_and_sensor", "schedule: '0 * * * *'\nsensor: {probe: SELECT 1}")
        + mod("both", "schedule: '0 3 * * *'"),
        groups="""
        auto:
          modules: [in_auto_group, sensed_in_auto_group, own_beats_group]
          automation: eager
        scheduled:
          modules: [auto_in_scheduled_group, plain_in_scheduled_group, both]
          schedule: '0 * * * *'
        confused:
          modules: [sched_and_sensor]
          schedule: '0 2 * * *'
          automation: eager
        """,
    )
    f = str(path)
    auto_line = line_of(path, "auto:", after="groups:")
    sched_line = line_of(path, "scheduled:", after="groups:")
    assert problems(cat) == [
        f"{f}:{line_of(path, 'automation: eager')}: module 'own_schedule': field 'automation': automation: eager "
        "and schedule: '0 * * * *' would both start this module; keep one of them",
        f"{f}:{line_of(path, 'automation: {on_cron')}: module 'own_sensor': field 'automation': automation: on_cron "
        "'0 * * * *' and sensor: (a probe) would both start this module; keep one of them",
        f"{f}:{line_of(path, 'schedule: ', after='in_auto_group')}: module 'in_auto_group': field 'schedule': group "
        f"'auto' ({f}:{auto_line}) has automation: eager, which starts this module, and schedule: '5 * * * *' would "
        "start it too; keep one of them",
        f"{f}:{line_of(path, 'sensor: ', after='sensed_in_auto_group')}: module 'sensed_in_auto_group': field "
        f"'sensor': group 'auto' ({f}:{auto_line}) has automation: eager, which starts this module, and sensor: "
        "(a probe) would start it too; keep one of them",
        f"{f}:{line_of(path, 'automation: on_missing')}: module 'auto_in_scheduled_group': field 'automation': group "
        f"'scheduled' ({f}:{sched_line}) has schedule: '0 * * * *', which runs this module in scheduled_job; "
        "automation: on_missing would start it too; keep one of them",
        f"{f}:{line_of(path, 'automation: eager', after='confused:')}: field 'groups.confused.automation': "
        "automation: eager and schedule: '0 2 * * *' would both start the group's modules; keep one of them",
    ]
    # allowed: a member's own automation in an automated group, pipekit's own triggers together
    # (a schedule and a sensor; a module schedule beside its group's), a plain member of a scheduled group
    assert {"own_beats_group", "sched_and_sensor", "both", "plain_in_scheduled_group"} <= set(cat.modules)
    assert "confused" not in cat.groups and "auto" in cat.groups and "scheduled" in cat.groups


def test_pipekit_validate_reports_them(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    path = defs / "erp.yaml"
    path.write_text(CONNS + "modules:\n" + mod("orders", "automation: eager\nschedule: '0 * * * *'")
                    + mod("customers", "freshness: {fail_after: 1h, warn_after: 2h}")
                    + mod("lines", "freshness: {fail_after: 2x}"))
    res = run_cli(["validate"], tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert (f"{path}:{line_of(path, 'automation: eager')}: module 'orders': field 'automation': automation: eager "
            "and schedule: '0 * * * *' would both start this module; keep one of them") in out
    assert (f"{path}:{line_of(path, 'warn_after')}: module 'customers': field 'freshness.warn_after': must be "
            "shorter than fail_after (2h >= 1h)") in out
    assert f"{path}:{line_of(path, '2x')}: module 'lines': field 'freshness.fail_after': '2x' is not a duration" in out
