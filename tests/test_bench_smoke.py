"""Smoke run of the benchmark harness (bench/run.py): it runs and prints its table and targets.

No time is asserted: the benchmark is not part of the test suite, this only keeps the harness
working. It uses the test PostgreSQL server (databases bench_src / bench_dst) at 20,000 rows and
a subset of the jobs (no 6M-row job, no group, no Dagster): about 20 s on a quiet machine.
The target arithmetic is checked on made-up figures, in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import importtime  # noqa: E402
import report  # noqa: E402

SMOKE_JOBS = ("full_pg", "incr_pg", "small_pg", "full_sqlite", "small_sqlite", "li_full", "li_incr")


@pytest.mark.postgres
def test_bench_quick_runs_and_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
    env["PIPEKIT_BENCH_PG"] = PG_ADMIN_URL
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--rows", "20000",
         "--only", "raw,pipekit,baseline", "--jobs", ",".join(SMOKE_JOBS),
         "--workdir", str(tmp_path / "work"), "--report", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["job", "contender", "median"], p.stdout
    rows = {
        tuple(line.split()[:2])
        for line in lines[2:]
        if line.strip() and not line.startswith(("target", "imports", "report"))
    }
    for job in SMOKE_JOBS:
        for contender in ("baseline", "pipekit"):
            assert (job, contender) in rows, f"{job}/{contender} missing from:\n{p.stdout}"
    # The raw single-write limit runs the full jobs only (an empty target, one write).
    assert {j for j, c in rows if c == "raw"} == {
        "full_pg",
        "small_pg",
        "full_sqlite",
        "small_sqlite",
        "li_full",
    }
    # Every cell ran (a failed contender prints n/a with its error instead of a time).
    assert " n/a " not in p.stdout, p.stdout
    assert "dlt" not in {r[1] for r in rows} and "sling" not in {r[1] for r in rows}
    # Each target of issue 13 is printed with its verdict; those this subset measures have a ratio.
    targets = [line for line in lines if line.startswith("target: ")]
    assert len(targets) == 9, targets
    measured = [t for t in targets if not t.endswith("not measured")]
    assert any("vs raw single-write pipe" in t and "x (pipekit" in t for t in measured), targets
    assert any("SQLite->SQLite" in t and "x (pipekit" in t for t in measured), targets
    assert any("100-row module" in t and "x (pipekit" in t for t in measured), targets
    assert all(t.endswith(("; met", "; NOT met")) for t in measured)
    assert any(line.startswith("imports: python -X importtime") for line in lines), p.stdout
    text = out.read_text()
    assert "| full_pg | pipekit |" in text and "## Targets" in text and "x raw" in text
    assert "## Start-up imports (`python -X importtime`)" in text and "Top 10 modules" in text
    assert out.with_suffix(".png").stat().st_size > 1000


def _cell(job: str, contender: str, seconds: float, mib: float = 50) -> report.Cell:
    return report.Cell(job, contender, 1, seconds=[seconds], peak_rss=[int(mib * report.MiB)])


def test_targets_are_computed_from_the_runs_figures() -> None:
    cells = {
        (c.job, c.contender): c
        for c in [
            _cell("li_full", "raw", 10.0, 20),
            _cell("li_full", "pipekit", 10.9, 60),  # 1.09x: met
            _cell("li_full_big", "raw", 60.0, 20),
            _cell("li_full_big", "pipekit", 67.0, 85),  # 1.12x: not met; 25 MiB above li_full: not flat
            _cell("li_incr", "baseline", 4.0),
            _cell("li_incr", "pipekit", 4.1),  # 1.025x: met
            _cell("li_incr_new", "handkey", 4.0),
            _cell("li_incr_new", "pipekit", 5.0),  # 1.25x: not met
            _cell("full_sqlite", "raw", 2.0),
            _cell("full_sqlite", "pipekit", 2.5),  # 1.25x: met (<= 1.3x)
            _cell("small_pg", "baseline", 0.25),
            _cell("small_pg", "pipekit", 0.45),  # 1.8x: met
            _cell("group", "pipekit", 20.0),
            _cell("group", "dagster", 26.0),  # 6 s / 50 modules = 0.12 s per module: met
        ]
    }
    got = {
        t.name: t
        for t in report.evaluate_targets(
            cells, {}, {"rows": 1_000_000, "big": 6_000_000, "group_modules": 50}
        )
    }
    met = [t.met for t in got.values()]
    assert met == [True, False, True, False, True, True, True, True, False], [
        (t.name, t.measured) for t in got.values()
    ]
    assert any("1.09x (pipekit 10.90 s / raw 10.00 s)" == t.measured for t in got.values())
    assert any("+0.120 s per module" in t.measured for t in got.values())
    assert any(t.measured == "60 vs 85 MiB (+25)" for t in got.values())
    # A missing reference is "not measured", never met; a smaller run says at which size it ran.
    del cells[("li_incr", "baseline")]
    cells[("li_full", "raw")].error = "psql exited 2"
    small = report.evaluate_targets(cells, {}, {"rows": 100_000, "big": 0, "group_modules": 5})
    assert small[0].met is None and "raw failed: psql exited 2" in small[0].measured
    assert small[2].met is None
    assert small[3].met is False and "[at 100,000 rows, not 6M]" in small[3].measured
    assert "[5 modules, not 50]" in small[6].measured


def test_importtime_output_is_summed_and_ranked() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |   _io",
            "import time:      2000 |       2000 |     psycopg.pq",
            "import time:      3000 |       5000 |   psycopg",
            "import time:       500 |       5600 | pipekit_core.cli",
            "some other line on stderr",
        ]
    )
    r = importtime.parse(stderr)
    assert r["total_ms"] == pytest.approx(5.6) and r["modules"] == 4
    assert [m[0] for m in r["top"]] == ["psycopg", "psycopg.pq", "pipekit_core.cli", "_io"]
    assert r["packages"][0] == ["psycopg", pytest.approx(5.0)]
