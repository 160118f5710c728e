"""The asset factory: one graph-backed asset per enabled module, one op per phase.

    [ready] -> resolve -> stage -> merge -> hooks  ==> asset <m>   (step keys <m>.resolve, ...)

Every op output is ``Nothing`` and optional (``Out(Nothing, is_required=False)``): nothing
passes through an IO manager (the ModuleRun lives in the ``pipekit`` resource), and an op that
does not yield its output makes Dagster skip the rest. That is how a dry run works: resolve
records an ``AssetObservation`` and yields nothing, so stage/merge/hooks are skipped and the asset
is not materialized.

Upstream assets (a module's ``deps`` and, in a group with ``stop_on_failure: true``, the member
before it) are graph inputs fanned in to ``resolve`` together with ``ready``, a no-op (only modules with
upstream assets have it: it is what lets resolve run when no upstream module is in the run).
Dagster skips a fanned-in step only when *all* its sources are missing, and abandons it when any
upstream step failed: so a module waits for its upstream modules, does not run after one of
them failed, and is still planned in a dry run of the whole group (the upstream asset was only
observed).

Within a run, ready steps execute in the catalog's dependency order (``dagster/priority`` op
tags, honoured by the in-process executor), so a group's members run one after the other even
when no dep links them (``stop_on_failure: false``). The stage op is in the pool
``pipekit_src_<source connection>`` (it reads the source) and the merge op in the pool
``pipekit_dest_<dest connection>`` (the transaction on the destination table): a Dagster op has one
pool, so an instance caps concurrent extracts per source and concurrent merges per destination.

The op definitions are shared by every module (``pipekit_resolve``, ``pipekit_stage_<pool>``,
...): a module's graph invokes them under the phase's name (step keys ``<m>.<phase>``: each
module's graph is its own namespace) with its own tags and retry policy, and an op reads its module from the
node's ``pipekit/module`` tag at run time. Building the assets reads the definitions only: no
database, no subprocess.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of op, check and
# sensor parameters (context, resources) when the definitions are built.

import functools
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

# The one private name used: the fan-in slot a graph input maps into (InputMapping.fan_in_index is
# public, the placeholder it points at is not exported). Building graphs directly instead of through
# composition functions is what keeps loading 1,000 modules within 3x of 10 (docs/benchmarks.md).
from dagster._core.definitions.composition import MappedInputPlaceholder

from pipekit_core.defs import Catalog
from pipekit_dagster import constants as c
from pipekit_dagster.execution import run_phase
from pipekit_dagster.resources import PipekitResource, PipekitRunOptions
from pipekit_dagster.translator import PipekitModuleData, PipekitTranslator, build_asset_specs, module_data


def build_pipekit_assets(
    catalog: Catalog,
    translator: PipekitTranslator | None = None,
    specs: Mapping[str, dg.AssetSpec] | None = None,
    timezone: str | None = None,
    naming: c.Naming = c.DEFAULT_NAMING,
) -> list[dg.AssetsDefinition]:
    """One graph-backed :class:`dagster.AssetsDefinition` per enabled module (pure: no I/O).

    Args:
        catalog: the loaded definitions (``pipekit_core.defs.load_catalog``).
        translator: decides each asset's spec; default :class:`PipekitTranslator`.
        specs: precomputed ``build_asset_specs(catalog, translator)``, to avoid computing it twice.
        timezone: the ``timezone`` setting, the default timezone of partitions (None: read it).
        naming: the op names, pools and the key of the ``pipekit`` resource the ops use.

    Example::

        catalog = load_catalog(Path("module_defs"))
        assets = build_pipekit_assets(catalog)
    """
    specs = specs if specs is not None else build_asset_specs(catalog, translator, timezone)
    return [module_asset(data, specs[data.name], naming) for data in module_data(catalog, timezone, naming.prefix)]


def module_asset(data: PipekitModuleData, spec: dg.AssetSpec, naming: c.Naming = c.DEFAULT_NAMING) -> dg.AssetsDefinition:
    """The graph-backed asset of one module, with ``spec`` (from the translator) applied.

    The graph is built directly, without a composition function, from op definitions that every
    module shares (:func:`_phase_op`, :func:`_ready_op`): each node is an invocation aliased
    ``<phase>`` (step key ``<m>.<phase>``) that carries the module's tags and retry policy, so a module adds no op
    definition of its own and loading 1,000 modules stays cheap.

    A partitioned asset (``spec.partitions_def``, from the module's ``partitions:``) gets a
    single-run backfill policy: a backfill of any number of partitions is one Dagster run, whose
    partition range the ops turn into one pipekit run over the whole window.
    """
    name = data.name
    retry = None
    if data.module.retries and data.module.retries.max > 0:
        retry = dg.RetryPolicy(max_retries=data.module.retries.max, delay=data.module.retries.delay)
    tags = {c.MODULE_TAG: name, c.PRIORITY_TAG: str(data.priority)}
    upstream = {"after_" + dep.asset_key.to_python_identifier(): dep.asset_key for dep in spec.deps}
    pools = {"stage": naming.src_pool(data.module.source), "merge": naming.dest_pool(data.module.dest)}
    node_defs: list[dg.OpDefinition] = []
    dependencies: dict[dg.NodeInvocation, Mapping[str, Any]] = {}

    def add(op_def: dg.OpDefinition, phase: str, deps: Mapping[str, Any], node_tags: Mapping[str, str]) -> None:
        node_defs.append(op_def)
        invocation = dg.NodeInvocation(op_def.name, alias=phase, tags=node_tags, retry_policy=retry)
        dependencies[invocation] = deps

    def after(phase: str) -> dict[str, dg.DependencyDefinition]:
        return {"after": dg.DependencyDefinition(phase, "result")}

    input_mappings: list[dg.InputMapping] = []
    if upstream:
        node_defs.append(_ready_op())
        dependencies[dg.NodeInvocation(_ready_op().name, alias="ready", tags=tags)] = {}
        fan_in: list[Any] = [dg.DependencyDefinition("ready", "result"), *[MappedInputPlaceholder] * len(upstream)]
        add(_phase_op("resolve", None, takes_after=True, naming=naming), "resolve", {"after": dg.MultiDependencyDefinition(fan_in)},
            {**tags, c.PHASE_TAG: "resolve"})
        input_mappings = [
            dg.InputMapping(graph_input_name=i, mapped_node_name="resolve", mapped_node_input_name="after",
                            fan_in_index=n)
            for n, i in enumerate(upstream, start=1)
        ]
    else:
        add(_phase_op("resolve", None, takes_after=False, naming=naming), "resolve", {}, {**tags, c.PHASE_TAG: "resolve"})
    for phase, before in (("stage", "resolve"), ("merge", "stage"), ("hooks", "merge")):
        add(_phase_op(phase, pools.get(phase), takes_after=True, naming=naming), phase, after(before), {**tags, c.PHASE_TAG: phase})
    graph = dg.GraphDefinition(
        name=name,
        description=spec.description,
        node_defs=list(dict.fromkeys(node_defs)),
        dependencies=dependencies,
        input_mappings=input_mappings,
        output_mappings=[
            dg.OutputMapping(graph_output_name="result", mapped_node_name="hooks", mapped_node_output_name="result")
        ],
    )
    # what AssetsDefinition.from_graph(...).map_asset_specs(lambda _: spec) builds, in one step
    return dg.AssetsDefinition(
        keys_by_input_name=upstream,
        keys_by_output_name={"result": spec.key},
        node_def=graph,
        specs=[spec],
        backfill_policy=dg.BackfillPolicy.single_run() if spec.partitions_def is not None else None,
    )


_DESCRIPTIONS = {
    "resolve": "Take the module lock, resolve watermarks, render the query and build every statement "
    "(a dry run stops here and records an observation).",
    "stage": "Create the staging table and copy the source rows into it.",
    "merge": "Merge staging into the destination table in one transaction.",
    "hooks": "Run the success hooks, write the run log and release the lock; materializes the asset.",
}


@functools.cache
def _phase_op(phase: str, pool: str | None, *, takes_after: bool, naming: c.Naming = c.DEFAULT_NAMING) -> dg.OpDefinition:
    """The op definition of ``phase``, shared by every module (stage and merge: one per pool).

    The module comes from the node's ``pipekit/module`` tag and the asset key from the asset
    the node belongs to, both read at run time. The op reads its module's run from the resource
    ``naming.resource_key`` (``pipekit`` by default; a Component's own key, bound to its own
    definitions folder) and the per-run options from ``pipekit_run``.
    """
    name = naming(f"pipekit_{phase}" + ("" if takes_after or phase != "resolve" else "_first"))
    if pool is not None:
        name += "_" + _ident(pool)
    resource_key = naming.resource_key

    @dg.op(
        name=name,
        description=_DESCRIPTIONS[phase],
        ins={"after": dg.In(dg.Nothing)} if takes_after else {},
        out=dg.Out(dg.Nothing, is_required=False),
        tags={c.PHASE_TAG: phase},
        pool=pool,
        required_resource_keys={resource_key, c.RUN_OPTIONS_RESOURCE_KEY},
    )
    def _op(context: dg.OpExecutionContext) -> Iterator[Any]:
        module = context.op.tags[c.MODULE_TAG]
        pipekit: PipekitResource = getattr(context.resources, resource_key)
        pipekit_run: PipekitRunOptions = getattr(context.resources, c.RUN_OPTIONS_RESOURCE_KEY)
        yield from run_phase(context, pipekit, pipekit_run, module, phase, context.assets_def.key)

    return _op


@functools.cache
def _ready_op() -> dg.OpDefinition:
    @dg.op(
        name="pipekit_ready",
        description="No-op entry of the module: resolve runs once it and every upstream module in the run are done.",
        out=dg.Out(dg.Nothing),
    )
    def _op() -> None:
        return None

    return _op


def _ident(text: str) -> str:
    """``text`` as a Dagster name: letters, digits and underscores (plus a hash if it had others)."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if ident != text:
        ident += "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return ident
