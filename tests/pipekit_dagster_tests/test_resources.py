"""The resources on their own: the run-scoped teardown that finishes an open module run, the
rate-limited event log, and run options from config and tags."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from pipekit_core.engine import Event, RunOptions
from pipekit_dagster import PipekitResource, PipekitRunOptions
from pipekit_dagster.resources import EventLog
from tests.pipekit_dagster_tests.conftest import PipekitEnv

pytestmark = pytest.mark.dagster


def test_teardown_finishes_a_run_an_op_left_open(demo: PipekitEnv) -> None:
    with dg.build_resources({"pipekit": PipekitResource()}) as resources:
        run = resources.pipekit.new_run("orders", RunOptions(trigger="dagster"), lambda e: None)
        run.start()
        run.resolve()
        run.stage()  # the Dagster run "ends" here: no merge op, no finish()
        assert demo.repo().get_lock("orders") is not None
        assert "pipekit_staging__orders" in demo.dw_tables()
    last = demo.repo().last_run("orders")
    assert last["status"] == "error" and "before the module's remaining phases ran" in last["error"]
    assert demo.repo().get_lock("orders") is None
    assert "pipekit_staging__orders" not in demo.dw_tables()
    assert "orders" not in demo.dw_tables()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))


def test_event_log_rate_limits_progress_but_not_log_lines() -> None:
    logger = logging.getLogger("pipekit-test-events")
    logger.setLevel(logging.DEBUG)
    handler = Lines()
    logger.addHandler(handler)
    log = EventLog("orders", logger)
    for i in range(1000):
        log(Event("orders", "progress", f"{i} rows", rows=i))
    log(Event("orders", "log", "staged 1,000 rows"))
    log(Event("orders", "warning", "source column 'x' has no column in orders"))
    assert handler.lines == [
        ("INFO", "[orders] 0 rows"),
        ("INFO", "[orders] staged 1,000 rows"),
        ("WARNING", "[orders] source column 'x' has no column in orders"),
    ]


def test_run_options_from_config_and_tags() -> None:
    opts = PipekitRunOptions(watermark_overrides={"orders": {"since": "2024-01-01"}})
    o = opts.for_module("orders", {"pipekit/dry_run": "true"}, "abc")
    assert (o.dry_run, o.full_refresh, o.watermark_overrides, o.trigger, o.dagster_run_id) == (
        True, False, {"since": "2024-01-01"}, "dagster", "abc"
    )
    o = PipekitRunOptions(full_refresh=True).for_module("customers", {}, None)
    assert (o.dry_run, o.full_refresh, o.watermark_overrides) == (False, True, {})
