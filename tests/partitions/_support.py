"""A partitioned module on real databases: source table ``orders`` on PostgreSQL (or SQLite), the
destination a PostgreSQL database or a SQLite file, the ``pipekit`` CLI in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipekit_core.repo import Repository
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import pg_exec, pg_rows, run_cli, sqlite_exec, sqlite_rows, write_defs

START = dt.date(2024, 1, 1)
DAYS = 120  # orders on 2024-01-01 .. 2024-04-29, 10 a day


@dataclass
class Site:
    """Where the rows are: ``kind`` postgresql (``url``) or sqlite (``path``)."""

    kind: str
    url: str = ""
    path: Path | None = None

    @property
    def yaml(self) -> str:
        if self.kind == "postgresql":
            return f"url: {jdbc_url(self.url)}\n    user: pipekit\n    password: $PK_TEST_PW"
        return f"url: sqlite:{self.path}"

    def exec(self, *stmts: str) -> None:
        if self.kind == "postgresql":
            pg_exec(self.url, *stmts)
        else:
            assert self.path is not None
            sqlite_exec(self.path, *stmts)

    def rows(self, sql: str) -> list[tuple]:
        if self.kind == "postgresql":
            return pg_rows(self.url, sql)
        assert self.path is not None
        return sqlite_rows(self.path, sql)


def site(kind: str, tmp: Path, url: str, name: str) -> Site:
    return Site("postgresql", url=url) if kind == "postgresql" else Site("sqlite", path=tmp / f"{name}.db")


def seed_orders(src: Site, *, days: int = DAYS, per_day: int = 10, ts: bool = False) -> None:
    """``orders(id, d, amt)``: ``per_day`` orders a day from 2024-01-01; ``d`` is a date, or a
    timestamptz at 12:00 UTC when ``ts``."""
    col = ("timestamptz" if ts else "date") if src.kind == "postgresql" else ("TIMESTAMP" if ts else "DATE")
    src.exec(f"CREATE TABLE orders (id integer, d {col}, amt integer)")
    rows = []
    for i in range(days * per_day):
        day = START + dt.timedelta(days=i // per_day)
        rows.append(f"({i + 1}, '{day.isoformat()}{' 12:00:00+00:00' if ts else ''}', {i})")
    for chunk in range(0, len(rows), 500):
        src.exec("INSERT INTO orders VALUES " + ", ".join(rows[chunk:chunk + 500]))


class Project:
    """A definitions folder with connections ``src`` and ``dst``, and the CLI to run it."""

    def __init__(self, tmp: Path, src: Site, dst: Site) -> None:
        self.tmp, self.src, self.dst = tmp, src, dst
        self.env: dict[str, str] = {}  # more environment for the CLI (PIPEKIT_JRUNNER, ...)

    def write(self, modules: str, settings: str = "") -> None:
        head = f"connections:\n  src:\n    {self.src.yaml}\n  dst:\n    {self.dst.yaml}\nmodules:\n"
        write_defs(self.tmp / "defs", head + textwrap.indent(textwrap.dedent(modules).strip("\n"), "  ") + "\n")
        # The timezone setting is the partitions' default zone: fixed here, whatever the machine's is.
        (self.tmp / "pipekit.yaml").write_text(textwrap.dedent(settings) if settings else "timezone: UTC\n")

    def run(self, *args: str, failpoint: str | None = None, timeout: float = 180) -> Any:
        extra = {"PK_TEST_PW": PG_PASSWORD, **self.env}  # (a pipekit.yaml in tmp is found: the CLI runs there)
        if failpoint:
            extra["PIPEKIT_FAILPOINT"] = failpoint
        return run_cli(list(args), self.tmp, extra, timeout=timeout)

    def history(self, module: str) -> list[dict]:
        runs = Repository(self.tmp / "pipekit.db").history(module, 100)
        return sorted(runs, key=lambda r: r["id"])


def window_module(name: str = "m", *, strategy: str = "window", extra: str = "", query: str | None = None,
                  partitions: str = "{every: day, start: '2024-01-01', column: d}") -> str:
    q = query or "SELECT id, d, amt FROM orders WHERE d >= '{window_start}' AND d < '{window_end}'"
    text = f"""
    - name: {name}
      source: src
      dest: dst
      dest_table: {name}_t
      strategy: {strategy}
      partitions: {partitions}
      query: "{q}"
    """
    out = textwrap.dedent(text).strip("\n") + "\n"
    if extra.strip():
        out += textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n"
    return out


def options(run: dict) -> dict:
    o = run.get("options")
    return json.loads(o) if isinstance(o, str) else (o or {})
