"""A scheduled (or sensor / automation) run that finds its module already running is skipped, not
failed; a run a person started still fails, saying what to do."""

from __future__ import annotations

import dagster as dg
import pytest

from pipekit_core.repo import LockOwner
from pipekit_dagster import build_definitions
from pipekit_dagster import constants as c
from tests.pipekit_dagster_tests.conftest import PipekitEnv, materializations, observations, step_events

pytestmark = pytest.mark.dagster

TWO = """
modules:
  - name: m
    source: erp
    dest: dw
    dest_table: m_t
    query: SELECT id FROM customers
  - name: after_m
    source: dw
    dest: dw
    dest_table: after_m_t
    query: SELECT id FROM m_t
    deps: [m]
groups:
  nightly: {modules: [m, after_m]}
"""


def _held(env: PipekitEnv, instance: dg.DagsterInstance) -> None:
    """Module m ran once; now its lock is held by a live run elsewhere (another host: never stale by its pid)."""
    env.write("m.yaml", TWO)
    assert build_definitions().resolve_job_def("nightly_job").execute_in_process(instance=instance).success
    assert env.repo().acquire_lock("m", LockOwner(host="elsewhere", pid=1, run_id=None)).acquired


def test_a_scheduled_run_of_a_module_already_running_is_skipped(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _held(blank, instance)
    job = build_definitions().resolve_job_def("nightly_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False,
                                    tags={"dagster/schedule_name": "nightly_schedule"})
    assert result.success  # skipped is not a failure ...
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags.get(c.SKIPPED_TAG) == "already running"  # ... and says so on the run
    obs = observations(result)
    assert obs["m"][c.SKIPPED] == "already running" and "pid 1 on host elsewhere" in obs["m"][c.ERROR]
    # m did nothing in this run: no materialization, its later phases skipped, its lock untouched
    mats = set(materializations(result))
    assert "m" not in mats
    assert step_events(result, "STEP_FAILURE") == []
    assert {"m.stage", "m.merge", "m.hooks"} <= set(step_events(result, "STEP_SKIPPED"))
    logs = [e.message for e in instance.all_logs(result.run_id) if e.level >= 30]
    assert any("[m] skipped: already running" in (m or "") for m in logs), logs
    assert blank.repo().get_lock("m").owner.host == "elsewhere"  # type: ignore[union-attr]
    assert [r["status"] for r in blank.repo().history() if r["module"] == "m"] == ["success"]  # the first run only
    # a downstream module still runs (over m's committed rows), as after a dry run of m
    assert "after_m" in mats


def test_a_run_a_person_started_fails_while_the_module_is_already_running(blank: PipekitEnv, instance: dg.DagsterInstance) -> None:
    _held(blank, instance)
    result = build_definitions().resolve_job_def("m_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and c.SKIPPED_TAG not in run.tags
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    assert "is already running (pid 1 on host elsewhere)" in text and "materialize it again" in text
    # an expected failure: pipekit's description, no chained traceback of pipekit's internals
    assert failure.step_failure_data.error.cause is None  # type: ignore[union-attr]
