"""The code location: ``defs`` built from the configured module definitions.

``dagster dev`` (``[tool.dagster]`` in pyproject.toml), ``workspace.yaml`` and
``dagster job execute -m pipekit_dagster.definitions -j <job>`` all load :data:`defs`.

Loading reads the YAML files and nothing else: no database, no process. It never fails because
of a definition problem: the broken files show up as ``pipekit_broken_<file>`` assets (see
:mod:`pipekit_dagster.checks`) and are logged as warnings; the other modules load. A missing
definitions folder, or an unreadable pipekit.yaml, is such a problem too.

To customise (a translator, schedules off by default, an alert hook)::

    # my_location.py
    from pipekit_dagster import PipekitTranslator, build_definitions
    defs = build_definitions(translator=MyTranslator(), notify_failures=send_to_chat)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg

from pipekit_core.defs import Catalog, Problem, load_catalog
from pipekit_core.errors import PipekitError
from pipekit_dagster import constants as c
from pipekit_dagster.assets import build_pipekit_assets
from pipekit_dagster.checks import broken_file_specs, build_module_checks
from pipekit_dagster.jobs import build_jobs
from pipekit_dagster.resources import RUN_OPTIONS, PipekitResource
from pipekit_dagster.schedules import build_schedules
from pipekit_dagster.sensors import (
    ModuleFailure,
    build_cli_runs_sensor,
    build_probe_sensors,
    build_run_failure_sensor,
)
from pipekit_dagster.translator import PipekitTranslator, build_asset_specs, build_source_asset_specs

logger = logging.getLogger("pipekit_dagster")


def build_definitions(
    pipekit: PipekitResource | None = None,
    translator: PipekitTranslator | None = None,
    *,
    schedule_status: dg.DefaultScheduleStatus | None = None,
    sensor_status: dg.DefaultSensorStatus | None = None,
    notify_failures: Callable[[list[ModuleFailure]], None] | None = None,
    naming: c.Naming = c.DEFAULT_NAMING,
) -> dg.Definitions:
    """Everything pipekit puts in Dagster, from the definitions folder ``pipekit`` points at.

    Args:
        pipekit: the main resource (default: settings from the environment / pipekit.yaml).
        translator: how modules become asset specs.
        schedule_status / sensor_status: whether schedules and sensors start running (default:
            ``schedule_status`` / ``sensor_status`` in pipekit.yaml, else running).
        notify_failures: called by the run-failure sensor with each failed run's module failures.
        naming: the names of jobs, schedules, sensors, checks, pools and the ``pipekit`` resource key
            (default: the names above; :class:`pipekit_dagster.PipekitComponent` gives each
            instance a prefix, so several definitions folders share one code location).

    Returns:
        Definitions with the module assets, the external assets of the tables their queries read
        (:func:`~pipekit_dagster.translator.build_source_asset_specs`), their checks, the broken-file assets, the jobs,
        schedules and sensors, the ``pipekit`` and ``pipekit_run`` resources and the
        ``in_process_executor`` (a module's phases share one process and one ModuleRun).
    """
    pipekit = pipekit or PipekitResource()
    catalog, timezone, statuses = _load(pipekit)
    schedule_status = schedule_status or dg.DefaultScheduleStatus(statuses[0].upper())
    sensor_status = sensor_status or dg.DefaultSensorStatus(statuses[1].upper())
    for problem in catalog.problems:
        logger.warning("pipekit: definition problem (not loaded): %s", problem)
    for warning in catalog.warnings:
        logger.warning("pipekit: %s", warning)

    specs = build_asset_specs(catalog, translator, timezone, naming.prefix)
    assets = build_pipekit_assets(catalog, translator, specs, timezone, naming)
    keys = {name: spec.key for name, spec in specs.items()}
    jobs = build_jobs(catalog, keys, {name: spec.partitions_def for name, spec in specs.items()}, naming)
    broken_specs, broken_checks = broken_file_specs(catalog, naming)
    # with a prefix, the run-failure sensor reports only this folder's modules and jobs (another
    # folder's sensor reports its own)
    scope: dict = {"modules": set(catalog.modules), "jobs": set(jobs)} if naming.prefix else {}
    return dg.Definitions(
        assets=[*assets, *build_source_asset_specs(catalog, translator, timezone, naming.prefix), *broken_specs],
        asset_checks=[*build_module_checks(catalog, keys, naming), *broken_checks],
        jobs=list(jobs.values()),
        schedules=build_schedules(catalog, jobs, timezone, schedule_status, naming),
        sensors=[*build_probe_sensors(catalog, jobs, sensor_status, naming),
                 build_cli_runs_sensor(keys, sensor_status, naming),
                 build_run_failure_sensor(notify_failures, sensor_status, naming, **scope),
                 *automation_sensor(specs.values(), sensor_status, naming(AUTOMATION_SENSOR))],
        # the pipekit_run instance is shared, so that several folders' Definitions merge (dg)
        resources={naming.resource_key: pipekit, c.RUN_OPTIONS_RESOURCE_KEY: RUN_OPTIONS},
        executor=dg.in_process_executor,
    )


AUTOMATION_SENSOR = "pipekit_automation_sensor"


def automation_sensor(
    specs: Iterable[dg.AssetSpec], default_status: dg.DefaultSensorStatus, name: str = AUTOMATION_SENSOR
) -> list[dg.SensorDefinition]:
    """The automation-condition sensor of the modules with ``automation:`` (none when no spec has a
    condition): it evaluates their conditions and requests the runs (tagged ``pipekit/trigger=automation``).

    Dagster 1.13 adds a ``default_automation_condition_sensor`` by itself for conditioned assets that
    no such sensor targets, but STOPPED; this one follows ``sensor_status`` (RUNNING by default, like
    pipekit's other sensors) and targets exactly the pipekit assets with a condition, so Dagster adds
    no second sensor for them, and assets of other code merged in keep Dagster's own default sensor.
    """
    keys = [spec.key for spec in specs if spec.automation_condition is not None]
    if not keys:
        return []
    return [
        dg.AutomationConditionSensorDefinition(
            name,
            target=dg.AssetSelection.assets(*keys),
            default_status=default_status,
            run_tags={c.TRIGGER_TAG: "automation"},
            description="Evaluates the automation: conditions of pipekit modules and starts their runs.",
        )
    ]


def _load(pipekit: PipekitResource) -> tuple[Catalog, str, tuple[str, str]]:
    """The catalog, the schedules' timezone and the schedules' / sensors' default status; a bad
    config becomes a visible problem."""
    try:
        settings = pipekit.load_settings()
    except PipekitError as e:
        where = pipekit.config or "pipekit.yaml"
        catalog = Catalog(defs_dir=Path(pipekit.defs or "module_defs"))
        catalog.problems.append(Problem(file=str(where), line=None, module=None, field=None, message=str(e)))
        return catalog, "UTC", ("running", "running")
    timezone = settings.local_timezone()
    return load_catalog(settings.defs, timezone), timezone, (settings.schedule_status, settings.sensor_status)


defs = build_definitions()
