"""Asset checks, and how broken definition files show up in the UI.

Module checks (they touch the destination when evaluated, never at load):

- ``no_duplicate_merge_keys`` (incremental modules): the destination table has no two rows with
  the same merge key (NULL parts compare equal, as in the NULL-safe merge). ERROR when it does.
- ``no_schema_drift`` (every module): the source query's columns, as the last successful run
  learned them (``repo.last_success(module)['source_columns']``, renamed by ``columns:``),
  against the destination table's columns, both directions and types. WARN when the source has
  columns the destination lacks, the destination has columns the query no longer feeds, or a
  column's type differs (what the next run's ``schema_change:`` would alter or refuse).

All module checks live in one subsettable ``@multi_asset_check``, ``pipekit_module_checks`` (one
step per run): a job runs the checks of the assets it selects once those assets are done. As
with any Dagster step, it is not run when one of its upstream steps in the run failed.

Broken definitions: a file with problems does not stop the code location from loading. Each such
file becomes a non-executable asset ``pipekit_broken_<file>`` in the group ``pipekit_problems``,
whose description and ``pipekit/problems`` metadata list every problem (file:line: module: field:
message), and a ``definition_valid`` check on it that fails with the same text when executed.
Each problem is also logged as a warning when the definitions load.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations of op, check and
# sensor parameters (context, resources) when the definitions are built.

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from pipekit_core.defs import Catalog, Problem
from pipekit_core.models import Module
from pipekit_dagster import constants as c
from pipekit_dagster.resources import PipekitResource

if TYPE_CHECKING:
    from pipekit_core.db import NativeDB
    from pipekit_core.sql.dialects import TableName

SAMPLE = 5


MODULE_CHECKS_NAME = "pipekit_module_checks"


def build_module_checks(
    catalog: Catalog, keys: Mapping[str, dg.AssetKey], naming: c.Naming = c.DEFAULT_NAMING
) -> list[dg.AssetChecksDefinition]:
    """The checks of every enabled module (``keys``: module name -> asset key; ``naming``: the
    check's name and the ``pipekit`` resource key).

    One subsettable ``@multi_asset_check`` holds every module's checks (``no_duplicate_merge_keys``
    on incremental modules, ``no_schema_drift`` on all), so loading 1,000 modules does not build
    2,000 check ops. A run evaluates the selected checks one after the other; a check that raises
    does not stop the others, and the step fails afterwards naming it.
    """
    specs: list[dg.AssetCheckSpec] = []
    evaluators: dict[dg.AssetCheckKey, tuple[str, Callable[[PipekitResource, str, dg.AssetCheckKey], dg.AssetCheckResult]]] = {}
    for mod in catalog.enabled_modules():
        key = keys.get(mod.name)
        if key is None:
            continue
        if mod.strategy == "incremental":
            specs.append(
                dg.AssetCheckSpec(
                    "no_duplicate_merge_keys",
                    asset=key,
                    description=f"No two rows of {mod.dest_table} share the merge key ({', '.join(mod.merge_key)}).",
                    blocking=False,
                )
            )
            evaluators[specs[-1].key] = (mod.name, _duplicate_keys_result)
        specs.append(
            dg.AssetCheckSpec(
                "no_schema_drift",
                asset=key,
                description=f"The source query (as last run) and {mod.dest_table} have the same columns and types.",
                blocking=False,
            )
        )
        evaluators[specs[-1].key] = (mod.name, _schema_drift_result)
    if not specs:
        return []
    order = {spec.key: i for i, spec in enumerate(specs)}
    resource_key = naming.resource_key

    @dg.multi_asset_check(
        specs=specs,
        name=naming(MODULE_CHECKS_NAME),
        can_subset=True,
        description="The pipekit modules' checks: no_duplicate_merge_keys and no_schema_drift.",
        required_resource_keys={resource_key},
    )
    def _checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        pipekit: PipekitResource = getattr(context.resources, resource_key)
        errors: list[str] = []
        first: Exception | None = None
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: order.get(k, len(order))):
            module, evaluate = evaluators[check_key]
            try:
                result = evaluate(pipekit, module, check_key)
            except Exception as e:  # noqa: BLE001 - the other modules' checks still run; the step fails below
                from pipekit_core.secrets import redact

                errors.append(f"check '{check_key.name}' of module '{module}': {redact(str(e).strip())}")
                context.log.error(errors[-1])
                first = first or e
                continue
            yield result
        if errors:
            raise dg.Failure(description="\n".join(errors), metadata={"pipekit/failed_checks": len(errors)}) from first

    return [_checks]


def _duplicate_keys_result(pipekit: PipekitResource, name: str, key: dg.AssetCheckKey) -> dg.AssetCheckResult:
    """``no_duplicate_merge_keys``: ERROR when two destination rows share the merge key."""
    from pipekit_core.sql.builders import MergeBuilder

    module = pipekit.engine().module(name)
    with _dest_db(pipekit, module) as (db, table):
        if not db.table_exists(table):
            return _missing_table(module, key)
        nullable = {n: nul for n, _, nul in db.table_columns(table)}
        if (sorted(module.merge_key) in [sorted(k) for k in db.unique_keys(table)]
                and not any(nullable.get(k, True) for k in module.merge_key)):
            # a primary key / unique index on NOT NULL key columns: duplicates cannot exist (no scan)
            return dg.AssetCheckResult(
                asset_key=key.asset_key, check_name=key.name, passed=True, severity=dg.AssetCheckSeverity.ERROR,
                description=f"{module.dest_table} has a unique key on {list(module.merge_key)} (NOT NULL): "
                            "no duplicates by construction",
                metadata={c.MERGE_KEY: ", ".join(module.merge_key), "pipekit/guaranteed_by": "unique key"},
            )
        sql = MergeBuilder(db.dialect).duplicate_key_sql(table, list(module.merge_key), limit=SAMPLE)
        rows = db.query(sql)
    shown = [
        ", ".join(f"{k}={v!r}" for k, v in zip(module.merge_key, r[:-1], strict=False)) + f" ({r[-1]}x)" for r in rows
    ]
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=not rows,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"duplicate merge keys in {module.dest_table}: " + "; ".join(shown)) if rows else None,
        metadata={"pipekit/duplicate_keys": dg.MetadataValue.int(len(rows)) if len(rows) < SAMPLE else dg.MetadataValue.text(f"{SAMPLE}+"),
                  "pipekit/duplicates": dg.MetadataValue.json(shown), c.MERGE_KEY: ", ".join(module.merge_key)},
    )


def _schema_drift_result(pipekit: PipekitResource, name: str, key: dg.AssetCheckKey) -> dg.AssetCheckResult:
    """``no_schema_drift``: WARN when the source query (as last run) and the destination table differ:
    a source column the table lacks, a table column the query no longer feeds, or a type change
    (compared as the engine's ``schema_change:`` handling compares them, ``pipekit_core.plan``)."""
    from pipekit_core.plan import compare_schema, module_columns
    from pipekit_core.transport.base import SourceColumn

    engine = pipekit.engine()
    module = engine.module(name)
    last = engine.repo.last_success(name) or {}
    learned = last.get("source_columns") or []
    if not learned:
        return dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=True,
            description="no successful run recorded yet: nothing to compare",
            metadata={"pipekit/source_columns": dg.MetadataValue.json([])},
        )
    with _dest_db(pipekit, module) as (db, table):
        if not db.table_exists(table):
            return _missing_table(module, key)
        dest_cols = db.table_columns(table)
        dest_kind = db.kind
    src_kind = engine.catalog.connection(module.source).kind
    cols = [SourceColumn(str(col[0]), str(col[1]) if len(col) > 1 and col[1] is not None else "") for col in learned]
    _, table_cols, wanted = module_columns(module, src_kind, dest_kind, cols, dest_cols)
    diff = compare_schema(dest_kind, table_cols, wanted, dest_cols)
    source = [c.name for c in table_cols]
    dest_names = [n for n, _, _ in dest_cols]
    missing = [c.name for c in diff.new]
    types = [f"{col}: {old} -> {new}" for col, old, _, new in diff.widen]
    types += [f"{col}: {old} -> {new} (lossy)" for col, old, new in diff.lossy]
    parts = []
    if missing:
        parts.append(f"the source query has column(s) {', '.join(missing)} that {module.dest_table} lacks")
    if diff.missing:
        parts.append(f"{module.dest_table} has column(s) {', '.join(diff.missing)} that the query no longer returns")
    if types:
        parts.append("column types differ: " + "; ".join(types))
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=not diff,
        severity=dg.AssetCheckSeverity.WARN,
        description=("; ".join(parts) + " (the next run applies schema_change:, see the README)") if parts else None,
        metadata={
            "pipekit/drifted_columns": dg.MetadataValue.int(len(missing) + len(diff.missing) + len(types)),
            "pipekit/missing_in_destination": dg.MetadataValue.json(missing),
            "pipekit/not_in_source": dg.MetadataValue.json(diff.missing),
            "pipekit/type_changes": dg.MetadataValue.json(types),
            "pipekit/source_columns": dg.MetadataValue.json(source),
            "pipekit/dest_columns": dg.MetadataValue.json(dest_names),
            c.RUN_ID: int(last.get("id") or 0),
        },
    )


def dest_name(mod: Module, source_name: str) -> str:
    """A source column's name in the destination (``columns:`` renaming, as the engine does it)."""
    specs = {s.source_name: s for s in (mod.columns or [])}
    specs_ci = {s.source_name.lower(): s for s in (mod.columns or [])}
    spec = specs.get(source_name) or specs_ci.get(source_name.lower())
    return spec.target_name if spec else source_name


@contextmanager
def _dest_db(pipekit: PipekitResource, module: Module) -> Iterator[tuple["NativeDB", "TableName"]]:
    """A native connection to the module's destination, and its table name."""
    from pipekit_core.db import NativeDB
    from pipekit_core.sql.dialects import parse_table_name

    db = NativeDB(pipekit.engine().endpoint(module.dest), application=f"pipekit check {module.name}")
    try:
        yield db, parse_table_name(module.dest_table)
    finally:
        db.close()


def _missing_table(module: Module, key: dg.AssetCheckKey) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{module.dest_table} does not exist on '{module.dest}' yet (the module has not run)",
    )


# ----------------------------------------------------------------------------- broken files


def broken_file_specs(
    catalog: Catalog, naming: c.Naming = c.DEFAULT_NAMING
) -> tuple[list[dg.AssetSpec], list[dg.AssetChecksDefinition]]:
    """A visible asset (and a failing check) per definition file that has problems
    (``<naming prefix>_pipekit_broken_<file>`` with a :class:`~pipekit_dagster.constants.Naming` prefix)."""
    specs: list[dg.AssetSpec] = []
    checks: list[dg.AssetChecksDefinition] = []
    taken = set(catalog.modules)
    for file, problems in catalog.broken_files().items():
        name = naming(broken_asset_name(catalog.defs_dir, file))
        while name in taken:
            name += "_"
        taken.add(name)
        text = "\n".join(str(p) for p in problems)
        spec = dg.AssetSpec(
            key=dg.AssetKey([name]),
            description=f"Definition file {file} has {len(problems)} problem(s); its broken objects are not loaded:\n\n{text}",
            group_name=c.PROBLEMS_GROUP,
            metadata={
                c.DEFINITION_FILE: file,
                c.PROBLEMS: dg.MetadataValue.md("\n".join(f"- `{p}`" for p in problems)),
                "pipekit/problem_count": len(problems),
            },
            tags={"pipekit/broken": "true"},
        )
        specs.append(spec)
        checks.append(_broken_check(spec.key, file, problems))
    return specs, checks


def _broken_check(key: dg.AssetKey, file: str, problems: list[Problem]) -> dg.AssetChecksDefinition:
    text = "\n".join(str(p) for p in problems)

    @dg.asset_check(asset=key, name="definition_valid", description=f"{file} loads without problems.", blocking=False)
    def _check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=text,
            metadata={c.DEFINITION_FILE: file, c.PROBLEMS: dg.MetadataValue.md("\n".join(f"- `{p}`" for p in problems))},
        )

    return _check


def broken_asset_name(defs_dir: Path, file: str) -> str:
    """``pipekit_broken_<file>``: the file's path under the defs folder, as an identifier."""
    path = Path(file)
    try:
        rel = path.resolve().relative_to(Path(defs_dir).resolve())
        stem = rel.with_suffix("").as_posix() if rel.parts else path.name
    except ValueError:
        stem = path.with_suffix("").name if path.suffix in (".yaml", ".yml") else path.name
    ident = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "definitions"
    return c.BROKEN_ASSET_PREFIX + ident
