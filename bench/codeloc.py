"""How the Dagster code location's load time grows with the number of modules.

Generates definitions folders with 10 and 1,000 modules (SQLite connections, a schedule on
every tenth module, groups of ten) and times ``python -c "import pipekit_dagster.definitions"``
with ``PIPEKIT_DEFS`` pointing at each, median of ``reps`` runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def write_modules(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    (folder / "connections.yaml").write_text(
        "connections:\n"
        f"  src:\n    url: jdbc:sqlite:{folder / 'src.db'}\n"
        f"  dst:\n    url: jdbc:sqlite:{folder / 'dst.db'}\n"
    )
    per_file = 50
    for f in range(0, count, per_file):
        lines = ["modules:"]
        groups: dict[str, list[str]] = {}
        for i in range(f, min(f + per_file, count)):
            name = f"m{i:04d}"
            lines += [
                f"  - name: {name}",
                "    source: src",
                "    dest: dst",
                f"    dest_table: t_{name}",
                f"    query: SELECT id, name, updated_at FROM source_{i % 7} WHERE updated_at > '{{since}}'",
                "    strategy: incremental",
                "    merge_key: [id]",
                "    watermarks:",
                "      - name: since",
                f"        sql: SELECT max(updated_at) FROM t_{name}",
                "        default: '1900-01-01'",
            ]
            if i % 10 == 0:
                lines.append('    schedule: "15 * * * *"')
            else:
                groups.setdefault(f"g{i // 10:03d}", []).append(name)
        if groups:
            lines.append("groups:")
            for g, members in groups.items():
                lines += [f"  {g}:", f"    modules: [{', '.join(members)}]"]
        (folder / f"modules_{f:04d}.yaml").write_text("\n".join(lines) + "\n")
    return folder


def time_import(defs: Path, workdir: Path, reps: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
    env.update(PIPEKIT_DEFS=str(defs), PIPEKIT_DB=str(workdir / "codeloc.db"),
               PIPEKIT_SECRETS=str(workdir / "no-secrets.env"))  # fmt: skip
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-c", "import pipekit_dagster.definitions as d; assert d.defs"],
            env=env, cwd=workdir, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"import failed with {defs}: {p.stderr[-800:]}")
    return statistics.median(times)


def measure(workdir: Path, reps: int = 3, sizes: tuple[int, ...] = (10, 1000)) -> dict[str, float]:
    out = {}
    for n in sizes:
        folder = write_modules(workdir / f"codeloc_{n}", n)
        out[str(n)] = time_import(folder, workdir, reps)
    return out
