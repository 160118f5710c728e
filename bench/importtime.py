"""What ``pipekit run`` spends on imports, from ``python -X importtime``.

Two figures, each from a fresh interpreter (after one warm-up run, so .pyc files exist):

- ``imports``: ``python -X importtime -c "import pipekit_core.cli, pipekit_core.engine"``, the
  modules the CLI and the engine import when they are loaded;
- ``run``: ``python -X importtime <venv>/bin/pipekit run <module>``, every import of a whole
  small run (lazy imports made during the run included).

Each: the total (sum of the self times of every imported module, = the cumulative times of the
top-level imports), the 10 modules with the largest self time, and the 10 top-level packages
with the largest summed self time. The run with the median total of ``reps`` is reported.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def parse(stderr: str) -> dict:
    """Totals and top lists from ``-X importtime`` output (microseconds in, milliseconds out)."""
    mods: list[tuple[str, int, int]] = []
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m:
            mods.append((m.group(4), int(m.group(1)), int(m.group(2))))
    total = sum(s for _, s, _ in mods)
    by_pkg: dict[str, int] = defaultdict(int)
    for name, self_us, _ in mods:
        by_pkg[name.split(".", 1)[0]] += self_us
    top = sorted(mods, key=lambda m: m[1], reverse=True)[:10]
    pkgs = sorted(by_pkg.items(), key=lambda kv: kv[1], reverse=True)[:10]
    return {
        "total_ms": total / 1000,
        "modules": len(mods),
        "top": [[n, s / 1000, c / 1000] for n, s, c in top],
        "packages": [[n, s / 1000] for n, s in pkgs],
    }


def _one(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict:
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = "\n".join(line for line in p.stderr.splitlines() if not line.startswith("import time:"))
        raise RuntimeError(f"{' '.join(argv[3:])} exited {p.returncode}: {tail[-800:]}")
    return parse(p.stderr)


def measure(
    pipekit: str, module: str, env: dict[str, str], cwd: Path, reps: int = 3, timeout: float = 300
) -> dict:
    py = sys.executable
    cases = {
        "imports": [py, "-X", "importtime", "-c", "import pipekit_core.cli, pipekit_core.engine"],
        "run": [py, "-X", "importtime", pipekit, "run", module],
    }
    out: dict[str, dict] = {}
    for key, argv in cases.items():
        if reps > 1:
            _one(argv, env, cwd, timeout)  # warm-up: compile .pyc files, fill the page cache
        runs = [_one(argv, env, cwd, timeout) for _ in range(max(reps, 1))]
        med = statistics.median_low([r["total_ms"] for r in runs])
        out[key] = next(r for r in runs if r["total_ms"] == med)
        out[key]["argv"] = (
            f"python -X importtime .venv/bin/pipekit run {module}"
            if key == "run"
            else 'python -X importtime -c "import pipekit_core.cli, pipekit_core.engine"'
        )
    return out
