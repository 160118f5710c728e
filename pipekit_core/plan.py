"""A run's plan: resolved watermarks, the final source SQL and every statement it will execute.

Built by :func:`build_plan` without touching a database (the engine hands it what it learnt);
``pipekit plan``, dry runs and Dagster's dry-run observation show it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipekit_core.db import Endpoint
from pipekit_core.defs import Catalog
from pipekit_core.errors import PipekitError
from pipekit_core.models import Hook, Module
from pipekit_core.sql.builders import MergeBuilder, WindowBounds
from pipekit_core.sql.dialects import ColumnDef, TableName, get_dialect
from pipekit_core.sql.query import wrap_lines
from pipekit_core.sql.types import holds, map_type, widening
from pipekit_core.transport.base import SourceColumn
from pipekit_core.transport.native import sqlite_in_sqlite_reason


@dataclass
class WatermarkValue:
    name: str
    value: str | None
    source: str  # resolved | default | override | first-run default | full-refresh default


class SchemaChangeError(PipekitError):
    """The source query and the destination table differ in a way the module's schema_change refuses."""


@dataclass
class SchemaDiff:
    """How the source query's columns differ from the destination table's, and what the run does."""

    added: list[ColumnDef] = field(default_factory=list)  # new_column: add
    widened: list[tuple[str, str, str]] = field(default_factory=list)  # (column, old, new), widen: alter
    filled: list[str] = field(default_factory=list)  # missing_column: fill (NULL / the column's default)
    ignored: list[str] = field(default_factory=list)  # new_column: ignore (not merged)

    def __bool__(self) -> bool:
        return bool(self.added or self.widened or self.filled or self.ignored)


@dataclass
class DirectLoad:
    """A single-write full refresh: the source rows go straight into the destination table, by
    COPY inside the merge transaction, right after it is emptied (no staging table, one write per
    row). Chosen by :func:`direct_load_reason`; run by :class:`pipekit_core.merge.Merger`."""

    sql: str  # the source query, narrowed to the merged columns
    columns: list[ColumnDef]  # destination columns loaded (names, final types), in query order
    source_columns: list[SourceColumn]  # the source's columns feeding them, same order
    empty_sql: str  # TRUNCATE (or, where it cannot be used, fallback_sql)
    fallback_sql: str  # DELETE: a table with foreign keys onto it or ON DELETE triggers
    copy_sql: str  # shown in plans and the run log


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
    create_table_sql: list[str]  # with the primary key on merge_key when it gets one
    merge_columns: list[str]
    merge_sql: list[str]
    count_sql: str
    hooks: list[Hook]
    drift: list[str]  # source columns the destination lacks and that are not merged (new_column: ignore)
    alter_sql: list[str] = field(default_factory=list)  # schema changes, run in the merge transaction
    schema: SchemaDiff = field(default_factory=SchemaDiff)
    # The type each staged column finally lands in (the destination column's after this run's
    # schema changes, or the new table's), by staging position: the per-value exactness check
    # (sql.types.value_guard) judges values against it, also where staging is untyped (SQLite).
    dest_types: list[str] = field(default_factory=list)
    # A partitioned module's window (the bounds as rendered) and the statements that use it.
    window: WindowBounds | None = None
    window_predicate: str | None = None  # on the destination: the rows the window holds
    window_guard_sql: str | None = None  # staged values outside the window (strategy window)
    window_count_sql: str | None = None  # destination rows in the window after the merge
    partition_counts_sql: str | None = None  # (partition index, rows) when the window spans several
    partitions: int = 0  # how many partitions the window covers
    window_first_day: str | None = None  # the window's first local date (YYYY-MM-DD)
    # deletes: the keys query, its staging table, and the statements run after the merge
    # ((kind, sql): removed | soft_deleted | undeleted).
    keys_sql: str | None = None
    keys_staging_table: str | None = None
    keys_staging_columns: list[ColumnDef] = field(default_factory=list)
    keys_source_columns: list[SourceColumn] = field(default_factory=list)
    keys_staging_ddl: list[str] = field(default_factory=list)
    keys_dest_types: list[str] = field(default_factory=list)
    delete_sql: list[tuple[str, str]] = field(default_factory=list)
    hook_sql: list[str] = field(default_factory=list)  # each hook's SQL as it will run (templates rendered)
    # A new table's primary key (merge_key), and its CREATE without it: used when a staged key
    # has a NULL part (a primary key cannot hold it).
    primary_key: list[str] = field(default_factory=list)
    create_table_unkeyed_sql: list[str] = field(default_factory=list)
    direct: DirectLoad | None = None  # a single-write full refresh (no staging)
    direct_reason: str = ""  # why the run stages instead (empty when direct, or not a full refresh)

    def watermark_values(self) -> dict[str, str | None]:
        return {k: v.value for k, v in self.watermarks.items()}

    def merge_sql_text(self) -> str:
        direct = [self.direct.empty_sql, self.direct.copy_sql] if self.direct is not None else []
        stmts = [*direct, *self.merge_sql, *(sql for _, sql in self.delete_sql)]
        return ";\n".join(stmts) + ";" if stmts else ""


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
    window: WindowBounds | None = None,
    keys: tuple[TableName, str, list[SourceColumn]] | None = None,
    partition_starts: list[str] | None = None,
) -> Plan:
    """Every statement of a run from what resolve learnt: staging columns (query order, destination
    names), staging DDL, the destination's CREATE TABLE when missing, and the merge.

    Raises PipekitError naming the module when columns collide after renaming, no source column
    matches the destination, or a merge_key column is not in the query; SchemaChangeError when the
    source and the destination differ in a way ``schema_change:`` refuses (see :func:`schema_diff`).
    """
    mod = module
    original_dest_cols = dest_cols
    src_kind = catalog.connection(mod.source).kind
    d = dest.dialect
    staging_cols, table_cols, wanted = module_columns(mod, src_kind, dest.kind, source_columns, dest_cols)
    names = [c.name for c in staging_cols]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PipekitError(f"module '{mod.name}': columns {dupes} appear twice after renaming (columns:)")
    soft = mod.deletes.soft_column if mod.deletes is not None and mod.deletes.mode == "soft" else None
    if soft is not None and soft in names:
        raise PipekitError(f"module '{mod.name}': deletes soft_column '{soft}' is also a column of the source query; "
                           "it must be a destination column of its own (rename one of them)")
    if window is not None and window.column not in names:
        raise PipekitError(f"module '{mod.name}': partitions column '{window.column}' is not a column of the source "
                           f"query (after columns: renaming): {names}")
    if soft is not None:  # pipekit's own column: never "missing", added when the table lacks it
        soft_def = ColumnDef(soft, d.soft_delete_type)
        dest_cols = [c for c in dest_cols if c[0] != soft]
    dest_names = [n for n, _, _ in dest_cols]
    diff = SchemaDiff()
    alter_sql: list[str] = []
    if dest_exists:
        fold = dest.kind == "sqlite"  # SQLite names compare case-insensitively, PostgreSQL's exactly
        have = {(n.lower() if fold else n) for n in dest_names}
        common = [n for n in names if (n.lower() if fold else n) in have]
        if not common:
            raise PipekitError(
                f"module '{mod.name}': no column of the source query matches a column of {mod.dest_table} "
                f"(source: {names}; destination: {dest_names})"
            )
        diff = schema_diff(mod, compare_schema(dest.kind, table_cols, wanted, dest_cols))
        added = {c.name for c in diff.added}
        merge_columns = [n for n in names if n in common or n in added]
        drift = list(diff.ignored)
        alter_sql = [d.add_column_sql(dest_table, c) for c in diff.added]
        for col, _old, new in diff.widened:
            stmt = d.alter_column_type_sql(dest_table, ColumnDef(col, new))
            if stmt:
                alter_sql.append(stmt)
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
    fold = dest.kind == "sqlite"
    final = {(n.lower() if fold else n): t for n, t, _ in dest_cols}
    final.update({(col.lower() if fold else col): new for col, _old, new in diff.widened})
    dest_types = [final.get(c.name.lower() if fold else c.name) or t.type for c, t in zip(staging_cols, table_cols, strict=True)]
    builder = MergeBuilder(d)
    mp = builder.plan(strategy, dest_table, staging, merge_columns, list(mod.merge_key), key_not_null, window)
    if soft is not None:
        had_soft = soft in {n for n, _, _ in original_dest_cols}
        if not dest_exists:
            table_cols = [*table_cols, soft_def]
        elif not had_soft:
            alter_sql.append(d.add_column_sql(dest_table, soft_def))
    pk = list(mod.merge_key) if strategy == "incremental" and mod.primary_key and not dest_exists else []
    extra: dict[str, object] = {}
    if window is not None:
        extra.update(
            window=window,
            window_predicate=builder.in_window(window),
            window_guard_sql=builder.outside_window_sql(staging, window) if strategy == "window" else None,
            window_count_sql=builder.window_count_sql(dest_table, window),
            partition_counts_sql=(builder.partition_counts_sql(dest_table, window, partition_starts)
                                  if partition_starts else None),
            partitions=len(partition_starts or []) + 1,
        )
    if keys is not None and mod.deletes is not None and strategy != "full":
        keys_table, keys_sql, keys_cols = keys
        kstage, _, _ = module_columns(mod, src_kind, dest.kind, keys_cols, dest_cols)
        got = sorted(c.name for c in kstage)
        if got != sorted(mod.merge_key):
            raise PipekitError(
                f"module '{mod.name}': deletes keys_query must return exactly the merge_key columns {list(mod.merge_key)} "
                f"(by name, after columns: renaming); it returns {[c.name for c in kstage]}"
            )
        types = dict(zip(names, dest_types, strict=True))
        extra.update(
            keys_sql=keys_sql,
            keys_staging_table=d.table(keys_table),
            keys_staging_columns=kstage,
            keys_source_columns=keys_cols,
            keys_staging_ddl=d.create_staging_sql(keys_table, kstage, staging_schema),
            keys_dest_types=[types.get(c.name, "") for c in kstage],
            delete_sql=builder.source_deletes_sql(
                dest_table, keys_table, list(mod.merge_key), key_not_null, mode=mod.deletes.mode,
                soft_column=soft, window=window,
            ),
        )
    src_ep = Endpoint(catalog.connection(mod.source), None, None)
    direct, direct_reason = None, direct_load_reason(strategy, transport, src_ep, dest, source_sql)
    if strategy == "full" and not direct_reason:
        direct = _direct_load(builder, catalog, mod, dest_table, source_sql, source_columns, staging_cols,
                              dest_types, merge_columns)
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
        staging_ddl=[] if direct is not None else d.create_staging_sql(staging, staging_cols, staging_schema),
        dest_table=d.table(dest_table),
        dest_exists=dest_exists,
        create_table_sql=[] if dest_exists else d.create_table_sql(dest_table, table_cols, pk or None, list(mod.indexes)),
        primary_key=[] if dest_exists else pk,
        create_table_unkeyed_sql=[] if dest_exists or not pk else d.create_table_sql(dest_table, table_cols, None, list(mod.indexes)),
        merge_columns=merge_columns,
        merge_sql=[] if direct is not None else mp.statements,
        count_sql=mp.count_sql,
        hooks=list(mod.hooks),
        drift=drift,
        alter_sql=alter_sql,
        schema=diff,
        dest_types=dest_types,
        direct=direct,
        direct_reason=direct_reason,
        **extra,  # type: ignore[arg-type]
    )


def direct_load_reason(strategy: str, transport: str, src: Endpoint, dest: Endpoint, sql: str) -> str:
    """Why a run stages its rows rather than loading them straight into the destination ('' when
    it loads straight: a native full refresh into PostgreSQL, or SQLite -> SQLite where the copy
    runs inside SQLite). The one place this is decided."""
    if strategy != "full":
        return f"strategy {strategy} merges staged rows with the destination's"
    if transport != "native":
        return f"the {transport} transport loads a staging table"
    if src.kind not in ("postgresql", "sqlite"):
        return f"the source ({src.kind}) has no native driver"
    if dest.kind == "sqlite":
        why = sqlite_in_sqlite_reason(src, dest, sql)
        return f"SQLite -> SQLite: {why}" if why else ""
    if dest.kind != "postgresql":
        return f"the destination is {dest.kind}"
    return ""


def _direct_load(
    builder: MergeBuilder, catalog: Catalog, mod: Module, dest_table: TableName, source_sql: str,
    source_columns: list[SourceColumn], staging_cols: list[ColumnDef], dest_types: list[str], merge_columns: list[str],
) -> DirectLoad:
    """The single-write load of a full refresh: the merged columns only, typed as they land."""
    keep = [i for i, c in enumerate(staging_cols) if c.name in set(merge_columns)]
    sql = source_sql
    if len(keep) < len(staging_cols):  # source columns the destination does not take (new_column: ignore)
        q = get_dialect(catalog.connection(mod.source).kind).quote
        sql = wrap_lines("SELECT " + ", ".join(f"q.{q(source_columns[i].name)}" for i in keep) + " FROM (",
                         source_sql, ") AS q")
    columns = [ColumnDef(staging_cols[i].name, dest_types[i]) for i in keep]
    return DirectLoad(
        sql=sql,
        columns=columns,
        source_columns=[source_columns[i] for i in keep],
        # (SQLite: DELETE without WHERE is its own truncate; no lock to wait for, no MVCC caveat)
        empty_sql=builder.truncate_sql(dest_table) if builder.dialect.name == "postgresql" else builder.empty_sql(dest_table)[0],
        fallback_sql=builder.empty_sql(dest_table)[0],
        copy_sql=builder.copy_in_sql(dest_table, [c.name for c in columns]),
    )


def module_columns(
    mod: Module,
    src_kind: str,
    dest_kind: str,
    source_columns: list[SourceColumn],
    dest_cols: list[tuple[str, str, bool]],
) -> tuple[list[ColumnDef], list[ColumnDef], dict[str, tuple[str, bool]]]:
    """The module's columns in query order, with destination names: (staging columns, the columns
    a new destination table gets, column -> (type to compare with the destination, declared?))."""
    specs = {c.source_name: c for c in (mod.columns or [])}
    specs_ci = {c.source_name.lower(): c for c in (mod.columns or [])}
    staging_cols: list[ColumnDef] = []
    table_cols: list[ColumnDef] = []
    wanted: dict[str, tuple[str, bool]] = {}  # column -> (type the module gives it, declared in columns:)
    for sc in source_columns:
        spec = specs.get(sc.name) or specs_ci.get(sc.name.lower())
        name = spec.target_name if spec else sc.name
        mapped = map_type(src_kind, dest_kind, sc.type)
        dest_type = (spec.dest_type if spec and spec.dest_type else None) or mapped
        if dest_kind == "sqlite":
            stage_type = ""  # no affinity: values are kept exactly as copied
        elif src_kind == "postgresql" and dest_kind == "postgresql" and not (spec and spec.dest_type):
            # The source's own type (binary COPY) unless pipekit does not know it (an enum,
            # a domain, an extension type): the destination may not have it, so stage as the
            # existing destination column's type, else as the mapped type (text).
            unknown = mapped in ("text", "text[]") and sc.type not in ("text", "text[]")
            stage_type = ({n: t for n, t, _ in dest_cols}.get(name) or mapped) if unknown else sc.type
        else:
            stage_type = dest_type
        staging_cols.append(ColumnDef(name, stage_type))
        table_cols.append(ColumnDef(name, dest_type))
        declared = bool(spec and spec.dest_type)
        own = sc.type if src_kind == "postgresql" and dest_kind == "postgresql" and not declared else dest_type
        wanted[name] = (own, declared)
    return staging_cols, table_cols, wanted


@dataclass
class SchemaCompare:
    """Differences between the module's columns and an existing destination table's."""

    new: list[ColumnDef] = field(default_factory=list)  # module columns the destination lacks
    missing: list[str] = field(default_factory=list)  # destination columns the query does not feed
    widen: list[tuple[str, str, str, str]] = field(default_factory=list)  # (column, old, new DDL, new shown)
    lossy: list[tuple[str, str, str]] = field(default_factory=list)  # (column, destination type, module type)

    def __bool__(self) -> bool:
        return bool(self.new or self.missing or self.widen or self.lossy)


def compare_schema(
    dest_kind: str,
    table_cols: list[ColumnDef],
    wanted: dict[str, tuple[str, bool]],
    dest_cols: list[tuple[str, str, bool]],
) -> SchemaCompare:
    """Compare the module's columns (from :func:`module_columns`) with the destination's columns.

    Names: PostgreSQL compares exactly (quoted identifiers), SQLite case-insensitively. Types:
    :func:`pipekit_core.sql.types.widening`; ``lossless`` from the destination's type to the
    module's is a widening; a destination type that already holds every value of an undeclared
    source type (:func:`pipekit_core.sql.types.holds`) is no difference; anything else is lossy.
    """
    fold = dest_kind == "sqlite"

    def key(n: str) -> str:
        return n.lower() if fold else n

    dest_by = {key(n): (n, t) for n, t, _ in dest_cols}
    fed = {key(c.name) for c in table_cols}
    out = SchemaCompare()
    out.new = [c for c in table_cols if key(c.name) not in dest_by]
    out.missing = [n for n, _, _ in dest_cols if key(n) not in fed]
    for c in table_cols:
        hit = dest_by.get(key(c.name))
        if hit is None:
            continue
        col, old = hit
        new, declared = wanted.get(c.name, (c.type, False))
        verdict = widening(old, new, dest_kind)
        if verdict == "lossless":
            out.widen.append((col, old, c.type, new))
        elif verdict == "lossy" and not holds(old, new, dest_kind):
            # (a destination column wider than what the module declares or the source sends
            # already holds every value: no change, declared or not)
            out.lossy.append((col, old, new))
    return out


def schema_diff(mod: Module, cmp: SchemaCompare) -> SchemaDiff:
    """Apply ``mod.schema_change`` to the differences: what the run changes, or the refusal.

    Raises:
        SchemaChangeError: listing every refused difference, the setting that refuses it and
            what to change. Nothing has been written when it is raised.
    """
    policy = mod.schema_change
    diff = SchemaDiff()
    problems: list[str] = []
    if cmp.new:
        shown = ", ".join(f"{c.name} ({c.type or 'no type'})" for c in cmp.new)
        if policy.new_column == "add":
            diff.added = list(cmp.new)
        elif policy.new_column == "ignore":
            diff.ignored = [c.name for c in cmp.new]
        else:
            problems.append(
                f"the query has column(s) {shown} that the destination lacks (schema_change: new_column: fail; "
                "set new_column: add to add them, or ignore to leave them unmerged)"
            )
    if cmp.missing:
        if policy.missing_column == "fill":
            diff.filled = list(cmp.missing)
        else:
            problems.append(
                f"destination column(s) {cmp.missing} are no longer returned by the query; a merge would set them "
                "to NULL (schema_change: missing_column: fail; add them back to the query, drop them from the "
                "table, or set missing_column: fill to fill them with NULL / their default)"
            )
    for col, old, ddl, shown_new in cmp.widen:
        if policy.widen == "alter":
            diff.widened.append((col, old, ddl))
        else:
            problems.append(
                f"column {col!r} is {old} in the destination and {shown_new} from the module; widening it is "
                f"refused by schema_change: widen: fail (set widen: alter, or declare the destination's type "
                f"with columns: dest_type: {old})"
            )
    if cmp.lossy:
        shown = ", ".join(f"{col!r} (destination {old}, module {new})" for col, old, new in cmp.lossy)
        problems.append(
            f"column(s) {shown} cannot be changed without losing values; change the column on the destination "
            "by hand, or declare the destination's type with columns: dest_type"
        )
    if problems:
        raise SchemaChangeError(
            f"module '{mod.name}': the source query and {mod.dest_table} differ: " + "; ".join(problems)
            + ". Nothing was written to the destination."
        )
    return diff
