"""The example dg project (examples/dg_project) copied for a test, and what the dg tests read back."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from pipekit_core.demo import make_demo_data
from pipekit_core.repo import Repository
from tests.pipekit_dagster_tests.conftest import REPO, VENV_BIN

EXAMPLE = REPO / "examples" / "dg_project"
PACKAGE = "pipekit_example"
ERP = Path(PACKAGE) / "defs" / "erp_sync"


class Project:
    """A temp copy of the example dg project, its Dagster home and the environment for ``dg``."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPEKIT_", "DAGSTER_"))}
        self.env.update(DAGSTER_HOME=str(home), TERM="dumb", COLUMNS="250", NO_COLOR="1")

    def dg(self, *args: str, ok: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(VENV_BIN / "dg"), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if ok:
            assert proc.returncode == 0, f"dg {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc

    def list_defs(self) -> dict:
        return json.loads(self.dg("list", "defs", "--json").stdout)

    def python(self, code: str) -> object:
        """Run ``code`` with the venv's Python in the project folder (its package importable, as
        dg imports it); ``code`` prints one JSON document, returned parsed."""
        env = {**self.env, "PYTHONPATH": str(self.root)}
        proc = subprocess.run([str(VENV_BIN / "python"), "-W", "ignore", "-c", code], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"python failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def rows(self, db: Path, sql: str) -> list[tuple]:
        con = sqlite3.connect(self.root / db)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    @property
    def erp_dw(self) -> Path:
        return ERP / "module_defs" / "data" / "demo_dw.db"


def make_project(tmp_path: Path) -> Project:
    """The ``project`` fixture (conftest.py): a fresh copy of the example with its demo data."""
    root = tmp_path / "dg_project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "*.db", "*.db-*", "__pycache__", ".dagster_home"))
    make_demo_data(root / ERP / "module_defs" / "data")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return Project(root, home)


def _assets(listing: dict) -> dict[str, dict]:
    return {a["asset_key"]: a for a in listing["assets"]}


def _names(listing: dict, section: str) -> set[str]:
    return {item.get("name") or item.get("key") for item in listing.get(section) or []}


def _runs(db: Path) -> list[dict]:
    return Repository(db).history(limit=50)
