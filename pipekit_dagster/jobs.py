"""Jobs: ``<module>_job``, ``<group>_job`` (members in order) and ``pipekit_all_job``.

All are asset jobs over the module assets (their asset checks included) and use the
Definitions-level executor. Order and stop semantics come from the assets themselves: a group
with ``stop_on_failure: true`` chains its members as asset deps, so after a failure the later
members are not executed; with ``stop_on_failure: false`` they are not chained, still run in
the group's order (``dagster/priority``) and still run after a failure, except those that
declare ``deps:`` on the failed module.

Partitions: a Dagster asset job cannot mix assets with different partitions. ``<module>_job`` of
a partitioned module is partitioned like its asset (every run names a partition or a range). A
group job, and ``pipekit_all_job``, whose members all have the same partitions (or none) holds
them all (and is partitioned if they are); when they differ, it holds only the members without
partitions, says in its description which partitioned members it leaves out, and those run
through their own ``<module>_job`` (and ``schedule:``). A group of only differently partitioned
modules gets no group job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeAlias

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_dagster import constants as c

# What dg.define_asset_job returns; its class is not in dagster's public namespace.
AssetJob: TypeAlias = Any


def build_jobs(
    catalog: Catalog,
    keys: Mapping[str, dg.AssetKey],
    partitions: Mapping[str, dg.PartitionsDefinition | None] | None = None,
    naming: c.Naming = c.DEFAULT_NAMING,
) -> dict[str, AssetJob]:
    """Job name -> asset job, for every enabled module, every group with an enabled member, and all.

    ``keys``: module name -> asset key (from the translator); ``partitions``: module name -> its
    asset's ``partitions_def`` (missing: unpartitioned). See the module docstring for how jobs
    treat members with different partitions. ``naming``: the job names (:class:`~pipekit_dagster.constants.Naming`).
    """
    parts = partitions or {}
    jobs: dict[str, AssetJob] = {}
    for mod in catalog.enabled_modules():
        if mod.name not in keys:
            continue
        name = naming.module_job(mod.name)
        pdef = parts.get(mod.name)
        jobs[name] = dg.define_asset_job(
            name=name,
            selection=dg.AssetSelection.assets(keys[mod.name]),
            partitions_def=pdef,
            description=f"Run module '{mod.name}' (resolve, stage, merge, hooks) and its checks." + _partitions_note(pdef, []),
        )
    for group in catalog.groups.values():
        members, left_out = job_members([m for m in catalog.in_dependency_order(list(group.modules)) if m in keys], parts)
        if not members:
            continue
        stop = "stops at the first failure" if group.stop_on_failure else "runs every member even after a failure"
        name = naming.group_job(group.name)
        pdef = parts.get(members[0])
        jobs[name] = dg.define_asset_job(
            name=name,
            selection=dg.AssetSelection.assets(*(keys[m] for m in members)),
            partitions_def=pdef,
            description=(group.description + "\n\n" if group.description else "")
            + f"Group '{group.name}': {', '.join(members)}, in this order; {stop}."
            + _partitions_note(pdef, left_out),
        )
    members, left_out = job_members(list(keys), parts)
    if members:
        pdef = parts.get(members[0])
        jobs[naming.all_job] = dg.define_asset_job(
            name=naming.all_job,
            selection=dg.AssetSelection.assets(*(keys[m] for m in members)),
            partitions_def=pdef,
            description="Every enabled pipekit module, in dependency order." + _partitions_note(pdef, left_out),
        )
    return jobs


def job_members(
    members: list[str], partitions: Mapping[str, dg.PartitionsDefinition | None]
) -> tuple[list[str], list[str]]:
    """``(in the job, left out)``: all members when they share one partitions definition (or have
    none), else the members without partitions (the partitioned ones are left out)."""
    if len({partitions.get(m) for m in members}) <= 1:
        return members, []
    return [m for m in members if partitions.get(m) is None], [m for m in members if partitions.get(m) is not None]


def _partitions_note(pdef: dg.PartitionsDefinition | None, left_out: list[str]) -> str:
    note = ""
    if pdef is not None:
        note = (f" Partitioned ({str(pdef).rstrip('.')}): a run takes a partition or a partition range, "
                "one pipekit run over the whole window.")
    if left_out:
        note += (
            f" Not in this job: the partitioned module(s) {', '.join(left_out)} (an asset job cannot mix "
            "different partitions); each runs through its own <module>_job and schedule."
        )
    return note


def latest_partition_key(job: AssetJob, at: dt.datetime | None = None) -> str | None:
    """The latest complete partition of a partitioned job at ``at`` (default now), as Dagster's
    partitioned schedules compute it (the partitions are the module's, so this is
    ``PartitionSpec.latest()``); None before the first partition is complete."""
    pdef = job.partitions_def
    if pdef is None:
        return None
    with dg.partition_loading_context(effective_dt=at or dt.datetime.now(dt.timezone.utc)):
        return pdef.get_last_partition_key()
