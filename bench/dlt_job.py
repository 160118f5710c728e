"""The dlt contender: one ``sql_table`` pipeline run, started by bench/run.py as a subprocess.

    python bench/dlt_job.py --src URL --dst URL --table full_1000000 --name full_pg \
        --dataset dlt_bench --pipelines-dir DIR --mode replace|merge [--backend pyarrow]

replace = full load (write_disposition replace); merge = incremental on ``updated_at`` with
primary key ``id`` (dlt keeps the cursor in its pipeline state). The resource is renamed to
``--name`` so that an initial load from one source table and a later incremental run from
another share the table and the cursor state. Settings for speed (what the benchmark found
fastest here): the given backend, load files in CSV (PostgreSQL loads them with COPY), no
load-file compression. Prints one JSON line with the rows loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--pipelines-dir", required=True)
    ap.add_argument("--mode", choices=["replace", "merge"], required=True)
    ap.add_argument("--backend", default="pyarrow")
    ap.add_argument("--file-format", default="csv")
    ap.add_argument("--chunk-size", type=int, default=100_000)
    a = ap.parse_args(argv)

    os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

    import dlt
    from dlt.sources.sql_database import sql_table

    kwargs: dict = {}
    if a.mode == "merge":
        kwargs["incremental"] = dlt.sources.incremental("updated_at")
    res = sql_table(
        credentials=a.src,
        table=a.table,
        schema="public",
        backend=a.backend,
        chunk_size=a.chunk_size,
        reflection_level="full_with_precision",
        **kwargs,
    ).with_name(a.name)
    if a.mode == "merge":
        res.apply_hints(table_name=a.name, write_disposition="merge", primary_key="id")
    else:
        res.apply_hints(table_name=a.name, write_disposition="replace")
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{a.dataset}",
        destination=dlt.destinations.postgres(a.dst),
        dataset_name=a.dataset,
        pipelines_dir=a.pipelines_dir,
    )
    info = pipeline.run(res, loader_file_format=a.file_format)
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(a.name, 0)
    print(json.dumps({"rows": rows, "dlt": dlt.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
