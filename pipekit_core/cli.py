"""The ``pipekit`` command: run modules without Dagster, inspect definitions and history.

Every error is one clear line on stderr and exit code 1 (130 when cancelled); never a
traceback (set PIPEKIT_DEBUG=1 to see one).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipekit_core.config import load_settings
from pipekit_core.errors import PipekitError, lock_conflict
from pipekit_core.secrets import redact

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def _console(stderr: bool) -> Any:
    """rich's console, imported on first use: only a terminal gets rich output, and a piped or
    scheduled ``pipekit run`` should not pay for importing it."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class _LazyConsole:
    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(_console(self._stderr), name)


out: Any = _LazyConsole(stderr=False)
err: Any = _LazyConsole(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {redact(message)}", markup=True) if sys.stderr.isatty() else print(
        f"error: {redact(message)}", file=sys.stderr
    )
    sys.exit(code)


def cli_message(e: BaseException) -> str:
    """An error as the CLI says it: pipekit's message plus what to do from the command line."""
    if lock_conflict(e) is not None:
        return (f"{e}; wait for it to end, run again with --wait to wait for it, or "
                "'pipekit unlock MODULE' if its holder is gone")
    return str(e)


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PipekitError as e:
            fail(cli_message(e))
        except KeyboardInterrupt:
            fail("cancelled", 130)
        except BrokenPipeError:  # `pipekit history | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback unless asked
            if os.environ.get("PIPEKIT_DEBUG"):
                raise
            fail(f"unexpected {type(e).__name__}: {e} (set PIPEKIT_DEBUG=1 for a traceback)")

    return wrapper  # type: ignore[return-value]


def show_table(headers: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; plain aligned columns (never truncated) when piped."""
    if sys.stdout.isatty():
        from rich.table import Table

        t = Table(*headers)
        for r in rows:
            t.add_row(*r)
        out.print(t)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for r in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _engine():  # noqa: ANN202 - lazy import keeps `pipekit --help` fast
    from pipekit_core.engine import Engine

    return Engine()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipekit")
def main() -> None:
    """pipekit: copy SQL query results between databases (watermarks, staging, merge, hooks).

    Configuration: PIPEKIT_CONFIG, PIPEKIT_DEFS, PIPEKIT_DB, PIPEKIT_SECRETS, PIPEKIT_JRUNNER.
    """


@main.command()
@handle_errors
def init() -> None:
    """Create or upgrade the repository (PIPEKIT_DB: SQLite file or postgresql:// URL) and load the catalog into it."""
    from pipekit_core.defs import load_catalog
    from pipekit_core.repo import Repository

    s = load_settings()
    repo = Repository(s.database)
    applied = repo.migrate()
    msg = f"repository {s.database}: schema version {repo.schema_version()}"
    msg += f" (applied {', '.join(applied)})" if applied else " (up to date)"
    print(msg)
    if s.defs.exists():
        cat = load_catalog(s.defs, s.local_timezone())
        repo.sync_catalog(cat)
        print(f"catalog: {len(cat.modules)} modules, {len(cat.connections)} connections, {len(cat.groups)} groups from {s.defs}")
        if cat.problems:
            print(f"warning: {len(cat.problems)} definition problem(s); run 'pipekit validate'", file=sys.stderr)


@main.command()
@handle_errors
def validate() -> None:
    """Check all module definitions; print every problem and exit 1 if there is any."""
    from pipekit_core.defs import load_catalog

    s = load_settings()
    cat = load_catalog(s.defs, s.local_timezone())
    for p in cat.problems:
        print(redact(str(p)))
    for w in cat.warnings:
        print(f"warning: {redact(w)}")
    if cat.problems:
        files = len({p.file for p in cat.problems})
        print(f"{len(cat.problems)} problem(s) in {files} file(s) under {s.defs}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: {len(cat.modules)} modules, {len(cat.connections)} connections, {len(cat.groups)} groups in {s.defs}")


@main.command(name="list")
@handle_errors
def list_cmd() -> None:
    """Modules with strategy, source, destination, group and last run."""
    eng = _engine()
    eng.repo.mark_dead_runs()
    rows = []
    for m in eng.catalog.modules.values():
        last = eng.repo.last_run(m.name)
        lr = f"{last['status']} {last['started_at'][:19]}" if last else "-"
        rows.append([m.name, m.strategy, m.source, m.dest, m.dest_table, eng.catalog.group_of(m.name) or "-", "yes" if m.enabled else "no", lr])
    show_table(["module", "strategy", "source", "dest", "table", "group", "enabled", "last run"], rows)
    if eng.catalog.problems:
        print(f"warning: {len(eng.catalog.problems)} definition problem(s); run 'pipekit validate'", file=sys.stderr)


def _parse_watermarks(items: tuple[str, ...]) -> dict[str, str]:
    res: dict[str, str] = {}
    for it in items:
        if "=" not in it:
            raise click.BadParameter(f"{it!r}: expected NAME=VALUE", param_hint="--watermark")
        k, v = it.split("=", 1)
        res[k.strip()] = v
    return res


def _print_plan(plan: Any) -> None:
    print(f"module: {plan.module}   strategy: {plan.strategy}   transport: {plan.transport}")
    print("\n-- watermarks")
    if not plan.watermarks:
        print("(none)")
    for w in plan.watermarks.values():
        print(f"{w.name} = {w.value}   ({w.source})")
    print("\n-- source SQL")
    print(plan.source_sql.strip())
    direct = getattr(plan, "direct", None)
    if direct is not None:
        print(f"\n-- no staging: a full refresh copies the rows straight into {plan.dest_table} in the merge "
              "transaction (one write per row)")
    else:
        print(f"\n-- staging DDL ({plan.staging_table})")
        for s in plan.staging_ddl:
            print(s + ";")
    if plan.create_table_sql:
        print(f"\n-- destination {plan.dest_table} does not exist: created in the merge transaction")
        for s in plan.create_table_sql:
            print(s + ";")
    schema = getattr(plan, "schema", None)
    if schema:
        print(f"\n-- schema changes to {plan.dest_table} (allowed by schema_change:)")
        for c in schema.added:
            print(f"add column {c.name} {c.type}".rstrip())
        for col, old, new in schema.widened:
            print(f"widen column {col}: {old} -> {new}")
        for col in schema.filled:
            print(f"column {col} is not fed by the query: filled with NULL / its default (missing_column: fill)")
        for col in schema.ignored:
            print(f"source column {col} is not merged (new_column: ignore)")
        for s in plan.alter_sql:
            print(s + ";  -- in the merge transaction")
    w = getattr(plan, "window", None)
    if w is not None:
        print("\n-- window")
        print(f"window_start = {w.start}   window_end = {w.end}   (half-open: [{w.start}, {w.end}))")
        print(f"rows of {plan.dest_table} in the window: WHERE {plan.window_predicate}")
        if plan.window_guard_sql:
            print("every staged row must lie in the window, or the run fails before the merge")
    print("\n-- merge SQL (one transaction)")
    if direct is not None:
        print(f"{direct.empty_sql};  -- or {direct.fallback_sql} where TRUNCATE cannot be used")
        print(f"{direct.copy_sql};  -- the source rows, as the query returns them")
    for s in plan.merge_sql:
        print(s + ";")
    if plan.delete_sql:
        print(f"\n-- deletes: the keys query, staged into {plan.keys_staging_table}")
        print((plan.keys_sql or "").strip())
        print("-- then, in the merge transaction (rows whose key the keys query lacks):")
        for kind, s in plan.delete_sql:
            print(f"{s};  -- {kind.replace('_', ' ')}")
    print("\n-- hooks")
    if not plan.hooks:
        print("(none)")
    rendered = getattr(plan, "hook_sql", None) or [h.sql for h in plan.hooks]
    for i, (h, sql) in enumerate(zip(plan.hooks, rendered, strict=False)):
        print(f"#{i + 1} ({h.run_on}): {sql.strip()}")
    for d in plan.drift:
        print(f"\nwarning: source column {d!r} has no column in the destination; it is not merged")


@main.command()
@click.argument("module")
@click.option("--full-refresh", is_flag=True, help="Incremental modules behave as full (watermark defaults).")
@click.option("--watermark", "watermarks", multiple=True, metavar="NAME=VALUE", help="Override a watermark.")
@click.option("--window", "window", metavar="START..END", help="Partitioned modules: the window [START, END) (one run).")
@click.option("--partition", "partition", metavar="KEY", help="Partitioned modules: one partition, e.g. 2024-01-05.")
@handle_errors
def plan(module: str, full_refresh: bool, watermarks: tuple[str, ...], window: str | None, partition: str | None) -> None:
    """Dry run: resolved watermarks, final source SQL, staging DDL, merge SQL, hooks. Moves no data."""
    from pipekit_core.engine import RunOptions

    eng = _engine()
    opts = RunOptions(dry_run=True, full_refresh=full_refresh, watermark_overrides=_parse_watermarks(watermarks),
                      window=eng.window(module, window=window, partition=partition))
    try:
        p = eng.new_run(module, opts).plan_only()
    except Exception as e:  # the database's own message, not "unexpected SyntaxError"
        if _is_db_error(e):
            fail(f"module '{module}': plan failed (resolve/describe on the database): {redact(str(e))}; "
                 "fix the SQL named in the message")
        raise
    _print_plan(p)


def _is_db_error(e: BaseException) -> bool:
    import sqlite3

    import psycopg

    return isinstance(e, (sqlite3.Error, psycopg.Error))


class _Progress:
    """Live progress: a rich status line on a terminal, plain lines (every few seconds) when piped."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last_plain = 0.0
        self.status: Any = None

    def __call__(self, ev: Any) -> None:
        if ev.kind == "progress":
            if self.tty:
                if self.status is None:
                    self.status = out.status("")
                    self.status.start()
                self.status.update(f"{ev.module}: {ev.message}")
            elif time.monotonic() - self.last_plain >= 2.0:
                print(f"{ev.module}: {ev.message}", flush=True)
                self.last_plain = time.monotonic()
            return
        if ev.kind == "error":
            return  # the command prints the run's failure itself, once
        self.stop()
        prefix = "warning: " if ev.kind == "warning" else ""
        print(f"{ev.module}: {prefix}{ev.message}", flush=True)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _install_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    # SIGINT too: a process started with SIGINT ignored (a background job of a script, some CI
    # runners) would otherwise not cancel on `kill -INT`.
    signal.signal(signal.SIGINT, handler)


@main.command()
@click.argument("module", required=False)
@click.option("--group", "group", help="Run a group's modules in order, stopping at the first failure.")
@click.option("--dry-run", is_flag=True, help="Resolve and build SQL only; records a dry_run in the run log.")
@click.option("--full-refresh", is_flag=True, help="Incremental modules behave as full (watermark defaults).")
@click.option("--watermark", "watermarks", multiple=True, metavar="NAME=VALUE", help="Override a watermark for this run.")
@click.option("--wait", is_flag=True, help="Wait for the module lock instead of failing at once.")
@click.option("--window", "window", metavar="START..END",
              help="Partitioned modules: run over the window [START, END) as one run (e.g. 2024-01-01..2024-04-01).")
@click.option("--partition", "partition", metavar="KEY", help="Partitioned modules: run one partition (e.g. 2024-01-05).")
@handle_errors
def run(module: str | None, group: str | None, dry_run: bool, full_refresh: bool, watermarks: tuple[str, ...], wait: bool,
        window: str | None, partition: str | None) -> None:
    """Run a module (or --group) now, with live progress. Exit 0 on success, 1 on failure.

    A partitioned module runs its latest complete partition unless --window or --partition says otherwise."""
    from pipekit_core.engine import RunOptions, run_module

    if bool(module) == bool(group):
        raise click.UsageError("give a MODULE or --group GROUP (one of them)")
    if group and (window or partition):
        raise click.UsageError("--window / --partition go with one MODULE, not --group")
    _install_sigterm()
    eng = _engine()
    opts = RunOptions(
        dry_run=dry_run, full_refresh=full_refresh, watermark_overrides=_parse_watermarks(watermarks), wait=wait,
        window=eng.window(module, window=window, partition=partition) if module else None,
    )
    names = [module] if module else list(eng.catalog.group(group).modules)  # type: ignore[arg-type]
    stop_on_failure = True if module else eng.catalog.group(group).stop_on_failure  # type: ignore[arg-type]
    progress = _Progress()
    failed: list[str] = []
    for name in names:
        if failed and stop_on_failure:
            print(f"{name}: skipped (an earlier module of group {group} failed)")
            continue
        mod = eng.catalog.modules.get(name) if group else None
        if mod is not None and not mod.enabled:
            print(f"{name}: skipped (enabled: false in {mod.source_file or 'its module file'})")
            continue
        try:
            res = run_module(eng, name, opts, progress)
        except KeyboardInterrupt:
            progress.stop()
            fail(f"module '{name}' cancelled; destination rolled back, staging dropped, lock released", 130)
        except PipekitError as e:
            progress.stop()
            failed.append(name)
            print(f"error: {redact(cli_message(e))}", file=sys.stderr)
            continue
        progress.stop()
        if res.status == "dry_run" and res.plan is not None:
            _print_plan(res.plan)
        else:
            for line in res.summary():
                print(f"{name}: {line}")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("module", required=False)
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs.")
@click.option("--run-id", type=int, help="Show one run in full (SQL, watermarks, log).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (for scripts).")
@handle_errors
def history(module: str | None, limit: int, run_id: int | None, as_json: bool) -> None:
    """Recent runs from the repository: status, rows, durations."""
    repo = _existing_repo()
    repo.mark_dead_runs()
    if run_id is not None:
        r = repo.get_run(run_id)
        if r is None:
            fail(f"no run {run_id} in {repo.path}")
        if as_json:
            print(json.dumps(r, indent=2, default=str))
            return
        _print_run(r)  # type: ignore[arg-type]
        return
    rows = repo.history(module, limit)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = []
    for r in rows:
        dur = f"{r['duration_s']:.2f}s" if r.get("duration_s") is not None else "-"
        table.append([
            str(r["id"]), r["module"], r["status"], r.get("trigger") or "-",
            (r.get("dagster_run_id") or "-")[:8],  # whole in --run-id; the Dagster UI's run page shows the same 8
            (r.get("started_at") or "")[:19], dur,
            _n(r.get("rows_staged")), _n(r.get("rows_deleted")), _n(r.get("rows_inserted")), _n(r.get("row_count")),
            (r.get("error") or "").replace("\n", " ")[:100],
        ])
    show_table(["run", "module", "status", "trigger", "dagster run", "started (UTC)", "duration", "staged", "deleted", "inserted", "rows", "error"], table)


def _existing_repo() -> Any:
    """The repository, for commands that only read it: never created as a side effect."""
    from pipekit_core.repo import Repository

    s = load_settings()
    if not s.database.exists():
        why = ("PIPEKIT_DB points there" if os.environ.get("PIPEKIT_DB")
               else f"'database' in {s.config_file} points there" if s.config_file else "the default: ./pipekit.db")
        fail(f"no pipekit repository at {s.database} ({why}); nothing has run with these settings. Run from the "
             "folder you ran pipekit in, or set PIPEKIT_DB (and PIPEKIT_DEFS); `pipekit init` creates a repository")
    return Repository(s.database)


def _print_run(r: dict) -> None:
    """One run as a person reads it: fields in order, empty ones left out, JSON pretty, the log last."""
    log = r.pop("log", None)
    for k, v in r.items():
        if v is None or v == "" or v == {} or v == []:
            continue
        if isinstance(v, (dict, list)):
            text = json.dumps(v, indent=2, default=str)
            print(f"{k}:")
            print("  " + text.replace("\n", "\n  "))
        elif isinstance(v, str) and "\n" in v:
            print(f"{k}:")
            print("  " + v.strip().replace("\n", "\n  "))
        else:
            print(f"{k}: {_n(v) if isinstance(v, int) and not isinstance(v, bool) and k not in ('id', 'pid') else v}")
    if log:
        print("log:")
        print("  " + log.rstrip().replace("\n", "\n  "))


def _n(v: Any) -> str:
    return "-" if v is None else f"{v:,}"


@main.command()
@click.argument("module")
@handle_errors
def unlock(module: str) -> None:
    """Clear a module's lock (a stale one left by a killed process)."""
    repo = _existing_repo()
    info = repo.force_unlock(module)
    if info is not None:
        print(f"unlocked {module} (was held by {info.owner})")
        return
    from pipekit_core.defs import load_catalog

    s = load_settings()
    known = load_catalog(s.defs, s.local_timezone()).modules
    if module not in known and not repo.history(module, 1):
        fail(f"unknown module '{module}' (no such module in {s.defs}, and no run of it in {repo.path})")
    print(f"{module} was not locked")


@main.command()
@handle_errors
def doctor() -> None:
    """Check config, definitions, secrets, repository, transports and every connection."""
    from pipekit_core.doctor import run_doctor

    ok = run_doctor(print)
    sys.exit(0 if ok else 1)


@main.command(name="demo-data")
@handle_errors
def demo_data() -> None:
    """Create the demo's source database (data/ beside the definitions), or advance it."""
    from pipekit_core.demo import make_demo_data

    print(make_demo_data(load_settings().defs / "data"))


@main.group()
def secrets() -> None:
    """Manage the secrets file (PIPEKIT_SECRETS) that $VAR references resolve from."""


@secrets.command(name="set")
@click.argument("key")
@click.argument("value", required=False)
@handle_errors
def secrets_set(key: str, value: str | None) -> None:
    """Add or replace KEY (prompts, hidden, when VALUE is omitted). New files are created 0600."""
    from pipekit_core.secrets import Secrets

    s = load_settings()
    if value is None:
        value = click.prompt(f"value for {key}", hide_input=True, confirmation_prompt=True)
    Secrets(s.secrets).set(key, value)
    print(f"set {key} in {s.secrets}")


@secrets.command(name="list")
@handle_errors
def secrets_list() -> None:
    """List the keys in the secrets file (never the values)."""
    from pipekit_core.secrets import Secrets

    s = load_settings()
    sec = Secrets(s.secrets)
    if not s.secrets.exists():
        print(f"no secrets file at {s.secrets}")
        return
    for k in sec.keys():
        print(k)


# pipekit inspect | new | import-original (the commands import their modules when they run)
from pipekit_core.cli_authoring import register as _register_authoring  # noqa: E402

_register_authoring(main)

if __name__ == "__main__":  # pragma: no cover
    main()
