"""pipekit benchmarks: one command, its own data, every contender on the same jobs.

    .venv/bin/python bench/run.py            # full: 1M rows + 6M-row lineitem jobs, 3 runs each
    .venv/bin/python bench/run.py --quick    # smoke: 100,000 rows, no 6M jobs, 5-module group, 1 run
    .venv/bin/python bench/run.py --quick --only pipekit,baseline
    .venv/bin/python bench/run.py --jobs li_full,li_full_big --only raw,pipekit --reps 1

PostgreSQL: PIPEKIT_BENCH_PG (an admin URL), else PIPEKIT_TEST_PG, else the test server. The
databases bench_src and bench_dst are created there. Contenders run one at a time, alternating
within each repetition (the order rotates), each after an untimed reset of its destination.
A full run writes docs/benchmarks.md and docs/benchmarks.png; --quick writes them under the
work folder unless --report is given. The report's "Targets" section checks issue 13's targets
from the run's own figures (bench/report.py, evaluate_targets).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import codeloc  # noqa: E402
import contenders as cs  # noqa: E402
import data  # noqa: E402
import importtime  # noqa: E402
import report  # noqa: E402
from measure import measure  # noqa: E402

DEFAULT_PG = "postgresql://pipekit:pk_test_Secret_7731@127.0.0.1:54329/postgres"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [c.name for c in cs.ALL]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="100,000 rows, 1 run each, no 6M jobs, 5-module group (a smoke run)",
    )
    ap.add_argument("--only", help=f"comma-separated contenders ({','.join(names)}); default all")
    ap.add_argument(
        "--jobs",
        help="comma-separated jobs (full_pg,incr_pg,small_pg,full_sqlite,small_sqlite,li_full,li_full_big,"
        "li_incr,li_incr_new,group); default all",
    )
    ap.add_argument("--rows", type=int, help="rows of the full loads (default 1,000,000; --quick 100,000)")
    ap.add_argument(
        "--big",
        type=int,
        help="rows of the big lineitem jobs: li_full_big and the li_incr* 'before' table (default 6,000,000; "
        "--quick and 0: no li_full_big, li_incr* at --rows)",
    )
    ap.add_argument("--group-modules", type=int, help="modules in the group job (default 50; --quick 5)")
    ap.add_argument("--reps", type=int, help="runs per contender and job (default 3; --quick 1)")
    ap.add_argument(
        "--pg", help="PostgreSQL admin URL (default PIPEKIT_BENCH_PG / PIPEKIT_TEST_PG / test server)"
    )
    ap.add_argument("--workdir", type=Path, help="work folder (default /tmp/pipekit-bench)")
    ap.add_argument(
        "--report", type=Path, help="markdown report (default docs/benchmarks.md; --quick: <workdir>)"
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per contender run")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the source data")
    ap.add_argument(
        "--rewrite",
        action="store_true",
        help="rewrite the report from the saved figures (bench/results.json, or <report>.json); runs nothing",
    )
    ap.add_argument(
        "--dlt-backend", default="connectorx", help="dlt sql_database backend (connectorx, pyarrow, ...)"
    )
    a = ap.parse_args(argv)
    a.rows = a.rows or (100_000 if a.quick else 1_000_000)
    a.big = (0 if a.quick else 6_000_000) if a.big is None else a.big
    a.group_modules = a.group_modules or (5 if a.quick else 50)
    a.reps = a.reps or (1 if a.quick else 3)
    a.workdir = (a.workdir or Path("/tmp/pipekit-bench")).resolve()
    a.pg = a.pg or os.environ.get("PIPEKIT_BENCH_PG") or os.environ.get("PIPEKIT_TEST_PG") or DEFAULT_PG
    only = {s.strip() for s in a.only.split(",")} if a.only else set(names)
    unknown = only - set(names)
    if unknown:
        ap.error(f"unknown contender(s) {sorted(unknown)}; choose from {','.join(names)}")
    a.only = only
    a.job_filter = {s.strip() for s in a.jobs.split(",")} if a.jobs else None
    if a.report is None:
        a.report = a.workdir / "benchmarks-quick.md" if a.quick else HERE.parent / "docs" / "benchmarks.md"
    return a


def machine_info(pg: data.PgTarget) -> list[tuple[str, str]]:
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with data.connect(pg.admin_url) as c:
        ver = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        settings = ", ".join(
            f"{k}={c.execute(f'SHOW {k}').fetchone()[0]}"  # type: ignore[index]
            for k in (
                "shared_buffers",
                "work_mem",
                "maintenance_work_mem",
                "max_wal_size",
                "fsync",
                "synchronous_commit",
            )
        )
    return [
        ("CPU", f"{cpu} ({psutil.cpu_count()} logical cores)"),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.0f} GiB"),
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", platform.python_version()),
        (
            "PostgreSQL",
            f"{ver} on {pg.parts[0]}:{pg.parts[1]} (source and destination databases on one server); {settings}",
        ),
    ]


def run_benchmark(a: argparse.Namespace) -> tuple[dict, list, dict, dict]:
    pg = data.PgTarget(a.pg)
    a.workdir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    log(
        f"data: {a.rows:,} rows"
        + (f" and {a.big:,} rows" if a.big else "")
        + f" on {pg.parts[0]}:{pg.parts[1]}"
    )
    jobs = cs.make_jobs(a.rows, a.big or None, a.group_modules)
    if a.job_filter:
        unknown = a.job_filter - {j.key for j in jobs}
        if unknown:
            raise SystemExit(
                f"unknown job(s) {sorted(unknown)} (or not in this run: li_full_big needs --big)"
            )
        jobs = [j for j in jobs if j.key in a.job_filter]
    kinds = {j.kind for j in jobs}
    if "orders" in kinds:
        data.build_source(pg, a.rows, log, a.rebuild)
    elif "group" in kinds:
        data.build_source(pg, a.rows, log, a.rebuild, small_only=True)
    for size in sorted({j.source_rows if j.strategy == "full" else int(j.base.rsplit("_", 1)[1])
                        for j in jobs if j.kind == "lineitem"}):  # fmt: skip
        incremental = any(j.kind == "lineitem" and j.base == f"li_base_{size}" for j in jobs)
        data.build_lineitem(pg, size, log, a.rebuild, incremental=incremental)
    if any(j.db == "sqlite" for j in jobs):
        data.build_sqlite(pg, a.rows, a.workdir, log)
    bench = cs.Bench(pg=pg, workdir=a.workdir, n=a.rows, big=a.big or None, timeout=a.timeout, jobs=jobs)
    cs.write_defs(bench, jobs)
    cs.Dlt.backend = a.dlt_backend
    contenders = [c(bench) for c in cs.ALL if c.name in a.only]
    if {"raw", "pipekit", "handkey"} & a.only:
        cs.build_templates(bench, [j for j in jobs if any(c.supports(j) for c in contenders)], log)
    versions: dict[str, str] = {}
    cells: dict[tuple[str, str], report.Cell] = {}
    broken: dict[str, str] = {}
    for c in contenders:
        try:
            versions[c.name] = c.version()
            c.setup()
        except Exception as e:  # noqa: BLE001 - a contender that cannot start is reported n/a
            broken[c.name] = f"setup failed: {e}"
            log(f"{c.name}: n/a ({broken[c.name][:300]})")
    for job in jobs:
        runners = [c for c in contenders if c.supports(job)]
        for c in runners:
            cells[(job.key, c.name)] = report.Cell(job.key, c.name, job.moved, error=broken.get(c.name))
        for rep in range(a.reps):
            k = rep % len(runners) if runners else 0
            for c in runners[k:] + runners[:k]:  # rotate the order each repetition
                cell = cells[(job.key, c.name)]
                if cell.error:
                    continue
                try:
                    c.reset(job)
                    out = measure(functools.partial(c.run, job))
                    got = c.check(job)
                    if got != job.expect:
                        raise RuntimeError(f"wrong result: (rows, changed) = {got}, expected {job.expect}")
                except Exception as e:  # noqa: BLE001 - record and go on with the others
                    cell.error = str(e).strip().replace("\n", " ")[:500]
                    log(f"{job.key} {c.name}: n/a: {cell.error}")
                    continue
                m = re.search(r"\(run \d+; ([^)]*)\)", out.output)
                if m:
                    cell.phases = m.group(1)
                cell.seconds.append(out.seconds)
                cell.peak_rss.append(out.peak_rss)
                log(f"{job.key} run {rep + 1}/{a.reps} {c.name}: {out.seconds:.2f} s, "
                    f"{out.peak_rss / report.MiB:.0f} MiB")  # fmt: skip
        for c in runners:
            try:
                c.cleanup(job)
            except Exception as e:  # noqa: BLE001 - disk space only
                log(f"{job.key} {c.name}: cleanup failed: {e}")
    extras: dict = {}
    if "dagster" in a.only and "dagster" not in broken:
        try:
            extras["codeloc"] = codeloc.measure(a.workdir, reps=a.reps if a.reps >= 3 else 1)
            log(f"code location import: {extras['codeloc']}")
        except Exception as e:  # noqa: BLE001
            extras["codeloc_error"] = str(e)[:500]
            log(f"code location: n/a: {e}")
    small = next((j for j in jobs if j.key == "small_pg"), None)
    if "pipekit" in a.only and "pipekit" not in broken and small is not None:
        try:
            p = next(c for c in contenders if c.name == "pipekit")
            assert isinstance(p, cs.Pipekit)
            extras["importtime"] = importtime.measure(
                cs.PIPEKIT, small.key, p.env(small), a.workdir, reps=a.reps if a.reps >= 3 else 1
            )
            log(
                "import time: "
                + ", ".join(f"{k} {v['total_ms']:.0f} ms" for k, v in extras["importtime"].items())
            )
        except Exception as e:  # noqa: BLE001
            extras["importtime_error"] = str(e)[:500]
            log(f"import time: n/a: {e}")
    load = f"1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    return (
        cells,
        jobs,
        versions,
        {
            "extras": extras,
            "labels": {c.name: c.label for c in contenders},
            "load": load,
            "notes": bench.notes,
            "sizes": {"rows": a.rows, "big": a.big, "group_modules": a.group_modules},
        },
    )


def write_report(
    a: argparse.Namespace, cells: dict, jobs: list, versions: dict, meta: dict, elapsed: float
) -> str:
    pg = data.PgTarget(a.pg)
    rows = report.table_rows(cells, jobs, meta["labels"])
    png = a.report.with_suffix(".png")
    a.report.parent.mkdir(parents=True, exist_ok=True)
    chart_note = ""
    try:
        report.chart(cells, jobs, [c.name for c in cs.ALL], png)
    except Exception as e:  # noqa: BLE001
        chart_note = f"\n(chart not drawn: {e})\n"
    targets = report.evaluate_targets(cells, meta["extras"], meta.get("sizes"))
    earlier = report.earlier_targets(cells, meta["extras"])
    overhead = report.dagster_overhead(cells)
    notes_path = HERE / "ANALYSIS.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    md = [
        "# Benchmarks",
        "",
        f"Generated by `.venv/bin/python bench/run.py{' --quick' if a.quick else ''}` on "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min "
        f"({a.reps} run(s) per contender and job, alternating; figures are medians). "
        "Re-run it to refresh this page; `--quick` (100,000 rows, 1 run) is a smoke run that writes "
        "its report under the work folder instead.",
        "",
        "## Machine and versions",
        "",
        *[f"- {k}: {v}" for k, v in machine_info(pg)],
        f"- machine load: {meta['load']} (other work on the machine inflates every contender's times)",
        *[f"- {meta['labels'].get(k, k)}: {v}" for k, v in versions.items()],
        "",
        "## Jobs",
        "",
        *[f"- `{j.key}`: {j.title}; {j.moved:,} rows moved per run" for j in jobs],
        "",
        "## Results",
        "",
        f"![wall time and peak memory per job and contender]({png.name})",
        chart_note,
        report.md_table(report.HEADERS, rows),
        "",
        "rows/s = rows moved per run / median wall time. peak RSS = per run, the highest sum of the "
        "resident set sizes of every process of the contender (sampled every 50 ms with psutil; the "
        "PostgreSQL server's own processes are not included), median over the runs; '-' = every run "
        "ended before the first sample. x baseline = median / baseline A median; x raw = median / raw "
        "limit median. Wall time includes "
        "process start-up; resets and result checks between runs are not timed.",
        "",
        "## Targets",
        "",
        "Issue 13's targets, each computed from this run's figures above (ratios of medians; "
        "raw = the raw single-write limit, baseline A = psql staging + merge, handkey = the same "
        "pipekit-created table with its primary key added by hand).",
        "",
        report.md_table(
            ["target", "goal", "measured", "met"],
            [[t.name, t.goal, t.measured, MET[t.met]] for t in targets],
        ),
        "",
    ]
    notes_run = meta.get("notes") or {}
    ddl = {k.removeprefix("ddl_"): v for k, v in notes_run.items() if k.startswith("ddl_")}
    if ddl:
        md += ["Destination tables as pipekit created them on a first run (the raw contender and the "
               "li_incr_new resets copy this DDL with `CREATE TABLE ... (LIKE ... INCLUDING ALL)`):", ""]  # fmt: skip
        md += [f"- `{k}`: {v}" for k, v in sorted(ddl.items())] + [""]
    for k, v in sorted(notes_run.items()):
        if not k.startswith("ddl_"):
            md += [f"`{k}` reset: {v}.", ""]
    it = meta["extras"].get("importtime")
    if it or meta["extras"].get("importtime_error"):
        md += ["## Start-up imports (`python -X importtime`)", ""]
        md += report.importtime_md(it) if it else [f"- not measured: {meta['extras']['importtime_error']}"]
        md += [""]
    md += [
        "## Earlier targets",
        "",
        report.md_table(
            ["target", "goal", "measured", "met"],
            [[t.name, t.goal, t.measured, MET[t.met]] for t in earlier],
        ),
        "",
    ]
    if overhead:
        md += ["Dagster overhead (dagster job execute median - pipekit run median): "
               + ", ".join(f"{k} {v:.2f} s" for k, v in overhead.items()) + ".", ""]  # fmt: skip
    if meta["extras"].get("codeloc"):
        md += ["Code location import (`python -c \"import pipekit_dagster.definitions\"`, median): "
               + ", ".join(f"{k} modules {v:.2f} s" for k, v in meta["extras"]["codeloc"].items()) + ".", ""]  # fmt: skip
    failed = [(k, c) for k, c in cells.items() if c.error]
    if failed:
        md += ["## Contenders that did not run", ""]
        md += [f"- `{j}` {n}: {c.error}" for (j, n), c in failed]
        md += [""]
    if notes:
        md += [notes.strip(), ""]
    a.report.write_text("\n".join(md))
    saved = {
        "cells": [vars(c) for c in cells.values()],
        "jobs": [vars(j) for j in jobs],
        "versions": versions,
        "meta": meta,
        "elapsed": elapsed,
        "args": {"quick": a.quick, "reps": a.reps},  # no server URL: it may hold a password
    }
    results_path(a).write_text(json.dumps(saved, indent=1))
    lines = [
        f"target: {t.name}: {t.goal}; measured {t.measured}; "
        f"{ {True: 'met', False: 'NOT met', None: 'not measured'}[t.met] }"
        for t in targets
    ]
    if it:
        lines += [f"imports: {v['argv']}: {v['total_ms']:.0f} ms" for v in it.values()]
    return report.text_table(rows) + "\n\n" + "\n".join(lines)


MET = {True: "met", False: "**NOT met**", None: "not measured"}


def results_path(a: argparse.Namespace) -> Path:
    """bench/results.json for the committed report, else beside the report."""
    if a.report.resolve() == (HERE.parent / "docs" / "benchmarks.md").resolve():
        return HERE / "results.json"
    return a.report.with_suffix(".json")


def load_results(a: argparse.Namespace) -> tuple[dict, list, dict, dict, float]:
    """The figures a previous run saved beside its report (--rewrite)."""
    saved = json.loads(results_path(a).read_text())
    cells = {(c["job"], c["contender"]): report.Cell(**c) for c in saved["cells"]}
    jobs = [cs.Job(**{**j, "expect": tuple(j["expect"])}) for j in saved["jobs"]]
    a.quick, a.reps = saved["args"]["quick"], saved["args"]["reps"]
    return cells, jobs, saved["versions"], saved["meta"], saved["elapsed"]


def installed_bytecode() -> None:
    """Measure pipekit as installed: its bytecode written once, as ``pip install`` does.

    The editable checkout has no ``.pyc`` until a run writes it, and with PYTHONDONTWRITEBYTECODE
    (set on some machines) every contender run would compile pipekit from source (~0.1 s each).
    """
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for pkg in ("pipekit_core", "pipekit_dagster"):
        compileall.compile_dir(str(HERE.parent / pkg), quiet=1)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.monotonic()
    if a.rewrite:
        cells, jobs, versions, meta, elapsed = load_results(a)
    else:
        installed_bytecode()
        cells, jobs, versions, meta = run_benchmark(a)
        elapsed = time.monotonic() - t0
    text = write_report(a, cells, jobs, versions, meta, elapsed)
    print(text)
    print(f"\nreport: {a.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
