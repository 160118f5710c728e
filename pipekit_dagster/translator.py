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
module keeps the lineage intact. Everything here is a pure function of the loaded definitions: no
database, no subprocess.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from pipekit_core.defs import Catalog
from pipekit_core.models import Module
from pipekit_core.partitions import PartitionSpec, spec_for
from pipekit_dagster import constants as c


@dataclass(frozen=True)
class PipekitModuleData:
    """What the translator gets for one module.

    Attributes:
        module: the validated module definition.
        group: the pipekit group that lists the module, or None.
        source_kind / dest_kind: database kinds of its connections (``postgresql``, ``sqlite``, ...).
        upstream: modules this one runs after, in order: its ``deps`` and, in a group with
            ``stop_on_failure: true``, the member before it (so a failure stops the rest).
        priority: position in the catalog's dependency order, highest first; ready steps of a
            run execute in this order (``dagster/priority``), which keeps a group's members in order.
        partitions: the module's ``partitions:`` resolved (``pipekit_core.partitions.spec_for``, in
            the ``timezone`` setting unless the module names its own), or None.
    """

    module: Module
    group: str | None
    source_kind: str
    dest_kind: str
    upstream: tuple[str, ...] = ()
    priority: int = 0
    partitions: PartitionSpec | None = None

    @property
    def name(self) -> str:
        return self.module.name


def module_data(catalog: Catalog, timezone: str | None = None) -> list[PipekitModuleData]:
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
    names = list(enabled)
    ordered = catalog.in_dependency_order(group_order + [n for n in names if n not in group_order])
    out = []
    if timezone is None and any(m.partitions is not None for m in enabled.values()):
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
            )
        )
    return out


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
        return dg.AssetSpec(
            key=default_asset_key(mod.name),
            deps=[default_asset_key(u) for u in data.upstream],
            description=mod.description or f"{mod.strategy} sync of a query on '{mod.source}' into {mod.dest}.{mod.dest_table}",
            metadata=metadata,
            group_name=data.group or c.DEFAULT_GROUP,
            code_version=mod.definition_hash(),
            kinds={data.source_kind, data.dest_kind},
            tags={c.MODULE_TAG: mod.name, c.STRATEGY_TAG: mod.strategy},
            partitions_def=partitions_definition(data.partitions) if data.partitions is not None else None,
        )


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
    catalog: Catalog, translator: PipekitTranslator | None = None, timezone: str | None = None
) -> dict[str, dg.AssetSpec]:
    """Module name -> spec for every enabled module; deps on modules follow overridden keys.

    ``timezone``: the default timezone of partitions (see :func:`module_data`).
    """
    translator = translator or PipekitTranslator()
    specs = {d.name: translator.get_asset_spec(d) for d in module_data(catalog, timezone)}
    moved = {default_asset_key(name): spec.key for name, spec in specs.items() if spec.key != default_asset_key(name)}
    if moved:
        specs = {
            name: spec.replace_attributes(
                deps=[dg.AssetDep(moved.get(dep.asset_key, dep.asset_key), partition_mapping=dep.partition_mapping) for dep in spec.deps]
            )
            for name, spec in specs.items()
        }
    return specs
