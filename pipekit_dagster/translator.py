"""Module -> AssetSpec: the one place that decides how a pipekit module looks in Dagster.

:class:`PipekitTranslator` has one hook, :meth:`PipekitTranslator.get_asset_spec`, called with a
small frozen :class:`PipekitModuleData`. Subclass it, call ``super()`` and adjust the spec with
``replace_attributes`` / ``merge_attributes``::

    class MyTranslator(PipekitTranslator):
        def get_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(key=spec.key.with_prefix("erp")).merge_attributes(
                owners=["team:data"]
            )

Deps that name another pipekit module follow that module's key, so a key prefix applied to every
module keeps the lineage intact. The tables a module's query reads (:mod:`pipekit_core.lineage`)
are deps too: another module's asset when that module writes the table, else an external asset
from :meth:`PipekitTranslator.get_source_asset_spec` (the second hook). Everything here is a pure function of the loaded definitions: no
database, no subprocess.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from pipekit_core.defs import Catalog, smallest_cron_interval
from pipekit_core.lineage import QueryLineage, TableRef, dest_table_ref, module_lineage
from pipekit_core.models import Automation, Freshness, Module
from pipekit_core.partitions import PartitionSpec, spec_for
from pipekit_dagster import constants as c

logger = logging.getLogger("pipekit_dagster")

# Lineage (issue 12 §3). Metadata keys: Dagster's own, and pipekit's reason when the query could
# not be read; the group of the external assets that stand for the tables modules read.
SOURCES_GROUP = "pipekit_sources"
COLUMN_LINEAGE = "dagster/column_lineage"
CODE_REFERENCES = "dagster/code_references"
LINEAGE_ERROR = "pipekit/lineage_error"


@dataclass(frozen=True)
class PipekitSourceTable:
    """A table a module's query reads (:mod:`pipekit_core.lineage`), on the module's source.

    Attributes:
        connection / kind: the source connection's name and database kind.
        table: the table, named as that database names it (folded, default schema filled in).
        module: the enabled module whose destination it is (same connection, same table), or
            None: then it is an external asset (:meth:`PipekitTranslator.get_source_asset_spec`).
    """

    connection: str
    kind: str
    table: TableRef
    module: str | None = None
    # the first part of its key: a Component instance's name, since its connection names are its
    # own folder's (another instance's 'erp' may be another database); "" for build_definitions
    namespace: str = ""


@dataclass(frozen=True)
class PipekitModuleData:
    """What the translator gets for one module.

    Attributes:
        module: the validated module definition.
        group: the pipekit group that lists the module, or None.
        source_kind / dest_kind: database kinds of its connections (``postgresql``, ``sqlite``, ...).
        upstream: modules this one runs after, in order: its ``deps``, in a group with
            ``stop_on_failure: true`` the member before it (so a failure stops the rest), and the
            modules whose destination table its query reads (automatic, unless that edge would
            make a cycle: then it is in ``lineage_left_out``).
        priority: position in the catalog's dependency order, highest first; ready steps of a
            run execute in this order (``dagster/priority``), which keeps a group's members in order.
        partitions: the module's ``partitions:`` resolved (``pipekit_core.partitions.spec_for``, in
            the ``timezone`` setting unless the module names its own), or None.
        automation: the ``automation:`` that applies (the module's own, else its group's), or None.
        timezone: the ``timezone`` setting: where ``on_cron`` and a ``freshness`` deadline are evaluated.
        lineage: what the query reads (tables, plain columns by destination name), or why it could
            not be read (``lineage.error``).
        reads: the tables the query reads, each an external table or another module's table;
            the module's own destination table is left out (no self-dependency).
        lineage_left_out: modules whose table the query reads but that stay out of ``upstream``,
            because they already run after this one (the edge would make a cycle).
    """

    module: Module
    group: str | None
    source_kind: str
    dest_kind: str
    upstream: tuple[str, ...] = ()
    priority: int = 0
    partitions: PartitionSpec | None = None
    automation: Automation | None = None
    timezone: str = "UTC"
    lineage: QueryLineage | None = None
    reads: tuple[PipekitSourceTable, ...] = ()
    lineage_left_out: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.module.name


def module_data(catalog: Catalog, timezone: str | None = None, namespace: str = "") -> list[PipekitModuleData]:
    """One :class:`PipekitModuleData` per enabled module, in dependency order (pure).

    ``timezone``: the ``timezone`` setting, the default of ``partitions: timezone`` (None: read it
    from the settings, :func:`default_timezone`).
    """
    enabled = {m.name: m for m in catalog.enabled_modules()}
    upstream: dict[str, list[str]] = {name: [d for d in mod.deps if d in enabled] for name, mod in enabled.items()}
    group_order: list[str] = []
    for group in catalog.groups.values():
        members = [m for m in catalog.in_dependency_order(list(group.modules)) if m in enabled]
        group_order += [m for m in members if m not in group_order]
        if group.stop_on_failure:
            for before, after in zip(members, members[1:], strict=False):
                # deps across groups could make the chain circular; such an edge is left out
                if not _reaches(upstream, before, after):
                    upstream[after].append(before)
    kinds = {name: conn.kind for name, conn in catalog.connections.items()}
    lineages, reads, left_out = _lineage_edges(enabled, kinds, upstream, namespace)
    names = list(enabled)
    ordered = catalog.in_dependency_order(group_order + [n for n in names if n not in group_order])
    if any(r.module is not None for rs in reads.values() for r in rs):
        ordered = _in_upstream_order(ordered, upstream)  # automatic deps: priorities follow them too
    out = []
    if timezone is None and any(m.partitions is not None or catalog.automation_of(n) is not None
                                or m.freshness is not None for n, m in enabled.items()):
        timezone = default_timezone()
    for index, name in enumerate(ordered):
        mod = enabled[name]
        out.append(
            PipekitModuleData(
                module=mod,
                group=catalog.group_of(name),
                source_kind=catalog.connections[mod.source].kind if mod.source in catalog.connections else "unknown",
                dest_kind=catalog.connections[mod.dest].kind if mod.dest in catalog.connections else "unknown",
                upstream=tuple(dict.fromkeys(upstream[name])),
                priority=len(ordered) - index,
                partitions=spec_for(mod, timezone or "UTC"),
                automation=catalog.automation_of(name),
                timezone=timezone or "UTC",
                lineage=lineages[name],
                reads=reads[name],
                lineage_left_out=left_out[name],
            )
        )
    return out


def _lineage_edges(
    enabled: dict[str, Module], kinds: dict[str, str], upstream: dict[str, list[str]], namespace: str = ""
) -> tuple[dict[str, QueryLineage], dict[str, tuple[PipekitSourceTable, ...]], dict[str, tuple[str, ...]]]:
    """Parse each module's query (:func:`pipekit_core.lineage.module_lineage`, cached by query
    text) and add to ``upstream`` (in place) an edge to each module whose destination table it
    reads (same connection as that module's dest, same table), unless that module already runs
    after it (the edge would make a cycle; it is returned as left out instead).

    Returns (lineage, tables read, modules left out), each by module name.
    """
    writers: dict[tuple[str, TableRef], list[str]] = {}
    for name, mod in enabled.items():
        ref = dest_table_ref(mod.dest_table, kinds.get(mod.dest, "unknown"))
        if ref is not None:
            writers.setdefault((mod.dest, ref), []).append(name)
    lineages: dict[str, QueryLineage] = {}
    reads: dict[str, tuple[PipekitSourceTable, ...]] = {}
    left_out: dict[str, tuple[str, ...]] = {}
    for name, mod in enabled.items():
        kind = kinds.get(mod.source, "unknown")
        lineages[name] = lineage = module_lineage(mod, kind)
        found: list[PipekitSourceTable] = []
        skipped: list[str] = []
        for table in lineage.tables:
            owners = writers.get((mod.source, table), [])
            if name in owners:
                continue  # the module reads its own table (a self-join, NOT EXISTS, ...): no self-dependency
            if not owners:
                found.append(PipekitSourceTable(mod.source, kind, table, namespace=namespace))
            for owner in owners:
                if owner not in upstream[name] and _reaches(upstream, owner, name):
                    skipped.append(owner)
                    continue
                if owner not in upstream[name]:
                    upstream[name].append(owner)
                found.append(PipekitSourceTable(mod.source, kind, table, owner, namespace))
        reads[name], left_out[name] = tuple(found), tuple(dict.fromkeys(skipped))
    return lineages, reads, left_out


def _in_upstream_order(names: list[str], upstream: dict[str, list[str]]) -> list[str]:
    """``names`` reordered so each comes after its ``upstream`` modules; stable otherwise (the
    automatic lineage edges never make a cycle, so every name finds its place)."""
    done: list[str] = []
    placed: set[str] = set()
    pending = list(names)
    while pending:
        ready = next((n for n in pending if all(u in placed or u not in upstream for u in upstream[n])), pending[0])
        done.append(ready)
        placed.add(ready)
        pending.remove(ready)
    return done


def default_timezone() -> str:
    """The ``timezone`` setting (pipekit.yaml), else the machine's zone: what partitions default to."""
    from pipekit_core.config import load_settings

    return load_settings().local_timezone()


def partitions_definition(spec: PartitionSpec) -> dg.TimeWindowPartitionsDefinition:
    """The Dagster partitions of a module: cron, key format, start / end and timezone are the
    :class:`~pipekit_core.partitions.PartitionSpec`'s (the one source of truth for both)."""
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=spec.cron, start=spec.start_key, end=spec.end_key, fmt=spec.fmt, timezone=spec.timezone
    )


def _reaches(upstream: dict[str, list[str]], start: str, target: str) -> bool:
    """True when ``target`` is ``start`` or one of its (transitive) upstream modules."""
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n == target:
            return True
        if n not in seen:
            seen.add(n)
            todo += upstream.get(n, [])
    return False


def default_asset_key(module_name: str) -> dg.AssetKey:
    return dg.AssetKey([module_name])


class PipekitTranslator:
    """Turns a pipekit module into the :class:`dagster.AssetSpec` of its destination table."""

    def get_asset_spec(self, data: PipekitModuleData) -> dg.AssetSpec:
        """The asset spec of one module.

        Key = module name; group = the pipekit group or ``pipekit``; kinds = source and
        destination database kinds; code_version = the definition's hash; ``dagster/table_name``
        and, when ``columns:`` gives them, ``dagster/column_schema``; deps = ``upstream``;
        ``partitions_def`` = :func:`partitions_definition` of a module with ``partitions:`` (keep it:
        a run's partition window becomes the module's window, so it must be the module's periods).
        """
        mod = data.module
        metadata: dict[str, object] = {
            c.TABLE_NAME: dg.MetadataValue.text(mod.dest_table),
            c.SOURCE: mod.source,
            c.DEST: mod.dest,
            c.STRATEGY: mod.strategy,
            c.QUERY: dg.MetadataValue.md(sql_markdown(mod.sql)),
        }
        schema = column_schema(mod)
        if schema is not None:
            metadata[c.COLUMN_SCHEMA] = dg.MetadataValue.table_schema(schema)
        if mod.merge_key:
            metadata[c.MERGE_KEY] = ", ".join(mod.merge_key)
        if mod.source_file:
            metadata[c.DEFINITION_FILE] = mod.source_file
        if data.partitions is not None:
            metadata[c.PARTITION_COLUMN] = data.partitions.column
        keys = self._read_keys(data)
        metadata.update(self._lineage_metadata(data, keys))
        external = [keys[t.table] for t in data.reads if t.module is None]
        return dg.AssetSpec(
            key=default_asset_key(mod.name),
            deps=list(dict.fromkeys([default_asset_key(u) for u in data.upstream] + external)),
            description=mod.description or f"{mod.strategy} sync of a query on '{mod.source}' into {mod.dest}.{mod.dest_table}",
            metadata=metadata,
            group_name=data.group or c.DEFAULT_GROUP,
            code_version=mod.definition_hash(),
            kinds={data.source_kind, data.dest_kind},
            tags={c.MODULE_TAG: mod.name, c.STRATEGY_TAG: mod.strategy},
            partitions_def=partitions_definition(data.partitions) if data.partitions is not None else None,
            # an external source table is never materialized (pipekit cannot see it change): to
            # Dagster it is "missing" for ever, which would block eager/on_missing/on_cron; ignore it
            automation_condition=(automation_condition(data.automation, data.timezone).ignore(dg.AssetSelection.assets(*external))
                                  if external else automation_condition(data.automation, data.timezone))
            if data.automation else None,
            freshness_policy=freshness_policy(mod.freshness, data.timezone) if mod.freshness else None,
        )

    def get_source_asset_spec(self, table: PipekitSourceTable) -> dg.AssetSpec:
        """The external asset (no materialization) of a table that modules read and no module
        writes: key = [connection, schema, table] (the parts the query names, folded as the
        database does); group ``pipekit_sources``; kinds = the source database's kind.

        Module specs depend on ``get_source_asset_spec(table).key``, so an override of the key
        (a prefix, another naming) keeps the lineage intact. Keep it a function of ``table``
        alone: every module that reads the table must get the same spec.
        """
        return dg.AssetSpec(
            key=dg.AssetKey([*([table.namespace] if table.namespace else []), table.connection, *table.table.parts]),
            description=f"Table {table.table} on connection '{table.connection}' ({table.kind}), read by "
            "pipekit modules; pipekit does not materialize it.",
            group_name=SOURCES_GROUP,
            kinds={table.kind},
            metadata={c.TABLE_NAME: dg.MetadataValue.text(str(table.table))},
        )

    def _read_keys(self, data: PipekitModuleData) -> dict[TableRef, dg.AssetKey]:
        """The asset key of each table the module reads and depends on: an external table's
        :meth:`get_source_asset_spec` key, or the (default) key of the module that writes it."""
        keys: dict[TableRef, dg.AssetKey] = {}
        for t in data.reads:
            if t.table not in keys:
                keys[t.table] = self.get_source_asset_spec(t).key if t.module is None else default_asset_key(t.module)
        return keys

    def _lineage_metadata(self, data: PipekitModuleData, keys: dict[TableRef, dg.AssetKey]) -> dict[str, object]:
        """Definition metadata from the module's lineage and files: ``dagster/code_references``
        (the module's YAML file at its line, and its ``query_file``), ``dagster/column_lineage``
        for the columns whose source is known, ``pipekit/lineage_error`` when the query could not
        be read."""
        mod, out = data.module, {}
        files = [(mod.source_file, mod.source_line, f"module {mod.name}"), (mod.query_path, None, "query_file")]
        with warnings.catch_warnings():  # code references are "beta" in Dagster 1.13: no warning per module
            warnings.simplefilter("ignore", dg.BetaWarning)
            refs = [dg.LocalFileCodeReference(file_path=os.path.abspath(path), line_number=line, label=label)
                    for path, line, label in files if path]
            if refs:
                out[CODE_REFERENCES] = dg.CodeReferencesMetadataValue(code_references=refs)
        lineage = data.lineage
        if lineage is not None and lineage.error:
            out[LINEAGE_ERROR] = dg.MetadataValue.text(lineage.error)
        if lineage is not None and lineage.columns:
            # keys: the tables read that are deps (not the module's own table, not a left-out module's)
            by_column = {
                column: [dg.TableColumnDep(asset_key=keys[r.table], column_name=r.column) for r in refs_]
                for column, refs_ in lineage.columns.items()
                if all(r.table in keys for r in refs_)
            }
            if by_column:
                out[COLUMN_LINEAGE] = dg.TableColumnLineage(deps_by_column=by_column)
        return out


def automation_condition(automation: Automation, timezone: str) -> dg.AutomationCondition:
    """``automation:`` as Dagster's condition: ``eager()``, ``on_missing()`` or ``on_cron(cron,
    cron_timezone=timezone)``. On a time-partitioned asset each considers the latest partition only.

    The conditions on deps (updated, missing, in progress) look at materializable deps only
    (``.allow(AssetSelection.all())``): the source tables shown upstream as external assets never
    materialize, so ``on_cron`` would wait for them forever and ``eager`` would never start. A change
    in a source table is what ``sensor:`` watches."""
    if automation.kind == "eager":
        condition = dg.AutomationCondition.eager()
    elif automation.kind == "on_missing":
        condition = dg.AutomationCondition.on_missing()
    else:
        condition = dg.AutomationCondition.on_cron(automation.cron or "", cron_timezone=timezone)
    return condition.allow(dg.AssetSelection.all())


def freshness_policy(freshness: Freshness, timezone: str) -> dg.FreshnessPolicy:
    """``freshness:`` as Dagster's policy: a time window (``fail_after`` / ``warn_after``) or a cron
    deadline evaluated in ``timezone`` (``window`` defaults to the time between deadline ticks)."""
    if freshness.deadline is None:
        assert freshness.fail_after is not None  # the model requires one of the two forms
        return dg.FreshnessPolicy.time_window(fail_window=freshness.fail_after, warn_window=freshness.warn_after)
    window = freshness.window or smallest_cron_interval(freshness.deadline)
    return dg.FreshnessPolicy.cron(deadline_cron=freshness.deadline, lower_bound_delta=window, timezone=timezone)


def column_schema(mod: Module) -> dg.TableSchema | None:
    """The destination columns as ``columns:`` declares them, or None when it does not."""
    if not mod.columns:
        return None
    return dg.TableSchema(
        columns=[dg.TableColumn(name=col.target_name, type=col.dest_type or col.source_type or "unknown") for col in mod.columns]
    )


def sql_markdown(sql: str | None) -> str:
    """SQL as a fenced markdown block (how the UI shows queries)."""
    return f"```sql\n{(sql or '').strip()}\n```"


def build_asset_specs(
    catalog: Catalog, translator: PipekitTranslator | None = None, timezone: str | None = None, namespace: str = ""
) -> dict[str, dg.AssetSpec]:
    """Module name -> spec for every enabled module; deps on modules follow overridden keys.

    ``timezone``: the default timezone of partitions (see :func:`module_data`).
    """
    translator = translator or PipekitTranslator()
    datas = module_data(catalog, timezone, namespace)
    _log_lineage(datas)
    specs = {d.name: translator.get_asset_spec(d) for d in datas}
    moved = {default_asset_key(name): spec.key for name, spec in specs.items() if spec.key != default_asset_key(name)}
    if moved:
        specs = {
            name: spec.replace_attributes(
                deps=[dg.AssetDep(moved.get(dep.asset_key, dep.asset_key), partition_mapping=dep.partition_mapping) for dep in spec.deps],
                metadata=_moved_column_lineage(spec.metadata, moved),
            )
            for name, spec in specs.items()
        }
    return specs


def build_source_asset_specs(
    catalog: Catalog, translator: PipekitTranslator | None = None, timezone: str | None = None, namespace: str = ""
) -> list[dg.AssetSpec]:
    """The external assets of the tables the enabled modules read and no module writes, one per
    key (:meth:`PipekitTranslator.get_source_asset_spec`); add them to the Definitions beside the
    module assets."""
    translator = translator or PipekitTranslator()
    out: dict[dg.AssetKey, dg.AssetSpec] = {}
    for data in module_data(catalog, timezone, namespace):
        for table in data.reads:
            if table.module is None:
                spec = translator.get_source_asset_spec(table)
                out.setdefault(spec.key, spec)
    return list(out.values())


def _log_lineage(datas: list[PipekitModuleData]) -> None:
    for d in datas:
        if d.lineage is not None and d.lineage.error:
            logger.warning("pipekit: module '%s' (%s): no lineage, the asset loads without source tables: %s",
                           d.name, d.module.source_file or "?", d.lineage.error)
        for other in d.lineage_left_out:
            logger.warning("pipekit: module '%s' reads the table of module '%s', but '%s' already runs after it "
                           "(deps or group order); the automatic dependency is left out to avoid a cycle",
                           d.name, other, other)


def _moved_column_lineage(metadata: Mapping[str, object], moved: dict[dg.AssetKey, dg.AssetKey]) -> dict[str, object]:
    """``metadata`` with the column lineage's asset keys following moved module keys."""
    lineage = metadata.get(COLUMN_LINEAGE)
    if not isinstance(lineage, dg.TableColumnLineage):
        return dict(metadata)
    deps = {col: [dg.TableColumnDep(asset_key=moved.get(d.asset_key, d.asset_key), column_name=d.column_name) for d in ds]
            for col, ds in lineage.deps_by_column.items()}
    return {**metadata, COLUMN_LINEAGE: dg.TableColumnLineage(deps_by_column=deps)}
