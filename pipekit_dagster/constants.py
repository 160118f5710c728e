"""Names shared by the Dagster side: resource keys, run tags, op tags and metadata keys.

Materialization metadata uses Dagster's standard table keys (``dagster/row_count``,
``dagster/table_name``, ``dagster/column_schema``: what ``TableMetadataSet`` writes; that class
is not exported by the public ``dagster`` namespace in 1.13, so the keys are spelled out here)
plus the ``pipekit/...`` keys below, kept in one place so tests, sensors and users agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- resource keys ------------------------------------------------------------------------------
PIPEKIT_RESOURCE_KEY = "pipekit"
RUN_OPTIONS_RESOURCE_KEY = "pipekit_run"

# -- Dagster names --------------------------------------------------------------------------------
DEFAULT_GROUP = "pipekit"  # the Dagster group of a module that is in no pipekit group
PROBLEMS_GROUP = "pipekit_problems"  # where broken definition files show up
BROKEN_ASSET_PREFIX = "pipekit_broken_"
ALL_JOB = "pipekit_all_job"
RUN_FAILURE_SENSOR = "pipekit_run_failure_sensor"
PHASES = ("resolve", "stage", "merge", "hooks")


def module_job_name(module: str) -> str:
    return f"{module}_job"


def group_job_name(group: str) -> str:
    return f"{group}_job"


def schedule_name(owner: str) -> str:
    return f"{owner}_schedule"


def sensor_name(module: str) -> str:
    return f"{module}_sensor"


def dest_pool(connection: str) -> str:
    """The Dagster pool of the merge ops that write into ``connection`` (a module's ``dest``)."""
    return f"pipekit_dest_{connection}"


def src_pool(connection: str) -> str:
    """The Dagster pool of the stage ops that read from ``connection`` (a module's ``source``)."""
    return f"pipekit_src_{connection}"


@dataclass(frozen=True)
class Naming:
    """The Dagster names of one set of pipekit definitions (one definitions folder).

    ``Naming()`` (prefix ``""``, what ``build_definitions`` uses by default) gives the names above:
    ``<module>_job``, ``<group>_job``, ``pipekit_all_job``, ``<owner>_schedule``, ``<module>_sensor``,
    ``pipekit_run_failure_sensor``, ``pipekit_module_checks``, the resource key ``pipekit``, the pools
    ``pipekit_src_<conn>`` / ``pipekit_dest_<conn>``, the ops ``pipekit_<phase>...`` and the assets
    ``pipekit_broken_<file>``.
    With a prefix (a :class:`~pipekit_dagster.component.PipekitComponent`'s ``name``) every one of
    them becomes ``<prefix>_<name>``, so two definitions folders coexist in one code location.
    The per-run options resource ``pipekit_run`` keeps its key: one run config serves every folder.
    """

    prefix: str = ""

    def __call__(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    @property
    def resource_key(self) -> str:
        return self(PIPEKIT_RESOURCE_KEY)

    @property
    def all_job(self) -> str:
        return self(ALL_JOB)

    @property
    def run_failure_sensor(self) -> str:
        return self(RUN_FAILURE_SENSOR)

    def module_job(self, module: str) -> str:
        return self(module_job_name(module))

    def group_job(self, group: str) -> str:
        return self(group_job_name(group))

    def schedule(self, owner: str) -> str:
        return self(schedule_name(owner))

    def sensor(self, module: str) -> str:
        return self(sensor_name(module))

    def dest_pool(self, connection: str) -> str:
        return self(dest_pool(connection))

    def src_pool(self, connection: str) -> str:
        return self(src_pool(connection))


DEFAULT_NAMING = Naming()


# -- run tags (per-run options; schedules and the UI's tag editor can set them) ---------------
DRY_RUN_TAG = "pipekit/dry_run"
FULL_REFRESH_TAG = "pipekit/full_refresh"
TRIGGER_TAG = "pipekit/trigger"  # set by pipekit's sensors: "sensor"
PROBE_VALUE_TAG = "pipekit/probe_value"

# -- op and asset tags --------------------------------------------------------------------------
MODULE_TAG = "pipekit/module"
PHASE_TAG = "pipekit/phase"
SKIPPED_TAG = "pipekit/skipped"  # on a scheduled/sensor run that found its module already running
STRATEGY_TAG = "pipekit/strategy"
PRIORITY_TAG = "dagster/priority"  # Dagster's own: higher runs first among ready steps

# -- metadata keys ------------------------------------------------------------------------------
ROW_COUNT = "dagster/row_count"
TABLE_NAME = "dagster/table_name"
COLUMN_SCHEMA = "dagster/column_schema"
PARTITION_ROW_COUNT = "dagster/partition_row_count"  # rows of the partition (a one-partition run only)
ROWS_READ = "pipekit/rows_read"
ROWS_STAGED = "pipekit/rows_staged"
ROWS_DELETED = "pipekit/rows_deleted"
ROWS_INSERTED = "pipekit/rows_inserted"
WATERMARKS = "pipekit/watermarks"
WATERMARK_SOURCES = "pipekit/watermark_sources"
SOURCE_SQL = "pipekit/source_sql"
MERGE_SQL = "pipekit/merge_sql"
STAGING_DDL = "pipekit/staging_ddl"
CREATE_TABLE_SQL = "pipekit/create_table_sql"
HOOKS = "pipekit/hooks"
TRANSPORT = "pipekit/transport"
PHASE_TIMINGS = "pipekit/phase_timings"
RUN_ID = "pipekit/run_id"
STRATEGY = "pipekit/strategy"
DRIFT = "pipekit/drift"
DRY_RUN = "pipekit/dry_run"
SOURCE = "pipekit/source"
DEST = "pipekit/dest"
MERGE_KEY = "pipekit/merge_key"
QUERY = "pipekit/query"
DEFINITION_FILE = "pipekit/definition_file"
PROBLEMS = "pipekit/problems"
MODULE = "pipekit/module"
PHASE = "pipekit/phase"
ERROR = "pipekit/error"
TRANSIENT = "pipekit/transient"
SKIPPED = "pipekit/skipped"
# partitioned modules (strategy window) and deletes:
WINDOW_START = "pipekit/window_start"  # ISO text: the run's window [start, end)
WINDOW_END = "pipekit/window_end"
PARTITIONS = "pipekit/partitions"  # number of partitions the run's window covers
WINDOW_ROW_COUNT = "pipekit/window_row_count"  # destination rows in the whole window after the merge
PARTITION_COLUMN = "pipekit/partition_column"  # asset definition metadata: the module's partitions column
ROWS_SOURCE_DELETED = "pipekit/rows_source_deleted"
ROWS_SOFT_DELETED = "pipekit/rows_soft_deleted"
ROWS_UNDELETED = "pipekit/rows_undeleted"

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


def is_true(value: object) -> bool:
    """A tag or setting value meaning yes (``true``, ``1``, ``yes``, ``on``; any case)."""
    return str(value).strip().lower() in TRUE_VALUES
