"""What running a module through Dagster costs on top of running it with the pipekit CLI.

The same PostgreSQL -> PostgreSQL module (full refresh, 8 columns, generated data) runs through
``pipekit run <module>`` and through ``dagster job execute -m pipekit_dagster.definitions -j
<module>_job``, alternating, at a small and a large row count; each is timed from process start
to exit (median of --repeats runs). The engine's own time (the run log's ``duration_s``) is
reported too: the wrapper overhead is the rest, and it should be the same at both sizes.

    .venv/bin/python bench/dagster_overhead.py            # 100 and 1,000,000 rows
    .venv/bin/python bench/dagster_overhead.py --quick    # 100 and 100,000 rows

The source tables live in the database ``pk_overhead_src`` (created on first use, kept for the
next run); destination tables in ``pk_overhead_dst``. The server is PIPEKIT_TEST_PG (default: the
test server, postgresql://pipekit:...@127.0.0.1:54329/postgres) or --pg.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
DEFAULT_PG = "postgresql://pipekit:pk_test_Secret_7731@127.0.0.1:54329/postgres"
SRC_DB, DST_DB = "pk_overhead_src", "pk_overhead_dst"

ROW_SQL = """
CREATE TABLE {table} AS SELECT
  g::bigint AS id,
  (g * 7919 % 100000)::integer AS customer_id,
  ((g * 104729) % 10000000 / 100.0)::numeric(14,2) AS amount,
  'customer ' || g AS name,
  md5(g::text) AS code,
  timestamptz '2020-01-01 00:00:00+00' + g * interval '13 second' AS updated_at,
  g % 3 = 0 AS is_active,
  date '2015-01-01' + (g % 3000)::int AS day
FROM generate_series(1::bigint, {n}) g
"""


def with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + db))


def prepare(admin_url: str, sizes: list[int]) -> None:
    """Create the two databases and the source tables that are missing."""
    with psycopg.connect(admin_url, autocommit=True) as con:
        have = {r[0] for r in con.execute("SELECT datname FROM pg_database")}
        for db in (SRC_DB, DST_DB):
            if db not in have:
                con.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(with_db(admin_url, SRC_DB), autocommit=True) as con:
        for n in sizes:
            table = f"public.rows_{n}"
            if con.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
                print(f"  generating {table} ({n:,} rows) ...", flush=True)
                con.execute(ROW_SQL.format(table=table, n=n))
                con.execute(f"ANALYZE {table}")


def write_defs(folder: Path, admin_url: str, sizes: list[int]) -> None:
    parts = urlsplit(admin_url)
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    user = unquote(parts.username or "")
    lines = ["connections:"]
    for name, db in (("src", SRC_DB), ("dst", DST_DB)):
        lines += [
            f"  {name}:",
            f"    url: jdbc:postgresql://{host}/{db}",
            f"    user: {user}",
            "    password: $PK_BENCH_PASSWORD",
        ]
    lines.append("modules:")
    for n in sizes:
        lines += [
            f"  - name: ovh_{n}",
            "    source: src",
            "    dest: dst",
            f"    dest_table: public.ovh_{n}",
            "    strategy: full",
            f"    query: SELECT id, customer_id, amount, name, code, updated_at, is_active, day FROM public.rows_{n}",
        ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yaml").write_text("\n".join(lines) + "\n")


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return elapsed


def engine_seconds(db: Path, module: str) -> float:
    from pipekit_core.repo import Repository

    run = Repository(db).last_run(module)
    assert run is not None and run["status"] == "success", run
    return float(run["duration_s"] or 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 and 100,000 rows instead of 100 and 1,000,000")
    ap.add_argument("--repeats", type=int, default=3, help="runs per tool and size (median reported)")
    ap.add_argument(
        "--pg",
        default=os.environ.get("PIPEKIT_TEST_PG", DEFAULT_PG),
        help="admin URL of the PostgreSQL server",
    )
    args = ap.parse_args()
    sizes = [100, 100_000 if args.quick else 1_000_000]

    print(
        f"pipekit CLI vs Dagster job execute, PostgreSQL -> PostgreSQL, sizes {sizes}, median of {args.repeats}"
    )
    prepare(args.pg, sizes)
    with tempfile.TemporaryDirectory(prefix="pk-overhead-") as tmp:
        work = Path(tmp)
        write_defs(work / "defs", args.pg, sizes)
        (work / "dagster_home").mkdir()
        (work / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
        env.update(
            PIPEKIT_DEFS=str(work / "defs"),
            PIPEKIT_DB=str(work / "pipekit.db"),
            PK_BENCH_PASSWORD=unquote(urlsplit(args.pg).password or ""),
            DAGSTER_HOME=str(work / "dagster_home"),
        )
        tools = {
            "pipekit": lambda m: [str(BIN / "pipekit"), "run", m],
            "dagster": lambda m: [
                str(BIN / "dagster"),
                "job",
                "execute",
                "-m",
                "pipekit_dagster.definitions",
                "-j",
                f"{m}_job",
            ],
        }
        rows = []
        noise = 0.0  # the widest run-to-run spread of one tool at one size
        for n in sizes:
            module = f"ovh_{n}"
            wall: dict[str, list[float]] = {t: [] for t in tools}
            inner: dict[str, list[float]] = {t: [] for t in tools}
            for i in range(args.repeats):
                order = list(tools) if i % 2 == 0 else list(reversed(tools))  # alternate who goes first
                for tool in order:
                    wall[tool].append(timed(tools[tool](module), env, work))
                    inner[tool].append(engine_seconds(work / "pipekit.db", module))
                    print(
                        f"  {n:>9,} rows  {tool:<8} run {i + 1}: {wall[tool][-1]:6.2f} s (engine {inner[tool][-1]:6.2f} s)",
                        flush=True,
                    )
            med = {t: statistics.median(v) for t, v in wall.items()}
            med_inner = {t: statistics.median(v) for t, v in inner.items()}
            rows.append((n, med["pipekit"], med["dagster"], med_inner["pipekit"], med_inner["dagster"]))
            noise = max([noise, *(max(v) - min(v) for v in wall.values())])

    print()
    print(
        f"{'rows':>10} | {'pipekit run':>11} | {'dagster job':>11} | {'extra':>7} | {'engine (cli)':>12} | {'engine (dagster)':>16}"
    )
    print("-" * 84)
    for n, p, d, ip, idg in rows:
        print(f"{n:>10,} | {p:>9.2f} s | {d:>9.2f} s | {d - p:>5.2f} s | {ip:>10.2f} s | {idg:>14.2f} s")
    extras = [d - p for _, p, d, _, _ in rows]
    spread = max(extras) - min(extras)
    print()
    verdict = (
        "constant: the difference is within the run-to-run noise"
        if spread <= max(noise, 0.5)
        else "NOT constant beyond the noise: compare the engine columns"
    )
    print(
        f"Dagster adds {extras[0]:.2f} s at {rows[0][0]:,} rows and {extras[-1]:.2f} s at {rows[-1][0]:,} rows "
        f"(difference {spread:.2f} s; widest run-to-run spread {noise:.2f} s): {verdict}."
    )


if __name__ == "__main__":
    main()
