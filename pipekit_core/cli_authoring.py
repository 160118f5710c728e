"""``pipekit inspect``, ``pipekit new`` and ``pipekit import-original`` (registered by cli.py).

Heavy modules (drivers, the authoring package) are imported inside the commands, so
``pipekit --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _handled(fn: F) -> F:
    """cli.handle_errors, looked up when the command runs (cli.py imports this module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pipekit_core.cli import handle_errors

        return handle_errors(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from pipekit_core.cli import show_table

    show_table(headers, rows)


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


# ---------------------------------------------------------------------------------- inspect

@click.command(name="inspect")
@click.argument("connection")
@click.argument("target", required=False, metavar="[SCHEMA[.TABLE]]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
@_handled
def inspect_cmd(connection: str, target: str | None, as_json: bool) -> None:
    """A connection's schemas; a schema's tables with row estimates; a table's columns with type,
    nullability, primary key and the type pipekit would create on each destination.

    PostgreSQL and SQLite are read natively; DB2 for i (QSYS2 views) and SQL Server
    (INFORMATION_SCHEMA) through jrunner's query mode."""
    from pipekit_core.authoring.inspect import endpoint_for, inspect_target, load_for_inspect, open_catalog
    from pipekit_core.config import load_settings
    from pipekit_core.sql.types import DEST_KINDS

    settings = load_settings()
    catalog, secrets = load_for_inspect(settings)
    ep = endpoint_for(catalog, secrets, connection)
    with open_catalog(ep, settings) as cat:
        res = inspect_target(cat, connection, target)
    if as_json:
        print(json.dumps(res.as_dict(), indent=2))
        return
    head = f"connection '{connection}' ({res.kind}, read {'natively' if res.via == 'native' else 'through jrunner'})"
    if res.level == "schemas":
        print(f"{head}: {len(res.schemas)} schema(s)")
        _table(["schema"], [[s] for s in res.schemas])
    elif res.level == "tables":
        print(f"{head}: schema {res.schema}, {len(res.tables)} table(s) and view(s)")
        _table(["table", "kind", "rows (estimate)"], [[t.name, t.kind, _n(t.rows)] for t in res.tables])
    else:
        print(f"{head}: {res.schema}.{res.table}, {len(res.columns)} column(s)")
        _table(["column", "type", "null", "pk", *[f"-> {d}" for d in DEST_KINDS]],
               [[c.name, c.type, "yes" if c.nullable else "no", str(c.pk or ""), *[c.dest_types.get(d, "") for d in DEST_KINDS]]
                for c in res.columns])
        print(f"next: pipekit new MODULE --source {connection} --table {res.schema}.{res.table}")
    for note in res.notes:
        print(f"note: {note}")


# -------------------------------------------------------------------------------------- new

def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _ask(req: Any, catalog: Any) -> None:
    """Fill ``req`` from rich prompts (a terminal, and no flag beyond the module's name)."""
    from rich.prompt import Prompt

    conns = sorted(catalog.connections)
    if not conns:
        raise click.UsageError("no connections are defined; add one to a YAML file under PIPEKIT_DEFS first")
    req.source = Prompt.ask("source connection", choices=conns)
    what = Prompt.ask("read a table or a query", choices=["table", "query"], default="table")
    if what == "table":
        req.table = Prompt.ask("table (SCHEMA.TABLE)")
    else:
        req.query = Prompt.ask("query (one line; use --query-file for longer SQL)")
    native = sorted(n for n, c in catalog.connections.items() if c.has_native_driver)
    if native:
        dflt = next((n for n in native if n != req.source), native[0])
        req.dest = Prompt.ask("destination connection", choices=native, default=dflt)
    req.dest_table = Prompt.ask("destination table (empty: derived from the source)", default="") or None
    inc = Prompt.ask("incremental by which column (empty: a full refresh)", default="")
    if inc:
        req.incremental_by = inc
        req.strategy = "incremental"
    key = Prompt.ask("merge key columns, comma-separated (empty: the primary key)", default="")
    if key:
        req.key = [k.strip() for k in key.split(",") if k.strip()]


@click.command(name="new")
@click.argument("module")
@click.option("--source", help="Source connection.")
@click.option("--table", help="Source table, SCHEMA.TABLE (one part: the default schema).")
@click.option("--query", help="Source query (SQL).")
@click.option("--query-file", type=click.Path(dir_okay=False), help="A file holding the source query.")
@click.option("--dest", help="Destination connection (default: the only PostgreSQL/SQLite connection).")
@click.option("--dest-table", help="Destination [schema.]table (default: from the source table, or the module name).")
@click.option("--strategy", type=click.Choice(["full", "incremental", "append"]),
              help="Merge strategy (default: incremental with --incremental-by, else full).")
@click.option("--key", help="Merge key columns, comma-separated (default: the source's primary key).")
@click.option("--incremental-by", "incremental_by", metavar="COL",
              help="Add a watermark on COL: only rows above the destination's maximum are read.")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file to write or append to (default: PIPEKIT_DEFS/MODULE.yaml).")
@click.option("--dry-run", is_flag=True, help="Print the module and the DDL; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
@_handled
def new_cmd(module: str, source: str | None, table: str | None, query: str | None, query_file: str | None,
            dest: str | None, dest_table: str | None, strategy: str | None, key: str | None,
            incremental_by: str | None, file: Path | None, dry_run: bool, as_json: bool) -> None:
    """Write a module from a source table or query: its query, explicit columns: with source and
    destination types, merge_key from the primary key and, with --incremental-by, a watermark.
    Validates what it wrote and prints the DDL of the table its first run creates.

    On a terminal, with no option beyond MODULE, it asks for them."""
    from pipekit_core.authoring.new import NewRequest, build_module, write_module
    from pipekit_core.config import load_settings
    from pipekit_core.defs import load_catalog

    settings = load_settings()
    catalog = load_catalog(settings.defs, settings.local_timezone())
    req = NewRequest(name=module, source=source or "", table=table, query=query, query_file=query_file, dest=dest,
                     dest_table=dest_table, strategy=strategy,
                     key=[k.strip() for k in key.split(",") if k.strip()] if key else None,
                     incremental_by=incremental_by, file=file)
    flags = (source, table, query, query_file, dest, dest_table, strategy, key, incremental_by, file)
    if source is None:
        if all(f is None for f in flags) and not dry_run and not as_json and _interactive():
            _ask(req, catalog)
        else:
            raise click.UsageError("give --source CONNECTION and one of --table / --query / --query-file "
                                   "(pipekit new asks for them only on a terminal, with no options)")
    new = build_module(req, settings, catalog)
    warnings: list[str] = []
    if not dry_run:
        warnings = write_module(new, settings)
    if as_json:
        d = new.as_dict() | {"written": not dry_run, "warnings": warnings}
        print(json.dumps(d, indent=2))
        return
    if dry_run:
        print(f"# module '{module}' (not written: --dry-run; it would go to {new.path})")
        print(new.text, end="")
    else:
        verb = "appended to" if new.appended else "wrote"
        print(f"{verb} {new.path}: module '{module}' ({len(new.module.get('columns', []))} columns, "
              f"strategy {new.module['strategy']}); it validates")
    for n in new.notes:
        print(f"note: {n}")
    for w in warnings:
        print(f"warning: {w}")
    print(f"\n-- the first run creates {new.module['dest_table']} on '{new.module['dest']}':")
    for stmt in new.ddl:
        print(stmt + ";")
    if not dry_run:
        print(f"\nnext: pipekit plan {module}")


# ---------------------------------------------------------------------------- import-original

@click.command(name="import-original")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the YAML files (default: PIPEKIT_DEFS/imported).")
@click.option("--force", is_flag=True, help="Overwrite files of an earlier import in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
@_handled
def import_original_cmd(path: Path, out: Path | None, force: bool, as_json: bool) -> None:
    """Turn the original pipekit's pipekit.db into YAML: connections ($VAR passwords stay references),
    modules (columns_json, merge_key, watermarks, hooks) and groups. Reports every field it could
    not map; exits 1 when what it wrote does not validate."""
    from pipekit_core.authoring.import_original import import_original, write_import
    from pipekit_core.config import load_settings

    settings = load_settings()
    target = out if out is not None else settings.defs / "imported"
    if not target.is_absolute():
        target = Path.cwd() / target
    imp = import_original(path)
    rep = write_import(imp, target, force=force, defs=settings.defs, timezone=settings.local_timezone())
    if as_json:
        print(json.dumps(rep.as_dict(), indent=2))
        sys.exit(1 if rep.problems else 0)
    c = rep.counts
    print(f"imported {path}: {c.get('connections', 0)} connections, {c.get('modules', 0)} modules "
          f"({c.get('watermarks', 0)} watermarks, {c.get('hooks', 0)} hooks), {c.get('groups', 0)} groups")
    print("tables read: " + ", ".join(f"{t} ({role})" for role, t in sorted(rep.tables.items())))
    for f in rep.files:
        print(f"wrote {f}")
    if rep.unmapped:
        print(f"\n{len(rep.unmapped)} field(s) not mapped:")
        _table(["field", "why"], [[f, why] for f, why in rep.unmapped])
    if rep.renamed:
        print("\nrenamed (names must be lower-case letters, digits and _):")
        _table(["kind", "original", "now"], [[k, a, b] for k, a, b in rep.renamed])
    for n in rep.notes:
        print(f"note: {n}")
    if rep.secrets_needed:
        print("secrets the connections refer to (set each with `pipekit secrets set NAME`): "
              + ", ".join(sorted(set(rep.secrets_needed))))
    for w in rep.warnings:
        print(f"warning: {w}")
    if rep.problems:
        print(f"\n{len(rep.problems)} problem(s) to fix before these modules run:", file=sys.stderr)
        for p in rep.problems:
            print(p, file=sys.stderr)
        sys.exit(1)
    print("\nOK: the imported definitions validate. Next: pipekit validate, then pipekit plan MODULE")


def register(group: click.Group) -> None:
    """Add the authoring commands to the ``pipekit`` group."""
    group.add_command(inspect_cmd)
    group.add_command(new_cmd)
    group.add_command(import_original_cmd)
