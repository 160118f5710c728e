"""Materializing modules through Dagster: metadata, destination rows, the run log, and each
per-run option (dry_run, full_refresh, watermark_overrides) from config and from tags."""

from __future__ import annotations

import dagster as dg
import pytest

from pipekit_dagster import PipekitResource, PipekitRunOptions, build_definitions
from pipekit_dagster import constants as c
from tests.pipekit_dagster_tests.conftest import PipekitEnv, materializations, observations, step_events

pytestmark = pytest.mark.dagster


def _assets(defs: dg.Definitions, *names: str) -> list:
    wanted = {dg.AssetKey(n) for n in names}
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.keys & wanted]


def test_materialize_reports_metadata_and_writes_rows(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    result = dg.materialize(
        _assets(defs, "customers", "orders"),
        instance=instance,
        resources={"pipekit": PipekitResource(), "pipekit_run": PipekitRunOptions()},
    )
    assert result.success
    mats = materializations(result)
    assert set(mats) == {"customers", "orders"}
    md = mats["orders"]
    assert md[c.ROW_COUNT] == 5000
    assert md[c.TABLE_NAME] == "orders"
    assert [col.name for col in md[c.COLUMN_SCHEMA].columns] == ["id", "customer_id", "status", "amount", "ordered_at", "updated_at"]
    assert md[c.ROWS_READ] == md[c.ROWS_STAGED] == md[c.ROWS_INSERTED] == 5000
    assert md[c.ROWS_DELETED] == 0
    assert md[c.WATERMARKS] == {"since": "1970-01-01 00:00:00"}
    assert md[c.SOURCE_SQL].startswith("```sql") and "1970-01-01 00:00:00" in md[c.SOURCE_SQL]
    assert "INSERT" in md[c.MERGE_SQL].upper()
    assert md[c.TRANSPORT] == "native"
    # in phase order as stored by the instance (what the UI shows; JSON keys would come back sorted)
    [stored] = instance.fetch_materializations(dg.AssetKey("orders"), limit=1).records
    timings = stored.asset_materialization.metadata[c.PHASE_TIMINGS].value  # type: ignore[union-attr]
    phases = [part.split()[0] for part in timings.split(", ")]
    assert phases == ["lock", "resolve", "stage", "merge", "hooks"], timings
    assert mats["customers"][c.ROW_COUNT] == 200
    assert [col.name for col in mats["customers"][c.COLUMN_SCHEMA].columns][0] == "customer_id"

    assert demo.dw_query("SELECT count(*) FROM orders") == [(5000,)]
    assert demo.dw_query("SELECT count(*) FROM customers") == [(200,)]
    assert demo.dw_query("SELECT sum(orders) FROM order_totals") == [(5000,)]  # the success hook ran
    assert not any(t.startswith("pipekit_staging") for t in demo.dw_tables())

    run = demo.repo().get_run(md[c.RUN_ID])
    assert run["status"] == "success"
    assert run["trigger"] == "dagster"
    assert run["dagster_run_id"] == result.run_id
    assert demo.repo().get_lock("orders") is None

    # steps ran in dependency order, in one process
    started = step_events(result, "STEP_START")
    assert started.index("customers.hooks") < started.index("orders.resolve")


def test_dry_run_observes_the_plan_and_writes_nothing(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    run_config = {"resources": {"pipekit_run": {"config": {"dry_run": True}}}}  # the contract's shape
    result = defs.resolve_job_def("demo_job").execute_in_process(instance=instance, run_config=run_config)
    assert result.success
    assert materializations(result) == {}
    obs = observations(result)
    assert set(obs) == {"customers", "orders", "order_events"}  # every member is planned
    assert obs["orders"][c.WATERMARKS] == {"since": "1970-01-01 00:00:00"}
    assert "1970-01-01 00:00:00" in obs["orders"][c.SOURCE_SQL]
    assert "INSERT" in obs["orders"][c.MERGE_SQL].upper()
    assert obs["orders"][c.DRY_RUN] is True
    assert not {"customers", "orders", "order_events", "order_totals"} & demo.dw_tables()
    assert not [t for t in demo.dw_tables() if "staging" in t]
    skipped = step_events(result, "STEP_SKIPPED")
    assert "orders.stage" in skipped and "orders.hooks" in skipped
    statuses = {r["module"]: r["status"] for r in demo.repo().history()}
    assert statuses == {"customers": "dry_run", "orders": "dry_run", "order_events": "dry_run"}


def test_dry_run_from_a_run_tag(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    result = defs.resolve_job_def("customers_job").execute_in_process(instance=instance, tags={c.DRY_RUN_TAG: "true"})
    assert result.success and materializations(result) == {}
    assert "customers" in observations(result)
    assert "customers" not in demo.dw_tables()


def test_full_refresh_and_watermark_overrides(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    defs = build_definitions()
    job = defs.resolve_job_def("orders_job")
    assert job.execute_in_process(instance=instance).success
    # an override: only orders updated after it are read
    cut = demo.dw_query("SELECT updated_at FROM orders ORDER BY updated_at DESC LIMIT 1 OFFSET 99")[0][0]
    newer = demo.dw_query(f"SELECT count(*) FROM orders WHERE updated_at > '{cut}'")[0][0]
    over = {"resources": {"pipekit_run": {"config": {"watermark_overrides": {"orders": {"since": cut}}}}}}
    result = job.execute_in_process(instance=instance, run_config=over)
    md = materializations(result)["orders"]
    assert md[c.WATERMARKS] == {"since": cut}
    assert md[c.ROWS_STAGED] == newer
    assert md[c.ROWS_DELETED] == newer and md[c.ROW_COUNT] == 5000

    # full refresh: the table is replaced, the watermark takes its default
    demo.dw_execute("INSERT INTO orders (id, status, updated_at) VALUES (999999, 'stray', '1900-01-01')")
    result = job.execute_in_process(instance=instance, tags={c.FULL_REFRESH_TAG: "true"})
    md = materializations(result)["orders"]
    assert md[c.STRATEGY] == "full"
    assert md[c.WATERMARKS] == {"since": "1970-01-01 00:00:00"}
    assert md[c.ROW_COUNT] == 5000 and md[c.ROWS_STAGED] == 5000
    assert demo.dw_query("SELECT count(*) FROM orders WHERE id = 999999") == [(0,)]
    options = demo.repo().get_run(md[c.RUN_ID])["options"]
    assert options["full_refresh"] is True

    cfg = {"resources": {"pipekit_run": {"config": {"full_refresh": True}}}}
    assert materializations(job.execute_in_process(instance=instance, run_config=cfg))["orders"][c.STRATEGY] == "full"


def test_run_config_for_pipekit_run_does_not_replace_the_pipekit_resource(demo: PipekitEnv, instance: dg.DagsterInstance) -> None:
    other = demo.root / "elsewhere.db"
    defs = build_definitions(PipekitResource(database=str(other)))
    result = defs.resolve_job_def("customers_job").execute_in_process(
        instance=instance, run_config={"resources": {"pipekit_run": {"config": {"full_refresh": True}}}}
    )
    assert result.success
    assert other.exists() and not demo.db.exists()  # the bound database setting survived the run config
