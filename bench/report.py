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


def ratio(
    cells: dict[tuple[str, str], Cell], job: str, contender: str, ref: str = "baseline"
) -> float | None:
    c, b = cells.get((job, contender)), cells.get((job, ref))
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
                    fmt(c.peak_mib, ".0f", "-"), fmt(ratio(cells, job.key, cname), ".2f", "-"),
                    fmt(ratio(cells, job.key, cname, "raw"), ".2f", "-"), str(len(c.seconds)),
                ])  # fmt: skip
            else:
                rows.append([job.key, cname, "n/a", "", "", "", "", "", f"0 ({(c.error or '')[:60]})"])
    return rows


HEADERS = [
    "job",
    "contender",
    "median s",
    "min-max s",
    "rows/s",
    "peak RSS MiB",
    "x baseline",
    "x raw",
    "runs",
]


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


def _size(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


def _ratio_target(
    cells: dict[tuple[str, str], Cell],
    name: str,
    job: str,
    contender: str,
    ref: str,
    limit: float,
    sizes: dict,
) -> Target:
    r = ratio(cells, job, contender, ref)
    c, b = cells.get((job, contender)), cells.get((job, ref))
    if r is None:
        why = [f"{x[0]} {'failed: ' + (x[1].error or '')[:80] if x[1].error else 'did not run'}"
               for x in ((contender, c), (ref, b)) if x[1] is not None and not x[1].ok]  # fmt: skip
        if c is None or b is None:
            why.append("job or contender not in this run")
        return Target(name, f"<= {limit:.2f}x", "not measured (" + "; ".join(why) + ")", None)
    assert c is not None and b is not None and c.median is not None and b.median is not None
    text = f"{r:.2f}x ({contender} {c.median:.2f} s / {ref} {b.median:.2f} s)"
    if sizes.get("note"):
        text += f" [{sizes['note']}]"
    return Target(name, f"<= {limit:.2f}x", text, r <= limit)


def evaluate_targets(
    cells: dict[tuple[str, str], Cell], extras: dict, sizes: dict | None = None
) -> list[Target]:
    """Issue 13's targets, each from this run's own figures (see the issue's "Targets" table)."""
    sizes = sizes or {}
    rows, big, mods = sizes.get("rows", 0), sizes.get("big", 0), sizes.get("group_modules", 50)
    small_note = {"note": f"at {_size(rows)} rows, not 1M"} if rows and rows < 1_000_000 else {}
    incr_rows = big or rows
    incr_note = {"note": f"at {_size(incr_rows)} rows, not 6M"} if incr_rows and incr_rows < 6_000_000 else {}
    out = [
        _ratio_target(cells, "native PG->PG full refresh, 1M rows (lineitem) vs raw single-write pipe",
                      "li_full", "pipekit", "raw", 1.10, small_note),
        _ratio_target(cells, f"native PG->PG full refresh, {_size(big) if big else '6M'} rows (lineitem) vs raw "
                      "single-write pipe", "li_full_big", "pipekit", "raw", 1.10, {}),
        _ratio_target(cells, "incremental 1% changed of 6M rows, composite key, vs baseline A (staging + merge, "
                      "primary key)", "li_incr", "pipekit", "baseline", 1.05, incr_note),
        _ratio_target(cells, "same incremental, first-run table created by pipekit, vs the same with the key "
                      "added by hand", "li_incr_new", "pipekit", "handkey", 1.05, incr_note),
        _ratio_target(cells, "SQLite->SQLite full 1M rows vs sqlite3 CLI ATTACH + INSERT ... SELECT",
                      "full_sqlite", "pipekit", "raw", 1.3, small_note),
        _ratio_target(cells, "pipekit run of a 100-row module, whole process, vs psql pipeline (baseline A)",
                      "small_pg", "pipekit", "baseline", 2.0, {}),
    ]  # fmt: skip
    g, p = cells.get(("group", "dagster")), cells.get(("group", "pipekit"))
    name = f"Dagster group job of {mods} small modules vs pipekit run --group of the same"
    if g and p and g.ok and p.ok:
        extra = (g.median - p.median) / max(mods, 1)  # type: ignore[operator]
        out.append(Target(name, "extra <= 0.15 s per module",
                          f"{extra:+.3f} s per module (dagster {g.median:.2f} s, pipekit {p.median:.2f} s)"
                          + ("" if mods == 50 else f" [{mods} modules, not 50]"), extra <= 0.15))  # fmt: skip
    else:
        why = "; ".join(f"{c.contender}: {(c.error or 'no run')[:80]}" for c in (g, p) if c and not c.ok)
        out.append(
            Target(name, "extra <= 0.15 s per module", f"not measured ({why or 'not in this run'})", None)
        )
    worsts = [
        (c.peak_max_mib, k) for (k, n), c in cells.items() if n == "pipekit" and c.ok and c.peak_max_mib
    ]
    if worsts:
        worst, wjob = max(worsts)  # type: ignore[type-var]
        out.append(Target("peak RSS of pipekit run, any job, any run", "< 100 MiB", f"{worst:.0f} MiB ({wjob})",
                          worst < 100))  # fmt: skip
    else:
        out.append(Target("peak RSS of pipekit run, any job, any run", "< 100 MiB", "not measured", None))
    a_ = cells.get(("li_full", "pipekit"))
    b_ = cells.get(("li_full_big", "pipekit"))
    pa, pb = (a_.peak_mib if a_ and a_.ok else None), (b_.peak_mib if b_ and b_.ok else None)
    flat = f"peak RSS of pipekit run flat: lineitem full refresh {_size(rows or 1_000_000)} vs {_size(big or 6_000_000)}"
    if pa is not None and pb is not None:
        out.append(
            Target(flat, "within 20 MiB", f"{pa:.0f} vs {pb:.0f} MiB ({pb - pa:+.0f})", abs(pb - pa) <= 20)
        )
    else:
        out.append(
            Target(flat, "within 20 MiB", "not measured" + (" (no --big job)" if not big else ""), None)
        )
    return out


def earlier_targets(cells: dict[tuple[str, str], Cell], extras: dict) -> list[Target]:
    """The first benchmark's checks (vs baseline A on the 12-column orders table), kept for comparison."""
    out: list[Target] = []
    r = ratio(cells, "full_pg", "pipekit")
    out.append(Target("pipekit run PG->PG full load (orders) vs baseline A", "<= 1.15x", ("not measured" if r is None else f"{r:.2f}x"),
                      None if r is None else r <= 1.15))  # fmt: skip
    r = ratio(cells, "incr_pg", "pipekit")
    out.append(Target("pipekit run PG->PG incremental (orders) vs baseline A", "<= 1.2x", ("not measured" if r is None else f"{r:.2f}x"),
                      None if r is None else r <= 1.2))  # fmt: skip
    ov = dagster_overhead(cells)
    small, big = ov.get("small_pg"), ov.get("full_pg")
    if small is not None and big is not None:
        rel = abs(big - small) / max(small, 1e-9)
        out.append(Target("Dagster overhead constant, 100 vs 1M rows (dagster - pipekit run)", "within 25%",
                          f"{small:.2f} s vs {big:.2f} s ({rel:.0%})", rel <= 0.25))  # fmt: skip
    cl = extras.get("codeloc")
    if cl:
        r = cl["1000"] / cl["10"]
        out.append(Target("code location import, 1,000 vs 10 modules", "<= 3x",
                          f"{cl['10']:.2f} s vs {cl['1000']:.2f} s ({r:.2f}x)", r <= 3))  # fmt: skip
    return out


def importtime_md(it: dict) -> list[str]:
    """The report's start-up section from importtime.measure()."""
    out = []
    for key, title in (
        ("imports", "loading the CLI and the engine"),
        ("run", "a whole `pipekit run` of 100 rows"),
    ):
        r = it.get(key)
        if not r:
            continue
        out += [
            f"- {title} (`{r['argv']}`): **{r['total_ms']:.0f} ms** of imports, {r['modules']} modules.",
            "  Top 10 modules (self ms): "
            + ", ".join(f"`{n}` {s:.1f}" for n, s, _ in r["top"]) + ".",
            "  Top 10 packages (sum of self ms): "
            + ", ".join(f"`{n}` {s:.0f}" for n, s in r["packages"]) + ".",
        ]  # fmt: skip
    return out


def dagster_overhead(cells: dict[tuple[str, str], Cell]) -> dict[str, float]:
    out = {}
    for (job, name), c in cells.items():
        if name != "dagster" or not c.ok or job == "group":  # the group: per module, in the targets
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
        mem = [
            (cells[(k, name)].peak_mib or 0) if (k, name) in cells and cells[(k, name)].ok else 0
            for k in keys
        ]
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
