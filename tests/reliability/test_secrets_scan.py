"""Secrets never leak: a distinctive password is grepped for in everything pipekit produces.

A real PostgreSQL role is created with a distinctive password, stored in the secrets file with
``pipekit secrets set`` and used by the connections. Then a representative set of commands runs
as the real ``pipekit`` command: successful runs (native and the jrunner stand-in), runs failing
with the password in the connection (a query error, a wrong password, a password written into
the URL as ``password=`` and as ``user:pass@``), a failing hook, a failing jrunner, a missing
secret, ``init``, ``validate``, ``list``, ``plan``, ``doctor``, ``history`` and ``history
--run-id`` for every run. Every stdout/stderr, every byte of the repository file (all tables,
free pages, the WAL), the stand-in's invocation log and the state folder are searched for the
password (and its URL-encoded form). ``pipekit secrets set/list`` file handling is checked too.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner

from pipekit_core.cli import main
from pipekit_core.secrets import Secrets
from tests.conftest import PG_ADMIN_URL, _url_for
from tests.helpers import PIPEKIT, REPO, env_for, pg_exec, pg_rows, write_defs

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.jrunner]

STANDIN = str(REPO / "tests" / "jrunner_standin" / "jrunner")
HOSTPORT = PG_ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]  # 127.0.0.1:54329


class Role:
    """A login role with a distinctive password that owns two fresh databases."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex
        self.name = f"pk_canary_{tag[:8]}"
        self.password = f"Cn4ry_{tag[8:20]}_S3cret!"
        self.wrong = f"Wr0ng_{tag[20:32]}_Pw!"
        self.src_db = f"sec_src_{tag[:8]}"
        self.dst_db = f"sec_dst_{tag[:8]}"

    def jdbc(self, db: str) -> str:
        return f"jdbc:postgresql://{HOSTPORT}/{db}"


@pytest.fixture
def role() -> Iterator[Role]:
    r = Role()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f"CREATE ROLE {r.name} LOGIN PASSWORD '{r.password}'")
        for db in (r.src_db, r.dst_db):
            c.execute(f'CREATE DATABASE "{db}" OWNER {r.name}')
    try:
        yield r
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            for db in (r.src_db, r.dst_db):
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            c.execute(f"DROP ROLE IF EXISTS {r.name}")


DEFS = """
connections:
  src:  {{url: "{src}", user: {role}, password: $PK_CANARY_PW}}
  dst:  {{url: "{dst}", user: {role}, password: $PK_CANARY_PW}}
  dst_wrong_pw:  {{url: "{dst}", user: {role}, password: $PK_WRONG_PW}}
  dst_missing:   {{url: "{dst}", user: {role}, password: $PK_NOT_SET_ANYWHERE}}
  dst_literal:   {{url: "{dst}", user: {role}, password: "{pw}"}}
  src_url_param: {{url: "jdbc:postgresql://{hostport}/no_such_db?user={role}&password={pw}"}}
  src_userinfo:  {{url: "postgresql://{role}:{pw_url}@{hostport}/no_such_db"}}
modules:
  - name: ok
    source: src
    dest: dst
    dest_table: ok_items
    strategy: incremental
    merge_key: [id]
    query: SELECT id, v FROM items WHERE id > {{since}}
    watermarks:
      - {{name: since, sql: SELECT max(id) FROM ok_items, default: '0'}}
    hooks:
      - {{sql: ANALYZE ok_items, run_on: success}}
  - name: ok_jr
    source: src
    dest: dst
    dest_table: jr_items
    transport: jrunner
    strategy: incremental
    merge_key: [id]
    query: SELECT id, v FROM items WHERE id > {{since}}
    watermarks:
      - {{name: since, sql: SELECT max(id) FROM items WHERE id < 0, connection: src, default: '0'}}
  - name: jr_fail
    source: src
    dest: dst
    dest_table: jr_fail
    transport: jrunner
    query: SELECT id, v FROM items
  - name: bad_query
    source: src
    dest: dst
    dest_table: bad_query
    query: SELECT id FROM no_such_table
  - name: bad_hook
    source: src
    dest: dst
    dest_table: bad_hook
    query: SELECT id, v FROM items
    hooks:
      - {{name: divide, sql: SELECT 1/0, run_on: success}}
      - {{name: on_failure, sql: SELECT no_such_function(), run_on: failure}}
  - name: wrong_pw
    source: src
    dest: dst_wrong_pw
    dest_table: wrong_pw
    query: SELECT id FROM items
  - name: missing_secret
    source: src
    dest: dst_missing
    dest_table: missing_secret
    query: SELECT id FROM items
  - name: literal_pw
    source: src
    dest: dst_literal
    dest_table: literal_pw
    query: SELECT id, v FROM items
  - name: url_param_pw
    source: src_url_param
    dest: dst
    dest_table: url_param_pw
    query: SELECT 1 AS x
  - name: userinfo_pw
    source: src_userinfo
    dest: dst
    dest_table: userinfo_pw
    query: SELECT 1 AS x
"""


def test_no_secret_value_anywhere(role: Role, tmp_path: Path) -> None:
    src_url = _url_for(role.src_db)
    pg_exec(src_url, "CREATE TABLE items (id integer PRIMARY KEY, v text)",
            "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 50) g",
            f"ALTER TABLE items OWNER TO {role.name}")
    write_defs(tmp_path / "defs", DEFS.format(
        src=role.jdbc(role.src_db), dst=role.jdbc(role.dst_db), role=role.name, pw=role.password,
        pw_url=quote(role.password, safe=""), hostport=HOSTPORT))
    jr_log = tmp_path / "jrunner.log"
    base_env = {"PIPEKIT_JRUNNER": STANDIN, "JRUNNER_STANDIN_LOG": str(jr_log), "PATH": os.environ["PATH"]}
    outputs: list[tuple[str, str]] = []

    def cli(*args: str, code: int | None = 0, extra: dict[str, str] | None = None, stdin: str | None = None) -> str:
        env = {**os.environ, **env_for(tmp_path), **base_env, **(extra or {})}
        env.pop("PIPEKIT_CONFIG", None)
        env.pop("PK_CANARY_PW", None)
        res = subprocess.run([PIPEKIT, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120, input=stdin)
        text = res.stdout + res.stderr
        outputs.append((" ".join(args), text))
        assert "Traceback" not in text, text
        if code is not None:
            assert res.returncode == code, f"pipekit {' '.join(args)} -> {res.returncode}\n{text}"
        return text

    # The secrets go in with the CLI, as a user would.
    assert "set PK_CANARY_PW" in cli("secrets", "set", "PK_CANARY_PW", role.password)
    cli("secrets", "set", "PK_WRONG_PW", role.wrong)
    assert cli("secrets", "list").split() == ["PK_CANARY_PW", "PK_WRONG_PW"]
    cli("init")
    cli("validate")
    cli("list")
    assert "SELECT id, v FROM items WHERE id > 0" in cli("plan", "ok")

    assert "ok: success" in cli("run", "ok")
    assert "ok_jr: success" in cli("run", "ok_jr")
    assert pg_rows(_url_for(role.dst_db), "SELECT count(*) FROM jr_items") == [(50,)]

    out = cli("run", "jr_fail", code=1, extra={"JRUNNER_STANDIN_FAIL_AFTER": "0"})
    assert "jrunner failed" in out and "-dcp ***" in out and "-scp ***" in out
    assert "no_such_table" in cli("run", "bad_query", code=1)
    out = cli("run", "bad_hook", code=1)
    assert "divide failed" in out and "division by zero" in out and "no_such_function" in out
    assert "password authentication failed" in cli("run", "wrong_pw", code=1)
    assert "$PK_NOT_SET_ANYWHERE is not set" in cli("run", "missing_secret", code=1)
    assert "literal_pw: success" in cli("run", "literal_pw")
    out = cli("run", "url_param_pw", code=1)
    assert "password=***" in out and "no_such_db" in out
    out = cli("run", "userinfo_pw", code=1)
    assert f"{role.name}:***@" in out and "no_such_db" in out
    # cancelled by a hang + timeout would add nothing new; a second successful run resolves the
    # watermark on the destination with the password.
    assert "watermark since = 50 (resolved)" in cli("run", "ok")

    out = cli("doctor", code=1)  # the broken connections fail, the others answer
    assert "ok    connection 'src'" in out and "FAIL  connection 'dst_wrong_pw'" in out
    assert "FAIL  secrets of connection 'dst_missing'" in out
    hist = cli("history", "-n", "100")
    run_ids = [int(line.split()[0]) for line in hist.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert len(run_ids) >= 11, hist
    for rid in run_ids:
        cli("history", "--run-id", str(rid))
    cli("history", "bad_hook")

    secrets = {"password": role.password, "wrong password": role.wrong}
    forms = {f"{label} ({how})": v for label, s in secrets.items()
             for how, v in (("as is", s), ("url-encoded", quote(s, safe="")))}

    def scan(what: str, data: bytes) -> None:
        for label, value in forms.items():
            assert value.encode() not in data, f"{label} found in {what}"

    for label, text in outputs:
        scan(f"the output of 'pipekit {label}'", text.encode())
    db = tmp_path / "pipekit.db"
    files = [p for p in tmp_path.glob("pipekit.db*")] + [p for p in (tmp_path / ".pipekit-state").rglob("*") if p.is_file()]
    assert db in files
    for p in files:
        scan(str(p), p.read_bytes())
    # every table, every column, as text (not only what the CLI chooses to show)
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"run_log", "connections", "modules"} <= set(tables)
        dump = "\n".join(con.iterdump())
        n_runs = con.execute("SELECT count(*) FROM run_log").fetchone()[0]
    finally:
        con.close()
    assert n_runs == len(run_ids)
    scan("the repository's SQL dump", dump.encode())
    log = jr_log.read_bytes()
    assert log.count(b"\n") >= 4 and b'"-scp", "***"' in log  # the stand-in ran, with passwords masked
    scan("the jrunner stand-in log", log)
    # and the secrets file is the one place that does hold it
    assert role.password.encode() in (tmp_path / "secrets.env").read_bytes()


def test_secrets_set_permissions_and_list(tmp_path: Path) -> None:
    env = {**env_for(tmp_path), "PIPEKIT_CONFIG": None}
    runner = CliRunner()
    path = tmp_path / "secrets.env"

    res = runner.invoke(main, ["secrets", "list"], env=env)  # type: ignore[arg-type]
    assert res.exit_code == 0 and "no secrets file" in res.output

    res = runner.invoke(main, ["secrets", "set", "DB_PW", "first-Value_123"], env=env)  # type: ignore[arg-type]
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # created private, whatever the umask
    assert "first-Value_123" not in res.output

    path.chmod(0o640)  # the admin chose group-readable: kept on every later write
    for key, value in [("OTHER", "two"), ("DB_PW", "replaced-Value_456")]:
        res = runner.invoke(main, ["secrets", "set", key, value], env=env)  # type: ignore[arg-type]
        assert res.exit_code == 0 and value not in res.output, res.output
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    res = runner.invoke(main, ["secrets", "set", "PROMPTED"], env=env, input="hidden-Value_789\nhidden-Value_789\n")  # type: ignore[arg-type]
    assert res.exit_code == 0 and "hidden-Value_789" not in res.output, res.output

    res = runner.invoke(main, ["secrets", "list"], env=env)  # type: ignore[arg-type]
    assert res.exit_code == 0
    assert res.output.split() == ["DB_PW", "OTHER", "PROMPTED"]
    for v in ("first-Value_123", "replaced-Value_456", "two", "hidden-Value_789"):
        assert v not in res.output
    text = path.read_text()
    assert "first-Value_123" not in text and text.count("DB_PW=") == 1  # replaced, not appended

    sec = Secrets(path, env={})
    assert sec.resolve("$DB_PW", where="t") == "replaced-Value_456"
    assert sec.resolve("$PROMPTED", where="t") == "hidden-Value_789"

    bad = runner.invoke(main, ["secrets", "set", "not a key", "x"], env=env)  # type: ignore[arg-type]
    assert bad.exit_code == 1 and "letters, digits and underscores" in bad.output


@pytest.mark.parametrize("value", ["it's", "back\\slash", "$HOME", "${HOME}", "#not a comment", " spaced ", 'd"q', "a=b", "ünï"])
def test_secret_values_round_trip_exactly(value: str, tmp_path: Path) -> None:
    """What `secrets set` writes is what `$VAR` resolves to: no quoting, interpolation or comment surprises."""
    path = tmp_path / "s.env"
    Secrets(path, env={}).set("K", value)
    Secrets(path, env={}).set("AFTER", "x")
    assert Secrets(path, env={}).resolve("$K", where="t") == value
    assert Secrets(path, env={}).resolve("${AFTER}", where="t") == "x"
