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
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from pipekit_core.defs import Catalog, Problem, load_catalog
from pipekit_core.errors import PipekitError
from pipekit_dagster import constants as c
from pipekit_dagster.assets import build_pipekit_assets
from pipekit_dagster.checks import broken_file_specs, build_module_checks
from pipekit_dagster.jobs import build_jobs
from pipekit_dagster.resources import PipekitResource, PipekitRunOptions
from pipekit_dagster.schedules import build_schedules
from pipekit_dagster.sensors import ModuleFailure, build_probe_sensors, build_run_failure_sensor
from pipekit_dagster.translator import PipekitTranslator, build_asset_specs

logger = logging.getLogger("pipekit_dagster")


def build_definitions(
    pipekit: PipekitResource | None = None,
    translator: PipekitTranslator | None = None,
    *,
    schedule_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
    sensor_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    notify_failures: Callable[[list[ModuleFailure]], None] | None = None,
) -> dg.Definitions:
    """Everything pipekit puts in Dagster, from the definitions folder ``pipekit`` points at.

    Args:
        pipekit: the main resource (default: settings from the environment / pipekit.yaml).
        translator: how modules become asset specs.
        schedule_status / sensor_status: whether schedules and sensors start running.
        notify_failures: called by the run-failure sensor with each failed run's module failures.

    Returns:
        Definitions with the module assets, their checks, the broken-file assets, the jobs,
        schedules and sensors, the ``pipekit`` and ``pipekit_run`` resources and the
        ``in_process_executor`` (a module's phases share one process and one ModuleRun).
    """
    pipekit = pipekit or PipekitResource()
    catalog, timezone = _load(pipekit)
    for problem in catalog.problems:
        logger.warning("pipekit: definition problem (not loaded): %s", problem)

    specs = build_asset_specs(catalog, translator, timezone)
    assets = build_pipekit_assets(catalog, translator, specs, timezone)
    keys = {name: spec.key for name, spec in specs.items()}
    jobs = build_jobs(catalog, keys, {name: spec.partitions_def for name, spec in specs.items()})
    broken_specs, broken_checks = broken_file_specs(catalog)
    return dg.Definitions(
        assets=[*assets, *broken_specs],
        asset_checks=[*build_module_checks(catalog, keys), *broken_checks],
        jobs=list(jobs.values()),
        schedules=build_schedules(catalog, jobs, timezone, schedule_status),
        sensors=[*build_probe_sensors(catalog, jobs, sensor_status), build_run_failure_sensor(notify_failures, sensor_status)],
        resources={c.PIPEKIT_RESOURCE_KEY: pipekit, c.RUN_OPTIONS_RESOURCE_KEY: PipekitRunOptions()},
        executor=dg.in_process_executor,
    )


def _load(pipekit: PipekitResource) -> tuple[Catalog, str]:
    """The catalog and the schedules' timezone; a bad config becomes a visible problem."""
    try:
        settings = pipekit.load_settings()
    except PipekitError as e:
        where = pipekit.config or "pipekit.yaml"
        catalog = Catalog(defs_dir=Path(pipekit.defs or "module_defs"))
        catalog.problems.append(Problem(file=str(where), line=None, module=None, field=None, message=str(e)))
        return catalog, "UTC"
    timezone = settings.local_timezone()
    return load_catalog(settings.defs, timezone), timezone


defs = build_definitions()
