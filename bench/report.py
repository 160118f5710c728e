"""Figures, the printed table, the target checks, docs/benchmarks.md and its chart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


@dataclass
class Cell:
    """All runs of one contender on one job."""

    job: str
    contender: str
    moved: int
    seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    error: str | None = None
    phases: str = ""  # pipekit's own phase timings of the last run

    @property
    def ok(self) -> bool:
        return bool(self.seconds) and self.error is None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def peak_mib(self) -> float | None:
        """Median over the runs of each run's peak (one stray sample does not decide it)."""
        sampled = [p for p in self.peak_rss if p > 0]
        return statistics.median(sampled) / MiB if sampled else None

    @property
    def peak_max_mib(self) -> float | None:
        sampled = [p for p in self.peak_rss if p > 0]
        return max(sampled) / MiB if sampled else None

    @property
    def rows_per_s(self) -> float | None:
        m = self.median
        return self.moved / m if m else None


def ratio(cells: dict[tuple[str, str], Cell], job: str, contender: str) -> float | None:
    c, b = cells.get((job, contender)), cells.get((job, "baseline"))
    if not c or not b or not c.ok or not b.ok:
        return None
    return c.median / b.median  # type: ignore[operator]


def fmt(v: float | None, spec: str, na: str = "n/a") -> str:
    return na if v is None else format(v, spec)


def table_rows(cells: dict[tuple[str, str], Cell], jobs: list, labels: dict[str, str]) -> list[list[str]]:
    rows = []
    for job in jobs:
        for (jkey, cname), c in cells.items():
            if jkey != job.key:
                continue
            if c.ok:
                spread = f"{min(c.seconds):.2f}-{max(c.seconds):.2f}" if len(c.seconds) > 1 else ""
                rows.append([
                    job.key, cname, f"{c.median:.2f}", spread, fmt(c.rows_per_s, ",.0f"),
                    fmt(c.peak_mib, ".0f", "-"), fmt(ratio(cells, job.key, cname), ".2f") + ("" if cname != "baseline" else ""),
                    str(len(c.seconds)),
                ])  # fmt: skip
            else:
                rows.append([job.key, cname, "n/a", "", "", "", "", f"0 ({(c.error or '')[:60]})"])
    return rows


HEADERS = ["job", "contender", "median s", "min-max s", "rows/s", "peak RSS MiB", "x baseline", "runs"]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    return "\n".join(out)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(out)


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def evaluate_targets(cells: dict[tuple[str, str], Cell], extras: dict) -> list[Target]:
    out: list[Target] = []
    r = ratio(cells, "full_pg", "pipekit")
    out.append(
        Target(
            "pipekit run PG->PG full load vs baseline",
            "<= 1.15x",
            fmt(r, ".2f") + "x",
            None if r is None else r <= 1.15,
        )
    )
    r = ratio(cells, "incr_pg", "pipekit")
    out.append(
        Target(
            "pipekit run PG->PG incremental vs baseline",
            "<= 1.2x",
            fmt(r, ".2f") + "x",
            None if r is None else r <= 1.2,
        )
    )
    peaks = {k: c.peak_mib for (k, n), c in cells.items() if n == "pipekit" and c.ok and c.peak_mib}
    worsts = [c.peak_max_mib for (k, n), c in cells.items() if n == "pipekit" and c.ok and c.peak_max_mib]
    if worsts:
        worst = max(worsts)  # type: ignore[type-var]
        out.append(Target("pipekit run peak memory (any job, any run)", "< 100 MiB", f"{worst:.0f} MiB", worst < 100))
    a, b = peaks.get("full_pg"), peaks.get("full_big_pg")
    if a is not None and b is not None:
        out.append(
            Target(
                "pipekit run memory flat: 1M vs 5M rows full load",
                "differ < 20 MiB",
                f"{a:.0f} vs {b:.0f} MiB ({b - a:+.0f})",
                abs(b - a) < 20,
            )
        )
    else:
        out.append(
            Target(
                "pipekit run memory flat: 1M vs 5M rows full load",
                "differ < 20 MiB",
                "not measured (--quick)",
                None,
            )
        )
    ov = dagster_overhead(cells)
    if ov:
        small, big = ov.get("small_pg"), ov.get("full_pg")
        if small is not None and big is not None:
            rel = abs(big - small) / max(small, 1e-9)
            out.append(
                Target(
                    "Dagster overhead constant, 100 vs 1M rows (dagster - pipekit run)",
                    "within 25%",
                    f"{small:.2f} s vs {big:.2f} s ({rel:.0%})",
                    rel <= 0.25,
                )
            )
    cl = extras.get("codeloc")
    if cl:
        r = cl["1000"] / cl["10"]
        out.append(
            Target(
                "code location import, 1,000 vs 10 modules",
                "<= 3x",
                f"{cl['10']:.2f} s vs {cl['1000']:.2f} s ({r:.2f}x)",
                r <= 3,
            )
        )
    return out


def dagster_overhead(cells: dict[tuple[str, str], Cell]) -> dict[str, float]:
    out = {}
    for (job, name), c in cells.items():
        if name != "dagster" or not c.ok:
            continue
        p = cells.get((job, "pipekit"))
        if p and p.ok:
            out[job] = c.median - p.median  # type: ignore[operator]
    return out


def chart(cells: dict[tuple[str, str], Cell], jobs: list, order: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [j.key for j in jobs]
    names = [n for n in order if any((k, n) in cells and cells[(k, n)].ok for k in keys)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.9 + 0.55 * len(keys) * max(len(names), 1) / 2.2))
    h = 0.8 / max(len(names), 1)
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        ys = [j - 0.4 + h * (i + 0.5) for j in range(len(keys))]
        secs = [cells[(k, name)].median if (k, name) in cells and cells[(k, name)].ok else 0 for k in keys]
        mem = [(cells[(k, name)].peak_mib or 0) if (k, name) in cells and cells[(k, name)].ok else 0 for k in keys]
        ax1.barh(ys, secs, height=h, color=colors(i), label=name)
        ax2.barh(ys, mem, height=h, color=colors(i), label=name)
    for ax, title in ((ax1, "wall time, median (s, log scale)"), (ax2, "peak RSS of the process tree (MiB)")):
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels(keys)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    ax1.set_xscale("log")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
