"""Schedules from the ``schedule:`` keys of modules and groups.

``<module>_schedule`` runs ``<module>_job``; ``<group>_schedule`` runs ``<group>_job``. Cron is
evaluated in pipekit's timezone (``timezone`` in pipekit.yaml, else the machine's zone, as the
original pipekit did). Schedules start RUNNING: the YAML is the source of truth, as it was for the
original's scheduler; pass ``default_status=dg.DefaultScheduleStatus.STOPPED`` to
:func:`build_schedules` (or to ``build_definitions``) to have them off until switched on.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_dagster import constants as c
from pipekit_dagster.jobs import AssetJob


def build_schedules(
    catalog: Catalog,
    jobs: Mapping[str, AssetJob],
    timezone: str,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
) -> list[dg.ScheduleDefinition]:
    """One schedule per module or group with a ``schedule:`` whose job exists."""
    out: list[dg.ScheduleDefinition] = []
    owners: list[tuple[str, str | None, str, str]] = [
        (m.name, m.schedule, c.module_job_name(m.name), "module") for m in catalog.enabled_modules()
    ]
    owners += [(g.name, g.schedule, c.group_job_name(g.name), "group") for g in catalog.groups.values()]
    for owner, cron, job_name, kind in owners:
        if not cron or job_name not in jobs:
            continue
        out.append(
            dg.ScheduleDefinition(
                name=c.schedule_name(owner),
                cron_schedule=cron,
                job=jobs[job_name],
                execution_timezone=timezone,
                default_status=default_status,
                description=f"Runs {kind} '{owner}' on '{cron}' ({timezone}).",
            )
        )
    return out
