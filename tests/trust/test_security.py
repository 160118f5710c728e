"""Issue 10 §6: the repository file is owner-only and URL passwords never leak."""

from __future__ import annotations

import stat
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipekit_core.db import Endpoint
from pipekit_core.models import Connection
from pipekit_core.repo import Repository
from pipekit_core.secrets import redact

# printable passwords, at least 4 characters, not trivially found in the rest of the URL text
passwords = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation,
                    min_size=4, max_size=24).filter(
    lambda p: p.strip() == p and "@" not in p[-1:] and not any(
        p in u for u in ("postgresql://user:@db.example:5432/app", "jdbc:postgresql://h/db?user=u&password=",
                            "jdbc:sqlserver://h:1433;databaseName=d;password=",
                            "postgresql://user:***@db.example:54x/app connection 'dw'",
                            "connection 'dw': the port in its URL is not a number; write host:port with a "
                            "numeric port (the URL is not shown: it may hold a password)"))
)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_repository_file_and_wal_are_owner_only(tmp_path: Path) -> None:
    import os
    old = os.umask(0o022)
    try:
        repo = Repository(tmp_path / "pipekit.db")
        repo.migrate()
        with repo._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE IF NOT EXISTS t_probe (x)")
            con.execute("INSERT INTO t_probe VALUES (1)")
            con.execute("COMMIT")
        assert _mode(repo.path) == 0o600
        for suffix in ("-wal", "-shm"):
            side = Path(str(repo.path) + suffix)
            if side.exists():
                assert _mode(side) & 0o077 == 0, suffix
        con.close()
    finally:
        os.umask(old)


def test_existing_repository_file_is_tightened(tmp_path: Path) -> None:
    p = tmp_path / "pipekit.db"
    p.touch(mode=0o644)
    p.chmod(0o644)
    Repository(p).migrate()
    assert _mode(p) == 0o600


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(pw=passwords)
def test_url_password_is_masked_by_redact(pw: str) -> None:
    for url in (f"postgresql://user:{pw}@db.example:5432/app",
                f"jdbc:postgresql://user:{pw}@db.example/app"):
        assert pw not in redact(url), url
    if not any(c in pw for c in "&; "):
        assert pw not in redact(f"jdbc:postgresql://h/db?user=u&password={pw}")
        assert pw not in redact(f"jdbc:sqlserver://h:1433;databaseName=d;password={pw}")


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(pw=passwords)
def test_bad_port_error_never_holds_the_password(pw: str) -> None:
    pw = pw.replace("?", "!")  # a '?' starts the query string: such a password must be %-encoded
    ep = Endpoint(Connection(url=f"postgresql://user:{pw}@db.example:54x/app", name="dw"), None, None)
    with pytest.raises(ValueError) as ei:
        ep.pg_params()
    assert pw not in str(ei.value)
    assert "dw" in str(ei.value)


def test_password_with_slash_is_parsed_not_taken_for_a_port() -> None:
    ep = Endpoint(Connection(url="postgresql://user:pa/ss:w@db.example:6000/app", name="dw"), None, None)
    params = ep.pg_params()
    assert (params["user"], params["password"], params["host"], params["port"], params["dbname"]) == (
        "user", "pa/ss:w", "db.example", 6000, "app")
    enc = Endpoint(Connection(url=f"postgresql://user:{quote('a@b/c', safe='')}@h/app", name="dw"), None, None)
    assert enc.pg_params()["password"] == "a@b/c"


@dataclass
class _Cat:
    connections: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)

    def group_of(self, name: str) -> str | None:
        return None


def test_catalog_never_stores_a_url_password(tmp_path: Path) -> None:
    pw = "pa/ss:w0rd;x"
    repo = Repository(tmp_path / "pipekit.db")
    repo.migrate()
    repo.sync_catalog(_Cat(connections={
        "dw": Connection(url=f"postgresql://user:{pw}@db.example:5432/app", name="dw")}))
    with repo._connect() as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("pipekit.db"))
    assert pw.encode() not in data
    assert b"pa/ss" not in data


@pytest.mark.parametrize("command", [["list"], ["doctor"], ["validate"], ["plan", "m"], ["run", "m"]])
def test_cli_output_never_shows_a_url_password(command: list[str], tmp_path: Path) -> None:
    """The password sits in the URL (user:pa/ss@host, and a password= parameter); every output line masks it."""
    import subprocess
    import textwrap

    from tests.helpers import PIPEKIT, env_for, write_defs

    secret, other = "pa/ss:w@rd;7", "Qz9-other-Secret"
    write_defs(tmp_path / "defs", textwrap.dedent(f"""
        connections:
          src: {{url: "jdbc:postgresql://etl:{secret}@127.0.0.1:1/db?password={other}"}}
          dst: {{url: "jdbc:sqlite:{tmp_path}/dst.db"}}
        modules:
          - {{name: m, source: src, dest: dst, dest_table: m, query: SELECT 1 AS x}}
        """))
    r = subprocess.run([PIPEKIT, *command], cwd=tmp_path, env=env_for(tmp_path, {}), capture_output=True,
                       text=True, timeout=60)
    out = r.stdout + r.stderr
    assert out.strip(), command
    for leak in (secret, other, "pa/ss", "w@rd"):
        assert leak not in out, (command, out)
    for f in tmp_path.glob("pipekit.db*"):  # the repository and its -wal / -shm
        assert secret.encode() not in f.read_bytes() and other.encode() not in f.read_bytes(), f
