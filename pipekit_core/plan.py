"""A run's plan: resolved watermarks, the final source SQL and every statement it will execute.

Built by :func:`build_plan` without touching a database (the engine hands it what it learnt);
``pipekit plan``, dry runs and Dagster's dry-run observation show it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipekit_core.db import Endpoint
from pipekit_core.defs import Catalog
from pipekit_core.errors import PipekitError
from pipekit_core.models import Hook, Module
from pipekit_core.sql.builders import MergeBuilder
from pipekit_core.sql.dialects import ColumnDef, TableName
from pipekit_core.sql.types import map_type
from pipekit_core.transport.base import SourceColumn


@dataclass
class WatermarkValue:
    name: str
    value: str | None
    source: str  # resolved | default | override | first-run default | full-refresh default


@dataclass
class Plan:
    """Everything a run will execute, built without writing anything."""

    module: str
    strategy: str
    transport: str
    transport_reason: str
    watermarks: dict[str, WatermarkValue]
    source_sql: str
    source_columns: list[SourceColumn]
    staging_table: str
    staging_columns: list[ColumnDef]
    staging_ddl: list[str]
    dest_table: str
    dest_exists: bool
    create_table_sql: list[str]
    merge_columns: list[str]
    merge_sql: list[str]
    count_sql: str
    hooks: list[Hook]
    drift: list[str]  # source columns the destination lacks

    def watermark_values(self) -> dict[str, str | None]:
        return {k: v.value for k, v in self.watermarks.items()}

    def merge_sql_text(self) -> str:
        return ";\n".join(self.merge_sql) + ";" if self.merge_sql else ""


def build_plan(
    *,
    module: Module,
    catalog: Catalog,
    dest: Endpoint,
    dest_table: TableName,
    staging: TableName,
    staging_schema: str,
    transport: str,
    strategy: str,
    values: dict[str, WatermarkValue],
    source_sql: str,
    source_columns: list[SourceColumn],
    dest_exists: bool,
    dest_cols: list[tuple[str, str, bool]],
) -> Plan:
    """Every statement of a run from what resolve learnt: staging columns (query order, destination
    names), staging DDL, the destination's CREATE TABLE when missing, and the merge.

    Raises PipekitError naming the module when columns collide after renaming, no source column
    matches the destination, or a merge_key column is not in the query.
    """
    mod = module
    src_kind = catalog.connection(mod.source).kind
    d = dest.dialect
    specs = {c.source_name: c for c in (mod.columns or [])}
    specs_ci = {c.source_name.lower(): c for c in (mod.columns or [])}
    staging_cols: list[ColumnDef] = []
    table_cols: list[ColumnDef] = []
    for sc in source_columns:
        spec = specs.get(sc.name) or specs_ci.get(sc.name.lower())
        name = spec.target_name if spec else sc.name
        mapped = map_type(src_kind, dest.kind, sc.type)
        dest_type = (spec.dest_type if spec and spec.dest_type else None) or mapped
        if dest.kind == "sqlite":
            stage_type = ""  # no affinity: values are kept exactly as copied
        elif src_kind == "postgresql" and dest.kind == "postgresql" and not (spec and spec.dest_type):
            # The source's own type (binary COPY) unless pipekit does not know it (an enum,
            # a domain, an extension type): the destination may not have it, so stage as the
            # existing destination column's type, else as the mapped type (text).
            unknown = mapped in ("text", "text[]") and sc.type not in ("text", "text[]")
            stage_type = ({n: t for n, t, _ in dest_cols}.get(name) or mapped) if unknown else sc.type
        else:
            stage_type = dest_type
        staging_cols.append(ColumnDef(name, stage_type))
        table_cols.append(ColumnDef(name, dest_type))
    names = [c.name for c in staging_cols]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PipekitError(f"module '{mod.name}': columns {dupes} appear twice after renaming (columns:)")
    dest_names = [n for n, _, _ in dest_cols]
    if dest_exists:
        merge_columns = [n for n in names if n in dest_names]
        drift = [n for n in names if n not in dest_names]
        if not merge_columns:
            raise PipekitError(
                f"module '{mod.name}': no column of the source query matches a column of {mod.dest_table} "
                f"(source: {names}; destination: {dest_names})"
            )
    else:
        merge_columns, drift = names, []
    key_not_null = False
    if strategy == "incremental":
        missing = [k for k in mod.merge_key if k not in names]
        if missing:
            raise PipekitError(
                f"module '{mod.name}': merge_key column(s) {missing} are not in the source query's columns "
                f"(after columns: renaming): {names}"
            )
        nullable = {n: nul for n, _, nul in dest_cols}
        key_not_null = dest_exists and all(not nullable.get(k, True) for k in mod.merge_key)
    builder = MergeBuilder(d)
    mp = builder.plan(strategy, dest_table, staging, merge_columns, list(mod.merge_key), key_not_null)
    return Plan(
        module=mod.name,
        strategy=strategy,
        transport=transport,
        transport_reason="",
        watermarks=values,
        source_sql=source_sql,
        source_columns=source_columns,
        staging_table=d.table(staging),
        staging_columns=staging_cols,
        staging_ddl=d.create_staging_sql(staging, staging_cols, staging_schema),
        dest_table=d.table(dest_table),
        dest_exists=dest_exists,
        create_table_sql=[] if dest_exists else d.create_table_sql(dest_table, table_cols),
        merge_columns=merge_columns,
        merge_sql=mp.statements,
        count_sql=mp.count_sql,
        hooks=list(mod.hooks),
        drift=drift,
    )
