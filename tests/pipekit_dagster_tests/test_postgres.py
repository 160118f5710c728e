"""PostgreSQL through Dagster: a PG -> PG module's metadata and rows, a failed merge that leaves
the table as it was, a transient failure mid-stage retried from resolve, and the deployment's
Dagster instance (deploy/dagster.yaml: PostgreSQL storage) running a module."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest

from pipekit_dagster import build_definitions
from pipekit_dagster import constants as c
from tests.conftest import PG_PASSWORD, jdbc_url
from tests.pipekit_dagster_tests.conftest import REPO, PipekitEnv, materializations, step_events

pytestmark = [pytest.mark.dagster, pytest.mark.postgres]

ROWS = 20_000


def _setup(pk: PipekitEnv, url: str, monkeypatch: pytest.MonkeyPatch, retries: str = "") -> None:
    monkeypatch.setenv("PK_TEST_PG_PASSWORD", PG_PASSWORD)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE SCHEMA src")
        con.execute(
            "CREATE TABLE src.items AS SELECT g AS id, 'item ' || g AS name, "
            f"timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS updated_at FROM generate_series(1, {ROWS}) g"
        )
    pk.write("pg.yaml", f"""
        connections:
          pg:
            url: {jdbc_url(url)}
            user: pipekit
            password: $PK_TEST_PG_PASSWORD
        modules:
          - name: items
            source: pg
            dest: pg
            dest_table: public.items
            strategy: incremental
            merge_key: [id]
            query: SELECT id, name, updated_at FROM src.items WHERE updated_at > '{{since}}'
            watermarks:
              - {{name: since, sql: SELECT max(updated_at) FROM public.items, default: '1900-01-01 00:00:00+00'}}
            {retries}
        """, connections=False)


def _one(url: str, sql: str) -> object:
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(sql).fetchone()
        return row[0] if row else None


CHECKSUM = "SELECT md5(string_agg(id || ':' || name || ':' || updated_at, ',' ORDER BY id)) FROM public.items"


def test_pg_module_metadata_and_a_failed_merge(
    blank: PipekitEnv, pg_db: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(blank, pg_db, monkeypatch)
    job = build_definitions().resolve_job_def("items_job")
    result = job.execute_in_process(instance=instance)
    md = materializations(result)["items"]
    assert md[c.ROW_COUNT] == ROWS and md[c.ROWS_STAGED] == ROWS and md[c.ROWS_INSERTED] == ROWS
    assert md[c.TABLE_NAME] == "public.items"
    assert [(col.name, col.type) for col in md[c.COLUMN_SCHEMA].columns] == [
        ("id", "integer"), ("name", "text"), ("updated_at", "timestamp with time zone")
    ]
    assert md[c.WATERMARKS] == {"since": "1900-01-01 00:00:00+00"}
    assert PG_PASSWORD not in str(md)
    assert _one(pg_db, "SELECT count(*) FROM public.items") == ROWS

    before = _one(pg_db, CHECKSUM)
    with psycopg.connect(pg_db, autocommit=True) as con:
        con.execute("UPDATE src.items SET name = 'changed', updated_at = updated_at + interval '1 year' WHERE id <= 100")
    monkeypatch.setenv("PIPEKIT_FAILPOINT", "before_merge_commit:raise")
    failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success and step_events(failed, "STEP_FAILURE") == ["items.merge"]
    assert _one(pg_db, CHECKSUM) == before  # rolled back: exactly as before the run
    assert _one(pg_db, "SELECT to_regclass('pipekit_staging.items') IS NULL") is True
    last = blank.repo().last_run("items")
    assert last["status"] == "error" and last["phase"] == "merge" and blank.repo().locks() == []

    monkeypatch.delenv("PIPEKIT_FAILPOINT")
    md = materializations(job.execute_in_process(instance=instance))["items"]
    assert (md[c.ROWS_STAGED], md[c.ROWS_DELETED], md[c.ROWS_INSERTED], md[c.ROW_COUNT]) == (100, 100, 100, ROWS)
    assert _one(pg_db, "SELECT count(*) FROM public.items WHERE name = 'changed'") == 100


def test_transient_failure_mid_stage_is_retried_from_resolve(
    blank: PipekitEnv, pg_db: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(blank, pg_db, monkeypatch, retries="retries: {max: 2, delay: 0}")
    monkeypatch.setenv("PIPEKIT_FAILPOINT", "after_staging_created:sleep:2")
    killed: list[int] = []

    def kill_stage_connection_once() -> None:  # an administrator's pg_terminate_backend: transient
        deadline = time.monotonic() + 60
        with psycopg.connect(pg_db, autocommit=True) as con:
            while not killed and time.monotonic() < deadline:
                rows = con.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'pipekit stage items'"
                ).fetchall()
                for (pid,) in rows:
                    con.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)
                time.sleep(0.1)

    killer = threading.Thread(target=kill_stage_connection_once, daemon=True)
    killer.start()
    result = build_definitions().resolve_job_def("items_job").execute_in_process(instance=instance, raise_on_error=False)
    killer.join(timeout=70)
    assert killed, "the stage connection was never seen"
    assert result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == ["items.stage"]
    md = materializations(result)["items"]
    assert md[c.ROW_COUNT] == ROWS
    runs = blank.repo().history("items")
    assert [r["status"] for r in runs] == ["success", "error"]  # the failed attempt has its own row
    assert runs[1]["phase"] == "stage"
    assert runs[0]["dagster_run_id"] == runs[1]["dagster_run_id"] == result.run_id
    assert blank.repo().locks() == []


def test_deploy_instance_on_postgres_runs_a_module(
    blank: PipekitEnv, pg_db: str, pg_db2: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(blank, pg_db2, monkeypatch)
    home = tmp_path / "deploy_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    parts = urlsplit(pg_db)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", parts.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parts.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", parts.path.lstrip("/"))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", parts.username or "")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parts.password or "")

    with dg.DagsterInstance.get() as inst:
        assert type(inst.run_storage).__name__ == "PostgresRunStorage"
        assert type(inst.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert inst.run_monitoring_enabled
        concurrency = inst.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 4
        assert concurrency.run_queue_config.max_concurrent_runs == 8

        result = build_definitions().resolve_job_def("items_job").execute_in_process(instance=inst)
        assert result.success
        assert materializations(result)["items"][c.ROW_COUNT] == ROWS
        assert inst.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert _one(pg_db, f"SELECT status FROM runs WHERE run_id = '{result.run_id}'") == "SUCCESS"
    assert _one(pg_db2, "SELECT count(*) FROM public.items") == ROWS
