"""What each phase op does: call the engine, turn the outcome into Dagster events.

A module's ops share one :class:`~pipekit_core.engine.ModuleRun` held by the ``pipekit``
resource (see :mod:`pipekit_dagster.resources`):

    <m>.resolve: start() (lock, run log) + resolve()     dry run: AssetObservation, finish(), no output
    <m>.stage:   stage()
    <m>.merge:   merge()
    <m>.hooks:   run_hooks() + finish() -> the asset's materialization with its metadata

Any failure, including an interrupt (terminating a run raises ``DagsterExecutionInterruptedError``
inside the running op), is handled in the op: the transport is cancelled, ``finish(exc)`` runs the
failure hooks, drops staging, writes the run log and releases the lock, and the error is
re-raised: a :class:`PipekitFailure` for pipekit errors (description and metadata in the UI), the
interrupt itself otherwise.

Partitions: a partitioned module's asset is partitioned (``partitions:``) and every Dagster run of
it names a partition or a partition range (a single-run backfill). :func:`run_window` turns that
into the pipekit run's window (``RunOptions.window``), so a range of 90 days is one pipekit run
over the whole window: one query, one merge. The materialization (one per partition) carries the
window and its row count.

A run a schedule, a sensor or declarative automation started that finds its module already
running (another run holds the module's lock) is **skipped**, not failed: the step logs "skipped:
already running" with the holder, the run gets the tag ``pipekit/skipped``, an observation of the
asset says so, and nothing of the module is materialized (its later phases are skipped; a
downstream module of the run still runs, over the module's committed rows). A run a person started (the UI, ``dagster job execute``, ``dg launch``) fails instead, with
what to do: they asked for that run and must not take "success" for a run that did nothing.

Retries: a module's ``retries`` becomes a ``dg.RetryPolicy`` on its phase ops, and a failure
allows a retry only when it is transient (``PipekitFailure(allow_retries=transient)``). The
failed attempt has been finished (its own run log row, lock released), so the retried op starts a
fresh ModuleRun and runs the phases from resolve up to its own: watermarks are re-resolved
from the destination, so a retry never duplicates rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from pipekit_core.errors import is_expected, is_retryable, lock_conflict
from pipekit_dagster import constants as c
from pipekit_dagster.resources import PipekitResource, PipekitRunOptions
from pipekit_dagster.translator import sql_markdown

if TYPE_CHECKING:
    from pipekit_core.engine import ModuleRun, Plan, RunResult
    from pipekit_core.partitions import PartitionSpec, Window


class PipekitFailure(dg.Failure):
    """A module run failed; the description is pipekit's error message (secrets redacted)."""


def run_phase(
    context: dg.OpExecutionContext,
    pipekit: PipekitResource,
    run_options: PipekitRunOptions,
    module: str,
    phase: str,
    asset_key: dg.AssetKey,
) -> Iterator[Any]:
    """Run one phase of ``module`` (and, on a retry, the phases before it); yield Dagster events."""
    events = pipekit.event_log(module, context.log)
    run = pipekit.current_run(module)
    restart = phase == "resolve" or run is None or run.finished
    if restart and phase != "resolve" and run is None and context.retry_number == 0:
        raise PipekitFailure(
            description=f"module '{module}': phase '{phase}' found no run started by step '{module}.resolve' in this "
            "process; pipekit assets need the in-process executor (Definitions(executor=dg.in_process_executor))",
            allow_retries=False,
        )
    try:
        if restart:
            options = run_options.for_module(module, context.run.tags, context.run_id, run_window(context, pipekit, module))
            # the definition this code location loaded: the run says so if the YAML has changed since
            options.code_version = context.assets_def.code_versions_by_key.get(asset_key)
            run = pipekit.new_run(module, options, events)
            if phase != "resolve":
                context.log.warning(f"[{module}] retry: starting over from resolve (the failed attempt was finished)")
            steps = c.PHASES[: c.PHASES.index(phase) + 1]
        else:
            steps = (phase,)
    except Exception as e:  # the run could not even be created (unknown module, missing secret, no partition)
        raise PipekitFailure(
            description=str(e) if str(e).startswith(f"module '{module}'") else f"module '{module}': {e}",
            metadata={c.MODULE: module, c.PHASE: phase},
            allow_retries=is_retryable(e),
        ) from e
    assert run is not None
    try:
        for step in steps:
            if step == "resolve":
                run.start()
                plan = run.resolve()
                if run.options.dry_run:
                    result = run.finish()
                    spec = pipekit.engine().partition_spec(run.module)
                    keys = spec.keys(result.window) if spec is not None and result.window is not None else []
                    context.log_event(dg.AssetObservation(
                        asset_key=asset_key, metadata=dry_run_metadata(plan, result, spec),
                        partition=keys[0] if len(keys) == 1 else None,
                    ))
                    context.log.info(f"[{module}] dry run: planned, nothing written")
                    return  # no output: the later phases are skipped, the asset is not materialized
            elif step == "stage":
                run.stage()
            elif step == "merge":
                run.merge()
            else:
                run.run_hooks()
        if phase == "hooks":
            result = run.finish()
            for line in result.summary():  # each module ends with one line, as in `pipekit run`
                context.log.info(f"[{module}] {line}")
            # The metadata goes on the asset's materialization only (the op's asset context: it
            # belongs to the module's graph-backed asset), not a second time on the step's output.
            asset_context = dg.AssetExecutionContext.get()
            asset_context.add_asset_metadata(materialization_metadata(result, pipekit.engine().partition_spec(run.module)))
            if result.partition_row_counts and len(result.partition_row_counts) > 1:
                # a range run: each partition's materialization gets its own row count
                for key, rows in result.partition_row_counts.items():
                    asset_context.add_asset_metadata({c.PARTITION_ROW_COUNT: dg.MetadataValue.int(rows)}, partition_key=key)
            yield dg.Output(None)
        else:
            yield dg.Output(None, metadata=phase_metadata(phase, run))
    except Exception as e:
        run.cancel.cancel(f"phase '{run.phase}' failed")
        result = run.finish(e)
        if lock_conflict(e) is not None and automated(context.run.tags):
            skip_already_running(context, asset_key, module, result.error or str(e))
            return  # no output: nothing of this module runs in this run, the asset is not materialized
        if result.committed:  # the table has changed: the asset says so before the run fails
            for event in committed_materializations(asset_key, result, pipekit.engine().partition_spec(run.module)):
                context.log_event(event)
        if is_expected(e):
            # pipekit's description says it all (module, phase, what happened, what to do): no
            # chained traceback of pipekit's internals under Dagster's own
            raise failure(module, result, e) from None
        raise failure(module, result, e) from e
    except BaseException as e:  # interrupts: DagsterExecutionInterruptedError, KeyboardInterrupt
        run.cancel.cancel("the Dagster run was terminated")
        result = run.finish(e)
        if result.committed:
            for event in committed_materializations(asset_key, result, pipekit.engine().partition_spec(run.module)):
                context.log_event(event)
        raise


# Tags Dagster puts on the runs it starts by itself (schedules, sensors, declarative automation).
_AUTOMATED_TAGS = ("dagster/schedule_name", "dagster/sensor_name", "dagster/from_automation_condition_evaluation")


def automated(tags: Mapping[str, str]) -> bool:
    """Whether Dagster started this run by itself (a schedule, a sensor, automation), not a person."""
    return any(t in tags for t in _AUTOMATED_TAGS)


def skip_already_running(context: dg.OpExecutionContext, asset_key: dg.AssetKey, module: str, reason: str) -> None:
    """Report an automated run that found ``module`` already running as skipped (tag, observation, log)."""
    context.log.warning(f"[{module}] skipped: already running. {reason}")
    context.instance.add_run_tags(context.run_id, {c.SKIPPED_TAG: "already running"})
    partition = context.partition_key if context.has_partition_key else None
    context.log_event(dg.AssetObservation(asset_key=asset_key, partition=partition,
                                          metadata={c.SKIPPED: "already running", c.ERROR: reason}))


def committed_materializations(asset_key: dg.AssetKey, result: RunResult, spec: PartitionSpec | None) -> list[dg.AssetMaterialization]:
    """The materialization(s) of a run whose merge committed but which failed afterwards (a hook,
    a cancel): the destination holds the new rows, so the asset must not look unchanged. The
    failure is in the metadata (``pipekit/error``, ``pipekit/phase``); one per partition of
    a partitioned module's window."""
    md = materialization_metadata(result, spec)
    md[c.ERROR] = dg.MetadataValue.text(result.error or "")
    md[c.PHASE] = result.failed_phase or ""
    keys = spec.keys(result.window) if spec is not None and result.window is not None else [None]
    counts = result.partition_row_counts or {}
    out = []
    for key in keys:
        per = dict(md)
        if key is not None and key in counts:
            per[c.PARTITION_ROW_COUNT] = dg.MetadataValue.int(counts[key])
        out.append(dg.AssetMaterialization(asset_key=asset_key, partition=key, metadata=per,
                                           description=f"merge committed; then the run failed: {result.error}"))
    return out


def run_window(context: dg.OpExecutionContext, pipekit: PipekitResource, module: str) -> Window | None:
    """The window of ``module`` in this Dagster run: its partition's, or its partition range's
    (one window over the whole range); None for a module without ``partitions:``.

    Raises WindowError (naming the module) when a partitioned module's run has no partition, or
    when the run's window is not whole periods of the module's partitions.
    """
    from pipekit_core.partitions import WindowError

    engine = pipekit.engine()
    spec = engine.partition_spec(engine.module(module))
    if spec is None:
        return None
    if not context.has_partitions:
        raise WindowError(
            f"module '{module}' is partitioned (every {spec.every} from {spec.start_key}): a Dagster run of it "
            "needs a partition or a partition range; pick partitions in the launchpad, or use "
            "`dagster asset materialize --partition KEY` / `--partition-range A...B`, or launch its job with a "
            "partition"
        )
    time_window = context.partition_time_window
    return spec.between(time_window.start, time_window.end)


def failure(module: str, result: RunResult, exc: BaseException) -> PipekitFailure:
    """The Dagster failure for a finished, failed module run."""
    # pipekit's one retry decision; a run whose merge committed is never retried.
    transient = is_retryable(exc) and not result.committed
    metadata: dict[str, Any] = {
        c.MODULE: module,
        c.PHASE: result.failed_phase or "",
        c.ERROR: result.error or str(exc),
        c.TRANSIENT: transient,
    }
    if result.run_id is not None:
        metadata[c.RUN_ID] = result.run_id
    description = result.error or f"module '{module}' failed: {exc}"
    if lock_conflict(exc) is not None:  # what to do, in Dagster's terms
        description += ("; materialize it again once that run has ended (if its holder is gone, clear the "
                        f"lock with `pipekit unlock {module}`)")
    return PipekitFailure(description=description, metadata=metadata, allow_retries=transient)


def phase_metadata(phase: str, run: ModuleRun) -> dict[str, Any]:
    """Small metadata on the intermediate outputs (rows so far)."""
    r = run.result
    if phase == "resolve":
        return {c.WATERMARKS: dg.MetadataValue.json(r.watermarks or {}), c.TRANSPORT: r.transport or ""}
    if phase == "stage":
        return _without_none({c.ROWS_READ: r.rows_read, c.ROWS_STAGED: r.rows_staged})
    if phase == "merge":
        return _without_none({c.ROWS_DELETED: r.rows_deleted, c.ROWS_INSERTED: r.rows_inserted, c.ROW_COUNT: r.row_count})
    return {}


def materialization_metadata(result: RunResult, spec: PartitionSpec | None = None) -> dict[str, Any]:
    """Everything a successful run reports on its materialization (``spec``: the module's
    partitions, for the window metadata of a partitioned module)."""
    md: dict[str, Any] = {c.TABLE_NAME: dg.MetadataValue.text(result.dest_table)}
    if result.row_count is not None:
        md[c.ROW_COUNT] = dg.MetadataValue.int(result.row_count)
    if result.dest_columns:
        md[c.COLUMN_SCHEMA] = dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(name=n, type=t or "unknown") for n, t in result.dest_columns])
        )
    md.update(
        _without_none(
            {
                c.ROWS_READ: result.rows_read,
                c.ROWS_STAGED: result.rows_staged,
                c.ROWS_DELETED: result.rows_deleted,
                c.ROWS_INSERTED: result.rows_inserted,
                c.RUN_ID: result.run_id,
                c.TRANSPORT: result.transport,
            }
        )
    )
    md[c.WATERMARKS] = dg.MetadataValue.json(result.watermarks or {})
    md[c.SOURCE_SQL] = dg.MetadataValue.md(sql_markdown(result.source_sql))
    md[c.MERGE_SQL] = dg.MetadataValue.md(sql_markdown(result.merge_sql))
    md[c.PHASE_TIMINGS] = dg.MetadataValue.text(result.timings())  # text: JSON keys are stored sorted
    md.update(window_metadata(result, spec))
    md.update(
        _without_none(
            {
                c.ROWS_SOURCE_DELETED: result.rows_source_deleted,
                c.ROWS_SOFT_DELETED: result.rows_soft_deleted,
                c.ROWS_UNDELETED: result.rows_undeleted,
            }
        )
    )
    if result.plan is not None:
        md[c.STRATEGY] = result.plan.strategy
        if result.plan.drift:
            md[c.DRIFT] = dg.MetadataValue.json(list(result.plan.drift))
    return md


def window_metadata(result: RunResult, spec: PartitionSpec | None) -> dict[str, Any]:
    """A partitioned module's window: start / end (ISO text), the number of partitions and the
    destination rows in it. A Dagster run of a partition range is one pipekit run, and Dagster
    copies this metadata onto the materialization of every partition in the range, so
    ``dagster/partition_row_count`` (the rows of *that* partition) is set here only when the window
    is one partition; a range run adds each partition's own count (``run_phase``);
    ``pipekit/window_row_count`` is the whole window's."""
    window = result.window
    if window is None:
        return {}
    partitions = len(spec.keys(window)) if spec is not None else None
    md: dict[str, Any] = {
        c.WINDOW_START: window.start.isoformat(),
        c.WINDOW_END: window.end.isoformat(),
    }
    if partitions is not None:
        md[c.PARTITIONS] = partitions
    if result.window_row_count is not None:
        md[c.WINDOW_ROW_COUNT] = dg.MetadataValue.int(result.window_row_count)
        if partitions == 1:
            md[c.PARTITION_ROW_COUNT] = dg.MetadataValue.int(result.window_row_count)
    return md


def dry_run_metadata(plan: Plan, result: RunResult, spec: PartitionSpec | None = None) -> dict[str, Any]:
    """What a dry run observes: resolved watermarks and every statement it would run (and the
    window of a partitioned module)."""
    md: dict[str, Any] = {
        c.DRY_RUN: True,
        c.STRATEGY: plan.strategy,
        c.TRANSPORT: plan.transport,
        c.WATERMARKS: dg.MetadataValue.json(plan.watermark_values()),
        c.WATERMARK_SOURCES: dg.MetadataValue.json({k: v.source for k, v in plan.watermarks.items()}),
        c.SOURCE_SQL: dg.MetadataValue.md(sql_markdown(plan.source_sql)),
        c.MERGE_SQL: dg.MetadataValue.md(sql_markdown(plan.merge_sql_text())),
        c.STAGING_DDL: dg.MetadataValue.md(sql_markdown(";\n".join(plan.staging_ddl) + (";" if plan.staging_ddl else ""))),
        c.TABLE_NAME: dg.MetadataValue.text(plan.dest_table),
    }
    if plan.create_table_sql:
        md[c.CREATE_TABLE_SQL] = dg.MetadataValue.md(sql_markdown(";\n".join(plan.create_table_sql) + ";"))
    if plan.drift:
        md[c.DRIFT] = dg.MetadataValue.json(list(plan.drift))
    if plan.hooks:
        md[c.HOOKS] = dg.MetadataValue.json(
            [{"name": h.name or f"hook #{i + 1}", "run_on": h.run_on, "sql": h.sql.strip()} for i, h in enumerate(plan.hooks)]
        )
    if result.run_id is not None:
        md[c.RUN_ID] = result.run_id
    md[c.PHASE_TIMINGS] = dg.MetadataValue.text(result.timings())  # text: JSON keys are stored sorted
    md.update(window_metadata(result, spec))
    return md


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
