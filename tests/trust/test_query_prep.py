"""§5: one function prepares a query for wrapping; a query ending in comments or semicolons runs
through every transport, and a text with two statements is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipekit_core.engine import run_module
from pipekit_core.errors import ConfigError
from pipekit_core.sql.query import prepare_for_wrapping, wrap_lines
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import REPO, engine_for, pg_exec, pg_rows, sqlite_exec, sqlite_rows, write_defs

STANDIN = str(REPO / "tests" / "jrunner_standin" / "jrunner")

ENDINGS = [
    "SELECT 1 AS a\n-- last line comment",
    "SELECT 1 AS a; -- done",
    "SELECT 1 AS a;\n\n  -- trailing\n /* and a block */ ;  \n",
    "SELECT 1 AS a /* block at the end */",
    "SELECT 1 AS a /* nested /* block */ still comment */;",
]


@pytest.mark.parametrize("sql", ENDINGS)
def test_trailing_comments_and_semicolons_are_removed(sql: str) -> None:
    assert prepare_for_wrapping(sql) == "SELECT 1 AS a"


@pytest.mark.parametrize("sql", [
    "SELECT ';' AS s, '--' AS d, '/*' AS b",
    'SELECT 1 AS "a;--b"',
    "SELECT E'it\\'s;' AS e",
    "SELECT $x$ ; -- $x$ AS q",
    "SELECT 'a''; --' AS s",
    "SELECT a[1] FROM t -- x;\nWHERE b = 1",
])
def test_literals_and_identifiers_are_left_alone(sql: str) -> None:
    assert prepare_for_wrapping(sql + " ; -- end") == sql


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "SELECT 1;\n-- c\nDELETE FROM t"])
def test_two_statements_are_refused(sql: str) -> None:
    with pytest.raises(ConfigError, match="more than one statement"):
        prepare_for_wrapping(sql)


@pytest.mark.parametrize("sql", ["", " ; -- nothing", "/* only */"])
def test_empty_is_refused(sql: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        prepare_for_wrapping(sql)


def test_unclosed_literal_is_refused() -> None:
    with pytest.raises(ConfigError, match="never closed"):
        prepare_for_wrapping("SELECT 'abc")


def test_wrap_puts_the_close_on_its_own_line() -> None:
    assert wrap_lines("COPY (", "SELECT 1 -- c", ") TO STDOUT") == "COPY (\nSELECT 1\n) TO STDOUT"


QUERY = "SELECT id, v FROM src; -- the whole table\n"


@pytest.mark.postgres
@pytest.mark.parametrize("pair", ["pg_pg_binary", "pg_pg_text", "pg_pg_jrunner", "pg_lite", "lite_pg", "lite_lite"])
def test_query_ending_in_comment_runs_everywhere(
    tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch, pair: str
) -> None:
    monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)
    pg_exec(pg_db, "CREATE TABLE src (id integer, v text)", "INSERT INTO src VALUES (1, 'a;--b'), (2, NULL)")
    lite_src, lite_dest = tmp_path / "s.db", tmp_path / "d.db"
    sqlite_exec(lite_src, "CREATE TABLE src (id INTEGER, v TEXT)", "INSERT INTO src VALUES (1, 'a;--b'), (2, NULL)")
    src = "lite" if pair.startswith("lite") else "pg"
    dest = "lite" if pair.endswith("lite") else "pg"
    extra = "    columns: [{source_name: id, dest_type: bigint}]\n" if pair == "pg_pg_text" else ""
    write_defs(tmp_path / "defs", f"""
connections:
  pg: {{url: "{jdbc_url(pg_db)}", user: pipekit, password: $PK_TEST_PW}}
  pg2: {{url: "{jdbc_url(pg_db2)}", user: pipekit, password: $PK_TEST_PW}}
  lite: {{url: "jdbc:sqlite:{lite_src}"}}
  lited: {{url: "jdbc:sqlite:{lite_dest}"}}
modules:
  - name: m
    source: {src}
    dest: {"lited" if dest == "lite" else "pg2"}
    dest_table: out
    transport: {"jrunner" if pair == "pg_pg_jrunner" else "native"}
    query: {QUERY!r}
{extra}""")
    assert run_module(engine_for(tmp_path, monkeypatch, {"PIPEKIT_JRUNNER": STANDIN}), "m").row_count == 2
    got = (sqlite_rows(lite_dest, "SELECT id, v FROM out ORDER BY id") if dest == "lite"
           else pg_rows(pg_db2, "SELECT id, v FROM out ORDER BY id"))
    assert got == [(1, "a;--b"), (2, None)]
