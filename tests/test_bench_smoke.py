"""Smoke run of the benchmark harness (bench/run.py): it runs and prints its table.

No time is asserted: the benchmark is not part of the test suite, this only keeps the harness
working. It uses the test PostgreSQL server (databases bench_src / bench_dst).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_bench_quick_runs_and_prints_its_table(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
    env["PIPEKIT_BENCH_PG"] = PG_ADMIN_URL
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "pipekit,baseline",
         "--workdir", str(tmp_path / "work"), "--report", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["job", "contender", "median"], p.stdout
    rows = {tuple(line.split()[:2]) for line in lines[2:] if line.strip() and not line.startswith("target")}
    for job in ("full_pg", "incr_pg", "small_pg", "full_sqlite", "small_sqlite"):
        for contender in ("baseline", "pipekit"):
            assert (job, contender) in rows, f"{job}/{contender} missing from:\n{p.stdout}"
    # Every cell ran (a failed contender prints n/a with its error instead of a time).
    assert " n/a " not in p.stdout, p.stdout
    assert "dlt" not in {r[1] for r in rows} and "sling" not in {r[1] for r in rows}
    text = report.read_text()
    assert "| full_pg | pipekit |" in text and "## Targets" in text
    assert report.with_suffix(".png").stat().st_size > 1000
