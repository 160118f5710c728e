"""Schema changes are a policy (``schema_change:``), never a silent NULL: real PostgreSQL and SQLite
destinations through the real engine, the ``pipekit plan`` CLI and the ``no_schema_drift`` check."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from pipekit_core.engine import run_module
from pipekit_core.errors import PhaseError
from pipekit_core.sql.types import widening
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.helpers import engine_for, pg_exec, pg_rows, run_cli, sqlite_exec, sqlite_rows, write_defs
from tests.pipekit_dagster_tests.conftest import PipekitEnv, dagster_home, demo, instance  # noqa: F401

pytestmark = pytest.mark.postgres


def _defs(tmp: Path, src: str, dst: str, query: str, extra: str = "", columns: str = "") -> None:
    text = textwrap.dedent(
        f"""
        connections:
          src: {{url: '{src}', user: pipekit, password: $PK_TEST_PW}}
          dst: {{url: '{dst}', user: pipekit, password: $PK_TEST_PW}}
        modules:
          - name: m
            source: src
            dest: dst
            dest_table: m
            strategy: full
            query: "{query}"
        """
    )
    write_defs(tmp / "defs", text + textwrap.indent(textwrap.dedent(extra + columns), "    "))


class Env:
    """Module m copies PostgreSQL table t into m on a PostgreSQL or SQLite destination."""

    def __init__(self, kind: str, tmp: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind, self.tmp, self.src, self.monkeypatch = kind, tmp, pg_db, monkeypatch
        self.dst: object = pg_db2 if kind == "postgresql" else tmp / "dst.db"
        self.dst_jdbc = jdbc_url(pg_db2) if kind == "postgresql" else f"jdbc:sqlite:{tmp}/dst.db"
        monkeypatch.setenv("PK_TEST_PW", PG_PASSWORD)

    def module(self, query: str, extra: str = "") -> None:
        _defs(self.tmp, jdbc_url(self.src), self.dst_jdbc, query, extra)

    def run(self) -> object:
        return run_module(engine_for(self.tmp, self.monkeypatch), "m")

    def rows(self, sql: str) -> list[tuple]:
        if isinstance(self.dst, Path):
            return sqlite_rows(self.dst, sql)
        return pg_rows(self.dst, sql)  # type: ignore[arg-type]

    def exec(self, *stmts: str) -> None:
        if isinstance(self.dst, Path):
            sqlite_exec(self.dst, *stmts)
        else:
            pg_exec(self.dst, *stmts)  # type: ignore[arg-type]

    def columns(self) -> list[str]:
        if isinstance(self.dst, Path):
            return [r[1] for r in self.rows("PRAGMA table_info(m)")]
        return [r[0] for r in self.rows("SELECT column_name FROM information_schema.columns WHERE table_name = 'm' ORDER BY ordinal_position")]

    def types(self) -> dict[str, str]:
        return dict(self.rows("SELECT column_name, data_type || coalesce('(' || character_maximum_length || ')', '') "
                              "FROM information_schema.columns WHERE table_name = 'm'"))


@pytest.fixture(params=["postgresql", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch) -> Env:
    e = Env(request.param, tmp_path, pg_db, pg_db2, monkeypatch)
    pg_exec(pg_db, "CREATE TABLE t (id int PRIMARY KEY, a text, b text)", "INSERT INTO t VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2')")
    e.module("SELECT id, a, b FROM t")
    assert e.run().status == "success"  # type: ignore[attr-defined]
    return e


BEFORE = [(1, "a1", "b1"), (2, "a2", "b2")]


def test_dropped_source_column_fails_before_the_merge_and_leaves_the_table(env: Env) -> None:
    pg_exec(env.src, "UPDATE t SET a = 'new'")
    env.module("SELECT id, a FROM t")
    with pytest.raises(PhaseError) as err:
        env.run()
    msg = str(err.value)
    assert "module 'm'" in msg and "['b']" in msg and "missing_column: fill" in msg and "m differ" in msg
    assert "resolve" in msg  # refused at plan time, before staging and the merge
    assert sorted(env.rows("SELECT id, a, b FROM m")) == BEFORE


def test_fill_sets_the_unfed_column_null_when_opted_in(env: Env) -> None:
    pg_exec(env.src, "UPDATE t SET a = 'new'")
    env.module("SELECT id, a FROM t", "schema_change: {missing_column: fill}\n")
    assert env.run().status == "success"  # type: ignore[attr-defined]
    assert sorted(env.rows("SELECT id, a, b FROM m")) == [(1, "new", None), (2, "new", None)]


def test_fill_still_fails_on_a_not_null_column_without_default(env: Env) -> None:
    if env.kind == "sqlite":
        env.exec("DROP TABLE m", "CREATE TABLE m (id INTEGER, a TEXT, b TEXT NOT NULL)", "INSERT INTO m VALUES (1, 'x', 'y')")
    else:
        env.exec("ALTER TABLE m ALTER COLUMN b SET NOT NULL")
    env.module("SELECT id, a FROM t", "schema_change: {missing_column: fill}\n")
    with pytest.raises(PhaseError, match=r"\bb\b"):
        env.run()
    assert len(env.rows("SELECT * FROM m WHERE b IS NOT NULL")) >= 1


def test_new_source_column_is_added_and_merged_by_default(env: Env) -> None:
    pg_exec(env.src, "ALTER TABLE t ADD COLUMN c int", "UPDATE t SET c = id * 10")
    env.module("SELECT id, a, b, c FROM t")
    r = env.run()
    assert r.status == "success"  # type: ignore[attr-defined]
    assert env.columns() == ["id", "a", "b", "c"]
    assert sorted(env.rows("SELECT id, c FROM m")) == [(1, 10), (2, 20)]


def test_new_column_fail_refuses_and_ignore_keeps_the_old_behaviour(env: Env) -> None:
    pg_exec(env.src, "ALTER TABLE t ADD COLUMN c int", "UPDATE t SET c = 1, a = 'new'")
    env.module("SELECT id, a, b, c FROM t", "schema_change: {new_column: fail}\n")
    with pytest.raises(PhaseError, match=r"column\(s\) c \(.*new_column: fail"):
        env.run()
    assert env.columns() == ["id", "a", "b"] and sorted(env.rows("SELECT id, a, b FROM m")) == BEFORE
    env.module("SELECT id, a, b, c FROM t", "schema_change: {new_column: ignore}\n")
    assert env.run().status == "success"  # type: ignore[attr-defined]
    assert env.columns() == ["id", "a", "b"] and sorted(env.rows("SELECT a FROM m")) == [("new",), ("new",)]


def test_strict_shorthand_refuses_every_change(env: Env) -> None:
    pg_exec(env.src, "ALTER TABLE t ADD COLUMN c int")
    env.module("SELECT id, a, c FROM t", "schema_change: strict\n")
    with pytest.raises(PhaseError) as err:
        env.run()
    assert "new_column: fail" in str(err.value) and "['b']" in str(err.value)
    assert env.columns() == ["id", "a", "b"]


def test_sqlite_names_compare_case_insensitively(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    e = Env("sqlite", tmp_path, pg_db, pg_db, monkeypatch)
    pg_exec(pg_db, "CREATE TABLE t (id int, a text)", "INSERT INTO t VALUES (1, 'x')")
    sqlite_exec(tmp_path / "dst.db", 'CREATE TABLE m ("ID" INTEGER, "A" TEXT)')
    e.module("SELECT id, a FROM t")
    assert e.run().status == "success"  # type: ignore[attr-defined]
    assert e.rows("SELECT * FROM m") == [(1, "x")]


@pytest.fixture
def pgenv(tmp_path: Path, pg_db: str, pg_db2: str, monkeypatch: pytest.MonkeyPatch) -> Env:
    e = Env("postgresql", tmp_path, pg_db, pg_db2, monkeypatch)
    pg_exec(pg_db, "CREATE TABLE t (id int, n int, s varchar(10), p numeric(8,2))", "INSERT INTO t VALUES (1, 5, 'short', 1.25)")
    e.module("SELECT id, n, s, p FROM t")
    assert e.run().status == "success"  # type: ignore[attr-defined]
    assert e.types() == {"id": "integer", "n": "integer", "s": "character varying(10)", "p": "numeric"}
    return e


def test_widened_types_are_altered_in_the_merge_and_merged(pgenv: Env) -> None:
    pg_exec(pgenv.src, "ALTER TABLE t ALTER COLUMN n TYPE bigint", "ALTER TABLE t ALTER COLUMN s TYPE varchar(50)",
            "ALTER TABLE t ALTER COLUMN p TYPE numeric(12,4)",
            "INSERT INTO t VALUES (2, 9000000000, 'a much longer text value', 12345678.1234)")
    pgenv.run()
    assert pgenv.types() == {"id": "integer", "n": "bigint", "s": "character varying(50)", "p": "numeric"}
    assert pgenv.rows("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'm'::regclass AND attname = 'p'") == [("numeric(12,4)",)]
    assert sorted(pgenv.rows("SELECT id, n, s, p::text FROM m")) == [
        (1, 5, "short", "1.2500"), (2, 9_000_000_000, "a much longer text value", "12345678.1234")]


def test_widen_fail_refuses_and_names_the_types(pgenv: Env) -> None:
    pg_exec(pgenv.src, "ALTER TABLE t ALTER COLUMN n TYPE bigint")
    pgenv.module("SELECT id, n, s, p FROM t", "schema_change: {widen: fail}\n")
    with pytest.raises(PhaseError, match=r"'n' is integer in the destination and bigint.*widen: fail"):
        pgenv.run()
    assert pgenv.types()["n"] == "integer"


def test_a_lossy_change_fails_naming_the_column_and_the_hint(pgenv: Env) -> None:
    pg_exec(pgenv.src, "ALTER TABLE t ALTER COLUMN n TYPE text")
    with pytest.raises(PhaseError, match=r"'n' \(destination integer, module text\).*columns: dest_type"):
        pgenv.run()
    assert pgenv.types()["n"] == "integer" and pgenv.rows("SELECT n FROM m") == [(5,)]


def test_declaring_a_narrower_type_than_the_destination_is_no_change(pgenv: Env) -> None:
    """The destination's bigint holds every value of the declared integer: merged, not altered."""
    pgenv.exec("ALTER TABLE m ALTER COLUMN n TYPE bigint")
    pgenv.module("SELECT id, n, s, p FROM t", "columns:\n  - {source_name: n, dest_type: integer}\n")
    assert pgenv.run().status == "success"  # type: ignore[attr-defined]
    assert pgenv.types()["n"] == "bigint"


def test_a_wider_destination_type_is_no_change(pgenv: Env) -> None:
    pgenv.exec("ALTER TABLE m ALTER COLUMN n TYPE bigint", "ALTER TABLE m ALTER COLUMN s TYPE text")
    assert pgenv.run().status == "success"  # type: ignore[attr-defined]
    assert pgenv.types()["n"] == "bigint" and pgenv.types()["s"] == "text"


def test_plan_shows_what_would_change_and_the_refusal(pgenv: Env) -> None:
    pg_exec(pgenv.src, "ALTER TABLE t ALTER COLUMN n TYPE bigint", "ALTER TABLE t ADD COLUMN c date")
    pgenv.module("SELECT id, n, s, p, c FROM t")
    env = {"PK_TEST_PW": PG_PASSWORD}
    out = run_cli(["plan", "m"], pgenv.tmp, env)
    assert out.returncode == 0, out.stderr
    assert "add column c date" in out.stdout and "widen column n: integer -> bigint" in out.stdout
    assert 'ALTER TABLE "m" ADD COLUMN "c" date;' in out.stdout
    assert 'ALTER TABLE "m" ALTER COLUMN "n" TYPE bigint;' in out.stdout
    assert pgenv.types()["n"] == "integer"  # plan moves nothing
    pgenv.module("SELECT id, n FROM t")
    out = run_cli(["plan", "m"], pgenv.tmp, env)
    assert out.returncode == 1 and "['s', 'p']" in out.stdout + out.stderr


def test_widening_rule() -> None:
    pg = "postgresql"
    assert widening("integer", "bigint", pg) == "lossless" and widening("bigint", "integer", pg) == "lossy"
    assert widening("character varying(10)", "varchar(50)", pg) == "lossless"
    assert widening("varchar(50)", "character varying(10)", pg) == "lossy"
    assert widening("numeric(10,2)", "numeric(12,4)", pg) == "lossless" and widening("numeric(10,2)", "numeric(10,4)", pg) == "lossy"
    assert widening("real", "double precision", pg) == "lossless" and widening("character(3)", "text", pg) == "lossless"
    assert widening("text", "integer", pg) == "lossy" and widening("timestamp with time zone", "timestamptz", pg) == "same"
    assert widening("my_enum", "text", pg) == "same" and widening("INTEGER", "TEXT", "sqlite") == "same"


def test_no_schema_drift_reports_both_directions(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:  # noqa: F811
    from pipekit_dagster import build_definitions
    from tests.pipekit_dagster_tests.test_schedules_sensors_checks import _run_checks

    defs = build_definitions()
    defs.resolve_job_def("orders_job").execute_in_process(instance=instance)
    key = dg.AssetCheckKey(dg.AssetKey("orders"), "no_schema_drift")
    assert _run_checks(defs, instance, key)["no_schema_drift"].passed  # type: ignore[attr-defined]
    demo.dw_execute("ALTER TABLE orders ADD COLUMN legacy_note TEXT")
    s = _run_checks(defs, instance, key)["no_schema_drift"]
    assert not s.passed and "legacy_note" in (s.description or "")  # type: ignore[attr-defined]
    assert s.metadata["pipekit/not_in_source"].value == ["legacy_note"]  # type: ignore[attr-defined]
    demo.dw_execute("ALTER TABLE orders DROP COLUMN legacy_note")
    demo.dw_execute("ALTER TABLE orders DROP COLUMN status")
    s = _run_checks(defs, instance, key)["no_schema_drift"]
    assert not s.passed and s.metadata["pipekit/missing_in_destination"].value == ["status"]  # type: ignore[attr-defined]


def test_holds_and_time_precision() -> None:
    from pipekit_core.sql.types import holds

    pg = "postgresql"
    assert holds("text", "int4", pg) and holds("bigint", "int4", pg) and not holds("integer", "text", pg)
    assert widening("timestamp(3) with time zone", "timestamp with time zone", pg) == "lossless"
    assert widening("timestamp with time zone", "timestamp(3) with time zone", pg) == "lossy"
    assert widening("timestamp without time zone", "timestamptz", pg) == "lossy"


def test_validate_names_file_line_and_field(tmp_path: Path) -> None:
    write_defs(tmp_path / "defs", """
        connections:
          s: {url: 'jdbc:sqlite:x.db'}
        modules:
          - name: m
            source: s
            dest: s
            dest_table: m
            query: SELECT 1 AS a
            schema_change: loose
          - name: n
            source: s
            dest: s
            dest_table: n
            query: SELECT 1 AS a
            schema_change: {missing_column: nope}
        """)
    out = run_cli(["validate"], tmp_path)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "defs.yaml:10: module 'm': field 'schema_change': 'loose' is not a known shorthand" in text
    assert "defs.yaml:16: module 'n': field 'schema_change.missing_column': Input should be 'fail' or 'fill'" in text


def test_int_source_into_a_text_column_is_no_change(pgenv: Env) -> None:
    pgenv.exec("ALTER TABLE m ALTER COLUMN n TYPE text")
    assert pgenv.run().status == "success"  # type: ignore[attr-defined]
    assert pgenv.types()["n"] == "text" and pgenv.rows("SELECT n FROM m") == [("5",)]
