"""Schedules from the ``schedule:`` keys of modules and groups.

``<module>_schedule`` runs ``<module>_job``; ``<group>_schedule`` runs ``<group>_job``. Cron is
evaluated in pipekit's timezone (``timezone`` in pipekit.yaml, else the machine's zone, as the
original pipekit did). Schedules start RUNNING: the YAML is the source of truth, as it was for the
original's scheduler; pass ``default_status=dg.DefaultScheduleStatus.STOPPED`` to
:func:`build_schedules` (or to ``build_definitions``) to have them off until switched on.

A partitioned job (a partitioned module's, or a group's whose members share their partitions)
gets a schedule that materializes the **latest complete partition** at each tick. When the
``schedule:`` cron is the partitions' own cadence with offsets (``30 2 * * *`` for daily
partitions, ``15 * * * *`` for hourly ones) and the partitions are in pipekit's timezone, that is
Dagster's own ``build_schedule_from_partitioned_job`` (with ``run_key`` = the partition, so a
partition is requested once per tick time); any other cron (``*/15 * * * *`` on daily
partitions: rerun the latest day every 15 minutes) becomes a schedule on that cron whose ticks
request the latest complete partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_dagster import constants as c
from pipekit_dagster.jobs import AssetJob, latest_partition_key


def build_schedules(
    catalog: Catalog,
    jobs: Mapping[str, AssetJob],
    timezone: str,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
    naming: c.Naming = c.DEFAULT_NAMING,
) -> list[dg.ScheduleDefinition]:
    """One schedule per module or group with a ``schedule:`` whose job exists (names: ``naming``)."""
    out: list[dg.ScheduleDefinition] = []
    owners: list[tuple[str, str | None, str, str]] = [
        (m.name, m.schedule, naming.module_job(m.name), "module") for m in catalog.enabled_modules()
    ]
    owners += [(g.name, g.schedule, naming.group_job(g.name), "group") for g in catalog.groups.values()]
    for owner, cron, job_name, kind in owners:
        if not cron or job_name not in jobs:
            continue
        job = jobs[job_name]
        name = naming.schedule(owner)
        if job.partitions_def is not None:
            out.append(partitioned_schedule(name, cron, job, timezone, default_status, f"{kind} '{owner}'"))
            continue
        out.append(
            dg.ScheduleDefinition(
                name=name,
                cron_schedule=cron,
                job=job,
                execution_timezone=timezone,
                default_status=default_status,
                description=f"Runs {kind} '{owner}' on '{cron}' ({timezone}).",
            )
        )
    return out


def partitioned_schedule(
    name: str, cron: str, job: AssetJob, timezone: str, default_status: dg.DefaultScheduleStatus, what: str
) -> dg.ScheduleDefinition:
    """A schedule of a partitioned job: each tick requests the latest complete partition."""
    pdef = job.partitions_def
    description = f"Runs {what} on '{cron}' ({timezone}) for the latest complete partition ({str(pdef).rstrip('.')})."
    offsets = _offsets(pdef, cron) if getattr(pdef, "timezone", None) == timezone else None
    if offsets is not None:
        return dg.build_schedule_from_partitioned_job(  # type: ignore[return-value]
            job,
            name=name,
            description=description,
            default_status=default_status,
            minute_of_hour=offsets.get("minute_of_hour"),
            hour_of_day=offsets.get("hour_of_day"),
            day_of_week=offsets.get("day_of_week"),
            day_of_month=offsets.get("day_of_month"),
        )

    def _latest(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        at = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        key = latest_partition_key(job, at)
        if key is None:
            return dg.SkipReason(f"no complete partition yet at {at.isoformat()} ({pdef})")
        return dg.RunRequest(partition_key=key)

    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_fn=_latest,
        execution_timezone=timezone,
        default_status=default_status,
        description=description,
    )


def _offsets(pdef: dg.PartitionsDefinition | None, cron: str) -> dict[str, int] | None:
    """The ``minute_of_hour`` / ``hour_of_day`` / ``day_of_week`` / ``day_of_month`` offsets that
    make the partitions' own cron equal ``cron`` (checked with Dagster's ``get_cron_schedule``),
    or None when ``cron`` is not the partitions' cadence with offsets."""
    if not isinstance(pdef, dg.TimeWindowPartitionsDefinition):
        return None
    fields = cron.split()
    if len(fields) != 5:
        return None
    names = {0: "minute_of_hour", 1: "hour_of_day", 2: "day_of_month", 4: "day_of_week"}
    offsets = {names[i]: int(f) for i, f in enumerate(fields) if i in names and f.isdigit()}
    try:
        if pdef.get_cron_schedule(**offsets).split() == fields:
            return offsets
    except Exception:  # noqa: BLE001 - an offset Dagster refuses: not expressible, use the cron itself
        return None
    return None
