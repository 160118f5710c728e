"""Jobs: ``<module>_job``, ``<group>_job`` (members in order) and ``pipekit_all_job``.

All are asset jobs over the module assets (their asset checks included) and use the
Definitions-level executor. Order and stop semantics come from the assets themselves: a group
with ``stop_on_failure: true`` chains its members as asset deps, so after a failure the later
members are not executed; with ``stop_on_failure: false`` they are not chained, still run in
the group's order (``dagster/priority``) and still run after a failure, except those that
declare ``deps:`` on the failed module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_dagster import constants as c

# What dg.define_asset_job returns; its class is not in dagster's public namespace.
AssetJob: TypeAlias = Any


def build_jobs(catalog: Catalog, keys: Mapping[str, dg.AssetKey]) -> dict[str, AssetJob]:
    """Job name -> asset job, for every enabled module, every group with an enabled member, and all.

    ``keys``: module name -> asset key (from the translator).
    """
    jobs: dict[str, AssetJob] = {}
    for mod in catalog.enabled_modules():
        if mod.name not in keys:
            continue
        name = c.module_job_name(mod.name)
        jobs[name] = dg.define_asset_job(
            name=name,
            selection=dg.AssetSelection.assets(keys[mod.name]),
            description=f"Run module '{mod.name}' (resolve, stage, merge, hooks) and its checks.",
        )
    for group in catalog.groups.values():
        members = [m for m in catalog.in_dependency_order(list(group.modules)) if m in keys]
        if not members:
            continue
        stop = "stops at the first failure" if group.stop_on_failure else "runs every member even after a failure"
        name = c.group_job_name(group.name)
        jobs[name] = dg.define_asset_job(
            name=name,
            selection=dg.AssetSelection.assets(*(keys[m] for m in members)),
            description=(group.description + "\n\n" if group.description else "")
            + f"Group '{group.name}': {', '.join(members)}, in this order; {stop}.",
        )
    if keys:
        jobs[c.ALL_JOB] = dg.define_asset_job(
            name=c.ALL_JOB,
            selection=dg.AssetSelection.assets(*keys.values()),
            description="Every enabled pipekit module, in dependency order.",
        )
    return jobs
