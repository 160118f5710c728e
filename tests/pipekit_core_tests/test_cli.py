"""The pipekit CLI as a user runs it (real subprocesses): init, validate, list, plan, history, unlock, doctor."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pipekit_core.config import load_settings
from pipekit_core.secrets import Secrets, redact, register_secret
from tests.helpers import run_cli, sqlite_exec, write_defs

GOOD = """
connections:
  src: {url: "jdbc:sqlite:src.db"}
  dst: {url: "jdbc:sqlite:dst.db"}
modules:
  - name: things
    source: src
    dest: dst
    dest_table: things
    query: SELECT id, name FROM things WHERE id > {after}
    strategy: append
    watermarks:
      - {name: after, sql: SELECT max(id) FROM things, default: '0'}
"""


def _setup(tmp: Path) -> None:
    write_defs(tmp / "defs", GOOD)
    sqlite_exec(tmp / "defs" / "src.db", "CREATE TABLE things (id integer, name text)", "INSERT INTO things VALUES (1, 'a'), (2, 'b')")


def test_help_on_every_command(tmp_path: Path) -> None:
    for cmd in ([], ["init"], ["validate"], ["list"], ["plan"], ["run"], ["history"], ["unlock"], ["doctor"], ["secrets"], ["secrets", "set"], ["secrets", "list"]):
        r = run_cli([*cmd, "--help"], tmp_path)
        assert r.returncode == 0 and "Usage:" in r.stdout, (cmd, r.stderr)


def test_init_validate_plan_run_history(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = run_cli(["init"], tmp_path)
    assert r.returncode == 0 and "schema version" in r.stdout and "1 modules" in r.stdout, r.stderr
    assert (tmp_path / "pipekit.db").exists()
    r = run_cli(["validate"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("OK: 1 modules")
    r = run_cli(["plan", "things"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "after = 0   (first-run default)" in r.stdout
    assert "WHERE id > 0" in r.stdout and "INSERT INTO" in r.stdout
    assert not (tmp_path / "defs" / "dst.db").exists() or sqlite3.connect(tmp_path / "defs" / "dst.db").execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'things'"
    ).fetchone() == (0,)
    r = run_cli(["run", "things"], tmp_path)
    assert r.returncode == 0 and "things: success: 2 staged" in r.stdout, r.stderr
    r = run_cli(["run", "things", "--dry-run"], tmp_path)
    assert r.returncode == 0 and "after = 2   (resolved)" in r.stdout
    r = run_cli(["history", "things"], tmp_path)
    assert "dry_run" in r.stdout and "success" in r.stdout
    r = run_cli(["list"], tmp_path)
    assert "things" in r.stdout and "append" in r.stdout and "dry_run" in r.stdout


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    _setup(tmp_path)
    for args, needle in (
        (["run", "thingz"], "unknown module 'thingz'"),
        (["plan", "things", "--watermark", "after=1'; drop table x; --"], "refused"),
        (["run", "things", "--watermark", "nope=1"], "unknown watermark"),
        (["run"], "give a MODULE or --group"),
    ):
        r = run_cli(args, tmp_path)
        assert r.returncode != 0
        assert needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout


def test_validate_reports_every_file(tmp_path: Path) -> None:
    write_defs(tmp_path / "defs", GOOD.replace("strategy: append", "strategy: apend"), "a.yaml")
    write_defs(tmp_path / "defs", "modules:\n  - name: x\n    source: nowhere\n    dest: dst\n    dest_table: t\n    query: SELECT 1\n", "b.yaml")
    (tmp_path / "defs" / "c.yml").write_text("modules: [\n")
    r = run_cli(["validate"], tmp_path)
    assert r.returncode == 1
    assert "a.yaml" in r.stdout and "strategy" in r.stdout
    assert "b.yaml" in r.stdout and "nowhere" in r.stdout
    assert "c.yml" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_unlock_clears_stale_lock(tmp_path: Path) -> None:
    _setup(tmp_path)
    from pipekit_core.repo import LockOwner, Repository

    repo = Repository(tmp_path / "pipekit.db")
    assert repo.acquire_lock("things", LockOwner(host="elsewhere", pid=1, run_id=None)).acquired
    r = run_cli(["run", "things"], tmp_path)
    assert r.returncode == 1 and "already running" in r.stderr and "elsewhere" in r.stderr
    r = run_cli(["unlock", "things"], tmp_path)
    assert r.returncode == 0 and "unlocked things" in r.stdout
    assert run_cli(["run", "things"], tmp_path).returncode == 0


def test_doctor(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = run_cli(["doctor"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok    connection 'src' (sqlite)" in r.stdout
    write_defs(tmp_path / "defs", GOOD.replace('{url: "jdbc:sqlite:dst.db"}', '{url: "jdbc:postgresql://127.0.0.1:1/x", password: $NOPE_PW}'))
    r = run_cli(["doctor"], tmp_path)
    assert r.returncode == 1
    assert "FAIL  secrets of connection 'dst'" in r.stdout and "$NOPE_PW is not set" in r.stdout


def test_config_file_and_env_precedence(tmp_path: Path) -> None:
    (tmp_path / "pipekit.yaml").write_text("defs: mydefs\ndatabase: state/p.db\ntransport: native\ntimezone: Europe/Berlin\n")
    s = load_settings(env={}, cwd=tmp_path)
    assert s.defs == (tmp_path / "mydefs").resolve() and s.database == (tmp_path / "state/p.db").resolve()
    assert s.transport == "native" and s.local_timezone() == "Europe/Berlin"
    s = load_settings(env={"PIPEKIT_DEFS": "/x/defs"}, cwd=tmp_path)
    assert str(s.defs) == "/x/defs"
    (tmp_path / "pipekit.yaml").write_text("defz: x\n")
    import pytest

    from pipekit_core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(env={}, cwd=tmp_path)


def test_secret_resolution_order_and_redaction(tmp_path: Path) -> None:
    f = tmp_path / "s.env"
    f.write_text("A_PW='from-file-123'\nB_PW=only-file-456\n")
    sec = Secrets(f, env={"A_PW": "from-env-789"})
    assert sec.resolve("$A_PW", where="x") == "from-env-789"
    assert sec.resolve("${B_PW}", where="x") == "only-file-456"
    assert sec.resolve("plain", where="x") == "plain"
    text = "failed: password=only-file-456 and from-env-789 -scp hunter22 postgresql://u:pw123@h/db"
    red = redact(text)
    for s in ("only-file-456", "from-env-789", "hunter22", "pw123"):
        assert s not in red
    register_secret("x9-long-secret")
    assert "x9-long-secret" not in redact("value x9-long-secret here")
    assert os.environ.get("A_PW") is None


def test_killed_run_is_not_left_running(tmp_path: Path) -> None:
    """SIGKILL mid-run: `pipekit history` alone already shows the dead run as error."""
    _setup(tmp_path)
    r = run_cli(["run", "things"], tmp_path, {"PIPEKIT_FAILPOINT": "after_staging_created:kill"})
    assert r.returncode == -9
    r = run_cli(["history", "things"], tmp_path)
    assert "running" not in r.stdout and "error" in r.stdout and "is gone" in r.stdout
    r = run_cli(["run", "things"], tmp_path)
    assert r.returncode == 0 and "took over a stale lock" in r.stdout, r.stdout + r.stderr
