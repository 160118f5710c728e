"""The jobs and the contenders that run them.

A contender knows, for a job: whether it runs it, how to reset its destination before a
repetition (untimed), which processes one run starts (timed by the harness), and where its
result lands (checked after each run: row count and changed-row count).
"""

from __future__ import annotations

import os
import shutil
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


def make_jobs(n: int, big: int | None) -> list[Job]:
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
    ]
    if big:
        jobs.append(
            Job(
                "full_big_pg",
                f"Full load {big:,} rows, PG->PG (memory flatness)",
                "postgresql",
                "full",
                big,
                big,
                f"full_{big}",
                (big, 0),
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

    @property
    def sqlite_src(self) -> Path:
        return self.workdir / f"src_{self.n}.db"

    def sqlite_dst(self, contender: str) -> Path:
        return self.workdir / f"dst_{contender}.db"

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
        env["PGTZ"] = "UTC"
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


# -- helpers ---------------------------------------------------------------------------------

PG = get_dialect("postgresql")
LITE = get_dialect("sqlite")


def _pg_cols(nullable_key: bool = True) -> list[ColumnDef]:
    return [ColumnDef(n, t, nullable=nullable_key or n != "id") for n, t, _ in data.COLUMNS]


def _src_sql(job: Job, since: str | None = None) -> str:
    table = job.src_table if job.db == "sqlite" else f"public.{job.src_table}"
    sql = f"SELECT {data.SELECT_LIST} FROM {table}"
    if job.strategy == "incremental":
        sql += f" WHERE updated_at > '{since}'"
    return sql


def _pg_reset(b: Bench, table: str, job: Job) -> None:
    data.reset_pg_table(b.pg, table, b.n, template=job.strategy == "incremental")


# -- baseline ----------------------------------------------------------------------------------


class Baseline(Contender):
    """psql \\copy ... TO STDOUT | psql \\copy staging FROM STDIN, then the same merge SQL in psql;
    on SQLite the sqlite3 CLI: ATTACH + INSERT ... SELECT into staging, then the same merge."""

    name = "baseline"
    label = "baseline (psql | psql, sqlite3 CLI)"
    order = 0

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.sqlite_cli = shutil.which("sqlite3")

    def version(self) -> str:
        psql = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
        lite = (
            "sqlite3 CLI "
            + subprocess.run([self.sqlite_cli, "--version"], capture_output=True, text=True).stdout.split()[0]
            if self.sqlite_cli
            else "sqlite3 CLI missing"
        )
        return f"{psql}; {lite}"

    def supports(self, job: Job) -> bool:
        return job.db == "postgresql" or self.sqlite_cli is not None

    def _table(self, job: Job) -> TableName:
        return TableName("bl", job.key)

    def reset(self, job: Job) -> None:
        if job.db == "postgresql":
            _pg_reset(self.b, f"bl.{job.key}", job)
        else:
            self.b.sqlite_dst(self.name).unlink(missing_ok=True)

    def _psql(self, db: str, *args: str) -> list[str]:
        return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.b.pg.conninfo(db), *args]

    def run(self, job: Job) -> str:
        if job.db == "sqlite":
            return self._run_sqlite(job)
        env = self.b.base_env()
        env["PGPASSWORD"] = self.b.pg.parts[3]
        dest, staging = self._table(job), TableName("bl_staging", job.key)
        names = [c[0] for c in data.COLUMNS]
        ddl = PG.create_staging_sql(staging, [ColumnDef(n, t) for n, t, _ in data.COLUMNS], "bl_staging")
        first = self._psql("bench_dst", "-At")
        if job.strategy == "incremental":
            first += ["-c", f"SELECT max(updated_at) FROM {PG.table(dest)}"]
        for stmt in ddl:
            first += ["-c", stmt]
        out = run_cmd(Cmd(first, env=env, capture=True), self.b.timeout).strip()
        since = out.splitlines()[0] if job.strategy == "incremental" else None
        cols = ", ".join(PG.quote(n) for n in names)
        run_pipe(
            Cmd(self._psql("bench_src", "-c", f"\\copy ({_src_sql(job, since)}) TO STDOUT"), env=env),
            Cmd(self._psql("bench_dst", "-c", f"\\copy {PG.table(staging)} ({cols}) FROM STDIN"), env=env),
            self.b.timeout,
        )
        b = MergeBuilder(PG)
        if job.strategy == "full":
            stmts = PG.create_table_sql(dest, _pg_cols()) + b.full(dest, staging, names)
        else:
            stmts = b.incremental(dest, staging, names, ["id"], key_not_null=True)
        script = "BEGIN; " + "; ".join(stmts) + "; COMMIT; " + PG.drop_table_sql(staging)
        run_cmd(Cmd(self._psql("bench_dst", "-c", script), env=env), self.b.timeout)
        return out

    def _run_sqlite(self, job: Job) -> str:
        dest, staging = TableName(None, job.key), TableName(None, f"pipekit_staging__{job.key}")
        names = [c[0] for c in data.COLUMNS]
        cols = ", ".join(LITE.quote(n) for n in names)
        typed = [ColumnDef(n, st) for n, _, st in data.COLUMNS]
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
        return data.pg_check(self.b.pg, f"bl.{job.key}")


# -- pipekit -----------------------------------------------------------------------------------


def write_defs(b: Bench, jobs: list[Job]) -> Path:
    """module_defs for the pipekit contenders: <job> (native) and <job>_jr (jrunner)."""
    folder = b.workdir / "defs"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
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
        f"    url: jdbc:sqlite:{b.sqlite_dst('pipekit')}",
        "modules:",
    ]
    for job in jobs:
        variants = [("", "pk", None)]
        if job.db == "postgresql" and job.key != "full_big_pg":
            variants.append(("_jr", "jr", "jrunner"))
        for suffix, schema, transport in variants:
            name = job.key + suffix
            if job.db == "postgresql":
                lines += [
                    f"  - name: {name}",
                    "    source: src",
                    "    dest: dst",
                    f"    dest_table: {schema}.{job.key}",
                ]
            else:
                lines += [
                    f"  - name: {name}",
                    "    source: lite_src",
                    "    dest: lite_dst",
                    f"    dest_table: {job.key}",
                ]
            lines.append(f"    strategy: {job.strategy}")
            if transport:
                lines.append(f"    transport: {transport}")
            if job.strategy == "incremental":
                lines += [
                    f'    query: "{_src_sql(job, "{since}")}"',
                    "    merge_key: [id]",
                    "    watermarks:",
                    "      - name: since",
                    f"        sql: SELECT max(updated_at) FROM {schema}.{job.key}",
                    "        default: '1900-01-01'",
                ]
            else:
                lines.append(f'    query: "{_src_sql(job)}"')
    path = folder / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return folder


class Pipekit(Contender):
    """``pipekit run <module>`` (native transport) in a subprocess."""

    name = "pipekit"
    label = "pipekit run (native)"
    order = 1
    schema = "pk"
    suffix = ""

    def env(self) -> dict[str, str]:
        env = self.b.base_env()
        env.update(
            PIPEKIT_DEFS=str(self.b.workdir / "defs"),
            PIPEKIT_DB=str(self.b.workdir / f"pipekit_{self.name}.db"),
            PIPEKIT_SECRETS=str(self.b.workdir / "no-secrets.env"),
            BENCH_PG_PW=self.b.pg.parts[3],
        )
        return env

    def version(self) -> str:
        from importlib.metadata import version

        return f"pipekit {version('pipekit')}"

    def setup(self) -> None:
        run_cmd(Cmd([PIPEKIT, "init"], env=self.env(), cwd=self.b.workdir), self.b.timeout)

    def reset(self, job: Job) -> None:
        if job.db == "postgresql":
            _pg_reset(self.b, f"{self.schema}.{job.key}", job)
        else:
            self.b.sqlite_dst("pipekit").unlink(missing_ok=True)

    def argv(self, job: Job) -> list[str]:
        return [PIPEKIT, "run", job.key + self.suffix]

    def run(self, job: Job) -> str:
        return run_cmd(Cmd(self.argv(job), env=self.env(), cwd=self.b.workdir), self.b.timeout)

    def check(self, job: Job) -> tuple[int, int]:
        if job.db == "sqlite":
            return data.sqlite_check(self.b.sqlite_dst("pipekit"), job.key)
        return data.pg_check(self.b.pg, f"{self.schema}.{job.key}")


class Dagster(Pipekit):
    """``dagster job execute -m pipekit_dagster.definitions -j <module>_job`` (temp DAGSTER_HOME)."""

    name = "dagster"
    label = "pipekit via dagster job execute"
    order = 2

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PIPEKIT_DB"] = str(self.b.workdir / "pipekit_pipekit.db")
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
        return job.key != "full_big_pg"

    def argv(self, job: Job) -> list[str]:
        return [DAGSTER, "job", "execute", "-m", "pipekit_dagster.definitions", "-j", f"{job.key}_job"]


class JrunnerStandin(Pipekit):
    """``pipekit run <module>_jr`` with transport jrunner and the test stand-in."""

    name = "jrunner"
    label = "pipekit run (jrunner stand-in: measures orchestration, not the real jrunner)"
    order = 3
    schema = "jr"
    suffix = "_jr"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PIPEKIT_DB"] = str(self.b.workdir / "pipekit_pipekit.db")
        env["PIPEKIT_JRUNNER"] = str(JRUNNER_STANDIN)
        env["JRUNNER_STANDIN_PYTHON"] = sys.executable
        return env

    def version(self) -> str:
        return "tests/jrunner_standin (Python, psycopg 3)"

    def supports(self, job: Job) -> bool:
        return job.db == "postgresql" and job.key != "full_big_pg"


# -- dlt ---------------------------------------------------------------------------------------


class Dlt(Contender):
    """dlt sql_table -> postgres (replace / merge with incremental cursor), subprocess per run."""

    name = "dlt"
    order = 4
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
        return job.db == "postgresql" and job.key != "full_big_pg"

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
        return data.pg_check(self.b.pg, f"{self._dataset(job)}.{job.key}")


# -- Sling -------------------------------------------------------------------------------------


def sling_binary() -> str | None:
    try:
        import sling_linux_amd64  # type: ignore[import-not-found]
    except ImportError:
        return shutil.which("sling")
    path = Path(sling_linux_amd64.__file__).parent / "bin" / "sling-linux-amd64"
    return str(path) if path.exists() else None


class Sling(Contender):
    """sling run: full-refresh, or incremental with primary key id and update key updated_at."""

    name = "sling"
    label = "Sling (sling-linux-amd64 binary)"
    order = 5

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.binary = sling_binary()

    def version(self) -> str:
        if not self.binary:
            return "not installed"
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return "sling " + out.strip().split()[-1]

    def supports(self, job: Job) -> bool:
        return self.binary is not None and job.db == "postgresql" and job.key != "full_big_pg"

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

    def run(self, job: Job) -> str:
        assert self.binary
        argv = [
            self.binary, "run",
            "--src-conn", "BENCH_SRC", "--src-stream", f"public.{job.src_table}",
            "--tgt-conn", "BENCH_DST", "--tgt-object", f"sl.{job.key}",
        ]  # fmt: skip
        if job.strategy == "incremental":
            argv += ["--mode", "incremental", "--primary-key", "id", "--update-key", "updated_at"]
        else:
            argv += ["--mode", "full-refresh"]
        return run_cmds([Cmd(argv, env=self.env(), cwd=self.b.workdir)], self.b.timeout)

    def check(self, job: Job) -> tuple[int, int]:
        return data.pg_check(self.b.pg, f"sl.{job.key}")


ALL: list[type[Contender]] = [Baseline, Pipekit, Dagster, JrunnerStandin, Dlt, Sling]

__all__ = ["ALL", "Bench", "Contender", "Job", "StepError", "make_jobs", "write_defs"]
