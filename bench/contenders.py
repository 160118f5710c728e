"""The jobs and the contenders that run them.

A contender knows, for a job: whether it runs it, how to reset its destination before a
repetition (untimed), which processes one run starts (timed by the harness), and where its
result lands (checked after each run: row count and changed-row count).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import data
from measure import Cmd, StepError, run_cmd, run_cmds, run_pipe

from pipekit_core.sql.builders import MergeBuilder
from pipekit_core.sql.dialects import ColumnDef, TableName, get_dialect

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PIPEKIT = str(BIN / "pipekit")
DAGSTER = str(BIN / "dagster")
JRUNNER_STANDIN = REPO / "tests" / "jrunner_standin" / "jrunner"


@dataclass(frozen=True)
class Job:
    key: str  # module name too
    title: str
    db: Literal["postgresql", "sqlite"]
    strategy: Literal["full", "incremental"]
    source_rows: int  # rows in the source table
    moved: int  # rows copied by one run
    src_table: str  # PostgreSQL: table on bench_src; SQLite: table in src_<n>.db
    expect: tuple[int, int]  # (rows, changed rows) in the destination after a run
    kind: str = "orders"  # orders (12 columns, key id), lineitem (TPC-H-like), group (50 small modules)
    base: str = ""  # incremental: the bench_dst table every destination is reset to ("before")
    modules: int = 1  # group: how many modules

    @property
    def columns(self) -> list[tuple[str, str, str]]:
        return data.LI_COLUMNS if self.kind == "lineitem" else data.COLUMNS

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.columns]

    @property
    def merge_key(self) -> list[str]:
        return data.LI_KEY if self.kind == "lineitem" else ["id"]

    @property
    def cursor(self) -> str:
        return "l_updated_at" if self.kind == "lineitem" else "updated_at"

    @property
    def changed_sql(self) -> str:
        return "l_comment LIKE '%-u'" if self.kind == "lineitem" else "name LIKE '%-u'"

    @property
    def big(self) -> bool:
        return self.source_rows >= 2_000_000


GROUP = "bench_group"


def group_modules(count: int) -> list[str]:
    return [f"grp_m{i:02d}" for i in range(count)]


def make_jobs(n: int, big: int | None, group_size: int = 50) -> list[Job]:
    changed = n // 20 + n // 100
    jobs = [
        Job("full_pg", f"Full load {n:,} rows, PG->PG", "postgresql", "full", n, n, f"full_{n}", (n, 0)),
        Job(
            "incr_pg",
            f"Incremental {changed:,} changed of {n + n // 100:,}, PG->PG",
            "postgresql",
            "incremental",
            n + n // 100,
            changed,
            f"inc_{n}",
            (n + n // 100, changed),
            base=f"inc_base_{n}",
        ),
        Job(
            "small_pg",
            f"Small module {data.SMALL_ROWS} rows, PG->PG",
            "postgresql",
            "full",
            data.SMALL_ROWS,
            data.SMALL_ROWS,
            f"small_{data.SMALL_ROWS}",
            (data.SMALL_ROWS, 0),
        ),
        Job("full_sqlite", f"Full load {n:,} rows, SQLite->SQLite", "sqlite", "full", n, n, "full", (n, 0)),
        Job(
            "small_sqlite",
            f"Small module {data.SMALL_ROWS} rows, SQLite->SQLite",
            "sqlite",
            "full",
            data.SMALL_ROWS,
            data.SMALL_ROWS,
            "small",
            (data.SMALL_ROWS, 0),
        ),
        Job(
            "li_full",
            f"Full refresh {n:,} rows, TPC-H-like lineitem, PG->PG",
            "postgresql",
            "full",
            n,
            n,
            f"li_{n}",
            (n, 0),
            kind="lineitem",
        ),
    ]
    if big:
        jobs.append(
            Job(
                "li_full_big",
                f"Full refresh {big:,} rows, TPC-H-like lineitem, PG->PG (also: memory flatness)",
                "postgresql",
                "full",
                big,
                big,
                f"li_{big}",
                (big, 0),
                kind="lineitem",
            )
        )
    m = big or n
    upd, ins = data.li_changes(m)
    for key, what in (
        ("li_incr", "destination with its primary key (as created by hand)"),
        ("li_incr_new", "destination table created by pipekit on a first run"),
    ):
        jobs.append(
            Job(
                key,
                f"Incremental {upd + ins:,} changed ({upd:,} updated, {ins:,} new) of {m + ins:,}, "
                f"lineitem, key (l_orderkey, l_linenumber), PG->PG; {what}",
                "postgresql",
                "incremental",
                m + ins,
                upd + ins,
                f"li_inc_{m}",
                (m + ins, upd + ins),
                kind="lineitem",
                base=f"li_base_{m}",
            )
        )
    jobs.append(
        Job(
            "group",
            f"Group of {group_size} small modules ({data.SMALL_ROWS} rows each, PG->PG) in one run",
            "postgresql",
            "full",
            data.SMALL_ROWS,
            data.SMALL_ROWS * group_size,
            f"small_{data.SMALL_ROWS}",
            (data.SMALL_ROWS * group_size, 0),
            kind="group",
            modules=group_size,
        )
    )
    return jobs


@dataclass
class Bench:
    """What every contender needs: the server, the work folder, sizes, timeouts."""

    pg: data.PgTarget
    workdir: Path
    n: int
    big: int | None
    timeout: float
    jobs: list[Job] = field(default_factory=list)
    # Templates (tpl_<job> runs of pipekit): job key -> error text when building it failed.
    template_errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # job key -> what a reset did (for the report)

    @property
    def sqlite_src(self) -> Path:
        return self.workdir / f"src_{self.n}.db"

    def sqlite_dst(self, contender: str) -> Path:
        return self.workdir / f"dst_{contender}.db"

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
        env["PGTZ"] = "UTC"
        return env

    def pipekit_env(self, defs: str, db: str) -> dict[str, str]:
        env = self.base_env()
        env.update(
            PIPEKIT_DEFS=str(self.workdir / defs),
            PIPEKIT_DB=str(self.workdir / db),
            PIPEKIT_SECRETS=str(self.workdir / "no-secrets.env"),
            BENCH_PG_PW=self.pg.parts[3],
        )
        return env


class Contender:
    name = ""
    label = ""
    order = 0

    def __init__(self, bench: Bench) -> None:
        self.b = bench

    def supports(self, job: Job) -> bool:
        return True

    def version(self) -> str:
        return ""

    def setup(self) -> None:
        """Once per benchmark run, before any job."""

    def reset(self, job: Job) -> None:
        """Untimed: bring the destination to the state the job starts from."""

    def run(self, job: Job) -> str:
        """Timed: start the processes of one run and wait for them; return their output."""
        raise NotImplementedError

    def check(self, job: Job) -> tuple[int, int]:
        raise NotImplementedError

    def cleanup(self, job: Job) -> None:
        """After the job's last repetition (untimed): drop what only fills the disk."""


# -- helpers ---------------------------------------------------------------------------------

PG = get_dialect("postgresql")
LITE = get_dialect("sqlite")


def _pg_cols(job: Job) -> list[ColumnDef]:
    return [ColumnDef(n, t) for n, t, _ in job.columns]


def _src_sql(job: Job, since: str | None = None, limit: int | None = None) -> str:
    table = job.src_table if job.db == "sqlite" else f"public.{job.src_table}"
    sql = f"SELECT {', '.join(job.names)} FROM {table}"
    if job.strategy == "incremental":
        sql += f" WHERE {job.cursor} > '{since}'"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql


def _pg_reset(b: Bench, table: str, job: Job) -> None:
    if job.strategy == "incremental":
        data.reset_pg_table(b.pg, table, like=job.base, fill=job.base, columns=job.names)
    else:
        data.reset_pg_table(b.pg, table)


def _pg_drop(b: Bench, table: str, job: Job) -> None:
    if job.big:
        data.reset_pg_table(b.pg, table)


def _pg_check(b: Bench, table: str, job: Job) -> tuple[int, int]:
    return data.pg_check(b.pg, table, job.changed_sql)


# -- baseline A ------------------------------------------------------------------------------


def _psql(b: Bench, db: str, *args: str) -> list[str]:
    return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", b.pg.conninfo(db), *args]


def _psql_env(b: Bench) -> dict[str, str]:
    env = b.base_env()
    env["PGPASSWORD"] = b.pg.parts[3]
    return env


def _sqlite_version(cli: str | None) -> str:
    if not cli:
        return "sqlite3 CLI missing"
    return (
        "sqlite3 CLI " + subprocess.run([cli, "--version"], capture_output=True, text=True).stdout.split()[0]
    )


class _CliTools(Contender):
    """A contender made of the psql and sqlite3 command-line tools."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.sqlite_cli = shutil.which("sqlite3")

    def version(self) -> str:
        psql = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
        return f"{psql}; {_sqlite_version(self.sqlite_cli)}"


class Baseline(_CliTools):
    """Baseline A: psql \\copy ... TO STDOUT | psql \\copy staging FROM STDIN, then the same merge
    SQL in psql; on SQLite the sqlite3 CLI: ATTACH + INSERT ... SELECT into staging, then the
    same merge. Incremental jobs merge into a destination that has its primary key."""

    name = "baseline"
    label = "baseline A (psql | psql into staging + merge; sqlite3 CLI staging + merge)"
    order = 0

    def supports(self, job: Job) -> bool:
        if job.kind == "group" or job.key == "li_incr_new":
            return False
        return job.db == "postgresql" or self.sqlite_cli is not None

    def _table(self, job: Job) -> TableName:
        return TableName("bl", job.key)

    def reset(self, job: Job) -> None:
        if job.db == "postgresql":
            _pg_reset(self.b, f"bl.{job.key}", job)
        else:
            self.b.sqlite_dst(self.name).unlink(missing_ok=True)

    def cleanup(self, job: Job) -> None:
        _pg_drop(self.b, f"bl.{job.key}", job)

    def run(self, job: Job) -> str:
        if job.db == "sqlite":
            return self._run_sqlite(job)
        env = _psql_env(self.b)
        dest, staging = self._table(job), TableName("bl_staging", job.key)
        names = job.names
        ddl = PG.create_staging_sql(staging, _pg_cols(job), "bl_staging")
        first = _psql(self.b, "bench_dst", "-At")
        if job.strategy == "incremental":
            first += ["-c", f"SELECT max({job.cursor}) FROM {PG.table(dest)}"]
        for stmt in ddl:
            first += ["-c", stmt]
        out = run_cmd(Cmd(first, env=env, capture=True), self.b.timeout).strip()
        since = out.splitlines()[0] if job.strategy == "incremental" else None
        cols = ", ".join(PG.quote(n) for n in names)
        run_pipe(
            Cmd(_psql(self.b, "bench_src", "-c", f"\\copy ({_src_sql(job, since)}) TO STDOUT"), env=env),
            Cmd(_psql(self.b, "bench_dst", "-c", f"\\copy {PG.table(staging)} ({cols}) FROM STDIN"), env=env),
            self.b.timeout,
        )
        b = MergeBuilder(PG)
        if job.strategy == "full":
            stmts = PG.create_table_sql(dest, _pg_cols(job)) + b.full(dest, staging, names)
        else:
            stmts = b.incremental(dest, staging, names, job.merge_key, key_not_null=True)
        script = "BEGIN; " + "; ".join(stmts) + "; COMMIT; " + PG.drop_table_sql(staging)
        run_cmd(Cmd(_psql(self.b, "bench_dst", "-c", script), env=env), self.b.timeout)
        return out

    def _run_sqlite(self, job: Job) -> str:
        dest, staging = TableName(None, job.key), TableName(None, f"pipekit_staging__{job.key}")
        names = job.names
        cols = ", ".join(LITE.quote(n) for n in names)
        typed = [ColumnDef(n, st) for n, _, st in job.columns]
        b = MergeBuilder(LITE)
        lines = [
            f"ATTACH DATABASE '{self.b.sqlite_src}' AS src",
            *LITE.create_staging_sql(staging, [ColumnDef(n, "") for n in names], "x"),
            f"INSERT INTO {LITE.table(staging)} ({cols}) SELECT {cols} FROM src.{LITE.quote(job.src_table)}",
            "BEGIN",
            *LITE.create_table_sql(dest, typed),
            *b.full(dest, staging, names),
            "COMMIT",
            LITE.drop_table_sql(staging),
        ]
        script = self.b.workdir / f"baseline_{job.key}.sql"
        script.write_text(";\n".join(lines) + ";\n")
        assert self.sqlite_cli
        return run_cmd(
            Cmd([self.sqlite_cli, "-bail", str(self.b.sqlite_dst(self.name))], stdin_file=script),
            self.b.timeout,
        )

    def check(self, job: Job) -> tuple[int, int]:
        if job.db == "sqlite":
            return data.sqlite_check(self.b.sqlite_dst(self.name), job.key)
        return _pg_check(self.b, f"bl.{job.key}", job)


# -- templates: the destination DDL pipekit ends with ---------------------------------------


TPL_DB = "tpl.db"  # SQLite template destination (work dir)


def template_table(job: Job) -> str:
    """Where pipekit's own table for ``job`` is (bench_dst schema tpl; SQLite: tpl.db)."""
    return f"tpl.{job.key}" if job.db == "postgresql" else job.key


def template_jobs(jobs: list[Job]) -> list[Job]:
    """Jobs whose destination DDL is taken from a pipekit run: the raw contender's full jobs and
    the incremental whose destination pipekit created on a first run."""
    return [j for j in jobs if (j.strategy == "full" and j.kind != "group") or j.key == "li_incr_new"]


def build_templates(b: Bench, jobs: list[Job], log) -> None:  # noqa: ANN001
    """Untimed, once per benchmark run: ``pipekit run --group bench_tpl``, whose modules are the
    jobs' modules with ``LIMIT 1000`` and their tables in schema tpl (SQLite: tpl.db). A first
    run creates each table as pipekit creates it (columns, types, NOT NULL, primary key,
    indexes); the raw contender and the li_incr_new resets copy that DDL with ``CREATE TABLE
    ... (LIKE tpl.<job> INCLUDING ALL)`` (SQLite: the CREATE statements from sqlite_master).
    Built anew every run, so they follow the engine being measured."""
    todo = template_jobs(jobs)
    if not todo:
        return
    for job in todo:
        if job.db == "postgresql":
            data.reset_pg_table(b.pg, template_table(job))
    (b.workdir / TPL_DB).unlink(missing_ok=True)
    env = b.pipekit_env("defs_tpl", "pipekit_tpl.db")
    try:
        run_cmd(Cmd([PIPEKIT, "init"], env=env, cwd=b.workdir), b.timeout)
        run_cmd(Cmd([PIPEKIT, "run", "--group", "bench_tpl"], env=env, cwd=b.workdir), b.timeout)
    except StepError:
        # The group stops at its first failure: run each template alone to know which failed.
        for job in todo:
            try:
                run_cmd(Cmd([PIPEKIT, "run", f"tpl_{job.key}"], env=env, cwd=b.workdir), b.timeout)
            except StepError as e:
                b.template_errors[job.key] = f"template (pipekit run tpl_{job.key}) failed: {e}"
                log(f"template tpl_{job.key}: {b.template_errors[job.key][:300]}")
    for job in todo:
        if (
            job.db == "postgresql"
            and job.key in ("li_full", "li_incr_new")
            and job.key not in b.template_errors
        ):
            b.notes[f"ddl_{job.key}"] = data.describe_pg_table(b.pg, template_table(job))
    ok = len([j for j in todo if j.key not in b.template_errors])
    log(f"templates: {ok} of {len(todo)} destination table(s) created by pipekit (LIMIT 1000 runs)")


def sqlite_ddl(path: Path, table: str) -> list[str]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type = 'table' DESC",
            (table,),
        ).fetchall()
    finally:
        con.close()
    if not rows:
        raise RuntimeError(f"template {path}:{table} missing (pipekit run tpl_{table} created nothing)")
    return [r[0] for r in rows]


# -- raw single-write limit -------------------------------------------------------------------


class Raw(_CliTools):
    """The raw single-write limit: psql \\copy (SELECT ...) TO STDOUT | psql \\copy target FROM
    STDIN into an empty table with pipekit's DDL (created in the untimed reset); SQLite: the
    sqlite3 CLI, ATTACH + INSERT INTO target SELECT ... (one statement, one transaction)."""

    name = "raw"
    label = "raw limit (psql | psql into the empty target; sqlite3 CLI ATTACH + INSERT ... SELECT)"
    order = -1

    def supports(self, job: Job) -> bool:
        if job.strategy != "full" or job.kind == "group":
            return False
        return job.db == "postgresql" or self.sqlite_cli is not None

    def reset(self, job: Job) -> None:
        err = self.b.template_errors.get(job.key)
        if err:
            raise RuntimeError(err)
        if job.db == "postgresql":
            data.reset_pg_table(self.b.pg, f"raw.{job.key}", like=template_table(job))
            return
        path = self.b.sqlite_dst(self.name)
        path.unlink(missing_ok=True)
        con = sqlite3.connect(path)
        try:
            for stmt in sqlite_ddl(self.b.workdir / TPL_DB, job.key):
                con.execute(stmt)
            con.commit()
        finally:
            con.close()

    def cleanup(self, job: Job) -> None:
        if job.db == "postgresql":
            _pg_drop(self.b, f"raw.{job.key}", job)

    def run(self, job: Job) -> str:
        if job.db == "sqlite":
            cols = ", ".join(LITE.quote(n) for n in job.names)
            script = self.b.workdir / f"raw_{job.key}.sql"
            script.write_text(
                f"ATTACH DATABASE '{self.b.sqlite_src}' AS src;\n"
                f"INSERT INTO main.{LITE.quote(job.key)} ({cols}) SELECT {cols} FROM src.{LITE.quote(job.src_table)};\n"
            )
            assert self.sqlite_cli
            return run_cmd(
                Cmd([self.sqlite_cli, "-bail", str(self.b.sqlite_dst(self.name))], stdin_file=script),
                self.b.timeout,
            )
        env = _psql_env(self.b)
        cols = ", ".join(PG.quote(n) for n in job.names)
        run_pipe(
            Cmd(_psql(self.b, "bench_src", "-c", f"\\copy ({_src_sql(job)}) TO STDOUT"), env=env),
            Cmd(_psql(self.b, "bench_dst", "-c", f"\\copy raw.{job.key} ({cols}) FROM STDIN"), env=env),
            self.b.timeout,
        )
        return ""

    def check(self, job: Job) -> tuple[int, int]:
        if job.db == "sqlite":
            return data.sqlite_check(self.b.sqlite_dst(self.name), job.key)
        return _pg_check(self.b, f"raw.{job.key}", job)


# -- pipekit -----------------------------------------------------------------------------------


def _connections(b: Bench, lite_dst: Path) -> list[str]:
    return [
        "connections:",
        "  src:",
        f"    url: {b.pg.jdbc('bench_src')}",
        f"    user: {b.pg.parts[2]}",
        "    password: $BENCH_PG_PW",
        "  dst:",
        f"    url: {b.pg.jdbc('bench_dst')}",
        f"    user: {b.pg.parts[2]}",
        "    password: $BENCH_PG_PW",
        "  lite_src:",
        f"    url: jdbc:sqlite:{b.sqlite_src}",
        "  lite_dst:",
        f"    url: jdbc:sqlite:{lite_dst}",
    ]


def _module(
    job: Job, name: str, dest_table: str, transport: str | None = None, limit: int | None = None
) -> list[str]:
    lines = [f"  - name: {name}"]
    if job.db == "postgresql":
        lines += ["    source: src", "    dest: dst"]
    else:
        lines += ["    source: lite_src", "    dest: lite_dst"]
    lines += [f"    dest_table: {dest_table}", f"    strategy: {job.strategy}"]
    if transport:
        lines.append(f"    transport: {transport}")
    if job.strategy == "incremental":
        lines += [
            f'    query: "{_src_sql(job, "{since}", limit)}"',
            f"    merge_key: [{', '.join(job.merge_key)}]",
            "    watermarks:",
            "      - name: since",
            f"        sql: SELECT max({job.cursor}) FROM {dest_table}",
            "        default: '1900-01-01'",
        ]
    else:
        lines.append(f'    query: "{_src_sql(job, limit=limit)}"')
    return lines


def write_defs(b: Bench, jobs: list[Job]) -> Path:
    """Three definitions folders in the work dir:

    defs/        the jobs' modules: <job> (native), <job>_jr (jrunner, orders jobs), and
                 li_incr_new_hk (the hand-keyed twin of li_incr_new)
    defs_group/  the group job's modules grp_m00.. in group bench_group (own folder, so that
                 the Dagster code location of the other jobs does not load 50 more modules)
    defs_tpl/    tpl_<job>: the templates (see build_templates), in group bench_tpl
    """
    folder = b.workdir / "defs"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [*_connections(b, b.sqlite_dst("pipekit")), "modules:"]
    for job in jobs:
        if job.kind == "group":
            continue
        dest = f"pk.{job.key}" if job.db == "postgresql" else job.key
        lines += _module(job, job.key, dest)
        if job.db == "postgresql" and job.kind == "orders":
            lines += _module(job, f"{job.key}_jr", f"jr.{job.key}", "jrunner")
        if job.key == "li_incr_new":
            lines += _module(job, f"{job.key}_hk", f"pkh.{job.key}")
    (folder / "bench.yaml").write_text("\n".join(lines) + "\n")

    for job in jobs:
        if job.kind != "group":
            continue
        gfolder = b.workdir / "defs_group"
        gfolder.mkdir(parents=True, exist_ok=True)
        names = group_modules(job.modules)
        lines = [*_connections(b, b.sqlite_dst("pipekit")), "modules:"]
        for name in names:
            lines += _module(job, name, f"grp.{name}")
        lines += ["groups:", f"  {GROUP}:", f"    modules: [{', '.join(names)}]"]
        (gfolder / "bench.yaml").write_text("\n".join(lines) + "\n")

    tfolder = b.workdir / "defs_tpl"
    tfolder.mkdir(parents=True, exist_ok=True)
    todo = template_jobs(jobs)
    lines = [*_connections(b, b.workdir / TPL_DB), "modules:"]
    for job in todo:
        lines += _module(job, f"tpl_{job.key}", template_table(job), limit=1000)
    if todo:
        lines += ["groups:", "  bench_tpl:", f"    modules: [{', '.join(f'tpl_{j.key}' for j in todo)}]"]
    (tfolder / "bench.yaml").write_text("\n".join(lines) + "\n")
    return folder


class Pipekit(Contender):
    """``pipekit run <module>`` (native transport) in a subprocess; the group job:
    ``pipekit run --group bench_group``."""

    name = "pipekit"
    label = "pipekit run (native)"
    order = 1
    schema = "pk"
    suffix = ""
    db_name = "pipekit_pipekit.db"

    def env(self, job: Job | None = None) -> dict[str, str]:
        if job is not None and job.kind == "group":
            return self.b.pipekit_env("defs_group", "pipekit_group.db")
        return self.b.pipekit_env("defs", self.db_name)

    def version(self) -> str:
        from importlib.metadata import version

        return f"pipekit {version('pipekit')}"

    def supports(self, job: Job) -> bool:
        return True

    def setup(self) -> None:
        run_cmd(Cmd([PIPEKIT, "init"], env=self.env(), cwd=self.b.workdir), self.b.timeout)
        for job in self.b.jobs:
            if job.kind == "group" and self.supports(job):
                run_cmd(Cmd([PIPEKIT, "init"], env=self.env(job), cwd=self.b.workdir), self.b.timeout)

    def table(self, job: Job) -> str:
        return f"{self.schema}.{job.key}"

    def reset(self, job: Job) -> None:
        if job.kind == "group":
            data.drop_schema(self.b.pg, "grp")
        elif job.key == "li_incr_new":
            err = self.b.template_errors.get(job.key)
            if err:
                raise RuntimeError(err)
            note = data.reset_pg_table(
                self.b.pg, self.table(job), like=template_table(job), fill=job.base, columns=job.names,
                add_key=self.add_key(job),
            )  # fmt: skip
            if note:
                self.b.notes[job.key] = note
        elif job.db == "postgresql":
            _pg_reset(self.b, self.table(job), job)
        else:
            self.b.sqlite_dst("pipekit").unlink(missing_ok=True)

    def add_key(self, job: Job) -> list[str] | None:
        return None

    def cleanup(self, job: Job) -> None:
        if job.db == "postgresql" and job.kind != "group":
            _pg_drop(self.b, self.table(job), job)

    def argv(self, job: Job) -> list[str]:
        if job.kind == "group":
            return [PIPEKIT, "run", "--group", GROUP]
        return [PIPEKIT, "run", job.key + self.suffix]

    def run(self, job: Job) -> str:
        return run_cmd(Cmd(self.argv(job), env=self.env(job), cwd=self.b.workdir), self.b.timeout)

    def check(self, job: Job) -> tuple[int, int]:
        if job.kind == "group":
            return data.pg_count_tables(self.b.pg, [f"grp.{m}" for m in group_modules(job.modules)]), 0
        if job.db == "sqlite":
            return data.sqlite_check(self.b.sqlite_dst("pipekit"), job.key)
        return _pg_check(self.b, self.table(job), job)


class HandKey(Pipekit):
    """li_incr_new's reference: the same pipekit-created table, with the primary key added by
    hand (ALTER TABLE ... ADD PRIMARY KEY) when pipekit created none; ``pipekit run li_incr_new_hk``."""

    name = "handkey"
    label = "pipekit run, pipekit-created table + primary key added by hand"
    order = 2
    schema = "pkh"
    suffix = "_hk"

    def supports(self, job: Job) -> bool:
        return job.key == "li_incr_new"

    def setup(self) -> None:
        run_cmd(Cmd([PIPEKIT, "init"], env=self.env(), cwd=self.b.workdir), self.b.timeout)

    def add_key(self, job: Job) -> list[str] | None:
        return job.merge_key


class Dagster(Pipekit):
    """``dagster job execute -m pipekit_dagster.definitions -j <module>_job`` (temp DAGSTER_HOME);
    the group job: ``-j bench_group_job``."""

    name = "dagster"
    label = "pipekit via dagster job execute"
    order = 3

    def env(self, job: Job | None = None) -> dict[str, str]:
        env = super().env(job)
        env["DAGSTER_HOME"] = str(self.b.workdir / "dagster_home")
        return env

    def setup(self) -> None:
        home = self.b.workdir / "dagster_home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        super().setup()

    def version(self) -> str:
        from importlib.metadata import version

        return f"dagster {version('dagster')}"

    def supports(self, job: Job) -> bool:
        return job.kind in ("orders", "group")

    def argv(self, job: Job) -> list[str]:
        name = GROUP if job.kind == "group" else job.key
        return [DAGSTER, "job", "execute", "-m", "pipekit_dagster.definitions", "-j", f"{name}_job"]


class JrunnerStandin(Pipekit):
    """``pipekit run <module>_jr`` with transport jrunner and the test stand-in."""

    name = "jrunner"
    label = "pipekit run (jrunner stand-in: measures orchestration, not the real jrunner)"
    order = 4
    schema = "jr"
    suffix = "_jr"

    def env(self, job: Job | None = None) -> dict[str, str]:
        env = super().env(job)
        env["PIPEKIT_JRUNNER"] = str(JRUNNER_STANDIN)
        env["JRUNNER_STANDIN_PYTHON"] = sys.executable
        return env

    def setup(self) -> None:
        run_cmd(Cmd([PIPEKIT, "init"], env=self.env(), cwd=self.b.workdir), self.b.timeout)

    def version(self) -> str:
        return "tests/jrunner_standin (Python, psycopg 3)"

    def supports(self, job: Job) -> bool:
        return job.db == "postgresql" and job.kind == "orders"


# -- dlt ---------------------------------------------------------------------------------------


class Dlt(Contender):
    """dlt sql_table -> postgres (replace / merge with incremental cursor), subprocess per run."""

    name = "dlt"
    order = 5
    backend = "connectorx"

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"dlt (sql_database, {self.backend} backend, csv load files, no compression)"

    def version(self) -> str:
        from importlib.metadata import version

        parts = [f"dlt {version('dlt')}"]
        for pkg in ("connectorx", "pyarrow", "SQLAlchemy"):
            try:
                parts.append(f"{pkg} {version(pkg)}")
            except Exception:  # noqa: BLE001
                pass
        return ", ".join(parts)

    def supports(self, job: Job) -> bool:
        # Where it ran before (the orders jobs) and the 1M lineitem full refresh; not the big
        # jobs (its backend reads whole tables into memory) nor the lineitem incrementals (its
        # reset would load the 6M "before" rows through dlt for every repetition).
        return job.db == "postgresql" and (job.kind == "orders" or job.key == "li_full")

    def _dataset(self, job: Job) -> str:
        return f"dlt_{job.key}"

    def _pdir(self, job: Job) -> Path:
        return self.b.workdir / "dlt_pipelines" / job.key

    def _argv(self, job: Job, table: str) -> list[str]:
        return [
            sys.executable, str(REPO / "bench" / "dlt_job.py"),
            "--src", self.b.pg.src, "--dst", self.b.pg.dst,
            "--table", table, "--name", job.key, "--dataset", self._dataset(job),
            "--pipelines-dir", str(self._pdir(job)),
            "--mode", "merge" if job.strategy == "incremental" else "replace",
            "--backend", self.backend,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = self.b.base_env()
        env["RUNTIME__LOG_LEVEL"] = "ERROR"
        return env

    def reset(self, job: Job) -> None:
        data.drop_schema(self.b.pg, self._dataset(job))
        shutil.rmtree(self._pdir(job), ignore_errors=True)
        if job.strategy == "incremental":
            # dlt keeps its cursor in its own state: load the "before" table once (untimed).
            run_cmd(Cmd(self._argv(job, f"full_{self.b.n}"), env=self.env()), self.b.timeout)
            with data.connect(self.b.pg.dst) as d:
                d.execute(f"VACUUM ANALYZE {self._dataset(job)}.{job.key}")
                d.execute("CHECKPOINT")

    def run(self, job: Job) -> str:
        return run_cmd(Cmd(self._argv(job, job.src_table), env=self.env()), self.b.timeout)

    def check(self, job: Job) -> tuple[int, int]:
        return _pg_check(self.b, f"{self._dataset(job)}.{job.key}", job)


# -- Sling -------------------------------------------------------------------------------------


def sling_binary() -> str | None:
    try:
        import sling_linux_amd64  # type: ignore[import-not-found]
    except ImportError:
        return shutil.which("sling")
    path = Path(sling_linux_amd64.__file__).parent / "bin" / "sling-linux-amd64"
    return str(path) if path.exists() else None


class Sling(Contender):
    """sling run: full-refresh, or incremental with the job's primary key and update key."""

    name = "sling"
    label = "Sling (sling-linux-amd64 binary)"
    order = 6

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.binary = sling_binary()

    def version(self) -> str:
        if not self.binary:
            return "not installed"
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return "sling " + out.strip().split()[-1]

    def supports(self, job: Job) -> bool:
        return (
            self.binary is not None
            and job.db == "postgresql"
            and (job.kind == "orders" or job.key in ("li_full", "li_incr"))
        )

    def env(self) -> dict[str, str]:
        env = self.b.base_env()
        env["BENCH_SRC"] = self.b.pg.src + "?sslmode=disable"
        env["BENCH_DST"] = self.b.pg.dst + "?sslmode=disable"
        env["SLING_HOME_DIR"] = str(self.b.workdir / "sling_home")
        env["SLING_DISABLE_TELEMETRY"] = "true"
        return env

    def reset(self, job: Job) -> None:
        _pg_reset(self.b, f"sl.{job.key}", job)
        with data.connect(self.b.pg.dst) as d:
            d.execute(f"DROP TABLE IF EXISTS sl.{job.key}_tmp")

    def cleanup(self, job: Job) -> None:
        _pg_drop(self.b, f"sl.{job.key}", job)

    def run(self, job: Job) -> str:
        assert self.binary
        argv = [
            self.binary, "run",
            "--src-conn", "BENCH_SRC", "--src-stream", f"public.{job.src_table}",
            "--tgt-conn", "BENCH_DST", "--tgt-object", f"sl.{job.key}",
        ]  # fmt: skip
        if job.strategy == "incremental":
            argv += [
                "--mode",
                "incremental",
                "--primary-key",
                ",".join(job.merge_key),
                "--update-key",
                job.cursor,
            ]
        else:
            argv += ["--mode", "full-refresh"]
        return run_cmds([Cmd(argv, env=self.env(), cwd=self.b.workdir)], self.b.timeout)

    def check(self, job: Job) -> tuple[int, int]:
        return _pg_check(self.b, f"sl.{job.key}", job)


ALL: list[type[Contender]] = [Raw, Baseline, Pipekit, HandKey, Dagster, JrunnerStandin, Dlt, Sling]

__all__ = ["ALL", "Bench", "Contender", "Job", "StepError", "build_templates", "make_jobs", "write_defs"]
