"""The asset factory: one graph-backed asset per enabled module, one op per phase.

    [<m>_ready] -> <m>_resolve -> <m>_stage -> <m>_merge -> <m>_hooks  ==> asset <m>

Every op output is ``Nothing`` and optional (``Out(Nothing, is_required=False)``): nothing
passes through an IO manager (the ModuleRun lives in the ``pipekit`` resource), and an op that
does not yield its output makes Dagster skip the rest. That is how a dry run works: resolve
records an ``AssetObservation`` and yields nothing, so stage/merge/hooks are skipped and the asset
is not materialized.

Upstream assets (a module's ``deps`` and, in a group with ``stop_on_failure: true``, the member
before it) are graph inputs fanned in to ``<m>_resolve`` together with ``<m>_ready``, a no-op.
Dagster skips a fanned-in step only when *all* its sources are missing, and abandons it when any
upstream step failed: so a module waits for its upstream modules, does not run after one of
them failed, and is still planned in a dry run of the whole group (the upstream asset was only
observed).

Within a run, ready steps execute in the catalog's dependency order (``dagster/priority`` op
tags, honoured by the in-process executor), so a group's members run one after the other even
when no dep links them (``stop_on_failure: false``). The stage and merge ops are in the pool
``pipekit_dest_<dest connection>``, so an instance can cap concurrent loads per destination.

Building the assets reads the definitions only: no database, no subprocess.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of op, check and
# sensor parameters (context, resources) when the definitions are built.

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_dagster import constants as c
from pipekit_dagster.execution import run_phase
from pipekit_dagster.resources import PipekitResource, PipekitRunOptions
from pipekit_dagster.translator import PipekitModuleData, PipekitTranslator, build_asset_specs, module_data


def build_pipekit_assets(
    catalog: Catalog,
    translator: PipekitTranslator | None = None,
    specs: Mapping[str, dg.AssetSpec] | None = None,
) -> list[dg.AssetsDefinition]:
    """One graph-backed :class:`dagster.AssetsDefinition` per enabled module (pure: no I/O).

    Args:
        catalog: the loaded definitions (``pipekit_core.defs.load_catalog``).
        translator: decides each asset's spec; default :class:`PipekitTranslator`.
        specs: precomputed ``build_asset_specs(catalog, translator)``, to avoid computing it twice.

    Example::

        catalog = load_catalog(Path("module_defs"))
        assets = build_pipekit_assets(catalog)
    """
    specs = specs if specs is not None else build_asset_specs(catalog, translator)
    return [module_asset(data, specs[data.name]) for data in module_data(catalog)]


def module_asset(data: PipekitModuleData, spec: dg.AssetSpec) -> dg.AssetsDefinition:
    """The graph-backed asset of one module, with ``spec`` (from the translator) applied."""
    name = data.name
    retry = None
    if data.module.retries and data.module.retries.max > 0:
        retry = dg.RetryPolicy(max_retries=data.module.retries.max, delay=data.module.retries.delay)
    tags = {c.MODULE_TAG: name, c.PRIORITY_TAG: str(data.priority)}
    upstream = {"after_" + dep.asset_key.to_python_identifier(): dep.asset_key for dep in spec.deps}

    resolve = _phase_op(data, spec.key, "resolve", tags, retry, takes_after=bool(upstream))
    stage = _phase_op(data, spec.key, "stage", tags, retry, takes_after=True)
    merge = _phase_op(data, spec.key, "merge", tags, retry, takes_after=True)
    hooks = _phase_op(data, spec.key, "hooks", tags, retry, takes_after=True)
    ready = _ready_op(name, tags) if upstream else None

    def compose(**inputs: Any) -> Any:
        if ready is not None:
            planned = resolve(after=[ready(), *(inputs[i] for i in upstream)])
        else:
            planned = resolve()
        return hooks(after=merge(after=stage(after=planned)))

    graph = dg.graph(
        name=name,
        description=spec.description,
        ins={input_name: dg.GraphIn() for input_name in upstream},
        out=dg.GraphOut(),
    )(compose)
    assets_def = dg.AssetsDefinition.from_graph(
        graph,
        keys_by_input_name=upstream,
        keys_by_output_name={"result": spec.key},
    )
    return assets_def.map_asset_specs(lambda _: spec)


def _phase_op(
    data: PipekitModuleData,
    asset_key: dg.AssetKey,
    phase: str,
    tags: dict[str, str],
    retry: dg.RetryPolicy | None,
    *,
    takes_after: bool,
) -> dg.OpDefinition:
    module = data.name
    descriptions = {
        "resolve": "Take the module lock, resolve watermarks, render the query and build every statement "
        "(a dry run stops here and records an observation).",
        "stage": "Create the staging table and copy the source rows into it.",
        "merge": "Merge staging into the destination table in one transaction.",
        "hooks": "Run the success hooks, write the run log and release the lock; materializes the asset.",
    }

    @dg.op(
        name=f"{module}_{phase}",
        description=descriptions[phase],
        ins={"after": dg.In(dg.Nothing)} if takes_after else {},
        out=dg.Out(dg.Nothing, is_required=False),
        tags={**tags, c.PHASE_TAG: phase},
        retry_policy=retry,
        pool=c.dest_pool(data.module.dest) if phase in ("stage", "merge") else None,
    )
    def _op(context: dg.OpExecutionContext, pipekit: PipekitResource, pipekit_run: PipekitRunOptions) -> Iterator[Any]:
        yield from run_phase(context, pipekit, pipekit_run, module, phase, asset_key)

    return _op


def _ready_op(module: str, tags: dict[str, str]) -> dg.OpDefinition:
    @dg.op(
        name=f"{module}_ready",
        description="No-op entry of the module: resolve runs once it and every upstream module in the run are done.",
        out=dg.Out(dg.Nothing),
        tags=tags,
    )
    def _op() -> None:
        return None

    return _op
