"""Sensors: a probe sensor per module with ``sensor:``, and a run-failure sensor.

Probe sensor ``<module>_sensor``: every ``interval`` seconds it runs the module's cheap
``probe`` query on the source and requests a run of ``<module>_job`` when the value differs from
the last one. The value (rendered as text, like a watermark; JSON-encoded so that NULL is
distinct) is the sensor's cursor; the very first evaluation only records it. A probe that fails
fails the tick, so the error is visible on the sensor's page. For a partitioned module the run
it requests is for the latest complete partition (its job is partitioned; a change before the
first partition is complete is skipped and seen again on the next tick).

Run-failure sensor ``pipekit_run_failure_sensor``: one line per failed module of a failed run
(module, phase, pipekit's error), logged on the sensor tick; pass ``notify`` to
:func:`build_run_failure_sensor` to send them somewhere (mail, chat): the hook point for alerts.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of op, check and
# sensor parameters (context, resources) when the definitions are built.

import datetime as dt
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_core.models import Module
from pipekit_dagster import constants as c
from pipekit_dagster.jobs import AssetJob, latest_partition_key
from pipekit_dagster.resources import PipekitResource


def build_probe_sensors(
    catalog: Catalog,
    jobs: Mapping[str, AssetJob],
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    naming: c.Naming = c.DEFAULT_NAMING,
) -> list[dg.SensorDefinition]:
    """One probe sensor per enabled module with ``sensor:`` (and a job); names and the resource
    key from ``naming``."""
    out = []
    for mod in catalog.enabled_modules():
        job = jobs.get(naming.module_job(mod.name))
        if mod.sensor is not None and job is not None:
            out.append(probe_sensor(mod, job, default_status, naming))
    return out


def probe_sensor(
    mod: Module, job: AssetJob, default_status: dg.DefaultSensorStatus, naming: c.Naming = c.DEFAULT_NAMING
) -> dg.SensorDefinition:
    assert mod.sensor is not None
    name = mod.name
    resource_key = naming.resource_key

    @dg.sensor(
        name=naming.sensor(name),
        job=job,
        minimum_interval_seconds=mod.sensor.interval,
        default_status=default_status,
        description=f"Runs module '{name}' when its probe on '{mod.source}' changes value "
        f"(every {mod.sensor.interval} s): {mod.sensor.probe.strip()}",
        required_resource_keys={resource_key},
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        value = probe_value(getattr(context.resources, resource_key), name)
        cursor = json.dumps(value)
        if context.cursor is None:
            return dg.SensorResult(skip_reason=f"first probe of '{name}': recorded {value!r}", cursor=cursor)
        if context.cursor == cursor:
            return dg.SensorResult(skip_reason=f"probe of '{name}' unchanged: {value!r}", cursor=cursor)
        tags = {c.TRIGGER_TAG: "sensor", c.PROBE_VALUE_TAG: (value or "NULL")[:200]}
        if job.partitions_def is None:
            return dg.SensorResult(run_requests=[dg.RunRequest(tags=tags)], cursor=cursor)
        key = latest_partition_key(job)
        if key is None:
            return dg.SensorResult(skip_reason=f"probe of '{name}' changed, but no partition of it is complete yet "
                                   f"({job.partitions_def})", cursor=context.cursor)
        return dg.SensorResult(run_requests=[dg.RunRequest(tags=tags, partition_key=key)], cursor=cursor)

    return _sensor


CLI_RUNS_SENSOR = "pipekit_cli_runs_sensor"
CLI_RUNS_INTERVAL_S = 30


def build_cli_runs_sensor(
    keys: Mapping[str, dg.AssetKey], default_status: dg.DefaultSensorStatus, naming: c.Naming = c.DEFAULT_NAMING
) -> dg.SensorDefinition:
    """``pipekit_cli_runs_sensor``: runs made outside Dagster (``pipekit run``) become the modules'
    materializations (runless asset events, with the run's counts), so the catalog never says
    "never materialized" about a table the CLI filled. It reads the repository's finished runs
    after the last one it saw (its cursor); its first evaluation reports each module's newest
    successful run only. ``keys``: module name -> asset key."""
    resource_key = naming.resource_key

    @dg.sensor(
        name=naming(CLI_RUNS_SENSOR),
        minimum_interval_seconds=CLI_RUNS_INTERVAL_S,
        default_status=default_status,
        description="Reports pipekit runs made outside Dagster (`pipekit run`) as materializations of their "
        f"modules' assets (checks the repository every {CLI_RUNS_INTERVAL_S} s).",
        required_resource_keys={resource_key},
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        pipekit: PipekitResource = getattr(context.resources, resource_key)
        events, cursor = cli_run_events(pipekit, keys, context.cursor)
        if not events:
            return dg.SensorResult(skip_reason="no new pipekit runs outside Dagster", cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return _sensor


def cli_run_events(
    pipekit: PipekitResource, keys: Mapping[str, dg.AssetKey], cursor: str | None
) -> tuple[list[dg.AssetMaterialization], str | None]:
    """The materializations of the finished runs after ``cursor`` (a run id) that Dagster did not
    start, and the new cursor. A run whose merge committed (success, or ``committed``) counts."""
    from pipekit_core.repo import Repository

    settings = pipekit.load_settings()
    if not settings.database.exists():
        return [], cursor
    runs = Repository(settings.database).finished_runs_after(int(cursor or 0), limit=1000 if cursor else 100_000)
    if not runs:
        return [], cursor
    chosen: dict[tuple[str, str | None], dict] = {}
    engine = pipekit.engine()
    for r in runs:
        if r["status"] not in ("success", "committed") or r.get("dagster_run_id") or r["module"] not in keys:
            continue
        window = (r.get("options") or {}).get("window")
        parts: list[str | None] = [None]
        if window:
            spec = engine.partition_spec(engine.module(r["module"])) if r["module"] in engine.catalog.modules else None
            if spec is not None:
                parts = list(spec.keys(spec.between(dt.datetime.fromisoformat(window["start"]),
                                                    dt.datetime.fromisoformat(window["end"]))))
        for part in parts:
            chosen[(r["module"], part)] = r  # the newest run per module (and partition) wins
    events = []
    for (module, part), r in sorted(chosen.items(), key=lambda kv: kv[1]["id"]):
        md = {k: v for k, v in {
            c.ROW_COUNT: r.get("row_count"), c.ROWS_INSERTED: r.get("rows_inserted"), c.ROWS_DELETED: r.get("rows_deleted"),
            c.RUN_ID: r["id"], c.TRIGGER_TAG: r.get("trigger") or "cli", c.TRANSPORT: r.get("transport"),
            c.WINDOW_ROW_COUNT: r.get("window_row_count"),
        }.items() if v is not None}
        events.append(dg.AssetMaterialization(asset_key=keys[module], partition=part, metadata=md,
                                              description=f"pipekit run {r['id']} ({r.get('trigger') or 'cli'}, "
                                                          f"{r['status']}, finished {r.get('finished_at')})"))
    return events, str(runs[-1]["id"])


def probe_value(pipekit: PipekitResource, module: str) -> str | None:
    """Run the module's probe on its source; its value as text (None for no row or NULL)."""
    from pipekit_core.errors import PipekitError, TransportError
    from pipekit_core.secrets import redact
    from pipekit_core.transport.base import TransportContext, get_transport
    from pipekit_core.watermarks import render_value

    engine = pipekit.engine()
    mod = engine.module(module)
    assert mod.sensor is not None
    ep = engine.endpoint(mod.source)
    if ep.conn.has_native_driver:
        transport = get_transport("native", TransportContext())
    elif engine.settings.jrunner:
        transport = get_transport("jrunner", TransportContext(jrunner=engine.settings.jrunner))
    else:
        raise TransportError(f"module '{module}': source '{mod.source}' has no native driver and jrunner is not configured")
    try:
        return render_value(transport.query_value(ep, mod.sensor.probe))
    except PipekitError:
        raise
    except Exception as e:  # a driver error: say which module and probe, never a secret
        raise PipekitError(f"module '{module}': probe on '{mod.source}' failed: {redact(str(e).strip())}") from None


# ----------------------------------------------------------------------------- run failures


@dataclass(frozen=True)
class ModuleFailure:
    """One failed module of a failed Dagster run."""

    module: str
    phase: str
    message: str
    dagster_run_id: str

    def __str__(self) -> str:
        return f"pipekit: module '{self.module}' failed in phase '{self.phase}' (Dagster run {self.dagster_run_id[:8]}): {self.message}"


def module_failures(context: dg.RunFailureSensorContext) -> list[ModuleFailure]:
    """The failed pipekit steps of the run, one per module (step keys ``<m>.<phase>``)."""
    out: dict[str, ModuleFailure] = {}
    run_id = context.dagster_run.run_id
    for event in context.get_step_failure_events():
        step = event.step_key or ""
        graph, _, phase = step.partition(".")
        if phase not in c.PHASES:
            continue
        data = event.step_failure_data
        # pipekit's own phase where the failure says it (a single-write full refresh copies its
        # rows in the merge step: a source failure there is still phase 'stage')
        md = data.user_failure_data.metadata if data.user_failure_data is not None else {}
        said = getattr(md.get(c.PHASE), "value", None) if md else None
        if isinstance(said, str) and said in c.PHASES:
            phase = said
        text = ""
        if data.user_failure_data is not None and data.user_failure_data.description:
            text = data.user_failure_data.description
        elif data.error is not None:
            text = data.error.message
        first = (text.strip().splitlines() or ["(no message)"])[0]
        out.setdefault(graph, ModuleFailure(graph, phase, first, run_id))
    return list(out.values())


def build_run_failure_sensor(
    notify: Callable[[list[ModuleFailure]], None] | None = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    naming: c.Naming = c.DEFAULT_NAMING,
    modules: Collection[str] | None = None,
    jobs: Collection[str] = (),
) -> dg.SensorDefinition:
    """The run-failure sensor; ``notify`` (optional) gets the failures of each failed run.

    ``modules`` (None: every pipekit module) limits it to the modules of one definitions folder,
    so that two folders in one code location (two Components) do not both report a failure; a
    failed run with no failed module step is then reported only when its job is one of ``jobs``.
    """

    @dg.run_failure_sensor(
        name=naming.run_failure_sensor,
        default_status=default_status,
        description="Logs one line per failed pipekit module of a failed run (the hook point for alerts).",
    )
    def _sensor(context: dg.RunFailureSensorContext) -> None:
        failures = module_failures(context)
        if modules is not None:
            failures = [f for f in failures if f.module in modules]
            if not failures and context.dagster_run.job_name not in jobs:
                return
        if not failures:
            message = (context.failure_event.message or "").strip().splitlines()
            context.log.error(f"pipekit: run {context.dagster_run.run_id[:8]} ({context.dagster_run.job_name}) failed: "
                              f"{message[0] if message else 'no message'}")
        for f in failures:
            context.log.error(str(f))
        if notify is not None and failures:
            notify(failures)

    return _sensor
