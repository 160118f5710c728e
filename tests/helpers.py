"""Helpers shared by tests: write definitions, build an engine, read tables."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg

from pipekit_core.config import load_settings
from pipekit_core.engine import Engine

REPO = Path(__file__).resolve().parent.parent
PIPEKIT = str(Path(sys.executable).parent / "pipekit")


def write_defs(folder: Path, text: str, name: str = "defs.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(textwrap.dedent(text))
    return p


def env_for(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PIPEKIT_DEFS": str(tmp / "defs"),
        "PIPEKIT_DB": str(tmp / "pipekit.db"),
        "PIPEKIT_SECRETS": str(tmp / "secrets.env"),
    }
    env.update(extra or {})
    return env


def engine_for(tmp: Path, monkeypatch: Any, extra: dict[str, str] | None = None) -> Engine:
    for k, v in env_for(tmp, extra).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PIPEKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp)
    return Engine(settings=load_settings())


def run_cli(args: list[str], tmp: Path, extra: dict[str, str] | None = None, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PIPEKIT_CONFIG", None)
    env.update(env_for(tmp, extra))
    return subprocess.run([PIPEKIT, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def pg_rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as c:
        return list(c.execute(sql).fetchall())


def pg_exec(url: str, *stmts: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def sqlite_rows(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return list(con.execute(sql).fetchall())
    finally:
        con.close()


def sqlite_exec(path: Path, *stmts: str) -> None:
    con = sqlite3.connect(path)
    try:
        with con:
            for s in stmts:
                con.execute(s)
    finally:
        con.close()
